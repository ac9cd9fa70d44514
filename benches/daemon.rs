//! The daemon's time to first forwarded audio, with and without the warm
//! pool: from a client's connect (header and first audio chunk sent at once)
//! to the first audio frame arriving at the service, here the emulator over
//! wss:// on loopback (so the TLS and WebSocket handshakes count).
//!
//! `cargo bench --bench daemon`; `BENCH_SESSIONS=N` sessions per setting
//! (default 30). Prints figures; asserts nothing about speed.

// The tests' throw-away CA; `pub` there serves the test crate.
#[allow(unreachable_pub)]
#[path = "../tests/util/tls.rs"]
mod tls;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use sttpipe::emulator::marker::{self, Word};
use sttpipe::emulator::{Emulator, EmulatorConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn main() {
    let sessions: usize = std::env::var("BENCH_SESSIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    runtime.block_on(async {
        let (ca_pem, identity) = tls::test_identity();
        let emulator = Emulator::start(EmulatorConfig {
            tls: Some(identity),
            ..EmulatorConfig::default()
        })
        .await
        .expect("emulator");
        let dir = tempfile::tempdir().expect("tempdir");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca_pem).expect("write CA");
        println!("time to first forwarded audio, {sessions} sessions each, emulator over wss:// on loopback");
        for pool in [0usize, 2] {
            let figures = measure(&emulator, &ca_file, dir.path(), pool, sessions).await;
            println!(
                "  --warm-pool {pool}: p50 {:6.2} ms   p99 {:6.2} ms   max {:6.2} ms",
                percentile(&figures, 0.50),
                percentile(&figures, 0.99),
                percentile(&figures, 1.0),
            );
        }
    });
}

async fn measure(
    emulator: &Emulator,
    ca_file: &Path,
    dir: &Path,
    pool: usize,
    sessions: usize,
) -> Vec<f64> {
    let socket = dir.join(format!("pool{pool}.sock"));
    let mut daemon = tokio::process::Command::new(env!("CARGO_BIN_EXE_sttpipe"))
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .arg("--ca-file")
        .arg(ca_file)
        .args(["--config", "/dev/null", "--warm-pool", &pool.to_string()])
        .env("SONIOX_WS_URL", emulator.url())
        .env("SONIOX_API_KEY", "test-key")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start the daemon");
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&socket).await.is_err() {
        assert!(Instant::now() < deadline, "the daemon did not listen");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let words = [Word {
        text: " hi".into(),
        start_ms: 100,
        duration_ms: 200,
    }];
    let audio = marker::encode(&words, 500, 16_000, 1);
    let mut figures = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        // Give the pool its time to refill between sessions, as between
        // real arrivals.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = emulator.sessions().len();
        let started = Instant::now();
        let mut stream = UnixStream::connect(&socket).await.expect("connect");
        stream
            .write_all(b"{\"rate\":16000}\n")
            .await
            .expect("header");
        stream.write_all(&audio).await.expect("audio");
        stream.shutdown().await.expect("half-close");
        let mut events = String::new();
        stream.read_to_string(&mut events).await.expect("events");
        assert!(events.contains(" hi"), "the word came back: {events}");
        let first_audio = emulator
            .sessions()
            .into_iter()
            .skip(before.saturating_sub(pool))
            .filter_map(|s| s.first_audio_at)
            .filter(|t| *t >= started)
            .min()
            .expect("the service got audio");
        figures.push((first_audio - started).as_secs_f64() * 1000.0);
    }
    let _ = daemon.kill().await;
    figures
}

fn percentile(figures: &[f64], p: f64) -> f64 {
    let mut sorted = figures.to_vec();
    sorted.sort_by(f64::total_cmp);
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index]
}
