// The administrator's page: sites, users, gateway keys, reading deadlines, turnaround
// statistics with a chart, and critical-value alerts.
import { api } from "./api.js";
import { t } from "./i18n.js";
import { h, fill, fmtTime, fmtDuration, toast, dialog } from "./dom.js";

const TABS = ["sites", "users", "keys", "deadlines", "turnaround", "alerts"];

/** Render the admin page; returns the function that leaves it. */
export async function adminPage(main, user) {
  main.className = "page-admin";
  if (user.role !== "admin") {
    fill(main, h("p", { class: "error" }, t("admin_only")));
    return () => {};
  }
  const body = h("section", { class: "admin-body", id: "admin-body" });
  const current = (location.hash.split("/")[2] || "sites").replace(/[^a-z]/g, "");
  const tabs = h(
    "nav",
    { class: "tabs" },
    TABS.map((tab) => h("a", { href: `#/admin/${tab}`, id: `tab-${tab}`, class: tab === current ? "active" : "" }, t("admin_" + tab))),
  );
  fill(main, tabs, body);
  const pages = { sites, users, keys, deadlines, turnaround, alerts };
  await (pages[current] || sites)(body);
  return () => {};
}

const table = (id, heads, rows) =>
  h("table", { class: "grid", id }, h("thead", {}, h("tr", {}, heads.map((k) => h("th", {}, k ? t(k) : "")))), h("tbody", {}, rows));

async function run(action, done) {
  try {
    const answer = await action();
    if (done) await done(answer);
  } catch (e) {
    toast(e.message, "error");
  }
}

async function sites(body) {
  const list = await api("/api/admin/sites");
  const id = h("input", { id: "site-id", placeholder: "township-x", required: true, pattern: "[a-z0-9-]+" });
  const name = h("input", { id: "site-name", required: true });
  const kind = h("select", { id: "site-kind" }, h("option", { value: "township" }, t("site_township")), h("option", { value: "county" }, t("site_county")));
  const form = h("form", { class: "inline-form" }, h("label", {}, t("site_id"), id), h("label", {}, t("site_name"), name), h("label", {}, t("site_kind"), kind), h("button", { class: "primary" }, t("add")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run(() => api("/api/admin/sites", { method: "POST", body: { id: id.value.trim(), name: name.value.trim(), kind: kind.value } }), () => sites(body));
  });
  fill(body, table("sites", ["site_id", "site_name", "site_kind", "created"], list.map((s) => h("tr", {}, h("td", {}, s.id), h("td", {}, s.name), h("td", {}, t("site_" + s.kind)), h("td", {}, fmtTime(s.created_at))))), h("h3", {}, t("site_add")), form);
}

async function users(body) {
  const list = await api("/api/admin/users");
  const siteList = await api("/api/admin/sites");
  const showPassword = (answer) => {
    if (answer && answer.password) dialog(t("password_once"), h("p", { class: "mono", id: "new-password" }, answer.password), [{ id: "ok", label: t("ok"), primary: true }]);
  };
  const action = (u, path, method = "POST") => () => run(() => api(`/api/admin/users/${encodeURIComponent(u.username)}/${path}`, { method }), async (a) => { showPassword(a); await users(body); });
  const rows = list.map((u) =>
    h(
      "tr",
      { class: u.disabled ? "disabled" : "", dataset: { username: u.username } },
      h("td", {}, u.username),
      h("td", {}, u.display_name),
      h("td", {}, t("role_" + u.role)),
      h("td", {}, (u.specialties || []).map((s) => t("spec_" + s)).join("、"), u.grade ? ` (${t("grade_" + u.grade)})` : ""),
      h("td", {}, (u.sites || []).join(", ")),
      h("td", {}, u.disabled ? t("disabled") : t("active")),
      h(
        "td",
        { class: "actions" },
        u.disabled ? h("button", { onclick: action(u, "enable") }, t("enable")) : h("button", { onclick: action(u, "disable") }, t("disable")),
        h("button", { onclick: action(u, "password") }, t("reset_password")),
        h("button", { onclick: action(u, "sessions", "DELETE") }, t("end_sessions")),
      ),
    ),
  );
  const username = h("input", { id: "user-name", required: true, pattern: "[a-z0-9._-]+" });
  const display = h("input", { id: "user-display", required: true });
  const role = h("select", { id: "user-role" }, ["reader", "technician", "clinician", "admin"].map((r) => h("option", { value: r }, t("role_" + r))));
  const specs = ["radiology", "cardiology", "laboratory"].map((s) => h("label", { class: "inline" }, h("input", { type: "checkbox", value: s, class: "spec" }), t("spec_" + s)));
  const grade = h("select", { id: "user-grade" }, h("option", { value: "" }, "—"), h("option", { value: "junior" }, t("grade_junior")), h("option", { value: "senior" }, t("grade_senior")));
  const site = h("select", { id: "user-site" }, h("option", { value: "" }, "—"), siteList.map((s) => h("option", { value: s.id }, `${s.name} (${s.id})`)));
  const form = h("form", { class: "inline-form" }, h("label", {}, t("username"), username), h("label", {}, t("display_name"), display), h("label", {}, t("role"), role), specs, h("label", {}, t("grade"), grade), h("label", {}, t("site"), site), h("button", { class: "primary" }, t("add")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const specialties = [...form.querySelectorAll(".spec:checked")].map((c) => c.value);
    run(
      () => api("/api/admin/users", { method: "POST", body: { username: username.value.trim(), display_name: display.value.trim(), role: role.value, specialties, grade: grade.value || null, sites: site.value ? [site.value] : [] } }),
      async (a) => {
        showPassword(a);
        await users(body);
      },
    );
  });
  fill(body, table("users", ["username", "display_name", "role", "specialties", "site", "state", ""], rows), h("h3", {}, t("user_add")), form);
}

async function keys(body) {
  const list = await api("/api/admin/gateway-keys");
  const siteList = await api("/api/admin/sites");
  const rows = list.map((k) =>
    h(
      "tr",
      { class: k.revoked_at ? "disabled" : "" },
      h("td", { class: "mono" }, k.id),
      h("td", {}, k.site_id),
      h("td", {}, k.label),
      h("td", {}, fmtTime(k.created_at)),
      h("td", {}, fmtTime(k.last_used_at)),
      h("td", {}, k.revoked_at ? `${t("revoked")} ${fmtTime(k.revoked_at)}` : h("button", { onclick: () => run(() => api(`/api/admin/gateway-keys/${encodeURIComponent(k.id)}`, { method: "DELETE" }), () => keys(body)) }, t("revoke"))),
    ),
  );
  const site = h("select", { id: "key-site" }, siteList.filter((s) => s.kind === "township").map((s) => h("option", { value: s.id }, `${s.name} (${s.id})`)));
  const label = h("input", { id: "key-label" });
  const form = h("form", { class: "inline-form" }, h("label", {}, t("site"), site), h("label", {}, t("key_label"), label), h("button", { class: "primary" }, t("key_create")));
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    run(
      () => api("/api/admin/gateway-keys", { method: "POST", body: { site: site.value, label: label.value.trim() } }),
      async (a) => {
        await dialog(t("key_once"), h("p", { class: "mono", id: "new-key" }, a.key), [{ id: "ok", label: t("ok"), primary: true }]);
        await keys(body);
      },
    );
  });
  fill(body, table("keys", ["key_id", "site", "key_label", "created", "last_used", ""], rows), h("h3", {}, t("key_create")), form);
}

const PRIORITIES = ["stat", "urgent", "routine"];
const KINDS = ["imaging", "ecg", "lab"];

/** Deadlines: minutes per priority for every kind, and optional overrides per kind. */
async function deadlines(body) {
  const d = await api("/api/admin/deadlines");
  const input = (id, value, required) => h("input", { id, type: "number", min: 1, max: 43200, step: 1, required, value: value ?? "", placeholder: required ? "" : t("inherit"), size: 6 });
  const base = PRIORITIES.map((p) => input(`deadline-${p}`, d[`${p}_minutes`], true));
  const overrides = KINDS.map((k) => PRIORITIES.map((p) => input(`deadline-${k}-${p}`, ((d.by_kind || {})[k] || {})[`${p}_minutes`], false)));
  const form = h(
    "form",
    { id: "deadlines-form" },
    table(
      "deadlines",
      ["col_kind", "prio_stat", "prio_urgent", "prio_routine"],
      [h("tr", {}, h("td", {}, t("all")), base.map((i) => h("td", {}, i, " ", t("minutes")))), ...KINDS.map((k, n) => h("tr", {}, h("td", {}, t("kind_" + k)), overrides[n].map((i) => h("td", {}, i, " ", t("minutes")))))],
    ),
    h("p", { class: "muted" }, t("deadlines_note")),
    h("button", { class: "primary", id: "deadlines-save" }, t("save")),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const targets = { by_kind: {} };
    PRIORITIES.forEach((p, i) => {
      targets[`${p}_minutes`] = Number(base[i].value);
    });
    KINDS.forEach((k, n) => {
      const o = {};
      PRIORITIES.forEach((p, i) => {
        if (overrides[n][i].value) o[`${p}_minutes`] = Number(overrides[n][i].value);
      });
      if (Object.keys(o).length) targets.by_kind[k] = o;
    });
    run(
      () => api("/api/admin/deadlines", { method: "PUT", body: targets }),
      async () => {
        toast(t("saved"), "ok");
        await deadlines(body);
      },
    );
  });
  fill(body, form);
}

/** A horizontal bar chart (SVG) of the median and 90th percentile per group. */
function chart(groups) {
  const ns = "http://www.w3.org/2000/svg";
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const rowH = 34;
  const width = 760;
  const left = 140;
  const max = Math.max(1, ...groups.map((g) => g.received_to_final_p90_s || 0));
  const svg = el("svg", { viewBox: `0 0 ${width} ${groups.length * rowH + 30}`, class: "chart", id: "turnaround-chart", role: "img" });
  groups.forEach((g, i) => {
    const y = i * rowH + 6;
    const scale = (v) => ((v || 0) / max) * (width - left - 170);
    svg.append(el("text", { x: 4, y: y + 18, class: "label" }, g.key));
    svg.append(el("rect", { x: left, y, width: scale(g.received_to_final_p90_s), height: 12, class: "p90" }));
    svg.append(el("rect", { x: left, y: y + 13, width: scale(g.received_to_final_p50_s), height: 12, class: "p50" }));
    const pct = g.deadline_compliance === null || g.deadline_compliance === undefined ? "—" : `${Math.round(g.deadline_compliance * 100)}%`;
    svg.append(el("text", { x: width - 165, y: y + 18, class: "value" }, `P50 ${g.received_to_final_p50_s === null ? "—" : fmtDuration(g.received_to_final_p50_s)} · ${t("compliance")} ${pct}`));
  });
  svg.append(el("rect", { x: left, y: groups.length * rowH + 12, width: 12, height: 10, class: "p50" }));
  svg.append(el("text", { x: left + 16, y: groups.length * rowH + 21, class: "label" }, "P50"));
  svg.append(el("rect", { x: left + 70, y: groups.length * rowH + 12, width: 12, height: 10, class: "p90" }));
  svg.append(el("text", { x: left + 86, y: groups.length * rowH + 21, class: "label" }, "P90"));
  return svg;
}

async function turnaround(body) {
  const by = h("select", { id: "turnaround-by" }, ["site", "kind", "priority", "reader"].map((b) => h("option", { value: b }, t("by_" + b))));
  const days = h("select", { id: "turnaround-days" }, [1, 7, 30, 90].map((d) => h("option", { value: d }, t("last_days", d))));
  days.value = "30";
  const out = h("div", { id: "turnaround" });
  const load = async () => {
    const to = Date.now();
    const from = to - Number(days.value) * 86400000;
    const data = await api(`/api/admin/turnaround?by=${by.value}&from=${from}&to=${to}`);
    const groups = data.groups || [];
    const dur = (s) => (s === null || s === undefined ? "—" : fmtDuration(s));
    fill(
      out,
      groups.length ? chart(groups) : h("p", { class: "muted" }, t("no_data")),
      table(
        "turnaround-table",
        ["group", "exams", "finals", "p50_final", "p90_final", "p50_delivered", "p90_delivered", "compliance"],
        groups.map((g) => h("tr", {}, h("td", {}, g.key), h("td", {}, g.exams), h("td", {}, g.finals), h("td", {}, dur(g.received_to_final_p50_s)), h("td", {}, dur(g.received_to_final_p90_s)), h("td", {}, dur(g.final_to_delivered_p50_s)), h("td", {}, dur(g.final_to_delivered_p90_s)), h("td", {}, g.deadline_compliance === null ? "—" : `${Math.round(g.deadline_compliance * 100)}% (${g.met_deadline}/${g.finals})`))),
      ),
    );
  };
  by.addEventListener("change", () => load().catch((e) => toast(e.message, "error")));
  days.addEventListener("change", () => load().catch((e) => toast(e.message, "error")));
  fill(body, h("div", { class: "toolbar" }, h("label", {}, t("group_by"), by), h("label", {}, t("period"), days)), out);
  await load();
}

async function alerts(body) {
  const data = await api("/api/admin/critical-alerts");
  fill(
    body,
    table(
      "alerts",
      ["site", "col_patient", "lab_test", "lab_value", "raised", "delivered", "acknowledged", "escalated"],
      (data.alerts || []).map((a) =>
        h(
          "tr",
          { class: a.escalated_at && !a.acknowledged_at ? "is-overdue" : "" },
          h("td", {}, a.site),
          h("td", {}, a.patient_id || ""),
          h("td", {}, a.test),
          h("td", {}, a.value),
          h("td", {}, fmtTime(a.created_at)),
          h("td", {}, fmtTime(a.delivered_at)),
          h("td", {}, a.acknowledged_at ? `${fmtTime(a.acknowledged_at)} ${a.acknowledged_by || ""}` : t("not_yet")),
          h("td", {}, fmtTime(a.escalated_at)),
        ),
      ),
    ),
  );
}
