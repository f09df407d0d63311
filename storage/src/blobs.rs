//! Original DICOM files in object storage: a local directory or an S3-compatible bucket.

use std::path::{Path as FsPath, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::BoxStream;
use futures_util::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, WriteMultipart};
use tokio::io::AsyncReadExt;

use crate::{Result, StorageError};

/// Files at most this large are written with one PUT; larger ones are streamed in parts.
const SINGLE_PUT_MAX: u64 = 8 * 1024 * 1024;
const PART_SIZE: usize = 8 * 1024 * 1024;

/// Where blobs are kept.
#[derive(Debug, Clone)]
pub enum BlobConfig {
    /// A local directory (created if missing); writes are fsynced.
    Local(PathBuf),
    /// An S3-compatible bucket.
    S3 {
        /// Endpoint URL, e.g. `http://127.0.0.1:9000`; None for AWS itself.
        endpoint: Option<String>,
        /// Bucket name.
        bucket: String,
        /// Key prefix inside the bucket (several hubs or test runs can share a bucket).
        prefix: Option<String>,
        /// Region (any string for most S3-compatible servers).
        region: String,
        /// Access key ID.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
    },
}

impl BlobConfig {
    /// Parse a storage URL: a path or `file:///path` for a local directory, or
    /// `s3://bucket[/prefix]?endpoint=http://host:port&region=r` with credentials taken from
    /// `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY`.
    pub fn from_url(url: &str) -> Result<Self> {
        if let Some(rest) = url.strip_prefix("s3://") {
            let (location, query) = rest.split_once('?').unwrap_or((rest, ""));
            let (bucket, prefix) = location.split_once('/').unwrap_or((location, ""));
            let prefix = prefix.trim_matches('/');
            if bucket.is_empty() {
                return Err(StorageError::Config(format!(
                    "S3 URL has no bucket name: {url:?}"
                )));
            }
            let mut endpoint = None;
            let mut region = "us-east-1".to_string();
            for pair in query.split('&').filter(|p| !p.is_empty()) {
                match pair.split_once('=') {
                    Some(("endpoint", v)) => endpoint = Some(v.to_string()),
                    Some(("region", v)) => region = v.to_string(),
                    _ => {
                        return Err(StorageError::Config(format!(
                            "unknown S3 URL parameter {pair:?}"
                        )))
                    }
                }
            }
            let env = |k: &str| {
                std::env::var(k)
                    .map_err(|_| StorageError::Config(format!("{k} must be set for S3 storage")))
            };
            Ok(BlobConfig::S3 {
                endpoint,
                bucket: bucket.to_string(),
                prefix: (!prefix.is_empty()).then(|| prefix.to_string()),
                region,
                access_key_id: env("AWS_ACCESS_KEY_ID")?,
                secret_access_key: env("AWS_SECRET_ACCESS_KEY")?,
            })
        } else {
            let path = url.strip_prefix("file://").unwrap_or(url);
            if path.is_empty() {
                return Err(StorageError::Config("empty blob directory".into()));
            }
            Ok(BlobConfig::Local(PathBuf::from(path)))
        }
    }
}

/// The blob store.
#[derive(Clone, Debug)]
pub struct BlobStore {
    store: Arc<dyn ObjectStore>,
    /// Root directory when the store is a local directory (see [`BlobStore::put_file`]).
    local_root: Option<PathBuf>,
}

impl BlobStore {
    /// Open the configured store.
    pub fn open(config: &BlobConfig) -> Result<Self> {
        let mut local_root = None;
        let store: Arc<dyn ObjectStore> = match config {
            BlobConfig::Local(dir) => {
                std::fs::create_dir_all(dir)?;
                local_root = Some(std::fs::canonicalize(dir)?);
                // fsync: a STOW-RS success is an acknowledgement that the file is durable.
                Arc::new(LocalFileSystem::new_with_prefix(dir)?.with_fsync(true))
            }
            BlobConfig::S3 {
                endpoint,
                bucket,
                prefix,
                region,
                access_key_id,
                secret_access_key,
            } => {
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_region(region)
                    .with_access_key_id(access_key_id)
                    .with_secret_access_key(secret_access_key);
                if let Some(endpoint) = endpoint {
                    b = b
                        .with_endpoint(endpoint)
                        .with_allow_http(endpoint.starts_with("http://"))
                        .with_virtual_hosted_style_request(false);
                }
                let s3 = b.build()?;
                match prefix {
                    Some(p) => Arc::new(PrefixStore::new(s3, p.as_str())),
                    None => Arc::new(s3),
                }
            }
        };
        Ok(BlobStore { store, local_root })
    }

    /// Put a local file into the store under `key`, durably. The file is consumed: on a
    /// local directory on the same filesystem it is fsynced and renamed into place
    /// (no copy: ingest throughput is bound by this); otherwise it is streamed up, large
    /// files in parts, never held in memory whole.
    pub async fn put_file(&self, key: &str, file: &FsPath, size: u64) -> Result<()> {
        let entry = self.put_file_deferred(key, file, size).await?;
        self.sync_entries(vec![entry]).await
    }

    /// [`BlobStore::put_file`] except that, in a local directory, the blob's directory
    /// entry is not yet durable (its bytes are): pass what this returns to
    /// [`BlobStore::sync_entries`] before recording the blob anywhere. A request storing
    /// many blobs then pays for one journal commit instead of one per blob.
    pub async fn put_file_deferred(
        &self,
        key: &str,
        file: &FsPath,
        size: u64,
    ) -> Result<EntrySync> {
        if let Some(root) = &self.local_root {
            if let Some(dir) = move_into(root, key, file).await? {
                return Ok(EntrySync(Some(dir)));
            }
        }
        self.upload(key, file, size).await?;
        Ok(EntrySync(None))
    }

    /// Make the directory entries of blobs put by [`BlobStore::put_file_deferred`]
    /// durable. After the first directory's fsync has committed the file system's journal
    /// (every rename so far), the others find nothing left to do.
    pub async fn sync_entries(&self, entries: Vec<EntrySync>) -> Result<()> {
        let mut dirs: Vec<PathBuf> = entries.into_iter().filter_map(|e| e.0).collect();
        if dirs.is_empty() {
            return Ok(());
        }
        dirs.sort();
        dirs.dedup();
        tokio::task::spawn_blocking(move || -> Result<()> {
            for dir in dirs {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
    }

    /// Stream a local file up to the object store (large files in parts).
    async fn upload(&self, key: &str, file: &FsPath, size: u64) -> Result<()> {
        let path = Path::from(key);
        let mut f = tokio::fs::File::open(file).await?;
        if size <= SINGLE_PUT_MAX {
            let mut buf = Vec::with_capacity(size as usize);
            f.read_to_end(&mut buf).await?;
            self.store.put(&path, PutPayload::from(buf)).await?;
            return Ok(());
        }
        let upload = self.store.put_multipart(&path).await?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut buf = vec![0u8; 1024 * 1024];
        loop {
            let n = match f.read(&mut buf).await {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) => {
                    let _ = writer.abort().await;
                    return Err(e.into());
                }
            };
            // Bounded memory: at most two parts in flight.
            if let Err(e) = writer.wait_for_capacity(2).await {
                let _ = writer.abort().await;
                return Err(e.into());
            }
            writer.write(&buf[..n]);
        }
        writer.finish().await?;
        Ok(())
    }

    /// Whether a blob exists.
    pub async fn exists(&self, key: &str) -> Result<bool> {
        match self.store.head(&Path::from(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Stream a blob's bytes.
    pub async fn get_stream(&self, key: &str) -> Result<BoxStream<'static, Result<Bytes>>> {
        match self.store.get(&Path::from(key)).await {
            Ok(r) => Ok(r
                .into_stream()
                .map(|c| c.map_err(StorageError::from))
                .boxed()),
            Err(object_store::Error::NotFound { .. }) => {
                Err(StorageError::BlobNotFound(key.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Read a whole blob into memory (only for small blobs).
    pub async fn get_bytes(&self, key: &str) -> Result<Bytes> {
        match self.store.get(&Path::from(key)).await {
            Ok(r) => Ok(r.bytes().await?),
            Err(object_store::Error::NotFound { .. }) => {
                Err(StorageError::BlobNotFound(key.to_string()))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Delete a blob; deleting a missing blob is not an error.
    pub async fn delete(&self, key: &str) -> Result<()> {
        match self.store.delete(&Path::from(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// What is left to make a blob put by [`BlobStore::put_file_deferred`] durable: the
/// directory to fsync (local directory), or nothing (object stores).
#[derive(Debug)]
#[must_use = "pass it to BlobStore::sync_entries before recording the blob"]
pub struct EntrySync(Option<PathBuf>);

/// Move `file` to `root/key` after an fsync of the file; returns the directory whose
/// fsync makes the new entry durable, or `None` when they are on different filesystems
/// (the caller then copies through object_store).
///
/// The layout is object_store's LocalFileSystem layout (key segments as directories), and
/// keys are our own content addresses (hex and `/`), so no escaping applies.
async fn move_into(root: &FsPath, key: &str, file: &FsPath) -> Result<Option<PathBuf>> {
    let target = root.join(key);
    let file = file.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<Option<PathBuf>> {
        std::fs::File::open(&file)?.sync_all()?;
        let dir = target
            .parent()
            .ok_or_else(|| StorageError::Config(format!("bad blob key {}", target.display())))?;
        std::fs::create_dir_all(dir)?;
        match std::fs::rename(&file, &target) {
            Ok(()) => Ok(Some(dir.to_path_buf())),
            Err(e) if e.kind() == std::io::ErrorKind::CrossesDevices => Ok(None),
            Err(e) => Err(e.into()),
        }
    })
    .await
    .map_err(|e| StorageError::Io(std::io::Error::other(e)))?
}
