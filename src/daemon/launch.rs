//! The session launcher: the one way every daemon front end starts a
//! client's session, so their quotas, logs and status cannot drift apart.
//!
//! Three steps, each a type:
//!
//! 1. [`prepare`]: the engines the client may have and its session
//!    settings within the daemon's bounds, and an entry in the registry
//!    (the per-uid limit is checked here) → [`Prepared`];
//! 2. [`Prepared::admit`]: an upstream slot, waiting in the queue if need
//!    be (the position goes out as a `queued` event) → [`Admitted`]. The
//!    future may be dropped at any point, which gives up the place;
//! 3. [`Admitted::spawn`]: the session core on its own task, which holds
//!    the slot and the registration until the session ends and logs its
//!    start and end → [`Running`].
//!
//! A front end only moves bytes: the Unix socket's raw audio and NDJSON,
//! or the Soniox protocol's frames.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use futures_util::FutureExt;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, info, warn};

use super::Shared;
use super::admission::{Slot, Ticket};
use super::registry::{ClientName, Peer, Progress, Registration, State};
use crate::config::{SessionConfig, SessionRequest};
use crate::engine::SessionEngines;
use crate::engine::quota::Tier;
use crate::error::{Error, Result};
use crate::event::Event;
use crate::session::{self, Lease, Retake, SessionInput, Summary};

/// Who is asking, and through which front end.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    /// The session's id in its `start` event, the logs and `status`.
    pub(crate) session_id: String,
    /// The front end's name in `status` and the logs: `unix`, `ws`.
    pub(crate) front: &'static str,
    /// The peer's credentials.
    pub(crate) peer: Peer,
    /// Sessions this peer's uid may have at once (0: no limit).
    pub(crate) per_uid_limit: usize,
    /// A named client of the WebSocket endpoint, with its own limit.
    pub(crate) name: Option<ClientName>,
}

/// Why a session was not started.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// The session cannot run as asked (an engine the daemon lacks), or the
    /// daemon is full (per uid, or queue): the error says which.
    Error(Error),
    /// The daemon is shutting down.
    Stopping,
}

impl From<Error> for Refusal {
    fn from(err: Error) -> Refusal {
        Refusal::Error(err)
    }
}

/// A session with its engines and settings, registered.
#[derive(Debug)]
pub(crate) struct Prepared {
    shared: Arc<Shared>,
    engines: SessionEngines,
    config: SessionConfig,
    registration: Registration,
    /// The named client's name, for the logs.
    client: Option<Arc<str>>,
}

/// Step 1: the engines and settings for `request`, and a registry entry.
pub(crate) fn prepare(
    shared: &Arc<Shared>,
    client: Client,
    request: &SessionRequest,
) -> Result<Prepared, Refusal> {
    let (engines, config) = shared.session(request)?;
    let registration = shared
        .registry
        .register(
            client.session_id,
            client.front,
            client.peer,
            client.per_uid_limit,
            client.name.as_ref(),
        )
        .map_err(Error::Busy)?;
    registration
        .progress
        .set_bytes_per_second(config.audio.bytes_per_second());
    Ok(Prepared {
        shared: shared.clone(),
        engines,
        config,
        registration,
        client: client.name.map(|n| n.name),
    })
}

impl Prepared {
    /// The session's settings.
    pub(crate) fn config(&self) -> &SessionConfig {
        &self.config
    }

    /// Step 2: waits for an upstream slot. While queued, the position goes
    /// to `events` as a `queued` event, at first and each time it changes.
    pub(crate) async fn admit(self, events: &mpsc::Sender<Event>) -> Result<Admitted, Refusal> {
        let slot = match self.shared.admission.ask() {
            Ticket::Admitted(slot) => slot,
            Ticket::Busy => {
                return Err(Refusal::Error(Error::Busy(
                    "the daemon is busy: every upstream slot is taken and the queue is full".into(),
                )));
            }
            Ticket::Queued(waiting) => {
                self.registration.progress.set_state(State::Queued);
                // The position goes out when queued and at each move.
                let place = waiting.place();
                let report = place.follow(|position| async move {
                    let _ = events.send(Event::Queued { position }).await;
                });
                tokio::select! {
                    slot = waiting.slot() => slot,
                    never = report => match never {},
                    () = self.shared.stop.cancelled() => return Err(Refusal::Stopping),
                }
            }
        };
        self.registration.progress.set_state(State::Streaming);
        Ok(Admitted {
            prepared: self,
            slot,
        })
    }
}

/// A session holding its upstream slot, ready to run.
#[derive(Debug)]
pub(crate) struct Admitted {
    prepared: Prepared,
    slot: Slot,
}

impl Admitted {
    /// Where the front end reports the audio it moves and its state.
    pub(crate) fn progress(&self) -> Arc<Progress> {
        self.prepared.registration.progress.clone()
    }

    /// The session's id, as the client gave it to [`prepare`].
    pub(crate) fn session_id(&self) -> &str {
        self.prepared.registration.session_id()
    }

    /// Step 3: runs the session core on its own task, reading `input` and
    /// giving out `events`.
    pub(crate) fn spawn(
        self,
        input: mpsc::Receiver<SessionInput>,
        events: mpsc::Sender<Event>,
    ) -> Running {
        let Admitted { prepared, slot } = self;
        let Prepared {
            shared,
            engines,
            config,
            registration,
            client,
        } = prepared;
        let lease = lease(&shared, slot, registration.progress.clone());
        let session_id = registration.session_id().to_owned();
        let stop = shared.stop.child_token();
        info!(session = %session_id, client = client.as_deref(), format = %config.audio, model = %config.recognition.model, "session start");
        let task = tokio::spawn(async move {
            let report = events.clone();
            let session = session::run(
                engines,
                Some(lease),
                &config,
                session_id.clone(),
                input,
                events,
                stop,
            );
            // A bug in one session ends that session, with an `error` event
            // for its client, and nothing else.
            let result = match AssertUnwindSafe(session).catch_unwind().await {
                Ok(result) => result,
                Err(_) => {
                    let err = Error::Internal("the session failed (a bug; it is logged)".into());
                    let _ = report.send(Event::error(&err)).await;
                    Err(err)
                }
            };
            match &result {
                Ok(summary) => {
                    info!(session = %session_id, client = client.as_deref(), audio_ms = summary.audio_ms, tokens = summary.tokens, upstreams = summary.upstreams, reason = ?summary.reason, "session end");
                }
                Err(err) => info!(session = %session_id, client = client.as_deref(), error = %err, "session failed"),
            }
            // Held to here: the entry goes when the session does (the slot
            // went with the lease, inside the session).
            drop(registration);
            result
        }.instrument(tracing::Span::current()));
        Running(Some(task))
    }
}

/// The session's hold on `slot`: given back while the session is idle
/// (its upstream session closed for lack of audio), asked for again, in the
/// queue's order, when audio returns; given back when Soniox refuses the
/// session's start, and asked for again at the head of the queue (the
/// admission lowers its limit meanwhile).
fn lease(shared: &Arc<Shared>, slot: Slot, progress: Arc<Progress>) -> Lease {
    let held = Arc::new(std::sync::Mutex::new(Some(slot)));
    let give_back = {
        let (held, progress) = (held.clone(), progress.clone());
        move || {
            // A plain take: a panic elsewhere cannot leave it half-done.
            drop(held.lock().unwrap_or_else(|e| e.into_inner()).take());
            progress.set_state(State::Idle);
        }
    };
    // The wait for a slot, which the lease then holds.
    let hold = {
        let (held, progress) = (held.clone(), progress.clone());
        move |slot: std::pin::Pin<Box<dyn Future<Output = Slot> + Send + Sync>>| -> Retake {
            let (held, progress) = (held.clone(), progress.clone());
            progress.set_state(State::Queued);
            Box::pin(async move {
                let slot = slot.await;
                *held.lock().unwrap_or_else(|e| e.into_inner()) = Some(slot);
                progress.set_state(State::Streaming);
            })
        }
    };
    let admission = shared.admission.clone();
    let take = {
        let (admission, hold) = (admission.clone(), hold.clone());
        move || -> Retake {
            let admission = admission.clone();
            hold(Box::pin(async move { admission.wait().await }))
        }
    };
    let requeue = move |tier: Tier| -> (usize, Retake) {
        let slot = held.lock().unwrap_or_else(|e| e.into_inner()).take();
        let Some(slot) = slot else {
            // The lease requeues only while it holds the slot; were it gone,
            // the session would just wait its turn.
            warn!(tier = tier.as_str(), "requeued without a slot");
            let admission = admission.clone();
            return (1, hold(Box::pin(async move { admission.wait().await })));
        };
        let waiting = admission.requeue(slot);
        let position = waiting.position;
        info!(
            tier = tier.as_str(),
            position,
            effective_limit = admission.usage().effective,
            "Soniox refused a session's start: back at the head of the queue"
        );
        (position, hold(Box::pin(waiting.slot())))
    };
    Lease::new(give_back, take)
        .with_requeue(requeue)
        .with_upstream_report(move |url| progress.set_upstream_url(url))
}

/// A running session's task; aborted if dropped before it ends, which
/// abandons its upstream session (so a client that goes away frees its slot
/// at once).
#[derive(Debug)]
pub(crate) struct Running(Option<JoinHandle<Result<Summary>>>);

impl Running {
    /// The session's outcome once it ends; `None` if its task failed.
    pub(crate) async fn outcome(&mut self) -> Option<Result<Summary>> {
        let handle = self.0.as_mut()?;
        let outcome = handle.await;
        self.0 = None;
        match outcome {
            Ok(result) => Some(result),
            Err(join) => {
                warn!(error = %join, "the session task failed");
                None
            }
        }
    }

    /// Ends the session now, abandoning its upstream session (no end of
    /// audio, no drain). Waits for the task to be gone, so that the input
    /// channel closing afterwards cannot be taken for an end of audio.
    pub(crate) async fn abandon(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
            // Cancelled (or it had just ended): either way it is over.
            let _ = handle.await;
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(handle) = self.0.take() {
            handle.abort();
        }
    }
}
