//! `sttpipe serve` and its clients: the socket protocol, multiplexing,
//! quotas, access, shutdown, systemd notifications.

use std::os::unix::net::UnixDatagram as StdDatagram;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use soniox_emulator::marker::{self, Word};
use soniox_emulator::{Emulator, EmulatorConfig};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::process::{Child, Command};

use crate::util::{self, KEY};

/// Bound on waiting for the daemon's notifications.
const NOTIFY_BOUND: Duration = Duration::from_secs(20);

/// A running daemon with a notify socket of its own.
pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub notify: StdDatagram,
    pub dir: tempfile::TempDir,
}

impl Daemon {
    /// Starts `sttpipe serve` against `emulator` with `args`, and waits for
    /// READY=1.
    pub async fn start(emulator: &Emulator, args: &[&str]) -> Daemon {
        Daemon::launch(Some((&emulator.url(), KEY)), args, &[]).await
    }

    /// Starts `sttpipe serve` with `args` and `env`, given the service's URL
    /// and key (`None`: neither), and waits for READY=1.
    pub async fn launch(
        service: Option<(&str, &str)>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("sttpipe.sock");
        let notify_path = dir.path().join("notify.sock");
        let notify = StdDatagram::bind(&notify_path).unwrap();
        notify.set_read_timeout(Some(NOTIFY_BOUND)).unwrap();
        let mut command = util::sttpipe(None, None);
        command
            .env_remove("LISTEN_FDS")
            .env_remove("LISTEN_PID")
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .envs(env.iter().copied())
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        if let Some((url, key)) = service {
            command.env("SONIOX_WS_URL", url).env("SONIOX_API_KEY", key);
        }
        // No warm pool (its connections would muddle the emulator's
        // counts), unless the test asks for one.
        if !args.contains(&"--warm-pool") {
            command.args(["--warm-pool", "0"]);
        }
        // No settings file from the machine, unless the test brings one.
        if !args.contains(&"--config") {
            command.args(["--config", "/dev/null"]);
        }
        let child = command.spawn().expect("start the daemon");
        let daemon = Daemon {
            child,
            socket,
            notify,
            dir,
        };
        daemon.expect_notification("READY=1").await;
        daemon
    }

    /// Waits (bounded) for a notification datagram containing `what`;
    /// returns it.
    pub async fn expect_notification(&self, what: &str) -> String {
        let socket = self.notify.try_clone().unwrap();
        let what = what.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = socket
                    .recv(&mut buf)
                    .unwrap_or_else(|e| panic!("no {what} notification: {e}"));
                let message = String::from_utf8_lossy(&buf[..n]).into_owned();
                if message.contains(&what) {
                    return message;
                }
            }
        })
        .await
        .unwrap()
    }

    /// Sends SIGTERM and waits (bounded) for the exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id().unwrap() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        self.expect_notification("STOPPING=1").await;
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("the daemon exits after SIGTERM")
            .unwrap()
    }

    /// Waits (bounded) until the status document satisfies `condition`.
    pub async fn wait_status(&self, what: &str, condition: impl Fn(&Value) -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        loop {
            let status = self.status().await;
            if condition(&status) {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "{what}: {status}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The daemon's status document, over its socket.
    pub async fn status(&self) -> Value {
        let mut stream = UnixStream::connect(&self.socket).await.unwrap();
        stream
            .write_all(b"{\"command\":\"status\"}\n")
            .await
            .unwrap();
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
            .await
            .expect("status answers")
            .unwrap();
        serde_json::from_str(&text).expect("status is JSON")
    }
}

/// One client session over the raw socket protocol: header, audio, half-close;
/// returns every event.
pub async fn raw_session(socket: &Path, header: &Value, audio: &[u8]) -> Vec<Value> {
    let stream = UnixStream::connect(socket).await.expect("connect");
    let (read, mut write) = stream.into_split();
    let mut line = header.to_string().into_bytes();
    line.push(b'\n');
    let audio = audio.to_vec();
    let writer = tokio::spawn(async move {
        // The daemon may refuse early: then writing fails, which is fine.
        if write.write_all(&line).await.is_ok() && write.write_all(&audio).await.is_ok() {
            let _ = write.shutdown().await;
        }
    });
    let mut events = Vec::new();
    let mut lines = BufReader::new(read).lines();
    let read_all = async {
        while let Some(line) = lines.next_line().await.expect("read events") {
            events.push(serde_json::from_str::<Value>(&line).expect("event JSON"));
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read_all)
        .await
        .expect("the session ends");
    writer.abort();
    events
}

/// Words unique to client `client`.
fn client_words(client: usize, n: usize) -> Vec<Word> {
    (0..n)
        .map(|i| Word {
            text: format!(" c{client}w{i}"),
            start_ms: 300 + i as u64 * 400,
            duration_ms: 300,
        })
        .collect()
}

fn header() -> Value {
    json!({"audio_format": "pcm_s16le", "rate": 16000, "channels": 1})
}

/// 200 concurrent clients, each with a few seconds of its own words: every
/// client gets exactly its own words back, once, in order, exact times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_clients_each_get_their_own_words() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(
        &emulator,
        &["--max-upstream", "250", "--new-sessions-per-minute", "1000"],
    )
    .await;
    let mut clients = Vec::new();
    for client in 0..200 {
        let socket = daemon.socket.clone();
        clients.push(tokio::spawn(async move {
            let words = client_words(client, 5);
            let audio = marker::encode(&words, 2_500, 16_000, 1);
            let events = raw_session(&socket, &header(), &audio).await;
            (words, events)
        }));
    }
    for (client, handle) in clients.into_iter().enumerate() {
        let (words, events) = handle.await.unwrap();
        assert_eq!(
            util::final_words(&events),
            util::expected(&words),
            "client {client}"
        );
        assert_eq!(events.last().unwrap()["type"], "end", "client {client}");
    }
    let status = daemon.status().await;
    assert_eq!(status["sessions"], json!([]));
    assert_eq!(status["sessions_served"], 200);
    assert_eq!(daemon.terminate().await.code(), Some(0));
}

/// More sessions than the upstream limit: the extra ones are queued (and
/// told their place), then served; past the queue, `busy`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_past_the_limit_queue_then_busy() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(&emulator, &["--max-upstream", "2", "--queue", "1"]).await;
    let long = marker::encode(&client_words(0, 8), 4_000, 16_000, 1);
    let mut running = Vec::new();
    for _ in 0..2 {
        let socket = daemon.socket.clone();
        let audio = long.clone();
        running.push(tokio::spawn(async move {
            raw_session(&socket, &header(), &audio).await
        }));
    }
    util::wait_for(Duration::from_secs(10), "two sessions stream", || {
        emulator.active_sessions() == 2
    })
    .await;
    let socket = daemon.socket.clone();
    let queued_words = client_words(9, 3);
    let queued_audio = marker::encode(&queued_words, 1_500, 16_000, 1);
    let queued = tokio::spawn(async move { raw_session(&socket, &header(), &queued_audio).await });
    daemon
        .wait_status("the third session is queued", |s| {
            s["queue"]["waiting"] == 1
        })
        .await;
    // The queue is full: the next is refused at once.
    let busy = raw_session(&daemon.socket, &header(), &long).await;
    assert_eq!(busy.len(), 1, "{busy:?}");
    assert_eq!(busy[0]["type"], "error");
    assert_eq!(busy[0]["code"], "busy");
    assert_eq!(busy[0]["exit_code"], 75);
    // The queued one was told its place, then served in full.
    let events = queued.await.unwrap();
    assert_eq!(events[0], json!({"type": "queued", "position": 1}));
    assert_eq!(util::final_words(&events), util::expected(&queued_words));
    for session in running {
        assert_eq!(session.await.unwrap().last().unwrap()["type"], "end");
    }
    assert!(
        emulator.sessions().len() <= 4,
        "never more than the limit at once"
    );
}

/// SIGTERM mid-session: every connected client still gets its finals and an
/// `end` event; the daemon exits 0 after STOPPING=1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_every_client() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(&emulator, &[]).await;
    let mut clients = Vec::new();
    for client in 0..5 {
        let socket = daemon.socket.clone();
        clients.push(tokio::spawn(async move {
            let words = client_words(client, 30);
            let audio = marker::encode(&words, 12_500, 16_000, 1);
            let mut header = header();
            header["client_reference_id"] = json!(format!("c{client}"));
            raw_session(&socket, &header, &audio).await
        }));
    }
    util::wait_for(Duration::from_secs(10), "every client streams", || {
        emulator
            .sessions()
            .iter()
            .filter(|s| s.audio_ms >= 3_000)
            .count()
            == 5
    })
    .await;
    let status = daemon.terminate().await;
    assert_eq!(status.code(), Some(0));
    for (client, handle) in clients.into_iter().enumerate() {
        let events = handle.await.unwrap();
        let end = events.last().unwrap();
        assert_eq!(end["type"], "end", "client {client}: {events:?}");
        assert_eq!(end["reason"], "signal");
        // Every word in the audio the service received came back final.
        // (Sessions are in accept order, not the clients' order.)
        let session = emulator
            .sessions()
            .into_iter()
            .find(|s| {
                s.start_request
                    .as_ref()
                    .is_some_and(|r| r["client_reference_id"] == format!("c{client}"))
            })
            .expect("the client's session");
        let received = session.audio_ms;
        let got = util::final_words(&events);
        let heard: Vec<_> = client_words(client, 30)
            .into_iter()
            .filter(|w| w.start_ms + 50 <= received)
            .map(|w| w.text)
            .collect();
        assert!(!heard.is_empty());
        for text in &heard {
            assert!(
                got.iter().any(|(t, _)| t == text),
                "client {client} lost {text}: the service received {received} ms and sent {:?}",
                session.words_sent_final
            );
        }
    }
}

/// A uid that is not allowed is refused with an error event; root is always
/// allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_not_allowed_is_refused() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(&emulator, &["--allow-uid", "4242"]).await;
    // Let the test's other user reach the socket at all.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(daemon.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&daemon.socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let audio = marker::encode(&client_words(1, 2), 1_200, 16_000, 1);
    let mut command = util::sttpipe(None, None);
    command
        .arg("--connect")
        .arg(&daemon.socket)
        .uid(65534)
        .gid(65534);
    let out = util::run(command, audio.clone()).await;
    assert_eq!(out.code(), Some(77), "stderr: {}", out.stderr);
    assert_eq!(out.of_type("error")[0]["code"], "forbidden");
    assert!(out.stderr.contains("uid 65534"), "{}", out.stderr);
    // Root (this test) may.
    let events = raw_session(&daemon.socket, &header(), &audio).await;
    assert_eq!(
        util::final_words(&events),
        util::expected(&client_words(1, 2))
    );
}

/// Garbage, oversized and missing headers each get one `error` event, and
/// nothing else breaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_headers_get_an_error_event_and_nothing_breaks() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(&emulator, &["--header-timeout", "1"]).await;
    for (what, bytes) in [
        ("garbage", b"this is not json\n".to_vec()),
        ("unknown option", b"{\"api_key\":\"x\"}\n".to_vec()),
        ("oversized", vec![b'{'; 64 * 1024]),
    ] {
        let mut stream = UnixStream::connect(&daemon.socket).await.unwrap();
        let _ = stream.write_all(&bytes).await;
        let mut text = String::new();
        tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut text))
            .await
            .expect("an answer")
            .unwrap();
        let events: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 1, "{what}: {text}");
        assert_eq!(events[0]["type"], "error", "{what}");
        assert_eq!(events[0]["exit_code"], 64, "{what}");
    }
    // A client that connects and says nothing is timed out.
    let mut silent = UnixStream::connect(&daemon.socket).await.unwrap();
    let mut text = String::new();
    tokio::time::timeout(Duration::from_secs(10), silent.read_to_string(&mut text))
        .await
        .expect("the header timeout ends it")
        .unwrap();
    assert!(text.contains("no header line within"), "{text}");
    // And the daemon still serves.
    let words = client_words(3, 3);
    let events = raw_session(
        &daemon.socket,
        &header(),
        &marker::encode(&words, 1_600, 16_000, 1),
    )
    .await;
    assert_eq!(util::final_words(&events), util::expected(&words));
    assert!(
        emulator.sessions().len() == 1,
        "bad headers opened upstream sessions"
    );
}

/// A client that vanishes mid-session releases its upstream session: the
/// session count goes back to 0.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vanished_client_releases_its_upstream_session() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(&emulator, &[]).await;
    let mut stream = UnixStream::connect(&daemon.socket).await.unwrap();
    let audio = marker::encode(&client_words(0, 20), 10_000, 16_000, 1);
    stream
        .write_all(format!("{}\n", header()).as_bytes())
        .await
        .unwrap();
    stream.write_all(&audio[..64_000]).await.unwrap();
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).await.unwrap();
    assert!(line.contains("\"start\""), "{line}");
    util::wait_for(
        Duration::from_secs(10),
        "the upstream session is open",
        || emulator.active_sessions() == 1,
    )
    .await;
    drop(reader);
    util::wait_for(
        Duration::from_secs(15),
        "the upstream session is released",
        || emulator.active_sessions() == 0,
    )
    .await;
    daemon
        .wait_status("the daemon forgets the session", |s| {
            s["sessions"] == json!([]) && s["upstream"]["sessions"] == 0
        })
        .await;
    assert_eq!(daemon.terminate().await.code(), Some(0));
}

/// `sttpipe --connect`: the filter through the daemon, no key needed, the
/// same words; plain tools work too (the header is one JSON line).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_filter_streams_through_the_daemon() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let daemon = Daemon::start(&emulator, &[]).await;
    let (words, audio) = util::marker_audio(6, 400, 3_500);
    let mut command = util::sttpipe(None, None);
    command
        .arg("--connect")
        .arg(&daemon.socket)
        .args(["--partials", "--language-hints", "en"])
        .args(["--endpoint-sensitivity", "0.25"])
        .args(["--endpoint-latency-adjustment-level", "1"])
        .args(["--start-field", "enable_agent_text_input=false"]);
    let out = util::run(command, audio.clone()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.final_words(), util::expected(&words));
    assert!(
        !out.of_type("partial").is_empty(),
        "--partials reached the daemon"
    );
    let start = emulator.sessions()[0].start_request.clone().unwrap();
    assert_eq!(start["language_hints"], json!(["en"]));
    // The header's keys for the endpoint tuning and the start fields.
    assert_eq!(start["endpoint_sensitivity"], 0.25);
    assert_eq!(start["endpoint_latency_adjustment_level"], 1);
    assert_eq!(start["enable_agent_text_input"], false);
    // STTPIPE_SOCKET works as --connect does, and --format text too.
    let mut command = util::sttpipe(None, None);
    command
        .env("STTPIPE_SOCKET", &daemon.socket)
        .args(["--format", "text"]);
    let out = util::run(command, audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let text: String = words.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(out.stdout, format!("{}\n", text.trim_start()));
    // `sttpipe status` prints the daemon's JSON.
    let mut command = util::sttpipe(None, None);
    command.args(["status", "--socket"]).arg(&daemon.socket);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let status: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(status["sessions_served"], 2);
    assert!(!out.stdout.contains(KEY), "the key leaked into status");
}

/// READY, STATUS and WATCHDOG notifications, and STOPPING on SIGTERM.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_socket_sees_ready_status_watchdog_stopping() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = StdDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(NOTIFY_BOUND)).unwrap();
    let socket = dir.path().join("s.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sttpipe"))
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .args(["--warm-pool", "0", "--config", "/dev/null"])
        .env("SONIOX_WS_URL", emulator.url())
        .env("SONIOX_API_KEY", KEY)
        .env("NOTIFY_SOCKET", &notify_path)
        .env("WATCHDOG_USEC", "200000")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let received = tokio::task::spawn_blocking(move || {
        let mut seen = Vec::new();
        let mut buf = vec![0u8; 4096];
        while !(seen.iter().any(|m: &String| m.contains("READY=1"))
            && seen.iter().any(|m| m.contains("WATCHDOG=1"))
            && seen.iter().any(|m| m.starts_with("STATUS=")))
        {
            let n = notify.recv(&mut buf).expect("notifications arrive");
            seen.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        (seen, notify)
    })
    .await
    .unwrap();
    let (seen, notify) = received;
    let ready = seen.iter().find(|m| m.contains("READY=1")).unwrap();
    assert!(ready.contains("STATUS=0 sessions"), "{ready}");
    assert!(socket.exists(), "READY=1 came before the socket listened");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let stopping = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = notify.recv(&mut buf).expect("STOPPING=1 arrives");
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.contains("STOPPING=1") {
                return message;
            }
        }
    })
    .await
    .unwrap();
    assert!(stopping.contains("STATUS=draining"), "{stopping}");
    let status = tokio::time::timeout(Duration::from_secs(20), child.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(
        !socket.exists(),
        "the daemon's own socket is removed on exit"
    );
}

/// Socket activation under `systemd-socket-activate`: the daemon serves the
/// socket it is given (the first connection starts it), says READY, and
/// leaves the socket file alone at exit, since systemd owns it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn socket_activation() {
    if which("systemd-socket-activate").is_none() {
        panic!("systemd-socket-activate is missing: .ci/run installs systemd");
    }
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("activated.sock");
    let notify_path = dir.path().join("notify.sock");
    let notify = StdDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(NOTIFY_BOUND)).unwrap();
    let mut activator = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        .args([
            "--fdname=sttpipe",
            "-E",
            "NOTIFY_SOCKET",
            "-E",
            "SONIOX_WS_URL",
            "-E",
            "SONIOX_API_KEY",
        ])
        .arg(env!("CARGO_BIN_EXE_sttpipe"))
        .args([
            "serve",
            "--warm-pool",
            "0",
            "--config",
            "/dev/null",
            "--socket",
        ])
        .arg(dir.path().join("not-used.sock"))
        .env("NOTIFY_SOCKET", &notify_path)
        .env("SONIOX_WS_URL", emulator.url())
        .env("SONIOX_API_KEY", KEY)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    util::wait_for(Duration::from_secs(10), "the activator listens", || {
        socket.exists()
    })
    .await;
    // The first connection starts the daemon; its session is served.
    let words = client_words(7, 3);
    let events = raw_session(
        &socket,
        &header(),
        &marker::encode(&words, 1_600, 16_000, 1),
    )
    .await;
    assert_eq!(util::final_words(&events), util::expected(&words));
    let ready = tokio::task::spawn_blocking(move || {
        let mut buf = vec![0u8; 4096];
        loop {
            let n = notify.recv(&mut buf).expect("READY=1 arrives");
            let message = String::from_utf8_lossy(&buf[..n]).into_owned();
            if message.contains("READY=1") {
                return message;
            }
        }
    })
    .await
    .unwrap();
    assert!(ready.contains("STATUS="), "{ready}");
    assert!(
        !dir.path().join("not-used.sock").exists(),
        "it bound a socket of its own"
    );
    // systemd-socket-activate execs the daemon in its own process.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(activator.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(20), activator.wait())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(socket.exists(), "the daemon unlinked a socket systemd owns");
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.exists())
}

/// SIGHUP rereads the settings file (and the key) without dropping the
/// sessions in progress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_limits_without_dropping_sessions() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let settings = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(settings.path(), "max_upstream = 1\nqueue = 5\n").unwrap();
    let settings_path = settings.path().to_str().unwrap().to_owned();
    let daemon = Daemon::start(&emulator, &["--config", &settings_path]).await;
    assert_eq!(daemon.status().await["upstream"]["limit"], 1);
    let socket = daemon.socket.clone();
    let words = client_words(5, 10);
    let audio = marker::encode(&words, 4_500, 16_000, 1);
    let running = tokio::spawn(async move { raw_session(&socket, &header(), &audio).await });
    util::wait_for(Duration::from_secs(10), "the session streams", || {
        emulator.active_sessions() == 1
    })
    .await;
    std::fs::write(settings.path(), "max_upstream = 3\nqueue = 5\n").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(daemon.child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGHUP,
    )
    .unwrap();
    daemon.expect_notification("RELOADING=1").await;
    daemon
        .wait_status("the new limit", |s| s["upstream"]["limit"] == 3)
        .await;
    let events = running.await.unwrap();
    assert_eq!(
        util::final_words(&events),
        util::expected(&words),
        "the session went on"
    );
    assert_eq!(emulator.sessions().len(), 1);
    assert_eq!(daemon.terminate().await.code(), Some(0));
}

/// `--connect` to a socket nobody listens on: one line, exit 69, and the
/// `error` event every failure gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_without_a_daemon_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = util::sttpipe(None, None);
    command.arg("--connect").arg(dir.path().join("absent.sock"));
    let (_, audio) = util::marker_audio(1, 400, 800);
    let out = util::run(command, audio).await;
    assert_eq!(out.code(), Some(69), "stderr: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.starts_with("sttpipe: cannot reach "),
        "{}",
        out.stderr
    );
    let errors = out.of_type("error");
    assert_eq!(errors.len(), 1, "{}", out.stdout);
    assert_eq!(errors[0]["code"], "connect");
}

/// `serve` with Soniox as its engine and no key: one line, exit 78, before
/// it listens; with `--engine local` a key is not needed (tests/local.rs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_without_a_key_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("sttpipe.sock");
    let mut command = util::sttpipe(None, None);
    command
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .args(["--config", "/dev/null"]);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(78), "stderr: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("no API key"), "{}", out.stderr);
    assert!(!socket.exists(), "it never listened");
}
