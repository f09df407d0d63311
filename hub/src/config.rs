//! Hub configuration: defaults, then a TOML file, then `HUB_*` environment variables.

use std::path::{Path, PathBuf};

use figment::providers::{Env, Format, Serialized, Toml};
use figment::Figment;
use serde::{Deserialize, Serialize};
use storage::{BlobConfig, StorageConfig};

/// Everything the hub process needs to start.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(default)]
pub struct HubConfig {
    /// Address to listen on for HTTP.
    pub listen: String,
    /// Data directory: SQLite file, local blobs and temporary files by default.
    pub data_dir: PathBuf,
    /// Database URL; default `sqlite://{data_dir}/hub.db`.
    pub database_url: Option<String>,
    /// Blob store URL (directory or `s3://bucket?endpoint=...`); default `{data_dir}/blobs`.
    pub blob_url: Option<String>,
    /// Largest instance accepted by STOW-RS, in bytes.
    pub max_instance_bytes: u64,
    /// Database connections of this process.
    pub max_db_connections: u32,
    /// Also serve the DICOMweb read routes (embedded default); off when viewer-api runs apart.
    pub serve_viewer: bool,
    /// HTTP worker threads; default: one per core.
    pub workers: Option<usize>,
    /// PEM certificate chain for HTTPS; with `tls_key_file` the hub serves HTTPS only.
    pub tls_cert_file: Option<PathBuf>,
    /// PEM private key for HTTPS.
    pub tls_key_file: Option<PathBuf>,
    /// Allow plain HTTP on a non-loopback address (only behind a TLS-terminating proxy).
    pub plain_http_behind_proxy: bool,
    /// Logins and sessions (`[access]` in the file, `HUB_ACCESS__SESSION_HOURS`, ...).
    pub access: access::AccessConfig,
    /// Reading targets per priority and kind (`[deadlines]`).
    pub deadlines: storage::worklist::DeadlineTargets,
    /// How long a claim lasts unless renewed, minutes.
    pub claim_lease_minutes: i64,
    /// Ed25519 report signing key (32 raw bytes, created if missing); default
    /// `{data_dir}/report-signing.key`. Replicas may share one or each keep their own:
    /// every key used is published.
    pub signing_key_file: Option<PathBuf>,
    /// Font with Chinese glyphs for printed reports; default: the usual Debian paths.
    pub report_font: Option<PathBuf>,
    /// Name printed at the head of reports.
    pub hospital_name: String,
    /// Critical limits per test (`[[critical_limits]]`); default: `hub::lab::default_limits`.
    pub critical_limits: Vec<crate::lab::Limit>,
    /// Seconds a township has to acknowledge a critical value before it escalates.
    pub critical_ack_secs: i64,
    /// Web origins (`scheme://host[:port]`) whose pages may call the hub with credentials
    /// (CORS): a DICOMweb viewer such as OHIF served from another origin. In the file a
    /// list, in the environment `HUB_CORS_ORIGINS=https://a,https://b`. Default: none
    /// (same origin only); `*` is refused, as credentials must never go to any origin.
    #[serde(deserialize_with = "origins")]
    pub cors_origins: Vec<String>,
}

/// `cors_origins` from a list or a comma-separated string, each checked to be a bare
/// origin (a bad one would otherwise surface only when the first worker starts).
fn origins<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    let raw = match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => vec![s],
        OneOrMany::Many(v) => v,
    };
    let mut out = Vec::new();
    for origin in raw.iter().flat_map(|s| s.split(',')).map(str::trim) {
        if origin.is_empty() {
            continue;
        }
        let rest = origin
            .strip_prefix("https://")
            .or_else(|| origin.strip_prefix("http://"));
        let ok = rest.is_some_and(|host| {
            !host.is_empty()
                && !host.contains(['/', '*', '?', '#', ' '])
                && origin.parse::<actix_web::http::Uri>().is_ok()
        });
        if !ok {
            return Err(serde::de::Error::custom(format!(
                "cors_origins: {origin:?} is not an origin like https://viewer.example.org:3000"
            )));
        }
        out.push(origin.to_string());
    }
    Ok(out)
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            listen: "127.0.0.1:8080".into(),
            data_dir: PathBuf::from("./data/hub"),
            database_url: None,
            blob_url: None,
            max_instance_bytes: 2 * 1024 * 1024 * 1024,
            max_db_connections: 8,
            serve_viewer: true,
            workers: None,
            tls_cert_file: None,
            tls_key_file: None,
            plain_http_behind_proxy: false,
            access: access::AccessConfig::default(),
            deadlines: storage::worklist::DeadlineTargets::default(),
            claim_lease_minutes: 30,
            signing_key_file: None,
            report_font: None,
            hospital_name: "县人民医院 区域诊断中心".into(),
            critical_limits: crate::lab::default_limits(),
            critical_ack_secs: 15 * 60,
            cors_origins: Vec::new(),
        }
    }
}

impl HubConfig {
    /// Load from an optional TOML file and the environment (`HUB_LISTEN`, `HUB_DATABASE_URL`, ...).
    pub fn load(file: Option<&Path>) -> Result<Self, Box<figment::Error>> {
        let mut fig = Figment::from(Serialized::defaults(HubConfig::default()));
        if let Some(file) = file {
            fig = fig.merge(Toml::file_exact(file));
        }
        fig.merge(Env::prefixed("HUB_").split("__"))
            .extract()
            .map_err(Box::new)
    }

    /// The storage configuration this resolves to.
    pub fn storage(&self) -> Result<StorageConfig, storage::StorageError> {
        let database_url = self
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}", self.data_dir.join("hub.db").display()));
        let blobs = match &self.blob_url {
            Some(url) => BlobConfig::from_url(url)?,
            None => BlobConfig::Local(self.data_dir.join("blobs")),
        };
        Ok(StorageConfig {
            database_url,
            max_connections: self.max_db_connections,
            blobs,
        })
    }

    /// The TLS certificate and key files, when HTTPS is configured; an error when only
    /// one of them is.
    pub fn tls_files(&self) -> Result<Option<(&Path, &Path)>, String> {
        match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(c), Some(k)) => Ok(Some((c, k))),
            (None, None) => Ok(None),
            _ => Err("tls_cert_file and tls_key_file must be set together".into()),
        }
    }

    /// Directory for request bodies being received.
    pub fn tmp_dir(&self) -> PathBuf {
        self.data_dir.join("tmp")
    }
}
