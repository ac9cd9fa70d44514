//! The offline engine through the built binary, on real speech.

use crate::daemon::Daemon;
use crate::util;
use crate::util::wer::word_error_rate;

/// Whether the engine's files are there; when CI demands them
/// (`STTPIPE_REQUIRE_LOCAL_ENGINE=1`, set by scripts/test), missing is a failure.
pub(crate) fn engine_provisioned() -> bool {
    let dir = util::engine_dir::default_engine_dir();
    let present = dir.as_ref().is_some_and(|d| d.join("lib").exists());
    if !present && std::env::var_os("STTPIPE_REQUIRE_LOCAL_ENGINE").is_some() {
        panic!("the local engine is not provisioned in {dir:?}: run sttpipe engine install");
    }
    if !present {
        eprintln!("local engine not provisioned: skipped (scripts/test provisions it)");
    }
    present
}

/// `sttpipe --engine local` on 33 s of piper speech: word error rate at most
/// 20 %, timestamps in order within the audio, endpoints at sentence ends,
/// no key and no network needed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_engine_transcribes_real_speech() {
    if !engine_provisioned() {
        return;
    }
    let (wav, reference) = speech_fixture();
    let mut command = util::sttpipe(None, None);
    command
        .args(["--engine", "local", "--endpoint-detection", "--input"])
        .arg(wav);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let start = &out.of_type("start")[0];
    assert_eq!(start["model"], "moonshine-tiny-en", "{start}");
    let text = final_text(&out);
    let wer = word_error_rate(&reference, &text);
    eprintln!("local engine WER on the fixture: {:.1} %", wer * 100.0);
    assert!(wer <= 0.20, "WER {:.1} %: {text}", wer * 100.0);
    let mut last = 0;
    for token in &out.of_type("token") {
        let (start, end) = (
            token["start_ms"].as_u64().unwrap(),
            token["end_ms"].as_u64().unwrap(),
        );
        assert!(start >= last && end >= start && end <= 34_000, "{token}");
        last = start;
    }
    assert!(
        out.of_type("endpoint").len() >= 8,
        "one endpoint a sentence"
    );
    assert_eq!(out.events().last().unwrap()["type"], "end");
}

/// `--fallback local`: with Soniox unreachable from the start, the stream
/// goes on with the local engine from the first audio, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_service_falls_back_to_the_local_engine() {
    if !engine_provisioned() {
        return;
    }
    let (wav, reference) = speech_fixture();
    let mut command = util::sttpipe(Some(&unreachable_url()), Some(util::KEY));
    command
        .env("STTPIPE_PACE_FACTOR", "8")
        .args(["--fallback", "local", "--input"])
        .arg(wav);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let events = out.events();
    // `start` first, naming the model asked for; then the fallback.
    assert_eq!(events[0]["type"], "start", "{events:?}");
    assert_eq!(events[1]["type"], "fallback", "{events:?}");
    assert_eq!(events[1]["engine"], "local");
    assert_eq!(events[1]["from_ms"], 0);
    let text = final_text(&out);
    assert!(word_error_rate(&reference, &text) <= 0.20, "{text}");
    assert_eq!(events.last().unwrap()["type"], "end");
}

/// The committed speech sample and its reference text.
pub fn speech_fixture() -> (std::path::PathBuf, String) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let reference = std::fs::read_to_string(fixtures.join("speech-16k.txt")).unwrap();
    (fixtures.join("speech-16k.wav"), reference)
}

/// A Soniox URL nobody listens on (a port just bound and let go).
fn unreachable_url() -> String {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    format!("ws://127.0.0.1:{port}/transcribe-websocket")
}

/// The final tokens' text, joined.
fn final_text(out: &util::Output) -> String {
    out.of_type("token")
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect()
}

/// `sttpipe --connect` on the speech sample, with `args`.
async fn through_daemon(socket: &std::path::Path, args: &[&str]) -> util::Output {
    let (wav, _) = speech_fixture();
    let mut command = util::sttpipe(None, None);
    command
        .arg("--connect")
        .arg(socket)
        .args(args)
        .arg("--input")
        .arg(wav);
    util::run(command, Vec::new()).await
}

/// `sttpipe serve --engine local` with no key at all: a client of its
/// socket gets the local engine's words and endpoints; a client that asks
/// for Soniox is refused in one line with exit 78.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_serves_the_local_engine_without_a_key() {
    if !engine_provisioned() {
        return;
    }
    let (_, reference) = speech_fixture();
    let daemon = Daemon::launch(None, &["--engine", "local"], &[]).await;
    let out = through_daemon(&daemon.socket, &["--endpoint-detection"]).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let text = final_text(&out);
    assert!(word_error_rate(&reference, &text) <= 0.20, "{text}");
    assert!(
        out.of_type("endpoint").len() >= 3,
        "an endpoint at each sentence's end: {}",
        out.stdout
    );
    assert_eq!(out.events().last().unwrap()["type"], "end");

    let refused = through_daemon(&daemon.socket, &["--engine", "soniox"]).await;
    assert_eq!(refused.code(), Some(78), "stderr: {}", refused.stderr);
    assert_eq!(refused.stderr.lines().count(), 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("no Soniox API key"),
        "{}",
        refused.stderr
    );
    assert_eq!(refused.of_type("error").len(), 1, "{}", refused.stdout);
    assert!(daemon.terminate().await.success());
}

/// `sttpipe serve --fallback local` with Soniox unreachable: a session goes
/// on with the local engine from its first audio and says so; a client that
/// asks for the local engine gets it straight away, with no fallback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_daemon_falls_back_to_the_local_engine() {
    if !engine_provisioned() {
        return;
    }
    let (_, reference) = speech_fixture();
    let url = unreachable_url();
    let daemon = Daemon::launch(
        Some((&url, util::KEY)),
        &["--fallback", "local"],
        &[("STTPIPE_PACE_FACTOR", "8")],
    )
    .await;
    let out = through_daemon(&daemon.socket, &[]).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let fallbacks = out.of_type("fallback");
    assert_eq!(fallbacks.len(), 1, "{}", out.stdout);
    assert_eq!(fallbacks[0]["engine"], "local");
    assert_eq!(fallbacks[0]["from_ms"], 0);
    let text = final_text(&out);
    assert!(word_error_rate(&reference, &text) <= 0.20, "{text}");

    let local = through_daemon(&daemon.socket, &["--engine", "local"]).await;
    assert_eq!(local.code(), Some(0), "stderr: {}", local.stderr);
    assert!(local.of_type("fallback").is_empty(), "{}", local.stdout);
    let text = final_text(&local);
    assert!(word_error_rate(&reference, &text) <= 0.20, "{text}");
    assert!(daemon.terminate().await.success());
}
