//! The emulator's WebSocket server: configuration, fault knobs, the accept
//! loop and the per-connection records that tests inspect.
//!
//! This module owns the server's public face ([`Emulator`],
//! [`EmulatorConfig`], [`TlsIdentity`], [`Faults`], [`SessionRecord`]) and
//! the state shared by all connections. Each connection runs in its own tokio
//! task (see the `session` module); the audio path touches only that
//! session's own record slot and a few atomics, never a lock shared between
//! sessions.
//!
//! With [`EmulatorConfig::tls`] set, every connection first completes a TLS
//! handshake (rustls with the `ring` provider) and the emulator serves
//! `wss://`; without it the connection handler works on the bare TCP stream
//! (it is generic over the stream type, so the plain path pays nothing).

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::net::TcpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::quota::{self, LimitTier};
use super::session;

/// Settings of an [`Emulator`]. `Default` gives the real service's behaviour
/// (as far as it is known) with no faults injected.
#[derive(Debug, Clone)]
pub struct EmulatorConfig {
    /// Address to listen on. Default `127.0.0.1:0` (an ephemeral port).
    pub listen: SocketAddr,
    /// The API keys that authenticate. Default `["test-key"]`.
    pub api_keys: Vec<String>,
    /// The models a start request may name; any other gets 400 `Invalid
    /// model specified.` (`model_not_available`). A model named
    /// `stt-rt-vN` from v5 on takes the endpoint tuning fields. Default:
    /// `stt-rt-v3` to `stt-rt-v6` and the previews, so a later model is
    /// tested by adding it here.
    pub models: Vec<String>,
    /// The "2027" mode: refuse (401 `Missing API key.`) connections that send
    /// their key only in the start request's `api_key`. Default `false`.
    pub require_header_auth: bool,
    /// Once configured, a session that receives neither audio nor a keepalive
    /// for this long gets 408 `Request timeout.`. Default 20 s.
    pub idle_timeout: Duration,
    /// A connection that sends no start request (nor a keepalive) for this
    /// long gets 408 `Start request timeout`. Keepalives restart the clock so
    /// pre-opened connections survive. Default 10 s.
    pub start_timeout: Duration,
    /// If set, a session that sends no audio this long after its start
    /// request gets 408 `Timed out while waiting for the first audio chunk`
    /// (keepalives do not help). Default `None`: the real value is unknown.
    pub first_audio_timeout: Option<Duration>,
    /// A word becomes final once the audio received passes its end by this
    /// many ms. Default 800.
    pub finalize_lag_ms: u64,
    /// With `enable_endpoint_detection` and no `max_endpoint_delay_ms` in the
    /// request: the silence after the last word, in ms of audio, before
    /// `<end>`. Default 2000 (the real default).
    pub default_endpoint_delay_ms: u64,
    /// Most sessions that may stream at once (those past a valid start
    /// request and not yet ended or stalled); one more gets 429, worded as
    /// [`EmulatorConfig::limit_tier`] says. Default `None`: unlimited.
    pub max_concurrent: Option<usize>,
    /// Which tier the 429 at `max_concurrent` blames, and how it says so.
    /// Default [`LimitTier::Project`]: `limit_exceeded`, `Your project has
    /// exceeded max number of concurrent requests.`.
    pub limit_tier: LimitTier,
    /// Most WebSocket connections open at once, idle ones (no start request
    /// yet) included; one more gets 429 `max_concurrent_connections_reached`
    /// right after its upgrade, then a close. Default `None`: unlimited.
    pub max_connections: Option<usize>,
    /// Where `GET /v1/concurrency-limits` is served, over plain HTTP (see
    /// [`Emulator::rest_url`]). Default `127.0.0.1:0`.
    pub rest_listen: SocketAddr,
    /// Longest stream, in ms of audio; audio past it gets 400 `Audio is too
    /// long.`. Default 300 minutes.
    pub max_stream_ms: u64,
    /// For container formats (`auto`, `wav`, `ogg`, …), how many bytes count
    /// as 1 ms of audio in `total_audio_proc_ms`. Default 16.0 (~128 kbit/s).
    pub container_bytes_per_ms: f64,
    /// Fault: once a session has received this many ms of audio, close its
    /// TCP connection abruptly (no close frame, and over TLS no
    /// `close_notify`; the client sees 1006). Default `None`. Changeable at run time with [`Emulator::set_faults`].
    pub drop_after_audio_ms: Option<u64>,
    /// Fault: once a session has received `.0` ms of audio, send the error
    /// frame of code `.1` with a real message for that code, then close:
    /// 400 `Audio decode error`, 401 `Invalid API key.`, 402 `Organization
    /// balance exhausted. …`, 403 `Temporary API key session expired.`, 408
    /// `Request timeout.`, 429 `Your project has exceeded max number of
    /// concurrent requests.`, 500 `The server had an error …`, 503 `Cannot
    /// continue request (code 4). …`. Default `None`.
    pub error_after_audio_ms: Option<(u64, u16)>,
    /// Fault: once a session has received this many ms of audio, go
    /// half-open: stop reading frames, stop sending, ignore pings, keep the
    /// TCP connection open until the client closes it. Default `None`.
    pub stall_after_audio_ms: Option<u64>,
    /// Fault: a queue of error codes. Each of the next sessions to send a
    /// valid, authenticated start request takes the first code and gets that
    /// code's error frame instead of starting, then the connection closes;
    /// e.g. `[503, 429]` rejects the first two sessions of the emulator's
    /// life. Messages are those of `error_after_audio_ms`, except that 400
    /// is `Start request is malformed.`. Default empty.
    pub reject_connects: Vec<u16>,
    /// Speed-up of wall-clock timers: every timeout above (and the time
    /// allowed for the WebSocket upgrade, which counts against
    /// `start_timeout`) is divided by it,
    /// so `time_scale: 100.0` turns the 20 s idle timeout into 200 ms. Audio
    /// time (finalization, endpoints, fault thresholds) is measured in audio
    /// ms and is not affected. Must be positive. Default 1.0.
    pub time_scale: f64,
    /// Serve `wss://` with this certificate and key: every connection
    /// completes a TLS handshake (within `start_timeout`, together with the
    /// WebSocket upgrade) before anything else, and [`Emulator::url`] gives a
    /// `wss://localhost:PORT/…` URL. Default `None`: plain `ws://`.
    pub tls: Option<TlsIdentity>,
    /// Timestamps for benchmarks: told of every session start, audio frame
    /// and final token as it happens (see [`Probe`]). Default `None`, which
    /// costs nothing.
    pub probe: Option<Probe>,
    /// Act as a gateway (`sttpipe serve`) whose session waits for an
    /// upstream slot: for this long (wall time, scaled by `time_scale`)
    /// after the start request, send sttpipe's queued frames
    /// (`soniox_wire::extension`) at position 2 then 1, on each change and
    /// every [`QUEUED_HEARTBEAT`] (scaled), holding the audio that arrives;
    /// then recognise it all as usual. Not Soniox's behaviour: default
    /// `None`.
    pub queue_first: Option<Duration>,
}

/// How often a gateway repeats its queued frame while a session waits (see
/// [`EmulatorConfig::queue_first`]); sttpipe's gateway does the same.
pub const QUEUED_HEARTBEAT: Duration = Duration::from_secs(5);

/// A hook that sees a session's audio frames and final tokens with the
/// [`Instant`](std::time::Instant) they were handled, so a benchmark in the
/// same process can measure what a relay between it and the emulator adds.
///
/// The function runs on the session's own task, inline on the audio path:
/// it must be quick and must not block (record and return).
#[derive(Clone)]
pub struct Probe(Arc<dyn Fn(&ProbeEvent<'_>) + Send + Sync>);

impl Probe {
    /// A probe that calls `f` for every [`ProbeEvent`].
    pub fn new(f: impl Fn(&ProbeEvent<'_>) + Send + Sync + 'static) -> Probe {
        Probe(Arc::new(f))
    }

    /// Calls the hook.
    pub(crate) fn tell(&self, event: &ProbeEvent<'_>) {
        (self.0)(event);
    }
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Probe(..)")
    }
}

/// One observation given to a [`Probe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeEvent<'a> {
    /// The connection's [`SessionRecord::index`].
    pub index: u64,
    /// The start request's `client_reference_id`, if it had one: how a
    /// benchmark tells its sessions apart behind a relay.
    pub client_reference_id: Option<&'a str>,
    /// When it happened: for audio, as the frame was taken from the
    /// connection; for a final token, just before its response was sent.
    pub at: std::time::Instant,
    /// What happened.
    pub kind: ProbeKind,
}

/// What a [`ProbeEvent`] reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeKind {
    /// A valid start request was accepted; the session streams.
    Started,
    /// An audio frame arrived; the session has received `total_bytes` audio
    /// bytes with it.
    Audio {
        /// Audio bytes received so far, this frame included.
        total_bytes: u64,
    },
    /// A final (spoken) token starting at `start_ms` is about to be sent;
    /// one event per token of a response.
    Final {
        /// The token's `start_ms`.
        start_ms: u64,
    },
}

/// A TLS server identity in PEM, for [`EmulatorConfig::tls`].
///
/// `Debug` shows the certificate chain's length but never the key.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsIdentity {
    /// The server's certificate followed by any intermediates, as PEM
    /// `CERTIFICATE` blocks (leaf first).
    pub cert_chain_pem: String,
    /// The certificate's private key as one PEM block (PKCS#8, PKCS#1 or
    /// SEC1).
    pub key_pem: String,
}

impl std::fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsIdentity")
            .field(
                "cert_chain_pem",
                &format_args!("<{} bytes>", self.cert_chain_pem.len()),
            )
            .field("key_pem", &format_args!("<redacted>"))
            .finish()
    }
}

impl TlsIdentity {
    /// Builds the TLS acceptor: rustls with the `ring` provider, its safe
    /// default protocol versions (TLS 1.2 and 1.3) and no client auth.
    ///
    /// # Errors
    /// `InvalidInput` with a message naming the problem if the PEM holds no
    /// certificate or no key, cannot be parsed, or the key does not fit the
    /// certificate.
    pub(crate) fn acceptor(&self) -> std::io::Result<TlsAcceptor> {
        let invalid = |msg: String| std::io::Error::new(std::io::ErrorKind::InvalidInput, msg);
        let certs = CertificateDer::pem_slice_iter(self.cert_chain_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| invalid(format!("TLS certificate chain: invalid PEM: {e}")))?;
        if certs.is_empty() {
            return Err(invalid(
                "TLS certificate chain: no PEM CERTIFICATE block found".to_owned(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).map_err(|e| match e {
            pem::Error::NoItemsFound => invalid(
                "TLS private key: no PEM PRIVATE KEY block (PKCS#8, RSA or EC) found".to_owned(),
            ),
            e => invalid(format!("TLS private key: invalid PEM: {e}")),
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid(format!("TLS configuration: {e}")))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| invalid(format!("TLS certificate or key rejected: {e}")))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

impl Default for EmulatorConfig {
    fn default() -> EmulatorConfig {
        EmulatorConfig {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            api_keys: vec!["test-key".to_owned()],
            models: crate::protocol::MODELS
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
            require_header_auth: false,
            idle_timeout: Duration::from_secs(20),
            start_timeout: Duration::from_secs(10),
            first_audio_timeout: None,
            finalize_lag_ms: 800,
            default_endpoint_delay_ms: 2000,
            max_concurrent: None,
            limit_tier: LimitTier::default(),
            max_connections: None,
            rest_listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            max_stream_ms: 300 * 60 * 1000,
            container_bytes_per_ms: 16.0,
            drop_after_audio_ms: None,
            error_after_audio_ms: None,
            stall_after_audio_ms: None,
            reject_connects: Vec::new(),
            time_scale: 1.0,
            tls: None,
            probe: None,
            queue_first: None,
        }
    }
}

impl EmulatorConfig {
    /// The fault knobs of this configuration.
    pub fn faults(&self) -> Faults {
        Faults {
            drop_after_audio_ms: self.drop_after_audio_ms,
            error_after_audio_ms: self.error_after_audio_ms,
            stall_after_audio_ms: self.stall_after_audio_ms,
            reject_connects: self.reject_connects.clone(),
        }
    }

    /// `d` divided by [`EmulatorConfig::time_scale`].
    pub(crate) fn scaled(&self, d: Duration) -> Duration {
        d.div_f64(self.time_scale)
    }
}

/// The fault knobs that can change while the emulator runs; see the fields
/// of the same names on [`EmulatorConfig`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Faults {
    /// Abrupt TCP close once a session has received this many ms of audio.
    pub drop_after_audio_ms: Option<u64>,
    /// Error frame of code `.1` once a session has received `.0` ms of audio.
    pub error_after_audio_ms: Option<(u64, u16)>,
    /// Half-open stall once a session has received this many ms of audio.
    pub stall_after_audio_ms: Option<u64>,
    /// Codes for the next sessions to reject after their start request.
    pub reject_connects: Vec<u16>,
}

/// The per-session part of [`Faults`], cheap to copy into each session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct AudioFaults {
    pub(crate) drop_after_audio_ms: Option<u64>,
    pub(crate) error_after_audio_ms: Option<(u64, u16)>,
    pub(crate) stall_after_audio_ms: Option<u64>,
}

/// How a connection authenticated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMethod {
    /// `Authorization: Bearer KEY` on the upgrade request.
    Header,
    /// Subprotocols `soniox-api-key, KEY` on the upgrade request.
    Subprotocol,
    /// The deprecated `api_key` field of the start request.
    StartMessage,
    /// No key seen (yet).
    None,
}

/// How a session ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running.
    Active,
    /// Sent `finished: true` and closed normally.
    Finished,
    /// Sent an error frame with this code and closed.
    Error(u16),
    /// Closed abruptly by the `drop_after_audio_ms` fault.
    Dropped,
    /// The client closed (close frame, EOF or transport error) first.
    ClientClosed,
    /// Went half-open by the `stall_after_audio_ms` fault.
    Stalled,
    /// Closed because the emulator shut down.
    Shutdown,
}

/// What the emulator saw on one connection, for tests to inspect.
#[derive(Debug, Clone, PartialEq)]
pub struct SessionRecord {
    /// 0-based position of the connection in the emulator's accept order.
    pub index: u64,
    /// The `request_id` used in this session's error frames.
    pub request_id: String,
    /// Where the key that was checked came from.
    pub auth: AuthMethod,
    /// Whether the key was accepted.
    pub key_ok: bool,
    /// The start request as received, with a non-null `api_key` replaced by
    /// `"<redacted>"`. `None` if no start request (or not valid JSON) came.
    pub start_request: Option<serde_json::Value>,
    /// Audio bytes received.
    pub audio_bytes: u64,
    /// Audio received, in ms (by the declared format).
    pub audio_ms: u64,
    /// One entry per audio frame: (wall ms since the session's first audio
    /// frame, audio ms received so far including that frame).
    pub receipts: Vec<(u64, u64)>,
    /// When the first audio frame arrived (for latency measurements).
    pub first_audio_at: Option<std::time::Instant>,
    /// `{"type":"keepalive"}` messages received (before or after start).
    pub keepalives: u32,
    /// `{"type":"finalize"}` messages received.
    pub finalizes: u32,
    /// Every non-empty text frame after the start request (keepalives,
    /// finalize with its options, any other type), as received, in order.
    pub controls: Vec<String>,
    /// Whether the end-of-audio empty frame arrived.
    pub ended_audio: bool,
    /// How the session ended, or [`Outcome::Active`].
    pub outcome: Outcome,
    /// Text of every original final token sent, in order (no `<fin>`,
    /// `<end>` or translations).
    pub words_sent_final: Vec<String>,
    /// `<fin>` tokens sent.
    pub fins_sent: u32,
    /// `<end>` tokens sent.
    pub ends_sent: u32,
}

impl SessionRecord {
    fn new(index: u64, request_id: String) -> SessionRecord {
        SessionRecord {
            index,
            request_id,
            auth: AuthMethod::None,
            key_ok: false,
            start_request: None,
            audio_bytes: 0,
            audio_ms: 0,
            receipts: Vec::new(),
            first_audio_at: None,
            keepalives: 0,
            finalizes: 0,
            controls: Vec::new(),
            ended_audio: false,
            outcome: Outcome::Active,
            words_sent_final: Vec::new(),
            fins_sent: 0,
            ends_sent: 0,
        }
    }
}

/// Connection counters, for waiting on the emulator with
/// [`Emulator::wait_until`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmulatorCounts {
    /// Connections accepted so far.
    pub connected: usize,
    /// Connections whose task is still running (TCP still held).
    pub open: usize,
    /// Sessions whose [`Outcome`] is no longer `Active`.
    pub ended: usize,
}

/// State shared by the accept loop, the sessions and the [`Emulator`] handle.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: EmulatorConfig,
    faults: Mutex<AudioFaults>,
    /// Bumped on every fault change so sessions reload without locking.
    faults_gen: AtomicU64,
    reject_queue: Mutex<VecDeque<u16>>,
    records: Mutex<Vec<Arc<Mutex<SessionRecord>>>>,
    /// Sessions currently holding a concurrency slot.
    pub(crate) streaming: AtomicUsize,
    /// WebSocket connections currently holding a connection slot.
    pub(crate) connections: AtomicUsize,
    /// Authenticated `GET /v1/concurrency-limits` requests answered.
    pub(crate) rest_requests: AtomicU64,
    counts: watch::Sender<EmulatorCounts>,
}

/// Locks a mutex, ignoring poisoning: every critical section here leaves the
/// data consistent, so a panic elsewhere must not cascade.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    /// The current per-session faults and their generation.
    pub(crate) fn audio_faults(&self) -> (u64, AudioFaults) {
        let faults = lock(&self.faults);
        (self.faults_gen.load(Ordering::Acquire), *faults)
    }

    /// Generation of the fault knobs; changes whenever they do.
    pub(crate) fn faults_gen(&self) -> u64 {
        self.faults_gen.load(Ordering::Acquire)
    }

    /// Takes the next injected rejection code, if any.
    pub(crate) fn take_reject(&self) -> Option<u16> {
        lock(&self.reject_queue).pop_front()
    }

    /// Takes a concurrency slot; `false` if the limit is reached.
    pub(crate) fn acquire_stream(&self) -> bool {
        let max = self.config.max_concurrent.unwrap_or(usize::MAX);
        self.streaming
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Returns a slot taken by [`Shared::acquire_stream`].
    pub(crate) fn release_stream(&self) {
        self.streaming.fetch_sub(1, Ordering::AcqRel);
    }

    /// Takes a connection slot; `false` if the cap is reached.
    pub(crate) fn acquire_connection(&self) -> bool {
        let max = self.config.max_connections.unwrap_or(usize::MAX);
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Returns a slot taken by [`Shared::acquire_connection`].
    pub(crate) fn release_connection(&self) {
        self.connections.fetch_sub(1, Ordering::AcqRel);
    }

    /// Notes that a session's outcome was decided.
    pub(crate) fn note_ended(&self) {
        self.counts.send_modify(|c| c.ended += 1);
    }

    /// Notes that a connection's task finished.
    pub(crate) fn note_closed(&self) {
        self.counts.send_modify(|c| c.open -= 1);
    }

    /// Registers a new connection; returns its record slot.
    fn register(&self) -> Arc<Mutex<SessionRecord>> {
        let mut records = lock(&self.records);
        let index = records.len() as u64;
        let slot = Arc::new(Mutex::new(SessionRecord::new(index, request_id(index))));
        records.push(Arc::clone(&slot));
        self.counts.send_modify(|c| {
            c.connected += 1;
            c.open += 1;
        });
        slot
    }
}

/// A request id shaped like a UUID, unique per session and process.
fn request_id(index: u64) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut x = nanos ^ index.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ u64::from(std::process::id());
    let mut next = || {
        // xorshift64: plenty for an opaque id.
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let (a, b) = (next(), next());
    format!(
        "{:08x}-{:04x}-4{:03x}-{:04x}-{:012x}",
        a >> 32,
        (a >> 16) & 0xFFFF,
        a & 0xFFF,
        0x8000 | ((b >> 48) & 0x3FFF),
        b & 0xFFFF_FFFF_FFFF
    )
}

/// A running emulator. Dropping it stops accepting and closes all sessions
/// in the background; [`Emulator::shutdown`] does the same and waits.
#[derive(Debug)]
pub struct Emulator {
    addr: SocketAddr,
    rest_addr: SocketAddr,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
    accept: Mutex<Option<JoinHandle<()>>>,
}

impl Emulator {
    /// Binds `config.listen` and starts serving (`wss://` if
    /// `config.tls` is set).
    ///
    /// # Errors
    /// If binding fails, `config.time_scale` is not positive and finite, or
    /// `config.tls` is set but its PEM is invalid (`InvalidInput`, with a
    /// message saying what is wrong).
    pub async fn start(config: EmulatorConfig) -> std::io::Result<Emulator> {
        if !(config.time_scale.is_finite() && config.time_scale > 0.0) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "time_scale must be positive",
            ));
        }
        let tls = config.tls.as_ref().map(TlsIdentity::acceptor).transpose()?;
        let socket = if config.listen.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(config.listen)?;
        // A deep backlog: benchmarks open thousands of connections at once.
        let listener = socket.listen(4096)?;
        let addr = listener.local_addr()?;
        let rest = tokio::net::TcpListener::bind(config.rest_listen).await?;
        let rest_addr = rest.local_addr()?;
        let (counts, _) = watch::channel(EmulatorCounts::default());
        let shared = Arc::new(Shared {
            faults: Mutex::new(AudioFaults {
                drop_after_audio_ms: config.drop_after_audio_ms,
                error_after_audio_ms: config.error_after_audio_ms,
                stall_after_audio_ms: config.stall_after_audio_ms,
            }),
            faults_gen: AtomicU64::new(0),
            reject_queue: Mutex::new(config.reject_connects.iter().copied().collect()),
            records: Mutex::new(Vec::new()),
            streaming: AtomicUsize::new(0),
            connections: AtomicUsize::new(0),
            rest_requests: AtomicU64::new(0),
            counts,
            config,
        });
        let cancel = CancellationToken::new();
        let tracker = TaskTracker::new();
        let tls_on = tls.is_some();
        tracker.spawn(quota::serve(
            rest,
            Arc::clone(&shared),
            cancel.clone(),
            tracker.clone(),
        ));
        let accept = tokio::spawn(accept_loop(
            listener,
            Arc::clone(&shared),
            tls,
            cancel.clone(),
            tracker.clone(),
        ));
        tracing::info!(%addr, tls = tls_on, "soniox emulator listening");
        Ok(Emulator {
            addr,
            rest_addr,
            shared,
            cancel,
            tracker,
            accept: Mutex::new(Some(accept)),
        })
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket URL to give clients (any path is accepted).
    ///
    /// Plain: `ws://HOST:PORT/transcribe-websocket`, where an unspecified
    /// listen address (`0.0.0.0`, `::`) is given as loopback. With
    /// [`EmulatorConfig::tls`]: `wss://localhost:PORT/transcribe-websocket`
    /// for a loopback or unspecified listen address — a host name, so the
    /// client checks the certificate against `localhost` — and
    /// `wss://IP:PORT/…` for any other address.
    pub fn url(&self) -> String {
        let mut addr = self.addr;
        if self.shared.config.tls.is_some() {
            let ip = addr.ip();
            if ip.is_loopback() || ip.is_unspecified() {
                return format!("wss://localhost:{}/transcribe-websocket", addr.port());
            }
            return format!("wss://{addr}/transcribe-websocket");
        }
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("ws://{addr}/transcribe-websocket")
    }

    /// The base URL of the REST endpoint, `http://HOST:PORT` (plain HTTP,
    /// TLS or not on the WebSocket port): `GET {rest_url}/v1/concurrency-limits`
    /// with `Authorization: Bearer KEY` gives the live counts.
    pub fn rest_url(&self) -> String {
        let mut addr = self.rest_addr;
        if addr.ip().is_unspecified() {
            addr.set_ip(if addr.is_ipv4() {
                Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        format!("http://{addr}")
    }

    /// Authenticated `GET /v1/concurrency-limits` requests answered so far.
    pub fn rest_requests(&self) -> u64 {
        self.shared.rest_requests.load(Ordering::Acquire)
    }

    /// WebSocket connections holding a connection slot now (the ones
    /// `max_connections` limits).
    pub fn open_connections(&self) -> usize {
        self.shared.connections.load(Ordering::Acquire)
    }

    /// The configuration the emulator was started with (fault fields show
    /// the initial values; see [`Emulator::faults`] for the current ones).
    pub fn config(&self) -> &EmulatorConfig {
        &self.shared.config
    }

    /// A snapshot of every connection so far, in connect order.
    pub fn sessions(&self) -> Vec<SessionRecord> {
        let slots: Vec<_> = lock(&self.shared.records).clone();
        slots.iter().map(|s| lock(s).clone()).collect()
    }

    /// The record of connection `index` (0-based), if it exists.
    pub fn session(&self, index: usize) -> Option<SessionRecord> {
        let slot = lock(&self.shared.records).get(index).cloned();
        slot.map(|s| lock(&s).clone())
    }

    /// Connections currently open (their task still holds the TCP socket),
    /// whatever their state.
    pub fn active_sessions(&self) -> usize {
        self.shared.counts.borrow().open
    }

    /// Sessions currently holding a concurrency slot (the ones
    /// `max_concurrent` limits).
    pub fn streaming_sessions(&self) -> usize {
        self.shared.streaming.load(Ordering::Acquire)
    }

    /// Current connection counters.
    pub fn counts(&self) -> EmulatorCounts {
        *self.shared.counts.borrow()
    }

    /// Waits until `pred` holds for the counters (checked at once and after
    /// every connect, session end and disconnect). Wrap it in
    /// `tokio::time::timeout`.
    pub async fn wait_until(&self, mut pred: impl FnMut(&EmulatorCounts) -> bool) {
        let mut rx = self.shared.counts.subscribe();
        // The sender lives in `shared`, which `self` keeps alive: no error.
        let _ = rx.wait_for(|c| pred(c)).await;
    }

    /// The current fault knobs.
    pub fn faults(&self) -> Faults {
        let (_, f) = self.shared.audio_faults();
        Faults {
            drop_after_audio_ms: f.drop_after_audio_ms,
            error_after_audio_ms: f.error_after_audio_ms,
            stall_after_audio_ms: f.stall_after_audio_ms,
            reject_connects: lock(&self.shared.reject_queue).iter().copied().collect(),
        }
    }

    /// Replaces the fault knobs. Audio faults apply to running sessions from
    /// their next audio frame; `reject_connects` replaces the pending queue.
    pub fn set_faults(&self, faults: Faults) {
        *lock(&self.shared.faults) = AudioFaults {
            drop_after_audio_ms: faults.drop_after_audio_ms,
            error_after_audio_ms: faults.error_after_audio_ms,
            stall_after_audio_ms: faults.stall_after_audio_ms,
        };
        self.shared.faults_gen.fetch_add(1, Ordering::AcqRel);
        *lock(&self.shared.reject_queue) = faults.reject_connects.into_iter().collect();
    }

    /// Removes every fault.
    pub fn clear_faults(&self) {
        self.set_faults(Faults::default());
    }

    /// Stops accepting, closes every session (close code 1001) and waits up
    /// to 5 s for their tasks to end.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let accept = lock(&self.accept).take();
        if let Some(accept) = accept {
            let _ = accept.await;
        }
        self.tracker.close();
        if tokio::time::timeout(Duration::from_secs(5), self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("emulator sessions did not stop within 5 s");
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Accepts connections until cancelled, one task each. With `tls`, each
/// task starts with the TLS handshake, so a slow or failing handshake holds
/// up only its own connection.
async fn accept_loop(
    listener: tokio::net::TcpListener,
    shared: Arc<Shared>,
    tls: Option<TlsAcceptor>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, peer)) => {
                // Small frames must go out at once: latency is what clients measure.
                let _ = stream.set_nodelay(true);
                let slot = shared.register();
                tracing::debug!(%peer, "connection accepted");
                tracker.spawn(session::run(
                    Arc::clone(&shared),
                    stream,
                    tls.clone(),
                    slot,
                    cancel.child_token(),
                ));
            }
            Err(e) => {
                // Typically EMFILE under load: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}
