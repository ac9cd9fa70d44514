//! What the WebSocket endpoint passes on unchanged (issue 12): every field
//! of a client's start request but the key, on every upstream connection
//! of the session, and its control messages (finalize with its options,
//! types the daemon does not know) in order with the audio. What arrives is
//! what the emulator recorded as received.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use soniox_emulator::{Emulator, EmulatorConfig, Outcome};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::util;

/// How many times faster than real time the daemon and the emulator run.
const PACE: f64 = 8.0;
/// Bound on anything a correct daemon does within a few seconds.
const WAIT: Duration = Duration::from_secs(30);
/// Bytes of 16 kHz mono pcm_s16le per 100 ms chunk.
const CHUNK: usize = 3200;
/// A client's keepalive, as the SDKs send it.
const KEEPALIVE: &str = r#"{"type":"keepalive"}"#;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The emulator with `config`, [`PACE`] times faster, and the daemon
/// against it.
async fn served(config: EmulatorConfig) -> (Emulator, util::WsDaemon) {
    let emulator = util::emulator(EmulatorConfig {
        time_scale: PACE,
        ..config
    })
    .await;
    let daemon = util::ws_daemon(&emulator, &[], PACE).await;
    (emulator, daemon)
}

/// A connection to the daemon that has sent `start`.
async fn started(daemon: &util::WsDaemon, start: &Value) -> Ws {
    let (mut ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async(daemon.url("/transcribe-websocket")),
    )
    .await
    .expect("handshake within the bound")
    .expect("the upgrade succeeds");
    ws.send(Message::text(start.to_string())).await.unwrap();
    ws
}

/// Reads frames (bounded) until one satisfies `wanted`; `None` if the
/// connection ends first.
async fn frame_where(ws: &mut Ws, mut wanted: impl FnMut(&Value) -> bool) -> Option<Value> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame within the bound");
        match message {
            Some(Ok(Message::Text(text))) => {
                let frame: Value = serde_json::from_str(&text).expect("frames are JSON");
                if wanted(&frame) {
                    return Some(frame);
                }
            }
            Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
}

fn has_fin(frame: &Value) -> bool {
    frame["tokens"]
        .as_array()
        .is_some_and(|tokens| tokens.iter().any(|t| t["text"] == "<fin>"))
}

/// A v6 start request with the endpoint options, `enable_agent_text_input`
/// and a field no version of sttpipe knows, then a finalize with
/// `trailing_silence_ms`: all of it reaches the service as the client sent
/// it, but the key, also on the connection that replaces a refused one.
#[tokio::test(flavor = "multi_thread")]
async fn start_fields_and_finalize_options_arrive_unchanged() {
    let (emulator, daemon) = served(EmulatorConfig {
        reject_connects: vec![503],
        ..EmulatorConfig::default()
    })
    .await;
    let upstream = json!({
        "model": "stt-rt-v6",
        "audio_format": "pcm_s16le",
        "sample_rate": 16000,
        "num_channels": 1,
        "enable_endpoint_detection": true,
        "endpoint_sensitivity": 0.5,
        "endpoint_latency_adjustment_level": 2,
        "enable_agent_text_input": true,
        "future_option": {"nested": [1, "two", null]},
    });
    let mut sent = upstream.clone();
    sent["api_key"] = json!("the-clients-own-key");
    let mut ws = started(&daemon, &sent).await;
    let (words, audio) = util::marker_audio(4, 500, 2_500);
    for chunk in audio.chunks(CHUNK) {
        ws.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
    let finalize = r#"{"type":"finalize","trailing_silence_ms":300}"#;
    ws.send(Message::text(KEEPALIVE)).await.unwrap();
    ws.send(Message::text(finalize)).await.unwrap();
    frame_where(&mut ws, has_fin)
        .await
        .expect("the finalize brings <fin>");
    ws.send(Message::text("")).await.unwrap();
    let finished = frame_where(&mut ws, |f| f["finished"] == true).await;
    assert!(finished.is_some(), "{}", daemon.logs());

    let records = emulator.sessions();
    assert_eq!(records.len(), 2, "one refused, one served: {records:?}");
    assert_eq!(records[0].outcome, Outcome::Error(503));
    for record in &records {
        assert_eq!(
            record.start_request.as_ref(),
            Some(&upstream),
            "the same start request"
        );
    }
    let served = &records[1];
    assert_eq!(served.audio_bytes, audio.len() as u64);
    assert_eq!(served.finalizes, 1);
    // The engine sends keepalives of its own while no audio flows; besides
    // them, the finalize as it was sent, after all the audio before it.
    let others: Vec<&str> = served
        .controls
        .iter()
        .map(String::as_str)
        .filter(|c| *c != KEEPALIVE)
        .collect();
    assert_eq!(others, [finalize]);
    assert!(served.controls.iter().any(|c| c == KEEPALIVE));
    assert_eq!(
        served.words_sent_final,
        words.iter().map(|w| w.text.clone()).collect::<Vec<_>>()
    );
}

/// A control message of a type the daemon does not know goes to the
/// service as sent, and the service's answer comes back.
#[tokio::test(flavor = "multi_thread")]
async fn unknown_control_messages_are_the_services_to_judge() {
    let (emulator, daemon) = served(EmulatorConfig::default()).await;
    let start = json!({
        "model": "stt-rt-v6",
        "audio_format": "pcm_s16le",
        "sample_rate": 16000,
        "num_channels": 1,
        "enable_agent_text_input": true,
    });
    let mut ws = started(&daemon, &start).await;
    ws.send(Message::binary(vec![0u8; CHUNK])).await.unwrap();
    let agent_text = r#"{"type":"agent_text","text":"Your order is ready."}"#;
    ws.send(Message::text(agent_text)).await.unwrap();
    let error = frame_where(&mut ws, |f| f.get("error_code").is_some())
        .await
        .expect("the service's answer");
    assert_eq!(
        (
            error["error_code"].as_u64(),
            error["error_message"].as_str()
        ),
        (Some(400), Some("Control request invalid type.")),
        "{error}"
    );
    let record = &emulator.sessions()[0];
    assert_eq!(record.controls, [agent_text]);
    assert_eq!(
        record.audio_bytes, CHUNK as u64,
        "after the audio before it"
    );
}
