//! The relay benchmark (issue #6): N concurrent real-time sessions of marker
//! audio through a relay to the project's Soniox emulator, and one table of
//! what the relay costs and adds.
//!
//! `cargo bench --bench relay` (about 5 minutes on 2 cores);
//! `cargo bench --bench relay -- --quick` (or `BENCH_QUICK=1`) runs 20
//! sessions of 3 s through each relay in about 30 s, skips the search for the
//! largest N, and fails only if a run did not complete or lost a word: it
//! asserts nothing about speed. `--relays unix,ws,reference,direct` picks
//! relays; `--n N` measures only N sessions (no search).
//!
//! # The relays
//!
//! * **unix socket**: `sttpipe serve` (the release build), each client
//!   speaking the daemon's socket protocol (a JSON header line, raw audio,
//!   half-close; NDJSON events back);
//! * **ws endpoint**: the same daemon with `--ws-listen 127.0.0.1:0`, each
//!   client speaking the Soniox protocol to `/transcribe-websocket`;
//! * **reference proxy**: `../shared/reference/python_proxy.py`, the plain
//!   Python `websockets` relay of Soniox's "proxy stream" guide, with
//!   `websockets==15.0.1` in a venv at `target/bench-venv` (installed by the
//!   bench when missing, with `python3 -m venv` and pip);
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
//!   below it, for its words lost there;
//! * time to first forwarded audio for a new session on the Unix socket,
//!   `--warm-pool 0` and `--warm-pool 2`: from a client's connect (header and
//!   a 500 ms audio clip sent at once) to the emulator's first audio frame,
//!   the emulator serving `wss://` so that the TLS and WebSocket handshakes
//!   count; 30 sessions each, 200 ms apart so the pool refills;
//! * the filter alone: CPU and peak RSS of `sttpipe --input FILE` for one
//!   real-time stream of 30 s, under GNU time (as `benches/filter.rs`).

mod common;

use std::borrow::Cow;
use std::collections::btree_map::Entry;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::stream::SplitSink;
use futures_util::{SinkExt, StreamExt};
use serde::Deserialize;
use soniox_emulator::marker::{self, Word};
use soniox_emulator::{Emulator, EmulatorConfig, Probe, ProbeEvent, ProbeKind};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpStream, UnixStream};
use tokio::time::MissedTickBehavior;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use common::{FilterFigures, MachineCpu, Proc, percentile, sorted};

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
    let args: Vec<String> = std::env::args()
        .skip(1)
        // cargo passes `--bench` to every harness-less bench.
        .filter(|a| a != "--bench")
        .collect();
    let plan = Plan::from_args(&args);
    let fd_limit = raise_nofile();
    let env_quick = std::env::var("BENCH_QUICK").is_ok_and(|v| !v.is_empty() && v != "0");
    println!(
        "reproduce: {}cargo bench --bench relay{}",
        if env_quick { "BENCH_QUICK=1 " } else { "" },
        if args.is_empty() {
            String::new()
        } else {
            format!(" -- {}", args.join(" "))
        }
    );
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

/// One way of carrying sessions to the emulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Relay {
    Unix,
    Ws,
    Reference,
    Direct,
}

impl Relay {
    const ALL: [Relay; 4] = [Relay::Unix, Relay::Ws, Relay::Reference, Relay::Direct];

    /// The column header.
    fn title(self) -> &'static str {
        match self {
            Relay::Unix => "unix socket",
            Relay::Ws => "ws endpoint",
            Relay::Reference => "reference proxy",
            Relay::Direct => "direct (no relay)",
        }
    }

    /// The name `--relays` takes.
    fn arg(self) -> &'static str {
        match self {
            Relay::Unix => "unix",
            Relay::Ws => "ws",
            Relay::Reference => "reference",
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
        match reference_proxy().await {
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
    let first_audio = first_audio_figures(plan.warm_sessions).await;

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
            Relay::Direct => continue,
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

// ---------------------------------------------------------------------------
// The relays' processes.

/// Where the load generator connects.
#[derive(Debug, Clone)]
enum Target {
    Unix(PathBuf),
    Ws(String),
}

/// A running relay (none for the direct baseline); killed when dropped.
struct RelayProcess {
    child: Option<tokio::process::Child>,
    target: Target,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RelayProcess {
    fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// The end of the relay's log, for error messages.
    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Fails if the relay has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(format!("the relay exited ({status}):\n{}", self.log_tail()));
        }
        Ok(())
    }

    async fn stop(mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
}

/// A log file for a relay's stdout and stderr.
fn log_file(dir: &Path) -> (PathBuf, Stdio, Stdio) {
    let path = dir.join("relay.log");
    let file = std::fs::File::create(&path).expect("create the relay's log");
    let err = file.try_clone().expect("clone the log's handle");
    (path, Stdio::from(file), Stdio::from(err))
}

/// Starts `sttpipe serve` against `upstream`, for `max_upstream` sessions
/// with a warm pool of `pool`, serving the WebSocket endpoint if `ws`;
/// returns once it accepts on the socket (and, with `ws`, listens on TCP).
async fn start_daemon(
    upstream: &str,
    max_upstream: usize,
    pool: usize,
    ws: bool,
    ca_file: Option<&Path>,
) -> Result<RelayProcess, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let socket = dir.path().join("s.sock");
    let (log, out, err) = log_file(dir.path());
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_sttpipe"));
    command
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .args(["--config", "/dev/null"])
        .args(["--max-upstream", &max_upstream.to_string()])
        .args(["--queue", "0", "--new-sessions-per-minute", "1000000"])
        .args(["--warm-pool", &pool.to_string()]);
    if ws {
        command.args(["--ws-listen", "127.0.0.1:0"]);
    }
    if let Some(ca_file) = ca_file {
        command.arg("--ca-file").arg(ca_file);
    }
    for var in ["RUST_LOG", "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM"] {
        command.env_remove(var);
    }
    let child = command
        .env("SONIOX_WS_URL", upstream)
        .env("SONIOX_API_KEY", KEY)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start the daemon: {e}"))?;
    let mut daemon = RelayProcess {
        child: Some(child),
        target: Target::Unix(socket.clone()),
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + START_BOUND;
    while UnixStream::connect(&socket).await.is_err() {
        daemon.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!("the daemon did not listen:\n{}", daemon.log_tail()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if ws {
        let pid = daemon.pid().ok_or("the daemon has no pid")?;
        let port = loop {
            if let Some(port) = listening_port(pid) {
                break port;
            }
            daemon.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!(
                    "the daemon did not listen on TCP:\n{}",
                    daemon.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        daemon.target = Target::Ws(format!("ws://127.0.0.1:{port}/transcribe-websocket"));
    }
    Ok(daemon)
}

/// The port of the TCP socket process `pid` listens on, from its file
/// descriptors and `/proc/PID/net/tcp` (no log parsing, so the daemon can
/// keep its default, quiet log level).
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        let listening = fields.get(3) == Some(&"0A");
        if !listening || !inodes.contains(*fields.get(9)?) {
            return None;
        }
        let port = fields.get(1)?.rsplit(':').next()?;
        u16::from_str_radix(port, 16).ok()
    })
}

/// Starts the reference proxy against `upstream` on a free port; returns
/// once it accepts connections.
async fn start_reference(
    python: &Path,
    script: &Path,
    upstream: &str,
) -> Result<RelayProcess, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (log, out, err) = log_file(dir.path());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("pick a free port: {e}"))?
        .port();
    let child = tokio::process::Command::new(python)
        .arg(script)
        .env("SONIOX_WS_URL", upstream)
        .env("SONIOX_API_KEY", KEY)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("start the reference proxy: {e}"))?;
    let mut proxy = RelayProcess {
        child: Some(child),
        target: Target::Ws(format!("ws://127.0.0.1:{port}/transcribe-websocket")),
        log,
        _dir: dir,
    };
    let deadline = Instant::now() + START_BOUND;
    while TcpStream::connect(("127.0.0.1", port)).await.is_err() {
        proxy.check_alive()?;
        if Instant::now() > deadline {
            return Err(format!(
                "the reference proxy did not listen:\n{}",
                proxy.log_tail()
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(proxy)
}

/// The reference proxy's python (a venv at `target/bench-venv` with the
/// pinned `websockets`, made if missing) and its script.
async fn reference_proxy() -> Result<(PathBuf, PathBuf), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/python_proxy.py");
    if !script.is_file() {
        return Err(format!("{} is missing", script.display()));
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .ok_or("no target directory")?;
    let venv = target.join("bench-venv");
    let python = venv.join("bin/python");
    if has_websockets(&python).await {
        return Ok((python, script));
    }
    eprintln!(
        "relay bench: installing websockets=={REFERENCE_WEBSOCKETS} in {}",
        venv.display()
    );
    if !python.is_file() {
        let mut venv_cmd = tokio::process::Command::new("python3");
        venv_cmd.args(["-m", "venv"]).arg(&venv);
        quietly(venv_cmd, "python3 -m venv").await?;
    }
    let mut pip = tokio::process::Command::new(&python);
    pip.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg(format!("websockets=={REFERENCE_WEBSOCKETS}"));
    quietly(pip, "pip install websockets").await?;
    if has_websockets(&python).await {
        Ok((python, script))
    } else {
        Err(format!(
            "no websockets=={REFERENCE_WEBSOCKETS} in {} after installing it",
            venv.display()
        ))
    }
}

/// Whether `python` imports `websockets` of the pinned version.
async fn has_websockets(python: &Path) -> bool {
    if !python.is_file() {
        return false;
    }
    let check = tokio::process::Command::new(python)
        .args([
            "-c",
            "import sys, websockets; sys.exit(websockets.__version__ != sys.argv[1])",
            REFERENCE_WEBSOCKETS,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(
        tokio::time::timeout(Duration::from_secs(30), check).await,
        Ok(Ok(status)) if status.success()
    )
}

/// Runs a provisioning command, its output shown only if it fails.
async fn quietly(mut command: tokio::process::Command, what: &str) -> Result<(), String> {
    let run = command.kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .map_err(|_| format!("{what}: no result within 10 minutes"))?
        .map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

// ---------------------------------------------------------------------------
// The emulator's side: what arrived when.

/// Per session (by `client_reference_id` `s<i>`), what the emulator saw.
struct Traces {
    sessions: Vec<Mutex<Trace>>,
    /// Sessions that have started upstream at least once.
    started: AtomicUsize,
    /// Events of sessions the bench did not open.
    strays: AtomicUsize,
}

#[derive(Debug, Default)]
struct Trace {
    /// (cumulative audio bytes, arrival) per frame.
    frames: Vec<(u64, Instant)>,
    /// (start_ms, just before sending) per final token.
    finals: Vec<(u64, Instant)>,
    /// Upstream sessions started for it (more than one: the relay
    /// reconnected).
    starts: u32,
}

/// Locks a trace; a panic elsewhere leaves it usable.
fn lock(m: &Mutex<Trace>) -> MutexGuard<'_, Trace> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Traces {
    fn new(n: usize) -> Arc<Traces> {
        Arc::new(Traces {
            sessions: (0..n).map(|_| Mutex::default()).collect(),
            started: AtomicUsize::new(0),
            strays: AtomicUsize::new(0),
        })
    }

    /// The emulator probe that records into these traces.
    fn probe(self: &Arc<Traces>) -> Probe {
        let traces = Arc::clone(self);
        Probe::new(move |event| traces.record(event))
    }

    fn record(&self, event: &ProbeEvent<'_>) {
        let slot = event
            .client_reference_id
            .and_then(|id| id.strip_prefix('s')?.parse::<usize>().ok())
            .and_then(|i| self.sessions.get(i));
        let Some(slot) = slot else {
            self.strays.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let mut trace = lock(slot);
        match event.kind {
            ProbeKind::Started => {
                trace.starts += 1;
                if trace.starts == 1 {
                    self.started.fetch_add(1, Ordering::AcqRel);
                }
            }
            ProbeKind::Audio { total_bytes } => trace.frames.push((total_bytes, event.at)),
            ProbeKind::Final { start_ms } => trace.finals.push((start_ms, event.at)),
        }
    }
}

// ---------------------------------------------------------------------------
// The load generator's side.

/// What one client did and got.
#[derive(Debug, Default)]
struct ClientLog {
    /// (cumulative bytes written, just before the write, tick lag in ms).
    writes: Vec<(u64, Instant, f64)>,
    /// Final tokens received: (text, start_ms, when).
    finals: Vec<(String, u64, Instant)>,
    /// Why the session failed, if it did.
    error: Option<String>,
}

/// The audio side of a client connection.
enum Sink {
    Unix(OwnedWriteHalf),
    Ws(SplitSink<Ws, Message>),
}

impl Sink {
    async fn send(&mut self, chunk: Bytes) -> Result<(), String> {
        match self {
            Sink::Unix(w) => w.write_all(&chunk).await.map_err(|e| format!("write: {e}")),
            Sink::Ws(w) => w
                .send(Message::Binary(chunk))
                .await
                .map_err(|e| format!("send: {e}")),
        }
    }

    /// Ends the audio: half-close, or the empty frame.
    async fn finish(&mut self) -> Result<(), String> {
        match self {
            Sink::Unix(w) => w.shutdown().await.map_err(|e| format!("half-close: {e}")),
            Sink::Ws(w) => w
                .send(Message::binary(Bytes::new()))
                .await
                .map_err(|e| format!("send the end: {e}")),
        }
    }
}

/// Streams `audio` in 100 ms chunks on a real-time clock, then ends it.
async fn stream_audio(
    mut sink: Sink,
    audio: &Bytes,
    writes: &mut Vec<(u64, Instant, f64)>,
) -> Result<(), String> {
    let mut ticks = tokio::time::interval(CHUNK);
    // Late ticks push the schedule back instead of bursting to catch up: a
    // burst would queue audio and count the queueing as relay latency.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut end = 0;
    for start in (0..audio.len()).step_by(CHUNK_BYTES) {
        let due = ticks.tick().await.into_std();
        let at = Instant::now();
        let chunk = audio.slice(start..(start + CHUNK_BYTES).min(audio.len()));
        end += chunk.len() as u64;
        sink.send(chunk).await?;
        writes.push((end, at, ms(at.saturating_duration_since(due))));
    }
    sink.finish().await
}

/// One line of the daemon's NDJSON, as far as the bench reads it.
#[derive(Deserialize)]
struct NdjsonLine<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    text: Option<Cow<'a, str>>,
    #[serde(default)]
    start_ms: Option<u64>,
    #[serde(default)]
    is_final: bool,
}

/// One Soniox response frame, as far as the bench reads it.
#[derive(Deserialize)]
struct SonioxFrame<'a> {
    #[serde(default, borrow)]
    tokens: Vec<SonioxToken<'a>>,
    #[serde(default)]
    finished: bool,
    #[serde(default)]
    error_code: Option<u64>,
}

#[derive(Deserialize)]
struct SonioxToken<'a> {
    #[serde(borrow)]
    text: Cow<'a, str>,
    #[serde(default)]
    start_ms: Option<u64>,
    #[serde(default)]
    is_final: bool,
}

/// Reads the daemon's events to the end of the connection.
async fn read_ndjson(
    read: OwnedReadHalf,
    finals: &mut Vec<(String, u64, Instant)>,
) -> Result<(), String> {
    let mut lines = BufReader::new(read).lines();
    let mut ended = false;
    while let Some(line) = lines.next_line().await.map_err(|e| format!("read: {e}"))? {
        let at = Instant::now();
        let event: NdjsonLine<'_> =
            serde_json::from_str(&line).map_err(|e| format!("not JSON ({e}): {line}"))?;
        match event.kind.as_ref() {
            "token" if event.is_final => {
                let (Some(text), Some(start_ms)) = (event.text, event.start_ms) else {
                    return Err(format!("a token without text or start_ms: {line}"));
                };
                finals.push((text.into_owned(), start_ms, at));
            }
            "error" => return Err(line),
            "end" => ended = true,
            _ => {}
        }
    }
    if ended {
        Ok(())
    } else {
        Err("the connection ended without an end event".to_owned())
    }
}

/// Reads Soniox responses up to `finished` and the close.
async fn read_soniox(
    mut read: futures_util::stream::SplitStream<Ws>,
    finals: &mut Vec<(String, u64, Instant)>,
) -> Result<(), String> {
    let mut finished = false;
    while let Some(message) = read.next().await {
        let at = Instant::now();
        let text = match message {
            Ok(Message::Text(text)) => text,
            Ok(Message::Close(_)) => break,
            Ok(_) => continue,
            // The relay may drop the connection right after `finished`.
            Err(_) if finished => break,
            Err(e) => return Err(format!("read: {e}")),
        };
        let frame: SonioxFrame<'_> =
            serde_json::from_str(&text).map_err(|e| format!("not JSON ({e}): {text}"))?;
        if frame.error_code.is_some() {
            return Err(text.to_string());
        }
        for token in frame.tokens {
            if let (true, Some(start_ms)) = (token.is_final, token.start_ms) {
                finals.push((token.text.into_owned(), start_ms, at));
            }
        }
        finished |= frame.finished;
    }
    if finished {
        Ok(())
    } else {
        Err("the connection ended before `finished`".to_owned())
    }
}

/// One client session, started at `start_at`, bounded by `bound`.
async fn client(
    target: Target,
    i: usize,
    start_at: Instant,
    audio: Bytes,
    bound: Duration,
) -> ClientLog {
    tokio::time::sleep_until(start_at.into()).await;
    let mut log = ClientLog::default();
    let ClientLog { writes, finals, .. } = &mut log;
    let session = async {
        match &target {
            Target::Unix(path) => unix_client(path, i, &audio, writes, finals).await,
            Target::Ws(url) => ws_client(url, i, &audio, writes, finals).await,
        }
    };
    let outcome = tokio::time::timeout(bound, session).await;
    log.error = match outcome {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some(format!("not finished within {bound:?}")),
    };
    log
}

/// A session over the daemon's socket protocol.
async fn unix_client(
    path: &Path,
    i: usize,
    audio: &Bytes,
    writes: &mut Vec<(u64, Instant, f64)>,
    finals: &mut Vec<(String, u64, Instant)>,
) -> Result<(), String> {
    // A full accept backlog refuses at once (EAGAIN): try again briefly.
    let mut attempts = 0;
    let stream = loop {
        match UnixStream::connect(path).await {
            Ok(stream) => break stream,
            Err(e) if attempts >= 50 => return Err(format!("connect: {e}")),
            Err(_) => {
                attempts += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    let (read, mut write) = stream.into_split();
    let header = format!("{{\"rate\":{RATE},\"client_reference_id\":\"s{i}\"}}\n");
    write
        .write_all(header.as_bytes())
        .await
        .map_err(|e| format!("write the header: {e}"))?;
    let (sent, received) = tokio::join!(
        stream_audio(Sink::Unix(write), audio, writes),
        read_ndjson(read, finals)
    );
    // The daemon's own account (an error event) says more than a failed write.
    received.and(sent)
}

/// A session over the Soniox protocol.
async fn ws_client(
    url: &str,
    i: usize,
    audio: &Bytes,
    writes: &mut Vec<(u64, Instant, f64)>,
    finals: &mut Vec<(String, u64, Instant)>,
) -> Result<(), String> {
    // Responses are small: a small read buffer keeps thousands of clients
    // from costing a lot of memory.
    let config = soniox_wire::websocket_config();
    let (ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let (mut write, read) = ws.split();
    let start = serde_json::json!({
        "api_key": KEY,
        "model": "stt-rt-v5",
        "audio_format": "pcm_s16le",
        "sample_rate": RATE,
        "num_channels": 1,
        "client_reference_id": format!("s{i}"),
    });
    write
        .send(Message::text(start.to_string()))
        .await
        .map_err(|e| format!("send the start request: {e}"))?;
    let (sent, received) = tokio::join!(
        stream_audio(Sink::Ws(write), audio, writes),
        read_soniox(read, finals)
    );
    received.and(sent)
}

// ---------------------------------------------------------------------------
// One measurement.

/// The steady phase's bounds and the samples taken at them.
#[derive(Debug, Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
    /// Relay CPU seconds in it.
    relay_cpu_s: Option<f64>,
    /// The part of them spent in the kernel.
    relay_sys_s: Option<f64>,
    /// This process's CPU seconds in it.
    bench_cpu_s: f64,
    /// CPU seconds of every other process on the machine in it.
    others_cpu_s: Option<f64>,
    /// CPU seconds the hypervisor took (steal) in it.
    steal_s: Option<f64>,
    /// The relay's VmRSS at its end, KiB.
    rss_active_kib: Option<u64>,
}

impl Ctx {
    /// Runs N sessions through `relay`; never panics on the relay's
    /// failures, which the result records.
    async fn measure(&self, relay: Relay, n: usize) -> RunResult {
        progress(&format!("{}, N = {n}", relay.title()));
        let began = Instant::now();
        let traces = Traces::new(n);
        let emulator = Emulator::start(EmulatorConfig {
            probe: Some(traces.probe()),
            ..EmulatorConfig::default()
        })
        .await
        .expect("start the emulator");
        let started = match relay {
            Relay::Unix => start_daemon(&emulator.url(), n, 0, false, None).await,
            Relay::Ws => start_daemon(&emulator.url(), n, 0, true, None).await,
            Relay::Reference => {
                let (python, script) = self.reference.as_ref().expect("a reference proxy");
                start_reference(python, script, &emulator.url()).await
            }
            Relay::Direct => Ok(RelayProcess {
                child: None,
                target: Target::Ws(emulator.url()),
                log: PathBuf::new(),
                _dir: tempfile::tempdir().expect("tempdir"),
            }),
        };
        let mut result = RunResult::new(relay, n, self.words.len());
        let process = match started {
            Ok(process) => process,
            Err(e) => {
                result.sessions_failed = n;
                result.first_error = Some(e);
                emulator.shutdown().await;
                return result;
            }
        };
        let pid = process.pid().map(Proc::Pid);
        // Let it settle before the idle figure.
        tokio::time::sleep(Duration::from_millis(300)).await;
        result.rss_idle_kib = pid.and_then(|p| p.status_kib("VmRSS"));

        let t0 = Instant::now() + Duration::from_millis(100);
        let ramp = self.plan.ramp;
        let bound = ramp + self.plan.audio() + SESSION_SLACK;
        let clients: Vec<_> = (0..n)
            .map(|i| {
                let start_at = t0 + ramp.mul_f64(i as f64 / n as f64);
                tokio::spawn(client(
                    process.target.clone(),
                    i,
                    start_at,
                    self.audio.clone(),
                    bound,
                ))
            })
            .collect();
        let window = self.steady_phase(&traces, n, t0, pid).await;
        let mut logs = Vec::with_capacity(n);
        for handle in clients {
            // Each client bounds itself; this bounds a hung runtime.
            match tokio::time::timeout(bound + Duration::from_secs(10), handle).await {
                Ok(Ok(log)) => logs.push(log),
                Ok(Err(e)) => logs.push(ClientLog {
                    error: Some(format!("client task: {e}")),
                    ..ClientLog::default()
                }),
                Err(_) => logs.push(ClientLog {
                    error: Some("client task hung".to_owned()),
                    ..ClientLog::default()
                }),
            }
        }
        result.peak_rss_kib = pid.and_then(|p| p.status_kib("VmHWM"));
        result.strays = traces.strays.load(Ordering::Relaxed);
        let _ = tokio::time::timeout(Duration::from_secs(10), emulator.shutdown()).await;
        let log_tail = process.log_tail();
        process.stop().await;
        match window {
            Ok(window) => result.window = Some(window),
            Err(e) => result.window_problem = Some(e),
        }
        result.analyse(&self.words, logs, &traces);
        if result.sessions_failed > 0 && relay.is_process() && !log_tail.is_empty() {
            result.relay_log_tail = Some(log_tail);
        }
        progress(&format!(
            "  {} in {:.1} s",
            result.summary(),
            began.elapsed().as_secs_f64()
        ));
        result
    }

    /// Waits for every session to stream, then samples the steady phase.
    async fn steady_phase(
        &self,
        traces: &Traces,
        n: usize,
        t0: Instant,
        pid: Option<Proc>,
    ) -> Result<Window, String> {
        // The first session's last chunk goes out 100 ms before its audio's end.
        let end = t0 + self.plan.audio() - Duration::from_millis(300);
        let latest_start = end - Duration::from_secs(1);
        while traces.started.load(Ordering::Acquire) < n && Instant::now() < latest_start {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let started = traces.started.load(Ordering::Acquire);
        let start = Instant::now().max(t0 + self.plan.ramp) + Duration::from_millis(500);
        if started < n || start + Duration::from_secs(1) > end {
            return Err(format!(
                "only {started} of {n} sessions streaming before the first one ended"
            ));
        }
        tokio::time::sleep_until(start.into()).await;
        let relay0 = pid.and_then(Proc::cpu_times);
        let bench0 = Proc::This.cpu_times().expect("/proc/self/stat");
        let machine0 = MachineCpu::now();
        tokio::time::sleep_until(end.into()).await;
        let relay1 = pid.and_then(Proc::cpu_times);
        let bench1 = Proc::This.cpu_times().expect("/proc/self/stat");
        let machine1 = MachineCpu::now();
        let relay = relay0.zip(relay1);
        let relay_cpu_s = relay.map(|(a, b)| b.total() - a.total());
        let bench_cpu_s = bench1.total() - bench0.total();
        let machine = machine0.zip(machine1);
        Ok(Window {
            start,
            end,
            relay_cpu_s,
            relay_sys_s: relay.map(|(a, b)| b.system_s - a.system_s),
            bench_cpu_s,
            others_cpu_s: machine.map(|(a, b)| {
                let busy = b.busy_s - a.busy_s - (b.steal_s - a.steal_s);
                (busy - bench_cpu_s - relay_cpu_s.unwrap_or(0.0)).max(0.0)
            }),
            steal_s: machine.map(|(a, b)| b.steal_s - a.steal_s),
            rss_active_kib: pid.and_then(|p| p.status_kib("VmRSS")),
        })
    }
}

// ---------------------------------------------------------------------------
// Results.

/// The figures of one relay at one N.
#[derive(Debug)]
struct RunResult {
    relay: Relay,
    n: usize,
    window: Option<Window>,
    window_problem: Option<String>,
    /// Seconds of audio the load generator wrote in the steady phase.
    audio_s: f64,
    rss_idle_kib: Option<u64>,
    peak_rss_kib: Option<u64>,
    /// Added latencies in the steady phase, ms, sorted.
    audio_ms: Vec<f64>,
    token_ms: Vec<f64>,
    /// The load generator's tick lag in the steady phase, ms, sorted.
    tick_lag_ms: Vec<f64>,
    words_per_session: usize,
    words_lost: usize,
    /// Final tokens beyond the expected ones (duplicates, strangers).
    words_extra: usize,
    /// Sessions whose finals were not exactly the words, in order.
    sessions_inexact: usize,
    sessions_failed: usize,
    first_error: Option<String>,
    /// Chunks written in the steady phase that never reached the emulator.
    frames_missing: usize,
    /// Upstream sessions beyond one per client (reconnects).
    upstream_restarts: u64,
    /// Probe events of unknown sessions.
    strays: usize,
    relay_log_tail: Option<String>,
}

impl RunResult {
    fn new(relay: Relay, n: usize, words_per_session: usize) -> RunResult {
        RunResult {
            relay,
            n,
            window: None,
            window_problem: None,
            audio_s: 0.0,
            rss_idle_kib: None,
            peak_rss_kib: None,
            audio_ms: Vec::new(),
            token_ms: Vec::new(),
            tick_lag_ms: Vec::new(),
            words_per_session,
            words_lost: 0,
            words_extra: 0,
            sessions_inexact: 0,
            sessions_failed: 0,
            first_error: None,
            frames_missing: 0,
            upstream_restarts: 0,
            strays: 0,
            relay_log_tail: None,
        }
    }

    /// Matches the clients' logs with the emulator's traces.
    fn analyse(&mut self, words: &[Word], logs: Vec<ClientLog>, traces: &Traces) {
        let window = self.window.map(|w| (w.start, w.end));
        let in_window = |t: Instant| window.is_some_and(|(a, b)| t >= a && t <= b);
        let (mut audio_ms, mut token_ms, mut lag_ms) = (Vec::new(), Vec::new(), Vec::new());
        let mut audio_bytes = 0u64;
        for (i, log) in logs.into_iter().enumerate() {
            let trace = std::mem::take(&mut *lock(&traces.sessions[i]));
            self.upstream_restarts += u64::from(trace.starts.saturating_sub(1));
            if let Some(e) = log.error {
                self.sessions_failed += 1;
                self.first_error.get_or_insert(format!("session s{i}: {e}"));
            }
            // Audio: the first frame upstream that completes each write.
            let mut frames = trace.frames.iter().peekable();
            let mut previous_end = 0;
            for &(end, at, lag) in &log.writes {
                let chunk = end - previous_end;
                previous_end = end;
                while frames.next_if(|(total, _)| *total < end).is_some() {}
                if !in_window(at) {
                    continue;
                }
                audio_bytes += chunk;
                lag_ms.push(lag);
                match frames.peek() {
                    Some((_, arrived)) => audio_ms.push(ms(arrived.saturating_duration_since(at))),
                    None => self.frames_missing += 1,
                }
            }
            // Tokens: by start_ms; the first send of each counts.
            let mut sent: HashMap<u64, Instant> = HashMap::with_capacity(trace.finals.len());
            for &(start_ms, at) in &trace.finals {
                sent.entry(start_ms).or_insert(at);
            }
            for (_, start_ms, at) in &log.finals {
                if in_window(*at)
                    && let Some(sent_at) = sent.get(start_ms)
                {
                    token_ms.push(ms(at.saturating_duration_since(*sent_at)));
                }
            }
            // Words: each once, in order, with its time.
            let exact = log.finals.len() == words.len()
                && log
                    .finals
                    .iter()
                    .zip(words)
                    .all(|((text, start, _), w)| *text == w.text && *start == w.start_ms);
            if !exact {
                self.sessions_inexact += 1;
                let got: BTreeSet<(&str, u64)> = log
                    .finals
                    .iter()
                    .map(|(text, start, _)| (text.as_str(), *start))
                    .collect();
                let found = words
                    .iter()
                    .filter(|w| got.contains(&(w.text.as_str(), w.start_ms)))
                    .count();
                self.words_lost += words.len() - found;
                self.words_extra += log.finals.len() - found.min(log.finals.len());
            }
        }
        self.audio_s = audio_bytes as f64 / BYTES_PER_SECOND;
        self.audio_ms = sorted(audio_ms);
        self.token_ms = sorted(token_ms);
        self.tick_lag_ms = sorted(lag_ms);
    }

    fn words_expected(&self) -> usize {
        self.n * self.words_per_session
    }

    /// Why the run is not a complete, lossless one, if it is not.
    fn incomplete(&self) -> Option<String> {
        if self.sessions_failed > 0 {
            return Some(format!(
                "{} sessions failed, first: {}",
                self.sessions_failed,
                self.first_error.as_deref().unwrap_or("?")
            ));
        }
        if let Some(problem) = &self.window_problem {
            return Some(problem.clone());
        }
        if self.words_lost > 0 || self.words_extra > 0 || self.sessions_inexact > 0 {
            return Some(format!(
                "{} words lost, {} extra, {} sessions not exact",
                self.words_lost, self.words_extra, self.sessions_inexact
            ));
        }
        if self.audio_ms.is_empty() || self.token_ms.is_empty() {
            return Some("no latency samples in the steady phase".to_owned());
        }
        None
    }

    /// p99 added latency under the bound, no word lost, nothing failed.
    fn sustained(&self) -> bool {
        self.incomplete().is_none() && self.frames_missing == 0 && self.p99() < SUSTAIN_P99_MS
    }

    /// The larger of the audio and token p99s, ms.
    fn p99(&self) -> f64 {
        let a = percentile(&self.audio_ms, 0.99).unwrap_or(f64::INFINITY);
        let t = percentile(&self.token_ms, 0.99).unwrap_or(f64::INFINITY);
        a.max(t)
    }

    fn cpu_per_audio_hour(&self) -> Option<f64> {
        let cpu = self.window?.relay_cpu_s?;
        (self.audio_s > 0.0).then(|| cpu / (self.audio_s / 3600.0))
    }

    fn window_s(&self) -> Option<f64> {
        self.window.map(|w| (w.end - w.start).as_secs_f64())
    }

    fn relay_cpu_percent(&self) -> Option<f64> {
        Some(self.window?.relay_cpu_s? / self.window_s()? * 100.0)
    }

    /// The kernel's share of the relay's CPU, in percent.
    fn relay_kernel_percent(&self) -> Option<f64> {
        let window = self.window?;
        let (sys, total) = (window.relay_sys_s?, window.relay_cpu_s?);
        (total > 0.0).then(|| sys / total * 100.0)
    }

    fn bench_cpu_percent(&self) -> Option<f64> {
        Some(self.window?.bench_cpu_s / self.window_s()? * 100.0)
    }

    fn others_cpu_percent(&self) -> Option<f64> {
        Some(self.window?.others_cpu_s? / self.window_s()? * 100.0)
    }

    fn steal_percent(&self) -> Option<f64> {
        Some(self.window?.steal_s? / self.window_s()? * 100.0)
    }

    fn rss_per_session_kib(&self) -> Option<f64> {
        let active = self.window?.rss_active_kib?;
        let idle = self.rss_idle_kib?;
        Some((active as f64 - idle as f64) / self.n as f64)
    }

    /// The progress line.
    fn summary(&self) -> String {
        match self.incomplete() {
            Some(problem) if self.audio_ms.is_empty() => problem,
            problem => format!(
                "p99 audio {} / tokens {} ms, relay CPU {}, {} lost{}",
                fmt_opt(percentile(&self.audio_ms, 0.99), 2),
                fmt_opt(percentile(&self.token_ms, 0.99), 2),
                fmt_opt(self.relay_cpu_percent().map(|p| p / 100.0), 2) + " cores",
                self.words_lost,
                problem.map(|p| format!(" ({p})")).unwrap_or_default()
            ),
        }
    }

    /// Remarks for the notes under the table.
    fn notes(&self, cores: usize) -> Vec<String> {
        let mut notes = Vec::new();
        let at = format!("{} N = {}", self.relay.title(), self.n);
        if let Some(problem) = self.incomplete() {
            notes.push(format!("{at}: {problem}"));
        }
        if let Some(tail) = &self.relay_log_tail {
            notes.push(format!("{at}: the relay's log ends:\n{tail}"));
        }
        if self.frames_missing > 0 {
            notes.push(format!(
                "{at}: {} chunks never reached the emulator",
                self.frames_missing
            ));
        }
        if self.upstream_restarts > 0 {
            notes.push(format!(
                "{at}: {} upstream sessions restarted (reconnects)",
                self.upstream_restarts
            ));
        }
        if self.strays > 0 {
            notes.push(format!(
                "{at}: {} emulator events of unknown sessions",
                self.strays
            ));
        }
        let others = self.others_cpu_percent().unwrap_or(0.0) + self.steal_percent().unwrap_or(0.0);
        if others > 10.0 {
            notes.push(format!(
                "{at}: other processes (or the hypervisor) took {others:.0} % of a core \
                 during the steady phase: these figures are disturbed"
            ));
        }
        let total = self.relay_cpu_percent().unwrap_or(0.0)
            + self.bench_cpu_percent().unwrap_or(0.0)
            + others;
        if total > 85.0 * cores as f64 {
            notes.push(format!(
                "{at}: the machine is saturated (relay {} % + bench process {} % + others \
                 {others:.0} % of {} %): latency includes waiting for a core",
                fmt_opt(self.relay_cpu_percent(), 0),
                fmt_opt(self.bench_cpu_percent(), 0),
                100 * cores
            ));
        }
        let lag = percentile(&self.tick_lag_ms, 0.99).unwrap_or(0.0);
        if lag > 5.0 && total > 60.0 * cores as f64 {
            notes.push(format!(
                "{at}: the load generator's clock fired late (tick lag p99 {lag:.1} ms): \
                 it was short of CPU, and sent less than real time"
            ));
        } else if lag > 3.0 && total < 25.0 * cores as f64 {
            // Up to 2 ms is tokio's timer: a 1 ms wheel, deadlines rounded up.
            notes.push(format!(
                "{at}: the machine was mostly idle ({total:.0} % of {} %) yet the load \
                 generator's clock fired up to {lag:.1} ms late (p99): waking an idle core \
                 is slow here, and p99 latencies of that order are partly that",
                100 * cores
            ));
        }
        notes
    }
}

/// A figure with `digits` decimals, or `—`.
fn fmt_opt(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "—".to_owned(), |v| format!("{v:.digits$}"))
}

/// `p50 / p99` of sorted figures.
fn p50_p99(sorted: &[f64]) -> String {
    if sorted.is_empty() {
        return "—".to_owned();
    }
    format!(
        "{} / {}",
        fmt_opt(percentile(sorted, 0.5), 2),
        fmt_opt(percentile(sorted, 0.99), 2)
    )
}

// ---------------------------------------------------------------------------
// Time to first forwarded audio.

/// Per warm-pool setting, the times (ms) from a client's connect to the
/// emulator's first audio frame of its session.
async fn first_audio_figures(sessions: usize) -> Vec<(usize, Result<Vec<f64>, String>)> {
    let (ca_pem, identity) = soniox_emulator::tls::test_identity();
    let emulator = Emulator::start(EmulatorConfig {
        tls: Some(identity),
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the wss:// emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write the CA");
    let mut out = Vec::new();
    for pool in [0, 2] {
        let figures = match start_daemon(&emulator.url(), 10, pool, false, Some(&ca_file)).await {
            Ok(daemon) => {
                let figures = first_audio_times(&emulator, &daemon, pool, sessions).await;
                daemon.stop().await;
                figures
            }
            Err(e) => Err(e),
        };
        out.push((pool, figures.map(sorted)));
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), emulator.shutdown()).await;
    out
}

/// `sessions` one after another, 200 ms apart, each a one-word clip sent
/// at once with its header.
async fn first_audio_times(
    emulator: &Emulator,
    daemon: &RelayProcess,
    pool: usize,
    sessions: usize,
) -> Result<Vec<f64>, String> {
    let Target::Unix(socket) = &daemon.target else {
        return Err("the daemon has no socket".to_owned());
    };
    let words = [Word {
        text: " hi".into(),
        start_ms: 100,
        duration_ms: 200,
    }];
    let audio = marker::encode(&words, 500, RATE, 1);
    let mut figures = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        // Give the pool its time to refill between sessions, as between
        // real arrivals.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = emulator.counts().connected;
        let started = Instant::now();
        let session = async {
            let mut stream = UnixStream::connect(socket).await?;
            stream.write_all(b"{\"rate\":16000}\n").await?;
            stream.write_all(&audio).await?;
            stream.shutdown().await?;
            let mut events = String::new();
            stream.read_to_string(&mut events).await?;
            Ok::<_, std::io::Error>(events)
        };
        let events = tokio::time::timeout(Duration::from_secs(30), session)
            .await
            .map_err(|_| "a session did not finish within 30 s".to_owned())?
            .map_err(|e| format!("a session failed: {e}"))?;
        if !events.contains(" hi") {
            return Err(format!("the word did not come back: {events}"));
        }
        // The session's upstream is a new connection or one of the pool's.
        let first_audio = (before.saturating_sub(pool)..emulator.counts().connected)
            .filter_map(|index| emulator.session(index)?.first_audio_at)
            .filter(|t| *t >= started)
            .min()
            .ok_or("the emulator got no audio")?;
        figures.push(ms(first_audio - started));
    }
    Ok(figures)
}

// ---------------------------------------------------------------------------
// The table.

enum Row {
    Section(String),
    Cells(String, Vec<String>),
    Wide(String, String),
}

struct Table {
    columns: Vec<String>,
    rows: Vec<Row>,
}

impl Table {
    fn section(&mut self, title: impl Into<String>) {
        self.rows.push(Row::Section(title.into()));
    }

    fn cells(&mut self, label: impl Into<String>, cells: Vec<String>) {
        self.rows.push(Row::Cells(label.into(), cells));
    }

    fn wide(&mut self, label: impl Into<String>, text: impl Into<String>) {
        self.rows.push(Row::Wide(label.into(), text.into()));
    }

    fn print(&self) {
        let label_width = self
            .rows
            .iter()
            .filter_map(|r| match r {
                Row::Cells(label, _) | Row::Wide(label, _) => Some(label.chars().count()),
                Row::Section(_) => None,
            })
            .max()
            .unwrap_or(0)
            + 2;
        let widths: Vec<usize> = (0..self.columns.len())
            .map(|c| {
                self.rows
                    .iter()
                    .filter_map(|r| match r {
                        Row::Cells(_, cells) => cells.get(c).map(|s| s.chars().count()),
                        _ => None,
                    })
                    .chain([self.columns[c].chars().count()])
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        let line = |label: &str, cells: &[String]| {
            let mut out = format!("{label:<label_width$}");
            for (cell, width) in cells.iter().zip(&widths) {
                out.push_str(&format!("  {cell:>width$}"));
            }
            println!("{}", out.trim_end());
        };
        line("", &self.columns);
        let total = label_width + widths.iter().map(|w| w + 2).sum::<usize>();
        println!("{}", "-".repeat(total));
        for row in &self.rows {
            match row {
                Row::Section(title) => println!("{title}"),
                Row::Cells(label, cells) => line(&format!("  {label}"), cells),
                Row::Wide(label, text) => println!("  {label:<w$}  {text}", w = label_width - 2),
            }
        }
    }
}

impl Ctx {
    fn table(
        &self,
        relays: &[Relay],
        results: &BTreeMap<(Relay, usize), RunResult>,
        largest: &BTreeMap<Relay, (Option<usize>, bool)>,
        first_audio: &[(usize, Result<Vec<f64>, String>)],
        filter: &Result<FilterFigures, String>,
    ) -> Table {
        let mut table = Table {
            columns: relays.iter().map(|r| r.title().to_owned()).collect(),
            rows: Vec::new(),
        };
        let per = |f: &dyn Fn(&RunResult) -> String, n: usize| -> Vec<String> {
            relays
                .iter()
                .map(|r| results.get(&(*r, n)).map_or_else(|| "—".to_owned(), f))
                .collect()
        };
        // The detailed sections: the comparison N, 1000, the largest step,
        // and each relay's largest sustained N.
        let mut detail: BTreeSet<usize> = BTreeSet::from([self.plan.compare_n]);
        detail.extend(
            self.plan
                .daemon_steps
                .iter()
                .copied()
                .filter(|&n| n == 1000),
        );
        detail.extend(self.plan.daemon_steps.iter().max());
        detail.extend(largest.values().filter_map(|(n, _)| *n));
        for n in detail {
            // Not for the direct baseline alone: its figures are in the search rows.
            if !results.keys().any(|(r, m)| *m == n && *r != Relay::Direct) {
                continue;
            }
            table.section(format!(
                "N = {n} concurrent real-time sessions ({} words each)",
                self.words.len()
            ));
            table.cells(
                "relay CPU, s per audio-hour",
                per(&|r| fmt_opt(r.cpu_per_audio_hour(), 2), n),
            );
            if let Some(reference) = results
                .get(&(Relay::Reference, n))
                .and_then(RunResult::cpu_per_audio_hour)
            {
                table.cells(
                    "  reference proxy's CPU ÷ this relay's",
                    per(
                        &|r| match r.cpu_per_audio_hour() {
                            Some(cpu) if r.relay != Relay::Reference && cpu > 0.0 => {
                                format!("{:.1}×", reference / cpu)
                            }
                            _ => "—".to_owned(),
                        },
                        n,
                    ),
                );
            }
            table.cells(
                "relay CPU, % of a core",
                per(&|r| fmt_opt(r.relay_cpu_percent(), 1), n),
            );
            table.cells(
                "  of which in the kernel, %",
                per(&|r| fmt_opt(r.relay_kernel_percent(), 0), n),
            );
            table.cells(
                "relay peak RSS (VmHWM), MiB",
                per(
                    &|r| fmt_opt(r.peak_rss_kib.map(|k| k as f64 / 1024.0), 1),
                    n,
                ),
            );
            table.cells(
                "relay RSS per active session, KiB",
                per(&|r| fmt_opt(r.rss_per_session_kib(), 1), n),
            );
            table.cells(
                "added latency, audio p50 / p99, ms",
                per(&|r| p50_p99(&r.audio_ms), n),
            );
            table.cells(
                "added latency, tokens p50 / p99, ms",
                per(&|r| p50_p99(&r.token_ms), n),
            );
            table.cells(
                "words lost (of expected)",
                per(
                    &|r| {
                        let mut cell = format!("{} of {}", r.words_lost, r.words_expected());
                        if r.sessions_failed > 0 {
                            cell.push_str(&format!(", {} failed", r.sessions_failed));
                        }
                        if r.words_extra > 0 {
                            cell.push_str(&format!(", {} extra", r.words_extra));
                        }
                        cell
                    },
                    n,
                ),
            );
            table.cells(
                "bench process (load gen + emulator) CPU, % of a core",
                per(&|r| fmt_opt(r.bench_cpu_percent(), 1), n),
            );
            table.cells(
                "load generator tick lag p99, ms",
                per(&|r| fmt_opt(percentile(&r.tick_lag_ms, 0.99), 2), n),
            );
            table.cells(
                "other processes' CPU (+ steal), % of a core",
                per(
                    &|r| {
                        format!(
                            "{} (+{})",
                            fmt_opt(r.others_cpu_percent(), 1),
                            fmt_opt(r.steal_percent(), 1)
                        )
                    },
                    n,
                ),
            );
        }

        // The search's rows, when there was a search.
        if !largest.is_empty() {
            let searched: BTreeSet<usize> = results.keys().map(|(_, n)| *n).collect();
            table.section(format!(
                "p99 added latency, audio / tokens (ms), by N: `ok` is under {SUSTAIN_P99_MS} ms with no word lost"
            ));
            for n in searched {
                table.cells(
                    format!("N = {n}"),
                    per(
                        &|r| {
                            let verdict = if r.sustained() {
                                "ok".to_owned()
                            } else if r.words_lost > 0 || r.sessions_failed > 0 {
                                format!("{} lost", r.words_lost)
                            } else {
                                "over".to_owned()
                            };
                            format!(
                                "{} / {} {verdict}",
                                fmt_opt(percentile(&r.audio_ms, 0.99), 2),
                                fmt_opt(percentile(&r.token_ms, 0.99), 2)
                            )
                        },
                        n,
                    ),
                );
            }
            table.cells(
                format!("largest N with p99 < {SUSTAIN_P99_MS} ms, no word lost"),
                relays
                    .iter()
                    .map(|r| match largest.get(r) {
                        Some((Some(n), true)) => format!("≥ {n} (every step)"),
                        Some((Some(n), false)) => n.to_string(),
                        Some((None, _)) => "none".to_owned(),
                        None => "—".to_owned(),
                    })
                    .collect(),
            );
        }

        table.section("once per run");
        for (pool, figures) in first_audio {
            let text = match figures {
                Ok(f) => format!(
                    "p50 {} ms, p99 {} ms, max {} ms ({} sessions)",
                    fmt_opt(percentile(f, 0.5), 2),
                    fmt_opt(percentile(f, 0.99), 2),
                    fmt_opt(percentile(f, 1.0), 2),
                    f.len()
                ),
                Err(e) => format!("failed: {e}"),
            };
            table.wide(
                format!("time to first forwarded audio, --warm-pool {pool} (unix socket, wss://)"),
                text,
            );
        }
        let filter_text = match filter {
            Ok(f) => format!(
                "CPU {:.2} % of a core ({:.1} s per audio-hour), peak RSS {:.1} MiB, {} of {} words ({} s)",
                f.cpu_percent(),
                f.cpu_s / (f.audio_s as f64 / 3600.0),
                f.peak_rss_kib / 1024.0,
                f.words,
                f.expected,
                f.audio_s
            ),
            Err(e) => format!("skipped: {e}"),
        };
        table.wide("the filter alone, one real-time stream", filter_text);
        table
    }
}
