//! STOW-RS (PS3.18 10.5): the streamed multipart request and the classification of
//! the hub's answer into what happens to each instance.

use std::collections::{HashMap, HashSet};
use std::io;
use std::pin::Pin;

use bytes::Bytes;
use futures_util::stream::{self, Stream, StreamExt};
use serde_json::Value;
use tokio::io::AsyncReadExt;
use tokio_util::io::ReaderStream;

/// Failure reasons (0008,1197) after which the same request may succeed later.
const TRANSIENT_REASONS: &[u16] = &[
    0xA700, // Refused: out of resources
    0x0110, // Processing failure
];

/// A byte stream for a request body.
pub type BodyStream = Pin<Box<dyn Stream<Item = io::Result<Bytes>> + Send>>;

/// One part of a multipart/related body: an open spool file of known size.
pub struct Part {
    /// The file, positioned at its start.
    pub file: tokio::fs::File,
    /// Bytes to send from it.
    pub size: u64,
    /// SHA-256 (hex) of its data set as received from the modality: sent along so the hub
    /// refuses a file damaged on disk or in transit instead of storing it.
    pub data_set_sha256: String,
}

/// Part header carrying [`Part::data_set_sha256`] (the hub checks it when present).
pub const DATA_SET_DIGEST_HEADER: &str = "X-Data-Set-SHA256";

/// Build a `multipart/related` body streaming each file from disk (never the whole
/// batch in memory). Returns the body and its exact length for `Content-Length`.
pub fn multipart_body(parts: Vec<Part>, boundary: &str) -> (BodyStream, u64) {
    let mut length = 0u64;
    let mut pieces: Vec<BodyStream> = Vec::with_capacity(parts.len() * 2 + 1);
    for (i, part) in parts.into_iter().enumerate() {
        let lead = if i == 0 { "" } else { "\r\n" };
        let header = format!(
            "{lead}--{boundary}\r\nContent-Type: application/dicom\r\n{DATA_SET_DIGEST_HEADER}: {}\r\n\r\n",
            part.data_set_sha256
        );
        length += header.len() as u64 + part.size;
        pieces.push(Box::pin(stream::once(
            async move { Ok(Bytes::from(header)) },
        )));
        // `take` guarantees we never send more than the length we announced; a file
        // that shrank makes the body short and the request fail (retried later).
        let reader = part.file.take(part.size);
        pieces.push(Box::pin(ReaderStream::with_capacity(reader, 256 * 1024)));
    }
    let closing = format!("\r\n--{boundary}--\r\n");
    length += closing.len() as u64;
    pieces.push(Box::pin(stream::once(
        async move { Ok(Bytes::from(closing)) },
    )));
    (Box::pin(stream::iter(pieces).flatten()), length)
}

/// What the hub said about the request as a whole.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A STOW response body listing instances (HTTP 200, 202 or 409).
    Listed(Listing),
    /// HTTP 400/413/415 for a request of several instances: find the culprit by
    /// sending each alone.
    SplitBatch(String),
    /// HTTP 400/413/415 for a single instance: permanently refused.
    RejectAll(String),
    /// Anything that may work later (5xx, 401/403, unreadable body, network errors).
    Transient(String),
}

/// The instances a STOW response body names.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Listing {
    /// SOP Instance UIDs in ReferencedSOPSequence (0008,1199).
    pub stored: HashSet<String>,
    /// SOP Instance UIDs in FailedSOPSequence (0008,1198) with their reason.
    pub failed: HashMap<String, Failure>,
    /// Failures the hub could not attribute to a SOP Instance UID (a part it could not
    /// parse at all).
    pub anonymous: Vec<Failure>,
}

/// One FailedSOPSequence item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// FailureReason (0008,1197), if given.
    pub reason: Option<u16>,
    /// ErrorComment (0000,0902), if given.
    pub comment: Option<String>,
}

impl Failure {
    /// Whether a later attempt may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(self.reason, Some(r) if TRANSIENT_REASONS.contains(&r))
    }

    /// Operator-readable description.
    pub fn describe(&self) -> String {
        let code = self
            .reason
            .map(|r| format!("FailureReason 0x{r:04X}"))
            .unwrap_or_else(|| "no FailureReason".into());
        match &self.comment {
            Some(c) => format!("hub refused ({code}): {c}"),
            None => format!("hub refused ({code})"),
        }
    }
}

/// What to do with one instance of the batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstanceOutcome {
    /// Listed as stored: mark delivered.
    Stored,
    /// Try again later, with this error recorded.
    Retry(String),
    /// Split the batch: send this one alone, now.
    SendAlone(String),
    /// Permanently rejected, with the reason.
    Reject(String),
}

/// Classify a response from its status code and body.
pub fn classify(status: u16, body: &[u8], batch_len: usize) -> Verdict {
    match status {
        200 | 202 | 409 => match parse_listing(body) {
            // A lone instance refused without its UID (the hub could not even read it):
            // the refusal is about this one.
            Ok(listing)
                if batch_len == 1
                    && listing.stored.is_empty()
                    && listing.failed.is_empty()
                    && !listing.anonymous.is_empty() =>
            {
                let failure = &listing.anonymous[0];
                if failure.is_transient() {
                    Verdict::Transient(failure.describe())
                } else {
                    Verdict::RejectAll(failure.describe())
                }
            }
            Ok(listing) => Verdict::Listed(listing),
            Err(e) => Verdict::Transient(format!(
                "HTTP {status} with an unreadable STOW response ({e}): {}",
                excerpt(body)
            )),
        },
        400 | 413 | 415 => {
            let what = format!("HTTP {status}: {}", excerpt(body));
            if batch_len > 1 {
                Verdict::SplitBatch(what)
            } else {
                Verdict::RejectAll(format!("hub refused the instance ({what})"))
            }
        }
        _ => Verdict::Transient(format!("HTTP {status}: {}", excerpt(body))),
    }
}

impl Verdict {
    /// The outcome for one instance of the batch. An instance is only ever `Stored`
    /// when the hub listed it in ReferencedSOPSequence and not also as failed.
    pub fn outcome_for(&self, sop_instance_uid: &str) -> InstanceOutcome {
        match self {
            Verdict::Listed(listing) => {
                if let Some(failure) = listing.failed.get(sop_instance_uid) {
                    if failure.is_transient() {
                        InstanceOutcome::Retry(failure.describe())
                    } else {
                        InstanceOutcome::Reject(failure.describe())
                    }
                } else if listing.stored.contains(sop_instance_uid) {
                    InstanceOutcome::Stored
                } else if let Some(failure) = listing.anonymous.iter().find(|f| !f.is_transient()) {
                    // Some part was refused unread: find out which by sending alone.
                    InstanceOutcome::SendAlone(failure.describe())
                } else {
                    InstanceOutcome::Retry(
                        "the hub's response did not mention this instance".into(),
                    )
                }
            }
            Verdict::SplitBatch(why) => InstanceOutcome::SendAlone(why.clone()),
            Verdict::RejectAll(why) => InstanceOutcome::Reject(why.clone()),
            Verdict::Transient(why) => InstanceOutcome::Retry(why.clone()),
        }
    }
}

/// Parse a DICOM JSON STOW response (PS3.18 F, Table 10.5.3-1).
pub fn parse_listing(body: &[u8]) -> Result<Listing, String> {
    let json: Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    // A single object per the standard; some servers wrap it in an array.
    let object = match &json {
        Value::Array(items) if items.len() == 1 => &items[0],
        other => other,
    };
    let object = object.as_object().ok_or("not a JSON object")?;
    let mut listing = Listing::default();
    for item in sequence_items(object.get("00081199")) {
        if let Some(uid) = first_string(item.get("00081155")) {
            listing.stored.insert(uid);
        }
    }
    for item in sequence_items(object.get("00081198")) {
        let reason = item
            .get("00081197")
            .and_then(|a| a.get("Value"))
            .and_then(|v| v.get(0))
            .and_then(Value::as_u64)
            .and_then(|v| u16::try_from(v).ok());
        let failure = Failure {
            reason,
            comment: first_string(item.get("00000902")),
        };
        match first_string(item.get("00081155")) {
            Some(uid) => {
                listing.failed.insert(uid, failure);
            }
            None => listing.anonymous.push(failure),
        }
    }
    Ok(listing)
}

fn sequence_items(
    attribute: Option<&Value>,
) -> impl Iterator<Item = &serde_json::Map<String, Value>> {
    attribute
        .and_then(|a| a.get("Value"))
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(Value::as_object)
}

fn first_string(attribute: Option<&Value>) -> Option<String> {
    attribute
        .and_then(|a| a.get("Value"))
        .and_then(|v| v.get(0))
        .and_then(Value::as_str)
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// The start of a response body, for error messages and logs.
pub fn excerpt(body: &[u8]) -> String {
    const MAX: usize = 512;
    let text = String::from_utf8_lossy(&body[..body.len().min(MAX)]);
    let mut s: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if body.len() > MAX {
        s.push_str(" …");
    }
    if s.is_empty() {
        "(empty body)".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A PS3.18 response as the hub sends it: one stored (or already stored
    /// identically), one conflicting version, one transient failure.
    const MIXED: &str = r#"{
      "00081190": {"vr": "UR", "Value": ["http://hub/dicomweb/studies/1.2.3"]},
      "00081199": {"vr": "SQ", "Value": [
        {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
         "00081155": {"vr": "UI", "Value": ["1.2.3.1"]},
         "00081190": {"vr": "UR", "Value": ["http://hub/dicomweb/studies/1.2.3/series/4/instances/1.2.3.1"]}}
      ]},
      "00081198": {"vr": "SQ", "Value": [
        {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
         "00081155": {"vr": "UI", "Value": ["1.2.3.2"]},
         "00081197": {"vr": "US", "Value": [45070]},
         "00000902": {"vr": "LO", "Value": ["SOP Instance already stored with different content"]}},
        {"00081150": {"vr": "UI", "Value": ["1.2.840.10008.5.1.4.1.1.2"]},
         "00081155": {"vr": "UI", "Value": ["1.2.3.3"]},
         "00081197": {"vr": "US", "Value": [42752]},
         "00000902": {"vr": "LO", "Value": ["blob store unavailable"]}},
        {"00081155": {"vr": "UI", "Value": ["1.2.3.4"]},
         "00081197": {"vr": "US", "Value": [272]}}
      ]}
    }"#;

    #[test]
    fn mixed_response_is_classified_per_instance() {
        let v = classify(202, MIXED.as_bytes(), 5);
        assert_eq!(v.outcome_for("1.2.3.1"), InstanceOutcome::Stored);
        match v.outcome_for("1.2.3.2") {
            InstanceOutcome::Reject(r) => {
                assert!(r.contains("0xB00E"), "{r}");
                assert!(r.contains("different content"), "{r}");
            }
            other => panic!("expected reject, got {other:?}"),
        }
        assert!(
            matches!(v.outcome_for("1.2.3.3"), InstanceOutcome::Retry(r) if r.contains("0xA700"))
        );
        assert!(
            matches!(v.outcome_for("1.2.3.4"), InstanceOutcome::Retry(r) if r.contains("0x0110"))
        );
        // not mentioned at all: never delivered
        assert!(matches!(
            v.outcome_for("1.2.3.9"),
            InstanceOutcome::Retry(_)
        ));
    }

    #[test]
    fn a_refusal_without_uid_rejects_a_lone_instance_and_splits_a_batch() {
        let body = br#"{"00081198":{"vr":"SQ","Value":[{"00081197":{"vr":"US","Value":[49152]},
            "00000902":{"vr":"LO","Value":["data set SHA-256 differs"]}}]}}"#;
        assert!(
            matches!(classify(409, body, 1), Verdict::RejectAll(why) if why.contains("SHA-256"))
        );
        let v = classify(409, body, 2);
        assert!(matches!(
            v.outcome_for("1.2.3"),
            InstanceOutcome::SendAlone(_)
        ));
        let transient =
            br#"{"00081198":{"vr":"SQ","Value":[{"00081197":{"vr":"US","Value":[42752]}}]}}"#;
        assert!(matches!(classify(409, transient, 1), Verdict::Transient(_)));
    }

    #[test]
    fn conflict_status_carries_the_listing() {
        let body = r#"{"00081198": {"vr": "SQ", "Value": [
            {"00081155": {"vr": "UI", "Value": ["1.9"]},
             "00081197": {"vr": "US", "Value": [43264]}}]}}"#;
        let v = classify(409, body.as_bytes(), 1);
        assert!(matches!(v.outcome_for("1.9"), InstanceOutcome::Reject(r) if r.contains("0xA900")));
    }

    #[test]
    fn listed_as_both_stored_and_failed_is_not_delivered() {
        let body = r#"{"00081199": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.5"]}}]},
                       "00081198": {"vr": "SQ", "Value": [{"00081155": {"vr": "UI", "Value": ["1.5"]},
                                    "00081197": {"vr": "US", "Value": [42752]}}]}}"#;
        let v = classify(200, body.as_bytes(), 1);
        assert!(matches!(v.outcome_for("1.5"), InstanceOutcome::Retry(_)));
    }

    #[test]
    fn request_level_refusals_split_or_reject() {
        let v = classify(415, b"unsupported media type", 3);
        assert!(matches!(v.outcome_for("1.1"), InstanceOutcome::SendAlone(r) if r.contains("415")));
        let v = classify(400, br#"{"error":"no DICM prefix"}"#, 1);
        assert!(
            matches!(v.outcome_for("1.1"), InstanceOutcome::Reject(r) if r.contains("no DICM prefix"))
        );
        let v = classify(413, b"", 2);
        assert!(matches!(v, Verdict::SplitBatch(_)));
    }

    #[test]
    fn server_errors_and_bad_bodies_are_transient() {
        for status in [500, 502, 503, 504, 401, 403, 404, 429] {
            let v = classify(status, b"down", 2);
            assert!(
                matches!(v.outcome_for("1.1"), InstanceOutcome::Retry(_)),
                "{status}"
            );
        }
        let v = classify(200, b"<html>proxy login</html>", 2);
        assert!(
            matches!(v.outcome_for("1.1"), InstanceOutcome::Retry(r) if r.contains("unreadable"))
        );
        // a 204 or other 2xx does not prove storage either
        let v = classify(204, b"", 1);
        assert!(matches!(v.outcome_for("1.1"), InstanceOutcome::Retry(_)));
    }

    #[test]
    fn empty_listing_delivers_nothing() {
        let v = classify(200, b"{}", 1);
        assert!(matches!(v.outcome_for("1.1"), InstanceOutcome::Retry(_)));
    }

    #[tokio::test]
    async fn multipart_body_streams_files_with_exact_length() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a");
        let b = dir.path().join("b");
        std::fs::write(&a, b"AAAA").expect("write");
        std::fs::write(&b, b"BBBBBB").expect("write");
        let parts = vec![
            Part {
                file: tokio::fs::File::open(&a).await.expect("open"),
                size: 4,
                data_set_sha256: "aa".into(),
            },
            Part {
                file: tokio::fs::File::open(&b).await.expect("open"),
                size: 6,
                data_set_sha256: "bb".into(),
            },
        ];
        let (mut body, len) = multipart_body(parts, "XyZ");
        let mut all = Vec::new();
        while let Some(chunk) = body.next().await {
            all.extend_from_slice(&chunk.expect("chunk"));
        }
        assert_eq!(all.len() as u64, len);
        let text = String::from_utf8(all).expect("utf8");
        assert_eq!(
            text,
            "--XyZ\r\nContent-Type: application/dicom\r\nX-Data-Set-SHA256: aa\r\n\r\nAAAA\
             \r\n--XyZ\r\nContent-Type: application/dicom\r\nX-Data-Set-SHA256: bb\r\n\r\nBBBBBB\
             \r\n--XyZ--\r\n"
        );
    }
}
