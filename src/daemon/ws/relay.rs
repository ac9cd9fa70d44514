//! The relay between a started WebSocket client and its session, from the
//! start request on. While the client waits in the queue it is read into
//! its [`Inbox`] (so its pings are answered), it is told its place (the
//! `queued` extension frame, at first, at each move and as a heartbeat, so
//! that an sttpipe edge neither shows silence nor takes the wait for a
//! stalled connection), and its leaving gives up its place. Once the session runs: audio in whole frames and control
//! messages (as sent, every type: the service judges them) into the
//! session through the inbox (the client is held back when it is full, so
//! TCP slows it), the session's events out as Soniox
//! responses, the idle rule, and how a session's end, failure or refusal,
//! or a client's leaving ends the connection, also when the client left
//! while held back, with what it sent before still unread.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::{debug, info, warn};

use soniox_wire::ApiError;

use super::CLOSE_GRACE;
use super::client::{self, Client};
use super::inbox::Inbox;
use super::start::{api_error, refusal_error};
use super::transcript::{Terminal, Transcript, queued_frame};
use crate::daemon::launch::{Admitted, Refusal, Running};
use crate::daemon::registry::{Progress, State};
use crate::engine::{Control, ControlKind};
use crate::event::Event;
use crate::session::{SessionInput, Summary};
use crate::timer::LazyTimer;

/// Most events folded into one response.
const MAX_BATCH: usize = 256;
/// How often a client that is held back (not read) is probed for having
/// left (see [`Client::probe`]).
const PROBE_EVERY: Duration = Duration::from_millis(500);
/// Messages in the session's input channel; more wait in the [`Inbox`].
const AUDIO_QUEUE: usize = 8;

/// What a text frame after the start request means.
#[derive(Debug, PartialEq)]
enum Text {
    EndOfAudio,
    /// A control message, to go upstream as sent, in order with the audio.
    Control(Control),
    Invalid(ApiError),
}

/// Reads a text frame. Only what is no control message at all (not a JSON
/// object with a string `type`) is refused here; every type, its options
/// included (finalize's `trailing_silence_ms`), is the service's to judge,
/// so a type newer than the daemon still reaches it.
fn parse_text(text: &str) -> Text {
    if text.is_empty() {
        return Text::EndOfAudio;
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return Text::Invalid(ApiError::bad_request("Control request is malformed."));
    };
    let kind = match map.get("type") {
        Some(Value::String(kind)) if kind == "keepalive" => ControlKind::Keepalive,
        Some(Value::String(kind)) if kind == "finalize" => ControlKind::Finalize,
        Some(Value::String(_)) => ControlKind::Other,
        _ => return Text::Invalid(ApiError::bad_request("Control request is malformed.")),
    };
    Text::Control(Control {
        text: text.to_owned(),
        kind,
    })
}

/// What a client's message leaves the relay to do.
enum Read {
    /// Go on relaying.
    More,
    /// The client is gone: abandon the session.
    Gone,
    /// A message over the limit: abandon the session, close with 1009.
    TooBig,
    /// An invalid control message: abandon the session, send this.
    Invalid(ApiError),
}

/// Moves frames between a client and its session, from the client's start
/// request on: while it waits in the queue, and while its session runs.
pub(super) struct Relay {
    /// Wall time a streaming client may stay silent.
    idle: Duration,
    /// Wall time between two `queued` frames while the client waits.
    heartbeat: Duration,
    inbox: Inbox,
    /// Where the session's audio and state are reported, once admitted.
    progress: Option<Arc<Progress>>,
    /// Audio bytes read while queued, reported once admitted.
    unreported: u64,
}

impl Relay {
    /// A relay for audio of `frame` bytes a frame (1 for containers) and
    /// `bytes_per_second` (`None` if unknown), whose client may stay silent
    /// for `idle` of wall time once streaming, and is told its place in the
    /// queue at least every `heartbeat` while it waits.
    pub(super) fn new(
        frame: usize,
        bytes_per_second: Option<u64>,
        idle: Duration,
        heartbeat: Duration,
    ) -> Relay {
        Relay {
            idle,
            heartbeat,
            inbox: Inbox::new(frame, bytes_per_second),
            progress: None,
            unreported: 0,
        }
    }

    /// Relays until the session ends, fails, is refused, or the client
    /// goes; the client has been answered (or is gone) when it returns.
    ///
    /// `admission` waits for an upstream slot, owning the sender of
    /// `events` until it hands it over with the admitted session. While it
    /// waits the client is read (its pings answered, its audio held in the
    /// inbox); if the client leaves, `admission` is dropped, which gives up
    /// its place.
    pub(super) async fn run<A>(
        mut self,
        client: &mut Client,
        admission: A,
        mut events: mpsc::Receiver<Event>,
    ) where
        A: Future<Output = Result<(Admitted, mpsc::Sender<Event>), Refusal>>,
    {
        let mut admission = std::pin::pin!(admission);
        // The session's input while it runs and its audio has not ended.
        let mut input: Option<mpsc::Sender<SessionInput>> = None;
        // Declared after `input`, so dropped before it: an aborted session
        // never sees its input close as an end of audio. `None` while
        // queued.
        let mut task: Option<Running> = None;
        let mut transcript = Transcript::default();
        let mut idle_at = Instant::now() + self.idle;
        // Moves later with every message: one timer, not one per turn.
        let mut idle_timer = LazyTimer::new();
        let mut probe_at = Instant::now();
        let mut probe_timer = LazyTimer::new();
        // The place in the queue last told, while queued.
        let mut queued: Option<usize> = None;
        let mut heartbeat_at = Instant::now();
        let mut heartbeat_timer = LazyTimer::new();
        // Whether the admission still holds the events' sender.
        let mut admission_open = true;
        let mut batch = Vec::with_capacity(16);
        loop {
            if input.is_some() && self.inbox.is_closed() && self.inbox.is_empty() {
                // The client ended its audio and all it sent is in: the
                // session drains and finishes.
                input = None;
                if let Some(progress) = &self.progress {
                    progress.set_state(State::Draining);
                }
            }
            let feeding = input.as_ref().filter(|_| !self.inbox.is_empty()).cloned();
            let reading = self.inbox.has_room();
            tokio::select! {
                biased;
                count = events.recv_many(&mut batch, MAX_BATCH), if task.is_some() || admission_open => {
                    let Some(running) = task.as_mut() else {
                        // Before its session runs, only the admission's
                        // `queued` events come: each is told, and the
                        // heartbeat restarts.
                        if count == 0 {
                            admission_open = false;
                        }
                        for event in batch.drain(..) {
                            let Event::Queued { position } = event else {
                                debug!(event = ?event, "not relayed while queued");
                                continue;
                            };
                            queued = Some(position);
                            heartbeat_at = Instant::now() + self.heartbeat;
                            if !client.send_text(queued_frame(position)).await {
                                info!(session = %client.request_id, "the client went away while queued");
                                return;
                            }
                        }
                        continue;
                    };
                    let terminal = if count == 0 {
                        // The session ended without an `end` (no audio ever came).
                        Some(Terminal::End { audio_ms: 0 })
                    } else {
                        let (frame, terminal) = transcript.fold(batch.drain(..));
                        if let Some(frame) = frame
                            && !client.send_text(frame.to_string()).await
                        {
                            info!(session = %client.request_id, "the client went away; session abandoned");
                            running.abandon().await;
                            return;
                        }
                        terminal
                    };
                    match terminal {
                        None => {}
                        Some(Terminal::End { audio_ms }) => {
                            match outcome_within_grace(running).await {
                                Some(Ok(_)) => {}
                                Some(Err(err)) => {
                                    client.fail(&api_error(&err)).await;
                                    return;
                                }
                                // A panic, or a task that hangs after its end.
                                None => {
                                    warn!(session = %client.request_id, "the session did not end in time");
                                    client.fail(&ApiError::with_code(500, "Internal error.")).await;
                                    return;
                                }
                            }
                            let frame = transcript.finished(audio_ms);
                            if client.send_text(frame.to_string()).await {
                                client.close().await;
                            }
                            return;
                        }
                        Some(Terminal::Error(from_event)) => {
                            // The session returns the error itself right after:
                            // it keeps the service's status, type and message.
                            drop(events);
                            let err = match outcome_within_grace(running).await {
                                Some(Err(err)) => api_error(&err),
                                _ => from_event,
                            };
                            client.fail(&err).await;
                            return;
                        }
                    }
                }
                admitted = &mut admission, if task.is_none() => match admitted {
                    Ok((admitted, events_tx)) => {
                        let progress = admitted.progress();
                        progress.add_audio(std::mem::take(&mut self.unreported));
                        self.progress = Some(progress);
                        let (input_tx, input_rx) = mpsc::channel(AUDIO_QUEUE);
                        task = Some(admitted.spawn(input_rx, events_tx));
                        input = Some(input_tx);
                        // What it sent while queued goes in first: the
                        // client is silent only once that is in.
                        idle_at = Instant::now() + self.idle;
                    }
                    Err(refusal) => {
                        client.fail(&refusal_error(&refusal)).await;
                        return;
                    }
                },
                () = heartbeat_timer.until(Some(heartbeat_at)), if task.is_none() && queued.is_some() => {
                    heartbeat_at = Instant::now() + self.heartbeat;
                    if let Some(position) = queued
                        && !client.send_text(queued_frame(position)).await
                    {
                        info!(session = %client.request_id, "the client went away while queued");
                        return;
                    }
                }
                permit = reserve(feeding), if input.is_some() && !self.inbox.is_empty() => match permit {
                    Some(permit) => {
                        if let Some(message) = self.inbox.pop() {
                            permit.send(message);
                        }
                        // The client was ahead, not silent: its idle time
                        // starts when all it sent is in.
                        idle_at = Instant::now() + self.idle;
                    }
                    // The session no longer reads: its events say why.
                    None => {
                        input = None;
                        self.inbox.discard();
                    }
                },
                message = client.next(), if reading => {
                    let read = self.read(message, &mut idle_at);
                    let why = match read {
                        Read::More => continue,
                        Read::Gone => "the client went away",
                        Read::TooBig => "a message over the limit",
                        Read::Invalid(_) => "an invalid control message",
                    };
                    // Soniox treats a client's close as a cancel: the
                    // upstream session is abandoned. A queued client's
                    // place goes with `admission`.
                    info!(session = %client.request_id, "{why}; session abandoned");
                    if let Some(running) = task.as_mut() {
                        running.abandon().await;
                    }
                    match read {
                        Read::TooBig => client.too_big().await,
                        Read::Invalid(err) => client.fail(&err).await,
                        Read::More | Read::Gone => {}
                    }
                    return;
                }
                // Not read (its inbox is full), the client's leaving would
                // be seen only after all it sent before: that audio would
                // be streamed (and billed) for nobody, or a queued client
                // would keep its place.
                () = probe_timer.until(Some(probe_at)), if !reading => {
                    if client.departed() || !client.probe(PROBE_EVERY).await {
                        info!(session = %client.request_id, "the client went away while held back; its unread audio is dropped and the session abandoned");
                        if let Some(running) = task.as_mut() {
                            running.abandon().await;
                        }
                        return;
                    }
                    probe_at = Instant::now() + PROBE_EVERY;
                }
                () = idle_timer.until(Some(idle_at)), if input.is_some() && self.inbox.is_empty() => {
                    if let Some(running) = task.as_mut() {
                        running.abandon().await;
                    }
                    client.fail(&ApiError::with_code(408, "Request timeout.")).await;
                    return;
                }
            }
        }
    }

    /// Takes one read from the client into the inbox.
    fn read(&mut self, message: Option<Result<Message, WsError>>, idle_at: &mut Instant) -> Read {
        let text = match message {
            Some(Ok(Message::Binary(data))) if data.is_empty() => {
                self.inbox.end();
                return Read::More;
            }
            Some(Ok(Message::Binary(data))) => {
                if !self.inbox.audio(&data) {
                    debug!(bytes = data.len(), "audio after the end of audio ignored");
                    return Read::More;
                }
                match &self.progress {
                    Some(progress) => progress.add_audio(data.len() as u64),
                    None => self.unreported += data.len() as u64,
                }
                *idle_at = Instant::now() + self.idle;
                return Read::More;
            }
            Some(Ok(Message::Text(text))) => text,
            // tungstenite answers pings as it reads.
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {
                return Read::More;
            }
            Some(Err(err)) if client::is_too_big(&err) => return Read::TooBig,
            Some(Ok(Message::Close(_)) | Err(_)) | None => return Read::Gone,
        };
        match parse_text(&text) {
            Text::EndOfAudio => self.inbox.end(),
            Text::Control(control) => {
                // A client that sends control messages is not silent,
                // whatever the session does with them.
                *idle_at = Instant::now() + self.idle;
                if !self.inbox.control(control) {
                    debug!("a control message after the end of audio ignored");
                }
            }
            Text::Invalid(err) => return Read::Invalid(err),
        }
        Read::More
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

/// The session's outcome, if its task ends within [`CLOSE_GRACE`].
async fn outcome_within_grace(task: &mut Running) -> Option<crate::error::Result<Summary>> {
    tokio::time::timeout(CLOSE_GRACE, task.outcome())
        .await
        .ok()
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_messages_are_kept_as_sent() {
        let control = |text: &str, kind| {
            Text::Control(Control {
                text: text.to_owned(),
                kind,
            })
        };
        assert_eq!(parse_text(""), Text::EndOfAudio);
        for (text, kind) in [
            (r#"{"type":"keepalive"}"#, ControlKind::Keepalive),
            (
                r#"{"type":"finalize","trailing_silence_ms":300}"#,
                ControlKind::Finalize,
            ),
            (r#"{ "type" : "stop", "x": [1] }"#, ControlKind::Other),
        ] {
            assert_eq!(parse_text(text), control(text, kind));
        }
        for malformed in ["nope", "[]", r#"{"type":5}"#, r#"{"kind":"finalize"}"#] {
            assert_eq!(
                parse_text(malformed),
                Text::Invalid(ApiError::bad_request("Control request is malformed.")),
                "{malformed}"
            );
        }
    }
}
