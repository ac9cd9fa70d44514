//! Planned rotation (`--max-session`): alone, among drops, and with every
//! other fault on one live stream. A rotation is make-before-break: no gap,
//! no word lost or said twice, whatever else happens around it.

use soniox_emulator::{EmulatorConfig, Faults, Outcome};

use super::harness::{
    Feed, WAIT, assert_upstreams, control, count_outcome, count_reason, emulator, last_outcome,
    lossless, no_controller, summary,
};
use crate::util;

/// Case 5: `--max-session 15`: planned rotations, make-before-break, each a
/// `rotation` reconnect with no gap; no word lost or said twice. The
/// emulator refuses more than 20 s of audio on one connection (a fatal 400),
/// so a missed rotation fails loudly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_session_rotates_without_gap_or_duplicate() {
    let emulator = emulator(EmulatorConfig {
        max_stream_ms: 20_000,
        ..EmulatorConfig::default()
    })
    .await;
    let run = lossless(
        &emulator,
        64_000,
        &["--max-session", "15"],
        Feed::File,
        no_controller(),
    )
    .await;

    let reconnects = &run.reconnects;
    // Session 1 carries at most 17 s (15 s and the 2 s lead), each later one
    // at most 15 s of new audio: 64 s take at least 4 rotations.
    assert!(reconnects.len() >= 3, "{reconnects:?}");
    for r in reconnects {
        assert_eq!(r.reason, "rotation", "{reconnects:?}");
        assert_eq!(r.gap_ms, 0, "make-before-break leaves no gap: {r:?}");
    }
    for s in emulator.sessions() {
        assert!(
            !matches!(
                s.outcome,
                Outcome::Error(_) | Outcome::Dropped | Outcome::Stalled
            ),
            "session {} ended {:?} after {} ms of audio",
            s.index,
            s.outcome,
            s.audio_ms
        );
        assert!(
            s.audio_ms <= 20_000,
            "session {}: {} ms",
            s.index,
            s.audio_ms
        );
    }
    let upstreams = assert_upstreams(&run.events, reconnects);
    assert!(*upstreams.last().unwrap() >= 4, "{upstreams:?}");
}

/// Case 6: Everything on one live stream: the first three connects rejected
/// (503, 503, 429), two drops 10 s into a connection, a 503 frame
/// mid-stream, a half-open stall, then rotations. Nothing lost, nothing
/// twice, and the live input never waits.
///
/// `--max-session 30` rather than 15 here: a rotation replaces a connection
/// as well as a reconnect does, so one due before a stall is detected would
/// hide the stall (drops and rotations racing: see the next test).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fault_at_once_loses_nothing() {
    let emulator = emulator(EmulatorConfig {
        reject_connects: vec![503, 503, 429],
        drop_after_audio_ms: Some(10_000),
        // Above what a connection carries after the stall (its replay
        // and 30 s), far below a stream that never rotates.
        max_stream_ms: 50_000,
        ..EmulatorConfig::default()
    })
    .await;
    let controller = control(&emulator, |emulator| async move {
        util::wait_for(WAIT, "two drops", || {
            count_outcome(&emulator, Outcome::Dropped) >= 2
        })
        .await;
        emulator.set_faults(Faults {
            error_after_audio_ms: Some((8_000, 503)),
            ..Faults::default()
        });
        util::wait_for(WAIT, "a 503 mid-stream", || {
            emulator
                .sessions()
                .iter()
                .any(|s| s.outcome == Outcome::Error(503) && s.audio_ms > 0)
        })
        .await;
        // Early in the connection, so that it is detected (10 s) well
        // before a rotation is due.
        emulator.set_faults(Faults {
            stall_after_audio_ms: Some(4_000),
            ..Faults::default()
        });
        util::wait_for(WAIT, "a half-open stall", || {
            count_outcome(&emulator, Outcome::Stalled) == 1
        })
        .await;
        emulator.clear_faults();
    });
    let run = lossless(
        &emulator,
        100_000,
        &["--max-session", "30"],
        Feed::Live,
        controller,
    )
    .await;
    assert!(
        run.input_lag_ms < 5_000,
        "the live input waited {} ms (audio time)",
        run.input_lag_ms
    );

    let reconnects = &run.reconnects;
    let sessions = emulator.sessions();
    let summary = summary(&emulator, reconnects);
    let dropped = count_outcome(&emulator, Outcome::Dropped);
    assert_eq!(reconnects[0].reason, "error", "{summary}");
    // The rejections (one or more events) and the 503 mid-stream.
    assert!(count_reason(reconnects, "error") >= 2, "{summary}");
    assert!(dropped >= 2, "{summary}");
    assert_eq!(count_reason(reconnects, "dropped"), dropped, "{summary}");
    assert_eq!(count_reason(reconnects, "stalled"), 1, "{summary}");
    assert!(count_reason(reconnects, "rotation") >= 1, "{summary}");
    for r in reconnects {
        if r.reason == "rotation" {
            assert_eq!(r.gap_ms, 0, "{r:?}");
        }
    }
    assert_eq!(
        sessions[..3].iter().map(|s| s.outcome).collect::<Vec<_>>(),
        [
            Outcome::Error(503),
            Outcome::Error(503),
            Outcome::Error(429)
        ]
    );
    let mid_stream_503 = sessions
        .iter()
        .filter(|s| s.outcome == Outcome::Error(503) && s.audio_ms > 0)
        .count();
    assert_eq!(mid_stream_503, 1, "{summary}");
    assert_eq!(count_outcome(&emulator, Outcome::Stalled), 1, "{summary}");
    assert!(
        sessions.iter().all(|s| s.audio_ms <= 50_000),
        "a session ran on without rotating: {summary}"
    );
    assert_eq!(last_outcome(&emulator), Outcome::Finished);
    assert_upstreams(&run.events, reconnects);
}

/// Case 6, continued: drops every 10 s of a connection's audio and
/// `--max-session 15` together, so drops land around handovers (a
/// rotation's next session opening, or just taken over). Whichever comes
/// first, nothing is lost or said twice, and every new upstream session is
/// announced before its tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_and_rotations_together_lose_nothing() {
    let emulator = emulator(EmulatorConfig {
        drop_after_audio_ms: Some(10_000),
        ..EmulatorConfig::default()
    })
    .await;
    let run = lossless(
        &emulator,
        60_000,
        &["--max-session", "15"],
        Feed::File,
        no_controller(),
    )
    .await;

    let reconnects = &run.reconnects;
    let summary = summary(&emulator, reconnects);
    // No connection carries more than 10 s: 60 s need at least 6.
    assert!(reconnects.len() >= 5, "{summary}");
    for r in reconnects {
        assert!(r.reason == "dropped" || r.reason == "rotation", "{summary}");
    }
    assert_eq!(last_outcome(&emulator), Outcome::Finished, "{summary}");
    assert_upstreams(&run.events, reconnects);
}
