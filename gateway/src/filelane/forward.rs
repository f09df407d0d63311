//! Sending one file item to the hub: `POST {hub_url}{path}` with the gateway key and the
//! original bytes as the body (the lane gives the path, its query and the media type),
//! and the hub's answer turned into what happens to the item (docs/lab.md, docs/ecg.md):
//!
//! | hub says | we do |
//! |---|---|
//! | 200 `{"status":"stored"\|"duplicate"[,"exam_id":N]}` | delivered |
//! | 400, 409 `{"error":…}` | quarantine, with the hub's `error` text |
//! | 401/403, 5xx, network, TLS | retry with backoff; the hub counts as unavailable |
//! | anything else (404 from a hub without the endpoint, 413...) | retry with backoff |

use std::time::Duration;

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use super::db::DueFile;
use super::FileLane;
use crate::forwarder::read_limited;
use crate::forwarder::stow::excerpt;
use crate::hub::HubClient;

/// Largest answer read from the hub.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// What the hub's answer means for the item.
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

/// POST the item's bytes and classify the answer.
pub async fn send(hub: &HubClient, lane: FileLane, item: &DueFile) -> Verdict {
    let body = item.body.clone();
    let length = body.len() as u64;
    // Generous for slow township links, as for STOW-RS: a minute plus 32 KiB/s.
    let timeout = Duration::from_secs(60 + length / (32 * 1024));
    let request = hub
        .post(&lane.hub_path(item))
        .timeout(timeout)
        .header(CONTENT_TYPE, lane.content_type())
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
            None => classify(lane, status, &body),
        },
        Err(e) => Verdict::Unavailable(format!("HTTP {status}, response unreadable: {e}")),
    }
}

/// Classify a status and body (401/403 are handled before, with the key's message).
pub fn classify(lane: FileLane, status: u16, body: &[u8]) -> Verdict {
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
            Verdict::Rejected(format!(
                "hub refused the {} (HTTP {status}): {why}",
                lane.noun()
            ))
        }
        500..=599 | 401 | 403 => Verdict::Unavailable(format!("HTTP {status}: {}", excerpt(body))),
        _ => Verdict::Retry(format!("HTTP {status}: {}", excerpt(body))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lab_answers_are_classified_as_the_contract_says() {
        let classify = |status, body| classify(FileLane::Lab, status, body);
        assert_eq!(
            classify(200, br#"{"status":"duplicate","orders":[]}"#),
            Verdict::Delivered {
                status: Some("duplicate".into()),
                exam_id: None
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
            classify(400, br#"{"error":"OBR-4 missing"}"#),
            Verdict::Rejected("hub refused the message (HTTP 400): OBR-4 missing".into())
        );
        assert!(
            matches!(classify(409, b"control id reused"), Verdict::Rejected(r) if r.contains("409") && r.contains("control id reused"))
        );
        for status in [500, 502, 503] {
            assert!(matches!(classify(status, b"down"), Verdict::Unavailable(_)));
        }
        for status in [404, 413, 429, 201] {
            assert!(
                matches!(classify(status, b""), Verdict::Retry(_)),
                "{status}"
            );
        }
    }

    #[test]
    fn ecg_answers_are_classified_as_the_contract_says() {
        let classify = |status, body| classify(FileLane::Ecg, status, body);
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
}
