//! The audit trail: who did what to which patient's data, in the vocabulary of IHE ATNA
//! and DICOM PS3.15 (event ids from DCM, ATNA action codes and outcome indicators), kept
//! append-only and hash-chained so that tampering is detected even by someone who holds
//! database rights and drops the append-only triggers.
//!
//! # The chain
//!
//! Events are numbered `seq` = 1, 2, 3, ... without gaps. Each stores `prev_hash`, the
//! `hash` of the event before it (64 zeros for the first), and its own `hash`:
//!
//! ```text
//! hash = lowercase hex( SHA-256( UTF-8 bytes of the canonical serialization ) )
//! ```
//!
//! The canonical serialization is a compact JSON array (no whitespace) of these fields,
//! in this order, absent values as `null`:
//!
//! ```text
//! [seq, at, event_id, event_name, action, outcome, actor, role, site, client_addr,
//!  patient_id, study_uid, exam_id, detail, prev_hash]
//! ```
//!
//! `seq`, `at` (ms since the Unix epoch), `outcome` (0, 4, 8, 12) and `exam_id` are JSON
//! integers; every other field is a JSON string. `detail` is hashed as the JSON *text*
//! stored in the column, embedded as a JSON string (so `{"a":1}` enters the array as
//! `"{\"a\":1}"`), never re-serialized: a verifier must not depend on how some JSON
//! library orders keys or prints numbers. Strings are written as serde_json writes them:
//! UTF-8 as is, with only `"`, `\`, and control characters escaped (`\b \f \n \r \t`,
//! others as lowercase `\u00xx`). That is byte-for-byte what Python's
//! `json.dumps(fields, separators=(",", ":"), ensure_ascii=False)` produces, so an
//! exported trail (JSON lines of [`Event`]) can be checked without this code.
//!
//! # Appending
//!
//! The table `audit_head` holds the last `seq` and `hash`. An appending transaction first
//! runs `UPDATE audit_head SET seq = seq + 1 ... RETURNING seq, hash`: that statement takes
//! the head's row lock on PostgreSQL (the write lock on SQLite), so appenders in any number
//! of hub processes take turns, and it hands out the next `seq` together with the hash to
//! link to. The event is inserted and the head's hash set to the new event's, all in the
//! same transaction: an append that rolls back leaves neither a row nor a gap.
//!
//! # What verification can tell
//!
//! [`verify`] recomputes every hash and follows the links. An edited row no longer
//! matches its hash ([`ProblemKind::Altered`]); a deleted row leaves a gap in `seq`
//! ([`ProblemKind::Missing`]); a row rewritten *with* a recomputed hash, or rows moved
//! around, break a link ([`ProblemKind::Reordered`]); deleting the newest rows leaves the
//! head pointing past the end ([`ProblemKind::HeadMismatch`]). What it cannot tell: an
//! attacker who rewrites every row from some point on *and* the head. Against that the
//! head's `(seq, hash)` must be kept somewhere else too (an export, a log line); any later
//! verification then has to reach the same hash at that `seq`.

use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::db::{now_ms, on_db, Db};
use crate::{Result, StorageError};

/// The `prev_hash` of the first event: there is nothing before it.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// [`list`] never returns more than this many events at once, whatever the filter asks:
/// the caller pages with [`Filter::after_seq`].
pub const MAX_LIST_LIMIT: i64 = 10_000;

/// [`verify`] keeps this many problems; past that the chain is plainly broken and a
/// longer list would only grow the report.
pub const MAX_PROBLEMS: usize = 100;

/// Rows [`verify`] reads per query: bounded memory whatever the length of the trail.
const VERIFY_PAGE: i64 = 1_000;

/// ATNA EventActionCode: what the actor did to the object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Create (`C`).
    Create,
    /// Read, view, print, query (`R`).
    Read,
    /// Update (`U`).
    Update,
    /// Delete (`D`).
    Delete,
    /// Execute an application function, e.g. log in (`E`).
    Execute,
}

impl Action {
    /// Stored (ATNA) code.
    pub fn code(self) -> &'static str {
        match self {
            Action::Create => "C",
            Action::Read => "R",
            Action::Update => "U",
            Action::Delete => "D",
            Action::Execute => "E",
        }
    }

    /// Parse a stored code; `None` for anything ATNA does not define.
    pub fn parse(code: &str) -> Option<Self> {
        match code {
            "C" => Some(Action::Create),
            "R" => Some(Action::Read),
            "U" => Some(Action::Update),
            "D" => Some(Action::Delete),
            "E" => Some(Action::Execute),
            _ => None,
        }
    }
}

/// ATNA EventOutcomeIndicator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Success (0).
    Success,
    /// Minor failure: the action was restarted or partly done (4).
    MinorFailure,
    /// Serious failure: the action was not done, e.g. refused (8).
    SeriousFailure,
    /// Major failure: the action made the system unavailable (12).
    MajorFailure,
}

impl Outcome {
    /// Stored (ATNA) code.
    pub fn code(self) -> i64 {
        match self {
            Outcome::Success => 0,
            Outcome::MinorFailure => 4,
            Outcome::SeriousFailure => 8,
            Outcome::MajorFailure => 12,
        }
    }

    /// Parse a stored code; `None` for anything ATNA does not define.
    pub fn from_code(code: i64) -> Option<Self> {
        match code {
            0 => Some(Outcome::Success),
            4 => Some(Outcome::MinorFailure),
            8 => Some(Outcome::SeriousFailure),
            12 => Some(Outcome::MajorFailure),
            _ => None,
        }
    }
}

/// An audit event id: a code of the DCM coding scheme (DICOM PS3.16 CID 400) and its
/// display name, both stored, so an export reads without a code table.
///
/// Finer distinctions ATNA carries as an EventTypeCode (e.g. 110122 Login vs. 110123
/// Logout under User Authentication) have no column; callers put them in
/// [`NewEvent::detail`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventType {
    /// DCM code, e.g. `110112`.
    pub id: &'static str,
    /// DCM code meaning, e.g. `Query`.
    pub name: &'static str,
}

impl EventType {
    /// The hub started or stopped.
    pub const APPLICATION_ACTIVITY: EventType = EventType {
        id: "110100",
        name: "Application Activity",
    };
    /// Someone read, exported or verified this audit trail.
    pub const AUDIT_LOG_USED: EventType = EventType {
        id: "110101",
        name: "Audit Log Used",
    };
    /// Instances were viewed, created (ingest) or deleted.
    pub const DICOM_INSTANCES_ACCESSED: EventType = EventType {
        id: "110103",
        name: "DICOM Instances Accessed",
    };
    /// Instances were sent or retrieved (WADO, C-MOVE, gateway delivery).
    pub const DICOM_INSTANCES_TRANSFERRED: EventType = EventType {
        id: "110104",
        name: "DICOM Instances Transferred",
    };
    /// Data left the hub's control (download, media).
    pub const EXPORT: EventType = EventType {
        id: "110106",
        name: "Export",
    };
    /// Data entered from outside the hub's network (media, manual upload).
    pub const IMPORT: EventType = EventType {
        id: "110107",
        name: "Import",
    };
    /// A patient record was created, read, changed or deleted.
    ///
    /// Report actions use this id too, with the exam and study set and the report
    /// action in `detail` (Create = draft, Update = sign or amend, Read = view): a report
    /// is part of the patient record in ATNA's terms, and a standard code keeps exported
    /// trails meaningful to any ATNA audit repository, which a product-private id would not.
    pub const PATIENT_RECORD: EventType = EventType {
        id: "110110",
        name: "Patient Record",
    };
    /// A search (QIDO-RS, C-FIND, worklist).
    pub const QUERY: EventType = EventType {
        id: "110112",
        name: "Query",
    };
    /// Something security-relevant went wrong or was refused (bad key, tampering found).
    pub const SECURITY_ALERT: EventType = EventType {
        id: "110113",
        name: "Security Alert",
    };
    /// Log in or log out, successful or not.
    pub const USER_AUTHENTICATION: EventType = EventType {
        id: "110114",
        name: "User Authentication",
    };
    /// A user's role changed.
    pub const SECURITY_ROLES_CHANGED: EventType = EventType {
        id: "110136",
        name: "Security Roles Changed",
    };
    /// A user's other security attributes changed (sites, password, lock, keys).
    pub const USER_SECURITY_ATTRIBUTES_CHANGED: EventType = EventType {
        id: "110137",
        name: "User Security Attributes Changed",
    };

    /// Every event id the hub records.
    pub const ALL: [EventType; 12] = [
        EventType::APPLICATION_ACTIVITY,
        EventType::AUDIT_LOG_USED,
        EventType::DICOM_INSTANCES_ACCESSED,
        EventType::DICOM_INSTANCES_TRANSFERRED,
        EventType::EXPORT,
        EventType::IMPORT,
        EventType::PATIENT_RECORD,
        EventType::QUERY,
        EventType::SECURITY_ALERT,
        EventType::USER_AUTHENTICATION,
        EventType::SECURITY_ROLES_CHANGED,
        EventType::USER_SECURITY_ATTRIBUTES_CHANGED,
    ];

    /// The known event type with this id.
    pub fn by_id(id: &str) -> Option<EventType> {
        EventType::ALL.into_iter().find(|e| e.id == id)
    }
}

/// An event to record, as callers fill it in.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    /// What kind of event.
    pub event: EventType,
    /// What was done.
    pub action: Action,
    /// How it ended.
    pub outcome: Outcome,
    /// Who: `user:<username>`, `gateway:<key id>` or `system`.
    pub actor: String,
    /// The actor's role when it acted (`admin`, `reader`, ..., `gateway`, `system`): kept
    /// because roles change and the trail must say what the actor was allowed then.
    pub role: String,
    /// The actor's site, if it has one.
    pub site: Option<String>,
    /// Network address the request came from.
    pub client_addr: Option<String>,
    /// Patient whose data was touched.
    pub patient_id: Option<String>,
    /// Study touched.
    pub study_uid: Option<String>,
    /// Exam touched.
    pub exam_id: Option<i64>,
    /// Anything else worth keeping (query parameters, counts, reasons); stored as JSON text.
    pub detail: Option<serde_json::Value>,
}

impl NewEvent {
    /// An event with only the required fields; set the others with struct update syntax.
    pub fn new(
        event: EventType,
        action: Action,
        outcome: Outcome,
        actor: impl Into<String>,
        role: impl Into<String>,
    ) -> Self {
        NewEvent {
            event,
            action,
            outcome,
            actor: actor.into(),
            role: role.into(),
            site: None,
            client_addr: None,
            patient_id: None,
            study_uid: None,
            exam_id: None,
            detail: None,
        }
    }
}

/// A recorded event, as stored.
///
/// Codes stay in their stored form (`action` `"C"`, `outcome` `0`, ...) rather than being
/// parsed back into [`Action`] and [`Outcome`]: the trail is evidence, and reading it must
/// neither fail nor tidy up on a value this build does not know. Serialized, one per
/// line, it is the export format.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// Position in the chain, from 1, without gaps.
    pub seq: i64,
    /// When (ms since the Unix epoch). Order by `seq`: clocks of several hub processes
    /// need not agree.
    pub at: i64,
    /// DCM event id.
    pub event_id: String,
    /// DCM event name.
    pub event_name: String,
    /// ATNA action code (`C`, `R`, `U`, `D`, `E`).
    pub action: String,
    /// ATNA outcome indicator (0, 4, 8, 12).
    pub outcome: i64,
    /// Who.
    pub actor: String,
    /// The actor's role then.
    pub role: String,
    /// The actor's site.
    pub site: Option<String>,
    /// Network address of the request.
    pub client_addr: Option<String>,
    /// Patient concerned.
    pub patient_id: Option<String>,
    /// Study concerned.
    pub study_uid: Option<String>,
    /// Exam concerned.
    pub exam_id: Option<i64>,
    /// Extra detail. Stored text that is not JSON (only tampering puts it there) comes
    /// back as a JSON string holding that text, so the rest of the trail stays readable.
    pub detail: Option<serde_json::Value>,
    /// Hash of the event before.
    pub prev_hash: String,
    /// Hash of this event (see the module documentation).
    pub hash: String,
}

/// One row of `audit_events` exactly as stored: what hashes are computed over.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored {
    pub(crate) seq: i64,
    pub(crate) at: i64,
    pub(crate) event_id: String,
    pub(crate) event_name: String,
    pub(crate) action: String,
    pub(crate) outcome: i64,
    pub(crate) actor: String,
    pub(crate) role: String,
    pub(crate) site: Option<String>,
    pub(crate) client_addr: Option<String>,
    pub(crate) patient_id: Option<String>,
    pub(crate) study_uid: Option<String>,
    pub(crate) exam_id: Option<i64>,
    pub(crate) detail: Option<String>,
    pub(crate) prev_hash: String,
    pub(crate) hash: String,
}

impl Stored {
    /// The row to insert for `event` at position `seq`, linked to `prev_hash`.
    pub(crate) fn new(event: &NewEvent, seq: i64, at: i64, prev_hash: String) -> Self {
        let mut row = Stored {
            seq,
            at,
            event_id: event.event.id.to_owned(),
            event_name: event.event.name.to_owned(),
            action: event.action.code().to_owned(),
            outcome: event.outcome.code(),
            actor: event.actor.clone(),
            role: event.role.clone(),
            site: event.site.clone(),
            client_addr: event.client_addr.clone(),
            patient_id: event.patient_id.clone(),
            study_uid: event.study_uid.clone(),
            exam_id: event.exam_id,
            // Serialized once here; from now on the text is what gets hashed and stored.
            detail: event.detail.as_ref().map(|d| d.to_string()),
            prev_hash,
            hash: String::new(),
        };
        row.hash = row.compute_hash();
        row
    }

    /// The canonical serialization (see the module documentation).
    fn canonical(&self) -> String {
        serde_json::json!([
            self.seq,
            self.at,
            self.event_id,
            self.event_name,
            self.action,
            self.outcome,
            self.actor,
            self.role,
            self.site,
            self.client_addr,
            self.patient_id,
            self.study_uid,
            self.exam_id,
            self.detail,
            self.prev_hash,
        ])
        .to_string()
    }

    /// What `hash` should be for the other fields.
    fn compute_hash(&self) -> String {
        let digest = Sha256::digest(self.canonical().as_bytes());
        hex::encode(digest)
    }

    fn into_event(self) -> Event {
        let detail = self
            .detail
            .map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)));
        Event {
            seq: self.seq,
            at: self.at,
            event_id: self.event_id,
            event_name: self.event_name,
            action: self.action,
            outcome: self.outcome,
            actor: self.actor,
            role: self.role,
            site: self.site,
            client_addr: self.client_addr,
            patient_id: self.patient_id,
            study_uid: self.study_uid,
            exam_id: self.exam_id,
            detail,
            prev_hash: self.prev_hash,
            hash: self.hash,
        }
    }
}

/// The stored columns, in [`Stored`] order; a macro so queries stay literal strings.
macro_rules! audit_columns {
    () => {
        "seq, at, event_id, event_name, action, outcome, actor, role, site, client_addr, \
         patient_id, study_uid, exam_id, detail, prev_hash, hash"
    };
}

fn stored<R: Row>(r: &R) -> Result<Stored>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(Stored {
        seq: r.try_get("seq")?,
        at: r.try_get("at")?,
        event_id: r.try_get("event_id")?,
        event_name: r.try_get("event_name")?,
        action: r.try_get("action")?,
        outcome: r.try_get("outcome")?,
        actor: r.try_get("actor")?,
        role: r.try_get("role")?,
        site: r.try_get("site")?,
        client_addr: r.try_get("client_addr")?,
        patient_id: r.try_get("patient_id")?,
        study_uid: r.try_get("study_uid")?,
        exam_id: r.try_get("exam_id")?,
        detail: r.try_get("detail")?,
        prev_hash: r.try_get("prev_hash")?,
        hash: r.try_get("hash")?,
    })
}

/// Append an event inside the caller's open transaction, so that the audit row commits
/// (or rolls back) together with the change it records.
///
/// `audit_append!(&mut *tx, &new_event, at).await?` evaluates to the event's `seq`; the
/// expansion is an `async` block returning `Result<i64>`. A macro rather than a function
/// because the connection type differs per backend, as with `record_event!`.
///
/// Call it as the *last* statement before commit: from its first statement on, the
/// transaction holds the chain's head (row lock on PostgreSQL), and every other auditing
/// transaction of every hub process waits for the commit. Taking the head last also means
/// no transaction ever waits for another lock while holding it, so it cannot deadlock.
macro_rules! audit_append {
    ($conn:expr, $event:expr, $at:expr) => {
        async {
            let conn = $conn;
            let event: &$crate::audit::NewEvent = $event;
            let at: i64 = $at;
            // First, so appenders queue on the head before doing anything else.
            let head: Option<(i64, String)> = sqlx::query_as(
                "UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash",
            )
            .fetch_optional(&mut *conn)
            .await?;
            let Some((seq, prev_hash)) = head else {
                return Err($crate::StorageError::Corrupt(
                    "audit_head has no row: the audit chain cannot be extended".to_owned(),
                ));
            };
            let row = $crate::audit::Stored::new(event, seq, at, prev_hash);
            sqlx::query(
                "INSERT INTO audit_events (seq, at, event_id, event_name, action, outcome, actor, \
                 role, site, client_addr, patient_id, study_uid, exam_id, detail, prev_hash, hash) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)",
            )
            .bind(row.seq)
            .bind(row.at)
            .bind(&row.event_id)
            .bind(&row.event_name)
            .bind(&row.action)
            .bind(row.outcome)
            .bind(&row.actor)
            .bind(&row.role)
            .bind(&row.site)
            .bind(&row.client_addr)
            .bind(&row.patient_id)
            .bind(&row.study_uid)
            .bind(row.exam_id)
            .bind(&row.detail)
            .bind(&row.prev_hash)
            .bind(&row.hash)
            .execute(&mut *conn)
            .await?;
            sqlx::query("UPDATE audit_head SET hash = $1 WHERE id = 1")
                .bind(&row.hash)
                .execute(&mut *conn)
                .await?;
            Ok::<i64, $crate::StorageError>(seq)
        }
    };
}
pub(crate) use audit_append;

/// Append an event in a transaction of its own, for actions that change nothing else
/// (reads, queries, logins). Returns its `seq`.
pub async fn append(db: &Db, event: &NewEvent) -> Result<i64> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let seq = audit_append!(&mut *tx, event, now).await?;
        tx.commit().await?;
        Ok(seq)
    })
}

/// Which events [`list`] returns; `None` fields do not filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filter {
    /// Only this patient's.
    pub patient_id: Option<String>,
    /// Only this study's.
    pub study_uid: Option<String>,
    /// Only this exam's.
    pub exam_id: Option<i64>,
    /// Only this actor's.
    pub actor: Option<String>,
    /// At or after this time (ms since the Unix epoch).
    pub from_ms: Option<i64>,
    /// Before this time (exclusive, so consecutive ranges do not overlap).
    pub to_ms: Option<i64>,
    /// Only events after this `seq`: the last `seq` of the previous page.
    pub after_seq: Option<i64>,
    /// At most this many events (capped at [`MAX_LIST_LIMIT`]).
    pub limit: i64,
}

impl Default for Filter {
    /// No filter, one page of 1000.
    fn default() -> Self {
        Filter {
            patient_id: None,
            study_uid: None,
            exam_id: None,
            actor: None,
            from_ms: None,
            to_ms: None,
            after_seq: None,
            limit: 1_000,
        }
    }
}

enum Param<'a> {
    Text(&'a str),
    Int(i64),
}

/// Add ` AND <column_op> $n` to `sql`, `$n` numbering `p` among `params`.
fn condition<'a>(sql: &mut String, params: &mut Vec<Param<'a>>, column_op: &str, p: Param<'a>) {
    params.push(p);
    sql.push_str(&format!(" AND {column_op} ${}", params.len()));
}

/// Events matching `filter`, oldest first (by `seq`).
pub async fn list(db: &Db, filter: &Filter) -> Result<Vec<Event>> {
    // Only the conditions asked for go into the SQL, so each backend can use the index on
    // that column; `($1 IS NULL OR col = $1)` would leave SQLite scanning the table.
    let mut sql = String::from(concat!(
        "SELECT ",
        audit_columns!(),
        " FROM audit_events WHERE 1 = 1"
    ));
    let mut params: Vec<Param> = Vec::new();
    if let Some(v) = &filter.patient_id {
        condition(&mut sql, &mut params, "patient_id =", Param::Text(v));
    }
    if let Some(v) = &filter.study_uid {
        condition(&mut sql, &mut params, "study_uid =", Param::Text(v));
    }
    if let Some(v) = filter.exam_id {
        condition(&mut sql, &mut params, "exam_id =", Param::Int(v));
    }
    if let Some(v) = &filter.actor {
        condition(&mut sql, &mut params, "actor =", Param::Text(v));
    }
    if let Some(v) = filter.from_ms {
        condition(&mut sql, &mut params, "at >=", Param::Int(v));
    }
    if let Some(v) = filter.to_ms {
        condition(&mut sql, &mut params, "at <", Param::Int(v));
    }
    if let Some(v) = filter.after_seq {
        condition(&mut sql, &mut params, "seq >", Param::Int(v));
    }
    params.push(Param::Int(filter.limit.clamp(0, MAX_LIST_LIMIT)));
    sql.push_str(&format!(" ORDER BY seq LIMIT ${}", params.len()));

    on_db!(db, |pool| {
        // Audited: the SQL holds only fixed column names and numbered placeholders;
        // every value is bound.
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql.as_str()));
        for p in &params {
            query = match p {
                Param::Text(s) => query.bind(*s),
                Param::Int(i) => query.bind(*i),
            };
        }
        let rows = query.fetch_all(pool).await?;
        rows.iter()
            .map(|r| stored(r).map(Stored::into_event))
            .collect()
    })
}

/// What is wrong at a point of the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum ProblemKind {
    /// The stored hash is not the hash of the row's fields: the row was edited.
    Altered,
    /// `seq` jumps: events were removed.
    Missing,
    /// `prev_hash` is not the previous event's hash: a row was rewritten with a fresh
    /// hash, or rows were moved.
    Reordered,
    /// `audit_head` disagrees with the last event: the newest events were removed (or the
    /// last one, or the head, rewritten).
    HeadMismatch,
}

/// One finding of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The first `seq` concerned (for `Missing`, the first missing one).
    pub seq: i64,
    /// What kind of tampering it looks like.
    pub kind: ProblemKind,
    /// For people: what was expected and what was found.
    pub message: String,
}

/// Result of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Events checked.
    pub checked: i64,
    /// `seq` of the head when verification started; events appended since are not checked.
    pub head_seq: i64,
    /// Hash of the head when verification started: keep it elsewhere to detect a later
    /// rewrite of everything up to it.
    pub head_hash: String,
    /// Problems in chain order, at most [`MAX_PROBLEMS`].
    pub problems: Vec<Problem>,
    /// Problems found in all, including those past [`MAX_PROBLEMS`].
    pub problems_total: i64,
}

impl Verification {
    /// Nothing wrong found.
    pub fn is_intact(&self) -> bool {
        self.problems_total == 0
    }
}

/// Collects problems up to the cap while counting all of them.
struct Findings {
    problems: Vec<Problem>,
    total: i64,
}

impl Findings {
    fn push(&mut self, seq: i64, kind: ProblemKind, message: String) {
        self.total += 1;
        if self.problems.len() < MAX_PROBLEMS {
            self.problems.push(Problem { seq, kind, message });
        }
    }
}

/// Check the whole chain: recompute every hash, follow every link, compare the end with
/// the head. Reads the trail in pages of `seq` order, never all at once, and keeps going
/// past problems so one report shows the extent of the damage.
///
/// The first problem names the first bad `seq`. Later ones are best effort: a link that
/// breaks right after a row already found altered is not reported again, since that
/// row's stored hash is untrustworthy and blaming its innocent successor would mislead.
pub async fn verify(db: &Db) -> Result<Verification> {
    verify_paged(db, VERIFY_PAGE).await
}

async fn verify_paged(db: &Db, page: i64) -> Result<Verification> {
    // The head first: everything up to it is committed (it moves in the appending
    // transaction), and events appended while we walk lie beyond it.
    let head: Option<(i64, String)> = on_db!(db, |pool| {
        sqlx::query_as("SELECT seq, hash FROM audit_head WHERE id = 1")
            .fetch_optional(pool)
            .await?
    });
    let Some((head_seq, head_hash)) = head else {
        return Err(StorageError::Corrupt(
            "audit_head has no row: nothing to verify against".to_owned(),
        ));
    };

    let mut findings = Findings {
        problems: Vec::new(),
        total: 0,
    };
    let mut checked = 0i64;
    let mut last_seq = 0i64;
    let mut last_hash = GENESIS_HASH.to_owned();
    let mut last_altered = false;
    loop {
        let rows: Vec<Stored> = on_db!(db, |pool| {
            let rows = sqlx::query(concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_events WHERE seq > $1 AND seq <= $2 ORDER BY seq LIMIT $3"
            ))
            .bind(last_seq)
            .bind(head_seq)
            .bind(page)
            .fetch_all(pool)
            .await?;
            rows.iter().map(stored).collect::<Result<Vec<_>>>()?
        });
        let Some(end) = rows.last().map(|r| r.seq) else {
            break;
        };
        for row in &rows {
            checked += 1;
            let gap = row.seq != last_seq + 1;
            if gap {
                let first = last_seq + 1;
                let last = row.seq - 1;
                findings.push(
                    first,
                    ProblemKind::Missing,
                    if first == last {
                        format!("event {first} is missing")
                    } else {
                        format!("events {first} to {last} are missing")
                    },
                );
            }
            let computed = row.compute_hash();
            let altered = computed != row.hash;
            if altered {
                findings.push(
                    row.seq,
                    ProblemKind::Altered,
                    format!(
                        "event {} was edited: its fields hash to {computed}, stored hash is {}",
                        row.seq, row.hash
                    ),
                );
            }
            // After a gap the link is broken too; the gap is the finding.
            if !gap && !last_altered && row.prev_hash != last_hash {
                findings.push(
                    row.seq,
                    ProblemKind::Reordered,
                    format!(
                        "event {} links to {}, but event {last_seq} has hash {last_hash}: \
                         one of the two was rewritten, or events were moved",
                        row.seq, row.prev_hash
                    ),
                );
            }
            last_seq = row.seq;
            last_hash.clone_from(&row.hash);
            last_altered = altered;
        }
        if end >= head_seq || (rows.len() as i64) < page {
            break;
        }
    }

    if last_seq < head_seq {
        let first = last_seq + 1;
        findings.push(
            first,
            ProblemKind::HeadMismatch,
            format!(
                "the head says the chain ends at event {head_seq}, the last event is {last_seq}: \
                 events {first} to {head_seq} were removed"
            ),
        );
    } else if last_hash != head_hash {
        findings.push(
            head_seq,
            ProblemKind::HeadMismatch,
            format!(
                "the head records hash {head_hash} for event {head_seq}, the event has {last_hash}: \
                 the last event or the head was rewritten"
            ),
        );
    }

    Ok(Verification {
        checked,
        head_seq,
        head_hash,
        problems: findings.problems,
        problems_total: findings.total,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Pool;

    /// A migrated database, and what must outlive it (the SQLite file's directory).
    struct TestDb {
        db: Db,
        url: String,
        _dir: Option<tempfile::TempDir>,
    }

    async fn sqlite_db() -> TestDb {
        let dir = tempfile::Builder::new()
            .prefix("audit-")
            .tempdir()
            .expect("temp dir");
        let url = format!("sqlite://{}", dir.path().join("hub.db").display());
        let db = Db::connect(&url, 4).await.expect("connect sqlite");
        db.migrate().await.expect("migrate sqlite");
        TestDb {
            db,
            url,
            _dir: Some(dir),
        }
    }

    /// URL of a fresh, migrated database on the test server, or `None` without one.
    async fn pg_url() -> Option<String> {
        let Ok(admin) = std::env::var("HUB_TEST_PG_URL") else {
            eprintln!("HUB_TEST_PG_URL is not set: skipping the PostgreSQL variant");
            return None;
        };
        let name = format!("a_{}", uuid::Uuid::new_v4().simple());
        let pool = sqlx::PgPool::connect(&admin).await.expect("connect admin");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&pool)
            .await
            .expect("create database");
        pool.close().await;
        let base = admin.rsplit_once('/').map(|(b, _)| b).unwrap_or(&admin);
        let url = format!("{base}/{name}");
        let db = Db::connect(&url, 2).await.expect("connect pg");
        db.migrate().await.expect("migrate pg");
        db.close().await;
        Some(url)
    }

    async fn pg_db() -> Option<TestDb> {
        let url = pg_url().await?;
        let db = Db::connect(&url, 4).await.expect("connect pg");
        Some(TestDb {
            db,
            url,
            _dir: None,
        })
    }

    /// Run a scenario on SQLite and, when the test server is there, on PostgreSQL.
    macro_rules! on_both {
        ($scenario:ident) => {
            mod $scenario {
                #[tokio::test]
                async fn sqlite() {
                    let t = super::sqlite_db().await;
                    super::$scenario(&t.db).await;
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(t) = super::pg_db().await {
                        super::$scenario(&t.db).await;
                        t.db.close().await;
                    }
                }
            }
        };
    }

    fn event(n: i64) -> NewEvent {
        NewEvent {
            patient_id: Some(format!("P{}", n % 3)),
            study_uid: Some(format!("1.2.3.{n}")),
            exam_id: Some(n),
            site: Some("north".into()),
            client_addr: Some("10.0.0.7".into()),
            detail: Some(serde_json::json!({"n": n, "note": "línea\n\"quoted\""})),
            ..NewEvent::new(
                EventType::DICOM_INSTANCES_ACCESSED,
                Action::Read,
                Outcome::Success,
                format!("user:u{}", n % 2),
                "reader",
            )
        }
    }

    async fn append_n(db: &Db, n: i64) {
        for i in 1..=n {
            assert_eq!(append(db, &event(i)).await.expect("append"), i);
        }
    }

    /// Let the test play the attacker with database rights: drop the append-only guard.
    async fn drop_guards(db: &Db) {
        match &db.pool {
            Pool::Sqlite(pool) => {
                for sql in [
                    "DROP TRIGGER audit_events_no_update",
                    "DROP TRIGGER audit_events_no_delete",
                ] {
                    sqlx::query(sql).execute(pool).await.expect("drop trigger");
                }
            }
            Pool::Postgres(pool) => {
                sqlx::query("ALTER TABLE audit_events DISABLE TRIGGER audit_events_no_change")
                    .execute(pool)
                    .await
                    .expect("disable trigger");
            }
        }
    }

    async fn row(db: &Db, seq: i64) -> Stored {
        on_db!(db, |pool| {
            let r = sqlx::query(concat!(
                "SELECT ",
                audit_columns!(),
                " FROM audit_events WHERE seq = $1"
            ))
            .bind(seq)
            .fetch_one(pool)
            .await
            .expect("select row");
            stored(&r).expect("decode row")
        })
    }

    /// Overwrite every column of row `seq` but `seq` itself with `content`.
    async fn overwrite(db: &Db, seq: i64, content: &Stored) {
        on_db!(db, |pool| {
            sqlx::query(
                "UPDATE audit_events SET at = $1, event_id = $2, event_name = $3, action = $4, \
                 outcome = $5, actor = $6, role = $7, site = $8, client_addr = $9, patient_id = $10, \
                 study_uid = $11, exam_id = $12, detail = $13, prev_hash = $14, hash = $15 WHERE seq = $16",
            )
            .bind(content.at)
            .bind(&content.event_id)
            .bind(&content.event_name)
            .bind(&content.action)
            .bind(content.outcome)
            .bind(&content.actor)
            .bind(&content.role)
            .bind(&content.site)
            .bind(&content.client_addr)
            .bind(&content.patient_id)
            .bind(&content.study_uid)
            .bind(content.exam_id)
            .bind(&content.detail)
            .bind(&content.prev_hash)
            .bind(&content.hash)
            .bind(seq)
            .execute(pool)
            .await
            .expect("overwrite row");
        })
    }

    async fn delete(db: &Db, seq: i64) {
        on_db!(db, |pool| {
            sqlx::query("DELETE FROM audit_events WHERE seq = $1")
                .bind(seq)
                .execute(pool)
                .await
                .expect("delete row");
        })
    }

    fn kinds(v: &Verification) -> Vec<(i64, ProblemKind)> {
        v.problems.iter().map(|p| (p.seq, p.kind)).collect()
    }

    #[test]
    fn serialization_is_pinned() {
        // Changing the serialization would make every stored chain fail verification:
        // this hash was computed independently (Python, json.dumps with
        // separators=(",", ":"), ensure_ascii=False, then hashlib.sha256).
        let row = Stored::new(
            &NewEvent {
                site: Some("north".into()),
                patient_id: Some("P\u{1}ä".into()),
                exam_id: Some(7),
                // Keys in sorted order: serde_json's feature `preserve_order` (switched on
                // by other crates of the workspace) decides whether maps keep insertion
                // order, and this pin is about our serialization, not that.
                detail: Some(serde_json::json!({"a": "x\ty/", "b": [1, 2.5]})),
                ..NewEvent::new(
                    EventType::QUERY,
                    Action::Execute,
                    Outcome::SeriousFailure,
                    "user:alice",
                    "admin",
                )
            },
            3,
            1_700_000_000_123,
            GENESIS_HASH.to_owned(),
        );
        assert_eq!(
            row.canonical(),
            r#"[3,1700000000123,"110112","Query","E",8,"user:alice","admin","north",null,"P\u0001ä",null,7,"{\"a\":\"x\\ty/\",\"b\":[1,2.5]}","0000000000000000000000000000000000000000000000000000000000000000"]"#
        );
        assert_eq!(row.hash, PINNED_HASH);
    }

    const PINNED_HASH: &str = "fa6593e3a2d9c8b43b0413ff9bea48fd293da2c61d205b7e88296f1deab36432";

    #[test]
    fn codes_round_trip() {
        for a in [
            Action::Create,
            Action::Read,
            Action::Update,
            Action::Delete,
            Action::Execute,
        ] {
            assert_eq!(Action::parse(a.code()), Some(a));
        }
        for o in [
            Outcome::Success,
            Outcome::MinorFailure,
            Outcome::SeriousFailure,
            Outcome::MajorFailure,
        ] {
            assert_eq!(Outcome::from_code(o.code()), Some(o));
        }
        assert_eq!(
            EventType::by_id("110114"),
            Some(EventType::USER_AUTHENTICATION)
        );
        assert_eq!(EventType::by_id("999"), None);
    }

    async fn append_and_list(db: &Db) {
        // Explicit times through the in-transaction macro, to test time ranges.
        for (i, at) in [(1, 1_000), (2, 2_000), (3, 3_000), (4, 4_000), (5, 5_000)] {
            let e = event(i);
            let seq = on_db!(db, |pool| {
                let mut tx = pool.begin().await.expect("begin");
                let seq = audit_append!(&mut *tx, &e, at).await.expect("append");
                tx.commit().await.expect("commit");
                seq
            });
            assert_eq!(seq, i);
        }
        let login = NewEvent {
            detail: Some(serde_json::json!({"type": "110122 Login"})),
            ..NewEvent::new(
                EventType::USER_AUTHENTICATION,
                Action::Execute,
                Outcome::MinorFailure,
                "user:mallory",
                "clinician",
            )
        };
        assert_eq!(append(db, &login).await.expect("append"), 6);

        // A rolled-back append leaves neither a row nor a gap.
        on_db!(db, |pool| {
            let mut tx = pool.begin().await.expect("begin");
            audit_append!(&mut *tx, &login, 9_999)
                .await
                .expect("append");
            tx.rollback().await.expect("rollback");
        });

        let seqs = |v: Vec<Event>| v.into_iter().map(|e| e.seq).collect::<Vec<_>>();
        let all = list(db, &Filter::default()).await.expect("list");
        assert_eq!(all.len(), 6);
        assert_eq!(all[0].event_id, "110103");
        assert_eq!(all[0].event_name, "DICOM Instances Accessed");
        assert_eq!(all[0].action, "R");
        assert_eq!(all[0].outcome, 0);
        assert_eq!(all[0].at, 1_000);
        assert_eq!(all[0].site.as_deref(), Some("north"));
        assert_eq!(all[0].detail, event(1).detail);
        assert_eq!(all[0].prev_hash, GENESIS_HASH);
        assert_eq!(all[1].prev_hash, all[0].hash);
        assert_eq!(all[5].action, "E");
        assert_eq!(all[5].outcome, 4);
        assert_eq!(all[5].patient_id, None);
        assert_eq!(all[5].exam_id, None);
        // The export format: one JSON object per event.
        let line = serde_json::to_value(&all[5]).expect("serialize");
        assert_eq!(line["seq"], 6);
        assert_eq!(line["detail"]["type"], "110122 Login");

        let f = |f: Filter| async move { seqs(list(db, &f).await.expect("list")) };
        assert_eq!(
            f(Filter {
                patient_id: Some("P1".into()),
                ..Filter::default()
            })
            .await,
            vec![1, 4]
        );
        assert_eq!(
            f(Filter {
                study_uid: Some("1.2.3.3".into()),
                ..Filter::default()
            })
            .await,
            vec![3]
        );
        assert_eq!(
            f(Filter {
                exam_id: Some(2),
                ..Filter::default()
            })
            .await,
            vec![2]
        );
        assert_eq!(
            f(Filter {
                actor: Some("user:u0".into()),
                ..Filter::default()
            })
            .await,
            vec![2, 4]
        );
        assert_eq!(
            f(Filter {
                from_ms: Some(2_000),
                to_ms: Some(4_000),
                ..Filter::default()
            })
            .await,
            vec![2, 3]
        );
        assert_eq!(
            f(Filter {
                after_seq: Some(2),
                limit: 2,
                ..Filter::default()
            })
            .await,
            vec![3, 4]
        );
        assert_eq!(
            f(Filter {
                actor: Some("user:u1".into()),
                from_ms: Some(2_000),
                ..Filter::default()
            })
            .await,
            vec![3, 5]
        );
        // Values are bound, never spliced into the SQL.
        assert_eq!(
            f(Filter {
                patient_id: Some("P1' OR '1'='1".into()),
                ..Filter::default()
            })
            .await,
            Vec::<i64>::new()
        );
        assert_eq!(
            f(Filter {
                limit: -1,
                ..Filter::default()
            })
            .await,
            Vec::<i64>::new()
        );

        let v = verify(db).await.expect("verify");
        assert!(v.is_intact(), "{v:?}");
        assert_eq!((v.checked, v.head_seq), (6, 6));
        assert_eq!(v.head_hash, all[5].hash);
    }
    on_both!(append_and_list);

    async fn empty_chain_verifies(db: &Db) {
        let v = verify(db).await.expect("verify");
        assert!(v.is_intact(), "{v:?}");
        assert_eq!((v.checked, v.head_seq), (0, 0));
        assert_eq!(v.head_hash, GENESIS_HASH);
    }
    on_both!(empty_chain_verifies);

    async fn guards_refuse_changes(db: &Db) {
        append_n(db, 2).await;
        let update_refused = on_db!(db, |pool| {
            sqlx::query("UPDATE audit_events SET actor = 'x' WHERE seq = 1")
                .execute(pool)
                .await
                .is_err()
        });
        assert!(update_refused);
        let delete_refused = on_db!(db, |pool| {
            sqlx::query("DELETE FROM audit_events WHERE seq = 2")
                .execute(pool)
                .await
                .is_err()
        });
        assert!(delete_refused);
        assert!(verify(db).await.expect("verify").is_intact());
    }
    on_both!(guards_refuse_changes);

    async fn edited_row_is_named(db: &Db) {
        append_n(db, 6).await;
        drop_guards(db).await;
        let mut r = row(db, 3).await;
        r.patient_id = Some("SOMEONE-ELSE".into());
        overwrite(db, 3, &r).await;
        // Small pages: the walk crosses page boundaries.
        let v = verify_paged(db, 2).await.expect("verify");
        assert_eq!(kinds(&v), vec![(3, ProblemKind::Altered)], "{v:?}");
        assert_eq!(v.checked, 6);
    }
    on_both!(edited_row_is_named);

    async fn rehashed_row_breaks_the_link(db: &Db) {
        append_n(db, 5).await;
        drop_guards(db).await;
        let mut r = row(db, 2).await;
        r.actor = "user:nobody".into();
        r.hash = r.compute_hash();
        overwrite(db, 2, &r).await;
        let v = verify(db).await.expect("verify");
        assert_eq!(kinds(&v), vec![(3, ProblemKind::Reordered)], "{v:?}");
        assert!(v.problems[0].message.contains("event 2"));
    }
    on_both!(rehashed_row_breaks_the_link);

    async fn deleted_row_is_missing(db: &Db) {
        append_n(db, 6).await;
        drop_guards(db).await;
        delete(db, 4).await;
        let v = verify_paged(db, 3).await.expect("verify");
        assert_eq!(kinds(&v), vec![(4, ProblemKind::Missing)], "{v:?}");
        assert_eq!(v.checked, 5);

        delete(db, 1).await;
        let v = verify(db).await.expect("verify");
        assert_eq!(
            kinds(&v),
            vec![(1, ProblemKind::Missing), (4, ProblemKind::Missing)],
            "{v:?}"
        );
    }
    on_both!(deleted_row_is_missing);

    async fn swapped_rows_are_named(db: &Db) {
        append_n(db, 6).await;
        drop_guards(db).await;
        let (a, b) = (row(db, 3).await, row(db, 4).await);
        overwrite(db, 3, &b).await;
        overwrite(db, 4, &a).await;
        let v = verify(db).await.expect("verify");
        assert_eq!(
            kinds(&v),
            vec![
                (3, ProblemKind::Altered),
                (3, ProblemKind::Reordered),
                (4, ProblemKind::Altered),
            ],
            "{v:?}"
        );
    }
    on_both!(swapped_rows_are_named);

    async fn deleted_tail_is_head_mismatch(db: &Db) {
        append_n(db, 5).await;
        drop_guards(db).await;
        delete(db, 5).await;
        let v = verify(db).await.expect("verify");
        assert_eq!(kinds(&v), vec![(5, ProblemKind::HeadMismatch)], "{v:?}");
        assert_eq!((v.checked, v.head_seq), (4, 5));

        delete(db, 4).await;
        let v = verify(db).await.expect("verify");
        assert_eq!(kinds(&v), vec![(4, ProblemKind::HeadMismatch)], "{v:?}");
    }
    on_both!(deleted_tail_is_head_mismatch);

    async fn problems_are_capped(db: &Db) {
        append_n(db, 3).await;
        drop_guards(db).await;
        let v = verify(db).await.expect("verify");
        assert!(v.is_intact());
        // Many edited rows: each is one problem; the list stops at the cap.
        let n = MAX_PROBLEMS as i64 + 20;
        on_db!(db, |pool| {
            let mut tx = pool.begin().await.expect("begin");
            for i in 4..=n {
                audit_append!(&mut *tx, &event(i), i).await.expect("append");
            }
            tx.commit().await.expect("commit");
            sqlx::query("UPDATE audit_events SET role = 'admin'")
                .execute(pool)
                .await
                .expect("tamper");
        });
        let v = verify(db).await.expect("verify");
        assert_eq!(v.problems.len(), MAX_PROBLEMS);
        assert_eq!(v.problems_total, n);
        assert_eq!(v.checked, n);
        assert!(!v.is_intact());
    }
    on_both!(problems_are_capped);

    const TASKS: i64 = 8;
    const PER_TASK: i64 = 25;

    /// Appenders in parallel, spread over `dbs` (separate pools, like hub processes).
    async fn concurrent(dbs: Vec<Db>) {
        let mut handles = Vec::new();
        for t in 0..TASKS {
            let db = dbs[t as usize % dbs.len()].clone();
            handles.push(tokio::spawn(async move {
                let mut seqs = Vec::new();
                for i in 0..PER_TASK {
                    seqs.push(append(&db, &event(t * 1000 + i)).await.expect("append"));
                }
                seqs
            }));
        }
        let mut seqs = Vec::new();
        for h in handles {
            seqs.extend(h.await.expect("task"));
        }
        seqs.sort_unstable();
        let n = TASKS * PER_TASK;
        assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
        let listed: Vec<i64> = list(
            &dbs[0],
            &Filter {
                limit: MAX_LIST_LIMIT,
                ..Filter::default()
            },
        )
        .await
        .expect("list")
        .into_iter()
        .map(|e| e.seq)
        .collect();
        assert_eq!(listed, (1..=n).collect::<Vec<_>>());
        let v = verify_paged(&dbs[0], 17).await.expect("verify");
        assert!(v.is_intact(), "{v:?}");
        assert_eq!((v.checked, v.head_seq), (n, n));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_sqlite() {
        let t = sqlite_db().await;
        // A second pool on the same file behaves like a second process: its write turns
        // are its own, SQLite's lock is shared.
        let other = Db::connect(&t.url, 4).await.expect("connect");
        concurrent(vec![t.db.clone(), other]).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_appends_postgres() {
        let Some(url) = pg_url().await else {
            return;
        };
        let a = Db::connect(&url, 4).await.expect("connect");
        let b = Db::connect(&url, 4).await.expect("connect");
        concurrent(vec![a.clone(), b.clone()]).await;
        a.close().await;
        b.close().await;
    }
}
