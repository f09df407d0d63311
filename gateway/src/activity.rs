//! Whether a modality is sending right now, so that forwarding can make way for it.
//!
//! A modality's C-STOREs over one association are a serial chain (receive, write,
//! fsync, commit, answer, next instance), so its rate falls with every bit of CPU taken
//! from the receiving side. Forwarding the same instances at the same moment takes that
//! CPU twice over: the gateway reads and sends each file, and a hub on the same machine
//! (a small site, or the benchmark) parses, hashes and fsyncs it. During a burst the
//! forwarder therefore holds back routine instances for a bounded time (see
//! [`crate::forwarder`]) and sends them as soon as the modality pauses. STAT instances,
//! laboratory messages and ECG files are never held back.

use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::outbox::now_ms;

/// How long after the last instance a modality counts as still sending. Instances of a
/// burst follow each other within milliseconds; a modality sending one image a second
/// (ultrasound) is not a burst, and its instances are forwarded between images.
pub const QUIET: Duration = Duration::from_millis(250);

/// Instances being received and when the last one ended.
#[derive(Debug, Default)]
pub struct ReceiveActivity {
    active: AtomicUsize,
    last_end_ms: AtomicI64,
}

/// Held while one instance's data set is being received (see
/// [`ReceiveActivity::store_started`]).
#[derive(Debug)]
pub struct StoreInProgress {
    activity: Arc<ReceiveActivity>,
}

impl Drop for StoreInProgress {
    fn drop(&mut self) {
        self.activity.last_end_ms.store(now_ms(), Ordering::Release);
        self.activity.active.fetch_sub(1, Ordering::AcqRel);
    }
}

impl ReceiveActivity {
    /// An instance starts arriving; the burst lasts while the guard lives, and [`QUIET`]
    /// after.
    pub fn store_started(self: &Arc<Self>) -> StoreInProgress {
        self.active.fetch_add(1, Ordering::AcqRel);
        StoreInProgress {
            activity: Arc::clone(self),
        }
    }

    /// How long until the modality counts as quiet: `None` when it already is.
    pub fn busy_for(&self, now_ms: i64) -> Option<Duration> {
        if self.active.load(Ordering::Acquire) > 0 {
            return Some(QUIET);
        }
        let quiet_at = self.last_end_ms.load(Ordering::Acquire) + QUIET.as_millis() as i64;
        (quiet_at > now_ms).then(|| Duration::from_millis((quiet_at - now_ms) as u64))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_while_receiving_and_for_the_quiet_period_after() {
        let activity = Arc::new(ReceiveActivity::default());
        assert_eq!(activity.busy_for(now_ms()), None);
        {
            let _one = activity.store_started();
            let _two = activity.store_started();
            assert_eq!(activity.busy_for(now_ms()), Some(QUIET));
        }
        let left = activity.busy_for(now_ms()).expect("busy just after");
        assert!(left <= QUIET && left > Duration::ZERO, "{left:?}");
        let later = now_ms() + QUIET.as_millis() as i64 + 1;
        assert_eq!(activity.busy_for(later), None);
    }
}
