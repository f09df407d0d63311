//! The township's pages, in Simplified Chinese or English (every word comes from
//! [`super::i18n`]). Everything that came from the hub, the outbox or a user is escaped
//! with [`esc`] (text and attribute values) or [`path_segment`] (inside URLs) before it
//! reaches the HTML.
//!
//! Stable hooks for browser tests: the sections `id="alerts"`, `id="outbox"` (with
//! `data-lane="imaging|lab|ecg"` on each lane) and `id="reports"`; `data-report-id` on
//! every report row and alert; `id="lang-switch"` on the language link.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use formats::report::ReportPayload;

use super::db::VersionRow;
use super::i18n::{
    acknowledged_sentence, age, current_heading, t, term, version_label, Lang, Terms, T,
};
use crate::lanes::{Lane, OutboxSummary};

/// The township is in China: times are shown in Beijing time (UTC+8, no daylight
/// saving), whatever the gateway machine's clock zone is.
const BEIJING_OFFSET_MS: i64 = 8 * 3600 * 1000;

/// Escape text for HTML element content and quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Percent-encode one URL path segment (everything but RFC 3986 unreserved characters).
pub fn path_segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

/// `YYYY-MM-DD HH:MM:SS` in Beijing time.
pub fn beijing_time(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis((ms + BEIJING_OFFSET_MS).max(0) as u64);
    humantime::format_rfc3339_seconds(t)
        .to_string()
        .replace('T', " ")
        .trim_end_matches('Z')
        .to_string()
}

/// RFC 3339 (UTC) for the JSON API.
pub fn rfc3339(ms: i64) -> String {
    let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Chinese name of a report status (the HL7 message to the HIS uses it too).
pub fn status_label(status: &str) -> &str {
    term(Lang::Zh, Terms::Status, status)
}

/// Chinese name of an exam kind.
pub fn kind_label(kind: &str) -> &str {
    term(Lang::Zh, Terms::Kind, kind)
}

/// Chinese label of a report field (templates name fields in English).
pub fn field_label(field: &str) -> &str {
    term(Lang::Zh, Terms::Field, field)
}

/// A report as the list shows it: its current (newest verified) version, or when none
/// verified, its newest received version (marked as not verified).
#[derive(Debug, Clone)]
pub struct Summary {
    /// Report id.
    pub report_id: String,
    /// The newest verified version.
    pub current: Option<VersionRow>,
    /// The newest version received (verified or not).
    pub latest: VersionRow,
    /// Versions held.
    pub versions: usize,
    /// Of which failed verification.
    pub rejected: usize,
    /// Arrival of the newest version (ms).
    pub last_received_at: i64,
    /// An earlier version was a critical finding that the current one withdrew (the
    /// value was corrected): nothing to treat, but the township must see it went.
    pub critical_withdrawn: bool,
}

impl Summary {
    /// The current version is critical and nobody acknowledged it yet.
    pub fn critical_waiting(&self) -> bool {
        self.current
            .as_ref()
            .is_some_and(|c| c.critical && c.acknowledged_at.is_none())
    }

    /// The row whose fields are shown.
    pub fn shown(&self) -> &VersionRow {
        self.current.as_ref().unwrap_or(&self.latest)
    }
}

/// Group version rows into reports: critical ones awaiting acknowledgement first, then
/// newest first.
pub fn summarize(rows: Vec<VersionRow>) -> Vec<Summary> {
    let mut by_report: BTreeMap<String, Vec<VersionRow>> = BTreeMap::new();
    for row in rows {
        by_report
            .entry(row.report_id.clone())
            .or_default()
            .push(row);
    }
    let mut out: Vec<Summary> = by_report
        .into_iter()
        .filter_map(|(report_id, mut rows)| {
            rows.sort_by_key(|r| (r.version, r.id));
            let current = rows.iter().rev().find(|r| r.verified).cloned();
            let latest = rows.last()?.clone();
            let critical_withdrawn = current.as_ref().is_some_and(|c| {
                !c.critical
                    && rows
                        .iter()
                        .any(|r| r.verified && r.critical && r.version < c.version)
            });
            Some(Summary {
                report_id,
                current,
                versions: rows.len(),
                rejected: rows.iter().filter(|r| !r.verified).count(),
                last_received_at: rows.iter().map(|r| r.received_at).max().unwrap_or(0),
                latest,
                critical_withdrawn,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        b.critical_waiting()
            .cmp(&a.critical_waiting())
            .then(b.last_received_at.cmp(&a.last_received_at))
            .then(a.report_id.cmp(&b.report_id))
    });
    out
}

/// How many reports the page lists (newest first); the JSON API has them all.
pub const REPORTS_LISTED: usize = 200;
/// How many acknowledged critical results the alerts section keeps showing.
const ACKNOWLEDGED_LISTED: usize = 10;
/// Longest alert text shown in the alerts section (the report page has all of it).
const ALERT_TEXT_CHARS: usize = 300;

/// Laid out for 1366x768 and up: one column of sections, the lanes side by side, long
/// identifiers broken anywhere rather than widening the page.
const STYLE: &str = "body{font-family:'Noto Sans CJK SC','Microsoft YaHei',sans-serif;margin:0 auto;padding:.8em 1.2em;max-width:1600px;color:#222;font-size:14px}\
header{display:flex;justify-content:space-between;align-items:baseline;flex-wrap:wrap;gap:.5em}\
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.15em;margin:1em 0 .4em}h3{font-size:1em;margin:.8em 0 .3em}\
section{margin-bottom:1.2em}\
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ccc;padding:.3em .45em;text-align:left;vertical-align:top;overflow-wrap:anywhere}\
th{background:#f0f0f0}tr.critical td{background:#fde2e2}.crit{color:#b00000;font-weight:bold}\
.ok{color:#1a7f37}.bad{color:#b00000;font-weight:bold}.warn{border:2px solid #b00000;background:#fde2e2;color:#b00000;padding:.6em .8em;margin:.6em 0;font-weight:bold}\
.note{color:#666;font-size:.9em}pre{white-space:pre-wrap;font-family:inherit;margin:.2em 0 1em}\
.field h3{margin:.8em 0 .2em;font-size:1em}form{margin:.4em 0}input{padding:.3em}button{padding:.3em 1em}\
.lanes{display:grid;grid-template-columns:repeat(3,minmax(0,1fr));gap:.8em}\
.lane{border:1px solid #ccc;border-radius:4px;padding:.5em .7em}.lane h3{margin-top:0}\
.counts{display:flex;gap:1.2em;margin:.3em 0}.counts b{font-size:1.5em;display:block}\
.alert{border:2px solid #b00000;background:#fde2e2;padding:.6em .8em;margin:.5em 0}\
.alert .ack{font-weight:normal;color:#222}#stale{display:none}.stale #stale{display:block}";

/// A whole page. `live`: the township page, refreshed in place by `/township.js`
/// (a page without scripts reloads itself instead).
fn page(lang: Lang, title: &str, live: bool, body: &str) -> String {
    let (head_extra, script) = if live {
        (
            "<noscript><meta http-equiv=\"refresh\" content=\"30\"></noscript>\n",
            "<script src=\"/township.js\" defer></script>\n",
        )
    } else {
        ("", "")
    };
    let other = lang.other();
    format!(
        "<!DOCTYPE html>\n<html lang=\"{}\">\n<head>\n<meta charset=\"utf-8\">\n{head_extra}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n{script}</head>\n<body>\n\
         <p class=\"note\" style=\"text-align:right;margin:0\"><a id=\"lang-switch\" href=\"?lang={}\" hreflang=\"{}\">{}</a></p>\n\
         {body}\n<p class=\"note\">{} {}</p>\n</body>\n</html>\n",
        lang.html(),
        esc(title),
        other.code(),
        other.html(),
        t(other, T::LanguageName),
        t(lang, T::BeijingTime),
        t(lang, T::InternalOnly),
    )
}

fn verification_cell(lang: Lang, row: &VersionRow) -> String {
    if row.verified {
        format!("<span class=\"ok\">{}</span>", t(lang, T::SignatureValid))
    } else {
        format!(
            "<span class=\"bad\">{}</span><br><span class=\"note\">{}</span>",
            t(lang, T::SignatureInvalid),
            esc(row.verify_error.as_deref().unwrap_or(""))
        )
    }
}

/// `<table>` (with an id), its header row of our own labels, and the opening `<tbody>`.
fn table_head(body: &mut String, id: Option<&str>, headers: &[&str]) {
    match id {
        Some(id) => {
            let _ = write!(body, "<table id=\"{id}\">");
        }
        None => body.push_str("<table>"),
    }
    body.push_str("\n<thead><tr>");
    for h in headers {
        let _ = write!(body, "<th>{h}</th>");
    }
    body.push_str("</tr></thead>\n<tbody>\n");
}

fn opt(text: &Option<String>) -> String {
    esc(text.as_deref().unwrap_or("—"))
}

/// A DICOM person name for reading: the ideographic group when there is one
/// (`Zhang^San=张^三` → `张三`), else the components separated by spaces.
pub fn person_name(name: &str) -> String {
    let mut groups = name.split('=');
    let alphabetic = groups.next().unwrap_or("");
    match groups
        .next()
        .filter(|g| !g.trim_matches('^').trim().is_empty())
    {
        Some(ideographic) => ideographic.split('^').map(str::trim).collect(),
        None => alphabetic
            .split('^')
            .map(str::trim)
            .filter(|c| !c.is_empty())
            .collect::<Vec<_>>()
            .join(" "),
    }
}

fn patient_cell(lang: Lang, name: Option<&str>, id: Option<&str>) -> String {
    let name = name.map(person_name).filter(|n| !n.is_empty());
    match (name, id) {
        (None, None) => "—".into(),
        (Some(n), None) => esc(&n),
        (n, Some(id)) => format!(
            "{}<br><span class=\"note\">{} {}</span>",
            esc(n.as_deref().unwrap_or("—")),
            t(lang, T::PatientId),
            esc(id)
        ),
    }
}

/// An RFC 3339 time from the outbox shown in Beijing time (as given when unreadable).
fn beijing_of(rfc3339_text: &str) -> String {
    match humantime::parse_rfc3339_weak(rfc3339_text) {
        Ok(t) => match t.duration_since(UNIX_EPOCH) {
            Ok(d) => beijing_time(d.as_millis() as i64),
            Err(_) => esc(rfc3339_text),
        },
        Err(_) => esc(rfc3339_text),
    }
}

/// What the township page shows.
#[derive(Debug)]
pub struct TownshipView<'a> {
    /// Reports received (as [`summarize`] groups them).
    pub summaries: &'a [Summary],
    /// The outbox by lane.
    pub outbox: &'a OutboxSummary,
    /// The text of each critical version awaiting acknowledgement, by report id.
    pub alert_texts: &'a BTreeMap<String, String>,
    /// When the page was made (ms).
    pub now_ms: i64,
}

/// The text an alert shows: the lab alert's own sentence, else the impression, else
/// the findings (the report page has everything).
pub fn alert_text(payload: &str) -> Option<String> {
    let p = serde_json::from_str::<ReportPayload>(payload).ok()?;
    let text = ["alert", "impression", "conclusion", "findings"]
        .iter()
        .find_map(|f| p.content.get(*f).filter(|t| !t.trim().is_empty()))?;
    let mut shown: String = text.chars().take(ALERT_TEXT_CHARS).collect();
    if text.chars().count() > ALERT_TEXT_CHARS {
        shown.push('…');
    }
    Some(shown)
}

/// `GET /`: critical results to acknowledge, the outbox, the reports received.
pub fn township_page(lang: Lang, view: &TownshipView<'_>) -> String {
    let mut body = format!(
        "<header><h1>{}</h1><span class=\"note\">{} <span id=\"updated\">{}</span></span></header>\n\
         <p id=\"stale\" class=\"warn\">{}</p>\n",
        t(lang, T::PageTitle),
        t(lang, T::Updated),
        beijing_time(view.now_ms),
        t(lang, T::Stale),
    );
    alerts_section(&mut body, lang, view);
    outbox_section(&mut body, lang, view.outbox);
    reports_section(&mut body, lang, view.summaries);
    page(lang, t(lang, T::PageTitle), true, &body)
}

fn alerts_section(body: &mut String, lang: Lang, view: &TownshipView<'_>) {
    let mut waiting: Vec<&Summary> = view
        .summaries
        .iter()
        .filter(|s| s.critical_waiting())
        .collect();
    waiting.sort_by_key(|s| std::cmp::Reverse(s.last_received_at));
    let _ = writeln!(
        body,
        "<section id=\"alerts\" data-waiting=\"{}\">\n<h2>{}</h2>",
        waiting.len(),
        t(lang, T::AlertsHeading)
    );
    if waiting.is_empty() {
        let _ = writeln!(body, "<p class=\"ok\">{}</p>", t(lang, T::AlertsNone));
    } else {
        let _ = writeln!(
            body,
            "<p class=\"warn\">{} {}</p>",
            waiting.len(),
            t(lang, T::AlertsWaiting)
        );
    }
    for s in &waiting {
        let Some(c) = &s.current else { continue };
        let link = format!("/reports/{}", path_segment(&s.report_id));
        let _ = writeln!(
            body,
            "<div class=\"alert\" data-report-id=\"{}\">\
             <span class=\"crit\">{}</span> · {} · {} {} · {} {}\
             {}\
             <form method=\"post\" action=\"/api{link}/versions/{}/acknowledge\">\
             <input type=\"hidden\" name=\"back\" value=\"list\">\
             <label>{} <input name=\"name\" required maxlength=\"64\"></label> \
             <button type=\"submit\">{}</button> <a href=\"{link}\">{}</a></form></div>",
            esc(&s.report_id),
            t(lang, T::Critical),
            patient_cell(
                lang,
                c.exam.patient_name.as_deref(),
                c.exam.patient_id.as_deref()
            ),
            esc(term(
                lang,
                Terms::Kind,
                c.exam.kind.as_deref().unwrap_or("")
            )),
            opt(&c.exam.modality),
            t(lang, T::ReceivedAt),
            beijing_time(s.last_received_at),
            view.alert_texts
                .get(&s.report_id)
                .map(|text| format!("<pre>{}</pre>", esc(text)))
                .unwrap_or_default(),
            c.version,
            t(lang, T::AckName),
            t(lang, T::AckButton),
            t(lang, T::View),
        );
    }
    let mut acknowledged: Vec<(&Summary, &VersionRow)> = view
        .summaries
        .iter()
        .filter_map(|s| {
            s.current
                .as_ref()
                .filter(|c| c.critical && c.acknowledged_at.is_some())
                .map(|c| (s, c))
        })
        .collect();
    acknowledged.sort_by_key(|(_, c)| std::cmp::Reverse(c.acknowledged_at));
    if !acknowledged.is_empty() {
        let _ = writeln!(body, "<h3>{}</h3>", t(lang, T::AlertsAcknowledged));
        table_head(
            body,
            None,
            &[T::Patient, T::Exam, T::AckBy, T::Report].map(|k| t(lang, k)),
        );
        for (s, c) in acknowledged.into_iter().take(ACKNOWLEDGED_LISTED) {
            let _ = writeln!(
                body,
                "<tr data-report-id=\"{}\"><td>{}</td><td>{} {}</td><td>{} · {}<br><span class=\"note\">{}</span></td>\
                 <td><a href=\"/reports/{}\">{}</a></td></tr>",
                esc(&s.report_id),
                patient_cell(lang, c.exam.patient_name.as_deref(), c.exam.patient_id.as_deref()),
                esc(term(lang, Terms::Kind, c.exam.kind.as_deref().unwrap_or(""))),
                opt(&c.exam.modality),
                opt(&c.acknowledged_by),
                c.acknowledged_at.map(beijing_time).unwrap_or_default(),
                if c.relayed_at.is_some() {
                    t(lang, T::RelayedToCounty)
                } else {
                    t(lang, T::NotRelayedYet)
                },
                path_segment(&s.report_id),
                t(lang, T::View),
            );
        }
        body.push_str("</tbody>\n</table>\n");
    }
    withdrawn_list(body, lang, view.summaries);
    body.push_str("</section>\n");
}

/// Critical results withdrawn by a correction, newest first: listed so that a clinician
/// who saw the alert learns it went, and why.
fn withdrawn_list(body: &mut String, lang: Lang, summaries: &[Summary]) {
    let mut withdrawn: Vec<(&Summary, &VersionRow)> = summaries
        .iter()
        .filter(|s| s.critical_withdrawn)
        .filter_map(|s| s.current.as_ref().map(|c| (s, c)))
        .collect();
    if withdrawn.is_empty() {
        return;
    }
    withdrawn.sort_by_key(|(_, c)| std::cmp::Reverse(c.received_at));
    let _ = writeln!(
        body,
        "<h3 id=\"withdrawn\">{}</h3>",
        t(lang, T::AlertsWithdrawn)
    );
    table_head(
        body,
        None,
        &[
            T::Patient,
            T::Exam,
            T::WithdrawnReason,
            T::ReceivedAt,
            T::Report,
        ]
        .map(|k| t(lang, k)),
    );
    for (s, c) in withdrawn.into_iter().take(ACKNOWLEDGED_LISTED) {
        let _ = writeln!(
            body,
            "<tr data-report-id=\"{}\" data-withdrawn=\"true\"><td>{}</td><td>{} {}</td><td>{}</td><td>{}</td>\
             <td><a href=\"/reports/{}\">{}</a></td></tr>",
            esc(&s.report_id),
            patient_cell(lang, c.exam.patient_name.as_deref(), c.exam.patient_id.as_deref()),
            esc(term(lang, Terms::Kind, c.exam.kind.as_deref().unwrap_or(""))),
            opt(&c.exam.modality),
            opt(&c.reason),
            beijing_time(c.received_at),
            path_segment(&s.report_id),
            t(lang, T::View),
        );
    }
    body.push_str("</tbody>\n</table>\n");
}

fn outbox_section(body: &mut String, lang: Lang, outbox: &OutboxSummary) {
    let lanes = [
        ("imaging", &outbox.imaging, T::Study),
        ("lab", &outbox.lab, T::Message),
        ("ecg", &outbox.ecg, T::File),
    ];
    let _ = writeln!(
        body,
        "<section id=\"outbox\">\n<h2>{}</h2>\n<div class=\"lanes\">",
        t(lang, T::OutboxHeading)
    );
    for (name, lane, _) in &lanes {
        lane_card(body, lang, name, lane);
    }
    body.push_str("</div>\n");
    let _ = writeln!(
        body,
        "<p class=\"note\">{}: {} · {}: {}{}</p>",
        t(lang, T::AwaitingCompletion),
        outbox.studies_awaiting_completion,
        t(lang, T::LastContact),
        outbox
            .last_contact
            .as_deref()
            .map(beijing_of)
            .unwrap_or_else(|| t(lang, T::Never).to_string()),
        outbox
            .report_feed_error
            .as_deref()
            .map(|e| format!(
                " · <span class=\"bad\">{}: {}</span>",
                t(lang, T::FeedError),
                esc(e)
            ))
            .unwrap_or_default(),
    );
    // Recently sent, lane by lane.
    let _ = writeln!(body, "<h3>{}</h3>", t(lang, T::RecentSent));
    let named = [T::Patient, T::Exam, T::Sent, T::ReceivedAt, T::Read].map(|k| t(lang, k));
    table_head(body, Some("sent"), &[&[""][..], &named].concat());
    let mut any = false;
    for (name, lane, unit) in &lanes {
        for item in &lane.recent_sent {
            any = true;
            let counts = if *name == "imaging" {
                let mut c = format!("{} {}", item.sent, t(lang, T::Instances));
                if item.waiting > 0 {
                    let _ = write!(c, " · {} {}", t(lang, T::Waiting), item.waiting);
                }
                if item.rejected > 0 {
                    let _ = write!(
                        c,
                        " · <span class=\"bad\">{} {}</span>",
                        t(lang, T::Rejected),
                        item.rejected
                    );
                }
                c
            } else {
                "✓".to_string()
            };
            let read = match &item.report {
                Some(r) => format!(
                    "<a href=\"{}\" data-report-id=\"{}\">{}</a>{}",
                    esc(&r.view_url),
                    esc(&r.report_id),
                    esc(term(lang, Terms::Status, &r.status)),
                    if r.critical {
                        format!(" <span class=\"crit\">{}</span>", t(lang, T::Critical))
                    } else {
                        String::new()
                    }
                ),
                None if *name == "lab" => "—".to_string(),
                None => format!("<span class=\"note\">{}</span>", t(lang, T::NotReadYet)),
            };
            let _ = writeln!(
                body,
                "<tr data-lane=\"{name}\" data-item-id=\"{}\"><td>{}</td><td>{}</td>\
                 <td>{}<br><span class=\"note\">{} {}</span></td><td>{counts}</td><td>{}</td><td>{read}</td></tr>",
                esc(&item.id),
                esc(term(lang, Terms::Lane, name)),
                patient_cell(lang, item.patient_name.as_deref(), item.patient_id.as_deref()),
                opt(&item.description),
                t(lang, *unit),
                esc(&item.id),
                item.sent_at_ms.map(beijing_time).unwrap_or_default(),
            );
        }
    }
    if !any {
        let _ = writeln!(
            body,
            "<tr><td colspan=\"6\">{}</td></tr>",
            t(lang, T::NothingSent)
        );
    }
    body.push_str("</tbody>\n</table>\n");
    // Rejected, lane by lane, with the reason.
    let _ = writeln!(body, "<h3>{}</h3>", t(lang, T::RejectedItems));
    let named = [T::ReceivedAt, T::Source, T::Patient, T::Reason].map(|k| t(lang, k));
    table_head(body, Some("rejected"), &[&[""][..], &named].concat());
    let mut any = false;
    for (name, lane, unit) in &lanes {
        for item in &lane.rejected_items {
            any = true;
            let what = match (&item.id, &item.study_uid) {
                (Some(id), Some(study)) if *name == "imaging" => format!(
                    "<br><span class=\"note\">{} {} · SOP {}</span>",
                    t(lang, T::Study),
                    esc(study),
                    esc(id)
                ),
                (Some(id), _) => format!(
                    "<br><span class=\"note\">{} {}</span>",
                    t(lang, *unit),
                    esc(id)
                ),
                (None, _) => String::new(),
            };
            let _ = writeln!(
                body,
                "<tr data-lane=\"{name}\" class=\"critical\"><td>{}{what}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"reason\">{}</td></tr>",
                esc(term(lang, Terms::Lane, name)),
                beijing_of(&item.at),
                esc(term(lang, Terms::Source, &item.source)),
                opt(&item.patient_id),
                esc(&item.reason),
            );
        }
    }
    if !any {
        let _ = writeln!(
            body,
            "<tr><td colspan=\"5\" class=\"ok\">{}</td></tr>",
            t(lang, T::NothingRejected)
        );
    }
    body.push_str("</tbody>\n</table>\n</section>\n");
}

fn lane_card(body: &mut String, lang: Lang, name: &str, lane: &Lane) {
    let _ = write!(
        body,
        "<div class=\"lane\" data-lane=\"{name}\"><h3>{}</h3>\
         <div class=\"counts\"><span data-count=\"waiting\">{}<b>{}</b></span>\
         <span data-count=\"sent\">{}<b>{}</b></span>\
         <span data-count=\"rejected\"{}>{}<b>{}</b></span></div>",
        esc(term(lang, Terms::Lane, name)),
        t(lang, T::Waiting),
        lane.waiting,
        t(lang, T::Sent),
        lane.sent,
        if lane.rejected > 0 {
            " class=\"bad\""
        } else {
            ""
        },
        t(lang, T::Rejected),
        lane.rejected,
    );
    if lane.waiting_urgent > 0 {
        let _ = write!(
            body,
            "<p class=\"crit\">{} {}</p>",
            t(lang, T::OfWhichUrgent),
            lane.waiting_urgent
        );
    }
    match &lane.oldest_waiting {
        Some(o) => {
            let _ = write!(
                body,
                "<p>{}: {} {}<br><span class=\"note\">{}{} · {} {}</span></p>",
                t(lang, T::OldestWaiting),
                t(lang, T::Age),
                esc(&age(lang, o.age_secs)),
                esc(&o.id),
                o.patient_id
                    .as_deref()
                    .map(|p| format!(" · {} {}", t(lang, T::PatientId), esc(p)))
                    .unwrap_or_default(),
                o.attempts,
                t(lang, T::Attempts),
            );
        }
        None => {
            let _ = write!(body, "<p class=\"note\">{}</p>", t(lang, T::NothingWaiting));
        }
    }
    match &lane.last_error {
        Some(e) => {
            let _ = write!(
                body,
                "<p class=\"bad\">{}: {}<br><span class=\"note\">{} · {}</span></p>",
                t(lang, T::LastError),
                esc(&e.error),
                beijing_of(&e.at),
                esc(&e.id),
            );
        }
        None => {
            let _ = write!(body, "<p class=\"note\">{}</p>", t(lang, T::NoErrors));
        }
    }
    body.push_str("</div>\n");
}

fn reports_section(body: &mut String, lang: Lang, summaries: &[Summary]) {
    let _ = writeln!(
        body,
        "<section id=\"reports\">\n<h2>{}</h2>",
        t(lang, T::ReportsHeading)
    );
    if summaries.is_empty() {
        let _ = writeln!(body, "<p>{}</p>\n</section>", t(lang, T::NoReports));
        return;
    }
    // Newest first here: what awaits acknowledgement is already at the top of the page.
    let mut rows: Vec<&Summary> = summaries.iter().collect();
    rows.sort_by(|a, b| {
        b.last_received_at
            .cmp(&a.last_received_at)
            .then(a.report_id.cmp(&b.report_id))
    });
    if rows.len() > REPORTS_LISTED {
        let _ = writeln!(
            body,
            "<p class=\"note\">{} {REPORTS_LISTED} / {}</p>",
            t(lang, T::ShowingNewest),
            rows.len()
        );
        rows.truncate(REPORTS_LISTED);
    }
    table_head(
        body,
        None,
        &[
            T::Critical,
            T::Patient,
            T::Exam,
            T::ReportStatus,
            T::Signer,
            T::ReceivedAt,
            T::Verification,
            T::Actions,
        ]
        .map(|k| t(lang, k)),
    );
    for s in rows {
        let row = s.shown();
        let link = format!("/reports/{}", path_segment(&s.report_id));
        let class = if s.critical_waiting() {
            " class=\"critical\""
        } else {
            ""
        };
        let critical = match &s.current {
            Some(c) if c.critical => match (&c.acknowledged_by, c.acknowledged_at) {
                (Some(by), Some(at)) => format!(
                    "<span class=\"crit\">{}</span><br>{}: {}<br><span class=\"note\">{}</span>",
                    t(lang, T::Critical),
                    t(lang, T::AckBy),
                    esc(by),
                    beijing_time(at)
                ),
                _ => format!(
                    "<span class=\"crit\">{}</span>",
                    t(lang, T::CriticalWaiting)
                ),
            },
            _ => String::new(),
        };
        let mut verification = match &s.current {
            Some(c) => verification_cell(lang, c),
            None => verification_cell(lang, &s.latest),
        };
        if s.current.is_some() && s.rejected > 0 {
            let _ = write!(
                verification,
                "<br><span class=\"bad\">{} {}</span>",
                s.rejected,
                t(lang, T::OtherVersionsInvalid)
            );
        }
        let pdf = match &s.current {
            Some(c) if c.pdf_available => {
                format!(
                    " · <a href=\"{link}/versions/{}/pdf\" data-pdf>PDF</a>",
                    c.version
                )
            }
            _ => String::new(),
        };
        let _ =
            writeln!(
            body,
            "<tr{class} data-report-id=\"{}\" data-status=\"{}\"><td>{critical}</td><td>{}</td>\
             <td>{} {}<br><span class=\"note\">{} {}</span></td>\
             <td>{} · {}</td><td>{}<br><span class=\"note\">{}</span></td><td>{}</td>\
             <td>{verification}</td><td><a href=\"{link}\">{}</a>{pdf}</td></tr>",
            esc(&s.report_id),
            esc(&row.status),
            patient_cell(lang, row.exam.patient_name.as_deref(), row.exam.patient_id.as_deref()),
            esc(term(lang, Terms::Kind, row.exam.kind.as_deref().unwrap_or(""))),
            opt(&row.exam.modality),
            t(lang, T::Accession),
            opt(&row.exam.accession_number),
            esc(term(lang, Terms::Status, &row.status)),
            version_label(lang, row.version),
            opt(&row.signer_name),
            row.signed_at.map(beijing_time).unwrap_or_default(),
            beijing_time(s.last_received_at),
            t(lang, T::View),
        );
    }
    body.push_str("</tbody>\n</table>\n</section>\n");
}

/// `GET /reports/{id}`: the current valid version and every version received.
pub fn report_page(lang: Lang, report_id: &str, versions: &[VersionRow]) -> String {
    let mut body = format!(
        "<p><a href=\"/\">{}</a></p>\n<h1>{} {}</h1>\n",
        t(lang, T::BackToList),
        t(lang, T::ReportTitle),
        esc(report_id)
    );
    let link = format!("/reports/{}", path_segment(report_id));
    let current = versions
        .iter()
        .filter(|v| v.verified)
        .max_by_key(|v| v.version);
    match current {
        None => {
            let _ = writeln!(
                body,
                "<div class=\"warn\">{}</div>",
                t(lang, T::NoVerifiedVersion)
            );
        }
        Some(c) => current_section(&mut body, lang, &link, c),
    }
    let _ = writeln!(body, "<h2>{}</h2>", t(lang, T::AllVersions));
    let named = [
        T::Version,
        T::ReportStatus,
        T::ReceivedAt,
        T::Signer,
        T::Verification,
        T::AmendReason,
        T::CriticalAck,
    ]
    .map(|k| t(lang, k));
    table_head(&mut body, None, &[&named[..], &["PDF"]].concat());
    for v in versions {
        let class = if v.verified {
            ""
        } else {
            " class=\"critical\""
        };
        let ack = match (&v.acknowledged_by, v.acknowledged_at) {
            (Some(by), Some(at)) => format!(
                "{} · {}<br><span class=\"note\">{}</span>",
                esc(by),
                beijing_time(at),
                if v.relayed_at.is_some() {
                    t(lang, T::RelayedToCounty)
                } else {
                    t(lang, T::NotRelayedYet)
                }
            ),
            _ if v.verified && v.critical => {
                format!(
                    "<span class=\"crit\">{}</span>",
                    t(lang, T::CriticalWaiting)
                )
            }
            _ => String::new(),
        };
        let pdf = if !v.verified {
            format!("<span class=\"bad\">{}</span>", t(lang, T::PdfNotOffered))
        } else if v.pdf_available {
            format!(
                "<a href=\"{link}/versions/{}/pdf\">{}</a>",
                v.version,
                t(lang, T::PrintPdf)
            )
        } else {
            format!("<span class=\"note\">{}</span>", t(lang, T::PdfNotYet))
        };
        let _ = writeln!(
            body,
            "<tr{class}><td>{}{}</td><td>{}</td><td>{}</td><td>{}<br><span class=\"note\">{}</span></td>\
             <td>{}</td><td>{}</td><td>{ack}</td><td>{pdf}</td></tr>",
            version_label(lang, v.version),
            if v.critical {
                format!(" <span class=\"crit\">{}</span>", t(lang, T::Critical))
            } else {
                String::new()
            },
            esc(term(lang, Terms::Status, &v.status)),
            beijing_time(v.received_at),
            opt(&v.signer_name),
            v.signed_at.map(beijing_time).unwrap_or_default(),
            verification_cell(lang, v),
            opt(&v.reason),
        );
    }
    body.push_str("</tbody>\n</table>\n");
    page(
        lang,
        &format!("{} {report_id}", t(lang, T::ReportTitle)),
        false,
        &body,
    )
}

fn current_section(body: &mut String, lang: Lang, link: &str, c: &VersionRow) {
    let payload = c
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<ReportPayload>(p).ok());
    if c.critical {
        match (&c.acknowledged_by, c.acknowledged_at) {
            (Some(by), Some(at)) => {
                let _ = writeln!(
                    body,
                    "<p class=\"crit\">{}</p>",
                    acknowledged_sentence(
                        lang,
                        &esc(by),
                        &beijing_time(at),
                        c.relayed_at.is_some()
                    )
                );
            }
            _ => {
                let _ = writeln!(
                    body,
                    "<div class=\"warn\">{}\n\
                     <form method=\"post\" action=\"/api{link}/versions/{}/acknowledge\">\
                     <label>{} <input name=\"name\" required maxlength=\"64\"></label> \
                     <button type=\"submit\">{}</button></form></div>",
                    t(lang, T::CriticalBanner),
                    c.version,
                    t(lang, T::AckName),
                    t(lang, T::AckButton),
                );
            }
        }
    }
    let _ = writeln!(
        body,
        "<h2>{}<span class=\"ok\"> · {}</span></h2>",
        esc(&current_heading(lang, c.version, &c.status)),
        t(lang, T::SignatureValid),
    );
    let _ = writeln!(
        body,
        "<table>\n<tr><th>{}</th><td>{}</td><th>{}</th><td>{}</td></tr>\n\
         <tr><th>{}</th><td>{} {}</td><th>{}</th><td>{}</td></tr>\n\
         <tr><th>{}</th><td colspan=\"3\">{}</td></tr>\n\
         <tr><th>{}</th><td>{}</td><th>{}</th><td>{}</td></tr>",
        t(lang, T::PatientName),
        opt(&c.exam.patient_name),
        t(lang, T::PatientId),
        opt(&c.exam.patient_id),
        t(lang, T::ExamType),
        esc(term(
            lang,
            Terms::Kind,
            c.exam.kind.as_deref().unwrap_or("")
        )),
        opt(&c.exam.modality),
        t(lang, T::Accession),
        opt(&c.exam.accession_number),
        t(lang, T::StudyUid),
        opt(&c.exam.study_uid),
        t(lang, T::Signer),
        opt(&c.signer_name),
        t(lang, T::SignedAt),
        c.signed_at.map(beijing_time).unwrap_or_default(),
    );
    if let Some(pre) = payload.as_ref().and_then(|p| p.preliminary_by.as_ref()) {
        let _ = writeln!(
            body,
            "<tr><th>{}</th><td colspan=\"3\">{} · {}</td></tr>",
            t(lang, T::PreliminaryBy),
            esc(&pre.display_name),
            beijing_time(pre.signed_at_ms)
        );
    }
    if let Some(reason) = &c.reason {
        let _ = writeln!(
            body,
            "<tr><th>{}</th><td colspan=\"3\">{}</td></tr>",
            t(lang, T::AmendReason),
            esc(reason)
        );
    }
    body.push_str("</table>\n");
    if let Some(p) = &payload {
        for (field, text) in &p.content {
            let _ = writeln!(
                body,
                "<div class=\"field\"><h3>{}</h3><pre>{}</pre></div>",
                esc(term(lang, Terms::Field, field)),
                esc(text)
            );
        }
    }
    if c.pdf_available {
        let _ = writeln!(
            body,
            "<p><a href=\"{link}/versions/{}/pdf\">{} ({})</a></p>",
            c.version,
            t(lang, T::PrintPdf),
            version_label(lang, c.version)
        );
    } else {
        let _ = writeln!(body, "<p class=\"note\">{}</p>", t(lang, T::PdfNotFetched));
    }
}

/// A short message page (errors, "not found").
pub fn message_page(lang: Lang, title: &str, message: &str) -> String {
    page(
        lang,
        title,
        false,
        &format!(
            "<p><a href=\"/\">{}</a></p>\n<h1>{}</h1>\n<p>{}</p>",
            t(lang, T::BackToList),
            esc(title),
            esc(message)
        ),
    )
}

/// The township page's refresh: every 5 s it fetches the page again and swaps in the
/// sections, leaving alone a section where someone is typing a name (a reload would
/// lose it). Served as `/township.js` so the content security policy can keep inline
/// scripts out; it only ever moves nodes the server rendered (and escaped).
pub const REFRESH_SCRIPT: &str = r#""use strict";
(function () {
  var ids = ["updated", "alerts", "outbox", "reports"];
  function busy(el) {
    var a = document.activeElement;
    if (a && a !== document.body && el.contains(a)) return true;
    var names = el.querySelectorAll("input[name=name]");
    for (var i = 0; i < names.length; i++) if (names[i].value) return true;
    return false;
  }
  function refresh() {
    fetch(location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { if (!r.ok) throw new Error(String(r.status)); return r.text(); })
      .then(function (text) {
        var doc = new DOMParser().parseFromString(text, "text/html");
        ids.forEach(function (id) {
          var cur = document.getElementById(id), next = doc.getElementById(id);
          if (cur && next && !busy(cur)) cur.replaceWith(document.importNode(next, true));
        });
        document.body.classList.remove("stale");
      })
      .catch(function () { document.body.classList.add("stale"); });
  }
  setInterval(refresh, 5000);
})();
"#;
