//! Storage of the regional hub: the metadata index (sqlx, SQLite or PostgreSQL) and the
//! blob store for original DICOM files (object_store, local directory or S3).
//!
//! The rest of the code sees one API, [`Storage`], whichever backends configuration chose.

// Defined before the modules so that every one of them can use it.
/// Declares a closed set of names stored as text, with `as_str` and `parse`.
macro_rules! stored_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
        #[serde(rename_all = "lowercase")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            /// Every value, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            /// The stored (and API) name.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }

            /// Parse the stored name.
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod accounts;
pub mod audit;
pub mod blobs;
mod db;
pub mod ecg;
pub mod exams;
pub mod index;
pub mod lab;
pub mod qido;
pub mod reports;
pub mod scope;
pub mod sessions;
pub mod worklist;

pub use blobs::{BlobConfig, BlobStore, EntrySync};
pub use db::{now_ms, Backend, Db};

/// Errors from the storage layer, classified so callers can tell a retryable outage from
/// a refusal.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration could not be applied.
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// The blob store failed.
    #[error("blob store error: {0}")]
    Blob(#[from] object_store::Error),
    /// A blob does not exist.
    #[error("blob {0} not found")]
    BlobNotFound(String),
    /// Reading or writing a local file failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The configuration names something we cannot use.
    #[error("invalid storage configuration: {0}")]
    Config(String),
    /// Input that cannot be stored as given (names the problem).
    #[error("{0}")]
    Invalid(String),
    /// The thing to create exists already.
    #[error("{0}")]
    Duplicate(String),
    /// The change conflicts with the current state (names why).
    #[error("{0}")]
    Conflict(String),
    /// The thing to change does not exist.
    #[error("{0} not found")]
    NotFound(String),
    /// Stored data could not be decoded (e.g. metadata that is not JSON).
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
}

/// Result type of this crate.
pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// Where the metadata database and the blobs live.
#[derive(Debug, Clone)]
pub struct StorageConfig {
    /// `sqlite://path/to/hub.db` or `postgres://user@host:port/db`.
    pub database_url: String,
    /// Maximum database connections of this process.
    pub max_connections: u32,
    /// Blob store location.
    pub blobs: BlobConfig,
}

/// The index and the blob store together.
#[derive(Clone)]
pub struct Storage {
    /// Metadata database.
    pub db: Db,
    /// Original files.
    pub blobs: BlobStore,
}

impl Storage {
    /// Connect to both backends and run the database migrations.
    pub async fn open(config: &StorageConfig) -> Result<Self> {
        let db = Db::connect(&config.database_url, config.max_connections).await?;
        db.migrate().await?;
        let blobs = BlobStore::open(&config.blobs)?;
        Ok(Storage { db, blobs })
    }
}
