//! Original-mode acknowledgements (ACK with MSA and, for errors, ERR).

use super::message::{escape, Charset, Msh, Separators};

/// MSA-1 in original mode, spelled as HL7 spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
pub enum AckCode {
    /// Application accept: the message is kept.
    AA,
    /// Application error: not kept; a corrected message (or a later retry) may be.
    AE,
    /// Application reject: not kept, and sending it again will not change that.
    AR,
}

impl AckCode {
    /// `AA`, `AE` or `AR`.
    pub fn as_str(self) -> &'static str {
        match self {
            AckCode::AA => "AA",
            AckCode::AE => "AE",
            AckCode::AR => "AR",
        }
    }
}

/// The text HL7 table 0357 gives an error code.
pub fn error_text(code: &str) -> &'static str {
    match code {
        "0" => "Message accepted",
        "100" => "Segment sequence error",
        "101" => "Required field missing",
        "102" => "Data type error",
        "103" => "Table value not found",
        "104" => "Value too long",
        "200" => "Unsupported message type",
        "201" => "Unsupported event code",
        "202" => "Unsupported processing id",
        "203" => "Unsupported version id",
        "204" => "Unknown key identifier",
        "205" => "Duplicate key identifier",
        "206" => "Application record locked",
        "207" => "Application internal error",
        _ => "Error",
    }
}

/// A hierarchic designator given as `^`-joined text, escaped component by component.
fn hd(text: &str, seps: &Separators) -> String {
    text.split('^')
        .map(|c| escape(c, seps))
        .collect::<Vec<_>>()
        .join("^")
}

/// The ERR segment: ERR-1 (v2.3/2.4 error code and location) and ERR-3/4/8 (v2.5 on),
/// so receivers of either generation find the code.
fn err_segment(code: &str, text: &str, seps: &Separators) -> String {
    let table = escape(error_text(code), seps);
    let code = escape(code, seps);
    format!(
        "ERR|^^^{code}&{table}&HL70357||{code}^{table}^HL70357|E||||{}",
        escape(text, seps)
    )
}

fn msa_segment(code: AckCode, control_id: &str, text: Option<&str>, seps: &Separators) -> String {
    let mut msa = format!("MSA|{}|{}", code.as_str(), escape(control_id, seps));
    if let Some(text) = text {
        // MSA-3 (text message): deprecated since v2.4, but what v2.3 systems show.
        msa.push('|');
        msa.push_str(&escape(text, seps));
    }
    msa
}

/// An original-mode ACK for the message whose header is `msh`: MSH with sender and
/// receiver swapped, our `control_id` and time `now_ts`, the same processing ID,
/// version and character set; `MSA|code|<MSH-10>`; and for AE/AR an ERR segment with the
/// HL7 error code (table 0357, e.g. 101 required field missing) and `error`'s text
/// (ERR-8 and MSA-3). Segments end with CR; encoded in the message's character set
/// (UTF-8 when it declared none or one we cannot write).
pub fn ack(
    msh: &Msh,
    code: AckCode,
    error: Option<(&str, &str)>,
    now_ts: &str,
    control_id: &str,
) -> Vec<u8> {
    let seps = Separators::default();
    let version = match msh.version.trim() {
        "" => "2.5.1",
        v => v,
    };
    let processing = match msh.processing_id.trim() {
        "" => "P",
        p => p,
    };
    // MSH-9.3 (message structure) exists from v2.3.1 on.
    let message_type = match version {
        "2.1" | "2.2" | "2.3" => format!("ACK^{}", escape(&msh.trigger_event, &seps)),
        _ => format!("ACK^{}^ACK", escape(&msh.trigger_event, &seps)),
    };
    let mut header = format!(
        "MSH|^~\\&|{}|{}|{}|{}|{}||{message_type}|{}|{}|{}",
        hd(&msh.receiving_application, &seps),
        hd(&msh.receiving_facility, &seps),
        hd(&msh.sending_application, &seps),
        hd(&msh.sending_facility, &seps),
        escape(now_ts, &seps),
        escape(control_id, &seps),
        escape(processing, &seps),
        escape(version, &seps),
    );
    if let Some(charset) = &msh.charset {
        header.push_str("||||||");
        header.push_str(&escape(charset, &seps));
    }
    let error = match (code, error) {
        (AckCode::AA, _) => None,
        (_, Some(e)) => Some(e),
        (_, None) => Some(("207", "the message was not accepted")),
    };
    let mut segments = vec![
        header,
        msa_segment(code, &msh.control_id, error.map(|e| e.1), &seps),
    ];
    if let Some((err_code, text)) = error {
        segments.push(err_segment(err_code, text, &seps));
    }
    let mut text = segments.join("\r");
    text.push('\r');
    let charset = Charset::from_msh18(msh.charset.as_deref()).unwrap_or(Charset::Utf8);
    charset.encode(&text)
}

/// An ACK for bytes too broken to have a readable MSH: our own header (v2.5.1, no
/// applications), `MSA|code|` with no control ID to echo, and for AE/AR an ERR with code
/// 100 (segment sequence error: the message does not start with a usable MSH) and `text`.
/// UTF-8.
pub fn ack_without_msh(code: AckCode, text: &str, now_ts: &str, control_id: &str) -> Vec<u8> {
    let seps = Separators::default();
    let mut segments = vec![
        format!(
            "MSH|^~\\&|||||{}||ACK|{}|P|2.5.1",
            escape(now_ts, &seps),
            escape(control_id, &seps)
        ),
        msa_segment(code, "", (code != AckCode::AA).then_some(text), &seps),
    ];
    if code != AckCode::AA {
        segments.push(err_segment("100", text, &seps));
    }
    let mut out = segments.join("\r");
    out.push('\r');
    out.into_bytes()
}
