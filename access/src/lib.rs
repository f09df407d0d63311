//! Who may do what: credentials, the authorization policy and the audit of reads.
//!
//! The hub and viewer-api wrap their whole application in [`guard`]; it authenticates
//! the caller (session cookie, bearer token or gateway key), applies [`policy`] to the
//! route family and hands the handlers a [`Caller`]. Handlers never decide on roles
//! themselves: they ask [`policy::read_scope`] / [`policy::store_site`].

pub mod credentials;
mod error;
mod guard;
pub mod policy;
pub mod proxy;
mod recent;
pub mod session;

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::scope::VisibleStudy;
use storage::Db;

pub use error::AccessError;
pub use guard::{guard, Caller};
pub use policy::Principal;

/// Settings of logins and sessions.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct AccessConfig {
    /// Lifetime of a web UI session, hours.
    pub session_hours: u64,
    /// Lifetime of an API bearer token, hours.
    pub token_hours: u64,
    /// Wrong passwords in a row before the account is locked for a while.
    pub max_failed_logins: u32,
    /// First lock duration, seconds; doubles with each further failure, up to an hour.
    pub lock_secs: u64,
    /// Mark the session cookie `Secure` (set when the hub serves HTTPS or sits behind an
    /// HTTPS proxy).
    pub secure_cookies: bool,
    /// Reverse proxies (addresses or networks) whose `X-Forwarded-For` names the
    /// client recorded in the audit trail; empty: the connection's peer is the client.
    #[serde(
        deserialize_with = "proxy::deserialize_nets",
        serialize_with = "proxy::serialize_nets"
    )]
    pub trusted_proxies: Vec<ipnet::IpNet>,
}

impl Default for AccessConfig {
    fn default() -> Self {
        AccessConfig {
            session_hours: 12,
            token_hours: 12,
            max_failed_logins: 5,
            lock_secs: 60,
            secure_cookies: false,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Name of the web UI's session cookie.
pub const SESSION_COOKIE: &str = "hub_session";

/// Shared state of the guard and the session routes.
pub struct Access {
    /// The accounts database.
    pub db: Db,
    /// Login and session settings.
    pub config: AccessConfig,
    /// When each gateway key was last marked used by this process, so that marking
    /// costs one write a minute and not one per request.
    key_touched: Mutex<HashMap<String, Instant>>,
    /// Sessions found live in the last moments (see [`recent`]).
    recent: recent::RecentSessions,
}

impl Access {
    /// State over the given database.
    pub fn new(db: Db, config: AccessConfig) -> Self {
        Access {
            db,
            config,
            key_touched: Mutex::new(HashMap::new()),
            recent: recent::RecentSessions::default(),
        }
    }

    fn should_touch_key(&self, id: &str) -> bool {
        let Ok(mut touched) = self.key_touched.lock() else {
            return false;
        };
        let now = Instant::now();
        match touched.get(id) {
            Some(at) if now.duration_since(*at) < Duration::from_secs(60) => false,
            _ => {
                touched.insert(id.to_string(), now);
                true
            }
        }
    }
}

impl Caller {
    /// An audit event by this caller, to be completed with what it touched.
    pub fn event(&self, event: EventType, action: Action, outcome: Outcome) -> NewEvent {
        NewEvent {
            event,
            action,
            outcome,
            actor: self.principal.actor(),
            role: self.principal.role_name().to_string(),
            site: self.principal.home_site().map(str::to_string),
            client_addr: self.client_addr.clone(),
            patient_id: None,
            study_uid: None,
            exam_id: None,
            detail: None,
        }
    }

    /// Record that this caller read a study's data (one event per request).
    pub async fn audit_study_read(
        &self,
        db: &Db,
        event: EventType,
        study: &VisibleStudy,
        detail: serde_json::Value,
    ) -> Result<(), AccessError> {
        let event = NewEvent {
            patient_id: study.patient_id.clone(),
            study_uid: Some(study.study_uid.clone()),
            exam_id: study.exam_id,
            detail: Some(detail),
            ..self.event(event, Action::Read, Outcome::Success)
        };
        storage::audit::append(db, &event).await?;
        Ok(())
    }

    /// Record that this caller viewed a study's images (rendered images, frames). A
    /// viewer fetches them one by one, ahead of the reader: one event per reader and
    /// study every [`VIEW_AUDIT_WINDOW_MS`] in each process says who looked at which
    /// study and when, where an event per image would write hundreds of rows a minute
    /// per reader into the one audit chain every write passes through.
    pub async fn audit_study_view(
        &self,
        db: &Db,
        study: &VisibleStudy,
        detail: serde_json::Value,
    ) -> Result<(), AccessError> {
        let key = (self.principal.actor(), study.study_uid.clone());
        let now = storage::now_ms();
        let views = recent_views();
        {
            let mut seen = views.lock().unwrap_or_else(PoisonError::into_inner);
            if seen
                .get(&key)
                .is_some_and(|at| now - at < VIEW_AUDIT_WINDOW_MS)
            {
                return Ok(());
            }
            if seen.len() >= MAX_RECENT_VIEWS {
                seen.retain(|_, at| now - *at < VIEW_AUDIT_WINDOW_MS);
                if seen.len() >= MAX_RECENT_VIEWS {
                    // Forgetting only costs a few extra events.
                    seen.clear();
                }
            }
        }
        self.audit_study_read(db, EventType::DICOM_INSTANCES_ACCESSED, study, detail)
            .await?;
        // Remembered only once the event is durable: a failed write is retried by the
        // next image.
        views
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, now);
        Ok(())
    }
}

/// How long one audit event covers a reader's viewing of a study's images, ms.
pub const VIEW_AUDIT_WINDOW_MS: i64 = 5 * 60_000;

/// Bound of the remembered (reader, study) pairs; older pairs are dropped past it.
const MAX_RECENT_VIEWS: usize = 10_000;

/// When each (actor, study) last had a view event written by this process.
fn recent_views() -> &'static Mutex<HashMap<(String, String), i64>> {
    static VIEWS: OnceLock<Mutex<HashMap<(String, String), i64>>> = OnceLock::new();
    VIEWS.get_or_init(|| Mutex::new(HashMap::new()))
}
