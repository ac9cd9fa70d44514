//! TLS on the WebSocket endpoint (`--ws-tls-cert`, `--ws-tls-key`): the
//! server's settings made from the PEM files (rustls with the `ring` provider and its
//! safe defaults, TLS 1.2 and 1.3), and the one stream type a connection is,
//! with TLS or without, so that everything past the handshake (the page,
//! `/health`, the WebSocket) is the same code.
//!
//! The daemon loads the files at start (a bad pair is a configuration
//! error) and again on SIGHUP, where a bad pair keeps the one in use:
//! renewing a certificate must never take the endpoint down.

use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::rustls::pki_types::pem::{self, PemObject};
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::server::TlsStream;

use crate::error::{Error, Result};

/// The TLS settings for the certificate chain in `cert` (leaf first) and its
/// private key in `key`, both PEM.
pub(crate) fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>> {
    let read = |path: &Path, flag: &str| {
        std::fs::read(path)
            .map_err(|e| Error::Config(format!("cannot read {flag} {}: {e}", path.display())))
    };
    let cert_pem = read(cert, "--ws-tls-cert")?;
    let key_pem = read(key, "--ws-tls-key")?;
    let chain = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::Config(format!("--ws-tls-cert {} is not PEM: {e}", cert.display())))?;
    if chain.is_empty() {
        return Err(Error::Config(format!(
            "--ws-tls-cert {} holds no PEM certificate",
            cert.display()
        )));
    }
    let private = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        Error::Config(match e {
            pem::Error::NoItemsFound => {
                format!("--ws-tls-key {} holds no PEM private key", key.display())
            }
            other => format!("--ws-tls-key {} is not PEM: {other}", key.display()),
        })
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|builder| {
            builder
                .with_no_client_auth()
                .with_single_cert(chain, private)
        })
        .map_err(|e| {
            Error::Config(format!(
                "the certificate {} and key {} do not make a TLS identity: {e}",
                cert.display(),
                key.display()
            ))
        })?;
    Ok(Arc::new(config))
}

/// A client's connection, with TLS or without.
pub(super) enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

impl Conn {
    /// The TCP stream under it (for readiness and addresses).
    pub(super) fn tcp(&self) -> &TcpStream {
        match self {
            Conn::Plain(tcp) => tcp,
            Conn::Tls(tls) => tls.get_ref().0,
        }
    }
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_read(cx, buf),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_write(cx, buf),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_write_vectored(cx, bufs),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Conn::Plain(tcp) => tcp.is_write_vectored(),
            Conn::Tls(tls) => tls.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_flush(cx),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(tcp) => Pin::new(tcp).poll_shutdown(cx),
            Conn::Tls(tls) => Pin::new(tls.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_files_are_config_errors_that_name_them() {
        let dir = tempfile::tempdir().unwrap();
        let junk = dir.path().join("junk.pem");
        std::fs::write(&junk, "not pem\n").unwrap();
        let missing = dir.path().join("missing.pem");
        for (cert, key, says) in [
            (&missing, &junk, "cannot read --ws-tls-cert"),
            (&junk, &junk, "holds no PEM certificate"),
        ] {
            match server_config(cert, key) {
                Err(Error::Config(message)) => assert!(message.contains(says), "{message}"),
                other => panic!("{cert:?} {key:?}: {:?}", other.map(|_| ())),
            }
        }
    }
}
