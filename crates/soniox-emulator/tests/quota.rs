//! Quotas: how the 429 at the concurrency limit names its tier, the cap on
//! connections (idle ones count), and `GET /v1/concurrency-limits`.

mod common;

use serde_json::{Value, json};
use soniox_emulator::{EmulatorConfig, LimitTier, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use common::*;

#[tokio::test]
async fn the_concurrency_refusal_names_its_tier_as_configured() {
    for (tier, error_type, message) in [
        (
            LimitTier::Organization,
            "organization_concurrency_limit_exceeded",
            "Your organization has exceeded max number of concurrent requests.",
        ),
        (LimitTier::Project, "limit_exceeded", MSG_LIMIT_EXCEEDED),
        (
            LimitTier::Unnamed,
            "limit_exceeded",
            "Too many concurrent requests.",
        ),
    ] {
        let emu = emulator(EmulatorConfig {
            max_concurrent: Some(1),
            limit_tier: tier,
            ..Default::default()
        })
        .await;
        let mut a = started(&emu).await;
        send_audio(&mut a, &[0u8; CHUNK * 5]).await;
        recv(&mut a).await;
        let mut b = connect(&emu, Auth::Header(KEY)).await;
        send_text(&mut b, start_request(json!({}))).await;
        let e = expect_error(&mut b, 429, message).await;
        assert_eq!(e["error_type"], error_type, "{tier:?}");
        finish(&mut a).await;
        emu.shutdown().await;
    }
}

#[tokio::test]
async fn idle_connections_count_against_the_connection_cap() {
    let emu = emulator(EmulatorConfig {
        max_connections: Some(2),
        ..Default::default()
    })
    .await;
    // Two idle connections (no start request) fill the cap.
    let mut idle = connect(&emu, Auth::Header(KEY)).await;
    send_text(&mut idle, r#"{"type":"keepalive"}"#).await;
    let mut streaming = started(&emu).await;
    wait_for(&emu, |c| c.connected == 2).await;
    assert_eq!(emu.open_connections(), 2);
    let mut third = connect(&emu, Auth::Header(KEY)).await;
    let e = expect_error(
        &mut third,
        429,
        "Maximum number of concurrent connections reached.",
    )
    .await;
    assert_eq!(e["error_type"], "max_concurrent_connections_reached");
    assert_eq!(emu.session(2).unwrap().outcome, Outcome::Error(429));
    // Closing the idle one makes room.
    drop(idle);
    wait_for(&emu, |c| c.open == 2).await;
    let mut fourth = started(&emu).await;
    transcribe(&mut fourth, &[], 100).await;
    transcribe(&mut streaming, &[], 100).await;
    emu.shutdown().await;
}

/// One HTTP/1.1 request to the emulator's REST port; (status, JSON body).
async fn get(url: &str, path: &str, key: Option<&str>) -> (u16, Value) {
    let addr = url.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = key.map_or(String::new(), |k| format!("Authorization: Bearer {k}\r\n"));
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut text = String::new();
    timeout(WAIT, stream.read_to_string(&mut text))
        .await
        .expect("the emulator answers")
        .unwrap();
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, serde_json::from_str(body).expect("a JSON body"))
}

#[tokio::test]
async fn concurrency_limits_reports_live_counts() {
    let emu = emulator(EmulatorConfig {
        max_concurrent: Some(3),
        max_connections: Some(9),
        limit_tier: LimitTier::Organization,
        ..Default::default()
    })
    .await;
    let url = emu.rest_url();
    let (status, body) = get(&url, "/v1/concurrency-limits", None).await;
    assert_eq!(
        (status, body["error_type"].clone()),
        (401, json!("unauthenticated"))
    );
    let (status, _) = get(&url, "/v1/concurrency-limits", Some("wrong")).await;
    assert_eq!(status, 401);
    let (status, _) = get(&url, "/v1/elsewhere", Some(KEY)).await;
    assert_eq!(status, 404);
    assert_eq!(emu.rest_requests(), 0, "only answered requests count");

    let mut a = started(&emu).await;
    let _idle = connect(&emu, Auth::Header(KEY)).await;
    wait_for(&emu, |c| c.connected == 2).await;
    let (status, body) = get(&url, "/v1/concurrency-limits", Some(KEY)).await;
    assert_eq!(status, 200, "{body}");
    for scope in ["organization", "project"] {
        assert_eq!(body[scope]["current"]["transcribe_concurrent"], 1, "{body}");
        assert_eq!(
            body[scope]["current"]["transcribe_connections"], 2,
            "{body}"
        );
    }
    assert_eq!(body["organization"]["limits"]["transcribe_concurrent"], 3);
    assert_eq!(
        body["project"]["limits"]["transcribe_concurrent"],
        Value::Null
    );
    assert_eq!(body["project"]["limits"]["transcribe_connections"], 9);
    assert_eq!(emu.rest_requests(), 1);
    transcribe(&mut a, &[], 100).await;
    emu.shutdown().await;
}
