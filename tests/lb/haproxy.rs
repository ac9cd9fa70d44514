//! Eight edges through a real HAProxy (Debian's `haproxy`, started here on
//! loopback with `packaging/haproxy/sttpipe-gateway.cfg`, its addresses and
//! certificate replaced) that terminates TLS in front of two gateway
//! daemons, which share one emulator. One gateway is SIGKILLed 10 s into
//! the streams: every edge gets every word once with its exact timestamp,
//! and exits 0. The reconnect gaps are printed (`lb figures:`), not
//! asserted.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use soniox_emulator::EmulatorConfig;
use tokio::process::{Child, Command};

use crate::reliability::harness::{assert_lossless, reconnects, speech};
use crate::util::{self, WsDaemon};

/// The edges' key: the gateways' token.
const TOKEN: &str = "edge-token";
/// Edges streaming at once.
const EDGES: usize = 8;
/// Each edge's stream, ms of audio, sent at real time.
const STREAM_MS: u64 = 30_000;
/// Audio every session has had when a gateway is killed, ms.
const KILL_AT_MS: u64 = 10_000;
/// Bound on waiting for the streams to reach the kill point, and for
/// HAProxy to listen.
const WAIT: Duration = Duration::from_secs(40);

/// HAProxy: `HAPROXY` or `haproxy` on PATH (or in /usr/sbin, where
/// Debian puts it); scripts/test installs it.
fn haproxy_binary() -> PathBuf {
    std::env::var_os("HAPROXY")
        .map(PathBuf::from)
        .or_else(|| util::which("haproxy"))
        .or_else(|| Some(PathBuf::from("/usr/sbin/haproxy")).filter(|p| p.is_file()))
        .expect("haproxy is not installed (apt-get install haproxy; scripts/test installs it)")
}

/// A loopback port free now (HAProxy cannot tell which port it got for 0).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// The committed example, made to run here: HAProxy on `port` with the
/// certificate and key in `pem`, balancing over `gateways`. Each line
/// replaced must be in the example, so the test follows it.
fn config(port: u16, pem: &Path, gateways: &[u16]) -> String {
    let example = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/haproxy/sttpipe-gateway.cfg"),
    )
    .expect("packaging/haproxy/sttpipe-gateway.cfg");
    let replace = |from: &str, to: &str, text: String| {
        assert!(text.contains(from), "the example has no {from:?}");
        text.replace(from, to)
    };
    let mut text = example;
    // No syslog in a test: HAProxy's own alerts go to its stderr.
    text = replace("    log /dev/log local0\n", "", text);
    text = replace(
        "bind :443 ssl crt /etc/haproxy/certs/sttpipe.pem",
        &format!("bind 127.0.0.1:{port} ssl crt {}", pem.display()),
        text,
    );
    text = replace(
        "    server gw1 10.0.0.11:8765\n    server gw2 10.0.0.12:8765\n",
        &gateways
            .iter()
            .enumerate()
            .map(|(i, p)| format!("    server gw{} 127.0.0.1:{p}\n", i + 1))
            .collect::<String>(),
        text,
    );
    text
}

/// HAProxy in the foreground with `config`, once it accepts connections on
/// `port`; killed when dropped.
async fn haproxy(dir: &Path, config: &str, port: u16) -> Child {
    let path = util::write_file(dir, "haproxy.cfg", config.as_bytes());
    let mut child = Command::new(haproxy_binary())
        .arg("-db")
        .arg("-f")
        .arg(&path)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start haproxy");
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("haproxy status") {
            panic!("haproxy exited at start ({status}); config:\n{config}");
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return child;
        }
        assert!(
            Instant::now() < deadline,
            "haproxy does not listen on {port}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The gateway daemons' sessions now.
async fn sessions(gateway: &WsDaemon) -> usize {
    gateway.status().await["sessions"]
        .as_array()
        .map_or(0, Vec::len)
}

/// The `p`-th percentile of sorted `values` (nearest rank).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_behind_haproxy_loses_no_word() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = util::write_file(dir.path(), "tokens", format!("{TOKEN}\n").as_bytes());
    let token_file = token_file.to_str().unwrap();
    let gateway_flags = [
        "--ws-token-file",
        token_file,
        "--max-upstream",
        "16",
        "--new-sessions-per-minute",
        "600",
    ];
    let mut gateways = [
        util::ws_daemon(&emulator, &gateway_flags, 1.0).await,
        util::ws_daemon(&emulator, &gateway_flags, 1.0).await,
    ];

    let (ca_pem, identity) = soniox_emulator::tls::test_identity();
    let ca = util::write_file(dir.path(), "ca.pem", ca_pem.as_bytes());
    let pem = util::write_file(
        dir.path(),
        "haproxy.pem",
        format!("{}{}", identity.cert_chain_pem, identity.key_pem).as_bytes(),
    );
    let port = free_port();
    let ports: Vec<u16> = gateways.iter().map(|g| g.port).collect();
    let _haproxy = haproxy(dir.path(), &config(port, &pem, &ports), port).await;

    let url = format!("wss://127.0.0.1:{port}/transcribe-websocket");
    let (words, audio) = speech(STREAM_MS);
    let edges: Vec<_> = (0..EDGES)
        .map(|_| {
            let mut command = util::sttpipe(None, Some(TOKEN));
            command.args(["--url", &url, "--ca-file", ca.to_str().unwrap()]);
            tokio::spawn(util::run(command, audio.clone()))
        })
        .collect();

    // Every session 10 s in, on both gateways: then one gateway dies.
    let deadline = Instant::now() + WAIT;
    loop {
        let sessions_in = emulator
            .sessions()
            .iter()
            .filter(|s| s.audio_ms >= KILL_AT_MS)
            .count();
        if sessions_in >= EDGES
            && sessions(&gateways[0]).await > 0
            && sessions(&gateways[1]).await > 0
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the edges did not all reach {KILL_AT_MS} ms on both gateways: {:?}",
            emulator
                .sessions()
                .iter()
                .map(|s| s.audio_ms)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let on_killed = sessions(&gateways[0]).await;
    gateways[0].kill();

    let mut gaps = Vec::new();
    let mut moved = 0;
    for edge in edges {
        let out = edge.await.expect("an edge's run");
        let events = assert_lossless(&out, &words);
        let found = reconnects(&events);
        moved += usize::from(!found.is_empty());
        gaps.extend(found.iter().map(|r| r.gap_ms));
    }
    assert!(
        moved >= on_killed,
        "{on_killed} sessions were on the killed gateway, {moved} edges reconnected"
    );
    gaps.sort_unstable();
    eprintln!(
        "lb figures: {EDGES} edges, {moved} moved off the killed gateway, reconnect gap p50 {} ms, p99 {} ms, max {} ms, words lost 0 of {} each",
        percentile(&gaps, 50.0),
        percentile(&gaps, 99.0),
        gaps.last().copied().unwrap_or(0),
        words.len()
    );
}
