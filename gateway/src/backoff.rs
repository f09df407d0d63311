//! Exponential backoff with full jitter: the n-th retry waits a uniformly random time
//! between zero and `min(max, base * 2^(n-1))`. Full jitter spreads the retries of many
//! items (and many gateways) after a hub outage instead of having them return in
//! lock-step waves.

use std::time::Duration;

use rand::Rng;

/// Backoff bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// Ceiling of the first retry's delay.
    pub base: Duration,
    /// Largest ceiling.
    pub max: Duration,
}

impl Backoff {
    /// Backoff from millisecond bounds.
    pub fn from_millis(base_ms: u64, max_ms: u64) -> Backoff {
        Backoff {
            base: Duration::from_millis(base_ms),
            max: Duration::from_millis(max_ms.max(base_ms)),
        }
    }

    /// The ceiling for the `attempt`-th retry (1-based; 0 is treated as 1).
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let doublings = attempt.saturating_sub(1).min(63);
        let factor = 1u64 << doublings;
        let base_ms = self.base.as_millis().min(u64::MAX as u128) as u64;
        let ceiling = base_ms.saturating_mul(factor);
        Duration::from_millis(ceiling).min(self.max)
    }

    /// A random delay in `[0, ceiling(attempt)]`.
    pub fn delay_with<R: Rng + ?Sized>(&self, attempt: u32, rng: &mut R) -> Duration {
        let ceiling = self.ceiling(attempt).as_millis() as u64;
        Duration::from_millis(rng.random_range(0..=ceiling))
    }

    /// A random delay using the thread-local generator.
    pub fn delay(&self, attempt: u32) -> Duration {
        self.delay_with(attempt, &mut rand::rng())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn ceiling_doubles_and_caps() {
        let b = Backoff::from_millis(500, 60_000);
        assert_eq!(b.ceiling(0), Duration::from_millis(500));
        assert_eq!(b.ceiling(1), Duration::from_millis(500));
        assert_eq!(b.ceiling(2), Duration::from_millis(1000));
        assert_eq!(b.ceiling(3), Duration::from_millis(2000));
        assert_eq!(b.ceiling(7), Duration::from_millis(32_000));
        assert_eq!(b.ceiling(8), Duration::from_millis(60_000));
        assert_eq!(b.ceiling(500), Duration::from_millis(60_000));
        assert_eq!(b.ceiling(u32::MAX), Duration::from_millis(60_000));
    }

    #[test]
    fn delays_are_full_jitter_within_the_ceiling() {
        let b = Backoff::from_millis(100, 10_000);
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..12 {
            let ceiling = b.ceiling(attempt);
            let samples: Vec<Duration> =
                (0..500).map(|_| b.delay_with(attempt, &mut rng)).collect();
            assert!(samples.iter().all(|d| *d <= ceiling));
            // full jitter: spread over the whole range, not clustered at the top
            let low = samples.iter().filter(|d| **d < ceiling / 4).count();
            let high = samples.iter().filter(|d| **d > ceiling * 3 / 4).count();
            assert!(
                low > 50 && high > 50,
                "attempt {attempt}: {low} low, {high} high"
            );
        }
    }
}
