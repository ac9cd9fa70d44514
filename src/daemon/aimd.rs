//! The daemon's estimate of how many streams Soniox accepts from it now:
//! the effective upstream limit, learned from refusals (additive increase,
//! multiplicative decrease), so that several daemons sharing one Soniox
//! project settle within its limit without talking to each other.
//!
//! The rules, each driven by the admission ([`super::admission`]):
//!
//! * A 429 at a session's start lowers the limit at once to the streams
//!   that were still running (at least 1): they are what Soniox accepted.
//! * A refusal of a session admitted since the last lowering (a probe that
//!   failed, not one of a burst already answered) also holds every new
//!   start for a while, growing with each such refusal in a row, so that a
//!   daemon whose streams all ended elsewhere's does not knock again at
//!   once; a slot a session just gave back may still pass to the next one
//!   (Soniox accepted a stream there a moment ago).
//! * Every [`PROBE_AFTER`] sessions that end without a refusal in between
//!   raise the limit by one, up to the configured one.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::Timing;

/// Sessions that end without a refusal before the limit goes up by one.
pub(crate) const PROBE_AFTER: usize = 2;
/// The first hold after a failed probe.
const HOLD_BASE: Duration = Duration::from_secs(1);
/// The longest hold.
const HOLD_CAP: Duration = Duration::from_secs(15);

/// The effective limit and what it was learned from.
#[derive(Debug)]
pub(crate) struct Estimate {
    /// The configured limit (`--max-upstream`).
    max: usize,
    /// The limit in force: from 1 to `max` (0 only when `max` is).
    effective: usize,
    /// Sessions ended without a refusal since the last change.
    clean_ends: usize,
    /// Bumped by every refusal that counts as a failed probe; a slot
    /// carries the epoch it was granted in.
    epoch: u64,
    /// Failed probes in a row (since a session last ended well).
    strikes: u32,
    /// No new start before this, but for slots passed on.
    hold_until: Option<Instant>,
    /// xorshift state for the hold's jitter.
    rng: u64,
    timing: Timing,
}

impl Estimate {
    /// Trusting `max` until told otherwise; holds run on `timing`.
    pub(crate) fn new(max: usize, timing: Timing) -> Estimate {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        Estimate {
            max,
            effective: max,
            clean_ends: 0,
            epoch: 0,
            strikes: 0,
            hold_until: None,
            rng: seed | 1,
            timing,
        }
    }

    /// The limit in force.
    pub(crate) fn effective(&self) -> usize {
        self.effective
    }

    /// The epoch a slot granted now belongs to.
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch
    }

    /// A new configured limit (SIGHUP): a changed one replaces what was
    /// learned (the operator's word); the same one keeps it.
    pub(crate) fn set_max(&mut self, max: usize) {
        if max != self.max {
            self.max = max;
            self.effective = max;
            self.clean_ends = 0;
        }
    }

    /// A session granted in epoch `granted_in` was refused at its start
    /// while `others` sessions held slots.
    pub(crate) fn refused(&mut self, others: usize, granted_in: u64, now: Instant) {
        self.effective = self.effective.min(others).max(1).min(self.max);
        self.clean_ends = 0;
        if granted_in == self.epoch {
            self.epoch += 1;
            self.strikes += 1;
            self.hold_until = Some(now + self.hold());
        }
    }

    /// A session gave its slot back without being refused.
    pub(crate) fn ended(&mut self) {
        self.strikes = 0;
        self.clean_ends += 1;
        if self.clean_ends >= PROBE_AFTER && self.effective < self.max {
            self.effective += 1;
            self.clean_ends = 0;
        }
    }

    /// Whether new starts are held now; an expired hold is cleared.
    pub(crate) fn held(&mut self, now: Instant) -> bool {
        match self.hold_until {
            Some(until) if now < until => true,
            Some(_) => {
                self.hold_until = None;
                false
            }
            None => false,
        }
    }

    /// When the hold ends, if one is on.
    pub(crate) fn hold_until(&self) -> Option<Instant> {
        self.hold_until
    }

    /// The hold after `strikes` failed probes: doubling from
    /// [`HOLD_BASE`], capped, times a random factor in [0.5, 1) so that
    /// daemons refused together do not knock again together.
    fn hold(&mut self) -> Duration {
        let doubled = HOLD_BASE
            .saturating_mul(1u32 << self.strikes.saturating_sub(1).min(16))
            .min(HOLD_CAP);
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let jitter = 0.5 + (self.rng >> 11) as f64 / (1u64 << 53) as f64 / 2.0;
        self.timing.wall(doubled.mul_f64(jitter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_refusals_lowers_the_limit_to_what_was_accepted() {
        let now = Instant::now();
        let mut estimate = Estimate::new(8, Timing::REAL);
        // Eight admitted at once; six refused, one after the other.
        let epoch = estimate.epoch();
        for others in (2..8).rev() {
            estimate.refused(others, epoch, now);
        }
        assert_eq!(estimate.effective(), 2);
        // Only the first of the burst counts as a failed probe.
        assert_eq!(estimate.strikes, 1);
        let hold = estimate.hold_until().unwrap() - now;
        assert!(hold >= HOLD_BASE / 2 && hold < HOLD_BASE, "{hold:?}");
        assert!(estimate.held(now));
        assert!(!estimate.held(now + HOLD_BASE));
        assert_eq!(estimate.hold_until(), None, "an expired hold is cleared");
    }

    #[test]
    fn the_limit_probes_upward_after_sessions_end_well() {
        let now = Instant::now();
        let mut estimate = Estimate::new(4, Timing::REAL);
        estimate.refused(1, estimate.epoch(), now);
        assert_eq!(estimate.effective(), 1);
        for expected in [1, 2, 2, 3, 3, 4, 4, 4] {
            estimate.ended();
            assert_eq!(estimate.effective(), expected);
        }
        // A refusal resets the count towards the next step.
        estimate.refused(2, estimate.epoch(), now);
        estimate.ended();
        assert_eq!(estimate.effective(), 2);
    }

    #[test]
    fn failed_probes_in_a_row_hold_longer_up_to_the_cap() {
        let now = Instant::now();
        let mut estimate = Estimate::new(2, Timing::REAL);
        let mut holds = Vec::new();
        for _ in 0..8 {
            // Nothing else streams: the floor is one.
            estimate.refused(0, estimate.epoch(), now);
            assert_eq!(estimate.effective(), 1);
            holds.push(estimate.hold_until().unwrap() - now);
        }
        for (i, hold) in holds.iter().enumerate() {
            let full = HOLD_BASE.saturating_mul(1 << i).min(HOLD_CAP);
            assert!(*hold >= full / 2 && *hold < full, "strike {i}: {hold:?}");
        }
        // A session that ends well starts the count again.
        estimate.ended();
        estimate.refused(0, estimate.epoch(), now);
        assert!(estimate.hold_until().unwrap() - now < HOLD_BASE);
    }

    #[test]
    fn a_new_configured_limit_replaces_what_was_learned() {
        let now = Instant::now();
        let mut estimate = Estimate::new(8, Timing::REAL);
        estimate.refused(3, estimate.epoch(), now);
        estimate.set_max(8);
        assert_eq!(estimate.effective(), 3, "the same limit keeps it");
        estimate.set_max(5);
        assert_eq!((estimate.max, estimate.effective()), (5, 5));
    }
}
