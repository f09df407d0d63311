// One exam: what was acquired (images, ECG tracing or lab results) on the left, the
// report beside it on the right, and the claim that lets this reader write it.
import { api } from "./api.js";
import { t } from "./i18n.js";
import { h, fill, fmtTime, personName, toast } from "./dom.js";
import { imageViewer } from "./viewer.js";
import { reportPanel, contentView } from "./report.js";

/** Render the exam page; returns the function that leaves it. */
export async function examPage(main, user, id) {
  main.className = "page-exam";
  let exam = await api(`/api/exams/${id}`);
  const leaving = [];
  const claimBox = h("div", { class: "claim-box", id: "claim-box" });
  const head = h(
    "div",
    { class: "exam-head" },
    h("a", { href: "#/worklist", class: "back" }, "← ", t("nav_worklist")),
    h("span", { class: `badge prio-${exam.priority}` }, t("prio_" + exam.priority)),
    h("strong", { class: "patient-name" }, personName(exam.patient_name) || exam.patient_id || ""),
    h("span", {}, exam.patient_id || ""),
    h("span", {}, [t("kind_" + exam.kind), exam.modality, exam.study_description].filter(Boolean).join(" · ")),
    h("span", {}, t("site"), ": ", exam.site),
    h("span", {}, t("col_received"), ": ", fmtTime(exam.received_at)),
    claimBox,
  );
  const left = h("section", { class: "exam-main", id: "exam-main" });
  const right = h("aside", { class: "exam-report", id: "report" });
  fill(main, head, h("div", { class: "exam-body" }, left, right));

  const isReader = user.role === "reader";
  const holds = () => exam.claimed_by === user.username;
  let panel = null;
  const renderClaim = () => {
    const buttons = [];
    if (holds()) {
      buttons.push(h("span", { class: "held" }, t("claim_held_until", fmtTime(exam.claimed_until))));
      buttons.push(h("button", { id: "release", onclick: () => claimAction("release") }, t("release")));
    } else if (exam.claimed_by) {
      buttons.push(h("span", { class: "held other" }, t("claimed_by_other", exam.claimed_by)));
    } else if (isReader && ["ready", "preliminary"].includes(exam.status)) {
      buttons.push(h("button", { class: "primary", id: "claim", onclick: () => claimAction("claim") }, t("claim")));
    }
    buttons.push(h("span", { class: "status", id: "exam-status" }, t("status_" + exam.status)));
    fill(claimBox, buttons);
    if (panel) panel.update(exam, holds());
  };
  const refresh = async () => {
    exam = await api(`/api/exams/${id}`);
    renderClaim();
  };
  const claimAction = async (what) => {
    try {
      await api(`/api/exams/${id}/${what}`, { method: "POST" });
    } catch (e) {
      toast(e.body && e.body.by ? t("claimed_by_other", e.body.by) : e.message, "error");
    }
    await refresh();
  };
  renderClaim();

  if (exam.kind === "imaging" && exam.study_uid) {
    leaving.push(await imageViewer(left, exam));
  } else if (exam.kind === "ecg") {
    await ecgView(left, exam);
  } else if (exam.kind === "lab") {
    await labView(left, exam);
  } else {
    fill(left, h("p", { class: "muted" }, t("nothing_to_show")));
  }
  if (isReader) {
    panel = await reportPanel(right, exam, user, refresh);
    panel.update(exam, holds());
    leaving.push(panel.leave);
  } else {
    await signedReports(right, exam);
  }
  // Keep the claim while the reader works: renew at a third of the lease.
  const renew = setInterval(async () => {
    if (!holds()) return;
    try {
      await api(`/api/exams/${id}/renew`, { method: "POST" });
      await refresh();
    } catch (e) {
      toast(e.message, "error");
    }
  }, 120000);
  leaving.push(() => clearInterval(renew));
  return () => leaving.forEach((f) => f && f());
}

/** The ECG at paper scale (server-drawn SVG) with speed and gain, and the measurements. */
async function ecgView(left, exam) {
  const speed = h("select", { id: "ecg-speed" }, [12.5, 25, 50].map((s) => h("option", { value: s }, `${s} mm/s`)));
  const gain = h("select", { id: "ecg-gain" }, [5, 10, 20].map((g) => h("option", { value: g }, `${g} mm/mV`)));
  speed.value = "25";
  gain.value = "10";
  const img = h("img", { class: "ecg-tracing", id: "ecg-tracing", alt: t("kind_ecg") });
  const show = () => {
    img.src = `/api/exams/${exam.id}/ecg.svg?speed=${speed.value}&gain=${gain.value}`;
  };
  speed.addEventListener("change", show);
  gain.addEventListener("change", show);
  show();
  const table = h("table", { class: "measurements", id: "ecg-measurements" });
  fill(left, h("div", { class: "toolbar" }, h("label", {}, t("ecg_speed"), speed), h("label", {}, t("ecg_gain"), gain)), h("div", { class: "ecg-scroll" }, img), table);
  try {
    const data = await api(`/api/exams/${exam.id}/ecg`);
    // One row per value shown, saying who measured it; values set aside with why.
    const m = data.measurements || { shown: [], set_aside: [], findings: [] };
    const label = { heart_rate: t("ecg_rate"), pr: "PR", qrs: "QRS", qt: "QT", qtc: "QTc", p_axis: "P°", qrs_axis: "QRS°", t_axis: "T°" };
    const unit = (q) => (q === "heart_rate" ? " bpm" : q.endsWith("axis") ? "°" : " ms");
    const origin = (o) => t(o === "device" ? "ecg_device" : "ecg_automatic");
    fill(
      table,
      h("tr", {}, h("th", {}, ""), h("th", {}, t("ecg_value")), h("th", {}, t("ecg_origin"))),
      m.shown.map((s) => h("tr", {}, h("th", {}, label[s.quantity] || s.quantity), h("td", {}, `${s.value}${unit(s.quantity)}`), h("td", {}, origin(s.origin)))),
      m.set_aside.length ? h("tr", { class: "set-aside" }, h("th", {}, t("ecg_set_aside")), h("td", { colspan: 2 }, m.set_aside.map((s) => s.text_zh).join("；"))) : null,
      m.findings.length ? h("tr", {}, h("th", {}, t("ecg_findings")), h("td", { colspan: 2 }, m.findings.map((f) => f.text_zh).join("；"))) : null,
    );
  } catch (e) {
    fill(table, h("tr", {}, h("td", { class: "error" }, e.message)));
  }
}

/** Lab results with flags, units, reference ranges, corrections and previous values. */
async function labView(left, exam) {
  const data = await api(`/api/exams/${exam.id}/lab`);
  const o = data.order;
  const previous = new Map();
  for (const p of data.previous || []) {
    if (!previous.has(p.code)) previous.set(p.code, p);
  }
  const flagged = (r) => (r.flags || []).some((f) => f && f !== "N");
  fill(
    left,
    h("h2", {}, o.test_text || o.test_code, o.test_loinc ? h("small", {}, ` LOINC ${o.test_loinc}`) : null),
    h("p", { class: "muted" }, t("lab_specimen"), ": ", fmtTime(o.specimen_at), " · ", t("lab_observed"), ": ", fmtTime(o.observed_at), " · ", o.result_status || ""),
    h(
      "table",
      { class: "lab-results", id: "lab-results" },
      h("thead", {}, h("tr", {}, ["lab_test", "lab_value", "lab_units", "lab_range", "lab_flags", "lab_previous"].map((k) => h("th", {}, t(k))))),
      h(
        "tbody",
        {},
        o.results.map((r) => {
          const p = previous.get(r.code);
          return h(
            "tr",
            { class: `${r.critical ? "critical" : ""} ${flagged(r) ? "abnormal" : ""}`, dataset: { code: r.code } },
            h("td", {}, r.code_text || r.code, r.loinc ? h("small", {}, r.loinc) : null),
            h("td", { class: "value" }, r.value_text),
            h("td", {}, r.units || ""),
            h("td", {}, r.reference_range || ""),
            h("td", {}, (r.flags || []).join(" "), r.critical ? h("span", { class: "badge prio-stat" }, t("critical")) : null),
            h("td", {}, p ? `${p.value_text} ${p.units || ""} (${fmtTime(p.observed_at)})` : ""),
          );
        }),
      ),
    ),
    o.history && o.history.length
      ? h("details", {}, h("summary", {}, t("lab_corrections", o.history.length)), h("ul", {}, o.history.map((r) => h("li", {}, `${r.code_text || r.code}: ${r.value_text} ${r.units || ""} — ${r.status || ""}`))))
      : null,
  );
}

/** For township staff and clinicians: the signed reports of this exam, latest version first,
 * with its text, whether its signature verifies, and every version's PDF. */
async function signedReports(right, exam) {
  const list = await api(`/api/reports?exam=${exam.id}`);
  if (!list.length) {
    fill(right, h("h2", {}, t("reports")), h("p", { class: "muted" }, t("no_report_yet")));
    return;
  }
  const reports = await Promise.all(list.map((r) => api(`/api/reports/${encodeURIComponent(r.report_id)}`)));
  // Field labels come from the templates; without them the field keys are shown.
  const templates = await api(`/api/templates?kind=${exam.kind}`).catch(() => []);
  fill(
    right,
    h("h2", {}, t("reports")),
    reports.map((r) => {
      const versions = [...r.versions].sort((a, b) => b.version - a.version);
      return versions.map((v, i) => {
        const valid = v.verification && v.verification.state === "valid";
        const p = v.payload || { content: {}, signer: {} };
        return h(
          "details",
          { class: `version status-${v.status}`, open: i === 0, dataset: { version: v.version, status: v.status } },
          h(
            "summary",
            {},
            `v${v.version} · ${t("status_" + v.status)} · ${(p.signer && p.signer.display_name) || v.signer} · ${fmtTime(v.signed_at)} `,
            h("span", { class: valid ? "sig ok" : "sig bad" }, valid ? t("signature_valid") : t("signature_invalid")),
          ),
          p.reason ? h("p", { class: "reason" }, t("amend_reason"), ": ", p.reason) : null,
          contentView(templates.find((x) => x.id === p.template), p.content || {}, v.critical),
          h("p", {}, h("a", { href: `/api/reports/${encodeURIComponent(r.report.report_id)}/versions/${v.version}/pdf`, target: "_blank" }, "PDF")),
        );
      });
    }),
  );
}
