//! Gateway configuration: defaults, then an optional TOML file, then `GATEWAY_*`
//! environment variables (later sources win).

use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Everything the gateway can be told. Field names are the TOML keys; the environment
/// variable for a key is `GATEWAY_` + the key in upper case (e.g. `GATEWAY_HUB_URL`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Our DICOM application entity title.
    pub ae_title: String,
    /// Address the DICOM listener binds (`127.0.0.1:0` picks a free port).
    pub listen: String,
    /// Base URL of the county hub (STOW-RS at `{hub_url}/dicomweb/studies`).
    pub hub_url: String,
    /// This township's site identifier, sent as `X-Site`.
    pub site: String,
    /// Directory holding the outbox database, the spool and the quarantine.
    pub data_dir: PathBuf,
    /// Seconds without a new instance (and with no association open) before a study is
    /// reported complete.
    pub quiet_period_secs: u64,
    /// Most instances per STOW-RS request.
    pub batch_max_instances: usize,
    /// Most bytes per STOW-RS request (a single larger instance is sent alone).
    pub batch_max_bytes: u64,
    /// STOW-RS requests in flight at once.
    pub forward_concurrency: usize,
    /// Called AE titles that mark what is sent to them as STAT (an "emergency" AE).
    /// A list, or in the environment also a comma-separated string.
    #[serde(deserialize_with = "list_or_csv")]
    pub stat_ae_titles: Vec<String>,
    /// First retry delay bound in milliseconds (doubles per attempt, full jitter).
    pub backoff_base_ms: u64,
    /// Largest retry delay bound in milliseconds.
    pub backoff_max_ms: u64,
    /// Concurrent DICOM associations; further ones are rejected as transiently busy.
    pub max_associations: usize,
    /// Largest P-DATA PDU we accept, in bytes. Bigger PDUs mean fewer reads per
    /// instance; memory per association stays around twice this.
    pub max_pdu: u32,
    /// Only accept associations whose called AE title is `ae_title` or one of
    /// `stat_ae_titles`. Off by default: a misconfigured modality should still be
    /// able to deliver, and the township network is closed.
    pub require_called_ae: bool,
    /// Seconds an association may stay silent before we abort it.
    pub association_idle_secs: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ae_title: "TOWNSHIP_GW".into(),
            listen: "0.0.0.0:11112".into(),
            hub_url: "http://127.0.0.1:8080".into(),
            site: "local".into(),
            data_dir: PathBuf::from("./data/gateway"),
            quiet_period_secs: 10,
            batch_max_instances: 10,
            batch_max_bytes: 32 * 1024 * 1024,
            forward_concurrency: 4,
            stat_ae_titles: Vec::new(),
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            max_associations: 32,
            max_pdu: 256 * 1024,
            require_called_ae: false,
            association_idle_secs: 600,
        }
    }
}

/// The configuration could not be loaded or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A source could not be read or a value has the wrong type.
    #[error("configuration: {0}")]
    Load(#[from] Box<figment::Error>),
    /// A value is out of range.
    #[error("configuration: {0}")]
    Invalid(String),
}

/// Accept `["A", "B"]` or `"A,B"` (the natural way to write a list in an environment
/// variable).
fn list_or_csv<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum ListOrCsv {
        List(Vec<String>),
        Csv(String),
    }
    Ok(match ListOrCsv::deserialize(d)? {
        ListOrCsv::List(v) => v,
        ListOrCsv::Csv(s) => s
            .split(',')
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty())
            .collect(),
    })
}

impl Config {
    /// Load defaults, then `file` (if given), then the `GATEWAY_*` environment.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            // `file_exact`: a named file that is missing is an error, not a silent default.
            figment = figment.merge(Toml::file_exact(file));
        }
        let config: Config = figment
            .merge(Env::prefixed("GATEWAY_"))
            .extract()
            .map_err(Box::new)?;
        config.validate()?;
        Ok(config)
    }

    /// Reject values that would make the gateway misbehave rather than fail loudly.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let ae = self.ae_title.trim();
        if ae.is_empty() || ae.len() > 16 || !ae.chars().all(|c| c.is_ascii_graphic() || c == ' ') {
            return Err(ConfigError::Invalid(format!(
                "ae_title {:?} must be 1-16 printable ASCII characters",
                self.ae_title
            )));
        }
        if self.batch_max_instances == 0 || self.forward_concurrency == 0 {
            return Err(ConfigError::Invalid(
                "batch_max_instances and forward_concurrency must be at least 1".into(),
            ));
        }
        if self.max_associations == 0 {
            return Err(ConfigError::Invalid(
                "max_associations must be at least 1".into(),
            ));
        }
        if !(4096..=16 * 1024 * 1024).contains(&self.max_pdu) {
            return Err(ConfigError::Invalid(format!(
                "max_pdu {} must be between 4096 and 16777216",
                self.max_pdu
            )));
        }
        if self.backoff_base_ms == 0 || self.backoff_max_ms < self.backoff_base_ms {
            return Err(ConfigError::Invalid(
                "backoff_base_ms must be positive and at most backoff_max_ms".into(),
            ));
        }
        if self.site.is_empty() || !self.site.chars().all(|c| c.is_ascii_graphic()) {
            // Sent as the X-Site header: visible ASCII only.
            return Err(ConfigError::Invalid(format!(
                "site {:?} must be non-empty visible ASCII without spaces",
                self.site
            )));
        }
        if !(self.hub_url.starts_with("http://") || self.hub_url.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "hub_url {:?} must be an http:// or https:// URL",
                self.hub_url
            )));
        }
        Ok(())
    }

    /// The quiet period as a duration.
    pub fn quiet_period(&self) -> Duration {
        Duration::from_secs(self.quiet_period_secs)
    }

    /// The hub URL without a trailing slash, ready for appending paths.
    pub fn hub_base(&self) -> &str {
        self.hub_url.trim_end_matches('/')
    }

    /// Whether a C-STORE addressed to `called_ae` is STAT by configuration.
    pub fn is_stat_ae(&self, called_ae: &str) -> bool {
        let called = called_ae.trim();
        self.stat_ae_titles
            .iter()
            .any(|t| t.trim().eq_ignore_ascii_case(called))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = Config::default();
        c.validate().expect("defaults validate");
        assert_eq!(c.ae_title, "TOWNSHIP_GW");
        assert_eq!(c.listen, "0.0.0.0:11112");
        assert_eq!(c.batch_max_bytes, 32 * 1024 * 1024);
    }

    #[test]
    // figment's Jail API fixes the closure's error type; nothing to box on our side.
    #[allow(clippy::result_large_err)]
    fn file_then_env_override_defaults() {
        figment::Jail::expect_with(|jail| {
            jail.create_file(
                "gw.toml",
                "ae_title = \"GW_A\"\nquiet_period_secs = 3\nstat_ae_titles = [\"ER_CT\"]\n",
            )?;
            jail.set_env("GATEWAY_QUIET_PERIOD_SECS", "1");
            jail.set_env("GATEWAY_SITE", "township-7");
            let c = Config::load(Some(Path::new("gw.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.ae_title, "GW_A");
            assert_eq!(c.quiet_period_secs, 1);
            assert_eq!(c.site, "township-7");
            assert!(c.is_stat_ae("er_ct "));
            assert!(!c.is_stat_ae("TOWNSHIP_GW"));
            Ok(())
        });
    }

    #[test]
    // figment's Jail API fixes the closure's error type; nothing to box on our side.
    #[allow(clippy::result_large_err)]
    fn stat_ae_titles_from_the_environment() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_STAT_AE_TITLES", "ER_CT, ER_US");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(
                c.stat_ae_titles,
                vec!["ER_CT".to_string(), "ER_US".to_string()]
            );
            jail.set_env("GATEWAY_STAT_AE_TITLES", "[ER_DX]");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.stat_ae_titles, vec!["ER_DX".to_string()]);
            Ok(())
        });
    }

    #[test]
    fn missing_file_is_an_error() {
        assert!(Config::load(Some(Path::new("/nonexistent/gateway.toml"))).is_err());
    }

    #[test]
    fn invalid_values_are_refused() {
        let c = Config {
            ae_title: "THIS_AE_TITLE_IS_FAR_TOO_LONG".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            hub_url: "ftp://hub".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }
}
