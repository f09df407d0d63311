//! Sites and user accounts: who works where, in which role and specialty.
//!
//! Passwords arrive here already hashed (argon2id, by the `access` crate): this module
//! never sees a password. Every change is written with its audit event in one
//! transaction, so an account change without its record cannot exist.

use serde::Serialize;
use sqlx::Row;

use crate::audit::{audit_append, NewEvent};
use crate::db::{on_db, Db};
use crate::{now_ms, Result, StorageError};

stored_enum! {
    /// What a site is in the medical community.
    SiteKind { /// The county hospital with the reading centres.
        County = "county", /// A township branch with a gateway.
        Township = "township" }
}

stored_enum! {
    /// What a user does.
    Role {
        /// Manages sites, accounts, keys and settings; reads the audit trail.
        Admin = "admin",
        /// Township technician: sends and follows the exams of one site.
        Technician = "technician",
        /// County reader: reads exams of their specialties from every site.
        Reader = "reader",
        /// Clinician: sees the exams and reports of their sites.
        Clinician = "clinician",
    }
}

stored_enum! {
    /// A reading specialty: which exams a reader covers.
    Specialty {
        /// Imaging (CT, DR, MR, ultrasound...).
        Radiology = "radiology",
        /// ECG.
        Cardiology = "cardiology",
        /// Laboratory results.
        Laboratory = "laboratory",
    }
}

stored_enum! {
    /// A reader's grade: juniors write preliminary reports, seniors sign finals.
    Grade { /// Preliminary reports only.
        Junior = "junior", /// Reviews and signs final reports.
        Senior = "senior" }
}

/// A site of the medical community.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Site {
    /// Short identifier used in keys and records (`[a-z0-9-]`, at most 32).
    pub id: String,
    /// Display name, e.g. 城关镇卫生院.
    pub name: String,
    /// County hospital or township branch.
    pub kind: SiteKind,
    /// Creation time, ms since the epoch.
    pub created_at: i64,
}

/// A user account as the rest of the product sees it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct User {
    /// Database id.
    pub id: i64,
    /// Login name.
    pub username: String,
    /// Name shown on screens and reports.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Specialties (readers).
    pub specialties: Vec<Specialty>,
    /// Grade (readers).
    pub grade: Option<Grade>,
    /// Sites the user belongs to (technicians one, clinicians one or more).
    pub sites: Vec<String>,
    /// Disabled accounts cannot log in.
    pub disabled: bool,
}

/// What an admin fills in to create a user.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Login name.
    pub username: String,
    /// Name shown on screens and reports.
    pub display_name: String,
    /// Role.
    pub role: Role,
    /// Specialties (readers must have at least one).
    pub specialties: Vec<Specialty>,
    /// Grade (readers must have one).
    pub grade: Option<Grade>,
    /// Sites (technicians exactly one, clinicians at least one).
    pub sites: Vec<String>,
}

/// A user as loaded for a login attempt.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    /// The account.
    pub user: User,
    /// argon2id PHC string.
    pub password_hash: String,
    /// Consecutive failed attempts.
    pub failed_logins: i64,
    /// Logins refused until this time (ms), after too many failures.
    pub locked_until: Option<i64>,
}

/// Check a site identifier before it is used in keys and records.
pub fn validate_site_id(id: &str) -> Result<()> {
    let ok = !id.is_empty()
        && id.len() <= 32
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "site id {id:?} must be 1-32 characters of a-z, 0-9 and '-'"
        )))
    }
}

/// Check a login name: like a site id (lower-case letters, digits, '-'), with '_' and '.'
/// allowed inside, 1-32 characters starting with a letter or digit. Names reach audit
/// records, logs and the UI's URLs: nothing that reads as a path or needs quoting.
pub fn validate_username(name: &str) -> Result<()> {
    let ok = name.len() <= 32
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.')
        });
    if ok {
        Ok(())
    } else {
        Err(StorageError::Invalid(format!(
            "username {name:?} must be 1-32 characters of a-z, 0-9, '-', '_' and '.', \
             starting with a letter or digit"
        )))
    }
}

impl NewUser {
    /// Check the combination of role, specialties, grade and sites.
    pub fn validate(&self) -> Result<()> {
        validate_username(&self.username)?;
        if self.display_name.trim().is_empty() || self.display_name.chars().count() > 128 {
            return Err(StorageError::Invalid(
                "display name must be 1-128 characters".into(),
            ));
        }
        for site in &self.sites {
            validate_site_id(site)?;
        }
        let invalid = |m: &str| Err(StorageError::Invalid(m.to_string()));
        match self.role {
            Role::Reader if self.specialties.is_empty() => {
                invalid("a reader needs at least one specialty")
            }
            Role::Reader if self.grade.is_none() => invalid("a reader needs a grade"),
            Role::Technician if self.sites.len() != 1 => {
                invalid("a technician belongs to exactly one site")
            }
            Role::Clinician if self.sites.is_empty() => {
                invalid("a clinician belongs to at least one site")
            }
            Role::Admin | Role::Technician | Role::Clinician
                if !self.specialties.is_empty() || self.grade.is_some() =>
            {
                invalid("only readers have specialties and grades")
            }
            _ => Ok(()),
        }
    }
}

fn join_specialties(s: &[Specialty]) -> String {
    s.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(",")
}

fn parse_specialties(s: &str) -> Vec<Specialty> {
    s.split(',').filter_map(Specialty::parse).collect()
}

fn corrupt(what: &str, value: &str) -> StorageError {
    StorageError::Corrupt(format!("unknown {what} {value:?} in the accounts tables"))
}

/// Create a site.
pub async fn create_site(
    db: &Db,
    id: &str,
    name: &str,
    kind: SiteKind,
    audit: &NewEvent,
) -> Result<Site> {
    validate_site_id(id)?;
    if name.trim().is_empty() {
        return Err(StorageError::Invalid("site name must not be empty".into()));
    }
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO sites (id, name, kind, created_at) VALUES ($1, $2, $3, $4) ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(name)
        .bind(kind.as_str())
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            return Err(StorageError::Duplicate(format!("site {id} already exists")));
        }
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(Site {
            id: id.to_string(),
            name: name.to_string(),
            kind,
            created_at: now,
        })
    })
}

/// All sites, by id.
pub async fn list_sites(db: &Db) -> Result<Vec<Site>> {
    on_db!(db, |pool| {
        let rows = sqlx::query("SELECT id, name, kind, created_at FROM sites ORDER BY id")
            .fetch_all(pool)
            .await?;
        rows.iter()
            .map(|r| {
                let kind: String = r.try_get("kind")?;
                Ok(Site {
                    id: r.try_get("id")?,
                    name: r.try_get("name")?,
                    kind: SiteKind::parse(&kind).ok_or_else(|| corrupt("site kind", &kind))?,
                    created_at: r.try_get("created_at")?,
                })
            })
            .collect()
    })
}

/// Does the site exist?
pub async fn site_exists(db: &Db, id: &str) -> Result<bool> {
    on_db!(db, |pool| {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sites WHERE id = $1")
            .bind(id)
            .fetch_one(pool)
            .await?;
        Ok(n > 0)
    })
}

/// Number of user accounts (zero on a first start).
pub async fn user_count(db: &Db) -> Result<i64> {
    on_db!(db, |pool| {
        Ok(sqlx::query_scalar("SELECT COUNT(*) FROM users")
            .fetch_one(pool)
            .await?)
    })
}

/// Create a user with an already hashed password.
pub async fn create_user(
    db: &Db,
    new: &NewUser,
    password_hash: &str,
    audit: &NewEvent,
) -> Result<User> {
    new.validate()?;
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        for site in &new.sites {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sites WHERE id = $1")
                .bind(site)
                .fetch_one(&mut *tx)
                .await?;
            if n == 0 {
                return Err(StorageError::Invalid(format!("no site {site}")));
            }
        }
        let id: Option<i64> = sqlx::query_scalar(
            "INSERT INTO users (username, display_name, password_hash, role, specialties, grade, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $7) ON CONFLICT (username) DO NOTHING RETURNING id",
        )
        .bind(&new.username)
        .bind(new.display_name.trim())
        .bind(password_hash)
        .bind(new.role.as_str())
        .bind(join_specialties(&new.specialties))
        .bind(new.grade.map(Grade::as_str))
        .bind(now)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(id) = id else {
            return Err(StorageError::Duplicate(format!(
                "user {} already exists",
                new.username
            )));
        };
        for site in &new.sites {
            sqlx::query(
                "INSERT INTO user_sites (user_id, site_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
            )
            .bind(id)
            .bind(site)
            .execute(&mut *tx)
            .await?;
        }
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(User {
            id,
            username: new.username.clone(),
            display_name: new.display_name.trim().to_string(),
            role: new.role,
            specialties: new.specialties.clone(),
            grade: new.grade,
            sites: new.sites.clone(),
            disabled: false,
        })
    })
}

/// The user query prefix; sites are loaded apart (the dialects aggregate differently).
macro_rules! user_select {
    () => {
        "SELECT u.id, u.username, u.display_name, u.role, u.specialties, u.grade, u.disabled_at, \
         u.password_hash, u.failed_logins, u.locked_until FROM users u"
    };
}

fn login_record<R: Row>(r: &R, sites: Vec<String>) -> Result<LoginRecord>
where
    for<'a> &'a str: sqlx::ColumnIndex<R>,
    String: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
    i64: for<'a> sqlx::Decode<'a, R::Database> + sqlx::Type<R::Database>,
{
    let role: String = r.try_get("role")?;
    let grade: Option<String> = r.try_get("grade")?;
    let specialties: String = r.try_get("specialties")?;
    let disabled_at: Option<i64> = r.try_get("disabled_at")?;
    Ok(LoginRecord {
        user: User {
            id: r.try_get("id")?,
            username: r.try_get("username")?,
            display_name: r.try_get("display_name")?,
            role: Role::parse(&role).ok_or_else(|| corrupt("role", &role))?,
            specialties: parse_specialties(&specialties),
            grade: grade.as_deref().and_then(Grade::parse),
            sites,
            disabled: disabled_at.is_some(),
        },
        password_hash: r.try_get("password_hash")?,
        failed_logins: r.try_get("failed_logins")?,
        locked_until: r.try_get("locked_until")?,
    })
}

async fn user_sites_of(db: &Db, user_id: i64) -> Result<Vec<String>> {
    on_db!(db, |pool| {
        Ok(
            sqlx::query_scalar(
                "SELECT site_id FROM user_sites WHERE user_id = $1 ORDER BY site_id",
            )
            .bind(user_id)
            .fetch_all(pool)
            .await?,
        )
    })
}

/// Load a user by login name, with what a login needs.
pub async fn login_record_by_name(db: &Db, username: &str) -> Result<Option<LoginRecord>> {
    let sql = concat!(user_select!(), " WHERE u.username = $1");
    let found = on_db!(db, |pool| {
        let row = sqlx::query(sql).bind(username).fetch_optional(pool).await?;
        row.map(|r| {
            Ok::<_, StorageError>((r.try_get::<i64, _>("id")?, login_record(&r, Vec::new())?))
        })
        .transpose()?
    });
    match found {
        Some((id, mut record)) => {
            record.user.sites = user_sites_of(db, id).await?;
            Ok(Some(record))
        }
        None => Ok(None),
    }
}

/// Load a user by id.
pub async fn user_by_id(db: &Db, id: i64) -> Result<Option<User>> {
    let sql = concat!(user_select!(), " WHERE u.id = $1");
    let found = on_db!(db, |pool| {
        let row = sqlx::query(sql).bind(id).fetch_optional(pool).await?;
        row.map(|r| login_record(&r, Vec::new())).transpose()?
    });
    match found {
        Some(mut record) => {
            record.user.sites = user_sites_of(db, id).await?;
            Ok(Some(record.user))
        }
        None => Ok(None),
    }
}

/// All users, by login name.
pub async fn list_users(db: &Db) -> Result<Vec<User>> {
    let sql = concat!(user_select!(), " ORDER BY u.username");
    let mut users: Vec<User> = on_db!(db, |pool| {
        let rows = sqlx::query(sql).fetch_all(pool).await?;
        rows.iter()
            .map(|r| login_record(r, Vec::new()).map(|l| l.user))
            .collect::<Result<Vec<_>>>()?
    });
    let memberships: Vec<(i64, String)> = on_db!(db, |pool| {
        sqlx::query_as("SELECT user_id, site_id FROM user_sites ORDER BY site_id")
            .fetch_all(pool)
            .await?
    });
    for user in &mut users {
        user.sites = memberships
            .iter()
            .filter(|(u, _)| *u == user.id)
            .map(|(_, s)| s.clone())
            .collect();
    }
    Ok(users)
}

/// A failed login: count it, lock the account until `lock_until` if given, and record
/// the audit event in the same transaction.
pub async fn record_login_failure(
    db: &Db,
    user_id: Option<i64>,
    lock_until: Option<i64>,
    audit: &NewEvent,
) -> Result<()> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        if let Some(id) = user_id {
            sqlx::query(
                "UPDATE users SET failed_logins = failed_logins + 1, \
                 locked_until = COALESCE($1, locked_until) WHERE id = $2",
            )
            .bind(lock_until)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        }
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    })
}

/// Replace a user's password hash, clear any lock, and revoke every session of the user
/// (whoever knew the old password is logged out).
pub async fn set_password(
    db: &Db,
    user_id: i64,
    password_hash: &str,
    audit: &NewEvent,
) -> Result<()> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let n = sqlx::query(
            "UPDATE users SET password_hash = $1, failed_logins = 0, locked_until = NULL, updated_at = $2 WHERE id = $3",
        )
        .bind(password_hash)
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if n == 0 {
            return Err(StorageError::NotFound(format!("user {user_id}")));
        }
        sqlx::query(
            "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(user_id)
        .execute(&mut *tx)
        .await?;
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    })
}

/// Disable or re-enable a user; disabling revokes every session.
pub async fn set_disabled(db: &Db, user_id: i64, disabled: bool, audit: &NewEvent) -> Result<()> {
    let _turn = db.write_turn().await;
    let now = now_ms();
    on_db!(db, |pool| {
        let mut tx = pool.begin().await?;
        let n = sqlx::query("UPDATE users SET disabled_at = $1, updated_at = $2 WHERE id = $3")
            .bind(disabled.then_some(now))
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if n == 0 {
            return Err(StorageError::NotFound(format!("user {user_id}")));
        }
        if disabled {
            sqlx::query(
                "UPDATE sessions SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL",
            )
            .bind(now)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        }
        audit_append!(&mut *tx, audit, now).await?;
        tx.commit().await?;
        Ok(())
    })
}
