//! The delivery contract's JSON, as docs/reports.md defines it.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use formats::report::SignedReport;

/// One long-poll answer: `{"items":[...],"next_cursor":n}`. Items are kept as JSON
/// values and read one by one, so one malformed item cannot block the whole feed.
#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryPage {
    /// The items, critical first.
    #[serde(default)]
    pub items: Vec<Value>,
    /// Where the next poll starts.
    pub next_cursor: Option<i64>,
}

/// One delivery item as far as it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryItem {
    /// The hub's cursor.
    pub cursor: i64,
    /// `report` (the only kind so far).
    pub kind: String,
    /// Report id the envelope names.
    pub report_id: Option<String>,
    /// Version the envelope names.
    pub version: Option<i64>,
    /// The signed report, or why it could not be read.
    pub signed: Result<SignedReport, String>,
}

impl DeliveryItem {
    /// Read an item; `None` without a cursor (it cannot even be acknowledged).
    pub fn parse(value: &Value) -> Option<DeliveryItem> {
        let cursor = value.get("cursor")?.as_i64()?;
        let signed = match value.get("signed") {
            Some(signed) => serde_json::from_value::<SignedReport>(signed.clone())
                .map_err(|e| format!("malformed signed report: {e}")),
            None => Err("item carries no signed report".to_string()),
        };
        Some(DeliveryItem {
            cursor,
            kind: value
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            report_id: value
                .get("report_id")
                .and_then(Value::as_str)
                .map(str::to_string),
            version: value.get("version").and_then(Value::as_i64),
            signed,
        })
    }
}

/// `POST /api/delivery/ack`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct DeliveryAck<'a> {
    /// The item's cursor.
    pub cursor: i64,
    /// `stored` or `rejected`.
    pub status: &'a str,
    /// Why rejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'a str>,
}

/// `POST /api/delivery/critical-ack`.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct CriticalAck<'a> {
    /// Report id.
    pub report_id: &'a str,
    /// Version.
    pub version: i64,
    /// The township clinician.
    pub acknowledged_by: &'a str,
}

/// One entry of `GET /api/signing-keys`.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct PublishedKey {
    /// The hub's id for it (we recompute it and insist they agree).
    pub key_id: String,
    /// `Ed25519`.
    pub algorithm: String,
    /// Standard base64 of the 32-byte public key.
    pub public_key: String,
}
