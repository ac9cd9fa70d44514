//! Pacing: holding faster-than-real-time input to real time.
//!
//! Soniox wants audio at about real-time pace. A file or an `ffmpeg` without
//! `-re` delivers much faster, so chunks are released on a clock:
//!
//! * **Raw formats** know each chunk's duration. The pacer keeps `ahead_until`,
//!   the wall time at which everything sent so far would have finished playing
//!   live, and releases a chunk once that lies at most `max_lead` in the
//!   future. Live input never runs ahead, so it is never held; after a pause
//!   the clock restarts from now, so a pause does not buy a burst.
//! * **Containers** have no known duration per byte, so the service's own
//!   progress (`total_audio_proc_ms`) is the clock: no chunk goes while the
//!   service has processed more than `max_lead` beyond the wall time elapsed,
//!   and at most [`CONTAINER_UNCONFIRMED_BYTES`] may be in flight beyond the
//!   last progress report, so the lead stays bounded even before one comes.

use std::time::Duration;

use tokio::time::Instant;

/// Bytes of a container stream that may be sent beyond what the service has
/// reported progress on: 32 KiB is 2 s of 128 kb/s MP3.
pub(crate) const CONTAINER_UNCONFIRMED_BYTES: u64 = 32 * 1024;

/// Decides when each chunk may go.
#[derive(Debug)]
pub(crate) struct Pacer {
    max_lead: Duration,
    /// Raw: when the audio sent so far would have finished playing live.
    ahead_until: Option<Instant>,
    /// Containers: when the first byte went.
    first_send: Option<Instant>,
    /// Containers: bytes sent in the current upstream session.
    bytes_sent: u64,
    /// Containers: bytes sent when the latest progress report arrived.
    bytes_confirmed: u64,
    /// Containers: the service's latest `total_audio_proc_ms`.
    processed_ms: u64,
}

/// When a chunk may be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Release {
    /// At this instant (now or later).
    At(Instant),
    /// Once the service reports progress.
    OnProgress,
}

impl Pacer {
    /// A pacer allowing `max_lead` ahead of real time.
    pub(crate) fn new(max_lead: Duration) -> Pacer {
        Pacer {
            max_lead,
            ahead_until: None,
            first_send: None,
            bytes_sent: 0,
            bytes_confirmed: 0,
            processed_ms: 0,
        }
    }

    /// When a raw chunk of `duration` may go.
    pub(crate) fn release_raw(&self, duration: Duration, now: Instant) -> Instant {
        let base = self.ahead_until.map_or(now, |t| t.max(now));
        (base + duration)
            .checked_sub(self.max_lead)
            .map_or(now, |t| t.max(now))
    }

    /// Records that a raw chunk of `duration` went at `at`.
    pub(crate) fn sent_raw(&mut self, duration: Duration, at: Instant) {
        let base = self.ahead_until.map_or(at, |t| t.max(at));
        self.ahead_until = Some(base + duration);
    }

    #[cfg(test)]
    /// How far ahead of real time the raw audio sent so far is, at `now`.
    pub(crate) fn lead(&self, now: Instant) -> Duration {
        self.ahead_until
            .map_or(Duration::ZERO, |t| t.saturating_duration_since(now))
    }

    /// When a container chunk may go.
    pub(crate) fn release_container(&self, now: Instant) -> Release {
        if self.bytes_sent.saturating_sub(self.bytes_confirmed) >= CONTAINER_UNCONFIRMED_BYTES {
            return Release::OnProgress;
        }
        let Some(first) = self.first_send else {
            return Release::At(now);
        };
        // Processed audio may be at most max_lead ahead of the wall clock.
        let processed = Duration::from_millis(self.processed_ms);
        let earliest = (first + processed)
            .checked_sub(self.max_lead)
            .unwrap_or(first);
        Release::At(earliest.max(now))
    }

    /// Records that `bytes` of a container went at `at`.
    pub(crate) fn sent_container(&mut self, bytes: u64, at: Instant) {
        self.first_send.get_or_insert(at);
        self.bytes_sent += bytes;
    }

    /// Records the service's progress (containers).
    pub(crate) fn progress(&mut self, total_audio_proc_ms: u64) {
        if total_audio_proc_ms > self.processed_ms {
            self.processed_ms = total_audio_proc_ms;
            self.bytes_confirmed = self.bytes_sent;
        }
    }

    /// Forgets the container clock: a new upstream session counts from zero,
    /// with `unsent` bytes already read for it (they go out first, so they
    /// count against the window at once).
    pub(crate) fn restart_upstream(&mut self, unsent: u64) {
        self.first_send = None;
        self.bytes_sent = unsent;
        self.bytes_confirmed = 0;
        self.processed_ms = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHUNK: Duration = Duration::from_millis(100);

    #[test]
    fn a_file_bursts_two_seconds_then_goes_at_real_time() {
        let mut pacer = Pacer::new(Duration::from_secs(2));
        let start = Instant::now();
        let mut now = start;
        for i in 0..100 {
            let release = pacer.release_raw(CHUNK, now);
            if i < 20 {
                assert_eq!(release, start, "chunk {i} is within the burst");
            } else {
                assert_eq!(release, start + CHUNK * (i + 1) - Duration::from_secs(2));
            }
            now = release;
            pacer.sent_raw(CHUNK, now);
            assert!(pacer.lead(now) <= Duration::from_secs(2));
        }
    }

    #[test]
    fn live_input_is_never_held() {
        let mut pacer = Pacer::new(Duration::from_secs(2));
        let mut now = Instant::now();
        for _ in 0..50 {
            assert_eq!(pacer.release_raw(CHUNK, now), now);
            pacer.sent_raw(CHUNK, now);
            now += CHUNK;
        }
        // A pause does not bank credit for a later burst.
        now += Duration::from_secs(30);
        for _ in 0..20 {
            assert_eq!(pacer.release_raw(CHUNK, now), now);
            pacer.sent_raw(CHUNK, now);
        }
        assert!(pacer.release_raw(CHUNK, now) > now);
    }

    #[test]
    fn containers_wait_for_progress() {
        let mut pacer = Pacer::new(Duration::from_secs(2));
        let start = Instant::now();
        assert_eq!(pacer.release_container(start), Release::At(start));
        pacer.sent_container(CONTAINER_UNCONFIRMED_BYTES, start);
        assert_eq!(pacer.release_container(start), Release::OnProgress);
        // The service has processed 5 s of it: hold until 3 s of wall time passed.
        pacer.progress(5000);
        assert_eq!(
            pacer.release_container(start),
            Release::At(start + Duration::from_secs(3))
        );
        pacer.restart_upstream(0);
        assert_eq!(pacer.release_container(start), Release::At(start));
        // A new session that inherits a full window of unsent input waits
        // for its progress too.
        pacer.restart_upstream(CONTAINER_UNCONFIRMED_BYTES);
        assert_eq!(pacer.release_container(start), Release::OnProgress);
    }
}
