//! The emulator's quotas as a client sees them: which tier a refused stream
//! is blamed on, the refusal of a connection past the cap on connections
//! (idle ones count), and the live counts at `GET /v1/concurrency-limits`,
//! served over plain HTTP on a port of its own (the WebSocket port's
//! handshake would refuse a plain GET).
//!
//! Soniox checks the organization's limit first, then the project's; how
//! its 429 names the tier is not documented, so [`LimitTier`] picks one of
//! the plausible wordings and clients are tested against each.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde_json::{Value, json};
use soniox_wire::ApiError;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::server::Shared;

/// The `error_type` of a refusal past the connection cap (documented).
pub const CONNECTIONS_ERROR_TYPE: &str = "max_concurrent_connections_reached";

/// How the 429 at the concurrency limit names the tier that refused it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LimitTier {
    /// `organization_concurrency_limit_exceeded`, `Your organization has
    /// exceeded max number of concurrent requests.`
    Organization,
    /// `limit_exceeded`, `Your project has exceeded max number of
    /// concurrent requests.`: the type is generic, the message names the
    /// tier (the wording the emulator always had).
    #[default]
    Project,
    /// `limit_exceeded`, `Too many concurrent requests.`: nothing names
    /// the tier.
    Unnamed,
}

impl LimitTier {
    /// The tier's name in `/v1/concurrency-limits` (`None`: no tier).
    fn scope(self) -> Option<&'static str> {
        match self {
            LimitTier::Organization => Some("organization"),
            LimitTier::Project => Some("project"),
            LimitTier::Unnamed => None,
        }
    }
}

/// The 429 for a stream past `max_concurrent`, naming `tier` as configured.
pub(crate) fn concurrency_refusal(tier: LimitTier) -> ApiError {
    match tier {
        LimitTier::Organization => ApiError::new(
            429,
            "organization_concurrency_limit_exceeded",
            "Your organization has exceeded max number of concurrent requests.",
        ),
        LimitTier::Project => ApiError::new(
            429,
            "limit_exceeded",
            "Your project has exceeded max number of concurrent requests.",
        ),
        LimitTier::Unnamed => ApiError::new(429, "limit_exceeded", "Too many concurrent requests."),
    }
}

/// The 429 for a connection past `max_connections` (the message is the
/// emulator's own; the type is documented).
pub(crate) fn connections_refusal() -> ApiError {
    ApiError::new(
        429,
        CONNECTIONS_ERROR_TYPE,
        "Maximum number of concurrent connections reached.",
    )
}

/// Longest request head read.
const MAX_HEAD: usize = 8 * 1024;
/// Bound on reading a request head.
const HEAD_TIMEOUT: Duration = Duration::from_secs(5);

/// Serves `GET /v1/concurrency-limits` until cancelled, one task a
/// connection, one request a connection.
pub(crate) async fn serve(
    listener: TcpListener,
    shared: Arc<Shared>,
    cancel: CancellationToken,
    tracker: TaskTracker,
) {
    loop {
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            r = listener.accept() => r,
        };
        match accepted {
            Ok((stream, _)) => {
                let shared = Arc::clone(&shared);
                let cancel = cancel.clone();
                tracker.spawn(async move {
                    tokio::select! {
                        _ = cancel.cancelled() => {}
                        _ = answer(stream, &shared) => {}
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "REST accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// Reads one request and answers it; any I/O error just ends the
/// connection.
async fn answer(mut stream: TcpStream, shared: &Shared) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let read = async {
        let mut buf = [0u8; 1024];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < MAX_HEAD {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        Ok::<_, std::io::Error>(())
    };
    let bound = shared.config.scaled(HEAD_TIMEOUT);
    if tokio::time::timeout(bound, read).await.is_err() {
        return Ok(());
    }
    let (status, body) = respond(&head, shared);
    let body = body.to_string();
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        _ => "Method Not Allowed",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(response.as_bytes()).await?;
    stream.shutdown().await
}

/// The status and JSON body for the request `head`.
fn respond(head: &[u8], shared: &Shared) -> (u16, Value) {
    let error = |e: ApiError| {
        (
            e.code,
            json!({"error_code": e.code, "error_type": e.error_type, "error_message": e.message}),
        )
    };
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut request = httparse::Request::new(&mut headers);
    if !matches!(request.parse(head), Ok(httparse::Status::Complete(_))) {
        return error(ApiError::bad_request("Malformed request."));
    }
    let path = request.path.unwrap_or("");
    if path.split('?').next() != Some("/v1/concurrency-limits") {
        return error(ApiError::new(404, "not_found", "Not found."));
    }
    if request.method != Some("GET") {
        return error(ApiError::new(
            405,
            "method_not_allowed",
            "Method not allowed.",
        ));
    }
    let key = request
        .headers
        .iter()
        .find(|h| h.name.eq_ignore_ascii_case("authorization"))
        .and_then(|h| std::str::from_utf8(h.value).ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let unauthenticated = |m: &str| ApiError::new(401, "unauthenticated", m);
    match key {
        None => return error(unauthenticated("Missing API key.")),
        Some(key) if !shared.config.api_keys.iter().any(|k| k == key) => {
            return error(unauthenticated("Invalid API key."));
        }
        Some(_) => {}
    }
    shared.rest_requests.fetch_add(1, Ordering::AcqRel);
    (200, limits(shared))
}

/// The live counts and limits: one project in one organization, so both
/// scopes count the same streams; the limit sits on the configured tier.
fn limits(shared: &Shared) -> Value {
    let config = &shared.config;
    let current = json!({
        "transcribe_concurrent": shared.streaming.load(Ordering::Acquire),
        "transcribe_connections": shared.connections.load(Ordering::Acquire),
    });
    let limited = config.limit_tier.scope().unwrap_or("project");
    let scope = |name: &str| {
        let on = name == limited;
        json!({
            "current": current,
            "limits": {
                "transcribe_concurrent": if on { json!(config.max_concurrent) } else { Value::Null },
                "transcribe_connections": if name == "project" { json!(config.max_connections) } else { Value::Null },
            },
        })
    };
    json!({
        "organization": scope("organization"),
        "project": scope("project"),
    })
}
