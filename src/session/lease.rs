//! The session's place under a limit of upstream sessions (the daemon's
//! slots), held only while it needs one.
//!
//! A session whose upstream session was closed for idleness gives its place
//! back, so a client that has gone quiet does not keep others waiting; when
//! its audio returns it asks again, and its audio waits in the replay
//! buffer meanwhile. The filter has no limit and no lease.

use std::future::Future;
use std::pin::Pin;

/// The wait for a place. `Sync` too, because the session is shared by
/// reference across its awaits.
pub(crate) type Retake = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

/// A place under the limit.
pub(crate) struct Lease {
    held: bool,
    give_back: Box<dyn FnMut() + Send + Sync>,
    take: Box<dyn FnMut() -> Retake + Send + Sync>,
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
        }
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
