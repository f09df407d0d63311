//! Signed diagnostic reports: the one serialization that is signed, and the signature.
//!
//! A signed report version is a [`ReportPayload`] written in **canonical JSON** and an
//! Ed25519 signature over exactly those bytes. Canonical JSON here is: UTF-8; objects
//! with their keys sorted by byte value; no whitespace outside strings; strings escaped
//! as `serde_json` writes them (`"` `\` and control characters only, everything else
//! literal UTF-8); integers only (no floats); `null` for absent optional members. For the
//! values a payload holds this is the same text RFC 8785 (JCS) produces.
//!
//! The payload travels as that text (never re-serialized), so a verifier checks the
//! signature over the bytes it received, then parses them and insists they are canonical:
//! two different texts can never carry the same signed meaning.
//!
//! The timestamp is the hub's clock at signing, inside the signed bytes: the hub is the
//! time source the township trusts, like the signature key.

use std::collections::BTreeMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ed25519_dalek::{Signature, Signer as _, Verifier as _};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

/// Identifies this payload layout; a verifier refuses any other.
pub const FORMAT: &str = "county-hub-report/1";

/// Status of a report version, as FHIR DiagnosticReport.status names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReportStatus {
    /// Signed by a junior reader; awaits a senior.
    Preliminary,
    /// Signed by a senior reader.
    Final,
    /// A signed final changed afterwards (new version, references the previous).
    Amended,
}

impl ReportStatus {
    /// Lower-case name.
    pub fn as_str(self) -> &'static str {
        match self {
            ReportStatus::Preliminary => "preliminary",
            ReportStatus::Final => "final",
            ReportStatus::Amended => "amended",
        }
    }

    /// Parse the lower-case name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "preliminary" => Some(ReportStatus::Preliminary),
            "final" => Some(ReportStatus::Final),
            "amended" => Some(ReportStatus::Amended),
            _ => None,
        }
    }
}

/// The exam a report is about: the identifiers the township matches it by.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExamRef {
    /// Hub exam id.
    pub exam_id: i64,
    /// `imaging`, `ecg` or `lab`.
    pub kind: String,
    /// Site that sent the exam.
    pub site: String,
    /// Patient ID at that site.
    pub patient_id: Option<String>,
    /// Patient name as sent.
    pub patient_name: Option<String>,
    /// Study Instance UID (imaging and DICOM ECG; lab orders have none).
    pub study_uid: Option<String>,
    /// Accession number.
    pub accession_number: Option<String>,
    /// Modality.
    pub modality: Option<String>,
}

/// A person who signed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signer {
    /// Login name.
    pub username: String,
    /// Name as printed.
    pub display_name: String,
    /// `junior` or `senior`.
    pub grade: String,
    /// When they signed (ms since the Unix epoch, hub clock).
    pub signed_at_ms: i64,
}

/// The previous version an amendment replaces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Supersedes {
    /// Its version number.
    pub version: i64,
    /// SHA-256 (hex) of its canonical payload text.
    pub payload_sha256: String,
}

/// Everything a signature covers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportPayload {
    /// Always [`FORMAT`].
    pub format: String,
    /// Report id (stable across versions).
    pub report_id: String,
    /// Version, from 1.
    pub version: i64,
    /// Status of this version.
    pub status: ReportStatus,
    /// The version this one replaces (amendments, and a final over a preliminary).
    pub supersedes: Option<Supersedes>,
    /// Why this version replaces the previous one (amendments).
    pub reason: Option<String>,
    /// The exam.
    pub exam: ExamRef,
    /// Template id the content follows.
    pub template: String,
    /// The report text, field by field (e.g. `findings`, `impression`).
    pub content: BTreeMap<String, String>,
    /// Critical finding (危急值): delivered urgently, must be acknowledged.
    pub critical: bool,
    /// The junior reader whose preliminary this final reviewed, if any.
    pub preliminary_by: Option<Signer>,
    /// Who signed this version, and when.
    pub signer: Signer,
    /// Id of the signing key ([`key_id`]).
    pub key_id: String,
}

/// A signed report version as stored and delivered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedReport {
    /// The canonical payload text.
    pub payload: String,
    /// Ed25519 signature over the payload's UTF-8 bytes, standard base64.
    pub signature: String,
    /// Id of the key that signed.
    pub key_id: String,
}

/// Why a report cannot be signed or does not verify.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReportError {
    /// The payload holds something canonical JSON here does not allow.
    #[error("not canonical: {0}")]
    NotCanonical(String),
    /// The signing key is not one of the trusted keys.
    #[error("unknown signing key {0}")]
    UnknownKey(String),
    /// The signature is malformed or does not match the payload.
    #[error("signature does not match the report")]
    BadSignature,
    /// The payload is not a report of this format.
    #[error("not a report payload: {0}")]
    Malformed(String),
}

/// Write a JSON value canonically (see the module documentation).
pub fn canonical_json(value: &Value) -> Result<String, ReportError> {
    let mut out = String::new();
    write_canonical(value, &mut out)?;
    Ok(out)
}

fn write_canonical(value: &Value, out: &mut String) -> Result<(), ReportError> {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if n.is_f64() {
                return Err(ReportError::NotCanonical(format!("non-integer number {n}")));
            }
            out.push_str(&n.to_string());
        }
        Value::String(s) => out.push_str(&Value::String(s.clone()).to_string()),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out)?;
            }
            out.push(']');
        }
        Value::Object(map) => {
            // Sorted here whatever order the map keeps (serde_json may preserve insertion).
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

/// The canonical text of a payload.
pub fn canonical_payload(payload: &ReportPayload) -> Result<String, ReportError> {
    let value = serde_json::to_value(payload).map_err(|e| ReportError::Malformed(e.to_string()))?;
    canonical_json(&value)
}

/// Id of a verification key: the first 16 hex digits of SHA-256 of its 32 bytes.
pub fn key_id(key: &VerifyingKey) -> String {
    hex::encode(Sha256::digest(key.as_bytes()))[..16].to_string()
}

/// SHA-256 (hex) of a payload text, as amendments reference their predecessor.
pub fn payload_sha256(payload: &str) -> String {
    hex::encode(Sha256::digest(payload.as_bytes()))
}

/// A verification key as published: standard base64 of its 32 bytes.
pub fn encode_public_key(key: &VerifyingKey) -> String {
    STANDARD.encode(key.as_bytes())
}

/// Parse a published verification key.
pub fn decode_public_key(text: &str) -> Result<VerifyingKey, ReportError> {
    let bytes = STANDARD
        .decode(text.trim())
        .map_err(|e| ReportError::Malformed(format!("public key: {e}")))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| ReportError::Malformed("public key must be 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| ReportError::Malformed(format!("public key: {e}")))
}

/// Sign a payload (its `key_id` must be the signing key's).
pub fn sign(payload: &ReportPayload, key: &SigningKey) -> Result<SignedReport, ReportError> {
    let id = key_id(&key.verifying_key());
    if payload.key_id != id {
        return Err(ReportError::Malformed(format!(
            "payload names key {} but key {id} signs",
            payload.key_id
        )));
    }
    let text = canonical_payload(payload)?;
    let signature = key.sign(text.as_bytes());
    Ok(SignedReport {
        payload: text,
        signature: STANDARD.encode(signature.to_bytes()),
        key_id: id,
    })
}

/// Verify a signed report against trusted keys; returns the payload it carries.
pub fn verify(
    signed: &SignedReport,
    trusted: &[VerifyingKey],
) -> Result<ReportPayload, ReportError> {
    let key = trusted
        .iter()
        .find(|k| key_id(k) == signed.key_id)
        .ok_or_else(|| ReportError::UnknownKey(signed.key_id.clone()))?;
    let bytes = STANDARD
        .decode(signed.signature.trim())
        .map_err(|_| ReportError::BadSignature)?;
    let signature = Signature::from_slice(&bytes).map_err(|_| ReportError::BadSignature)?;
    key.verify(signed.payload.as_bytes(), &signature)
        .map_err(|_| ReportError::BadSignature)?;
    let payload: ReportPayload =
        serde_json::from_str(&signed.payload).map_err(|e| ReportError::Malformed(e.to_string()))?;
    if payload.format != FORMAT {
        return Err(ReportError::Malformed(format!(
            "format {:?}",
            payload.format
        )));
    }
    if payload.key_id != signed.key_id {
        return Err(ReportError::Malformed(
            "payload and envelope name different keys".into(),
        ));
    }
    if canonical_payload(&payload)? != signed.payload {
        return Err(ReportError::NotCanonical(
            "payload text is not in canonical form".into(),
        ));
    }
    Ok(payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn payload(k: &SigningKey) -> ReportPayload {
        ReportPayload {
            format: FORMAT.into(),
            report_id: "r1".into(),
            version: 1,
            status: ReportStatus::Final,
            supersedes: None,
            reason: None,
            exam: ExamRef {
                exam_id: 3,
                kind: "imaging".into(),
                site: "township-a".into(),
                patient_id: Some("PID1".into()),
                patient_name: Some("Zhang^San=张^三".into()),
                study_uid: Some("1.2.3".into()),
                accession_number: None,
                modality: Some("CT".into()),
            },
            template: "imaging".into(),
            content: [(
                "findings".to_string(),
                "双肺纹理清晰。\n\"无\"异常".to_string(),
            )]
            .into(),
            critical: false,
            preliminary_by: None,
            signer: Signer {
                username: "wang".into(),
                display_name: "王医生".into(),
                grade: "senior".into(),
                signed_at_ms: 1_700_000_000_000,
            },
            key_id: key_id(&k.verifying_key()),
        }
    }

    #[test]
    fn canonical_text_is_sorted_and_compact() {
        let v: Value = serde_json::from_str(r#"{"b": [1, {"z": null, "a": "é\n"}], "a": true}"#)
            .expect("json");
        assert_eq!(
            canonical_json(&v).expect("canonical"),
            r#"{"a":true,"b":[1,{"a":"é\n","z":null}]}"#
        );
        let f: Value = serde_json::from_str(r#"{"x": 1.5}"#).expect("json");
        assert!(canonical_json(&f).is_err());
    }

    #[test]
    fn signed_reports_verify_and_tampering_is_caught() {
        let k = key();
        let signed = sign(&payload(&k), &k).expect("sign");
        let trusted = [k.verifying_key()];
        assert_eq!(verify(&signed, &trusted).expect("verifies"), payload(&k));

        let mut altered = signed.clone();
        altered.payload = altered.payload.replace("双肺", "左肺");
        assert_eq!(verify(&altered, &trusted), Err(ReportError::BadSignature));

        let other = SigningKey::from_bytes(&[9u8; 32]);
        assert!(matches!(
            verify(&signed, &[other.verifying_key()]),
            Err(ReportError::UnknownKey(_))
        ));

        // Same meaning, different text (whitespace): the signature does not carry over.
        let mut spaced = signed.clone();
        spaced.payload = spaced.payload.replacen(',', ", ", 1);
        assert!(verify(&spaced, &trusted).is_err());
    }

    #[test]
    fn public_keys_round_trip() {
        let k = key().verifying_key();
        assert_eq!(
            decode_public_key(&encode_public_key(&k)).expect("decode"),
            k
        );
        assert!(decode_public_key("AAAA").is_err());
    }
}
