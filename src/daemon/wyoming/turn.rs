//! One transcription, from `audio-start` to `transcript`, on the launcher:
//! the session prepared, admitted (queued if need be) and spawned like every
//! front end's; the client's chunks converted and fed to it (held back when
//! its queue is full, so TCP slows the client); its words out as
//! `transcript-chunk`s and, after `audio-stop` (or at Soniox's endpoint with
//! `--wyoming-endpointing`), the `transcript`.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::codec::ReadError;
use super::mapping::{self, Layout, Style, Transcribe};
use super::pcm::Converter;
use super::transcript::{Terminal, Transcript};
use super::{Connection, REMOTE_PEER};
use crate::config::EngineRequest;
use crate::config::resolve::{self, Origin};
use crate::daemon::Shared;
use crate::daemon::launch::{self, Client, Refusal, Running};
use crate::daemon::registry::{Progress, State};
use crate::error::Error;
use crate::event::Event;
use crate::session::{SessionInput, Summary};
use crate::timer::LazyTimer;

/// Events queued from the session towards the client.
const EVENT_QUEUE: usize = 1024;
/// Audio chunks queued into the session.
const AUDIO_QUEUE: usize = 8;
/// Most events folded at once.
const MAX_BATCH: usize = 256;
/// A client that sends no audio for this long mid-turn is dropped, so a
/// silent client cannot hold an upstream slot.
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a session's task has to return after its `end`.
const END_GRACE: Duration = Duration::from_secs(2);

/// What the connection does after a turn.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Next {
    /// Wait for the next event.
    Continue,
    /// Close: the client left, or was told why not.
    Close,
}

/// Runs one transcription; the client has been answered (or is gone) when
/// it returns.
pub(super) async fn run(
    conn: &mut Connection,
    shared: &Arc<Shared>,
    transcribe: &Transcribe,
    layout: Layout,
    style: Style,
) -> Next {
    // A session that may run on the local engine, from its start or by
    // falling back, must be mono: that engine takes nothing else.
    let mono = shared.engines().may_run_local(EngineRequest::default());
    let channels = if mono { 1 } else { layout.channels };
    let args = mapping::session_args(transcribe, layout, channels, style);
    let client = Client {
        session_id: shared.new_session_id(),
        front: "wyoming",
        peer: REMOTE_PEER,
        per_uid_limit: 0,
        name: None,
    };
    let prepared = resolve::session(&args, Origin::Client)
        .map_err(Refusal::Error)
        .and_then(|request| launch::prepare(shared, client, &request));
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let admitted = match prepared {
        Ok(prepared) => prepared.admit(&events_tx).await,
        Err(refusal) => Err(refusal),
    };
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(Refusal::Error(err)) => {
            conn.fail(&err).await;
            return Next::Close;
        }
        Err(Refusal::Stopping) => {
            conn.fail(&Error::Disconnected("the daemon is stopping".into()))
                .await;
            return Next::Close;
        }
    };
    let language = args.language_hints.first().cloned();
    if style.streaming {
        let data = language.as_ref().map(|l| json!({ "language": l }));
        if !conn.send("transcript-start", data.as_ref()).await {
            return Next::Close;
        }
    }
    let progress = admitted.progress();
    let (input_tx, input_rx) = mpsc::channel(AUDIO_QUEUE);
    let session_id = admitted.session_id().to_owned();
    let running = admitted.spawn(input_rx, events_tx);
    let relay = Relay {
        session_id,
        layout,
        converter: Converter::new(layout.width, layout.channels, mono),
        style,
        language,
        progress,
        idle: shared.timing().wall(IDLE_TIMEOUT),
    };
    relay.run(conn, shared, running, input_tx, events_rx).await
}

/// Moves one turn's audio in and its words out.
struct Relay {
    session_id: String,
    layout: Layout,
    converter: Converter,
    style: Style,
    language: Option<String>,
    progress: Arc<Progress>,
    idle: Duration,
}

impl Relay {
    async fn run(
        mut self,
        conn: &mut Connection,
        shared: &Shared,
        task: Running,
        input_tx: mpsc::Sender<SessionInput>,
        mut events: mpsc::Receiver<Event>,
    ) -> Next {
        let mut input = Some(input_tx);
        // Declared after `input`, so dropped before it: an abandoned session
        // never sees its input close as an end of audio.
        let mut task = task;
        let mut pending: Option<SessionInput> = None;
        let mut transcript = Transcript::default();
        // `audio-stop` came: what follows is the next turn's.
        let mut stopped = false;
        // The `transcript` went out (at the endpoint, or at the end).
        let mut answered = false;
        let mut idle_at = Instant::now() + self.idle;
        let mut idle_timer = LazyTimer::new();
        let mut batch = Vec::with_capacity(16);
        loop {
            let waiting = input.as_ref().filter(|_| pending.is_some()).cloned();
            tokio::select! {
                biased;
                count = events.recv_many(&mut batch, MAX_BATCH) => {
                    let step = if count == 0 {
                        // The session ended without an `end` (no audio ever came).
                        super::transcript::Step { endpoint: false, terminal: Some(Terminal::End) }
                    } else {
                        transcript.fold(batch.drain(..), self.style.endpointing)
                    };
                    if !answered && self.style.streaming
                        && let Some(chunk) = transcript.take_chunk()
                        && !conn.send("transcript-chunk", Some(&json!({ "text": chunk }))).await
                    {
                        info!(session = %self.session_id, "the client went away; session abandoned");
                        task.abandon().await;
                        return Next::Close;
                    }
                    if step.endpoint && self.style.endpointing && !answered {
                        // Soniox's endpoint ends the turn: answer now, end the
                        // audio so the session finishes, drop what still comes.
                        debug!(session = %self.session_id, "endpoint: the turn ends");
                        answered = true;
                        if !self.answer(conn, &transcript).await {
                            task.abandon().await;
                            return Next::Close;
                        }
                        self.end_audio(&mut input);
                    }
                    match step.terminal {
                        None => {}
                        Some(Terminal::End) => {
                            match within_grace(&mut task).await {
                                Some(Ok(_)) => {}
                                Some(Err(err)) => {
                                    if !answered {
                                        conn.fail(&err).await;
                                    }
                                    return Next::Close;
                                }
                                None => {
                                    warn!(session = %self.session_id, "the session did not end in time");
                                    conn.fail(&Error::Internal("the session did not end".into())).await;
                                    return Next::Close;
                                }
                            }
                            if !answered && !self.answer(conn, &transcript).await {
                                return Next::Close;
                            }
                            return if stopped { Next::Continue } else { self.skip_to_stop(conn, shared).await };
                        }
                        Some(Terminal::Error { code, message }) => {
                            // The session returns the error itself right after.
                            drop(events);
                            let err = match within_grace(&mut task).await {
                                Some(Err(err)) => err,
                                _ => Error::Internal(format!("{code}: {message}")),
                            };
                            conn.fail(&err).await;
                            return Next::Close;
                        }
                    }
                }
                permit = reserve(waiting), if pending.is_some() => match (permit, pending.take()) {
                    (Some(permit), Some(message)) => {
                        permit.send(message);
                        // Held back, not silent: its idle time starts now.
                        idle_at = Instant::now() + self.idle;
                    }
                    // The session no longer reads: its events say why.
                    _ => input = None,
                },
                message = conn.messages.recv(), if pending.is_none() && !stopped => {
                    let message = match message {
                        None | Some(Err(ReadError::Closed)) if answered => return Next::Close,
                        None | Some(Err(ReadError::Closed | ReadError::Io(_) | ReadError::Truncated(_))) => {
                            info!(session = %self.session_id, "the client went away; session abandoned");
                            task.abandon().await;
                            return Next::Close;
                        }
                        Some(Err(err)) => {
                            task.abandon().await;
                            conn.protocol_error(&err).await;
                            return Next::Close;
                        }
                        Some(Ok(message)) => message,
                    };
                    match message.kind.as_str() {
                        "audio-chunk" => {
                            if input.is_none() {
                                continue;
                            }
                            if let Err(err) = self.check_layout(&message.data) {
                                task.abandon().await;
                                conn.fail(&err).await;
                                return Next::Close;
                            }
                            idle_at = Instant::now() + self.idle;
                            self.progress.add_audio(message.payload.len() as u64);
                            pending = self.converter.push(&message.payload).map(SessionInput::Audio);
                        }
                        "audio-stop" => {
                            stopped = true;
                            self.end_audio(&mut input);
                        }
                        "transcribe" | "audio-start" => {
                            task.abandon().await;
                            let kind = message.kind.clone();
                            conn.fail(&Error::Usage(format!("{kind} while a transcription is under way"))).await;
                            return Next::Close;
                        }
                        _ => {
                            if !conn.answer(&message, shared, self.style).await {
                                task.abandon().await;
                                return Next::Close;
                            }
                        }
                    }
                }
                () = idle_timer.until(Some(idle_at)), if input.is_some() && pending.is_none() => {
                    task.abandon().await;
                    let secs = self.idle.as_secs_f64();
                    conn.fail(&Error::Usage(format!("no audio within {secs:.1} s"))).await;
                    return Next::Close;
                }
            }
        }
    }

    /// A chunk must have `audio-start`'s layout: the session's format is
    /// fixed when it starts.
    fn check_layout(&self, data: &serde_json::Map<String, serde_json::Value>) -> Result<(), Error> {
        let layout = Layout::read(data)?;
        if layout == self.layout {
            Ok(())
        } else {
            Err(Error::Usage(format!(
                "an audio-chunk is {} Hz, {} bytes, {} channels; audio-start said {} Hz, {} bytes, {} channels",
                layout.rate,
                layout.width,
                layout.channels,
                self.layout.rate,
                self.layout.width,
                self.layout.channels
            )))
        }
    }

    /// The turn's answer: the last chunk, the `transcript`, and with
    /// streaming `transcript-stop`; `false` if the client is gone.
    async fn answer(&self, conn: &mut Connection, transcript: &Transcript) -> bool {
        let mut data = json!({ "text": transcript.text() });
        if let Some(language) = &self.language {
            data["language"] = json!(language);
        }
        info!(session = %self.session_id, chars = transcript.text().chars().count(), "transcript sent");
        conn.send("transcript", Some(&data)).await
            && (!self.style.streaming || conn.send("transcript-stop", None).await)
    }

    /// The audio ended (the client's `audio-stop`, or the endpoint).
    fn end_audio(&self, input: &mut Option<mpsc::Sender<SessionInput>>) {
        if input.take().is_some() {
            let leftover = self.converter.leftover();
            if leftover > 0 {
                debug!(
                    bytes = leftover,
                    "dropped a partial frame at the end of the audio"
                );
            }
            self.progress.set_state(State::Draining);
        }
    }

    /// After a turn its endpoint ended, the client's audio up to its
    /// `audio-stop` is dropped (bounded by the idle time).
    async fn skip_to_stop(&self, conn: &mut Connection, shared: &Shared) -> Next {
        loop {
            let message = tokio::select! {
                // A stopping daemon does not wait for the rest of the audio.
                () = shared.stop.cancelled() => return Next::Close,
                message = tokio::time::timeout(self.idle, conn.messages.recv()) => message,
            };
            match message {
                Ok(Some(Ok(message))) => match message.kind.as_str() {
                    "audio-chunk" => {}
                    "audio-stop" => return Next::Continue,
                    _ => {
                        if !conn.answer(&message, shared, self.style).await {
                            return Next::Close;
                        }
                    }
                },
                // Gone (Home Assistant closes once it has its transcript),
                // broken, or silent: nothing more to say.
                _ => return Next::Close,
            }
        }
    }
}

/// Room for one input message; pending forever without a sender, `None`
/// if the session stopped reading.
async fn reserve(
    input: Option<mpsc::Sender<SessionInput>>,
) -> Option<mpsc::OwnedPermit<SessionInput>> {
    match input {
        Some(input) => input.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// The session's outcome, if its task ends within [`END_GRACE`].
async fn within_grace(task: &mut Running) -> Option<crate::error::Result<Summary>> {
    tokio::time::timeout(END_GRACE, task.outcome())
        .await
        .ok()
        .flatten()
}
