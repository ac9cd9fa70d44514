//! The live quota (`serve --live-quota`): Soniox's own count of the
//! streams and connections in use and their limits, for the organization
//! and the project, from `GET /v1/concurrency-limits`, shown in `status` as
//! `upstream.live`.
//!
//! It is asked only while sessions wait in the queue (that is when the
//! numbers explain something), at most every [`POLL_EVERY`], on a blocking
//! thread: the HTTP client is `ureq`, which is small and blocking, and one
//! request every 15 s does not need an async client. The key travels in the
//! `Authorization` header only; no error message or log line carries it,
//! and redirects are not followed (they could take the header elsewhere).

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::http::Uri;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::admission::Admission;
use crate::config::ApiKey;
use crate::error::{Error, Result};

/// The least time between two requests.
pub(crate) const POLL_EVERY: Duration = Duration::from_secs(15);
/// How often the queue is looked at.
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// Bound on one request, connect to last byte.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// The path of the counts under the REST API's base.
const PATH: &str = "/v1/concurrency-limits";

/// Where to ask and with what: the endpoint, the key, and an agent with
/// the daemon's trusted roots.
#[derive(Clone)]
pub(crate) struct Source {
    endpoint: String,
    key: ApiKey,
    agent: ureq::Agent,
}

impl std::fmt::Debug for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Source")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl Source {
    /// Asking `base` (a REST API base URL) with `key`, trusting the CAs in
    /// `ca_file` (PEM) or the built-in roots.
    pub(crate) fn new(
        base: &str,
        key: ApiKey,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Source> {
        let roots = match ca_file {
            None => ureq::tls::RootCerts::WebPki,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| {
                    Error::Config(format!("cannot read CA file {}: {e}", path.display()))
                })?;
                let mut certs = Vec::new();
                for item in ureq::tls::parse_pem(&pem) {
                    match item {
                        Ok(ureq::tls::PemItem::Certificate(cert)) => certs.push(cert),
                        Ok(_) => {}
                        Err(e) => {
                            return Err(Error::Config(format!("CA file {}: {e}", path.display())));
                        }
                    }
                }
                ureq::tls::RootCerts::new_with_certs(&certs)
            }
        };
        let tls = ureq::tls::TlsConfig::builder()
            .provider(ureq::tls::TlsProvider::Rustls)
            .root_certs(roots)
            .build();
        let agent = ureq::Agent::config_builder()
            .tls_config(tls)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .max_redirects(0)
            .http_status_as_error(false)
            .build()
            .new_agent();
        Ok(Source {
            endpoint: format!("{}{PATH}", base.trim_end_matches('/')),
            key,
            agent,
        })
    }

    /// One request (blocking): the counts as Soniox gave them, or why not.
    fn ask(&self) -> std::result::Result<Value, String> {
        let response = self
            .agent
            .get(&self.endpoint)
            .header("Authorization", &format!("Bearer {}", self.key.expose()))
            .header("Accept", "application/json")
            .call()
            .map_err(|e| format!("GET {}: {e}", self.endpoint))?;
        let status = response.status();
        let mut body = response.into_body();
        let text = body
            .with_config()
            .limit(1 << 20)
            .read_to_string()
            .map_err(|e| format!("GET {}: {e}", self.endpoint))?;
        if !status.is_success() {
            return Err(format!("GET {}: HTTP {}", self.endpoint, status.as_u16()));
        }
        serde_json::from_str(&text).map_err(|e| format!("GET {}: not JSON: {e}", self.endpoint))
    }
}

/// The base URL of Soniox's REST API: `quota_url` if given, else derived
/// from the real-time WebSocket URL (`wss://stt-rt.REGION…` gives
/// `https://api.REGION…`; any other host is kept as it is, with its port).
pub(crate) fn rest_base(ws_url: &str, quota_url: Option<&str>) -> Result<String> {
    if let Some(url) = quota_url.filter(|u| !u.is_empty()) {
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(Error::Usage(format!(
                "--quota-url must be an http:// or https:// URL, not {url:?}"
            )));
        }
        return Ok(url.trim_end_matches('/').to_owned());
    }
    let bad = || {
        Error::Usage(format!(
            "cannot derive the REST API's URL from {ws_url:?}: give --quota-url"
        ))
    };
    let uri: Uri = ws_url.parse().map_err(|_| bad())?;
    let scheme = match uri.scheme_str() {
        Some("wss") => "https",
        Some("ws") => "http",
        _ => return Err(bad()),
    };
    let authority = uri.authority().ok_or_else(bad)?;
    let host = authority.host();
    let host = match host.strip_prefix("stt-rt.") {
        Some(rest) => format!("api.{rest}"),
        None => host.to_owned(),
    };
    let port = authority
        .port_u16()
        .map(|p| format!(":{p}"))
        .unwrap_or_default();
    Ok(format!("{scheme}://{host}{port}"))
}

/// What the last request gave.
#[derive(Debug)]
struct Reading {
    at: Instant,
    result: std::result::Result<Value, String>,
}

/// The live quota: what to ask, and the last answer.
#[derive(Debug, Default)]
pub(crate) struct LiveQuota {
    /// `None`: off.
    source: Mutex<Option<Source>>,
    last: Mutex<Option<Reading>>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // Whole values put and taken: a panic elsewhere cannot leave one half-set.
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

impl LiveQuota {
    /// On with `source`, or off (start and SIGHUP).
    pub(crate) fn configure(&self, source: Option<Source>) {
        if source.is_none() {
            *lock(&self.last) = None;
        }
        *lock(&self.source) = source;
    }

    /// `upstream.live` for `status`; `None` when off.
    pub(crate) fn status(&self) -> Option<Value> {
        lock(&self.source).as_ref()?;
        let last = lock(&self.last);
        let Some(reading) = last.as_ref() else {
            return Some(json!({"polled_s_ago": Value::Null}));
        };
        let ago = reading.at.elapsed().as_secs();
        Some(match &reading.result {
            Ok(counts) => {
                let scope = |name: &str| {
                    json!({
                        "current": counts[name]["current"],
                        "limits": counts[name]["limits"],
                    })
                };
                json!({
                    "organization": scope("organization"),
                    "project": scope("project"),
                    "polled_s_ago": ago,
                })
            }
            Err(message) => json!({"error": message, "polled_s_ago": ago}),
        })
    }

    /// Asks whenever sessions wait in `admission`'s queue and the last
    /// request is [`POLL_EVERY`] old, until `stop`.
    pub(crate) async fn run(self: Arc<Self>, admission: Admission, stop: CancellationToken) {
        let mut last_asked: Option<Instant> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                () = tokio::time::sleep(CHECK_EVERY) => {}
            }
            let Some(source) = lock(&self.source).clone() else {
                continue;
            };
            if admission.usage().waiting == 0
                || last_asked.is_some_and(|at| at.elapsed() < POLL_EVERY)
            {
                continue;
            }
            last_asked = Some(Instant::now());
            let result = tokio::task::spawn_blocking(move || source.ask())
                .await
                .unwrap_or_else(|e| Err(format!("the request's thread failed: {e}")));
            match &result {
                Ok(_) => debug!("live quota read"),
                Err(message) => warn!(error = %message, "the live quota could not be read"),
            }
            *lock(&self.last) = Some(Reading {
                at: Instant::now(),
                result,
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rest_base_comes_from_the_websocket_url_or_the_flag() {
        for (ws, base) in [
            (
                "wss://stt-rt.soniox.com/transcribe-websocket",
                "https://api.soniox.com",
            ),
            (
                "wss://stt-rt.eu.soniox.com/transcribe-websocket",
                "https://api.eu.soniox.com",
            ),
            (
                "ws://127.0.0.1:4100/transcribe-websocket",
                "http://127.0.0.1:4100",
            ),
            (
                "wss://stt.example.com:8443/x",
                "https://stt.example.com:8443",
            ),
        ] {
            assert_eq!(rest_base(ws, None).unwrap(), base, "{ws}");
        }
        assert_eq!(
            rest_base("wss://stt-rt.soniox.com/x", Some("http://127.0.0.1:9/")).unwrap(),
            "http://127.0.0.1:9"
        );
        assert!(matches!(
            rest_base("wss://stt-rt.soniox.com/x", Some("ftp://x")),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn status_shows_the_scopes_or_the_error_but_never_the_key() {
        let live = LiveQuota::default();
        assert_eq!(live.status(), None, "off");
        let key = ApiKey::new("secret-key-123");
        live.configure(Some(Source::new("http://127.0.0.1:9", key, None).unwrap()));
        assert_eq!(live.status(), Some(json!({"polled_s_ago": null})));
        *lock(&live.last) = Some(Reading {
            at: Instant::now(),
            result: Ok(json!({
                "organization": {"current": {"transcribe_concurrent": 2}, "limits": {"transcribe_concurrent": 10}},
                "project": {"current": {"transcribe_concurrent": 1}, "limits": {}},
                "other": 1,
            })),
        });
        let status = live.status().unwrap();
        assert_eq!(
            status["organization"]["limits"]["transcribe_concurrent"],
            10
        );
        assert_eq!(status["project"]["current"]["transcribe_concurrent"], 1);
        assert_eq!(status["polled_s_ago"], 0);
        assert!(status.get("other").is_none());
        // Nothing listens on port 9: the error names the endpoint, not the key.
        let source = lock(&live.source).clone().unwrap();
        let err = source.ask().unwrap_err();
        assert!(
            err.contains("http://127.0.0.1:9/v1/concurrency-limits"),
            "{err}"
        );
        assert!(!err.contains("secret-key-123"), "{err}");
        assert!(!format!("{source:?}").contains("secret-key-123"));
        live.configure(None);
        assert_eq!(live.status(), None);
    }
}
