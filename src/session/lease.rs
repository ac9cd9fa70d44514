//! The session's place under a limit of upstream sessions (the daemon's
//! slots), held only while it needs one.
//!
//! A session whose upstream session was closed for idleness gives its place
//! back, so a client that has gone quiet does not keep others waiting; when
//! its audio returns it asks again, and its audio waits in the replay
//! buffer meanwhile. A session whose start the service refused for its
//! limits (a 429) gives its place back too, and waits again at the head of
//! the line ([`Lease::requeue`]): that is not a failure, and spends none of
//! its retry budget. The filter has no limit and no lease.
//! The lease is also the session's one line back to the daemon: it tells
//! the daemon which service URL each upstream session is on, for `status`.

use std::future::Future;
use std::pin::Pin;

use crate::engine::quota::Tier;

/// The wait for a place. `Sync` too, because the session is shared by
/// reference across its awaits.
pub(crate) type Retake = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// Gives the place back after a refusal and waits again at the head of
/// the line: the 1-based position there, and the wait.
pub(crate) type Requeue = Box<dyn FnMut(Tier) -> (usize, Retake) + Send + Sync>;

/// Told the service URL of each upstream session.
type UpstreamReport = Box<dyn FnMut(&str) + Send + Sync>;

/// A place under the limit.
pub(crate) struct Lease {
    held: bool,
    give_back: Box<dyn FnMut() + Send + Sync>,
    take: Box<dyn FnMut() -> Retake + Send + Sync>,
    requeue: Option<Requeue>,
    /// Told the service URL of each upstream session (for `status`).
    on_upstream: Option<UpstreamReport>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease").field("held", &self.held).finish()
    }
}

impl Lease {
    /// A place held now. `give_back` frees it; `take` returns a future that
    /// resolves once it is held again (it may wait its turn).
    pub(crate) fn new(
        give_back: impl FnMut() + Send + Sync + 'static,
        take: impl FnMut() -> Retake + Send + Sync + 'static,
    ) -> Lease {
        Lease {
            held: true,
            give_back: Box::new(give_back),
            take: Box::new(take),
            requeue: None,
            on_upstream: None,
        }
    }

    /// Tells `report` the service URL of each upstream session opened.
    pub(crate) fn with_upstream_report(
        mut self,
        report: impl FnMut(&str) + Send + Sync + 'static,
    ) -> Lease {
        self.on_upstream = Some(Box::new(report));
        self
    }

    /// An upstream session opened on `url`.
    pub(super) fn report_upstream(&mut self, url: &str) {
        if let Some(report) = self.on_upstream.as_mut() {
            report(url);
        }
    }

    /// With a line to go back to after a refusal (`requeue`); without one,
    /// a refusal is a failure like any other.
    pub(crate) fn with_requeue(
        mut self,
        requeue: impl FnMut(Tier) -> (usize, Retake) + Send + Sync + 'static,
    ) -> Lease {
        self.requeue = Some(Box::new(requeue));
        self
    }

    /// Whether the place is held and there is a line to go back to.
    pub(super) fn can_requeue(&self) -> bool {
        self.held && self.requeue.is_some()
    }

    /// The service refused the session's start for its limits (`tier`):
    /// the place goes back and is asked for again at the head of the line.
    /// The position and the wait (call [`Lease::taken`] once it resolves);
    /// `None` (nothing done) if the place is not held or there is no line.
    pub(super) fn requeue(&mut self, tier: Tier) -> Option<(usize, Retake)> {
        if !self.held {
            return None;
        }
        let requeue = self.requeue.as_mut()?;
        self.held = false;
        Some(requeue(tier))
    }

    /// Whether the place is held.
    pub(super) fn held(&self) -> bool {
        self.held
    }

    /// Gives the place back, if held.
    pub(super) fn give_back(&mut self) {
        if self.held {
            self.held = false;
            (self.give_back)();
        }
    }

    /// A future for the place; call [`Lease::taken`] once it resolves.
    pub(super) fn take(&mut self) -> Retake {
        (self.take)()
    }

    /// The place is held again.
    pub(super) fn taken(&mut self) {
        self.held = true;
    }
}
