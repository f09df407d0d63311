//! Gateway configuration: defaults, then an optional TOML file, then `GATEWAY_*`
//! environment variables (later sources win).

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};

/// Largest instance accepted by default: 2 GiB holds a long ultrasound cine or a
/// breast tomosynthesis; anything beyond is more likely an error than an exam.
pub const DEFAULT_MAX_INSTANCE_BYTES: u64 = 2 * 1024 * 1024 * 1024;

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
    /// The key the hub's administrator created for this site (shown to them once). Sent
    /// as `Authorization: Bearer <key>` on every request; the hub derives the site from
    /// it. Never logged or printed (`Debug` redacts it). Empty: no `Authorization`
    /// header, only allowed with an `http://` hub (test peers that need no key).
    /// Never serialized, so no dump of the configuration can leak it.
    #[serde(skip_serializing)]
    pub hub_key: Secret,
    /// A file holding the hub key (surrounding whitespace is trimmed); an alternative to
    /// `hub_key` that keeps the key out of the environment and the TOML file.
    pub hub_key_file: Option<PathBuf>,
    /// PEM file of the CA certificate(s) trusted for the hub. When set, only these roots
    /// are trusted (not the platform's).
    pub hub_ca_file: Option<PathBuf>,
    /// Pin: hex SHA-256 of the hub's leaf certificate (DER), e.g. from
    /// `openssl x509 -noout -fingerprint -sha256` (colons and case are ignored). The
    /// leaf must match; a chain to a CA is then only required if `hub_ca_file` is
    /// also set, so a self-signed hub certificate works.
    pub hub_cert_sha256: Option<String>,
    /// This township's site name: a label for the operator (`gateway status`, logs).
    /// The hub identifies the site by `hub_key`, not by this.
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
    /// Largest instance a C-STORE may send, in bytes; a larger one is refused (0xA700,
    /// out of resources) and nothing of it is kept.
    pub max_instance_bytes: u64,
    /// Largest P-DATA PDU we accept, in bytes. Bigger PDUs mean fewer reads per
    /// instance; memory per association stays around twice this.
    pub max_pdu: u32,
    /// Only accept associations whose called AE title is `ae_title` or one of
    /// `stat_ae_titles`. Off by default: a misconfigured modality should still be
    /// able to deliver, and the township network is closed.
    pub require_called_ae: bool,
    /// Seconds an association may stay silent before we abort it.
    pub association_idle_secs: u64,
    /// Seconds a new connection to the DICOM or MLLP port has to send its association
    /// request (after any TLS handshake) or its first MLLP frame; then it is closed, so
    /// connections that never speak cannot hold the slots.
    pub connection_open_secs: u64,
    /// Most connections one remote address may hold on each of the DICOM and MLLP
    /// ports (addresses in `trusted_addresses` are not limited).
    pub max_connections_per_address: usize,
    /// Slots of each port kept for `trusted_addresses` (when any are configured).
    pub reserved_connections: usize,
    /// The modalities' and the LIS's IP addresses: they keep `reserved_connections`
    /// slots however many other connections are open. A list, or in the environment
    /// also a comma-separated string.
    #[serde(deserialize_with = "list_or_csv")]
    pub trusted_addresses: Vec<String>,
    /// PEM certificate (chain) for DICOM TLS on the listener. With
    /// `dicom_tls_key_file`, the listener accepts only TLS associations.
    pub dicom_tls_cert_file: Option<PathBuf>,
    /// PEM private key for `dicom_tls_cert_file`.
    pub dicom_tls_key_file: Option<PathBuf>,
    /// PEM CA certificate(s): when set, DICOM TLS peers must present a client
    /// certificate issued by one of them.
    pub dicom_tls_ca_file: Option<PathBuf>,
    /// Address of the local report page and API for the township (`IP:PORT`; port 0
    /// picks a free one). Empty disables it. The page has no login: bind it to the
    /// township's internal interface only.
    pub report_listen: String,
    /// The hub's report verification keys, pinned: standard base64 of Ed25519 public
    /// keys. When set, only these verify reports and the hub's published keys are never
    /// fetched; when empty, they are fetched from `{hub_url}/api/signing-keys` over the
    /// verified TLS link and remembered. A list, or in the environment also a
    /// comma-separated string.
    #[serde(deserialize_with = "list_or_csv")]
    pub report_keys: Vec<String>,
    /// The township HIS's HL7 v2 MLLP listener (`host:port`). When set, every verified
    /// report version received from then on is also sent there as an ORU^R01 message.
    /// Empty (the default): no HL7.
    pub his_mllp_addr: String,
    /// MSH-5 (receiving application) of the HL7 messages.
    pub his_application: String,
    /// Address of the MLLP listener for laboratory results (HL7 v2 ORU^R01 / OUL^R22)
    /// (`IP:PORT`; port 0 picks a free one). Empty disables it.
    pub hl7_listen: String,
    /// Largest HL7 message accepted, in bytes; a longer one is refused (AE) and its
    /// connection closed.
    pub hl7_max_message_bytes: usize,
    /// Seconds an MLLP connection may stay silent before we close it (0: never).
    pub hl7_idle_secs: u64,
    /// The watched folder for ECG files (carts that only export files, and `gateway
    /// import`). Unset: `{data_dir}/ecg-import`; empty: no folder is watched.
    pub ecg_import_dir: Option<PathBuf>,
    /// Largest ECG file imported, in bytes; a larger one is quarantined (the folder) or
    /// refused (`gateway import`).
    pub ecg_max_file_bytes: u64,
}

/// A secret string such as the hub key: `Debug` never shows it, and reading it takes
/// an explicit [`Secret::expose`].
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    /// Wrap a secret value.
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Whether no secret is set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("Secret(<empty>)")
        } else {
            f.write_str("Secret(<redacted>)")
        }
    }
}

impl From<&str> for Secret {
    fn from(value: &str) -> Secret {
        Secret::new(value)
    }
}

impl From<String> for Secret {
    fn from(value: String) -> Secret {
        Secret::new(value)
    }
}

/// Keys whose environment values are taken verbatim: figment would otherwise read a
/// key or fingerprint made only of digits as a number (dropping leading zeros).
/// Base64 keys are taken verbatim too, so that no `=` or `+` is ever interpreted.
const VERBATIM_ENV_KEYS: &[&str] = &["hub_key", "hub_cert_sha256", "report_keys"];

impl Default for Config {
    fn default() -> Self {
        Config {
            ae_title: "TOWNSHIP_GW".into(),
            listen: "0.0.0.0:11112".into(),
            hub_url: "http://127.0.0.1:8080".into(),
            site: DEFAULT_SITE.into(),
            data_dir: PathBuf::from("./data/gateway"),
            quiet_period_secs: 10,
            batch_max_instances: 10,
            batch_max_bytes: 32 * 1024 * 1024,
            forward_concurrency: 4,
            stat_ae_titles: Vec::new(),
            backoff_base_ms: 500,
            backoff_max_ms: 60_000,
            max_associations: 32,
            max_instance_bytes: DEFAULT_MAX_INSTANCE_BYTES,
            max_pdu: 256 * 1024,
            require_called_ae: false,
            association_idle_secs: 600,
            connection_open_secs: 10,
            max_connections_per_address: 8,
            reserved_connections: 4,
            trusted_addresses: Vec::new(),
            hub_key: Secret::default(),
            hub_key_file: None,
            hub_ca_file: None,
            hub_cert_sha256: None,
            dicom_tls_cert_file: None,
            dicom_tls_key_file: None,
            dicom_tls_ca_file: None,
            report_listen: DEFAULT_REPORT_LISTEN.into(),
            report_keys: Vec::new(),
            his_mllp_addr: String::new(),
            his_application: "HIS".into(),
            hl7_listen: DEFAULT_HL7_LISTEN.into(),
            hl7_max_message_bytes: 4 * 1024 * 1024,
            hl7_idle_secs: 600,
            ecg_import_dir: None,
            ecg_max_file_bytes: DEFAULT_ECG_MAX_FILE_BYTES,
        }
    }
}

/// Default address of the MLLP listener: all interfaces, the port registered for HL7
/// over MLLP, where the township's laboratory systems expect it.
pub const DEFAULT_HL7_LISTEN: &str = "0.0.0.0:2575";

/// Default size cap of an imported ECG file: a 10 s 12-lead recording is well under a
/// megabyte even as XML; long recordings (Holter-like exports) stay far below this.
pub const DEFAULT_ECG_MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// The import folder's name under the data directory when `ecg_import_dir` is unset.
pub const DEFAULT_ECG_IMPORT_SUBDIR: &str = "ecg-import";

/// Default address of the local report page: loopback only, so nothing is exposed on
/// the network until the operator chooses the township's internal interface.
pub const DEFAULT_REPORT_LISTEN: &str = "127.0.0.1:8090";

/// The site label that stands for "not configured": reports are only checked against
/// the site when the operator set a real label (see [`Config::report_site`]).
pub const DEFAULT_SITE: &str = "local";

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

/// A path setting, with an empty value (e.g. `GATEWAY_HUB_CA_FILE=`) meaning unset.
fn non_empty(path: &Option<PathBuf>) -> Option<&Path> {
    path.as_deref().filter(|p| !p.as_os_str().is_empty())
}

/// Check that a key can travel in an HTTP header, without ever quoting it.
fn check_key(key: &str) -> Result<(), String> {
    if key.chars().all(|c| c.is_ascii_graphic()) {
        Ok(())
    } else {
        Err("the hub key may only contain visible ASCII characters (no spaces)".into())
    }
}

/// Parse a SHA-256 fingerprint: 64 hex digits, optionally separated by colons (as
/// `openssl x509 -fingerprint -sha256` prints it), any case.
pub fn parse_sha256_pin(text: &str) -> Option<[u8; 32]> {
    let digits: String = text.trim().chars().filter(|c| *c != ':').collect();
    let mut pin = [0u8; 32];
    hex::decode_to_slice(digits, &mut pin).ok()?;
    Some(pin)
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
        // A verbatim environment value may still be written as a JSON list.
        ListOrCsv::Csv(s) if s.trim_start().starts_with('[') => {
            serde_json::from_str(&s).map_err(serde::de::Error::custom)?
        }
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
        figment = figment.merge(Env::prefixed("GATEWAY_").ignore(VERBATIM_ENV_KEYS));
        for key in VERBATIM_ENV_KEYS {
            if let Ok(value) = std::env::var(format!("GATEWAY_{}", key.to_ascii_uppercase())) {
                figment = figment.merge(Serialized::default(key, value));
            }
        }
        let config: Config = figment.extract().map_err(Box::new)?;
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
        if self.connection_open_secs == 0 || self.max_connections_per_address == 0 {
            return Err(ConfigError::Invalid(
                "connection_open_secs and max_connections_per_address must be at least 1".into(),
            ));
        }
        for a in &self.trusted_addresses {
            if a.trim().parse::<std::net::IpAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "trusted_addresses: {a:?} is not an IP address"
                )));
            }
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
        if self.site.trim().is_empty() || self.site.chars().any(char::is_control) {
            return Err(ConfigError::Invalid(format!(
                "site {:?} must be a non-empty label without control characters",
                self.site
            )));
        }
        if !(self.hub_url.starts_with("http://") || self.hub_url.starts_with("https://")) {
            return Err(ConfigError::Invalid(format!(
                "hub_url {:?} must be an http:// or https:// URL",
                self.hub_url
            )));
        }
        self.validate_hub_security()?;
        self.validate_dicom_tls()?;
        self.validate_reports()?;
        self.validate_hl7()?;
        self.validate_ecg()
    }

    fn validate_ecg(&self) -> Result<(), ConfigError> {
        // The bytes go into one database row: SQLite's default limit is 1e9 bytes.
        if !(1024..=512 * 1024 * 1024).contains(&self.ecg_max_file_bytes) {
            return Err(ConfigError::Invalid(format!(
                "ecg_max_file_bytes {} must be between 1024 and 536870912",
                self.ecg_max_file_bytes
            )));
        }
        Ok(())
    }

    /// The watched ECG import folder: `ecg_import_dir`, `{data_dir}/ecg-import` when
    /// unset, `None` when set empty (disabled).
    pub fn ecg_import_path(&self) -> Option<PathBuf> {
        match &self.ecg_import_dir {
            None => Some(self.data_dir.join(DEFAULT_ECG_IMPORT_SUBDIR)),
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.clone()),
        }
    }

    fn validate_hl7(&self) -> Result<(), ConfigError> {
        if let Some(listen) = self.hl7_listen_addr() {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "hl7_listen {listen:?} must be IP:PORT (or empty to disable the MLLP listener)"
                )));
            }
        }
        if !(1024..=256 * 1024 * 1024).contains(&self.hl7_max_message_bytes) {
            return Err(ConfigError::Invalid(format!(
                "hl7_max_message_bytes {} must be between 1024 and 268435456",
                self.hl7_max_message_bytes
            )));
        }
        Ok(())
    }

    /// The MLLP listener address, `None` when disabled (empty).
    pub fn hl7_listen_addr(&self) -> Option<&str> {
        Some(self.hl7_listen.trim()).filter(|s| !s.is_empty())
    }

    /// The trusted addresses, parsed (validation refused any that are not addresses).
    pub fn trusted_ips(&self) -> Vec<std::net::IpAddr> {
        self.trusted_addresses
            .iter()
            .filter_map(|a| a.trim().parse().ok())
            .collect()
    }

    /// How long a new connection has to open its association or send its first frame.
    pub fn connection_open(&self) -> Duration {
        Duration::from_secs(self.connection_open_secs.max(1))
    }

    /// How long an MLLP connection may stay silent; `None` for no limit.
    pub fn hl7_idle(&self) -> Option<Duration> {
        (self.hl7_idle_secs > 0).then(|| Duration::from_secs(self.hl7_idle_secs))
    }

    fn validate_reports(&self) -> Result<(), ConfigError> {
        if let Some(listen) = self.report_listen_addr() {
            if listen.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "report_listen {listen:?} must be IP:PORT (or empty to disable the page)"
                )));
            }
        }
        if let Some(his) = self.his_addr() {
            if his
                .rsplit_once(':')
                .is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(ConfigError::Invalid(format!(
                    "his_mllp_addr {his:?} must be host:port (or empty for no HL7)"
                )));
            }
        }
        let app = self.his_application.trim();
        if app.is_empty()
            || app.len() > 180
            || app.chars().any(|c| c.is_control() || "|^~\\&".contains(c))
        {
            return Err(ConfigError::Invalid(format!(
                "his_application {:?} must be a non-empty HL7 name without |^~\\&",
                self.his_application
            )));
        }
        for (i, key) in self.report_keys.iter().enumerate() {
            formats::report::decode_public_key(key).map_err(|e| {
                ConfigError::Invalid(format!(
                    "report_keys[{i}] is not a base64 Ed25519 public key: {e}"
                ))
            })?;
        }
        Ok(())
    }

    /// The HIS's MLLP address, `None` when HL7 forwarding is off.
    pub fn his_addr(&self) -> Option<&str> {
        Some(self.his_mllp_addr.trim()).filter(|s| !s.is_empty())
    }

    /// The report page address, `None` when disabled (empty).
    pub fn report_listen_addr(&self) -> Option<&str> {
        Some(self.report_listen.trim()).filter(|s| !s.is_empty())
    }

    /// The pinned report verification keys (validated by [`Config::validate`]).
    pub fn pinned_report_keys(&self) -> Result<Vec<formats::report::VerifyingKey>, ConfigError> {
        self.report_keys
            .iter()
            .map(|k| {
                formats::report::decode_public_key(k)
                    .map_err(|e| ConfigError::Invalid(format!("report_keys: {e}")))
            })
            .collect()
    }

    /// The site reports must be for, when the operator configured one: the default
    /// label `local` means "not configured" (it was only ever a display label, and
    /// checking against it would refuse every report of a gateway set up before).
    pub fn report_site(&self) -> Option<&str> {
        let site = self.site.trim();
        (site != DEFAULT_SITE).then_some(site)
    }

    /// The key, trust and pin settings for the hub. Files are not read here (that
    /// happens when the gateway starts), so `gateway status --config` works for an
    /// operator who cannot read the key file.
    fn validate_hub_security(&self) -> Result<(), ConfigError> {
        let key_file = non_empty(&self.hub_key_file);
        if !self.hub_key.is_empty() && key_file.is_some() {
            return Err(ConfigError::Invalid(
                "set hub_key or hub_key_file, not both".into(),
            ));
        }
        if !self.hub_key.is_empty() {
            // The key is never quoted in the message.
            check_key(self.hub_key.expose()).map_err(ConfigError::Invalid)?;
        }
        let https = self.hub_is_https();
        if https && self.hub_key.is_empty() && key_file.is_none() {
            return Err(ConfigError::Invalid(
                "hub_url is https: set hub_key or hub_key_file (the key the hub's \
                 administrator created for this site)"
                    .into(),
            ));
        }
        if let Some(pin) = &self.hub_cert_sha256 {
            if !pin.trim().is_empty() && parse_sha256_pin(pin).is_none() {
                return Err(ConfigError::Invalid(format!(
                    "hub_cert_sha256 {pin:?} must be 64 hex digits (the SHA-256 of the hub's \
                     certificate; colons allowed)"
                )));
            }
        }
        if !https && (non_empty(&self.hub_ca_file).is_some() || self.hub_cert_pin().is_some()) {
            // Trust settings on a plain URL would look like protection and be none.
            return Err(ConfigError::Invalid(
                "hub_ca_file / hub_cert_sha256 are set but hub_url is not https://".into(),
            ));
        }
        Ok(())
    }

    fn validate_dicom_tls(&self) -> Result<(), ConfigError> {
        let cert = non_empty(&self.dicom_tls_cert_file).is_some();
        let key = non_empty(&self.dicom_tls_key_file).is_some();
        if cert != key {
            return Err(ConfigError::Invalid(
                "dicom_tls_cert_file and dicom_tls_key_file must be set together".into(),
            ));
        }
        if !cert && non_empty(&self.dicom_tls_ca_file).is_some() {
            return Err(ConfigError::Invalid(
                "dicom_tls_ca_file needs dicom_tls_cert_file and dicom_tls_key_file".into(),
            ));
        }
        Ok(())
    }

    /// Whether the hub is reached over TLS.
    pub fn hub_is_https(&self) -> bool {
        self.hub_url.starts_with("https://")
    }

    /// The configured pin as 32 bytes, if any (validated by [`Config::validate`]).
    pub fn hub_cert_pin(&self) -> Option<[u8; 32]> {
        self.hub_cert_sha256.as_deref().and_then(parse_sha256_pin)
    }

    /// The hub CA file, if set (an empty value counts as unset).
    pub fn hub_ca_path(&self) -> Option<&Path> {
        non_empty(&self.hub_ca_file)
    }

    /// The DICOM TLS certificate, key and optional client CA files, when TLS is on.
    pub fn dicom_tls_paths(&self) -> Option<(&Path, &Path, Option<&Path>)> {
        Some((
            non_empty(&self.dicom_tls_cert_file)?,
            non_empty(&self.dicom_tls_key_file)?,
            non_empty(&self.dicom_tls_ca_file),
        ))
    }

    /// The hub key: `hub_key`, or the trimmed content of `hub_key_file`. `None` when
    /// neither is set. Reads the file, so it is called once at start-up.
    pub fn resolve_hub_key(&self) -> Result<Option<Secret>, ConfigError> {
        if let Some(path) = non_empty(&self.hub_key_file) {
            let text = std::fs::read_to_string(path).map_err(|e| {
                ConfigError::Invalid(format!("hub_key_file {}: {e}", path.display()))
            })?;
            let key = text.trim();
            if key.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "hub_key_file {} is empty",
                    path.display()
                )));
            }
            check_key(key).map_err(|why| {
                ConfigError::Invalid(format!("hub_key_file {}: {why}", path.display()))
            })?;
            return Ok(Some(Secret::new(key)));
        }
        Ok((!self.hub_key.is_empty()).then(|| self.hub_key.clone()))
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
    // figment's Jail API fixes the closure's error type; nothing to box on our side.
    #[allow(clippy::result_large_err)]
    fn report_settings_from_file_and_environment() {
        let key = formats::report::encode_public_key(
            &formats::report::SigningKey::from_bytes(&[5u8; 32]).verifying_key(),
        );
        let other = formats::report::encode_public_key(
            &formats::report::SigningKey::from_bytes(&[6u8; 32]).verifying_key(),
        );
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.report_listen_addr(), Some(DEFAULT_REPORT_LISTEN));
            assert!(c.report_keys.is_empty());
            assert_eq!(c.report_site(), None, "the default label is not a site");
            jail.create_file(
                "gw.toml",
                &format!("report_listen = \"10.0.0.5:8090\"\nreport_keys = [\"{key}\"]\nsite = \"township-a\"\n"),
            )?;
            let c = Config::load(Some(Path::new("gw.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.report_listen_addr(), Some("10.0.0.5:8090"));
            assert_eq!(c.pinned_report_keys().map_err(|e| e.to_string())?.len(), 1);
            assert_eq!(c.report_site(), Some("township-a"));
            // Base64 in the environment is taken verbatim, as a list or comma-separated.
            jail.set_env("GATEWAY_REPORT_KEYS", format!("{key},{other}"));
            jail.set_env("GATEWAY_REPORT_LISTEN", "");
            let c = Config::load(Some(Path::new("gw.toml"))).map_err(|e| e.to_string())?;
            assert_eq!(c.report_keys, vec![key.clone(), other.clone()]);
            assert_eq!(c.report_listen_addr(), None, "empty disables the page");
            jail.set_env("GATEWAY_REPORT_KEYS", format!("[\"{other}\"]"));
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.report_keys, vec![other.clone()]);
            Ok(())
        });
        let bad_key = Config {
            report_keys: vec!["AAAA".into()],
            ..Config::default()
        };
        assert!(bad_key.validate().is_err());
        let bad_listen = Config {
            report_listen: "localhost".into(),
            ..Config::default()
        };
        assert!(bad_listen.validate().is_err());
        for (addr, ok) in [
            ("his.township:2575", true),
            ("10.0.0.9:2575", true),
            ("", true),
            ("his.township", false),
            (":2575", false),
            ("his:port", false),
        ] {
            let c = Config {
                his_mllp_addr: addr.into(),
                ..Config::default()
            };
            assert_eq!(c.validate().is_ok(), ok, "{addr:?}");
        }
        let c = Config {
            his_application: "HIS|X".into(),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn an_https_hub_needs_a_key_an_http_one_may_go_without() {
        let c = Config {
            hub_url: "https://hub.county.example".into(),
            ..Config::default()
        };
        let err = c.validate().expect_err("https without key");
        assert!(err.to_string().contains("hub_key"), "{err}");
        let c = Config {
            hub_key: "gk_abc".into(),
            ..c
        };
        c.validate().expect("https with key");
        Config::default()
            .validate()
            .expect("http without key (test peers)");
        let both = Config {
            hub_key_file: Some("/etc/gateway/key".into()),
            ..c
        };
        assert!(both.validate().is_err(), "key and key file together");
        let spaced = Config {
            hub_key: "has space".into(),
            ..Config::default()
        };
        let err = spaced.validate().expect_err("space in key");
        assert!(!err.to_string().contains("has space"), "key quoted: {err}");
    }

    #[test]
    fn the_key_file_is_read_and_trimmed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("hub.key");
        std::fs::write(&path, "  gk_0123456789abcdef\n").expect("write");
        let c = Config {
            hub_url: "https://hub".into(),
            hub_key_file: Some(path.clone()),
            ..Config::default()
        };
        c.validate().expect("valid");
        let key = c.resolve_hub_key().expect("read").expect("some key");
        assert_eq!(key.expose(), "gk_0123456789abcdef");
        std::fs::write(&path, "\n").expect("write");
        assert!(c.resolve_hub_key().is_err(), "empty key file");
        let missing = Config {
            hub_key_file: Some(dir.path().join("absent")),
            ..c
        };
        assert!(missing.resolve_hub_key().is_err());
        assert!(Config::default().resolve_hub_key().expect("none").is_none());
    }

    #[test]
    fn debug_output_redacts_the_key() {
        let c = Config {
            hub_key: "gk_supersecret".into(),
            ..Config::default()
        };
        let shown = format!("{c:?} {c:#?}");
        assert!(!shown.contains("supersecret"), "{shown}");
        assert!(shown.contains("<redacted>"), "{shown}");
        // nor is it ever serialized
        let json = serde_json::to_string(&c).expect("serializes");
        assert!(!json.contains("supersecret"), "{json}");
    }

    #[test]
    // figment's Jail API fixes the closure's error type; nothing to box on our side.
    #[allow(clippy::result_large_err)]
    fn key_and_pin_from_the_environment_are_taken_verbatim() {
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_HUB_URL", "https://hub:8443");
            jail.set_env("GATEWAY_HUB_KEY", "000123");
            let pin = "0".repeat(64);
            jail.set_env("GATEWAY_HUB_CERT_SHA256", &pin);
            jail.set_env("GATEWAY_HUB_CA_FILE", "/etc/gateway/hub-ca.pem");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.hub_key.expose(), "000123");
            assert_eq!(c.hub_cert_sha256.as_deref(), Some(pin.as_str()));
            assert_eq!(c.hub_cert_pin(), Some([0u8; 32]));
            assert_eq!(c.hub_ca_path(), Some(Path::new("/etc/gateway/hub-ca.pem")));
            Ok(())
        });
    }

    #[test]
    fn pins_are_hex_sha256_with_optional_colons() {
        let hex = "AB".repeat(32);
        assert_eq!(parse_sha256_pin(&hex), Some([0xAB; 32]));
        let colons = vec!["ab"; 32].join(":");
        assert_eq!(parse_sha256_pin(&colons), Some([0xAB; 32]));
        assert_eq!(parse_sha256_pin("abcd"), None);
        let c = Config {
            hub_url: "https://hub".into(),
            hub_key: "k".into(),
            hub_cert_sha256: Some("not-a-fingerprint".into()),
            ..Config::default()
        };
        assert!(c.validate().is_err());
    }

    #[test]
    fn trust_settings_need_an_https_hub() {
        let c = Config {
            hub_ca_file: Some("/etc/ca.pem".into()),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            hub_cert_sha256: Some("ab".repeat(32)),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        // an empty value (e.g. `GATEWAY_HUB_CA_FILE=`) means unset
        let c = Config {
            hub_ca_file: Some("".into()),
            ..Config::default()
        };
        c.validate().expect("empty path is unset");
    }

    #[test]
    fn dicom_tls_needs_certificate_and_key_together() {
        let c = Config {
            dicom_tls_cert_file: Some("/etc/gw.pem".into()),
            ..Config::default()
        };
        assert!(c.validate().is_err());
        let c = Config {
            dicom_tls_key_file: Some("/etc/gw.key".into()),
            ..c
        };
        c.validate().expect("both set");
        assert!(c.dicom_tls_paths().is_some());
        let c = Config {
            dicom_tls_ca_file: Some("/etc/ca.pem".into()),
            ..Config::default()
        };
        assert!(
            c.validate().is_err(),
            "client CA without server certificate"
        );
        assert!(Config::default().dicom_tls_paths().is_none());
    }

    #[test]
    // figment's Jail API fixes the closure's error type; nothing to box on our side.
    #[allow(clippy::result_large_err)]
    fn hl7_settings() {
        let c = Config::default();
        assert_eq!(c.hl7_listen_addr(), Some("0.0.0.0:2575"));
        assert_eq!(c.hl7_max_message_bytes, 4 * 1024 * 1024);
        assert_eq!(c.hl7_idle(), Some(Duration::from_secs(600)));
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_HL7_LISTEN", "");
            jail.set_env("GATEWAY_HL7_IDLE_SECS", "0");
            jail.set_env("GATEWAY_HL7_MAX_MESSAGE_BYTES", "65536");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.hl7_listen_addr(), None, "empty disables the listener");
            assert_eq!(c.hl7_idle(), None);
            assert_eq!(c.hl7_max_message_bytes, 65536);
            Ok(())
        });
        for (listen, max, ok) in [
            ("127.0.0.1:0", 4096, true),
            ("lab-host:2575", 4096, false),
            ("0.0.0.0:2575", 10, false),
        ] {
            let c = Config {
                hl7_listen: listen.into(),
                hl7_max_message_bytes: max,
                ..Config::default()
            };
            assert_eq!(c.validate().is_ok(), ok, "{listen} {max}");
        }
    }

    #[test]
    // figment's Jail API fixes the closure's error type; nothing to box on our side.
    #[allow(clippy::result_large_err)]
    fn ecg_settings() {
        let c = Config {
            data_dir: PathBuf::from("/var/gw"),
            ..Config::default()
        };
        assert_eq!(
            c.ecg_import_path(),
            Some(PathBuf::from("/var/gw/ecg-import"))
        );
        assert_eq!(c.ecg_max_file_bytes, 64 * 1024 * 1024);
        figment::Jail::expect_with(|jail| {
            jail.set_env("GATEWAY_ECG_IMPORT_DIR", "");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.ecg_import_path(), None, "empty disables the folder");
            jail.set_env("GATEWAY_ECG_IMPORT_DIR", "/srv/ecg");
            jail.set_env("GATEWAY_ECG_MAX_FILE_BYTES", "1048576");
            let c = Config::load(None).map_err(|e| e.to_string())?;
            assert_eq!(c.ecg_import_path(), Some(PathBuf::from("/srv/ecg")));
            assert_eq!(c.ecg_max_file_bytes, 1024 * 1024);
            Ok(())
        });
        let tiny = Config {
            ecg_max_file_bytes: 10,
            ..Config::default()
        };
        assert!(tiny.validate().is_err());
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
