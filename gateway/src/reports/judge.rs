//! Judging one delivered report: the signature (`formats::report::verify`, over the
//! exact bytes received, against the trusted keys), then that the signed payload is the
//! report the envelope announced and is for this site.

use formats::report::{self, ReportError, ReportPayload, SignedReport, VerifyingKey};

use super::db::{ExamFields, ReceivedVersion};

/// Why a delivered report is not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Set when the only problem may be that we do not know the key yet (refetch the
    /// hub's published keys before rejecting, unless they are pinned).
    pub unknown_key: Option<String>,
    /// In words for the operator and the hub.
    pub reason: String,
}

/// Verify `signed` and check it against the envelope (`report_id`, `version`) and the
/// configured site.
pub fn check(
    signed: &SignedReport,
    envelope_report_id: Option<&str>,
    envelope_version: Option<i64>,
    trusted: &[VerifyingKey],
    site: Option<&str>,
) -> Result<ReportPayload, Rejection> {
    let payload = report::verify(signed, trusted).map_err(|e| Rejection {
        unknown_key: match &e {
            ReportError::UnknownKey(id) => Some(id.clone()),
            _ => None,
        },
        reason: e.to_string(),
    })?;
    let reject = |reason: String| Rejection {
        unknown_key: None,
        reason,
    };
    // The envelope is unsigned: it must say what the signed bytes say, or the listing
    // (built from the envelope by the hub) and the report could disagree.
    if envelope_report_id != Some(payload.report_id.as_str()) {
        return Err(reject(format!(
            "envelope names report {:?} but the signed payload is report {:?}",
            envelope_report_id.unwrap_or(""),
            payload.report_id
        )));
    }
    if envelope_version != Some(payload.version) {
        return Err(reject(format!(
            "envelope names version {} but the signed payload is version {}",
            envelope_version.map_or_else(|| "(none)".to_string(), |v| v.to_string()),
            payload.version
        )));
    }
    if payload.version < 1 {
        return Err(reject(format!("version {} is not valid", payload.version)));
    }
    if let Some(site) = site {
        if payload.exam.site != site {
            return Err(reject(format!(
                "report is for site {:?}, this gateway's site is {site:?}",
                payload.exam.site
            )));
        }
    }
    Ok(payload)
}

/// The row to record for a delivered report: from the verified payload, or for one that
/// failed, from whatever the payload claims (marked unverified) and the envelope.
pub fn received_version(
    signed: &SignedReport,
    envelope_report_id: Option<&str>,
    envelope_version: Option<i64>,
    verdict: &Result<ReportPayload, Rejection>,
) -> ReceivedVersion {
    let (payload, verified, verify_error) = match verdict {
        Ok(p) => (Some(p.clone()), true, None),
        // Parsed without any check, only so the operator can see what was claimed.
        Err(r) => (
            serde_json::from_str::<ReportPayload>(&signed.payload).ok(),
            false,
            Some(r.reason.clone()),
        ),
    };
    // An unverified version is filed under the id the envelope gave (that is what the
    // hub will ask about); a verified one under the signed id (they agree).
    let report_id = if verified {
        payload.as_ref().map(|p| p.report_id.clone())
    } else {
        envelope_report_id
            .map(str::to_string)
            .or_else(|| payload.as_ref().map(|p| p.report_id.clone()))
    }
    .unwrap_or_default();
    let version = if verified {
        payload.as_ref().map(|p| p.version)
    } else {
        envelope_version.or_else(|| payload.as_ref().map(|p| p.version))
    }
    .unwrap_or(0);
    ReceivedVersion {
        report_id,
        version,
        status: payload
            .as_ref()
            .map_or("unknown", |p| p.status.as_str())
            .to_string(),
        critical: payload.as_ref().is_some_and(|p| p.critical),
        exam: payload
            .as_ref()
            .map(|p| ExamFields {
                kind: Some(p.exam.kind.clone()),
                site: Some(p.exam.site.clone()),
                patient_id: p.exam.patient_id.clone(),
                patient_name: p.exam.patient_name.clone(),
                study_uid: p.exam.study_uid.clone(),
                accession_number: p.exam.accession_number.clone(),
                modality: p.exam.modality.clone(),
            })
            .unwrap_or_default(),
        reason: payload.as_ref().and_then(|p| p.reason.clone()),
        signer_name: payload.as_ref().map(|p| p.signer.display_name.clone()),
        signed_at: payload.as_ref().map(|p| p.signer.signed_at_ms),
        payload: signed.payload.clone(),
        signature: signed.signature.clone(),
        key_id: signed.key_id.clone(),
        verified,
        verify_error,
    }
}
