//! When and whether to try a new upstream session after a failure.
//!
//! Fatal errors (a rejected key, a bad request, an empty account) end the
//! stream at once: retrying cannot help. Temporary ones (408, 429, 500, 503,
//! a lost or stalled connection, an unreachable service) are retried with
//! capped exponential backoff and jitter, longer after a 429 (a quota), until
//! the retry budget is spent.

use std::time::Duration;

use crate::error::Error;

/// First wait after a failure.
const BASE: Duration = Duration::from_millis(250);
/// First wait after a 429: quotas refill slowly.
const BASE_RATE_LIMITED: Duration = Duration::from_secs(2);
/// Longest wait between attempts.
const CAP: Duration = Duration::from_secs(30);

/// Backoff state for one outage.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    attempts: u32,
    /// xorshift state for jitter; any nonzero seed will do.
    rng: u64,
}

impl Backoff {
    /// A fresh outage; `seed` varies the jitter between processes.
    pub(crate) fn new(seed: u64) -> Backoff {
        Backoff {
            attempts: 0,
            rng: seed | 1,
        }
    }

    #[cfg(test)]
    /// Attempts made so far in this outage.
    pub(crate) fn attempts(&self) -> u32 {
        self.attempts
    }

    /// The wait before the next attempt after `err`: base × 2^attempts,
    /// capped, then scaled by a random factor in [0.5, 1.0) so that many
    /// clients failing together do not retry together.
    pub(crate) fn next_delay(&mut self, err: &Error) -> Duration {
        let base = match err {
            Error::Service { code: 429, .. } => BASE_RATE_LIMITED,
            _ => BASE,
        };
        let exponential = base.saturating_mul(1u32 << self.attempts.min(16)).min(CAP);
        self.attempts += 1;
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        exponential.mul_f64(jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_are_capped_and_jittered() {
        let mut backoff = Backoff::new(42);
        let err = Error::Disconnected("x".into());
        let delays: Vec<Duration> = (0..12).map(|_| backoff.next_delay(&err)).collect();
        for (i, delay) in delays.iter().enumerate() {
            let full = BASE.saturating_mul(1 << i).min(CAP);
            assert!(
                *delay >= full / 2 && *delay < full,
                "attempt {i}: {delay:?}"
            );
        }
        assert_eq!(backoff.attempts(), 12);
    }

    #[test]
    fn rate_limits_wait_longer() {
        let limited = Error::Service {
            code: 429,
            error_type: None,
            message: "x".into(),
        };
        let delay = Backoff::new(7).next_delay(&limited);
        assert!(delay >= BASE_RATE_LIMITED / 2);
    }
}
