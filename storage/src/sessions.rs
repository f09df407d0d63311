//! Login sessions and gateway keys: the credentials the hub accepts.
//!
//! Only SHA-256 digests of tokens and keys are stored. Both are 256-bit random values,
//! so a fast digest is enough (no password stretching needed) and a copy of the
//! database lets nobody in.

use serde::Serialize;
use sqlx::Row;

use crate::accounts::{user_by_id, User};
use crate::audit::{audit_append, NewEvent};
use crate::db::{on_db, Db};
use crate::{now_ms, Result, StorageError};

/// How a session token travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SessionKind {
    /// HTTP-only cookie of the web UI.
    Cookie,
    /// `Authorization: Bearer` token of an API client.
    Bearer,
}

impl SessionKind {
    fn as_str(self) -> &'static str {
        match self {
            SessionKind::Cookie => "cookie",
            SessionKind::Bearer => "bearer",
        }
    }
}

/// A new session to store after a successful login.
#[derive(Debug, Clone)]
pub struct NewSession<'a> {
    /// SHA-256 (hex) of the token handed to the client.
    pub token_hash: &'a str,
    /// Whose session.
    pub user_id: i64,
    /// Cookie or bearer token.
    pub kind: SessionKind,
    /// Client address at login.
    pub client_addr: Option<&'a str>,
    /// Expiry, ms since the epoch.
    pub expires_at: i64,
}

/// Store a session after a successful login: resets the failure count and records the
/// login in the same transaction.
pub async fn create_session(db: &Db, new: &NewSession<'_>, audit: &NewEvent) -> Result<()> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        sqlx::query(
            "INSERT INTO sessions (token_hash, user_id, kind, client_addr, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(new.token_hash)
        .bind(new.user_id)
        .bind(new.kind.as_str())
        .bind(new.client_addr)
        .bind(now)
        .bind(new.expires_at)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE users SET failed_logins = 0, locked_until = NULL WHERE id = $1")
            .bind(new.user_id)
            .execute(&mut *tx)
            .await?;
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    })
}

/// The user behind a live session token (not expired, not revoked, user not disabled).
pub async fn session_user(db: &Db, token_hash: &str) -> Result<Option<(User, i64)>> {
    let now = now_ms();
    let found: Option<(i64, i64)> = on_db!(db, |pool| {
        sqlx::query_as(
            "SELECT s.user_id, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id \
             WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > $2 AND u.disabled_at IS NULL",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(pool)
        .await?
    });
    match found {
        Some((user_id, expires_at)) => Ok(user_by_id(db, user_id).await?.map(|u| (u, expires_at))),
        None => Ok(None),
    }
}

/// Revoke one session (logout). Returns whether a live session was revoked.
pub async fn revoke_session(db: &Db, token_hash: &str, audit: &NewEvent) -> Result<bool> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE token_hash = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(token_hash)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(n > 0)
    })
}

/// Revoke every live session of a user; returns how many.
pub async fn revoke_user_sessions(db: &Db, user_id: i64, audit: &NewEvent) -> Result<u64> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(n)
    })
}

/// A gateway key as listed to admins (never the key itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayKey {
    /// Public identifier (the part of the key before the secret).
    pub id: String,
    /// The site whose gateway uses it.
    pub site_id: String,
    /// Free text, e.g. which machine holds it.
    pub label: String,
    /// Who created it.
    pub created_by: String,
    /// Creation time, ms.
    pub created_at: i64,
    /// Last successful use, ms (updated at most once a minute).
    pub last_used_at: Option<i64>,
    /// Revocation time, ms.
    pub revoked_at: Option<i64>,
}

/// Store a new gateway key for a site.
pub async fn create_gateway_key(
    db: &Db,
    id: &str,
    site_id: &str,
    key_hash: &str,
    label: &str,
    created_by: &str,
    audit: &NewEvent,
) -> Result<GatewayKey> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let sites: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sites WHERE id = $1")
            .bind(site_id)
            .fetch_one(&mut *tx)
            .await?;
        if sites == 0 {
            return Err(StorageError::Invalid(format!("no site {site_id}")));
        }
        sqlx::query(
            "INSERT INTO gateway_keys (id, site_id, key_hash, label, created_by, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(id)
        .bind(site_id)
        .bind(key_hash)
        .bind(label)
        .bind(created_by)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(GatewayKey {
            id: id.to_string(),
            site_id: site_id.to_string(),
            label: label.to_string(),
            created_by: created_by.to_string(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        })
    })
}

fn gateway_key<R: Row>(r: &R) -> Result<GatewayKey>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    Ok(GatewayKey {
        id: r.try_get("id")?,
        site_id: r.try_get("site_id")?,
        label: r.try_get("label")?,
        created_by: r.try_get("created_by")?,
        created_at: r.try_get("created_at")?,
        last_used_at: r.try_get("last_used_at")?,
        revoked_at: r.try_get("revoked_at")?,
    })
}

const KEY_COLUMNS: &str = "id, site_id, label, created_by, created_at, last_used_at, revoked_at";

/// Every gateway key, newest first.
pub async fn list_gateway_keys(db: &Db) -> Result<Vec<GatewayKey>> {
    let sql = format!("SELECT {KEY_COLUMNS} FROM gateway_keys ORDER BY created_at DESC, id");
    on_db!(db, |pool| {
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .fetch_all(pool)
            .await?;
        rows.iter().map(gateway_key).collect()
    })
}

/// A live (not revoked) key by id, with its stored digest.
pub async fn live_gateway_key(db: &Db, id: &str) -> Result<Option<(GatewayKey, String)>> {
    let sql = format!(
        "SELECT {KEY_COLUMNS}, key_hash FROM gateway_keys WHERE id = $1 AND revoked_at IS NULL"
    );
    on_db!(db, |pool| {
        let row = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .fetch_optional(pool)
            .await?;
        row.map(|r| Ok((gateway_key(&r)?, r.try_get("key_hash")?)))
            .transpose()
    })
}

/// Note that a key was used (at most once a minute, so every request does not write).
pub async fn touch_gateway_key(db: &Db, id: &str) -> Result<()> {
    let now = now_ms();
    let _turn = db.write_turn().await;
    on_db!(db, |pool| {
        sqlx::query(
            "UPDATE gateway_keys SET last_used_at = $1 WHERE id = $2 \
             AND (last_used_at IS NULL OR last_used_at < $3)",
        )
        .bind(now)
        .bind(id)
        .bind(now - 60_000)
        .execute(pool)
        .await?;
    });
    Ok(())
}

/// Revoke a gateway key; the gateway holding it is refused from the next request on.
pub async fn revoke_gateway_key(db: &Db, id: &str, audit: &NewEvent) -> Result<()> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(
            "UPDATE gateway_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StorageError::NotFound(format!("live gateway key {id}")));
        }
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    })
}
