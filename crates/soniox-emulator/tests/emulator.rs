//! End-to-end tests of the emulator, driven by a tokio-tungstenite client.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use soniox_emulator::marker::{self, Word};
use soniox_emulator::tls::test_identity;
use soniox_emulator::{AuthMethod, Emulator, EmulatorConfig, Faults, Outcome, TlsIdentity};
use soniox_wire::error::{MSG_CANNOT_CONTINUE, MSG_MISSING_FORMAT};

type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Bound on every single wait in these tests.
const WAIT: Duration = Duration::from_secs(10);
/// 120 ms of 16 kHz mono s16le, the official examples' chunk size.
const CHUNK: usize = 3840;

#[derive(Clone, Copy)]
enum Auth<'a> {
    Header(&'a str),
    Subprotocol(&'a str),
    None,
}

async fn emulator(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.unwrap()
}

async fn connect(emu: &Emulator, auth: Auth<'_>) -> Client {
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

/// A pcm_s16le 16 kHz mono start request with `extra` fields merged in.
fn start_request(extra: Value) -> String {
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

async fn send_text(ws: &mut Client, text: impl Into<String>) {
    ws.send(Message::text(text.into())).await.unwrap();
}

/// Sends `audio` in 120 ms binary frames, as fast as possible.
async fn send_audio(ws: &mut Client, audio: &[u8]) {
    for chunk in audio.chunks(CHUNK) {
        ws.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
}

/// The next text frame as JSON (pings and pongs skipped).
async fn recv(ws: &mut Client) -> Value {
    loop {
        match timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(t))) => return serde_json::from_str(&t).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// Every text frame until the server's close frame, and that frame.
async fn recv_all(ws: &mut Client) -> (Vec<Value>, Option<CloseFrame>) {
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

/// Expects exactly one error frame, then close 1000; returns the error.
async fn expect_error(ws: &mut Client, code: u16, message: &str) -> Value {
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

fn tokens(msgs: &[Value]) -> Vec<Value> {
    msgs.iter()
        .flat_map(|m| m["tokens"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn final_texts(msgs: &[Value]) -> Vec<String> {
    tokens(msgs)
        .iter()
        .filter(|t| t["is_final"] == true)
        .map(|t| t["text"].as_str().unwrap().to_owned())
        .collect()
}

/// Streams `words` (as `total_ms` of audio), ends the audio and returns all
/// responses; checks the finished message and close 1000.
async fn transcribe(ws: &mut Client, words: &[Word], total_ms: u64) -> Vec<Value> {
    let audio = marker::encode(words, total_ms, 16_000, 1);
    send_audio(ws, &audio).await;
    send_text(ws, "").await;
    let (msgs, close) = recv_all(ws).await;
    let last = msgs.last().unwrap();
    assert_eq!(last["finished"], true);
    assert_eq!(last["tokens"], json!([]));
    assert_eq!(last["final_audio_proc_ms"], total_ms);
    assert_eq!(last["total_audio_proc_ms"], total_ms);
    assert_eq!(close.unwrap().code, CloseCode::Normal);
    msgs
}

async fn wait_ended(emu: &Emulator, n: usize) {
    timeout(WAIT, emu.wait_until(|c| c.ended >= n))
        .await
        .unwrap();
}

#[tokio::test]
async fn auth_three_ways() {
    let emu = emulator(EmulatorConfig::default()).await;
    let words = marker::script(2, 400, 100);
    let mut a = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut a, start_request(json!({}))).await;
    transcribe(&mut a, &words, 1500).await;
    let mut b = connect(&emu, Auth::Subprotocol("test-key")).await;
    send_text(&mut b, start_request(json!({}))).await;
    transcribe(&mut b, &words, 1500).await;
    let mut c = connect(&emu, Auth::None).await;
    send_text(&mut c, start_request(json!({"api_key": "test-key"}))).await;
    transcribe(&mut c, &words, 1500).await;
    let s = emu.sessions();
    let auths: Vec<_> = s
        .iter()
        .map(|r| (r.index, r.auth, r.key_ok, r.outcome))
        .collect();
    assert_eq!(
        auths,
        vec![
            (0, AuthMethod::Header, true, Outcome::Finished),
            (1, AuthMethod::Subprotocol, true, Outcome::Finished),
            (2, AuthMethod::StartMessage, true, Outcome::Finished),
        ]
    );
    assert_eq!(
        s[2].start_request.as_ref().unwrap()["api_key"],
        "<redacted>"
    );
    assert!(s.iter().all(|r| r.ended_audio));
    emu.shutdown().await;
}

#[tokio::test]
async fn auth_failures_are_401_frames() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::None).await;
    send_text(&mut ws, start_request(json!({}))).await;
    let e = expect_error(&mut ws, 401, "Missing API key.").await;
    assert_eq!(e["error_type"], "unauthenticated");

    let mut ws = connect(&emu, Auth::Header("wrong")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    expect_error(&mut ws, 401, "Invalid API key.").await;

    let mut ws = connect(&emu, Auth::Subprotocol("wrong")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    expect_error(&mut ws, 401, "Invalid API key.").await;

    let mut ws = connect(&emu, Auth::None).await;
    send_text(&mut ws, start_request(json!({"api_key": "nope"}))).await;
    expect_error(&mut ws, 401, "Invalid API key.").await;

    // The header key wins over a (wrong) start-message key.
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({"api_key": "nope"}))).await;
    send_text(&mut ws, "").await;
    let (msgs, _) = recv_all(&mut ws).await;
    assert_eq!(msgs.last().unwrap()["finished"], true);

    let outcomes: Vec<_> = emu
        .sessions()
        .iter()
        .map(|r| (r.key_ok, r.outcome))
        .collect();
    assert_eq!(outcomes[..4], [(false, Outcome::Error(401)); 4]);
    emu.shutdown().await;
}

#[tokio::test]
async fn strict_2027_mode_refuses_start_message_keys() {
    let emu = emulator(EmulatorConfig {
        require_header_auth: true,
        ..Default::default()
    })
    .await;
    let mut ws = connect(&emu, Auth::None).await;
    send_text(&mut ws, start_request(json!({"api_key": "test-key"}))).await;
    expect_error(&mut ws, 401, "Missing API key.").await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    send_text(&mut ws, "").await;
    let (msgs, _) = recv_all(&mut ws).await;
    assert_eq!(msgs.last().unwrap()["finished"], true);
    emu.shutdown().await;
}

#[tokio::test]
async fn start_request_errors() {
    let emu = emulator(EmulatorConfig::default()).await;
    let cases: Vec<(Message, u16, &str, &str)> = vec![
        (
            Message::binary(vec![1u8, 2, 3]),
            400,
            "invalid_request",
            "Start request must be a text message.",
        ),
        (
            Message::text("{not json"),
            400,
            "invalid_request",
            "Start request is malformed.",
        ),
        (
            Message::text("[1,2]"),
            400,
            "invalid_request",
            "Start request is malformed.",
        ),
        (
            Message::text(start_request(json!({"model": "stt-async-v3"}))),
            400,
            "model_not_available",
            "Invalid model specified.",
        ),
        (
            Message::text(start_request(json!({"audio_format": null}))),
            400,
            "invalid_request",
            MSG_MISSING_FORMAT,
        ),
        (
            Message::text(start_request(json!({"audio_format": "avi"}))),
            400,
            "invalid_request",
            "Invalid audio data format: avi",
        ),
        (
            Message::text(
                json!({"model":"stt-rt-v4","audio_format":"pcm_s16le","num_channels":1})
                    .to_string(),
            ),
            400,
            "invalid_request",
            "Audio data sample rate must be specified for PCM formats",
        ),
        (
            Message::text(
                json!({"model":"stt-rt-v4","audio_format":"mulaw","sample_rate":8000}).to_string(),
            ),
            400,
            "invalid_request",
            "Audio data channels must be specified for PCM formats",
        ),
        (
            Message::text(start_request(json!({"language_hints": ["en", "en"]}))),
            400,
            "invalid_request",
            "Language hints must be unique.",
        ),
        (
            Message::text(start_request(json!({"language_hints": ["zz"]}))),
            400,
            "invalid_request",
            "Invalid language hint.",
        ),
        (
            Message::text(start_request(json!({"context": "c".repeat(10_001)}))),
            400,
            "invalid_request",
            "Context is too long (max length 10000).",
        ),
        (
            Message::text(start_request(
                json!({"client_reference_id": "r".repeat(300)}),
            )),
            400,
            "invalid_request",
            "Client reference ID is too long (max length 256)",
        ),
        (
            Message::text(start_request(
                json!({"translation": {"type": "one_way", "target_language": "klingon"}}),
            )),
            400,
            "invalid_request",
            "Invalid translation target language.",
        ),
    ];
    for (msg, code, error_type, text) in cases {
        let mut ws = connect(&emu, Auth::Header("test-key")).await;
        ws.send(msg).await.unwrap();
        let e = expect_error(&mut ws, code, text).await;
        assert_eq!(e["error_type"], error_type);
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn keepalive_before_start_and_nulls_accepted() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, r#"{"type":"keepalive"}"#).await;
    send_text(&mut ws, r#"{"type":"keepalive"}"#).await;
    let start = start_request(json!({
        "context": null, "client_reference_id": null, "language_hints": null,
        "translation": null, "enable_endpoint_detection": null,
    }));
    send_text(&mut ws, start).await;
    send_text(&mut ws, r#"{"type":"keepalive"}"#).await;
    transcribe(&mut ws, &marker::script(1, 300, 100), 600).await;
    assert_eq!(emu.session(0).unwrap().keepalives, 3);
    emu.shutdown().await;
}

#[tokio::test]
async fn tokens_evolve_from_non_final_to_final_once() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    let words = marker::script(8, 600, 250);
    let total = 6000;
    let msgs = transcribe(&mut ws, &words, total).await;

    // Finals: every word exactly once, in order, with exact timestamps.
    let finals: Vec<(String, u64, u64)> = tokens(&msgs)
        .iter()
        .filter(|t| t["is_final"] == true)
        .map(|t| {
            (
                t["text"].as_str().unwrap().to_owned(),
                t["start_ms"].as_u64().unwrap(),
                t["end_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<_> = words
        .iter()
        .map(|w| (w.text.clone(), w.start_ms, w.end_ms()))
        .collect();
    assert_eq!(finals, expected);

    // Each word was seen non-final before it was final.
    for w in &words {
        let first_nf = msgs.iter().position(|m| {
            m["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["is_final"] == false && t["start_ms"] == w.start_ms)
        });
        let first_f = msgs.iter().position(|m| {
            m["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["is_final"] == true && t["start_ms"] == w.start_ms)
        });
        assert!(first_nf.unwrap() < first_f.unwrap(), "{}", w.text);
    }

    // Within a message, finals come before non-finals; counters behave.
    let mut prev = (0, 0);
    for m in &msgs {
        let flags: Vec<bool> = m["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["is_final"] == true)
            .collect();
        assert!(flags.windows(2).all(|p| p[0] || !p[1]), "{m}");
        let f = m["final_audio_proc_ms"].as_u64().unwrap();
        let t = m["total_audio_proc_ms"].as_u64().unwrap();
        assert!(f <= t && f >= prev.0 && t >= prev.1 && t <= total, "{m}");
        for tok in m["tokens"].as_array().unwrap() {
            assert!(tok["end_ms"].as_u64().unwrap() <= t);
            let c = tok["confidence"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&c));
            assert!(tok.get("speaker").is_none() && tok.get("language").is_none());
        }
        prev = (f, t);
    }

    let rec = emu.session(0).unwrap();
    let texts: Vec<_> = words.iter().map(|w| w.text.clone()).collect();
    assert_eq!(rec.words_sent_final, texts);
    assert_eq!(rec.audio_ms, total);
    assert_eq!(rec.audio_bytes, total * 32);
    assert_eq!(rec.receipts.len(), (total as usize * 32).div_ceil(CHUNK));
    assert_eq!(rec.receipts.last().unwrap().1, total);
    assert_eq!(rec.outcome, Outcome::Finished);
    emu.shutdown().await;
}

#[tokio::test]
async fn finalize_emits_fin_after_finals() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    let words = marker::script(2, 400, 100);
    // 200 ms of silence after the last word: less than the finalize lag.
    let audio = marker::encode(&words, 1000, 16_000, 1);
    send_audio(&mut ws, &audio).await;
    send_text(&mut ws, r#"{"type":"finalize","trailing_silence_ms":200}"#).await;
    let fin = loop {
        let m = recv(&mut ws).await;
        if tokens(std::slice::from_ref(&m))
            .iter()
            .any(|t| t["text"] == "<fin>")
        {
            break m;
        }
        assert!(final_texts(std::slice::from_ref(&m)).is_empty(), "{m}");
    };
    let toks = fin["tokens"].as_array().unwrap();
    let texts: Vec<_> = toks.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(texts, [" the", " quick", "<fin>"]);
    assert!(toks.iter().all(|t| t["is_final"] == true));
    assert_eq!(toks[2], json!({"text": "<fin>", "is_final": true}));
    assert_eq!(fin["final_audio_proc_ms"], 1000);
    assert_eq!(fin["total_audio_proc_ms"], 1000);
    // A finalize with nothing pending still acknowledges with <fin>.
    send_text(&mut ws, r#"{"type":"finalize"}"#).await;
    let again = recv(&mut ws).await;
    assert_eq!(
        again["tokens"],
        json!([{"text": "<fin>", "is_final": true}])
    );
    send_text(&mut ws, "").await;
    let (rest, _) = recv_all(&mut ws).await;
    assert!(final_texts(&rest).is_empty());
    let rec = emu.session(0).unwrap();
    assert_eq!((rec.finalizes, rec.fins_sent), (2, 2));
    assert_eq!(rec.words_sent_final, [" the", " quick"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn endpoint_detection_emits_end_once_per_utterance() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(
        &mut ws,
        start_request(json!({"enable_endpoint_detection": true, "max_endpoint_delay_ms": 1000})),
    )
    .await;
    // Two utterances separated by 3 s of silence.
    let mut words = marker::sentence("hello world", 200, 300, 100);
    words.extend(marker::sentence("good bye", 4000, 300, 100));
    let msgs = transcribe(&mut ws, &words, 7000).await;
    let finals = final_texts(&msgs);
    assert_eq!(
        finals,
        [" hello", " world", "<end>", " good", " bye", "<end>"]
    );
    // The first <end> came once the audio passed 900 + 1000 ms.
    let at = msgs
        .iter()
        .find(|m| {
            tokens(std::slice::from_ref(m))
                .iter()
                .any(|t| t["text"] == "<end>")
        })
        .unwrap();
    let total = at["total_audio_proc_ms"].as_u64().unwrap();
    assert!((1900..1900 + 120).contains(&total), "{at}");
    assert_eq!(emu.session(0).unwrap().ends_sent, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn default_endpoint_delay_applies() {
    let emu = emulator(EmulatorConfig {
        default_endpoint_delay_ms: 600,
        finalize_lag_ms: 2000,
        ..Default::default()
    })
    .await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(
        &mut ws,
        start_request(json!({"enable_endpoint_detection": true})),
    )
    .await;
    let words = marker::sentence("hi", 100, 300, 0);
    let audio = marker::encode(&words, 1200, 16_000, 1);
    send_audio(&mut ws, &audio).await;
    // The endpoint (at 1000 ms) finalizes the word before the 2 s lag would.
    let m = loop {
        let m = recv(&mut ws).await;
        if !final_texts(std::slice::from_ref(&m)).is_empty() {
            break m;
        }
    };
    assert_eq!(final_texts(std::slice::from_ref(&m)), [" hi", "<end>"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn empty_binary_frame_ends_audio() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    let words = marker::script(2, 400, 100);
    send_audio(&mut ws, &marker::encode(&words, 700, 16_000, 1)).await;
    ws.send(Message::Binary(Bytes::new())).await.unwrap();
    let (msgs, close) = recv_all(&mut ws).await;
    assert_eq!(final_texts(&msgs), [" the", " quick"]);
    let last = msgs.last().unwrap();
    assert_eq!(last["finished"], true);
    // The second word ends at 800 ms but only 700 ms of audio arrived.
    let end = tokens(&msgs)
        .into_iter()
        .rfind(|t| t["is_final"] == true)
        .unwrap();
    assert_eq!(end["end_ms"], 700);
    assert_eq!(close.unwrap().code, CloseCode::Normal);
    emu.shutdown().await;
}

#[tokio::test]
async fn control_errors() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    send_text(&mut ws, r#"{"type":"pause"}"#).await;
    expect_error(&mut ws, 400, "Control request invalid type.").await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    send_text(&mut ws, "finalize please").await;
    expect_error(&mut ws, 400, "Control request is malformed.").await;
    emu.shutdown().await;
}

#[tokio::test]
async fn optional_token_fields() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(
        &mut ws,
        start_request(json!({
            "enable_speaker_diarization": true,
            "enable_language_identification": true,
            "translation": {"type": "two_way", "language_a": "en", "language_b": "es"},
        })),
    )
    .await;
    let words = marker::sentence("hola amigo", 100, 300, 100);
    let msgs = transcribe(&mut ws, &words, 2000).await;
    let finals: Vec<Value> = tokens(&msgs)
        .into_iter()
        .filter(|t| t["is_final"] == true)
        .collect();
    assert_eq!(finals.len(), 4);
    assert_eq!(
        finals[0],
        json!({"text": " hola", "start_ms": 100, "end_ms": 400, "confidence": finals[0]["confidence"],
               "is_final": true, "speaker": "1", "language": "en", "translation_status": "original"})
    );
    assert_eq!(
        finals[1],
        json!({"text": " HOLA", "is_final": true, "speaker": "1", "language": "es",
               "translation_status": "translation", "source_language": "en"})
    );
    assert_eq!(finals[3]["text"], " AMIGO");
    // Only originals are recorded.
    assert_eq!(
        emu.session(0).unwrap().words_sent_final,
        [" hola", " amigo"]
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn stereo_and_other_rates_decode() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(
        &mut ws,
        json!({"model":"stt-rt-v3","audio_format":"s16le","sample_rate":8000,"num_channels":2})
            .to_string(),
    )
    .await;
    let words = marker::script(3, 500, 333);
    let audio = marker::encode(&words, 2500, 8_000, 2);
    // Odd chunk sizes: frames and markers split across messages.
    for chunk in audio.chunks(1001) {
        ws.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
    send_text(&mut ws, "").await;
    let (msgs, _) = recv_all(&mut ws).await;
    let starts: Vec<u64> = tokens(&msgs)
        .iter()
        .filter(|t| t["is_final"] == true)
        .map(|t| t["start_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, [333, 833, 1333]);
    assert_eq!(msgs.last().unwrap()["total_audio_proc_ms"], 2500);
    emu.shutdown().await;
}

#[tokio::test]
async fn container_formats_count_progress_by_bytes() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(
        &mut ws,
        json!({"model":"stt-rt-v5","audio_format":"auto"}).to_string(),
    )
    .await;
    for _ in 0..10 {
        ws.send(Message::binary(vec![7u8; 1600])).await.unwrap();
    }
    send_text(&mut ws, "").await;
    let (msgs, _) = recv_all(&mut ws).await;
    assert!(tokens(&msgs).is_empty());
    assert_eq!(msgs.last().unwrap()["total_audio_proc_ms"], 1000);
    assert_eq!(emu.session(0).unwrap().audio_ms, 1000);
    emu.shutdown().await;
}

#[tokio::test]
async fn idle_and_start_timeouts() {
    let emu = emulator(EmulatorConfig {
        time_scale: 100.0, // idle 200 ms, start 100 ms
        ..Default::default()
    })
    .await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    let e = expect_error(&mut ws, 408, "Start request timeout").await;
    assert_eq!(e["error_type"], "request_timeout");

    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    send_audio(&mut ws, &[0u8; CHUNK]).await;
    expect_error(&mut ws, 408, "Request timeout.").await;
    emu.shutdown().await;
}

#[tokio::test]
async fn keepalives_prevent_idle_timeout() {
    let emu = emulator(EmulatorConfig {
        time_scale: 100.0, // idle 200 ms
        ..Default::default()
    })
    .await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    // 600 ms of client-side pacing: three idle periods, bridged by keepalives.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send_text(&mut ws, r#"{"type":"keepalive"}"#).await;
    }
    send_text(&mut ws, "").await;
    let (msgs, _) = recv_all(&mut ws).await;
    assert_eq!(msgs.last().unwrap()["finished"], true);
    assert_eq!(emu.session(0).unwrap().keepalives, 12);
    emu.shutdown().await;
}

#[tokio::test]
async fn first_audio_timeout() {
    let emu = emulator(EmulatorConfig {
        first_audio_timeout: Some(Duration::from_millis(100)),
        ..Default::default()
    })
    .await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    send_text(&mut ws, r#"{"type":"keepalive"}"#).await;
    expect_error(
        &mut ws,
        408,
        "Timed out while waiting for the first audio chunk",
    )
    .await;
    emu.shutdown().await;
}

#[tokio::test]
async fn fault_drop_closes_without_close_frame() {
    let emu = emulator(EmulatorConfig {
        drop_after_audio_ms: Some(1000),
        ..Default::default()
    })
    .await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    let audio = marker::encode(&marker::script(2, 400, 100), 1500, 16_000, 1);
    for chunk in audio.chunks(CHUNK) {
        // Later sends may fail once the server is gone.
        if ws.send(Message::binary(chunk.to_vec())).await.is_err() {
            break;
        }
    }
    loop {
        match timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(_))) => {}
            Some(Ok(Message::Close(f))) => panic!("got a close frame {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    wait_ended(&emu, 1).await;
    let rec = emu.session(0).unwrap();
    assert_eq!(rec.outcome, Outcome::Dropped);
    assert!(rec.audio_ms >= 1000 && rec.audio_ms < 1200);
    timeout(WAIT, emu.wait_until(|c| c.open == 0))
        .await
        .unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn fault_error_frame_then_close() {
    let emu = emulator(EmulatorConfig {
        error_after_audio_ms: Some((480, 503)),
        ..Default::default()
    })
    .await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    send_audio(&mut ws, &[0u8; CHUNK * 4]).await;
    let e = expect_error(&mut ws, 503, MSG_CANNOT_CONTINUE).await;
    assert_eq!(e["error_type"], "service_unavailable");
    assert_eq!(emu.session(0).unwrap().outcome, Outcome::Error(503));
    emu.shutdown().await;
}

#[tokio::test]
async fn fault_stall_ignores_pings_until_client_leaves() {
    let emu = emulator(EmulatorConfig {
        stall_after_audio_ms: Some(240),
        ..Default::default()
    })
    .await;
    // Control: a healthy session answers pings.
    let mut ok = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ok, start_request(json!({"model": "stt-rt-v4"}))).await;
    ok.send(Message::Ping(Bytes::from_static(b"hi")))
        .await
        .unwrap();
    match timeout(WAIT, ok.next()).await.unwrap() {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"hi"),
        other => panic!("expected pong, got {other:?}"),
    }

    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    send_audio(&mut ws, &[0u8; CHUNK * 2]).await;
    wait_ended(&emu, 1).await;
    assert_eq!(emu.session(1).unwrap().outcome, Outcome::Stalled);
    ws.send(Message::Ping(Bytes::from_static(b"x")))
        .await
        .unwrap();
    send_audio(&mut ws, &[0u8; CHUNK * 10]).await;
    // A negative check needs a bounded wait: nothing may arrive.
    assert!(
        timeout(Duration::from_millis(300), ws.next())
            .await
            .is_err(),
        "a stalled session must stay silent"
    );
    assert_eq!(emu.session(1).unwrap().audio_ms, 240);
    assert_eq!(emu.active_sessions(), 2);
    drop(ws);
    timeout(WAIT, emu.wait_until(|c| c.open == 1))
        .await
        .unwrap();
    drop(ok);
    emu.shutdown().await;
}

#[tokio::test]
async fn reject_connects_in_order() {
    let emu = emulator(EmulatorConfig {
        reject_connects: vec![503, 429, 400],
        ..Default::default()
    })
    .await;
    let mut a = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut a, start_request(json!({}))).await;
    expect_error(&mut a, 503, MSG_CANNOT_CONTINUE).await;
    let mut b = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut b, start_request(json!({}))).await;
    let e = expect_error(
        &mut b,
        429,
        "Your project has exceeded max number of concurrent requests.",
    )
    .await;
    assert_eq!(e["error_type"], "limit_exceeded");
    let mut c = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut c, start_request(json!({}))).await;
    expect_error(&mut c, 400, "Start request is malformed.").await;
    let mut d = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut d, start_request(json!({}))).await;
    transcribe(&mut d, &marker::script(1, 300, 0), 500).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn max_concurrent_gives_429() {
    let emu = emulator(EmulatorConfig {
        max_concurrent: Some(1),
        ..Default::default()
    })
    .await;
    let mut a = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut a, start_request(json!({}))).await;
    send_audio(&mut a, &[0u8; CHUNK * 5]).await;
    recv(&mut a).await; // a progress response: `a` is streaming
    assert_eq!(emu.streaming_sessions(), 1);
    // Connecting and keepalives are fine; the start request is refused.
    let mut b = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut b, r#"{"type":"keepalive"}"#).await;
    send_text(&mut b, start_request(json!({}))).await;
    let e = expect_error(
        &mut b,
        429,
        "Your project has exceeded max number of concurrent requests.",
    )
    .await;
    assert_eq!(e["error_type"], "limit_exceeded");
    send_text(&mut a, "").await;
    recv_all(&mut a).await;
    // `a` released its slot before its `finished` was sent.
    let mut c = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut c, start_request(json!({}))).await;
    transcribe(&mut c, &[], 100).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn faults_change_at_run_time() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    send_audio(&mut ws, &[0u8; CHUNK * 5]).await;
    recv(&mut ws).await;
    emu.set_faults(Faults {
        error_after_audio_ms: Some((0, 500)),
        reject_connects: vec![402],
        ..Default::default()
    });
    assert_eq!(emu.faults().reject_connects, [402]);
    send_audio(&mut ws, &[0u8; CHUNK]).await;
    let (msgs, _) = recv_all(&mut ws).await;
    let e = msgs.last().unwrap();
    assert_eq!(e["error_code"], 500);
    assert_eq!(e["error_type"], "internal_error");
    let mut b = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut b, start_request(json!({}))).await;
    let e = expect_error(
        &mut b,
        402,
        "Organization balance exhausted. Please either add funds manually or enable autopay.",
    )
    .await;
    assert_eq!(e["error_type"], "organization_balance_exhausted");
    emu.clear_faults();
    let mut c = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut c, start_request(json!({}))).await;
    transcribe(&mut c, &[], 480).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn audio_too_long() {
    let emu = emulator(EmulatorConfig {
        max_stream_ms: 1000,
        ..Default::default()
    })
    .await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    let audio = vec![0u8; 32 * 1500];
    for chunk in audio.chunks(CHUNK) {
        if ws.send(Message::binary(chunk.to_vec())).await.is_err() {
            break;
        }
    }
    let (msgs, close) = recv_all(&mut ws).await;
    let e = msgs.last().unwrap();
    assert_eq!(e["error_code"], 400);
    assert_eq!(e["error_message"], "Audio is too long.");
    assert_eq!(close.unwrap().code, CloseCode::Normal);
    emu.shutdown().await;
}

#[tokio::test]
async fn client_close_is_recorded() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    ws.close(None).await.unwrap();
    wait_ended(&emu, 1).await;
    assert_eq!(emu.session(0).unwrap().outcome, Outcome::ClientClosed);
    timeout(WAIT, emu.wait_until(|c| c.open == 0))
        .await
        .unwrap();
    emu.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_sessions() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({}))).await;
    send_text(&mut ws, r#"{"type":"keepalive"}"#).await;
    timeout(WAIT, emu.wait_until(|c| c.connected == 1))
        .await
        .unwrap();
    // Make sure the start request was processed before shutting down.
    send_text(&mut ws, r#"{"type":"finalize"}"#).await;
    recv(&mut ws).await;
    timeout(WAIT, emu.shutdown()).await.unwrap();
    match timeout(WAIT, ws.next()).await.unwrap() {
        Some(Ok(Message::Close(Some(f)))) => assert_eq!(f.code, CloseCode::Away),
        other => panic!("expected close 1001, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_sessions() {
    let emu = emulator(EmulatorConfig::default()).await;
    let url_emu = &emu;
    let words = marker::script(4, 500, 100);
    let audio = marker::encode(&words, 3000, 16_000, 1);
    let expected: Vec<String> = words.iter().map(|w| w.text.clone()).collect();
    let clients = (0..200).map(|_| {
        let audio = audio.clone();
        let expected = expected.clone();
        async move {
            let mut ws = connect(url_emu, Auth::Subprotocol("test-key")).await;
            send_text(&mut ws, start_request(json!({}))).await;
            let msgs = {
                send_audio(&mut ws, &audio).await;
                send_text(&mut ws, "").await;
                recv_all(&mut ws).await.0
            };
            assert_eq!(final_texts(&msgs), expected);
        }
    });
    timeout(
        Duration::from_secs(60),
        futures_util::future::join_all(clients),
    )
    .await
    .unwrap();
    assert_eq!(emu.sessions().len(), 200);
    assert!(
        emu.sessions()
            .iter()
            .all(|r| r.outcome == Outcome::Finished)
    );
    emu.shutdown().await;
}

// ---- wss:// ----

/// An emulator serving wss:// with a fresh identity; returns it and the PEM
/// of the CA that signed its certificate.
async fn tls_emulator(config: EmulatorConfig) -> (Emulator, String) {
    let (ca_pem, identity) = test_identity();
    let emu = emulator(EmulatorConfig {
        tls: Some(identity),
        ..config
    })
    .await;
    (emu, ca_pem)
}

/// A rustls client (ring provider) that trusts only the CA in `ca_pem`.
fn trusting(ca_pem: &str) -> tokio_tungstenite::Connector {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(config))
}

/// Connects to `url` over TLS trusting `ca_pem`, with the key in a header.
async fn connect_tls(
    url: &str,
    ca_pem: &str,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert(AUTHORIZATION, "Bearer test-key".parse().unwrap());
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(trusting(ca_pem)));
    timeout(WAIT, connect).await.unwrap().map(|(ws, _)| ws)
}

#[tokio::test]
async fn tls_full_session_over_wss() {
    let (emu, ca_pem) = tls_emulator(EmulatorConfig::default()).await;
    let port = emu.local_addr().port();
    assert_eq!(
        emu.url(),
        format!("wss://localhost:{port}/transcribe-websocket")
    );
    let words = marker::script(3, 500, 200);
    let expected: Vec<String> = words.iter().map(|w| w.text.clone()).collect();
    // By the host name of the URL, then by the IP address (an IP SAN).
    let ip_url = format!("wss://127.0.0.1:{port}/transcribe-websocket");
    for url in [emu.url(), ip_url] {
        let mut ws = connect_tls(&url, &ca_pem).await.unwrap();
        assert!(matches!(ws.get_ref(), MaybeTlsStream::Rustls(_)));
        send_text(&mut ws, start_request(json!({}))).await;
        let msgs = transcribe(&mut ws, &words, 3000).await;
        assert_eq!(final_texts(&msgs), expected);
    }
    let s = emu.sessions();
    assert_eq!(s.len(), 2);
    for r in &s {
        assert_eq!(r.auth, AuthMethod::Header);
        assert_eq!(r.outcome, Outcome::Finished);
        assert_eq!(r.words_sent_final, expected);
        assert_eq!(r.audio_ms, 3000);
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn tls_untrusted_client_fails_while_others_are_served() {
    let (emu, ca_pem) = tls_emulator(EmulatorConfig::default()).await;
    let words = marker::script(4, 500, 200);
    let audio = marker::encode(&words, 4000, 16_000, 1);
    let (first_half, second_half) = audio.split_at(audio.len() / 2 / CHUNK * CHUNK);

    // A session in mid-stream while the bad handshakes happen.
    let mut live = connect_tls(&emu.url(), &ca_pem).await.unwrap();
    send_text(&mut live, start_request(json!({}))).await;
    send_audio(&mut live, first_half).await;

    // A client trusting another CA refuses the certificate.
    let (other_ca, _) = test_identity();
    let err = connect_tls(&emu.url(), &other_ca)
        .await
        .expect_err("an untrusted certificate must fail the handshake");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // A plain ws:// client gets no WebSocket from a TLS port either.
    let plain = format!(
        "ws://127.0.0.1:{}/transcribe-websocket",
        emu.local_addr().port()
    );
    assert!(
        timeout(WAIT, tokio_tungstenite::connect_async(plain))
            .await
            .unwrap()
            .is_err()
    );
    // Both failed connections end on the server side, recorded as closed
    // by the client, without a start request.
    timeout(WAIT, emu.wait_until(|c| c.connected == 3 && c.ended == 2))
        .await
        .unwrap();
    for i in [1, 2] {
        let r = emu.session(i).unwrap();
        assert_eq!(r.outcome, Outcome::ClientClosed);
        assert_eq!(r.start_request, None);
    }

    // The live session carries on, and new trusted clients are served.
    send_audio(&mut live, second_half).await;
    send_text(&mut live, "").await;
    let (msgs, close) = recv_all(&mut live).await;
    assert_eq!(msgs.last().unwrap()["finished"], true);
    assert_eq!(close.unwrap().code, CloseCode::Normal);
    let expected: Vec<String> = words.iter().map(|w| w.text.clone()).collect();
    assert_eq!(final_texts(&msgs), expected);

    let mut ws = connect_tls(&emu.url(), &ca_pem).await.unwrap();
    send_text(&mut ws, start_request(json!({}))).await;
    let msgs = transcribe(&mut ws, &words, 4000).await;
    assert_eq!(final_texts(&msgs), expected);
    let outcomes: Vec<_> = emu.sessions().iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Finished,
            Outcome::ClientClosed,
            Outcome::ClientClosed,
            Outcome::Finished
        ]
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn tls_silent_client_is_cut_at_start_timeout() {
    let (emu, _) = tls_emulator(EmulatorConfig {
        start_timeout: Duration::from_secs(10),
        time_scale: 100.0,
        ..Default::default()
    })
    .await;
    // TCP only: no ClientHello ever comes.
    let mut tcp = TcpStream::connect(emu.local_addr()).await.unwrap();
    timeout(WAIT, emu.wait_until(|c| c.connected == 1 && c.open == 0))
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the server sends nothing before the ClientHello");
    assert_eq!(emu.session(0).unwrap().outcome, Outcome::ClientClosed);
    emu.shutdown().await;
}

#[tokio::test]
async fn tls_invalid_pem_fails_start() {
    let (_, good) = test_identity();
    let (_, other) = test_identity();
    let cases = [
        (
            TlsIdentity {
                cert_chain_pem: "not a certificate".to_owned(),
                ..good.clone()
            },
            "no PEM CERTIFICATE block",
        ),
        (
            TlsIdentity {
                key_pem: String::new(),
                ..good.clone()
            },
            "no PEM PRIVATE KEY block",
        ),
        (
            TlsIdentity {
                // A key block that is not base64.
                key_pem: "-----BEGIN PRIVATE KEY-----\n@@@@\n-----END PRIVATE KEY-----\n"
                    .to_owned(),
                ..good.clone()
            },
            "TLS private key: invalid PEM",
        ),
        (
            TlsIdentity {
                key_pem: other.key_pem.clone(),
                ..good.clone()
            },
            "TLS certificate or key rejected",
        ),
    ];
    for (identity, message) in cases {
        let err = Emulator::start(EmulatorConfig {
            tls: Some(identity),
            ..Default::default()
        })
        .await
        .expect_err(message);
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains(message), "{err}");
    }
}

#[test]
fn tls_identity_debug_hides_the_key() {
    let (_, identity) = test_identity();
    let shown = format!("{identity:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}

#[tokio::test]
async fn plain_url_stays_ws() {
    let emu = emulator(EmulatorConfig::default()).await;
    assert!(emu.url().starts_with("ws://127.0.0.1:"), "{}", emu.url());
    emu.shutdown().await;
}

#[tokio::test]
async fn the_probe_sees_start_audio_and_finals_in_order() {
    use soniox_emulator::{Probe, ProbeKind};
    use std::sync::{Arc, Mutex};
    type Seen = (u64, Option<String>, ProbeKind, std::time::Instant);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let emu = emulator(EmulatorConfig {
        probe: Some(Probe::new(move |e| {
            sink.lock().unwrap().push((
                e.index,
                e.client_reference_id.map(str::to_owned),
                e.kind,
                e.at,
            ));
        })),
        ..EmulatorConfig::default()
    })
    .await;
    let mut ws = connect(&emu, Auth::Header("test-key")).await;
    send_text(&mut ws, start_request(json!({"client_reference_id": "s7"}))).await;
    let words = marker::script(3, 500, 200);
    let audio = marker::encode(&words, 2000, 16_000, 1);
    send_audio(&mut ws, &audio).await;
    send_text(&mut ws, "").await;
    recv_all(&mut ws).await;

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|(index, id, ..)| *index == 0 && id.as_deref() == Some("s7"))
    );
    assert!(seen.windows(2).all(|p| p[0].3 <= p[1].3), "in time order");
    assert_eq!(seen[0].2, ProbeKind::Started);
    let totals: Vec<u64> = seen
        .iter()
        .filter_map(|(_, _, kind, _)| match kind {
            ProbeKind::Audio { total_bytes } => Some(*total_bytes),
            _ => None,
        })
        .collect();
    let expected: Vec<u64> = (1..=audio.len().div_ceil(CHUNK))
        .map(|i| (i * CHUNK).min(audio.len()) as u64)
        .collect();
    assert_eq!(totals, expected, "one event per frame, cumulative bytes");
    let finals: Vec<u64> = seen
        .iter()
        .filter_map(|(_, _, kind, _)| match kind {
            ProbeKind::Final { start_ms } => Some(*start_ms),
            _ => None,
        })
        .collect();
    let starts: Vec<u64> = words.iter().map(|w| w.start_ms).collect();
    assert_eq!(finals, starts, "one event per final word");
    emu.shutdown().await;
}
