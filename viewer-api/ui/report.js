// The report editor beside the images: template, autosaved draft, signing (preliminary by
// a junior, final by a senior) after a confirmation that shows exactly what is signed,
// the signed history and amendments.
import { api } from "./api.js";
import { t, lang } from "./i18n.js";
import { h, fill, fmtTime, personName, toast, dialog, debounce } from "./dom.js";

const AUTOSAVE_MS = 1500;

const label = (field) => (lang() === "zh" ? field.label_zh : field.label_en) || field.key;

/** What a confirmation or a signed version shows: every field as it will be signed. */
export function contentView(template, content, critical) {
  const fields = template ? template.fields : Object.keys(content).map((key) => ({ key, label_zh: key, label_en: key }));
  const keys = new Set(fields.map((f) => f.key));
  const extra = Object.keys(content).filter((k) => !keys.has(k)).map((key) => ({ key, label_zh: key, label_en: key }));
  return h(
    "dl",
    { class: "signed-content" },
    [...fields, ...extra].filter((f) => content[f.key]).map((f) => [h("dt", {}, label(f)), h("dd", {}, content[f.key])]),
    critical ? [h("dt", {}, t("critical")), h("dd", { class: "critical" }, t("critical_yes"))] : null,
  );
}

/** The report panel; `onSigned` refreshes the exam around it. */
export async function reportPanel(root, exam, user, onSigned) {
  const senior = user.grade === "senior";
  let data = await api(`/api/exams/${exam.id}/report`);
  const q = new URLSearchParams({ kind: exam.kind });
  if (exam.modality) q.set("modality", exam.modality);
  const templates = await api(`/api/templates?${q}`);
  let editable = false;
  let dirty = false;

  const status = h("span", { class: "save-status", id: "save-status" });
  const templateSelect = h("select", { id: "template" }, templates.map((tpl) => h("option", { value: tpl.id }, tpl.name)));
  const critical = h("input", { type: "checkbox", id: "critical" });
  const fieldsBox = h("div", { class: "fields", id: "fields" });
  const signButton = h("button", { class: "primary", id: "sign" }, senior ? t("sign_final") : t("sign_preliminary"));
  const history = h("div", { class: "history", id: "history" });
  const editor = h(
    "div",
    { class: "editor" },
    h("label", {}, t("template"), templateSelect),
    fieldsBox,
    h("label", { class: "inline" }, critical, t("critical_finding")),
    h("div", { class: "editor-actions" }, signButton, status),
  );
  const hint = h("p", { class: "muted", id: "editor-hint" });
  fill(root, h("h2", {}, t("report")), hint, editor, h("h3", {}, t("history")), history);

  const template = () => templates.find((tpl) => tpl.id === templateSelect.value) || templates[0];
  const content = () => {
    const c = {};
    for (const ta of fieldsBox.querySelectorAll("textarea")) if (ta.value.trim()) c[ta.dataset.field] = ta.value;
    return c;
  };
  const renderFields = (values) => {
    const tpl = template();
    fill(
      fieldsBox,
      (tpl ? tpl.fields : []).map((f) =>
        h("label", { class: "field" }, label(f), h("textarea", { dataset: { field: f.key }, rows: f.multiline ? 6 : 2, value: values[f.key] || "", oninput: changed })),
      ),
    );
    setEditable(editable);
  };

  const save = async () => {
    if (!editable || !dirty) return;
    dirty = false;
    status.textContent = t("saving");
    try {
      await api(`/api/exams/${exam.id}/report/draft`, { method: "PUT", keepalive: true, body: { template: templateSelect.value, content: content(), critical: critical.checked } });
      status.textContent = t("saved_at", fmtTime(Date.now(), true));
      status.className = "save-status ok";
    } catch (e) {
      dirty = true;
      status.textContent = `${t("save_failed")}: ${e.message}`;
      status.className = "save-status error";
    }
  };
  const autosave = debounce(save, AUTOSAVE_MS);
  function changed() {
    dirty = true;
    status.textContent = t("unsaved");
    status.className = "save-status";
    autosave();
  }
  templateSelect.addEventListener("change", () => {
    renderFields(content());
    changed();
  });
  critical.addEventListener("change", changed);

  const sign = async () => {
    autosave.cancel();
    dirty = true;
    await save();
    let preview;
    try {
      preview = await api(`/api/exams/${exam.id}/report/preview`);
    } catch (e) {
      toast(e.message, "error");
      return;
    }
    const tpl = templates.find((x) => x.id === preview.template);
    const p = preview.exam || {};
    const body = h(
      "div",
      { id: "sign-preview" },
      h("p", {}, t("sign_confirm_intro", senior ? t("status_final") : t("status_preliminary"))),
      h("p", { class: "exam-line" }, `${personName(p.patient_name)} ${p.patient_id || ""} · ${p.modality || ""} · ${p.accession_number || ""}`),
      contentView(tpl, preview.content, preview.critical),
      h("p", { class: "muted mono" }, "SHA-256 ", preview.confirm_sha256),
    );
    const choice = await dialog(t("sign_confirm_title"), body, [
      { id: "cancel", label: t("cancel") },
      { id: "sign", label: t("sign_confirm_button"), primary: true },
    ]);
    if (choice !== "sign") return;
    try {
      const v = await api(`/api/exams/${exam.id}/report/sign`, { method: "POST", body: { confirm_sha256: preview.confirm_sha256 } });
      toast(t("signed_ok", t("status_" + v.status), v.version), "ok");
      data = await api(`/api/exams/${exam.id}/report`);
      renderHistory();
      await onSigned();
    } catch (e) {
      toast(e.message, "error");
    }
  };
  signButton.addEventListener("click", sign);

  const amend = async (last) => {
    const payload = JSON.parse(last.signed.payload);
    const tpl = templates.find((x) => x.id === payload.template) || template();
    const inputs = (tpl ? tpl.fields : []).map((f) => h("textarea", { dataset: { field: f.key }, rows: f.multiline ? 5 : 2, value: payload.content[f.key] || "" }));
    const crit = h("input", { type: "checkbox", checked: payload.critical });
    const reason = h("textarea", { id: "amend-reason", rows: 2 });
    const form = h(
      "div",
      { class: "amend-form" },
      (tpl ? tpl.fields : []).map((f, i) => h("label", { class: "field" }, label(f), inputs[i])),
      h("label", { class: "inline" }, crit, t("critical_finding")),
      h("label", { class: "field" }, t("amend_reason"), reason),
    );
    const choice = await dialog(t("amend_title"), form, [
      { id: "cancel", label: t("cancel") },
      { id: "amend", label: t("amend_sign"), primary: true },
    ]);
    if (choice !== "amend") return;
    const c = {};
    for (const ta of inputs) if (ta.value.trim()) c[ta.dataset.field] = ta.value;
    try {
      await api(`/api/reports/${last.report_id}/amend`, { method: "POST", body: { content: c, critical: crit.checked, reason: reason.value } });
      toast(t("amended_ok"), "ok");
      data = await api(`/api/exams/${exam.id}/report`);
      renderHistory();
      await onSigned();
    } catch (e) {
      toast(e.message, "error");
    }
  };

  function renderHistory() {
    const versions = [...(data.versions || [])].sort((a, b) => b.version - a.version);
    fill(
      history,
      versions.length
        ? versions.map((v, i) => {
            const payload = JSON.parse(v.signed.payload);
            const tpl = templates.find((x) => x.id === payload.template);
            return h(
              "details",
              { class: `version status-${v.status}`, open: i === 0, dataset: { version: v.version, status: v.status } },
              h("summary", {}, `v${v.version} · ${t("status_" + v.status)} · ${payload.signer.display_name || v.signer} · ${fmtTime(v.signed_at)}`, v.critical ? h("span", { class: "badge prio-stat" }, t("critical")) : null),
              payload.reason ? h("p", { class: "reason" }, t("amend_reason"), ": ", payload.reason) : null,
              contentView(tpl, payload.content, payload.critical),
              h(
                "p",
                {},
                h("a", { href: `/api/reports/${v.report_id}/versions/${v.version}/pdf`, target: "_blank" }, "PDF"),
                " ",
                i === 0 && senior && ["final", "amended"].includes(v.status) ? h("button", { class: "amend", onclick: () => amend(v) }, t("amend")) : null,
              ),
            );
          })
        : h("p", { class: "muted" }, t("no_versions")),
    );
  }

  async function startingContent() {
    if (data.draft) return { template: data.draft.template_id, content: data.draft.content, critical: data.draft.critical };
    const last = (data.versions || []).reduce((a, v) => (!a || v.version > a.version ? v : a), null);
    if (last) {
      const p = JSON.parse(last.signed.payload);
      return { template: p.template, content: p.content, critical: p.critical };
    }
    if (exam.kind === "ecg") {
      try {
        const pre = await api(`/api/exams/${exam.id}/ecg/prefill`);
        return { template: pre.template, content: pre.content, critical: false };
      } catch (e) {
        // An ECG the server cannot measure still gets an empty report.
      }
    }
    return { template: templates[0] && templates[0].id, content: {}, critical: false };
  }

  function setEditable(on) {
    editable = on;
    const final = exam.status === "final";
    for (const el of editor.querySelectorAll("textarea, select, input")) el.disabled = !on || final;
    signButton.disabled = !on || final || (exam.status === "preliminary" && !senior);
    hint.textContent = final ? t("hint_final") : on ? "" : t("hint_claim");
    // The draft typed in the last second is saved before the lease is given up.
    if (!on && dirty) autosave.flush();
  }

  const start = await startingContent();
  if (start.template && templates.some((x) => x.id === start.template)) templateSelect.value = start.template;
  critical.checked = !!start.critical;
  renderFields(start.content || {});
  renderHistory();
  // Closing the tab saves what was typed (a keepalive request outlives the page).
  const beforeUnload = () => {
    if (dirty) autosave.flush();
  };
  window.addEventListener("beforeunload", beforeUnload);
  return {
    /** The exam changed (claim, status): may this reader write now? */
    update: (next, on) => {
      exam = next;
      setEditable(on);
    },
    leave: () => {
      window.removeEventListener("beforeunload", beforeUnload);
      autosave.flush();
    },
  };
}
