//! A small LRU of encoded rendered images, bounded by total bytes.
//!
//! Keys carry the blob key of the original (content-addressed), so a replaced instance
//! can never be served from a stale entry and nothing needs invalidating.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use bytes::Bytes;

/// Default capacity of the process-wide cache.
pub const DEFAULT_CAPACITY: usize = 64 * 1024 * 1024;

/// Least-recently-used map from a request key to encoded bytes.
#[derive(Debug)]
pub struct RenderCache {
    capacity: usize,
    used: usize,
    tick: u64,
    entries: HashMap<String, (u64, Bytes)>,
}

impl RenderCache {
    /// Empty cache holding at most `capacity` bytes of images (keys not counted).
    pub fn new(capacity: usize) -> Self {
        RenderCache {
            capacity,
            used: 0,
            tick: 0,
            entries: HashMap::new(),
        }
    }

    /// The cached image, marking it recently used.
    pub fn get(&mut self, key: &str) -> Option<Bytes> {
        self.tick += 1;
        let tick = self.tick;
        self.entries.get_mut(key).map(|(t, b)| {
            *t = tick;
            b.clone()
        })
    }

    /// Store an image, evicting the least recently used until it fits. Images larger
    /// than a quarter of the capacity are not kept: one of them would flush the rest.
    pub fn put(&mut self, key: String, value: Bytes) {
        if value.len() > self.capacity / 4 {
            return;
        }
        self.tick += 1;
        if let Some((_, old)) = self.entries.insert(key, (self.tick, value.clone())) {
            self.used -= old.len();
        }
        self.used += value.len();
        while self.used > self.capacity {
            // Linear scan for the oldest: the cache holds at most a few thousand images,
            // and eviction only happens on a miss that already decoded a whole file.
            let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (t, _))| *t)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            if let Some((_, b)) = self.entries.remove(&oldest) {
                self.used -= b.len();
            }
        }
    }

    /// Bytes held.
    pub fn used(&self) -> usize {
        self.used
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The process-wide cache. A static rather than a field of `ViewerState` so the
/// rendering routes stay self-contained; every app in the process shares it, which is
/// what a cache of immutable, content-addressed results wants.
pub fn global() -> &'static Mutex<RenderCache> {
    static CACHE: OnceLock<Mutex<RenderCache>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(RenderCache::new(DEFAULT_CAPACITY)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_cache_evicts_least_recent_within_bound() {
        let mut c = RenderCache::new(400);
        c.put("a".into(), Bytes::from(vec![0; 100]));
        c.put("b".into(), Bytes::from(vec![0; 100]));
        c.put("c".into(), Bytes::from(vec![0; 100]));
        assert!(c.get("a").is_some()); // a is now the most recent
        c.put("d".into(), Bytes::from(vec![0; 100]));
        c.put("e".into(), Bytes::from(vec![0; 100]));
        assert!(c.used() <= 400);
        assert!(c.get("b").is_none(), "b was least recently used");
        assert!(c.get("a").is_some());
        assert!(c.get("e").is_some());
        c.put("huge".into(), Bytes::from(vec![0; 101]));
        assert!(
            c.get("huge").is_none(),
            "over a quarter of capacity is not kept"
        );
        c.put("e".into(), Bytes::from(vec![0; 50]));
        assert_eq!(c.used(), 350);
    }
}
