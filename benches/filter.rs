//! The filter's own cost for one real-time 16 kHz mono stream: peak RSS and
//! CPU, measured by GNU time around the release binary, against the
//! in-process emulator on loopback.
//!
//! `cargo bench --bench filter` (60 s of audio); `BENCH_SECONDS=N` for another
//! length; `STTPIPE_BENCH_BIN=PATH` to measure another sttpipe binary than
//! the one built with the bench. Prints figures; asserts only that every
//! word came back. The relay benchmark (`benches/relay/`) shows the same
//! figures in its table.

mod common;

fn main() {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(60);
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let f = runtime
        .block_on(common::measure_filter(seconds))
        .unwrap_or_else(|e| panic!("filter run: {e}"));
    assert_eq!(f.words, f.expected, "words lost");
    println!("filter, one real-time 16 kHz mono stream of {seconds} s");
    println!("  wall time        {:8.2} s", f.wall_s);
    println!("  CPU (user+sys)   {:8.2} s", f.cpu_s);
    println!("  CPU share        {:8.3} % of a core", f.cpu_percent());
    println!("  peak RSS         {:8.2} MiB", f.peak_rss_kib / 1024.0);
    println!("  words            {:8}", f.words);
}
