//! The session core: audio in, events out, whatever the front end.
//!
//! A front end (the filter today; the daemon and the WebSocket proxy later)
//! feeds [`run`] with [`SessionInput`] over a bounded channel, and takes
//! [`Event`]s from another. In between, the session
//!
//! * reads input at real-time pace ([`crate::pacer`]) into a
//!   [`ReplayBuffer`], whether or not an upstream session is working, so
//!   live input is never held up by the service;
//! * sends the buffered audio to the current upstream session on the
//!   [`Engine`], and forgets it once the service has made it final;
//! * when an upstream session fails in a way worth retrying (a lost or
//!   stalled connection, 408/429/500/503), opens a new one with backoff
//!   ([`crate::retry`]) and replays the audio no final token covers yet,
//!   from a final-token boundary, dropping the duplicates at the seam;
//! * before the service's session cap, opens the next session while the
//!   current one runs and hands over at a final-token boundary;
//! * closes an idle upstream session (Soniox bills idle time) and opens a
//!   new one when audio returns;
//! * turns engine updates into events on one timeline (ms from the first
//!   audio of the stream, whatever the upstream session): final tokens once
//!   each, `<end>`/`<fin>` as `endpoint`/`finalized`, the non-final tail as
//!   `partial` when asked, `reconnect` and `overrun` when they happen;
//! * at the end of input, or when `stop` is cancelled, ends the audio and
//!   reads until the engine has finished, so the last finals are never lost
//!   (after a stop, within `drain_timeout`).
//!
//! Failures are reported in-band (an `error` event, then `end`) and returned,
//! so the front end only maps them to its exit status. If the event receiver
//! goes away (a closed stdout), the session ends quietly.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::task::JoinHandle;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::SessionConfig;
use crate::engine::{Engine, EngineCommand, EngineEvent, EngineLink, SessionEngines, Update};
use crate::error::{Error, Result};
use crate::event::{Event, Token};
use crate::pacer::{Pacer, Release};
use crate::replay::ReplayBuffer;
use crate::retry::Backoff;
use crate::timer::LazyTimer;

/// Container input has no replay (a new session needs the container's
/// header), so its buffer only holds audio not yet sent: this much.
const CONTAINER_BUFFER_BYTES: u64 = 8 << 20;
/// The longest margin left before the service's session cap.
const MAX_ROTATION_MARGIN: Duration = Duration::from_secs(600);

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
pub(crate) async fn run(
    engines: SessionEngines,
    config: &SessionConfig,
    session_id: String,
    mut input: mpsc::Receiver<SessionInput>,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) -> Result<Summary> {
    let mut session = Session::new(engines, config, session_id, events);
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

/// Why a new upstream session is being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// The first, or the next after an idle close: nothing went wrong.
    Fresh,
    /// After a failure.
    Recover,
    /// Before the session cap, while the current one runs.
    Rotate,
}

/// A failure being recovered from.
struct Outage {
    since: Instant,
    backoff: Backoff,
    /// `dropped`, `error` or `stalled`, for the `reconnect` event.
    reason: &'static str,
    last: Error,
}

/// The upstream session in use.
struct Upstream {
    link: EngineLink,
    /// 1-based index over the stream.
    index: u32,
    /// Stream time of this session's audio zero, ms.
    base_ms: u64,
    /// Stream byte offset up to which audio has been sent.
    sent: u64,
    opened_at: Instant,
    /// The latest `total_audio_proc_ms` it reported.
    processed_ms: u64,
    /// End of audio was asked for (input done, idle close).
    end_requested: bool,
    /// End of audio was sent: only its last answers are awaited.
    finishing: bool,
    /// It has answered: an outage before it is over.
    proven: bool,
    /// The `reconnect` event to give out once it has answered.
    announce: Option<Event>,
}

struct Session<'a> {
    engine: Engine,
    /// The engine to go on with when the service fails for good.
    fallback: Option<Engine>,
    config: &'a SessionConfig,
    session_id: String,
    events: mpsc::Sender<Event>,
    began: Instant,
    started: bool,
    buffer: ReplayBuffer,
    /// Stream byte offset up to which every word is final and given out.
    covered: u64,
    upstream: Option<Upstream>,
    connecting: Option<(JoinHandle<Result<EngineLink>>, Purpose)>,
    outage: Option<Outage>,
    retry_at: Option<Instant>,
    /// A finalize is due once this much audio went to the upstream session.
    finalize_at: Option<u64>,
    /// No rotation attempt before this (after one failed).
    rotation_not_before: Option<Instant>,
    upstreams_opened: u32,
    /// Whether the service ever answered (for the exit status on giving up).
    reached: bool,
    /// Containers: audio ms of the upstream sessions already closed.
    closed_upstreams_ms: u64,
    pacer: Pacer,
    tokens_out: u64,
    last_final_end_ms: Option<u64>,
    /// The non-final tail as last given out.
    partial: Vec<Token>,
    last_audio_at: Instant,
    input_done: bool,
    /// Whether the fallback engine took over (it happens once).
    fell_back: bool,
}

impl<'a> Session<'a> {
    fn new(
        engines: SessionEngines,
        config: &'a SessionConfig,
        session_id: String,
        events: mpsc::Sender<Event>,
    ) -> Session<'a> {
        let now = Instant::now();
        let capacity = match config.audio.bytes_per_second() {
            Some(per_second) => (config.replay_buffer.as_secs_f64() * per_second as f64) as u64,
            None => CONTAINER_BUFFER_BYTES,
        };
        Session {
            engine: engines.engine,
            fallback: engines.fallback,
            config,
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
            rotation_not_before: None,
            upstreams_opened: 0,
            reached: false,
            closed_upstreams_ms: 0,
            pacer: Pacer::new(config.timing.wall(config.max_lead)),
            tokens_out: 0,
            last_final_end_ms: None,
            partial: Vec::new(),
            last_audio_at: now,
            input_done: false,
            fell_back: false,
        }
    }

    fn raw(&self) -> bool {
        self.config.audio.is_raw()
    }

    /// Stream ms of a stream byte offset (raw formats).
    fn ms_at(&self, offset: u64) -> u64 {
        self.config.audio.duration_ms(offset).unwrap_or(0)
    }

    /// The whole frame at or before stream time `ms` (raw formats).
    fn offset_at(&self, ms: u64) -> u64 {
        let audio = &self.config.audio;
        match (audio.bytes_per_frame(), audio.sample_rate) {
            (Some(frame), Some(rate)) => ms * u64::from(rate) / 1000 * frame as u64,
            _ => 0,
        }
    }

    /// Audio read so far, ms.
    fn audio_ms(&self) -> u64 {
        match self.config.audio.duration_ms(self.buffer.end()) {
            Some(ms) => ms,
            None => self.closed_upstreams_ms + self.upstream.as_ref().map_or(0, |u| u.processed_ms),
        }
    }

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
                self.start_connecting(if self.outage.is_some() {
                    Purpose::Recover
                } else {
                    Purpose::Fresh
                });
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
                        upstream.end_requested = true;
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
            upstream.end_requested = true;
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

    fn idle_deadline(&self, chunk_pending: bool) -> Option<Instant> {
        let idle = self.config.idle_close?;
        let upstream = self.upstream.as_ref()?;
        if chunk_pending || upstream.end_requested || upstream.sent < self.buffer.end() {
            return None;
        }
        Some(self.last_audio_at + self.config.timing.wall(idle))
    }

    /// How long an upstream session may run: the service's cap less a
    /// margin that leaves room for the handover.
    fn rotate_after(&self) -> Duration {
        let cap = self.config.max_session;
        cap - (cap / 3).min(MAX_ROTATION_MARGIN)
    }

    fn rotation_deadline(&self) -> Option<Instant> {
        let upstream = self.upstream.as_ref()?;
        if self.connecting.is_some() || upstream.end_requested {
            return None;
        }
        let due = upstream.opened_at + self.config.timing.wall(self.rotate_after());
        Some(self.rotation_not_before.map_or(due, |t| t.max(due)))
    }

    /// Whether the upstream session has a command due.
    fn has_command_ready(&self) -> bool {
        let Some(upstream) = self.upstream.as_ref() else {
            return false;
        };
        !upstream.finishing
            && (upstream.sent < self.buffer.end()
                || self.finalize_at.is_some()
                || upstream.end_requested)
    }

    /// When `chunk` may be read in; `None` while waiting for the service's
    /// progress.
    fn release_time(&self, chunk: &Bytes) -> Option<Instant> {
        let now = Instant::now();
        if self.raw() {
            Some(self.pacer.release_raw(self.chunk_duration(chunk), now))
        } else {
            match self.pacer.release_container(now) {
                Release::At(at) => Some(at),
                // Nothing to wait for without an upstream session: read on.
                Release::OnProgress if self.upstream.is_none() => Some(now),
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

    fn start_connecting(&mut self, purpose: Purpose) {
        if self.connecting.is_some() {
            return;
        }
        let engine = self.engine.clone();
        let recognition = self.config.recognition.clone();
        let audio = self.config.audio.clone();
        debug!(session = %self.session_id, ?purpose, "opening an upstream session");
        let task = tokio::spawn(async move { engine.open(&recognition, &audio).await });
        self.connecting = Some((task, purpose));
    }

    async fn on_connected(
        &mut self,
        (opened, purpose): (Result<EngineLink>, Purpose),
    ) -> Result<(), Halt> {
        let link = match opened {
            Ok(link) => link,
            Err(err) if purpose == Purpose::Rotate && err.is_retryable() => {
                // The current session still runs: try again a little later.
                warn!(session = %self.session_id, error = %err, "could not open the next session for rotation");
                self.rotation_not_before =
                    Some(Instant::now() + self.config.timing.wall(Duration::from_secs(1)));
                return Ok(());
            }
            Err(err) => return self.on_failure(err, false).await,
        };
        self.reached = true;
        self.rotation_not_before = None;
        // A rotation that completed during an outage ends the wait too.
        self.retry_at = None;
        // The replay starts where the finals end; what the buffer no longer
        // holds of it is lost, and said so.
        if self.covered < self.buffer.start() {
            self.overrun(self.covered, self.buffer.start()).await?;
        }
        let base = self.covered;
        // The outage ends when the new session answers (see `on_update`):
        // one that fails at once continues it, with backoff.
        let (reason, message) = match (&self.outage, purpose) {
            (Some(outage), _) => (outage.reason, outage.last.to_string()),
            (None, Purpose::Rotate) => (
                "rotation",
                "the session reached its planned length".to_owned(),
            ),
            (None, _) => ("", String::new()),
        };
        if self.upstream.take().is_some() {
            // Make-before-break: everything before `base` is final and out,
            // so the old session has nothing left to give.
            debug!(session = %self.session_id, "handing over to the next upstream session");
        }
        self.upstreams_opened += 1;
        let base_ms = if self.raw() {
            self.ms_at(base)
        } else {
            self.closed_upstreams_ms
        };
        let announce = (self.started && !reason.is_empty()).then(|| Event::Reconnect {
            reason: reason.to_owned(),
            upstream: self.upstreams_opened,
            gap_ms: 0,
            replayed_ms: self.ms_at(self.buffer.end()).saturating_sub(base_ms),
            message,
        });
        self.pacer.restart_upstream();
        self.upstream = Some(Upstream {
            link,
            index: self.upstreams_opened,
            base_ms,
            sent: base,
            opened_at: Instant::now(),
            processed_ms: 0,
            end_requested: self.input_done,
            finishing: false,
            proven: false,
            announce,
        });
        debug!(session = %self.session_id, upstream = self.upstreams_opened, base_ms, "upstream session open");
        if !self.started {
            self.started = true;
            let audio = &self.config.audio;
            self.emit(Event::Start {
                session_id: self.session_id.clone(),
                model: self.engine.model_name(&self.config.recognition),
                audio_format: audio.name.clone(),
                sample_rate: audio.sample_rate,
                num_channels: audio.channels,
            })
            .await?;
        }
        Ok(())
    }

    /// A failed upstream session or connection attempt: retry with backoff
    /// within the budget, or fail. `upstream_lost` says whether a working
    /// session just ended (its audio must be replayed).
    async fn on_failure(&mut self, err: Error, upstream_lost: bool) -> Result<(), Halt> {
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
            fresh_failure = upstream.proven || self.outage.is_none();
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
        let outage = self.outage.get_or_insert_with(|| Outage {
            since: now,
            backoff: Backoff::new(seed ^ 0x9E37_79B9_7F4A_7C15),
            reason,
            last: Error::Internal(String::new()),
        });
        let give_up_at = outage.since + self.config.timing.wall(self.config.retry_budget);
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
            let budget_secs = self.config.retry_budget.as_secs();
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

    /// Sends the next due command: a finalize that is due, else audio, else
    /// the end of audio.
    async fn send_next(&mut self, permit: mpsc::OwnedPermit<EngineCommand>) -> Result<(), Halt> {
        let rotate_after_ms = self.rotate_after().as_millis() as u64;
        let raw = self.raw();
        let audio = &self.config.audio;
        let Some(upstream) = self.upstream.as_mut() else {
            return Ok(());
        };
        if let Some(at) = self.finalize_at
            && upstream.sent >= at
        {
            self.finalize_at = None;
            permit.send(EngineCommand::Finalize);
            return Ok(());
        }
        if upstream.sent < self.buffer.start() {
            // The buffer overflowed with audio this session never got.
            let (from, to) = (upstream.sent, self.buffer.start());
            upstream.sent = to;
            self.covered = self.covered.max(to);
            return self.overrun(from, to).await;
        }
        if let Some(chunk) = self.buffer.chunk_at(upstream.sent) {
            upstream.sent += chunk.len() as u64;
            permit.send(EngineCommand::Audio(chunk));
            if !raw {
                // No replay for containers: sent is as good as done.
                self.covered = upstream.sent;
                self.buffer.release(upstream.sent);
                return Ok(());
            }
            let sent_ms = audio
                .duration_ms(upstream.sent)
                .unwrap_or(0)
                .saturating_sub(upstream.base_ms);
            let may_rotate = self.rotation_not_before.is_none_or(|t| t <= Instant::now());
            if sent_ms >= rotate_after_ms && !upstream.end_requested && may_rotate {
                self.start_connecting(Purpose::Rotate);
            }
            return Ok(());
        }
        if upstream.end_requested {
            upstream.finishing = true;
            permit.send(EngineCommand::EndOfAudio);
        }
        Ok(())
    }

    async fn on_engine_event(&mut self, event: Option<EngineEvent>) -> Result<(), Halt> {
        match event {
            Some(EngineEvent::Update(update)) => self.on_update(update).await,
            Some(EngineEvent::Finished(update)) => {
                self.on_update(update).await?;
                let Some(upstream) = self.upstream.as_ref() else {
                    return Ok(());
                };
                if upstream.finishing {
                    // Everything sent to it is final and given out.
                    self.covered = self.covered.max(upstream.sent);
                    self.buffer.release(self.covered);
                    self.closed_upstreams_ms += upstream.processed_ms;
                    self.upstream = None;
                    Ok(())
                } else {
                    self.on_failure(
                        Error::Disconnected(
                            "the service finished the session before the end of audio".into(),
                        ),
                        true,
                    )
                    .await
                }
            }
            Some(EngineEvent::Failed(err)) => self.on_failure(err, true).await,
            None => {
                self.on_failure(
                    Error::Disconnected("the upstream session ended unexpectedly".into()),
                    true,
                )
                .await
            }
        }
    }

    async fn on_update(&mut self, update: Update) -> Result<(), Halt> {
        let Some(upstream) = self.upstream.as_mut() else {
            return Ok(());
        };
        if !upstream.proven {
            upstream.proven = true;
            let announce = upstream.announce.take();
            if let Some(outage) = self.outage.take()
                && let Some(Event::Reconnect {
                    reason,
                    upstream,
                    replayed_ms,
                    message,
                    ..
                }) = announce
            {
                let gap_ms = outage.since.elapsed().as_millis() as u64;
                info!(session = %self.session_id, reason, gap_ms, replayed_ms, upstream, "reconnected");
                self.emit(Event::Reconnect {
                    reason,
                    upstream,
                    gap_ms,
                    replayed_ms,
                    message,
                })
                .await?;
            } else if let Some(event) = announce {
                self.emit(event).await?;
            }
        }
        let Some(upstream) = self.upstream.as_mut() else {
            return Ok(());
        };
        upstream.processed_ms = upstream.processed_ms.max(update.total_audio_proc_ms);
        let (index, base_ms, sent) = (upstream.index, upstream.base_ms, upstream.sent);
        self.pacer.progress(update.total_audio_proc_ms);
        let mut non_final = Vec::new();
        for mut token in update.tokens {
            token.rebase(base_ms);
            token.upstream = Some(index);
            if !token.is_final {
                if token.text != "<end>" && token.text != "<fin>" {
                    non_final.push(token);
                }
                continue;
            }
            match token.text.as_str() {
                "<end>" => {
                    let end_ms = self.last_final_end_ms;
                    self.emit(Event::Endpoint { end_ms }).await?;
                }
                "<fin>" => {
                    let end_ms = self.last_final_end_ms;
                    self.emit(Event::Finalized { end_ms }).await?;
                }
                _ => {
                    // A replay re-recognises audio before the seam: what
                    // starts before the last final's end was given out already.
                    if let (Some(start), Some(last_end)) = (token.start_ms, self.last_final_end_ms)
                        && start < last_end
                    {
                        debug!(session = %self.session_id, text = %token.text, start, "dropped a duplicate at the seam");
                        continue;
                    }
                    if token.end_ms.is_some() {
                        self.last_final_end_ms = token.end_ms;
                    }
                    self.tokens_out += 1;
                    self.emit(Event::Token(token)).await?;
                }
            }
        }
        if self.raw() {
            // Everything before the service's final point, short of the
            // first non-final word and of what was sent, is final and out.
            let mut covered_ms = base_ms + update.final_audio_proc_ms;
            if let Some(start) = non_final.iter().filter_map(|t| t.start_ms).min() {
                covered_ms = covered_ms.min(start);
            }
            let covered = self.offset_at(covered_ms).min(sent);
            if covered > self.covered {
                self.covered = covered;
                self.buffer.release(covered);
            }
        }
        if self.config.partials && non_final != self.partial {
            let text = non_final.iter().map(|t| t.text.as_str()).collect();
            self.partial = non_final.clone();
            self.emit(Event::Partial {
                text,
                tokens: non_final,
            })
            .await?;
        }
        Ok(())
    }

    /// Reports audio lost from the replay buffer (raw formats).
    async fn overrun(&mut self, from: u64, to: u64) -> Result<(), Halt> {
        self.covered = self.covered.max(to);
        let (start_ms, end_ms) = (self.ms_at(from), self.ms_at(to));
        warn!(session = %self.session_id, start_ms, end_ms, "replay buffer overrun: audio lost");
        self.emit(Event::Overrun { start_ms, end_ms }).await
    }

    /// Gives out an event. The output queue is large (see
    /// [`crate::output::OUTPUT_QUEUE`]) so a slow consumer does not hold up
    /// the audio; past it, a `partial` is dropped (the next one replaces it
    /// anyway) and anything else waits for room.
    async fn emit(&self, event: Event) -> Result<(), Halt> {
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

/// The next event of the upstream session; pending forever when there is none
/// (the branch is disabled then, but select! still builds the future).
async fn next_engine_event(upstream: &mut Option<Upstream>) -> Option<EngineEvent> {
    match upstream {
        Some(upstream) => upstream.link.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Room for one command to the upstream session; `None` if its task ended
/// (its failure is then waiting in its event channel).
async fn reserve_command(
    commands: Option<mpsc::Sender<EngineCommand>>,
) -> Option<mpsc::OwnedPermit<EngineCommand>> {
    match commands {
        Some(commands) => commands.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// The outcome of the background connection attempt.
async fn join_connecting(
    connecting: &mut Option<(JoinHandle<Result<EngineLink>>, Purpose)>,
) -> (Result<EngineLink>, Purpose) {
    let Some((task, purpose)) = connecting.as_mut() else {
        return std::future::pending().await;
    };
    let purpose = *purpose;
    let result = match task.await {
        Ok(result) => result,
        Err(join) => Err(Error::Internal(format!("the connect task failed: {join}"))),
    };
    *connecting = None;
    (result, purpose)
}

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
