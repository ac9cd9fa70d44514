//! The daemon's Soniox-compatible WebSocket endpoint (issue 4, item 6).
//!
//! Each test starts its own emulator in-process and the real `sttpipe serve`
//! binary with `--ws-listen 127.0.0.1:0` (it logs the port it got), then
//! speaks the Soniox real-time protocol to the daemon with tokio-tungstenite,
//! as a Soniox client would. The daemon and the emulator run [`PACE`] times
//! faster than real time; audio timestamps stay audio time, so every word's
//! `start_ms` is exact. Every wait is on an event (a frame, a log line, an
//! emulator state) and bounded by [`WAIT`].

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use soniox_emulator::marker::Word;
use soniox_emulator::{AuthMethod, Emulator, EmulatorConfig, Faults, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::util;

/// How many times faster than real time the daemon and the emulator run.
const PACE: f64 = 8.0;
/// Bound on anything a correct daemon does within a few seconds.
const WAIT: Duration = Duration::from_secs(30);
/// Bytes of 16 kHz mono pcm_s16le per 100 ms chunk.
const CHUNK: usize = 3200;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A running `sttpipe serve` with its WebSocket endpoint.
type Daemon = util::WsDaemon;

/// Starts the daemon against `emulator`, with extra `serve` flags, [`PACE`]
/// times faster; returns once it listens on the WebSocket endpoint.
async fn daemon(emulator: &Emulator, extra: &[&str]) -> Daemon {
    util::ws_daemon(emulator, extra, PACE).await
}

/// The emulator's defaults, [`PACE`] times faster.
async fn emulator() -> Emulator {
    emulator_with(EmulatorConfig::default()).await
}

/// The emulator's defaults and the daemon against it with no extra flags.
async fn served() -> (Emulator, Daemon) {
    let emu = emulator().await;
    let daemon = daemon(&emu, &[]).await;
    (emu, daemon)
}

async fn emulator_with(config: EmulatorConfig) -> Emulator {
    util::emulator(EmulatorConfig {
        time_scale: PACE,
        ..config
    })
    .await
}

/// How a test client presents its key.
#[derive(Debug, Clone, Copy)]
enum Auth<'a> {
    None,
    Bearer(&'a str),
    Subprotocol(&'a str),
}

async fn connect(url: &str, auth: Auth<'_>) -> Result<Ws, tungstenite::Error> {
    let mut request = url.into_client_request().unwrap();
    let headers = request.headers_mut();
    match auth {
        Auth::None => {}
        Auth::Bearer(key) => {
            headers.insert(
                "Authorization",
                HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
            );
        }
        Auth::Subprotocol(key) => {
            // tungstenite fails the handshake unless the server selects one
            // of these, as browsers do.
            headers.insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_str(&format!("soniox-api-key, {key}")).unwrap(),
            );
        }
    }
    let (ws, response) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request))
        .await
        .expect("handshake within the bound")?;
    if let Auth::Subprotocol(_) = auth {
        assert_eq!(
            response
                .headers()
                .get("Sec-WebSocket-Protocol")
                .map(|v| v.to_str().unwrap()),
            Some("soniox-api-key"),
            "the key subprotocol is echoed"
        );
    }
    Ok(ws)
}

/// A Soniox start request for 16 kHz mono pcm_s16le.
fn start_request() -> Value {
    json!({
        "model": "stt-rt-v5",
        "audio_format": "pcm_s16le",
        "sample_rate": 16000,
        "num_channels": 1,
    })
}

/// A connection to `url` (no key) that has sent [`start_request`].
async fn started(url: &str) -> Ws {
    let mut ws = connect(url, Auth::None).await.unwrap();
    ws.send(Message::text(start_request().to_string()))
        .await
        .unwrap();
    ws
}

/// `total_ms` of audio with a word every 500 ms from 500 ms on.
fn speech(total_ms: u64) -> (Vec<Word>, Vec<u8>) {
    util::marker_audio((total_ms / 500 - 1) as usize, 500, total_ms)
}

/// Sends the start request, all the audio in 100 ms messages and the end
/// of audio at once, as fast as the socket takes them.
async fn send_all(ws: &mut Ws, start: &Value, audio: &[u8]) {
    ws.send(Message::text(start.to_string())).await.unwrap();
    for chunk in audio.chunks(CHUNK) {
        ws.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
    ws.send(Message::text("")).await.unwrap();
}

/// What the daemon sent on one connection.
#[derive(Debug, Default)]
struct Received {
    frames: Vec<Value>,
    close: Option<CloseFrame>,
}

impl Received {
    /// Final spoken tokens as (text, start_ms), in order.
    fn finals(&self) -> Vec<(String, u64)> {
        finals(&self.frames)
    }

    fn last(&self) -> &Value {
        self.frames.last().expect("at least one frame")
    }
}

fn finals(frames: &[Value]) -> Vec<(String, u64)> {
    frames
        .iter()
        .flat_map(|f| f["tokens"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["is_final"] == true && !t["text"].as_str().unwrap().starts_with('<'))
        .map(|t| {
            (
                t["text"].as_str().unwrap().to_owned(),
                t["start_ms"].as_u64().expect("start_ms"),
            )
        })
        .collect()
}

/// Reads one frame (bounded); `None` once the connection is over.
async fn next_frame(ws: &mut Ws, received: &mut Received) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame within the bound");
        match message {
            Some(Ok(Message::Text(text))) => {
                let value: Value = serde_json::from_str(&text).expect("frames are JSON");
                received.frames.push(value.clone());
                return Some(value);
            }
            Some(Ok(Message::Close(frame))) => {
                received.close = frame;
                return None;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// Reads until the daemon closes.
async fn read_to_close(ws: &mut Ws, received: &mut Received) {
    while next_frame(ws, received).await.is_some() {}
}

/// Sends `messages` on `ws`, then reads until the daemon closes.
async fn answer(mut ws: Ws, messages: &[Message]) -> Received {
    for message in messages {
        ws.send(message.clone()).await.unwrap();
    }
    let mut received = Received::default();
    read_to_close(&mut ws, &mut received).await;
    received
}

/// Checks the Soniox response invariants: progress non-decreasing with
/// final ≤ total, one `finished` frame last, then close 1000.
fn assert_well_formed(received: &Received) {
    let (mut final_ms, mut total_ms) = (0, 0);
    for frame in &received.frames {
        assert!(
            frame.get("error_code").is_none(),
            "unexpected error: {frame}"
        );
        let f = frame["final_audio_proc_ms"]
            .as_u64()
            .expect("final_audio_proc_ms");
        let t = frame["total_audio_proc_ms"]
            .as_u64()
            .expect("total_audio_proc_ms");
        assert!(f <= t, "final ≤ total: {frame}");
        assert!(
            f >= final_ms && t >= total_ms,
            "progress never goes back: {frame}"
        );
        (final_ms, total_ms) = (f, t);
        for token in frame["tokens"].as_array().unwrap() {
            assert!(
                token.get("upstream").is_none(),
                "sttpipe's own field leaked: {token}"
            );
        }
    }
    let last = received.last();
    assert_eq!(
        last["finished"], true,
        "the last frame is `finished`: {last}"
    );
    assert_eq!(last["tokens"], json!([]));
    assert_eq!(last["final_audio_proc_ms"], last["total_audio_proc_ms"]);
    let finished = received
        .frames
        .iter()
        .filter(|f| f["finished"] == true)
        .count();
    assert_eq!(finished, 1);
    let close = received.close.as_ref().expect("a close frame");
    assert_eq!(close.code, CloseCode::Normal);
}

fn assert_error(received: &Received, code: u16, error_type: &str, message: &str) {
    let frame = received
        .frames
        .first()
        .unwrap_or_else(|| panic!("an error frame, got {received:?}"));
    assert_eq!(frame["error_code"], code, "{frame}");
    assert_eq!(frame["error_type"], error_type, "{frame}");
    assert_eq!(frame["error_message"], message, "{frame}");
    assert!(frame["request_id"].is_string(), "{frame}");
    assert_eq!(
        received.frames.len(),
        1,
        "nothing after the error: {:?}",
        received.frames
    );
}

/// Runs one whole session and returns what came back.
async fn session(url: &str, auth: Auth<'_>, start: &Value, audio: &[u8]) -> Received {
    let mut ws = connect(url, auth).await.expect("the upgrade succeeds");
    send_all(&mut ws, start, audio).await;
    let mut received = Received::default();
    read_to_close(&mut ws, &mut received).await;
    received
}

async fn wait_for_sessions(daemon: &Daemon, n: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = daemon.status().await;
        if status["sessions"].as_array().map(Vec::len) == Some(n) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {n} sessions: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_whole_session_through_the_daemon() {
    let (emu, daemon) = served().await;
    let (words, audio) = speech(10_000);
    let mut ws = connect(
        &daemon.url("/transcribe-websocket"),
        Auth::Subprotocol("client-own-key"),
    )
    .await
    .unwrap();
    send_all(&mut ws, &start_request(), &audio).await;
    let mut received = Received::default();
    // While it runs, `status` lists it as a remote WebSocket client.
    next_frame(&mut ws, &mut received)
        .await
        .expect("a first response");
    let status = daemon.status().await;
    let listed = &status["sessions"][0];
    assert_eq!(listed["front"], "ws", "{status}");
    assert_eq!(listed["peer"]["uid"], u32::MAX, "{status}");
    read_to_close(&mut ws, &mut received).await;

    assert_well_formed(&received);
    assert_eq!(
        received.finals(),
        util::expected(&words),
        "every word once, exact times"
    );
    let non_final = received
        .frames
        .iter()
        .flat_map(|f| f["tokens"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["is_final"] == false)
        .count();
    assert!(non_final > 0, "Soniox clients get non-final tokens");
    assert_eq!(
        received.last()["total_audio_proc_ms"],
        10_000,
        "all the audio, processed"
    );

    // Upstream, the daemon's own key in the header; the client's nowhere.
    let record = emu.session(0).expect("one upstream session");
    assert_eq!((record.auth, record.key_ok), (AuthMethod::Header, true));
    assert!(record.start_request.unwrap().get("api_key").is_none());
    assert_eq!(record.audio_bytes, audio.len() as u64);
    assert!(
        !daemon.logs().contains("client-own-key"),
        "the client's key is never logged"
    );
    wait_for_sessions(&daemon, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn the_clients_key_goes_nowhere_however_it_is_sent() {
    let (emu, daemon) = served().await;
    let (words, audio) = speech(2000);
    let mut start = start_request();
    start["api_key"] = json!("key-in-the-start-request");
    let by_field = session(&daemon.url("/"), Auth::None, &start, &audio).await;
    let by_header = session(
        &daemon.url("/"),
        Auth::Bearer("key-in-a-header"),
        &start_request(),
        &audio,
    )
    .await;
    for received in [&by_field, &by_header] {
        assert_well_formed(received);
        assert_eq!(received.finals(), util::expected(&words));
    }
    let records = emu.sessions();
    assert_eq!(records.len(), 2);
    for record in records {
        assert_eq!(
            (record.auth, record.key_ok),
            (AuthMethod::Header, true),
            "{record:?}"
        );
        assert!(record.start_request.unwrap().get("api_key").is_none());
    }
    let logs = daemon.logs();
    assert!(!logs.contains("key-in-the-start-request") && !logs.contains("key-in-a-header"));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_local_token_guards_the_endpoint() {
    let emu = emulator().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = util::write_file(dir.path(), "token", b"local-token\n");
    let daemon = daemon(&emu, &["--ws-token-file", token_file.to_str().unwrap()]).await;
    let (words, audio) = speech(2000);

    let wrong = session(
        &daemon.url("/"),
        Auth::Subprotocol("wrong-token"),
        &start_request(),
        &audio,
    )
    .await;
    assert_error(&wrong, 401, "unauthenticated", "Invalid API key.");
    assert!(wrong.close.is_some(), "then the daemon closes");
    let mut start = start_request();
    start["api_key"] = json!("wrong-token");
    let wrong_field = session(&daemon.url("/"), Auth::None, &start, &audio).await;
    assert_error(&wrong_field, 401, "unauthenticated", "Invalid API key.");
    let missing = session(&daemon.url("/"), Auth::None, &start_request(), &audio).await;
    assert_error(&missing, 401, "unauthenticated", "Missing API key.");
    assert_eq!(
        emu.counts().connected,
        0,
        "refused clients never reach upstream"
    );

    let right = session(
        &daemon.url("/"),
        Auth::Subprotocol("local-token"),
        &start_request(),
        &audio,
    )
    .await;
    assert_well_formed(&right);
    assert_eq!(right.finals(), util::expected(&words));
    start["api_key"] = json!("local-token");
    let right_field = session(
        &daemon.url("/transcribe-websocket"),
        Auth::None,
        &start,
        &audio,
    )
    .await;
    assert_well_formed(&right_field);
    // The token is the daemon's local secret: not sent upstream either.
    for record in emu.sessions() {
        assert_eq!((record.auth, record.key_ok), (AuthMethod::Header, true));
    }
}

/// A plain HTTP/1.1 request; returns the status line, the head and the body.
async fn http_get(port: u16, path: &str) -> (String, String, String) {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("a response within the bound")
        .unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    let status = head.lines().next().unwrap().to_owned();
    (status, head.to_owned(), body.to_owned())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_and_the_paths() {
    let (_emu, daemon) = served().await;
    let (status, head, body) = http_get(daemon.port, "/").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(body.contains("data-sttpipe-page"), "the page itself");
    assert!(body.contains("soniox-api-key") && body.contains("id=\"nonfinal\""));
    assert!(
        !body.contains("http://") && !body.contains("https://"),
        "no external assets"
    );
    let (status, _, _) = http_get(daemon.port, "/?token=abc").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    let (status, _, _) = http_get(daemon.port, "/nope").await;
    assert_eq!(status, "HTTP/1.1 404 Not Found");

    match connect(&daemon.url("/nope"), Auth::None).await {
        Err(tungstenite::Error::Http(response)) => assert_eq!(response.status(), 404),
        other => panic!("an upgrade elsewhere is refused, got {other:?}"),
    }
    // Both Soniox paths take upgrades.
    let (words, audio) = speech(2000);
    for path in ["/", "/transcribe-websocket"] {
        let received = session(&daemon.url(path), Auth::None, &start_request(), &audio).await;
        assert_well_formed(&received);
        assert_eq!(received.finals(), util::expected(&words), "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn finalize_brings_fin() {
    let (emu, daemon) = served().await;
    let (words, audio) = speech(3000);
    let mut ws = started(&daemon.url("/")).await;
    for chunk in audio.chunks(CHUNK) {
        ws.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
    ws.send(Message::text(r#"{"type":"keepalive"}"#))
        .await
        .unwrap();
    ws.send(Message::text(r#"{"type":"finalize"}"#))
        .await
        .unwrap();
    let mut received = Received::default();
    let fin_at = loop {
        let frame = next_frame(&mut ws, &mut received)
            .await
            .expect("a <fin> before the close");
        let tokens = frame["tokens"].as_array().unwrap();
        if let Some(at) = tokens.iter().position(|t| t["text"] == "<fin>") {
            assert_eq!(tokens[at], json!({"text": "<fin>", "is_final": true}));
            assert!(
                tokens[..at].iter().all(|t| t["is_final"] == true),
                "finals come before <fin>"
            );
            break received.frames.len();
        }
    };
    // Everything sent before the finalize is final by the <fin>.
    assert_eq!(finals(&received.frames[..fin_at]), util::expected(&words));
    ws.send(Message::text("")).await.unwrap();
    read_to_close(&mut ws, &mut received).await;
    assert_well_formed(&received);
    assert_eq!(received.finals(), util::expected(&words), "nothing twice");
    assert_eq!(emu.session(0).unwrap().finalizes, 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn frames_sent_before_the_upstream_is_up_are_kept_in_order() {
    // The first upstream attempt is refused, so everything the client sends
    // at once arrives while the daemon is still getting a session.
    let emu = emulator_with(EmulatorConfig {
        reject_connects: vec![503],
        ..EmulatorConfig::default()
    })
    .await;
    let daemon = daemon(&emu, &[]).await;
    let (words, audio) = speech(8000);
    let received = session(&daemon.url("/"), Auth::None, &start_request(), &audio).await;
    assert_well_formed(&received);
    assert_eq!(
        received.finals(),
        util::expected(&words),
        "none lost, none reordered"
    );
    let records = emu.sessions();
    assert_eq!(records[0].outcome, Outcome::Error(503));
    let served = records.last().unwrap();
    assert_eq!(served.audio_bytes, audio.len() as u64, "every byte, once");
}

#[tokio::test(flavor = "multi_thread")]
async fn service_errors_are_relayed() {
    let emu = emulator().await;
    emu.set_faults(Faults {
        error_after_audio_ms: Some((1000, 400)),
        ..Faults::default()
    });
    let daemon = daemon(&emu, &[]).await;
    let (_, audio) = speech(4000);
    let received = session(&daemon.url("/"), Auth::None, &start_request(), &audio).await;
    let error = received.last();
    assert_eq!(error["error_code"], 400, "{error}");
    assert_eq!(error["error_type"], "invalid_request");
    assert_eq!(
        error["error_message"], "Audio decode error",
        "the service's own message"
    );
    assert!(received.close.is_some());
    wait_for_sessions(&daemon, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn protocol_errors_get_sonioxs_answers() {
    let (_emu, daemon) = served().await;
    let url = daemon.url("/");

    // A start request that is not text, not JSON, or names no audio format.
    for (first, message) in [
        (
            Message::binary(vec![0u8; 320]),
            "Start request must be a text message.",
        ),
        (Message::text("{not json"), "Start request is malformed."),
        (
            Message::text(json!({"model": "stt-rt-v5"}).to_string()),
            "Missing audio format. Specify a valid audio format (e.g. s16le, f32le, wav, ogg, flac...) or \"auto\" for auto format detection.",
        ),
    ] {
        let received = answer(connect(&url, Auth::None).await.unwrap(), &[first]).await;
        assert_error(&received, 400, "invalid_request", message);
    }

    let received = answer(
        started(&url).await,
        &[
            Message::binary(vec![0u8; CHUNK]),
            Message::text(r#"{"type":"pause"}"#),
        ],
    )
    .await;
    assert_eq!(
        received.last()["error_message"],
        "Control request invalid type.",
        "{received:?}"
    );

    let received = answer(started(&url).await, &[Message::text("finalize")]).await;
    assert_eq!(
        received.last()["error_message"],
        "Control request is malformed.",
        "{received:?}"
    );

    // The service's own checks come back as the service words them.
    let mut start = start_request();
    start["model"] = json!("no-such-model");
    let received = session(&url, Auth::None, &start, &[0u8; CHUNK]).await;
    let error = received.last();
    assert_eq!(
        (error["error_code"].as_u64(), error["error_type"].as_str()),
        (Some(400), Some("model_not_available")),
        "{error}"
    );
    assert_eq!(error["error_message"], "Invalid model specified.");
    wait_for_sessions(&daemon, 0).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_client_that_vanishes_releases_its_session() {
    let (emu, daemon) = served().await;
    let (_, audio) = speech(60_000);
    let mut ws = started(&daemon.url("/")).await;
    // Stream until the upstream session has audio, then drop the TCP
    // connection without a close frame.
    let mut sent = audio.chunks(CHUNK);
    let mut received = Received::default();
    for chunk in sent.by_ref().take(20) {
        ws.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
    next_frame(&mut ws, &mut received)
        .await
        .expect("a response");
    drop(ws);
    tokio::time::timeout(WAIT, emu.wait_until(|c| c.ended == 1 && c.open == 0))
        .await
        .expect("the upstream session ends");
    assert_eq!(
        emu.session(0).unwrap().outcome,
        Outcome::ClientClosed,
        "{}",
        daemon.logs()
    );
    wait_for_sessions(&daemon, 0).await;
    let status = daemon.status().await;
    assert_eq!(
        status["upstream"]["sessions"], 0,
        "the slot is free: {status}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_burst_is_held_back_not_timed_out() {
    // 40 s of audio at once: the session core reads it at real-time pace,
    // so the client is held back far longer than the 20 s (2.5 s here)
    // Soniox allows a silent client. Held back is not silent.
    let (_emu, daemon) = served().await;
    let (words, audio) = speech(40_000);
    let received = session(&daemon.url("/"), Auth::None, &start_request(), &audio).await;
    assert_well_formed(&received);
    assert_eq!(received.finals(), util::expected(&words));
}

#[tokio::test(flavor = "multi_thread")]
async fn a_silent_client_times_out() {
    let (emu, daemon) = served().await;
    // One chunk, then nothing: no audio, no keepalive.
    let received = answer(
        started(&daemon.url("/")).await,
        &[Message::binary(vec![0u8; CHUNK])],
    )
    .await;
    assert_error(&received, 408, "request_timeout", "Request timeout.");
    wait_for_sessions(&daemon, 0).await;
    tokio::time::timeout(WAIT, emu.wait_until(|c| c.open == 0))
        .await
        .expect("the upstream session ends");
}
