//! Media files and FILE operands, as a new user would try them: the local
//! engine on real speech in every format sttpipe decodes, files one after
//! another on one timeline, `-` for stdin, a missing file.

use crate::util;
use crate::util::wer::word_error_rate;

/// The committed speech fixture, its reference text.
fn speech() -> (std::path::PathBuf, String) {
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let reference = std::fs::read_to_string(fixtures.join("speech-16k.txt")).unwrap();
    (fixtures.join("speech-16k.wav"), reference)
}

/// The local engine's final text for `file`, given as an operand.
async fn local_text(file: &std::path::Path) -> String {
    let mut command = util::sttpipe(None, None);
    command.args(["--engine", "local"]).arg(file);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(0), "{}: {}", file.display(), out.stderr);
    assert_eq!(out.stderr, "", "{}", file.display());
    out.of_type("token")
        .iter()
        .map(|t| t["text"].as_str().unwrap())
        .collect()
}

/// The fixture as MP3 (44.1 kHz stereo), FLAC, Ogg Vorbis, M4A (AAC) and
/// 48 kHz stereo float WAV, each an operand of `sttpipe --engine local`:
/// the words of the 16 kHz WAV, within 5 points of its word error rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_local_engine_takes_every_format_decoded() {
    if !crate::local::engine_provisioned() {
        return;
    }
    let (wav, reference) = speech();
    let baseline = word_error_rate(&reference, &local_text(&wav).await);
    let dir = tempfile::tempdir().unwrap();
    let wav_arg = wav.to_str().unwrap();
    for (name, codec) in [
        (
            "speech.mp3",
            &["-ar", "44100", "-ac", "2", "-b:a", "128k"][..],
        ),
        ("speech.flac", &[][..]),
        ("speech.ogg", &["-c:a", "libvorbis"][..]),
        ("speech.m4a", &["-c:a", "aac"][..]),
        (
            "speech-48k.wav",
            &["-ar", "48000", "-ac", "2", "-c:a", "pcm_f32le"][..],
        ),
    ] {
        let path = dir.path().join(name);
        let mut args = vec!["-i", wav_arg];
        args.extend_from_slice(codec);
        args.push(path.to_str().unwrap());
        util::ffmpeg(&args, &[]);
        let wer = word_error_rate(&reference, &local_text(&path).await);
        eprintln!(
            "{name}: WER {:.1} % (16 kHz WAV: {:.1} %)",
            wer * 100.0,
            baseline * 100.0
        );
        assert!(
            wer <= baseline + 0.05,
            "{name}: WER {:.1} % against {:.1} %",
            wer * 100.0,
            baseline * 100.0
        );
    }
}

/// Two operands, a WAV and a FLAC of marker audio: one stream, the second
/// file's words on from the end of the first, each exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_files_play_on_one_timeline() {
    let emulator = util::emulator(Default::default()).await;
    let (first_words, first) = util::marker_audio(6, 500, 4_000);
    let (second_words, second) = util::marker_audio(6, 500, 4_000);
    let dir = tempfile::tempdir().unwrap();
    let a = util::write_file(dir.path(), "a.wav", &util::wav(&first, 16_000, 1));
    let flac = util::ffmpeg(
        &[
            "-f", "s16le", "-ar", "16000", "-ac", "1", "-i", "-", "-f", "flac", "-",
        ],
        &second,
    );
    let b = util::write_file(dir.path(), "b.flac", &flac);
    let mut command = util::sttpipe(Some(&emulator.url()), Some(util::KEY));
    command.env("STTPIPE_PACE_FACTOR", "8").arg(&a).arg(&b);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    let mut want = util::expected(&first_words);
    want.extend(
        util::expected(&second_words)
            .into_iter()
            .map(|(text, start)| (text, start + 4_000)),
    );
    assert_eq!(out.final_words(), want);
    assert_eq!(emulator.sessions().len(), 1, "one stream, one session");
}

/// `-` is stdin, among operands or alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dash_is_stdin() {
    let emulator = util::emulator(Default::default()).await;
    let (words, audio) = util::marker_audio(4, 500, 3_000);
    let mut command = util::sttpipe(Some(&emulator.url()), Some(util::KEY));
    command.env("STTPIPE_PACE_FACTOR", "8").arg("-");
    let out = util::run(command, audio).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(out.final_words(), util::expected(&words));
}

/// A missing operand: one line on stderr, exit 66, before anything else
/// is read (the first file exists).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_file_is_one_line_and_exit_66() {
    let dir = tempfile::tempdir().unwrap();
    let (_, audio) = util::marker_audio(2, 500, 2_000);
    let present = util::write_file(dir.path(), "here.wav", &util::wav(&audio, 16_000, 1));
    let missing = dir.path().join("missing.mp3");
    let mut command = util::sttpipe(Some("ws://127.0.0.1:9/x"), Some(util::KEY));
    command
        .args(["--format", "text"])
        .arg(&present)
        .arg(&missing);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(66), "stderr: {}", out.stderr);
    assert_eq!(out.stderr.lines().count(), 1, "{}", out.stderr);
    assert!(out.stderr.contains("missing.mp3"), "{}", out.stderr);
    assert_eq!(out.stdout, "", "--format text writes no JSON");
}

/// A text file given as audio: read as raw audio, with a warning that says
/// what sttpipe saw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_text_file_is_warned_of() {
    let emulator = util::emulator(Default::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let notes = util::write_file(
        dir.path(),
        "notes.txt",
        "some notes, not audio\n".repeat(20).as_bytes(),
    );
    let mut command = util::sttpipe(Some(&emulator.url()), Some(util::KEY));
    command.env("STTPIPE_PACE_FACTOR", "8").arg(&notes);
    let out = util::run(command, Vec::new()).await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("sttpipe: warning: ")
            && out.stderr.contains("notes.txt looks like text, not audio"),
        "{}",
        out.stderr
    );
}
