//! The official Soniox Python SDK against the daemon's WebSocket endpoint
//! (issue 4, Tests).
//!
//! `tests/sdk/realtime.py` streams marker speech through a real-time session
//! with the SDK's own API (`SonioxClient(websocket_base_url=…)`,
//! `realtime.stt.connect`, `RealtimeSTTConfig`), pointed at the real
//! `sttpipe serve --ws-listen` in front of the emulator, and prints what it
//! received as JSON. The SDK presents its key as a bearer token; the daemon
//! checks it against its local token (`--ws-token-file`) and authenticates
//! upstream with its own key.
//!
//! The SDK's Python comes from `STTPIPE_TEST_PYTHON`, else
//! `target/test-venv/bin/python` or a `python3` on `PATH` that has `soniox`;
//! `scripts/test` installs it.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use soniox_emulator::{AuthMethod, EmulatorConfig};
use tokio::process::Command;

use crate::util;

/// How many times faster than real time the daemon and the emulator run
/// (the script sends as fast as the daemon takes the audio).
const PACE: f64 = 8.0;
/// Bound on one run of the script.
const WAIT: Duration = Duration::from_secs(60);
/// The key the SDK is given: the daemon's local token, not a Soniox key.
const CLIENT_KEY: &str = "client-key";

/// Whether `python` can import the SDK.
fn has_sdk(python: &Path) -> bool {
    std::process::Command::new(python)
        .args(["-c", "import soniox"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// A Python with the Soniox SDK (see the module docs).
fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("STTPIPE_TEST_PYTHON") {
        let path = PathBuf::from(path);
        assert!(
            has_sdk(&path),
            "STTPIPE_TEST_PYTHON={} cannot import soniox: run scripts/test, which installs it",
            path.display()
        );
        return path;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    [Some(venv), util::which("python3")]
        .into_iter()
        .flatten()
        .find(|python| has_sdk(python))
        .unwrap_or_else(|| {
            panic!("no python3 with the Soniox SDK (soniox): run scripts/test, which installs it")
        })
}

/// What the script reported, and how it exited.
pub struct Run {
    pub code: Option<i32>,
    pub report: Value,
    pub stderr: String,
}

/// Runs the script against `url` with `key` on the 16 kHz `audio` file.
pub async fn run_sdk(url: &str, key: &str, audio: &Path) -> Run {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/sdk/realtime.py");
    let child = Command::new(python())
        .arg(script)
        .args([url, key])
        .arg(audio)
        .arg("16000")
        // The SDK's own fallback for a key must not be what it uses.
        .env_remove("SONIOX_API_KEY")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start the SDK's script");
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("the SDK's session ends within the bound")
        .expect("run the SDK's script");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let report = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("the script printed no JSON ({e}): {stdout:?}\nstderr:\n{stderr}")
    });
    Run {
        code: output.status.code(),
        report,
        stderr,
    }
}

/// A whole real-time session through the SDK: every word final, once, with
/// its exact start, and the session `finished`; upstream, the daemon's key.
/// A wrong key gets Soniox's 401 and never reaches upstream.
#[tokio::test(flavor = "multi_thread")]
async fn the_soniox_python_sdk_completes_a_session() {
    let emu = util::emulator(EmulatorConfig {
        time_scale: PACE,
        ..EmulatorConfig::default()
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = util::write_file(dir.path(), "token", format!("{CLIENT_KEY}\n").as_bytes());
    let daemon = util::ws_daemon(
        &emu,
        &["--ws-token-file", token_file.to_str().unwrap()],
        PACE,
    )
    .await;
    let (words, audio) = util::marker_audio(12, 500, 7_000);
    let audio_file = util::write_file(dir.path(), "speech.raw", &audio);
    let url = daemon.url("/transcribe-websocket");

    // The daemon, like the real service, answers a wrong key after the
    // start request, so the SDK reports Soniox's own 401.
    let wrong = run_sdk(&url, "wrong-key", &audio_file).await;
    let refused =
        wrong.code == Some(2) && wrong.report["errors"] == json!([[401, "Invalid API key."]]);
    assert!(
        refused && wrong.report["finals"] == json!([]),
        "a key that is not the local token is refused: exit {:?}, {}\nstderr:\n{}",
        wrong.code,
        wrong.report,
        wrong.stderr
    );
    assert_eq!(emu.counts().connected, 0, "and never reaches upstream");

    let run = run_sdk(&url, CLIENT_KEY, &audio_file).await;
    assert_eq!(
        run.code,
        Some(0),
        "the SDK's session succeeds: {}\nstderr:\n{}",
        run.report,
        run.stderr
    );
    assert_eq!(run.report["errors"], json!([]));
    assert_eq!(run.report["finished"], true, "{}", run.report);
    let finals: Vec<(String, u64)> = run.report["finals"]
        .as_array()
        .expect("finals")
        .iter()
        .map(|f| {
            (
                f[0].as_str().expect("text").to_owned(),
                f[1].as_u64().expect("start_ms"),
            )
        })
        .collect();
    assert_eq!(
        finals,
        util::expected(&words),
        "every word once, in order, exact times"
    );
    assert!(
        run.report["non_finals"].as_u64() > Some(0),
        "non-final tokens too: {}",
        run.report
    );

    // Upstream, one session with the daemon's key; the SDK's key nowhere.
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 1, "{sessions:?}");
    let record = &sessions[0];
    assert_eq!((record.auth, record.key_ok), (AuthMethod::Header, true));
    let start = record.start_request.as_ref().expect("a start request");
    assert_eq!(
        (
            &start["model"],
            &start["audio_format"],
            &start["sample_rate"],
            &start["num_channels"]
        ),
        (
            &json!("stt-rt-v6"),
            &json!("pcm_s16le"),
            &json!(16_000),
            &json!(1)
        ),
        "{start}"
    );
    // The SDK's endpoint options reach upstream as it sent them.
    assert_eq!(
        (
            &start["endpoint_sensitivity"],
            &start["endpoint_latency_adjustment_level"]
        ),
        (&json!(0.25), &json!(1)),
        "{start}"
    );
    assert!(start.get("api_key").is_none(), "{start}");
    assert_eq!(record.audio_bytes, audio.len() as u64);
    assert!(
        record.ended_audio,
        "the SDK's end of audio reaches upstream"
    );
    assert!(
        !daemon.logs().contains(CLIENT_KEY),
        "the client's key is never logged"
    );
}
