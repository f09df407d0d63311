//! Sessions this process looked up in the last moments.
//!
//! A reader scrolling a CT sends tens of image requests a second, and looking a session
//! up costs three queries (session, user, sites): a third of the database work of a
//! rendered slice. A session found live is therefore trusted again for [`FRESH_FOR`],
//! never past its own expiry. Account changes made through this process (logout,
//! password reset, disabling, role or site changes: every state-changing `/api/auth` and
//! `/api/admin` request) forget every entry at once; a change made by another hub process
//! or by the `hub admin` command line applies here within [`FRESH_FOR`].

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use storage::accounts::User;

/// How long a session found live is trusted without asking the database again.
pub const FRESH_FOR: Duration = Duration::from_secs(2);

/// Entries kept at most; the map is emptied when full (a lookup each is all it costs).
const MAX_ENTRIES: usize = 4096;

struct Entry {
    user: User,
    /// The session's own expiry, ms since the epoch.
    expires_at: i64,
    looked_up: Instant,
}

/// Recently looked-up sessions by token digest.
#[derive(Default)]
pub(crate) struct RecentSessions {
    entries: Mutex<HashMap<String, Entry>>,
}

impl RecentSessions {
    /// The user of a session looked up within [`FRESH_FOR`] and not expired at `now_ms`.
    pub(crate) fn get(&self, token_hash: &str, now_ms: i64) -> Option<User> {
        let entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        entries
            .get(token_hash)
            .filter(|e| e.looked_up.elapsed() < FRESH_FOR && now_ms < e.expires_at)
            .map(|e| e.user.clone())
    }

    /// Remember a session the database just found live.
    pub(crate) fn put(&self, token_hash: &str, user: User, expires_at: i64) {
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            token_hash.to_string(),
            Entry {
                user,
                expires_at,
                looked_up: Instant::now(),
            },
        );
    }

    /// Forget everything (an account or session changed).
    pub(crate) fn clear(&self) {
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str) -> User {
        User {
            id: 7,
            username: name.into(),
            display_name: name.into(),
            role: storage::accounts::Role::Reader,
            specialties: Vec::new(),
            grade: None,
            sites: Vec::new(),
            disabled: false,
        }
    }

    #[test]
    fn recent_sessions_expire_and_clear() {
        let recent = RecentSessions::default();
        recent.put("a", user("wang"), 1_000);
        assert_eq!(recent.get("a", 999).unwrap().username, "wang");
        assert!(
            recent.get("a", 1_000).is_none(),
            "past the session's expiry"
        );
        assert!(recent.get("b", 0).is_none());
        recent.clear();
        assert!(recent.get("a", 0).is_none(), "cleared");
    }
}
