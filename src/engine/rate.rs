//! A token bucket for new upstream sessions.
//!
//! Soniox allows a project 100 new streams a minute by default; every
//! upstream open, reconnects included, takes a token first.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// A token bucket for new upstream sessions: `per_minute` tokens a minute,
/// bursts up to `per_minute`.
#[derive(Debug)]
pub(crate) struct RateLimiter {
    state: Mutex<Bucket>,
}

#[derive(Debug)]
struct Bucket {
    per_minute: u32,
    tokens: f64,
    at: Instant,
}

impl RateLimiter {
    /// A full bucket.
    pub(crate) fn new(per_minute: u32) -> RateLimiter {
        RateLimiter {
            state: Mutex::new(Bucket {
                per_minute: per_minute.max(1),
                tokens: f64::from(per_minute.max(1)),
                at: Instant::now(),
            }),
        }
    }

    /// Changes the rate (SIGHUP).
    pub(crate) fn set_rate(&self, per_minute: u32) {
        let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
        bucket.per_minute = per_minute.max(1);
        bucket.tokens = bucket.tokens.min(f64::from(bucket.per_minute));
    }

    /// Takes a token, waiting for one if needed.
    pub(crate) async fn take(&self) {
        loop {
            let wait = {
                let mut bucket = self.state.lock().unwrap_or_else(|e| e.into_inner());
                let now = Instant::now();
                let rate = f64::from(bucket.per_minute) / 60.0;
                let refill = now.duration_since(bucket.at).as_secs_f64() * rate;
                bucket.tokens = (bucket.tokens + refill).min(f64::from(bucket.per_minute));
                bucket.at = now;
                if bucket.tokens >= 1.0 {
                    bucket.tokens -= 1.0;
                    return;
                }
                Duration::from_secs_f64((1.0 - bucket.tokens) / rate)
            };
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_limiter_spaces_opens() {
        let limiter = RateLimiter::new(60);
        let start = Instant::now();
        for _ in 0..60 {
            limiter.take().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "a full bucket bursts");
        limiter.take().await;
        limiter.take().await;
        assert!(
            start.elapsed() >= Duration::from_millis(1_900),
            "{:?}",
            start.elapsed()
        );
    }
}
