//! Accounts of a test's hub: sites, people and gateway keys, created in its database
//! before any process starts (so a gateway can hold its key while the hub is still down).
//!
//! Helpers that fetch from a hub ([`crate::get_json`], [`crate::retrieve_parts`],
//! [`crate::stow`]) act as the county reader (or the named site's gateway) of whichever
//! test the URL's origin belongs to: each started hub registers its origin here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::{Context, Result};
use storage::accounts::{Grade, NewUser, Role, SiteKind, Specialty};
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::sessions::{NewSession, SessionKind};
use storage::Db;

/// Township sites every test has.
pub const SITES: [&str; 3] = ["local", "township-a", "township-b"];

/// Password of every fixture account.
pub const PASSWORD: &str = "correct-horse-battery";

/// Credentials of one test's hub.
#[derive(Debug, Clone)]
pub struct Accounts {
    /// Bearer token of the user `admin`.
    pub admin: String,
    /// Bearer token of `reader`: a senior county reader of every specialty.
    pub reader: String,
    /// Gateway key per township site.
    pub gateway_keys: HashMap<String, String>,
}

impl Accounts {
    /// The gateway key of a site.
    pub fn key(&self, site: &str) -> Result<&str> {
        self.gateway_keys
            .get(site)
            .map(String::as_str)
            .with_context(|| format!("no gateway key for site {site}"))
    }
}

fn fixture_event() -> NewEvent {
    NewEvent::new(
        EventType::USER_SECURITY_ATTRIBUTES_CHANGED,
        Action::Create,
        Outcome::Success,
        "test-fixture",
        "system",
    )
}

/// Create a user directly in the database and return a bearer token for them.
pub async fn create_user(db: &Db, new: &NewUser) -> Result<String> {
    let hash = access::credentials::hash_password(PASSWORD)?;
    let user = storage::accounts::create_user(db, new, &hash, &fixture_event()).await?;
    session_for(db, user.id, storage::now_ms() + 3_600_000).await
}

/// A bearer token for an existing user, expiring at `expires_at` (ms).
pub async fn session_for(db: &Db, user_id: i64, expires_at: i64) -> Result<String> {
    let token = access::credentials::new_session_token();
    let token_hash = access::credentials::digest(&token);
    storage::sessions::create_session(
        db,
        &NewSession {
            token_hash: &token_hash,
            user_id,
            kind: SessionKind::Bearer,
            client_addr: None,
            expires_at,
        },
        &fixture_event(),
    )
    .await?;
    Ok(token)
}

/// A gateway key for a site, created directly in the database.
pub async fn create_gateway_key(db: &Db, site: &str) -> Result<String> {
    let (id, key, key_hash) = access::credentials::new_gateway_key();
    storage::sessions::create_gateway_key(
        db,
        &id,
        site,
        &key_hash,
        "test",
        "test-fixture",
        &fixture_event(),
    )
    .await?;
    Ok(key)
}

/// A user of the given role without specialties (admin, technician, clinician).
pub fn person(username: &str, role: Role, sites: &[&str]) -> NewUser {
    NewUser {
        username: username.into(),
        display_name: username.into(),
        role,
        specialties: Vec::new(),
        grade: None,
        sites: sites.iter().map(|s| s.to_string()).collect(),
    }
}

/// A county reader.
pub fn reader(username: &str, specialties: &[Specialty], grade: Grade) -> NewUser {
    NewUser {
        username: username.into(),
        display_name: username.into(),
        role: Role::Reader,
        specialties: specialties.to_vec(),
        grade: Some(grade),
        sites: Vec::new(),
    }
}

/// Sites, `admin`, `reader` and a gateway key per township site.
pub async fn create_fixture(db: &Db) -> Result<Accounts> {
    storage::accounts::create_site(
        db,
        "county",
        "县人民医院",
        SiteKind::County,
        &fixture_event(),
    )
    .await?;
    for site in SITES {
        storage::accounts::create_site(db, site, site, SiteKind::Township, &fixture_event())
            .await?;
    }
    let admin = create_user(db, &person("admin", Role::Admin, &[])).await?;
    let reader = create_user(db, &reader("reader", Specialty::ALL, Grade::Senior)).await?;
    let mut gateway_keys = HashMap::new();
    for site in SITES {
        gateway_keys.insert(site.to_string(), create_gateway_key(db, site).await?);
    }
    Ok(Accounts {
        admin,
        reader,
        gateway_keys,
    })
}

fn registry() -> &'static Mutex<HashMap<String, Arc<Accounts>>> {
    static REGISTRY: OnceLock<Mutex<HashMap<String, Arc<Accounts>>>> = OnceLock::new();
    REGISTRY.get_or_init(|| Mutex::new(HashMap::new()))
}

/// `scheme://host:port` of a URL.
fn origin(url: &str) -> &str {
    let after_scheme = url.find("://").map(|i| i + 3).unwrap_or(0);
    match url[after_scheme..].find('/') {
        Some(i) => &url[..after_scheme + i],
        None => url,
    }
}

/// Remember whose accounts a server at `url` uses.
pub fn register(url: &str, accounts: Arc<Accounts>) {
    if let Ok(mut r) = registry().lock() {
        r.insert(origin(url).to_string(), accounts);
    }
}

/// The accounts of the server at `url`, if a test started it.
pub fn for_url(url: &str) -> Option<Arc<Accounts>> {
    registry().lock().ok()?.get(origin(url)).cloned()
}
