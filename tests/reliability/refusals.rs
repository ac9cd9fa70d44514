//! A service that refuses: connects rejected and retried, the error classes
//! that are fatal, the retry budget spent, and an outage longer than the
//! replay buffer, whose loss is named exactly.

use soniox_emulator::marker::Word;
use soniox_emulator::{EmulatorConfig, Outcome};

use super::harness::{
    Feed, WAIT, assert_end, assert_upstreams, assert_words, control,
    drop_then_refuse_after_first_session, emulator, last_outcome, lossless, no_controller, of_type,
    outcomes, reconnects, run, run_with_faults, speech, sttpipe, sttpipe_at, tail, wall,
};
use crate::util;

/// Case 4: The first three connects rejected (503, 503, then 429) after their
/// start request: retried with backoff while the audio is buffered; every
/// rejected connection is an upstream session, so the words come from
/// upstream 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_three_connects_rejected_are_retried() {
    let emulator = emulator(EmulatorConfig {
        reject_connects: vec![503, 503, 429],
        ..EmulatorConfig::default()
    })
    .await;
    let run = lossless(&emulator, 60_000, &[], Feed::File, no_controller()).await;

    let reconnects = &run.reconnects;
    assert!(!reconnects.is_empty(), "no reconnect event");
    for r in reconnects {
        assert_eq!(r.reason, "error", "{reconnects:?}");
    }
    assert_eq!(reconnects.last().unwrap().upstream, 4, "{reconnects:?}");
    assert_eq!(
        outcomes(&emulator),
        [
            Outcome::Error(503),
            Outcome::Error(503),
            Outcome::Error(429),
            Outcome::Finished
        ]
    );
    let upstreams = assert_upstreams(&run.events, reconnects);
    assert!(upstreams.iter().all(|&n| n == 4), "{upstreams:?}");
}

/// 400, 401, 402 and 403 are fatal: their exit status at once, one
/// connection, no reconnect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fatal_error_classes_are_not_retried() {
    for (code, exits) in [
        (400, &[64, 65][..]),
        (401, &[77][..]),
        (402, &[69][..]),
        (403, &[77][..]),
    ] {
        let emulator = emulator(EmulatorConfig {
            error_after_audio_ms: Some((2_000, code)),
            ..EmulatorConfig::default()
        })
        .await;
        let (_, audio) = speech(8_000);
        let run = run(sttpipe(&emulator, &[]), audio, Feed::File).await;
        let out = &run.out;
        assert!(
            out.code().is_some_and(|c| exits.contains(&c)),
            "{code}: exit {:?}; stderr:\n{}",
            out.status,
            out.stderr
        );
        assert_eq!(emulator.sessions().len(), 1, "{code} was retried");
        let events = out.events();
        assert!(reconnects(&events).is_empty(), "{code} was retried");
        let errors = of_type(&events, "error");
        assert_eq!(errors.len(), 1, "{code}: {errors:?}");
        assert_eq!(errors[0]["status"], code, "{}", errors[0]);
        assert_eq!(events.last().unwrap()["reason"], "error", "{code}");
    }
}

/// A service that worked and then refuses every reconnect: sttpipe gives up
/// after `--retry-budget` with exit 75, having said nothing wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_spent_after_a_working_session_exits_75() {
    let emulator = emulator(EmulatorConfig::default()).await;
    let controller = control(&emulator, |emulator| async move {
        drop_then_refuse_after_first_session(&emulator, 3_000).await;
    });
    let (words, audio) = speech(30_000);
    let command = sttpipe(&emulator, &["--retry-budget", "10"]);
    let run = run_with_faults(command, audio, Feed::File, controller).await;
    let out = &run.out;
    assert_eq!(out.code(), Some(75), "stderr:\n{}", out.stderr);
    let events = out.events();
    let got = util::final_words(&events);
    let want = util::expected(&words);
    assert_words(&got, &want[..got.len().min(want.len())]);
    let errors = of_type(&events, "error");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["exit_code"], 75, "{}", errors[0]);
    assert_eq!(events.last().unwrap()["reason"], "error");
    assert!(
        emulator.sessions().len() >= 3,
        "gave up without retrying: {:?}",
        outcomes(&emulator)
    );
}

/// A service that is never reached: retried for `--retry-budget`, then
/// exit 69.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_service_exits_69_after_the_retry_budget() {
    // A port nobody listens on: connections are refused.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/transcribe-websocket");
    let command = sttpipe_at(&url, &["--retry-budget", "8"]);
    let (_, audio) = speech(4_000);
    let run = run(command, audio, Feed::File).await;
    let out = &run.out;
    assert_eq!(out.code(), Some(69), "stderr:\n{}", out.stderr);
    assert!(!out.stderr.is_empty(), "no message");
    assert!(
        out.elapsed >= wall(8_000).mul_f64(0.8),
        "gave up after {:?}, before the budget",
        out.elapsed
    );
}

/// Case 9: `--replay-buffer 10` and an outage of about 30 s of audio (a drop 15 s
/// in, then every connect rejected for 30 s scaled) on a live stream: the
/// oldest audio is dropped, and `overrun` events name exactly the lost
/// words; every other word arrives once, in order, at its exact time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_buffer_overflow_names_exactly_the_lost_words() {
    const TOTAL_MS: u64 = 90_000;
    let emulator = emulator(EmulatorConfig::default()).await;
    let controller = control(&emulator, |emulator| async move {
        drop_then_refuse_after_first_session(&emulator, 15_000).await;
        util::wait_for(WAIT, "the drop", || {
            emulator
                .session(0)
                .is_some_and(|s| s.outcome == Outcome::Dropped)
        })
        .await;
        // The outage itself: the service refuses for 30 s of audio time.
        tokio::time::sleep(wall(30_000)).await;
        emulator.clear_faults();
    });
    let (words, audio) = speech(TOTAL_MS);
    let command = sttpipe(&emulator, &["--replay-buffer", "10"]);
    let run = run_with_faults(command, audio, Feed::Live, controller).await;
    let out = &run.out;
    assert_eq!(
        out.code(),
        Some(0),
        "stderr:\n{}\nstdout tail:\n{}",
        out.stderr,
        tail(&out.stdout)
    );
    assert!(
        run.input_lag_ms < 5_000,
        "the live input waited {} ms (audio time) during the outage",
        run.input_lag_ms
    );
    let events = out.events();

    let mut lost_ranges: Vec<(u64, u64)> = of_type(&events, "overrun")
        .iter()
        .map(|e| {
            let ms = |key: &str| {
                e[key]
                    .as_u64()
                    .unwrap_or_else(|| panic!("overrun without a numeric {key}: {e}"))
            };
            let (start, end) = (ms("start_ms"), ms("end_ms"));
            assert!(start < end && end <= TOTAL_MS, "bad range: {e}");
            (start, end)
        })
        .collect();
    assert!(!lost_ranges.is_empty(), "no overrun event");
    let in_order = lost_ranges.windows(2).all(|w| w[0].1 <= w[1].0);
    lost_ranges.sort_unstable();
    assert!(
        in_order,
        "overrun ranges out of order or overlapping: {lost_ranges:?}"
    );
    let lost_ms: u64 = lost_ranges.iter().map(|(a, b)| b - a).sum();
    // ~30 s of outage, 10 s kept: about 20 s lost.
    assert!(lost_ms >= 10_000, "only {lost_ms} ms lost: {lost_ranges:?}");

    let lost = |w: &Word| {
        lost_ranges
            .iter()
            .any(|&(a, b)| (a..b).contains(&w.start_ms))
    };
    let kept: Vec<Word> = words.iter().filter(|w| !lost(w)).cloned().collect();
    assert!(kept.len() < words.len());
    assert_words(&util::final_words(&events), &util::expected(&kept));
    assert!(of_type(&events, "error").is_empty());
    assert_end(&events, "eof", kept.len());

    let reconnects = reconnects(&events);
    assert!(!reconnects.is_empty(), "no reconnect event");
    assert_eq!(reconnects[0].reason, "dropped", "{reconnects:?}");
    for r in &reconnects {
        assert!(matches!(r.reason.as_str(), "dropped" | "error"), "{r:?}");
        assert!(
            r.replayed_ms <= 12_000,
            "replayed more than the 10 s buffer: {r:?}"
        );
    }
    assert_upstreams(&events, &reconnects);
    let sessions = emulator.sessions();
    assert_eq!(sessions[0].outcome, Outcome::Dropped);
    assert_eq!(last_outcome(&emulator), Outcome::Finished);
    assert!(
        sessions[1..sessions.len() - 1]
            .iter()
            .all(|s| s.outcome == Outcome::Error(503)),
        "{:?}",
        outcomes(&emulator)
    );
}
