//! Admission: how many client sessions hold an upstream slot, who waits,
//! and how fast new upstream sessions may open.
//!
//! Soniox allows a project 10 concurrent streams and 100 new streams a
//! minute by default. A client session takes a [`Slot`] for its whole life
//! (its reconnects and rotations reuse it); past the limit it waits in a
//! bounded FIFO queue, and past the queue it is refused as busy. (The rate
//! of new upstream sessions is the engine's: [`crate::engine::RateLimiter`].)
//!
//! The limit in force is not always the configured one: a session whose
//! start Soniox refuses (429) gives its slot back and goes back to the head
//! of the queue ([`Admission::requeue`]), and the limit drops to what
//! Soniox accepted, to be probed upward again as sessions end
//! ([`super::aimd`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;

use super::aimd::Estimate;
use crate::config::Timing;

/// The limits, changeable at run time (SIGHUP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// Client sessions streaming at once.
    pub(crate) max_upstream: usize,
    /// Client sessions that may wait.
    pub(crate) queue: usize,
}

/// A place in the queue: the wake-up carries the epoch the slot is granted
/// in ([`Estimate::epoch`]); a dropped receiver means the client left.
#[derive(Debug)]
struct Waiter {
    /// Who it is, for [`Place::position`].
    id: u64,
    wake: oneshot::Sender<u64>,
    /// Put back after a refusal: ahead of those who have not streamed yet.
    requeued: bool,
}

#[derive(Debug)]
struct State {
    limits: Limits,
    estimate: Estimate,
    active: usize,
    /// Waiters in order: the requeued first, then by arrival.
    waiting: VecDeque<Waiter>,
    next_waiter: u64,
}

impl State {
    fn forget_gone(&mut self) {
        self.waiting.retain(|w| !w.wake.is_closed());
    }

    /// Whether a session may start now without waiting.
    fn room(&mut self) -> bool {
        self.forget_gone();
        self.active < self.estimate.effective()
            && self.waiting.is_empty()
            && !self.estimate.held(Instant::now())
    }
}

/// The slot pool.
#[derive(Debug, Clone)]
pub(crate) struct Admission {
    state: Arc<Mutex<State>>,
    /// Told when a hold begins, so that every waiter knows when to poke.
    hold_begun: Arc<Notify>,
    /// Told when the queue moves: a waiter left it, was handed a slot, or
    /// was put back ahead of others.
    moved: Arc<Notify>,
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
    id: u64,
    admission: Admission,
    /// `None` once the slot was taken.
    wake: Option<oneshot::Receiver<u64>>,
}

impl Waiting {
    /// Where this waiter is, to follow its position while it waits.
    pub(crate) fn place(&self) -> Place {
        Place {
            admission: self.admission.clone(),
            id: self.id,
        }
    }

    /// Waits for the slot. While starts are held (after a refusal), it also
    /// wakes when the hold ends, to let the head of the queue try.
    pub(crate) async fn slot(mut self) -> Slot {
        let mut epoch = 0;
        if let Some(wake) = self.wake.as_mut() {
            loop {
                // Listening before reading the hold, so that one begun in
                // between is not missed.
                let begun = self.admission.hold_begun.notified();
                tokio::pin!(begun);
                begun.as_mut().enable();
                let hold = self.admission.lock().estimate.hold_until();
                tokio::select! {
                    // The sender is only dropped after sending (a slot
                    // handed over) or when the admission is gone with its
                    // waiters, which cannot happen while `self.admission`
                    // holds it.
                    granted = &mut *wake => {
                        epoch = granted.unwrap_or_default();
                        break;
                    }
                    () = sleep_until_or_never(hold) => self.admission.poke(),
                    () = begun => {}
                }
            }
        }
        self.wake = None;
        Slot {
            admission: self.admission.clone(),
            epoch,
            live: true,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        if let Some(mut wake) = self.wake.take() {
            // Closed first, so no slot can be handed over after the check.
            wake.close();
            if wake.try_recv().is_ok() {
                self.admission.release(false);
            }
            self.admission.moved.notify_waiters();
        }
    }
}

/// A waiter's place in the queue, followed while it waits.
#[derive(Debug, Clone)]
pub(crate) struct Place {
    admission: Admission,
    id: u64,
}

impl Place {
    /// The 1-based position now, among the waiters still there; `None`
    /// once it has left the queue.
    pub(crate) fn position(&self) -> Option<usize> {
        let state = self.admission.lock();
        let mut ahead = 0;
        for waiter in &state.waiting {
            if waiter.id == self.id {
                return Some(ahead + 1);
            }
            if !waiter.wake.is_closed() {
                ahead += 1;
            }
        }
        None
    }

    /// Calls `report` with the position each time it changes (the first
    /// time too), for as long as the waiter is queued; never returns (the
    /// caller drops it with the wait).
    pub(crate) async fn follow<F: Future<Output = ()>>(
        &self,
        mut report: impl FnMut(usize) -> F,
    ) -> std::convert::Infallible {
        let mut last = None;
        loop {
            // Listening before reading the position, so that a move in
            // between is not missed.
            let moved = self.admission.moved.notified();
            tokio::pin!(moved);
            moved.as_mut().enable();
            let position = self.position();
            if position.is_some() && position != last {
                last = position;
                if let Some(position) = position {
                    report(position).await;
                }
            }
            moved.await;
        }
    }
}

/// An upstream slot; released on drop, handing it to the next waiter.
#[derive(Debug)]
pub(crate) struct Slot {
    admission: Admission,
    /// The epoch it was granted in.
    epoch: u64,
    /// Cleared when given back by [`Admission::requeue`] instead.
    live: bool,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.live {
            self.admission.release(true);
        }
    }
}

/// The admission's counts now, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Usage {
    /// Sessions holding a slot.
    pub(crate) streaming: usize,
    /// Sessions waiting for one.
    pub(crate) waiting: usize,
    /// The configured limits.
    pub(crate) limits: Limits,
    /// The upstream limit in force.
    pub(crate) effective: usize,
}

impl Admission {
    /// A pool with `limits`; holds after refusals run on `timing`.
    pub(crate) fn new(limits: Limits, timing: Timing) -> Admission {
        Admission {
            state: Arc::new(Mutex::new(State {
                limits,
                estimate: Estimate::new(limits.max_upstream, timing),
                active: 0,
                waiting: VecDeque::new(),
                next_waiter: 0,
            })),
            hold_begun: Arc::new(Notify::new()),
            moved: Arc::new(Notify::new()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this short, non-reentrant lock would be a
        // bug; the state stays consistent, so carry on with it.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn grant(&self, state: &mut State) -> Slot {
        state.active += 1;
        Slot {
            admission: self.clone(),
            epoch: state.estimate.epoch(),
            live: true,
        }
    }

    /// Asks for a slot.
    pub(crate) fn ask(&self) -> Ticket {
        let mut state = self.lock();
        if state.room() {
            return Ticket::Admitted(self.grant(&mut state));
        }
        if state.waiting.len() >= state.limits.queue {
            return Ticket::Busy;
        }
        Ticket::Queued(self.enqueue(&mut state, false))
    }

    /// A slot, waiting in the queue however long it is: for a session that
    /// gave its slot back while idle and has audio again (it is already
    /// admitted, so it is never refused).
    pub(crate) async fn wait(&self) -> Slot {
        let waiting = {
            let mut state = self.lock();
            if state.room() {
                return self.grant(&mut state);
            }
            self.enqueue(&mut state, false)
        };
        waiting.slot().await
    }

    /// Soniox refused the start of `slot`'s session: the slot is given back,
    /// the limit in force drops to the sessions still holding one, and the
    /// session waits again at the head of the queue (behind others put
    /// back before it), however long the queue is.
    pub(crate) fn requeue(&self, mut slot: Slot) -> Waiting {
        slot.live = false;
        let mut state = self.lock();
        state.active -= 1;
        let others = state.active;
        let hold_before = state.estimate.hold_until();
        state.estimate.refused(others, slot.epoch, Instant::now());
        state.forget_gone();
        let waiting = self.enqueue(&mut state, true);
        self.hand_over(&mut state, 0);
        if state.estimate.hold_until() != hold_before {
            self.hold_begun.notify_waiters();
        }
        waiting
    }

    /// Queues a waiter: the requeued after those put back before them, the
    /// rest at the end.
    fn enqueue(&self, state: &mut State, requeued: bool) -> Waiting {
        let (tx, rx) = oneshot::channel();
        state.next_waiter += 1;
        let id = state.next_waiter;
        let waiter = Waiter {
            id,
            wake: tx,
            requeued,
        };
        let at = if requeued {
            state.waiting.iter().take_while(|w| w.requeued).count()
        } else {
            state.waiting.len()
        };
        state.waiting.insert(at, waiter);
        if at + 1 < state.waiting.len() {
            // Ahead of others: they moved back.
            self.moved.notify_waiters();
        }
        Waiting {
            position: at + 1,
            id,
            admission: self.clone(),
            wake: Some(rx),
        }
    }

    /// A slot given back; `ended`: by a session that was not refused (a
    /// waiter that left before taking its slot was not a session).
    fn release(&self, ended: bool) {
        let mut state = self.lock();
        state.active -= 1;
        if ended {
            state.estimate.ended();
        }
        self.hand_over(&mut state, 1);
    }

    /// A hold may have ended: let the head of the queue try.
    fn poke(&self) {
        let mut state = self.lock();
        self.hand_over(&mut state, 0);
    }

    /// Gives free slots to waiters still there. While starts are held,
    /// only `passed` slots (just given back by sessions Soniox had
    /// accepted) go on.
    fn hand_over(&self, state: &mut State, mut passed: usize) {
        let before = state.waiting.len();
        while state.active < state.estimate.effective() {
            let held = state.estimate.held(Instant::now());
            if held && passed == 0 {
                break;
            }
            let Some(waiter) = state.waiting.pop_front() else {
                break;
            };
            if waiter.wake.send(state.estimate.epoch()).is_ok() {
                state.active += 1;
                if held {
                    passed -= 1;
                }
            }
        }
        if state.waiting.len() != before {
            self.moved.notify_waiters();
        }
    }

    /// New limits (SIGHUP): a higher limit admits waiters at once; a lower
    /// one lets running sessions finish. A changed upstream limit replaces
    /// the one learned from refusals.
    pub(crate) fn set_limits(&self, limits: Limits) {
        let mut state = self.lock();
        state.limits = limits;
        state.estimate.set_max(limits.max_upstream);
        self.hand_over(&mut state, 0);
    }

    /// Slots free now (none while anyone waits), under the limit in force.
    pub(crate) fn free_slots(&self) -> usize {
        let mut state = self.lock();
        state.forget_gone();
        if state.waiting.is_empty() {
            state.estimate.effective().saturating_sub(state.active)
        } else {
            0
        }
    }

    /// The counts now.
    pub(crate) fn usage(&self) -> Usage {
        let mut state = self.lock();
        state.forget_gone();
        Usage {
            streaming: state.active,
            waiting: state.waiting.len(),
            limits: state.limits,
            effective: state.estimate.effective(),
        }
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn slots_queue_and_hand_over_in_order() {
        let admission = Admission::new(
            Limits {
                max_upstream: 1,
                queue: 2,
            },
            Timing::REAL,
        );
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
        assert_eq!(admission.usage().streaming, 1);
        // A waiter that leaves gives its place up.
        drop(third);
        drop(second);
        let usage = admission.usage();
        assert_eq!((usage.streaming, usage.waiting, usage.effective), (0, 0, 1));
    }

    #[tokio::test]
    async fn a_place_follows_its_position() {
        let admission = Admission::new(
            Limits {
                max_upstream: 1,
                queue: 5,
            },
            Timing::REAL,
        );
        let Ticket::Admitted(first) = admission.ask() else {
            panic!("a free slot")
        };
        let waiting: Vec<Waiting> = (0..3)
            .map(|_| match admission.ask() {
                Ticket::Queued(waiting) => waiting,
                other => panic!("queued: {other:?}"),
            })
            .collect();
        let mut waiting = waiting.into_iter();
        let (second, third, fourth) = (
            waiting.next().unwrap(),
            waiting.next().unwrap(),
            waiting.next().unwrap(),
        );
        let place = fourth.place();
        let (tx, mut rx) = tokio::sync::mpsc::channel(8);
        let follower = tokio::spawn(async move {
            place
                .follow(|position| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(position).await;
                    }
                })
                .await;
        });
        let next = async |rx: &mut tokio::sync::mpsc::Receiver<usize>| {
            tokio::time::timeout(Duration::from_secs(5), rx.recv())
                .await
                .expect("a position in time")
        };
        assert_eq!(next(&mut rx).await, Some(3));
        // One ahead leaves: 2; the head is handed a slot: 1.
        drop(third);
        assert_eq!(next(&mut rx).await, Some(2));
        drop(first);
        assert_eq!(next(&mut rx).await, Some(1));
        assert_eq!(fourth.place().position(), Some(1));
        let second = second.slot().await;
        drop(second);
        let _slot = tokio::time::timeout(Duration::from_secs(5), fourth.slot())
            .await
            .expect("its turn");
        follower.abort();
    }

    #[tokio::test]
    async fn a_waiter_that_leaves_after_its_turn_gives_the_slot_back() {
        let admission = Admission::new(
            Limits {
                max_upstream: 1,
                queue: 5,
            },
            Timing::REAL,
        );
        let Ticket::Admitted(first) = admission.ask() else {
            panic!("a free slot")
        };
        let Ticket::Queued(second) = admission.ask() else {
            panic!("queued")
        };
        // Its turn comes, but it is gone before it takes the slot.
        drop(first);
        assert_eq!(admission.usage().streaming, 1, "handed over");
        drop(second);
        assert_eq!(admission.usage().streaming, 0, "given back, not leaked");
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
        let admission = Admission::new(
            Limits {
                max_upstream: 0,
                queue: 5,
            },
            Timing::REAL,
        );
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

#[cfg(test)]
mod refusals {
    use super::*;
    use std::time::Duration;

    fn admission(max_upstream: usize) -> Admission {
        Admission::new(
            Limits {
                max_upstream,
                queue: 10,
            },
            Timing::REAL,
        )
    }

    fn admitted(admission: &Admission) -> Slot {
        match admission.ask() {
            Ticket::Admitted(slot) => slot,
            other => panic!("not admitted: {other:?}"),
        }
    }

    async fn granted(waiting: Waiting) -> Slot {
        tokio::time::timeout(Duration::from_secs(60), waiting.slot())
            .await
            .expect("granted")
    }

    #[tokio::test(start_paused = true)]
    async fn a_refused_session_goes_back_to_the_head_and_the_limit_drops() {
        let admission = admission(4);
        let accepted: Vec<Slot> = (0..2).map(|_| admitted(&admission)).collect();
        let refused: Vec<Slot> = (0..2).map(|_| admitted(&admission)).collect();
        let Ticket::Queued(fresh) = admission.ask() else {
            panic!("queued")
        };
        let mut requeued: Vec<Waiting> = refused
            .into_iter()
            .map(|slot| admission.requeue(slot))
            .collect();
        // The refused go ahead of the fresh one, in the order refused.
        assert_eq!(
            requeued.iter().map(|w| w.position).collect::<Vec<_>>(),
            [1, 2]
        );
        let usage = admission.usage();
        assert_eq!((usage.streaming, usage.waiting), (2, 3));
        assert_eq!((usage.limits.max_upstream, usage.effective), (4, 2));
        assert_eq!(admission.free_slots(), 0);
        // A session that ends passes its slot to the first refused one, at
        // once: held or not, Soniox accepted a stream there.
        let mut accepted = accepted.into_iter();
        drop(accepted.next());
        let first = granted(requeued.remove(0)).await;
        assert_eq!(admission.usage().streaming, 2);
        // That was one clean end; the second raises the limit to 3, so two
        // go on: the second refused, then the fresh one.
        drop(accepted.next());
        tokio::time::sleep(Duration::from_secs(20)).await;
        let second = granted(requeued.remove(0)).await;
        let third = granted(fresh).await;
        let usage = admission.usage();
        assert_eq!((usage.streaming, usage.effective), (3, 3));
        drop((first, second, third));
    }

    #[tokio::test(start_paused = true)]
    async fn alone_and_refused_a_session_waits_out_the_hold() {
        let admission = admission(2);
        let slot = admitted(&admission);
        let start = tokio::time::Instant::now();
        // Refused with nothing else streaming (another daemon has the
        // project's streams): the floor is one, but not at once.
        let waiting = admission.requeue(slot);
        assert_eq!(admission.usage().effective, 1);
        let Ticket::Queued(fresh) = admission.ask() else {
            panic!("a fresh session queues behind it during the hold")
        };
        let slot = granted(waiting).await;
        let waited = start.elapsed();
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_secs(1),
            "{waited:?}"
        );
        // Refused again: the hold grows.
        let start = tokio::time::Instant::now();
        let waiting = admission.requeue(slot);
        let slot = granted(waiting).await;
        assert!(
            start.elapsed() >= Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
        drop(slot);
        granted(fresh).await;
    }
}
