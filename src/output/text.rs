//! The transcript for people (`--format text`): final text as it comes, a
//! line break at each endpoint, finalization and the end; with
//! `--timestamps`, each line begins with the start time of its first word.

use super::EventWriter;
use super::subtitles::clock;
use crate::event::Event;

/// Renders events as running text. On a terminal, the non-final tail is
/// shown dimmed and replaced as it changes.
#[derive(Debug)]
pub(crate) struct TextWriter {
    terminal: bool,
    timestamps: bool,
    at_line_start: bool,
    /// Whether provisional text is on screen (terminal only).
    shown_partial: bool,
}

impl TextWriter {
    /// A writer; `terminal` enables the provisional tail, `timestamps` the
    /// time at the start of each line.
    pub(crate) fn new(terminal: bool, timestamps: bool) -> TextWriter {
        TextWriter {
            terminal,
            timestamps,
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

    /// `text` trimmed at the start of a line, with the line's time in
    /// front when asked for; `None` if nothing is left to show.
    fn piece(&self, text: &str, start_ms: Option<u64>) -> Option<String> {
        if !self.at_line_start {
            return (!text.is_empty()).then(|| text.to_owned());
        }
        let text = text.trim_start();
        if text.is_empty() {
            return None;
        }
        Some(match start_ms.filter(|_| self.timestamps) {
            Some(ms) => format!("[{}] {text}", clock(ms)),
            None => text.to_owned(),
        })
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
                if let Some(piece) = self.piece(&token.text, token.start_ms) {
                    out.extend_from_slice(piece.as_bytes());
                    self.at_line_start = false;
                }
            }
            Event::Partial { text, tokens } if self.terminal => {
                self.erase_partial(out);
                let start_ms = tokens.first().and_then(|t| t.start_ms);
                if let Some(piece) = self.piece(text, start_ms) {
                    out.extend_from_slice(b"\x1b7\x1b[2m");
                    out.extend_from_slice(piece.as_bytes());
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
    use crate::output::tests::render;

    fn token(text: &str, start_ms: u64) -> Event {
        Event::Token(Token {
            text: text.into(),
            start_ms: Some(start_ms),
            end_ms: Some(start_ms + 300),
            is_final: true,
            ..Default::default()
        })
    }

    fn end() -> Event {
        Event::End {
            audio_ms: 1,
            tokens: 3,
            duration_ms: 1,
            reason: "eof".into(),
        }
    }

    #[test]
    fn text_breaks_lines_at_endpoints() {
        let events = [
            token(" Hello", 0),
            token(" world", 400),
            Event::Endpoint {
                end_ms: None,
                silent_until_ms: None,
            },
            token(" Again", 900),
            end(),
        ];
        assert_eq!(
            render(&mut TextWriter::new(false, false), &events),
            "Hello world\nAgain\n"
        );
    }

    #[test]
    fn timestamps_begin_each_line_with_its_first_words_time() {
        let events = [
            token(" Hello", 62_300),
            token(" world", 62_700),
            Event::Endpoint {
                end_ms: None,
                silent_until_ms: None,
            },
            token(" Again", 3_725_004),
            end(),
        ];
        assert_eq!(
            render(&mut TextWriter::new(false, true), &events),
            "[00:01:02.300] Hello world\n[01:02:05.004] Again\n"
        );
    }
}
