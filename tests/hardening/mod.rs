//! What an adversarial pass found, each finding closed and kept closed:
//! one test per finding, named after it (`rowN_…`, the row of the
//! hardening issue's table). The critical and high findings also run with
//! an innocent session on the same daemon, which must get every word while
//! the attack goes on.
//!
//! Each test fails on the build before the fix: `STTPIPE_TEST_BIN=<old
//! sttpipe> cargo test --test integration hardening` shows it.

use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};
use soniox_emulator::EmulatorConfig;
use soniox_emulator::marker;
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

use crate::daemon::{Daemon, raw_session};
use crate::util::{self, KEY};

// The WebSocket endpoint's findings.
mod ws;

/// The bound on anything a test waits for here.
const BOUND: Duration = Duration::from_secs(30);

fn pcm_header() -> Value {
    json!({"audio_format": "pcm_s16le", "rate": 16000, "channels": 1})
}

/// The words a client expected, and the events it got.
type Transcript = (Vec<(String, u64)>, Vec<Value>);

/// An innocent client on `socket`, streaming 4 s of words at the daemon's
/// pace.
fn innocent_client(socket: &Path) -> tokio::task::JoinHandle<Transcript> {
    let socket = socket.to_owned();
    tokio::spawn(async move {
        let words = marker::script(8, 450, 300);
        let audio = marker::encode(&words, 4_000, 16_000, 1);
        let events = raw_session(&socket, &pcm_header(), &audio).await;
        (util::expected(&words), events)
    })
}

/// Sends one header line on a fresh connection and reads every event until
/// the daemon closes (bounded).
async fn one_header(socket: &Path, line: &str) -> Vec<Value> {
    let stream = UnixStream::connect(socket).await.expect("connect");
    let (read, mut write) = stream.into_split();
    write.write_all(line.as_bytes()).await.expect("send");
    write.write_all(b"\n").await.expect("send");
    let _ = write.shutdown().await;
    let mut events = Vec::new();
    let mut lines = tokio::io::BufReader::new(read);
    let read_all = async {
        use tokio::io::AsyncBufReadExt;
        let mut line = String::new();
        while lines.read_line(&mut line).await.unwrap_or(0) > 0 {
            if let Ok(event) = serde_json::from_str::<Value>(&line) {
                events.push(event);
            }
            line.clear();
        }
    };
    tokio::time::timeout(BOUND, read_all)
        .await
        .expect("the daemon answers a header and closes");
    events
}

fn the_error(events: &[Value]) -> &Value {
    events
        .iter()
        .find(|e| e["type"] == "error")
        .unwrap_or_else(|| panic!("no error event: {events:?}"))
}

/// The daemon still answers `status` at once.
async fn still_serving(daemon: &Daemon) {
    tokio::time::timeout(Duration::from_secs(5), daemon.status())
        .await
        .expect("the daemon still answers status");
}

/// Row 1 (critical): a string value of a boolean key was turned into a flag
/// of its own, whose absurd value panicked and killed the daemon.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row1_header_flag_injection_is_a_usage_error_and_kills_nothing() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(&emulator, &[]).await;
    let innocent = innocent_client(&daemon.socket);
    for attack in [
        r#"{"partials":"--drain-timeout=1e300"}"#,
        r#"{"diarize":"--max-session=1e19"}"#,
        r#"{"language_hints":["en","--idle-close=1e19"]}"#,
        // Found by the fuzzer: a format name whose last two bytes end
        // inside a character panicked the format table.
        r#"{"audio_format":"pcm_s1\u0393e"}"#,
    ] {
        let events = one_header(&daemon.socket, attack).await;
        let error = the_error(&events);
        assert_eq!(error["exit_code"], 64, "{attack}: {error}");
        still_serving(&daemon).await;
    }
    let (expected, events) = innocent.await.unwrap();
    assert_eq!(util::final_words(&events), expected, "the innocent client");
    assert_eq!(events.last().unwrap()["type"], "end");
    still_serving(&daemon).await;
}

/// Row 2 (high): `"context":"@PATH"` made the daemon read PATH (blocking,
/// on its async workers) and send it to Soniox; the errors told which
/// paths exist.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row2_header_context_files_are_refused_unread() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(&emulator, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let secret = util::write_file(dir.path(), "secret.txt", b"launch codes 0000");
    let fifo = dir.path().join("fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let innocent = innocent_client(&daemon.socket);
    let mut refusals = Vec::new();
    for path in [
        secret.clone(),
        dir.path().join("missing.txt"),
        fifo.clone(),
        "/dev/zero".into(),
    ] {
        let header = json!({"context": format!("@{}", path.display())}).to_string();
        let events = one_header(&daemon.socket, &header).await;
        let error = the_error(&events).clone();
        assert_eq!(error["exit_code"], 64, "{}: {error}", path.display());
        refusals.push(error["message"].clone());
        // Two clients naming a FIFO froze the daemon: it still answers.
        still_serving(&daemon).await;
    }
    assert!(
        refusals.windows(2).all(|w| w[0] == w[1]),
        "the same refusal whether the file exists or not: {refusals:?}"
    );
    let (expected, events) = innocent.await.unwrap();
    assert_eq!(util::final_words(&events), expected, "the innocent client");
    for session in emulator.sessions() {
        let start = session.start_request.unwrap_or_default().to_string();
        assert!(
            !start.contains("launch codes"),
            "the file reached Soniox: {start}"
        );
    }
}

/// Row 5 (medium): `--connect` waited for the daemon forever after SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row5_connect_keeps_its_drain_deadline_against_a_wedged_daemon() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("wedged.sock");
    // A "daemon" that takes the connection and never says anything.
    let listener = tokio::net::UnixListener::bind(&socket).unwrap();
    let wedged = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            held.push(stream);
        }
    });
    let mut command = util::sttpipe(None, None);
    command
        .arg("--connect")
        .arg(&socket)
        .args(["--drain-timeout", "1"]);
    let mut child = util::spawn(command);
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(&[0u8; 32_000]).await.unwrap();
    // Let it connect and send, then ask it to stop.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = std::time::Instant::now();
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .expect("sttpipe --connect keeps its drain deadline")
        .unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15), "dies by the signal: {status:?}");
    drop(stdin);
    wedged.abort();
}

/// Row 5 (medium): after SIGTERM, `--connect`'s `end` said `eof`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row5_connect_ends_with_signal_after_sigterm() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(&emulator, &[]).await;
    let (_, audio) = util::marker_audio(20, 500, 11_000);
    let mut command = util::sttpipe(None, None);
    command.arg("--connect").arg(&daemon.socket);
    let mut child = util::spawn(command);
    let mut stdin = child.stdin.take().unwrap();
    let feeder = tokio::spawn(async move {
        let _ = stdin.write_all(&audio).await;
        stdin
    });
    emulator.wait_until(|c| c.connected >= 1).await;
    util::wait_for(BOUND, "audio reaches the emulator", || {
        emulator.sessions().iter().any(|s| s.audio_ms >= 1_000)
    })
    .await;
    let pid = nix::unistd::Pid::from_raw(child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let output = util::finish(child, std::time::Instant::now()).await;
    feeder.abort();
    let events = output.events();
    let end = events.last().expect("events");
    assert_eq!(end["type"], "end", "{}", output.stdout);
    assert_eq!(end["reason"], "signal", "{end}");
}

/// Row 6 (medium): `serve --socket PATH` deleted whatever was at PATH.
#[tokio::test]
async fn row6_serve_never_deletes_a_file_or_fifo_at_its_socket_path() {
    let dir = tempfile::tempdir().unwrap();
    let file = util::write_file(dir.path(), "precious.txt", b"keep me");
    let fifo = dir.path().join("precious.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    for path in [&file, &fifo] {
        let mut command = util::sttpipe(Some("ws://127.0.0.1:9/"), Some(KEY));
        command
            .args([
                "serve",
                "--config",
                "/dev/null",
                "--warm-pool",
                "0",
                "--socket",
            ])
            .arg(path);
        let output = util::run(command, Vec::new()).await;
        assert_eq!(output.code(), Some(78), "{}", output.stderr);
        assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
        assert!(output.stderr.contains("not a socket"), "{}", output.stderr);
    }
    assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
    use std::os::unix::fs::FileTypeExt;
    assert!(
        std::fs::symlink_metadata(&fifo)
            .unwrap()
            .file_type()
            .is_fifo()
    );
}

/// Row 8 (low): absurd durations panicked (exit 70, no `error`, no `end`).
#[tokio::test]
async fn row8_absurd_durations_are_usage_errors() {
    for args in [
        &["--drain-timeout", "1e300"][..],
        &["--idle-close", "1e19"],
        &["--max-session", "1e19"],
        &["--retry-budget", "-1"],
        &[
            "serve",
            "--config",
            "/dev/null",
            "--header-timeout",
            "1e300",
        ],
        &["serve", "--config", "/dev/null", "--drain-timeout", "NaN"],
    ] {
        let mut command = util::sttpipe(Some("ws://127.0.0.1:9/"), Some(KEY));
        command.args(args);
        let output = util::run(command, Vec::new()).await;
        assert_eq!(output.code(), Some(64), "{args:?}: {}", output.stderr);
        assert!(
            !output.stderr.contains("internal error"),
            "{}",
            output.stderr
        );
        assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
    }
}

/// Row 9 (low): a replay buffer smaller than the input's burst dropped the
/// start of a file on a healthy connection.
#[tokio::test]
async fn row9_a_replay_buffer_below_the_burst_is_refused() {
    let mut command = util::sttpipe(Some("ws://127.0.0.1:9/"), Some(KEY));
    command.args(["--replay-buffer", "1"]);
    let output = util::run(command, Vec::new()).await;
    assert_eq!(output.code(), Some(64), "{}", output.stderr);
    assert!(
        output.stderr.contains("--replay-buffer"),
        "{}",
        output.stderr
    );
}

/// Row 11 (low): a read-only stdout lost every event and exited 0.
#[tokio::test]
async fn row11_a_read_only_stdout_exits_74() {
    let dir = tempfile::tempdir().unwrap();
    let path = util::write_file(dir.path(), "out", b"");
    let read_only = std::fs::File::open(&path).unwrap();
    let mut command = util::sttpipe(Some("ws://127.0.0.1:9/"), Some(KEY));
    command
        .stdin(std::process::Stdio::null())
        .stdout(read_only)
        .stderr(std::process::Stdio::piped());
    let child = command.spawn().unwrap();
    let output = tokio::time::timeout(BOUND, child.wait_with_output())
        .await
        .expect("exits")
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(74), "{stderr}");
    assert!(stderr.contains("stdout"), "{stderr}");
}

/// Row 12 (low): `--warm-pool` was unbounded and outside `--max-upstream`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row12_the_warm_pool_stays_within_the_upstream_limit() {
    let mut command = util::sttpipe(Some("ws://127.0.0.1:9/"), Some(KEY));
    command.args(["serve", "--config", "/dev/null", "--warm-pool", "100000"]);
    let output = util::run(command, Vec::new()).await;
    assert_eq!(output.code(), Some(64), "{}", output.stderr);

    // Two slots, a pool of two: while one client streams, one idle
    // connection at most.
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::launch(
        Some((&emulator.url(), KEY)),
        &["--max-upstream", "2", "--warm-pool", "2"],
        &[],
    )
    .await;
    emulator.wait_until(|c| c.open >= 2).await;
    let words = marker::script(6, 500, 300);
    let audio = marker::encode(&words, 3_000, 16_000, 1);
    let socket = daemon.socket.clone();
    let client = tokio::spawn(async move { raw_session(&socket, &pcm_header(), &audio).await });
    util::wait_for(BOUND, "the client streams", || {
        emulator.streaming_sessions() == 1
    })
    .await;
    let mut most_open = 0;
    while !client.is_finished() {
        most_open = most_open.max(emulator.counts().open);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(most_open <= 2, "{most_open} connections open with 2 slots");
    let events = client.await.unwrap();
    assert_eq!(util::final_words(&events), util::expected(&words));
}

/// Row 13 (low): a 200 MB context was sent, refused by Soniox, and retried
/// for the whole budget.
#[tokio::test]
async fn row13_a_context_over_sonioxs_limit_is_refused_before_connecting() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let big = util::write_file(dir.path(), "big.txt", &vec![b'x'; 200_000]);
    for context in [
        "x".repeat(10_001),
        format!("@{}", big.display()),
        "@/dev/zero".into(),
    ] {
        let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
        command.arg("--context").arg(&context);
        let output = util::run(command, vec![0; 3200]).await;
        assert_eq!(output.code(), Some(64), "{}", output.stderr);
    }
    assert_eq!(emulator.counts().connected, 0, "nothing went to Soniox");
}

/// Row 14 (low): WAV header values bypassed the `--rate`/`--channels`
/// ranges (4294967295 Hz, 32767 channels were sent upstream).
#[tokio::test]
async fn row14_wav_header_values_are_held_to_the_flags_ranges() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    for (rate, channels) in [(u32::MAX, 1u16), (16_000, 32_767)] {
        let mut wav = util::wav(&[0; 6400], 16_000, 1);
        // Rewrite the fmt chunk's channel count, rate and block align.
        wav[22..24].copy_from_slice(&channels.to_le_bytes());
        wav[24..28].copy_from_slice(&rate.to_le_bytes());
        wav[32..34].copy_from_slice(&channels.wrapping_mul(2).to_le_bytes());
        let command = util::sttpipe(Some(&emulator.url()), Some(KEY));
        let output = util::run(command, wav).await;
        assert_eq!(
            output.code(),
            Some(65),
            "{rate} Hz, {channels} ch: {}",
            output.stderr
        );
        assert_eq!(the_error(&output.events())["code"], "bad_audio");
    }
    assert_eq!(emulator.counts().connected, 0, "nothing went upstream");
}

/// Row 15 (low): a client cut short by the daemon's own SIGTERM exited 0
/// with a partial transcript.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row15_a_client_cut_short_by_the_daemon_exits_75() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::launch(Some((&emulator.url(), KEY)), &["--drain-timeout", "1"], &[]).await;
    let (_, audio) = util::marker_audio(40, 500, 21_000);
    let mut command = util::sttpipe(None, None);
    command.arg("--connect").arg(&daemon.socket);
    let child = util::spawn(command);
    let started = std::time::Instant::now();
    let mut child = child;
    let mut stdin = child.stdin.take().unwrap();
    let feeder = tokio::spawn(async move {
        let _ = stdin.write_all(&audio).await;
        stdin
    });
    util::wait_for(BOUND, "audio reaches the emulator", || {
        emulator.sessions().iter().any(|s| s.audio_ms >= 1_000)
    })
    .await;
    let status = daemon.terminate().await;
    assert!(status.success(), "the daemon exits 0: {status:?}");
    let output = util::finish(child, started).await;
    feeder.abort();
    assert_eq!(output.code(), Some(75), "{}", output.stderr);
    let events = output.events();
    let n = events.len();
    assert!(n >= 2, "{}", output.stdout);
    assert_eq!(events[n - 2]["type"], "error", "{}", output.stdout);
    assert_eq!(events[n - 1]["type"], "end", "{}", output.stdout);
    assert_eq!(output.stderr.lines().count(), 1, "{}", output.stderr);
}

/// Row 17 (low): zero limits were accepted (also on reload) and held every
/// client forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row17_zero_limits_are_refused_and_kept_on_reload() {
    for flag in ["--max-upstream", "--new-sessions-per-minute"] {
        let mut command = util::sttpipe(Some("ws://127.0.0.1:9/"), Some(KEY));
        command.args(["serve", "--config", "/dev/null", flag, "0"]);
        let output = util::run(command, Vec::new()).await;
        assert_eq!(output.code(), Some(64), "{flag}: {}", output.stderr);
    }
    // --queue 0 means no queue: a second client is refused at once.
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let settings = util::write_file(dir.path(), "sttpipe.toml", b"max_upstream = 1\nqueue = 0\n");
    let settings_arg = settings.to_str().unwrap();
    let daemon = Daemon::start(&emulator, &["--config", settings_arg]).await;
    let (_, audio) = util::marker_audio(10, 500, 6_000);
    let socket = daemon.socket.clone();
    let first = tokio::spawn(async move { raw_session(&socket, &pcm_header(), &audio).await });
    util::wait_for(BOUND, "the first client streams", || {
        emulator.streaming_sessions() == 1
    })
    .await;
    let refused = tokio::time::timeout(
        Duration::from_secs(5),
        raw_session(&daemon.socket, &pcm_header(), &[0; 3200]),
    )
    .await
    .expect("refused at once, not queued");
    assert_eq!(the_error(&refused)["code"], "busy", "{refused:?}");
    // A reload that asks for zero keeps the old limits.
    std::fs::write(&settings, "max_upstream = 0\n").unwrap();
    let pid = nix::unistd::Pid::from_raw(daemon.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    daemon.expect_notification("READY=1").await;
    let status = daemon.status().await;
    assert_eq!(status["upstream"]["limit"], 1, "{status}");
    first.await.unwrap();
}

/// Row 9 (low): an `overrun` came before `start`. The service cannot be
/// reached for the first seconds of a file (every connection is closed
/// before its handshake: a Soniox with its front door down), so the replay
/// buffer (10 s) overflows before any session opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row9_an_overrun_never_comes_before_start() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let door = Door::new(&emulator).await;
    let (_, audio) = util::marker_audio(30, 500, 16_000);
    let mut command = util::sttpipe(Some(&door.url), Some(KEY));
    command
        .env("STTPIPE_PACE_FACTOR", "8")
        // Never reached until the door opens: the connect budget too
        // must outlast it.
        .args(["--replay-buffer", "10", "--retry-budget", "60"])
        .args(["--connect-budget", "60"]);
    let mut child = util::spawn(command);
    let mut stdin = child.stdin.take().unwrap();
    let started = std::time::Instant::now();
    stdin.write_all(&audio).await.unwrap();
    drop(stdin);
    // 16 s of audio at 8x is 2 s of wall time: after 3 s the buffer has
    // overflowed (the assertion below checks that it did). Then the door opens.
    tokio::time::sleep(Duration::from_secs(3)).await;
    door.open();
    let output = util::finish(child, started).await;
    let events = output.events();
    assert!(
        events.iter().any(|e| e["type"] == "overrun"),
        "the buffer overflowed: {}",
        output.stdout
    );
    assert_eq!(events[0]["type"], "start", "{}", output.stdout);
}

/// A front door to the emulator that drops every connection (the
/// handshake fails, as with a service that cannot be reached) until it is
/// opened; then it forwards them.
struct Door {
    url: String,
    open: std::sync::Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Door {
    async fn new(emulator: &soniox_emulator::Emulator) -> Door {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "ws://{}/transcribe-websocket",
            listener.local_addr().unwrap()
        );
        let upstream = emulator.local_addr();
        let open = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = tokio::spawn({
            let open = open.clone();
            async move {
                while let Ok((mut client, _)) = listener.accept().await {
                    if !open.load(std::sync::atomic::Ordering::SeqCst) {
                        continue;
                    }
                    tokio::spawn(async move {
                        let mut service = tokio::net::TcpStream::connect(upstream).await.unwrap();
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut service).await;
                    });
                }
            }
        });
        Door { url, open, task }
    }

    fn open(&self) {
        self.open.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Door {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Row 10 (low): container input sent 120 KiB before any progress report
/// (documented: at most 32 KiB beyond the service's progress), because
/// everything read while no session was open went out at once. Here the
/// service never reports progress on this input, and the first seconds
/// pass with no session open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row10_containers_stay_within_the_unconfirmed_window() {
    let emulator = util::emulator(EmulatorConfig {
        // 300 KiB count as well under 500 ms: no progress response ever.
        container_bytes_per_ms: 1e9,
        ..EmulatorConfig::default()
    })
    .await;
    let door = Door::new(&emulator).await;
    let mut command = util::sttpipe(Some(&door.url), Some(KEY));
    command.args(["--audio-format", "mp3"]);
    let mut child = util::spawn(command);
    let mut stdin = child.stdin.take().unwrap();
    let bytes: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 251) as u8).collect();
    let feeder = tokio::spawn(async move {
        let _ = stdin.write_all(&bytes).await;
        stdin
    });
    // A second with the service unreachable, then it opens.
    tokio::time::sleep(Duration::from_secs(1)).await;
    door.open();
    util::wait_for(BOUND, "the first audio reaches the emulator", || {
        emulator.sessions().iter().any(|s| s.audio_bytes > 0)
    })
    .await;
    // Room for a burst past the window to show (the assertion checks there
    // was none).
    tokio::time::sleep(Duration::from_secs(1)).await;
    let sent: u64 = emulator.sessions().iter().map(|s| s.audio_bytes).sum();
    assert!(
        sent <= 36 * 1024,
        "{sent} bytes went out with no progress report (window: 32 KiB and a 4 KiB chunk): {:?}",
        emulator
            .sessions()
            .iter()
            .map(|s| (s.audio_bytes, s.outcome))
            .collect::<Vec<_>>()
    );
    child.kill().await.unwrap();
    feeder.abort();
}

/// Row 4 (medium): a client that sends a header and never any audio held
/// its slot forever (ten of them made the daemon busy for everyone).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4_a_client_that_never_sends_audio_gives_its_slot_back() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(
        &emulator,
        &["--max-upstream", "1", "--first-audio-timeout", "1"],
    )
    .await;
    // A header, then silence, with the connection kept open.
    let silent = UnixStream::connect(&daemon.socket).await.unwrap();
    let (silent_read, mut silent_write) = silent.into_split();
    let mut line = pcm_header().to_string().into_bytes();
    line.push(b'\n');
    silent_write.write_all(&line).await.unwrap();
    daemon
        .wait_status("the silent client holds the slot", |s| {
            s["upstream"]["sessions"] == 1
        })
        .await;
    // An innocent client queued behind it is served once it is gone.
    let (expected, events) = tokio::time::timeout(BOUND, innocent_client(&daemon.socket))
        .await
        .expect("the innocent client is served")
        .unwrap();
    assert_eq!(util::final_words(&events), expected);
    let mut silent_events = String::new();
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(
        BOUND,
        tokio::io::BufReader::new(silent_read).read_to_string(&mut silent_events),
    )
    .await
    .expect("the silent client is closed")
    .unwrap();
    assert!(
        silent_events.contains("\"type\":\"error\""),
        "{silent_events}"
    );
    drop(silent_write);
}

/// Row 4 (medium), the idle rule: a client that has gone quiet gives its
/// slot to a waiting client while its upstream session is closed, and gets
/// one again, in turn, when its audio returns; no word of either is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row4_an_idle_client_lends_its_slot_until_its_audio_returns() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(&emulator, &["--max-upstream", "1", "--idle-close", "1"]).await;
    let words = marker::script(8, 500, 300);
    let (first, second) = words.split_at(4);
    let shift = |w: &marker::Word| marker::Word {
        start_ms: w.start_ms - 2_000,
        ..w.clone()
    };
    let second_part: Vec<marker::Word> = second.iter().map(shift).collect();
    let audio_1 = marker::encode(first, 2_000, 16_000, 1);
    let audio_2 = marker::encode(&second_part, 2_300, 16_000, 1);

    let quiet = UnixStream::connect(&daemon.socket).await.unwrap();
    let (quiet_read, mut quiet_write) = quiet.into_split();
    let reader = tokio::spawn(async move {
        use tokio::io::AsyncReadExt;
        let mut text = String::new();
        let _ = tokio::io::BufReader::new(quiet_read)
            .read_to_string(&mut text)
            .await;
        text
    });
    let mut line = pcm_header().to_string().into_bytes();
    line.push(b'\n');
    quiet_write.write_all(&line).await.unwrap();
    quiet_write.write_all(&audio_1).await.unwrap();
    daemon
        .wait_status("the quiet client goes idle", |s| {
            s["sessions"]
                .as_array()
                .is_some_and(|all| all.iter().any(|x| x["state"] == "idle"))
        })
        .await;
    // Its slot serves another client meanwhile.
    let (expected, events) = tokio::time::timeout(BOUND, innocent_client(&daemon.socket))
        .await
        .expect("the waiting client is served while the other is idle")
        .unwrap();
    assert_eq!(util::final_words(&events), expected);
    // Audio again: it asks for the slot, gets it, and loses nothing.
    quiet_write.write_all(&audio_2).await.unwrap();
    quiet_write.shutdown().await.unwrap();
    let text = tokio::time::timeout(BOUND, reader)
        .await
        .expect("ends")
        .unwrap();
    let events: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let got: Vec<String> = util::final_words(&events)
        .into_iter()
        .map(|(text, _)| text)
        .collect();
    let want: Vec<String> = words.iter().map(|w| w.text.clone()).collect();
    assert_eq!(got, want, "{text}");
    assert_eq!(events.last().unwrap()["type"], "end", "{text}");
}
