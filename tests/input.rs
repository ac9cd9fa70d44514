//! Input edge cases: empty input, odd byte counts, WAV headers, files, FIFOs.

use std::io::Write;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use soniox_emulator::EmulatorConfig;
use soniox_emulator::marker;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::util::{self, KEY};

/// No audio at all: nothing to transcribe, a clean exit, no upstream session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn empty_input_exits_0() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let out = util::run(util::sttpipe(Some(&emulator.url()), Some(KEY)), Vec::new()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.stderr, "");
    out.events();
    assert!(
        emulator.sessions().is_empty(),
        "a session was opened for no audio"
    );
}

/// An odd byte count: the partial sample is never sent, and stderr says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_byte_count_drops_the_partial_sample() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let (words, mut audio) = util::marker_audio(4, 400, 2_500);
    audio.push(0x7f);
    let out = util::run(util::sttpipe(Some(&emulator.url()), Some(KEY)), audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.stderr.trim(),
        "sttpipe: warning: dropped 1 trailing byte that did not make a whole sample frame"
    );
    assert_eq!(out.final_words(), util::expected(&words));
    assert_eq!(emulator.sessions()[0].audio_bytes, 2_500 * 32);
}

/// A WAV file is recognised: its header decides the format, and the header
/// bytes are not sent as audio.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wav_header_is_respected() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let words = marker::script(4, 400, 500);
    let pcm = marker::encode(&words, 2_500, 8_000, 2);
    let dir = tempfile::tempdir().unwrap();
    let path = util::write_file(dir.path(), "talk.wav", &util::wav(&pcm, 8_000, 2));
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.arg("--input").arg(&path);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.final_words(), util::expected(&words));
    let session = &emulator.sessions()[0];
    let start = session.start_request.as_ref().unwrap();
    assert_eq!(start["audio_format"], "pcm_s16le");
    assert_eq!(start["sample_rate"], 8000);
    assert_eq!(start["num_channels"], 2);
    assert_eq!(session.audio_bytes, pcm.len() as u64);
    assert_eq!(out.of_type("start")[0]["sample_rate"], 8000);
}

/// A container format is passed through untouched, by name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn containers_pass_through() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let bytes: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.args(["--audio-format", "mp3"]);
    let out = util::run(command, bytes.clone()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let session = &emulator.sessions()[0];
    assert_eq!(
        session.start_request.as_ref().unwrap()["audio_format"],
        "mp3"
    );
    assert!(
        session
            .start_request
            .as_ref()
            .unwrap()
            .get("sample_rate")
            .is_none()
    );
    assert_eq!(session.audio_bytes, bytes.len() as u64);
    let end = out.of_type("end");
    assert!(end[0]["audio_ms"].as_u64().unwrap() > 0, "{}", out.stdout);
}

/// A missing input file: exit 66, one line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_input_exits_66() {
    let mut command = util::sttpipe(Some("ws://127.0.0.1:9/"), Some(KEY));
    command.args(["--input", "/nonexistent/talk.raw"]);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(66), "stderr: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1);
    assert!(
        out.stderr
            .starts_with("sttpipe: cannot open /nonexistent/talk.raw"),
        "{}",
        out.stderr
    );
}

/// Reads the child's stdout events until `done` says so (bounded).
pub async fn read_events_until(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    events: &mut Vec<Value>,
    bound: Duration,
    done: impl Fn(&[Value]) -> bool,
) {
    let deadline = Instant::now() + bound;
    while !done(events) {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let line = tokio::time::timeout(remaining, lines.next_line())
            .await
            .unwrap_or_else(|_| {
                panic!("condition not reached within {bound:?}; events: {events:?}")
            })
            .expect("read stdout")
            .unwrap_or_else(|| panic!("stdout closed early; events: {events:?}"));
        events.push(serde_json::from_str(&line).expect("stdout line is JSON"));
    }
}

/// Two writers in turn on a FIFO under --follow: both writers' words come
/// back, each writer's audio is finalized when it closes, the timeline runs
/// on, and the second writer never meets a FIFO without a reader.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifo_two_writers_in_turn_under_follow() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("mic.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();

    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command.arg("--input").arg(&fifo).arg("--follow");
    let mut child = util::spawn(command);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();

    let first = marker::script(3, 400, 300);
    let second: Vec<_> = marker::script(3, 400, 300)
        .into_iter()
        .map(|mut w| {
            w.text = format!("{} again", w.text);
            w
        })
        .collect();
    let mut events = Vec::new();
    for (writer, words) in [&first, &second].into_iter().enumerate() {
        let audio = marker::encode(words, 1_600, 16_000, 1);
        let path = fifo.clone();
        let wrote = std::thread::spawn(move || {
            let mut f = std::fs::OpenOptions::new().write(true).open(path)?;
            f.write_all(&audio)
        });
        // Each writer's audio is finalized when it closes.
        read_events_until(&mut lines, &mut events, Duration::from_secs(20), |e| {
            e.iter().filter(|e| e["type"] == "finalized").count() > writer
        })
        .await;
        wrote
            .join()
            .unwrap()
            .expect("the writer's audio went in without EPIPE");
    }
    let mut expected = util::expected(&first);
    expected.extend(second.iter().map(|w| (w.text.clone(), w.start_ms + 1_600)));
    assert_eq!(util::final_words(&events), expected);
    assert_eq!(
        emulator.sessions().len(),
        1,
        "one upstream session across writers"
    );
    assert!(emulator.sessions()[0].finalizes >= 2);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id().unwrap() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .unwrap()
        .unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(15));
    while let Ok(Some(line)) = lines.next_line().await {
        events.push(serde_json::from_str(&line).unwrap());
    }
    assert_eq!(events.last().unwrap()["type"], json!("end"));
}

/// --idle-close: the upstream session closes when audio stops for a while and
/// a new one opens when it returns; timestamps stay on one timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_close_and_reopen_keep_one_timeline() {
    let emulator = util::emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("mic.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command
        .arg("--input")
        .arg(&fifo)
        .args(["--follow", "--idle-close", "1"]);
    let mut child = util::spawn(command);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let words = marker::script(2, 400, 300);
    let audio = marker::encode(&words, 1_200, 16_000, 1);
    let mut events = Vec::new();
    for round in 0..2u64 {
        let path = fifo.clone();
        let audio = audio.clone();
        let wrote = std::thread::spawn(move || {
            std::fs::OpenOptions::new()
                .write(true)
                .open(path)?
                .write_all(&audio)
        });
        wrote.join().unwrap().unwrap();
        // The upstream session closes after a second of silence.
        let deadline = Instant::now() + Duration::from_secs(15);
        while emulator.active_sessions() > 0 || emulator.sessions().len() as u64 <= round {
            assert!(
                Instant::now() < deadline,
                "upstream session not idle-closed"
            );
            tokio::task::yield_now().await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    read_events_until(&mut lines, &mut events, Duration::from_secs(10), |e| {
        util::final_words(e).len() == 4
    })
    .await;
    let mut expected = util::expected(&words);
    expected.extend(words.iter().map(|w| (w.text.clone(), w.start_ms + 1_200)));
    assert_eq!(util::final_words(&events), expected);
    assert_eq!(emulator.sessions().len(), 2);
    child.kill().await.unwrap();
}
