//! The middleware every request passes, and the [`Caller`] it hands to handlers.

use std::future::{ready, Ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};

use crate::credentials::{digest, digests_equal, parse_gateway_key, GATEWAY_KEY_PREFIX};
use crate::policy::{family_of, permits, Family, Principal};
use crate::{Access, AccessError, SESSION_COOKIE};

/// The authenticated caller of a request.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Who.
    pub principal: Principal,
    /// From where (peer IP address).
    pub client_addr: Option<String>,
    /// Session token digest, when the caller came with a session (for logout).
    pub session: Option<String>,
}

impl FromRequest for Caller {
    type Error = AccessError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        // The guard put it there; a handler asking on a public route gets 401.
        ready(
            req.extensions()
                .get::<Caller>()
                .cloned()
                .ok_or(AccessError::Unauthenticated("log in first")),
        )
    }
}

/// Authenticate the request and apply the route family's rule; see [`crate::policy`].
///
/// Register with `App::wrap(actix_web::middleware::from_fn(access::guard))` and the
/// [`Access`] state as `web::Data`.
pub async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let family = family_of(req.method(), req.path());
    if family == Family::Public {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let Some(access) = req.app_data::<web::Data<Access>>().cloned() else {
        let e = AccessError::Internal("access state is not registered".into());
        return Ok(req.into_response(e.error_response()));
    };
    let caller = match authenticate(&access, &req).await {
        Ok(caller) => caller,
        Err(e) => return Ok(req.into_response(e.error_response())),
    };
    if !permits(&caller.principal, family) {
        let e = AccessError::Forbidden(caller.principal.role_name().to_string());
        return Ok(req.into_response(e.error_response()));
    }
    req.extensions_mut().insert(caller);
    let changes_accounts = changes_accounts(req.method(), req.path());
    let response = next.call(req).await?.map_into_boxed_body();
    if changes_accounts {
        // After the handler committed: no later request of this process sees the old
        // state of a session or user.
        access.recent.clear();
    }
    Ok(response)
}

/// Requests after which remembered sessions may be stale: every state-changing request
/// on sessions or accounts (logout, password, disabling, sessions, roles and sites).
fn changes_accounts(method: &actix_web::http::Method, path: &str) -> bool {
    !method.is_safe() && (path.starts_with("/api/auth/") || path.starts_with("/api/admin/"))
}

async fn authenticate(access: &Access, req: &ServiceRequest) -> Result<Caller, AccessError> {
    let client_addr = crate::proxy::request_client(req.request(), &access.config.trusted_proxies);
    let bearer = match req.headers().get(header::AUTHORIZATION) {
        Some(value) => {
            let value = value
                .to_str()
                .map_err(|_| AccessError::Unauthenticated("malformed Authorization header"))?;
            let token = value
                .strip_prefix("Bearer ")
                .ok_or(AccessError::Unauthenticated(
                    "Authorization must be \"Bearer <token>\"",
                ))?;
            Some(token.trim().to_string())
        }
        None => None,
    };
    let token = match bearer {
        Some(token) => token,
        None => req
            .cookie(SESSION_COOKIE)
            .map(|c| c.value().to_string())
            .ok_or(AccessError::Unauthenticated("log in first"))?,
    };

    if token.starts_with(GATEWAY_KEY_PREFIX) {
        let (id, secret) = parse_gateway_key(&token)
            .ok_or(AccessError::Unauthenticated("malformed gateway key"))?;
        let (key, stored) = storage::sessions::live_gateway_key(&access.db, id)
            .await?
            .ok_or(AccessError::Unauthenticated(
                "unknown or revoked gateway key",
            ))?;
        if !digests_equal(&digest(secret), &stored) {
            return Err(AccessError::Unauthenticated(
                "unknown or revoked gateway key",
            ));
        }
        if access.should_touch_key(id) {
            storage::sessions::touch_gateway_key(&access.db, id).await?;
        }
        return Ok(Caller {
            principal: Principal::Gateway {
                key_id: key.id,
                site: key.site_id,
            },
            client_addr,
            session: None,
        });
    }

    if token.len() > 128 {
        return Err(AccessError::Unauthenticated("malformed token"));
    }
    let token_hash = digest(&token);
    let user = match access.recent.get(&token_hash, storage::now_ms()) {
        Some(user) => user,
        None => {
            let (user, expires_at) = storage::sessions::session_user(&access.db, &token_hash)
                .await?
                .ok_or(AccessError::Unauthenticated(
                    "session expired or revoked: log in again",
                ))?;
            access.recent.put(&token_hash, user.clone(), expires_at);
            user
        }
    };
    Ok(Caller {
        principal: Principal::User(user),
        client_addr,
        session: Some(token_hash),
    })
}

#[cfg(test)]
mod tests {
    use super::changes_accounts;
    use actix_web::http::Method;

    #[test]
    fn account_changes_are_recognised() {
        assert!(changes_accounts(&Method::POST, "/api/auth/logout"));
        assert!(changes_accounts(
            &Method::POST,
            "/api/admin/users/wang/disable"
        ));
        assert!(changes_accounts(
            &Method::DELETE,
            "/api/admin/users/wang/sessions"
        ));
        assert!(!changes_accounts(&Method::GET, "/api/admin/users"));
        assert!(!changes_accounts(&Method::PUT, "/api/reports/1/draft"));
    }
}
