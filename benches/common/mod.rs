//! Helpers shared by the benchmarks: the sttpipe binary they measure,
//! percentiles, a process's CPU time and memory from `/proc`, and the
//! filter's own cost for one real-time stream.
//!
//! Each bench includes this module with `mod common;` and uses a part of it.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::time::Duration;

use soniox_emulator::marker;
use soniox_emulator::{Emulator, EmulatorConfig};

/// Where GNU time lives (Debian package `time`).
const GNU_TIME: &str = "/usr/bin/time";

/// Names another sttpipe binary to measure than the one built with the
/// bench (an older build, for before and after figures).
pub(crate) const BIN_ENV: &str = "STTPIPE_BENCH_BIN";

/// The sttpipe binary the benches run: [`BIN_ENV`] if set and not empty,
/// else the one cargo built with the bench.
pub(crate) fn sttpipe_bin() -> PathBuf {
    match std::env::var_os(BIN_ENV) {
        Some(path) if !path.is_empty() => PathBuf::from(path),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_sttpipe")),
    }
}

/// The value at fraction `p` (0 to 1) of `sorted`, nearest rank; `None` if
/// it is empty.
pub(crate) fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let last = sorted.len().checked_sub(1)?;
    let index = (last as f64 * p).round() as usize;
    Some(sorted[index.min(last)])
}

/// Sorts figures for [`percentile`].
pub(crate) fn sorted(mut figures: Vec<f64>) -> Vec<f64> {
    figures.sort_by(f64::total_cmp);
    figures
}

/// A process: `"self"` or a pid, as `/proc` names it.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Proc {
    /// The calling process.
    This,
    /// Another process.
    Pid(u32),
}

impl Proc {
    fn path(self, file: &str) -> String {
        match self {
            Proc::This => format!("/proc/self/{file}"),
            Proc::Pid(pid) => format!("/proc/{pid}/{file}"),
        }
    }

    /// CPU time of all the process's threads so far (`utime` and `stime`
    /// of `/proc/PID/stat`); `None` once it is gone.
    pub(crate) fn cpu_times(self) -> Option<CpuTimes> {
        let stat = std::fs::read_to_string(self.path("stat")).ok()?;
        // The command name may hold spaces and parentheses: fields count
        // from after its closing parenthesis, where field 3 (state) is.
        let rest = &stat[stat.rfind(')')? + 1..];
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        let ticks = clock_ticks();
        Some(CpuTimes {
            user_s: utime as f64 / ticks,
            system_s: stime as f64 / ticks,
        })
    }

    /// A `kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM`, …) in KiB.
    pub(crate) fn status_kib(self, key: &str) -> Option<u64> {
        let status = std::fs::read_to_string(self.path("status")).ok()?;
        status.lines().find_map(|line| {
            let value = line.strip_prefix(key)?.strip_prefix(':')?;
            value.split_whitespace().next()?.parse().ok()
        })
    }
}

/// A process's CPU time, in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuTimes {
    /// In user mode.
    pub(crate) user_s: f64,
    /// In the kernel.
    pub(crate) system_s: f64,
}

impl CpuTimes {
    /// User plus system.
    pub(crate) fn total(self) -> f64 {
        self.user_s + self.system_s
    }
}

/// The whole machine's CPU time so far (the `cpu` line of `/proc/stat`),
/// in seconds.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MachineCpu {
    /// Busy on every core, whatever the process (steal included).
    pub(crate) busy_s: f64,
    /// Taken by the hypervisor for other guests.
    pub(crate) steal_s: f64,
}

impl MachineCpu {
    /// Reads `/proc/stat`; `None` if it cannot.
    pub(crate) fn now() -> Option<MachineCpu> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        let fields: Vec<u64> = stat
            .lines()
            .next()?
            .strip_prefix("cpu ")?
            .split_whitespace()
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        // user nice system idle iowait irq softirq steal (guest time is
        // already in user and nice).
        let &[user, nice, system, _idle, _iowait, irq, softirq, steal, ..] = &fields[..] else {
            return None;
        };
        let ticks = clock_ticks();
        Some(MachineCpu {
            busy_s: (user + nice + system + irq + softirq + steal) as f64 / ticks,
            steal_s: steal as f64 / ticks,
        })
    }
}

/// Clock ticks a second, the unit of `/proc/PID/stat` times.
fn clock_ticks() -> f64 {
    use nix::unistd::{SysconfVar, sysconf};
    match sysconf(SysconfVar::CLK_TCK) {
        Ok(Some(ticks)) if ticks > 0 => ticks as f64,
        // Linux has used 100 on every architecture for decades.
        _ => 100.0,
    }
}

/// Whether GNU time, which [`measure_filter`] needs, is installed.
pub(crate) fn gnu_time_available() -> bool {
    Path::new(GNU_TIME).is_file()
}

/// The filter's cost for one real-time stream (see [`measure_filter`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct FilterFigures {
    /// Seconds of audio streamed.
    pub(crate) audio_s: u64,
    /// Wall time of the run, in seconds.
    pub(crate) wall_s: f64,
    /// User plus system CPU, in seconds.
    pub(crate) cpu_s: f64,
    /// Peak RSS, in KiB.
    pub(crate) peak_rss_kib: f64,
    /// Final tokens that came back.
    pub(crate) words: usize,
    /// Words in the audio.
    pub(crate) expected: usize,
}

impl FilterFigures {
    /// CPU as a share of one core over the run, in percent.
    pub(crate) fn cpu_percent(&self) -> f64 {
        self.cpu_s / self.wall_s * 100.0
    }
}

/// Runs the `sttpipe` filter ([`sttpipe_bin`]) on `seconds` of marker audio (a word
/// every 500 ms) against an in-process emulator on loopback, under GNU time,
/// which gives its CPU time and peak RSS (from `wait4`, so nothing is
/// missed at the end). The filter paces the file to real time itself.
///
/// # Errors
/// If GNU time is missing or the filter fails; the message says which.
pub(crate) async fn measure_filter(seconds: u64) -> Result<FilterFigures, String> {
    if !gnu_time_available() {
        return Err(format!("{GNU_TIME} is missing (Debian package `time`)"));
    }
    let emulator = Emulator::start(EmulatorConfig::default())
        .await
        .map_err(|e| format!("emulator: {e}"))?;
    let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
    let words = marker::script((seconds as usize * 2).saturating_sub(2), 500, 500);
    let audio = marker::encode(&words, seconds * 1000, 16_000, 1);
    let input = dir.path().join("input.raw");
    std::fs::write(&input, &audio).map_err(|e| format!("write input: {e}"))?;
    let times = dir.path().join("time");
    let run = tokio::process::Command::new(GNU_TIME)
        .arg("-f")
        .arg("%M %e %U %S")
        .arg("-o")
        .arg(&times)
        .arg(sttpipe_bin())
        .arg("--input")
        .arg(&input)
        .env("SONIOX_WS_URL", emulator.url())
        .env("SONIOX_API_KEY", "test-key")
        .env_remove("RUST_LOG")
        .kill_on_drop(true)
        .output();
    let bound = Duration::from_secs(seconds + 60);
    let output = tokio::time::timeout(bound, run)
        .await
        .map_err(|_| format!("the filter did not finish within {bound:?}"))?
        .map_err(|e| format!("run {GNU_TIME}: {e}"))?;
    let _ = tokio::time::timeout(Duration::from_secs(5), emulator.shutdown()).await;
    if !output.status.success() {
        return Err(format!(
            "sttpipe failed: {}",
            String::from_utf8_lossy(&output.stderr)
        ));
    }
    let finals = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains(r#""type":"token""#))
        .count();
    let figures = std::fs::read_to_string(&times).map_err(|e| format!("time output: {e}"))?;
    let fields: Vec<f64> = figures
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [peak_rss_kib, wall_s, user, sys] = fields[..] else {
        return Err(format!("unexpected {GNU_TIME} output: {figures}"));
    };
    Ok(FilterFigures {
        audio_s: seconds,
        wall_s,
        cpu_s: user + sys,
        peak_rss_kib,
        words: finals,
        expected: words.len(),
    })
}
