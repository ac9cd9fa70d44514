//! The relay benchmark (issue #6): N concurrent real-time sessions of marker
//! audio through a relay to the project's Soniox emulator, and one table of
//! what the relay costs and adds.
//!
//! `cargo bench --bench relay` (about 5 minutes on 2 cores);
//! `cargo bench --bench relay -- --quick` (or `BENCH_QUICK=1`) runs 20
//! sessions of 3 s through each relay in about 30 s, skips the search for the
//! largest N, and fails only if a run did not complete or lost a word: it
//! asserts nothing about speed. `--relays
//! unix,ws,gateway,reference,floor,direct` picks relays (all six by
//! default); `--n N` measures only N sessions (no search).
//!
//! `STTPIPE_BENCH_BIN=/path/to/sttpipe` measures that binary instead of the
//! one built with the bench (the daemon and the filter alone), so that an
//! older build gives before and after figures from the same bench and the
//! same method; the output's first lines name it.
//!
//! # The relays
//!
//! * **unix socket**: `sttpipe serve` (the release build, or
//!   `STTPIPE_BENCH_BIN`), each client speaking the daemon's socket protocol
//!   (a JSON header line, raw audio, half-close; NDJSON events back);
//! * **ws endpoint**: the same daemon with `--ws-listen 127.0.0.1:0`, each
//!   client speaking the Soniox protocol to `/transcribe-websocket`;
//! * **gateway (wss)**: the ws endpoint as a gateway for other hosts, over
//!   TLS (`--ws-tls-cert`, a test CA's certificate that the clients trust)
//!   with a named token (`--ws-token-file`); measured at the comparison N
//!   only, beside the ws endpoint, which shows what TLS and the token cost;
//! * **reference proxy**: `../shared/reference/python_proxy.py`, the plain
//!   Python `websockets` relay of Soniox's "proxy stream" guide, with
//!   `websockets==15.0.1` in a venv at `target/bench-venv` (installed by the
//!   bench when missing, with `python3 -m venv` and pip);
//! * **floor forwarder**: the physical floor, a bare tokio-tungstenite frame
//!   forwarder with no session core (`floor.rs`): per client one WebSocket
//!   to the emulator, every frame forwarded both ways as it comes. The
//!   bench binary itself, re-executed to run only that; the clients are the
//!   ws endpoint's. sttpipe's CPU is shown as a ratio to it: what the
//!   session core costs above the least a relay on this stack can do;
//! * **direct (no relay)**: the clients talk to the emulator itself. Not a
//!   relay: its "added latency" is the floor of the method (the load
//!   generator's and the emulator's own scheduling on a shared machine).
//!
//! The daemon runs with `--max-upstream N --queue 0
//! --new-sessions-per-minute 1000000 --warm-pool 0` and its default log
//! level. Every relay gets a fresh emulator (plain `ws://` on loopback, in
//! this process, on the same multi-thread tokio runtime as the load
//! generator).
//!
//! # A run
//!
//! Each of the N sessions streams the same 12 s of 16 kHz mono pcm_s16le
//! marker audio (a word every 500 ms) in 100 ms chunks on its own tokio
//! interval (missed ticks delay the schedule rather than burst), with a
//! `client_reference_id` of `s<i>`; the sessions start evenly over 2 s, so
//! their ticks are spread over the 100 ms period. The *steady phase* begins
//! 0.5 s after every session has reached the emulator (and the ramp is
//! over) and ends 0.3 s before the first session runs out of audio; CPU,
//! RSS and latency are measured in it:
//!
//! * **relay CPU**: `utime + stime` of the relay process from
//!   `/proc/PID/stat` at both ends of the phase, per hour of audio the load
//!   generator wrote in it (and as a share of one core);
//! * **RSS**: `VmRSS` before the sessions start (idle) and at the end of the
//!   phase (N active): per session, (active − idle) / N; peak: `VmHWM` after
//!   the run;
//! * **added latency, audio**: a chunk written by the load generator ending
//!   at cumulative byte B at t0, and the first frame the emulator receives
//!   for that session whose cumulative end is ≥ B, at t1 (the emulator's
//!   [`Probe`]); latency t1 − t0, whatever re-chunking the relay does;
//! * **added latency, tokens**: the emulator's time just before it sends a
//!   response with a final token (by `start_ms`), to the time the load
//!   generator reads that token (NDJSON line or WebSocket frame);
//! * **words lost**: every word of every session must come back exactly once
//!   as a final token with its `start_ms`, in order;
//! * **bench process CPU**: the load generator and the emulator together
//!   (`/proc/self/stat`), so the table shows whether they, not the relay,
//!   limit the run; and the load generator's tick lag (how late its clock
//!   fired).
//!
//! # The other rows
//!
//! * the largest N with p99 added latency (audio and tokens) under 10 ms and
//!   no word lost: daemon steps 200, 500, 1000, 2000, 3000, 5000 and
//!   reference proxy steps 50, 100, 200, 500, 1000, 2000, each search
//!   stopping at its first failure (`≥ N` when every step passed); the
//!   Unix socket is also measured at the top step, 5000, whatever happened
//!   below it, for its words lost there; the floor forwarder is measured at
//!   every N the daemon was, for the ratio, without a search of its own;
//! * time to first forwarded audio for a new session on the Unix socket,
//!   `--warm-pool 0` and `--warm-pool 2`: from a client's connect (header and
//!   a 500 ms audio clip sent at once) to the emulator's first audio frame,
//!   the emulator serving `wss://` so that the TLS and WebSocket handshakes
//!   count; 30 sessions each, 200 ms apart so the pool refills;
//! * the filter alone: CPU and peak RSS of `sttpipe --input FILE` for one
//!   real-time stream of 30 s, under GNU time (as `benches/filter.rs`).
//!
//! # The files
//!
//! `main.rs` the options, the run plan and the whole run; `relays.rs` each
//! relay's process; `floor.rs` the floor forwarder; `load.rs` the load generator's clients, one per
//! protocol; `measure.rs` one measurement (the emulator's traces, the steady
//! phase's `/proc` samples, matching latencies); `first_audio.rs` time to
//! first forwarded audio; `report.rs` the table and its notes.

#[path = "../common/mod.rs"]
mod common;
mod first_audio;
mod floor;
mod load;
mod measure;
mod relays;
mod report;

use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use soniox_emulator::marker::{self, Word};
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use measure::RunResult;

/// Sample rate of the marker audio (mono pcm_s16le).
const RATE: u32 = 16_000;
/// Bytes of one 100 ms chunk.
const CHUNK_BYTES: usize = 3200;
/// The load generator's period.
const CHUNK: Duration = Duration::from_millis(100);
/// Audio bytes per second.
const BYTES_PER_SECOND: f64 = 32_000.0;
/// The "sustained" bound on p99 added latency, in ms.
const SUSTAIN_P99_MS: f64 = 10.0;
/// The reference proxy's pinned `websockets`.
const REFERENCE_WEBSOCKETS: &str = "15.0.1";
/// The key the emulator accepts.
const KEY: &str = "test-key";
/// Bound on a relay's start.
const START_BOUND: Duration = Duration::from_secs(30);
/// Bound on a session beyond its audio and the ramp.
const SESSION_SLACK: Duration = Duration::from_secs(60);
/// File descriptors the bench and a relay need besides two per session.
const FD_MARGIN: u64 = 200;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn main() {
    // The floor forwarder's process: nothing else of the bench runs in it.
    if let Some(upstream) = std::env::var_os(floor::UPSTREAM_ENV) {
        let upstream = upstream.into_string().expect("a UTF-8 upstream URL");
        if let Err(e) = floor::serve(upstream) {
            eprintln!("floor: {e}");
            std::process::exit(1);
        }
        return;
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        // cargo passes `--bench` to every harness-less bench.
        .filter(|a| a != "--bench")
        .collect();
    let plan = Plan::from_args(&args);
    let fd_limit = raise_nofile();
    let env_quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    let bin = common::sttpipe_bin();
    assert!(bin.is_file(), "no sttpipe binary at {}", bin.display());
    let bin_env = std::env::var_os(common::BIN_ENV)
        .filter(|v| !v.is_empty())
        .map(|_| format!("{}={} ", common::BIN_ENV, bin.display()));
    println!(
        "reproduce: {}{}cargo bench --bench relay{}",
        bin_env.unwrap_or_default(),
        if env_quick { "BENCH_QUICK=1 " } else { "" },
        if args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.join(" "))
        }
    );
    println!("sttpipe measured: {}", bin.display());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let report = runtime.block_on(run(plan, fd_limit));
    if let Err(problems) = report {
        panic!("the relay benchmark did not complete cleanly:\n{problems}");
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard limit (children inherit it);
/// returns the limit.
fn raise_nofile() -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).expect("getrlimit");
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).expect("raise RLIMIT_NOFILE");
    }
    hard
}

// ---------------------------------------------------------------------------
// What to run.

// ---------------------------------------------------------------------------
// What to run.

/// One way of carrying sessions to the emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Relay {
    Unix,
    Ws,
    Gateway,
    Reference,
    Floor,
    Direct,
}

impl Relay {
    const ALL: [Relay; 6] = [
        Relay::Unix,
        Relay::Ws,
        Relay::Gateway,
        Relay::Reference,
        Relay::Floor,
        Relay::Direct,
    ];

    /// The column header.
    fn title(self) -> &'static str {
        match self {
            Relay::Unix => "unix socket",
            Relay::Ws => "ws endpoint",
            Relay::Gateway => "gateway (wss)",
            Relay::Reference => "reference proxy",
            Relay::Floor => "floor forwarder",
            Relay::Direct => "direct (no relay)",
        }
    }

    /// The name `--relays` takes.
    fn arg(self) -> &'static str {
        match self {
            Relay::Unix => "unix",
            Relay::Ws => "ws",
            Relay::Gateway => "gateway",
            Relay::Reference => "reference",
            Relay::Floor => "floor",
            Relay::Direct => "direct",
        }
    }

    /// Whether it is a process of its own to measure.
    fn is_process(self) -> bool {
        self != Relay::Direct
    }
}

/// The run's parameters.
#[derive(Debug, Clone)]
struct Plan {
    quick: bool,
    relays: Vec<Relay>,
    /// Audio per session, in ms.
    audio_ms: u64,
    /// Sessions start evenly over this.
    ramp: Duration,
    /// N at which every relay is measured.
    compare_n: usize,
    /// The daemon's search for the largest sustained N.
    daemon_steps: Vec<usize>,
    /// The reference proxy's search.
    reference_steps: Vec<usize>,
    /// Where the direct baseline is measured besides `compare_n`.
    direct_ns: Vec<usize>,
    /// Sessions per warm-pool setting.
    warm_sessions: usize,
    /// Seconds of audio for the filter alone.
    filter_seconds: u64,
}

impl Plan {
    fn from_args(args: &[String]) -> Plan {
        let env_quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
        let quick = env_quick || args.iter().any(|a| a == "--quick");
        let mut plan = if quick {
            Plan {
                quick,
                relays: Relay::ALL.to_vec(),
                audio_ms: 3000,
                ramp: Duration::from_millis(500),
                compare_n: 20,
                daemon_steps: Vec::new(),
                reference_steps: Vec::new(),
                direct_ns: Vec::new(),
                warm_sessions: 5,
                filter_seconds: 3,
            }
        } else {
            Plan {
                quick,
                relays: Relay::ALL.to_vec(),
                audio_ms: 12_000,
                ramp: Duration::from_secs(2),
                compare_n: 200,
                daemon_steps: vec![200, 500, 1000, 2000, 3000, 5000],
                reference_steps: vec![50, 100, 200, 500, 1000, 2000],
                direct_ns: vec![1000, 5000],
                warm_sessions: 30,
                filter_seconds: 30,
            }
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            match arg.as_str() {
                "--quick" => {}
                "--relays" => {
                    let list = it.next().expect("--relays takes a list");
                    plan.relays = list
                        .split(',')
                        .map(|name| {
                            *Relay::ALL
                                .iter()
                                .find(|r| r.arg() == name)
                                .unwrap_or_else(|| panic!("unknown relay {name:?}"))
                        })
                        .collect();
                }
                "--n" => {
                    let n = it.next().and_then(|n| n.parse().ok());
                    plan.compare_n = n.expect("--n takes a number of sessions");
                    plan.daemon_steps.clear();
                    plan.reference_steps.clear();
                    plan.direct_ns.clear();
                }
                other => panic!(
                    "unknown argument {other:?}; the bench takes --quick, --relays LIST, --n N"
                ),
            }
        }
        plan
    }

    /// Seconds of audio each session streams.
    fn audio(&self) -> Duration {
        Duration::from_millis(self.audio_ms)
    }

    /// The sessions' words.
    fn words(&self) -> Vec<Word> {
        marker::script((self.audio_ms / 500 - 1) as usize, 500, 500)
    }
}

// ---------------------------------------------------------------------------
// The whole run.

// ---------------------------------------------------------------------------
// The whole run.

async fn run(plan: Plan, fd_limit: u64) -> Result<(), String> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut notes: Vec<String> = Vec::new();
    println!(
        "sttpipe relay benchmark: {cores} cores; each session {} s of {} kHz mono marker audio \
         (a word every 500 ms) in 100 ms chunks at real time, sessions started over {:.1} s; \
         load generator and emulator in this process",
        plan.audio_ms / 1000,
        RATE / 1000,
        plan.ramp.as_secs_f64()
    );

    let reference = if plan.relays.contains(&Relay::Reference) {
        match relays::reference_proxy().await {
            Ok(found) => Some(found),
            Err(e) if plan.quick => {
                notes.push(format!("reference proxy skipped: {e}"));
                None
            }
            Err(e) => return Err(format!("reference proxy unavailable: {e}")),
        }
    } else {
        None
    };
    let ctx = Ctx {
        audio: Bytes::from(marker::encode(&plan.words(), plan.audio_ms, RATE, 1)),
        words: Arc::new(plan.words()),
        reference,
        plan: plan.clone(),
    };

    progress("the filter alone");
    let filter = common::measure_filter(plan.filter_seconds).await;
    progress("time to first forwarded audio");
    let first_audio = first_audio::figures(plan.warm_sessions).await;

    let mut results: BTreeMap<(Relay, usize), RunResult> = BTreeMap::new();
    let relays: Vec<Relay> = plan
        .relays
        .iter()
        .copied()
        .filter(|&r| r != Relay::Reference || ctx.reference.is_some())
        .collect();
    let fits = |n: usize| 2 * n as u64 + FD_MARGIN <= fd_limit;
    for &relay in &relays {
        results.insert(
            (relay, plan.compare_n),
            ctx.measure(relay, plan.compare_n).await,
        );
    }
    // The searches: each stops at its first failure.
    // Per relay: the largest sustained step, and whether every step passed.
    let mut largest: BTreeMap<Relay, (Option<usize>, bool)> = BTreeMap::new();
    for &relay in &relays {
        let steps = match relay {
            Relay::Unix | Relay::Ws => &plan.daemon_steps,
            Relay::Reference => &plan.reference_steps,
            // The gateway is the ws endpoint with TLS and named tokens: its
            // cost beside the ws endpoint's at the same N says enough.
            Relay::Gateway | Relay::Floor | Relay::Direct => continue,
        };
        if steps.is_empty() {
            continue;
        }
        let mut best = None;
        let mut all = true;
        for &n in steps {
            if !fits(n) {
                notes.push(format!(
                    "{}: N = {n} skipped, RLIMIT_NOFILE is only {fd_limit}",
                    relay.title()
                ));
                all = false;
                break;
            }
            if let Entry::Vacant(slot) = results.entry((relay, n)) {
                slot.insert(ctx.measure(relay, n).await);
            }
            if !results[&(relay, n)].sustained() {
                all = false;
                break;
            }
            best = Some(n);
        }
        largest.insert(relay, (best, all));
    }
    // The Unix socket's target is its top step without a word lost, whatever
    // the latency: measured even when the search stopped below it.
    if let Some(&top) = plan.daemon_steps.iter().max()
        && relays.contains(&Relay::Unix)
        && fits(top)
        && let Entry::Vacant(slot) = results.entry((Relay::Unix, top))
    {
        slot.insert(ctx.measure(Relay::Unix, top).await);
    }
    // The floor wherever the daemon was measured: the ratio at each N.
    if relays.contains(&Relay::Floor) {
        let daemon_ns: BTreeSet<usize> = results
            .keys()
            .filter(|(r, _)| matches!(r, Relay::Unix | Relay::Ws))
            .map(|(_, n)| *n)
            .collect();
        for n in daemon_ns {
            if let Entry::Vacant(slot) = results.entry((Relay::Floor, n)) {
                slot.insert(ctx.measure(Relay::Floor, n).await);
            }
        }
    }
    if relays.contains(&Relay::Direct) {
        for &n in &plan.direct_ns {
            if fits(n) && !results.contains_key(&(Relay::Direct, n)) {
                results.insert((Relay::Direct, n), ctx.measure(Relay::Direct, n).await);
            }
        }
    }

    notes.extend(results.values().flat_map(|r| r.notes(cores)));
    let table = ctx.table(&relays, &results, &largest, &first_audio, &filter);
    println!();
    table.print();
    if !notes.is_empty() {
        println!("\nnotes:");
        for note in &notes {
            println!("  * {note}");
        }
    }

    // The quick form's only assertions: every run completed, no word lost.
    let mut problems = Vec::new();
    if plan.quick {
        for r in results.values() {
            if let Some(problem) = r.incomplete() {
                problems.push(format!("{} N = {}: {problem}", r.relay.title(), r.n));
            }
        }
        // A missing GNU time is a skip (shown in the table), not a failure.
        if let Err(e) = &filter
            && common::gnu_time_available()
        {
            problems.push(format!("the filter alone: {e}"));
        }
        if let Ok(f) = &filter
            && f.words != f.expected
        {
            problems.push(format!(
                "the filter alone: {} of {} words",
                f.words, f.expected
            ));
        }
        for (pool, figures) in &first_audio {
            if let Err(e) = figures {
                problems.push(format!("first audio, --warm-pool {pool}: {e}"));
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("\n"))
    }
}

/// A progress line on stderr.
fn progress(what: &str) {
    eprintln!("relay bench: {what}");
}

/// Milliseconds of a duration, as a float.
fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// What every measurement shares.
struct Ctx {
    plan: Plan,
    audio: Bytes,
    words: Arc<Vec<Word>>,
    /// The reference proxy's python and script.
    reference: Option<(PathBuf, PathBuf)>,
}
