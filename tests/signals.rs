//! Signals and a closed stdout.

use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use soniox_emulator::{EmulatorConfig, Outcome};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use crate::input::read_events_until;
use crate::util::{self, KEY};

fn signal(child: &tokio::process::Child, signal: Signal) {
    kill(Pid::from_raw(child.id().expect("running") as i32), signal).expect("send signal");
}

/// `sttpipe < 60s.raw | head -n 1`: exit 0, nothing on stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_stdout_is_a_quiet_exit_0() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let (_, audio) = util::marker_audio(100, 500, 60_000);
    let input = util::write_file(dir.path(), "60s.raw", &audio);
    let script = format!(
        "{bin} < {input} 2>{dir}/stderr | head -n 1 >{dir}/stdout; echo ${{PIPESTATUS[0]}}",
        bin = env!("CARGO_BIN_EXE_sttpipe"),
        input = input.display(),
        dir = dir.path().display()
    );
    let mut command = tokio::process::Command::new("bash");
    command
        .env_remove("RUST_LOG")
        .env("SONIOX_WS_URL", emulator.url())
        .env("SONIOX_API_KEY", KEY)
        .args(["-c", &script]);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.stdout.trim(), "0", "sttpipe's exit status");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("stderr")).unwrap(),
        ""
    );
    let first = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    assert!(first.starts_with(r#"{"type":"start""#), "{first}");
    assert!(
        out.elapsed < Duration::from_secs(20),
        "took {:?}",
        out.elapsed
    );
}

/// SIGTERM mid-stream: reading stops, the audio is ended, and every word in
/// the audio the service received comes back final before the exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_mid_stream_drains_the_finals() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let (words, audio) = util::marker_audio(25, 400, 12_000);
    let mut child = util::spawn(util::sttpipe(Some(&emulator.url()), Some(KEY)));
    let mut stdin = child.stdin.take().unwrap();
    let feeder = tokio::spawn(async move {
        let _ = stdin.write_all(&audio).await;
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    read_events_until(&mut lines, &mut events, Duration::from_secs(20), |e| {
        util::final_words(e).len() >= 3
    })
    .await;
    signal(&child, Signal::SIGTERM);
    while let Some(line) = tokio::time::timeout(Duration::from_secs(10), lines.next_line())
        .await
        .expect("output ends within the drain bound")
        .unwrap()
    {
        events.push(serde_json::from_str(&line).unwrap());
    }
    let status = child.wait().await.unwrap();
    feeder.abort();
    assert_eq!(status.signal(), Some(15), "dies by SIGTERM once drained");

    let received_ms = emulator.sessions()[0].audio_ms;
    assert!(
        received_ms < 12_000,
        "the whole input went: stop came too late to test"
    );
    // Every word whose marker the service received is final in the output.
    let heard: Vec<_> = words
        .iter()
        .filter(|w| w.start_ms + 50 <= received_ms)
        .cloned()
        .collect();
    let got = util::final_words(&events);
    assert!(
        got.len() >= heard.len().saturating_sub(0) && got.len() > 3,
        "{got:?}"
    );
    assert_eq!(got[..heard.len()], util::expected(&heard)[..]);
    let end = events.last().unwrap();
    assert_eq!(end["type"], "end");
    assert_eq!(end["reason"], "signal");
    assert!(emulator.sessions()[0].ended_audio);
}

/// A stream whose service stalls (stops reading and answering) after
/// 2.5 s of audio, taken to the point where it has stalled: a drain then
/// cannot finish.
struct Stalled {
    emulator: soniox_emulator::Emulator,
    child: tokio::process::Child,
    feeder: tokio::task::JoinHandle<()>,
}

async fn stream_into_a_stall(args: &[&str]) -> Stalled {
    let emulator = util::emulator(EmulatorConfig {
        stall_after_audio_ms: Some(2_500),
        ..EmulatorConfig::default()
    })
    .await;
    let (_, audio) = util::marker_audio(20, 400, 10_000);
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.args(args);
    let mut child = util::spawn(command);
    let mut stdin = child.stdin.take().unwrap();
    let feeder = tokio::spawn(async move {
        let _ = stdin.write_all(&audio).await;
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    read_events_until(&mut lines, &mut events, Duration::from_secs(20), |e| {
        util::final_words(e).len() >= 2
    })
    .await;
    util::wait_for(Duration::from_secs(10), "the emulator stalls", || {
        emulator
            .session(0)
            .is_some_and(|s| s.outcome == Outcome::Stalled)
    })
    .await;
    // Keep reading stdout so the filter never blocks on it.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Stalled {
        emulator,
        child,
        feeder,
    }
}

/// A second SIGINT while draining exits at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn second_sigint_exits_at_once() {
    let Stalled {
        emulator: _emulator,
        mut child,
        feeder,
        ..
    } = stream_into_a_stall(&["--drain-timeout", "30", "-v"]).await;
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    signal(&child, Signal::SIGINT);
    // The first SIGINT has been taken when the filter says it is draining.
    tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(line) = log.next_line().await.unwrap() {
            if line.contains("draining") {
                return;
            }
        }
        panic!("stderr ended before the drain began");
    })
    .await
    .expect("the drain begins");
    let second = Instant::now();
    signal(&child, Signal::SIGINT);
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("exits at once")
        .unwrap();
    feeder.abort();
    assert!(second.elapsed() < Duration::from_secs(5));
    assert_eq!(status.code(), Some(130), "{status:?}");
}

/// A stalled drain is bounded by --drain-timeout, then the filter dies by SIGINT.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_is_bounded() {
    let Stalled {
        emulator: _emulator,
        mut child,
        feeder,
        ..
    } = stream_into_a_stall(&["--drain-timeout", "1"]).await;
    signal(&child, Signal::SIGINT);
    let sent = Instant::now();
    let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .expect("bounded drain")
        .unwrap();
    feeder.abort();
    assert_eq!(status.signal(), Some(2));
    assert!(
        sent.elapsed() >= Duration::from_millis(900),
        "did not wait for the drain"
    );
}

/// SIGUSR1 finalizes: everything so far becomes final at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigusr1_finalizes() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let (words, audio) = util::marker_audio(12, 400, 6_000);
    let mut child = util::spawn(util::sttpipe(Some(&emulator.url()), Some(KEY)));
    let mut stdin = child.stdin.take().unwrap();
    let feeder = tokio::spawn(async move {
        let _ = stdin.write_all(&audio).await;
    });
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut events = Vec::new();
    read_events_until(&mut lines, &mut events, Duration::from_secs(20), |e| {
        e.iter().any(|e| e["type"] == "start")
    })
    .await;
    signal(&child, Signal::SIGUSR1);
    read_events_until(&mut lines, &mut events, Duration::from_secs(20), |e| {
        e.iter().any(|e| e["type"] == "finalized")
    })
    .await;
    while let Some(line) = lines.next_line().await.unwrap() {
        events.push(serde_json::from_str(&line).unwrap());
    }
    let status = child.wait().await.unwrap();
    feeder.abort();
    assert_eq!(status.code(), Some(0));
    assert_eq!(util::final_words(&events), util::expected(&words));
    assert!(emulator.sessions()[0].finalizes >= 1);
}
