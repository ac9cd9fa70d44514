//! `sttpipe serve`: the daemon front end.
//!
//! Listens on a Unix socket (its own, or the one systemd passes) and runs
//! the same session core as the filter for each client, with the daemon's
//! key and within Soniox's quotas: an upstream [`admission::Slot`] per
//! session (the rest wait in a bounded queue, then get `busy`), and a rate
//! limit on new upstream sessions. Optionally it also speaks the Soniox
//! WebSocket protocol itself ([`proxy`]), so browsers and Soniox clients can
//! stream through it without the key.
//!
//! Lifecycle, under systemd `Type=notify`: `READY=1` once the key is loaded
//! and the socket listens; `STATUS=` with live counts; `WATCHDOG=1` from the
//! main loop, so a wedged loop stops the pings; SIGHUP reloads the settings
//! file and the key without dropping sessions; SIGTERM (or SIGINT) sends
//! `STOPPING=1`, stops accepting, ends every session's audio and drains
//! their finals within `--drain-timeout`, then exits 0.

pub mod admission;
pub mod engines;
pub mod protocol;
pub mod proxy;
pub mod registry;
mod unix;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use clap::ValueEnum;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::net::{TcpListener, UnixListener};
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::cli::{DEFAULT_SOCKET, EngineChoice, FallbackChoice, Region, ServeOpts};
use crate::config::{ApiKey, EngineRequest, SessionConfig, Timing, load_api_key, resolve_url};
use crate::engine::Engine;
use crate::engine::RateLimiter;
use crate::engine::local::LocalModel;
use crate::error::{EXIT_OK, Error, Result};
use crate::event::Event;
use crate::systemd::{ListenFds, Notifier};
use admission::{Admission, Limits, Slot, Ticket};
use engines::Engines;
use registry::{Peer, Progress, Registry, State};

/// The settings file read when `--config` is not given, if it exists.
pub const DEFAULT_CONFIG: &str = "/etc/sttpipe/sttpipe.toml";

/// The settings file: the `serve` flags' names with underscores.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSettings {
    socket: Option<PathBuf>,
    api_key_file: Option<PathBuf>,
    region: Option<String>,
    url: Option<String>,
    ca_file: Option<PathBuf>,
    max_upstream: Option<usize>,
    new_sessions_per_minute: Option<u32>,
    queue: Option<usize>,
    max_sessions_per_uid: Option<usize>,
    allow_uid: Option<Vec<u32>>,
    allow_gid: Option<Vec<u32>>,
    socket_group: Option<String>,
    ws_listen: Option<SocketAddr>,
    ws_token_file: Option<PathBuf>,
    warm_pool: Option<usize>,
    drain_timeout: Option<f64>,
    header_timeout: Option<f64>,
    engine: Option<String>,
    fallback: Option<String>,
    model_dir: Option<PathBuf>,
    local_model: Option<String>,
}

/// Who may connect: root always; else anyone, or only the listed uids and
/// (primary) gids when either list is given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Access {
    /// Allowed uids.
    pub uids: Vec<u32>,
    /// Allowed gids.
    pub gids: Vec<u32>,
}

impl Access {
    /// Whether `peer` may use the daemon.
    pub fn allows(&self, peer: &Peer) -> bool {
        peer.uid == 0
            || (self.uids.is_empty() && self.gids.is_empty())
            || self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
    }
}

/// The daemon's resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Socket path, when the daemon binds its own.
    pub socket: PathBuf,
    /// API key file, if not from the environment or credentials.
    pub api_key_file: Option<PathBuf>,
    /// Service URL.
    pub url: String,
    /// CA file for a private endpoint.
    pub ca_file: Option<PathBuf>,
    /// Slots and queue.
    pub limits: Limits,
    /// New upstream sessions a minute.
    pub new_sessions_per_minute: u32,
    /// Sessions per uid (0: no limit).
    pub max_sessions_per_uid: usize,
    /// Who may connect.
    pub access: Access,
    /// Group for a socket the daemon binds.
    pub socket_group: Option<String>,
    /// WebSocket endpoint address.
    pub ws_listen: Option<SocketAddr>,
    /// Token file for the WebSocket endpoint.
    pub ws_token_file: Option<PathBuf>,
    /// Warm upstream connections.
    pub warm_pool: usize,
    /// Drain bound on SIGTERM.
    pub drain_timeout: Duration,
    /// Header bound.
    pub header_timeout: Duration,
    /// The engine of sessions that do not ask for one.
    pub engine: EngineChoice,
    /// Whether Soniox sessions fall back to the local engine.
    pub fallback_local: bool,
    /// The local engine's files (`None`: the default directory).
    pub model_dir: Option<PathBuf>,
    /// The local engine's model.
    pub local_model: LocalModel,
    /// Time scale (tests).
    pub timing: Timing,
}

impl Settings {
    /// Flags over the settings file over defaults.
    pub fn resolve(opts: &ServeOpts, env: &dyn Fn(&str) -> Option<String>) -> Result<Settings> {
        let file = read_file_settings(opts.config.as_deref())?;
        let region = match opts.region {
            Some(region) => region,
            None => match &file.region {
                Some(name) => Region::from_str(name, true).map_err(|_| {
                    Error::Usage(format!("unknown region {name:?} in the settings file"))
                })?,
                None => Region::Us,
            },
        };
        let url = resolve_url(opts.url.as_deref().or(file.url.as_deref()), region)?;
        let engine = match (opts.engine, &file.engine) {
            (Some(engine), _) => engine,
            (None, Some(name)) => EngineChoice::from_str(name, true).map_err(|_| {
                Error::Config(format!("unknown engine {name:?} in the settings file"))
            })?,
            (None, None) => EngineChoice::Soniox,
        };
        let fallback_local = match (opts.fallback, &file.fallback) {
            (Some(FallbackChoice::Local), _) => true,
            (None, Some(name)) => {
                FallbackChoice::from_str(name, true).map_err(|_| {
                    Error::Config(format!("unknown fallback {name:?} in the settings file"))
                })?;
                true
            }
            (None, None) => false,
        };
        let seconds = |value: Option<f64>, default: f64, name: &str| -> Result<Duration> {
            let value = value.unwrap_or(default);
            if value.is_finite() && value >= 0.0 {
                Ok(Duration::from_secs_f64(value))
            } else {
                Err(Error::Usage(format!(
                    "--{name} must be a number of seconds ≥ 0"
                )))
            }
        };
        Ok(Settings {
            socket: opts
                .socket
                .clone()
                .or(file.socket)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_SOCKET)),
            api_key_file: opts.api_key_file.clone().or(file.api_key_file),
            url,
            ca_file: opts.ca_file.clone().or(file.ca_file),
            limits: Limits {
                max_upstream: opts.max_upstream.or(file.max_upstream).unwrap_or(10),
                queue: opts.queue.or(file.queue).unwrap_or(100),
            },
            new_sessions_per_minute: opts
                .new_sessions_per_minute
                .or(file.new_sessions_per_minute)
                .unwrap_or(100),
            max_sessions_per_uid: opts
                .max_sessions_per_uid
                .or(file.max_sessions_per_uid)
                .unwrap_or(0),
            access: Access {
                uids: opts
                    .allow_uid
                    .clone()
                    .or(file.allow_uid)
                    .unwrap_or_default(),
                gids: opts
                    .allow_gid
                    .clone()
                    .or(file.allow_gid)
                    .unwrap_or_default(),
            },
            socket_group: opts.socket_group.clone().or(file.socket_group),
            ws_listen: opts.ws_listen.or(file.ws_listen),
            ws_token_file: opts.ws_token_file.clone().or(file.ws_token_file),
            warm_pool: opts.warm_pool.or(file.warm_pool).unwrap_or(2),
            drain_timeout: seconds(
                opts.drain_timeout.or(file.drain_timeout),
                10.0,
                "drain-timeout",
            )?,
            header_timeout: seconds(
                opts.header_timeout.or(file.header_timeout),
                5.0,
                "header-timeout",
            )?,
            engine,
            fallback_local,
            model_dir: opts.model_dir.clone().or(file.model_dir),
            local_model: opts
                .local_model
                .as_deref()
                .or(file.local_model.as_deref())
                .map_or(Ok(LocalModel::default()), str::parse)?,
            timing: Timing::from_env(env)?,
        })
    }
}

fn read_file_settings(path: Option<&Path>) -> Result<FileSettings> {
    let (path, required) = match path {
        Some(path) => (path, true),
        None => (Path::new(DEFAULT_CONFIG), false),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(FileSettings::default());
        }
        Err(err) => {
            return Err(Error::Config(format!(
                "cannot read settings file {}: {err}",
                path.display()
            )));
        }
    };
    toml::from_str(&text)
        .map_err(|e| Error::Config(format!("settings file {}: {}", path.display(), e.message())))
}

/// State shared by the accept loop and every client.
pub struct Shared {
    engines: Mutex<Engines>,
    admission: Admission,
    rate: Arc<RateLimiter>,
    access: Mutex<Access>,
    per_uid_limit: AtomicUsize,
    registry: Arc<Registry>,
    settings: Mutex<Settings>,
    ws_token: Mutex<Option<String>>,
    /// Cancelled on shutdown: every session ends its audio and drains.
    stop: CancellationToken,
    started: Instant,
    next_session: AtomicU64,
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

    fn ws_token(&self) -> Option<String> {
        Self::lock(&self.ws_token).clone()
    }

    fn new_session_id(&self) -> String {
        let n = self.next_session.fetch_add(1, Ordering::Relaxed) + 1;
        format!("{:08x}-{n}", std::process::id())
    }

    /// A client's session: the engine it runs on, and its settings with
    /// the daemon's own bounds and fallback.
    fn session(
        &self,
        mut config: SessionConfig,
        request: EngineRequest,
    ) -> Result<(Engine, SessionConfig)> {
        let engines = self.engines().for_session(request, config.partials)?;
        if engines.is_local() {
            // Real-time pace is the service's rule, not the local engine's.
            config.max_lead = crate::session::UNPACED;
        }
        let settings = Self::lock(&self.settings);
        config.drain_timeout = settings.drain_timeout;
        config.timing = settings.timing;
        config.fallback = engines.fallback;
        Ok((engines.engine, config))
    }

    /// The `status` document.
    fn status(&self) -> Value {
        let (streaming, waiting, limits) = self.admission.usage();
        let mut status = self.registry.status();
        status["queue"] = json!({"waiting": waiting, "limit": limits.queue});
        status["upstream"] = json!({
            "sessions": streaming,
            "limit": limits.max_upstream,
            "new_per_minute": Self::lock(&self.settings).new_sessions_per_minute,
        });
        status["uptime_s"] = json!(self.started.elapsed().as_secs());
        status
    }

    fn status_line(&self) -> String {
        let (streaming, waiting, limits) = self.admission.usage();
        format!(
            "{} sessions, {streaming}/{} upstream, {waiting} queued",
            self.registry.len(),
            limits.max_upstream
        )
    }
}

/// Waits for an upstream slot, telling the client its place in the queue.
/// `None` if it is refused (busy) or the daemon stops first.
async fn admit(shared: &Shared, events: &mpsc::Sender<Event>, progress: &Progress) -> Option<Slot> {
    match shared.admission.ask() {
        Ticket::Admitted(slot) => Some(slot),
        Ticket::Busy => {
            let err = Error::Busy(
                "the daemon is busy: every upstream slot is taken and the queue is full".into(),
            );
            let _ = events.send(Event::error(&err)).await;
            None
        }
        Ticket::Queued(waiting) => {
            progress.set_state(State::Queued);
            let _ = events
                .send(Event::Queued {
                    position: waiting.position,
                })
                .await;
            tokio::select! {
                slot = waiting.slot() => Some(slot),
                () = shared.stop.cancelled() => None,
            }
        }
    }
}

/// Runs the daemon: the synchronous entry point. `fds` are the sockets
/// systemd passed, taken before any thread started.
pub fn main(opts: ServeOpts, fds: ListenFds) -> u8 {
    let env = |name: &str| std::env::var(name).ok();
    let settings = match Settings::resolve(&opts, &env) {
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
    match runtime.block_on(serve(opts, settings, key, fds)) {
        Ok(()) => EXIT_OK,
        Err(err) => fail(&err),
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

fn read_ws_token(settings: &Settings) -> Result<Option<String>> {
    let Some(path) = &settings.ws_token_file else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read the WebSocket token file {}: {e}",
            path.display()
        ))
    })?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    if token.is_empty() {
        return Err(Error::Config(format!(
            "the WebSocket token file {} is empty",
            path.display()
        )));
    }
    Ok(Some(token))
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
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        return Err(Error::Config(format!(
            "{} is in use by another daemon",
            path.display()
        )));
    }
    // A stale socket from a daemon that died: nobody answers on it.
    let _ = std::fs::remove_file(path);
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

async fn serve(
    opts: ServeOpts,
    settings: Settings,
    key: Option<ApiKey>,
    mut fds: ListenFds,
) -> Result<()> {
    let notifier = Notifier::from_env();
    let rate = Arc::new(RateLimiter::new(settings.new_sessions_per_minute));
    let engines = Engines::build(&settings, key, &rate, None)?;
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
    let shared = Arc::new(Shared {
        engines: Mutex::new(engines),
        admission: Admission::new(settings.limits),
        rate,
        access: Mutex::new(settings.access.clone()),
        per_uid_limit: AtomicUsize::new(settings.max_sessions_per_uid),
        registry: Arc::new(Registry::default()),
        ws_token: Mutex::new(read_ws_token(&settings)?),
        settings: Mutex::new(settings),
        stop: CancellationToken::new(),
        started: Instant::now(),
        next_session: AtomicU64::new(0),
    });
    let tracker = TaskTracker::new();
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
    let watchdog_every = notifier.watchdog_interval();
    let mut watchdog = tokio::time::interval(watchdog_every.unwrap_or(Duration::from_secs(3600)));
    let mut status_every = tokio::time::interval(Duration::from_secs(2));
    notifier.ready(&shared.status_line());
    if let Some(ws) = &ws {
        info!(addr = ?ws.local_addr().ok(), "serving the Soniox WebSocket protocol");
    }
    loop {
        tokio::select! {
            _ = terminate.recv() => break,
            _ = interrupt.recv() => break,
            _ = hangup.recv() => {
                notifier.reloading();
                match reload(&opts, &shared).await {
                    Ok(()) => info!("settings and key reloaded"),
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
                    tracker.spawn(proxy::handle(stream, peer, shared.clone()));
                }
                Err(err) => accept_failed(err).await,
            },
        }
    }
    let sessions = shared.registry.len();
    notifier.stopping(&format!("draining {sessions} sessions"));
    info!(sessions, "stopping: draining every session's final tokens");
    drop(listener);
    shared.stop.cancel();
    tracker.close();
    let drain = {
        let settings = Shared::lock(&shared.settings);
        settings.timing.wall(settings.drain_timeout) + Duration::from_secs(2)
    };
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        warn!("some sessions did not finish within the drain deadline");
    }
    Ok(())
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
async fn reload(opts: &ServeOpts, shared: &Shared) -> Result<()> {
    let env = |name: &str| std::env::var(name).ok();
    let settings = Settings::resolve(opts, &env)?;
    let key = load_key(&settings, &env)?;
    let engines = Engines::build(&settings, key, &shared.rate, Some(&shared.engines()))?;
    engines.preload().await?;
    let ws_token = read_ws_token(&settings)?;
    shared.admission.set_limits(settings.limits);
    shared.rate.set_rate(settings.new_sessions_per_minute);
    *Shared::lock(&shared.access) = settings.access.clone();
    shared
        .per_uid_limit
        .store(settings.max_sessions_per_uid, Ordering::Relaxed);
    *Shared::lock(&shared.engines) = engines;
    *Shared::lock(&shared.ws_token) = ws_token;
    debug!(?settings.limits, "new limits");
    *Shared::lock(&shared.settings) = settings;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn access_rules() {
        let peer = |uid, gid| Peer {
            uid,
            gid,
            pid: None,
        };
        let open = Access::default();
        assert!(open.allows(&peer(1000, 1000)));
        let listed = Access {
            uids: vec![1000],
            gids: vec![50],
        };
        assert!(listed.allows(&peer(1000, 1)));
        assert!(listed.allows(&peer(7, 50)));
        assert!(listed.allows(&peer(0, 0)), "root always may");
        assert!(!listed.allows(&peer(1001, 1001)));
    }

    #[test]
    fn the_settings_file_fills_in_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sttpipe.toml");
        std::fs::write(
            &file,
            "max_upstream = 3\nqueue = 7\nregion = \"eu\"\nallow_uid = [1000]\n",
        )
        .unwrap();
        let opts = ServeOpts {
            config: Some(file.clone()),
            queue: Some(9),
            ..ServeOpts::default()
        };
        let settings = Settings::resolve(&opts, &|_| None).unwrap();
        assert_eq!(
            settings.limits,
            Limits {
                max_upstream: 3,
                queue: 9
            }
        );
        assert!(settings.url.contains(".eu."));
        assert_eq!(settings.access.uids, [1000]);
        std::fs::write(&file, "max_upstreams = 3\n").unwrap();
        assert!(matches!(
            Settings::resolve(&opts, &|_| None),
            Err(Error::Config(_))
        ));
    }
}
