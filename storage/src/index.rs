//! The instance index: what STOW-RS writes and WADO-RS reads.
//!
//! Blobs are content-addressed (the key is a digest of the whole file), so a second,
//! different version of a SOP Instance UID can never overwrite the original: the
//! database's primary key on the SOP Instance UID decides which version is the instance,
//! and the loser's blob is deleted. Whether two files are the same instance is decided
//! by the digest of their data sets alone (see `formats::dicom::Part10Digest`).

use std::collections::{BTreeMap, HashMap};

use formats::dicom::InstanceHeader;
use sqlx::Row;

use crate::audit::{audit_append, NewEvent};
use crate::db::{now_ms, on_db, Db};
use crate::exams::{record_event, ExamKind};
use crate::{Result, StorageError};

/// Columns read into a [`StoredInstance`]; a macro so queries stay literal strings.
macro_rules! instance_columns {
    () => {
        "sop_instance_uid, series_uid, study_uid, sop_class_uid, transfer_syntax_uid, size_bytes, data_set_sha256, blob_key, site"
    };
}

/// The query texts selecting the instances of a study ($1), of one series of it ($2) or
/// one instance ($3), in series and instance order, indexed by [`selection_case`]: one
/// text per case, so that each uses its own index (with `($3 IS NULL OR
/// sop_instance_uid = $3)` SQLite stayed on the study index and read every instance row
/// of the study, stored header included, to answer for one). Each text binds all three.
macro_rules! instance_selection {
    ($select:expr) => {
        [
            concat!(
                $select,
                " WHERE study_uid = $1 AND $2 IS NULL AND $3 IS NULL \
                 ORDER BY series_uid, instance_number, sop_instance_uid"
            ),
            concat!(
                $select,
                " WHERE series_uid = $2 AND study_uid = $1 AND $3 IS NULL \
                 ORDER BY instance_number, sop_instance_uid"
            ),
            concat!(
                $select,
                " WHERE sop_instance_uid = $3 AND study_uid = $1 \
                 AND ($2 IS NULL OR series_uid = $2)"
            ),
        ]
    };
}

/// Which text of [`instance_selection`] answers a selection.
fn selection_case(series_uid: Option<&str>, sop_instance_uid: Option<&str>) -> usize {
    match (series_uid, sop_instance_uid) {
        (_, Some(_)) => 2,
        (Some(_), None) => 1,
        (None, None) => 0,
    }
}

/// An instance whose original is already in the blob store, ready to be indexed.
#[derive(Debug, Clone)]
pub struct NewInstance {
    /// Header attributes and metadata.
    pub header: InstanceHeader,
    /// Size of the original file in bytes.
    pub size_bytes: u64,
    /// Lower-case hex SHA-256 of the data set (the bytes after the file meta group): the
    /// instance's identity, the same whoever wrote the file around it.
    pub data_set_sha256: String,
    /// Blob key of the original file (see [`blob_key`]).
    pub blob_key: String,
}

/// What indexing did with one instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IndexOutcome {
    /// Newly stored.
    Stored,
    /// The identical file was already stored: nothing written.
    AlreadyStored,
    /// Another file with this SOP Instance UID is stored; the original was kept.
    Conflict {
        /// Data set SHA-256 of the stored original.
        stored_sha256: String,
    },
    /// The instance was already stored under another study or series.
    WrongParent {
        /// Study the SOP Instance UID already belongs to.
        stored_study_uid: String,
    },
    /// The study belongs to another site; nothing was written.
    WrongSite,
}

/// A series as one [`index_batch`] transaction has seen it.
struct SeriesInTx {
    /// The study the series row belongs to.
    study_uid: String,
    /// Whether this transaction created the row.
    created: bool,
    /// Instances of this transaction stored into it.
    stored: i64,
}

/// The stored record of an instance, as lookups return it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredInstance {
    /// SOP Instance UID.
    pub sop_instance_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
    /// Study Instance UID.
    pub study_uid: String,
    /// SOP Class UID.
    pub sop_class_uid: String,
    /// Transfer syntax the original was stored in.
    pub transfer_syntax_uid: String,
    /// Size of the original.
    pub size_bytes: i64,
    /// SHA-256 of the data set.
    pub data_set_sha256: String,
    /// Blob key of the original.
    pub blob_key: String,
    /// Site that sent it.
    pub site: String,
}

/// The blob key of an original, `dicom/{d[..2]}/{d}.dcm`, from the hex digest of the
/// whole file (`formats::dicom::Digests::file`).
///
/// Content-addressed: a different version of an instance can never overwrite the stored
/// original, identical re-sends land on the same key, and keys stay short whatever the
/// UIDs (some S3-compatible stores limit key length). The index maps UIDs to keys.
pub fn blob_key(file_digest: &str) -> String {
    let fan = file_digest.get(..2).unwrap_or("00");
    format!("dicom/{fan}/{file_digest}.dcm")
}

/// Pattern for a patient name match column: upper case, so matching ignores case the
/// same way on both backends.
pub fn name_match_key(name: &str) -> String {
    name.to_uppercase()
}

/// Look up an instance by SOP Instance UID.
pub async fn find_instance(db: &Db, sop_instance_uid: &str) -> Result<Option<StoredInstance>> {
    let sql = concat!(
        "SELECT ",
        instance_columns!(),
        " FROM instances WHERE sop_instance_uid = $1"
    );
    on_db!(db, |pool| {
        let row = sqlx::query(sql)
            .bind(sop_instance_uid)
            .fetch_optional(pool)
            .await?;
        row.map(|r| stored_instance(&r)).transpose()
    })
}

/// Site owning a study, if the study exists.
pub async fn study_site(db: &Db, study_uid: &str) -> Result<Option<String>> {
    on_db!(db, |pool| {
        let site: Option<String> =
            sqlx::query_scalar("SELECT site FROM studies WHERE study_uid = $1")
                .bind(study_uid)
                .fetch_optional(pool)
                .await?;
        Ok(site)
    })
}

fn stored_instance<R: Row>(r: &R) -> Result<StoredInstance>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(StoredInstance {
        sop_instance_uid: r.try_get("sop_instance_uid")?,
        series_uid: r.try_get("series_uid")?,
        study_uid: r.try_get("study_uid")?,
        sop_class_uid: r.try_get("sop_class_uid")?,
        transfer_syntax_uid: r.try_get("transfer_syntax_uid")?,
        size_bytes: r.try_get("size_bytes")?,
        data_set_sha256: r.try_get("data_set_sha256")?,
        blob_key: r.try_get("blob_key")?,
        site: r.try_get("site")?,
    })
}

/// Index a batch of instances from one site in a single transaction.
///
/// Returns one outcome per input, in order. A study is created on its first instance
/// with an exam in status `receiving`; a new instance for an exam that was `ready`
/// reopens it (back to `receiving`) instead of creating a second exam.
///
/// `audit` describes who stores (actor, role, site, client); one event per study that
/// received new instances is appended from it in the same transaction.
pub async fn index_batch<I: std::borrow::Borrow<NewInstance> + Sync>(
    db: &Db,
    site: &str,
    items: &[I],
    audit: &NewEvent,
) -> Result<Vec<IndexOutcome>> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let mut outcomes = Vec::with_capacity(items.len());
        let mut touched_studies: Vec<&str> = Vec::new();
        // A request's instances mostly share one study and series: their rows are
        // checked once per transaction, not once per instance, and the counters are
        // updated once per series at the end. Every statement is a round trip to the
        // database (and on SQLite, time holding the single writer).
        let mut study_ours: HashMap<&str, bool> = HashMap::new();
        // Ordered, so concurrent transactions (PostgreSQL) lock series rows in one order.
        let mut series_seen: BTreeMap<&str, SeriesInTx> = BTreeMap::new();
        for item in items {
            let item: &NewInstance = item.borrow();
            let h = &item.header;
            let metadata = serde_json::to_string(&h.metadata)
                .map_err(|e| StorageError::Corrupt(e.to_string()))?;

            let ours = match study_ours.get(h.study_instance_uid.as_str()) {
                Some(ours) => *ours,
                None => {
                    sqlx::query(
                        "INSERT INTO studies (study_uid, site, patient_id, issuer_of_patient_id, patient_name, \
                         patient_name_match, patient_birth_date, patient_sex, study_date, study_time, accession_number, \
                         study_id, study_description, referring_physician_name, specific_character_set, created_at, updated_at) \
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) \
                         ON CONFLICT (study_uid) DO NOTHING",
                    )
                    .bind(&h.study_instance_uid)
                    .bind(site)
                    .bind(&h.patient_id)
                    .bind(&h.issuer_of_patient_id)
                    .bind(&h.patient_name)
                    .bind(h.patient_name.as_deref().map(name_match_key))
                    .bind(&h.patient_birth_date)
                    .bind(&h.patient_sex)
                    .bind(&h.study_date)
                    .bind(&h.study_time)
                    .bind(&h.accession_number)
                    .bind(&h.study_id)
                    .bind(&h.study_description)
                    .bind(&h.referring_physician_name)
                    .bind(&h.specific_character_set)
                    .bind(now)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?;
                    let owner: String =
                        sqlx::query_scalar("SELECT site FROM studies WHERE study_uid = $1")
                            .bind(&h.study_instance_uid)
                            .fetch_one(&mut *tx)
                            .await?;
                    let ours = owner == site;
                    study_ours.insert(&h.study_instance_uid, ours);
                    ours
                }
            };
            if !ours {
                outcomes.push(IndexOutcome::WrongSite);
                continue;
            }

            let series = match series_seen.get(h.series_instance_uid.as_str()) {
                Some(series) => series.study_uid.clone(),
                None => {
                    let created = sqlx::query(
                        "INSERT INTO series (series_uid, study_uid, modality, series_number, series_description, \
                         body_part_examined, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7) \
                         ON CONFLICT (series_uid) DO NOTHING",
                    )
                    .bind(&h.series_instance_uid)
                    .bind(&h.study_instance_uid)
                    .bind(&h.modality)
                    .bind(h.series_number.map(i64::from))
                    .bind(&h.series_description)
                    .bind(&h.body_part_examined)
                    .bind(now)
                    .execute(&mut *tx)
                    .await?
                    .rows_affected()
                        == 1;
                    let series_study: String =
                        sqlx::query_scalar("SELECT study_uid FROM series WHERE series_uid = $1")
                            .bind(&h.series_instance_uid)
                            .fetch_one(&mut *tx)
                            .await?;
                    series_seen.insert(
                        &h.series_instance_uid,
                        SeriesInTx {
                            study_uid: series_study.clone(),
                            created,
                            stored: 0,
                        },
                    );
                    series_study
                }
            };
            if series != h.study_instance_uid {
                outcomes.push(IndexOutcome::WrongParent {
                    stored_study_uid: series,
                });
                continue;
            }

            let inserted = sqlx::query(
                "INSERT INTO instances (sop_instance_uid, series_uid, study_uid, sop_class_uid, instance_number, \
                 transfer_syntax_uid, number_of_frames, rows_, columns_, size_bytes, data_set_sha256, blob_key, metadata, \
                 site, received_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15) \
                 ON CONFLICT (sop_instance_uid) DO NOTHING",
            )
            .bind(&h.sop_instance_uid)
            .bind(&h.series_instance_uid)
            .bind(&h.study_instance_uid)
            .bind(&h.sop_class_uid)
            .bind(h.instance_number.map(i64::from))
            .bind(&h.transfer_syntax_uid)
            .bind(h.number_of_frames.map(i64::from))
            .bind(h.rows.map(i64::from))
            .bind(h.columns.map(i64::from))
            .bind(item.size_bytes as i64)
            .bind(&item.data_set_sha256)
            .bind(&item.blob_key)
            .bind(&metadata)
            .bind(site)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                == 1;
            if !inserted {
                let sql = concat!(
                    "SELECT ",
                    instance_columns!(),
                    " FROM instances WHERE sop_instance_uid = $1"
                );
                let row = sqlx::query(sql)
                    .bind(&h.sop_instance_uid)
                    .fetch_one(&mut *tx)
                    .await?;
                let stored = stored_instance(&row)?;
                outcomes.push(
                    if stored.study_uid != h.study_instance_uid
                        || stored.series_uid != h.series_instance_uid
                    {
                        IndexOutcome::WrongParent {
                            stored_study_uid: stored.study_uid,
                        }
                    } else if stored.data_set_sha256 == item.data_set_sha256 {
                        IndexOutcome::AlreadyStored
                    } else {
                        IndexOutcome::Conflict {
                            stored_sha256: stored.data_set_sha256,
                        }
                    },
                );
                continue;
            }
            if let Some(series) = series_seen.get_mut(h.series_instance_uid.as_str()) {
                series.stored += 1;
            }
            if !touched_studies.contains(&h.study_instance_uid.as_str()) {
                touched_studies.push(&h.study_instance_uid);
                let actor = audit.actor.as_str();
                let created: Option<i64> = sqlx::query_scalar(
                    "INSERT INTO exams (study_uid, site, kind, modality, patient_id, patient_name, priority, status, \
                     received_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'routine', 'receiving', $7, $8) \
                     ON CONFLICT (study_uid) DO NOTHING RETURNING id",
                )
                .bind(&h.study_instance_uid)
                .bind(site)
                .bind(ExamKind::of_instance(h.modality.as_deref(), &h.sop_class_uid).as_str())
                .bind(&h.modality)
                .bind(&h.patient_id)
                .bind(&h.patient_name)
                .bind(now)
                .bind(now)
                .fetch_optional(&mut *tx)
                .await?;
                let event = match created {
                    Some(id) => Some((id, "first instance received")),
                    None => {
                        // A late instance reopens a finished transfer rather than making a
                        // second exam; exams already being read keep their status.
                        let reopened: Option<i64> = sqlx::query_scalar(
                            "UPDATE exams SET status = 'receiving', updated_at = $1 \
                             WHERE study_uid = $2 AND status = 'ready' RETURNING id",
                        )
                        .bind(now)
                        .bind(&h.study_instance_uid)
                        .fetch_optional(&mut *tx)
                        .await?;
                        reopened.map(|id| (id, "late instance reopened the exam"))
                    }
                };
                if let Some((exam_id, detail)) = event {
                    record_event!(&mut *tx, exam_id, "receiving", actor, detail, now).await?;
                }
            }
            outcomes.push(IndexOutcome::Stored);
        }
        // The counters, once per series. A series row this transaction created for
        // nothing (every instance refused) is removed: a series exists only with
        // instances.
        for (series_uid, series) in &series_seen {
            if series.stored == 0 {
                if series.created {
                    sqlx::query("DELETE FROM series WHERE series_uid = $1 AND num_instances = 0")
                        .bind(*series_uid)
                        .execute(&mut *tx)
                        .await?;
                }
                continue;
            }
            sqlx::query(
                "UPDATE series SET num_instances = num_instances + $1 WHERE series_uid = $2",
            )
            .bind(series.stored)
            .bind(*series_uid)
            .execute(&mut *tx)
            .await?;
            sqlx::query(
                "UPDATE studies SET num_instances = num_instances + $1, num_series = num_series + $2, \
                 updated_at = $3 WHERE study_uid = $4",
            )
            .bind(series.stored)
            .bind(i64::from(series.created))
            .bind(now)
            .bind(&series.study_uid)
            .execute(&mut *tx)
            .await?;
        }
        // Last, so the audit chain's lock is held only for the end of the transaction.
        for study_uid in &touched_studies {
            let stored = items
                .iter()
                .zip(&outcomes)
                .filter(|(i, o)| {
                    **o == IndexOutcome::Stored
                        && (*i).borrow().header.study_instance_uid == *study_uid
                })
                .count();
            let (exam_id, patient_id): (i64, Option<String>) =
                sqlx::query_as("SELECT id, patient_id FROM exams WHERE study_uid = $1")
                    .bind(*study_uid)
                    .fetch_one(&mut *tx)
                    .await?;
            let event = NewEvent {
                patient_id,
                study_uid: Some(study_uid.to_string()),
                exam_id: Some(exam_id),
                detail: Some(serde_json::json!({ "instances_stored": stored })),
                ..audit.clone()
            };
            audit_append!(&mut *tx, &event, now).await?;
        }
        tx.commit().await?;
        Ok(outcomes)
    })
}

/// Instances of a study, optionally narrowed to a series and an instance, in series then
/// instance-number order.
pub async fn instances(
    db: &Db,
    study_uid: &str,
    series_uid: Option<&str>,
    sop_instance_uid: Option<&str>,
) -> Result<Vec<StoredInstance>> {
    let sql = instance_selection!(concat!("SELECT ", instance_columns!(), " FROM instances"))
        [selection_case(series_uid, sop_instance_uid)];
    on_db!(db, |pool| {
        let rows = sqlx::query(sql)
            .bind(study_uid)
            .bind(series_uid)
            .bind(sop_instance_uid)
            .fetch_all(pool)
            .await?;
        rows.iter().map(stored_instance).collect()
    })
}

/// Stored DICOM JSON of the selected instances, each as the JSON text it was stored as,
/// in the same order as [`instances`].
pub async fn metadata(
    db: &Db,
    study_uid: &str,
    series_uid: Option<&str>,
    sop_instance_uid: Option<&str>,
) -> Result<Vec<String>> {
    let sql = instance_selection!("SELECT metadata FROM instances")
        [selection_case(series_uid, sop_instance_uid)];
    on_db!(db, |pool| {
        let rows: Vec<String> = sqlx::query_scalar(sql)
            .bind(study_uid)
            .bind(series_uid)
            .bind(sop_instance_uid)
            .fetch_all(pool)
            .await?;
        Ok(rows)
    })
}

/// A series whose default thumbnail is missing or older than its last instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThumbnailDue {
    /// Study Instance UID.
    pub study_uid: String,
    /// Series Instance UID.
    pub series_uid: String,
}

/// Up to `limit` series whose thumbnail is due, oldest first: their instance count has
/// changed since [`thumbnail_made`] last recorded it (on the partial index
/// `series_thumbnail_due`, which holds only those rows).
pub async fn thumbnails_due(db: &Db, limit: i64) -> Result<Vec<ThumbnailDue>> {
    on_db!(db, |pool| {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT study_uid, series_uid FROM series \
             WHERE num_instances <> thumbnailed_instances ORDER BY created_at LIMIT $1",
        )
        .bind(limit)
        .fetch_all(pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|(study_uid, series_uid)| ThumbnailDue {
                study_uid,
                series_uid,
            })
            .collect())
    })
}

/// Record that the series' thumbnail was made (or cannot be) from its first
/// `instances` instances. Instances stored meanwhile keep it due.
pub async fn thumbnail_made(db: &Db, series_uid: &str, instances: i64) -> Result<()> {
    on_db!(db, |pool| {
        sqlx::query("UPDATE series SET thumbnailed_instances = $1 WHERE series_uid = $2")
            .bind(instances)
            .bind(series_uid)
            .execute(pool)
            .await?;
        Ok(())
    })
}
