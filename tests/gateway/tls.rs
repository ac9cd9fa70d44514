//! TLS on the gateway: an edge over `wss://` with the CA, an edge without
//! it refused (78), the certificate reloaded on SIGHUP, and what is not a
//! TLS client at all.

use nix::sys::signal::Signal;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use soniox_emulator::EmulatorConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// `--ws-tls-cert` and `--ws-tls-key` of `certs`, and a token file.
fn tls_flags<'a>(certs: &'a Certs, tokens: &'a Path) -> Vec<&'a str> {
    vec![
        "--ws-tls-cert",
        certs.cert.to_str().unwrap(),
        "--ws-tls-key",
        certs.key.to_str().unwrap(),
        "--ws-token-file",
        tokens.to_str().unwrap(),
    ]
}

/// The leaf certificate the gateway on `port` presents, to a client that
/// trusts every CA in `ca_pems`.
async fn served_certificate(port: u16, ca_pems: &[&str]) -> CertificateDer<'static> {
    let connector = tokio_rustls::TlsConnector::from(client_tls(ca_pems));
    let tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let tls = tokio::time::timeout(WAIT, connector.connect(name, tcp))
        .await
        .expect("a handshake within the bound")
        .expect("the handshake succeeds");
    let leaf = tls.get_ref().1.peer_certificates().expect("a certificate")[0].clone();
    leaf.into_owned()
}

fn leaf_of(pem: &str) -> CertificateDer<'static> {
    CertificateDer::pem_slice_iter(pem.as_bytes())
        .next()
        .expect("a certificate")
        .expect("PEM")
}

/// An edge with the test CA streams through the gateway over wss:// and
/// gets every word, once, at its time; the page and /health are served
/// over https too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_streams_through_the_gateway_over_wss() {
    let emu = emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), "a");
    let tokens = token_file(dir.path(), "edge:edge-token\n");
    let gw = gateway(&emu, &tls_flags(&certs, &tokens)).await;
    let url = format!("wss://127.0.0.1:{}/transcribe-websocket", gw.port);
    let (words, audio) = util::marker_audio(10, 400, 5_000);
    let out = util::run(edge(&url, "edge-token", Some(&certs.ca)), audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.final_words(), util::expected(&words));
    assert!(gw.logs().contains("tls=true"), "{}", gw.logs());

    let connector = tokio_rustls::TlsConnector::from(client_tls(&[&certs.ca_pem]));
    for (path, status, body) in [
        (
            "/health",
            "HTTP/1.1 200 OK",
            "{\"status\":\"ok\",\"sessions\":0}\n",
        ),
        ("/", "HTTP/1.1 200 OK", "<!doctype html>"),
    ] {
        let tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let tls = connector.connect(name, tcp).await.expect("a handshake");
        let (got_status, got_body) = http_exchange(tls, "GET", path).await;
        assert_eq!(got_status, status, "{path}");
        assert!(
            got_body.to_lowercase().starts_with(body),
            "{path}: {got_body}"
        );
    }
}

/// Without the CA the edge refuses the gateway's certificate: exit 78 (a
/// configuration problem, not retried), one line naming the certificate;
/// plain HTTP and garbage on the TLS port are handshake failures the
/// gateway logs and survives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_without_the_ca_refuses_the_gateway() {
    let emu = emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let certs = certs(dir.path(), "a");
    let tokens = token_file(dir.path(), "edge:edge-token\n");
    let gw = gateway(&emu, &tls_flags(&certs, &tokens)).await;
    let url = format!("wss://127.0.0.1:{}/transcribe-websocket", gw.port);
    let out = util::run(
        edge(&url, "edge-token", None),
        util::marker_audio(1, 400, 800).1,
    )
    .await;
    assert_eq!(out.code(), Some(78), "stderr: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(
        out.stderr.to_lowercase().contains("certificate"),
        "{}",
        out.stderr
    );
    assert_eq!(emu.counts().connected, 0, "nothing reached upstream");

    let failed_before = gw.logs().matches("TLS handshake failed").count();
    for junk in [
        &b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        b"\x16\x03\x01\x00\x05hello",
    ] {
        let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        tcp.write_all(junk).await.unwrap();
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, tcp.read_to_end(&mut answer))
            .await
            .expect("closed within the bound");
        assert!(
            !answer.starts_with(b"HTTP/"),
            "no plain answer on TLS: {answer:?}"
        );
    }
    wait_log(&gw, "TLS handshake failed", failed_before + 2).await;
    let leaf = served_certificate(gw.port, &[&certs.ca_pem]).await;
    assert_eq!(leaf, leaf_of(&certs.leaf_pem), "still serving");
}

/// SIGHUP loads a renewed certificate from the same paths: the next client
/// sees the new one. A bad file keeps the one in use, with an error in the
/// log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_certificate() {
    let emu = emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let old = certs(dir.path(), "old");
    let tokens = token_file(dir.path(), "edge:edge-token\n");
    let gw = gateway(&emu, &tls_flags(&old, &tokens)).await;
    let new = certs(dir.path(), "new");
    let both = [old.ca_pem.as_str(), new.ca_pem.as_str()];
    assert_eq!(
        served_certificate(gw.port, &both).await,
        leaf_of(&old.leaf_pem)
    );

    std::fs::copy(&new.cert, &old.cert).unwrap();
    std::fs::copy(&new.key, &old.key).unwrap();
    signal(&gw, Signal::SIGHUP);
    wait_log(&gw, "settings and key reloaded", 1).await;
    assert_eq!(
        served_certificate(gw.port, &both).await,
        leaf_of(&new.leaf_pem),
        "the renewed certificate after SIGHUP"
    );
    // And an edge that trusts only the new CA streams.
    let url = format!("wss://127.0.0.1:{}/transcribe-websocket", gw.port);
    let (words, audio) = util::marker_audio(2, 400, 1_200);
    let out = util::run(edge(&url, "edge-token", Some(&new.ca)), audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.final_words(), util::expected(&words));

    std::fs::write(&old.cert, "not a certificate\n").unwrap();
    signal(&gw, Signal::SIGHUP);
    wait_log(&gw, "the new certificate was not loaded", 1).await;
    assert_eq!(
        served_certificate(gw.port, &both).await,
        leaf_of(&new.leaf_pem),
        "a bad file keeps the certificate in use"
    );
}
