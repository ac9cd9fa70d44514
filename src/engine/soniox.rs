//! The Soniox real-time engine: the WebSocket client and its wire types.
//!
//! One upstream session is one WebSocket connection: the key travels in an
//! `Authorization: Bearer` header, the first message is the JSON start
//! request, audio goes in binary frames, `{"type":"keepalive"}` goes out
//! after [`KEEPALIVE_AFTER`] without audio, a client's control messages go
//! out as the client sent them, and an empty text frame ends the audio; the
//! connection is read until `finished` so that the finals that arrive after
//! the end of audio are never dropped. Error frames become
//! [`Error::Service`]; the daemon's engine counts every 429 by tier
//! ([`super::quota`]), and a refusal past the cap on connections shrinks
//! its warm pool, whose idle connections count against that cap.
//!
//! With more than one URL, a connection attempt that cannot reach one tries
//! the next within the same connect bound ([`failover`]). A gateway
//! (`sttpipe serve`) upstream may say that the session waits in its queue
//! (`soniox_wire::extension`): that becomes [`EngineEvent::Queued`], and
//! keeps the half-open watchdog content, since the connection is alive.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use soniox_wire::{ServerMessage, StartRequest};
use tokio::net::TcpStream;
use tokio::sync::{Notify, mpsc};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};
use tracing::{debug, info, warn};

use super::quota::{Rejections, Tier};
use super::{
    COMMAND_QUEUE, EVENT_QUEUE, EngineCommand, EngineEvent, EngineLink, RateLimiter, Update,
};
use crate::audio::AudioFormat;
use crate::config::{RecognitionOptions, ServiceConfig, Timing};
use crate::error::{Error, Result};
use crate::event::Token;
use crate::timer::LazyTimer;

/// Soniox closes a connection after 20 s without audio or keepalive; 5 s is
/// what the official SDKs use, leaving room for a slow network.
pub(crate) const KEEPALIVE_AFTER: Duration = Duration::from_secs(5);
/// Bound on TCP + TLS + WebSocket handshake (the Python SDK uses 10 s).
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// A WebSocket ping this often: it draws an answer even when no audio
/// flows, so a dead connection shows within [`HALF_OPEN_AFTER`].
pub(crate) const PING_EVERY: Duration = Duration::from_secs(5);
/// A service that owes an answer and stays silent this long is gone.
pub(crate) const HALF_OPEN_AFTER: Duration = Duration::from_secs(10);

mod failover;
mod pool;

use failover::{Upstreams, fails_over};
use pool::{PoolRoom, WarmPool, keep_warm};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Connects upstream sessions to Soniox.
#[derive(Clone)]
pub(crate) struct SonioxEngine {
    service: ServiceConfig,
    /// The URLs and where the next attempt starts.
    upstreams: Upstreams,
    tls: Arc<rustls::ClientConfig>,
    /// Every upstream open takes a token first (the daemon's quota).
    rate: Option<Arc<RateLimiter>>,
    /// Connections opened ahead of need (the daemon's warm pool).
    pool: Option<Arc<WarmPool>>,
    /// Where the 429s are counted (the daemon's).
    rejections: Option<Arc<Rejections>>,
}

impl std::fmt::Debug for SonioxEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SonioxEngine")
            .field("service", &self.service)
            .finish_non_exhaustive()
    }
}

impl SonioxEngine {
    /// Prepares the engine: loads the trusted roots once.
    pub(crate) fn new(service: ServiceConfig) -> Result<SonioxEngine> {
        let tls = Arc::new(tls_config(service.ca_file.as_deref())?);
        Ok(SonioxEngine {
            upstreams: Upstreams::new(&service.urls),
            service,
            tls,
            rate: None,
            pool: None,
            rejections: None,
        })
    }

    /// Counts the 429s its sessions and its pool meet in `rejections`.
    pub(crate) fn with_rejections(mut self, rejections: Arc<Rejections>) -> SonioxEngine {
        self.rejections = Some(rejections);
        self
    }

    /// Counts a 429 by tier; gives the tier.
    fn count(&self, err: &Error) -> Option<Tier> {
        let tier = Tier::of(err)?;
        if let Some(rejections) = &self.rejections {
            rejections.count(tier);
        }
        Some(tier)
    }

    /// Notes a session's failure: a 429 is counted, and one past the cap on
    /// connections shrinks the warm pool.
    fn note(&self, err: &Error) {
        if self.count(err) == Some(Tier::Connections)
            && let Some(pool) = &self.pool
        {
            pool.shrink();
        }
    }

    /// Limits how fast upstream sessions open.
    pub(crate) fn with_rate(mut self, rate: Arc<RateLimiter>) -> SonioxEngine {
        self.rate = Some(rate);
        self
    }

    /// Keeps up to `size` connections open and ready (handshake done,
    /// keepalives sent, replaced before [`pool::WARM_MAX_AGE`]), so that a
    /// session's first audio goes out without a TCP, TLS and WebSocket
    /// handshake; never more than `room` allows. Each warm connection takes
    /// a token of the rate limit when it opens. Must be called within a
    /// tokio runtime; the pool's task ends with the engine.
    pub(crate) fn with_warm_pool(mut self, size: usize, room: PoolRoom) -> SonioxEngine {
        if size > 0 {
            let pool = Arc::new(WarmPool {
                size,
                cap: Mutex::new((size, Instant::now())),
                room,
                idle: Mutex::new(VecDeque::new()),
                wanted: Notify::new(),
            });
            tokio::spawn(keep_warm(Arc::downgrade(&pool), self.clone()));
            self.pool = Some(pool);
        }
        self
    }

    /// Connects (or takes a warm connection), sends the start request and
    /// spawns the session task.
    pub(crate) async fn open(
        &self,
        recognition: &RecognitionOptions,
        audio: &AudioFormat,
    ) -> Result<EngineLink> {
        let start = Message::text(start_request(recognition, audio).to_json());
        let mut socket = None;
        if let Some(pool) = &self.pool {
            // A warm connection the service has closed fails the send: then
            // the next one, or a fresh connection.
            while let Some((index, mut warm)) = pool.take() {
                if let Err(tier) = self.check_idle(&mut warm) {
                    if tier == Some(Tier::Connections) {
                        pool.shrink();
                    }
                    continue;
                }
                if warm.send(start.clone()).await.is_ok() {
                    socket = Some((warm, index));
                    break;
                }
            }
        }
        let (socket, index) = match socket {
            Some(socket) => socket,
            None => {
                if let Some(rate) = &self.rate {
                    rate.take().await;
                }
                let (mut socket, index) = self.connect().await?;
                if let Err(e) = socket.send(start).await {
                    self.upstreams.failed(index);
                    return Err(Error::Disconnected(format!(
                        "sending the start request: {e}"
                    )));
                }
                (socket, index)
            }
        };
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let timers = Timers::new(self.service.timing);
        tokio::spawn(run_connection(
            socket,
            commands_rx,
            events_tx,
            timers,
            (self.clone(), index),
        ));
        Ok(EngineLink {
            commands: commands_tx,
            events: events_rx,
            url: Some(self.upstreams.url(index).to_owned()),
        })
    }

    /// Connects to the first URL that answers, in the failover order, all
    /// within one [`CONNECT_TIMEOUT`]: each attempt gets an equal share of
    /// what is left, so that a host that does not answer leaves time for
    /// the next. Gives the socket and its URL's index; when every URL
    /// failed, the last failure worth retrying, if any, else the last.
    async fn connect(&self) -> Result<(Socket, usize)> {
        let deadline = Instant::now() + self.service.timing.wall(CONNECT_TIMEOUT);
        let order: Vec<usize> = self.upstreams.order().collect();
        let (mut retryable, mut last) = (None, None);
        for (tried, &index) in order.iter().enumerate() {
            let left = order.len() - tried;
            let share = deadline.saturating_duration_since(Instant::now()) / left as u32;
            let url = self.upstreams.url(index);
            match self.connect_to(url, share).await {
                Ok(socket) => {
                    if tried > 0 {
                        info!(url, failed = tried, "connected to the next upstream URL");
                    }
                    self.upstreams.good(index);
                    return Ok((socket, index));
                }
                Err(err) if !fails_over(&err) => return Err(err),
                Err(err) => {
                    self.upstreams.failed(index);
                    if self.upstreams.len() > 1 {
                        warn!(url, error = %err, "cannot reach this upstream URL");
                    }
                    if err.is_retryable() {
                        retryable = Some(err);
                    } else {
                        last = Some(err);
                    }
                }
            }
        }
        Err(retryable
            .or(last)
            .unwrap_or_else(|| Error::Internal("no upstream URL to connect to".into())))
    }

    /// One attempt at `url`, bounded by `bound`.
    async fn connect_to(&self, url: &str, bound: Duration) -> Result<Socket> {
        let connect_error = |reason: String, transient: bool| Error::Connect {
            url: url.to_owned(),
            reason,
            transient,
        };
        let mut request = url
            .into_client_request()
            .map_err(|e| connect_error(e.to_string(), false))?;
        let bearer = format!("Bearer {}", self.service.api_key.expose());
        let mut header = HeaderValue::from_str(&bearer).map_err(|_| {
            Error::Config("the API key contains characters not allowed in a header".into())
        })?;
        header.set_sensitive(true);
        request.headers_mut().insert("Authorization", header);
        let connector = Connector::Rustls(self.tls.clone());
        let handshake = tokio_tungstenite::connect_async_tls_with_config(
            request,
            Some(soniox_wire::websocket_config()),
            true,
            Some(connector),
        );
        match tokio::time::timeout(bound, handshake).await {
            Err(_) => Err(connect_error(
                format!("no answer within {:.1} s", bound.as_secs_f64()),
                true,
            )),
            Ok(Err(e)) => {
                let err = classify_connect_error(url, e);
                self.note(&err);
                Err(err)
            }
            Ok(Ok((socket, _response))) => Ok(socket),
        }
    }
}

/// Maps a handshake failure to an error the user can act on.
fn classify_connect_error(url: &str, err: tungstenite::Error) -> Error {
    use tungstenite::Error as E;
    let (reason, transient) = match &err {
        E::Io(io) => (io.to_string(), true),
        E::Tls(tls) => (format!("TLS: {tls}"), false),
        E::Url(e) => (format!("bad URL: {e}"), false),
        // The service answered but refused the upgrade: its status means
        // what it means in an error frame (429 and 5xx are temporary).
        E::Http(response) => {
            return Error::Service {
                code: response.status().as_u16(),
                error_type: None,
                message: "the WebSocket upgrade was refused".into(),
            };
        }
        other => (other.to_string(), true),
    };
    // rustls reports certificate problems as io errors wrapping a TLS error.
    let tls_problem = reason.contains("certificate") || reason.contains("InvalidCertificate");
    Error::Connect {
        url: url.to_owned(),
        reason: if tls_problem && !reason.starts_with("TLS") {
            format!("TLS: {reason}")
        } else {
            reason
        },
        transient: transient && !tls_problem,
    }
}

/// The rustls client configuration: the CAs in `ca_file`, or the built-in
/// webpki roots.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            let pem = std::fs::read(path).map_err(|e| {
                Error::Config(format!("cannot read CA file {}: {e}", path.display()))
            })?;
            let mut added = 0;
            for cert in CertificateDer::pem_slice_iter(&pem) {
                let cert =
                    cert.map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::Config(format!("CA file {}: {e}", path.display())))?;
                added += 1;
            }
            if added == 0 {
                return Err(Error::Config(format!(
                    "CA file {} holds no PEM certificate",
                    path.display()
                )));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// The start request: the first message of a session. Unset options are
/// left out, as the official SDKs do; the start fields go in as given
/// (resolution has kept out every field written here).
pub(crate) fn start_request(recognition: &RecognitionOptions, audio: &AudioFormat) -> StartRequest {
    let on = |flag: bool| flag.then_some(true);
    StartRequest {
        api_key: None,
        model: recognition.model.clone(),
        audio_format: audio.name.clone(),
        sample_rate: audio.sample_rate,
        num_channels: audio.channels,
        language_hints: recognition.language_hints.clone(),
        language_hints_strict: on(recognition.language_hints_strict),
        context: recognition.context.clone(),
        enable_speaker_diarization: on(recognition.diarize),
        enable_language_identification: on(recognition.language_id),
        enable_endpoint_detection: on(recognition.endpoint_detection),
        max_endpoint_delay_ms: recognition.max_endpoint_delay_ms.map(u64::from),
        endpoint_sensitivity: recognition.endpoint_sensitivity,
        endpoint_latency_adjustment_level: recognition
            .endpoint_latency_adjustment_level
            .map(serde_json::Number::from),
        translation: recognition.translation.clone(),
        client_reference_id: recognition.client_reference_id.clone(),
        enable_non_final_tokens: None,
        extra: recognition.start_fields.clone(),
    }
}

/// How a connection's life ended, for the log.
enum Ending {
    Finished,
    Failed,
    Abandoned,
}

/// Runs one upstream connection until `finished`, an error, or abandonment;
/// `engine` notes its failure, and a lost connection sends the next attempt
/// to the next of its URLs (`index`: this one's).
async fn run_connection(
    mut socket: Socket,
    mut commands: mpsc::Receiver<EngineCommand>,
    events: mpsc::Sender<EngineEvent>,
    timers: Timers,
    (engine, index): (SonioxEngine, usize),
) {
    let ending = match drive(&mut socket, &mut commands, &events, timers).await {
        Ok(ending) => ending,
        Err(err) => {
            engine.note(&err);
            if fails_over(&err) {
                engine.upstreams.failed(index);
            }
            // The receiver may be gone already; nothing else to tell.
            let _ = events.send(EngineEvent::Failed(err)).await;
            Ending::Failed
        }
    };
    match ending {
        Ending::Finished => debug!("upstream session finished"),
        Ending::Failed => debug!("upstream session failed"),
        Ending::Abandoned => debug!("upstream session abandoned"),
    }
    // A polite close; the server may already be gone, which is fine.
    let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
}

/// The connection's timers, already scaled to wall time.
#[derive(Debug, Clone, Copy)]
struct Timers {
    keepalive_after: Duration,
    ping_every: Duration,
    half_open_after: Duration,
}

impl Timers {
    fn new(timing: Timing) -> Timers {
        Timers {
            keepalive_after: timing.wall(KEEPALIVE_AFTER),
            ping_every: timing.wall(PING_EVERY),
            half_open_after: timing.wall(HALF_OPEN_AFTER),
        }
    }
}

async fn drive(
    socket: &mut Socket,
    commands: &mut mpsc::Receiver<EngineCommand>,
    events: &mpsc::Sender<EngineEvent>,
    timers: Timers,
) -> Result<Ending> {
    let mut audio_ended = false;
    let mut keepalive_at = Instant::now() + timers.keepalive_after;
    let mut ping_at = Instant::now() + timers.ping_every;
    // Since when we have been owed an answer: set by sending audio, a ping
    // or the end of audio; cleared by any frame from the service. A service
    // silent for `half_open_after` while owing one is gone (half-open TCP).
    let mut owed_since: Option<Instant> = None;
    let mut keepalive_timer = LazyTimer::new();
    let mut ping_timer = LazyTimer::new();
    let mut stall_timer = LazyTimer::new();
    loop {
        let stalled_at = owed_since.map(|t| t + timers.half_open_after);
        let message = tokio::select! {
            // Commands stop after end of audio: only the answer is awaited then.
            command = commands.recv(), if !audio_ended => match command {
                Some(EngineCommand::Audio(bytes)) => {
                    keepalive_at = Instant::now() + timers.keepalive_after;
                    Message::Binary(bytes)
                }
                Some(EngineCommand::Finalize) => Message::text(r#"{"type":"finalize"}"#),
                Some(EngineCommand::Control(control)) => Message::text(control.text),
                Some(EngineCommand::EndOfAudio) => {
                    audio_ended = true;
                    Message::text("")
                }
                None => return Ok(Ending::Abandoned),
            },
            // Keepalive only while audio may still come.
            () = keepalive_timer.until(Some(keepalive_at)), if !audio_ended => {
                keepalive_at = Instant::now() + timers.keepalive_after;
                Message::text(r#"{"type":"keepalive"}"#)
            }
            // A ping asks for an answer even when no audio flows.
            () = ping_timer.until(Some(ping_at)) => {
                ping_at = Instant::now() + timers.ping_every;
                Message::Ping(Bytes::new())
            }
            () = stall_timer.until(stalled_at) => return Err(stalled(timers)),
            incoming = socket.next() => {
                owed_since = None;
                if let Some(event) = receive(incoming)? {
                    let finished = matches!(event, EngineEvent::Finished(_));
                    if events.send(event).await.is_err() {
                        return Ok(Ending::Abandoned);
                    }
                    if finished {
                        if !audio_ended {
                            warn!("the service finished before the end of audio");
                        }
                        return Ok(Ending::Finished);
                    }
                }
                continue;
            }
        };
        let now = Instant::now();
        owed_since.get_or_insert(now);
        // A peer that stopped reading blocks the send once the TCP buffers
        // fill: bound it by the same rule.
        let deadline = owed_since.map_or(now, |t| t + timers.half_open_after);
        match tokio::time::timeout_at(deadline, socket.send(message)).await {
            Ok(sent) => sent.map_err(send_error)?,
            Err(_) => return Err(stalled(timers)),
        }
    }
}

fn stalled(timers: Timers) -> Error {
    Error::Stalled(format!(
        "no answer from the service for {:.1} s (a half-open connection)",
        timers.half_open_after.as_secs_f64()
    ))
}

/// Turns one incoming frame into an engine event (`None` for frames that
/// carry none, such as pongs).
fn receive(incoming: Option<Result<Message, tungstenite::Error>>) -> Result<Option<EngineEvent>> {
    let text = match incoming {
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(Message::Close(frame))) => {
            let why = frame
                .map(|f| format!(" (code {} {})", f.code, f.reason))
                .unwrap_or_default();
            return Err(Error::Disconnected(format!(
                "the service closed the connection before finishing{why}"
            )));
        }
        Some(Ok(_)) => return Ok(None),
        Some(Err(e)) => return Err(Error::Disconnected(e.to_string())),
        None => {
            return Err(Error::Disconnected(
                "the connection closed before the session finished".into(),
            ));
        }
    };
    let message: ServerMessage = serde_json::from_str(&text)
        .map_err(|e| Error::Protocol(format!("unreadable message from the service: {e}")))?;
    // A gateway's queue: no tokens, no progress, the connection alive.
    if let Some(position) = message.queued_position() {
        return Ok(Some(EngineEvent::Queued(position)));
    }
    let response = message.into_result().map_err(|err| Error::Service {
        code: err.code,
        error_type: Some(err.error_type.into_owned()),
        message: err.message,
    })?;
    let finished = response.finished;
    let update = Update {
        tokens: response.tokens.into_iter().map(Token::from).collect(),
        final_audio_proc_ms: response.final_audio_proc_ms,
        total_audio_proc_ms: response.total_audio_proc_ms,
    };
    Ok(Some(if finished {
        EngineEvent::Finished(update)
    } else {
        EngineEvent::Update(update)
    }))
}

fn send_error(err: tungstenite::Error) -> Error {
    Error::Disconnected(format!("sending to the service: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_request_leaves_out_unset_options() {
        let recognition = RecognitionOptions {
            model: "stt-rt-v5".into(),
            ..Default::default()
        };
        let start = start_request(&recognition, &AudioFormat::default_pcm()).to_json();
        assert_eq!(
            start,
            r#"{"model":"stt-rt-v5","audio_format":"pcm_s16le","sample_rate":16000,"num_channels":1}"#
        );
        let mp3 = start_request(&recognition, &AudioFormat::container("mp3")).to_json();
        assert_eq!(mp3, r#"{"model":"stt-rt-v5","audio_format":"mp3"}"#);
    }

    #[test]
    fn start_request_carries_endpoint_tuning_and_start_fields() {
        let recognition = RecognitionOptions {
            model: "stt-rt-v6".into(),
            endpoint_sensitivity: Some(0.5),
            endpoint_latency_adjustment_level: Some(2),
            start_fields: serde_json::Map::from_iter([(
                "enable_agent_text_input".to_owned(),
                serde_json::Value::Bool(true),
            )]),
            ..Default::default()
        };
        let start = start_request(&recognition, &AudioFormat::container("ogg")).to_json();
        assert_eq!(
            start,
            r#"{"model":"stt-rt-v6","audio_format":"ogg","endpoint_sensitivity":0.5,"endpoint_latency_adjustment_level":2,"enable_agent_text_input":true}"#
        );
    }

    #[test]
    fn a_gateways_queued_frame_is_a_queued_event_not_tokens() {
        let frame = soniox_wire::extension::queued_frame(2);
        let event = receive(Some(Ok(Message::text(frame)))).unwrap();
        assert!(matches!(event, Some(EngineEvent::Queued(2))), "{event:?}");
        let plain = receive(Some(Ok(Message::text(r#"{"tokens":[]}"#)))).unwrap();
        assert!(matches!(plain, Some(EngineEvent::Update(_))), "{plain:?}");
    }

    #[test]
    fn error_frames_become_service_errors() {
        let frame = r#"{"error_code":401,"error_type":"unauthenticated","error_message":"Invalid API key.","request_id":"x"}"#;
        let err = receive(Some(Ok(Message::text(frame)))).unwrap_err();
        assert!(
            matches!(&err, Error::Service { code: 401, message, .. } if message == "Invalid API key."),
            "{err:?}"
        );
    }
}
