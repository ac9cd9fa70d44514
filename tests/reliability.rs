//! Faults (issue 3): reconnect and replay, rotation, half-open, overflow,
//! slow consumer, retry policy.
//!
//! Each fault test streams at least 60 s of marker audio through the real
//! binary against its own emulator. sttpipe (`STTPIPE_PACE_FACTOR`) and the
//! emulator (`time_scale`) both run [`PACE`] times faster than real time; audio
//! timestamps stay audio time, so every word's `start_ms` is exact. A fault
//! that must happen once is injected at run time by a controller that waits
//! on the emulator's state (bounded), never on a guess of how long things take.

use std::future::Future;
use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::fcntl::{FcntlArg, fcntl};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use soniox_emulator::marker::Word;
use soniox_emulator::{Emulator, EmulatorConfig, Faults, Outcome};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::input::read_events_until;
use crate::util::{self, KEY, Output};

/// How many times faster than real time sttpipe and the emulator run.
const PACE: f64 = 8.0;

/// Bytes of 16 kHz mono pcm_s16le audio per ms.
const BYTES_PER_MS: usize = 32;

/// Bound on waiting for an emulator state or an output that a correct
/// sttpipe reaches within a few seconds: only a failure waits this long.
const WAIT: Duration = Duration::from_secs(30);

/// The reasons a `reconnect` event may give.
const REASONS: [&str; 4] = ["dropped", "error", "stalled", "rotation"];

/// `ms` of audio time (or of a protocol timer) as wall time at [`PACE`].
fn wall(ms: u64) -> Duration {
    Duration::from_millis(ms).div_f64(PACE)
}

/// The emulator's defaults, [`PACE`] times faster.
fn config() -> EmulatorConfig {
    EmulatorConfig {
        time_scale: PACE,
        ..EmulatorConfig::default()
    }
}

/// `sttpipe` pointed at `emulator`, [`PACE`] times faster.
fn sttpipe(emulator: &Emulator) -> Command {
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.env("STTPIPE_PACE_FACTOR", PACE.to_string());
    command
}

/// `total_ms` of 16 kHz mono audio with a word every 500 ms from 500 ms on.
fn speech(total_ms: u64) -> (Vec<Word>, Vec<u8>) {
    util::marker_audio((total_ms / 500 - 1) as usize, 500, total_ms)
}

/// How the test writes the audio to sttpipe's stdin.
#[derive(Debug, Clone, Copy)]
enum Feed {
    /// All at once, as from a file: sttpipe paces it.
    File,
    /// 100 ms chunks at [`PACE`] times real time, as from a microphone: a
    /// source that never waits, whatever happens upstream.
    Live,
}

/// One run of the binary, and how late the live input ever fell.
struct Run {
    out: Output,
    /// With [`Feed::Live`]: the most the writer ever fell behind its
    /// schedule, in ms of audio (a reader that stops reading shows here).
    input_lag_ms: u64,
}

/// Runs `command` with `audio` on stdin, to completion (bounded).
async fn run(command: Command, audio: Vec<u8>, feed: Feed) -> Run {
    let started = Instant::now();
    let mut child = util::spawn(command);
    let stdin = child.stdin.take().expect("stdin piped");
    let feeder = tokio::spawn(feed_audio(stdin, audio, feed));
    let out = util::finish(child, started).await;
    // sttpipe has exited: the writer is done, or fails at its next write.
    let input_lag_ms = tokio::time::timeout(Duration::from_secs(10), feeder)
        .await
        .expect("the input writer ends once sttpipe has exited")
        .expect("the input writer");
    Run { out, input_lag_ms }
}

/// Runs `command` like [`run`] while `controller` injects faults; fails if
/// the controller fails or has not finished when sttpipe exits.
async fn run_with_faults(
    command: Command,
    audio: Vec<u8>,
    feed: Feed,
    controller: impl Future<Output = ()> + Send + 'static,
) -> Run {
    let control = tokio::spawn(controller);
    let run = run(command, audio, feed).await;
    control.abort();
    match control.await {
        Ok(()) => run,
        Err(e) if e.is_panic() => panic!(
            "injecting the faults failed: {}\nsttpipe: {:?}; stderr:\n{}\nstdout tail:\n{}",
            panic_message(e.into_panic()),
            run.out.status,
            run.out.stderr,
            tail(&run.out.stdout)
        ),
        Err(_) => panic!(
            "sttpipe ended ({:?}) before every fault was injected; stderr:\n{}\nstdout tail:\n{}",
            run.out.status,
            run.out.stderr,
            tail(&run.out.stdout)
        ),
    }
}

/// Writes `audio` to stdin as `feed` says, then closes it. Returns the most
/// the writer fell behind its schedule, in ms of audio (0 for a file).
async fn feed_audio(mut stdin: ChildStdin, audio: Vec<u8>, feed: Feed) -> u64 {
    match feed {
        Feed::File => {
            // sttpipe may exit before reading everything (a failure): fine.
            let _ = stdin.write_all(&audio).await;
            0
        }
        Feed::Live => {
            const CHUNK_MS: u64 = 100;
            let start = tokio::time::Instant::now();
            let mut lag = Duration::ZERO;
            for (i, chunk) in audio.chunks(CHUNK_MS as usize * BYTES_PER_MS).enumerate() {
                let due = start + wall(CHUNK_MS * i as u64);
                tokio::time::sleep_until(due).await;
                if stdin.write_all(chunk).await.is_err() {
                    break;
                }
                lag = lag.max(tokio::time::Instant::now() - due);
            }
            (lag.as_secs_f64() * PACE * 1000.0) as u64
        }
    }
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map_or_else(|| "a panic".to_owned(), |s| (*s).to_owned()),
    }
}

/// The last lines of `text`, for failure messages.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Events of one type.
fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// Asserts the words, and says where they first differ.
fn assert_words(got: &[(String, u64)], want: &[(String, u64)]) {
    if got == want {
        return;
    }
    let at = got
        .iter()
        .zip(want)
        .position(|(g, w)| g != w)
        .unwrap_or(got.len().min(want.len()));
    let around = |v: &[(String, u64)]| v[at.saturating_sub(2)..(at + 4).min(v.len())].to_vec();
    panic!(
        "the words differ at index {at} (got {} words, want {}):\n got  {:?}\n want {:?}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    );
}

/// Asserts the last event is `end` with `reason` and `tokens` final tokens.
fn assert_end(events: &[Value], reason: &str, tokens: usize) {
    let end = events.last().expect("no events at all");
    assert_eq!(end["type"], "end", "the last event is not `end`: {end}");
    assert_eq!(end["reason"], reason, "{end}");
    assert_eq!(end["tokens"], tokens as u64, "{end}");
}

/// Asserts a stream that lost nothing: exit 0, every word once, in order,
/// with its exact `start_ms`; no overrun, no error; `end` last. Returns the
/// events.
fn assert_lossless(out: &Output, words: &[Word]) -> Vec<Value> {
    assert_eq!(
        out.code(),
        Some(0),
        "exit status; stderr:\n{}\nstdout tail:\n{}",
        out.stderr,
        tail(&out.stdout)
    );
    let events = out.events();
    assert_words(&util::final_words(&events), &util::expected(words));
    let overruns = of_type(&events, "overrun");
    assert!(overruns.is_empty(), "audio was lost: {overruns:?}");
    let errors = of_type(&events, "error");
    assert!(errors.is_empty(), "error events: {errors:?}");
    assert_end(&events, "eof", words.len());
    // The figures the README's Reliability section quotes.
    let reconnects = of_type(&events, "reconnect").len();
    eprintln!(
        "reliability figures: {} words, {} back once each, {reconnects} reconnects, 0 lost",
        words.len(),
        util::final_words(&events).len()
    );
    events
}

/// One `reconnect` event.
#[derive(Debug)]
struct Reconnect {
    /// Its position among all events.
    at: usize,
    reason: String,
    upstream: u64,
    gap_ms: u64,
    replayed_ms: u64,
}

/// The `reconnect` events, their fields checked: a known reason, a message,
/// numeric `gap_ms` and `replayed_ms`, and `upstream` indices from 2 on,
/// rising.
fn reconnects(events: &[Value]) -> Vec<Reconnect> {
    let found: Vec<Reconnect> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["type"] == "reconnect")
        .map(|(at, e)| {
            let number = |key: &str| {
                e[key]
                    .as_u64()
                    .unwrap_or_else(|| panic!("reconnect without a numeric {key}: {e}"))
            };
            let reason = e["reason"].as_str().unwrap_or_default().to_owned();
            assert!(
                REASONS.contains(&reason.as_str()),
                "reconnect with an unknown reason: {e}"
            );
            assert!(
                e["message"].as_str().is_some_and(|m| !m.is_empty()),
                "reconnect without a message: {e}"
            );
            Reconnect {
                at,
                reason,
                upstream: number("upstream"),
                gap_ms: number("gap_ms"),
                replayed_ms: number("replayed_ms"),
            }
        })
        .collect();
    let mut previous = 1;
    for r in &found {
        assert!(
            r.upstream > previous,
            "upstream indices must rise from 2 on: {found:?}"
        );
        previous = r.upstream;
    }
    found
}

fn reasons(reconnects: &[Reconnect]) -> Vec<&str> {
    reconnects.iter().map(|r| r.reason.as_str()).collect()
}

fn count_reason(reconnects: &[Reconnect], reason: &str) -> usize {
    reconnects.iter().filter(|r| r.reason == reason).count()
}

/// The `upstream` index of every final token, in output order: each token
/// has one, from 1 on, and they never go back.
fn token_upstreams(events: &[Value]) -> Vec<u64> {
    let upstreams: Vec<u64> = events
        .iter()
        .filter(|e| e["type"] == "token" && e["is_final"] == true)
        .map(|e| {
            e["upstream"]
                .as_u64()
                .filter(|&n| n >= 1)
                .unwrap_or_else(|| panic!("token without an upstream index from 1 on: {e}"))
        })
        .collect();
    assert!(
        upstreams.windows(2).all(|w| w[0] <= w[1]),
        "tokens' upstream indices go back: {upstreams:?}"
    );
    upstreams
}

/// Checks the tokens' upstream indices against the reconnect events: some
/// tokens came from a later upstream session than the first, and tokens from
/// upstream N > 1 only follow the reconnect event that announced N.
fn assert_upstreams(events: &[Value], reconnects: &[Reconnect]) -> Vec<u64> {
    let upstreams = token_upstreams(events);
    assert!(
        upstreams.iter().any(|&n| n > 1),
        "every token came from upstream 1: {upstreams:?}"
    );
    let tokens = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e["type"] == "token" && e["is_final"] == true);
    for ((at, token), &n) in tokens.zip(&upstreams) {
        if n > 1 {
            let announced = reconnects.iter().find(|r| r.upstream == n);
            assert!(
                announced.is_some_and(|r| r.at < at),
                "token from upstream {n} not after a reconnect to it: {token}; reconnects: {reconnects:?}"
            );
        }
    }
    upstreams
}

fn outcomes(emulator: &Emulator) -> Vec<Outcome> {
    emulator.sessions().iter().map(|s| s.outcome).collect()
}

fn count_outcome(emulator: &Emulator, outcome: Outcome) -> usize {
    emulator
        .sessions()
        .iter()
        .filter(|s| s.outcome == outcome)
        .count()
}

/// Audio the emulator received over all sessions, ms.
fn total_audio_ms(emulator: &Emulator) -> u64 {
    emulator.sessions().iter().map(|s| s.audio_ms).sum()
}

/// Case 1: The connection dropped every 10 s (each connection after 10 s of its
/// own audio, replay included): every drop is one `dropped` reconnect that
/// replays the uncovered audio; nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_dropped_every_10s_loses_nothing() {
    let emulator = util::emulator(EmulatorConfig {
        drop_after_audio_ms: Some(10_000),
        ..config()
    })
    .await;
    let (words, audio) = speech(60_000);
    let run = run(sttpipe(&emulator), audio, Feed::File).await;
    let events = assert_lossless(&run.out, &words);

    let reconnects = reconnects(&events);
    // No connection carries more than 10 s: 60 s need at least 6.
    assert!(reconnects.len() >= 5, "{reconnects:?}");
    for r in &reconnects {
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
    assert_eq!(sessions.last().unwrap().outcome, Outcome::Finished);
    let upstreams = assert_upstreams(&events, &reconnects);
    assert_eq!(upstreams.last(), Some(&(sessions.len() as u64)));
}

/// Case 2: One 503 "Cannot continue request" frame 20 s into the stream: one
/// `error` reconnect to upstream 2, replay, nothing lost, nothing twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_503_mid_stream_reconnects_and_replays() {
    let emulator = Arc::new(
        util::emulator(EmulatorConfig {
            error_after_audio_ms: Some((20_000, 503)),
            ..config()
        })
        .await,
    );
    let controller = {
        let emulator = Arc::clone(&emulator);
        async move {
            util::wait_for(WAIT, "a 503 mid-stream", || {
                emulator
                    .session(0)
                    .is_some_and(|s| s.outcome == Outcome::Error(503))
            })
            .await;
            emulator.clear_faults();
        }
    };
    let (words, audio) = speech(60_000);
    let run = run_with_faults(sttpipe(&emulator), audio, Feed::File, controller).await;
    let events = assert_lossless(&run.out, &words);

    let reconnects = reconnects(&events);
    assert_eq!(reasons(&reconnects), ["error"], "{reconnects:?}");
    assert_eq!(reconnects[0].upstream, 2);
    assert!(reconnects[0].replayed_ms > 0, "{reconnects:?}");
    assert_eq!(
        outcomes(&emulator),
        [Outcome::Error(503), Outcome::Finished]
    );
    let upstreams = assert_upstreams(&events, &reconnects);
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
    let emulator = Arc::new(
        util::emulator(EmulatorConfig {
            stall_after_audio_ms: Some(20_000),
            ..config()
        })
        .await,
    );
    let controller = {
        let emulator = Arc::clone(&emulator);
        async move {
            util::wait_for(WAIT, "the connection goes half-open", || {
                emulator
                    .session(0)
                    .is_some_and(|s| s.outcome == Outcome::Stalled)
            })
            .await;
            emulator.clear_faults();
            // Detection within 10 s of silence (scaled), plus slack for the
            // first backoff and a loaded machine.
            let bound = wall(10_000) + Duration::from_millis(1_500);
            util::wait_for(bound, "a new connection after the half-open one", || {
                emulator.counts().connected >= 2
            })
            .await;
        }
    };
    let (words, audio) = speech(60_000);
    let run = run_with_faults(sttpipe(&emulator), audio, Feed::File, controller).await;
    let events = assert_lossless(&run.out, &words);

    let reconnects = reconnects(&events);
    assert_eq!(reasons(&reconnects), ["stalled"], "{reconnects:?}");
    assert_eq!(reconnects[0].upstream, 2);
    assert!(reconnects[0].replayed_ms > 0, "{reconnects:?}");
    assert_eq!(outcomes(&emulator), [Outcome::Stalled, Outcome::Finished]);
    assert_upstreams(&events, &reconnects);
}

/// Case 4: The first three connects rejected (503, 503, then 429) after their
/// start request: retried with backoff while the audio is buffered; every
/// rejected connection is an upstream session, so the words come from
/// upstream 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_three_connects_rejected_are_retried() {
    let emulator = util::emulator(EmulatorConfig {
        reject_connects: vec![503, 503, 429],
        ..config()
    })
    .await;
    let (words, audio) = speech(60_000);
    let run = run(sttpipe(&emulator), audio, Feed::File).await;
    let events = assert_lossless(&run.out, &words);

    let reconnects = reconnects(&events);
    assert!(!reconnects.is_empty(), "no reconnect event");
    for r in &reconnects {
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
    let upstreams = assert_upstreams(&events, &reconnects);
    assert!(upstreams.iter().all(|&n| n == 4), "{upstreams:?}");
}

/// Case 5: `--max-session 15`: planned rotations, make-before-break, each a
/// `rotation` reconnect with no gap; no word lost or said twice. The
/// emulator refuses more than 20 s of audio on one connection (a fatal 400),
/// so a missed rotation fails loudly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_session_rotates_without_gap_or_duplicate() {
    let emulator = util::emulator(EmulatorConfig {
        max_stream_ms: 20_000,
        ..config()
    })
    .await;
    let (words, audio) = speech(64_000);
    let mut command = sttpipe(&emulator);
    command.args(["--max-session", "15"]);
    let run = run(command, audio, Feed::File).await;
    let events = assert_lossless(&run.out, &words);

    let reconnects = reconnects(&events);
    // Session 1 carries at most 17 s (15 s and the 2 s lead), each later one
    // at most 15 s of new audio: 64 s take at least 4 rotations.
    assert!(reconnects.len() >= 3, "{reconnects:?}");
    for r in &reconnects {
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
    let upstreams = assert_upstreams(&events, &reconnects);
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
    let emulator = Arc::new(
        util::emulator(EmulatorConfig {
            reject_connects: vec![503, 503, 429],
            drop_after_audio_ms: Some(10_000),
            // Above what a connection carries after the stall (its replay
            // and 30 s), far below a stream that never rotates.
            max_stream_ms: 50_000,
            ..config()
        })
        .await,
    );
    let controller = {
        let emulator = Arc::clone(&emulator);
        async move {
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
        }
    };
    let (words, audio) = speech(100_000);
    let mut command = sttpipe(&emulator);
    command.args(["--max-session", "30"]);
    let run = run_with_faults(command, audio, Feed::Live, controller).await;
    let events = assert_lossless(&run.out, &words);
    assert!(
        run.input_lag_ms < 5_000,
        "the live input waited {} ms (audio time)",
        run.input_lag_ms
    );

    let reconnects = reconnects(&events);
    let sessions = emulator.sessions();
    let summary = format!(
        "reconnects: {reconnects:?}\nsessions: {:?}",
        sessions
            .iter()
            .map(|s| (s.outcome, s.audio_ms))
            .collect::<Vec<_>>()
    );
    let dropped = count_outcome(&emulator, Outcome::Dropped);
    assert_eq!(reconnects[0].reason, "error", "{summary}");
    // The rejections (one or more events) and the 503 mid-stream.
    assert!(count_reason(&reconnects, "error") >= 2, "{summary}");
    assert!(dropped >= 2, "{summary}");
    assert_eq!(count_reason(&reconnects, "dropped"), dropped, "{summary}");
    assert_eq!(count_reason(&reconnects, "stalled"), 1, "{summary}");
    assert!(count_reason(&reconnects, "rotation") >= 1, "{summary}");
    for r in &reconnects {
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
    assert_eq!(sessions.last().unwrap().outcome, Outcome::Finished);
    assert_upstreams(&events, &reconnects);
}

/// Case 6, continued: drops every 10 s of a connection's audio and
/// `--max-session 15` together, so drops land around handovers (a
/// rotation's next session opening, or just taken over). Whichever comes
/// first, nothing is lost or said twice, and every new upstream session is
/// announced before its tokens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drops_and_rotations_together_lose_nothing() {
    let emulator = util::emulator(EmulatorConfig {
        drop_after_audio_ms: Some(10_000),
        ..config()
    })
    .await;
    let (words, audio) = speech(60_000);
    let mut command = sttpipe(&emulator);
    command.args(["--max-session", "15"]);
    let run = run(command, audio, Feed::File).await;
    let events = assert_lossless(&run.out, &words);

    let reconnects = reconnects(&events);
    let summary = format!(
        "reconnects: {reconnects:?}\nsessions: {:?}",
        emulator
            .sessions()
            .iter()
            .map(|s| (s.outcome, s.audio_ms))
            .collect::<Vec<_>>()
    );
    // No connection carries more than 10 s: 60 s need at least 6.
    assert!(reconnects.len() >= 5, "{summary}");
    for r in &reconnects {
        assert!(r.reason == "dropped" || r.reason == "rotation", "{summary}");
    }
    assert_eq!(
        emulator.sessions().last().unwrap().outcome,
        Outcome::Finished,
        "{summary}"
    );
    assert_upstreams(&events, &reconnects);
}

/// Collects a child's stdout events in the background.
struct Collector {
    events: Arc<Mutex<Vec<Value>>>,
    task: JoinHandle<()>,
}

impl Collector {
    fn start(stdout: ChildStdout) -> Collector {
        let events = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&events);
        let task = tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                let event: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}"));
                sink.lock().unwrap().push(event);
            }
        });
        Collector { events, task }
    }

    fn final_count(&self) -> usize {
        util::final_words(&self.events.lock().unwrap()).len()
    }

    /// Every event, once stdout has closed (bounded).
    async fn finish(self) -> Vec<Value> {
        tokio::time::timeout(WAIT, self.task)
            .await
            .expect("stdout closes")
            .expect("reading stdout");
        Arc::try_unwrap(self.events)
            .expect("the reader is done")
            .into_inner()
            .unwrap()
    }
}

/// Reads a child's stderr in the background so it never blocks.
fn drain_stderr(child: &mut tokio::process::Child) -> JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr piped");
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
        text
    })
}

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
    let emulator = util::emulator(config()).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("mic.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut command = sttpipe(&emulator);
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
    let emulator = util::emulator(config()).await;
    let (words, audio) = speech(60_000);
    let mut command = sttpipe(&emulator);
    command.arg("--partials");
    let mut child = util::spawn(command);
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

/// Once the first session streams, faults for what follows: it drops after
/// `drop_after_ms` of audio and every later connect is refused (503).
async fn drop_then_refuse_after_first_session(emulator: &Emulator, drop_after_ms: u64) {
    util::wait_for(WAIT, "the first session streams", || {
        emulator.session(0).is_some_and(|s| s.audio_ms > 0)
    })
    .await;
    // Session 0 has started: the rejections are for the next ones.
    emulator.set_faults(Faults {
        drop_after_audio_ms: Some(drop_after_ms),
        reject_connects: vec![503; 10_000],
        ..Faults::default()
    });
}

/// Case 9: `--replay-buffer 10` and an outage of about 30 s of audio (a drop 15 s
/// in, then every connect rejected for 30 s scaled) on a live stream: the
/// oldest audio is dropped, and `overrun` events name exactly the lost
/// words; every other word arrives once, in order, at its exact time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_buffer_overflow_names_exactly_the_lost_words() {
    const TOTAL_MS: u64 = 90_000;
    let emulator = Arc::new(util::emulator(config()).await);
    let controller = {
        let emulator = Arc::clone(&emulator);
        async move {
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
        }
    };
    let (words, audio) = speech(TOTAL_MS);
    let mut command = sttpipe(&emulator);
    command.args(["--replay-buffer", "10"]);
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
    assert_eq!(sessions.last().unwrap().outcome, Outcome::Finished);
    assert!(
        sessions[1..sessions.len() - 1]
            .iter()
            .all(|s| s.outcome == Outcome::Error(503)),
        "{:?}",
        outcomes(&emulator)
    );
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
        let emulator = util::emulator(EmulatorConfig {
            error_after_audio_ms: Some((2_000, code)),
            ..config()
        })
        .await;
        let (_, audio) = speech(8_000);
        let run = run(sttpipe(&emulator), audio, Feed::File).await;
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

/// 408, 429 and 500 frames mid-stream are retried like 503: one `error`
/// reconnect, nothing lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retryable_error_classes_reconnect() {
    for code in [408, 429, 500] {
        let emulator = Arc::new(
            util::emulator(EmulatorConfig {
                error_after_audio_ms: Some((4_000, code)),
                ..config()
            })
            .await,
        );
        let controller = {
            let emulator = Arc::clone(&emulator);
            async move {
                util::wait_for(WAIT, "the error frame", || {
                    emulator
                        .session(0)
                        .is_some_and(|s| s.outcome == Outcome::Error(code))
                })
                .await;
                emulator.clear_faults();
            }
        };
        let (words, audio) = speech(10_000);
        let run = run_with_faults(sttpipe(&emulator), audio, Feed::File, controller).await;
        let events = assert_lossless(&run.out, &words);
        let reconnects = reconnects(&events);
        assert_eq!(reasons(&reconnects), ["error"], "{code}: {reconnects:?}");
        assert_eq!(
            outcomes(&emulator),
            [Outcome::Error(code), Outcome::Finished],
            "{code}"
        );
        assert_upstreams(&events, &reconnects);
    }
}

/// A service that worked and then refuses every reconnect: sttpipe gives up
/// after `--retry-budget` with exit 75, having said nothing wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_spent_after_a_working_session_exits_75() {
    let emulator = Arc::new(util::emulator(config()).await);
    let controller = {
        let emulator = Arc::clone(&emulator);
        async move {
            drop_then_refuse_after_first_session(&emulator, 3_000).await;
        }
    };
    let (words, audio) = speech(30_000);
    let mut command = sttpipe(&emulator);
    command.args(["--retry-budget", "10"]);
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
    let mut command = util::sttpipe(Some(&url), Some(KEY));
    command
        .env("STTPIPE_PACE_FACTOR", PACE.to_string())
        .args(["--retry-budget", "8"]);
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
