//! One turn's text: the session's events folded into the words made final
//! so far, what of them has gone out in `transcript-chunk`s, and where a
//! batch of events ends the turn.
//!
//! Chunks carry final words only, each once: a chunk cannot be taken back,
//! so a client that appends them has exactly the `transcript`'s text.

use crate::event::Event;

/// How a batch of events ended the session, if it did.
#[derive(Debug, PartialEq)]
pub(crate) enum Terminal {
    /// The session ended.
    End,
    /// The session failed: its `error` event's kind and message.
    Error {
        /// sttpipe's error kind (`service`, `busy`, …).
        code: String,
        /// For people.
        message: String,
    },
}

/// What a batch of events did.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Step {
    /// An endpoint (`<end>`) came.
    pub(crate) endpoint: bool,
    /// The session ended or failed.
    pub(crate) terminal: Option<Terminal>,
}

/// The turn's final text, and how much of it went out as chunks.
#[derive(Debug, Default)]
pub(crate) struct Transcript {
    /// The final tokens' text, concatenated (each has its leading space).
    text: String,
    /// Bytes of `text` already in chunks.
    sent: usize,
    /// Words after this are no longer the turn's (its endpoint came).
    closed: bool,
}

impl Transcript {
    /// Folds a batch of events. With `until_endpoint`, the first endpoint
    /// closes the turn's text: words after it are not the turn's.
    pub(crate) fn fold(
        &mut self,
        batch: impl IntoIterator<Item = Event>,
        until_endpoint: bool,
    ) -> Step {
        let mut step = Step::default();
        for event in batch {
            match event {
                Event::Token(token) if token.is_final && !self.closed => {
                    self.text.push_str(&token.text)
                }
                Event::Endpoint { .. } => {
                    step.endpoint = true;
                    self.closed |= until_endpoint;
                }
                Event::End { .. } => {
                    step.terminal = Some(Terminal::End);
                    break;
                }
                Event::Error { code, message, .. } => {
                    step.terminal = Some(Terminal::Error { code, message });
                    break;
                }
                // Queued, start, reconnect, fallback, partials: a Wyoming
                // client sees only the words.
                _ => {}
            }
        }
        step
    }

    /// The final text not yet sent in a chunk, if any: the first chunk
    /// without the first word's leading space, as in the `transcript`.
    pub(crate) fn take_chunk(&mut self) -> Option<String> {
        let new = &self.text[self.sent..];
        let new = if self.sent == 0 {
            new.trim_start()
        } else {
            new
        };
        self.sent = self.text.len();
        (!new.is_empty()).then(|| new.to_owned())
    }

    /// The whole text, for the `transcript`.
    pub(crate) fn text(&self) -> &str {
        self.text.trim()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Token;

    fn word(text: &str, is_final: bool) -> Event {
        Event::Token(Token {
            text: text.into(),
            is_final,
            ..Default::default()
        })
    }

    #[test]
    fn chunks_add_up_to_the_transcript() {
        let mut t = Transcript::default();
        assert_eq!(t.take_chunk(), None);
        let step = t.fold(
            [word(" turn", true), word(" on", true), word(" the", false)],
            false,
        );
        assert_eq!(step, Step::default());
        assert_eq!(t.take_chunk().as_deref(), Some("turn on"));
        assert_eq!(t.take_chunk(), None, "each word once");
        let step = t.fold(
            [
                word(" lights", true),
                Event::Endpoint {
                    end_ms: Some(900),
                    silent_until_ms: None,
                },
                word(" please", true),
                Event::End {
                    audio_ms: 1,
                    tokens: 4,
                    duration_ms: 1,
                    reason: "eof".into(),
                },
                word(" never", true),
            ],
            false,
        );
        assert_eq!(
            step,
            Step {
                endpoint: true,
                terminal: Some(Terminal::End)
            }
        );
        assert_eq!(t.take_chunk().as_deref(), Some(" lights please"));
        assert_eq!(t.text(), "turn on lights please");
    }

    #[test]
    fn the_endpoint_closes_the_turn_when_it_ends_turns() {
        let mut t = Transcript::default();
        let step = t.fold(
            [
                word(" open", true),
                Event::Endpoint {
                    end_ms: None,
                    silent_until_ms: None,
                },
                word(" later", true),
            ],
            true,
        );
        assert!(step.endpoint && step.terminal.is_none());
        t.fold([word(" words", true)], true);
        assert_eq!(t.text(), "open");
        let step = t.fold(
            [Event::Error {
                code: "service".into(),
                status: Some(503),
                message: "down".into(),
                exit_code: 69,
            }],
            true,
        );
        assert_eq!(
            step.terminal,
            Some(Terminal::Error {
                code: "service".into(),
                message: "down".into()
            })
        );
    }
}
