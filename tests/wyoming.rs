//! The Wyoming front end (issue 15): `sttpipe serve --wyoming-listen` on an
//! ephemeral port, driven by the official `wyoming` package's client
//! (`tests/wyoming/client.py`, `AsyncTcpClient`) against the emulator and
//! the local engine, and by hand-made bytes for what no well-behaved client
//! sends.
//!
//! The package's Python comes from `STTPIPE_TEST_PYTHON`, else
//! `target/test-venv/bin/python` or a `python3` on `PATH` that has
//! `wyoming`; `scripts/test` installs it.

mod harness;

use std::path::Path;

use serde_json::{Value, json};
use soniox_emulator::EmulatorConfig;
use soniox_emulator::marker::{self, Word};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::util;
use harness::{WAIT, WyomingDaemon, client, frame, read_to_close};

/// How many times faster than real time the daemon and the emulator run.
const PACE: f64 = 8.0;

/// A job for the client: `audio` as a file in `dir`.
fn job(dir: &Path, name: &str, audio: &[u8], layout: (u32, u16, u16), extra: Value) -> Value {
    let file = util::write_file(dir, name, audio);
    let mut job = json!({
        "file": file,
        "rate": layout.0,
        "width": layout.1,
        "channels": layout.2,
    });
    if let Value::Object(extra) = extra {
        for (k, v) in extra {
            job[k] = v;
        }
    }
    job
}

/// The event types of a result, in order.
fn kinds(result: &Value) -> Vec<String> {
    result["events"]
        .as_array()
        .expect("events")
        .iter()
        .map(|e| e[0].as_str().expect("a type").to_owned())
        .collect()
}

/// The data of the result's events of type `kind`.
fn of_kind<'a>(result: &'a Value, kind: &str) -> Vec<&'a Value> {
    result["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter(|e| e[0] == kind)
        .map(|e| &e[1])
        .collect()
}

/// What the `transcript` should say for `words`.
fn text_of(words: &[Word]) -> String {
    words
        .iter()
        .map(|w| w.text.as_str())
        .collect::<String>()
        .trim()
        .to_owned()
}

/// A streamed transcription's shape: start, chunks, transcript, stop; the
/// chunks add up to the transcript. Returns the transcript's text.
fn streamed_text(result: &Value) -> String {
    let kinds = kinds(result);
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("transcript-start"),
        "{result}"
    );
    assert_eq!(
        kinds.last().map(String::as_str),
        Some("transcript-stop"),
        "{result}"
    );
    assert_eq!(
        kinds.iter().filter(|k| *k == "transcript").count(),
        1,
        "{result}"
    );
    let chunks = of_kind(result, "transcript-chunk");
    assert!(
        !chunks.is_empty(),
        "at least one transcript-chunk: {result}"
    );
    let joined: String = chunks.iter().map(|c| c["text"].as_str().unwrap()).collect();
    let text = of_kind(result, "transcript")[0]["text"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        joined, text,
        "the chunks add up to the transcript: {result}"
    );
    text
}

/// The official client's `describe`: one ASR program, sttpipe, with an
/// English model and streaming; the engine and model in its description.
#[tokio::test(flavor = "multi_thread")]
async fn describe_answers_with_an_asr_program() {
    let emu = util::emulator(EmulatorConfig::default()).await;
    let daemon = WyomingDaemon::start(Some(&emu), &[], 1.0).await;
    let info = client(&["describe", &daemon.port.to_string()]).await;
    let asr = &info["asr"];
    assert_eq!(asr.as_array().map(Vec::len), Some(1), "{info}");
    let program = &asr[0];
    assert_eq!(program["name"], "sttpipe");
    assert_eq!(program["installed"], true);
    assert_eq!(program["supports_transcript_streaming"], true, "{info}");
    assert_eq!(program["requires_external_vad"], true, "{info}");
    let description = program["description"].as_str().unwrap();
    assert!(
        description.contains("Soniox") && description.contains("stt-rt-v6"),
        "{description}"
    );
    let model = &program["models"][0];
    assert_eq!(model["name"], "stt-rt-v6");
    assert!(
        model["languages"]
            .as_array()
            .unwrap()
            .contains(&json!("en")),
        "{info}"
    );
    assert_eq!(
        emu.counts().connected,
        0,
        "describing opens no upstream session"
    );
}

/// Five transcriptions at once through the emulator: each gets exactly its
/// words, streamed (start, chunks, transcript, stop), with its terms and
/// language in its own upstream start request; every slot is freed.
#[tokio::test(flavor = "multi_thread")]
async fn five_concurrent_transcriptions_get_exactly_their_words() {
    let emu = util::emulator(EmulatorConfig {
        time_scale: PACE,
        ..EmulatorConfig::default()
    })
    .await;
    let daemon = WyomingDaemon::start(Some(&emu), &[], PACE).await;
    let vocabulary = ["alpha", "bravo", "charlie", "delta", "echo"];
    let mut expected = Vec::new();
    let mut jobs = Vec::new();
    for (i, name) in vocabulary.iter().enumerate() {
        let text = format!("turn on the {name} lights number {i}");
        let words = marker::sentence(&text, 400, 250, 150);
        let audio = marker::encode(&words, 4_500, 16_000, 1);
        let term = format!("{name}-term");
        jobs.push(job(
            daemon.dir.path(),
            &format!("{name}.raw"),
            &audio,
            (16_000, 2, 1),
            json!({"transcribe": {"language": "en-US", "transcript_terms": [term], "transcript_names": [format!("{name} room")]}}),
        ));
        expected.push((text_of(&words), term));
    }
    let results = daemon.transcribe(&jobs).await;
    for (result, (text, _)) in results.iter().zip(&expected) {
        assert_eq!(&streamed_text(result), text, "{result}");
        assert_eq!(of_kind(result, "transcript")[0]["language"], "en");
    }
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 5, "{sessions:?}");
    for (_, term) in &expected {
        let start = sessions
            .iter()
            .filter_map(|s| s.start_request.as_ref())
            .find(|start| {
                start["context"]["terms"]
                    .as_array()
                    .is_some_and(|t| t.contains(&json!(term)))
            })
            .unwrap_or_else(|| panic!("no start request has {term}: {sessions:?}"));
        let name = term.trim_end_matches("-term");
        assert_eq!(
            start["context"]["terms"],
            json!([format!("{name} room"), term]),
            "names first"
        );
        assert_eq!(start["language_hints"], json!(["en"]));
        assert_eq!(start["language_hints_strict"], true);
        assert_eq!(
            (&start["sample_rate"], &start["num_channels"]),
            (&json!(16_000), &json!(1))
        );
    }
    daemon
        .wait_status("every slot freed", |s| {
            s["sessions"] == json!([]) && s["upstream"]["sessions"] == 0
        })
        .await;
    assert_eq!(daemon.status().await["sessions_served"], 5);
}

/// The upstream connection drops mid-utterance: the daemon reconnects and
/// replays, and the transcript is still complete.
#[tokio::test(flavor = "multi_thread")]
async fn a_dropped_upstream_connection_loses_no_words() {
    let emu = util::emulator(EmulatorConfig {
        time_scale: PACE,
        drop_after_audio_ms: Some(2_500),
        ..EmulatorConfig::default()
    })
    .await;
    let daemon = WyomingDaemon::start(Some(&emu), &[], PACE).await;
    let words = marker::script(12, 400, 300);
    let audio = marker::encode(&words, 6_000, 16_000, 1);
    let results = daemon
        .transcribe(&[job(
            daemon.dir.path(),
            "drop.raw",
            &audio,
            (16_000, 2, 1),
            json!({}),
        )])
        .await;
    assert_eq!(
        streamed_text(&results[0]),
        text_of(&words),
        "{}",
        results[0]
    );
    assert!(
        emu.sessions().len() >= 2,
        "the connection did drop and come back"
    );
}

/// `--wyoming-endpointing`: Soniox's endpoint ends the turn; words spoken
/// after it are not the turn's, and `info` says no external VAD is needed.
#[tokio::test(flavor = "multi_thread")]
async fn the_endpoint_ends_the_turn_with_endpointing() {
    let emu = util::emulator(EmulatorConfig {
        time_scale: PACE,
        ..EmulatorConfig::default()
    })
    .await;
    let daemon = WyomingDaemon::start(Some(&emu), &["--wyoming-endpointing"], PACE).await;
    let info = client(&["describe", &daemon.port.to_string()]).await;
    assert_eq!(info["asr"][0]["requires_external_vad"], false, "{info}");
    let first = marker::sentence("what time is it", 300, 250, 100);
    let mut words = first.clone();
    words.extend(marker::sentence("never heard", 5_000, 250, 100));
    let audio = marker::encode(&words, 7_000, 16_000, 1);
    let results = daemon
        .transcribe(&[job(
            daemon.dir.path(),
            "endpoint.raw",
            &audio,
            (16_000, 2, 1),
            json!({"realtime": false, "transcribe": {"vad_sensitivity": "relaxed"}}),
        )])
        .await;
    assert_eq!(
        streamed_text(&results[0]),
        text_of(&first),
        "{}",
        results[0]
    );
    let start = emu.sessions()[0].start_request.clone().unwrap();
    assert_eq!(start["enable_endpoint_detection"], true, "{start}");
    assert_eq!(start["max_endpoint_delay_ms"], 3000, "{start}");
}

/// A WAV file's PCM (the fixture is 16-bit mono).
fn wav_pcm(wav: &[u8]) -> &[u8] {
    let at = wav
        .windows(4)
        .position(|w| w == b"data")
        .expect("a data chunk")
        + 8;
    &wav[at..]
}

/// 16 kHz mono s16 as 48 kHz stereo: linear interpolation, both channels
/// the same.
fn to_48k_stereo(pcm: &[u8]) -> Vec<u8> {
    let samples: Vec<i16> = pcm
        .chunks_exact(2)
        .map(|b| i16::from_le_bytes([b[0], b[1]]))
        .collect();
    let mut out = Vec::with_capacity(samples.len() * 12);
    for (i, &s) in samples.iter().enumerate() {
        let next = samples.get(i + 1).copied().unwrap_or(s);
        for k in 0..3 {
            let v = (i32::from(s) * (3 - k) + i32::from(next) * k) / 3;
            let bytes = (v as i16).to_le_bytes();
            out.extend_from_slice(&bytes);
            out.extend_from_slice(&bytes);
        }
    }
    out
}

/// Real speech through `serve --engine local --wyoming-listen`, sent as
/// 48 kHz stereo: mixed down and resampled, a low word error rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_engine_transcribes_48k_stereo_speech() {
    if !crate::local::engine_provisioned() {
        return;
    }
    let (wav, reference) = crate::local::speech_fixture();
    let audio = to_48k_stereo(wav_pcm(&std::fs::read(wav).unwrap()));
    let daemon = WyomingDaemon::start(None, &["--engine", "local"], 1.0).await;
    let info = client(&["describe", &daemon.port.to_string()]).await;
    assert_eq!(
        info["asr"][0]["models"][0]["name"], "moonshine-tiny-en",
        "{info}"
    );
    let results = daemon
        .transcribe(&[job(
            daemon.dir.path(),
            "speech.raw",
            &audio,
            (48_000, 2, 2),
            json!({"chunk_ms": 40}),
        )])
        .await;
    let text = streamed_text(&results[0]);
    let wer = crate::util::wer::word_error_rate(&reference, &text);
    eprintln!(
        "local engine over Wyoming, 48 kHz stereo: WER {:.1} %",
        wer * 100.0
    );
    assert!(wer <= 0.20, "WER {:.1} %: {text}", wer * 100.0);
    assert!(!daemon.logs().contains("error"), "{}", daemon.logs());
}

// --- bad input, by hand ---------------------------------------------------------

/// The one `error` event's text, if that is what came.
fn error_text(events: &[(String, Value)]) -> Option<String> {
    match events {
        [(kind, data)] if kind == "error" => data["text"].as_str().map(str::to_owned),
        _ => None,
    }
}

/// What a broken or vanishing client gets: an `error` event or a clean
/// close, its slot freed, and a well-behaved client beside it unaffected.
#[tokio::test(flavor = "multi_thread")]
async fn bad_input_is_answered_and_frees_the_slot() {
    let emu = util::emulator(EmulatorConfig {
        time_scale: PACE,
        ..EmulatorConfig::default()
    })
    .await;
    let daemon = WyomingDaemon::start(Some(&emu), &[], PACE).await;
    let addr = format!("127.0.0.1:{}", daemon.port);
    let start = json!({"rate": 16000, "width": 2, "channels": 1});

    // A header line past the limit.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let long = format!(
        "{{\"type\":\"describe\",\"pad\":\"{}\"}}\n",
        "x".repeat(20_000)
    );
    let _ = s.write_all(long.as_bytes()).await;
    let text = error_text(&read_to_close(s).await).expect("an error event");
    assert!(text.contains("longer than"), "{text}");

    // Audio before audio-start.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&frame("audio-chunk", start.clone(), &[0; 640]))
        .await
        .unwrap();
    let text = error_text(&read_to_close(s).await).expect("an error event");
    assert!(text.contains("audio-chunk before audio-start"), "{text}");

    // A well-behaved client streams through all that follows.
    let words = marker::script(8, 400, 300);
    let audio = marker::encode(&words, 4_000, 16_000, 1);
    let good = job(
        daemon.dir.path(),
        "good.raw",
        &audio,
        (16_000, 2, 1),
        json!({"realtime": true}),
    );
    let good = tokio::spawn({
        let port = daemon.port.to_string();
        let jobs = Value::from(vec![good]).to_string();
        async move { client(&["transcribe", &port, &jobs]).await }
    });

    // A payload shorter than its payload_length, then the end of the stream.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&frame("audio-start", start.clone(), &[]))
        .await
        .unwrap();
    s.write_all(&frame("audio-chunk", start.clone(), &audio[..3200]))
        .await
        .unwrap();
    let mut short = frame("audio-chunk", start.clone(), &[0; 3200]);
    short.truncate(short.len() - 3000);
    s.write_all(&short).await.unwrap();
    s.shutdown().await.unwrap();
    let events = read_to_close(s).await;
    assert!(
        events
            .iter()
            .all(|(k, _)| k == "transcript-start" || k == "error"),
        "a clean close (or an error), no transcript: {events:?}"
    );

    // A client that vanishes mid-stream.
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(&frame("transcribe", json!({"language": "en"}), &[]))
        .await
        .unwrap();
    s.write_all(&frame("audio-start", start.clone(), &[]))
        .await
        .unwrap();
    for chunk in audio[..32_000].chunks(3200) {
        s.write_all(&frame("audio-chunk", start.clone(), chunk))
            .await
            .unwrap();
    }
    daemon
        .wait_status("the vanishing client's session streams", |s| {
            s["sessions"]
                .as_array()
                .is_some_and(|all| all.len() == 2 && all.iter().all(|e| e["front"] == "wyoming"))
        })
        .await;
    drop(s);

    let results = tokio::time::timeout(WAIT, good)
        .await
        .expect("the good client ends")
        .unwrap();
    assert_eq!(
        streamed_text(&results[0]),
        text_of(&words),
        "{}",
        results[0]
    );
    daemon
        .wait_status("every slot freed", |s| {
            s["sessions"] == json!([]) && s["upstream"]["sessions"] == 0
        })
        .await;
    util::wait_for(WAIT, "upstream sessions closed", || {
        emu.active_sessions() == 0
    })
    .await;
    // Exactly one upstream session finished its audio: the good client's.
    let ended: Vec<_> = emu
        .sessions()
        .into_iter()
        .filter(|s| s.ended_audio)
        .collect();
    assert_eq!(ended.len(), 1, "{ended:?}");
}

// --- audio-stop → transcript --------------------------------------------------

/// p50 and p99 of `values`, in ms.
fn percentiles(mut values: Vec<f64>) -> (f64, f64) {
    values.sort_by(f64::total_cmp);
    let at = |q: f64| values[((values.len() - 1) as f64 * q).round() as usize];
    (at(0.50), at(0.99))
}

fn latencies(results: &[Value]) -> Vec<f64> {
    results
        .iter()
        .map(|r| {
            r["stop_to_transcript_ms"]
                .as_f64()
                .unwrap_or_else(|| panic!("no transcript: {r}"))
        })
        .collect()
}

/// The time from `audio-stop` to `transcript` through the emulator at real
/// time (its finalize lag is the real service's order): printed, not
/// asserted on. 20 turns of 2 s, five at a time, sent at the audio's pace.
#[tokio::test(flavor = "multi_thread")]
async fn audio_stop_to_transcript_through_the_emulator() {
    let emu = util::emulator(EmulatorConfig::default()).await;
    let daemon = WyomingDaemon::start(Some(&emu), &[], 1.0).await;
    let words = marker::sentence("set a timer for ten minutes", 200, 200, 80);
    let audio = marker::encode(&words, 2_000, 16_000, 1);
    let one = job(
        daemon.dir.path(),
        "turn.raw",
        &audio,
        (16_000, 2, 1),
        json!({"realtime": true}),
    );
    let mut all = Vec::new();
    for _ in 0..4 {
        let results = daemon.transcribe(&vec![one.clone(); 5]).await;
        for result in &results {
            assert_eq!(streamed_text(result), text_of(&words), "{result}");
        }
        all.extend(latencies(&results));
    }
    let (p50, p99) = percentiles(all);
    eprintln!(
        "audio-stop → transcript through the emulator, 20 turns: p50 {p50:.0} ms, p99 {p99:.0} ms"
    );
}

/// The same through the local engine: six turns of the fixture's first
/// 4 s, one at a time, sent at the audio's pace; printed, not asserted on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audio_stop_to_transcript_through_the_local_engine() {
    if !crate::local::engine_provisioned() {
        return;
    }
    let (wav, _) = crate::local::speech_fixture();
    let wav = std::fs::read(wav).unwrap();
    let pcm = wav_pcm(&wav);
    let clip = &pcm[..pcm.len().min(4 * 32_000)];
    let daemon = WyomingDaemon::start(None, &["--engine", "local"], 1.0).await;
    let one = job(
        daemon.dir.path(),
        "clip.raw",
        clip,
        (16_000, 2, 1),
        json!({"realtime": true}),
    );
    let mut all = Vec::new();
    for _ in 0..6 {
        let results = daemon.transcribe(std::slice::from_ref(&one)).await;
        assert!(!streamed_text(&results[0]).is_empty(), "{}", results[0]);
        all.extend(latencies(&results));
    }
    let (p50, p99) = percentiles(all);
    eprintln!(
        "audio-stop → transcript through the local engine, 6 turns: p50 {p50:.0} ms, p99 {p99:.0} ms"
    );
}
