//! What a laboratory message's request to the hub looks like: `POST {hub_url}/ingest/hl7`
//! with the raw bytes as an ER7 body. The request itself and how the hub's answer is
//! judged are shared with the ECG lane ([`crate::filelane::forward`], docs/lab.md).

/// The media type of an ER7-encoded HL7 v2 message.
pub const CONTENT_TYPE_ER7: &str = "x-application/hl7-v2+er7";
/// The hub's ingest path.
pub const INGEST_PATH: &str = "/ingest/hl7";
