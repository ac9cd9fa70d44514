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
use tokio_util::sync::CancellationToken;
use tracing::debug;

use crate::cli::SessionArgs;
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
pub(crate) async fn run(
    socket: &Path,
    header: &SessionArgs,
    mut input: mpsc::Receiver<SessionInput>,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
) -> Result<()> {
    let header = protocol::header_line(header)?;
    let stream = connect(socket).await?;
    let (read, mut write) = stream.into_split();
    let lost = |e: std::io::Error| Error::Disconnected(format!("the daemon: {e}"));
    // A daemon that refuses the session closes its end early: then writing
    // fails, and its `error` event, still to be read, says why.
    let header_sent = write.write_all(&header).await.is_ok();

    // Audio goes out until the input ends or a stop; then a half-close
    // ends the audio and the daemon drains.
    let sender = async move {
        let mut failure = None;
        if header_sent {
            loop {
                let message = tokio::select! {
                    () = stop.cancelled() => break,
                    message = input.recv() => message,
                };
                match message {
                    Some(SessionInput::Audio(chunk)) => {
                        if write.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                    // The socket protocol carries audio only.
                    Some(SessionInput::Finalize) => debug!("finalize is not passed to the daemon"),
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
    };
    let receiver = async move {
        let mut lines = BufReader::new(read);
        let mut line = Vec::with_capacity(512);
        let mut remote_error = None;
        loop {
            line.clear();
            let read = lines.read_until(b'\n', &mut line).await.map_err(lost)?;
            if read == 0 {
                break;
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
            if let Event::Error {
                code,
                message,
                exit_code,
                ..
            } = &event
            {
                remote_error = Some(Error::Remote {
                    code: code.clone(),
                    message: message.clone(),
                    exit_code: *exit_code,
                });
            }
            if events.send(event).await.is_err() {
                break;
            }
        }
        Ok(remote_error)
    };
    let (failure, received) = tokio::join!(sender, receiver);
    match (received?, failure) {
        (Some(remote), _) if remote.exit_code() != EXIT_OK => Err(remote),
        (_, Some(input_failure)) => Err(input_failure),
        _ => Ok(()),
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
