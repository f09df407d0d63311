//! ECG files imported at a township: each becomes an exam of kind `ecg` whose original
//! file is a blob. (DICOM ECGs sent by C-STORE are indexed instances like images.)

use sqlx::Row;

use crate::audit::{audit_append, NewEvent};
use crate::db::{on_db, Db};
use crate::exams::{record_event, ExamKind, Priority};
use crate::worklist::DeadlineTargets;
use crate::{now_ms, Result};

/// An imported ECG file to record.
#[derive(Debug, Clone)]
pub struct NewEcg<'a> {
    /// Sending site.
    pub site: &'a str,
    /// SHA-256 (hex) of the original file.
    pub sha256: &'a str,
    /// Where the original is.
    pub blob_key: &'a str,
    /// Its name at the township.
    pub file_name: Option<&'a str>,
    /// `scp`, `aecg` or `dicom`.
    pub format: &'a str,
    /// Patient ID.
    pub patient_id: Option<&'a str>,
    /// Patient name.
    pub patient_name: Option<&'a str>,
    /// Study Instance UID, when the file names one.
    pub study_uid: Option<&'a str>,
    /// Sampling rate.
    pub sample_rate_hz: f64,
    /// Leads.
    pub lead_count: i64,
    /// Duration, ms.
    pub duration_ms: i64,
    /// Acquisition time, ms.
    pub acquired_at: Option<i64>,
    /// STAT (marked at the township, or an emergency automatic finding).
    pub priority: Priority,
}

/// What recording did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Recorded {
    /// A new exam.
    Stored {
        /// Its id.
        exam_id: i64,
    },
    /// The same file from the same site was recorded before.
    Duplicate {
        /// That exam.
        exam_id: i64,
    },
}

/// Record an imported ECG as an exam ready for reading.
pub async fn record(
    db: &Db,
    new: &NewEcg<'_>,
    targets: &DeadlineTargets,
    audit: &NewEvent,
) -> Result<Recorded> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let known: Option<i64> =
            sqlx::query_scalar("SELECT exam_id FROM ecg_records WHERE site = $1 AND sha256 = $2")
                .bind(new.site)
                .bind(new.sha256)
                .fetch_optional(&mut *tx)
                .await?;
        if let Some(exam_id) = known {
            return Ok(Recorded::Duplicate { exam_id });
        }
        // A study UID from a file is kept only on the record: exams.study_uid points at
        // the DICOM index, which has no such study.
        let exam_id: i64 = sqlx::query_scalar(
            "INSERT INTO exams (study_uid, site, kind, modality, patient_id, patient_name, priority, status, \
             received_at, ready_at, updated_at, deadline_at) \
             VALUES (NULL, $1, 'ecg', 'ECG', $2, $3, $4, 'ready', $5, $5, $5, $6) RETURNING id",
        )
        .bind(new.site)
        .bind(new.patient_id)
        .bind(new.patient_name)
        .bind(new.priority.as_str())
        .bind(now)
        .bind(now + targets.target_ms(ExamKind::Ecg, new.priority))
        .fetch_one(&mut *tx)
        .await?;
        sqlx::query(
            "INSERT INTO ecg_records (exam_id, site, sha256, blob_key, file_name, format, sample_rate_hz, lead_count, \
             duration_ms, acquired_at, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
        )
        .bind(exam_id)
        .bind(new.site)
        .bind(new.sha256)
        .bind(new.blob_key)
        .bind(new.file_name)
        .bind(new.format)
        .bind(new.sample_rate_hz)
        .bind(new.lead_count)
        .bind(new.duration_ms)
        .bind(new.acquired_at)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let detail = format!(
            "ECG file ({}) imported, {}",
            new.format,
            new.priority.as_str()
        );
        record_event!(
            &mut *tx,
            exam_id,
            "ready",
            audit.actor.as_str(),
            &detail,
            now
        )
        .await?;
        let event = NewEvent {
            patient_id: new.patient_id.map(str::to_string),
            study_uid: new.study_uid.map(str::to_string),
            exam_id: Some(exam_id),
            detail: Some(
                serde_json::json!({ "ecg": new.format, "sha256": new.sha256, "file": new.file_name }),
            ),
            ..audit.clone()
        };
        audit_append!(&mut *tx, &event, now).await?;
        tx.commit().await?;
        Ok(Recorded::Stored { exam_id })
    })
}

/// Where an ECG exam's original is: an imported file, or the first DICOM instance of
/// its study.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// An imported file: (blob key, format).
    File(String, String),
    /// A DICOM waveform instance's blob key.
    Dicom(String),
}

/// The original of an ECG exam, if it has one.
pub async fn source(db: &Db, exam_id: i64) -> Result<Option<Source>> {
    on_db!(db, |pool| {
        if let Some(r) = sqlx::query("SELECT blob_key, format FROM ecg_records WHERE exam_id = $1")
            .bind(exam_id)
            .fetch_optional(pool)
            .await?
        {
            return Ok(Some(Source::File(
                r.try_get("blob_key")?,
                r.try_get("format")?,
            )));
        }
        let key: Option<String> = sqlx::query_scalar(
            "SELECT i.blob_key FROM instances i JOIN exams e ON e.study_uid = i.study_uid WHERE e.id = $1 \
             ORDER BY i.series_uid, i.instance_number, i.sop_instance_uid LIMIT 1",
        )
        .bind(exam_id)
        .fetch_optional(pool)
        .await?;
        Ok(key.map(Source::Dicom))
    })
}
