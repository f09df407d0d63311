//! The hub's report verification keys: pinned in the configuration, or fetched from
//! `GET /api/signing-keys` over the verified TLS link and remembered in the database.
//! A remembered key is never forgotten (old reports must keep verifying).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use formats::report::{self, VerifyingKey};

use super::wire::PublishedKey;

/// How long after fetching the keys because of an unknown key id we trust that answer
/// for that id (a hub publishes a new key before it signs with it).
const REFETCH_AFTER: Duration = Duration::from_secs(60);

/// The keys reports are verified with.
#[derive(Debug)]
pub struct KeyRing {
    pinned: bool,
    keys: Mutex<Vec<VerifyingKey>>,
    /// Unknown key ids we fetched the published keys for, and when.
    refetched: Mutex<HashMap<String, Instant>>,
}

impl KeyRing {
    /// Only these keys, never fetched.
    pub fn pinned(keys: Vec<VerifyingKey>) -> KeyRing {
        KeyRing {
            pinned: true,
            keys: Mutex::new(keys),
            refetched: Mutex::new(HashMap::new()),
        }
    }

    /// Keys remembered from earlier fetches (base64); unreadable ones are skipped.
    pub fn remembered(rows: &[(String, String)]) -> KeyRing {
        let ring = KeyRing {
            pinned: false,
            keys: Mutex::new(Vec::new()),
            refetched: Mutex::new(HashMap::new()),
        };
        ring.add(rows);
        ring
    }

    /// Whether the keys are pinned by configuration.
    pub fn is_pinned(&self) -> bool {
        self.pinned
    }

    /// The current keys.
    pub fn snapshot(&self) -> Vec<VerifyingKey> {
        self.keys.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Add keys (key id, base64); returns how many were new.
    pub fn add(&self, rows: &[(String, String)]) -> usize {
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let mut added = 0;
        for (key_id, text) in rows {
            match report::decode_public_key(text) {
                Ok(key) if report::key_id(&key) == *key_id => {
                    if !keys.contains(&key) {
                        keys.push(key);
                        added += 1;
                    }
                }
                Ok(_) => tracing::warn!(%key_id, "remembered key does not match its id; ignored"),
                Err(e) => {
                    tracing::warn!(%key_id, error = %e, "unreadable verification key ignored")
                }
            }
        }
        added
    }

    /// Whether an unknown key id justifies fetching the hub's published keys now (not
    /// when pinned, and once per id per [`REFETCH_AFTER`]). Records the attempt.
    pub fn should_fetch_for(&self, key_id: &str) -> bool {
        if self.pinned {
            return false;
        }
        let mut refetched = self.refetched.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        refetched.retain(|_, at| now.duration_since(*at) < REFETCH_AFTER);
        if refetched.contains_key(key_id) {
            return false;
        }
        refetched.insert(key_id.to_string(), now);
        true
    }

    /// Forget that a fetch for `key_id` happened (it failed: try again next time).
    pub fn fetch_failed(&self, key_id: &str) {
        self.refetched
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(key_id);
    }
}

/// The usable keys of a `GET /api/signing-keys` answer, as (key id, base64). A key whose
/// published id is not the id of its bytes is refused: ids are how reports name keys.
pub fn usable_published_keys(published: &[PublishedKey]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for p in published {
        if !p.algorithm.eq_ignore_ascii_case("ed25519") {
            tracing::debug!(key_id = %p.key_id, algorithm = %p.algorithm, "key of another algorithm skipped");
            continue;
        }
        match report::decode_public_key(&p.public_key) {
            Ok(key) => {
                let id = report::key_id(&key);
                if id == p.key_id {
                    out.push((id, report::encode_public_key(&key)));
                } else {
                    tracing::warn!(published = %p.key_id, actual = %id, "published key id does not match the key; skipped");
                }
            }
            Err(e) => {
                tracing::warn!(key_id = %p.key_id, error = %e, "unreadable published key skipped")
            }
        }
    }
    out
}
