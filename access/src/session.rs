//! Logging in and out: `/api/auth/login`, `/api/auth/logout`, `/api/auth/me`.
//!
//! Wrong passwords are counted per account; after `max_failed_logins` in a row the
//! account is locked for `lock_secs`, doubling with each further failure up to an hour.
//! While locked, even the right password is refused without being checked, so guessing
//! gains nothing. Unknown names cost the same argon2 time as wrong passwords.

use actix_web::cookie::{Cookie, SameSite};
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use storage::accounts::User;
use storage::audit::{Action, EventType, NewEvent, Outcome};
use storage::now_ms;
use storage::sessions::{NewSession, SessionKind};

use crate::credentials::{decoy_hash, digest, new_session_token, verify_password};
use crate::{Access, AccessError, Caller, SESSION_COOKIE};

/// Mount the session routes. The caller registers `web::Data<Access>`.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/auth/login", web::post().to(login))
        .route("/api/auth/logout", web::post().to(logout))
        .route("/api/auth/me", web::get().to(me));
}

/// Login request body.
#[derive(Deserialize)]
pub struct LoginRequest {
    username: String,
    password: String,
    /// `cookie` (web UI, default) or `bearer` (API client: the token is in the answer).
    #[serde(default)]
    kind: Option<String>,
}

fn login_event(username: &str, client: Option<&str>, outcome: Outcome, detail: &str) -> NewEvent {
    NewEvent {
        event: EventType::USER_AUTHENTICATION,
        action: Action::Execute,
        outcome,
        actor: format!("user:{username}"),
        role: String::new(),
        site: None,
        client_addr: client.map(str::to_string),
        patient_id: None,
        study_uid: None,
        exam_id: None,
        detail: Some(serde_json::json!({ "login": detail })),
    }
}

async fn login(
    access: web::Data<Access>,
    req: HttpRequest,
    body: web::Json<LoginRequest>,
) -> Result<HttpResponse, AccessError> {
    let body = body.into_inner();
    let kind = match body.kind.as_deref() {
        None | Some("cookie") => SessionKind::Cookie,
        Some("bearer") => SessionKind::Bearer,
        Some(other) => {
            return Err(AccessError::BadRequest(format!(
                "kind must be cookie or bearer, not {other:?}"
            )))
        }
    };
    let client = crate::proxy::request_client(&req, &access.config.trusted_proxies);
    let client = client.as_deref();
    let username = body.username.trim().to_string();
    if username.is_empty() || username.len() > 64 || body.password.len() > 1024 {
        return Err(AccessError::BadLogin);
    }
    let record = storage::accounts::login_record_by_name(&access.db, &username).await?;
    let now = now_ms();

    if let Some(r) = &record {
        if let Some(until) = r.locked_until.filter(|t| *t > now) {
            let event = login_event(
                &username,
                client,
                Outcome::MinorFailure,
                "refused: account locked",
            );
            storage::accounts::record_login_failure(&access.db, None, None, &event).await?;
            return Err(AccessError::Locked {
                retry_after_secs: ((until - now) as u64).div_ceil(1000),
            });
        }
    }

    let stored = record
        .as_ref()
        .map(|r| r.password_hash.clone())
        .unwrap_or_else(|| decoy_hash().to_string());
    let password = body.password;
    let matches = web::block(move || verify_password(&password, &stored))
        .await
        .map_err(|e| AccessError::Internal(e.to_string()))?;

    let user = match record {
        Some(r) if matches && !r.user.disabled => r.user,
        Some(r) => {
            let failures = r.failed_logins + 1;
            let lock_until = lock_until(&access.config, failures, now);
            let why = if r.user.disabled {
                "disabled account"
            } else {
                "wrong password"
            };
            let event = login_event(&username, client, Outcome::MinorFailure, why);
            storage::accounts::record_login_failure(
                &access.db,
                Some(r.user.id),
                lock_until,
                &event,
            )
            .await?;
            return Err(AccessError::BadLogin);
        }
        None => {
            let event = login_event(&username, client, Outcome::MinorFailure, "unknown user");
            storage::accounts::record_login_failure(&access.db, None, None, &event).await?;
            return Err(AccessError::BadLogin);
        }
    };

    let hours = match kind {
        SessionKind::Cookie => access.config.session_hours,
        SessionKind::Bearer => access.config.token_hours,
    };
    let expires_at = now + (hours as i64) * 3_600_000;
    let token = new_session_token();
    let token_hash = digest(&token);
    let mut event = login_event(&username, client, Outcome::Success, "success");
    event.role = user.role.as_str().to_string();
    event.site = (user.sites.len() == 1).then(|| user.sites[0].clone());
    storage::sessions::create_session(
        &access.db,
        &NewSession {
            token_hash: &token_hash,
            user_id: user.id,
            kind,
            client_addr: client,
            expires_at,
        },
        &event,
    )
    .await?;

    let mut answer = serde_json::json!({ "user": user_json(&user), "expires_at": expires_at });
    let mut response = HttpResponse::Ok();
    match kind {
        SessionKind::Bearer => answer["token"] = serde_json::Value::String(token),
        SessionKind::Cookie => {
            let cookie = Cookie::build(SESSION_COOKIE, token)
                .path("/")
                .http_only(true)
                .secure(access.config.secure_cookies)
                .same_site(SameSite::Strict)
                .max_age(actix_web::cookie::time::Duration::hours(hours as i64))
                .finish();
            response.cookie(cookie);
        }
    }
    Ok(response.json(answer))
}

/// When the account should stay locked until after `failures` wrong passwords in a row.
fn lock_until(config: &crate::AccessConfig, failures: i64, now: i64) -> Option<i64> {
    let over = failures - i64::from(config.max_failed_logins);
    if over < 0 {
        return None;
    }
    let secs = config
        .lock_secs
        .saturating_mul(1u64 << over.min(12))
        .min(3600);
    Some(now + secs as i64 * 1000)
}

fn user_json(user: &User) -> serde_json::Value {
    serde_json::json!({
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
        "specialties": user.specialties,
        "grade": user.grade,
        "sites": user.sites,
    })
}

async fn logout(access: web::Data<Access>, caller: Caller) -> Result<HttpResponse, AccessError> {
    let Some(token_hash) = &caller.session else {
        return Err(AccessError::BadRequest("not a session".into()));
    };
    let mut event = caller.event(
        EventType::USER_AUTHENTICATION,
        Action::Execute,
        Outcome::Success,
    );
    event.detail = Some(serde_json::json!({ "logout": true }));
    storage::sessions::revoke_session(&access.db, token_hash, &event).await?;
    let mut gone = Cookie::build(SESSION_COOKIE, "").path("/").finish();
    gone.make_removal();
    Ok(HttpResponse::Ok()
        .cookie(gone)
        .json(serde_json::json!({ "logged_out": true })))
}

async fn me(caller: Caller) -> Result<HttpResponse, AccessError> {
    match &caller.principal {
        crate::Principal::User(user) => Ok(HttpResponse::Ok().json(user_json(user))),
        crate::Principal::Gateway { .. } => Err(AccessError::BadRequest("not a user".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_grow_and_cap() {
        let c = crate::AccessConfig::default();
        assert_eq!(lock_until(&c, 4, 0), None);
        assert_eq!(lock_until(&c, 5, 0), Some(60_000));
        assert_eq!(lock_until(&c, 6, 0), Some(120_000));
        assert_eq!(lock_until(&c, 40, 0), Some(3_600_000));
    }
}
