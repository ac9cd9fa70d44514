//! `GET /health`: 200 and the session count while the gateway serves, no
//! token needed; 503 while it drains after SIGTERM, so that a load
//! balancer sends new clients elsewhere.

use nix::sys::signal::Signal;
use soniox_emulator::{EmulatorConfig, Faults};

use super::*;

/// `GET /health` (or another method and path) on the plain endpoint.
async fn health(port: u16, method: &str) -> (String, String) {
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    http_exchange(tcp, method, "/health").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_is_ok_while_serving_and_503_while_draining() {
    // Upstream stalls after the first second, so the session's drain after
    // SIGTERM lasts: its final words never come.
    let emu = emulator(EmulatorConfig::default()).await;
    emu.set_faults(Faults {
        stall_after_audio_ms: Some(1_000),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), "edge:edge-token\n");
    let flags = [
        "--ws-token-file",
        tokens.to_str().unwrap(),
        "--drain-timeout",
        "60",
    ];
    let gw = gateway(&emu, &flags).await;
    assert_eq!(
        health(gw.port, "GET").await,
        (
            "HTTP/1.1 200 OK".to_owned(),
            "{\"status\":\"ok\",\"sessions\":0}\n".to_owned()
        ),
        "no token asked"
    );
    assert_eq!(health(gw.port, "HEAD").await.1, "", "no body for HEAD");
    assert_eq!(
        health(gw.port, "POST").await.0,
        "HTTP/1.1 405 Method Not Allowed"
    );

    let url = gw.url("/transcribe-websocket");
    let mut ws = connect(&url, "edge-token", None).await;
    ws.send(Message::text(start_request(json!({})).to_string()))
        .await
        .unwrap();
    for _ in 0..20 {
        ws.send(Message::binary(vec![0; CHUNK])).await.unwrap();
    }
    wait_status(&gw, "the session streams", |s| {
        s["upstream"]["sessions"] == 1
    })
    .await;
    assert_eq!(
        health(gw.port, "GET").await.1,
        "{\"status\":\"ok\",\"sessions\":1}\n"
    );

    signal(&gw, Signal::SIGTERM);
    wait_log(&gw, "stopping: draining", 1).await;
    let (status, body) = health(gw.port, "GET").await;
    assert_eq!(status, "HTTP/1.1 503 Service Unavailable", "{body}");
    assert_eq!(body, "{\"status\":\"draining\",\"sessions\":1}\n");
}
