// The one way the UI talks to the server: JSON over fetch with the session cookie.
// A 401 anywhere sends the user back to the login page.

/** An HTTP error with the server's code and message ({"error","message"}). */
export class ApiError extends Error {
  constructor(status, body) {
    const message = body && typeof body === "object" ? body.message || body.error : body;
    super(message || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

/**
 * Call a JSON API. `body` is sent as JSON; the answer is parsed when it is JSON.
 * `keepalive`: the request completes even if the page is closed meanwhile.
 */
export async function api(path, { method = "GET", body, keepalive = false } = {}) {
  const init = { method, keepalive, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  const text = await res.text();
  let data = text;
  if ((res.headers.get("Content-Type") || "").includes("json") && text) {
    try {
      data = JSON.parse(text);
    } catch {
      data = text;
    }
  }
  if (res.status === 401 && path !== "/api/auth/login") {
    if (location.hash !== "#/login") {
      sessionStorage.setItem("after-login", location.hash);
      location.hash = "#/login";
    }
  }
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

/** DICOM JSON attribute value (first value, PN as its Alphabetic/Ideographic text). */
export function attr(item, tag) {
  const el = item && item[tag];
  if (!el || !el.Value || el.Value.length === 0) return undefined;
  const v = el.Value[0];
  if (el.vr === "PN" && v && typeof v === "object") {
    return [v.Alphabetic, v.Ideographic].filter(Boolean).join("=");
  }
  return v;
}

/** All values of a DICOM JSON attribute. */
export function attrs(item, tag) {
  const el = item && item[tag];
  return (el && el.Value) || [];
}
