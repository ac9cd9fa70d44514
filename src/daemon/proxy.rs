//! The daemon's Soniox-compatible WebSocket endpoint (`--ws-listen`).
//!
//! This module owns everything a TCP client of the daemon sees: the HTTP
//! request head (bounded in size and time), the routing between the browser
//! page (`GET /`, [`PAGE`]) and WebSocket upgrades (`/` and
//! `/transcribe-websocket`), the WebSocket handshake, the client's
//! authentication against the daemon's local token, the translation of a
//! Soniox start request into a [`SessionConfig`], and the relay between the
//! Soniox real-time protocol and the session core.
//!
//! A client speaks the Soniox protocol (`soniox-protocol.md` §3–§8) to the
//! daemon as it would to Soniox; the daemon runs the same session core as
//! every other front end ([`session::run`], with reconnect and replay), under
//! the same admission (an upstream slot, else the queue, else 429) and in the
//! same registry (front `"ws"`), upstream with its own key. The client's key
//! is only ever compared with the local token: it is never forwarded,
//! logged, or stored.
//!
//! Improvements over the "proxy stream" guide's example: frames that arrive
//! while the upstream session connects go through one ordered channel into
//! the session core's replay buffer, so they are never lost or reordered;
//! errors are relayed as Soniox error frames; a client that goes away ends
//! its upstream session at once.
//!
//! WebSocket clients have no uid: they are registered as one remote
//! pseudo-peer ([`REMOTE_PEER`], uid and gid `u32::MAX`) with no per-uid
//! limit, since all of them share that uid and one busy client would
//! otherwise lock out the rest; the upstream limit and the queue still apply,
//! and the local token is their access rule.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};
use tracing::{Instrument, debug, info, info_span, warn};

use soniox_wire::{ApiError, Bounds, StartRequest, Translation};

use super::Shared;
use super::launch::{self, Client as LaunchClient, Refusal, Running};
use super::registry::{Peer, Progress, State};
use crate::cli::{ContextArg, SessionArgs};
use crate::config::resolve::{self, Origin};
use crate::error::Error;
use crate::event::{Event, Token};
use crate::session::{SessionInput, Summary};
use crate::timer::LazyTimer;

/// The browser page served at `GET /`.
const PAGE: &str = include_str!("page.html");

/// Longest request head accepted (request line and headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Bytes read from the socket at a time while reading the head.
const HEAD_CHUNK: usize = 2048;
/// Largest WebSocket message (and frame) from a client: a minute of 16 kHz
/// stereo f32 is under 8 MiB; anything larger is not streaming.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// A client must send its start request (or a keepalive) within this long.
/// Soniox's own bound is undocumented; this is the emulator's default.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A streaming client that sends neither audio nor a keepalive for this long
/// gets Soniox's 408 and is closed, so a silent client cannot hold an
/// upstream slot forever (Soniox's own rule, §6.2).
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long to wait for the client's close reply, and for a finished
/// session's task to return.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Events queued from the session towards the client.
const EVENT_QUEUE: usize = 1024;
/// Audio messages queued from the client into the session (about 100 ms
/// each); past it the client's socket is not read, so TCP holds it back.
const AUDIO_QUEUE: usize = 8;
/// Most events folded into one response.
const MAX_BATCH: usize = 256;
/// The subprotocol that announces a key in the next subprotocol.
const KEY_SUBPROTOCOL: &str = "soniox-api-key";
/// Who a WebSocket client is in the registry: remote, no uid (see the
/// module docs).
const REMOTE_PEER: Peer = Peer {
    uid: u32::MAX,
    gid: u32::MAX,
    pid: None,
};

type Ws = WebSocketStream<TcpStream>;

/// Serves one TCP connection on the WebSocket endpoint to the end.
pub(super) async fn handle(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let span = info_span!("ws", %peer);
    serve(stream, shared).instrument(span).await;
}

async fn serve(mut stream: TcpStream, shared: Arc<Shared>) {
    // Responses are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let bound = shared.header_timeout();
    let (head, rest) = match tokio::time::timeout(bound, read_head(&mut stream)).await {
        Ok(Ok(Some(read))) => read,
        Ok(Ok(None)) => return,
        Ok(Err(HeadError::TooLarge)) => {
            debug!("request head too large");
            refuse(&mut stream, 431, "Request Header Fields Too Large", &[]).await;
            return;
        }
        Ok(Err(HeadError::Io(err))) => {
            debug!(error = %err, "reading the request head failed");
            return;
        }
        Err(_) => {
            debug!("no request head in time");
            refuse(&mut stream, 408, "Request Timeout", &[]).await;
            return;
        }
    };
    let Some(head) = Head::parse(&head) else {
        refuse(&mut stream, 400, "Bad Request", &[]).await;
        return;
    };
    let token = shared.ws_token();
    match route(&head, token.is_some()) {
        Route::Page { with_body } => {
            debug!("serving the page");
            let body: &[u8] = if with_body { PAGE.as_bytes() } else { b"" };
            respond_page(&mut stream, body, PAGE.len()).await;
        }
        Route::Plain(status, reason) => {
            debug!(status, path = %head.path, "plain request refused");
            refuse(&mut stream, status, reason, &[]).await;
        }
        Route::Upgrade => {
            let upgrade = match Upgrade::check(&head) {
                Ok(upgrade) => upgrade,
                Err((status, reason, extra)) => {
                    debug!(status, "bad WebSocket upgrade");
                    refuse(&mut stream, status, reason, extra).await;
                    return;
                }
            };
            let mut response = format!(
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
                upgrade.accept
            );
            // Browsers fail the handshake unless the server selects one of
            // the subprotocols they offered.
            if upgrade.key_subprotocol {
                response.push_str("Sec-WebSocket-Protocol: soniox-api-key\r\n");
            }
            response.push_str("\r\n");
            if stream.write_all(response.as_bytes()).await.is_err() {
                return;
            }
            let config = soniox_wire::websocket_config()
                .max_message_size(Some(MAX_MESSAGE_BYTES))
                .max_frame_size(Some(MAX_MESSAGE_BYTES));
            // Whatever the client sent after its head is the start of the
            // WebSocket stream.
            let ws = WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config))
                .await;
            let (sink, stream) = ws.split();
            let mut client = Client {
                sink,
                stream,
                request_id: shared.new_session_id(),
            };
            run_client(&mut client, upgrade.key, token, &shared).await;
        }
    }
}

// ---------------------------------------------------------------------------
// HTTP: the request head, routing, plain responses.

enum HeadError {
    TooLarge,
    Io(std::io::Error),
}

/// Reads up to the end of the request head. Returns the head (without the
/// blank line) and the bytes read past it; `None` if the client closed first.
async fn read_head(stream: &mut TcpStream) -> Result<Option<(Vec<u8>, Vec<u8>)>, HeadError> {
    let mut buf = Vec::with_capacity(HEAD_CHUNK);
    loop {
        let searched_from = buf.len().saturating_sub(3);
        buf.reserve(HEAD_CHUNK);
        let n = stream.read_buf(&mut buf).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        if let Some(at) = find(&buf[searched_from..], b"\r\n\r\n") {
            let end = searched_from + at;
            let rest = buf.split_off(end + 4);
            buf.truncate(end);
            return Ok(Some((buf, rest)));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A parsed request head.
#[derive(Debug)]
struct Head {
    method: String,
    /// The target's path, without the query.
    path: String,
    /// Header names lowercased, in order, repeats kept.
    headers: Vec<(String, String)>,
}

impl Head {
    /// Parses an HTTP/1.1 request head; `None` if it is not one.
    fn parse(bytes: &[u8]) -> Option<Head> {
        let text = std::str::from_utf8(bytes).ok()?;
        let mut lines = text.split("\r\n");
        let mut request_line = lines.next()?.split(' ');
        let method = request_line.next()?.to_owned();
        let target = request_line.next()?;
        let version = request_line.next()?;
        if request_line.next().is_some() || !version.starts_with("HTTP/1.") || method.is_empty() {
            return None;
        }
        let path = target
            .split(['?', '#'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let mut headers = Vec::new();
        for line in lines {
            let (name, value) = line.split_once(':')?;
            if name.is_empty() || name.ends_with(' ') {
                return None;
            }
            headers.push((name.to_ascii_lowercase(), value.trim().to_owned()));
        }
        Some(Head {
            method,
            path,
            headers,
        })
    }

    /// Every value of header `name` (lowercase), joined by commas.
    fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Whether header `name` lists `token` (comma-separated, any case).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
enum Route {
    /// The browser page; no body for HEAD.
    Page { with_body: bool },
    /// A WebSocket upgrade at a Soniox path.
    Upgrade,
    /// A plain refusal.
    Plain(u16, &'static str),
}

fn route(head: &Head, has_token: bool) -> Route {
    let upgrade = head.has_token("upgrade", "websocket");
    if upgrade {
        if head.path != "/" && head.path != "/transcribe-websocket" {
            return Route::Plain(404, "Not Found");
        }
        // A web page elsewhere must not use this daemon's key through the
        // visitor's browser: without a token, only same-origin pages (the
        // daemon's own) may connect. Non-browser clients send no Origin.
        if !has_token
            && let Some(origin) = head.header("origin")
            && !same_origin(&origin, head.header("host").as_deref())
        {
            return Route::Plain(403, "Forbidden");
        }
        return Route::Upgrade;
    }
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/") => Route::Page { with_body: true },
        ("HEAD", "/") => Route::Page { with_body: false },
        (_, "/") => Route::Plain(405, "Method Not Allowed"),
        _ => Route::Plain(404, "Not Found"),
    }
}

/// Whether `origin` (`scheme://host[:port]`) names the host the request
/// was sent to.
fn same_origin(origin: &str, host: Option<&str>) -> bool {
    let Some(host) = host else {
        return false;
    };
    let authority = origin
        .split_once("://")
        .map_or("", |(_, rest)| rest)
        .trim_end_matches('/');
    !authority.is_empty() && authority.eq_ignore_ascii_case(host.trim())
}

/// A checked WebSocket upgrade request.
struct Upgrade {
    /// The `Sec-WebSocket-Accept` answer.
    accept: String,
    /// Whether the client offered `soniox-api-key` (to be echoed).
    key_subprotocol: bool,
    /// The client's key from the header or the subprotocols, if any.
    key: Option<ClientKey>,
}

/// A key a client presented, and where it came from (for the log: the key
/// itself is never logged).
struct ClientKey {
    key: String,
    source: &'static str,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey({}, <redacted>)", self.source)
    }
}

type HttpRefusal = (u16, &'static str, &'static [&'static str]);

impl Upgrade {
    /// Checks an upgrade request (RFC 6455 §4.2.1) and reads its key.
    fn check(head: &Head) -> Result<Upgrade, HttpRefusal> {
        if head.method != "GET" || !head.has_token("connection", "upgrade") {
            return Err((400, "Bad Request", &[]));
        }
        if head.header("sec-websocket-version").as_deref() != Some("13") {
            return Err((426, "Upgrade Required", &["Sec-WebSocket-Version: 13"]));
        }
        let Some(nonce) = head
            .header("sec-websocket-key")
            .filter(|k| !k.contains(','))
        else {
            return Err((400, "Bad Request", &[]));
        };
        let bearer = head.header("authorization").and_then(|value| {
            let (scheme, key) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| key.trim().to_owned())
        });
        let protocols: Vec<String> = head
            .header("sec-websocket-protocol")
            .unwrap_or_default()
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let at = protocols.iter().position(|p| p == KEY_SUBPROTOCOL);
        let sub_key = at.map(|i| protocols.get(i + 1).cloned().unwrap_or_default());
        let key = match (bearer, sub_key) {
            (Some(key), _) => Some(ClientKey {
                key,
                source: "header",
            }),
            (None, Some(key)) => Some(ClientKey {
                key,
                source: "subprotocol",
            }),
            (None, None) => None,
        };
        Ok(Upgrade {
            accept: derive_accept_key(nonce.as_bytes()),
            key_subprotocol: at.is_some(),
            key,
        })
    }
}

/// Writes a plain-text refusal and closes.
async fn refuse(stream: &mut TcpStream, status: u16, reason: &str, extra_headers: &[&str]) {
    let body = format!("{status} {reason}\n");
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        body.len()
    );
    for header in extra_headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    // The client may be gone already; nothing to do about it.
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// The page, with headers that keep it self-contained: it may run inline
/// script, an AudioWorklet from a blob: URL and a WebSocket to its own
/// origin, and load nothing else.
async fn respond_page(stream: &mut TcpStream, body: &[u8], length: usize) {
    let csp = "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {length}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n{csp}\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(body);
    let _ = stream.write_all(&head).await;
    let _ = stream.shutdown().await;
}

// ---------------------------------------------------------------------------
// Soniox errors.

/// The Soniox error frame for an error that ended a session.
fn api_error(err: &Error) -> ApiError {
    match err {
        // The daemon's own key was refused upstream: the client's key is
        // fine, so a 401 would send it chasing the wrong problem.
        Error::Service { code: 401, .. } => ApiError::with_code(
            500,
            "The daemon's upstream API key was rejected by the service.",
        ),
        Error::Service {
            code,
            error_type,
            message,
        } => match error_type {
            Some(error_type) => ApiError::new(*code, error_type.clone(), message.clone()),
            None => ApiError::with_code(*code, message.clone()),
        },
        Error::RetryBudgetSpent { last, .. } if matches!(**last, Error::Service { .. }) => {
            api_error(last)
        }
        Error::Busy(_) => ApiError::with_code(429, err.to_string()),
        Error::Forbidden(_) => ApiError::with_code(403, err.to_string()),
        Error::Usage(_) | Error::BadAudio(_) => ApiError::bad_request(err.to_string()),
        Error::Connect { .. }
        | Error::Disconnected(_)
        | Error::Stalled(_)
        | Error::RetryBudgetSpent { .. } => ApiError::with_code(503, err.to_string()),
        _ => ApiError::with_code(500, err.to_string()),
    }
}

/// The frame for an `error` event, when the error itself is not at hand.
fn api_error_from_event(code: &str, status: Option<u16>, message: &str) -> ApiError {
    let status = status.unwrap_or(match code {
        "busy" => 429,
        "forbidden" => 403,
        "usage" | "bad_audio" => 400,
        "connect" | "disconnected" | "stalled" | "retry_budget" => 503,
        _ => 500,
    });
    ApiError::with_code(status, message)
}

// ---------------------------------------------------------------------------
// The start request.

/// The layouts the daemon takes for raw formats (as for the filter's
/// `--rate` and `--channels`).
const BOUNDS: Bounds = Bounds {
    sample_rate: 1..=resolve::MAX_RATE,
    channels: 1..=resolve::MAX_CHANNELS,
};

/// A start request as the session's options: the same schema as the
/// filter's flags and the socket header, resolved by the same function. A
/// Soniox client wants the non-final tokens unless it opted out, and knows
/// nothing of engines (the daemon's own serve).
fn session_args(start: &StartRequest) -> SessionArgs {
    let defaults = SessionArgs::default();
    let (translate_to, translate) = match &start.translation {
        Some(Translation::OneWay { target_language }) => (Some(target_language.clone()), None),
        Some(Translation::TwoWay {
            language_a,
            language_b,
        }) => (None, Some(format!("{language_a}:{language_b}"))),
        None => (None, None),
    };
    SessionArgs {
        audio_format: start.audio_format.clone(),
        rate: start.sample_rate.unwrap_or(defaults.rate),
        channels: start.num_channels.unwrap_or(defaults.channels),
        partials: start.enable_non_final_tokens.unwrap_or(true),
        model: start.model.clone(),
        language_hints: start.language_hints.clone(),
        language_hints_strict: start.language_hints_strict.unwrap_or(false),
        context: start.context.as_ref().map(|context| match context {
            // A string that names a file is refused as from any client.
            Value::String(text) => match text.strip_prefix('@') {
                Some(path) => ContextArg::File(path.into()),
                None => ContextArg::Text(text.clone()),
            },
            Value::Object(map) => ContextArg::Structured(map.clone()),
            other => ContextArg::Text(other.to_string()),
        }),
        diarize: start.enable_speaker_diarization.unwrap_or(false),
        language_id: start.enable_language_identification.unwrap_or(false),
        endpoint_detection: start.enable_endpoint_detection.unwrap_or(false),
        max_endpoint_delay_ms: start
            .max_endpoint_delay_ms
            .map(|ms| u32::try_from(ms).unwrap_or(u32::MAX)),
        translate_to,
        translate,
        client_reference_id: start.client_reference_id.clone(),
        engine: None,
        fallback: None,
    }
}

/// Compares a presented key with the token in time independent of where
/// they differ.
fn key_matches(presented: &str, token: &str) -> bool {
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
    }
    diff == 0
}

// ---------------------------------------------------------------------------
// The WebSocket session.

/// One connected WebSocket client.
struct Client {
    sink: SplitSink<Ws, Message>,
    stream: SplitStream<Ws>,
    /// This connection's id: the session id, and `request_id` in errors.
    request_id: String,
}

impl Client {
    async fn send_text(&mut self, text: String) -> bool {
        self.sink.send(Message::text(text)).await.is_ok()
    }

    /// Sends an error frame, then closes (Soniox closes right after an error).
    async fn fail(&mut self, err: &ApiError) {
        info!(code = err.code, error_type = %err.error_type, message = %err.message, "error sent to the client");
        if self.send_text(err.to_json(&self.request_id)).await {
            self.close().await;
        }
    }

    /// Closes with 1000 and waits (bounded) for the client's reply.
    async fn close(&mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if self.sink.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        let drain = async { while let Some(Ok(_)) = self.stream.next().await {} };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }
}

/// What the client sent before its start request ended.
enum Start {
    Text(String),
    /// The client left, or the daemon stops (already answered).
    Gone,
}

/// Serves one WebSocket client: start request, auth, admission, relay.
async fn run_client(
    client: &mut Client,
    upgrade_key: Option<ClientKey>,
    token: Option<String>,
    shared: &Arc<Shared>,
) {
    let timing = shared.timing();
    // Even a wrong key in the upgrade request is refused only after the
    // start request, as the real service does: Soniox SDKs send the start
    // request first and only then read the answer, so they see the 401.
    let text = match wait_for_start(client, shared, timing.wall(START_TIMEOUT)).await {
        Start::Text(text) => text,
        Start::Gone => return,
    };
    let start = soniox_wire::fields::parse_object(&text).and_then(|map| {
        // The key check comes before the option checks: an unauthenticated
        // client learns nothing about them.
        let start_key = soniox_wire::fields::api_key(&map)?;
        if let Some(token) = &token {
            let presented = upgrade_key
                .as_ref()
                .map(|k| k.key.as_str())
                .or(start_key.as_deref());
            match presented {
                None => return Err(ApiError::with_code(401, "Missing API key.")),
                Some(key) if !key_matches(key, token) => {
                    return Err(ApiError::with_code(401, "Invalid API key."));
                }
                Some(_) => {}
            }
        }
        StartRequest::read(map, &BOUNDS)
    });
    let start = match start {
        Ok(start) => start,
        Err(err) => {
            client.fail(&err).await;
            return;
        }
    };
    let key_source = match (&upgrade_key, &start.api_key) {
        (Some(key), _) => key.source,
        (None, Some(_)) => "start_request",
        (None, None) => "none",
    };
    debug!(?start, key_source, "start request");
    let launch_client = LaunchClient {
        front: "ws",
        peer: REMOTE_PEER,
        per_uid_limit: 0,
    };
    let prepared = resolve::session(&session_args(&start), Origin::Client)
        .map_err(Refusal::Error)
        .and_then(|request| launch::prepare(shared, launch_client, &request));
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    let admitted = match prepared {
        Ok(prepared) => prepared.admit(&events_tx).await,
        Err(refusal) => Err(refusal),
    };
    let admitted = match admitted {
        Ok(admitted) => admitted,
        Err(Refusal::Error(err)) => {
            client.fail(&api_error(&err)).await;
            return;
        }
        Err(Refusal::Stopping) => {
            client
                .fail(&ApiError::with_code(
                    503,
                    "The server is shutting down. Please restart the request.",
                ))
                .await;
            return;
        }
    };
    let progress = admitted.progress();
    let frame = admitted_frame(&start);
    let (input_tx, input_rx) = mpsc::channel(AUDIO_QUEUE);
    let running = admitted.spawn(client.request_id.clone(), input_rx, events_tx);
    let relay = Relay {
        frame,
        idle: timing.wall(IDLE_TIMEOUT),
        progress,
    };
    relay.run(client, running, input_tx, events_rx).await;
}

/// Bytes in one audio frame of the start request's format (1 for
/// containers).
fn admitted_frame(start: &StartRequest) -> usize {
    let format = crate::audio::AudioFormat::raw(
        &start.audio_format,
        start.sample_rate.unwrap_or(1),
        start.num_channels.unwrap_or(1),
    );
    format.bytes_per_frame().unwrap_or(1)
}

/// Reads up to the start request, answering keepalives (allowed before it,
/// for pre-opened connections) and timeouts.
async fn wait_for_start(client: &mut Client, shared: &Shared, bound: Duration) -> Start {
    let mut deadline = Instant::now() + bound;
    loop {
        let message = tokio::select! {
            () = shared.stop.cancelled() => {
                client.fail(&ApiError::with_code(503, "The server is shutting down. Please restart the request.")).await;
                return Start::Gone;
            }
            () = sleep_until(deadline) => {
                client.fail(&ApiError::with_code(408, "Start request timeout")).await;
                return Start::Gone;
            }
            message = client.stream.next() => message,
        };
        match message {
            Some(Ok(Message::Text(text))) => {
                if is_control(&text, "keepalive") {
                    deadline = Instant::now() + bound;
                    continue;
                }
                return Start::Text(text.to_string());
            }
            Some(Ok(Message::Binary(_))) => {
                client
                    .fail(&ApiError::bad_request(
                        "Start request must be a text message.",
                    ))
                    .await;
                return Start::Gone;
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Close(_)) | Err(_)) | None => {
                debug!("the client left before its start request");
                return Start::Gone;
            }
        }
    }
}

/// Whether `text` is the control message `{"type": kind}`.
fn is_control(text: &str, kind: &str) -> bool {
    serde_json::from_str::<Value>(text)
        .is_ok_and(|v| v.get("type").and_then(Value::as_str) == Some(kind))
}

/// What a text frame after the start request means.
#[derive(Debug, PartialEq)]
enum Control {
    EndOfAudio,
    Keepalive,
    Finalize,
    Invalid(ApiError),
}

fn parse_control(text: &str) -> Control {
    if text.is_empty() {
        return Control::EndOfAudio;
    }
    let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
        return Control::Invalid(ApiError::bad_request("Control request is malformed."));
    };
    match map.get("type") {
        Some(Value::String(kind)) if kind == "keepalive" => Control::Keepalive,
        // `trailing_silence_ms` is a latency hint the session core does not
        // take; finalizing without it is still correct.
        Some(Value::String(kind)) if kind == "finalize" => Control::Finalize,
        Some(Value::String(_)) => {
            Control::Invalid(ApiError::bad_request("Control request invalid type."))
        }
        _ => Control::Invalid(ApiError::bad_request("Control request is malformed.")),
    }
}

/// Moves frames between a client and its session.
struct Relay {
    /// Bytes in one audio frame (1 for containers).
    frame: usize,
    /// Wall time a streaming client may stay silent.
    idle: Duration,
    progress: Arc<Progress>,
}

/// How a batch of events ended, if it did.
#[derive(Debug, PartialEq)]
enum Terminal {
    /// The session ended; `audio_ms` of audio were read.
    End { audio_ms: u64 },
    /// The session failed with this (event) error.
    Error(ApiError),
}

impl Relay {
    async fn run(
        self,
        client: &mut Client,
        task: Running,
        input_tx: mpsc::Sender<SessionInput>,
        mut events: mpsc::Receiver<Event>,
    ) {
        let mut input = Some(input_tx);
        // Declared after `input`, so dropped before it: an aborted session
        // never sees its input close as an end of audio.
        let mut task = task;
        let mut pending: Option<SessionInput> = None;
        let mut carry = BytesMut::new();
        let mut transcript = Transcript::default();
        let mut idle_at = Instant::now() + self.idle;
        // Moves later with every message: one timer, not one per turn.
        let mut idle_timer = LazyTimer::new();
        let mut batch = Vec::with_capacity(16);
        loop {
            let waiting = input.as_ref().filter(|_| pending.is_some()).cloned();
            tokio::select! {
                biased;
                count = events.recv_many(&mut batch, MAX_BATCH) => {
                    let terminal = if count == 0 {
                        // The session ended without an `end` (no audio ever came).
                        Some(Terminal::End { audio_ms: 0 })
                    } else {
                        let (frame, terminal) = transcript.fold(batch.drain(..));
                        if let Some(frame) = frame
                            && !client.send_text(frame.to_string()).await
                        {
                            info!(session = %client.request_id, "the client went away; session abandoned");
                            task.abandon().await;
                            return;
                        }
                        terminal
                    };
                    match terminal {
                        None => {}
                        Some(Terminal::End { audio_ms }) => {
                            match outcome_within_grace(&mut task).await {
                                Some(Ok(_)) => {}
                                Some(Err(err)) => {
                                    client.fail(&api_error(&err)).await;
                                    return;
                                }
                                // A panic, or a task that hangs after its end.
                                None => {
                                    warn!(session = %client.request_id, "the session did not end in time");
                                    client.fail(&ApiError::with_code(500, "Internal error.")).await;
                                    return;
                                }
                            }
                            let frame = transcript.finished(audio_ms);
                            if client.send_text(frame.to_string()).await {
                                client.close().await;
                            }
                            return;
                        }
                        Some(Terminal::Error(from_event)) => {
                            // The session returns the error itself right after:
                            // it keeps the service's status, type and message.
                            drop(events);
                            let err = match outcome_within_grace(&mut task).await {
                                Some(Err(err)) => api_error(&err),
                                _ => from_event,
                            };
                            client.fail(&err).await;
                            return;
                        }
                    }
                }
                permit = reserve(waiting), if pending.is_some() => match (permit, pending.take()) {
                    (Some(permit), Some(message)) => {
                        permit.send(message);
                        // The client was held back, not silent: its idle
                        // time starts now.
                        idle_at = Instant::now() + self.idle;
                    }
                    // The session no longer reads: its events say why.
                    _ => input = None,
                },
                message = client.stream.next(), if pending.is_none() => {
                    let text = match message {
                        Some(Ok(Message::Binary(data))) if data.is_empty() => {
                            self.end_audio(&mut input, &carry);
                            continue;
                        }
                        Some(Ok(Message::Binary(data))) => {
                            if input.is_none() {
                                debug!(bytes = data.len(), "audio after the end of audio ignored");
                                continue;
                            }
                            idle_at = Instant::now() + self.idle;
                            pending = self.align(&mut carry, data).map(SessionInput::Audio);
                            continue;
                        }
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                        Some(Ok(Message::Close(_)) | Err(_)) | None => {
                            // Soniox treats a client's close as a cancel: the
                            // upstream session is abandoned (the task guard).
                            info!(session = %client.request_id, "the client went away; session abandoned");
                            task.abandon().await;
                            return;
                        }
                    };
                    match parse_control(&text) {
                        Control::EndOfAudio => self.end_audio(&mut input, &carry),
                        Control::Keepalive => idle_at = Instant::now() + self.idle,
                        Control::Finalize if input.is_some() => {
                            idle_at = Instant::now() + self.idle;
                            pending = Some(SessionInput::Finalize);
                        }
                        Control::Finalize => debug!("finalize after the end of audio ignored"),
                        Control::Invalid(err) => {
                            task.abandon().await;
                            client.fail(&err).await;
                            return;
                        }
                    }
                }
                () = idle_timer.until(Some(idle_at)), if input.is_some() && pending.is_none() => {
                    task.abandon().await;
                    client.fail(&ApiError::with_code(408, "Request timeout.")).await;
                    return;
                }
            }
        }
    }

    /// The whole frames of `data` (with what `carry` held), keeping a
    /// partial frame back for the next message.
    ///
    /// Chunks are copied out at their exact size: a frame's payload shares
    /// tungstenite's read buffer, and a chunk kept in the replay buffer
    /// would pin that whole block with it (122 KiB of RSS per session at
    /// N = 1000 in benches/relay, against 81 KiB on the Unix socket).
    fn align(&self, carry: &mut BytesMut, data: Bytes) -> Option<Bytes> {
        self.progress.add_audio(data.len() as u64);
        if carry.is_empty() && data.len().is_multiple_of(self.frame) {
            return Some(Bytes::copy_from_slice(&data));
        }
        carry.extend_from_slice(&data);
        let whole = carry.len() / self.frame * self.frame;
        (whole > 0).then(|| {
            let chunk = Bytes::copy_from_slice(&carry[..whole]);
            carry.advance(whole);
            chunk
        })
    }

    /// The client ended its audio: the session drains and finishes.
    fn end_audio(&self, input: &mut Option<mpsc::Sender<SessionInput>>, carry: &BytesMut) {
        if input.take().is_some() {
            if !carry.is_empty() {
                debug!(
                    bytes = carry.len(),
                    "dropped a partial frame at the end of the audio"
                );
            }
            self.progress.set_state(State::Draining);
        }
    }
}

/// Room for one input message; pending forever without a sender, `None`
/// if the session stopped reading.
async fn reserve(
    input: Option<mpsc::Sender<SessionInput>>,
) -> Option<mpsc::OwnedPermit<SessionInput>> {
    match input {
        Some(input) => input.reserve_owned().await.ok(),
        None => std::future::pending().await,
    }
}

/// The session's outcome, if its task ends within [`CLOSE_GRACE`].
async fn outcome_within_grace(task: &mut Running) -> Option<crate::error::Result<Summary>> {
    tokio::time::timeout(CLOSE_GRACE, task.outcome())
        .await
        .ok()
        .flatten()
}

/// The client's view of the transcript: what its responses have said.
#[derive(Debug, Default)]
struct Transcript {
    /// `final_audio_proc_ms` last sent.
    final_ms: u64,
    /// `total_audio_proc_ms` last sent.
    total_ms: u64,
    /// The non-final tokens last sent.
    non_final: Vec<Token>,
}

impl Transcript {
    /// Folds a batch of events into one response: the newly final tokens
    /// and `<end>`/`<fin>` markers in the order they came, then the complete
    /// current non-final set. Returns `None` for the frame when the batch
    /// changed nothing a Soniox client sees; stops at `end` or `error`.
    fn fold(
        &mut self,
        batch: impl IntoIterator<Item = Event>,
    ) -> (Option<Value>, Option<Terminal>) {
        let mut tokens = Vec::new();
        let mut non_final_changed = false;
        let mut terminal = None;
        for event in batch {
            match event {
                Event::Token(mut token) => {
                    token.upstream = None;
                    if let Some(end) = token.end_ms {
                        self.final_ms = self.final_ms.max(end);
                    }
                    tokens.push(json!(token));
                }
                Event::Partial {
                    tokens: partial, ..
                } => {
                    self.non_final = partial;
                    non_final_changed = true;
                }
                Event::Endpoint { end_ms } => {
                    self.final_ms = self.final_ms.max(end_ms.unwrap_or(0));
                    tokens.push(json!({"text": "<end>", "is_final": true}));
                }
                Event::Finalized { end_ms } => {
                    self.final_ms = self.final_ms.max(end_ms.unwrap_or(0));
                    tokens.push(json!({"text": "<fin>", "is_final": true}));
                }
                Event::End { audio_ms, .. } => {
                    terminal = Some(Terminal::End { audio_ms });
                    break;
                }
                Event::Error {
                    code,
                    status,
                    message,
                    ..
                } => {
                    terminal = Some(Terminal::Error(api_error_from_event(
                        &code, status, &message,
                    )));
                    break;
                }
                // No Soniox equivalent: the client sees an uninterrupted stream.
                other @ (Event::Start { .. }
                | Event::Queued { .. }
                | Event::Reconnect { .. }
                | Event::Overrun { .. }
                | Event::Fallback { .. }) => debug!(event = ?other, "not relayed"),
            }
        }
        if tokens.is_empty() && !non_final_changed {
            return (None, terminal);
        }
        if !non_final_changed {
            // Words the session made final in this batch may still be in the
            // set last sent, if its emptied `partial` is in the next batch.
            let final_ms = self.final_ms;
            self.non_final
                .retain(|t| t.start_ms.is_none_or(|start| start >= final_ms));
        }
        for token in &mut self.non_final {
            token.upstream = None;
            if let Some(end) = token.end_ms {
                self.total_ms = self.total_ms.max(end);
            }
        }
        self.total_ms = self.total_ms.max(self.final_ms);
        tokens.extend(self.non_final.iter().map(|t| json!(t)));
        let frame = json!({
            "tokens": tokens,
            "final_audio_proc_ms": self.final_ms,
            "total_audio_proc_ms": self.total_ms,
        });
        (Some(frame), terminal)
    }

    /// The last response: everything read is processed and final.
    fn finished(&mut self, audio_ms: u64) -> Value {
        let all = audio_ms.max(self.total_ms).max(self.final_ms);
        self.final_ms = all;
        self.total_ms = all;
        json!({
            "tokens": [],
            "final_audio_proc_ms": all,
            "total_audio_proc_ms": all,
            "finished": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(text: &str) -> Head {
        Head::parse(text.as_bytes()).expect("a request head")
    }

    fn upgrade_head(path: &str, extra: &str) -> Head {
        head(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:3001\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=={extra}"
        ))
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(&head("GET / HTTP/1.1\r\nHost: x"), false),
            Route::Page { with_body: true }
        );
        assert_eq!(
            route(&head("GET /?token=abc HTTP/1.1"), false),
            Route::Page { with_body: true }
        );
        assert_eq!(
            route(&head("HEAD / HTTP/1.1"), false),
            Route::Page { with_body: false }
        );
        assert_eq!(
            route(&head("GET /nope HTTP/1.1"), false),
            Route::Plain(404, "Not Found")
        );
        assert_eq!(
            route(&head("POST / HTTP/1.1"), false),
            Route::Plain(405, "Method Not Allowed")
        );
        assert_eq!(route(&upgrade_head("/", ""), false), Route::Upgrade);
        assert_eq!(
            route(&upgrade_head("/transcribe-websocket?x=1", ""), false),
            Route::Upgrade
        );
        assert_eq!(
            route(&upgrade_head("/other", ""), false),
            Route::Plain(404, "Not Found")
        );
        assert!(Head::parse(b"GARBAGE").is_none());
        assert!(Head::parse(b"GET / HTTP/1.1\r\nno colon").is_none());
    }

    #[test]
    fn cross_origin_browsers_need_a_token() {
        let same = upgrade_head("/", "\r\nOrigin: http://localhost:3001");
        let other = upgrade_head("/", "\r\nOrigin: https://evil.example");
        assert_eq!(route(&same, false), Route::Upgrade);
        assert_eq!(route(&other, false), Route::Plain(403, "Forbidden"));
        assert_eq!(
            route(&other, true),
            Route::Upgrade,
            "the token is the access rule then"
        );
    }

    #[test]
    fn upgrade_keys_and_subprotocol_echo() {
        // RFC 6455's example nonce and answer.
        let plain = Upgrade::check(&upgrade_head("/", "")).ok().unwrap();
        assert_eq!(plain.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(!plain.key_subprotocol && plain.key.is_none());
        let sub = Upgrade::check(&upgrade_head(
            "/",
            "\r\nSec-WebSocket-Protocol: soniox-api-key, abc",
        ))
        .ok()
        .unwrap();
        assert!(sub.key_subprotocol);
        assert_eq!(
            sub.key.as_ref().map(|k| (k.key.as_str(), k.source)),
            Some(("abc", "subprotocol"))
        );
        let both = Upgrade::check(&upgrade_head(
            "/",
            "\r\nAuthorization: Bearer hdr\r\nSec-WebSocket-Protocol: soniox-api-key\r\nSec-WebSocket-Protocol: sub",
        ))
        .ok()
        .unwrap();
        assert_eq!(
            both.key.as_ref().map(|k| (k.key.as_str(), k.source)),
            Some(("hdr", "header"))
        );
        assert!(format!("{:?}", both.key).contains("<redacted>"));
        let old = head(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: x",
        );
        assert_eq!(Upgrade::check(&old).err().map(|e| e.0), Some(426));
    }

    /// A start request as the daemon reads it: shapes, then the session
    /// options resolved as any client's.
    fn start(value: Value) -> Result<(StartRequest, crate::config::SessionRequest), ApiError> {
        let Value::Object(map) = value else {
            panic!("an object")
        };
        let start = StartRequest::read(map, &BOUNDS)?;
        let request =
            resolve::session(&session_args(&start), Origin::Client).map_err(|e| api_error(&e))?;
        Ok((start, request))
    }

    fn message(value: Value) -> String {
        start(value).expect_err("an error").message
    }

    #[test]
    fn start_requests_become_session_settings() {
        let (parsed, request) = start(json!({
            "api_key": "client-key",
            "model": "stt-rt-v5",
            "audio_format": "s16le",
            "sample_rate": 48000,
            "num_channels": 2,
            "language_hints": ["en", "de"],
            "language_hints_strict": true,
            "context": {"terms": ["Celebrex"]},
            "enable_speaker_diarization": true,
            "enable_language_identification": null,
            "enable_endpoint_detection": true,
            "max_endpoint_delay_ms": 800,
            "translation": {"type": "two_way", "language_a": "en", "language_b": "es"},
            "client_reference_id": "demo-1",
        }))
        .unwrap();
        assert_eq!(
            request.audio,
            crate::audio::AudioFormat::raw("pcm_s16le", 48_000, 2)
        );
        assert!(request.partials);
        assert_eq!(request.engines, crate::config::EngineRequest::default());
        let r = &request.recognition;
        assert_eq!(r.language_hints, ["en", "de"]);
        assert!(r.language_hints_strict && r.diarize && !r.language_id && r.endpoint_detection);
        assert_eq!(r.max_endpoint_delay_ms, Some(800));
        assert_eq!(r.client_reference_id.as_deref(), Some("demo-1"));
        // What goes upstream is what came in, minus the key.
        let again = crate::engine::soniox::start_request(r, &request.audio);
        assert_eq!(again.audio_format, "pcm_s16le");
        assert_eq!(again.translation, parsed.translation);
        assert_eq!(again.context, Some(json!({"terms": ["Celebrex"]})));
        assert_eq!(again.api_key, None);
        assert!(!format!("{parsed:?}").contains("client-key"));

        let (_, mp3) =
            start(json!({"model": "stt-rt-v5", "audio_format": "mp3", "sample_rate": null}))
                .unwrap();
        assert_eq!(mp3.audio, crate::audio::AudioFormat::container("mp3"));
        let (_, legacy) =
            start(json!({"model": "m", "audio_format": "auto", "enable_non_final_tokens": false}))
                .unwrap();
        assert!(!legacy.partials);
    }

    #[test]
    fn bad_start_requests_get_sonioxs_messages() {
        let base = |extra: Value| {
            let mut v = json!({"model": "stt-rt-v5", "audio_format": "pcm_s16le", "sample_rate": 16000, "num_channels": 1});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        assert_eq!(
            message(json!({"model": "stt-rt-v5"})),
            soniox_wire::error::MSG_MISSING_FORMAT
        );
        assert_eq!(
            message(base(json!({"audio_format": "avi"}))),
            "Invalid audio data format: avi"
        );
        assert_eq!(
            message(base(json!({"sample_rate": null}))),
            "Audio data sample rate must be specified for PCM formats"
        );
        assert_eq!(
            message(base(json!({"num_channels": 0}))),
            "Audio data channels must be specified for PCM formats"
        );
        assert_eq!(
            message(base(json!({"model": null}))),
            "Invalid model specified."
        );
        assert_eq!(
            message(base(json!({"language_hints": "en"}))),
            "Start request is malformed."
        );
        assert_eq!(
            message(base(json!({"enable_endpoint_detection": "yes"}))),
            "Start request is malformed."
        );
        assert_eq!(
            message(base(json!({"api_key": 5}))),
            "Start request is malformed."
        );
        assert_eq!(
            message(base(json!({"translation": {"type": "one_way"}}))),
            "Invalid translation target language."
        );
        assert_eq!(
            message(base(json!({"context": 3}))),
            "Start request is malformed."
        );
        // A context that names a file is refused, whether or not it exists.
        let exists = message(base(json!({"context": "@/etc/hostname"})));
        let missing = message(base(json!({"context": "@/nonexistent/file"})));
        assert_eq!(exists, missing);
        assert!(exists.contains("@FILE"), "{exists}");
    }

    #[test]
    fn control_messages() {
        assert_eq!(parse_control(""), Control::EndOfAudio);
        assert_eq!(parse_control(r#"{"type":"keepalive"}"#), Control::Keepalive);
        assert_eq!(
            parse_control(r#"{"type":"finalize","trailing_silence_ms":300}"#),
            Control::Finalize
        );
        assert_eq!(
            parse_control(r#"{"type":"stop"}"#),
            Control::Invalid(ApiError::bad_request("Control request invalid type."))
        );
        assert_eq!(
            parse_control("nope"),
            Control::Invalid(ApiError::bad_request("Control request is malformed."))
        );
    }

    #[test]
    fn keys_compare_whole() {
        assert!(key_matches("secret", "secret"));
        assert!(!key_matches("secre", "secret"));
        assert!(!key_matches("secret!", "secret"));
        assert!(!key_matches("", "secret"));
    }

    fn token(text: &str, start: u64, is_final: bool) -> Token {
        Token {
            text: text.into(),
            start_ms: Some(start),
            end_ms: Some(start + 100),
            confidence: Some(0.9),
            is_final,
            upstream: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn batches_fold_into_soniox_responses() {
        let mut t = Transcript::default();
        let (frame, end) = t.fold([Event::Partial {
            text: " a b".into(),
            tokens: vec![token(" a", 0, false), token(" b", 200, false)],
        }]);
        let frame = frame.unwrap();
        assert_eq!(end, None);
        assert_eq!(frame["tokens"].as_array().unwrap().len(), 2);
        assert_eq!(
            (
                frame["final_audio_proc_ms"].as_u64(),
                frame["total_audio_proc_ms"].as_u64()
            ),
            (Some(0), Some(300))
        );
        assert!(
            frame["tokens"][0].get("upstream").is_none(),
            "sttpipe's own field is dropped"
        );

        // " a" became final and `<fin>` came, but the emptied partial is in the
        // next batch: the stale " a" must not show as non-final too.
        let (frame, _) = t.fold([
            Event::Token(token(" a", 0, true)),
            Event::Finalized { end_ms: Some(100) },
        ]);
        let frame = frame.unwrap();
        let texts: Vec<&str> = frame["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, [" a", "<fin>", " b"]);
        assert_eq!(
            frame["tokens"][1],
            json!({"text": "<fin>", "is_final": true})
        );
        assert_eq!(
            (
                frame["final_audio_proc_ms"].as_u64(),
                frame["total_audio_proc_ms"].as_u64()
            ),
            (Some(100), Some(300))
        );

        let (frame, _) = t.fold([Event::Start {
            session_id: "s".into(),
            model: "m".into(),
            audio_format: "pcm_s16le".into(),
            sample_rate: Some(16_000),
            num_channels: Some(1),
        }]);
        assert!(frame.is_none(), "no Soniox equivalent, nothing sent");

        let (frame, end) = t.fold([
            Event::Token(token(" b", 200, true)),
            Event::Partial {
                text: String::new(),
                tokens: vec![],
            },
            Event::End {
                audio_ms: 1000,
                tokens: 2,
                duration_ms: 5,
                reason: "eof".into(),
            },
        ]);
        let frame = frame.unwrap();
        assert_eq!(frame["tokens"].as_array().unwrap().len(), 1);
        assert_eq!(end, Some(Terminal::End { audio_ms: 1000 }));
        let finished = t.finished(1000);
        assert_eq!(
            finished,
            json!({"tokens": [], "final_audio_proc_ms": 1000, "total_audio_proc_ms": 1000, "finished": true})
        );
    }

    #[test]
    fn errors_map_to_soniox_frames() {
        let service = Error::Service {
            code: 503,
            error_type: Some("service_unavailable".into()),
            message: "Cannot continue request (code 4).".into(),
        };
        let frame: Value = serde_json::from_str(&api_error(&service).to_json("r1")).unwrap();
        assert_eq!(frame["error_code"], 503);
        assert_eq!(frame["error_message"], "Cannot continue request (code 4).");
        assert_eq!(
            frame["more_info"],
            "https://soniox.com/docs/api-reference/errors#service-unavailable"
        );
        assert_eq!(frame["request_id"], "r1");
        let busy = api_error(&Error::Busy("full".into()));
        assert_eq!(
            (busy.code, busy.error_type.as_ref()),
            (429, "limit_exceeded")
        );
        let forbidden = api_error(&Error::Forbidden("no".into()));
        assert_eq!(
            (forbidden.code, forbidden.error_type.as_ref()),
            (403, "permission_denied")
        );
        let usage = api_error(&Error::Usage("bad".into()));
        assert_eq!(
            (usage.code, usage.error_type.as_ref()),
            (400, "invalid_request")
        );
        let upstream_key = Error::Service {
            code: 401,
            error_type: None,
            message: "Invalid API key.".into(),
        };
        assert_eq!(
            api_error(&upstream_key).code,
            500,
            "the daemon's key, not the client's"
        );
        assert_eq!(api_error_from_event("busy", None, "x").code, 429);
        assert_eq!(api_error_from_event("service", Some(402), "x").code, 402);
    }
}
