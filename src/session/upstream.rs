//! One upstream session's life: opening it in the background (and why),
//! feeding it from the replay buffer, reading its answers, handing over to
//! the next one before the service's cap.

use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::timeline::Source;
use super::{Halt, Session};
use crate::engine::{EngineCommand, EngineEvent, EngineLink, Update};
use crate::error::{Error, Result};
use crate::event::Event;

/// The longest margin left before the service's session cap.
const MAX_ROTATION_MARGIN: Duration = Duration::from_secs(600);

/// Why a new upstream session is being opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Purpose {
    /// The first, or the next after an idle close: nothing went wrong.
    Fresh,
    /// After a failure.
    Recover,
    /// Before the session cap, while the current one runs.
    Rotate,
}

/// An upstream session being opened in the background, so that input is
/// read on meanwhile.
pub(super) struct Connecting {
    task: JoinHandle<Result<EngineLink>>,
    purpose: Purpose,
}

/// Where an upstream session is in its life. It only moves forward; it
/// ends when the session finishes (from [`Phase::Finishing`]), fails, or is
/// handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Taking audio.
    Streaming,
    /// End of audio was asked for (input done, idle close): it is sent once
    /// the session has had everything buffered.
    EndRequested,
    /// End of audio was sent: only its last answers are awaited.
    Finishing,
}

/// The `reconnect` event due once a new upstream session has answered.
struct Announce {
    /// `dropped`, `error`, `stalled` or `rotation`.
    reason: &'static str,
    upstream: u32,
    replayed_ms: u64,
    message: String,
    /// The service URL of the new session (the Soniox engine's).
    url: Option<String>,
}

impl Announce {
    /// The event, `gap_ms` after the outage began (0 for a rotation).
    fn event(self, gap_ms: u64) -> Event {
        Event::Reconnect {
            reason: self.reason.to_owned(),
            upstream: self.upstream,
            gap_ms,
            replayed_ms: self.replayed_ms,
            message: self.message,
            url: self.url,
        }
    }
}

/// The upstream session in use.
pub(super) struct Upstream {
    pub(super) link: EngineLink,
    /// 1-based index over the stream.
    index: u32,
    /// Stream time of this session's audio zero, ms.
    base_ms: u64,
    /// Stream byte offset up to which audio has been sent.
    sent: u64,
    opened_at: Instant,
    /// The latest `total_audio_proc_ms` it reported.
    pub(super) processed_ms: u64,
    phase: Phase,
    /// Whether it has answered. Until it has, the outage that led to it is
    /// not over: its failure continues that outage, with backoff.
    pub(super) answered: bool,
    /// Given out at its first answer.
    announce: Option<Announce>,
    /// The queue position its gateway last reported, while it waits there.
    queued_at: Option<u64>,
}

impl Upstream {
    /// Asks for the end of audio (input done, idle close).
    pub(super) fn request_end(&mut self) {
        if self.phase == Phase::Streaming {
            self.phase = Phase::EndRequested;
        }
    }

    /// Whether it takes audio and control messages.
    pub(super) fn streaming(&self) -> bool {
        self.phase == Phase::Streaming
    }

    /// Whether the end of audio was asked for, or already sent.
    fn end_requested(&self) -> bool {
        self.phase != Phase::Streaming
    }

    /// Records an answer; at the first, gives the announcement due, if any.
    fn answer(&mut self) -> Option<Option<Announce>> {
        if self.answered {
            return None;
        }
        self.answered = true;
        Some(self.announce.take())
    }
}

impl Session<'_> {
    pub(super) fn idle_deadline(&self, chunk_pending: bool) -> Option<Instant> {
        let idle = self.config.idle_close?;
        let upstream = self.upstream.as_ref()?;
        if chunk_pending || upstream.end_requested() || upstream.sent < self.buffer.end() {
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

    pub(super) fn rotation_deadline(&self) -> Option<Instant> {
        let upstream = self.upstream.as_ref()?;
        if self.connecting.is_some() || upstream.end_requested() {
            return None;
        }
        let due = upstream.opened_at + self.config.timing.wall(self.rotate_after());
        Some(self.rotation_not_before.map_or(due, |t| t.max(due)))
    }

    /// Whether the upstream session has a command due.
    pub(super) fn has_command_ready(&self) -> bool {
        let Some(upstream) = self.upstream.as_ref() else {
            return false;
        };
        match upstream.phase {
            Phase::Streaming => {
                upstream.sent < self.buffer.end()
                    || self.finalize_at.is_some()
                    || !self.controls.is_empty()
            }
            Phase::EndRequested => true,
            Phase::Finishing => false,
        }
    }

    pub(super) fn start_connecting(&mut self, purpose: Purpose) {
        if self.connecting.is_some() {
            return;
        }
        let engine = self.engine.clone();
        let recognition = self.config.recognition.clone();
        let audio = self.config.audio.clone();
        debug!(session = %self.session_id, ?purpose, "opening an upstream session");
        let task = tokio::spawn(async move { engine.open(&recognition, &audio).await });
        self.connecting = Some(Connecting { task, purpose });
    }

    pub(super) async fn on_connected(
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
        let url = link.url.clone();
        if let (Some(url), Some(lease)) = (&url, self.lease.as_mut()) {
            lease.report_upstream(url);
        }
        let announce = (self.started && !reason.is_empty()).then(|| Announce {
            reason,
            upstream: self.upstreams_opened,
            replayed_ms: self.ms_at(self.buffer.end()).saturating_sub(base_ms),
            message,
            url: url.clone(),
        });
        // What was read but not yet sent goes to this session first: it is
        // in flight for the container window from the start.
        self.pacer
            .restart_upstream(self.buffer.end().saturating_sub(base));
        self.upstream = Some(Upstream {
            link,
            index: self.upstreams_opened,
            base_ms,
            sent: base,
            opened_at: Instant::now(),
            processed_ms: 0,
            phase: if self.input_done {
                Phase::EndRequested
            } else {
                Phase::Streaming
            },
            answered: false,
            announce,
            queued_at: None,
        });
        debug!(session = %self.session_id, upstream = self.upstreams_opened, base_ms, url = url.as_deref().unwrap_or_default(), "upstream session open");
        self.ensure_started().await
    }
    /// Sends the next due command: a finalize that is due, else a control
    /// message that is, else audio, else the end of audio.
    pub(super) async fn send_next(
        &mut self,
        permit: mpsc::OwnedPermit<EngineCommand>,
    ) -> Result<(), Halt> {
        let rotate_after_ms = self.rotate_after().as_millis() as u64;
        let raw = self.raw();
        let frames = self.frames;
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
        if let Some(control) = self.controls.due(upstream.sent) {
            permit.send(EngineCommand::Control(control));
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
            let sent_ms = frames
                .map_or(0, |frames| frames.ms_at(upstream.sent))
                .saturating_sub(upstream.base_ms);
            let may_rotate = self.rotation_not_before.is_none_or(|t| t <= Instant::now());
            if sent_ms >= rotate_after_ms && !upstream.end_requested() && may_rotate {
                self.start_connecting(Purpose::Rotate);
            }
            return Ok(());
        }
        if upstream.end_requested() {
            upstream.phase = Phase::Finishing;
            permit.send(EngineCommand::EndOfAudio);
        }
        Ok(())
    }

    pub(super) async fn on_engine_event(&mut self, event: Option<EngineEvent>) -> Result<(), Halt> {
        match event {
            Some(EngineEvent::Update(update)) => self.on_update(update).await,
            Some(EngineEvent::Finished(update)) => {
                self.on_update(update).await?;
                let Some(upstream) = self.upstream.as_ref() else {
                    return Ok(());
                };
                if upstream.phase == Phase::Finishing {
                    // Everything sent to it is final and given out.
                    self.covered = self.covered.max(upstream.sent);
                    self.buffer.release(self.covered);
                    self.closed_upstreams_ms += upstream.processed_ms;
                    self.upstream = None;
                    // Ended with input still open: an idle close, so the
                    // place goes back until audio returns.
                    if !self.input_done
                        && let Some(lease) = self.lease.as_mut()
                    {
                        info!(session = %self.session_id, "idle: upstream slot given back");
                        lease.give_back();
                    }
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
            Some(EngineEvent::Queued(position)) => self.on_queued_upstream(position).await,
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

    /// The upstream is a gateway whose queue the session waits in: the
    /// client hears `queued` when the position changes (the gateway's
    /// heartbeats at the same position are only for the connection's
    /// liveness). It is no answer: an outage it follows goes on until the
    /// first tokens, and the audio read meanwhile waits in the replay
    /// buffer, sent on at real-time pace.
    async fn on_queued_upstream(&mut self, position: u64) -> Result<(), Halt> {
        let Some(upstream) = self.upstream.as_mut() else {
            return Ok(());
        };
        if upstream.answered || upstream.queued_at == Some(position) {
            return Ok(());
        }
        upstream.queued_at = Some(position);
        info!(session = %self.session_id, position, "queued at the upstream gateway");
        self.emit(Event::Queued {
            position: usize::try_from(position).unwrap_or(usize::MAX),
        })
        .await
    }

    async fn on_update(&mut self, update: Update) -> Result<(), Halt> {
        let Some(upstream) = self.upstream.as_mut() else {
            return Ok(());
        };
        if let Some(announce) = upstream.answer() {
            // Its first answer ends the outage, if there was one.
            let outage = self.outage.take();
            self.crowded = 0;
            if let Some(announce) = announce {
                let gap_ms = match outage {
                    Some(outage) => {
                        let gap_ms = outage.since.elapsed().as_millis() as u64;
                        info!(session = %self.session_id, reason = announce.reason, gap_ms, replayed_ms = announce.replayed_ms, upstream = announce.upstream, url = announce.url.as_deref().unwrap_or_default(), "reconnected");
                        gap_ms
                    }
                    None => 0,
                };
                self.emit(announce.event(gap_ms)).await?;
            }
        }
        let Some(upstream) = self.upstream.as_mut() else {
            return Ok(());
        };
        upstream.processed_ms = upstream.processed_ms.max(update.total_audio_proc_ms);
        let source = Source {
            upstream: upstream.index,
            base_ms: upstream.base_ms,
            sent: upstream.sent,
        };
        self.pacer.progress(update.total_audio_proc_ms);
        let placed = self.timeline.place(update, source);
        if placed.duplicates > 0 {
            debug!(session = %self.session_id, upstream = source.upstream, count = placed.duplicates, "dropped duplicates at the seam");
        }
        if let Some(covered) = placed.covered
            && covered > self.covered
        {
            self.covered = covered;
            self.buffer.release(covered);
        }
        for event in placed.events {
            if matches!(event, Event::Token(_)) {
                self.tokens_out += 1;
            }
            self.emit(event).await?;
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
}

/// The next event of the upstream session; pending forever when there is none
/// (the branch is disabled then, but select! still builds the future).
pub(super) async fn next_engine_event(upstream: &mut Option<Upstream>) -> Option<EngineEvent> {
    match upstream {
        Some(upstream) => upstream.link.events.recv().await,
        None => std::future::pending().await,
    }
}

/// Room for one command to the upstream session; `None` if its task ended
/// (its failure is then waiting in its event channel).
pub(super) async fn reserve_command(
    commands: Option<mpsc::Sender<EngineCommand>>,
) -> Option<mpsc::OwnedPermit<EngineCommand>> {
    match commands {
        Some(commands) => commands.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// The outcome of the background connection attempt.
pub(super) async fn join_connecting(
    connecting: &mut Option<Connecting>,
) -> (Result<EngineLink>, Purpose) {
    let Some(Connecting { task, purpose }) = connecting.as_mut() else {
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
