//! The daemon's Wyoming front end (`--wyoming-listen`): speech-to-text for
//! Home Assistant's voice pipelines.
//!
//! One job a file: [`codec`] reads and writes Wyoming's framing with every
//! length bounded; [`mapping`] turns `transcribe` and `audio-start` into the
//! session's [`crate::cli::SessionArgs`] (resolved as any client's, so
//! nothing is read from a path on a client's say) and describes the daemon
//! in `info`; [`pcm`] makes the client's samples what the engine takes;
//! [`transcript`] folds the session's events into the turn's text; [`turn`]
//! runs one transcription on the launcher. This file owns a connection's
//! course: the address check, then events until the client leaves —
//! `describe` → `info`, `ping` → `pong`, `transcribe` (optional) then
//! `audio-start` → a turn.
//!
//! Wyoming clients have no uid: like WebSocket clients they are one remote
//! pseudo-peer ([`REMOTE_PEER`]) with no per-uid limit; their access rule is
//! their address (loopback, and `--wyoming-allow`), and the upstream limit
//! and the queue apply as to everyone. The protocol has no authentication of
//! its own, which is why only loopback may connect unless told otherwise.
//!
//! Every wait is bounded: the first event within `--header-timeout`, the
//! next turn within [`IDLE_BETWEEN_TURNS`], audio within [`turn`]'s idle
//! bound. A protocol violation gets an `error` event and the connection
//! closes; a client that vanishes abandons its session, which frees its
//! slot at once.

mod codec;
mod mapping;
mod pcm;
mod transcript;
mod turn;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{Instrument, debug, info, info_span};

use super::Shared;
use super::registry::Peer;
use crate::error::Error;
use codec::{Message, ReadError};
use mapping::{Layout, Style, Transcribe};
use turn::Next;

/// Who a Wyoming client is in the registry: remote, no uid.
const REMOTE_PEER: Peer = Peer {
    uid: u32::MAX,
    gid: u32::MAX,
    pid: None,
};
/// Events read ahead of the connection's loop: a few audio chunks. Past
/// it the socket is not read, so TCP holds the client back.
const MESSAGE_QUEUE: usize = 4;
/// The read buffer (Home Assistant's chunks are 2 KiB or so).
const READ_BUFFER: usize = 16 * 1024;
/// A connected client that starts no transcription for this long is closed.
const IDLE_BETWEEN_TURNS: Duration = Duration::from_secs(60);
/// How long to wait for a closed connection's last bytes to go out.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves one TCP connection on the Wyoming listener to the end.
pub(super) async fn handle(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let span = info_span!("wyoming", %peer);
    serve(stream, peer, shared).instrument(span).await;
}

async fn serve(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    // Answers are small and latency is the point.
    let _ = stream.set_nodelay(true);
    let rules = shared.wyoming_rules();
    let (read, write) = stream.into_split();
    let mut conn = Connection::new(read, write);
    if !rules.allows(peer.ip()) {
        info!("refused: the address is not allowed (--wyoming-allow)");
        let err = Error::Forbidden(format!("{} may not use this daemon", peer.ip()));
        conn.fail(&err).await;
        return;
    }
    let style = Style {
        endpointing: rules.endpointing,
        streaming: rules.streaming,
    };
    let timing = shared.timing();
    let mut bound = shared.header_timeout();
    let mut transcribe: Option<Transcribe> = None;
    loop {
        let message = tokio::select! {
            // Between turns there is nothing to drain: just close.
            () = shared.stop.cancelled() => return,
            message = tokio::time::timeout(bound, conn.messages.recv()) => message,
        };
        let message = match message {
            Err(_) => {
                debug!("no event in time; closing");
                let secs = bound.as_secs_f64();
                conn.fail(&Error::Usage(format!("no event within {secs:.1} s")))
                    .await;
                return;
            }
            Ok(None | Some(Err(ReadError::Closed))) => return,
            Ok(Some(Err(err))) => {
                conn.protocol_error(&err).await;
                return;
            }
            Ok(Some(Ok(message))) => message,
        };
        bound = timing.wall(IDLE_BETWEEN_TURNS);
        match message.kind.as_str() {
            "transcribe" => match Transcribe::read(&message.data) {
                Ok(read) => transcribe = Some(read),
                Err(err) => {
                    conn.fail(&err).await;
                    return;
                }
            },
            "audio-start" => {
                let layout = match Layout::read(&message.data) {
                    Ok(layout) => layout,
                    Err(err) => {
                        conn.fail(&err).await;
                        return;
                    }
                };
                let transcribe = transcribe.take().unwrap_or_default();
                match turn::run(&mut conn, &shared, &transcribe, layout, style).await {
                    Next::Continue => {}
                    Next::Close => return,
                }
            }
            "audio-chunk" | "audio-stop" => {
                let kind = message.kind.clone();
                conn.fail(&Error::Usage(format!("{kind} before audio-start")))
                    .await;
                return;
            }
            _ => {
                if !conn.answer(&message, &shared, style).await {
                    return;
                }
            }
        }
    }
}

/// One client's connection: its events in (read on a task of their own,
/// since reading one is not cancel-safe), Wyoming events out.
struct Connection {
    write: OwnedWriteHalf,
    messages: mpsc::Receiver<Result<Message, ReadError>>,
    reader: JoinHandle<()>,
}

impl Connection {
    fn new(read: OwnedReadHalf, write: OwnedWriteHalf) -> Connection {
        let (tx, messages) = mpsc::channel(MESSAGE_QUEUE);
        let reader = tokio::spawn(read_messages(read, tx));
        Connection {
            write,
            messages,
            reader,
        }
    }

    /// Sends one event; `false` if the client is gone.
    async fn send(&mut self, kind: &str, data: Option<&Value>) -> bool {
        self.write
            .write_all(&codec::encode(kind, data))
            .await
            .is_ok()
    }

    /// Answers what may come at any time (`describe`, `ping`) and ignores
    /// what this server has no use for, as Wyoming peers do; `false` if
    /// the client is gone.
    async fn answer(&mut self, message: &Message, shared: &Shared, style: Style) -> bool {
        match message.kind.as_str() {
            "describe" => {
                let info = mapping::info(shared.engines().summary(), style);
                self.send("info", Some(&info)).await
            }
            "ping" => {
                let data = message.data.get("text").map(|text| json!({ "text": text }));
                self.send("pong", data.as_ref()).await
            }
            other => {
                debug!(kind = other, "event ignored");
                true
            }
        }
    }

    /// Sends an `error` event for `err` and closes.
    async fn fail(&mut self, err: &Error) {
        info!(error = %err, "error sent to the client");
        let data = json!({"text": err.to_string(), "code": err.kind()});
        if self.send("error", Some(&data)).await {
            self.close().await;
        }
    }

    /// A framing error: said once, then the connection closes.
    async fn protocol_error(&mut self, err: &ReadError) {
        match err {
            // Nobody left to tell.
            ReadError::Io(_) | ReadError::Truncated(_) => {
                debug!(error = %err, "the client's stream broke");
            }
            _ => self.fail(&Error::Usage(err.to_string())).await,
        }
    }

    /// Half-closes and waits (bounded) for the client to close its side,
    /// so the last event is not lost to a reset.
    async fn close(&mut self) {
        let _ = self.write.shutdown().await;
        let drain = async { while let Some(Ok(_)) = self.messages.recv().await {} };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// The parsers a client's bytes reach, driven as a connection drives them
/// (framing, each event's reading and mapping, the audio's conversion), for
/// the fuzz target. Nothing is opened or sent.
#[cfg(feature = "fuzzing")]
pub(crate) fn fuzz_events(mut bytes: &[u8]) {
    use futures_util::FutureExt;

    use crate::config::resolve::{self, Origin};

    let mut transcribe = Transcribe::default();
    let mut converter = None;
    // A byte slice never makes a read wait: each read is ready at once.
    while let Some(Ok(message)) = codec::read(&mut bytes).now_or_never() {
        match message.kind.as_str() {
            "transcribe" => {
                if let Ok(read) = Transcribe::read(&message.data) {
                    transcribe = read;
                }
            }
            "audio-start" => {
                if let Ok(layout) = Layout::read(&message.data) {
                    let style = Style {
                        endpointing: true,
                        streaming: true,
                    };
                    let args = mapping::session_args(&transcribe, layout, layout.channels, style);
                    let _ = resolve::session(&args, Origin::Client);
                    converter = Some(pcm::Converter::new(layout.width, layout.channels, true));
                }
            }
            "audio-chunk" => {
                if let Some(converter) = converter.as_mut() {
                    let _ = converter.push(&message.payload);
                }
            }
            _ => {}
        }
    }
}

/// Reads events into `tx` until the stream ends or breaks (the last item
/// says which), or nobody listens.
async fn read_messages(read: OwnedReadHalf, tx: mpsc::Sender<Result<Message, ReadError>>) {
    let mut reader = BufReader::with_capacity(READ_BUFFER, read);
    loop {
        let message = codec::read(&mut reader).await;
        let last = message.is_err();
        if tx.send(message).await.is_err() || last {
            return;
        }
    }
}
