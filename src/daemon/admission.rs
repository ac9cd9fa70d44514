//! Admission: how many client sessions hold an upstream slot, who waits,
//! and how fast new upstream sessions may open.
//!
//! Soniox allows a project 10 concurrent streams and 100 new streams a
//! minute by default. A client session takes a [`Slot`] for its whole life
//! (its reconnects and rotations reuse it); past the limit it waits in a
//! bounded FIFO queue, and past the queue it is refused as busy. (The rate
//! of new upstream sessions is the engine's: [`crate::engine::RateLimiter`].)

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::oneshot;

/// The limits, changeable at run time (SIGHUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Client sessions streaming at once.
    pub(crate) max_upstream: usize,
    /// Client sessions that may wait.
    pub(crate) queue: usize,
}

#[derive(Debug)]
struct State {
    limits: Limits,
    active: usize,
    /// Waiters in arrival order; a dropped receiver means the client left.
    waiting: VecDeque<oneshot::Sender<()>>,
}

/// The slot pool.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    state: Arc<Mutex<State>>,
}

/// What asking for a slot gave.
#[derive(Debug)]
pub(crate) enum Ticket {
    /// A slot, at once.
    Admitted(Slot),
    /// A place in the queue (1-based position); await [`Waiting::slot`].
    Queued(Waiting),
    /// The queue is full.
    Busy,
}

/// A place in the queue. Dropped before its slot came, it gives the place
/// up; dropped just after its slot was handed over, it gives the slot back.
#[derive(Debug)]
pub(crate) struct Waiting {
    /// 1-based position when queued.
    pub(crate) position: usize,
    admission: Admission,
    /// `None` once the slot was taken.
    wake: Option<oneshot::Receiver<()>>,
}

impl Waiting {
    /// Waits for the slot.
    pub(crate) async fn slot(mut self) -> Slot {
        // The sender is only dropped after sending (a slot handed over) or
        // when the admission is gone with its waiters, which cannot happen
        // while `self.admission` holds it.
        if let Some(wake) = self.wake.as_mut() {
            let _ = wake.await;
        }
        self.wake = None;
        Slot {
            admission: self.admission.clone(),
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut wake) = self.wake.take() {
            // Closed first, so no slot can be handed over after the check.
            wake.close();
            if wake.try_recv().is_ok() {
                self.admission.release();
            }
        }
    }
}

/// An upstream slot; released on drop, handing it to the next waiter.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Admission,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.admission.release();
    }
}

impl Admission {
    /// A pool with `limits`.
    pub(crate) fn new(limits: Limits) -> Admission {
        Admission {
            state: Arc::new(Mutex::new(State {
                limits,
                active: 0,
                waiting: VecDeque::new(),
            })),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this short, non-reentrant lock would be a
        // bug; the state stays consistent, so carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks for a slot.
    pub(crate) fn ask(&self) -> Ticket {
        let mut state = self.lock();
        state.waiting.retain(|w| !w.is_closed());
        if state.active < state.limits.max_upstream && state.waiting.is_empty() {
            state.active += 1;
            return Ticket::Admitted(Slot {
                admission: self.clone(),
            });
        }
        if state.waiting.len() >= state.limits.queue {
            return Ticket::Busy;
        }
        Ticket::Queued(self.enqueue(&mut state))
    }

    /// A slot, waiting in the queue however long it is: for a session that
    /// gave its slot back while idle and has audio again (it is already
    /// admitted, so it is never refused).
    pub(crate) async fn wait(&self) -> Slot {
        let waiting = {
            let mut state = self.lock();
            state.waiting.retain(|w| !w.is_closed());
            if state.active < state.limits.max_upstream && state.waiting.is_empty() {
                state.active += 1;
                return Slot {
                    admission: self.clone(),
                };
            }
            self.enqueue(&mut state)
        };
        waiting.slot().await
    }

    fn enqueue(&self, state: &mut State) -> Waiting {
        let (tx, rx) = oneshot::channel();
        state.waiting.push_back(tx);
        Waiting {
            position: state.waiting.len(),
            admission: self.clone(),
            wake: Some(rx),
        }
    }

    fn release(&self) {
        let mut state = self.lock();
        state.active -= 1;
        Self::hand_over(&mut state);
    }

    /// Gives free slots to waiters still there.
    fn hand_over(state: &mut State) {
        while state.active < state.limits.max_upstream {
            let Some(waiter) = state.waiting.pop_front() else {
                break;
            };
            if waiter.send(()).is_ok() {
                state.active += 1;
            }
        }
    }

    /// New limits (SIGHUP): a higher limit admits waiters at once; a lower
    /// one lets running sessions finish.
    pub(crate) fn set_limits(&self, limits: Limits) {
        let mut state = self.lock();
        state.limits = limits;
        Self::hand_over(&mut state);
    }

    /// Slots free now (none while anyone waits).
    pub(crate) fn free_slots(&self) -> usize {
        let mut state = self.lock();
        state.waiting.retain(|w| !w.is_closed());
        if state.waiting.is_empty() {
            state.limits.max_upstream.saturating_sub(state.active)
        } else {
            0
        }
    }

    /// (streaming, waiting, limits) now.
    pub(crate) fn usage(&self) -> (usize, usize, Limits) {
        let mut state = self.lock();
        state.waiting.retain(|w| !w.is_closed());
        (state.active, state.waiting.len(), state.limits)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn slots_queue_and_hand_over_in_order() {
        let admission = Admission::new(Limits {
            max_upstream: 1,
            queue: 2,
        });
        let Ticket::Admitted(first) = admission.ask() else {
            panic!("a free slot")
        };
        let Ticket::Queued(second) = admission.ask() else {
            panic!("queued")
        };
        let Ticket::Queued(third) = admission.ask() else {
            panic!("queued")
        };
        assert_eq!((second.position, third.position), (1, 2));
        assert!(matches!(admission.ask(), Ticket::Busy));
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(1), second.slot())
            .await
            .expect("handed over");
        assert_eq!(admission.usage().0, 1);
        // A waiter that leaves gives its place up.
        drop(third);
        drop(second);
        assert_eq!(
            admission.usage(),
            (
                0,
                0,
                Limits {
                    max_upstream: 1,
                    queue: 2
                }
            )
        );
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_after_its_turn_gives_the_slot_back() {
        let admission = Admission::new(Limits {
            max_upstream: 1,
            queue: 5,
        });
        let Ticket::Admitted(first) = admission.ask() else {
            panic!("a free slot")
        };
        let Ticket::Queued(second) = admission.ask() else {
            panic!("queued")
        };
        // Its turn comes, but it is gone before it takes the slot.
        drop(first);
        assert_eq!(admission.usage().0, 1, "handed over");
        drop(second);
        assert_eq!(admission.usage().0, 0, "given back, not leaked");
        // An idle session asking again waits its turn, however full the queue.
        let Ticket::Admitted(busy) = admission.ask() else {
            panic!("a free slot")
        };
        let again = tokio::spawn({
            let admission = admission.clone();
            async move { admission.wait().await }
        });
        tokio::task::yield_now().await;
        drop(busy);
        tokio::time::timeout(Duration::from_secs(1), again)
            .await
            .expect("admitted once the slot was free")
            .unwrap();
    }

    #[tokio::test]
    async fn raising_the_limit_admits_waiters() {
        let admission = Admission::new(Limits {
            max_upstream: 0,
            queue: 5,
        });
        let Ticket::Queued(waiting) = admission.ask() else {
            panic!("queued")
        };
        admission.set_limits(Limits {
            max_upstream: 3,
            queue: 5,
        });
        tokio::time::timeout(Duration::from_secs(1), waiting.slot())
            .await
            .expect("admitted after the raise");
    }
}
