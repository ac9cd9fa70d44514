//! Starts refused for the service's limits (429), under a daemon's lease:
//! back in line, no budget spent, nothing lost; and without one (the
//! filter), a failure like any other.

use std::sync::{Arc, Mutex};

use super::*;
use crate::engine::quota::Tier;
use crate::session::Retake;

/// A daemon's queue as a session sees it: every requeue is recorded and
/// waits `wait` for its turn.
#[derive(Clone, Default)]
struct Line {
    requeued: Arc<Mutex<Vec<Tier>>>,
}

impl Line {
    fn lease(&self, wait: Duration) -> Lease {
        let requeued = self.requeued.clone();
        Lease::new(|| {}, || -> Retake { Box::pin(async {}) }).with_requeue(move |tier| {
            requeued.lock().unwrap().push(tier);
            (1, Box::pin(sleep(wait)) as Retake)
        })
    }

    fn requeued(&self) -> Vec<Tier> {
        self.requeued.lock().unwrap().clone()
    }
}

fn queued(events: &[Event]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Queued { position } => Some(*position),
            _ => None,
        })
        .collect()
}

fn tight_budget() -> SessionConfig {
    SessionConfig {
        retry_budget: Duration::from_secs(1),
        ..config()
    }
}

#[tokio::test(start_paused = true)]
async fn a_refused_start_waits_in_line_without_spending_the_budget() {
    let engine = ScriptedEngine::new([Attempt::ErrorAfter(0, 429); 4], Attempt::Serve);
    let (audio, words) = speech_of(10_000);
    let line = Line::default();
    let outcome = stream_leased(
        on(&engine),
        Some(line.lease(Duration::from_secs(3))),
        &tight_budget(),
        &audio,
        &[Feed::Live(0, 10_000)],
        FAST,
    )
    .await;
    summary(&outcome);
    // Every word once, though 12 s were spent in line on a 1 s budget: the
    // audio went on into the replay buffer meanwhile.
    assert_eq!(finals(&outcome.events), expected(&words));
    assert_ended(&outcome, "eof", words.len());
    assert_eq!(queued(&outcome.events), [1, 1, 1, 1]);
    assert!(
        reconnects(&outcome.events).is_empty(),
        "a refusal is no outage: {:?}",
        outcome.events
    );
    assert_eq!(line.requeued(), [Tier::Unknown; 4]);
    let attempts = engine.log().attempts;
    assert_eq!(attempts.len(), 5);
    for pair in attempts.windows(2) {
        let apart = pair[1] - pair[0];
        assert!(
            apart >= Duration::from_secs(3) && apart < Duration::from_millis(3_100),
            "each try once its turn came: {apart:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn without_a_line_a_refused_start_spends_the_budget() {
    let engine = ScriptedEngine::new([], Attempt::ErrorAfter(0, 429));
    let (audio, _) = speech_of(10_000);
    let outcome = stream(
        on(&engine),
        &tight_budget(),
        &audio,
        &[Feed::Live(0, 10_000)],
        FAST,
    )
    .await;
    assert!(
        matches!(outcome.result, Err(Error::RetryBudgetSpent { .. })),
        "{:?}",
        outcome.result
    );
    assert!(queued(&outcome.events).is_empty());
}

#[tokio::test(start_paused = true)]
async fn past_the_connection_cap_a_start_is_tried_again_at_once_then_queued() {
    let (audio, words) = speech_of(6_000);
    // Twice: a fresh connection at once, no line, no event.
    let engine = ScriptedEngine::new([Attempt::Crowded; 2], Attempt::Serve);
    let line = Line::default();
    let outcome = stream_leased(
        on(&engine),
        Some(line.lease(Duration::from_secs(3))),
        &tight_budget(),
        &audio,
        &[Feed::Live(0, 6_000)],
        FAST,
    )
    .await;
    summary(&outcome);
    assert_eq!(finals(&outcome.events), expected(&words));
    assert!(line.requeued().is_empty());
    assert!(queued(&outcome.events).is_empty());
    let attempts = engine.log().attempts;
    assert_eq!(attempts.len(), 3);
    assert_eq!(attempts[2], attempts[0], "at once, in virtual time");
    // A third in a row is the streams' limit after all: in line.
    let engine = ScriptedEngine::new([Attempt::Crowded; 3], Attempt::Serve);
    let line = Line::default();
    let outcome = stream_leased(
        on(&engine),
        Some(line.lease(Duration::from_secs(3))),
        &tight_budget(),
        &audio,
        &[Feed::Live(0, 6_000)],
        FAST,
    )
    .await;
    summary(&outcome);
    assert_eq!(finals(&outcome.events), expected(&words));
    assert_eq!(line.requeued(), [Tier::Connections]);
    assert_eq!(queued(&outcome.events), [1]);
}

#[tokio::test(start_paused = true)]
async fn time_in_line_does_not_count_against_an_outage() {
    // The connection drops; the reconnects are refused three times (9 s in
    // line), then one fails to connect: that failure is within the budget.
    let engine = ScriptedEngine::new(
        [
            Attempt::DropAfter(3_000),
            Attempt::ErrorAfter(0, 429),
            Attempt::ErrorAfter(0, 429),
            Attempt::ErrorAfter(0, 429),
            Attempt::Refuse,
        ],
        Attempt::Serve,
    );
    let (audio, words) = speech_of(10_000);
    let line = Line::default();
    let config = SessionConfig {
        retry_budget: Duration::from_secs(2),
        ..config()
    };
    let outcome = stream_leased(
        on(&engine),
        Some(line.lease(Duration::from_secs(3))),
        &config,
        &audio,
        &[Feed::Live(0, 10_000)],
        FAST,
    )
    .await;
    summary(&outcome);
    assert_eq!(finals(&outcome.events), expected(&words));
    assert_eq!(queued(&outcome.events), [1, 1, 1]);
    let reconnects = reconnects(&outcome.events);
    assert_eq!(reconnects.len(), 1, "{reconnects:?}");
    let (reason, upstream, gap_ms) = &reconnects[0];
    // The refused connection opened no session.
    assert_eq!((reason.as_str(), *upstream), ("dropped", 5));
    // The gap says how long it was, queue included.
    assert!(*gap_ms >= 9_000, "{gap_ms}");
}
