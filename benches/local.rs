//! The local engine's figures: word error rate, real-time factor, CPU time and
//! peak RSS of `sttpipe --engine local` on `tests/fixtures/speech-16k.wav`
//! (33 s of piper speech, ten sentences), for Moonshine tiny-en and, when it
//! is provisioned, base-en; each without and with `--partials`.
//!
//! `cargo bench --bench local` (release build). Each configuration runs
//! `BENCH_RUNS` times (default 3) as a whole process, the way a user runs it,
//! under GNU time (`/usr/bin/time`, Debian package `time`), which gives the
//! CPU time (user + system) and the peak RSS; the wall time is measured
//! around it. So the figures include starting the process and loading the
//! library and the model, and the input is taken as fast as it decodes (the
//! local engine is not paced).
//!
//! * WER: [`word_error_rate`] of the final tokens' text, joined, against
//!   `tests/fixtures/speech-16k.txt`.
//! * RTF: wall seconds over audio seconds (the `end` event's `audio_ms`); the
//!   median of the runs. Every run's RTF is listed too: the first one of a
//!   model may include reading its files into the page cache.
//! * start s: the median wall time of the same command on 0.5 s of silence,
//!   that is the fixed cost (process start, library and model load); RTF-start
//!   is the RTF without it, the figure for a long stream.
//! * CPU s, peak RSS: those of the median run.
//! * others %: the CPU other processes took during the runs (and the
//!   hypervisor's steal), in % of one core: on 2 cores, a configuration run
//!   next to much of it came out slower than the machine is.
//!
//! The engine's files are found where `--engine local` finds them by default
//! (`sttpipe engine install` puts them there); without them the bench
//! says how to provision them and exits 0. It prints figures and asserts
//! nothing about speed.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use serde_json::Value;
// The tests' metric and the installer's default directory.
#[path = "../tests/util/engine_dir.rs"]
mod engine_dir;
#[path = "../tests/util/wer.rs"]
mod wer;

use engine_dir::default_engine_dir as default_dir;
use wer::word_error_rate;

/// The installing command.
const INSTALL_COMMAND: &str = "sttpipe engine install";

use common::{MachineCpu, gnu_time_available};

/// One run of the binary.
struct Run {
    wall_s: f64,
    cpu_s: f64,
    rss_mib: f64,
    audio_s: f64,
    wer: f64,
    /// CPU seconds other processes took meanwhile, steal included.
    others_s: f64,
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|&n| n > 0)
        .unwrap_or(3);
    let Some(dir) = default_dir().filter(|d| d.join("lib").is_dir()) else {
        println!(
            "the local engine is not provisioned: run {INSTALL_COMMAND} (and {INSTALL_COMMAND} base-en for base-en)"
        );
        return;
    };
    if !gnu_time_available() {
        println!("/usr/bin/time is missing (Debian package `time`): nothing measured");
        return;
    }
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let wav = fixtures.join("speech-16k.wav");
    let reference =
        std::fs::read_to_string(fixtures.join("speech-16k.txt")).expect("read the reference");

    let mut models = Vec::new();
    for model in ["tiny-en", "base-en"] {
        if dir.join(format!("moonshine-{model}")).is_dir() {
            models.push(model);
        } else {
            println!(
                "{model} is not provisioned in {}: skipped ({INSTALL_COMMAND} {model} provisions it)",
                dir.display()
            );
        }
    }

    // The fixed cost, with next to nothing to decode: 0.5 s of silence.
    let scratch = tempfile::tempdir().expect("tempdir");
    let silence = scratch.path().join("silence.wav");
    std::fs::write(&silence, silence_wav(500)).expect("write the silence");

    // Other work on the machine slows the runs: say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("unknown");
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    println!(
        "local engine on {} ({runs} runs each; RTF the median, CPU and RSS of the median run)",
        wav.display()
    );
    println!("{cores} cores, load average {load} at the start");
    println!(
        "{:<20} {:>6} {:>7} {:>8} {:>10} {:>7} {:>13} {:>8} {:>9}   RTF of each run, in order",
        "model",
        "WER %",
        "RTF",
        "start s",
        "RTF-start",
        "CPU s",
        "peak RSS MiB",
        "audio s",
        "others %"
    );
    for model in models {
        let rows: Vec<(bool, Vec<Run>)> = [false, true]
            .into_iter()
            .map(|partials| {
                let results = (0..runs)
                    .map(|_| run(model, partials, &wav, &reference))
                    .collect();
                (partials, results)
            })
            .collect();
        let startup = median((0..runs).map(|_| run(model, false, &silence, "")).collect()).wall_s;
        for (partials, results) in rows {
            let each: Vec<String> = results
                .iter()
                .map(|r| format!("{:.3}", r.wall_s / r.audio_s))
                .collect();
            let wers_differ = results.iter().any(|r| r.wer != results[0].wer);
            let others_percent = results.iter().map(|r| r.others_s).sum::<f64>()
                / results.iter().map(|r| r.wall_s).sum::<f64>()
                * 100.0;
            let m = median(results);
            let name = if partials {
                format!("{model} --partials")
            } else {
                model.to_owned()
            };
            println!(
                "{name:<20} {:>6.1} {:>7.3} {:>8.2} {:>10.3} {:>7.2} {:>13.1} {:>8.2} {:>9.0}   {}{}",
                m.wer * 100.0,
                m.wall_s / m.audio_s,
                startup,
                (m.wall_s - startup) / m.audio_s,
                m.cpu_s,
                m.rss_mib,
                m.audio_s,
                others_percent,
                each.join(" "),
                if wers_differ { " (WERs differ)" } else { "" },
            );
        }
    }
    println!(
        "RTF: wall time over audio time, whole process; start s: the wall time on 0.5 s of \
         silence (process start, library and model load); RTF-start: RTF without it; \
         others %: other processes' CPU (and steal) during the runs, % of a core: \
         figures taken next to much of it are slower than the machine is. \
         The first run of each model may include page-cache warm-up."
    );
}

/// The run of median wall time.
fn median(mut runs: Vec<Run>) -> Run {
    runs.sort_by(|a, b| a.wall_s.total_cmp(&b.wall_s));
    runs.swap_remove(runs.len() / 2)
}

/// `ms` of silence as a 16 kHz mono 16-bit WAV file.
fn silence_wav(ms: u32) -> Vec<u8> {
    let data_len = ms * 16 * 2;
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data_len).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes()); // the fmt chunk's size
    wav.extend_from_slice(&1u16.to_le_bytes()); // PCM
    wav.extend_from_slice(&1u16.to_le_bytes()); // mono
    wav.extend_from_slice(&16_000u32.to_le_bytes()); // sample rate
    wav.extend_from_slice(&32_000u32.to_le_bytes()); // bytes a second
    wav.extend_from_slice(&2u16.to_le_bytes()); // bytes a frame
    wav.extend_from_slice(&16u16.to_le_bytes()); // bits a sample
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&data_len.to_le_bytes());
    wav.resize(wav.len() + data_len as usize, 0);
    wav
}

/// Runs `sttpipe --engine local` on `wav` once under GNU time.
fn run(model: &str, partials: bool, wav: &Path, reference: &str) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let times = dir.path().join("time");
    let mut command = Command::new("/usr/bin/time");
    command
        .args(["-f", "%U %S %M", "-o"])
        .arg(&times)
        .arg(env!("CARGO_BIN_EXE_sttpipe"))
        .args(["--engine", "local", "--local-model", model, "--input"])
        .arg(wav);
    if partials {
        command.arg("--partials");
    }
    let machine0 = MachineCpu::now();
    let started = Instant::now();
    let output = command
        .output()
        .expect("run sttpipe under /usr/bin/time (Debian package `time`)");
    let wall_s = started.elapsed().as_secs_f64();
    let machine1 = MachineCpu::now();
    assert!(
        output.status.success(),
        "sttpipe --local-model {model} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    let mut text = String::new();
    let mut audio_ms = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let event: Value = serde_json::from_str(line).expect("an NDJSON line");
        match event["type"].as_str() {
            Some("token") if event["is_final"] == true => {
                text.push_str(event["text"].as_str().expect("a token's text"));
            }
            Some("end") => audio_ms = event["audio_ms"].as_u64(),
            _ => {}
        }
    }
    let audio_s = audio_ms.expect("an end event with audio_ms") as f64 / 1000.0;

    let figures = std::fs::read_to_string(&times).expect("GNU time's output");
    // The last line: anything before it is a note of time's own.
    let fields: Vec<f64> = figures
        .lines()
        .last()
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [user, sys, rss_kib] = fields[..] else {
        panic!("unexpected output of GNU time: {figures}");
    };
    let cpu_s = user + sys;
    // The machine's busy time (steal included) less ours.
    let others_s = machine0
        .zip(machine1)
        .map_or(0.0, |(a, b)| (b.busy_s - a.busy_s - cpu_s).max(0.0));
    Run {
        wall_s,
        cpu_s,
        others_s,
        rss_mib: rss_kib / 1024.0,
        audio_s,
        wer: word_error_rate(reference, &text),
    }
}
