//! The Wyoming tests' harness: the daemon with its Wyoming listener on an
//! ephemeral port, the official client's script, and hand-made events.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use soniox_emulator::Emulator;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

use crate::util::{self, KEY};

/// Bound on a script's run, the daemon's start, and any one wait.
pub const WAIT: Duration = Duration::from_secs(90);

/// Whether `python` can import the Wyoming client.
fn has_wyoming(python: &Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import wyoming.client"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A Python with the `wyoming` package (see the module docs).
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("STTPIPE_TEST_PYTHON") {
        let path = PathBuf::from(path);
        assert!(
            has_wyoming(&path),
            "STTPIPE_TEST_PYTHON={} cannot import wyoming: run scripts/test, which installs it",
            path.display()
        );
        return path;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    [Some(venv), util::which("python3")]
        .into_iter()
        .flatten()
        .find(|python| has_wyoming(python))
        .unwrap_or_else(|| panic!("no python3 with wyoming: run scripts/test, which installs it"))
}

/// Runs `tests/wyoming/client.py` with `args`; its JSON output.
pub async fn client(args: &[&str]) -> Value {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/wyoming/client.py");
    let child = Command::new(python())
        .arg(script)
        .args(args)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the Wyoming client");
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the Wyoming client ends within the bound")
        .expect("run the Wyoming client");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the client failed: {stdout}\n{stderr}"
    );
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("the client printed no JSON ({e}): {stdout:?}\n{stderr}"))
}

/// A running `sttpipe serve --wyoming-listen 127.0.0.1:0`; killed when dropped.
pub struct WyomingDaemon {
    _child: Child,
    pub port: u16,
    pub socket: PathBuf,
    logs: Arc<Mutex<String>>,
    pub dir: tempfile::TempDir,
}

impl WyomingDaemon {
    /// Starts the daemon with `extra` flags, against `emulator` (else with
    /// no key, for the local engine), at `pace`; returns once it listens.
    pub async fn start(emulator: Option<&Emulator>, extra: &[&str], pace: f64) -> WyomingDaemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("s.sock");
        let mut command = match emulator {
            Some(emu) => util::sttpipe(Some(&emu.url()), Some(KEY)),
            None => util::sttpipe(None, None),
        };
        command
            .args(["serve", "--config", "/dev/null", "--socket"])
            .arg(&socket)
            .args(["--wyoming-listen", "127.0.0.1:0", "--warm-pool", "0"])
            .args(extra)
            .env("STTPIPE_PACE_FACTOR", pace.to_string())
            .env("RUST_LOG", "info");
        let mut child = util::spawn(command);
        let stderr = child.stderr.take().expect("stderr piped");
        let logs = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = tokio::sync::oneshot::channel();
        // Drains stderr for the whole run and reports the port it listens on.
        tokio::spawn({
            let logs = logs.clone();
            async move {
                let mut port_tx = Some(port_tx);
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if line.contains("serving the Wyoming protocol")
                        && let Some(port) = port_in(&line)
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
        let port = match tokio::time::timeout(WAIT, port_rx).await {
            Ok(Ok(port)) => port,
            _ => panic!("the daemon did not listen:\n{}", logs.lock().unwrap()),
        };
        WyomingDaemon {
            _child: child,
            port,
            socket,
            logs,
            dir,
        }
    }

    pub fn logs(&self) -> String {
        self.logs.lock().unwrap().clone()
    }

    pub async fn status(&self) -> Value {
        util::daemon_status(&self.socket).await
    }

    /// Waits (bounded) until the status satisfies `condition`.
    pub async fn wait_status(&self, what: &str, condition: impl Fn(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let status = self.status().await;
            if condition(&status) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {status}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Runs `jobs` at once through the official client.
    pub async fn transcribe(&self, jobs: &[Value]) -> Vec<Value> {
        let port = self.port.to_string();
        let jobs = Value::from(jobs.to_vec()).to_string();
        match client(&["transcribe", &port, &jobs]).await {
            Value::Array(results) => results,
            other => panic!("not a list of results: {other}"),
        }
    }
}

/// The port in a log line like `addr=Some(127.0.0.1:41234)`.
fn port_in(line: &str) -> Option<u16> {
    let at = line.find("127.0.0.1:")? + "127.0.0.1:".len();
    let digits: String = line[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// One event's bytes, as the official writer frames it.
pub fn frame(kind: &str, data: Value, payload: &[u8]) -> Vec<u8> {
    let data = data.to_string();
    let mut out = json!({"type": kind, "data_length": data.len(), "payload_length": payload.len()})
        .to_string()
        .into_bytes();
    out.push(b'\n');
    out.extend_from_slice(data.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Everything the server sends until it closes (bounded), as (type, data).
pub async fn read_to_close(stream: TcpStream) -> Vec<(String, Value)> {
    let mut reader = BufReader::new(stream);
    let mut events = Vec::new();
    let read = async {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                return;
            }
            let header: Value = serde_json::from_str(&line).expect("a JSON header line");
            let len = header["data_length"].as_u64().unwrap_or(0) as usize;
            let mut data = vec![0; len];
            reader
                .read_exact(&mut data)
                .await
                .expect("the event's data");
            let data = if len == 0 {
                json!({})
            } else {
                serde_json::from_slice(&data).unwrap()
            };
            events.push((header["type"].as_str().unwrap().to_owned(), data));
        }
    };
    tokio::time::timeout(WAIT, read)
        .await
        .expect("the server closes within the bound");
    events
}
