//! The gateway: a central `sttpipe serve --ws-listen` that edges on other
//! hosts point `--url` at (issue 17, the server's side): TLS on the
//! endpoint and its reload, named client tokens, the health check, and the
//! `queued` extension frame.
//!
//! Each test starts its own emulator in-process and the real daemon in
//! front of it, [`PACE`] times faster than real time; edges are the real
//! `sttpipe` filter with `SONIOX_WS_URL` at the gateway, and the raw frames
//! are read with tokio-tungstenite. Every wait is on an event (a frame, a
//! log line, a status) and bounded by [`WAIT`].

mod health;
mod queued;
mod tls;
mod tokens;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use soniox_emulator::{Emulator, EmulatorConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::{Connector, MaybeTlsStream, WebSocketStream};

use crate::util::{self, WsDaemon};

/// How many times faster than real time everything runs.
const PACE: f64 = 8.0;
/// Bound on anything a correct gateway does within a few seconds.
const WAIT: Duration = Duration::from_secs(30);
/// Bytes of 16 kHz mono pcm_s16le per 100 ms message.
const CHUNK: usize = 3200;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The emulator's defaults, [`PACE`] times faster, with `config`'s changes.
async fn emulator(config: EmulatorConfig) -> Emulator {
    util::emulator(EmulatorConfig {
        time_scale: PACE,
        ..config
    })
    .await
}

/// The gateway against `emulator` with extra `serve` flags.
async fn gateway(emulator: &Emulator, extra: &[&str]) -> WsDaemon {
    util::ws_daemon(emulator, extra, PACE).await
}

/// A token file with `text` in `dir`.
fn token_file(dir: &Path, text: &str) -> PathBuf {
    util::write_file(dir, "tokens", text.as_bytes())
}

/// A CA and a certificate for `127.0.0.1` it signed, in files.
struct Certs {
    ca_pem: String,
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
    /// The leaf certificate's PEM, to recognise it.
    leaf_pem: String,
}

/// A fresh identity in `dir`, its files named after `tag`.
fn certs(dir: &Path, tag: &str) -> Certs {
    let (ca_pem, identity) = soniox_emulator::tls::test_identity();
    Certs {
        ca: util::write_file(dir, &format!("{tag}-ca.pem"), ca_pem.as_bytes()),
        cert: util::write_file(
            dir,
            &format!("{tag}-cert.pem"),
            identity.cert_chain_pem.as_bytes(),
        ),
        key: util::write_file(dir, &format!("{tag}-key.pem"), identity.key_pem.as_bytes()),
        leaf_pem: identity.cert_chain_pem,
        ca_pem,
    }
}

/// A client TLS configuration that trusts the CAs in `ca_pems`.
fn client_tls(ca_pems: &[&str]) -> Arc<rustls::ClientConfig> {
    use rustls::pki_types::CertificateDer;
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for pem in ca_pems {
        for cert in CertificateDer::pem_slice_iter(pem.as_bytes()) {
            roots.add(cert.expect("a PEM CA")).expect("a usable CA");
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Arc::new(
        rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the defaults")
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// An edge: the `sttpipe` filter at `url` with `token` as its key (and
/// `--ca-file ca` if given), [`PACE`] times faster.
fn edge(url: &str, token: &str, ca: Option<&Path>) -> Command {
    let mut command = util::sttpipe(Some(url), Some(token));
    command.env("STTPIPE_PACE_FACTOR", PACE.to_string());
    if let Some(ca) = ca {
        command.arg("--ca-file").arg(ca);
    }
    command
}

/// A WebSocket to `url` presenting `token` as a bearer key, over TLS
/// trusting `ca_pem` for `wss://`.
async fn connect(url: &str, token: &str, ca_pem: Option<&str>) -> Ws {
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Authorization",
        HeaderValue::from_str(&format!("Bearer {token}")).unwrap(),
    );
    let connector = ca_pem.map(|pem| Connector::Rustls(client_tls(&[pem])));
    let (ws, _) = tokio::time::timeout(
        WAIT,
        tokio_tungstenite::connect_async_tls_with_config(request, None, false, connector),
    )
    .await
    .expect("the upgrade within the bound")
    .expect("the upgrade succeeds");
    ws
}

/// A Soniox start request for 16 kHz mono pcm_s16le, with `extra` fields.
fn start_request(extra: Value) -> Value {
    let mut start = json!({
        "model": "stt-rt-v5",
        "audio_format": "pcm_s16le",
        "sample_rate": 16000,
        "num_channels": 1,
    });
    if let (Some(start), Value::Object(extra)) = (start.as_object_mut(), extra) {
        start.extend(extra);
    }
    start
}

/// Sends the start request, the audio in 100 ms messages and the end of
/// audio, as fast as the gateway takes them.
async fn send_all(ws: &mut Ws, start: &Value, audio: &[u8]) {
    ws.send(Message::text(start.to_string())).await.unwrap();
    for chunk in audio.chunks(CHUNK) {
        ws.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
    ws.send(Message::binary(Vec::<u8>::new())).await.unwrap();
}

/// The next text frame as sent (bounded); `None` once the connection is
/// over.
async fn next_text(ws: &mut Ws) -> Option<String> {
    loop {
        let message = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame within the bound");
        match message {
            Some(Ok(Message::Text(text))) => return Some(text.to_string()),
            Some(Ok(Message::Close(_)) | Err(_)) | None => return None,
            Some(Ok(_)) => {}
        }
    }
}

/// Every text frame until the gateway closes, as sent.
async fn texts_to_close(ws: &mut Ws) -> Vec<String> {
    let mut texts = Vec::new();
    while let Some(text) = next_text(ws).await {
        texts.push(text);
    }
    texts
}

/// Final spoken tokens as (text, start_ms), in order.
fn finals(texts: &[String]) -> Vec<(String, u64)> {
    texts
        .iter()
        .map(|text| serde_json::from_str::<Value>(text).expect("frames are JSON"))
        .flat_map(|f| f["tokens"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["is_final"] == true && !t["text"].as_str().unwrap_or("<").starts_with('<'))
        .map(|t| {
            (
                t["text"].as_str().unwrap_or_default().to_owned(),
                t["start_ms"].as_u64().expect("start_ms"),
            )
        })
        .collect()
}

/// Polls `status` until `condition` holds (bounded by [`WAIT`]).
async fn wait_status(daemon: &WsDaemon, what: &str, condition: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let status = daemon.status().await;
        if condition(&status) {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {WAIT:?}: {status}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the daemon has logged `line` `count` times in all.
async fn wait_log(daemon: &WsDaemon, line: &str, count: usize) {
    util::wait_for(WAIT, &format!("{count} × {line:?} in the log"), || {
        daemon.logs().matches(line).count() >= count
    })
    .await;
}

/// One HTTP request on a stream, read to its end: the status line and the
/// body.
async fn http_exchange<S>(mut stream: S, method: &str, path: &str) -> (String, String)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let request = format!("{method} {path} HTTP/1.1\r\nHost: gateway.example\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    // A TLS peer may close without close_notify after `Connection: close`.
    let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("an answer within the bound");
    let text = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.lines().next().unwrap_or_default().to_owned();
    (status, body.to_owned())
}

/// Sends `signal` to the daemon.
fn signal(daemon: &WsDaemon, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(daemon.pid() as i32);
    nix::sys::signal::kill(pid, signal).expect("signal the daemon");
}
