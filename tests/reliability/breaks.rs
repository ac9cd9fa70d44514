//! Connections that break mid-stream, whatever the cause (a drop, a
//! retryable error frame, a half-open stall): one reconnect each, the
//! uncovered audio replayed, nothing lost, nothing twice.

use std::time::Duration;

use soniox_emulator::{EmulatorConfig, Outcome};

use super::harness::{
    Feed, assert_upstreams, clear_faults_after, control, count_outcome, emulator, last_outcome,
    lossless, no_controller, outcomes, reasons, wall,
};
use crate::util;

/// Case 1: The connection dropped every 10 s (each connection after 10 s of its
/// own audio, replay included): every drop is one `dropped` reconnect that
/// replays the uncovered audio; nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_every_10s_loses_nothing() {
    let emulator = emulator(EmulatorConfig {
        drop_after_audio_ms: Some(10_000),
        ..EmulatorConfig::default()
    })
    .await;
    let run = lossless(&emulator, 60_000, &[], Feed::File, no_controller()).await;

    let reconnects = &run.reconnects;
    // No connection carries more than 10 s: 60 s need at least 6.
    assert!(reconnects.len() >= 5, "{reconnects:?}");
    for r in reconnects {
        assert_eq!(r.reason, "dropped", "{r:?}");
        assert!(r.replayed_ms > 0, "nothing replayed after a drop: {r:?}");
    }
    let dropped = count_outcome(&emulator, Outcome::Dropped);
    assert_eq!(
        reconnects.len(),
        dropped,
        "one reconnect per drop; sessions: {:?}",
        outcomes(&emulator)
    );
    let sessions = emulator.sessions();
    assert_eq!(sessions.len(), dropped + 1, "{:?}", outcomes(&emulator));
    assert_eq!(last_outcome(&emulator), Outcome::Finished);
    let upstreams = assert_upstreams(&run.events, reconnects);
    assert_eq!(upstreams.last(), Some(&(sessions.len() as u64)));
}

/// Case 2: One 503 "Cannot continue request" frame 20 s into the stream: one
/// `error` reconnect to upstream 2, replay, nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_503_mid_stream_reconnects_and_replays() {
    let emulator = emulator(EmulatorConfig {
        error_after_audio_ms: Some((20_000, 503)),
        ..EmulatorConfig::default()
    })
    .await;
    let controller = clear_faults_after(&emulator, "a 503 mid-stream", Outcome::Error(503));
    let run = lossless(&emulator, 60_000, &[], Feed::File, controller).await;

    let reconnects = &run.reconnects;
    assert_eq!(reasons(reconnects), ["error"], "{reconnects:?}");
    assert_eq!(reconnects[0].upstream, 2);
    assert!(reconnects[0].replayed_ms > 0, "{reconnects:?}");
    assert_eq!(
        outcomes(&emulator),
        [Outcome::Error(503), Outcome::Finished]
    );
    let upstreams = assert_upstreams(&run.events, reconnects);
    assert_eq!(
        upstreams[0], 1,
        "the words before the 503 came from upstream 1"
    );
}

/// Case 3: A half-open connection 20 s in (no FIN, no answers, pings ignored):
/// detected within the scaled 10 s, one `stalled` reconnect, the audio sent
/// into the void replayed, nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_open_stall_is_detected_and_replayed() {
    let emulator = emulator(EmulatorConfig {
        stall_after_audio_ms: Some(20_000),
        ..EmulatorConfig::default()
    })
    .await;
    let controller = control(&emulator, |emulator| async move {
        clear_faults_after(&emulator, "the connection goes half-open", Outcome::Stalled).await;
        // Detection within 10 s of silence (scaled), plus slack for the
        // first backoff and a loaded machine.
        let bound = wall(10_000) + Duration::from_millis(1_500);
        util::wait_for(bound, "a new connection after the half-open one", || {
            emulator.counts().connected >= 2
        })
        .await;
    });
    let run = lossless(&emulator, 60_000, &[], Feed::File, controller).await;

    let reconnects = &run.reconnects;
    assert_eq!(reasons(reconnects), ["stalled"], "{reconnects:?}");
    assert_eq!(reconnects[0].upstream, 2);
    assert!(reconnects[0].replayed_ms > 0, "{reconnects:?}");
    assert_eq!(outcomes(&emulator), [Outcome::Stalled, Outcome::Finished]);
    assert_upstreams(&run.events, reconnects);
}

/// 408, 429 and 500 frames mid-stream are retried like 503: one `error`
/// reconnect, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_error_classes_reconnect() {
    for code in [408, 429, 500] {
        let emulator = emulator(EmulatorConfig {
            error_after_audio_ms: Some((4_000, code)),
            ..EmulatorConfig::default()
        })
        .await;
        let controller = clear_faults_after(&emulator, "the error frame", Outcome::Error(code));
        let run = lossless(&emulator, 10_000, &[], Feed::File, controller).await;
        let reconnects = &run.reconnects;
        assert_eq!(reasons(reconnects), ["error"], "{code}: {reconnects:?}");
        assert_eq!(
            outcomes(&emulator),
            [Outcome::Error(code), Outcome::Finished],
            "{code}"
        );
        assert_upstreams(&run.events, reconnects);
    }
}
