//! The filter's own cost for one real-time 16 kHz mono stream: peak RSS and
//! CPU, measured by GNU time around the release binary, against the
//! in-process emulator on loopback.
//!
//! `cargo bench --bench filter` (60 s of audio); `BENCH_SECONDS=N` for another
//! length. Prints figures; asserts only that every word came back.

use std::process::Command;
use std::time::Duration;

use sttpipe::emulator::marker;
use sttpipe::emulator::{Emulator, EmulatorConfig};

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let emulator = runtime
        .block_on(Emulator::start(EmulatorConfig::default()))
        .expect("emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let words = marker::script((seconds as usize * 2).saturating_sub(2), 500, 500);
    let audio = marker::encode(&words, seconds * 1000, 16_000, 1);
    let input = dir.path().join("input.raw");
    std::fs::write(&input, &audio).expect("write input");
    let times = dir.path().join("time");
    let output = Command::new("/usr/bin/time")
        .arg("-f")
        .arg("%M %e %U %S")
        .arg("-o")
        .arg(&times)
        .arg(env!("CARGO_BIN_EXE_sttpipe"))
        .arg("--input")
        .arg(&input)
        .env("SONIOX_WS_URL", emulator.url())
        .env("SONIOX_API_KEY", "test-key")
        .output()
        .expect("run sttpipe under /usr/bin/time (apt package `time`)");
    assert!(
        output.status.success(),
        "sttpipe failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let finals = String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter(|l| l.contains(r#""type":"token""#))
        .count();
    assert_eq!(finals, words.len(), "words lost");
    let figures = std::fs::read_to_string(&times).expect("time output");
    let fields: Vec<f64> = figures
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    let [rss_kib, wall, user, sys] = fields[..] else {
        panic!("unexpected time output: {figures}");
    };
    let cpu = user + sys;
    println!("filter, one real-time 16 kHz mono stream of {seconds} s");
    println!("  wall time        {wall:8.2} s");
    println!("  CPU (user+sys)   {cpu:8.2} s");
    println!("  CPU share        {:8.3} % of a core", cpu / wall * 100.0);
    println!("  peak RSS         {:8.2} MiB", rss_kib / 1024.0);
    println!("  words            {finals:8}");
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(5), emulator.shutdown())
            .await
            .ok();
    });
}
