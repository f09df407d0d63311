//! The gateway's side of the hub connection: one HTTP client with the configured TLS
//! trust, the gateway key on every request, and failures turned into messages that tell
//! the operator what to fix.
//!
//! A TLS failure or a refused key is never about one instance: the forwarder treats
//! them as transient (nothing is quarantined, items stay pending and are retried with
//! backoff) and records the message, which `gateway status` shows.

use std::sync::Mutex;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};

use crate::config::{Config, ConfigError};
use crate::forwarder::error_chain;
use crate::forwarder::stow::excerpt;
use crate::tls::{self, TlsError};

/// The hub client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum HubSetupError {
    /// The key could not be read (`hub_key_file`) or is unusable.
    #[error(transparent)]
    Key(#[from] ConfigError),
    /// The TLS trust settings are unusable.
    #[error("hub TLS: {0}")]
    Tls(#[from] TlsError),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Sends requests to the hub with the gateway key, over the configured TLS trust.
#[derive(Clone)]
pub struct HubClient {
    http: reqwest::Client,
    base: String,
    /// `Bearer <key>`, marked sensitive so HTTP-level logging never prints it.
    authorization: Option<HeaderValue>,
}

// Hand-written so that no `{:?}` can ever show the key.
impl std::fmt::Debug for HubClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubClient")
            .field("base", &self.base)
            .field("has_key", &self.authorization.is_some())
            .finish_non_exhaustive()
    }
}

impl HubClient {
    /// Read the key (from `hub_key` or `hub_key_file`) and the trust settings, and
    /// build the client.
    pub fn new(config: &Config) -> Result<HubClient, HubSetupError> {
        let authorization = match config.resolve_hub_key()? {
            Some(key) => {
                let mut value = HeaderValue::from_str(&format!("Bearer {}", key.expose()))
                    .map_err(|_| {
                        ConfigError::Invalid(
                            "the hub key may only contain visible ASCII characters".into(),
                        )
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .read_timeout(Duration::from_secs(120))
            .user_agent(concat!("township-gateway/", env!("CARGO_PKG_VERSION")));
        match tls::hub_client_config(config)? {
            Some(tls) => {
                builder = builder.tls_backend_preconfigured(tls);
                tracing::info!(
                    ca_file = ?config.hub_ca_path(),
                    pinned = config.hub_cert_pin().is_some(),
                    "hub TLS: trusting only the configured CA / pinned certificate"
                );
            }
            None if config.hub_is_https() => {
                tracing::info!("hub TLS: trusting the platform's root certificates");
            }
            None => {}
        }
        if !config.hub_is_https() {
            if authorization.is_some() {
                tracing::warn!(
                    hub = %config.hub_url,
                    "hub_url is plain http: the gateway key and the images travel unencrypted"
                );
            } else {
                tracing::warn!(
                    hub = %config.hub_url,
                    "no hub key configured: requests carry no Authorization header"
                );
            }
        }
        Ok(HubClient {
            http: builder.build()?,
            base: config.hub_base().to_string(),
            authorization,
        })
    }

    /// A POST to `{hub_url}{path}` carrying the gateway key.
    pub fn post(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorize(self.http.post(format!("{}{path}", self.base)))
    }

    /// A GET of `{hub_url}{path}` carrying the gateway key.
    pub fn get(&self, path: &str) -> reqwest::RequestBuilder {
        self.authorize(self.http.get(format!("{}{path}", self.base)))
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.authorization {
            Some(auth) => request.header(AUTHORIZATION, auth.clone()),
            None => request,
        }
    }

    /// Whether a key is sent.
    pub fn has_key(&self) -> bool {
        self.authorization.is_some()
    }

    /// What to tell the operator when a request could not be made: a TLS failure
    /// names the trust settings, anything else is "cannot reach the hub".
    pub fn describe_send_error(&self, e: &reqwest::Error) -> String {
        match tls::find_rustls_error(e) {
            Some(tls_error) => tls::describe_hub_tls_error(tls_error),
            None => format!("cannot reach the hub: {}", error_chain(e)),
        }
    }

    /// For 401/403, what to tell the operator about the key; `None` for other statuses.
    pub fn describe_refusal(&self, status: u16, body: &[u8]) -> Option<String> {
        describe_refusal(status, body, self.has_key())
    }
}

/// See [`HubClient::describe_refusal`].
pub fn describe_refusal(status: u16, body: &[u8], has_key: bool) -> Option<String> {
    let said = if body.iter().all(u8::is_ascii_whitespace) {
        String::new()
    } else {
        format!(" (hub said: {})", excerpt(body))
    };
    match (status, has_key) {
        (401, false) => Some(format!(
            "hub requires a gateway key (401): set hub_key or hub_key_file{said}"
        )),
        (401 | 403, true) => Some(format!(
            "hub refused the gateway key ({status}): check hub_key / hub_key_file{said}"
        )),
        (403, false) => Some(format!(
            "hub refused the request without a gateway key (403): set hub_key or hub_key_file{said}"
        )),
        _ => None,
    }
}

/// Logs a recurring failure at warn level when it starts or changes, not on every
/// retry (a hub with a wrong certificate would otherwise fill the log), and once when
/// it is over.
#[derive(Debug)]
pub struct ProblemLog {
    what: &'static str,
    current: Mutex<Option<String>>,
}

impl ProblemLog {
    /// A log for one kind of request, e.g. "STOW-RS".
    pub fn new(what: &'static str) -> Self {
        ProblemLog {
            what,
            current: Mutex::new(None),
        }
    }

    /// A request failed with `error`. Returns whether it was logged at warn level.
    pub fn failed(&self, error: &str) -> bool {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if current.as_deref() == Some(error) {
            tracing::debug!(request = self.what, %error, "hub request failed again; will retry");
            return false;
        }
        tracing::warn!(request = self.what, %error, "hub request failed; will retry");
        *current = Some(error.to_string());
        true
    }

    /// A request got a meaningful answer.
    pub fn succeeded(&self) {
        let mut current = self.current.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(previous) = current.take() {
            tracing::info!(request = self.what, %previous, "hub requests succeed again");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_which_setting_to_fix() {
        assert_eq!(
            describe_refusal(401, b"", true).as_deref(),
            Some("hub refused the gateway key (401): check hub_key / hub_key_file")
        );
        let m = describe_refusal(403, br#"{"error":"key revoked"}"#, true).unwrap_or_default();
        assert!(m.starts_with("hub refused the gateway key (403)"), "{m}");
        assert!(m.contains("key revoked"), "{m}");
        let m = describe_refusal(401, b"", false).unwrap_or_default();
        assert!(m.contains("set hub_key or hub_key_file"), "{m}");
        assert_eq!(describe_refusal(500, b"", true), None);
        assert_eq!(describe_refusal(404, b"", false), None);
    }

    #[test]
    fn a_problem_is_logged_once_per_change() {
        let log = ProblemLog::new("test");
        assert!(log.failed("A"));
        assert!(!log.failed("A"));
        assert!(log.failed("B"));
        log.succeeded();
        assert!(log.failed("B"));
    }

    #[test]
    fn debug_never_shows_the_key() {
        let config = Config {
            hub_key: "s3cret-key-value".into(),
            ..Config::default()
        };
        let client = HubClient::new(&config).expect("client");
        assert!(client.has_key());
        assert!(!format!("{client:?}").contains("s3cret"));
        assert!(!format!("{config:?}").contains("s3cret"));
    }
}
