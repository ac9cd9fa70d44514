//! The session core: audio in, events out, whatever the front end.
//!
//! A front end (the filter today; the daemon and the WebSocket proxy later)
//! feeds [`run`] with [`SessionInput`] over a bounded channel, and takes
//! [`Event`]s from another. In between, the session
//!
//! * opens an upstream session on the [`Engine`] when audio arrives, and
//!   closes it after `idle_close` without audio (a new one opens when audio
//!   returns, its timestamps rebased so the output keeps one timeline);
//! * paces audio that comes faster than real time ([`crate::pacer`]);
//! * turns engine updates into events: final tokens once each, `<end>` and
//!   `<fin>` as `endpoint` and `finalized` events, the non-final tail as
//!   `partial` events when asked;
//! * at the end of input, or when `stop` is cancelled, ends the audio and
//!   reads until the engine has finished, so the last finals are never lost
//!   (after a stop, within `drain_timeout`).
//!
//! Failures are reported in-band (an `error` event, then `end`) and returned,
//! so the front end only maps them to its exit status. If the event receiver
//! goes away (a closed stdout), the upstream session is abandoned and the
//! session ends quietly.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::SessionConfig;
use crate::engine::{Engine, EngineCommand, EngineEvent, EngineLink, Update};
use crate::error::{Error, Result};
use crate::event::{Event, Token};
use crate::pacer::{Pacer, Release};

/// How long to wait for `finished` after the end of input, when no stop
/// signal set a tighter bound. A paced stream finishes within a second or
/// two; this only guards against a service that never answers.
pub const FINISH_TIMEOUT: Duration = Duration::from_secs(30);

/// What a front end feeds the session.
#[derive(Debug)]
pub enum SessionInput {
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
pub enum EndReason {
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
pub struct Summary {
    /// Why it ended.
    pub reason: EndReason,
    /// Audio sent, in ms.
    pub audio_ms: u64,
    /// Final tokens given out.
    pub tokens: u64,
}

/// Runs a session until its input ends, `stop` is cancelled, or it fails.
pub async fn run(
    engine: &Engine,
    config: &SessionConfig,
    session_id: String,
    mut input: mpsc::Receiver<SessionInput>,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) -> Result<Summary> {
    let mut session = Session::new(engine, config, session_id, events);
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

/// The upstream session in use.
struct Upstream {
    link: EngineLink,
    /// The latest `total_audio_proc_ms` it reported.
    processed_ms: u64,
}

struct Session<'a> {
    engine: &'a Engine,
    config: &'a SessionConfig,
    session_id: String,
    events: mpsc::Sender<Event>,
    began: Instant,
    started: bool,
    upstream: Option<Upstream>,
    upstreams_opened: u32,
    /// Start of the current upstream session on the stream's timeline, ms.
    offset_ms: u64,
    /// Raw formats: bytes sent over the whole stream.
    bytes_sent: u64,
    /// Containers: audio ms of the upstream sessions already closed.
    closed_upstreams_ms: u64,
    pacer: Pacer,
    tokens_out: u64,
    last_final_end_ms: Option<u64>,
    /// The non-final tail as last given out.
    partial: Vec<Token>,
    last_audio_at: Instant,
}

impl<'a> Session<'a> {
    fn new(
        engine: &'a Engine,
        config: &'a SessionConfig,
        session_id: String,
        events: mpsc::Sender<Event>,
    ) -> Session<'a> {
        let now = Instant::now();
        Session {
            engine,
            config,
            session_id,
            events,
            began: now,
            started: false,
            upstream: None,
            upstreams_opened: 0,
            offset_ms: 0,
            bytes_sent: 0,
            closed_upstreams_ms: 0,
            pacer: Pacer::new(config.max_lead),
            tokens_out: 0,
            last_final_end_ms: None,
            partial: Vec::new(),
            last_audio_at: now,
        }
    }

    /// Audio sent so far, ms.
    fn audio_ms(&self) -> u64 {
        match self.config.audio.duration_ms(self.bytes_sent) {
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
        let reason = loop {
            let release = pending.as_ref().and_then(|chunk| self.release_time(chunk));
            let idle_deadline = self
                .config
                .idle_close
                .filter(|_| self.upstream.is_some() && pending.is_none())
                .map(|idle| self.last_audio_at + idle);
            tokio::select! {
                biased;
                () = stop.cancelled() => break EndReason::Stopped,
                event = next_engine_event(&mut self.upstream) => self.on_engine_event(event).await?,
                // A paced chunk's time has come.
                () = sleep_until_or_never(release), if pending.is_some() => {
                    if let Some(chunk) = pending.take() {
                        self.send_audio(chunk).await?;
                    }
                }
                // New input only once the paced chunk is gone: backpressure
                // reaches the reader through the bounded channel.
                message = input.recv(), if pending.is_none() => match message {
                    Some(SessionInput::Audio(chunk)) => {
                        if chunk.is_empty() {
                            continue;
                        }
                        if self.upstream.is_none() {
                            self.open_upstream().await?;
                        }
                        match self.release_time(&chunk) {
                            Some(at) if at <= Instant::now() => self.send_audio(chunk).await?,
                            _ => pending = Some(chunk),
                        }
                    }
                    Some(SessionInput::Finalize) => self.command(EngineCommand::Finalize).await?,
                    Some(SessionInput::Failed(err)) => {
                        input_failure = Some(err);
                        break EndReason::Failed;
                    }
                    None => break EndReason::Eof,
                },
                // Soniox bills idle time: close, and reopen when audio returns.
                () = sleep_until_or_never(idle_deadline), if idle_deadline.is_some() => {
                    info!(session = %self.session_id, "closing the idle upstream session");
                    self.finish_upstream(FINISH_TIMEOUT, true).await?;
                }
            }
        };
        // Audio already read is the user's: send it, unpaced, before the end.
        if let Some(chunk) = pending.take() {
            self.send_audio(chunk).await?;
        }
        // After a stop the user chose the bound; otherwise a missing
        // `finished` means tokens may be lost, which is a failure.
        let (bound, strict) = match reason {
            EndReason::Stopped => (self.config.drain_timeout, false),
            _ => (FINISH_TIMEOUT, true),
        };
        self.finish_upstream(bound, strict).await?;
        match input_failure {
            Some(err) => Err(Halt::Failed(err)),
            None => Ok(reason),
        }
    }

    /// When `chunk` may be sent; `None` while waiting for the service's progress.
    fn release_time(&self, chunk: &Bytes) -> Option<Instant> {
        let now = Instant::now();
        match self.config.audio.duration_ms(chunk.len() as u64) {
            Some(_) => Some(self.pacer.release_raw(self.chunk_duration(chunk), now)),
            None => match self.pacer.release_container(now) {
                Release::At(at) => Some(at),
                Release::OnProgress => None,
            },
        }
    }

    fn chunk_duration(&self, chunk: &Bytes) -> Duration {
        let per_second = self.config.audio.bytes_per_second().unwrap_or(1).max(1);
        Duration::from_nanos(chunk.len() as u64 * 1_000_000_000 / per_second)
    }

    async fn open_upstream(&mut self) -> Result<(), Halt> {
        let link = self
            .engine
            .open(&self.config.recognition, &self.config.audio)
            .await?;
        self.upstreams_opened += 1;
        self.offset_ms = self.audio_ms();
        self.pacer.restart_upstream();
        debug!(session = %self.session_id, upstream = self.upstreams_opened, offset_ms = self.offset_ms, "upstream session open");
        self.upstream = Some(Upstream {
            link,
            processed_ms: 0,
        });
        if !self.started {
            self.started = true;
            let audio = &self.config.audio;
            self.emit(Event::Start {
                session_id: self.session_id.clone(),
                model: self.config.recognition.model.clone(),
                audio_format: audio.name.clone(),
                sample_rate: audio.sample_rate,
                num_channels: audio.channels,
            })
            .await?;
        }
        Ok(())
    }

    async fn send_audio(&mut self, chunk: Bytes) -> Result<(), Halt> {
        let now = Instant::now();
        let len = chunk.len() as u64;
        if self.config.audio.is_raw() {
            self.pacer.sent_raw(self.chunk_duration(&chunk), now);
        } else {
            self.pacer.sent_container(len, now);
        }
        self.command(EngineCommand::Audio(chunk)).await?;
        self.bytes_sent += len;
        self.last_audio_at = now;
        Ok(())
    }

    /// Sends a command upstream. If the engine task is gone, its failure is
    /// waiting in the event channel: that is the error to report.
    async fn command(&mut self, command: EngineCommand) -> Result<(), Halt> {
        let Some(upstream) = self.upstream.as_mut() else {
            return Ok(());
        };
        if upstream.link.commands.send(command).await.is_ok() {
            return Ok(());
        }
        loop {
            let event = upstream.link.events.recv().await;
            match event {
                Some(EngineEvent::Failed(err)) => return Err(err.into()),
                Some(_) => continue,
                None => return Err(Error::Disconnected("the upstream session ended".into()).into()),
            }
        }
    }

    async fn on_engine_event(&mut self, event: Option<EngineEvent>) -> Result<(), Halt> {
        match event {
            Some(EngineEvent::Update(update)) => self.on_update(update).await,
            Some(EngineEvent::Finished(update)) => {
                self.on_update(update).await?;
                warn!(session = %self.session_id, "the service finished the session before the end of audio");
                self.close_upstream();
                Ok(())
            }
            Some(EngineEvent::Failed(err)) => Err(err.into()),
            None => {
                Err(Error::Disconnected("the upstream session ended unexpectedly".into()).into())
            }
        }
    }

    /// Ends the upstream session's audio and reads until it has finished,
    /// giving out every token it still sends, within `bound`. Past the
    /// bound, a `strict` finish fails; otherwise it warns and lets go.
    async fn finish_upstream(&mut self, bound: Duration, strict: bool) -> Result<(), Halt> {
        if self.upstream.is_none() {
            return Ok(());
        }
        self.command(EngineCommand::EndOfAudio).await?;
        let deadline = Instant::now() + bound;
        loop {
            let Some(upstream) = self.upstream.as_mut() else {
                return Ok(());
            };
            let event = match tokio::time::timeout_at(deadline, upstream.link.events.recv()).await {
                Ok(event) => event,
                Err(_) => {
                    self.close_upstream();
                    let why = format!(
                        "no finished response within {:.1} s; the last tokens may be missing",
                        bound.as_secs_f64()
                    );
                    if strict {
                        return Err(Error::Disconnected(why).into());
                    }
                    warn!(session = %self.session_id, "{why}");
                    return Ok(());
                }
            };
            match event {
                Some(EngineEvent::Update(update)) => self.on_update(update).await?,
                Some(EngineEvent::Finished(update)) => {
                    self.on_update(update).await?;
                    self.close_upstream();
                    return Ok(());
                }
                Some(EngineEvent::Failed(err)) => return Err(err.into()),
                None => {
                    return Err(Error::Disconnected(
                        "the upstream session ended before it finished".into(),
                    )
                    .into());
                }
            }
        }
    }

    fn close_upstream(&mut self) {
        if let Some(upstream) = self.upstream.take() {
            self.closed_upstreams_ms += upstream.processed_ms;
        }
    }

    async fn on_update(&mut self, update: Update) -> Result<(), Halt> {
        if let Some(upstream) = self.upstream.as_mut() {
            upstream.processed_ms = upstream.processed_ms.max(update.total_audio_proc_ms);
        }
        self.pacer.progress(update.total_audio_proc_ms);
        let mut non_final = Vec::new();
        for mut token in update.tokens {
            if token.is_final {
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
                        token.rebase(self.offset_ms);
                        if token.end_ms.is_some() {
                            self.last_final_end_ms = token.end_ms;
                        }
                        self.tokens_out += 1;
                        self.emit(Event::Token(token)).await?;
                    }
                }
            } else if token.text != "<end>" && token.text != "<fin>" {
                token.rebase(self.offset_ms);
                non_final.push(token);
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

    async fn emit(&self, event: Event) -> Result<(), Halt> {
        self.events
            .send(event)
            .await
            .map_err(|_| Halt::ConsumerGone)
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

async fn sleep_until_or_never(deadline: Option<Instant>) {
    match deadline {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}
