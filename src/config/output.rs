//! The filter's output, resolved: stdout's format, the cue rules, and the
//! files beside stdout, every value checked once. What the output needs of
//! the session (endpoints for captions, the non-final tail for the
//! now-showing file) is added to the session's options by
//! [`super::resolve`].

use crate::cli::Opts;
use crate::cli::values::{OutputFormat, Seconds};
use crate::error::{Error, Result};
use crate::output::captions::CueRules;
use crate::output::subtitles::SubtitleFormat;
use crate::output::{Format, OutputConfig};

/// The widest caption line taken, in characters.
const MAX_CUE_LINE_CHARS: usize = 200;
/// The most lines a cue may have.
const MAX_CUE_LINES: usize = 10;
/// The narrowest caption line taken: room for a speaker label and a word.
const MIN_CUE_LINE_CHARS: usize = 20;
/// The fastest reading speed taken, characters a second.
const MAX_READING_SPEED: u32 = 100;
/// The longest cue taken: far past any rule, short of a cue that never ends.
const MAX_CUE_SECS: u64 = 600;

/// The filter's output: stdout's format and what goes beside it.
pub(crate) fn resolve(opts: &Opts) -> Result<OutputConfig> {
    let format = match opts.format {
        OutputFormat::Ndjson => Format::Ndjson,
        OutputFormat::Text => Format::Text,
        OutputFormat::Srt => Format::Captions(SubtitleFormat::Srt),
        OutputFormat::Vtt => Format::Captions(SubtitleFormat::Vtt),
    };
    if opts.timestamps && format != Format::Text {
        return Err(Error::Usage(
            "--timestamps is for --format text (captions have their own times)".into(),
        ));
    }
    if opts.captions_translation.is_some() {
        if !matches!(format, Format::Captions(_)) {
            return Err(Error::Usage(
                "--captions-translation writes a second caption track: use --format srt or vtt"
                    .into(),
            ));
        }
        if opts.session.translate_to.is_none() && opts.session.translate.is_none() {
            return Err(Error::Usage(
                "--captions-translation needs a translation: add --translate-to LANG or --translate A:B"
                    .into(),
            ));
        }
    }
    Ok(OutputConfig {
        format,
        partials: opts.session.partials,
        timestamps: opts.timestamps,
        cues: cue_rules(opts)?,
        translation_track: opts.captions_translation.clone(),
        now_file: opts.now_file.clone(),
    })
}

/// The cue rules, in range and consistent.
fn cue_rules(opts: &Opts) -> Result<CueRules> {
    let ms = |secs: Seconds| secs.get().as_millis() as u64;
    if !(MIN_CUE_LINE_CHARS..=MAX_CUE_LINE_CHARS).contains(&opts.cue_line_chars) {
        return Err(Error::Usage(format!(
            "--cue-line-chars {} is out of range ({MIN_CUE_LINE_CHARS} to {MAX_CUE_LINE_CHARS})",
            opts.cue_line_chars
        )));
    }
    if !(1..=MAX_CUE_LINES).contains(&opts.cue_lines) {
        return Err(Error::Usage(format!(
            "--cue-lines {} is out of range (1 to {MAX_CUE_LINES})",
            opts.cue_lines
        )));
    }
    if !(1..=MAX_READING_SPEED).contains(&opts.cue_reading_speed) {
        return Err(Error::Usage(format!(
            "--cue-reading-speed {} is out of range (1 to {MAX_READING_SPEED} characters a second)",
            opts.cue_reading_speed
        )));
    }
    let (min_ms, max_ms, pause_ms) = (
        ms(opts.cue_min_duration),
        ms(opts.cue_max_duration),
        ms(opts.cue_pause),
    );
    if !(1000..=MAX_CUE_SECS * 1000).contains(&max_ms) {
        return Err(Error::Usage(format!(
            "--cue-max-duration must be from 1 to {MAX_CUE_SECS} seconds"
        )));
    }
    if min_ms > max_ms {
        return Err(Error::Usage(
            "--cue-min-duration is longer than --cue-max-duration".into(),
        ));
    }
    if pause_ms < 100 {
        return Err(Error::Usage(
            "--cue-pause must be at least 0.1 seconds: shorter gaps come between words".into(),
        ));
    }
    Ok(CueRules {
        line_chars: opts.cue_line_chars,
        lines: opts.cue_lines,
        min_ms,
        max_ms,
        pause_ms,
        chars_per_sec: f64::from(opts.cue_reading_speed),
    })
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::Opts;
    use crate::config::{FilterConfig, Target};
    use crate::error::{Error, Result};
    use crate::output::Format;
    use crate::output::subtitles::SubtitleFormat;

    fn parse(args: &[&str]) -> Result<FilterConfig> {
        let mut argv = vec!["sttpipe"];
        argv.extend_from_slice(args);
        let opts = Opts::try_parse_from(argv).map_err(|e| Error::Usage(e.to_string()))?;
        FilterConfig::from_opts(opts, &|name| {
            (name == "SONIOX_API_KEY").then(|| "k".to_owned())
        })
    }

    #[test]
    fn captions_turn_endpoints_on_and_take_the_standard_rules() {
        let config = parse(&["--format", "vtt"]).unwrap();
        assert_eq!(config.output.format, Format::Captions(SubtitleFormat::Vtt));
        assert!(config.session.recognition.endpoint_detection);
        assert_eq!(
            config.output.cues,
            crate::output::captions::CueRules::default()
        );
        assert_eq!(config.output.cues.pause_ms, 1_200);
        let plain = parse(&[]).unwrap();
        assert!(!plain.session.recognition.endpoint_detection);
    }

    #[test]
    fn the_now_file_asks_for_the_tail_without_writing_it() {
        let config = parse(&["--now-file", "/tmp/now.txt"]).unwrap();
        assert!(config.session.partials, "the session makes the tail");
        assert!(!config.output.partials, "stdout does not show it");
        let config = parse(&[
            "--now-file",
            "/tmp/now.txt",
            "--format",
            "srt",
            "--connect",
            "/nonexistent.sock",
        ])
        .unwrap();
        let Target::Daemon { header, .. } = config.target else {
            panic!("--connect: through the daemon")
        };
        assert!(header.partials && header.endpoint_detection, "{header:?}");
    }

    #[test]
    fn cue_flags_resolve() {
        let config = parse(&[
            "--format",
            "srt",
            "--cue-line-chars",
            "32",
            "--cue-lines",
            "1",
            "--cue-min-duration",
            "0.5",
            "--cue-max-duration",
            "5",
            "--cue-pause",
            "0.8",
            "--cue-reading-speed",
            "20",
            "--translate-to",
            "de",
            "--captions-translation",
            "/tmp/de.srt",
        ])
        .unwrap();
        let cues = &config.output.cues;
        assert_eq!(
            (
                cues.line_chars,
                cues.lines,
                cues.min_ms,
                cues.max_ms,
                cues.pause_ms
            ),
            (32, 1, 500, 5_000, 800)
        );
        assert_eq!(cues.chars_per_sec, 20.0);
        assert!(config.output.translation_track.is_some());
    }

    #[test]
    fn bad_output_flags_are_usage_errors() {
        for args in [
            &["--timestamps"][..],
            &["--format", "srt", "--timestamps"],
            &["--captions-translation", "x.srt", "--translate-to", "de"],
            &["--format", "srt", "--captions-translation", "x.srt"],
            &["--cue-line-chars", "5"],
            &["--cue-lines", "0"],
            &["--cue-reading-speed", "0"],
            &["--cue-max-duration", "0.5"],
            &["--cue-min-duration", "8"],
            &["--cue-pause", "0"],
            &["--format", "sbv"],
        ] {
            assert!(matches!(parse(args), Err(Error::Usage(_))), "{args:?}");
        }
        let listed = match parse(&["--format", "sbv"]) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("an unknown format"),
        };
        assert!(listed.contains("srt") && listed.contains("vtt"), "{listed}");
    }
}
