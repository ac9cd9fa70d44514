//! Fixtures: run the `sttpipe` binary, make marker audio, check transcripts.

#![allow(dead_code)]

pub mod engine_dir;
pub mod wer;

use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use soniox_emulator::marker::{self, Word};
use soniox_emulator::{Emulator, EmulatorConfig};
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

/// The binary under test: this build's, or `STTPIPE_TEST_BIN` (to show
/// that a test fails on an older build).
pub fn binary() -> std::path::PathBuf {
    std::env::var_os("STTPIPE_TEST_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_sttpipe").into())
}

/// A `sttpipe` command with a clean environment pointed at `url`.
pub fn sttpipe(url: Option<&str>, key: Option<&str>) -> Command {
    let mut command = Command::new(binary());
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

// ---------------------------------------------------------------------------
// `sttpipe serve` with its Soniox-compatible WebSocket endpoint, shared by the
// tests that speak to it (the proxy's, the browser page's, the Python SDK's).

/// Bound on the daemon's start and on a `status` answer.
const WS_DAEMON_WAIT: Duration = Duration::from_secs(30);

/// A running `sttpipe serve --ws-listen 127.0.0.1:0`; killed when dropped.
pub struct WsDaemon {
    _child: Child,
    /// The WebSocket endpoint's port.
    pub port: u16,
    /// The daemon's Unix socket.
    pub socket: std::path::PathBuf,
    /// Everything it logged so far (at debug level).
    logs: std::sync::Arc<std::sync::Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl WsDaemon {
    /// `ws://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("ws://127.0.0.1:{}{path}", self.port)
    }

    /// Everything the daemon logged so far.
    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    /// The daemon's process id (for signals).
    pub fn pid(&self) -> u32 {
        self._child.id().expect("the daemon runs")
    }

    /// `sttpipe status` over the Unix socket.
    pub async fn status(&self) -> Value {
        daemon_status(&self.socket).await
    }

    /// Kills it with SIGKILL: no drain, no goodbye to its clients.
    pub fn kill(&mut self) {
        // Already gone is fine: it is gone either way.
        let _ = self._child.start_kill();
    }
}

/// The daemon's `status` answer on `socket`.
pub async fn daemon_status(socket: &Path) -> Value {
    let mut stream = tokio::net::UnixStream::connect(socket)
        .await
        .expect("connect to the daemon");
    stream
        .write_all(b"{\"command\":\"status\"}\n")
        .await
        .unwrap();
    let mut text = String::new();
    tokio::time::timeout(WS_DAEMON_WAIT, stream.read_to_string(&mut text))
        .await
        .expect("status within the bound")
        .unwrap();
    serde_json::from_str(text.lines().next().unwrap_or_default()).expect("status is JSON")
}

/// Starts `sttpipe serve` against `emulator` with the WebSocket endpoint on a
/// free loopback port, extra `serve` flags, and `STTPIPE_PACE_FACTOR=pace`;
/// returns once it listens there (it logs the port it got).
pub async fn ws_daemon(emulator: &Emulator, extra: &[&str], pace: f64) -> WsDaemon {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("s.sock");
    let mut command = sttpipe(Some(&emulator.url()), Some(KEY));
    command
        .args(["serve", "--socket"])
        .arg(&socket)
        .args(["--ws-listen", "127.0.0.1:0", "--warm-pool", "0"])
        .args(extra)
        .env("STTPIPE_PACE_FACTOR", pace.to_string())
        .env("RUST_LOG", "debug");
    let mut child = spawn(command);
    let stderr = child.stderr.take().expect("stderr piped");
    let logs = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let (port_tx, port_rx) = tokio::sync::oneshot::channel();
    // Drains stderr for the whole run (a full pipe would block the daemon)
    // and reports the port from the line that says where it listens.
    tokio::spawn({
        let logs = logs.clone();
        async move {
            let mut port_tx = Some(port_tx);
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("serving the Soniox WebSocket protocol")
                    && let Some(port) = loopback_port_in(&line)
                    && let Some(tx) = port_tx.take()
                {
                    let _ = tx.send(port);
                }
                let mut logs = logs.lock().unwrap();
                logs.push_str(&line);
                logs.push('\n');
            }
        }
    });
    let port = match tokio::time::timeout(WS_DAEMON_WAIT, port_rx).await {
        Ok(Ok(port)) => port,
        _ => panic!(
            "the daemon did not start listening:\n{}",
            logs.lock().unwrap()
        ),
    };
    WsDaemon {
        _child: child,
        port,
        socket,
        logs,
        _dir: dir,
    }
}

/// The port in a log line like `addr=Some(127.0.0.1:41234)`.
fn loopback_port_in(line: &str) -> Option<u16> {
    let at = line.find("127.0.0.1:")? + "127.0.0.1:".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// `program` in a directory of `PATH`, if it is there.
pub fn which(program: &str) -> Option<std::path::PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// `ffmpeg -loglevel error` with `args` (input and output included),
/// `stdin` fed to it; its stdout. Media tests make their files from the
/// committed fixtures with it (scripts/test installs it).
pub fn ffmpeg(args: &[&str], stdin: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut child = std::process::Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y"])
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("ffmpeg runs (apt-get install ffmpeg; scripts/test installs it)");
    let mut input = child.stdin.take().expect("stdin piped");
    let stdin = stdin.to_vec();
    let feeder = std::thread::spawn(move || input.write_all(&stdin));
    let out = child.wait_with_output().expect("ffmpeg finishes");
    feeder
        .join()
        .expect("feeder")
        .expect("ffmpeg reads its input");
    assert!(out.status.success(), "ffmpeg {args:?} failed");
    out.stdout
}
