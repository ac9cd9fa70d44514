//! The media decoder's cost: CPU seconds per hour of audio to sniff, decode,
//! mix down and resample each format sttpipe decodes to the 16 kHz mono it
//! streams.
//!
//! `cargo bench --bench decode --features fuzzing` (release build; the
//! feature exposes the decoder). The input is `tests/fixtures/speech-16k.wav`
//! looped to ten minutes and encoded by ffmpeg as MP3 (44.1 kHz stereo,
//! 128 kb/s), FLAC, Ogg Vorbis, M4A (AAC) and 48 kHz stereo WebM (Vorbis),
//! held in memory, so no reading is timed. Each format is decoded
//! `BENCH_RUNS` times (default 3) on one thread; the figure is the median
//! thread CPU time, scaled to an hour of audio, and the real-time factor of
//! one core. It prints figures and asserts nothing about speed.

use std::process::{Command, Stdio};

/// Seconds of audio decoded per format.
const AUDIO_SECONDS: u64 = 600;

fn main() {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech-16k.wav");
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .max(1);
    println!(
        "{:<26} {:>9} {:>14} {:>9}",
        "format", "MiB", "CPU s/audio h", "RTF"
    );
    for (name, args) in [
        (
            "MP3 44.1 kHz stereo",
            &["-ar", "44100", "-ac", "2", "-b:a", "128k", "-f", "mp3"][..],
        ),
        ("FLAC 16 kHz mono", &["-f", "flac"][..]),
        (
            "Ogg Vorbis 16 kHz mono",
            &["-c:a", "libvorbis", "-f", "ogg"][..],
        ),
        ("M4A AAC 16 kHz mono", &["-c:a", "aac", "-f", "mp4"][..]),
        (
            "WebM Vorbis 48 kHz stereo",
            &[
                "-ar",
                "48000",
                "-ac",
                "2",
                "-c:a",
                "libvorbis",
                "-f",
                "webm",
            ][..],
        ),
    ] {
        let bytes = encode(fixture, args);
        let mut cpu: Vec<f64> = (0..runs)
            .map(|_| {
                let start = thread_cpu_seconds();
                let samples = sttpipe::fuzzing::decode_media(&bytes)
                    .unwrap_or_else(|| panic!("{name} does not decode"));
                assert!(
                    samples >= (AUDIO_SECONDS - 1) * 16_000,
                    "{name}: {samples} samples"
                );
                thread_cpu_seconds() - start
            })
            .collect();
        cpu.sort_by(f64::total_cmp);
        let median = cpu[cpu.len() / 2];
        println!(
            "{name:<26} {:>9.1} {:>14.1} {:>9.4}",
            bytes.len() as f64 / (1 << 20) as f64,
            median * 3600.0 / AUDIO_SECONDS as f64,
            median / AUDIO_SECONDS as f64
        );
    }
}

/// The fixture looped to [`AUDIO_SECONDS`], encoded by ffmpeg with `args`
/// into a file (so that MP4 gets its index, as a file does; to a pipe
/// ffmpeg writes fragmented MP4), then read into memory.
fn encode(fixture: &str, args: &[&str]) -> Vec<u8> {
    let seconds = AUDIO_SECONDS.to_string();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("encoded");
    let out = Command::new("ffmpeg")
        .args([
            "-loglevel",
            "error",
            "-stream_loop",
            "-1",
            "-i",
            fixture,
            "-t",
            &seconds,
        ])
        .args(args)
        .arg(&path)
        .stdin(Stdio::null())
        .output()
        .expect("ffmpeg runs (apt-get install ffmpeg)");
    assert!(
        out.status.success(),
        "ffmpeg {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(&path).expect("read the encoded file")
}

/// This thread's CPU time so far, in seconds (user and system).
fn thread_cpu_seconds() -> f64 {
    let time = nix::time::clock_gettime(nix::time::ClockId::CLOCK_THREAD_CPUTIME_ID)
        .expect("the thread's CPU clock");
    time.tv_sec() as f64 + time.tv_nsec() as f64 / 1e9
}
