//! The fault tests' harness: emulators with fault set-ups, sttpipe run at
//! [`PACE`] times real time with its input fed as a file or live, faults
//! injected while it runs by a controller that waits on the emulator's state
//! (bounded), and the checks the cases share.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use soniox_emulator::marker::Word;
use soniox_emulator::{Emulator, EmulatorConfig, Faults, Outcome};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio::task::JoinHandle;

use crate::util::{self, KEY, Output};

/// How many times faster than real time sttpipe and the emulator run.
pub(crate) const PACE: f64 = 8.0;

/// Bytes of 16 kHz mono pcm_s16le audio per ms.
pub(crate) const BYTES_PER_MS: usize = 32;

/// Bound on waiting for an emulator state or an output that a correct
/// sttpipe reaches within a few seconds: only a failure waits this long.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// The reasons a `reconnect` event may give.
const REASONS: [&str; 4] = ["dropped", "error", "stalled", "rotation"];

/// `ms` of audio time (or of a protocol timer) as wall time at [`PACE`].
pub(crate) fn wall(ms: u64) -> Duration {
    Duration::from_millis(ms).div_f64(PACE)
}

// ---------------------------------------------------------------------------
// The emulator and its faults.

/// An emulator with `config`, [`PACE`] times faster whatever `config` says;
/// shared, so that a controller can change its faults while sttpipe runs.
pub(crate) async fn emulator(config: EmulatorConfig) -> Arc<Emulator> {
    Arc::new(
        util::emulator(EmulatorConfig {
            time_scale: PACE,
            ..config
        })
        .await,
    )
}

/// A controller: runs `inject` on its own handle to `emulator`, to be
/// passed to [`stream`].
pub(crate) fn control<F>(emulator: &Arc<Emulator>, inject: impl FnOnce(Arc<Emulator>) -> F) -> F
where
    F: Future<Output = ()> + Send + 'static,
{
    inject(Arc::clone(emulator))
}

/// A controller for a fault that must fire once: waits until the first
/// session has ended with `outcome`, then clears the faults, so the next
/// connection is a healthy one.
pub(crate) fn clear_faults_after(
    emulator: &Arc<Emulator>,
    what: &'static str,
    outcome: Outcome,
) -> impl Future<Output = ()> + Send + 'static {
    control(emulator, move |emulator| async move {
        util::wait_for(WAIT, what, || {
            emulator.session(0).is_some_and(|s| s.outcome == outcome)
        })
        .await;
        emulator.clear_faults();
    })
}

/// Once the first session streams, faults for what follows: it drops after
/// `drop_after_ms` of audio and every later connect is refused (503).
pub(crate) async fn drop_then_refuse_after_first_session(emulator: &Emulator, drop_after_ms: u64) {
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

pub(crate) fn outcomes(emulator: &Emulator) -> Vec<Outcome> {
    emulator.sessions().iter().map(|s| s.outcome).collect()
}

pub(crate) fn count_outcome(emulator: &Emulator, outcome: Outcome) -> usize {
    emulator
        .sessions()
        .iter()
        .filter(|s| s.outcome == outcome)
        .count()
}

/// Audio the emulator received over all sessions, ms.
pub(crate) fn total_audio_ms(emulator: &Emulator) -> u64 {
    emulator.sessions().iter().map(|s| s.audio_ms).sum()
}

/// The last session's outcome: every stream that completes ends on a
/// `Finished` one.
pub(crate) fn last_outcome(emulator: &Emulator) -> Outcome {
    emulator
        .sessions()
        .last()
        .expect("no session at all")
        .outcome
}

/// The reconnects and the sessions' outcomes and audio, for failure
/// messages.
pub(crate) fn summary(emulator: &Emulator, reconnects: &[Reconnect]) -> String {
    format!(
        "reconnects: {reconnects:?}\nsessions: {:?}",
        emulator
            .sessions()
            .iter()
            .map(|s| (s.outcome, s.audio_ms))
            .collect::<Vec<_>>()
    )
}

// ---------------------------------------------------------------------------
// Running sttpipe.

/// `sttpipe` pointed at `emulator` with `args`, [`PACE`] times faster.
pub(crate) fn sttpipe(emulator: &Emulator, args: &[&str]) -> Command {
    sttpipe_at(&emulator.url(), args)
}

/// `sttpipe` pointed at `url` with `args`, [`PACE`] times faster.
pub(crate) fn sttpipe_at(url: &str, args: &[&str]) -> Command {
    let mut command = util::sttpipe(Some(url), Some(KEY));
    command
        .env("STTPIPE_PACE_FACTOR", PACE.to_string())
        .args(args);
    command
}

/// `total_ms` of 16 kHz mono audio with a word every 500 ms from 500 ms on.
pub(crate) fn speech(total_ms: u64) -> (Vec<Word>, Vec<u8>) {
    util::marker_audio((total_ms / 500 - 1) as usize, 500, total_ms)
}

/// How the test writes the audio to sttpipe's stdin.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Feed {
    /// All at once, as from a file: sttpipe paces it.
    File,
    /// 100 ms chunks at [`PACE`] times real time, as from a microphone: a
    /// source that never waits, whatever happens upstream.
    Live,
}

/// One run of the binary, and how late the live input ever fell.
pub(crate) struct Run {
    pub(crate) out: Output,
    /// With [`Feed::Live`]: the most the writer ever fell behind its
    /// schedule, in ms of audio (a reader that stops reading shows here).
    pub(crate) input_lag_ms: u64,
}

/// Runs `command` with `audio` on stdin, to completion (bounded).
pub(crate) async fn run(command: Command, audio: Vec<u8>, feed: Feed) -> Run {
    run_with_faults(command, audio, feed, no_controller()).await
}

/// Runs `command` with `audio` on stdin, to completion (bounded), while
/// `controller` injects faults; fails if the controller fails or has not
/// finished when sttpipe exits.
pub(crate) async fn run_with_faults(
    command: Command,
    audio: Vec<u8>,
    feed: Feed,
    controller: impl Future<Output = ()> + Send + 'static,
) -> Run {
    let control = tokio::spawn(controller);
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
    let run = Run { out, input_lag_ms };
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

/// A stream that must lose nothing, checked, with its reconnects.
pub(crate) struct Lossless {
    pub(crate) events: Vec<Value>,
    pub(crate) reconnects: Vec<Reconnect>,
    /// As [`Run::input_lag_ms`].
    pub(crate) input_lag_ms: u64,
}

/// Streams `total_ms` of speech through sttpipe with `args` against
/// `emulator` while `controller` injects faults, and checks it as
/// [`assert_lossless`] does.
pub(crate) async fn lossless(
    emulator: &Emulator,
    total_ms: u64,
    args: &[&str],
    feed: Feed,
    controller: impl Future<Output = ()> + Send + 'static,
) -> Lossless {
    let (words, audio) = speech(total_ms);
    let run = run_with_faults(sttpipe(emulator, args), audio, feed, controller).await;
    let events = assert_lossless(&run.out, &words);
    Lossless {
        reconnects: reconnects(&events),
        events,
        input_lag_ms: run.input_lag_ms,
    }
}

/// No faults to inject while sttpipe runs: they were all set up before.
pub(crate) fn no_controller() -> std::future::Ready<()> {
    std::future::ready(())
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
pub(crate) fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}

/// Events of one type.
pub(crate) fn of_type<'a>(events: &'a [Value], kind: &str) -> Vec<&'a Value> {
    events.iter().filter(|e| e["type"] == kind).collect()
}

/// Asserts the words, and says where they first differ.
pub(crate) fn assert_words(got: &[(String, u64)], want: &[(String, u64)]) {
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
pub(crate) fn assert_end(events: &[Value], reason: &str, tokens: usize) {
    let end = events.last().expect("no events at all");
    assert_eq!(end["type"], "end", "the last event is not `end`: {end}");
    assert_eq!(end["reason"], reason, "{end}");
    assert_eq!(end["tokens"], tokens as u64, "{end}");
}

/// Asserts a stream that lost nothing: exit 0, every word once, in order,
/// with its exact `start_ms`; no overrun, no error; `end` last. Returns the
/// events.
pub(crate) fn assert_lossless(out: &Output, words: &[Word]) -> Vec<Value> {
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
pub(crate) struct Reconnect {
    /// Its position among all events.
    pub(crate) at: usize,
    pub(crate) reason: String,
    pub(crate) upstream: u64,
    pub(crate) gap_ms: u64,
    pub(crate) replayed_ms: u64,
}

/// The `reconnect` events, their fields checked: a known reason, a message,
/// numeric `gap_ms` and `replayed_ms`, and `upstream` indices from 2 on,
/// rising.
pub(crate) fn reconnects(events: &[Value]) -> Vec<Reconnect> {
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

pub(crate) fn reasons(reconnects: &[Reconnect]) -> Vec<&str> {
    reconnects.iter().map(|r| r.reason.as_str()).collect()
}

pub(crate) fn count_reason(reconnects: &[Reconnect], reason: &str) -> usize {
    reconnects.iter().filter(|r| r.reason == reason).count()
}

/// The `upstream` index of every final token, in output order: each token
/// has one, from 1 on, and they never go back.
pub(crate) fn token_upstreams(events: &[Value]) -> Vec<u64> {
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
pub(crate) fn assert_upstreams(events: &[Value], reconnects: &[Reconnect]) -> Vec<u64> {
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

// ---------------------------------------------------------------------------
// A child read as it runs.

/// Collects a child's stdout events in the background.
pub(crate) struct Collector {
    events: Arc<Mutex<Vec<Value>>>,
    task: JoinHandle<()>,
}

impl Collector {
    pub(crate) fn start(stdout: ChildStdout) -> Collector {
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

    pub(crate) fn final_count(&self) -> usize {
        util::final_words(&self.events.lock().unwrap()).len()
    }

    /// Every event, once stdout has closed (bounded).
    pub(crate) async fn finish(self) -> Vec<Value> {
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
pub(crate) fn drain_stderr(child: &mut tokio::process::Child) -> JoinHandle<String> {
    let mut stderr = child.stderr.take().expect("stderr piped");
    tokio::spawn(async move {
        let mut text = String::new();
        let _ = tokio::io::AsyncReadExt::read_to_string(&mut stderr, &mut text).await;
        text
    })
}
