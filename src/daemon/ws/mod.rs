//! The daemon's Soniox-compatible WebSocket endpoint (`--ws-listen`).
//!
//! Everything a TCP client of the daemon sees goes through here, one job a
//! file: [`http`] reads the request head (bounded in size and time), routes
//! it between the browser page (`GET /`) and WebSocket upgrades (`/` and
//! `/transcribe-websocket`) and checks the upgrade; [`client`] is one
//! connected client and how its connection ends; [`start`] turns a Soniox
//! start request into the session's options and errors into Soniox error
//! frames; [`relay`] moves frames between the client and its session, from
//! the start request on, through the bounded [`inbox`] of what the client
//! sent that its session has not taken yet; [`transcript`] folds the
//! session's events into Soniox responses; [`tls`] is the endpoint's TLS
//! and the stream a connection is, with it or without; [`tokens`] is the
//! token file's named clients. This file owns one connection's course:
//! accept, the TLS handshake, head, route, upgrade, then the start request,
//! the key check (which names the client) and the launch.
//!
//! A client speaks the Soniox real-time protocol (Soniox's WebSocket API
//! reference) to the daemon as it would to Soniox; the daemon runs the same
//! session core as every other front end ([`crate::session::run`], with
//! reconnect and replay), under the same admission (an upstream slot, else
//! the queue, else 429) and in the same registry (front `"ws"`), upstream
//! with its own key.
//!
//! It is a pass-through: every start-request field but the ones the daemon
//! owns (`api_key`, `enable_non_final_tokens`; see [`start::session_args`])
//! goes upstream as sent, and every control message follows the audio
//! before it ([`relay`], then the session core), for the service to judge.
//!
//! Security model: the client's key is only ever compared with the daemon's
//! local tokens (when there are any): it is never forwarded, logged, or
//! stored; the name of the token it matched goes into the logs, `status`
//! and the upstream `client_reference_id`.
//! Without a token, an upgrade must name this machine (a loopback host, or
//! the address the client connected to) in its `Host` and `Origin` (see
//! [`http::route`]), so a web page elsewhere cannot use the daemon's key
//! through a visitor's browser, even by DNS rebinding; and [`warn_if_open`]
//! says so when the endpoint listens beyond loopback without a token.
//!
//! Improvements over Soniox's "proxy stream" guide's example: frames that
//! arrive while the upstream session connects go through one ordered channel
//! into the session core's replay buffer, so they are never lost or
//! reordered; a client waiting in the queue is read meanwhile (its pings
//! answered, its audio held for its session); errors are relayed as Soniox
//! error frames; a client that goes away ends its upstream session, or
//! gives up its place in the queue, at once, even while audio it sent
//! before is still unread.
//!
//! WebSocket clients have no uid: they are registered as one remote
//! pseudo-peer ([`REMOTE_PEER`], uid and gid `u32::MAX`) with no per-uid
//! limit, since all of them share that uid and one busy client would
//! otherwise lock out the rest; the upstream limit and the queue still apply,
//! and the local token is their access rule.

mod client;
mod http;
mod inbox;
mod relay;
mod start;
mod tls;
mod tokens;
mod transcript;

pub(super) use tls::server_config as tls_config;
pub(super) use tokens::Tokens;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::Role;
use tracing::{Instrument, Span, debug, field, info_span, warn};

use soniox_wire::{ApiError, StartRequest};

use super::Shared;
use super::launch::{self, Client as LaunchClient, Refusal};
use super::registry::{ClientName, Peer};
use crate::config::resolve::{self, Origin};
use client::Client;
use http::{ClientKey, HeadError, Route, Upgrade};
use relay::Relay;
use start::{BOUNDS, reference_id, refusal_error, session_args};
use tls::Conn;

/// Largest WebSocket message (and frame) from a client: a minute of 16 kHz
/// stereo f32 is under 8 MiB; anything larger is not streaming, and gets
/// 1009.
const MAX_MESSAGE_BYTES: usize = 16 << 20;
/// A client must send its start request (or a keepalive) within this long.
/// Soniox's own bound is undocumented; this is the emulator's default.
const START_TIMEOUT: Duration = Duration::from_secs(10);
/// A streaming client that sends neither audio nor a keepalive for this long
/// gets Soniox's 408 and is closed, so a silent client cannot hold an
/// upstream slot forever (Soniox's own rule).
const IDLE_TIMEOUT: Duration = Duration::from_secs(20);
/// How often a client waiting for an upstream slot is told its place again
/// (the `queued` extension frame): well within any stall watchdog, since a
/// Soniox session sends something at least every few seconds.
const QUEUED_HEARTBEAT: Duration = Duration::from_secs(5);
/// How long to wait for the client's close reply, and for a finished
/// session's task to return.
const CLOSE_GRACE: Duration = Duration::from_secs(2);
/// Events queued from the session towards the client.
const EVENT_QUEUE: usize = 1024;
/// Who a WebSocket client is in the registry: remote, no uid (see the
/// module docs).
const REMOTE_PEER: Peer = Peer {
    uid: u32::MAX,
    gid: u32::MAX,
    pid: None,
};

/// Warns (in the log and on stderr) when the endpoint listens on `addr`
/// beyond loopback without a token: anyone who can reach it there may
/// stream on the daemon's key. Called at start and after each reload.
pub(super) fn warn_if_open(addr: Option<SocketAddr>, has_token: bool) {
    let Some(addr) = addr else {
        return;
    };
    if has_token || addr.ip().to_canonical().is_loopback() {
        return;
    }
    let message = format!(
        "the WebSocket endpoint on {addr} is not on a loopback address and has no token (--ws-token-file): anyone who can reach it may stream on the daemon's key"
    );
    warn!("{message}");
    crate::filter::warn_user(&message);
}

/// Serves one TCP connection on the WebSocket endpoint to the end.
pub(super) async fn handle(stream: TcpStream, peer: SocketAddr, shared: Arc<Shared>) {
    let span = info_span!("ws", %peer, client = field::Empty);
    serve(stream, shared).instrument(span).await;
}

async fn serve(stream: TcpStream, shared: Arc<Shared>) {
    // Responses are small and latency matters more than packet count.
    let _ = stream.set_nodelay(true);
    let bound = shared.header_timeout();
    let local = stream.local_addr().ok();
    let mut stream = match shared.ws_tls() {
        None => Conn::Plain(stream),
        // The handshake shares the head's bound: a client that opens a
        // connection and says nothing holds it no longer either way.
        Some(config) => match tokio::time::timeout(
            bound,
            tokio_rustls::TlsAcceptor::from(config).accept(stream),
        )
        .await
        {
            Ok(Ok(tls)) => Conn::Tls(Box::new(tls)),
            Ok(Err(err)) => {
                debug!(error = %err, "TLS handshake failed");
                return;
            }
            Err(_) => {
                debug!("no TLS handshake in time");
                return;
            }
        },
    };
    let (head, rest) = match tokio::time::timeout(bound, http::read_head(&mut stream)).await {
        Ok(Ok(Some(read))) => read,
        Ok(Ok(None)) => return,
        Ok(Err(HeadError::TooLarge)) => {
            debug!("request head too large");
            http::refuse(&mut stream, 431, "Request Header Fields Too Large", &[]).await;
            return;
        }
        Ok(Err(HeadError::Malformed)) => {
            debug!("malformed request head");
            http::refuse(&mut stream, 400, "Bad Request", &[]).await;
            return;
        }
        Ok(Err(HeadError::Io(err))) => {
            debug!(error = %err, "reading the request head failed");
            return;
        }
        Err(_) => {
            debug!("no request head in time");
            http::refuse(&mut stream, 408, "Request Timeout", &[]).await;
            return;
        }
    };
    let tokens = shared.ws_tokens();
    match http::route(&head, tokens.is_some(), local) {
        Route::Page { with_body } => {
            debug!("serving the page");
            http::respond_page(&mut stream, with_body).await;
        }
        Route::Health { with_body } => {
            let draining = shared.stop.is_cancelled();
            debug!(draining, "health check");
            http::respond_health(&mut stream, with_body, draining, shared.registry.len()).await;
        }
        Route::Plain(status, reason) => {
            debug!(status, path = %head.path, "plain request refused");
            http::refuse(&mut stream, status, reason, &[]).await;
        }
        Route::Upgrade => {
            let upgrade = match Upgrade::check(&head) {
                Ok(upgrade) => upgrade,
                Err((status, reason, extra)) => {
                    debug!(status, "bad WebSocket upgrade");
                    http::refuse(&mut stream, status, reason, extra).await;
                    return;
                }
            };
            if stream
                .write_all(upgrade.response().as_bytes())
                .await
                .is_err()
            {
                return;
            }
            let config = soniox_wire::websocket_config()
                .max_message_size(Some(MAX_MESSAGE_BYTES))
                .max_frame_size(Some(MAX_MESSAGE_BYTES));
            // Whatever the client sent after its head is the start of the
            // WebSocket stream.
            let ws = WebSocketStream::from_partially_read(stream, rest, Role::Server, Some(config))
                .await;
            let mut client = Client::new(ws, shared.new_session_id());
            run_client(&mut client, upgrade.key, tokens, &shared).await;
        }
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
    tokens: Option<Arc<Tokens>>,
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
    let mut named = None;
    let start = soniox_wire::fields::parse_object(&text).and_then(|map| {
        // The key check comes before the option checks: an unauthenticated
        // client learns nothing about them.
        let start_key = soniox_wire::fields::api_key(&map)?;
        if let Some(tokens) = &tokens {
            let presented = upgrade_key
                .as_ref()
                .map(|k| k.key.as_str())
                .or(start_key.as_deref());
            let Some(presented) = presented else {
                return Err(ApiError::with_code(401, "Missing API key."));
            };
            let Some(found) = tokens.find(presented) else {
                return Err(ApiError::with_code(401, "Invalid API key."));
            };
            named = Some(ClientName {
                name: found.name.clone(),
                max_sessions: found.max_sessions,
            });
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
    if let Some(named) = &named {
        Span::current().record("client", &*named.name);
    }
    let key_source = match (&upgrade_key, &start.api_key) {
        (Some(key), _) => key.source,
        (None, Some(_)) => "start_request",
        (None, None) => "none",
    };
    debug!(?start, key_source, "start request");
    let mut args = session_args(&start);
    if let Some(named) = &named {
        args.client_reference_id = Some(reference_id(
            &named.name,
            start.client_reference_id.as_deref(),
            &client.request_id,
        ));
    }
    let launch_client = LaunchClient {
        session_id: client.request_id.clone(),
        front: "ws",
        peer: REMOTE_PEER,
        per_uid_limit: 0,
        name: named,
    };
    let prepared = resolve::session(&args, Origin::Client)
        .map_err(Refusal::Error)
        .and_then(|request| launch::prepare(shared, launch_client, &request));
    let prepared = match prepared {
        Ok(prepared) => prepared,
        Err(refusal) => {
            client.fail(&refusal_error(&refusal)).await;
            return;
        }
    };
    let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
    // Owns the events' sender until the session takes it.
    let admission = async move {
        let admitted = prepared.admit(&events_tx).await?;
        Ok((admitted, events_tx))
    };
    let (frame, bytes_per_second) = raw_layout(&start);
    let relay = Relay::new(
        frame,
        bytes_per_second,
        timing.wall(IDLE_TIMEOUT),
        timing.wall(QUEUED_HEARTBEAT),
    );
    relay.run(client, admission, events_rx).await;
}

/// Bytes in one audio frame of the start request's format (1 for
/// containers), and in one second (`None` for containers).
fn raw_layout(start: &StartRequest) -> (usize, Option<u64>) {
    let format = crate::audio::AudioFormat::raw(
        &start.audio_format,
        start.sample_rate.unwrap_or(1),
        start.num_channels.unwrap_or(1),
    );
    (
        format.bytes_per_frame().unwrap_or(1),
        format.bytes_per_second(),
    )
}

/// Reads up to the start request, answering keepalives (allowed before it,
/// for pre-opened connections) and timeouts.
async fn wait_for_start(client: &mut Client, shared: &Shared, bound: Duration) -> Start {
    let mut deadline = Instant::now() + bound;
    loop {
        let message = tokio::select! {
            () = shared.stop.cancelled() => {
                client.fail(&refusal_error(&Refusal::Stopping)).await;
                return Start::Gone;
            }
            () = sleep_until(deadline) => {
                client.fail(&ApiError::with_code(408, "Start request timeout")).await;
                return Start::Gone;
            }
            message = client.next() => message,
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
            Some(Err(err)) if client::is_too_big(&err) => {
                client.too_big().await;
                return Start::Gone;
            }
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

/// Entry points for the fuzz targets (`crate::fuzzing`).
#[cfg(feature = "fuzzing")]
pub(crate) mod fuzz {
    use crate::config::resolve::{self, Origin};

    /// A request head, routed and checked as a connection's would be.
    pub(crate) fn http_head(bytes: &[u8]) {
        if let Ok(Some((head, _))) = super::http::Head::parse(bytes) {
            let local = "127.0.0.1:3001".parse().ok();
            let _ = super::http::route(&head, false, local);
            let _ = super::http::route(&head, true, local);
            let _ = super::http::Upgrade::check(&head);
        }
    }

    /// A start request, read and resolved as a client's.
    pub(crate) fn start_request(text: &str) {
        let Ok(map) = soniox_wire::fields::parse_object(text) else {
            return;
        };
        if let Ok(start) = soniox_wire::StartRequest::read(map, &super::start::BOUNDS) {
            let _ = resolve::session(&super::start::session_args(&start), Origin::Client);
        }
    }
}
