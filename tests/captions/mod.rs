//! Live captions (`--format srt`, `--format vtt`) through the built binary:
//! against the emulator with drops, rotation and idle close, live while the
//! stream runs, bilingual (`emulated`); and on real speech with the local
//! engine (`local`).
//!
//! The speech is marker audio in utterances with pauses between them, so
//! every word's text and times are known: the checks here parse the files
//! (a parser of their own, then ffmpeg and webvtt-py) and hold every cue
//! to the rules: every word once, in order; each cue from its first word's
//! start to at or after its last word's end; the line, cue and duration
//! limits; a new cue at each utterance and at each pause.

mod emulated;
mod local;

use std::path::{Path, PathBuf};

use soniox_emulator::marker::{self, Word};

use crate::util;

/// The cue rules' defaults, as the man page states them.
pub const LINE_CHARS: usize = 42;
pub const LINES: usize = 2;
pub const MIN_MS: u64 = 1_000;
pub const MAX_MS: u64 = 7_000;
pub const PAUSE_MS: u64 = 1_200;
pub const READING_CPS: f64 = 17.0;

/// One cue as read back from a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Cue {
    pub index: u64,
    pub start_ms: u64,
    pub end_ms: u64,
    /// The lines as a reader sees them: SRT's label kept, WebVTT's voice
    /// span and character references undone.
    pub lines: Vec<String>,
}

impl Cue {
    /// The cue's words, without a speaker label.
    pub fn words(&self) -> Vec<String> {
        let text = self.lines.join(" ");
        let text = match text.strip_prefix('[') {
            Some(rest) => rest.split_once("] ").map_or(text.as_str(), |(_, t)| t),
            None => text.as_str(),
        }
        .to_owned();
        text.split_whitespace().map(str::to_owned).collect()
    }
}

/// Marker speech: utterances of `sizes` words, a word every 400 ms (each
/// 300 ms long), 2.8 s of silence after each (the emulator's endpoint comes
/// 2 s after the last word), from 500 ms on. The words, the index of each
/// utterance's first word, and the audio with 2.5 s of silence at the end.
pub fn utterances(sizes: &[usize]) -> (Vec<Word>, Vec<usize>, Vec<u8>) {
    let total: usize = sizes.iter().sum();
    let texts = marker::script(total, 400, 0);
    let mut words = Vec::with_capacity(total);
    let mut firsts = Vec::with_capacity(sizes.len());
    let mut at = 500;
    for &size in sizes {
        firsts.push(words.len());
        for _ in 0..size {
            let text = texts[words.len()].text.clone();
            words.push(Word {
                text,
                start_ms: at,
                duration_ms: 300,
            });
            at += 400;
        }
        at += 2_800 - 100;
    }
    let total_ms = words.last().map_or(0, Word::end_ms) + 2_500;
    let audio = marker::encode(&words, total_ms, 16_000, 1);
    (words, firsts, audio)
}

/// A cue's `HH:MM:SS,mmm` (or `.mmm`) time in ms.
fn time(text: &str) -> u64 {
    let (clock, millis) = text
        .trim()
        .split_once([',', '.'])
        .unwrap_or_else(|| panic!("not a cue time: {text:?}"));
    let parts: Vec<u64> = clock
        .split(':')
        .map(|p| {
            p.parse()
                .unwrap_or_else(|_| panic!("not a cue time: {text:?}"))
        })
        .collect();
    // WebVTT may leave the hours out.
    let (h, m, s) = match parts[..] {
        [h, m, s] => (h, m, s),
        [m, s] => (0, m, s),
        _ => panic!("not a cue time: {text:?}"),
    };
    ((h * 60 + m) * 60 + s) * 1000 + millis.parse::<u64>().unwrap()
}

/// Cue blocks (separated by blank lines) as cues; `vtt` undoes WebVTT's
/// markup, and takes cues without an identifier (numbered by position).
fn blocks(text: &str, vtt: bool) -> Vec<Cue> {
    text.split("\n\n")
        .filter(|b| !b.trim().is_empty())
        .enumerate()
        .map(|(at, block)| {
            let mut lines = block.lines().peekable();
            let index = match lines.peek() {
                Some(line) if vtt && line.contains("-->") => at as u64 + 1,
                _ => lines.next().unwrap().trim().parse().unwrap_or_else(|_| {
                    panic!("a cue without its number: {block:?}");
                }),
            };
            let times = lines.next().unwrap_or_default();
            let (start, end) = times
                .split_once(" --> ")
                .unwrap_or_else(|| panic!("a cue without times: {block:?}"));
            let lines = lines
                .map(|line| {
                    if !vtt {
                        return line.to_owned();
                    }
                    let line = match line.strip_prefix("<v ") {
                        Some(rest) => rest.split_once('>').map_or(rest, |(_, t)| t),
                        None => line,
                    };
                    line.replace("&lt;", "<")
                        .replace("&gt;", ">")
                        .replace("&amp;", "&")
                })
                .collect();
            Cue {
                index,
                start_ms: time(start),
                end_ms: time(end),
                lines,
            }
        })
        .collect()
}

/// An SRT file's cues.
pub fn parse_srt(text: &str) -> Vec<Cue> {
    blocks(text, false)
}

/// A WebVTT file's cues; it must begin with the header.
pub fn parse_vtt(text: &str) -> Vec<Cue> {
    let body = text
        .strip_prefix("WEBVTT\n\n")
        .unwrap_or_else(|| panic!("no WEBVTT header: {:?}", &text[..text.len().min(40)]));
    blocks(body, true)
}

/// Holds `cues` to the rules against the words spoken: every word once, in
/// order; numbers from 1; each cue from its first word's start to at or
/// after its last word's end; the limits; a cue at each utterance (whose
/// first words are `firsts`) and at each pause; no overlap.
pub fn assert_cues(cues: &[Cue], words: &[Word], firsts: &[usize]) {
    assert!(!cues.is_empty(), "no cues");
    let mut next = 0;
    let mut starts = Vec::new();
    for (n, cue) in cues.iter().enumerate() {
        assert_eq!(
            cue.index,
            n as u64 + 1,
            "cues are numbered in order: {cue:?}"
        );
        let first = next;
        for text in cue.words() {
            let word = words
                .get(next)
                .unwrap_or_else(|| panic!("more words than spoken: {text} in {cue:?}"));
            assert_eq!(text, word.text.trim(), "word {next} in {cue:?}");
            next += 1;
        }
        assert!(next > first, "an empty cue: {cue:?}");
        starts.push(first);
        let last = &words[next - 1];
        assert_eq!(cue.start_ms, words[first].start_ms, "{cue:?}");
        assert!(
            cue.end_ms >= last.end_ms(),
            "ends before its last word: {cue:?}"
        );
        let duration = cue.end_ms - cue.start_ms;
        assert!(duration <= MAX_MS, "longer than {MAX_MS} ms: {cue:?}");
        assert!(cue.lines.len() <= LINES, "{cue:?}");
        for line in &cue.lines {
            assert!(line.chars().count() <= LINE_CHARS, "{line:?} in {cue:?}");
        }
        for pair in words[first..next].windows(2) {
            assert!(
                pair[1].start_ms < pair[0].end_ms() + PAUSE_MS,
                "a pause inside {cue:?}"
            );
        }
        // Held for its minimum and for reading unless the next word came
        // first (the audio did not allow it).
        let next_start = words.get(next).map(|w| w.start_ms);
        let chars: usize = cue.lines.iter().map(|l| l.chars().count()).sum();
        let cut_short = next_start == Some(cue.end_ms);
        assert!(duration >= MIN_MS || cut_short, "too short: {cue:?}");
        let cps = chars as f64 * 1000.0 / duration as f64;
        assert!(
            cps <= READING_CPS + 0.05 || cut_short || duration == MAX_MS,
            "{cps:.1} characters a second: {cue:?}"
        );
    }
    assert_eq!(next, words.len(), "words missing after {next}");
    for first in firsts {
        assert!(
            starts.contains(first),
            "utterance at word {first} does not start a cue"
        );
    }
    for pair in cues.windows(2) {
        assert!(pair[0].end_ms <= pair[1].start_ms, "overlap: {pair:?}");
    }
}

/// Converts `input` with ffmpeg (the format by the extensions) and returns
/// the file it wrote.
pub fn ffmpeg_convert(input: &Path, output: &str) -> PathBuf {
    let ffmpeg =
        util::which("ffmpeg").expect("no ffmpeg on PATH: run scripts/test, which installs it");
    let out = input.with_file_name(output);
    let run = std::process::Command::new(ffmpeg)
        .args(["-nostdin", "-loglevel", "error", "-y", "-i"])
        .arg(input)
        .arg(&out)
        .output()
        .expect("run ffmpeg");
    assert!(
        run.status.success(),
        "ffmpeg could not read {}: {}",
        input.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    out
}

/// The Python with webvtt-py: `STTPIPE_TEST_PYTHON` if it has it, else
/// `target/test-venv`'s, else a `python3` on `PATH` that has it.
fn webvtt_python() -> PathBuf {
    let has = |python: &Path| {
        std::process::Command::new(python)
            .args(["-c", "import webvtt"])
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/test-venv/bin/python");
    [
        std::env::var_os("STTPIPE_TEST_PYTHON").map(PathBuf::from),
        Some(venv),
        util::which("python3"),
    ]
    .into_iter()
    .flatten()
    .find(|python| has(python))
    .unwrap_or_else(|| panic!("no python with webvtt-py: run scripts/test, which installs it"))
}

/// The cues webvtt-py reads from `path`: (identifier, start, end, text).
pub fn webvtt_py(path: &Path) -> Vec<(String, u64, u64, String)> {
    const SCRIPT: &str = "import json, sys, webvtt\n\
        print(json.dumps([[c.identifier, c.start, c.end, c.text] for c in webvtt.read(sys.argv[1])]))";
    let run = std::process::Command::new(webvtt_python())
        .args(["-c", SCRIPT])
        .arg(path)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python");
    assert!(
        run.status.success(),
        "webvtt-py could not parse {}: {}",
        path.display(),
        String::from_utf8_lossy(&run.stderr)
    );
    let cues: Vec<(String, String, String, String)> =
        serde_json::from_slice(&run.stdout).expect("webvtt-py's cues as JSON");
    cues.into_iter()
        .map(|(id, start, end, text)| (id, time(&start), time(&end), text))
        .collect()
}
