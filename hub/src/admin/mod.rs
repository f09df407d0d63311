//! Managing sites, accounts and gateway keys, and reading the audit trail: one set of
//! operations behind both the admin API ([`http`]) and `hub admin` ([`cli`]).
//!
//! Every operation takes the audit event describing who does it; the storage layer
//! writes that event in the same transaction as the change.

pub mod cli;
pub mod http;

use access::credentials::{self, hash_password};
use storage::accounts::{self, NewUser, Site, SiteKind, User};
use storage::audit::{Action, EventType, NewEvent};
use storage::sessions::{self, GatewayKey};
use storage::{Db, StorageError};

/// Why an admin operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// Refused by storage (invalid, duplicate, not found) or storage failed.
    #[error(transparent)]
    Storage(#[from] StorageError),
    /// The password breaks the rules.
    #[error(transparent)]
    Password(#[from] credentials::PasswordError),
    /// Hashing ran on a thread that failed.
    #[error("password hashing failed: {0}")]
    Blocking(String),
}

fn as_event(
    by: &NewEvent,
    event: EventType,
    action: Action,
    detail: serde_json::Value,
) -> NewEvent {
    NewEvent {
        event,
        action,
        detail: Some(detail),
        ..by.clone()
    }
}

async fn hash(password: String) -> Result<String, AdminError> {
    tokio::task::spawn_blocking(move || hash_password(&password))
        .await
        .map_err(|e| AdminError::Blocking(e.to_string()))?
        .map_err(AdminError::from)
}

/// Create a site.
pub async fn add_site(
    db: &Db,
    by: &NewEvent,
    id: &str,
    name: &str,
    kind: SiteKind,
) -> Result<Site, AdminError> {
    let event = as_event(
        by,
        EventType::SECURITY_ROLES_CHANGED,
        Action::Create,
        serde_json::json!({ "site": id, "kind": kind, "name": name }),
    );
    Ok(accounts::create_site(db, id, name, kind, &event).await?)
}

/// Create a user. Without a password one is generated and returned, to be shown once.
pub async fn add_user(
    db: &Db,
    by: &NewEvent,
    new: &NewUser,
    password: Option<String>,
) -> Result<(User, Option<String>), AdminError> {
    new.validate()?;
    let (password, generated) = match password {
        Some(p) => (p, None),
        None => {
            let p = credentials::generate_password();
            (p.clone(), Some(p))
        }
    };
    let hashed = hash(password).await?;
    let event = as_event(
        by,
        EventType::USER_SECURITY_ATTRIBUTES_CHANGED,
        Action::Create,
        serde_json::json!({
            "user": new.username, "role": new.role, "specialties": new.specialties,
            "grade": new.grade, "sites": new.sites,
        }),
    );
    let user = accounts::create_user(db, new, &hashed, &event).await?;
    Ok((user, generated))
}

async fn user_named(db: &Db, username: &str) -> Result<User, AdminError> {
    accounts::login_record_by_name(db, username)
        .await?
        .map(|r| r.user)
        .ok_or_else(|| StorageError::NotFound(format!("user {username}")).into())
}

/// Set a new password (generated when not given, and returned), unlock the account and
/// log out its sessions.
pub async fn reset_password(
    db: &Db,
    by: &NewEvent,
    username: &str,
    password: Option<String>,
) -> Result<Option<String>, AdminError> {
    let user = user_named(db, username).await?;
    let (password, generated) = match password {
        Some(p) => (p, None),
        None => {
            let p = credentials::generate_password();
            (p.clone(), Some(p))
        }
    };
    let hashed = hash(password).await?;
    let event = as_event(
        by,
        EventType::USER_SECURITY_ATTRIBUTES_CHANGED,
        Action::Update,
        serde_json::json!({ "user": username, "change": "password reset" }),
    );
    accounts::set_password(db, user.id, &hashed, &event).await?;
    Ok(generated)
}

/// Disable (and log out) or re-enable a user.
pub async fn set_disabled(
    db: &Db,
    by: &NewEvent,
    username: &str,
    disabled: bool,
) -> Result<(), AdminError> {
    let user = user_named(db, username).await?;
    let change = if disabled { "disabled" } else { "enabled" };
    let event = as_event(
        by,
        EventType::USER_SECURITY_ATTRIBUTES_CHANGED,
        Action::Update,
        serde_json::json!({ "user": username, "change": change }),
    );
    Ok(accounts::set_disabled(db, user.id, disabled, &event).await?)
}

/// Log a user out everywhere; returns how many sessions ended.
pub async fn revoke_sessions(db: &Db, by: &NewEvent, username: &str) -> Result<u64, AdminError> {
    let user = user_named(db, username).await?;
    let event = as_event(
        by,
        EventType::USER_SECURITY_ATTRIBUTES_CHANGED,
        Action::Update,
        serde_json::json!({ "user": username, "change": "sessions revoked" }),
    );
    Ok(sessions::revoke_user_sessions(db, user.id, &event).await?)
}

/// Create a gateway key for a site; returns the key itself, to be shown once.
pub async fn create_gateway_key(
    db: &Db,
    by: &NewEvent,
    site: &str,
    label: &str,
) -> Result<(GatewayKey, String), AdminError> {
    let (id, key, key_hash) = credentials::new_gateway_key();
    let event = as_event(
        by,
        EventType::USER_SECURITY_ATTRIBUTES_CHANGED,
        Action::Create,
        serde_json::json!({ "gateway_key": id, "site": site, "label": label }),
    );
    let stored =
        sessions::create_gateway_key(db, &id, site, &key_hash, label, &by.actor, &event).await?;
    Ok((stored, key))
}

/// Revoke a gateway key.
pub async fn revoke_gateway_key(db: &Db, by: &NewEvent, id: &str) -> Result<(), AdminError> {
    let event = as_event(
        by,
        EventType::USER_SECURITY_ATTRIBUTES_CHANGED,
        Action::Delete,
        serde_json::json!({ "gateway_key": id }),
    );
    Ok(sessions::revoke_gateway_key(db, id, &event).await?)
}

/// File in the data directory holding the first admin's password.
pub const INITIAL_PASSWORD_FILE: &str = "initial-admin-password";

/// On the very first start (no accounts at all), create the user `admin` with a
/// generated password, written to a file only the hub's user can read. Returns the
/// file's path when it did so.
pub async fn bootstrap_admin(
    db: &Db,
    data_dir: &std::path::Path,
) -> anyhow::Result<Option<std::path::PathBuf>> {
    if accounts::user_count(db).await? > 0 {
        return Ok(None);
    }
    let new = NewUser {
        username: "admin".into(),
        display_name: "Administrator".into(),
        role: accounts::Role::Admin,
        specialties: Vec::new(),
        grade: None,
        sites: Vec::new(),
    };
    let by = NewEvent::new(
        EventType::USER_SECURITY_ATTRIBUTES_CHANGED,
        Action::Create,
        storage::audit::Outcome::Success,
        "system",
        "system",
    );
    let (_, password) = add_user(db, &by, &new, None).await?;
    let path = data_dir.join(INITIAL_PASSWORD_FILE);
    write_private(&path, &format!("{}\n", password.unwrap_or_default()))?;
    Ok(Some(path))
}

/// Write a file readable by its owner only.
fn write_private(path: &std::path::Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(content.as_bytes())?;
    f.sync_all()
}
