//! The tokio-tungstenite client every emulator test drives: connecting with
//! each kind of key, start requests, sending audio, reading responses and
//! the checks most tests share.

// Each test file is its own crate and uses only some of these helpers.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use soniox_emulator::marker::{self, Word};
use soniox_emulator::{Emulator, EmulatorConfig, EmulatorCounts};

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound on every single wait in these tests.
pub const WAIT: Duration = Duration::from_secs(10);
/// 120 ms of 16 kHz mono s16le, the official examples' chunk size.
pub const CHUNK: usize = 3840;
/// The key the emulator accepts by default.
pub const KEY: &str = "test-key";
/// The 429 error's message, for a connect rejected or over the limit.
pub const MSG_LIMIT_EXCEEDED: &str = "Your project has exceeded max number of concurrent requests.";

/// How a client presents its key at the WebSocket upgrade.
#[derive(Clone, Copy)]
pub enum Auth<'a> {
    /// `Authorization: Bearer <key>`.
    Header(&'a str),
    /// `Sec-WebSocket-Protocol: soniox-api-key, <key>`.
    Subprotocol(&'a str),
    /// None at the upgrade (the start request may carry one).
    None,
}

pub async fn emulator(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.unwrap()
}

pub async fn connect(emu: &Emulator, auth: Auth<'_>) -> Client {
    let mut req = emu.url().into_client_request().unwrap();
    match auth {
        Auth::Header(k) => {
            req.headers_mut()
                .insert(AUTHORIZATION, format!("Bearer {k}").parse().unwrap());
        }
        Auth::Subprotocol(k) => {
            req.headers_mut().insert(
                SEC_WEBSOCKET_PROTOCOL,
                format!("soniox-api-key, {k}").parse().unwrap(),
            );
        }
        Auth::None => {}
    }
    let (ws, resp) = timeout(WAIT, tokio_tungstenite::connect_async(req))
        .await
        .unwrap()
        .unwrap();
    if let Auth::Subprotocol(_) = auth {
        assert_eq!(
            resp.headers().get(SEC_WEBSOCKET_PROTOCOL).unwrap(),
            "soniox-api-key"
        );
    }
    ws
}

/// Connects with `auth` and sends [`start_request`]`(extra)`.
pub async fn started_with(emu: &Emulator, auth: Auth<'_>, extra: Value) -> Client {
    let mut ws = connect(emu, auth).await;
    send_text(&mut ws, start_request(extra)).await;
    ws
}

/// Connects with the key in a header and sends the plain start request.
pub async fn started(emu: &Emulator) -> Client {
    started_with(emu, Auth::Header(KEY), json!({})).await
}

/// A pcm_s16le 16 kHz mono start request with `extra` fields merged in.
pub fn start_request(extra: Value) -> String {
    let mut v = json!({
        "model": "stt-rt-v5",
        "audio_format": "pcm_s16le",
        "sample_rate": 16000,
        "num_channels": 1,
    });
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    v.to_string()
}

pub async fn send_text(ws: &mut Client, text: impl Into<String>) {
    ws.send(Message::text(text.into())).await.unwrap();
}

/// Sends `audio` in 120 ms binary frames, as fast as possible.
pub async fn send_audio(ws: &mut Client, audio: &[u8]) {
    for chunk in audio.chunks(CHUNK) {
        ws.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
}

/// Sends `audio` like [`send_audio`], stopping at the first failed send: the
/// server may go away mid-stream.
pub async fn send_audio_until_closed(ws: &mut Client, audio: &[u8]) {
    for chunk in audio.chunks(CHUNK) {
        if ws.send(Message::binary(chunk.to_vec())).await.is_err() {
            break;
        }
    }
}

/// The next text frame as JSON (pings and pongs skipped).
pub async fn recv(ws: &mut Client) -> Value {
    loop {
        match timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Every text frame until the server's close frame, and that frame.
pub async fn recv_all(ws: &mut Client) -> (Vec<Value>, Option<CloseFrame>) {
    let mut out = Vec::new();
    loop {
        match timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => out.push(serde_json::from_str(&t).unwrap()),
            Some(Ok(Message::Close(frame))) => return (out, frame),
            Some(Ok(_)) => {}
            other => panic!("expected text or close, got {other:?}"),
        }
    }
}

/// Ends the audio (an empty text frame), then [`recv_all`].
pub async fn finish(ws: &mut Client) -> (Vec<Value>, Option<CloseFrame>) {
    send_text(ws, "").await;
    recv_all(ws).await
}

/// Expects exactly one error frame, then close 1000; returns the error.
pub async fn expect_error(ws: &mut Client, code: u16, message: &str) -> Value {
    let (msgs, close) = recv_all(ws).await;
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    let e = msgs.into_iter().next().unwrap();
    assert_eq!(e["error_code"], code, "{e}");
    assert_eq!(e["error_message"], message, "{e}");
    let t = e["error_type"].as_str().unwrap().replace('_', "-");
    assert_eq!(
        e["more_info"],
        format!("https://soniox.com/docs/api-reference/errors#{t}")
    );
    assert!(e["request_id"].as_str().is_some_and(|s| s.len() == 36));
    assert_eq!(close.unwrap().code, CloseCode::Normal);
    e
}

pub fn tokens(msgs: &[Value]) -> Vec<Value> {
    msgs.iter()
        .flat_map(|m| m["tokens"].as_array().cloned().unwrap_or_default())
        .collect()
}

pub fn final_texts(msgs: &[Value]) -> Vec<String> {
    tokens(msgs)
        .iter()
        .filter(|t| t["is_final"] == true)
        .map(|t| t["text"].as_str().unwrap().to_owned())
        .collect()
}

/// The words' texts, as the final tokens should spell them.
pub fn texts(words: &[Word]) -> Vec<String> {
    words.iter().map(|w| w.text.clone()).collect()
}

/// Streams `words` (as `total_ms` of audio), ends the audio and returns all
/// responses; checks the finished message and close 1000.
pub async fn transcribe(ws: &mut Client, words: &[Word], total_ms: u64) -> Vec<Value> {
    let audio = marker::encode(words, total_ms, 16_000, 1);
    send_audio(ws, &audio).await;
    let (msgs, close) = finish(ws).await;
    let last = msgs.last().unwrap();
    assert_eq!(last["finished"], true);
    assert_eq!(last["tokens"], json!([]));
    assert_eq!(last["final_audio_proc_ms"], total_ms);
    assert_eq!(last["total_audio_proc_ms"], total_ms);
    assert_eq!(close.unwrap().code, CloseCode::Normal);
    msgs
}

/// Waits (at most [`WAIT`]) until the emulator's counts satisfy `pred`.
pub async fn wait_for(emu: &Emulator, pred: impl FnMut(&EmulatorCounts) -> bool) {
    timeout(WAIT, emu.wait_until(pred)).await.unwrap();
}
