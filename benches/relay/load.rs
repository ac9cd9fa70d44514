//! The load generator's clients, one per protocol: the daemon's socket
//! protocol (a JSON header line, raw audio, half-close; NDJSON back) and the
//! Soniox protocol (a start request, binary audio, the empty frame; Soniox
//! responses back). Each streams its audio at real time and logs what it
//! wrote and read, and when.

use std::borrow::Cow;
use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;

use crate::relays::Target;
use crate::{CHUNK, CHUNK_BYTES, KEY, RATE, Ws, ms};

#[derive(Debug, Default)]
pub(crate) struct ClientLog {
    /// (cumulative bytes written, just before the write, tick lag in ms).
    pub(crate) writes: Vec<(u64, Instant, f64)>,
    /// Final tokens received: (text, start_ms, when).
    pub(crate) finals: Vec<(String, u64, Instant)>,
    /// Why the session failed, if it did.
    pub(crate) error: Option<String>,
}

/// The audio side of a client connection.
enum Sink {
    Unix(OwnedWriteHalf),
    Ws(SplitSink<Ws, Message>),
}

impl Sink {
    async fn send(&mut self, chunk: Bytes) -> Result<(), String> {
        match self {
            Sink::Unix(w) => w.write_all(&chunk).await.map_err(|e| format!("write: {e}")),
            Sink::Ws(w) => w
                .send(Message::Binary(chunk))
                .await
                .map_err(|e| format!("send: {e}")),
        }
    }

    /// Ends the audio: half-close, or the empty frame.
    async fn finish(&mut self) -> Result<(), String> {
        match self {
            Sink::Unix(w) => w.shutdown().await.map_err(|e| format!("half-close: {e}")),
            Sink::Ws(w) => w
                .send(Message::binary(Bytes::new()))
                .await
                .map_err(|e| format!("send the end: {e}")),
        }
    }
}

/// Streams `audio` in 100 ms chunks on a real-time clock, then ends it.
async fn stream_audio(
    mut sink: Sink,
    audio: &Bytes,
    writes: &mut Vec<(u64, Instant, f64)>,
) -> Result<(), String> {
    let mut ticks = tokio::time::interval(CHUNK);
    // Late ticks push the schedule back instead of bursting to catch up: a
    // burst would queue audio and count the queueing as relay latency.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut end = 0;
    for start in (0..audio.len()).step_by(CHUNK_BYTES) {
        let due = ticks.tick().await.into_std();
        let at = Instant::now();
        let chunk = audio.slice(start..(start + CHUNK_BYTES).min(audio.len()));
        end += chunk.len() as u64;
        sink.send(chunk).await?;
        writes.push((end, at, ms(at.saturating_duration_since(due))));
    }
    sink.finish().await
}

/// One line of the daemon's NDJSON, as far as the bench reads it.
#[derive(Deserialize)]
struct NdjsonLine<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    start_ms: Option<u64>,
    #[serde(default)]
    is_final: bool,
}

/// One Soniox response frame, as far as the bench reads it.
#[derive(Deserialize)]
struct SonioxFrame<'a> {
    #[serde(default, borrow)]
    tokens: Vec<SonioxToken<'a>>,
    #[serde(default)]
    finished: bool,
    #[serde(default)]
    error_code: Option<u64>,
}

#[derive(Deserialize)]
struct SonioxToken<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(default)]
    start_ms: Option<u64>,
    #[serde(default)]
    is_final: bool,
}

/// Reads the daemon's events to the end of the connection.
async fn read_ndjson(
    read: OwnedReadHalf,
    finals: &mut Vec<(String, u64, Instant)>,
) -> Result<(), String> {
    let mut lines = BufReader::new(read).lines();
    let mut ended = false;
    while let Some(line) = lines.next_line().await.map_err(|e| format!("read: {e}"))? {
        let at = Instant::now();
        let event: NdjsonLine<'_> =
            serde_json::from_str(&line).map_err(|e| format!("not JSON ({e}): {line}"))?;
        match event.kind.as_ref() {
            "token" if event.is_final => {
                let (Some(text), Some(start_ms)) = (event.text, event.start_ms) else {
                    return Err(format!("a token without text or start_ms: {line}"));
                };
                finals.push((text.into_owned(), start_ms, at));
            }
            "error" => return Err(line),
            "end" => ended = true,
            _ => {}
        }
    }
    if ended {
        Ok(())
    } else {
        Err("the connection ended without an end event".to_owned())
    }
}

/// Reads Soniox responses up to `finished` and the close.
async fn read_soniox(
    mut read: SplitStream<Ws>,
    finals: &mut Vec<(String, u64, Instant)>,
) -> Result<(), String> {
    let mut finished = false;
    while let Some(message) = read.next().await {
        let at = Instant::now();
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            // The relay may drop the connection right after `finished`.
            Err(_) if finished => break,
            Err(e) => return Err(format!("read: {e}")),
        };
        let frame: SonioxFrame<'_> =
            serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))?;
        if frame.error_code.is_some() {
            return Err(text.to_string());
        }
        for token in frame.tokens {
            if let (true, Some(start_ms)) = (token.is_final, token.start_ms) {
                finals.push((token.text.into_owned(), start_ms, at));
            }
        }
        finished |= frame.finished;
    }
    if finished {
        Ok(())
    } else {
        Err("the connection ended before `finished`".to_owned())
    }
}

/// One client session, started at `start_at`, bounded by `bound`.
pub(crate) async fn client(
    target: Target,
    i: usize,
    start_at: Instant,
    audio: Bytes,
    bound: Duration,
) -> ClientLog {
    tokio::time::sleep_until(start_at.into()).await;
    let mut log = ClientLog::default();
    let ClientLog { writes, finals, .. } = &mut log;
    let session = async {
        match &target {
            Target::Unix(path) => unix_client(path, i, &audio, writes, finals).await,
            Target::Ws(url) => ws_client(url, None, i, &audio, writes, finals).await,
            Target::Wss(url, tls) => ws_client(url, Some(tls), i, &audio, writes, finals).await,
        }
    };
    let outcome = tokio::time::timeout(bound, session).await;
    log.error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!("not finished within {bound:?}")),
    };
    log
}

/// A session over the daemon's socket protocol.
async fn unix_client(
    path: &Path,
    i: usize,
    audio: &Bytes,
    writes: &mut Vec<(u64, Instant, f64)>,
    finals: &mut Vec<(String, u64, Instant)>,
) -> Result<(), String> {
    // A full accept backlog refuses at once (EAGAIN): try again briefly.
    let mut attempts = 0;
    let stream = loop {
        match UnixStream::connect(path).await {
            Ok(stream) => break stream,
            Err(e) if attempts >= 50 => return Err(format!("connect: {e}")),
            Err(_) => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let (read, mut write) = stream.into_split();
    let header = format!("{{\"rate\":{RATE},\"client_reference_id\":\"s{i}\"}}\n");
    write
        .write_all(header.as_bytes())
        .await
        .map_err(|e| format!("write the header: {e}"))?;
    let (sent, received) = tokio::join!(
        stream_audio(Sink::Unix(write), audio, writes),
        read_ndjson(read, finals)
    );
    // The daemon's own account (an error event) says more than a failed write.
    received.and(sent)
}

/// A session over the Soniox protocol.
async fn ws_client(
    url: &str,
    tls: Option<&std::sync::Arc<rustls::ClientConfig>>,
    i: usize,
    audio: &Bytes,
    writes: &mut Vec<(u64, Instant, f64)>,
    finals: &mut Vec<(String, u64, Instant)>,
) -> Result<(), String> {
    // Responses are small: a small read buffer keeps thousands of clients
    // from costing a lot of memory.
    let config = soniox_wire::websocket_config();
    let connector = tls.map(|tls| tokio_tungstenite::Connector::Rustls(tls.clone()));
    let (ws, _) =
        tokio_tungstenite::connect_async_tls_with_config(url, Some(config), true, connector)
            .await
            .map_err(|e| format!("connect: {e}"))?;
    let (mut write, read) = ws.split();
    let start = serde_json::json!({
        "api_key": KEY,
        "model": "stt-rt-v5",
        "audio_format": "pcm_s16le",
        "sample_rate": RATE,
        "num_channels": 1,
        "client_reference_id": format!("s{i}"),
    });
    write
        .send(Message::text(start.to_string()))
        .await
        .map_err(|e| format!("send the start request: {e}"))?;
    let (sent, received) = tokio::join!(
        stream_audio(Sink::Ws(write), audio, writes),
        read_soniox(read, finals)
    );
    received.and(sent)
}
