//! Writing events to stdout: NDJSON for programs, text for people, SRT or
//! WebVTT captions; beside it, a caption track of the translation and a
//! now-showing file.
//!
//! A dedicated thread owns the locked stdout and writes what each event
//! makes with one `write_all` and a flush, so a line or a cue is never
//! split and reaches the pipe as soon as it is complete. The thread takes
//! events from a bounded channel; when the consumer is slow the channel
//! fills and the session waits. A closed stdout (`| head -1`) ends the
//! thread quietly: the channel closes, and the session sees its consumer
//! gone.
//!
//! * [`text`]: the `text` format;
//! * [`captions`]: the cue builder (pure), for the caption formats, the
//!   translation track and the now-showing file;
//! * [`subtitles`]: SRT and WebVTT rendering;
//! * [`now`]: the now-showing file, replaced whole at each change.

pub(crate) mod captions;
pub(crate) mod now;
pub(crate) mod subtitles;
pub(crate) mod text;

use std::fs::File;
use std::io::{self, IsTerminal, Write};
use std::path::PathBuf;
use std::thread;

use tokio::sync::mpsc;

use crate::event::Event;
use captions::{CueBuilder, CueRules, Made};
use now::NowFile;
use subtitles::SubtitleFormat;
use text::TextWriter;

/// Events queued towards the writer thread: enough for hours of transcript,
/// so a paused consumer (`less`, a slow `jq`) never holds up the audio or
/// lets the upstream session time out. Past it, `partial` events are dropped
/// and other events wait for room (backpressure).
pub(crate) const OUTPUT_QUEUE: usize = 65_536;

/// How the writer thread ended.
#[derive(Debug)]
pub(crate) enum OutputEnd {
    /// All events were written.
    Done,
    /// The reader closed the pipe; later events were dropped on purpose.
    ConsumerGone,
    /// Writing failed for another reason.
    Failed(io::Error),
}

/// What stdout carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// One JSON object a line.
    Ndjson,
    /// Plain transcript.
    Text,
    /// Captions: the spoken text's cues.
    Captions(SubtitleFormat),
}

/// What the writer thread writes, and where: plain data, resolved by
/// [`crate::config`].
#[derive(Debug, Clone)]
pub(crate) struct OutputConfig {
    /// Stdout's format.
    pub(crate) format: Format,
    /// Whether `partial` events are written (NDJSON) or shown (text): the
    /// session may make them for the now-showing file alone.
    pub(crate) partials: bool,
    /// `--timestamps`: each text line begins with its time.
    pub(crate) timestamps: bool,
    /// The cue rules, for captions and the now-showing file.
    pub(crate) cues: CueRules,
    /// `--captions-translation`: the translation's track, in stdout's
    /// caption format.
    pub(crate) translation_track: Option<PathBuf>,
    /// `--now-file`.
    pub(crate) now_file: Option<PathBuf>,
}

impl Default for OutputConfig {
    /// NDJSON, nothing beside it.
    fn default() -> OutputConfig {
        OutputConfig {
            format: Format::Ndjson,
            partials: false,
            timestamps: false,
            cues: CueRules::default(),
            translation_track: None,
            now_file: None,
        }
    }
}

/// Starts the writer thread on stdout, once the files beside it are open
/// (a path that cannot be written fails here, before the stream). Returns
/// the event sender and the thread's handle, whose result says how writing
/// ended.
pub(crate) fn spawn_stdout(
    config: &OutputConfig,
) -> io::Result<(mpsc::Sender<Event>, thread::JoinHandle<OutputEnd>)> {
    check_stdout_writable()?;
    let mut pipeline = Pipeline::open(config, io::stdout().is_terminal())?;
    let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
    let handle = thread::Builder::new()
        .name("stdout".into())
        .spawn(move || write_all_events(rx, &mut pipeline, &mut io::stdout().lock()))?;
    Ok((tx, handle))
}

/// Fails unless stdout is open for writing. The standard library drops
/// writes to a closed descriptor (EBADF) without a word, so a stdout that
/// is closed, or opened read-only, would lose every event and still exit 0.
fn check_stdout_writable() -> io::Result<()> {
    use nix::fcntl::{FcntlArg, OFlag, fcntl};
    let flags = fcntl(io::stdout(), FcntlArg::F_GETFL)
        .map_err(|errno| io::Error::other(format!("stdout is not open ({})", errno.desc())))?;
    let mode = OFlag::from_bits_truncate(flags) & OFlag::O_ACCMODE;
    if mode == OFlag::O_RDONLY {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "stdout is open for reading only",
        ));
    }
    Ok(())
}

/// Writes one event to stdout at once, outside any session (an error before
/// the session began). A closed stdout is ignored.
pub(crate) fn write_event_now(event: &Event) {
    let mut line = Vec::new();
    NdjsonWriter.render(event, &mut line);
    let mut out = io::stdout().lock();
    let _ = out.write_all(&line).and_then(|()| out.flush());
}

fn write_all_events(
    mut rx: mpsc::Receiver<Event>,
    pipeline: &mut Pipeline,
    out: &mut dyn Write,
) -> OutputEnd {
    let mut bytes = Vec::with_capacity(256);
    pipeline.preamble(&mut bytes);
    if let Err(end) = write_now(out, &bytes) {
        return end;
    }
    while let Some(event) = rx.blocking_recv() {
        bytes.clear();
        pipeline.render(&event, &mut bytes);
        if let Err(end) = write_now(out, &bytes) {
            return end;
        }
        if let Err(err) = pipeline.write_beside() {
            return OutputEnd::Failed(err);
        }
    }
    OutputEnd::Done
}

/// Writes `bytes` (if any) at once and flushes them.
fn write_now(out: &mut dyn Write, bytes: &[u8]) -> Result<(), OutputEnd> {
    if bytes.is_empty() {
        return Ok(());
    }
    out.write_all(bytes)
        .and_then(|()| out.flush())
        .map_err(|err| {
            if err.kind() == io::ErrorKind::BrokenPipe {
                OutputEnd::ConsumerGone
            } else {
                OutputEnd::Failed(err)
            }
        })
}

/// Everything the writer thread makes of the events.
struct Pipeline {
    /// Stdout's writer for NDJSON and text; `None` when it carries cues.
    events: Option<Box<dyn EventWriter + Send>>,
    /// Whether `partial` events reach `events`.
    partials: bool,
    /// The cues, when anything needs them.
    captions: Option<Captions>,
}

/// The cue builder and where its cues go.
struct Captions {
    builder: CueBuilder,
    made: Made,
    /// Stdout's track, when stdout carries cues.
    spoken: Option<Track>,
    /// The translation's track and its file.
    translation: Option<(Track, File)>,
    /// Rendered translation cues not written yet.
    translated: Vec<u8>,
    now: Option<NowFile>,
}

/// One caption track: its format and the number of its next cue.
struct Track {
    format: SubtitleFormat,
    next: u64,
}

impl Track {
    fn new(format: SubtitleFormat) -> Track {
        Track { format, next: 1 }
    }

    fn render(&mut self, cue: &captions::Cue, out: &mut Vec<u8>) {
        self.format.render(self.next, cue, out);
        self.next += 1;
    }
}

impl Pipeline {
    /// Opens the files beside stdout; `terminal` if stdout is one.
    fn open(config: &OutputConfig, terminal: bool) -> io::Result<Pipeline> {
        let caption_format = match config.format {
            Format::Captions(format) => Some(format),
            Format::Ndjson | Format::Text => None,
        };
        let events: Option<Box<dyn EventWriter + Send>> = match config.format {
            Format::Ndjson => Some(Box::new(NdjsonWriter)),
            Format::Text => Some(Box::new(TextWriter::new(terminal, config.timestamps))),
            Format::Captions(_) => None,
        };
        let translation = match (&config.translation_track, caption_format) {
            (Some(path), Some(format)) => {
                let mut file = File::create(path).map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("--captions-translation {}: {e}", path.display()),
                    )
                })?;
                file.write_all(format.header())?;
                Some((Track::new(format), file))
            }
            _ => None,
        };
        let now = config
            .now_file
            .as_deref()
            .map(NowFile::create)
            .transpose()?;
        let captions = (caption_format.is_some() || now.is_some()).then(|| Captions {
            // The now-showing file shows labels in the text, as SRT does.
            builder: CueBuilder::new(
                config.cues.clone(),
                caption_format.is_none_or(SubtitleFormat::label_in_text),
            ),
            made: Made::default(),
            spoken: caption_format.map(Track::new),
            translation,
            translated: Vec::new(),
            now,
        });
        Ok(Pipeline {
            events,
            partials: config.partials,
            captions,
        })
    }

    /// What stdout begins with (the WebVTT header).
    fn preamble(&self, out: &mut Vec<u8>) {
        if let Some(track) = self.captions.as_ref().and_then(|c| c.spoken.as_ref()) {
            out.extend_from_slice(track.format.header());
        }
    }

    /// Appends stdout's bytes for `event`; keeps what goes beside it for
    /// [`Pipeline::write_beside`].
    fn render(&mut self, event: &Event, out: &mut Vec<u8>) {
        if let Some(events) = self.events.as_mut()
            && (self.partials || !matches!(event, Event::Partial { .. }))
        {
            events.render(event, out);
        }
        let Some(captions) = self.captions.as_mut() else {
            return;
        };
        captions.builder.feed(event, &mut captions.made);
        for cue in captions.made.cues.drain(..) {
            if let Some(track) = captions.spoken.as_mut() {
                track.render(&cue, out);
            }
        }
        for cue in captions.made.translations.drain(..) {
            if let Some((track, _)) = captions.translation.as_mut() {
                track.render(&cue, &mut captions.translated);
            }
        }
    }

    /// Writes the translation's cues and the now-showing file.
    fn write_beside(&mut self) -> io::Result<()> {
        let Some(captions) = self.captions.as_mut() else {
            return Ok(());
        };
        if let Some((_, file)) = captions.translation.as_mut()
            && !captions.translated.is_empty()
        {
            file.write_all(&captions.translated)?;
            captions.translated.clear();
        }
        if let Some(now) = captions.now.as_mut()
            && let Some(lines) = captions.builder.take_now()
        {
            now.show(&lines);
        }
        Ok(())
    }
}

/// Renders events into bytes.
pub(crate) trait EventWriter {
    /// Appends the bytes for `event` to `out` (nothing, to skip it).
    fn render(&mut self, event: &Event, out: &mut Vec<u8>);
}

/// One JSON object and a newline per event.
#[derive(Debug, Default)]
pub(crate) struct NdjsonWriter;

impl EventWriter for NdjsonWriter {
    fn render(&mut self, event: &Event, out: &mut Vec<u8>) {
        // Serializing these plain structs cannot fail: no maps with
        // non-string keys, no failing Serialize impls.
        if serde_json::to_writer(&mut *out, event).is_ok() {
            out.push(b'\n');
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::event::Token;

    fn token(text: &str, start_ms: u64, translation: bool) -> Event {
        Event::Token(Token {
            text: text.into(),
            start_ms: (!translation).then_some(start_ms),
            end_ms: (!translation).then_some(start_ms + 300),
            is_final: true,
            translation_status: Some(
                if translation {
                    "translation"
                } else {
                    "original"
                }
                .into(),
            ),
            ..Default::default()
        })
    }

    fn end() -> Event {
        Event::End {
            audio_ms: 9_000,
            tokens: 4,
            duration_ms: 1,
            reason: "eof".into(),
        }
    }

    /// What `writer` makes of `events`, as text.
    pub(crate) fn render(writer: &mut dyn EventWriter, events: &[Event]) -> String {
        let mut out = Vec::new();
        for event in events {
            writer.render(event, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    /// Runs the writer loop over `events` into a buffer.
    fn run(config: &OutputConfig, events: Vec<Event>) -> String {
        let mut pipeline = Pipeline::open(config, false).unwrap();
        let (tx, rx) = mpsc::channel(events.len().max(1));
        for event in events {
            tx.try_send(event).unwrap();
        }
        drop(tx);
        let mut out = Vec::new();
        assert!(matches!(
            write_all_events(rx, &mut pipeline, &mut out),
            OutputEnd::Done
        ));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn ndjson_is_one_line_per_event() {
        let text = render(
            &mut NdjsonWriter,
            &[
                token(" a", 0, false),
                Event::Finalized {
                    end_ms: Some(5),
                    silent_until_ms: None,
                },
            ],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], r#"{"type":"finalized","end_ms":5}"#);
    }

    #[test]
    fn partials_made_for_the_now_file_alone_are_not_written() {
        let partial = Event::Partial {
            text: " b".into(),
            tokens: Vec::new(),
        };
        let quiet = run(&OutputConfig::default(), vec![partial.clone()]);
        assert_eq!(quiet, "");
        let asked = OutputConfig {
            partials: true,
            ..OutputConfig::default()
        };
        assert!(run(&asked, vec![partial]).contains("\"partial\""));
    }

    /// WebVTT on stdout, the translation's track and the now-showing file
    /// from one run of the writer loop.
    #[test]
    fn captions_go_to_stdout_and_beside_it() {
        let dir = tempfile::tempdir().unwrap();
        let config = OutputConfig {
            format: Format::Captions(SubtitleFormat::Vtt),
            translation_track: Some(dir.path().join("fr.vtt")),
            now_file: Some(dir.path().join("now.txt")),
            ..OutputConfig::default()
        };
        let events = vec![
            token(" the", 500, false),
            token(" LE", 0, true),
            token(" fox", 900, false),
            token(" RENARD", 0, true),
            Event::Endpoint {
                end_ms: Some(1200),
                silent_until_ms: Some(3_200),
            },
            token(" again", 5_000, false),
            token(" ENCORE", 0, true),
            end(),
        ];
        let stdout = run(&config, events);
        assert_eq!(
            stdout,
            "WEBVTT\n\n1\n00:00:00.500 --> 00:00:01.500\nthe fox\n\n\
             2\n00:00:05.000 --> 00:00:06.000\nagain\n\n"
        );
        let french = std::fs::read_to_string(dir.path().join("fr.vtt")).unwrap();
        assert_eq!(
            french,
            "WEBVTT\n\n1\n00:00:00.500 --> 00:00:01.500\nLE RENARD\n\n\
             2\n00:00:05.000 --> 00:00:06.000\nENCORE\n\n"
        );
        let now = std::fs::read_to_string(dir.path().join("now.txt")).unwrap();
        assert_eq!(now, "", "cleared at the end");
    }

    #[test]
    fn a_closed_pipe_is_a_quiet_end() {
        struct Closed;
        impl Write for Closed {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::ErrorKind::BrokenPipe.into())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let (tx, rx) = mpsc::channel(4);
        tx.try_send(token(" a", 0, false)).unwrap();
        drop(tx);
        let mut pipeline = Pipeline::open(&OutputConfig::default(), false).unwrap();
        let end = write_all_events(rx, &mut pipeline, &mut Closed);
        assert!(matches!(end, OutputEnd::ConsumerGone));
    }
}
