//! Each relay's process: starting it against an emulator, finding where it
//! listens, its log, stopping it; and the reference proxy's Python venv.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::{TcpStream, UnixStream};

use crate::{KEY, REFERENCE_WEBSOCKETS, Relay, START_BOUND, common, floor};

/// Starts `relay` in front of the emulator at `upstream`, for `n` sessions;
/// `reference` is the reference proxy's python and script.
pub(crate) async fn start(
    relay: Relay,
    upstream: &str,
    n: usize,
    reference: Option<&(PathBuf, PathBuf)>,
) -> Result<RelayProcess, String> {
    match relay {
        Relay::Unix => start_daemon(upstream, n, 0, false, None).await,
        Relay::Ws => start_daemon(upstream, n, 0, true, None).await,
        Relay::Gateway => start_gateway(upstream, n).await,
        Relay::Reference => {
            let (python, script) = reference.ok_or("no reference proxy")?;
            start_reference(python, script, upstream).await
        }
        Relay::Floor => start_floor(upstream).await,
        Relay::Direct => Ok(RelayProcess {
            child: None,
            target: Target::Ws(upstream.to_owned()),
            log: PathBuf::new(),
            _dir: tempfile::tempdir().expect("tempdir"),
        }),
    }
}

/// Where the load generator connects.
#[derive(Debug, Clone)]
pub(crate) enum Target {
    Unix(PathBuf),
    Ws(String),
    /// `wss://`, with the TLS settings that trust the relay's certificate.
    Wss(String, Arc<rustls::ClientConfig>),
}

/// A running relay (none for the direct baseline); killed when dropped.
pub(crate) struct RelayProcess {
    child: Option<tokio::process::Child>,
    pub(crate) target: Target,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl RelayProcess {
    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(tokio::process::Child::id)
    }

    /// The end of the relay's log, for error messages.
    pub(crate) fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// Spawns `command` as the relay `what` serving `target`, its output to
    /// a log in `dir`, which lives as long as the relay.
    fn spawn(
        mut command: tokio::process::Command,
        dir: tempfile::TempDir,
        target: Target,
        what: &str,
    ) -> Result<RelayProcess, String> {
        let log = dir.path().join("relay.log");
        let file = std::fs::File::create(&log).expect("create the relay's log");
        let err = file.try_clone().expect("clone the log's handle");
        let child = command
            .stdin(Stdio::null())
            .stdout(file)
            .stderr(err)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| format!("start {what}: {e}"))?;
        Ok(RelayProcess {
            child: Some(child),
            target,
            log,
            _dir: dir,
        })
    }

    /// Polls `ready` until it gives a value, for at most [`START_BOUND`],
    /// failing at once if the relay exits; `what` names it in errors.
    async fn wait_ready<T>(
        &mut self,
        what: &str,
        mut ready: impl AsyncFnMut() -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + START_BOUND;
        loop {
            if let Some(value) = ready().await {
                return Ok(value);
            }
            self.check_alive()?;
            if Instant::now() > deadline {
                return Err(format!("{what} did not listen:\n{}", self.log_tail()));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The TCP port the relay listens on, once it does.
    async fn tcp_port(&mut self, what: &str) -> Result<u16, String> {
        let pid = self.pid().ok_or_else(|| format!("{what} has no pid"))?;
        self.wait_ready(what, async || listening_port(pid)).await
    }

    /// Fails if the relay has exited.
    fn check_alive(&mut self) -> Result<(), String> {
        if let Some(child) = &mut self.child
            && let Ok(Some(status)) = child.try_wait()
        {
            return Err(format!("the relay exited ({status}):\n{}", self.log_tail()));
        }
        Ok(())
    }

    pub(crate) async fn stop(mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
        }
    }
}

/// Starts `sttpipe serve` against `upstream`, for `max_upstream` sessions
/// with a warm pool of `pool`, serving the WebSocket endpoint if `ws`;
/// returns once it accepts on the socket (and, with `ws`, listens on TCP).
pub(crate) async fn start_daemon(
    upstream: &str,
    max_upstream: usize,
    pool: usize,
    ws: bool,
    ca_file: Option<&Path>,
) -> Result<RelayProcess, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    daemon_in(dir, upstream, max_upstream, pool, ws, ca_file, &[]).await
}

/// The daemon as a gateway: the ws endpoint over TLS (a test CA's
/// certificate) with a named token, the bench's key; its clients trust
/// that CA.
async fn start_gateway(upstream: &str, max_upstream: usize) -> Result<RelayProcess, String> {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca_pem, identity) = soniox_emulator::tls::test_identity();
    let write = |name: &str, text: &str| {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write the gateway's files");
        path.into_os_string()
    };
    let extra = [
        "--ws-tls-cert".into(),
        write("cert.pem", &identity.cert_chain_pem),
        "--ws-tls-key".into(),
        write("key.pem", &identity.key_pem),
        "--ws-token-file".into(),
        write("tokens", &format!("bench:{KEY}\n")),
    ];
    let mut daemon = daemon_in(dir, upstream, max_upstream, 0, true, None, &extra).await?;
    let Target::Ws(url) = &daemon.target else {
        return Err("the gateway has no WebSocket endpoint".into());
    };
    let url = url.replacen("ws://", "wss://", 1);
    daemon.target = Target::Wss(url, client_tls(&ca_pem)?);
    Ok(daemon)
}

/// TLS settings for a client that trusts the CA in `ca_pem` (rustls with
/// ring, as the daemon's).
fn client_tls(ca_pem: &str) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| format!("the test CA: {e}"))?;
        roots.add(cert).map_err(|e| format!("the test CA: {e}"))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS settings: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// [`start_daemon`] with its files in `dir` and `extra` flags.
async fn daemon_in(
    dir: tempfile::TempDir,
    upstream: &str,
    max_upstream: usize,
    pool: usize,
    ws: bool,
    ca_file: Option<&Path>,
    extra: &[std::ffi::OsString],
) -> Result<RelayProcess, String> {
    let socket = dir.path().join("s.sock");
    let mut command = tokio::process::Command::new(common::sttpipe_bin());
    command
        .arg("serve")
        .arg("--socket")
        .arg(&socket)
        .args(["--config", "/dev/null"])
        .args(["--max-upstream", &max_upstream.to_string()])
        .args(["--queue", "0", "--new-sessions-per-minute", "1000000"])
        .args(["--warm-pool", &pool.to_string()]);
    if ws {
        command.args(["--ws-listen", "127.0.0.1:0"]);
    }
    if let Some(ca_file) = ca_file {
        command.arg("--ca-file").arg(ca_file);
    }
    command.args(extra);
    for var in ["RUST_LOG", "CREDENTIALS_DIRECTORY", "JOURNAL_STREAM"] {
        command.env_remove(var);
    }
    command
        .env("SONIOX_WS_URL", upstream)
        .env("SONIOX_API_KEY", KEY);
    let target = Target::Unix(socket.clone());
    let mut daemon = RelayProcess::spawn(command, dir, target, "the daemon")?;
    daemon
        .wait_ready("the daemon", async || {
            UnixStream::connect(&socket).await.ok().map(drop)
        })
        .await?;
    if ws {
        let port = daemon.tcp_port("the daemon's WebSocket endpoint").await?;
        daemon.target = Target::Ws(format!("ws://127.0.0.1:{port}/transcribe-websocket"));
    }
    Ok(daemon)
}

/// Starts the floor forwarder ([`crate::floor`]) against `upstream`: this
/// bench binary again, in a process of its own; returns once it listens.
async fn start_floor(upstream: &str) -> Result<RelayProcess, String> {
    let exe = std::env::current_exe().map_err(|e| format!("the bench's own binary: {e}"))?;
    let mut command = tokio::process::Command::new(exe);
    command.env(floor::UPSTREAM_ENV, upstream);
    let dir = tempfile::tempdir().expect("tempdir");
    let what = "the floor forwarder";
    let mut floor = RelayProcess::spawn(command, dir, Target::Ws(String::new()), what)?;
    let port = floor.tcp_port(what).await?;
    // It forwards whatever the path; the clients' is the Soniox one.
    floor.target = Target::Ws(format!("ws://127.0.0.1:{port}/transcribe-websocket"));
    Ok(floor)
}

/// The port of the TCP socket process `pid` listens on, from its file
/// descriptors and `/proc/PID/net/tcp` (no log parsing, so the daemon can
/// keep its default, quiet log level).
fn listening_port(pid: u32) -> Option<u16> {
    let inodes: BTreeSet<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?;
            Some(
                target
                    .strip_prefix("socket:[")?
                    .strip_suffix(']')?
                    .to_owned(),
            )
        })
        .collect();
    let table = std::fs::read_to_string(format!("/proc/{pid}/net/tcp")).ok()?;
    table.lines().skip(1).find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        let listening = fields.get(3) == Some(&"0A");
        if !listening || !inodes.contains(*fields.get(9)?) {
            return None;
        }
        let port = fields.get(1)?.rsplit(':').next()?;
        u16::from_str_radix(port, 16).ok()
    })
}

/// Starts the reference proxy against `upstream` on a free port; returns
/// once it accepts connections.
async fn start_reference(
    python: &Path,
    script: &Path,
    upstream: &str,
) -> Result<RelayProcess, String> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("pick a free port: {e}"))?
        .port();
    let mut command = tokio::process::Command::new(python);
    command
        .arg(script)
        .env("SONIOX_WS_URL", upstream)
        .env("SONIOX_API_KEY", KEY)
        .env("HOST", "127.0.0.1")
        .env("PORT", port.to_string());
    let dir = tempfile::tempdir().expect("tempdir");
    let target = Target::Ws(format!("ws://127.0.0.1:{port}/transcribe-websocket"));
    let what = "the reference proxy";
    let mut proxy = RelayProcess::spawn(command, dir, target, what)?;
    proxy
        .wait_ready(what, async || {
            TcpStream::connect(("127.0.0.1", port)).await.ok().map(drop)
        })
        .await?;
    Ok(proxy)
}

/// The reference proxy's python (a venv at `target/bench-venv` with the
/// pinned `websockets`, made if missing) and its script.
pub(crate) async fn reference_proxy() -> Result<(PathBuf, PathBuf), String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/python_proxy.py");
    if !script.is_file() {
        return Err(format!("{} is missing", script.display()));
    }
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .ok_or("no target directory")?;
    let venv = target.join("bench-venv");
    let python = venv.join("bin/python");
    if has_websockets(&python).await {
        return Ok((python, script));
    }
    eprintln!(
        "relay bench: installing websockets=={REFERENCE_WEBSOCKETS} in {}",
        venv.display()
    );
    if !python.is_file() {
        let mut venv_cmd = tokio::process::Command::new("python3");
        venv_cmd.args(["-m", "venv"]).arg(&venv);
        quietly(venv_cmd, "python3 -m venv").await?;
    }
    let mut pip = tokio::process::Command::new(&python);
    pip.args(["-m", "pip", "install", "-q", "--disable-pip-version-check"])
        .arg(format!("websockets=={REFERENCE_WEBSOCKETS}"));
    quietly(pip, "pip install websockets").await?;
    if has_websockets(&python).await {
        Ok((python, script))
    } else {
        Err(format!(
            "no websockets=={REFERENCE_WEBSOCKETS} in {} after installing it",
            venv.display()
        ))
    }
}

/// Whether `python` imports `websockets` of the pinned version.
async fn has_websockets(python: &Path) -> bool {
    if !python.is_file() {
        return false;
    }
    let check = tokio::process::Command::new(python)
        .args([
            "-c",
            "import sys, websockets; sys.exit(websockets.__version__ != sys.argv[1])",
            REFERENCE_WEBSOCKETS,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .status();
    matches!(
        tokio::time::timeout(Duration::from_secs(30), check).await,
        Ok(Ok(status)) if status.success()
    )
}

/// Runs a provisioning command, its output shown only if it fails.
async fn quietly(mut command: tokio::process::Command, what: &str) -> Result<(), String> {
    let run = command.kill_on_drop(true).output();
    let output = tokio::time::timeout(Duration::from_secs(600), run)
        .await
        .map_err(|_| format!("{what}: no result within 10 minutes"))?
        .map_err(|e| format!("{what}: {e}"))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed ({}): {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}
