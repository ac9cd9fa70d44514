//! One measurement: N sessions through one relay. The emulator's probe
//! traces what arrived when; the steady phase's `/proc` samples give the
//! relay's CPU and RSS; the clients' logs matched with the traces give the
//! added latencies and the words lost.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use soniox_emulator::marker::Word;
use soniox_emulator::{Emulator, EmulatorConfig, Probe, ProbeEvent, ProbeKind};

use crate::common::{MachineCpu, Proc, percentile, sorted};
use crate::load::{self, ClientLog};
use crate::report::fmt_opt;
use crate::{BYTES_PER_SECOND, Ctx, Relay, SESSION_SLACK, SUSTAIN_P99_MS, ms, progress, relays};

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
            // Behind the gateway, the id is `gateway/NAME/s<i>`.
            .and_then(|id| {
                id.rsplit('/')
                    .next()?
                    .strip_prefix('s')?
                    .parse::<usize>()
                    .ok()
            })
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
// One measurement.

/// The steady phase's bounds and the samples taken at them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Window {
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
    pub(crate) async fn measure(&self, relay: Relay, n: usize) -> RunResult {
        progress(&format!("{}, N = {n}", relay.title()));
        let began = Instant::now();
        let traces = Traces::new(n);
        let emulator = Emulator::start(EmulatorConfig {
            probe: Some(traces.probe()),
            ..EmulatorConfig::default()
        })
        .await
        .expect("start the emulator");
        let started = relays::start(relay, &emulator.url(), n, self.reference.as_ref()).await;
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
                tokio::spawn(load::client(
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
pub(crate) struct RunResult {
    pub(crate) relay: Relay,
    pub(crate) n: usize,
    pub(crate) window: Option<Window>,
    pub(crate) window_problem: Option<String>,
    /// Seconds of audio the load generator wrote in the steady phase.
    pub(crate) audio_s: f64,
    pub(crate) rss_idle_kib: Option<u64>,
    pub(crate) peak_rss_kib: Option<u64>,
    /// Added latencies in the steady phase, ms, sorted.
    pub(crate) audio_ms: Vec<f64>,
    pub(crate) token_ms: Vec<f64>,
    /// The load generator's tick lag in the steady phase, ms, sorted.
    pub(crate) tick_lag_ms: Vec<f64>,
    pub(crate) words_per_session: usize,
    pub(crate) words_lost: usize,
    /// Final tokens beyond the expected ones (duplicates, strangers).
    pub(crate) words_extra: usize,
    /// Sessions whose finals were not exactly the words, in order.
    pub(crate) sessions_inexact: usize,
    pub(crate) sessions_failed: usize,
    pub(crate) first_error: Option<String>,
    /// Chunks written in the steady phase that never reached the emulator.
    pub(crate) frames_missing: usize,
    /// Upstream sessions beyond one per client (reconnects).
    pub(crate) upstream_restarts: u64,
    /// Probe events of unknown sessions.
    pub(crate) strays: usize,
    pub(crate) relay_log_tail: Option<String>,
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

    pub(crate) fn words_expected(&self) -> usize {
        self.n * self.words_per_session
    }

    /// Why the run is not a complete, lossless one, if it is not.
    pub(crate) fn incomplete(&self) -> Option<String> {
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
    pub(crate) fn sustained(&self) -> bool {
        self.incomplete().is_none() && self.frames_missing == 0 && self.p99() < SUSTAIN_P99_MS
    }

    /// The larger of the audio and token p99s, ms.
    fn p99(&self) -> f64 {
        let a = percentile(&self.audio_ms, 0.99).unwrap_or(f64::INFINITY);
        let t = percentile(&self.token_ms, 0.99).unwrap_or(f64::INFINITY);
        a.max(t)
    }

    pub(crate) fn cpu_per_audio_hour(&self) -> Option<f64> {
        let cpu = self.window?.relay_cpu_s?;
        (self.audio_s > 0.0).then(|| cpu / (self.audio_s / 3600.0))
    }

    fn window_s(&self) -> Option<f64> {
        self.window.map(|w| (w.end - w.start).as_secs_f64())
    }

    pub(crate) fn relay_cpu_percent(&self) -> Option<f64> {
        Some(self.window?.relay_cpu_s? / self.window_s()? * 100.0)
    }

    /// The kernel's share of the relay's CPU, in percent.
    pub(crate) fn relay_kernel_percent(&self) -> Option<f64> {
        let window = self.window?;
        let (sys, total) = (window.relay_sys_s?, window.relay_cpu_s?);
        (total > 0.0).then(|| sys / total * 100.0)
    }

    pub(crate) fn bench_cpu_percent(&self) -> Option<f64> {
        Some(self.window?.bench_cpu_s / self.window_s()? * 100.0)
    }

    pub(crate) fn others_cpu_percent(&self) -> Option<f64> {
        Some(self.window?.others_cpu_s? / self.window_s()? * 100.0)
    }

    pub(crate) fn steal_percent(&self) -> Option<f64> {
        Some(self.window?.steal_s? / self.window_s()? * 100.0)
    }

    pub(crate) fn rss_per_session_kib(&self) -> Option<f64> {
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
}
