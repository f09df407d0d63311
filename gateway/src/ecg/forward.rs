//! Sending an ECG file to the hub: `POST {hub_url}/ingest/ecg?priority=stat|routine&
//! filename=<percent-encoded name>` with the gateway key and the original bytes as the
//! body, and the hub's answer turned into what happens to the file:
//!
//! | hub says | we do |
//! |---|---|
//! | 200 `{"status":"stored"\|"duplicate","exam_id":N}` | delivered |
//! | 400, 409 `{"error":…}` | quarantine, with the hub's `error` text |
//! | 401/403, 5xx, network, TLS | retry with backoff; the hub counts as unavailable |
//! | anything else (404 from a hub without the endpoint, 413...) | retry with backoff |

use std::time::Duration;

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::forwarder::read_limited;
use crate::forwarder::stow::excerpt;
use crate::hub::HubClient;

/// The hub's ingest path.
pub const INGEST_PATH: &str = "/ingest/ecg";
/// The body is the file as it was, whatever its format.
pub const CONTENT_TYPE_OCTETS: &str = "application/octet-stream";
/// Largest answer read from the hub.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// What the hub's answer means for the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored (or already stored identically).
    Delivered {
        /// `stored` / `duplicate`, when said.
        status: Option<String>,
        /// The hub's exam, when said.
        exam_id: Option<i64>,
    },
    /// Refused for good, with the hub's reason.
    Rejected(String),
    /// Not now, and the hub as a whole is not taking requests (down, 5xx, key, TLS).
    Unavailable(String),
    /// Not now, but the hub answered (an unexpected status).
    Retry(String),
}

/// The request path with its query: priority and the original file name.
pub fn ingest_path(stat: bool, file_name: &str) -> String {
    let priority = if stat { "stat" } else { "routine" };
    format!(
        "{INGEST_PATH}?priority={priority}&filename={}",
        percent_encode(file_name)
    )
}

/// Percent-encode everything but RFC 3986 unreserved characters (UTF-8 bytes of a
/// Chinese file name included), so the name survives any query-string decoder.
pub fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// POST the file and classify the answer.
pub async fn send(hub: &HubClient, body: Vec<u8>, stat: bool, file_name: &str) -> Verdict {
    let length = body.len() as u64;
    // Generous for slow township links, as for STOW-RS: a minute plus 32 KiB/s.
    let timeout = Duration::from_secs(60 + length / (32 * 1024));
    let request = hub
        .post(&ingest_path(stat, file_name))
        .timeout(timeout)
        .header(CONTENT_TYPE, CONTENT_TYPE_OCTETS)
        .header(CONTENT_LENGTH, length)
        .body(body);
    let response = match request.send().await {
        Ok(r) => r,
        Err(e) => return Verdict::Unavailable(hub.describe_send_error(&e)),
    };
    let status = response.status().as_u16();
    match read_limited(response, MAX_RESPONSE_BYTES).await {
        Ok(body) => match hub.describe_refusal(status, &body) {
            Some(why) => Verdict::Unavailable(why),
            None => classify(status, &body),
        },
        Err(e) => Verdict::Unavailable(format!("HTTP {status}, response unreadable: {e}")),
    }
}

/// Classify a status and body (401/403 are handled before, with the key's message).
pub fn classify(status: u16, body: &[u8]) -> Verdict {
    let json: Option<serde_json::Value> = serde_json::from_slice(body).ok();
    let field = |name: &str| json.as_ref().and_then(|j| j.get(name));
    let text = |name: &str| {
        field(name)
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    match status {
        200 => Verdict::Delivered {
            status: text("status"),
            exam_id: field("exam_id").and_then(serde_json::Value::as_i64),
        },
        400 | 409 => {
            let why = text("error").unwrap_or_else(|| excerpt(body));
            Verdict::Rejected(format!("hub refused the file (HTTP {status}): {why}"))
        }
        500..=599 | 401 | 403 => Verdict::Unavailable(format!("HTTP {status}: {}", excerpt(body))),
        _ => Verdict::Retry(format!("HTTP {status}: {}", excerpt(body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified_as_the_contract_says() {
        assert_eq!(
            classify(200, br#"{"status":"stored","exam_id":42}"#),
            Verdict::Delivered {
                status: Some("stored".into()),
                exam_id: Some(42)
            }
        );
        assert_eq!(
            classify(200, b""),
            Verdict::Delivered {
                status: None,
                exam_id: None
            }
        );
        assert_eq!(
            classify(400, br#"{"error":"no leads"}"#),
            Verdict::Rejected("hub refused the file (HTTP 400): no leads".into())
        );
        for status in [500, 502, 503] {
            assert!(matches!(classify(status, b"down"), Verdict::Unavailable(_)));
        }
        for status in [404, 413, 429] {
            assert!(
                matches!(classify(status, b""), Verdict::Retry(_)),
                "{status}"
            );
        }
    }

    #[test]
    fn the_query_carries_priority_and_the_encoded_name() {
        assert_eq!(
            ingest_path(true, "ECG 1+2&x=y.scp"),
            "/ingest/ecg?priority=stat&filename=ECG%201%2B2%26x%3Dy.scp"
        );
        assert_eq!(
            ingest_path(false, "心电图.xml"),
            "/ingest/ecg?priority=routine&filename=%E5%BF%83%E7%94%B5%E5%9B%BE.xml"
        );
    }
}
