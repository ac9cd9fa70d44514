//! Rendering cues as SubRip (`.srt`) and WebVTT (`.vtt`), and the clock
//! format both share with `--format text --timestamps`.
//!
//! SRT: a number, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, the lines, a blank line;
//! a speaker is a `[Speaker 1] ` prefix. WebVTT: the `WEBVTT` header once,
//! then the same with `.` before the milliseconds, the text escaped (`&`,
//! `<`, `>`), and a speaker as a voice span (`<v Speaker 1>`). Hours run
//! past 99 on streams that long; both formats' readers take more digits.

use super::captions::{Cue, label};

/// A subtitle format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubtitleFormat {
    /// SubRip.
    Srt,
    /// WebVTT.
    Vtt,
}

impl SubtitleFormat {
    /// What a file of this format begins with, before any cue.
    pub(crate) fn header(self) -> &'static [u8] {
        match self {
            SubtitleFormat::Srt => b"",
            SubtitleFormat::Vtt => b"WEBVTT\n\n",
        }
    }

    /// Whether the speaker label is part of the cue's text (and takes room
    /// on its first line).
    pub(crate) fn label_in_text(self) -> bool {
        self == SubtitleFormat::Srt
    }

    /// Appends cue number `index` (from 1).
    pub(crate) fn render(self, index: u64, cue: &Cue, out: &mut Vec<u8>) {
        let separator = match self {
            SubtitleFormat::Srt => ',',
            SubtitleFormat::Vtt => '.',
        };
        let times = format!(
            "{index}\n{} --> {}\n",
            timestamp(cue.start_ms, separator),
            timestamp(cue.end_ms, separator)
        );
        out.extend_from_slice(times.as_bytes());
        for (n, line) in cue.lines.iter().enumerate() {
            match (self, cue.speaker.as_deref()) {
                (SubtitleFormat::Srt, Some(speaker)) if n == 0 => {
                    out.extend_from_slice(label(speaker).as_bytes());
                }
                (SubtitleFormat::Vtt, Some(speaker)) if n == 0 => {
                    out.extend_from_slice(b"<v Speaker ");
                    escape(speaker, out);
                    out.push(b'>');
                }
                _ => {}
            }
            match self {
                SubtitleFormat::Srt => out.extend_from_slice(line.as_bytes()),
                SubtitleFormat::Vtt => escape(line, out),
            }
            out.push(b'\n');
        }
        out.push(b'\n');
    }
}

/// `HH:MM:SS.mmm`, the time of a line with `--timestamps`.
pub(crate) fn clock(ms: u64) -> String {
    timestamp(ms, '.')
}

fn timestamp(ms: u64, separator: char) -> String {
    let (hours, rest) = (ms / 3_600_000, ms % 3_600_000);
    let (minutes, rest) = (rest / 60_000, rest % 60_000);
    let (seconds, millis) = (rest / 1000, rest % 1000);
    format!("{hours:02}:{minutes:02}:{seconds:02}{separator}{millis:03}")
}

/// WebVTT cue text: `&`, `<` and `>` as character references, so no text
/// can open a tag or spell the `-->` that would end the cue.
fn escape(text: &str, out: &mut Vec<u8>) {
    for c in text.chars() {
        match c {
            '&' => out.extend_from_slice(b"&amp;"),
            '<' => out.extend_from_slice(b"&lt;"),
            '>' => out.extend_from_slice(b"&gt;"),
            c => {
                let mut buf = [0; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cue(speaker: Option<&str>, lines: &[&str]) -> Cue {
        Cue {
            start_ms: 62_300,
            end_ms: 3_725_004,
            speaker: speaker.map(str::to_owned),
            lines: lines.iter().map(|l| (*l).to_owned()).collect(),
        }
    }

    fn render(format: SubtitleFormat, cue: &Cue) -> String {
        let mut out = Vec::new();
        format.render(7, cue, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn srt_numbers_times_and_labels() {
        let text = render(
            SubtitleFormat::Srt,
            &cue(Some("2"), &["Hello there", "you"]),
        );
        assert_eq!(
            text,
            "7\n00:01:02,300 --> 01:02:05,004\n[Speaker 2] Hello there\nyou\n\n"
        );
    }

    #[test]
    fn vtt_escapes_text_and_uses_voices() {
        let text = render(SubtitleFormat::Vtt, &cue(Some("1"), &["a <b> & c --> d"]));
        assert_eq!(
            text,
            "7\n00:01:02.300 --> 01:02:05.004\n<v Speaker 1>a &lt;b&gt; &amp; c --&gt; d\n\n"
        );
        assert_eq!(SubtitleFormat::Vtt.header(), b"WEBVTT\n\n");
        let plain = render(SubtitleFormat::Vtt, &cue(None, &["x"]));
        assert!(plain.ends_with("\nx\n\n"), "{plain}");
    }

    #[test]
    fn clocks_pad_and_run_past_a_day() {
        assert_eq!(clock(0), "00:00:00.000");
        assert_eq!(clock(360_000_001), "100:00:00.001");
    }
}
