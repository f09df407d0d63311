//! Reports: templates, drafts, signed versions, the hub's verification keys and the
//! per-site delivery outbox.
//!
//! Signing happens inside one transaction: the claim is checked, the next version
//! number taken, the caller's closure builds and signs the payload from what the
//! transaction read, and the version, the exam's new status, the delivery item and the
//! audit event are written together. A signed version is never updated (triggers).

use std::collections::BTreeMap;

use formats::report::{ReportStatus, SignedReport};
use serde::{Deserialize, Serialize};
use sqlx::Row;

use crate::audit::{audit_append, NewEvent};
use crate::db::{on_db, Db};
use crate::exams::{record_event, ExamKind};
use crate::scope::ReadScope;
use crate::{now_ms, Result, StorageError};

/// One field of a template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Field {
    /// Key in the report content.
    pub key: String,
    /// Chinese label.
    pub label_zh: String,
    /// English label.
    pub label_en: String,
    /// Several lines of text.
    #[serde(default)]
    pub multiline: bool,
}

/// A report template.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// Id.
    pub id: String,
    /// Exam kind it serves.
    pub kind: ExamKind,
    /// Modality it is specific to, if any.
    pub modality: Option<String>,
    /// Name shown to readers.
    pub name: String,
    /// Fields in order.
    pub fields: Vec<Field>,
}

fn template_row<R: Row>(r: &R) -> Result<Template>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let kind: String = r.try_get("kind")?;
    let fields: String = r.try_get("fields")?;
    Ok(Template {
        id: r.try_get("id")?,
        kind: ExamKind::parse(&kind)
            .ok_or_else(|| StorageError::Corrupt(format!("template kind {kind:?}")))?,
        modality: r.try_get("modality")?,
        name: r.try_get("name")?,
        fields: serde_json::from_str(&fields)
            .map_err(|e| StorageError::Corrupt(format!("template fields: {e}")))?,
    })
}

/// Templates, optionally of one kind; modality-specific ones first.
pub async fn templates(db: &Db, kind: Option<ExamKind>) -> Result<Vec<Template>> {
    on_db!(db, |pool| {
        let rows = sqlx::query(
            "SELECT id, kind, modality, name, fields FROM report_templates \
             WHERE ($1 IS NULL OR kind = $1) ORDER BY kind, modality IS NULL, modality, id",
        )
        .bind(kind.map(ExamKind::as_str))
        .fetch_all(pool)
        .await?;
        rows.iter().map(template_row).collect()
    })
}

/// Create or replace a template.
pub async fn put_template(db: &Db, t: &Template, audit: &NewEvent) -> Result<()> {
    if t.id.is_empty()
        || t.id.len() > 64
        || !t
            .id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(StorageError::Invalid(
            "template id must be 1-64 of a-z, 0-9, '-', '_'".into(),
        ));
    }
    if t.fields.is_empty() {
        return Err(StorageError::Invalid(
            "a template needs at least one field".into(),
        ));
    }
    let fields =
        serde_json::to_string(&t.fields).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO report_templates (id, kind, modality, name, fields, updated_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET kind = $2, modality = $3, \
             name = $4, fields = $5, updated_by = $6, updated_at = $7",
        )
        .bind(&t.id)
        .bind(t.kind.as_str())
        .bind(&t.modality)
        .bind(&t.name)
        .bind(&fields)
        .bind(&audit.actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    })
}

/// A report's working state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Draft {
    /// Report id.
    pub report_id: String,
    /// Exam.
    pub exam_id: i64,
    /// Template.
    pub template_id: String,
    /// Text so far, field by field.
    pub content: BTreeMap<String, String>,
    /// Critical finding flag.
    pub critical: bool,
    /// Last saved by.
    pub draft_by: Option<String>,
    /// Last saved at, ms.
    pub draft_updated_at: Option<i64>,
    /// Newest signed version (0: none yet).
    pub current_version: i64,
}

fn draft_row<R: Row>(r: &R) -> Result<Draft>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let draft: String = r.try_get("draft")?;
    let critical: i64 = r.try_get("critical")?;
    Ok(Draft {
        report_id: r.try_get("id")?,
        exam_id: r.try_get("exam_id")?,
        template_id: r.try_get("template_id")?,
        content: serde_json::from_str(&draft)
            .map_err(|e| StorageError::Corrupt(format!("draft: {e}")))?,
        critical: critical != 0,
        draft_by: r.try_get("draft_by")?,
        draft_updated_at: r.try_get("draft_updated_at")?,
        current_version: r.try_get("current_version")?,
    })
}

const DRAFT_SELECT: &str =
    "SELECT id, exam_id, template_id, draft, critical, draft_by, draft_updated_at, \
    current_version FROM reports";

/// The report of an exam, if one was started.
pub async fn draft_of_exam(db: &Db, exam_id: i64) -> Result<Option<Draft>> {
    let sql = format!("{DRAFT_SELECT} WHERE exam_id = $1");
    on_db!(db, |pool| {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(exam_id)
            .fetch_optional(pool)
            .await?;
        row.map(|r| draft_row(&r)).transpose()
    })
}

/// A report by id.
pub async fn draft(db: &Db, report_id: &str) -> Result<Option<Draft>> {
    let sql = format!("{DRAFT_SELECT} WHERE id = $1");
    on_db!(db, |pool| {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(report_id)
            .fetch_optional(pool)
            .await?;
        row.map(|r| draft_row(&r)).transpose()
    })
}

/// The caller does not hold the exam's claim.
fn not_holder(exam_id: i64) -> StorageError {
    StorageError::Conflict(format!(
        "exam {exam_id} is not claimed by you (claim it first, or your lease expired)"
    ))
}

/// Save the text being written (autosave). Only the claim holder may; creates the
/// report on the first save with `new_report_id`. Each save is audited.
#[allow(clippy::too_many_arguments)]
pub async fn save_draft(
    db: &Db,
    exam_id: i64,
    user_id: i64,
    new_report_id: &str,
    template_id: &str,
    content: &BTreeMap<String, String>,
    critical: bool,
    audit: &NewEvent,
) -> Result<Draft> {
    let draft = serde_json::to_string(content).map_err(|e| StorageError::Corrupt(e.to_string()))?;
    let _turn = db.write_turn().await;
    let now = now_ms();
    let select = format!("{DRAFT_SELECT} WHERE exam_id = $1");
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let held = sqlx::query(
            "UPDATE exams SET updated_at = $1 WHERE id = $2 AND claimed_by = $3 AND claimed_until > $1",
        )
        .bind(now)
        .bind(exam_id)
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if held != 1 {
            return Err(not_holder(exam_id));
        }
        let known: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM report_templates WHERE id = $1")
            .bind(template_id)
            .fetch_one(&mut *tx)
            .await?;
        if known == 0 {
            return Err(StorageError::Invalid(format!("no template {template_id}")));
        }
        sqlx::query(
            "INSERT INTO reports (id, exam_id, template_id, draft, critical, draft_by, draft_updated_at, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (exam_id) DO UPDATE SET template_id = $3, \
             draft = $4, critical = $5, draft_by = $6, draft_updated_at = $7",
        )
        .bind(new_report_id)
        .bind(exam_id)
        .bind(template_id)
        .bind(&draft)
        .bind(i64::from(critical))
        .bind(&audit.actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(select))
            .bind(exam_id)
            .fetch_one(&mut *tx)
            .await?;
        let saved = draft_row(&row)?;
        let event = NewEvent {
            exam_id: Some(exam_id),
            detail: Some(
                serde_json::json!({ "report": saved.report_id, "draft": true, "critical": critical }),
            ),
            ..audit.clone()
        };
        audit_append!(&mut *tx, &event, now).await?;
        tx.commit().await?;
        Ok(saved)
    })
}

/// A signed version as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Version {
    /// Report id.
    pub report_id: String,
    /// Version number.
    pub version: i64,
    /// preliminary / final / amended.
    pub status: String,
    /// Critical finding.
    pub critical: bool,
    /// Signer's login name.
    pub signer: String,
    /// Signing time, ms.
    pub signed_at: i64,
    /// The signed report (payload text, signature, key id).
    pub signed: SignedReport,
}

fn version_row<R: Row>(r: &R) -> Result<Version>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let critical: i64 = r.try_get("critical")?;
    Ok(Version {
        report_id: r.try_get("report_id")?,
        version: r.try_get("version")?,
        status: r.try_get("status")?,
        critical: critical != 0,
        signer: r.try_get("signer")?,
        signed_at: r.try_get("signed_at")?,
        signed: SignedReport {
            payload: r.try_get("payload")?,
            signature: r.try_get("signature")?,
            key_id: r.try_get("key_id")?,
        },
    })
}

const VERSION_SELECT: &str =
    "SELECT report_id, version, status, critical, signer, signed_at, payload, signature, key_id FROM report_versions";

/// Every signed version of a report, oldest first.
pub async fn versions(db: &Db, report_id: &str) -> Result<Vec<Version>> {
    let sql = format!("{VERSION_SELECT} WHERE report_id = $1 ORDER BY version");
    on_db!(db, |pool| {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(report_id)
            .fetch_all(pool)
            .await?;
        rows.iter().map(version_row).collect()
    })
}

/// What the signing closure gets to build the payload from, read inside the transaction.
#[derive(Debug, Clone)]
pub struct SignContext {
    /// The report (draft state).
    pub draft: Draft,
    /// The exam's status before signing.
    pub exam_status: String,
    /// Exam kind.
    pub kind: ExamKind,
    /// Sending site.
    pub site: String,
    /// Patient ID.
    pub patient_id: Option<String>,
    /// Patient name.
    pub patient_name: Option<String>,
    /// Study (none for lab orders).
    pub study_uid: Option<String>,
    /// Accession number.
    pub accession_number: Option<String>,
    /// Modality.
    pub modality: Option<String>,
    /// The version number this signature creates.
    pub next_version: i64,
    /// The newest signed version, if any.
    pub previous: Option<Version>,
    /// The hub's time of signing (ms).
    pub now: i64,
}

/// How a version comes about.
#[derive(Debug, Clone)]
pub enum SignMode {
    /// The claim holder signs the exam's draft (preliminary or final).
    Draft {
        /// Exam.
        exam_id: i64,
        /// Claim holder.
        user_id: i64,
    },
    /// A senior amends a signed report with new content (no claim needed).
    Amend {
        /// Report.
        report_id: String,
        /// New content.
        content: BTreeMap<String, String>,
        /// New critical flag.
        critical: bool,
    },
}

/// Sign a new version. `build` makes and signs the payload (or refuses with a message);
/// the returned status decides the exam's new status and whether the township gets it
/// now (finals, amendments, and anything critical).
pub async fn sign<F>(db: &Db, mode: SignMode, build: F, audit: &NewEvent) -> Result<Version>
where
    F: FnOnce(&SignContext) -> std::result::Result<(SignedReport, ReportStatus), String>,
{
    let _turn = db.write_turn().await;
    let now = now_ms();
    let by_exam = format!("{DRAFT_SELECT} WHERE exam_id = $1");
    let by_id = format!("{DRAFT_SELECT} WHERE id = $1");
    let last_version = format!("{VERSION_SELECT} WHERE report_id = $1 AND version = $2");
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let mut draft = match &mode {
            SignMode::Draft { exam_id, user_id } => {
                // Holding the claim is checked by the same statement that locks the exam.
                let held = sqlx::query(
                    "UPDATE exams SET updated_at = $1 WHERE id = $2 AND claimed_by = $3 AND claimed_until > $1",
                )
                .bind(now)
                .bind(exam_id)
                .bind(user_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
                if held != 1 {
                    return Err(not_holder(*exam_id));
                }
                let row = sqlx::query(sqlx::AssertSqlSafe(by_exam.as_str()))
                    .bind(exam_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| {
                        StorageError::Conflict("nothing written yet: save a draft first".into())
                    })?;
                draft_row(&row)?
            }
            SignMode::Amend { report_id, .. } => {
                let row = sqlx::query(sqlx::AssertSqlSafe(by_id.as_str()))
                    .bind(report_id)
                    .fetch_optional(&mut *tx)
                    .await?
                    .ok_or_else(|| StorageError::NotFound(format!("report {report_id}")))?;
                let d = draft_row(&row)?;
                sqlx::query("UPDATE exams SET updated_at = $1 WHERE id = $2")
                    .bind(now)
                    .bind(d.exam_id)
                    .execute(&mut *tx)
                    .await?;
                d
            }
        };
        if let SignMode::Amend {
            content, critical, ..
        } = &mode
        {
            draft.content = content.clone();
            draft.critical = *critical;
        }
        // Takes the report row's lock: versions are numbered without gaps or twins.
        let next_version: i64 = sqlx::query_scalar(
            "UPDATE reports SET current_version = current_version + 1 WHERE id = $1 RETURNING current_version",
        )
        .bind(&draft.report_id)
        .fetch_one(&mut *tx)
        .await?;
        let previous = match sqlx::query(sqlx::AssertSqlSafe(last_version.as_str()))
            .bind(&draft.report_id)
            .bind(next_version - 1)
            .fetch_optional(&mut *tx)
            .await?
        {
            Some(r) => Some(version_row(&r)?),
            None => None,
        };
        let exam = sqlx::query(concat!(
            "SELECT e.status, e.kind, e.site, e.patient_id, e.patient_name, e.study_uid, e.modality, ",
            crate::exams::accession_column!(),
            " FROM exams e LEFT JOIN studies st ON st.study_uid = e.study_uid WHERE e.id = $1"
        ))
        .bind(draft.exam_id)
        .fetch_one(&mut *tx)
        .await?;
        let kind: String = exam.try_get("kind")?;
        let ctx = SignContext {
            exam_status: exam.try_get("status")?,
            kind: ExamKind::parse(&kind)
                .ok_or_else(|| StorageError::Corrupt(format!("exam kind {kind:?}")))?,
            site: exam.try_get("site")?,
            patient_id: exam.try_get("patient_id")?,
            patient_name: exam.try_get("patient_name")?,
            study_uid: exam.try_get("study_uid")?,
            accession_number: exam.try_get("accession_number")?,
            modality: exam.try_get("modality")?,
            next_version,
            previous,
            now,
            draft: draft.clone(),
        };
        let (signed, status) = build(&ctx).map_err(StorageError::Conflict)?;
        sqlx::query(
            "INSERT INTO report_versions (report_id, version, status, critical, payload, signature, key_id, signer, \
             signed_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(&draft.report_id)
        .bind(next_version)
        .bind(status.as_str())
        .bind(i64::from(draft.critical))
        .bind(&signed.payload)
        .bind(&signed.signature)
        .bind(&signed.key_id)
        .bind(&audit.actor)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        if let SignMode::Amend {
            content, critical, ..
        } = &mode
        {
            let text =
                serde_json::to_string(content).map_err(|e| StorageError::Corrupt(e.to_string()))?;
            sqlx::query("UPDATE reports SET draft = $1, critical = $2 WHERE id = $3")
                .bind(text)
                .bind(i64::from(*critical))
                .bind(&draft.report_id)
                .execute(&mut *tx)
                .await?;
        }
        let exam_status = match status {
            ReportStatus::Preliminary => "preliminary",
            ReportStatus::Final | ReportStatus::Amended => "final",
        };
        // Signing ends the claim: a preliminary goes back on the list for a senior.
        sqlx::query(
            "UPDATE exams SET status = $1, claimed_by = NULL, claimed_until = NULL, updated_at = $2, \
             final_at = CASE WHEN $1 = 'final' THEN COALESCE(final_at, $2) ELSE final_at END, \
             final_by = CASE WHEN $1 = 'final' THEN COALESCE(final_by, $3) ELSE final_by END WHERE id = $4",
        )
        .bind(exam_status)
        .bind(now)
        .bind(&audit.actor)
        .bind(draft.exam_id)
        .execute(&mut *tx)
        .await?;
        let detail = format!(
            "report {} v{next_version} {}",
            draft.report_id,
            status.as_str()
        );
        record_event!(
            &mut *tx,
            draft.exam_id,
            status.as_str(),
            audit.actor.as_str(),
            &detail,
            now
        )
        .await?;
        if status != ReportStatus::Preliminary || draft.critical {
            sqlx::query(
                "INSERT INTO deliveries (site, report_id, version, critical, created_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(&ctx.site)
            .bind(&draft.report_id)
            .bind(next_version)
            .bind(i64::from(draft.critical))
            .bind(now)
            .execute(&mut *tx)
            .await?;
        }
        let event = NewEvent {
            patient_id: ctx.patient_id.clone(),
            study_uid: ctx.study_uid.clone(),
            exam_id: Some(draft.exam_id),
            detail: Some(serde_json::json!({
                "report": draft.report_id, "version": next_version, "status": status.as_str(),
                "critical": draft.critical,
            })),
            ..audit.clone()
        };
        audit_append!(&mut *tx, &event, now).await?;
        tx.commit().await?;
        Ok(Version {
            report_id: draft.report_id,
            version: next_version,
            status: status.as_str().to_string(),
            critical: draft.critical,
            signer: audit.actor.clone(),
            signed_at: now,
            signed,
        })
    })
}

/// Remember a verification key (every hub process registers its own at start).
pub async fn register_signing_key(db: &Db, key_id: &str, public_key: &str) -> Result<()> {
    let _turn = db.write_turn().await;
    on_db!(db, |pool| {
        sqlx::query("INSERT INTO signing_keys (key_id, public_key, created_at) VALUES ($1, $2, $3) ON CONFLICT (key_id) DO NOTHING")
            .bind(key_id)
            .bind(public_key)
            .bind(now_ms())
            .execute(pool)
            .await?;
    });
    Ok(())
}

/// Every verification key ever used: (key id, base64 public key, created at ms).
pub async fn signing_keys(db: &Db) -> Result<Vec<(String, String, i64)>> {
    on_db!(db, |pool| {
        Ok(sqlx::query_as(
            "SELECT key_id, public_key, created_at FROM signing_keys ORDER BY created_at, key_id",
        )
        .fetch_all(pool)
        .await?)
    })
}

/// A signed report as clinicians list it (its newest version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    /// Report id.
    pub report_id: String,
    /// Exam.
    pub exam_id: i64,
    /// Kind.
    pub kind: String,
    /// Site.
    pub site: String,
    /// Patient ID.
    pub patient_id: Option<String>,
    /// Patient name.
    pub patient_name: Option<String>,
    /// Study (none for lab orders).
    pub study_uid: Option<String>,
    /// Modality.
    pub modality: Option<String>,
    /// Newest version.
    pub version: i64,
    /// Its status.
    pub status: String,
    /// Critical finding.
    pub critical: bool,
    /// Its signer.
    pub signer: String,
    /// Its signing time, ms.
    pub signed_at: i64,
}

/// Filters of the clinicians' report list.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Patient ID.
    pub patient_id: Option<String>,
    /// Exam id.
    pub exam_id: Option<i64>,
    /// Report id.
    pub report_id: Option<String>,
    /// Site.
    pub site: Option<String>,
    /// Signed at or after, ms.
    pub from_ms: Option<i64>,
    /// Signed before, ms.
    pub to_ms: Option<i64>,
    /// Most rows.
    pub limit: i64,
}

/// Signed reports within `scope`, newest first.
pub async fn list(db: &Db, scope: &ReadScope, filter: &ListFilter) -> Result<Vec<Summary>> {
    let mut texts: Vec<String> = Vec::new();
    let mut clauses = scope.exam_sql(&mut texts, 1);
    let text = |clause: &str, v: &str, texts: &mut Vec<String>| {
        texts.push(v.to_string());
        clause.replace('?', &format!("${}", texts.len()))
    };
    if let Some(p) = &filter.patient_id {
        clauses.push(text("e.patient_id = ?", p, &mut texts));
    }
    if let Some(s) = &filter.site {
        clauses.push(text("e.site = ?", s, &mut texts));
    }
    if let Some(r) = &filter.report_id {
        clauses.push(text("r.id = ?", r, &mut texts));
    }
    let mut ints: Vec<i64> = Vec::new();
    for (clause, v) in [
        ("e.id = ", filter.exam_id),
        ("v.signed_at >= ", filter.from_ms),
        ("v.signed_at < ", filter.to_ms),
    ] {
        if let Some(v) = v {
            ints.push(v);
            clauses.push(format!("{clause}${}", texts.len() + ints.len()));
        }
    }
    clauses.push("v.version = r.current_version".into());
    let sql = format!(
        "SELECT r.id, e.id AS exam_id, e.kind, e.site, e.patient_id, e.patient_name, e.study_uid, e.modality, \
         v.version, v.status, v.critical, v.signer, v.signed_at \
         FROM reports r JOIN exams e ON e.id = r.exam_id \
         JOIN report_versions v ON v.report_id = r.id WHERE {} ORDER BY v.signed_at DESC, r.id LIMIT ${}",
        clauses.join(" AND "),
        texts.len() + ints.len() + 1
    );
    on_db!(db, |pool| {
        // Audited: fixed SQL with numbered placeholders; every value is bound in order.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql));
        for t in &texts {
            query = query.bind(t);
        }
        for i in &ints {
            query = query.bind(*i);
        }
        let rows = query
            .bind(filter.limit.clamp(1, 1000))
            .fetch_all(pool)
            .await?;
        rows.iter()
            .map(|r| {
                let critical: i64 = r.try_get("critical")?;
                Ok(Summary {
                    report_id: r.try_get("id")?,
                    exam_id: r.try_get("exam_id")?,
                    kind: r.try_get("kind")?,
                    site: r.try_get("site")?,
                    patient_id: r.try_get("patient_id")?,
                    patient_name: r.try_get("patient_name")?,
                    study_uid: r.try_get("study_uid")?,
                    modality: r.try_get("modality")?,
                    version: r.try_get("version")?,
                    status: r.try_get("status")?,
                    critical: critical != 0,
                    signer: r.try_get("signer")?,
                    signed_at: r.try_get("signed_at")?,
                })
            })
            .collect()
    })
}

/// One item of a township's delivery outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Delivery {
    /// Cursor (increasing).
    pub cursor: i64,
    /// Report id.
    pub report_id: String,
    /// Version.
    pub version: i64,
    /// Status of the version.
    pub status: String,
    /// Critical finding.
    pub critical: bool,
    /// The signed report.
    pub signed: SignedReport,
}

/// Items for `site` after `after`, critical ones first; marks them handed out.
pub async fn poll_deliveries(db: &Db, site: &str, after: i64, limit: i64) -> Result<Vec<Delivery>> {
    let now = now_ms();
    let rows: Vec<Delivery> = on_db!(db, |pool| {
        let rows = sqlx::query(
            // A critical lab alert travels like a report version (signed the same way).
            "SELECT d.seq, d.report_id, d.version, d.critical, COALESCE(v.status, 'preliminary') AS status, \
             COALESCE(v.payload, a.payload) AS payload, COALESCE(v.signature, a.signature) AS signature, \
             COALESCE(v.key_id, a.key_id) AS key_id \
             FROM deliveries d LEFT JOIN report_versions v ON v.report_id = d.report_id AND v.version = d.version \
             LEFT JOIN critical_alerts a ON a.id = d.alert_id \
             WHERE d.site = $1 AND d.seq > $2 ORDER BY d.seq LIMIT $3",
        )
        .bind(site)
        .bind(after)
        .bind(limit.clamp(1, 500))
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                let critical: i64 = r.try_get("critical")?;
                Ok(Delivery {
                    cursor: r.try_get("seq")?,
                    report_id: r.try_get("report_id")?,
                    version: r.try_get("version")?,
                    status: r.try_get("status")?,
                    critical: critical != 0,
                    signed: SignedReport {
                        payload: r.try_get("payload")?,
                        signature: r.try_get("signature")?,
                        key_id: r.try_get("key_id")?,
                    },
                })
            })
            .collect::<Result<Vec<_>>>()?
    });
    if let (Some(first), Some(last)) = (rows.first(), rows.last()) {
        let _turn = db.write_turn().await;
        on_db!(db, |pool| {
            sqlx::query(
                "UPDATE deliveries SET delivered_at = $1 WHERE site = $2 AND seq >= $3 AND seq <= $4 AND delivered_at IS NULL",
            )
            .bind(now)
            .bind(site)
            .bind(first.cursor)
            .bind(last.cursor)
            .execute(pool)
            .await?;
        });
    }
    let mut rows = rows;
    // Stable: critical first, cursor order within each group.
    rows.sort_by_key(|d| !d.critical);
    Ok(rows)
}

/// The exam a delivery item ($1 report id, $2 version) is about: a report's, or a
/// critical alert's.
const EXAM_OF_DELIVERY: &str =
    "SELECT COALESCE((SELECT r.exam_id FROM reports r WHERE r.id = $1), \
     (SELECT a.exam_id FROM critical_alerts a JOIN deliveries d ON d.alert_id = a.id \
      WHERE d.report_id = $1 AND d.version = $2))";

/// The gateway stored (or refused) an item. Returns false when the site has no such item.
pub async fn ack_delivery(
    db: &Db,
    site: &str,
    cursor: i64,
    stored: bool,
    reason: Option<&str>,
    audit: &NewEvent,
) -> Result<bool> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let row = sqlx::query(
            "UPDATE deliveries SET acknowledged_at = COALESCE(acknowledged_at, $1), ack_status = $2, ack_reason = $3, \
             delivered_at = COALESCE(delivered_at, $1) WHERE site = $4 AND seq = $5 RETURNING report_id, version",
        )
        .bind(now)
        .bind(if stored { "stored" } else { "rejected" })
        .bind(reason)
        .bind(site)
        .bind(cursor)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else {
            return Ok(false);
        };
        let report_id: String = row.try_get("report_id")?;
        let version: i64 = row.try_get("version")?;
        let exam_id: i64 = sqlx::query_scalar(EXAM_OF_DELIVERY)
            .bind(&report_id)
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
        if stored {
            sqlx::query("UPDATE exams SET delivered_at = COALESCE(delivered_at, $1), updated_at = $1 WHERE id = $2")
                .bind(now)
                .bind(exam_id)
                .execute(&mut *tx)
                .await?;
        }
        let what = if stored {
            "delivered"
        } else {
            "delivery refused"
        };
        let detail = format!(
            "report {report_id} v{version} {what}{}",
            reason.map(|r| format!(": {r}")).unwrap_or_default()
        );
        record_event!(&mut *tx, exam_id, what, audit.actor.as_str(), &detail, now).await?;
        let event = NewEvent {
            exam_id: Some(exam_id),
            detail: Some(
                serde_json::json!({ "report": report_id, "version": version, "ack": what, "reason": reason }),
            ),
            ..audit.clone()
        };
        audit_append!(&mut *tx, &event, now).await?;
        tx.commit().await?;
        Ok(true)
    })
}

/// A township clinician acknowledged a critical finding. Returns false when the site
/// has no such critical item.
pub async fn acknowledge_critical(
    db: &Db,
    site: &str,
    report_id: &str,
    version: i64,
    by: &str,
    audit: &NewEvent,
) -> Result<bool> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(
            "UPDATE deliveries SET critical_ack_at = COALESCE(critical_ack_at, $1), \
             critical_ack_by = COALESCE(critical_ack_by, $2) \
             WHERE site = $3 AND report_id = $4 AND version = $5 AND critical = 1",
        )
        .bind(now)
        .bind(by)
        .bind(site)
        .bind(report_id)
        .bind(version)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Ok(false);
        }
        let exam_id: i64 = sqlx::query_scalar(EXAM_OF_DELIVERY)
            .bind(report_id)
            .bind(version)
            .fetch_one(&mut *tx)
            .await?;
        let detail =
            format!("critical finding of report {report_id} v{version} acknowledged by {by}");
        record_event!(
            &mut *tx,
            exam_id,
            "critical acknowledged",
            audit.actor.as_str(),
            &detail,
            now
        )
        .await?;
        let event = NewEvent {
            exam_id: Some(exam_id),
            detail: Some(
                serde_json::json!({ "report": report_id, "version": version, "critical_ack_by": by }),
            ),
            ..audit.clone()
        };
        audit_append!(&mut *tx, &event, now).await?;
        tx.commit().await?;
        Ok(true)
    })
}

/// Delivery state of a report's versions: (version, delivered_at, acknowledged_at,
/// ack_status, critical_ack_at, critical_ack_by).
pub type DeliveryState = (
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<i64>,
    Option<String>,
);

/// Where each version of a report is on its way to the township.
pub async fn delivery_state(db: &Db, report_id: &str) -> Result<Vec<DeliveryState>> {
    on_db!(db, |pool| {
        Ok(sqlx::query_as(
            "SELECT version, delivered_at, acknowledged_at, ack_status, critical_ack_at, critical_ack_by \
             FROM deliveries WHERE report_id = $1 ORDER BY version",
        )
        .bind(report_id)
        .fetch_all(pool)
        .await?)
    })
}

/// Times of one exam for turnaround statistics.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ExamTimes {
    /// Exam.
    pub exam_id: i64,
    /// Site.
    pub site: String,
    /// Kind.
    pub kind: String,
    /// Priority.
    pub priority: String,
    /// Who signed the final.
    pub reader: Option<String>,
    /// Received, ms.
    pub received_at: i64,
    /// Final signed, ms.
    pub final_at: Option<i64>,
    /// Delivered (acknowledged by the gateway), ms.
    pub delivered_at: Option<i64>,
    /// Deadline, ms.
    pub deadline_at: Option<i64>,
}

/// Exams received in `[from, to)` with their milestones.
pub async fn exam_times(db: &Db, from_ms: i64, to_ms: i64) -> Result<Vec<ExamTimes>> {
    on_db!(db, |pool| {
        let rows = sqlx::query(
            "SELECT id, site, kind, priority, final_by, received_at, final_at, delivered_at, deadline_at FROM exams \
             WHERE received_at >= $1 AND received_at < $2 ORDER BY id",
        )
        .bind(from_ms)
        .bind(to_ms)
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(ExamTimes {
                    exam_id: r.try_get("id")?,
                    site: r.try_get("site")?,
                    kind: r.try_get("kind")?,
                    priority: r.try_get("priority")?,
                    reader: r.try_get("final_by")?,
                    received_at: r.try_get("received_at")?,
                    final_at: r.try_get("final_at")?,
                    delivered_at: r.try_get("delivered_at")?,
                    deadline_at: r.try_get("deadline_at")?,
                })
            })
            .collect()
    })
}
