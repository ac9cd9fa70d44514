//! The session core: audio in, events out, whatever the front end.
//!
//! A front end (the filter, a daemon client, the daemon's WebSocket
//! endpoint) feeds [`run`] with [`SessionInput`] over a bounded channel, and
//! takes [`Event`]s from another. The core promises that no word is lost
//! and none is given out twice, whatever happens upstream, and that every
//! timestamp is on one timeline: ms from the first audio of the stream.
//!
//! How it keeps that promise:
//!
//! * Input is read at real-time pace ([`crate::pacer`]) into a
//!   [`ReplayBuffer`], whether or not an upstream session is working, so live
//!   input is never held up by the service. Audio leaves the buffer only once
//!   a final token covers it (the *covered* offset).
//! * The buffered audio goes to the current upstream session on the
//!   [`Engine`]. When that session fails in a way worth retrying (a lost or
//!   stalled connection, 408/429/500/503), a new one is opened with backoff
//!   ([`crate::retry`]) and fed from the covered offset, a final-token
//!   boundary; the tokens it re-recognises before the seam are dropped by
//!   timestamp ([`timeline`]). Under a daemon, a 429 at an upstream
//!   session's start is no failure: the session waits in the daemon's
//!   queue again ([`Lease`]), its audio still read into the buffer.
//! * Before the service's session cap, the next session is opened while the
//!   current one runs, and takes over from the covered offset
//!   (make-before-break).
//! * An idle upstream session is ended like at the end of input (Soniox bills
//!   idle time); a new one opens when audio returns.
//! * When the service fails for good, the fallback engine, if any, goes on
//!   from the covered offset, once ([`recovery`]).
//! * At the end of input, or when `stop` is cancelled, the audio is ended and
//!   the engine read until it has finished, so the last finals are never lost
//!   (after a stop, within `drain_timeout`).
//!
//! The rooms: this file has the public surface and the select loop that
//! drives everything; [`upstream`] one upstream session's life (opening,
//! sending, its answers); [`recovery`] outages, retries and the fallback;
//! [`timeline`] the pure token bookkeeping (rebasing, the seam, the covered
//! offset, partials).
//!
//! Failures are reported in-band (an `error` event, then `end`) and returned,
//! so the front end only maps them to its exit status. If the event receiver
//! goes away (a closed stdout), the session ends quietly.

mod controls;
mod lease;
mod recovery;
#[cfg(test)]
mod tests;
mod timeline;
mod upstream;

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::SessionConfig;
use crate::engine::{Control, Engine, SessionEngines};
use crate::error::{Error, Result};
use crate::event::Event;
use crate::pacer::{Pacer, Release};
use crate::replay::ReplayBuffer;
use crate::timer::LazyTimer;

use controls::Controls;
pub(crate) use lease::{Lease, Retake};
use recovery::Outage;
use timeline::{Frames, Timeline};
use upstream::{
    Connecting, Purpose, Upstream, join_connecting, next_engine_event, reserve_command,
};

/// Container input has no replay (a new session needs the container's
/// header), so its buffer only holds audio not yet sent: this much.
const CONTAINER_BUFFER_BYTES: u64 = 8 << 20;

/// A `max_lead` so long that no input is ever held back: for engines that
/// take audio as fast as they decode it.
pub(crate) const UNPACED: Duration = Duration::from_secs(365 * 24 * 3600);

/// What a front end feeds the session.
#[derive(Debug)]
pub(crate) enum SessionInput {
    /// Audio in the session's format; whole frames for raw formats.
    Audio(Bytes),
    /// Make everything so far final now (a FIFO writer closed, SIGUSR1).
    Finalize,
    /// A Soniox client's control message: it goes upstream after the audio
    /// fed before it ([`controls`]).
    Control(Control),
    /// Reading the input failed: the audio so far is finished as at the end
    /// of input, then the session fails with this error.
    Failed(Error),
}

/// Why a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndReason {
    /// The input ended.
    Eof,
    /// `stop` was cancelled (a signal, a daemon shutdown).
    Stopped,
    /// The event receiver went away.
    ConsumerGone,
    /// The session failed.
    Failed,
}

impl EndReason {
    fn as_str(self) -> &'static str {
        match self {
            EndReason::Eof => "eof",
            EndReason::Stopped => "signal",
            EndReason::ConsumerGone => "consumer_gone",
            EndReason::Failed => "error",
        }
    }
}

/// What a finished session did.
#[derive(Debug, Clone)]
pub(crate) struct Summary {
    /// Why it ended.
    pub(crate) reason: EndReason,
    /// Audio read, in ms.
    pub(crate) audio_ms: u64,
    /// Final tokens given out.
    pub(crate) tokens: u64,
    /// Upstream sessions opened.
    pub(crate) upstreams: u32,
}

/// Runs a session until its input ends, `stop` is cancelled, or it fails.
/// `lease`, where upstream sessions are limited: the place it holds, given
/// back while idle.
pub(crate) async fn run(
    engines: SessionEngines,
    lease: Option<Lease>,
    config: &SessionConfig,
    session_id: String,
    mut input: mpsc::Receiver<SessionInput>,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) -> Result<Summary> {
    let mut session = Session::new(engines, config, session_id, events);
    session.lease = lease;
    let outcome = session.stream(&mut input, &stop).await;
    let (reason, failure) = match outcome {
        Ok(reason) => (reason, None),
        Err(Halt::ConsumerGone) => (EndReason::ConsumerGone, None),
        Err(Halt::Failed(err)) => (EndReason::Failed, Some(err)),
    };
    if let Some(err) = &failure {
        // Best effort: the consumer may be gone too.
        let _ = session.events.send(Event::error(err)).await;
    }
    let summary = Summary {
        reason,
        audio_ms: session.audio_ms(),
        tokens: session.tokens_out,
        upstreams: session.upstreams_opened,
    };
    if session.started && reason != EndReason::ConsumerGone {
        let _ = session
            .events
            .send(Event::End {
                audio_ms: summary.audio_ms,
                tokens: summary.tokens,
                duration_ms: session.began.elapsed().as_millis() as u64,
                reason: reason.as_str().to_owned(),
            })
            .await;
    }
    match failure {
        Some(err) => Err(err),
        None => Ok(summary),
    }
}

/// Why streaming stopped early.
enum Halt {
    /// The event receiver is gone: nobody to tell anything.
    ConsumerGone,
    /// The session failed.
    Failed(Error),
}

impl From<Error> for Halt {
    fn from(err: Error) -> Halt {
        Halt::Failed(err)
    }
}

struct Session<'a> {
    engine: Engine,
    /// The engine to go on with when the service fails for good.
    fallback: Option<Engine>,
    config: &'a SessionConfig,
    /// The audio's frame layout; `None` for containers.
    frames: Option<Frames>,
    session_id: String,
    /// The `start` event's model: the first engine's, as asked for.
    requested_model: String,
    events: mpsc::Sender<Event>,
    began: Instant,
    started: bool,
    buffer: ReplayBuffer,
    /// Stream byte offset up to which every word is final and given out.
    covered: u64,
    upstream: Option<Upstream>,
    connecting: Option<Connecting>,
    outage: Option<Outage>,
    retry_at: Option<Instant>,
    /// A finalize is due once this much audio went to the upstream session.
    finalize_at: Option<u64>,
    /// A client's control messages not yet sent upstream.
    controls: Controls,
    /// No rotation attempt before this (after one failed).
    rotation_not_before: Option<Instant>,
    upstreams_opened: u32,
    /// Whether the service ever answered (for the exit status on giving up).
    reached: bool,
    /// Containers: audio ms of the upstream sessions already closed.
    closed_upstreams_ms: u64,
    pacer: Pacer,
    tokens_out: u64,
    /// Final tokens, partials and the covered offset on the stream's time.
    timeline: Timeline,
    last_audio_at: Instant,
    input_done: bool,
    /// Whether the fallback engine took over (it happens once).
    fell_back: bool,
    /// The place under the daemon's limit, if any.
    lease: Option<Lease>,
    /// Waiting for that place again, after an idle close or a refusal.
    retaking: Option<Retake>,
    /// Since when it waits after a refusal at start (see `recovery`).
    queued_since: Option<Instant>,
    /// Refusals past the cap on connections retried at once, in a row.
    crowded: u32,
}

impl<'a> Session<'a> {
    fn new(
        engines: SessionEngines,
        config: &'a SessionConfig,
        session_id: String,
        events: mpsc::Sender<Event>,
    ) -> Session<'a> {
        let now = Instant::now();
        let frames = Frames::of(&config.audio);
        let capacity = match config.audio.bytes_per_second() {
            Some(per_second) => (config.replay_buffer.as_secs_f64() * per_second as f64) as u64,
            None => CONTAINER_BUFFER_BYTES,
        };
        Session {
            requested_model: engines.engine.model_name(&config.recognition),
            engine: engines.engine,
            fallback: engines.fallback,
            config,
            frames,
            session_id,
            events,
            began: now,
            started: false,
            buffer: ReplayBuffer::new(capacity),
            covered: 0,
            upstream: None,
            connecting: None,
            outage: None,
            retry_at: None,
            finalize_at: None,
            controls: Controls::default(),
            rotation_not_before: None,
            upstreams_opened: 0,
            reached: false,
            closed_upstreams_ms: 0,
            pacer: Pacer::new(config.timing.wall(config.max_lead)),
            tokens_out: 0,
            timeline: Timeline::new(frames, config.partials),
            last_audio_at: now,
            input_done: false,
            fell_back: false,
            lease: None,
            retaking: None,
            queued_since: None,
            crowded: 0,
        }
    }

    fn raw(&self) -> bool {
        self.config.audio.is_raw()
    }

    /// Stream ms of a stream byte offset (raw formats; 0 for containers).
    fn ms_at(&self, offset: u64) -> u64 {
        self.frames.map_or(0, |frames| frames.ms_at(offset))
    }

    /// Audio read so far, ms.
    fn audio_ms(&self) -> u64 {
        match self.config.audio.duration_ms(self.buffer.end()) {
            Some(ms) => ms,
            None => self.closed_upstreams_ms + self.upstream.as_ref().map_or(0, |u| u.processed_ms),
        }
    }

    /// The select loop: everything the session does happens in one of its
    /// branches, one at a time, so the state needs no locks and every
    /// handler sees it whole.
    ///
    /// Each turn starts by ending the loop once the input is done and every
    /// byte read is final, and by opening an upstream session when audio
    /// waits with none. Then the loop is `biased`: it polls the branches in
    /// the order written rather than at random, so when several are ready at
    /// once (an answer, a free command slot and a due chunk often are) the
    /// most urgent goes first, and a run is reproducible. A lower branch is
    /// only held up while a higher one stays ready, and each of those drains
    /// something bounded (the engine's answers, the buffered audio against a
    /// bounded command queue), so input is always reached. The order:
    ///
    /// 1. `stop`, so that a signal is acted on at once even under a steady
    ///    flow of audio and answers (taken once: it starts the drain);
    /// 2. the drain deadline, so that nothing can stretch the drain past its
    ///    bound;
    /// 3. engine events, before anything that reads or sends: an answer
    ///    advances the covered offset and frees the replay buffer before
    ///    more audio is taken in, a failure is seen before more audio goes to
    ///    a dead session, and a rotation's hand-over (next) starts from the
    ///    old session's latest answer, so less is replayed;
    /// 4. the outcome of a connection attempt, before more audio goes to the
    ///    session it replaces; then the lease's place coming back, which
    ///    lets the next turn open a session;
    /// 5. the retry timer, so an outage's next attempt is not held up by
    ///    input;
    /// 6. a free command slot upstream, before more input: audio goes out as
    ///    soon as there is room, so what was sent stays close to what was
    ///    read;
    /// 7. the paced chunk's release, then new input (disabled while a chunk
    ///    waits: that is what holds the reader to real time, through the
    ///    bounded input channel);
    /// 8. the idle and rotation timers last: both can wait a turn, and audio
    ///    arriving as the idle deadline passes should win over closing a
    ///    session that would be reopened at once.
    async fn stream(
        &mut self,
        input: &mut mpsc::Receiver<SessionInput>,
        stop: &CancellationToken,
    ) -> Result<EndReason, Halt> {
        let mut pending: Option<Bytes> = None;
        let mut input_failure = None;
        let mut reason = EndReason::Eof;
        let mut drain_deadline: Option<Instant> = None;
        // The deadlines that move with every chunk keep one timer each.
        let mut release_timer = LazyTimer::new();
        let mut idle_timer = LazyTimer::new();
        let mut rotate_timer = LazyTimer::new();
        loop {
            if self.input_done && self.is_flushed() {
                break;
            }
            if self.needs_upstream() {
                match self.lease.as_mut() {
                    // Its place was given back while idle: ask again first.
                    Some(lease) if !lease.held() => {
                        if self.retaking.is_none() {
                            info!(session = %self.session_id, "audio again: waiting for an upstream slot");
                            self.retaking = Some(lease.take());
                        }
                    }
                    _ => self.start_connecting(if self.outage.is_some() {
                        Purpose::Recover
                    } else {
                        Purpose::Fresh
                    }),
                }
            }
            let release = pending.as_ref().and_then(|chunk| self.release_time(chunk));
            let idle_at = self.idle_deadline(pending.is_some());
            let rotate_at = self.rotation_deadline();
            let command_tx = self
                .upstream
                .as_ref()
                .filter(|_| self.has_command_ready())
                .map(|upstream| upstream.link.commands.clone());
            tokio::select! {
                biased;
                () = stop.cancelled(), if drain_deadline.is_none() => {
                    info!(session = %self.session_id, "stopping: ending the audio and draining");
                    reason = EndReason::Stopped;
                    drain_deadline = Some(Instant::now() + self.config.timing.wall(self.config.drain_timeout));
                    if let Some(chunk) = pending.take() {
                        self.ingest(chunk).await?;
                    }
                    self.end_input();
                }
                () = sleep_until_or_never(drain_deadline) => {
                    warn!(session = %self.session_id, "the drain timed out; the last tokens may be missing");
                    break;
                }
                event = next_engine_event(&mut self.upstream) => self.on_engine_event(event).await?,
                opened = join_connecting(&mut self.connecting) => self.on_connected(opened).await?,
                // The place is held again: the next turn opens a session.
                () = retake(&mut self.retaking) => {
                    self.retaking = None;
                    if let Some(lease) = self.lease.as_mut() {
                        lease.taken();
                    }
                    self.requeue_over();
                }
                () = sleep_until_or_never(self.retry_at) => {
                    self.retry_at = None;
                    if self.upstream.is_none() {
                        self.start_connecting(Purpose::Recover);
                    }
                }
                permit = reserve_command(command_tx), if self.has_command_ready() => {
                    if let Some(permit) = permit {
                        self.send_next(permit).await?;
                    }
                }
                // A paced chunk's time has come.
                () = release_timer.until(release), if pending.is_some() => {
                    if let Some(chunk) = pending.take() {
                        self.ingest(chunk).await?;
                    }
                }
                // New input once the paced chunk is in: backpressure reaches
                // the reader through the bounded channel, at real-time pace.
                message = input.recv(), if pending.is_none() && !self.input_done => match message {
                    Some(SessionInput::Audio(chunk)) if chunk.is_empty() => {}
                    Some(SessionInput::Audio(chunk)) => match self.release_time(&chunk) {
                        Some(at) if at <= Instant::now() => self.ingest(chunk).await?,
                        _ => pending = Some(chunk),
                    },
                    // Due once the audio read so far has gone upstream (the
                    // upstream session may still be connecting).
                    Some(SessionInput::Finalize) => {
                        if self.buffer.end() > self.covered {
                            self.finalize_at = Some(self.buffer.end());
                        }
                    }
                    Some(SessionInput::Control(control)) => {
                        let streaming = self.upstream.as_ref().is_some_and(Upstream::streaming);
                        self.controls.push(self.buffer.end(), control, streaming);
                    }
                    Some(SessionInput::Failed(err)) => {
                        input_failure = Some(err);
                        self.end_input();
                    }
                    None => self.end_input(),
                },
                // Soniox bills idle time: end the session, and open a new
                // one when audio returns.
                () = idle_timer.until(idle_at) => {
                    info!(session = %self.session_id, "closing the idle upstream session");
                    if let Some(upstream) = self.upstream.as_mut() {
                        upstream.request_end();
                    }
                }
                () = rotate_timer.until(rotate_at) => self.start_connecting(Purpose::Rotate),
            }
        }
        if let Some(err) = input_failure {
            return Err(Halt::Failed(err));
        }
        Ok(reason)
    }

    /// No more input: every upstream session ends its audio once it has
    /// been sent everything.
    fn end_input(&mut self) {
        self.input_done = true;
        if let Some(upstream) = self.upstream.as_mut() {
            upstream.request_end();
        }
    }

    /// Whether every byte read has been made final (or there was none).
    fn is_flushed(&self) -> bool {
        self.upstream.is_none() && self.connecting.is_none() && self.covered >= self.buffer.end()
    }

    /// Whether audio waits that no upstream session will take.
    fn needs_upstream(&self) -> bool {
        self.upstream.is_none()
            && self.connecting.is_none()
            && self.retry_at.is_none()
            && self.covered < self.buffer.end()
    }

    /// When `chunk` may be read in; `None` while waiting for the service's
    /// progress.
    fn release_time(&self, chunk: &Bytes) -> Option<Instant> {
        let now = Instant::now();
        if self.raw() {
            Some(self.pacer.release_raw(self.chunk_duration(chunk), now))
        } else {
            // Without an upstream session (connecting, or in an outage) the
            // window holds too: what is read then goes out at once when one
            // opens, so reading on would overrun the window there.
            match self.pacer.release_container(now) {
                Release::At(at) => Some(at),
                Release::OnProgress => None,
            }
        }
    }

    /// Wall time a raw chunk stands for.
    fn chunk_duration(&self, chunk: &Bytes) -> Duration {
        let per_second = self.config.audio.bytes_per_second().unwrap_or(1).max(1);
        self.config.timing.wall(Duration::from_nanos(
            chunk.len() as u64 * 1_000_000_000 / per_second,
        ))
    }

    /// Takes a chunk of input into the replay buffer.
    async fn ingest(&mut self, chunk: Bytes) -> Result<(), Halt> {
        let now = Instant::now();
        if self.raw() {
            self.pacer.sent_raw(self.chunk_duration(&chunk), now);
        } else {
            self.pacer.sent_container(chunk.len() as u64, now);
        }
        self.last_audio_at = now;
        if let Some(dropped) = self.buffer.push(chunk) {
            debug!(session = %self.session_id, from = dropped.start, to = dropped.end, "replay buffer full: dropped the oldest audio");
        }
        Ok(())
    }

    /// Gives out `start`, once: when the first upstream session opens, or
    /// before anything else the stream reports (an `overrun` or a `fallback`
    /// before any session opened), so that `start` is always first. It names
    /// the model asked for, whichever engine goes on.
    async fn ensure_started(&mut self) -> Result<(), Halt> {
        if self.started {
            return Ok(());
        }
        self.started = true;
        let audio = &self.config.audio;
        let start = Event::Start {
            session_id: self.session_id.clone(),
            model: self.requested_model.clone(),
            audio_format: audio.name.clone(),
            sample_rate: audio.sample_rate,
            num_channels: audio.channels,
        };
        self.send(start).await
    }

    /// Gives out an event, after `start` if it has not gone yet (an `error`
    /// and the `end` do not start a stream).
    async fn emit(&mut self, event: Event) -> Result<(), Halt> {
        if !matches!(event, Event::Error { .. } | Event::End { .. }) {
            self.ensure_started().await?;
        }
        self.send(event).await
    }

    /// Sends an event. The output queue is large (see
    /// [`crate::output::OUTPUT_QUEUE`]) so a slow consumer does not hold up
    /// the audio; past it, a `partial` is dropped (the next one replaces it
    /// anyway) and anything else waits for room.
    async fn send(&self, event: Event) -> Result<(), Halt> {
        match self.events.try_send(event) {
            Ok(()) => Ok(()),
            Err(TrySendError::Closed(_)) => Err(Halt::ConsumerGone),
            Err(TrySendError::Full(Event::Partial { .. })) => Ok(()),
            Err(TrySendError::Full(event)) => self
                .events
                .send(event)
                .await
                .map_err(|_| Halt::ConsumerGone),
        }
    }
}

/// Waits for the lease's place; pending forever when not asking.
async fn retake(retaking: &mut Option<Retake>) {
    match retaking {
        Some(future) => future.await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
