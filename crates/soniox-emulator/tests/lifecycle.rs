//! A session's life and limits: the start, idle and first-audio timeouts,
//! the maximum stream length and concurrency, client closes, shutdown, and
//! many sessions at once.

mod common;

use std::time::Duration;

use futures_util::StreamExt;
use serde_json::json;
use soniox_emulator::marker;
use soniox_emulator::{EmulatorConfig, Outcome};
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use common::{
    Auth, CHUNK, KEY, MSG_LIMIT_EXCEEDED, WAIT, connect, emulator, expect_error, final_texts,
    finish, recv, recv_all, send_audio, send_audio_until_closed, send_text, start_request, started,
    started_with, texts, transcribe, wait_for,
};

#[tokio::test]
async fn idle_and_start_timeouts() {
    let emu = emulator(EmulatorConfig {
        time_scale: 100.0, // idle 200 ms, start 100 ms
        ..Default::default()
    })
    .await;
    let mut ws = connect(&emu, Auth::Header(KEY)).await;
    let e = expect_error(&mut ws, 408, "Start request timeout").await;
    assert_eq!(e["error_type"], "request_timeout");

    let mut ws = started(&emu).await;
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
    let mut ws = started(&emu).await;
    // 600 ms of client-side pacing: three idle periods, bridged by keepalives.
    for _ in 0..12 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        send_text(&mut ws, r#"{"type":"keepalive"}"#).await;
    }
    let (msgs, _) = finish(&mut ws).await;
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
    let mut ws = started(&emu).await;
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
async fn audio_too_long() {
    let emu = emulator(EmulatorConfig {
        max_stream_ms: 1000,
        ..Default::default()
    })
    .await;
    let mut ws = started(&emu).await;
    let audio = vec![0u8; 32 * 1500];
    send_audio_until_closed(&mut ws, &audio).await;
    let (msgs, close) = recv_all(&mut ws).await;
    let e = msgs.last().unwrap();
    assert_eq!(e["error_code"], 400);
    assert_eq!(e["error_message"], "Audio is too long.");
    assert_eq!(close.unwrap().code, CloseCode::Normal);
    emu.shutdown().await;
}

#[tokio::test]
async fn max_concurrent_gives_429() {
    let emu = emulator(EmulatorConfig {
        max_concurrent: Some(1),
        ..Default::default()
    })
    .await;
    let mut a = started(&emu).await;
    send_audio(&mut a, &[0u8; CHUNK * 5]).await;
    recv(&mut a).await; // a progress response: `a` is streaming
    assert_eq!(emu.streaming_sessions(), 1);
    // Connecting and keepalives are fine; the start request is refused.
    let mut b = connect(&emu, Auth::Header(KEY)).await;
    send_text(&mut b, r#"{"type":"keepalive"}"#).await;
    send_text(&mut b, start_request(json!({}))).await;
    let e = expect_error(&mut b, 429, MSG_LIMIT_EXCEEDED).await;
    assert_eq!(e["error_type"], "limit_exceeded");
    finish(&mut a).await;
    // `a` released its slot before its `finished` was sent.
    let mut c = started(&emu).await;
    transcribe(&mut c, &[], 100).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn client_close_is_recorded() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = started(&emu).await;
    ws.close(None).await.unwrap();
    wait_for(&emu, |c| c.ended >= 1).await;
    assert_eq!(emu.session(0).unwrap().outcome, Outcome::ClientClosed);
    wait_for(&emu, |c| c.open == 0).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn shutdown_closes_sessions() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = started(&emu).await;
    send_text(&mut ws, r#"{"type":"keepalive"}"#).await;
    wait_for(&emu, |c| c.connected == 1).await;
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
    let expected = texts(&words);
    let clients = (0..200).map(|_| {
        let audio = audio.clone();
        let expected = expected.clone();
        async move {
            let mut ws = started_with(url_emu, Auth::Subprotocol(KEY), json!({})).await;
            send_audio(&mut ws, &audio).await;
            let (msgs, _) = finish(&mut ws).await;
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
