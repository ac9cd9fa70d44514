//! Decoded media and the first connection: a FLAC stream through drops
//! (the decoded PCM is what is replayed), and the short budget of a stream
//! that never reached the service against the long one of a stream that
//! did.

use std::time::{Duration, Instant};

use soniox_emulator::EmulatorConfig;
use tokio::io::{AsyncBufReadExt, BufReader};

use super::harness::{
    Feed, assert_lossless, control, drop_then_refuse_after_first_session, emulator, of_type,
    reconnects, run_with_faults, speech, sttpipe, sttpipe_at, wall,
};
use crate::util;

/// 60 s of marker audio as FLAC on stdin, the connection dropped after
/// every 4 s of audio: every word exactly once at its exact time, so the
/// audio replayed after each drop is the decoded PCM, sample for sample.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flac_through_drops_every_4s_loses_nothing() {
    let emulator = emulator(EmulatorConfig {
        drop_after_audio_ms: Some(4_000),
        ..EmulatorConfig::default()
    })
    .await;
    let (words, pcm) = speech(60_000);
    let flac = util::ffmpeg(
        &[
            "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "-", "-f", "flac", "-",
        ],
        &pcm,
    );
    assert_eq!(&flac[..4], b"fLaC");
    let run = run_with_faults(
        sttpipe(&emulator, &[]),
        flac,
        Feed::File,
        super::harness::no_controller(),
    )
    .await;
    let events = assert_lossless(&run.out, &words);
    let start = &of_type(&events, "start")[0];
    assert_eq!(start["audio_format"], "pcm_s16le", "{start}");
    let reconnects = reconnects(&events);
    assert!(reconnects.len() >= 10, "{reconnects:?}");
    assert!(
        reconnects.iter().all(|r| r.replayed_ms > 0),
        "{reconnects:?}"
    );
}

/// A dead URL: one stderr line at once (what failed, that sttpipe retries,
/// for how long), then exit 69 once the short --connect-budget (30 s, at
/// the test's pace) is spent, long before --retry-budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_url_is_said_at_once_and_given_up_on_the_short_budget() {
    let command = sttpipe_at("ws://127.0.0.1:9/transcribe-websocket", &[]);
    let started = Instant::now();
    let mut child = util::spawn(command);
    let (_, audio) = speech(4_000);
    let mut stdin = child.stdin.take().expect("stdin piped");
    let feeder = tokio::spawn(async move {
        let _ = tokio::io::AsyncWriteExt::write_all(&mut stdin, &audio).await;
    });
    let mut stderr = BufReader::new(child.stderr.take().expect("stderr piped")).lines();
    let first = tokio::time::timeout(Duration::from_secs(2), stderr.next_line())
        .await
        .expect("a stderr line within 2 s")
        .expect("stderr readable")
        .expect("a line before EOF");
    assert!(
        first.starts_with("sttpipe: warning: cannot reach ws://127.0.0.1:9/"),
        "{first}"
    );
    assert!(
        first.contains("retrying for up to 30 s (Ctrl-C to stop)"),
        "{first}"
    );
    let status = tokio::time::timeout(wall(30_000) * 3, child.wait())
        .await
        .expect("gives up within the connect budget")
        .expect("exit status");
    feeder.abort();
    let elapsed = started.elapsed();
    assert_eq!(status.code(), Some(69));
    assert!(
        elapsed >= wall(30_000).mul_f64(0.8),
        "gave up after {elapsed:?}"
    );
    assert!(
        elapsed < wall(300_000) / 2,
        "took the long budget: {elapsed:?}"
    );
    let mut rest = Vec::new();
    while let Ok(Some(line)) = stderr.next_line().await {
        rest.push(line);
    }
    assert_eq!(rest.len(), 1, "one line more, the failure: {rest:?}");
    assert!(rest[0].contains("gave up after 30 s"), "{rest:?}");
}

/// A stream that worked, then meets a service that refuses every
/// reconnect: the long --retry-budget applies, not --connect-budget.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_working_session_the_long_budget_applies() {
    let emulator = emulator(EmulatorConfig::default()).await;
    let controller = control(&emulator, |emulator| async move {
        drop_then_refuse_after_first_session(&emulator, 3_000).await;
    });
    let (_, audio) = speech(30_000);
    let command = sttpipe(
        &emulator,
        &["--connect-budget", "2", "--retry-budget", "12"],
    );
    let run = run_with_faults(command, audio, Feed::File, controller).await;
    let out = &run.out;
    assert_eq!(out.code(), Some(75), "stderr:\n{}", out.stderr);
    let events = out.events();
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    let message = errors[0]["message"].as_str().unwrap();
    assert!(message.starts_with("gave up after 12 s"), "{message}");
    assert!(
        out.elapsed >= wall(3_000 + 12_000).mul_f64(0.8),
        "gave up after {:?}",
        out.elapsed
    );
    // It had reached the service: no "cannot reach" notice.
    assert!(!out.stderr.contains("retrying for up to"), "{}", out.stderr);
}
