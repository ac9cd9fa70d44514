//! TLS: the filter against the emulator over wss:// with a private CA.

use soniox_emulator::EmulatorConfig;

use crate::util::{self, KEY};

/// With `--ca-file` naming the CA, the stream works over wss:// and every
/// word comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_with_a_private_ca() {
    let (ca_pem, identity) = soniox_emulator::tls::test_identity();
    let emulator = util::emulator(EmulatorConfig {
        tls: Some(identity),
        ..EmulatorConfig::default()
    })
    .await;
    assert!(emulator.url().starts_with("wss://localhost:"));
    let dir = tempfile::tempdir().unwrap();
    let ca_file = util::write_file(dir.path(), "ca.pem", ca_pem.as_bytes());
    let (words, audio) = util::marker_audio(4, 400, 2_500);
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.arg("--ca-file").arg(&ca_file);
    let out = util::run(command, audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.final_words(), util::expected(&words));
}

/// Without the CA, the certificate is refused: a clear one-line message,
/// exit 78 (a configuration problem, not worth retrying), no retries.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_clear_error() {
    let (_, identity) = soniox_emulator::tls::test_identity();
    let emulator = util::emulator(EmulatorConfig {
        tls: Some(identity),
        ..EmulatorConfig::default()
    })
    .await;
    // Trust another CA than the one that signed the emulator's certificate.
    let (other_ca, _) = soniox_emulator::tls::test_identity();
    let dir = tempfile::tempdir().unwrap();
    let ca_file = util::write_file(dir.path(), "other.pem", other_ca.as_bytes());
    for extra in [
        vec!["--ca-file".to_owned(), ca_file.display().to_string()],
        vec![],
    ] {
        let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
        command.args(&extra);
        let out = util::run(command, util::marker_audio(1, 400, 800).1).await;
        assert_eq!(out.code(), Some(78), "stderr: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
        assert!(out.stderr.contains("TLS"), "{}", out.stderr);
        assert!(
            out.stderr.to_lowercase().contains("certificate"),
            "{}",
            out.stderr
        );
    }
}

/// A CA file that is not PEM: exit 78 before any connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_ca_file_is_a_config_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca_file = util::write_file(dir.path(), "ca.pem", b"not a certificate\n");
    let mut command = util::sttpipe(Some("wss://localhost:9/"), Some(KEY));
    command.arg("--ca-file").arg(&ca_file);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(78), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("holds no PEM certificate"),
        "{}",
        out.stderr
    );
}
