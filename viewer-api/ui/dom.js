// Small DOM helpers. Every value from the server goes in as text (never as HTML), so
// patient names and report text cannot inject markup.
import { t, lang } from "./i18n.js";

/** Build an element: h("td", {class: "x", onclick: f}, child, "text", ...). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on") && typeof v === "function") el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (k === "dataset") Object.assign(el.dataset, v);
    else if (k === "value") el.value = v;
    else if (k === "checked") el.checked = !!v;
    else el.setAttribute(k, v === true ? "" : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
}

/** Replace an element's children. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

const pad = (n) => String(n).padStart(2, "0");

/** Local date and time of a millisecond timestamp: 2026-11-24 09:05. */
export function fmtTime(ms, seconds = false) {
  if (ms === null || ms === undefined) return "";
  const d = new Date(ms);
  const s = `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return seconds ? `${s}:${pad(d.getSeconds())}` : s;
}

/** A DICOM date (YYYYMMDD) as 2026-11-24. */
export function fmtDicomDate(da) {
  return da && da.length === 8 ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6)}` : da || "";
}

/** A duration in seconds as 1:05:09 or 12:09 (sign kept by the caller). */
export function fmtDuration(secs) {
  const s = Math.abs(Math.trunc(secs));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = s % 60;
  if (hh >= 48) return t("days", Math.floor(hh / 24));
  return hh > 0 ? `${hh}:${pad(mm)}:${pad(ss)}` : `${mm}:${pad(ss)}`;
}

/** A person's name from DICOM PN (Alphabetic^...=Ideographic) for display. */
export function personName(pn) {
  if (!pn) return "";
  const groups = String(pn).split("=");
  const preferred = lang() === "zh" ? groups[1] || groups[0] : groups[0] || groups[1];
  return (preferred || "").replace(/\^+/g, " ").trim();
}

/** A transient message at the bottom of the window. */
export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, message);
  box.append(el);
  setTimeout(() => el.remove(), kind === "error" ? 8000 : 4000);
}

/**
 * A modal dialog; resolves with the id of the button pressed (or null on Escape).
 * buttons: [{id, label, primary}]
 */
export function dialog(title, body, buttons) {
  return new Promise((resolve) => {
    const close = (id) => {
      document.removeEventListener("keydown", onKey);
      back.remove();
      resolve(id);
    };
    const onKey = (e) => {
      if (e.key === "Escape") close(null);
    };
    const back = h(
      "div",
      { class: "modal-back" },
      h(
        "div",
        { class: "modal", role: "dialog", "aria-modal": "true" },
        h("h2", {}, title),
        h("div", { class: "modal-body" }, body),
        h(
          "div",
          { class: "modal-buttons" },
          buttons.map((b) =>
            h("button", { class: b.primary ? "primary" : "", dataset: { choice: b.id }, onclick: () => close(b.id) }, b.label),
          ),
        ),
      ),
    );
    document.addEventListener("keydown", onKey);
    document.body.append(back);
    const primary = back.querySelector("button.primary");
    if (primary) primary.focus();
  });
}

/** Run fn at most once per `ms`, always with the latest arguments, and once more at the end. */
export function debounce(fn, ms) {
  let timer = null;
  let last = null;
  const wrapped = (...args) => {
    last = args;
    clearTimeout(timer);
    timer = setTimeout(() => {
      timer = null;
      fn(...last);
    }, ms);
  };
  wrapped.flush = () => {
    if (timer) {
      clearTimeout(timer);
      timer = null;
      return fn(...last);
    }
    return undefined;
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}
