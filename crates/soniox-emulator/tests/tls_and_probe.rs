//! wss:// with a test CA (trusted, untrusted and silent clients, bad PEM),
//! plain ws:// URLs, and the probe's view of a session.

mod common;

use std::time::Duration;

use serde_json::json;
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_tungstenite::MaybeTlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::header::AUTHORIZATION;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

use soniox_emulator::marker;
use soniox_emulator::tls::test_identity;
use soniox_emulator::{AuthMethod, Emulator, EmulatorConfig, Outcome, TlsIdentity};

use common::{
    Auth, CHUNK, Client, KEY, WAIT, emulator, final_texts, finish, send_audio, send_text,
    start_request, started_with, texts, transcribe, wait_for,
};

/// An emulator serving wss:// with a fresh identity; returns it and the PEM
/// of the CA that signed its certificate.
async fn tls_emulator(config: EmulatorConfig) -> (Emulator, String) {
    let (ca_pem, identity) = test_identity();
    let emu = emulator(EmulatorConfig {
        tls: Some(identity),
        ..config
    })
    .await;
    (emu, ca_pem)
}

/// A rustls client (ring provider) that trusts only the CA in `ca_pem`.
fn trusting(ca_pem: &str) -> tokio_tungstenite::Connector {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::CertificateDer;
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_tungstenite::Connector::Rustls(std::sync::Arc::new(config))
}

/// Connects to `url` over TLS trusting `ca_pem`, with the key in a header.
async fn connect_tls(
    url: &str,
    ca_pem: &str,
) -> Result<Client, tokio_tungstenite::tungstenite::Error> {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut()
        .insert(AUTHORIZATION, format!("Bearer {KEY}").parse().unwrap());
    let connect =
        tokio_tungstenite::connect_async_tls_with_config(req, None, true, Some(trusting(ca_pem)));
    timeout(WAIT, connect).await.unwrap().map(|(ws, _)| ws)
}

#[tokio::test]
async fn tls_full_session_over_wss() {
    let (emu, ca_pem) = tls_emulator(EmulatorConfig::default()).await;
    let port = emu.local_addr().port();
    assert_eq!(
        emu.url(),
        format!("wss://localhost:{port}/transcribe-websocket")
    );
    let words = marker::script(3, 500, 200);
    let expected = texts(&words);
    // By the host name of the URL, then by the IP address (an IP SAN).
    let ip_url = format!("wss://127.0.0.1:{port}/transcribe-websocket");
    for url in [emu.url(), ip_url] {
        let mut ws = connect_tls(&url, &ca_pem).await.unwrap();
        assert!(matches!(ws.get_ref(), MaybeTlsStream::Rustls(_)));
        send_text(&mut ws, start_request(json!({}))).await;
        let msgs = transcribe(&mut ws, &words, 3000).await;
        assert_eq!(final_texts(&msgs), expected);
    }
    let s = emu.sessions();
    assert_eq!(s.len(), 2);
    for r in &s {
        assert_eq!(r.auth, AuthMethod::Header);
        assert_eq!(r.outcome, Outcome::Finished);
        assert_eq!(r.words_sent_final, expected);
        assert_eq!(r.audio_ms, 3000);
    }
    emu.shutdown().await;
}

#[tokio::test]
async fn tls_untrusted_client_fails_while_others_are_served() {
    let (emu, ca_pem) = tls_emulator(EmulatorConfig::default()).await;
    let words = marker::script(4, 500, 200);
    let audio = marker::encode(&words, 4000, 16_000, 1);
    let (first_half, second_half) = audio.split_at(audio.len() / 2 / CHUNK * CHUNK);

    // A session in mid-stream while the bad handshakes happen.
    let mut live = connect_tls(&emu.url(), &ca_pem).await.unwrap();
    send_text(&mut live, start_request(json!({}))).await;
    send_audio(&mut live, first_half).await;

    // A client trusting another CA refuses the certificate.
    let (other_ca, _) = test_identity();
    let err = connect_tls(&emu.url(), &other_ca)
        .await
        .expect_err("an untrusted certificate must fail the handshake");
    assert!(
        err.to_string().to_lowercase().contains("certificate"),
        "{err}"
    );
    // A plain ws:// client gets no WebSocket from a TLS port either.
    let plain = format!(
        "ws://127.0.0.1:{}/transcribe-websocket",
        emu.local_addr().port()
    );
    assert!(
        timeout(WAIT, tokio_tungstenite::connect_async(plain))
            .await
            .unwrap()
            .is_err()
    );
    // Both failed connections end on the server side, recorded as closed
    // by the client, without a start request.
    wait_for(&emu, |c| c.connected == 3 && c.ended == 2).await;
    for i in [1, 2] {
        let r = emu.session(i).unwrap();
        assert_eq!(r.outcome, Outcome::ClientClosed);
        assert_eq!(r.start_request, None);
    }

    // The live session carries on, and new trusted clients are served.
    send_audio(&mut live, second_half).await;
    let (msgs, close) = finish(&mut live).await;
    assert_eq!(msgs.last().unwrap()["finished"], true);
    assert_eq!(close.unwrap().code, CloseCode::Normal);
    let expected = texts(&words);
    assert_eq!(final_texts(&msgs), expected);

    let mut ws = connect_tls(&emu.url(), &ca_pem).await.unwrap();
    send_text(&mut ws, start_request(json!({}))).await;
    let msgs = transcribe(&mut ws, &words, 4000).await;
    assert_eq!(final_texts(&msgs), expected);
    let outcomes: Vec<_> = emu.sessions().iter().map(|r| r.outcome).collect();
    assert_eq!(
        outcomes,
        [
            Outcome::Finished,
            Outcome::ClientClosed,
            Outcome::ClientClosed,
            Outcome::Finished
        ]
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn tls_silent_client_is_cut_at_start_timeout() {
    let (emu, _) = tls_emulator(EmulatorConfig {
        start_timeout: Duration::from_secs(10),
        time_scale: 100.0,
        ..Default::default()
    })
    .await;
    // TCP only: no ClientHello ever comes.
    let mut tcp = TcpStream::connect(emu.local_addr()).await.unwrap();
    wait_for(&emu, |c| c.connected == 1 && c.open == 0).await;
    let mut buf = [0u8; 16];
    let n = timeout(WAIT, tokio::io::AsyncReadExt::read(&mut tcp, &mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "the server sends nothing before the ClientHello");
    assert_eq!(emu.session(0).unwrap().outcome, Outcome::ClientClosed);
    emu.shutdown().await;
}

#[tokio::test]
async fn tls_invalid_pem_fails_start() {
    let (_, good) = test_identity();
    let (_, other) = test_identity();
    let cases = [
        (
            TlsIdentity {
                cert_chain_pem: "not a certificate".to_owned(),
                ..good.clone()
            },
            "no PEM CERTIFICATE block",
        ),
        (
            TlsIdentity {
                key_pem: String::new(),
                ..good.clone()
            },
            "no PEM PRIVATE KEY block",
        ),
        (
            TlsIdentity {
                // A key block that is not base64.
                key_pem: "-----BEGIN PRIVATE KEY-----\n@@@@\n-----END PRIVATE KEY-----\n"
                    .to_owned(),
                ..good.clone()
            },
            "TLS private key: invalid PEM",
        ),
        (
            TlsIdentity {
                key_pem: other.key_pem.clone(),
                ..good.clone()
            },
            "TLS certificate or key rejected",
        ),
    ];
    for (identity, message) in cases {
        let err = Emulator::start(EmulatorConfig {
            tls: Some(identity),
            ..Default::default()
        })
        .await
        .expect_err(message);
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains(message), "{err}");
    }
}

#[test]
fn tls_identity_debug_hides_the_key() {
    let (_, identity) = test_identity();
    let shown = format!("{identity:?}");
    assert!(shown.contains("<redacted>"), "{shown}");
    assert!(!shown.contains("PRIVATE KEY"), "{shown}");
}

#[tokio::test]
async fn plain_url_stays_ws() {
    let emu = emulator(EmulatorConfig::default()).await;
    assert!(emu.url().starts_with("ws://127.0.0.1:"), "{}", emu.url());
    emu.shutdown().await;
}

#[tokio::test]
async fn the_probe_sees_start_audio_and_finals_in_order() {
    use soniox_emulator::{Probe, ProbeKind};
    use std::sync::{Arc, Mutex};
    type Seen = (u64, Option<String>, ProbeKind, std::time::Instant);
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let sink = Arc::clone(&seen);
    let emu = emulator(EmulatorConfig {
        probe: Some(Probe::new(move |e| {
            sink.lock().unwrap().push((
                e.index,
                e.client_reference_id.map(str::to_owned),
                e.kind,
                e.at,
            ));
        })),
        ..EmulatorConfig::default()
    })
    .await;
    let mut ws = started_with(
        &emu,
        Auth::Header(KEY),
        json!({"client_reference_id": "s7"}),
    )
    .await;
    let words = marker::script(3, 500, 200);
    let audio = marker::encode(&words, 2000, 16_000, 1);
    send_audio(&mut ws, &audio).await;
    finish(&mut ws).await;

    let seen = seen.lock().unwrap().clone();
    assert!(
        seen.iter()
            .all(|(index, id, ..)| *index == 0 && id.as_deref() == Some("s7"))
    );
    assert!(seen.windows(2).all(|p| p[0].3 <= p[1].3), "in time order");
    assert_eq!(seen[0].2, ProbeKind::Started);
    let totals: Vec<u64> = seen
        .iter()
        .filter_map(|(_, _, kind, _)| match kind {
            ProbeKind::Audio { total_bytes } => Some(*total_bytes),
            _ => None,
        })
        .collect();
    let expected: Vec<u64> = (1..=audio.len().div_ceil(CHUNK))
        .map(|i| (i * CHUNK).min(audio.len()) as u64)
        .collect();
    assert_eq!(totals, expected, "one event per frame, cumulative bytes");
    let finals: Vec<u64> = seen
        .iter()
        .filter_map(|(_, _, kind, _)| match kind {
            ProbeKind::Final { start_ms } => Some(*start_ms),
            _ => None,
        })
        .collect();
    let starts: Vec<u64> = words.iter().map(|w| w.start_ms).collect();
    assert_eq!(finals, starts, "one event per final word");
    emu.shutdown().await;
}
