//! The session core on the scripted engine ([`crate::engine::scripted`]),
//! on tokio's paused clock: pacing, backoff and timers run in virtual time,
//! so a stream of seconds takes milliseconds. Each test feeds speech whose
//! words are known (a word of 300 ms every 500 ms) and checks the events
//! against them: every word once, in order, at its exact time.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tokio_util::sync::CancellationToken;

use super::{EndReason, Lease, SessionInput, Summary, run};
use crate::audio::AudioFormat;
use crate::config::{MAX_LEAD, RecognitionOptions, SessionConfig, Timing};
use crate::engine::scripted::{Attempt, ScriptedEngine, Word, speech};
use crate::engine::{Engine, SessionEngines};
use crate::error::{Error, Result};
use crate::event::Event;

// Refusals at start under a daemon's lease.
mod refusals;

/// pcm_s16le, 16 kHz, mono.
const BYTES_PER_MS: u64 = 32;
/// The size of an input chunk, as the reader thread hands it over.
const CHUNK_MS: u64 = 100;
/// Virtual time after which a session that has not ended is stuck.
const HANG: Duration = Duration::from_secs(3_600);

/// The filter's defaults, for 16 kHz mono pcm_s16le, in real time.
pub(super) fn config() -> SessionConfig {
    SessionConfig {
        recognition: RecognitionOptions::default(),
        audio: AudioFormat::default_pcm(),
        partials: false,
        idle_close: None,
        drain_timeout: Duration::from_secs(10),
        max_lead: MAX_LEAD,
        replay_buffer: Duration::from_secs(300),
        max_session: Duration::from_secs(300 * 60),
        retry_budget: Duration::from_secs(60),
        connect_budget: Duration::from_secs(60),
        tell_user: None,
        timing: Timing::REAL,
    }
}

/// A word of 300 ms every 500 ms, from 500 ms on.
fn speech_of(total_ms: u64) -> (Vec<u8>, Vec<Word>) {
    speech(total_ms, 500, 300)
}

fn on(engine: &ScriptedEngine) -> SessionEngines {
    SessionEngines {
        engine: Engine::Scripted(engine.clone()),
        fallback: None,
    }
}

fn with_fallback(engine: &ScriptedEngine, fallback: &ScriptedEngine) -> SessionEngines {
    SessionEngines {
        engine: Engine::Scripted(engine.clone()),
        fallback: Some(Engine::Scripted(fallback.clone())),
    }
}

/// One step of the input.
#[derive(Debug, Clone, Copy)]
enum Feed {
    /// Audio from..to ms, as fast as the session takes it (a file).
    File(u64, u64),
    /// Audio from..to ms at real time (a microphone).
    Live(u64, u64),
    /// No input for a while; the input stays open.
    Pause(Duration),
    /// A finalize (SIGUSR1).
    Finalize,
    /// `stop` is cancelled (a signal); the input stays open.
    Stop,
}

/// How the events are taken.
#[derive(Debug, Clone, Copy)]
struct Consumer {
    /// The event channel's bound.
    queue: usize,
    /// Time taken over each event.
    per_event: Duration,
}

/// A consumer that keeps up.
const FAST: Consumer = Consumer {
    queue: 4096,
    per_event: Duration::ZERO,
};

/// A run of the session core.
struct Outcome {
    result: Result<Summary>,
    events: Vec<Event>,
    /// Virtual time it took.
    took: Duration,
}

/// Runs a session on `engines` fed `feed` of `audio`, then the end of input.
async fn stream(
    engines: SessionEngines,
    config: &SessionConfig,
    audio: &[u8],
    feed: &[Feed],
    consumer: Consumer,
) -> Outcome {
    stream_leased(engines, None, config, audio, feed, consumer).await
}

/// [`stream`], holding `lease` (as a daemon's session does).
async fn stream_leased(
    engines: SessionEngines,
    lease: Option<Lease>,
    config: &SessionConfig,
    audio: &[u8],
    feed: &[Feed],
    consumer: Consumer,
) -> Outcome {
    let began = Instant::now();
    let (input_tx, input) = mpsc::channel(16);
    let (events_tx, mut events_rx) = mpsc::channel(consumer.queue);
    let stop = CancellationToken::new();
    let feeder = feed_input(input_tx, audio, feed, stop.clone());
    let collector = async {
        let mut events = Vec::new();
        while let Some(event) = events_rx.recv().await {
            events.push(event);
            sleep(consumer.per_event).await;
        }
        events
    };
    let session = run(
        engines,
        lease,
        config,
        "test".into(),
        input,
        events_tx,
        stop,
    );
    // A session that waits for nothing would hang the test: virtual time
    // jumps to this bound instead.
    let (result, (), events) =
        tokio::time::timeout(HANG, async { tokio::join!(session, feeder, collector) })
            .await
            .expect("the session ended");
    Outcome {
        result,
        events,
        took: began.elapsed(),
    }
}

async fn feed_input(
    input: mpsc::Sender<SessionInput>,
    audio: &[u8],
    feed: &[Feed],
    stop: CancellationToken,
) {
    let chunk = |ms: u64| {
        let to = (ms + CHUNK_MS) * BYTES_PER_MS;
        Bytes::copy_from_slice(&audio[(ms * BYTES_PER_MS) as usize..to as usize])
    };
    for step in feed {
        let sent = match *step {
            Feed::File(from, to) | Feed::Live(from, to) => {
                let live = matches!(step, Feed::Live(..));
                let mut sent = true;
                for ms in (from..to).step_by(CHUNK_MS as usize) {
                    sent = input.send(SessionInput::Audio(chunk(ms))).await.is_ok();
                    if !sent {
                        break;
                    }
                    if live {
                        sleep(Duration::from_millis(CHUNK_MS)).await;
                    }
                }
                sent
            }
            Feed::Pause(pause) => {
                sleep(pause).await;
                true
            }
            Feed::Finalize => input.send(SessionInput::Finalize).await.is_ok(),
            Feed::Stop => {
                stop.cancel();
                // Keep the input open, as a reader does until it is told.
                input.closed().await;
                false
            }
        };
        if !sent {
            return;
        }
    }
}

/// The final tokens given out: text, start, end.
fn finals(events: &[Event]) -> Vec<(String, u64, u64)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Token(t) => Some((
                t.text.clone(),
                t.start_ms.unwrap_or_default(),
                t.end_ms.unwrap_or_default(),
            )),
            _ => None,
        })
        .collect()
}

/// What [`finals`] should be for `words`.
fn expected(words: &[Word]) -> Vec<(String, u64, u64)> {
    words
        .iter()
        .map(|w| (w.text.clone(), w.start_ms, w.end_ms))
        .collect()
}

/// The upstream session that gave out the final token `text`.
fn upstream_of(events: &[Event], text: &str) -> Option<u32> {
    events.iter().find_map(|event| match event {
        Event::Token(t) if t.text == text => t.upstream,
        _ => None,
    })
}

/// The `reconnect` events: reason, upstream, gap.
fn reconnects(events: &[Event]) -> Vec<(String, u32, u64)> {
    events
        .iter()
        .filter_map(|event| match event {
            Event::Reconnect {
                reason,
                upstream,
                gap_ms,
                ..
            } => Some((reason.clone(), *upstream, *gap_ms)),
            _ => None,
        })
        .collect()
}

/// Checks that the stream started, then ended last, for `reason`, having
/// given out `tokens` final tokens.
fn assert_ended(outcome: &Outcome, reason: &str, tokens: usize) {
    let events = &outcome.events;
    assert!(
        events.iter().any(|e| matches!(e, Event::Start { .. })),
        "no start: {events:?}"
    );
    match events.last() {
        Some(Event::End {
            reason: got,
            tokens: count,
            ..
        }) => {
            assert_eq!(got, reason);
            assert_eq!(*count, tokens as u64);
        }
        other => panic!("the last event is {other:?}, not end"),
    }
}

fn summary(outcome: &Outcome) -> &Summary {
    match &outcome.result {
        Ok(summary) => summary,
        Err(err) => panic!("the session failed: {err}; events: {:?}", outcome.events),
    }
}

#[tokio::test(start_paused = true)]
async fn a_file_gives_every_word_once_at_real_time_pace() {
    let engine = ScriptedEngine::serving();
    let (audio, words) = speech_of(10_000);
    let outcome = stream(
        on(&engine),
        &config(),
        &audio,
        &[Feed::File(0, 10_000)],
        FAST,
    )
    .await;
    assert_eq!(finals(&outcome.events), expected(&words));
    assert_ended(&outcome, "eof", words.len());
    let summary = summary(&outcome);
    assert_eq!((summary.reason, summary.audio_ms), (EndReason::Eof, 10_000));
    assert_eq!(summary.upstreams, 1);
    // A 2 s burst, then real time.
    assert!(
        outcome.took >= Duration::from_millis(7_900) && outcome.took <= Duration::from_secs(8),
        "took {:?}",
        outcome.took
    );
    assert!(engine.log().sessions[0].ended, "the audio was ended");
}

#[tokio::test(start_paused = true)]
async fn a_dropped_connection_is_replayed_from_a_final_boundary() {
    // Dropped at 3 s. Its last answer (2.9 s, lag 300 ms) made w1..w4 final
    // and left w5 (2500..2800) whole but not final; its final point trails
    // by 500 ms, at 2000 ms: w4's start. So the replay starts at 2000 ms,
    // hears w4 again, and that duplicate must go.
    let engine = ScriptedEngine::new([Attempt::DropAfter(3_000)], Attempt::Serve)
        .lag_ms(300)
        .trailing_final_ms(500);
    let (audio, words) = speech_of(8_000);
    let outcome = stream(
        on(&engine),
        &config(),
        &audio,
        &[Feed::File(0, 8_000)],
        FAST,
    )
    .await;
    assert_eq!(finals(&outcome.events), expected(&words));
    assert_eq!(upstream_of(&outcome.events, " w4"), Some(1));
    assert_eq!(upstream_of(&outcome.events, " w5"), Some(2));
    let log = engine.log();
    assert_eq!(log.sessions.len(), 2);
    assert_eq!(log.sessions[1].audio_ms, 6_000, "replayed from 2000 ms");
    assert!(!log.sessions[1].began_mid_word);
    let reconnects = reconnects(&outcome.events);
    assert_eq!(reconnects.len(), 1, "{reconnects:?}");
    assert_eq!((reconnects[0].0.as_str(), reconnects[0].1), ("dropped", 2));
    assert_ended(&outcome, "eof", words.len());
}

#[tokio::test(start_paused = true)]
async fn a_service_error_mid_stream_is_retried_at_once_then_with_backoff() {
    // A 503 after a working session: retried at once; that attempt is
    // refused, so the outage goes on with backoff until one answers.
    let engine = ScriptedEngine::new(
        [
            Attempt::ErrorAfter(2_000, 503),
            Attempt::Refuse,
            Attempt::Refuse,
        ],
        Attempt::Serve,
    );
    let (audio, words) = speech_of(6_000);
    let outcome = stream(
        on(&engine),
        &config(),
        &audio,
        &[Feed::Live(0, 6_000)],
        FAST,
    )
    .await;
    assert_eq!(finals(&outcome.events), expected(&words));
    let attempts = engine.log().attempts;
    assert_eq!(attempts.len(), 4);
    let waits: Vec<u128> = attempts
        .windows(2)
        .map(|w| (w[1] - w[0]).as_millis())
        .collect();
    // The 503 came with the chunk that reached 2 s, read 1.9 s in; then two
    // backoffs, 500 ms and 1 s, each jittered down by up to half (the first,
    // 250 ms, went unused: a session that had worked is retried at once).
    assert_eq!(waits[0], 1_900, "{waits:?}");
    assert!((250..500).contains(&waits[1]), "{waits:?}");
    assert!((500..1_000).contains(&waits[2]), "{waits:?}");
    let reconnects = reconnects(&outcome.events);
    assert_eq!(reconnects.len(), 1, "one outage, one event: {reconnects:?}");
    let (reason, upstream, gap_ms) = &reconnects[0];
    assert_eq!((reason.as_str(), *upstream), ("error", 2));
    // From the 503 to the first answer, which came as the last attempt did.
    assert_eq!(u128::from(*gap_ms), (attempts[3] - attempts[1]).as_millis());
}

#[tokio::test(start_paused = true)]
async fn rotation_hands_over_at_a_final_token_boundary() {
    // A 3 s cap: each upstream session is replaced after 2 s.
    let config = SessionConfig {
        max_session: Duration::from_secs(3),
        ..config()
    };
    let engine = ScriptedEngine::serving();
    let (audio, words) = speech_of(12_000);
    let outcome = stream(on(&engine), &config, &audio, &[Feed::File(0, 12_000)], FAST).await;
    assert_eq!(finals(&outcome.events), expected(&words));
    let log = engine.log();
    assert!(log.sessions.len() >= 5, "{log:?}");
    for (i, session) in log.sessions.iter().enumerate() {
        assert!(!session.began_mid_word, "session {} began mid-word", i + 1);
    }
    let reconnects = reconnects(&outcome.events);
    assert_eq!(reconnects.len(), log.sessions.len() - 1);
    for (i, (reason, upstream, gap_ms)) in reconnects.iter().enumerate() {
        assert_eq!(
            (reason.as_str(), *upstream, *gap_ms),
            ("rotation", i as u32 + 2, 0)
        );
    }
    // Each session took over where the one before stopped giving out.
    let upstreams: Vec<u32> = outcome
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Token(t) => t.upstream,
            _ => None,
        })
        .collect();
    assert!(upstreams.is_sorted(), "{upstreams:?}");
    assert_eq!(upstreams.last().copied(), Some(log.sessions.len() as u32));
    assert_eq!(summary(&outcome).upstreams, log.sessions.len() as u32);
}

#[tokio::test(start_paused = true)]
async fn the_fallback_goes_on_from_the_first_audio_no_final_covers() {
    // Dropped at 3 s (its last answer covered up to w5's start, 2500 ms),
    // then unreachable until the 5 s budget is spent.
    let engine = ScriptedEngine::new([Attempt::DropAfter(3_000)], Attempt::Refuse);
    let fallback = ScriptedEngine::serving();
    let config = SessionConfig {
        retry_budget: Duration::from_secs(5),
        ..config()
    };
    let (audio, words) = speech_of(12_000);
    let outcome = stream(
        with_fallback(&engine, &fallback),
        &config,
        &audio,
        &[Feed::Live(0, 12_000)],
        FAST,
    )
    .await;
    let fallbacks: Vec<u64> = outcome
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Fallback { from_ms, .. } => Some(*from_ms),
            _ => None,
        })
        .collect();
    assert_eq!(fallbacks, [2_500]);
    assert_eq!(finals(&outcome.events), expected(&words));
    assert_eq!(upstream_of(&outcome.events, " w4"), Some(1));
    assert_eq!(upstream_of(&outcome.events, " w5"), Some(2));
    let log = fallback.log();
    assert_eq!(log.sessions.len(), 1);
    assert_eq!(log.sessions[0].audio_ms, 12_000 - 2_500);
    assert!(
        engine.log().attempts.len() > 2,
        "the service was retried first"
    );
    assert_ended(&outcome, "eof", words.len());
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_service_falls_back_at_once() {
    let engine = ScriptedEngine::new([], Attempt::Refuse);
    let fallback = ScriptedEngine::serving();
    let (audio, words) = speech_of(4_000);
    let outcome = stream(
        with_fallback(&engine, &fallback),
        &config(),
        &audio,
        &[Feed::File(0, 4_000)],
        FAST,
    )
    .await;
    // `start` first, always; it names the engine asked for.
    assert!(
        matches!(outcome.events[0], Event::Start { .. }),
        "{:?}",
        outcome.events[0]
    );
    assert!(
        matches!(outcome.events[1], Event::Fallback { from_ms: 0, .. }),
        "{:?}",
        outcome.events[1]
    );
    assert_eq!(
        engine.log().attempts.len(),
        1,
        "no retry while a fallback waits"
    );
    assert_eq!(finals(&outcome.events), expected(&words));
    assert!(
        outcome.took < Duration::from_secs(3),
        "took {:?}",
        outcome.took
    );
}

#[tokio::test(start_paused = true)]
async fn a_rejected_key_is_not_retried_and_ends_with_an_error() {
    let engine = ScriptedEngine::new([], Attempt::Reject);
    let (audio, _) = speech_of(4_000);
    let outcome = stream(
        on(&engine),
        &config(),
        &audio,
        &[Feed::File(0, 4_000)],
        FAST,
    )
    .await;
    assert!(
        matches!(outcome.result, Err(Error::Service { code: 401, .. })),
        "{:?}",
        outcome.result.as_ref().err()
    );
    assert_eq!(engine.log().attempts.len(), 1);
    let n = outcome.events.len();
    assert!(n >= 2, "{:?}", outcome.events);
    assert!(matches!(&outcome.events[n - 2], Event::Error { code, .. } if code == "service"));
    assert_ended(&outcome, "error", 0);
}

#[tokio::test(start_paused = true)]
async fn a_slow_consumer_loses_only_partials() {
    let config = SessionConfig {
        partials: true,
        ..config()
    };
    let (audio, words) = speech_of(10_000);
    let feed = [Feed::File(0, 10_000)];
    let engine = ScriptedEngine::serving();
    let fast = stream(on(&engine), &config, &audio, &feed, FAST).await;
    let slow_consumer = Consumer {
        queue: 4,
        per_event: Duration::from_millis(200),
    };
    let slow = stream(on(&engine), &config, &audio, &feed, slow_consumer).await;
    // Everything but the partials, as it was given out to a fast consumer
    // (bar the wall time in `end`).
    let kept = |events: &[Event]| -> Vec<Event> {
        events
            .iter()
            .filter(|e| !matches!(e, Event::Partial { .. }))
            .map(|e| match e {
                Event::End {
                    audio_ms,
                    tokens,
                    reason,
                    ..
                } => Event::End {
                    audio_ms: *audio_ms,
                    tokens: *tokens,
                    duration_ms: 0,
                    reason: reason.clone(),
                },
                other => other.clone(),
            })
            .collect()
    };
    assert_eq!(kept(&slow.events), kept(&fast.events));
    assert_eq!(finals(&slow.events), expected(&words));
    assert_ended(&slow, "eof", words.len());
    let partials = |events: &[Event]| {
        events
            .iter()
            .filter(|e| matches!(e, Event::Partial { .. }))
            .count()
    };
    assert!(
        partials(&slow.events) < partials(&fast.events) / 2,
        "partials: {} slow, {} fast",
        partials(&slow.events),
        partials(&fast.events)
    );
}

#[tokio::test(start_paused = true)]
async fn an_idle_upstream_is_closed_and_a_new_one_opened_when_audio_returns() {
    let config = SessionConfig {
        idle_close: Some(Duration::from_secs(2)),
        ..config()
    };
    let engine = ScriptedEngine::serving();
    let (audio, words) = speech_of(6_000);
    let feed = [
        Feed::Live(0, 3_000),
        Feed::Pause(Duration::from_secs(5)),
        Feed::Live(3_000, 6_000),
    ];
    let outcome = stream(on(&engine), &config, &audio, &feed, FAST).await;
    assert_eq!(finals(&outcome.events), expected(&words));
    let log = engine.log();
    assert_eq!(log.sessions.len(), 2, "{log:?}");
    assert!(
        log.sessions[0].ended,
        "the idle session was ended, not dropped"
    );
    assert_eq!(log.sessions[0].audio_ms, 3_000);
    assert_eq!(log.sessions[1].audio_ms, 3_000);
    assert!(
        reconnects(&outcome.events).is_empty(),
        "an idle close is no outage"
    );
}

#[tokio::test(start_paused = true)]
async fn a_finalize_makes_everything_so_far_final() {
    // With a 5 s lag nothing would be final before the end of input.
    let engine = ScriptedEngine::serving().lag_ms(5_000);
    let (audio, words) = speech_of(5_000);
    let feed = [
        Feed::Live(0, 2_400),
        Feed::Finalize,
        Feed::Live(2_400, 5_000),
    ];
    let outcome = stream(on(&engine), &config(), &audio, &feed, FAST).await;
    assert_eq!(finals(&outcome.events), expected(&words));
    let at = outcome
        .events
        .iter()
        .position(|e| matches!(e, Event::Finalized { .. }))
        .expect("a finalized event");
    assert_eq!(
        outcome.events[at],
        Event::Finalized {
            end_ms: Some(2_300),
            silent_until_ms: Some(2_400)
        }
    );
    let before: Vec<_> = finals(&outcome.events[..at]);
    assert_eq!(before, expected(&words[..4]), "w1..w4 end before 2400 ms");
    assert_eq!(engine.log().sessions[0].finalizes, 1);
}

#[tokio::test(start_paused = true)]
async fn an_overrun_names_the_lost_audio_and_loses_nothing_else() {
    // 2 s of replay buffer; dropped at 2 s (covered up to w3's start, 1500
    // ms), then refused for longer than the buffer holds.
    let config = SessionConfig {
        replay_buffer: Duration::from_secs(2),
        ..config()
    };
    // Backoffs of 0, then 0.5, 1, 2 and 4 s, jittered down by up to half.
    let refusals = [Attempt::Refuse; 4];
    let engine = ScriptedEngine::new(
        std::iter::once(Attempt::DropAfter(2_000)).chain(refusals),
        Attempt::Serve,
    );
    let (audio, words) = speech_of(14_000);
    let outcome = stream(on(&engine), &config, &audio, &[Feed::Live(0, 14_000)], FAST).await;
    let overruns: Vec<(u64, u64)> = outcome
        .events
        .iter()
        .filter_map(|e| match e {
            Event::Overrun { start_ms, end_ms } => Some((*start_ms, *end_ms)),
            _ => None,
        })
        .collect();
    let [(lost_from, lost_to)] = overruns[..] else {
        panic!("one overrun, not {overruns:?}");
    };
    assert_eq!(lost_from, 1_500);
    assert!(lost_to > lost_from + 1_000, "lost {lost_from}..{lost_to}");
    // Whole words outside the lost range once; a word it cut, from its end.
    let want: Vec<(String, u64, u64)> = words
        .iter()
        .filter(|w| w.end_ms <= lost_from || w.end_ms > lost_to)
        .map(|w| {
            let start_ms = if w.end_ms > lost_to {
                w.start_ms.max(lost_to)
            } else {
                w.start_ms
            };
            (w.text.clone(), start_ms, w.end_ms)
        })
        .collect();
    assert_eq!(finals(&outcome.events), want);
}

#[tokio::test(start_paused = true)]
async fn a_stop_ends_the_audio_and_drains_the_last_finals() {
    let engine = ScriptedEngine::serving();
    let (audio, words) = speech_of(20_000);
    let feed = [Feed::Live(0, 4_000), Feed::Stop];
    let outcome = stream(on(&engine), &config(), &audio, &feed, FAST).await;
    let summary = summary(&outcome);
    assert_eq!(
        (summary.reason, summary.audio_ms),
        (EndReason::Stopped, 4_000)
    );
    // w1..w7 end by 3800 ms; the end of audio made w7 final with no lag.
    assert_eq!(finals(&outcome.events), expected(&words[..7]));
    assert!(engine.log().sessions[0].ended);
    assert_ended(&outcome, "signal", 7);
}
