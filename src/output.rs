//! Writing events to stdout: NDJSON for programs, text for people.
//!
//! A dedicated thread owns the locked stdout and writes each event with one
//! `write_all` and a flush, so a line is never split and reaches the pipe as
//! soon as it is made. The thread takes events from a bounded channel; when
//! the consumer is slow the channel fills and the session waits. A closed
//! stdout (`| head -1`) ends the thread quietly: the channel closes, and the
//! session sees its consumer gone.

use std::io::{self, IsTerminal, Write};
use std::thread;

use tokio::sync::mpsc;

use crate::event::Event;

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

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Format {
    /// One JSON object a line.
    Ndjson,
    /// Plain transcript.
    Text,
}

/// Starts the writer thread on stdout. Returns the event sender and the
/// thread's handle, whose result says how writing ended.
pub(crate) fn spawn_stdout(
    format: Format,
) -> io::Result<(mpsc::Sender<Event>, thread::JoinHandle<OutputEnd>)> {
    check_stdout_writable()?;
    let (tx, rx) = mpsc::channel(OUTPUT_QUEUE);
    let handle = thread::Builder::new()
        .name("stdout".into())
        .spawn(move || {
            let stdout = io::stdout();
            let terminal = stdout.is_terminal();
            let mut out = stdout.lock();
            match format {
                Format::Ndjson => write_all_events(rx, &mut NdjsonWriter, &mut out),
                Format::Text => write_all_events(rx, &mut TextWriter::new(terminal), &mut out),
            }
        })?;
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
    writer: &mut dyn EventWriter,
    out: &mut dyn Write,
) -> OutputEnd {
    let mut line = Vec::with_capacity(256);
    while let Some(event) = rx.blocking_recv() {
        line.clear();
        writer.render(&event, &mut line);
        if line.is_empty() {
            continue;
        }
        if let Err(err) = out.write_all(&line).and_then(|()| out.flush()) {
            return if err.kind() == io::ErrorKind::BrokenPipe {
                OutputEnd::ConsumerGone
            } else {
                OutputEnd::Failed(err)
            };
        }
    }
    OutputEnd::Done
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

/// The transcript for people: final text as it comes, a line break at each
/// endpoint, finalize and end. On a terminal, the non-final tail is shown
/// dimmed and replaced as it changes.
#[derive(Debug)]
pub(crate) struct TextWriter {
    terminal: bool,
    at_line_start: bool,
    /// Whether provisional text is on screen (terminal only).
    shown_partial: bool,
}

impl TextWriter {
    /// A writer; `terminal` enables the provisional tail.
    pub(crate) fn new(terminal: bool) -> TextWriter {
        TextWriter {
            terminal,
            at_line_start: true,
            shown_partial: false,
        }
    }

    fn erase_partial(&mut self, out: &mut Vec<u8>) {
        if self.shown_partial {
            // Back to where it began (saved), and clear to the end of the
            // screen: right however the text wrapped or how wide it was.
            out.extend_from_slice(b"\x1b8\x1b[J");
            self.shown_partial = false;
        }
    }

    fn push_text(&mut self, text: &str, out: &mut Vec<u8>) {
        let text = if self.at_line_start {
            text.trim_start()
        } else {
            text
        };
        if !text.is_empty() {
            out.extend_from_slice(text.as_bytes());
            self.at_line_start = false;
        }
    }

    fn end_line(&mut self, out: &mut Vec<u8>) {
        if !self.at_line_start {
            out.push(b'\n');
            self.at_line_start = true;
        }
    }
}

impl EventWriter for TextWriter {
    fn render(&mut self, event: &Event, out: &mut Vec<u8>) {
        match event {
            Event::Token(token) if token.translation_status.as_deref() != Some("translation") => {
                self.erase_partial(out);
                self.push_text(&token.text, out);
            }
            Event::Partial { text, .. } if self.terminal => {
                self.erase_partial(out);
                let text = if self.at_line_start {
                    text.trim_start()
                } else {
                    text
                };
                if !text.is_empty() {
                    out.extend_from_slice(b"\x1b7\x1b[2m");
                    out.extend_from_slice(text.as_bytes());
                    out.extend_from_slice(b"\x1b[0m");
                    self.shown_partial = true;
                }
            }
            Event::Endpoint { .. } | Event::Finalized { .. } | Event::End { .. } => {
                self.erase_partial(out);
                self.end_line(out);
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Token;

    fn token(text: &str) -> Event {
        Event::Token(Token {
            text: text.into(),
            start_ms: Some(0),
            end_ms: Some(1),
            confidence: Some(0.9),
            is_final: true,
            ..Default::default()
        })
    }

    fn render(writer: &mut dyn EventWriter, events: &[Event]) -> String {
        let mut out = Vec::new();
        for event in events {
            writer.render(event, &mut out);
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn text_breaks_lines_at_endpoints() {
        let events = [
            token(" Hello"),
            token(" world"),
            Event::Endpoint { end_ms: None },
            token(" Again"),
            Event::End {
                audio_ms: 1,
                tokens: 3,
                duration_ms: 1,
                reason: "eof".into(),
            },
        ];
        assert_eq!(
            render(&mut TextWriter::new(false), &events),
            "Hello world\nAgain\n"
        );
    }

    #[test]
    fn ndjson_is_one_line_per_event() {
        let text = render(
            &mut NdjsonWriter,
            &[token(" a"), Event::Finalized { end_ms: Some(5) }],
        );
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[1], r#"{"type":"finalized","end_ms":5}"#);
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
        tx.try_send(token(" a")).unwrap();
        drop(tx);
        let end = write_all_events(rx, &mut NdjsonWriter, &mut Closed);
        assert!(matches!(end, OutputEnd::ConsumerGone));
    }
}
