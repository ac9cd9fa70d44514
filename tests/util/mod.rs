//! Fixtures: run the `sttpipe` binary, make marker audio, check transcripts.

#![allow(dead_code)]

pub mod tls;

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use sttpipe::emulator::marker::{self, Word};
use sttpipe::emulator::{Emulator, EmulatorConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

/// The key the emulator accepts by default.
pub const KEY: &str = "test-key";

/// Bound on any single run of the binary in these tests.
pub const RUN_BOUND: Duration = Duration::from_secs(60);

/// What one run of the binary produced.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

impl Output {
    /// Every stdout line as JSON; panics on a line that is not a JSON object
    /// with a string `type`.
    pub fn events(&self) -> Vec<Value> {
        self.stdout
            .lines()
            .map(|line| {
                let value: Value = serde_json::from_str(line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line:?}"));
                assert!(value["type"].is_string(), "event without a type: {line}");
                value
            })
            .collect()
    }

    /// Events of one type.
    pub fn of_type(&self, kind: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["type"] == kind)
            .collect()
    }

    /// Final tokens as (text, start_ms).
    pub fn final_words(&self) -> Vec<(String, u64)> {
        final_words(&self.events())
    }

    pub fn code(&self) -> Option<i32> {
        self.status.code()
    }
}

/// Final tokens of `events` as (text, start_ms).
pub fn final_words(events: &[Value]) -> Vec<(String, u64)> {
    events
        .iter()
        .filter(|e| e["type"] == "token" && e["is_final"] == true)
        .map(|e| {
            (
                e["text"].as_str().expect("token text").to_owned(),
                e["start_ms"].as_u64().expect("token start_ms"),
            )
        })
        .collect()
}

/// The words as the output should list them.
pub fn expected(words: &[Word]) -> Vec<(String, u64)> {
    words.iter().map(|w| (w.text.clone(), w.start_ms)).collect()
}

/// `n` words, one every `spacing_ms`, from 500 ms on, in `total_ms` of 16 kHz mono audio.
pub fn marker_audio(n: usize, spacing_ms: u64, total_ms: u64) -> (Vec<Word>, Vec<u8>) {
    let words = marker::script(n, spacing_ms, 500);
    let audio = marker::encode(&words, total_ms, 16_000, 1);
    (words, audio)
}

/// A `sttpipe` command with a clean environment pointed at `url`.
pub fn sttpipe(url: Option<&str>, key: Option<&str>) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sttpipe"));
    for var in [
        "SONIOX_API_KEY",
        "SONIOX_WS_URL",
        "CREDENTIALS_DIRECTORY",
        "RUST_LOG",
        "JOURNAL_STREAM",
    ] {
        command.env_remove(var);
    }
    if let Some(url) = url {
        command.env("SONIOX_WS_URL", url);
    }
    if let Some(key) = key {
        command.env("SONIOX_API_KEY", key);
    }
    command.kill_on_drop(true);
    command
}

/// Starts an emulator with `config` (its defaults otherwise).
pub async fn emulator(config: EmulatorConfig) -> Emulator {
    Emulator::start(config).await.expect("start the emulator")
}

/// Spawns `command` with piped stdio.
pub fn spawn(mut command: Command) -> Child {
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sttpipe")
}

/// Runs `command` with `stdin` as its input, to completion (bounded).
pub async fn run(command: Command, stdin: Vec<u8>) -> Output {
    let started = Instant::now();
    let mut child = spawn(command);
    let mut writer = child.stdin.take().expect("stdin piped");
    let feeder = tokio::spawn(async move {
        // The binary may exit before reading everything (an error): fine.
        let _ = writer.write_all(&stdin).await;
    });
    let output = finish(child, started).await;
    feeder.abort();
    output
}

/// Collects a running child's output until it exits (bounded by [`RUN_BOUND`]).
pub async fn finish(mut child: Child, started: Instant) -> Output {
    let mut stdout = child.stdout.take().expect("stdout piped");
    let mut stderr = child.stderr.take().expect("stderr piped");
    let collect = async {
        let mut out = String::new();
        let mut err = String::new();
        let (r1, r2) = tokio::join!(
            stdout.read_to_string(&mut out),
            stderr.read_to_string(&mut err)
        );
        r1.expect("read stdout");
        r2.expect("read stderr");
        let status = child.wait().await.expect("wait for sttpipe");
        (status, out, err)
    };
    let (status, stdout, stderr) = tokio::time::timeout(RUN_BOUND, collect)
        .await
        .expect("sttpipe did not finish within the bound");
    Output {
        status,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}

/// Writes `bytes` to a new file in `dir`.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write fixture");
    path
}

/// A WAV file around 16-bit PCM samples.
pub fn wav(pcm: &[u8], rate: u32, channels: u16) -> Vec<u8> {
    let mut out = Vec::with_capacity(pcm.len() + 44);
    let block = channels * 2;
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + pcm.len() as u32).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&channels.to_le_bytes());
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * u32::from(block)).to_le_bytes());
    out.extend_from_slice(&block.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&(pcm.len() as u32).to_le_bytes());
    out.extend_from_slice(pcm);
    out
}

/// Waits until `condition` holds, checking every 10 ms, for at most `bound`.
pub async fn wait_for(bound: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + bound;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {bound:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
