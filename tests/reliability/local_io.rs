//! Faults on sttpipe's own side, with a healthy service: a FIFO writer that
//! pauses (the upstream session kept alive, or idle-closed and reopened) and
//! a reader that stops reading stdout. Neither is a fault upstream: no
//! reconnect, nothing lost.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use soniox_emulator::{EmulatorConfig, Outcome};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use super::harness::{
    BYTES_PER_MS, Collector, WAIT, assert_end, assert_words, drain_stderr, emulator, of_type,
    outcomes, reconnects, speech, sttpipe, token_upstreams, total_audio_ms, wall,
};
use crate::input::read_events_until;
use crate::util;

/// What the upstream session does while the FIFO writer pauses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pause {
    /// The default `--idle-close` (60 s) is longer than the pause:
    /// keepalives keep the session past the emulator's 20 s idle timeout.
    Keepalive,
    /// `--idle-close 5`: the session closes, and a new one opens when the
    /// audio returns.
    IdleClose,
}

/// Case 7: One FIFO writer under `--follow` writes 60 s of audio in two halves
/// with 30 s (audio time) of nothing between; then SIGTERM. Nothing is lost
/// either way, on one timeline.
async fn fifo_writer_pauses_30s(pause: Pause) {
    const HALF_MS: u64 = 29_750;
    let emulator = emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("mic.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut command = sttpipe(&emulator, &[]);
    command.arg("--input").arg(&fifo).arg("--follow");
    if pause == Pause::IdleClose {
        command.args(["--idle-close", "5"]);
    }
    let mut child = util::spawn(command);
    let stderr = drain_stderr(&mut child);
    let collector = Collector::start(child.stdout.take().unwrap());

    let (words, audio) = speech(60_000);
    let first_half = words.iter().filter(|w| w.start_ms < HALF_MS).count();
    let (go, wait_go) = std::sync::mpsc::channel::<()>();
    let path = fifo.clone();
    let writer = std::thread::spawn(move || -> std::io::Result<()> {
        let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
        let split = HALF_MS as usize * BYTES_PER_MS;
        f.write_all(&audio[..split])?;
        wait_go
            .recv_timeout(Duration::from_secs(60))
            .map_err(std::io::Error::other)?;
        f.write_all(&audio[split..])
    });

    // The pause begins when the service has had the first half (but for
    // a partial chunk sttpipe may hold until more audio comes).
    util::wait_for(WAIT, "the first half reaches the service", || {
        total_audio_ms(&emulator) >= HALF_MS - 250
    })
    .await;
    tokio::time::sleep(wall(30_000)).await;
    let sessions = emulator.sessions();
    assert_eq!(sessions.len(), 1, "{:?}", outcomes(&emulator));
    match pause {
        Pause::Keepalive => {
            assert_eq!(
                sessions[0].outcome,
                Outcome::Active,
                "the session did not survive the pause"
            );
            assert!(
                sessions[0].keepalives >= 3,
                "{} keepalives in 30 s",
                sessions[0].keepalives
            );
        }
        Pause::IdleClose => assert_eq!(
            sessions[0].outcome,
            Outcome::Finished,
            "the idle session was not closed"
        ),
    }
    go.send(()).unwrap();

    util::wait_for(WAIT, "every word final", || {
        collector.final_count() >= words.len()
    })
    .await;
    // The writer is done: sttpipe has read all its audio.
    writer.join().unwrap().expect("the writer's audio went in");
    kill(Pid::from_raw(child.id().unwrap() as i32), Signal::SIGTERM).unwrap();
    let events = collector.finish().await;
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("sttpipe exits after SIGTERM")
        .unwrap();
    let stderr = stderr.await.unwrap();
    assert_eq!(status.signal(), Some(15), "{status:?}; stderr:\n{stderr}");

    assert_words(&util::final_words(&events), &util::expected(&words));
    assert_end(&events, "signal", words.len());
    assert!(of_type(&events, "overrun").is_empty());
    assert!(of_type(&events, "error").is_empty());
    let reconnects = reconnects(&events);
    assert!(
        reconnects.is_empty(),
        "a pause is not a fault: {reconnects:?}"
    );
    let upstreams = token_upstreams(&events);
    let sessions = emulator.sessions();
    match pause {
        Pause::Keepalive => {
            assert!(upstreams.iter().all(|&n| n == 1), "{upstreams:?}");
            assert_eq!(outcomes(&emulator), [Outcome::Finished]);
        }
        Pause::IdleClose => {
            let mut want = vec![1; first_half];
            want.resize(words.len(), 2);
            assert_eq!(upstreams, want);
            assert_eq!(outcomes(&emulator), [Outcome::Finished; 2]);
            // No replay after an idle close: its audio was all final (less a
            // partial chunk held back until more audio came).
            assert!(sessions[1].audio_ms <= 60_000 - HALF_MS + 250);
        }
    }
}

/// Case 7a: The FIFO writer pauses 30 s; keepalives keep the upstream session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_writer_pausing_30s_keeps_the_session_alive() {
    fifo_writer_pauses_30s(Pause::Keepalive).await;
}

/// Case 7b: The FIFO writer pauses 30 s with `--idle-close 5`: close and reopen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_writer_pausing_30s_with_idle_close_reopens() {
    fifo_writer_pauses_30s(Pause::IdleClose).await;
}

/// Case 8: stdout blocked for 20 s (scaled) mid-stream, with `--partials` and a
/// 4 KiB pipe so the output really blocks: the audio keeps flowing, the
/// upstream session never idles out, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_blocked_20s_stalls_neither_audio_nor_session() {
    let emulator = emulator(EmulatorConfig::default()).await;
    let (words, audio) = speech(60_000);
    let mut child = util::spawn(sttpipe(&emulator, &["--partials"]));
    let stdout = child.stdout.take().unwrap();
    fcntl(&stdout, FcntlArg::F_SETPIPE_SZ(4096)).expect("shrink the stdout pipe");
    let stderr = drain_stderr(&mut child);
    let mut stdin = child.stdin.take().unwrap();
    let feeder = tokio::spawn(async move {
        let _ = stdin.write_all(&audio).await;
    });
    let mut lines = BufReader::new(stdout).lines();
    let mut events = Vec::new();
    read_events_until(&mut lines, &mut events, WAIT, |e| {
        util::final_words(e).len() >= 20
    })
    .await;

    // Stop reading: a paused `less`.
    let before = emulator.session(0).unwrap().audio_ms;
    tokio::time::sleep(wall(20_000)).await;
    let during = emulator.session(0).unwrap();
    assert_eq!(during.outcome, Outcome::Active, "{during:?}");
    assert!(
        during.audio_ms >= before + 15_000,
        "the audio stalled with stdout: {before} ms, then {} ms after 20 s",
        during.audio_ms
    );

    // Read on.
    loop {
        let line = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("output goes on")
            .expect("read stdout");
        match line {
            Some(line) => events.push(serde_json::from_str(&line).expect("JSON")),
            None => break,
        }
    }
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("sttpipe exits")
        .unwrap();
    feeder.abort();
    let stderr = stderr.await.unwrap();
    assert_eq!(status.code(), Some(0), "stderr:\n{stderr}");

    assert_words(&util::final_words(&events), &util::expected(&words));
    assert_end(&events, "eof", words.len());
    assert!(!of_type(&events, "partial").is_empty(), "no partials");
    assert!(of_type(&events, "overrun").is_empty());
    assert!(reconnects(&events).is_empty());
    assert!(token_upstreams(&events).iter().all(|&n| n == 1));
    assert_eq!(
        outcomes(&emulator),
        [Outcome::Finished],
        "the session was closed or replaced"
    );
}
