//! The relay between a started WebSocket client and its session: audio in
//! whole frames and control messages into the session (held back when the
//! session's queue is full, so TCP slows the client), the session's events
//! out as Soniox responses, the idle rule, and how a session's end, failure
//! or a client's leaving ends the connection, also when the client left
//! while held back, with what it sent before still unread.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, info, warn};

use soniox_wire::ApiError;

use super::CLOSE_GRACE;
use super::client::{self, Client};
use super::start::api_error;
use super::transcript::{Terminal, Transcript};
use crate::daemon::launch::Running;
use crate::daemon::registry::{Progress, State};
use crate::event::Event;
use crate::session::{SessionInput, Summary};
use crate::timer::LazyTimer;

/// Most events folded into one response.
const MAX_BATCH: usize = 256;
/// How often a client that is held back (not read) is probed for having
/// left (see [`Client::probe`]).
const PROBE_EVERY: Duration = Duration::from_millis(500);

/// What a text frame after the start request means.
#[derive(Debug, PartialEq)]
enum Control {
    EndOfAudio,
    Keepalive,
    Finalize,
    Invalid(ApiError),
}

fn parse_control(text: &str) -> Control {
    if text.is_empty() {
        return Control::EndOfAudio;
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return Control::Invalid(ApiError::bad_request("Control request is malformed."));
    };
    match map.get("type") {
        Some(Value::String(kind)) if kind == "keepalive" => Control::Keepalive,
        // `trailing_silence_ms` is a latency hint the session core does not
        // take; finalizing without it is still correct.
        Some(Value::String(kind)) if kind == "finalize" => Control::Finalize,
        Some(Value::String(_)) => {
            Control::Invalid(ApiError::bad_request("Control request invalid type."))
        }
        _ => Control::Invalid(ApiError::bad_request("Control request is malformed.")),
    }
}

/// Moves frames between a client and its session.
pub(super) struct Relay {
    /// Bytes in one audio frame (1 for containers).
    frame: usize,
    /// Wall time a streaming client may stay silent.
    idle: Duration,
    progress: Arc<Progress>,
}

impl Relay {
    /// A relay for audio of `frame` bytes a frame (1 for containers), whose
    /// client may stay silent for `idle` of wall time.
    pub(super) fn new(frame: usize, idle: Duration, progress: Arc<Progress>) -> Relay {
        Relay {
            frame,
            idle,
            progress,
        }
    }

    /// Relays until the session ends, fails, or the client goes; the
    /// client has been answered (or is gone) when it returns.
    pub(super) async fn run(
        self,
        client: &mut Client,
        task: Running,
        input_tx: mpsc::Sender<SessionInput>,
        mut events: mpsc::Receiver<Event>,
    ) {
        let mut input = Some(input_tx);
        // Declared after `input`, so dropped before it: an aborted session
        // never sees its input close as an end of audio.
        let mut task = task;
        let mut pending: Option<SessionInput> = None;
        let mut carry = BytesMut::new();
        let mut transcript = Transcript::default();
        let mut idle_at = Instant::now() + self.idle;
        // Moves later with every message: one timer, not one per turn.
        let mut idle_timer = LazyTimer::new();
        let mut probe_at = Instant::now();
        let mut probe_timer = LazyTimer::new();
        let mut batch = Vec::with_capacity(16);
        loop {
            let waiting = input.as_ref().filter(|_| pending.is_some()).cloned();
            tokio::select! {
                biased;
                count = events.recv_many(&mut batch, MAX_BATCH) => {
                    let terminal = if count == 0 {
                        // The session ended without an `end` (no audio ever came).
                        Some(Terminal::End { audio_ms: 0 })
                    } else {
                        let (frame, terminal) = transcript.fold(batch.drain(..));
                        if let Some(frame) = frame
                            && !client.send_text(frame.to_string()).await
                        {
                            info!(session = %client.request_id, "the client went away; session abandoned");
                            task.abandon().await;
                            return;
                        }
                        terminal
                    };
                    match terminal {
                        None => {}
                        Some(Terminal::End { audio_ms }) => {
                            match outcome_within_grace(&mut task).await {
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
                            let err = match outcome_within_grace(&mut task).await {
                                Some(Err(err)) => api_error(&err),
                                _ => from_event,
                            };
                            client.fail(&err).await;
                            return;
                        }
                    }
                }
                permit = reserve(waiting), if pending.is_some() => match (permit, pending.take()) {
                    (Some(permit), Some(message)) => {
                        permit.send(message);
                        // The client was held back, not silent: its idle
                        // time starts now.
                        idle_at = Instant::now() + self.idle;
                    }
                    // The session no longer reads: its events say why.
                    _ => input = None,
                },
                message = client.next(), if pending.is_none() => {
                    let text = match message {
                        Some(Ok(Message::Binary(data))) if data.is_empty() => {
                            self.end_audio(&mut input, &carry);
                            continue;
                        }
                        Some(Ok(Message::Binary(data))) => {
                            if input.is_none() {
                                debug!(bytes = data.len(), "audio after the end of audio ignored");
                                continue;
                            }
                            idle_at = Instant::now() + self.idle;
                            pending = self.align(&mut carry, data).map(SessionInput::Audio);
                            continue;
                        }
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Err(err)) if client::is_too_big(&err) => {
                            task.abandon().await;
                            client.too_big().await;
                            return;
                        }
                        Some(Ok(Message::Close(_)) | Err(_)) | None => {
                            // Soniox treats a client's close as a cancel: the
                            // upstream session is abandoned (the task guard).
                            info!(session = %client.request_id, "the client went away; session abandoned");
                            task.abandon().await;
                            return;
                        }
                    };
                    match parse_control(&text) {
                        Control::EndOfAudio => self.end_audio(&mut input, &carry),
                        Control::Keepalive => idle_at = Instant::now() + self.idle,
                        Control::Finalize if input.is_some() => {
                            idle_at = Instant::now() + self.idle;
                            pending = Some(SessionInput::Finalize);
                        }
                        Control::Finalize => debug!("finalize after the end of audio ignored"),
                        Control::Invalid(err) => {
                            task.abandon().await;
                            client.fail(&err).await;
                            return;
                        }
                    }
                }
                // Held back, the client is not read, and its leaving would
                // be read only after all it sent before: that audio would be
                // streamed (and billed) for nobody.
                () = probe_timer.until(Some(probe_at)), if pending.is_some() => {
                    if client.departed() || !client.probe(PROBE_EVERY).await {
                        info!(session = %client.request_id, "the client went away while held back; its unread audio is dropped and the session abandoned");
                        task.abandon().await;
                        return;
                    }
                    probe_at = Instant::now() + PROBE_EVERY;
                }
                () = idle_timer.until(Some(idle_at)), if input.is_some() && pending.is_none() => {
                    task.abandon().await;
                    client.fail(&ApiError::with_code(408, "Request timeout.")).await;
                    return;
                }
            }
        }
    }

    /// The whole frames of `data` (with what `carry` held), keeping a
    /// partial frame back for the next message.
    ///
    /// Chunks are copied out at their exact size: a frame's payload shares
    /// tungstenite's read buffer, and a chunk kept in the replay buffer
    /// would pin that whole block with it (122 KiB of RSS per session at
    /// N = 1000 in benches/relay, against 81 KiB on the Unix socket).
    fn align(&self, carry: &mut BytesMut, data: Bytes) -> Option<Bytes> {
        self.progress.add_audio(data.len() as u64);
        if carry.is_empty() && data.len().is_multiple_of(self.frame) {
            return Some(Bytes::copy_from_slice(&data));
        }
        carry.extend_from_slice(&data);
        let whole = carry.len() / self.frame * self.frame;
        (whole > 0).then(|| {
            let chunk = Bytes::copy_from_slice(&carry[..whole]);
            carry.advance(whole);
            chunk
        })
    }

    /// The client ended its audio: the session drains and finishes.
    fn end_audio(&self, input: &mut Option<mpsc::Sender<SessionInput>>, carry: &BytesMut) {
        if input.take().is_some() {
            if !carry.is_empty() {
                debug!(
                    bytes = carry.len(),
                    "dropped a partial frame at the end of the audio"
                );
            }
            self.progress.set_state(State::Draining);
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
    fn control_messages() {
        assert_eq!(parse_control(""), Control::EndOfAudio);
        assert_eq!(parse_control(r#"{"type":"keepalive"}"#), Control::Keepalive);
        assert_eq!(
            parse_control(r#"{"type":"finalize","trailing_silence_ms":300}"#),
            Control::Finalize
        );
        assert_eq!(
            parse_control(r#"{"type":"stop"}"#),
            Control::Invalid(ApiError::bad_request("Control request invalid type."))
        );
        assert_eq!(
            parse_control("nope"),
            Control::Invalid(ApiError::bad_request("Control request is malformed."))
        );
    }
}
