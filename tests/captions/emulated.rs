//! Captions against the emulator, at [`PACE`] times real time: drops every
//! 10 s, a live stream read while it runs, rotation and an idle close in
//! the middle, a translation track, and `--format text --timestamps`.

use std::process::Stdio;
use std::time::{Duration, Instant};

use soniox_emulator::{Emulator, EmulatorConfig, Outcome};
use tokio::io::AsyncWriteExt;

use super::{Cue, assert_cues, ffmpeg_convert, parse_srt, parse_vtt, utterances, webvtt_py};
use crate::util::{self, KEY};

/// How many times faster than real time sttpipe and the emulator run.
const PACE: f64 = 8.0;
/// Bound on waiting for a state that a correct sttpipe reaches in seconds.
const WAIT: Duration = Duration::from_secs(30);
/// Bytes of 16 kHz mono pcm_s16le per ms.
const BYTES_PER_MS: usize = 32;
/// Utterances of every size the rules treat apart: one word, a line, two
/// lines, past two lines, past 7 s.
const SIZES: [usize; 10] = [4, 9, 22, 3, 15, 1, 12, 25, 6, 10];

async fn emulator(config: EmulatorConfig) -> Emulator {
    util::emulator(EmulatorConfig {
        time_scale: PACE,
        ..config
    })
    .await
}

fn sttpipe(emulator: &Emulator, args: &[&str]) -> tokio::process::Command {
    let mut command = util::sttpipe(Some(&emulator.url()), Some(KEY));
    command
        .env("STTPIPE_PACE_FACTOR", PACE.to_string())
        .args(args);
    command
}

/// Every word once across the cues, through connections dropped every 10 s
/// of audio, in both formats; ffmpeg reads both files, and webvtt-py reads
/// the WebVTT as we do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn srt_and_vtt_hold_every_word_once_across_drops() {
    let (words, firsts, audio) = utterances(&SIZES);
    let dir = tempfile::tempdir().unwrap();
    for format in ["srt", "vtt"] {
        let emulator = emulator(EmulatorConfig {
            drop_after_audio_ms: Some(10_000),
            ..EmulatorConfig::default()
        })
        .await;
        let out = util::run(sttpipe(&emulator, &["--format", format]), audio.clone()).await;
        assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
        let dropped = emulator
            .sessions()
            .iter()
            .filter(|s| s.outcome == Outcome::Dropped)
            .count();
        assert!(dropped >= 3, "{dropped} drops");
        let cues = match format {
            "srt" => parse_srt(&out.stdout),
            _ => parse_vtt(&out.stdout),
        };
        assert_cues(&cues, &words, &firsts);
        let file = util::write_file(dir.path(), &format!("out.{format}"), out.stdout.as_bytes());
        let other = if format == "srt" { "vtt" } else { "srt" };
        let converted = ffmpeg_convert(&file, &format!("ffmpeg.{other}"));
        let text = std::fs::read_to_string(&converted).unwrap();
        let back = if other == "srt" {
            parse_srt(&text)
        } else {
            parse_vtt(&text)
        };
        assert_same_cues(&back, &cues, "ffmpeg");
        if format == "vtt" {
            let read = webvtt_py(&file);
            assert_eq!(read.len(), cues.len());
            for ((id, start, end, text), cue) in read.iter().zip(&cues) {
                assert_eq!(id, &cue.index.to_string());
                assert_eq!((*start, *end), (cue.start_ms, cue.end_ms));
                assert_eq!(text.split_whitespace().collect::<Vec<_>>(), cue.words());
            }
        }
        eprintln!(
            "captions ({format}): {} words in {} cues, {dropped} drops",
            words.len(),
            cues.len()
        );
    }
}

/// What another reader made of our cues: the same times and words.
fn assert_same_cues(read: &[Cue], cues: &[Cue], reader: &str) {
    assert_eq!(
        read.len(),
        cues.len(),
        "{reader} read a different number of cues"
    );
    for (a, b) in read.iter().zip(cues) {
        assert_eq!(
            (a.start_ms, a.end_ms),
            (b.start_ms, b.end_ms),
            "{reader}: {a:?}"
        );
        assert_eq!(a.words(), b.words(), "{reader}: {a:?}");
    }
}

/// While a 40 s stream runs (its input still open, the rest of its audio
/// not written yet), the file it writes to already holds the cues of its
/// first 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cues_are_in_the_file_while_the_stream_runs() {
    let emulator = emulator(EmulatorConfig::default()).await;
    let (words, firsts, audio) = utterances(&[5, 8, 3, 10, 6, 4, 9, 2]);
    assert!(audio.len() >= 40_000 * BYTES_PER_MS, "a 40 s stream");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("talk.vtt");
    let mut command = sttpipe(&emulator, &["--format", "vtt"]);
    command
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&path).unwrap())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("spawn sttpipe");
    let mut stdin = child.stdin.take().unwrap();
    let (head, rest) = audio.split_at(20_000 * BYTES_PER_MS);
    stdin.write_all(head).await.unwrap();

    let early: Vec<_> = words.iter().filter(|w| w.end_ms() <= 15_000).collect();
    util::wait_for(WAIT, "the first 15 s of cues in the file", || {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        text.starts_with("WEBVTT\n\n")
            && parse_vtt(&text)
                .iter()
                .map(|c| c.words().len())
                .sum::<usize>()
                >= early.len()
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the stream is still running"
    );
    let so_far = parse_vtt(&std::fs::read_to_string(&path).unwrap());
    let shown: Vec<String> = so_far.iter().flat_map(Cue::words).collect();
    let spoken: Vec<&str> = early.iter().map(|w| w.text.trim()).collect();
    assert_eq!(shown[..spoken.len()], spoken[..]);

    stdin.write_all(rest).await.unwrap();
    drop(stdin);
    let status = tokio::time::timeout(util::RUN_BOUND, child.wait())
        .await
        .expect("sttpipe ends")
        .unwrap();
    assert!(status.success(), "{status:?}");
    let cues = parse_vtt(&std::fs::read_to_string(&path).unwrap());
    assert_cues(&cues, &words, &firsts);
    assert_eq!(
        cues[..so_far.len()],
        so_far[..],
        "written cues never change"
    );
}

/// `--max-session 15` rotates the upstream session every 15 s and an idle
/// close ends it while the input pauses: one file, numbers and times run on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_and_an_idle_close_keep_numbers_and_times() {
    let emulator = emulator(EmulatorConfig {
        max_stream_ms: 20_000,
        ..EmulatorConfig::default()
    })
    .await;
    let (words, firsts, audio) = utterances(&SIZES);
    // The pause comes in the silence after the fifth utterance.
    let pause_at = words[firsts[5]].start_ms - 1_000;
    let (head, rest) = audio.split_at(pause_at as usize * BYTES_PER_MS);
    let mut command = sttpipe(
        &emulator,
        &[
            "--format",
            "srt",
            "--max-session",
            "15",
            "--idle-close",
            "2",
        ],
    );
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = command.spawn().expect("spawn sttpipe");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(head).await.unwrap();
    // Rotation is make-before-break: no session open means the idle close.
    util::wait_for(WAIT, "rotations, then an idle close", || {
        emulator.sessions().len() >= 2 && emulator.active_sessions() == 0
    })
    .await;
    let before = emulator.sessions().len();
    stdin.write_all(rest).await.unwrap();
    drop(stdin);
    let out = util::finish(child, started).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let outcomes: Vec<Outcome> = emulator.sessions().iter().map(|s| s.outcome).collect();
    assert!(
        outcomes.len() > before,
        "a new session after the idle close"
    );
    assert!(outcomes.len() >= 4, "rotations: {outcomes:?}");
    // Rotated sessions are closed by sttpipe once handed over; the idle
    // close and the end finish theirs.
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o, Outcome::Finished | Outcome::ClientClosed)),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[before - 1],
        Outcome::Finished,
        "the idle close finished the session: {outcomes:?}"
    );
    assert_cues(&parse_srt(&out.stdout), &words, &firsts);
}

/// With the emulator's translation (each word upper-cased), the translation
/// track has the same cues at the same times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_tracks_have_the_same_cues_and_times() {
    let emulator = emulator(EmulatorConfig::default()).await;
    let (words, firsts, audio) = utterances(&SIZES[..6]);
    let dir = tempfile::tempdir().unwrap();
    let track = dir.path().join("fr.srt");
    let mut command = sttpipe(&emulator, &["--format", "srt", "--translate-to", "fr"]);
    command.arg("--captions-translation").arg(&track);
    let out = util::run(command, audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let spoken = parse_srt(&out.stdout);
    assert_cues(&spoken, &words, &firsts);
    let translated = parse_srt(&std::fs::read_to_string(&track).unwrap());
    assert_eq!(translated.len(), spoken.len());
    for (t, s) in translated.iter().zip(&spoken) {
        assert_eq!(
            (t.index, t.start_ms, t.end_ms),
            (s.index, s.start_ms, s.end_ms)
        );
        let upper: Vec<String> = s.words().iter().map(|w| w.to_uppercase()).collect();
        assert_eq!(t.words(), upper);
    }
    ffmpeg_convert(&track, "fr.vtt");
}

/// `--format text --timestamps`: each line begins with its first word's
/// start on the stream's timeline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_lines_begin_with_their_time() {
    let emulator = emulator(EmulatorConfig::default()).await;
    let (words, firsts, audio) = utterances(&[3, 2, 4]);
    let args = ["--format", "text", "--timestamps", "--endpoint-detection"];
    let out = util::run(sttpipe(&emulator, &args), audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), firsts.len(), "{}", out.stdout);
    for (line, &first) in lines.iter().zip(&firsts) {
        let ms = words[first].start_ms;
        let stamp = format!("[00:00:{:02}.{:03}] ", ms / 1000, ms % 1000);
        assert!(line.starts_with(&stamp), "{line:?} for {ms} ms");
    }
}

/// `--now-file`: while the stream runs, the file shows the words being
/// spoken; it is replaced whole (no temporary file stays beside it), and
/// emptied at the end. Stdout stays NDJSON without `partial` events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_now_file_shows_what_is_being_said() {
    let emulator = emulator(EmulatorConfig::default()).await;
    let (words, _, audio) = utterances(&[4, 3]);
    let dir = tempfile::tempdir().unwrap();
    let now = dir.path().join("now.txt");
    let mut command = sttpipe(&emulator, &[]);
    command.arg("--now-file").arg(&now);
    let started = Instant::now();
    let mut child = util::spawn(command);
    let mut stdin = child.stdin.take().unwrap();
    // The first utterance and part of the pause after it.
    let head = (words[3].end_ms() + 500) as usize * BYTES_PER_MS;
    stdin.write_all(&audio[..head]).await.unwrap();
    let first: Vec<&str> = words[..4].iter().map(|w| w.text.trim()).collect();
    let shown = first.join(" ");
    util::wait_for(WAIT, "the first utterance in the now-file", || {
        std::fs::read_to_string(&now).is_ok_and(|text| text == shown)
    })
    .await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "the stream is still running"
    );
    stdin.write_all(&audio[head..]).await.unwrap();
    drop(stdin);
    let out = util::finish(child, started).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(
        out.of_type("partial").len(),
        0,
        "partials only with --partials"
    );
    assert_eq!(util::final_words(&out.events()).len(), words.len());
    assert_eq!(
        std::fs::read_to_string(&now).unwrap(),
        "",
        "emptied at the end"
    );
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(names.len(), 1, "only the now-file: {names:?}");
}
