//! The filter end to end against the emulator.

use std::time::Duration;

use serde_json::json;
use soniox_emulator::EmulatorConfig;

use crate::util::{self, KEY};

/// The acceptance run: 10 s of marker audio through the pipeline: every word
/// once, in order, exact start_ms; paced to real time within the bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_seconds_of_speech_every_word_once_in_order_and_paced() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let (words, audio) = util::marker_audio(24, 400, 10_000);
    let out = util::run(util::sttpipe(Some(&emulator.url()), Some(KEY)), audio).await;

    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stderr, "");
    assert_eq!(out.final_words(), util::expected(&words));

    let events = out.events();
    assert_eq!(
        events.first().map(|e| e["type"].clone()),
        Some(json!("start"))
    );
    let end = events.last().expect("events");
    assert_eq!(end["type"], "end");
    assert_eq!(end["audio_ms"], 10_000);
    assert_eq!(end["tokens"], 24);
    assert_eq!(end["reason"], "eof");
    assert_eq!(events.iter().filter(|e| e["type"] == "partial").count(), 0);

    // Paced: at least the audio's duration less the 2 s burst, at most 15 % over it.
    let wall = out.elapsed;
    assert!(wall >= Duration::from_millis(8_000), "too fast: {wall:?}");
    assert!(wall <= Duration::from_millis(11_500), "too slow: {wall:?}");

    // What the service saw: never more than 2 s ahead of real time.
    let sessions = emulator.sessions();
    assert_eq!(sessions.len(), 1);
    let session = &sessions[0];
    assert_eq!(session.audio_ms, 10_000);
    assert!(session.ended_audio, "no end-of-audio frame");
    for &(wall_ms, audio_ms) in &session.receipts {
        // 100 ms of slack for one chunk in flight.
        assert!(
            audio_ms <= wall_ms + 2_100,
            "audio {audio_ms} ms received at {wall_ms} ms: more than 2 s ahead"
        );
    }
}

/// Every flag reaches the start request, in Soniox's names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_flag_reaches_the_start_request() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let (_, audio) = util::marker_audio(2, 400, 1_500);
    let dir = tempfile::tempdir().unwrap();
    let context = util::write_file(
        dir.path(),
        "ctx.json",
        br#"{"terms":["Celebrex"],"text":"a visit"}"#,
    );
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.args([
        "--model",
        "stt-rt-v4",
        "--language-hints",
        "en,de",
        "--language-hints-strict",
        "--diarize",
        "--language-id",
        "--endpoint-detection",
        "--max-endpoint-delay-ms",
        "1500",
        "--translate",
        "en:es",
        "--client-reference-id",
        "ref-42",
        "--rate",
        "16000",
        "--channels",
        "1",
    ]);
    command
        .arg("--context")
        .arg(format!("@{}", context.display()));
    let out = util::run(command, audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let start = emulator.sessions()[0]
        .start_request
        .clone()
        .expect("start request");
    assert_eq!(
        start,
        json!({
            "model": "stt-rt-v4",
            "audio_format": "pcm_s16le",
            "sample_rate": 16000,
            "num_channels": 1,
            "language_hints": ["en", "de"],
            "language_hints_strict": true,
            "context": {"terms": ["Celebrex"], "text": "a visit"},
            "enable_speaker_diarization": true,
            "enable_language_identification": true,
            "enable_endpoint_detection": true,
            "max_endpoint_delay_ms": 1500,
            "translation": {"type": "two_way", "language_a": "en", "language_b": "es"},
            "client_reference_id": "ref-42",
        })
    );
    // The key travelled in the header, never in the start request.
    assert_eq!(
        emulator.sessions()[0].auth,
        soniox_emulator::AuthMethod::Header
    );

    // Plain-text context and one-way translation.
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.args(["--context", "Mr. Miller's visit", "--translate-to", "fr"]);
    let out = util::run(command, util::marker_audio(1, 400, 1_000).1).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let start = emulator.sessions()[1]
        .start_request
        .clone()
        .expect("start request");
    assert_eq!(start["context"], "Mr. Miller's visit");
    assert_eq!(
        start["translation"],
        json!({"type": "one_way", "target_language": "fr"})
    );
    // Translated tokens come through with their fields.
    let translated: Vec<_> = out
        .of_type("token")
        .into_iter()
        .filter(|t| t["translation_status"] == "translation")
        .collect();
    assert!(
        !translated.is_empty(),
        "no translation tokens: {}",
        out.stdout
    );
    assert_eq!(translated[0]["source_language"], "en");
}

/// A rejected key: exit 77 within 2 s, one line on stderr, an error event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_key_exits_77_quickly() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let (_, audio) = util::marker_audio(20, 400, 10_000);
    let out = util::run(
        util::sttpipe(Some(&emulator.url()), Some("wrong-key")),
        audio,
    )
    .await;
    assert_eq!(out.code(), Some(77), "stderr: {}", out.stderr);
    assert!(
        out.elapsed < Duration::from_secs(2),
        "took {:?}",
        out.elapsed
    );
    assert_eq!(out.stderr.lines().count(), 1, "stderr: {:?}", out.stderr);
    assert!(
        out.stderr
            .starts_with("sttpipe: the API key was rejected (401)"),
        "{}",
        out.stderr
    );
    let errors = out.of_type("error");
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["status"], 401);
    assert_eq!(errors[0]["exit_code"], 77);
    assert!(
        !out.stderr.contains("wrong-key"),
        "the key leaked to stderr"
    );
    assert!(
        !out.stdout.contains("wrong-key"),
        "the key leaked to stdout"
    );
}

/// No key anywhere: exit 78 with a message that says where a key goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_key_exits_78() {
    let out = util::run(util::sttpipe(Some("ws://127.0.0.1:9/"), None), Vec::new()).await;
    assert_eq!(out.code(), Some(78));
    assert_eq!(
        out.stderr.trim(),
        "sttpipe: no API key: set SONIOX_API_KEY or use --api-key-file PATH"
    );
    assert_eq!(out.of_type("error")[0]["code"], "config");

    let dir = tempfile::tempdir().unwrap();
    let mut command = util::sttpipe(None, None);
    command.arg("--api-key-file").arg(dir.path().join("absent"));
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(78));
    assert!(
        out.stderr.starts_with("sttpipe: cannot read API key file"),
        "{}",
        out.stderr
    );
}

/// The key from a file and from the systemd credentials directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_from_file_and_credentials() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let key_file = util::write_file(dir.path(), "key", format!("{KEY}\n").as_bytes());
    let mut command = util::sttpipe(Some(&emulator.url()), None);
    command.arg("--api-key-file").arg(&key_file);
    let out = util::run(command, util::marker_audio(1, 400, 800).1).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);

    util::write_file(dir.path(), "soniox-api-key", KEY.as_bytes());
    let mut command = util::sttpipe(Some(&emulator.url()), None);
    command.env("CREDENTIALS_DIRECTORY", dir.path());
    let out = util::run(command, util::marker_audio(1, 400, 800).1).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
}

/// The default model is stt-rt-v6; the endpoint tuning flags and the start
/// fields reach the start request as given; a start field sttpipe sets
/// itself is a usage error that names the flag to use, before connecting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v6_endpoint_tuning_and_start_fields_reach_the_start_request() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.args([
        "--endpoint-detection",
        "--endpoint-sensitivity",
        "-0.5",
        "--endpoint-latency-adjustment-level",
        "3",
        "--start-field",
        "enable_agent_text_input=true",
        "--start-field",
        r#"future_option={"depth":[1,"two"]}"#,
    ]);
    let out = util::run(command, util::marker_audio(1, 400, 1_000).1).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let start = emulator.sessions()[0]
        .start_request
        .clone()
        .expect("start request");
    assert_eq!(
        start,
        json!({
            "model": "stt-rt-v6",
            "audio_format": "pcm_s16le",
            "sample_rate": 16000,
            "num_channels": 1,
            "enable_endpoint_detection": true,
            "endpoint_sensitivity": -0.5,
            "endpoint_latency_adjustment_level": 3,
            "enable_agent_text_input": true,
            "future_option": {"depth": [1, "two"]},
        })
    );
    assert_eq!(out.of_type("start")[0]["model"], "stt-rt-v6");

    for (field, names) in [
        (r#"api_key="sk-1""#, "--api-key-file"),
        ("model=\"stt-rt-v4\"", "--model"),
        ("sample_rate=8000", "--rate"),
        ("endpoint_sensitivity=0.1", "--endpoint-sensitivity"),
    ] {
        let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
        command.args(["--start-field", field]);
        let out = util::run(command, util::marker_audio(1, 400, 1_000).1).await;
        assert_eq!(out.code(), Some(64), "{field}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("sttpipe: --start-field ") && out.stderr.contains(names),
            "{field}: {}",
            out.stderr
        );
        assert!(!out.stderr.contains("sk-1"), "the value is not echoed");
    }
    assert_eq!(emulator.sessions().len(), 1, "refused before connecting");
}

/// Bad flags: exit 64, one line, no panic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_flags_exit_64() {
    for args in [
        &["--no-such-flag"][..],
        &["--rate", "fast"],
        &["--audio-format", "avi"],
        &["--translate", "english"],
        &["--max-endpoint-delay-ms", "10"],
        &["--endpoint-sensitivity", "2"],
        &["--endpoint-latency-adjustment-level", "4"],
        &["--start-field", "note=unquoted"],
        &["--start-field", "no-value"],
        &["--region", "mars"],
        &["--url", "http://example.com"],
        &["--format", "xml"],
        // A FILE operand and --input at once.
        &["--input", "a.wav", "b.wav"],
    ] {
        let mut command = util::sttpipe(None, Some(KEY));
        command.args(args);
        let out = util::run(command, Vec::new()).await;
        assert_eq!(out.code(), Some(64), "{args:?}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{args:?}: {}", out.stderr);
        assert!(
            out.stderr.starts_with("sttpipe: "),
            "{args:?}: {}",
            out.stderr
        );
    }
    let mut help = util::sttpipe(None, None);
    help.arg("--help");
    let out = util::run(help, Vec::new()).await;
    assert_eq!(out.code(), Some(0));
    assert!(out.stdout.contains("--follow"));
}

/// Fatal service errors end the stream at once with their exit statuses;
/// temporary ones are retried until the budget is spent (then 75).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn service_errors_map_to_exit_statuses() {
    for (code, exit) in [
        (402, 69),
        (400, 64),
        (401, 77),
        (503, 75),
        (429, 75),
        (500, 75),
        (408, 75),
    ] {
        let emulator = util::emulator(EmulatorConfig {
            reject_connects: vec![code; 50],
            ..EmulatorConfig::default()
        })
        .await;
        let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
        command.args(["--retry-budget", "1"]);
        let out = util::run(command, util::marker_audio(2, 400, 1_000).1).await;
        assert_eq!(out.code(), Some(exit), "{code}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{code}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("({code})")),
            "{code}: {}",
            out.stderr
        );
        let connects = emulator.sessions().len();
        if exit == 75 {
            assert!(
                out.stderr.starts_with("sttpipe: gave up after 1 s"),
                "{}",
                out.stderr
            );
            assert!(connects > 1, "{code} was not retried");
        } else {
            assert_eq!(connects, 1, "{code} is fatal but was retried");
            assert_eq!(out.of_type("error")[0]["status"], code);
        }
    }
    // A model the service does not know.
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.args(["--model", "stt-async-v5"]);
    let out = util::run(command, util::marker_audio(1, 400, 800).1).await;
    assert_eq!(out.code(), Some(64));
    assert!(
        out.stderr.contains("Invalid model specified."),
        "{}",
        out.stderr
    );
}

/// --partials: non-final tails arrive as `partial` events whose replace rule
/// a consumer can follow; the finals are the same as without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partials_replace_each_other_and_finals_stay_exact() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let (words, audio) = util::marker_audio(8, 400, 4_000);
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.arg("--partials");
    let out = util::run(command, audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.final_words(), util::expected(&words));
    let partials = out.of_type("partial");
    assert!(!partials.is_empty());
    // Following the rule: the final text plus the latest partial is always a
    // prefix-consistent view, and every partial word later became final.
    let finals: Vec<String> = out.final_words().into_iter().map(|(t, _)| t).collect();
    for partial in &partials {
        let text: String = partial["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["text"].as_str().unwrap())
            .collect();
        assert_eq!(partial["text"], text.as_str());
        for token in partial["tokens"].as_array().unwrap() {
            assert_eq!(token["is_final"], false);
            assert!(finals.contains(&token["text"].as_str().unwrap().to_owned()));
        }
    }
    // The last partial is empty: nothing provisional remains at the end.
    assert_eq!(partials.last().unwrap()["tokens"], json!([]));
}

/// --format text: the transcript for people.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_format_prints_the_transcript() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let (words, audio) = util::marker_audio(5, 400, 3_000);
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.args(["--format", "text"]);
    let out = util::run(command, audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let text: String = words.iter().map(|w| w.text.as_str()).collect();
    assert_eq!(out.stdout, format!("{}\n", text.trim_start()));
}

/// Endpoint detection: `<end>` becomes an `endpoint` event, never token text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_are_events_not_text() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    // Two utterances with 2 s of silence between them.
    let mut words = soniox_emulator::marker::script(3, 400, 500);
    words.extend(
        soniox_emulator::marker::script(3, 400, 4_000)
            .into_iter()
            .map(|mut w| {
                w.text = format!("{}2", w.text);
                w
            }),
    );
    let audio = soniox_emulator::marker::encode(&words, 7_000, 16_000, 1);
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.args(["--endpoint-detection", "--max-endpoint-delay-ms", "500"]);
    let out = util::run(command, audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.final_words(), util::expected(&words));
    let endpoints = out.of_type("endpoint");
    assert!(!endpoints.is_empty(), "{}", out.stdout);
    assert_eq!(endpoints[0]["end_ms"], words[2].end_ms());
    assert!(!out.stdout.contains("<end>"));
}
