//! Captions of real speech: the committed fixture through the local engine,
//! as SRT. Its words must be the NDJSON run's words, once each, in order,
//! and its cues within the rules; the figures are printed for the README.

use super::{LINE_CHARS, LINES, MAX_MS, parse_srt};
use crate::util;

fn fixture() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/speech-16k.wav")
}

/// Whether the engine is there; a failure when CI demands it.
fn engine_provisioned() -> bool {
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

async fn local(args: &[&str]) -> util::Output {
    let mut command = util::sttpipe(None, None);
    command
        .args(["--engine", "local"])
        .args(args)
        .arg("--input")
        .arg(fixture());
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_speech_fixtures_captions_keep_the_rules() {
    if !engine_provisioned() {
        return;
    }
    let events = local(&["--endpoint-detection"]).await;
    let tokens = events.of_type("token");
    let spoken: String = tokens.iter().map(|t| t["text"].as_str().unwrap()).collect();
    let out = local(&["--format", "srt"]).await;
    let cues = parse_srt(&out.stdout);
    let shown: Vec<String> = cues.iter().flat_map(super::Cue::words).collect();
    let words: Vec<&str> = spoken.split_whitespace().collect();
    assert_eq!(shown, words, "every word once, in order");

    let mut last_end = 0;
    for cue in &cues {
        assert!(cue.start_ms >= last_end, "overlap at {cue:?}");
        assert!(cue.end_ms - cue.start_ms <= MAX_MS, "{cue:?}");
        assert!(cue.lines.len() <= LINES, "{cue:?}");
        assert!(
            cue.lines.iter().all(|l| l.chars().count() <= LINE_CHARS),
            "{cue:?}"
        );
        last_end = cue.end_ms;
    }
    let durations: Vec<u64> = cues.iter().map(|c| c.end_ms - c.start_ms).collect();
    let longest_line = cues
        .iter()
        .flat_map(|c| &c.lines)
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0);
    eprintln!(
        "caption figures (speech fixture, local engine): {} cues, mean {:.2} s, max {:.2} s, \
         longest line {longest_line} characters",
        cues.len(),
        durations.iter().sum::<u64>() as f64 / durations.len() as f64 / 1000.0,
        durations.iter().max().copied().unwrap_or(0) as f64 / 1000.0,
    );
}
