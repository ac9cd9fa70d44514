//! The daemon's clients: the filter with `--connect`, and `sttpipe status`.
//!
//! With `--connect`, the filter sends its session options as the header
//! line of the daemon's socket protocol ([`crate::protocol`]), its audio
//! after it, and half-closes at the end; the daemon's NDJSON events come
//! back and go out as the filter's own. No key is needed here: the daemon
//! has it.

use std::path::Path;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::cli::SessionArgs;
#[cfg(doc)]
use crate::error::EXIT_TEMPFAIL;
use crate::error::{EXIT_OK, Error, Result};
use crate::event::Event;
use crate::protocol;
use crate::session::SessionInput;

/// Longest event line accepted from the daemon.
const MAX_LINE: usize = 1 << 20;

async fn connect(socket: &Path) -> Result<UnixStream> {
    UnixStream::connect(socket)
        .await
        .map_err(|e| Error::Connect {
            url: socket.display().to_string(),
            reason: e.to_string(),
            transient: true,
        })
}

/// Streams `input` through the daemon at `socket` with the session options
/// `header`, giving its events out. The daemon's `error` event (passed on
/// as it is) becomes [`Error::Remote`], so the exit status is the daemon's.
///
/// After `stop`, the audio ends (a half-close) and the daemon's last events
/// are awaited for at most `drain` (wall time); the stream's `end` then says
/// `signal`. A stream the daemon itself cut short (its own shutdown) ends
/// with an `error` event and [`EXIT_TEMPFAIL`]: the transcript may lack its
/// end.
pub(crate) async fn run(
    socket: &Path,
    header: &SessionArgs,
    drain: Duration,
    mut input: mpsc::Receiver<SessionInput>,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) -> Result<()> {
    let line = protocol::header_line(header)?;
    let stream = connect(socket).await?;
    let (read, mut write) = stream.into_split();
    // A daemon that refuses the session closes its end early: then writing
    // fails, and its `error` event, still to be read, says why.
    let header_sent = write.write_all(&line).await.is_ok();
    let began = Instant::now();

    // Audio goes out until the input ends or a stop; then a half-close
    // ends the audio and the daemon drains.
    // Once the daemon has closed, nothing more is worth sending.
    let daemon_closed = CancellationToken::new();
    let sender = {
        let stop = stop.clone();
        let daemon_closed = daemon_closed.clone();
        async move {
            let mut failure = None;
            if header_sent {
                loop {
                    let message = tokio::select! {
                        () = stop.cancelled() => break,
                        () = daemon_closed.cancelled() => break,
                        message = input.recv() => message,
                    };
                    match message {
                        Some(SessionInput::Audio(chunk)) => {
                            if write.write_all(&chunk).await.is_err() {
                                break;
                            }
                        }
                        // The socket protocol carries audio only (and the
                        // filter's input has no control messages).
                        Some(SessionInput::Finalize | SessionInput::Control(_)) => {
                            debug!("a finalize is not passed to the daemon")
                        }
                        Some(SessionInput::Failed(err)) => {
                            failure = Some(err);
                            break;
                        }
                        None => break,
                    }
                }
            }
            let _ = write.shutdown().await;
            failure
        }
    };
    let mut relay = Relay {
        events,
        stopped: stop.clone(),
        started: false,
        ended: false,
        tokens: 0,
        remote_error: None,
    };
    let receiver = async {
        let deadline = async {
            stop.cancelled().await;
            tokio::time::sleep(drain).await;
        };
        let received = tokio::select! {
            received = relay.receive(read) => received,
            () = deadline => {
                debug!("the daemon did not finish within the drain deadline");
                Ok(())
            }
        };
        daemon_closed.cancel();
        received
    };
    let (failure, received) = tokio::join!(sender, receiver);
    received?;
    if relay.started && !relay.ended {
        // Cut off at the drain deadline: the stream still ends with `end`.
        relay
            .emit_end(Event::End {
                audio_ms: 0,
                tokens: relay.tokens,
                duration_ms: began.elapsed().as_millis() as u64,
                reason: "signal".into(),
            })
            .await;
    }
    match (relay.remote_error, failure) {
        (Some(remote), _) if remote.exit_code() != EXIT_OK => Err(remote),
        (_, Some(input_failure)) => Err(input_failure),
        _ => Ok(()),
    }
}

/// The daemon's events on their way out, and what they said.
struct Relay {
    events: mpsc::Sender<Event>,
    /// Cancelled when this process was asked to stop.
    stopped: CancellationToken,
    started: bool,
    ended: bool,
    /// Final tokens seen.
    tokens: u64,
    /// The daemon's `error` (or a cut-short stream), already given out.
    remote_error: Option<Error>,
}

impl Relay {
    /// Passes the daemon's events on until it closes.
    async fn receive(&mut self, read: tokio::net::unix::OwnedReadHalf) -> Result<()> {
        let lost = |e: std::io::Error| Error::Disconnected(format!("the daemon: {e}"));
        let mut lines = BufReader::new(read);
        let mut line = Vec::with_capacity(512);
        loop {
            line.clear();
            let read = lines.read_until(b'\n', &mut line).await.map_err(lost)?;
            if read == 0 {
                return Ok(());
            }
            if line.len() > MAX_LINE {
                return Err(Error::Protocol(
                    "an event line from the daemon is too long".into(),
                ));
            }
            let event: Event = match serde_json::from_slice(&line) {
                Ok(event) => event,
                // A newer daemon's event type: consumers ignore what they do not know.
                Err(_) => continue,
            };
            let gone = match event {
                Event::Start { .. } => {
                    self.started = true;
                    self.send(event).await
                }
                Event::Token(ref token) if token.is_final => {
                    self.tokens += 1;
                    self.send(event).await
                }
                Event::Error {
                    ref code,
                    ref message,
                    exit_code,
                    ..
                } => {
                    self.remote_error = Some(Error::Remote {
                        code: code.clone(),
                        message: message.clone(),
                        exit_code,
                    });
                    self.send(event).await
                }
                end @ Event::End { .. } => self.emit_end(end).await,
                other => self.send(other).await,
            };
            if gone {
                return Ok(());
            }
        }
    }

    /// Gives out the stream's `end`: `signal` if this process was stopped;
    /// after an `error` event first if the daemon stopped the session on its
    /// own. Returns whether the consumer is gone.
    async fn emit_end(&mut self, mut end: Event) -> bool {
        self.ended = true;
        if let Event::End { reason, .. } = &mut end {
            if self.stopped.is_cancelled() {
                *reason = "signal".into();
            } else if reason == "signal" && self.remote_error.is_none() {
                let err = Error::Disconnected(
                    "the daemon stopped this session before the end of the audio (it is shutting down); the transcript may be incomplete".into(),
                );
                let gone = self.send(Event::error(&err)).await;
                self.remote_error = Some(Error::Remote {
                    code: err.kind().to_owned(),
                    message: err.to_string(),
                    exit_code: err.exit_code(),
                });
                if gone {
                    return true;
                }
            }
        }
        self.send(end).await
    }

    /// Whether the consumer is gone.
    async fn send(&self, event: Event) -> bool {
        self.events.send(event).await.is_err()
    }
}

/// `sttpipe status`: the daemon's status document, pretty-printed.
pub(crate) async fn status(socket: &Path) -> Result<String> {
    let stream = connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let lost = |e: std::io::Error| Error::Disconnected(format!("the daemon: {e}"));
    write
        .write_all(protocol::STATUS_REQUEST)
        .await
        .map_err(lost)?;
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(read).read_line(&mut line),
    )
    .await
    .map_err(|_| Error::Disconnected("the daemon did not answer within 10 s".into()))?
    .map_err(lost)?;
    let value: serde_json::Value = serde_json::from_str(&line)
        .map_err(|e| Error::Protocol(format!("the daemon's status is not JSON: {e}")))?;
    if value["type"] == "error" {
        let exit_code = value["exit_code"].as_u64().unwrap_or(70) as u8;
        return Err(Error::Remote {
            code: value["code"].as_str().unwrap_or("").to_owned(),
            message: value["message"].as_str().unwrap_or("").to_owned(),
            exit_code,
        });
    }
    serde_json::to_string_pretty(&value).map_err(|e| Error::Internal(e.to_string()))
}
