//! `sttpipe serve`: the daemon front end.
//!
//! Listens on a Unix socket (its own, or the one systemd passes) and runs
//! the same session core as the filter for each client, with the daemon's
//! key and within Soniox's quotas: an upstream [`admission::Slot`] per
//! session (the rest wait in a bounded queue, then get `busy`), and a rate
//! limit on new upstream sessions. Optionally it also speaks the Soniox
//! WebSocket protocol itself ([`ws`]), so browsers and Soniox clients can
//! stream through it without the key, and the Wyoming protocol
//! ([`wyoming`]), so Home Assistant can.
//!
//! Lifecycle, under systemd `Type=notify`: `READY=1` once the key is loaded
//! and the socket listens; `STATUS=` with live counts; `WATCHDOG=1` from the
//! main loop, so a wedged loop stops the pings; SIGHUP reloads the settings
//! file and the key without dropping sessions; SIGTERM (or SIGINT) sends
//! `STOPPING=1`, stops accepting, ends every session's audio and drains
//! their finals within `--drain-timeout`, then exits 0.

mod admission;
mod aimd;
mod engines;
pub(crate) mod launch;
mod live;
mod registry;
mod settings;
mod unix;
mod ws;
pub(crate) mod wyoming;

#[cfg(feature = "fuzzing")]
pub(crate) use ws::fuzz as ws_fuzz;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use clap::ArgMatches;
use serde_json::{Value, json};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::cli::ServeArgs;
use crate::cli::values::EngineChoice;
use crate::config::{ApiKey, SessionConfig, SessionRequest, Timing, load_api_key};
use crate::engine::quota::Rejections;
use crate::engine::{RateLimiter, SessionEngines};
use crate::error::{EXIT_OK, Error, Result};
use crate::session_id::SessionIds;
use crate::systemd::{ListenFds, Notifier};
use admission::Admission;
use engines::Engines;
use live::LiveQuota;
use registry::{Peer, Registry};
use settings::{Access, Settings, WyomingRules};

/// State shared by the accept loop and every client.
#[derive(Debug)]
pub(crate) struct Shared {
    engines: Mutex<Engines>,
    admission: Admission,
    rate: Arc<RateLimiter>,
    /// The 429s the engine met, by tier.
    rejections: Arc<Rejections>,
    /// Soniox's own counts (`--live-quota`).
    live: Arc<LiveQuota>,
    access: Mutex<Access>,
    per_uid_limit: AtomicUsize,
    registry: Arc<Registry>,
    settings: Mutex<Settings>,
    /// The WebSocket endpoint's client tokens, if it has any.
    ws_tokens: Mutex<Option<Arc<ws::Tokens>>>,
    /// The WebSocket endpoint's TLS, if it has it.
    ws_tls: Mutex<Option<Arc<rustls::ServerConfig>>>,
    /// Cancelled on shutdown: every session ends its audio and drains.
    stop: CancellationToken,
    started: Instant,
    session_ids: SessionIds,
}

impl Shared {
    fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        // Short critical sections over plain values: a panic elsewhere
        // cannot leave them half-written.
        mutex.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn allows(&self, peer: &Peer) -> bool {
        Self::lock(&self.access).allows(peer)
    }

    fn per_uid_limit(&self) -> usize {
        self.per_uid_limit.load(Ordering::Relaxed)
    }

    /// An admitted client's bound on its first audio, in wall time.
    fn first_audio_timeout(&self) -> Option<Duration> {
        let settings = Self::lock(&self.settings);
        settings
            .first_audio_timeout
            .map(|bound| settings.timing.wall(bound))
    }

    fn header_timeout(&self) -> Duration {
        let settings = Self::lock(&self.settings);
        settings.timing.wall(settings.header_timeout)
    }

    fn timing(&self) -> Timing {
        Self::lock(&self.settings).timing
    }

    fn engines(&self) -> Engines {
        Self::lock(&self.engines).clone()
    }

    fn wyoming_rules(&self) -> WyomingRules {
        Self::lock(&self.settings).wyoming.clone()
    }

    fn ws_tokens(&self) -> Option<Arc<ws::Tokens>> {
        Self::lock(&self.ws_tokens).clone()
    }

    fn ws_tls(&self) -> Option<Arc<rustls::ServerConfig>> {
        Self::lock(&self.ws_tls).clone()
    }

    fn new_session_id(&self) -> String {
        self.session_ids.next()
    }

    /// A client's session: the engines it runs on, and its settings with
    /// the daemon's own bounds.
    fn session(&self, request: &SessionRequest) -> Result<(SessionEngines, SessionConfig)> {
        let engines = self
            .engines()
            .for_session(request.engines, request.partials)?;
        let settings = Self::lock(&self.settings);
        let mut config = SessionConfig::new(request, &settings.session_limits(), settings.timing);
        if engines.is_local() {
            // Real-time pace is the service's rule, not the local engine's.
            config.max_lead = crate::session::UNPACED;
        }
        Ok((engines, config))
    }

    /// The `status` document.
    fn status(&self) -> Value {
        let usage = self.admission.usage();
        let mut status = self.registry.status();
        if let Some(tokens) = self.ws_tokens() {
            // Every named client, streaming or not.
            for name in tokens.names() {
                if status["per_client"].get(name).is_none() {
                    status["per_client"][name] = json!(0);
                }
            }
        }
        status["queue"] = json!({"waiting": usage.waiting, "limit": usage.limits.queue});
        status["upstream"] = json!({
            "sessions": usage.streaming,
            "limit": usage.limits.max_upstream,
            "effective_limit": usage.effective,
            "new_per_minute": Self::lock(&self.settings).new_sessions_per_minute,
            "rejections": self.rejections.to_json(),
        });
        if let Some(live) = self.live.status() {
            status["upstream"]["live"] = live;
        }
        status["uptime_s"] = json!(self.started.elapsed().as_secs());
        status
    }

    fn status_line(&self) -> String {
        let usage = self.admission.usage();
        format!(
            "{} sessions, {}/{} upstream, {} queued",
            self.registry.len(),
            usage.streaming,
            usage.effective,
            usage.waiting
        )
    }
}

/// Runs the daemon: the synchronous entry point. `fds` are the sockets
/// systemd passed, taken before any thread started.
pub(crate) fn main(args: ServeArgs, given: ArgMatches, fds: ListenFds) -> u8 {
    // A panic in one session (its task, its engine's task or thread) must
    // not take the other sessions with it: it is logged, and tokio or the
    // launcher contain it to its task (the release build unwinds). Only a
    // panic of the daemon's own loop ends the process, with 70, below.
    std::panic::set_hook(Box::new(|info| {
        tracing::error!(panic = %info, "internal error; the task it happened in is dropped");
    }));
    let env = |name: &str| std::env::var(name).ok();
    let settings = match Settings::resolve(&args, &given, &env) {
        Ok(settings) => settings,
        Err(err) => return fail(&err),
    };
    let key = match load_key(&settings, &env) {
        Ok(key) => key,
        Err(err) => return fail(&err),
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => return fail(&Error::Internal(format!("cannot start the runtime: {err}"))),
    };
    let command_line = CommandLine { args, given };
    let served = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        runtime.block_on(serve(command_line, settings, key, fds))
    }));
    match served {
        Ok(Ok(())) => EXIT_OK,
        Ok(Err(err)) => fail(&err),
        Err(_) => fail(&Error::Internal("the daemon's main loop panicked".into())),
    }
}

fn fail(err: &Error) -> u8 {
    eprintln!("sttpipe: {err}");
    err.exit_code()
}

/// The daemon's key; a daemon whose default engine is local needs none,
/// unless it is pointed at a key file.
fn load_key(settings: &Settings, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<ApiKey>> {
    match load_api_key(settings.api_key_file.as_deref(), env) {
        Ok(key) => Ok(Some(key)),
        Err(_) if settings.engine == EngineChoice::Local && settings.api_key_file.is_none() => {
            info!("no API key: serving the local engine only");
            Ok(None)
        }
        Err(err) => Err(err),
    }
}

/// What the live quota asks, if it is on and there is a key to ask with.
fn live_source(settings: &Settings, key: Option<&ApiKey>) -> Result<Option<live::Source>> {
    match (&settings.live_quota, key) {
        (Some(base), Some(key)) => Ok(Some(live::Source::new(
            base,
            key.clone(),
            settings.ca_file.as_deref(),
        )?)),
        (Some(_), None) => {
            warn!("--live-quota needs an API key: it is off");
            Ok(None)
        }
        (None, _) => Ok(None),
    }
}

fn read_ws_tokens(settings: &Settings) -> Result<Option<Arc<ws::Tokens>>> {
    settings
        .ws_token_file
        .as_deref()
        .map(|path| ws::Tokens::read(path).map(Arc::new))
        .transpose()
}

fn load_ws_tls(settings: &Settings) -> Result<Option<Arc<rustls::ServerConfig>>> {
    settings
        .ws_tls
        .as_ref()
        .map(|(cert, key)| ws::tls_config(cert, key))
        .transpose()
}

/// The socket to serve: systemd's (never unlinked) or one bound here.
struct Listener {
    socket: UnixListener,
    /// The path to remove on exit, for a socket bound here.
    owned_path: Option<PathBuf>,
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Some(path) = &self.owned_path {
            let _ = std::fs::remove_file(path);
        }
    }
}

fn listen(settings: &Settings, fds: &mut ListenFds) -> Result<Listener> {
    if let Some((socket, name)) = fds
        .take_unix_listener()
        .map_err(|e| Error::Config(format!("the socket systemd passed is unusable: {e}")))?
    {
        info!(name, "listening on the socket systemd passed");
        let socket = UnixListener::from_std(socket)
            .map_err(|e| Error::Config(format!("the socket systemd passed: {e}")))?;
        return Ok(Listener {
            socket,
            owned_path: None,
        });
    }
    let path = &settings.socket;
    let bind_error =
        |e: std::io::Error| Error::Config(format!("cannot listen on {}: {e}", path.display()));
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(bind_error)?;
    }
    remove_stale_socket(path)?;
    let socket = UnixListener::bind(path).map_err(bind_error)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o660)).map_err(bind_error)?;
    if let Some(group) = &settings.socket_group {
        let gid = nix::unistd::Group::from_name(group)
            .map_err(|e| Error::Config(format!("group {group}: {e}")))?
            .ok_or_else(|| Error::Config(format!("no group named {group}")))?
            .gid;
        nix::unistd::chown(path, None, Some(gid)).map_err(|e| {
            Error::Config(format!(
                "cannot give {} to group {group}: {e}",
                path.display()
            ))
        })?;
    }
    info!(path = %path.display(), "listening");
    Ok(Listener {
        socket,
        owned_path: Some(path.clone()),
    })
}

/// `serve`'s command line, kept for reloads.
struct CommandLine {
    args: ServeArgs,
    given: ArgMatches,
}

/// Clears the way for binding `path`: a socket nobody answers on (a daemon
/// that died) is removed; one in use, or anything that is not a socket, is
/// an error and is left alone.
fn remove_stale_socket(path: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::FileTypeExt;
    let kind = match std::fs::symlink_metadata(path) {
        Ok(meta) => meta.file_type(),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(err) => {
            return Err(Error::Config(format!(
                "cannot listen on {}: {err}",
                path.display()
            )));
        }
    };
    if !kind.is_socket() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_symlink() {
            "a symbolic link"
        } else {
            "a file"
        };
        return Err(Error::Config(format!(
            "cannot listen on {}: it is {what}, not a socket (left as it is)",
            path.display()
        )));
    }
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Error::Config(format!(
            "{} is in use by another daemon",
            path.display()
        )));
    }
    std::fs::remove_file(path).map_err(|e| {
        Error::Config(format!(
            "cannot remove the stale socket {}: {e}",
            path.display()
        ))
    })
}

async fn serve(
    command_line: CommandLine,
    settings: Settings,
    key: Option<ApiKey>,
    mut fds: ListenFds,
) -> Result<()> {
    let notifier = Notifier::from_env();
    let rate = Arc::new(RateLimiter::new(settings.new_sessions_per_minute));
    let admission = Admission::new(settings.limits, settings.timing);
    let rejections = Arc::new(Rejections::default());
    let live = Arc::new(LiveQuota::default());
    live.configure(live_source(&settings, key.as_ref())?);
    let engines = Engines::build(&settings, key, &rate, &admission, &rejections, None)?;
    engines.preload().await?;
    let listener = listen(&settings, &mut fds)?;
    let ws = match fds.take_tcp_listener() {
        Ok(Some(socket)) => Some(
            TcpListener::from_std(socket)
                .map_err(|e| Error::Config(format!("the TCP socket systemd passed: {e}")))?,
        ),
        _ => match settings.ws_listen {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?,
            ),
            None => None,
        },
    };
    let wyoming = match settings.wyoming_listen {
        Some(addr) => Some(
            TcpListener::bind(addr)
                .await
                .map_err(|e| Error::Config(format!("cannot listen on {addr}: {e}")))?,
        ),
        None => None,
    };
    let shared = Arc::new(Shared {
        engines: Mutex::new(engines),
        admission,
        rate,
        rejections,
        live,
        access: Mutex::new(settings.access.clone()),
        per_uid_limit: AtomicUsize::new(settings.max_sessions_per_uid),
        registry: Arc::new(Registry::default()),
        ws_tokens: Mutex::new(read_ws_tokens(&settings)?),
        ws_tls: Mutex::new(load_ws_tls(&settings)?),
        settings: Mutex::new(settings),
        stop: CancellationToken::new(),
        started: Instant::now(),
        session_ids: SessionIds::default(),
    });
    let ws_addr = ws.as_ref().and_then(|ws| ws.local_addr().ok());
    ws::warn_if_open(ws_addr, shared.ws_tokens().is_some());
    let tracker = TaskTracker::new();
    tokio::spawn(
        shared
            .live
            .clone()
            .run(shared.admission.clone(), shared.stop.clone()),
    );
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
    let watchdog_every = notifier.watchdog_interval();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let mut status_every = tokio::time::interval(Duration::from_secs(2));
    notifier.ready(&shared.status_line());
    if let Some(ws) = &ws {
        let tls = shared.ws_tls().is_some();
        info!(addr = ?ws.local_addr().ok(), tls, "serving the Soniox WebSocket protocol");
    }
    if let Some(wyoming) = &wyoming {
        info!(addr = ?wyoming.local_addr().ok(), "serving the Wyoming protocol");
    }
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                notifier.reloading();
                match reload(&command_line, &shared).await {
                    Ok(()) => {
                        info!("settings and key reloaded");
                        ws::warn_if_open(ws_addr, shared.ws_tokens().is_some());
                    }
                    Err(err) => warn!(error = %err, "reload failed; keeping the old settings"),
                }
                notifier.ready(&shared.status_line());
            }
            // Pinged from this loop, so a wedged loop stops the pings.
            _ = watchdog.tick(), if watchdog_every.is_some() => notifier.watchdog(),
            _ = status_every.tick() => notifier.status(&shared.status_line()),
            accepted = listener.socket.accept() => match accepted {
                Ok((stream, _)) => {
                    tracker.spawn(unix::handle(stream, shared.clone()));
                }
                Err(err) => accept_failed(err).await,
            },
            accepted = accept_tcp(ws.as_ref()) => match accepted {
                Ok((stream, peer)) => {
                    tracker.spawn(ws::handle(stream, peer, shared.clone()));
                }
                Err(err) => accept_failed(err).await,
            },
            accepted = accept_tcp(wyoming.as_ref()) => match accepted {
                Ok((stream, peer)) => {
                    tracker.spawn(wyoming::handle(stream, peer, shared.clone()));
                }
                Err(err) => accept_failed(err).await,
            },
        }
    }
    let sessions = shared.registry.len();
    notifier.stopping(&format!("draining {sessions} sessions"));
    info!(sessions, "stopping: draining every session's final tokens");
    drop(listener);
    drop(wyoming);
    shared.stop.cancel();
    tracker.close();
    // The WebSocket endpoint still answers while the sessions drain: its
    // health check says 503, so that a load balancer sends new clients to
    // another gateway, and a new client is told the daemon is stopping.
    let still_answering = ws.map(|ws| tokio::spawn(answer_while_draining(ws, shared.clone())));
    let drain = {
        let settings = Shared::lock(&shared.settings);
        settings.timing.wall(settings.drain_timeout) + Duration::from_secs(2)
    };
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        warn!("some sessions did not finish within the drain deadline");
    }
    if let Some(task) = still_answering {
        task.abort();
    }
    Ok(())
}

/// Serves the WebSocket endpoint during the drain (see [`serve`]); each
/// connection is short, since the daemon is stopping.
async fn answer_while_draining(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                tokio::spawn(ws::handle(stream, peer, shared.clone()));
            }
            Err(err) => accept_failed(err).await,
        }
    }
}

fn signal_error(err: std::io::Error) -> Error {
    Error::Internal(format!("cannot install signal handlers: {err}"))
}

async fn accept_tcp(
    listener: Option<&TcpListener>,
) -> std::io::Result<(tokio::net::TcpStream, SocketAddr)> {
    match listener {
        Some(listener) => listener.accept().await,
        None => std::future::pending().await,
    }
}

/// Out of file descriptors and the like: say so, and give it a moment.
async fn accept_failed(err: std::io::Error) {
    warn!(error = %err, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// SIGHUP: the settings file and the key again; running sessions keep theirs.
async fn reload(command_line: &CommandLine, shared: &Shared) -> Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let settings = Settings::resolve(&command_line.args, &command_line.given, &env)?;
    let key = load_key(&settings, &env)?;
    let live = live_source(&settings, key.as_ref())?;
    let engines = Engines::build(
        &settings,
        key,
        &shared.rate,
        &shared.admission,
        &shared.rejections,
        Some(&shared.engines()),
    )?;
    engines.preload().await?;
    let ws_tokens = read_ws_tokens(&settings)?;
    // A certificate that cannot be loaded keeps the one in use, and the
    // rest of the reload goes on: renewing it must not stop the endpoint.
    match load_ws_tls(&settings) {
        Ok(tls) => {
            if tls.is_some() {
                info!("the WebSocket endpoint's certificate reloaded");
            }
            *Shared::lock(&shared.ws_tls) = tls;
        }
        Err(err) => {
            tracing::error!(error = %err, "the new certificate was not loaded; keeping the one in use");
        }
    }
    shared.admission.set_limits(settings.limits);
    shared.rate.set_rate(settings.new_sessions_per_minute);
    *Shared::lock(&shared.access) = settings.access.clone();
    shared
        .per_uid_limit
        .store(settings.max_sessions_per_uid, Ordering::Relaxed);
    *Shared::lock(&shared.engines) = engines;
    *Shared::lock(&shared.ws_tokens) = ws_tokens;
    shared.live.configure(live);
    debug!(?settings.limits, "new limits");
    *Shared::lock(&shared.settings) = settings;
    Ok(())
}
