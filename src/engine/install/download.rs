//! One wheel over HTTPS into a file, hashed as it arrives.
//!
//! The client is ureq, already in the tree for Soniox's REST API, on the
//! same rustls (ring). Its roots are the system's trust store, not the
//! built-in webpki roots the Soniox connection uses: a download must work
//! wherever the machine reaches PyPI, which may be through a TLS-inspecting
//! proxy or a mirror whose CA only the system store holds
//! (`SSL_CERT_FILE` and `SSL_CERT_DIR` are honoured). Integrity does not
//! rest on TLS anyway: every wheel is checked against its pinned SHA-256.

use std::fs::File;
use std::io::{Read, Write};
use std::path::Path;
use std::time::Duration;

use ring::digest::{Context, SHA256};

use super::progress::Progress;
use crate::error::{Error, Result};

/// Connecting, and each read of the body, may take this long.
const PATIENCE: Duration = Duration::from_secs(30);

/// The HTTP client for downloads, trusting the system's roots.
pub(crate) fn agent() -> Result<ureq::Agent> {
    let found = rustls_native_certs::load_native_certs();
    let certs: Vec<ureq::tls::Certificate<'static>> = found
        .certs
        .iter()
        .map(|der| ureq::tls::Certificate::from_der(der.as_ref()).to_owned())
        .collect();
    if certs.is_empty() {
        let why = found
            .errors
            .first()
            .map_or_else(|| "none found".to_owned(), ToString::to_string);
        return Err(Error::Config(format!(
            "no trusted certificates in the system's store ({why}); install ca-certificates or \
             set SSL_CERT_FILE"
        )));
    }
    let tls = ureq::tls::TlsConfig::builder()
        .provider(ureq::tls::TlsProvider::Rustls)
        .root_certs(ureq::tls::RootCerts::new_with_certs(&certs))
        .build();
    Ok(ureq::Agent::config_builder()
        .tls_config(tls)
        .timeout_connect(Some(PATIENCE))
        .timeout_per_read(Some(PATIENCE))
        .http_status_as_error(false)
        .user_agent(concat!("sttpipe/", env!("CARGO_PKG_VERSION")))
        .build()
        .new_agent())
}

/// What a download should be.
#[derive(Debug)]
pub(crate) struct Expected<'a> {
    /// Its size in bytes.
    pub(crate) size: u64,
    /// Its SHA-256, hex.
    pub(crate) sha256: &'a str,
    /// What the progress line and errors call it.
    pub(crate) label: &'a str,
}

/// Downloads `url` into `dest` (created) and checks it is `expected`.
/// Returns the bytes received.
pub(crate) fn fetch(
    agent: &ureq::Agent,
    url: &str,
    dest: &Path,
    expected: &Expected,
) -> Result<u64> {
    let unreachable = |reason: String, transient| Error::Connect {
        url: url.to_owned(),
        reason,
        transient,
    };
    let response = agent.get(url).call().map_err(|e| {
        // A certificate problem is the machine's configuration; the rest may pass.
        let tls = matches!(e, ureq::Error::Tls(_) | ureq::Error::Rustls(_));
        unreachable(e.to_string(), !tls)
    })?;
    let status = response.status();
    if status != 200 {
        return Err(unreachable(format!("HTTP {status}"), true));
    }
    let mut body = response.into_body().into_reader();
    let file_error = |e: std::io::Error| Error::Files(format!("writing {}: {e}", dest.display()));
    let mut file = File::create(dest).map_err(file_error)?;
    let mut hash = Context::new(&SHA256);
    let mut progress = Progress::new(expected.label, expected.size);
    let mut buffer = vec![0u8; 256 * 1024];
    let mut received = 0u64;
    loop {
        let n = match body.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => {
                return Err(Error::Disconnected(format!(
                    "downloading {url}: {e} after {received} of {} bytes",
                    expected.size
                )));
            }
        };
        received += n as u64;
        if received > expected.size {
            return Err(Error::Checksum(format!(
                "{url} is longer than the {} bytes pinned for {}: not the pinned file",
                expected.size, expected.label
            )));
        }
        hash.update(&buffer[..n]);
        file.write_all(&buffer[..n]).map_err(file_error)?;
        progress.update(received);
    }
    progress.finish();
    if received < expected.size {
        return Err(Error::Disconnected(format!(
            "downloading {url}: the body ended after {received} of {} bytes",
            expected.size
        )));
    }
    file.sync_all().map_err(file_error)?;
    let got = hex(hash.finish().as_ref());
    if got != expected.sha256 {
        return Err(Error::Checksum(format!(
            "checksum mismatch for {url}: sha256 {got}, pinned {}; nothing was installed",
            expected.sha256
        )));
    }
    Ok(received)
}

/// The SHA-256 of the file at `path`, hex.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut hash = Context::new(&SHA256);
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            break;
        }
        hash.update(&buffer[..n]);
    }
    Ok(hex(hash.finish().as_ref()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
