//! [`LazyTimer`]: a deadline for a `select!` loop that costs nothing per
//! turn of the loop.
//!
//! A `sleep_until(deadline)` written inside `select!` is a new timer every
//! time the loop turns: one insertion into tokio's timer wheel and one
//! removal, several times per audio chunk for the session core and the
//! upstream connection, and most of those deadlines (keepalive, idle close,
//! half-open) only move later with each chunk. A `LazyTimer` keeps one
//! timer for the life of the loop and moves it only when the deadline comes
//! earlier than where it is set; when it goes off before the deadline (the
//! deadline moved later meanwhile), it is set again once.

use std::pin::Pin;

use tokio::time::{Instant, Sleep, sleep_until};

/// A reusable timer; see the module documentation.
#[derive(Debug)]
pub(crate) struct LazyTimer {
    sleep: Pin<Box<Sleep>>,
    /// Where `sleep` is set, while it has not gone off.
    armed: Option<Instant>,
}

impl Default for LazyTimer {
    fn default() -> Self {
        LazyTimer::new()
    }
}

impl LazyTimer {
    /// A timer set nowhere yet.
    pub(crate) fn new() -> LazyTimer {
        LazyTimer {
            // Not registered with the timer wheel until first polled, and
            // only polled once `until` sets it.
            sleep: Box::pin(sleep_until(Instant::now())),
            armed: None,
        }
    }

    /// Completes at `deadline`; never, for `None`. Cancel-safe: dropped
    /// unfinished (another `select!` branch won), the timer stays set and
    /// the next call reuses it.
    pub(crate) async fn until(&mut self, deadline: Option<Instant>) {
        let Some(deadline) = deadline else {
            return std::future::pending().await;
        };
        loop {
            match self.armed {
                Some(at) if at <= deadline => {}
                _ => {
                    self.sleep.as_mut().reset(deadline);
                    self.armed = Some(deadline);
                }
            }
            self.sleep.as_mut().await;
            // It went off: at the deadline, or earlier, where an earlier
            // deadline had set it.
            if self.armed.take().is_some_and(|at| at >= deadline) {
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test(start_paused = true)]
    async fn goes_off_at_the_deadline_even_when_it_moved_later() {
        let start = Instant::now();
        let mut timer = LazyTimer::new();
        // Set for 1 s, abandoned, then asked for 3 s: it goes off at 1 s,
        // finds the deadline later, and goes on to 3 s.
        let first = tokio::time::timeout(Duration::from_millis(500), {
            timer.until(Some(start + Duration::from_secs(1)))
        })
        .await;
        assert!(first.is_err(), "not yet");
        timer.until(Some(start + Duration::from_secs(3))).await;
        assert_eq!(Instant::now() - start, Duration::from_secs(3));
        // An earlier deadline moves it.
        let now = Instant::now();
        timer.until(Some(now + Duration::from_millis(200))).await;
        assert_eq!(Instant::now() - now, Duration::from_millis(200));
        // A deadline already past completes at once.
        timer.until(Some(start)).await;
        assert_eq!(Instant::now() - now, Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn none_is_never() {
        let mut timer = LazyTimer::new();
        let waited = tokio::time::timeout(Duration::from_secs(3600), timer.until(None)).await;
        assert!(waited.is_err());
    }
}
