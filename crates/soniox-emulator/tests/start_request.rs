//! The start request and the control messages: every validation error,
//! keepalives before the start, explicit nulls, bad control requests.

mod common;

use futures_util::SinkExt;
use serde_json::json;
use soniox_emulator::EmulatorConfig;
use soniox_emulator::marker;
use soniox_wire::error::MSG_MISSING_FORMAT;
use tokio_tungstenite::tungstenite::Message;

use common::{
    Auth, KEY, connect, emulator, expect_error, send_text, start_request, started, transcribe,
};

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
        let mut ws = connect(&emu, Auth::Header(KEY)).await;
        ws.send(msg).await.unwrap();
        let e = expect_error(&mut ws, code, text).await;
        assert_eq!(e["error_type"], error_type);
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn keepalive_before_start_and_nulls_accepted() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header(KEY)).await;
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
async fn control_errors() {
    let emu = emulator(EmulatorConfig::default()).await;
    for (control, message) in [
        (r#"{"type":"pause"}"#, "Control request invalid type."),
        ("finalize please", "Control request is malformed."),
    ] {
        let mut ws = started(&emu).await;
        send_text(&mut ws, control).await;
        expect_error(&mut ws, 400, message).await;
    }
    emu.shutdown().await;
}
