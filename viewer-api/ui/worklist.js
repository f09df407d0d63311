// The worklist: most urgent first, deadline countdowns, filters, live updates (server-sent
// events), claim and release.
import { api } from "./api.js";
import { t } from "./i18n.js";
import { h, fill, fmtTime, fmtDuration, personName, toast, debounce } from "./dom.js";

const FILTERS_KEY = "worklist-filters";

function savedFilters() {
  try {
    return JSON.parse(localStorage.getItem(FILTERS_KEY)) || {};
  } catch {
    return {};
  }
}

/** The countdown cell's text and class for an exam, `elapsed` seconds after the fetch. */
function countdown(item, elapsed) {
  if (item.seconds_left === null || item.seconds_left === undefined) return { text: "", cls: "" };
  if (item.status === "final") return { text: t("done"), cls: "" };
  const left = item.seconds_left - elapsed;
  if (left < 0) return { text: `${t("overdue")} ${fmtDuration(-left)}`, cls: "overdue" };
  return { text: fmtDuration(left), cls: left < 600 ? "soon" : "" };
}

/** Render the worklist page into `main`; returns the function that leaves it. */
export async function worklistPage(main, user) {
  main.className = "page-worklist";
  const filters = { status: "", priority: "", specialty: "", modality: "", site: "", patient: "", ...savedFilters() };
  const isReader = user.role === "reader";

  const control = (name, el) => {
    el.id = `filter-${name}`;
    el.value = filters[name] || "";
    el.addEventListener(el.tagName === "SELECT" ? "change" : "input", () => {
      filters[name] = el.value.trim();
      localStorage.setItem(FILTERS_KEY, JSON.stringify(filters));
      reloadSoon();
    });
    return h("label", {}, t("filter_" + name), el);
  };
  const options = (values) => values.map(([v, label]) => h("option", { value: v }, label));
  const bar = h(
    "form",
    { class: "filters", onsubmit: (e) => e.preventDefault() },
    control("status", h("select", {}, options([["", t("status_to_read")], ["receiving", t("status_receiving")], ["ready", t("status_ready")], ["preliminary", t("status_preliminary")], ["final", t("status_final")], ["all", t("all")]]))),
    control("priority", h("select", {}, options([["", t("all")], ["stat", t("prio_stat")], ["urgent", t("prio_urgent")], ["routine", t("prio_routine")]]))),
    control("specialty", h("select", {}, options([["", t("all")], ["radiology", t("kind_imaging")], ["cardiology", t("kind_ecg")], ["laboratory", t("kind_lab")]]))),
    control("modality", h("input", { size: 5, placeholder: "CT" })),
    control("site", h("input", { size: 10 })),
    control("patient", h("input", { size: 14, placeholder: t("patient_placeholder") })),
    h("span", { class: "live", id: "live" }, t("live_connecting")),
    h("span", { class: "count", id: "worklist-count" }),
  );
  const body = h("tbody", { id: "worklist-rows" });
  const table = h(
    "table",
    { class: "worklist", id: "worklist" },
    h("thead", {}, h("tr", {}, ["col_priority", "col_kind", "col_site", "col_patient", "col_exam", "col_received", "col_deadline", "col_status", "col_claimed", ""].map((k) => h("th", {}, k ? t(k) : "")))),
    body,
  );
  fill(main, bar, table);

  let items = [];
  let fetchedAt = Date.now();
  let closed = false;

  const tick = () => {
    const elapsed = (Date.now() - fetchedAt) / 1000;
    for (const row of body.rows) {
      const item = items[row.dataset.index];
      const cell = row.querySelector(".deadline");
      if (!item || !cell) continue;
      const c = countdown(item, elapsed);
      cell.textContent = c.text;
      cell.className = `deadline ${c.cls}`;
      row.classList.toggle("is-overdue", c.cls === "overdue");
    }
  };

  const act = async (item, what) => {
    try {
      await api(`/api/exams/${item.id}/${what}`, { method: "POST" });
      if (what === "claim") location.hash = `#/exam/${item.id}`;
      else reload();
    } catch (e) {
      const by = e.body && e.body.by;
      toast(by ? t("claimed_by_other", by) : e.message, "error");
      reload();
    }
  };

  const row = (item, index) => {
    const mine = item.claimed_by === user.username;
    const actions = [];
    actions.push(h("a", { class: "button", href: `#/exam/${item.id}` }, t("open")));
    if (isReader && ["ready", "preliminary"].includes(item.status)) {
      if (mine) actions.push(h("button", { class: "release", onclick: () => act(item, "release") }, t("release")));
      else if (!item.claimed_by) actions.push(h("button", { class: "claim primary", onclick: () => act(item, "claim") }, t("claim")));
    }
    const exam = [item.modality, item.study_description || "", item.accession_number ? `#${item.accession_number}` : ""].filter(Boolean).join(" ");
    return h(
      "tr",
      { class: `prio-${item.priority} status-${item.status}${item.overdue ? " is-overdue" : ""}`, dataset: { examId: item.id, index, status: item.status } },
      h("td", {}, h("span", { class: `badge prio-${item.priority}` }, t("prio_" + item.priority))),
      h("td", {}, t("kind_" + item.kind)),
      h("td", {}, item.site),
      h("td", { class: "patient" }, personName(item.patient_name), h("small", {}, item.patient_id || "")),
      h("td", {}, exam, item.instance_count ? h("small", {}, t("images_n", item.instance_count)) : null),
      h("td", {}, fmtTime(item.received_at)),
      h("td", { class: "deadline" }),
      h("td", {}, t("status_" + item.status)),
      h("td", { class: "claimed" }, item.claimed_by ? (mine ? t("me") : item.claimed_by) : ""),
      h("td", { class: "actions" }, actions),
    );
  };

  async function reload() {
    const q = new URLSearchParams();
    for (const [k, v] of Object.entries(filters)) if (v) q.set(k, v);
    const data = await api(`/api/worklist?${q}`);
    if (closed) return;
    items = data;
    fetchedAt = Date.now();
    fill(body, items.length ? items.map(row) : h("tr", {}, h("td", { colspan: 10, class: "muted" }, t("worklist_empty"))));
    document.getElementById("worklist-count").textContent = t("n_exams", items.length);
    tick();
  }
  const reloadSoon = debounce(() => reload().catch((e) => toast(e.message, "error")), 300);

  await reload();
  const timer = setInterval(tick, 1000);
  // Live updates: the hub sends `worklist` whenever any exam changes. EventSource
  // reconnects by itself; a slow poll covers a proxy that buffers the stream.
  const live = document.getElementById("live");
  const events = new EventSource("/api/worklist/events");
  events.addEventListener("open", () => {
    live.textContent = t("live_on");
    live.className = "live on";
  });
  events.addEventListener("error", () => {
    live.textContent = t("live_off");
    live.className = "live off";
  });
  events.addEventListener("worklist", reloadSoon);
  const poll = setInterval(reloadSoon, 60000);
  return () => {
    closed = true;
    clearInterval(timer);
    clearInterval(poll);
    events.close();
    reloadSoon.cancel();
  };
}
