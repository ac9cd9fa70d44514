//! One client on the Unix socket: peer check, header, queue, session.
//!
//! The audio after the header goes into the session core as it is read; the
//! session's events go back as NDJSON lines. A client that vanishes ends its
//! session (the event writer fails, the session sees its consumer gone) and
//! so releases its upstream slot.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tracing::{Instrument, debug, info, info_span};

use super::Shared;
use super::launch::{self, Client, Prepared, Refusal};
use super::registry::{Peer, State};
use crate::config::resolve::{self, Origin};
use crate::error::Error;
use crate::event::Event;
use crate::output::{EventWriter, NdjsonWriter};
use crate::protocol::{self, MAX_HEADER_BYTES, Request};
use crate::session::SessionInput;

/// Events queued towards one client's socket.
const CLIENT_EVENT_QUEUE: usize = 1024;
/// Audio chunks queued from the socket into the session.
const CLIENT_AUDIO_QUEUE: usize = 8;
/// Bytes read from the socket at a time, once the header is in.
const READ_CHUNK: usize = 8 * 1024;
/// The header reader's buffer: a header is rarely longer.
const HEADER_CHUNK: usize = 1024;
/// How long to take a client's leftover audio after its session ended.
const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Serves one connection to the end.
pub(super) async fn handle(stream: UnixStream, shared: Arc<Shared>) {
    let peer = match stream.peer_cred() {
        Ok(cred) => Peer {
            uid: cred.uid(),
            gid: cred.gid(),
            pid: cred.pid(),
        },
        Err(err) => {
            debug!(error = %err, "no peer credentials; closing");
            return;
        }
    };
    let span = info_span!(
        "client",
        peer_uid = peer.uid,
        peer_gid = peer.gid,
        peer_pid = peer.pid
    );
    serve(stream, peer, shared).instrument(span).await;
}

async fn serve(stream: UnixStream, peer: Peer, shared: Arc<Shared>) {
    let (read, mut write) = stream.into_split();
    if !shared.allows(&peer) {
        info!("refused: uid and gid not allowed");
        let err = Error::Forbidden(format!(
            "uid {} (gid {}) may not use this daemon",
            peer.uid, peer.gid
        ));
        send_final(&mut write, &Event::error(&err)).await;
        linger(read).await;
        return;
    }
    let mut reader = BufReader::with_capacity(HEADER_CHUNK, read);
    let header = tokio::time::timeout(shared.header_timeout(), read_header(&mut reader)).await;
    let request = match header {
        Err(_) => Err(Error::Usage(format!(
            "no header line within {:.1} s",
            shared.header_timeout().as_secs_f64()
        ))),
        Ok(Err(err)) => Err(err),
        Ok(Ok(line)) => protocol::parse_header(&line),
    };
    let client = Client {
        session_id: shared.new_session_id(),
        front: "unix",
        peer,
        per_uid_limit: shared.per_uid_limit(),
        name: None,
    };
    let prepared = request
        .map_err(Refusal::Error)
        .and_then(|request| match request {
            Request::Status => Ok(None),
            Request::Session { args, end_marker } => {
                let request = resolve::session(&args, Origin::Client)?;
                Ok(Some((
                    launch::prepare(&shared, client, &request)?,
                    end_marker,
                )))
            }
        });
    let (prepared, end_marker) = match prepared {
        Ok(None) => {
            let mut line = shared.status().to_string().into_bytes();
            line.push(b'\n');
            let _ = write.write_all(&line).await;
            let _ = write.shutdown().await;
            return;
        }
        Ok(Some(session)) => session,
        Err(refusal) => {
            let err = match refusal {
                Refusal::Error(err) => err,
                Refusal::Stopping => Error::Disconnected("the daemon is stopping".into()),
            };
            info!(error = %err, "refused");
            send_final(&mut write, &Event::error(&err)).await;
            linger(reader).await;
            return;
        }
    };
    let (events_tx, events_rx) = mpsc::channel(CLIENT_EVENT_QUEUE);
    let writer = tokio::spawn(write_events(events_rx, write));
    let reader = run_admitted(reader, prepared, end_marker, &shared, events_tx).await;
    // The writer ends once the session's events are all out (or the client left).
    let _ = writer.await;
    if let Some(reader) = reader {
        linger(reader).await;
    }
}

/// Reads and drops what the client still sends, for a moment, before the
/// connection closes: closing a Unix socket with unread data resets it, and
/// the client could lose the events still on their way to it.
async fn linger<R: AsyncRead + Unpin>(mut reader: R) {
    let mut sink = vec![0u8; READ_CHUNK];
    let drain = async {
        while let Ok(n) = reader.read(&mut sink).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// Runs the client's session once admitted; gives the socket's read half
/// back for lingering (`None` if the audio pump still has it).
async fn run_admitted(
    reader: BufReader<tokio::net::unix::OwnedReadHalf>,
    prepared: Prepared,
    end_marker: Option<Vec<u8>>,
    shared: &Arc<Shared>,
    events: mpsc::Sender<Event>,
) -> Option<BufReader<tokio::net::unix::OwnedReadHalf>> {
    let frame = prepared.config().audio.bytes_per_frame().unwrap_or(1);
    let admitted = match prepared.admit(&events).await {
        Ok(admitted) => admitted,
        Err(Refusal::Error(err)) => {
            let _ = events.send(Event::error(&err)).await;
            return Some(reader);
        }
        Err(Refusal::Stopping) => return Some(reader),
    };
    let progress = admitted.progress();
    let (input_tx, input_rx) = mpsc::channel(CLIENT_AUDIO_QUEUE);
    let pump = tokio::spawn(pump_audio(
        reader,
        frame,
        end_marker,
        shared.first_audio_timeout(),
        input_tx,
        progress,
    ));
    let mut running = admitted.spawn(input_rx, events);
    running.outcome().await;
    // The pump stops at the client's end of audio, or, once the session is
    // gone, at its next chunk; either way it hands the reader back. A client
    // that neither sends nor closes is not waited for long.
    let mut pump = pump;
    match tokio::time::timeout(LINGER, &mut pump).await {
        Ok(reader) => reader.ok(),
        Err(_) => {
            pump.abort();
            None
        }
    }
}

/// Reads the header line, up to [`MAX_HEADER_BYTES`].
async fn read_header<R: AsyncRead + Unpin>(reader: &mut BufReader<R>) -> Result<Vec<u8>, Error> {
    let mut line = Vec::with_capacity(256);
    let mut limited = (&mut *reader).take(MAX_HEADER_BYTES as u64);
    let read = limited
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| Error::Usage(format!("reading the header: {e}")))?;
    match line.last() {
        Some(b'\n') => {
            line.pop();
            Ok(line)
        }
        _ if read >= MAX_HEADER_BYTES => Err(Error::Usage(format!(
            "the header line is longer than {MAX_HEADER_BYTES} bytes"
        ))),
        _ => Err(Error::Usage(
            "the connection ended before a header line".into(),
        )),
    }
}

/// Moves audio from the socket into the session, in whole frames, until
/// the client half-closes or sends the end marker. A client that sends
/// nothing within `first_audio` fails the session, which frees its slot.
async fn pump_audio<R: AsyncRead + Unpin>(
    mut reader: BufReader<R>,
    frame: usize,
    end_marker: Option<Vec<u8>>,
    first_audio: Option<Duration>,
    session: mpsc::Sender<SessionInput>,
    progress: Arc<super::registry::Progress>,
) -> BufReader<R> {
    if let Some(bound) = first_audio
        && tokio::time::timeout(bound, reader.fill_buf())
            .await
            .is_err()
    {
        let err = Error::Disconnected(format!(
            "the client sent no audio within {:.0} s of being admitted",
            bound.as_secs_f64()
        ));
        info!(error = %err, "no audio");
        let _ = session.send(SessionInput::Failed(err)).await;
        return reader;
    }
    // Never split, so never shared: reserving again reuses its space. Each
    // chunk is copied out at its exact size instead, because a chunk split
    // off a shared buffer would pin the whole buffer for as long as the
    // replay buffer keeps the chunk (most of a second at least).
    let mut pending = BytesMut::with_capacity(READ_CHUNK);
    let mut ended = false;
    while !ended {
        pending.reserve(READ_CHUNK);
        match reader.read_buf(&mut pending).await {
            Ok(0) | Err(_) => ended = true,
            Ok(_) => {}
        }
        if let Some(marker) = &end_marker
            && let Some(at) = find(&pending, marker)
        {
            pending.truncate(at);
            ended = true;
        }
        // Keep back what could be the start of the marker, and a partial frame.
        let hold = end_marker
            .as_ref()
            .filter(|_| !ended)
            .map_or(0, |m| m.len() - 1);
        let ready = pending.len().saturating_sub(hold) / frame * frame;
        if ready == 0 {
            continue;
        }
        let chunk = Bytes::copy_from_slice(&pending[..ready]);
        pending.advance(ready);
        progress.add_audio(chunk.len() as u64);
        if session.send(SessionInput::Audio(chunk)).await.is_err() {
            return reader;
        }
    }
    if !pending.is_empty() {
        debug!(
            bytes = pending.len(),
            "dropped a partial frame at the end of the audio"
        );
    }
    progress.set_state(State::Draining);
    reader
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Writes the session's events as NDJSON lines; stops when the client is gone.
async fn write_events(
    mut events: mpsc::Receiver<Event>,
    mut write: tokio::net::unix::OwnedWriteHalf,
) {
    let mut line = Vec::with_capacity(256);
    while let Some(event) = events.recv().await {
        line.clear();
        NdjsonWriter.render(&event, &mut line);
        if write.write_all(&line).await.is_err() {
            debug!("the client went away");
            return;
        }
    }
    let _ = write.shutdown().await;
}

/// Sends one last event and closes.
async fn send_final(write: &mut tokio::net::unix::OwnedWriteHalf, event: &Event) {
    let mut line = Vec::new();
    NdjsonWriter.render(event, &mut line);
    let _ = write.write_all(&line).await;
    let _ = write.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn audio_is_cut_into_frames_and_at_the_marker() {
        let (tx, mut rx) = mpsc::channel(16);
        let data = b"abcdefgEND!tail".to_vec();
        let reader = BufReader::new(&data[..]);
        pump_audio(reader, 2, Some(b"END!".to_vec()), None, tx, Arc::default()).await;
        let mut got = Vec::new();
        while let Some(SessionInput::Audio(chunk)) = rx.recv().await {
            got.extend_from_slice(&chunk);
        }
        assert_eq!(
            got, b"abcdef",
            "the odd byte and everything from the marker on are dropped"
        );
    }

    #[tokio::test]
    async fn headers_are_bounded() {
        let long = vec![b'x'; MAX_HEADER_BYTES + 10];
        let mut reader = BufReader::new(&long[..]);
        assert!(matches!(
            read_header(&mut reader).await,
            Err(Error::Usage(_))
        ));
        let mut reader = BufReader::new(&b"{\"rate\":8000}\nAUDIO"[..]);
        assert_eq!(read_header(&mut reader).await.unwrap(), b"{\"rate\":8000}");
        let mut rest = Vec::new();
        reader.read_to_end(&mut rest).await.unwrap();
        assert_eq!(rest, b"AUDIO", "audio after the header is kept");
    }
}
