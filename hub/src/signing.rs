//! The hub's report signing key: 32 random bytes in a file only the hub can read,
//! created on first use, its public half published in the database.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use formats::report::{encode_public_key, key_id, SigningKey};
use rand::RngCore;

/// The key that signs reports in this process.
pub struct ReportSigner {
    /// Private key.
    pub key: SigningKey,
    /// Its published id.
    pub key_id: String,
}

/// Why the signing key cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum SigningKeyError {
    /// Reading or writing the key file failed.
    #[error("signing key file {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// What failed.
        source: std::io::Error,
    },
    /// The file is not 32 bytes.
    #[error("signing key file {0} must hold exactly 32 bytes")]
    Malformed(String),
    /// Publishing the public key failed.
    #[error(transparent)]
    Storage(#[from] storage::StorageError),
}

impl ReportSigner {
    /// Load the key from `path`, creating it (mode 0600) when the file does not exist,
    /// and publish its public half.
    pub async fn open(path: &Path, db: &storage::Db) -> Result<Self, SigningKeyError> {
        let io = |source| SigningKeyError::Io {
            path: path.display().to_string(),
            source,
        };
        let bytes = match std::fs::read(path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut bytes = [0u8; 32];
                rand::rng().fill_bytes(&mut bytes);
                let mut f = std::fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(path)
                    .map_err(io)?;
                f.write_all(&bytes).map_err(io)?;
                f.sync_all().map_err(io)?;
                bytes.to_vec()
            }
            Err(e) => return Err(io(e)),
        };
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| SigningKeyError::Malformed(path.display().to_string()))?;
        let key = SigningKey::from_bytes(&bytes);
        let key_id = key_id(&key.verifying_key());
        storage::reports::register_signing_key(
            db,
            &key_id,
            &encode_public_key(&key.verifying_key()),
        )
        .await?;
        Ok(ReportSigner { key, key_id })
    }
}
