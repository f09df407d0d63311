//! Sending a laboratory message to the hub: `POST {hub_url}/ingest/hl7` with the gateway
//! key, the raw bytes as the body, and the hub's answer turned into what happens to the
//! message (docs/lab.md):
//!
//! | hub says | we do |
//! |---|---|
//! | 200 | delivered |
//! | 400, 409 | quarantine, with the hub's `error` text |
//! | 401/403, 5xx, network, TLS | retry with backoff; the hub counts as unavailable |
//! | anything else (404 from a hub without the endpoint, 413...) | retry with backoff |

use std::time::Duration;

use reqwest::header::{CONTENT_LENGTH, CONTENT_TYPE};

use crate::forwarder::read_limited;
use crate::forwarder::stow::excerpt;
use crate::hub::HubClient;

/// The media type of an ER7-encoded HL7 v2 message.
pub const CONTENT_TYPE_ER7: &str = "x-application/hl7-v2+er7";
/// The hub's ingest path.
pub const INGEST_PATH: &str = "/ingest/hl7";
/// Largest answer read from the hub.
const MAX_RESPONSE_BYTES: usize = 1024 * 1024;

/// What the hub's answer means for the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Stored (or already stored identically): `stored` / `duplicate` when said.
    Delivered(Option<String>),
    /// Refused for good, with the hub's reason.
    Rejected(String),
    /// Not now, and the hub as a whole is not taking requests (down, 5xx, key, TLS).
    Unavailable(String),
    /// Not now, but the hub answered (an unexpected status).
    Retry(String),
}

/// POST the message and classify the answer.
pub async fn send(hub: &HubClient, body: Vec<u8>) -> Verdict {
    let length = body.len() as u64;
    // Generous for slow township links, as for STOW-RS.
    let timeout = Duration::from_secs(60 + length / (32 * 1024));
    let request = hub
        .post(INGEST_PATH)
        .timeout(timeout)
        .header(CONTENT_TYPE, CONTENT_TYPE_ER7)
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
    let field = |name: &str| {
        json.as_ref()
            .and_then(|j| j.get(name))
            .and_then(serde_json::Value::as_str)
            .map(str::to_string)
    };
    match status {
        200 => Verdict::Delivered(field("status")),
        400 | 409 => {
            let why = field("error").unwrap_or_else(|| excerpt(body));
            Verdict::Rejected(format!("hub refused the message (HTTP {status}): {why}"))
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
            classify(200, br#"{"status":"duplicate","orders":[]}"#),
            Verdict::Delivered(Some("duplicate".into()))
        );
        assert_eq!(classify(200, b""), Verdict::Delivered(None));
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
}
