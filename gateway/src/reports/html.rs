//! The township's report pages (Simplified Chinese). Everything that came from the hub
//! or a user is escaped with [`esc`] (text and attribute values) or [`path_segment`]
//! (inside URLs) before it reaches the HTML.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, UNIX_EPOCH};

use formats::report::ReportPayload;

use super::db::VersionRow;

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

/// Chinese name of a report status.
pub fn status_label(status: &str) -> &str {
    match status {
        "preliminary" => "初步报告",
        "final" => "正式报告",
        "amended" => "修订报告",
        _ => "未知",
    }
}

/// Chinese name of an exam kind.
pub fn kind_label(kind: &str) -> &str {
    match kind {
        "imaging" => "影像",
        "ecg" => "心电",
        "lab" => "检验",
        other => other,
    }
}

/// Chinese label of a report field (templates name fields in English).
pub fn field_label(field: &str) -> &str {
    match field {
        "findings" => "检查所见",
        "impression" => "诊断意见",
        "conclusion" => "结论",
        "diagnosis" => "诊断",
        "recommendation" | "recommendations" => "建议",
        "technique" => "检查方法",
        "history" | "clinical_history" => "临床病史",
        "comparison" => "对比",
        "result" | "results" => "结果",
        "interpretation" => "解读",
        "rhythm" => "心律",
        "heart_rate" => "心率",
        "summary" => "小结",
        other => other,
    }
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
            Some(Summary {
                report_id,
                current,
                versions: rows.len(),
                rejected: rows.iter().filter(|r| !r.verified).count(),
                last_received_at: rows.iter().map(|r| r.received_at).max().unwrap_or(0),
                latest,
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

const STYLE: &str = "body{font-family:'Noto Sans CJK SC','Microsoft YaHei',sans-serif;margin:1.5em;color:#222}\
table{border-collapse:collapse;width:100%}th,td{border:1px solid #ccc;padding:.35em .5em;text-align:left;vertical-align:top}\
th{background:#f0f0f0}tr.critical td{background:#fde2e2}.crit{color:#b00000;font-weight:bold}\
.ok{color:#1a7f37}.bad{color:#b00000;font-weight:bold}.warn{border:2px solid #b00000;background:#fde2e2;color:#b00000;padding:.8em;margin:1em 0;font-weight:bold}\
.note{color:#666;font-size:.9em}pre{white-space:pre-wrap;font-family:inherit;margin:.2em 0 1em}\
.field h3{margin:.8em 0 .2em;font-size:1em}form{margin:1em 0}input{padding:.3em}button{padding:.3em 1em}";

fn page(title: &str, refresh: bool, body: &str) -> String {
    let refresh = if refresh {
        // New critical reports must appear without anyone clicking.
        "<meta http-equiv=\"refresh\" content=\"60\">\n"
    } else {
        ""
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"zh-CN\">\n<head>\n<meta charset=\"utf-8\">\n{refresh}\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n{body}\n\
         <p class=\"note\">时间均为北京时间。本页面无登录，仅供本院内网使用。</p>\n</body>\n</html>\n",
        esc(title)
    )
}

fn verification_cell(row: &VersionRow) -> String {
    if row.verified {
        "<span class=\"ok\">签名有效</span>".to_string()
    } else {
        format!(
            "<span class=\"bad\">签名验证失败，内容不可信</span><br><span class=\"note\">{}</span>",
            esc(row.verify_error.as_deref().unwrap_or(""))
        )
    }
}

fn opt(text: &Option<String>) -> String {
    esc(text.as_deref().unwrap_or("—"))
}

/// `GET /`: the list of received reports.
pub fn list_page(summaries: &[Summary]) -> String {
    let mut body = String::from("<h1>县级诊断报告</h1>\n");
    let waiting = summaries.iter().filter(|s| s.critical_waiting()).count();
    if waiting > 0 {
        let _ = writeln!(
            body,
            "<p class=\"warn\">有 {waiting} 份危急值报告等待临床医生确认。</p>"
        );
    }
    if summaries.is_empty() {
        body.push_str("<p>暂无报告。</p>\n");
        return page("县级诊断报告", true, &body);
    }
    body.push_str(
        "<table>\n<thead><tr><th>危急值</th><th>患者</th><th>检查</th><th>报告</th>\
         <th>签发</th><th>接收时间</th><th>签名验证</th><th>操作</th></tr></thead>\n<tbody>\n",
    );
    for s in summaries {
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
                    "<span class=\"crit\">危急值</span><br>已确认：{}<br><span class=\"note\">{}</span>",
                    esc(by),
                    beijing_time(at)
                ),
                _ => "<span class=\"crit\">危急值 · 待确认</span>".to_string(),
            },
            _ => String::new(),
        };
        let mut verification = match &s.current {
            Some(c) => verification_cell(c),
            None => verification_cell(&s.latest),
        };
        if s.current.is_some() && s.rejected > 0 {
            let _ = write!(
                verification,
                "<br><span class=\"bad\">另有 {} 个版本验证失败</span>",
                s.rejected
            );
        }
        let pdf = match &s.current {
            Some(c) if c.pdf_available => {
                format!(" · <a href=\"{link}/versions/{}/pdf\">PDF</a>", c.version)
            }
            _ => String::new(),
        };
        let _ = writeln!(
            body,
            "<tr{class}><td>{critical}</td><td>{}<br><span class=\"note\">ID {}</span></td>\
             <td>{} {}<br><span class=\"note\">检查号 {}</span></td>\
             <td>{} · 第{}版</td><td>{}<br><span class=\"note\">{}</span></td><td>{}</td>\
             <td>{verification}</td><td><a href=\"{link}\">查看</a>{pdf}</td></tr>",
            opt(&row.exam.patient_name),
            opt(&row.exam.patient_id),
            esc(kind_label(row.exam.kind.as_deref().unwrap_or(""))),
            opt(&row.exam.modality),
            opt(&row.exam.accession_number),
            esc(status_label(&row.status)),
            row.version,
            opt(&row.signer_name),
            row.signed_at.map(beijing_time).unwrap_or_default(),
            beijing_time(s.last_received_at),
        );
    }
    body.push_str("</tbody>\n</table>\n");
    page("县级诊断报告", true, &body)
}

/// `GET /reports/{id}`: the current valid version and every version received.
pub fn report_page(report_id: &str, versions: &[VersionRow]) -> String {
    let mut body = format!(
        "<p><a href=\"/\">← 返回报告列表</a></p>\n<h1>诊断报告 {}</h1>\n",
        esc(report_id)
    );
    let link = format!("/reports/{}", path_segment(report_id));
    let current = versions
        .iter()
        .filter(|v| v.verified)
        .max_by_key(|v| v.version);
    match current {
        None => body.push_str(
            "<div class=\"warn\">警告：该报告没有任何通过签名验证的版本。其内容不可信，\
             不得用于诊疗，也不提供打印。请联系县级平台。</div>\n",
        ),
        Some(c) => current_section(&mut body, &link, c),
    }
    body.push_str(
        "<h2>全部版本</h2>\n<table>\n<thead><tr><th>版本</th><th>报告状态</th><th>接收时间</th>\
         <th>签发</th><th>签名验证</th><th>修订原因</th><th>危急值确认</th><th>PDF</th></tr></thead>\n<tbody>\n",
    );
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
                    "已通知县级平台"
                } else {
                    "尚未通知县级平台（自动重试中）"
                }
            ),
            _ if v.verified && v.critical => "<span class=\"crit\">待确认</span>".to_string(),
            _ => String::new(),
        };
        let pdf = if !v.verified {
            "<span class=\"bad\">不提供</span>".to_string()
        } else if v.pdf_available {
            format!("<a href=\"{link}/versions/{}/pdf\">打印PDF</a>", v.version)
        } else {
            "<span class=\"note\">尚未取得</span>".to_string()
        };
        let _ = writeln!(
            body,
            "<tr{class}><td>第{}版{}</td><td>{}</td><td>{}</td><td>{}<br><span class=\"note\">{}</span></td>\
             <td>{}</td><td>{}</td><td>{ack}</td><td>{pdf}</td></tr>",
            v.version,
            if v.critical {
                " <span class=\"crit\">危急值</span>"
            } else {
                ""
            },
            esc(status_label(&v.status)),
            beijing_time(v.received_at),
            opt(&v.signer_name),
            v.signed_at.map(beijing_time).unwrap_or_default(),
            verification_cell(v),
            opt(&v.reason),
        );
    }
    body.push_str("</tbody>\n</table>\n");
    page(&format!("诊断报告 {report_id}"), false, &body)
}

fn current_section(body: &mut String, link: &str, c: &VersionRow) {
    let payload = c
        .payload
        .as_deref()
        .and_then(|p| serde_json::from_str::<ReportPayload>(p).ok());
    if c.critical {
        match (&c.acknowledged_by, c.acknowledged_at) {
            (Some(by), Some(at)) => {
                let _ = writeln!(
                    body,
                    "<p class=\"crit\">危急值：已由 {} 于 {} 确认。{}</p>",
                    esc(by),
                    beijing_time(at),
                    if c.relayed_at.is_some() {
                        "已通知县级平台。"
                    } else {
                        "尚未通知县级平台（自动重试中）。"
                    }
                );
            }
            _ => {
                let _ = writeln!(
                    body,
                    "<div class=\"warn\">危急值报告：请临床医生阅读后立即确认。\n\
                     <form method=\"post\" action=\"/api{link}/versions/{}/acknowledge\">\
                     <label>临床医生姓名 <input name=\"name\" required maxlength=\"64\"></label> \
                     <button type=\"submit\">确认已知悉</button></form></div>",
                    c.version
                );
            }
        }
    }
    let _ = writeln!(
        body,
        "<h2>当前有效版本：第{}版（{}）<span class=\"ok\"> · 签名有效</span></h2>",
        c.version,
        esc(status_label(&c.status))
    );
    let _ = writeln!(
        body,
        "<table>\n<tr><th>患者姓名</th><td>{}</td><th>患者ID</th><td>{}</td></tr>\n\
         <tr><th>检查类型</th><td>{} {}</td><th>检查号</th><td>{}</td></tr>\n\
         <tr><th>检查UID</th><td colspan=\"3\">{}</td></tr>\n\
         <tr><th>签发医生</th><td>{}</td><th>签发时间</th><td>{}</td></tr>",
        opt(&c.exam.patient_name),
        opt(&c.exam.patient_id),
        esc(kind_label(c.exam.kind.as_deref().unwrap_or(""))),
        opt(&c.exam.modality),
        opt(&c.exam.accession_number),
        opt(&c.exam.study_uid),
        opt(&c.signer_name),
        c.signed_at.map(beijing_time).unwrap_or_default(),
    );
    if let Some(pre) = payload.as_ref().and_then(|p| p.preliminary_by.as_ref()) {
        let _ = writeln!(
            body,
            "<tr><th>初步报告医生</th><td colspan=\"3\">{} · {}</td></tr>",
            esc(&pre.display_name),
            beijing_time(pre.signed_at_ms)
        );
    }
    if let Some(reason) = &c.reason {
        let _ = writeln!(
            body,
            "<tr><th>修订原因</th><td colspan=\"3\">{}</td></tr>",
            esc(reason)
        );
    }
    body.push_str("</table>\n");
    if let Some(p) = &payload {
        for (field, text) in &p.content {
            let _ = writeln!(
                body,
                "<div class=\"field\"><h3>{}</h3><pre>{}</pre></div>",
                esc(field_label(field)),
                esc(text)
            );
        }
    }
    if c.pdf_available {
        let _ = writeln!(
            body,
            "<p><a href=\"{link}/versions/{}/pdf\">打印PDF（第{}版）</a></p>",
            c.version, c.version
        );
    } else {
        body.push_str("<p class=\"note\">PDF尚未从县级平台取得，将自动重试。</p>\n");
    }
}

/// A short message page (errors, "not found").
pub fn message_page(title: &str, message: &str) -> String {
    page(
        title,
        false,
        &format!(
            "<p><a href=\"/\">← 返回报告列表</a></p>\n<h1>{}</h1>\n<p>{}</p>",
            esc(title),
            esc(message)
        ),
    )
}
