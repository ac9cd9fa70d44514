//! The fault knobs: a dropped connection, an error frame, a stalled
//! server, rejected connects, and faults changed while sessions run.

mod common;

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use soniox_emulator::marker;
use soniox_emulator::{EmulatorConfig, Faults, Outcome};
use soniox_wire::error::MSG_CANNOT_CONTINUE;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use common::{
    Auth, CHUNK, KEY, MSG_LIMIT_EXCEEDED, WAIT, emulator, expect_error, recv, recv_all, send_audio,
    send_audio_until_closed, started, started_with, transcribe, wait_for,
};

#[tokio::test]
async fn fault_drop_closes_without_close_frame() {
    let emu = emulator(EmulatorConfig {
        drop_after_audio_ms: Some(1000),
        ..Default::default()
    })
    .await;
    let mut ws = started(&emu).await;
    let audio = marker::encode(&marker::script(2, 400, 100), 1500, 16_000, 1);
    send_audio_until_closed(&mut ws, &audio).await;
    loop {
        match timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Message::Text(_))) => {}
            Some(Ok(Message::Close(f))) => panic!("got a close frame {f:?}"),
            Some(Ok(_)) => {}
            Some(Err(_)) | None => break,
        }
    }
    wait_for(&emu, |c| c.ended >= 1).await;
    let rec = emu.session(0).unwrap();
    assert_eq!(rec.outcome, Outcome::Dropped);
    assert!(rec.audio_ms >= 1000 && rec.audio_ms < 1200);
    wait_for(&emu, |c| c.open == 0).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn fault_error_frame_then_close() {
    let emu = emulator(EmulatorConfig {
        error_after_audio_ms: Some((480, 503)),
        ..Default::default()
    })
    .await;
    let mut ws = started(&emu).await;
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
    let mut ok = started_with(&emu, Auth::Header(KEY), json!({"model": "stt-rt-v4"})).await;
    ok.send(Message::Ping(Bytes::from_static(b"hi")))
        .await
        .unwrap();
    match timeout(WAIT, ok.next()).await.unwrap() {
        Some(Ok(Message::Pong(p))) => assert_eq!(&p[..], b"hi"),
        other => panic!("expected pong, got {other:?}"),
    }

    let mut ws = started(&emu).await;
    send_audio(&mut ws, &[0u8; CHUNK * 2]).await;
    wait_for(&emu, |c| c.ended >= 1).await;
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
    wait_for(&emu, |c| c.open == 1).await;
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
    for (code, message, error_type) in [
        (503, MSG_CANNOT_CONTINUE, "service_unavailable"),
        (429, MSG_LIMIT_EXCEEDED, "limit_exceeded"),
        (400, "Start request is malformed.", "invalid_request"),
    ] {
        let mut ws = started(&emu).await;
        let e = expect_error(&mut ws, code, message).await;
        assert_eq!(e["error_type"], error_type);
    }
    let mut d = started(&emu).await;
    transcribe(&mut d, &marker::script(1, 300, 0), 500).await;
    emu.shutdown().await;
}

#[tokio::test]
async fn faults_change_at_run_time() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = started(&emu).await;
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
    let mut b = started(&emu).await;
    let e = expect_error(
        &mut b,
        402,
        "Organization balance exhausted. Please either add funds manually or enable autopay.",
    )
    .await;
    assert_eq!(e["error_type"], "organization_balance_exhausted");
    emu.clear_faults();
    let mut c = started(&emu).await;
    transcribe(&mut c, &[], 480).await;
    emu.shutdown().await;
}
