//! The offline engine through the built binary, on real speech.

use crate::util;

/// Word error rate of `hypothesis` against `reference`: word-level edit
/// distance over the reference's length, case and punctuation ignored.
fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let words = |text: &str| -> Vec<String> {
        text.split_whitespace()
            .map(|w| {
                w.chars()
                    .filter(|c| c.is_alphanumeric() || *c == '\'')
                    .collect::<String>()
                    .to_lowercase()
            })
            .filter(|w| !w.is_empty())
            .collect()
    };
    let (r, h) = (words(reference), words(hypothesis));
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for (i, rw) in r.iter().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let substitution = previous + usize::from(rw != hw);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(row[j + 1] + 1);
        }
    }
    row[h.len()] as f64 / r.len().max(1) as f64
}

/// Whether the engine's files are there; when CI demands them
/// (`STTPIPE_REQUIRE_LOCAL_ENGINE=1`, set by scripts/test), missing is a failure.
fn engine_provisioned() -> bool {
    let dir = sttpipe::engine::local::default_dir();
    let present = dir.as_ref().is_some_and(|d| d.join("lib").exists());
    if !present && std::env::var_os("STTPIPE_REQUIRE_LOCAL_ENGINE").is_some() {
        panic!("the local engine is not provisioned in {dir:?}: run scripts/fetch-local-engine");
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
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let reference = std::fs::read_to_string(fixtures.join("speech-16k.txt")).unwrap();
    let mut command = util::sttpipe(None, None);
    command
        .args(["--engine", "local", "--endpoint-detection", "--input"])
        .arg(fixtures.join("speech-16k.wav"));
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let tokens = out.of_type("token");
    let text: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let wer = word_error_rate(&reference, &text);
    eprintln!("local engine WER on the fixture: {:.1} %", wer * 100.0);
    assert!(wer <= 0.20, "WER {:.1} %: {text}", wer * 100.0);
    let mut last = 0;
    for token in &tokens {
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

#[test]
fn word_error_rate_counts_edits() {
    assert_eq!(word_error_rate("the birch canoe", "The birch canoe."), 0.0);
    assert!((word_error_rate("the birch canoe slid", "the birch can use slid") - 0.5).abs() < 1e-9);
}

/// `--fallback local`: with Soniox unreachable from the start, the stream
/// goes on with the local engine from the first audio, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_service_falls_back_to_the_local_engine() {
    if !engine_provisioned() {
        return;
    }
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let reference = std::fs::read_to_string(fixtures.join("speech-16k.txt")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("ws://127.0.0.1:{port}/transcribe-websocket");
    let mut command = util::sttpipe(Some(&url), Some(util::KEY));
    command
        .env("STTPIPE_PACE_FACTOR", "8")
        .args(["--fallback", "local", "--input"])
        .arg(fixtures.join("speech-16k.wav"));
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let events = out.events();
    assert_eq!(events[0]["type"], "fallback", "{events:?}");
    assert_eq!(events[0]["engine"], "local");
    assert_eq!(events[0]["from_ms"], 0);
    let text: String = out
        .of_type("token")
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect();
    assert!(word_error_rate(&reference, &text) <= 0.20, "{text}");
    assert_eq!(events.last().unwrap()["type"], "end");
}
