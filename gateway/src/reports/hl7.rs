//! Forwarding verified reports to the township HIS as HL7 v2.5.1 ORU^R01 over MLLP
//! (when `his_mllp_addr` is set). Only verified versions go, each once accepted
//! (ACK AA/CA); an amendment is sent as a corrected result (status `C`) after its
//! original. The message is built from the verified payload, never from the envelope.

use std::time::Duration;

use formats::report::{ReportPayload, ReportStatus};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::html::{beijing_time, field_label, kind_label};

/// MLLP start block.
const START: u8 = 0x0B;
/// MLLP end block (followed by a carriage return).
const END: u8 = 0x1C;
/// Largest ACK we read.
const MAX_ACK: usize = 1024 * 1024;

/// Escape text for an HL7 field (PS: v2 section 2.7), line breaks as `\.br\`.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => out.push_str("\\E\\"),
            '|' => out.push_str("\\F\\"),
            '^' => out.push_str("\\S\\"),
            '&' => out.push_str("\\T\\"),
            '~' => out.push_str("\\R\\"),
            '\r' => {
                if chars.peek() == Some(&'\n') {
                    chars.next();
                }
                out.push_str("\\.br\\");
            }
            '\n' => out.push_str("\\.br\\"),
            '\t' => out.push(' '),
            // Other control characters have no place in an HL7 field.
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// A DICOM person name (`Family^Given=表意^名=…`) as an HL7 XPN: the ideographic group
/// when present (what a Chinese HIS shows), else the alphabetic one; components kept.
pub fn person_name(dicom: &str) -> String {
    let mut groups = dicom.split('=');
    let alphabetic = groups.next().unwrap_or("");
    let ideographic = groups.next().unwrap_or("");
    let chosen = if ideographic.trim().is_empty() {
        alphabetic
    } else {
        ideographic
    };
    chosen
        .split('^')
        .map(|c| escape(c.trim()))
        .collect::<Vec<_>>()
        .join("^")
}

/// HL7 DTM in Beijing time, e.g. `20240529143000+0800`.
pub fn timestamp(ms: i64) -> String {
    let digits: String = beijing_time(ms)
        .chars()
        .filter(char::is_ascii_digit)
        .collect();
    format!("{digits}+0800")
}

/// One segment: `fields[i]` is field `i` (1-based; index 0 unused); trailing empty
/// fields are dropped.
fn segment(name: &str, mut fields: Vec<String>) -> String {
    while fields.last().is_some_and(String::is_empty) {
        fields.pop();
    }
    let mut out = name.to_string();
    for f in fields.iter().skip(1) {
        out.push('|');
        out.push_str(f);
    }
    out
}

fn fields(n: usize) -> Vec<String> {
    vec![String::new(); n + 1]
}

fn result_status(status: ReportStatus) -> &'static str {
    match status {
        ReportStatus::Preliminary => "P",
        ReportStatus::Final => "F",
        ReportStatus::Amended => "C",
    }
}

/// What the message header names.
#[derive(Debug, Clone)]
pub struct Header<'a> {
    /// MSH-5.
    pub receiving_application: &'a str,
    /// MSH-6: this township.
    pub receiving_facility: &'a str,
    /// MSH-10 (stable per report version, so the HIS can recognise a re-send).
    pub control_id: &'a str,
    /// MSH-7 (ms).
    pub now_ms: i64,
}

/// The ORU^R01 message for a verified report version (segments separated by CR).
pub fn oru_r01(p: &ReportPayload, h: &Header<'_>) -> String {
    let status = result_status(p.status);
    let signed = timestamp(p.signer.signed_at_ms);
    let mut segments = Vec::new();

    // MSH-1 is the field separator itself, so MSH is written by hand.
    segments.push(format!(
        "MSH|^~\\&|COUNTY_HUB|COUNTY|{}|{}|{}||ORU^R01^ORU_R01|{}|P|2.5.1|||AL|NE||UNICODE UTF-8",
        escape(h.receiving_application),
        escape(h.receiving_facility),
        timestamp(h.now_ms),
        escape(h.control_id),
    ));

    let mut pid = fields(5);
    pid[1] = "1".into();
    pid[3] = format!(
        "{}^^^{}",
        escape(p.exam.patient_id.as_deref().unwrap_or("")),
        escape(&p.exam.site)
    );
    pid[5] = person_name(p.exam.patient_name.as_deref().unwrap_or(""));
    segments.push(segment("PID", pid));

    let mut obr = fields(32);
    obr[1] = "1".into();
    obr[2] = escape(p.exam.accession_number.as_deref().unwrap_or(""));
    obr[3] = format!("{}-{}", escape(&p.report_id), p.version);
    obr[4] = format!(
        "{}^{}^L",
        escape(&p.exam.kind),
        escape(kind_label(&p.exam.kind))
    );
    obr[7] = signed.clone();
    obr[22] = signed.clone();
    obr[24] = escape(p.exam.modality.as_deref().unwrap_or(""));
    obr[25] = status.into();
    obr[32] = format!(
        "{}&{}",
        escape(&p.signer.username),
        escape(&p.signer.display_name)
    );
    segments.push(segment("OBR", obr));

    let mut notes = Vec::new();
    if p.critical {
        notes.push("危急值：请临床医生立即处理并在报告页面确认".to_string());
    }
    if let Some(reason) = &p.reason {
        notes.push(format!("修订原因：{reason}"));
    }
    if let Some(uid) = &p.exam.study_uid {
        notes.push(format!("Study Instance UID {uid}"));
    }
    for (i, note) in notes.iter().enumerate() {
        segments.push(format!("NTE|{}||{}", i + 1, escape(note)));
    }

    for (i, (field, text)) in p.content.iter().enumerate() {
        let mut obx = fields(14);
        obx[1] = (i + 1).to_string();
        obx[2] = "TX".into();
        obx[3] = format!("{}^{}^L", escape(field), escape(field_label(field)));
        obx[5] = escape(text);
        if p.critical {
            // "Critically abnormal" (HL7 table 0078).
            obx[8] = "AA".into();
        }
        obx[11] = status.into();
        obx[14] = signed.clone();
        segments.push(segment("OBX", obx));
    }
    segments.join("\r")
}

/// What the HIS answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// AA / CA: taken.
    Accepted,
    /// AE / CE: an error that may pass; try again later.
    Error(String),
    /// AR / CR: refused; sending the same message again will not help.
    Rejected(String),
}

/// Read MSA from an ACK; `control_id` must be the one we sent.
pub fn parse_ack(ack: &str, control_id: &str) -> Result<Answer, String> {
    let msa = ack
        .split(['\r', '\n'])
        .map(|s| s.trim_start_matches(char::from(START)))
        .find(|s| s.starts_with("MSA|"))
        .ok_or_else(|| format!("HIS answer has no MSA segment: {}", excerpt(ack)))?;
    let f: Vec<&str> = msa.split('|').collect();
    let code = f.get(1).copied().unwrap_or("");
    let acked = f.get(2).copied().unwrap_or("");
    let text = f.get(3).copied().unwrap_or("").to_string();
    if acked != control_id {
        return Err(format!(
            "HIS acknowledged message {acked:?}, not {control_id:?}"
        ));
    }
    Ok(match code {
        "AA" | "CA" => Answer::Accepted,
        "AR" | "CR" => Answer::Rejected(format!("HIS refused the message ({code}): {text}")),
        _ => Answer::Error(format!("HIS reported an error ({code}): {text}")),
    })
}

fn excerpt(text: &str) -> String {
    text.chars()
        .take(200)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Send one message over MLLP and return the HIS's answer.
pub async fn send(addr: &str, message: &str, control_id: &str) -> Result<Answer, String> {
    let mut stream = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::TcpStream::connect(addr),
    )
    .await
    .map_err(|_| format!("cannot reach the HIS at {addr}: connect timed out"))?
    .map_err(|e| format!("cannot reach the HIS at {addr}: {e}"))?;
    let mut frame = Vec::with_capacity(message.len() + 3);
    frame.push(START);
    frame.extend_from_slice(message.as_bytes());
    frame.extend_from_slice(&[END, b'\r']);
    let exchange = async {
        stream.write_all(&frame).await?;
        stream.flush().await?;
        let mut ack = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "connection closed before the ACK ended",
                ));
            }
            ack.extend_from_slice(&buf[..n]);
            if let Some(end) = ack.windows(2).position(|w| w == [END, b'\r']) {
                ack.truncate(end);
                return Ok(ack);
            }
            if ack.len() > MAX_ACK {
                return Err(std::io::Error::other("ACK larger than 1 MiB"));
            }
        }
    };
    let ack = tokio::time::timeout(Duration::from_secs(30), exchange)
        .await
        .map_err(|_| format!("the HIS at {addr} did not answer within 30 s"))?
        .map_err(|e| format!("exchange with the HIS at {addr}: {e}"))?;
    parse_ack(&String::from_utf8_lossy(&ack), control_id)
}
