//! Outages: retrying a failed upstream session with backoff within the
//! retry budget, and going on with the fallback engine when the service
//! fails for good; and refusals at a session's start by the service's
//! limits (429), which under a daemon are no outage: the session goes back
//! to the daemon's queue through its [`super::Lease`], and its retry budget
//! stands still while it waits there.

use std::time::Duration;

use tokio::time::Instant;
use tracing::{info, warn};

use super::{Halt, Lease, Session};
use crate::engine::quota::Tier;
use crate::error::Error;
use crate::event::Event;
use crate::retry::Backoff;

/// Refusals past the cap on connections at a session's start that are
/// retried at once, on a fresh connection, before the refusal counts as
/// one of the streams limit: the daemon's engine closes one of its idle
/// warm connections on each, which should make room.
const CROWDED_RETRIES: u32 = 2;

/// A failure being recovered from.
pub(super) struct Outage {
    pub(super) since: Instant,
    /// Time spent queued again after refusals since: not counted against
    /// the retry budget.
    queued: Duration,
    backoff: Backoff,
    /// `dropped`, `error` or `stalled`, for the `reconnect` event.
    pub(super) reason: &'static str,
    pub(super) last: Error,
}

impl Session<'_> {
    /// A failed upstream session or connection attempt: retry with backoff
    /// within the budget, or fail. `upstream_lost` says whether a working
    /// session just ended (its audio must be replayed).
    pub(super) async fn on_failure(&mut self, err: Error, upstream_lost: bool) -> Result<(), Halt> {
        if let Some(tier) = self.refused_at_start(&err, upstream_lost) {
            return self.on_refused(err, tier, upstream_lost).await;
        }
        // Unreachable from the start: no point in a long retry when a local
        // engine stands by.
        let unreachable = !self.reached && matches!(err, Error::Connect { .. });
        let outcome = if unreachable && self.fallback.is_some() && !self.fell_back {
            Err(err)
        } else {
            self.retry_or_fail(err, upstream_lost)
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(err) => self.fall_back(err).await,
        }
    }

    /// The tier of a refusal by the service's limits at the start of an
    /// upstream session (before it answered), if that is what `err` is and
    /// the session has a line to go back to; the filter has none.
    fn refused_at_start(&self, err: &Error, upstream_lost: bool) -> Option<Tier> {
        let tier = Tier::of(err)?;
        let at_start = !upstream_lost || self.upstream.as_ref().is_some_and(|u| !u.answered);
        let line = self.lease.as_ref().is_some_and(Lease::can_requeue);
        (at_start && line).then_some(tier)
    }

    /// A start refused for the service's limits, under a daemon: past the
    /// cap on connections, first again at once on a fresh connection;
    /// otherwise back to the daemon's queue, with a `queued` event. Neither
    /// counts as a failure.
    async fn on_refused(
        &mut self,
        err: Error,
        tier: Tier,
        upstream_lost: bool,
    ) -> Result<(), Halt> {
        if upstream_lost && let Some(upstream) = self.upstream.take() {
            self.closed_upstreams_ms += upstream.processed_ms;
        }
        // The service answered, if only to refuse.
        self.reached = true;
        if tier == Tier::Connections && self.crowded < CROWDED_RETRIES {
            self.crowded += 1;
            info!(session = %self.session_id, error = %err, "refused past the cap on connections: opening a fresh connection");
            // The next turn opens one: nothing is pending now.
            return Ok(());
        }
        self.crowded = 0;
        let Some((position, retake)) = self.lease.as_mut().and_then(|lease| lease.requeue(tier))
        else {
            // `refused_at_start` saw a line; were it gone, this is a failure
            // like any other.
            return match self.retry_or_fail(err, false) {
                Ok(()) => Ok(()),
                Err(err) => self.fall_back(err).await,
            };
        };
        info!(session = %self.session_id, error = %err, tier = tier.as_str(), position, "refused at start for the service's limits: queued again");
        self.retaking = Some(retake);
        self.queued_since = Some(Instant::now());
        self.emit(Event::Queued { position }).await
    }

    /// The place is held again after a requeue: the time spent queued does
    /// not count against an outage's retry budget.
    pub(super) fn requeue_over(&mut self) {
        if let Some(since) = self.queued_since.take()
            && let Some(outage) = self.outage.as_mut()
        {
            outage.queued += since.elapsed();
        }
    }

    /// The service failed for good: go on with the fallback engine, if any,
    /// from the first audio no final token covers (the replay buffer holds
    /// it), or fail with `err`.
    async fn fall_back(&mut self, err: Error) -> Result<(), Halt> {
        let request_refused = matches!(err, Error::Usage(_) | Error::Service { code: 400, .. });
        let Some(engine) = self.fallback.clone() else {
            return Err(err.into());
        };
        if self.fell_back || request_refused {
            return Err(err.into());
        }
        self.fell_back = true;
        self.engine = engine;
        self.outage = None;
        self.retry_at = None;
        let from_ms = self.ms_at(self.covered);
        warn!(session = %self.session_id, error = %err, from_ms, "the service failed for good; going on with the local engine");
        self.emit(Event::Fallback {
            engine: "local".to_owned(),
            from_ms,
            message: err.to_string(),
        })
        .await
    }

    /// Schedules a retry within the budget, or says the failure is final.
    fn retry_or_fail(&mut self, err: Error, upstream_lost: bool) -> Result<(), Error> {
        // A session that had answered failing starts a new outage, retried
        // at once (Soniox: "immediately start a new request"); otherwise
        // the outage goes on, backing off.
        let mut fresh_failure = false;
        if upstream_lost && let Some(upstream) = self.upstream.take() {
            self.closed_upstreams_ms += upstream.processed_ms;
            fresh_failure = upstream.answered || self.outage.is_none();
        }
        if !err.is_retryable() {
            return Err(err);
        }
        if matches!(err, Error::Service { .. }) {
            self.reached = true;
        }
        let now = Instant::now();
        let reason = match err {
            Error::Service { .. } => "error",
            Error::Stalled(_) => "stalled",
            _ => "dropped",
        };
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
            ^ u64::from(std::process::id());
        // A stream that never had a session (a wrong URL, no network) gets
        // the short budget; one that has worked, the long one.
        let budget = if self.reached {
            self.config.retry_budget
        } else {
            self.config.connect_budget.min(self.config.retry_budget)
        };
        if self.outage.is_none()
            && !self.reached
            && let Some(tell_user) = self.config.tell_user
        {
            tell_user(&format!(
                "{err}; retrying for up to {} s (Ctrl-C to stop)",
                budget.as_secs()
            ));
        }
        let outage = self.outage.get_or_insert_with(|| Outage {
            since: now,
            queued: Duration::ZERO,
            backoff: Backoff::new(seed ^ 0x9E37_79B9_7F4A_7C15),
            reason,
            last: Error::Internal(String::new()),
        });
        // Time spent queued for a slot does not count against the budget.
        let give_up_at = outage.since + outage.queued + self.config.timing.wall(budget);
        let backoff = self.config.timing.wall(outage.backoff.next_delay(&err));
        // The last attempt comes when the budget runs out, not before.
        let delay = if fresh_failure {
            Duration::ZERO
        } else {
            backoff
        }
        .min(give_up_at.saturating_duration_since(now));
        info!(session = %self.session_id, error = %err, retry_in_ms = delay.as_millis() as u64, "upstream session failed; reconnecting");
        if now >= give_up_at {
            let budget_secs = budget.as_secs();
            let reached = self.reached;
            return Err(Error::RetryBudgetSpent {
                budget_secs,
                last: Box::new(err),
                reached,
            });
        }
        outage.last = err;
        self.retry_at = Some(now + delay);
        Ok(())
    }
}
