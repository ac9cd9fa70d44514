//! The daemon behind an upstream that allows fewer sessions than it was
//! told: a refused start puts the session back in the daemon's queue
//! (without spending its retry budget), the daemon learns the upstream's
//! limit, and no word is lost.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::json;
use soniox_emulator::marker::Word;
use soniox_emulator::{Emulator, EmulatorConfig, LimitTier, Outcome, marker};

use crate::daemon::Daemon;
use crate::util;

/// Sessions the emulator lets stream at once.
const UPSTREAM_CAP: usize = 2;
/// Clients, all at once.
const CLIENTS: usize = 8;
/// Each client's audio.
const AUDIO_MS: u64 = 8_000;
/// Bound on one client's run: four rounds of 8 s, with room.
const CLIENT_BOUND: Duration = Duration::from_secs(120);

/// Words unique to client `client`, one every 500 ms, in `audio_ms`.
fn words(client: usize, audio_ms: u64) -> Vec<Word> {
    (0..(audio_ms - 1_000) / 500)
        .map(|i| Word {
            text: format!(" q{client}w{i}"),
            start_ms: 400 + i * 500,
            duration_ms: 300,
        })
        .collect()
}

/// What one client got: its exit status, its events, and its words.
struct Client {
    code: Option<i32>,
    output: util::Output,
    expected: Vec<(String, u64)>,
}

/// `sttpipe --connect SOCKET --retry-budget 10`, for client `client`, with
/// `audio_ms` of audio.
async fn client(socket: PathBuf, client: usize, audio_ms: u64) -> Client {
    let words = words(client, audio_ms);
    let audio = marker::encode(&words, audio_ms, 16_000, 1);
    let mut command = util::sttpipe(None, None);
    command
        .arg("--connect")
        .arg(&socket)
        .args(["--retry-budget", "10"]);
    let started = Instant::now();
    let mut child = util::spawn(command);
    let mut stdin = child.stdin.take().expect("stdin piped");
    let feeder = tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        let _ = stdin.write_all(&audio).await;
    });
    let output = tokio::time::timeout(CLIENT_BOUND, util::finish(child, started))
        .await
        .expect("the client finishes");
    feeder.abort();
    Client {
        code: output.code(),
        expected: util::expected(&words),
        output,
    }
}

/// The 429s the emulator sent.
fn refusals(emulator: &Emulator) -> usize {
    emulator
        .sessions()
        .iter()
        .filter(|s| s.outcome == Outcome::Error(429))
        .count()
}

/// Eight clients at once, spread over `sockets` in turn; each must get
/// every word once and exit 0.
async fn eight_clients(sockets: &[PathBuf]) -> Duration {
    let started = Instant::now();
    let runs: Vec<_> = (0..CLIENTS)
        .map(|i| tokio::spawn(client(sockets[i % sockets.len()].clone(), i, AUDIO_MS)))
        .collect();
    for (i, run) in runs.into_iter().enumerate() {
        let got = run.await.expect("the client task");
        assert_eq!(
            got.code,
            Some(0),
            "client {i} failed; stderr: {}",
            got.output.stderr
        );
        assert_eq!(got.output.final_words(), got.expected, "client {i}'s words");
    }
    started.elapsed()
}

fn capped_emulator() -> EmulatorConfig {
    EmulatorConfig {
        max_concurrent: Some(UPSTREAM_CAP),
        ..EmulatorConfig::default()
    }
}

/// One daemon that believes 8 sessions may stream, behind an upstream that
/// allows 2: every client gets every word, and the emulator refuses few
/// starts (the daemon learns the limit instead of each session retrying on
/// its own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_clients_behind_a_smaller_upstream_limit() {
    let emulator = util::emulator(capped_emulator()).await;
    let daemon = Daemon::start(&emulator, &["--max-upstream", "8", "--retry-budget", "10"]).await;
    let took = eight_clients(std::slice::from_ref(&daemon.socket)).await;
    let refused = refusals(&emulator);
    let status = daemon.status().await;
    println!(
        "one daemon: {refused} refusals (429) from the emulator, {} upstream sessions, {:.1} s; upstream {}",
        emulator.sessions().len(),
        took.as_secs_f64(),
        status["upstream"]
    );
    assert!(refused <= 12, "{refused} refusals");
}

/// Two such daemons sharing the one upstream, four clients each: both
/// settle within the upstream's limit without talking to each other, and
/// nothing is lost. The refusals here name the organization.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_daemons_share_a_smaller_upstream_limit() {
    let emulator = util::emulator(EmulatorConfig {
        limit_tier: LimitTier::Organization,
        ..capped_emulator()
    })
    .await;
    let args = ["--max-upstream", "8", "--retry-budget", "10"];
    let first = Daemon::start(&emulator, &args).await;
    let second = Daemon::start(&emulator, &args).await;
    let took = eight_clients(&[first.socket.clone(), second.socket.clone()]).await;
    let refused = refusals(&emulator);
    let (a, b) = (first.status().await, second.status().await);
    println!(
        "two daemons: {refused} refusals (429) from the emulator, {} upstream sessions, {:.1} s; upstream {} and {}",
        emulator.sessions().len(),
        took.as_secs_f64(),
        a["upstream"],
        b["upstream"]
    );
    let seen = |status: &serde_json::Value| {
        status["upstream"]["rejections"]["organization"]
            .as_u64()
            .unwrap()
    };
    assert_eq!(
        seen(&a) + seen(&b),
        refused as u64,
        "each refusal is seen, by its tier"
    );
    for status in [&a, &b] {
        assert!(
            status["upstream"]["effective_limit"].as_u64().unwrap() < 8,
            "both learned a lower limit: {status}"
        );
    }
    assert!(refused <= 24, "{refused} refusals");
}

/// A warm pool larger than the upstream's cap on connections (idle ones
/// count): the pool shrinks, and no session fails for it (no `reconnect`),
/// whether it took a refused pooled connection or its own was refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_pool_under_a_connection_cap_fails_no_session() {
    let emulator = util::emulator(EmulatorConfig {
        max_connections: Some(3),
        ..EmulatorConfig::default()
    })
    .await;
    let daemon = Daemon::start(
        &emulator,
        &[
            "--max-upstream",
            "4",
            "--warm-pool",
            "4",
            "--retry-budget",
            "10",
        ],
    )
    .await;
    // The pool has met the cap before any client comes.
    daemon
        .wait_status("the pool was refused", |s| {
            s["upstream"]["rejections"]["connections"] != 0
        })
        .await;
    let started = Instant::now();
    let mut runs = Vec::new();
    for round in 0..2 {
        for i in 0..4 {
            let n = round * 4 + i;
            runs.push(tokio::spawn(client(daemon.socket.clone(), n, 3_000)));
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for (i, run) in runs.into_iter().enumerate() {
        let got = run.await.expect("the client task");
        assert_eq!(
            got.code,
            Some(0),
            "client {i}; stderr: {}",
            got.output.stderr
        );
        assert_eq!(got.output.final_words(), got.expected, "client {i}'s words");
        assert!(
            got.output.of_type("reconnect").is_empty(),
            "client {i}'s session failed: {}",
            got.output.stdout
        );
    }
    let status = daemon.status().await;
    println!(
        "warm pool under a cap of 3 connections: {} refusals (429) from the emulator, {} connections, {:.1} s; upstream {}",
        refusals(&emulator),
        emulator.sessions().len(),
        started.elapsed().as_secs_f64(),
        status["upstream"]
    );
}

/// `--live-quota`: while a session waits, `status` shows Soniox's own
/// counts (here the emulator's), asked at most every 15 s, and never while
/// nobody waits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_live_quota_while_sessions_wait() {
    let emulator = util::emulator(EmulatorConfig {
        max_concurrent: Some(1),
        ..EmulatorConfig::default()
    })
    .await;
    let quota_url = emulator.rest_url();
    let daemon = Daemon::start(
        &emulator,
        &[
            "--max-upstream",
            "1",
            "--live-quota",
            "--quota-url",
            &quota_url,
        ],
    )
    .await;
    // Nobody waits: nothing is asked.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(emulator.rest_requests(), 0);
    assert_eq!(
        daemon.status().await["upstream"]["live"],
        json!({"polled_s_ago": null})
    );
    let started = Instant::now();
    let streaming = tokio::spawn(client(daemon.socket.clone(), 0, 8_000));
    util::wait_for(Duration::from_secs(10), "one session streams", || {
        emulator.streaming_sessions() == 1
    })
    .await;
    let waiting = tokio::spawn(client(daemon.socket.clone(), 1, 3_000));
    daemon
        .wait_status("the live quota was read", |s| {
            s["upstream"]["live"]["project"]["current"]["transcribe_concurrent"] == 1
        })
        .await;
    let live = daemon.status().await["upstream"]["live"].clone();
    assert_eq!(
        live["project"]["limits"]["transcribe_concurrent"], 1,
        "{live}"
    );
    assert_eq!(
        live["organization"]["current"]["transcribe_concurrent"], 1,
        "{live}"
    );
    for run in [streaming, waiting] {
        let got = run.await.expect("the client task");
        assert_eq!(got.code, Some(0), "stderr: {}", got.output.stderr);
        assert_eq!(got.output.final_words(), got.expected);
    }
    let asked = emulator.rest_requests();
    let bound = 1 + started.elapsed().as_secs() / 15;
    println!(
        "live quota: {asked} requests in {:.1} s; {live}",
        started.elapsed().as_secs_f64()
    );
    assert!(
        (1..=bound).contains(&asked),
        "{asked} requests, at most {bound}"
    );
}
