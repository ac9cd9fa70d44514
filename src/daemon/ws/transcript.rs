//! The client's view of its transcript: the session's events folded into
//! Soniox responses (final tokens and `<end>`/`<fin>` markers as they came,
//! then the whole current non-final set, with the audio-processed marks),
//! and where a batch of events ends the session; and the one frame of
//! sttpipe's own, the `queued` extension, for a client still waiting for
//! its upstream slot.

use serde_json::{Value, json};
use tracing::debug;

use soniox_wire::ApiError;

use super::start::api_error_from_event;
use crate::event::{Event, Token};

/// The extension frame that tells a client waiting for an upstream slot its
/// place in the queue (1-based). A Soniox response with no tokens, which a
/// Soniox client takes as one that brings nothing, and an unknown field,
/// which it ignores; an sttpipe edge reads it as its own `queued` event.
/// See sttpipe-protocol(7).
pub(super) fn queued_frame(position: usize) -> String {
    format!(r#"{{"tokens":[],"sttpipe":{{"queued":{{"position":{position}}}}}}}"#)
}

/// How a batch of events ended, if it did.
#[derive(Debug, PartialEq)]
pub(super) enum Terminal {
    /// The session ended; `audio_ms` of audio were read.
    End { audio_ms: u64 },
    /// The session failed with this (event) error.
    Error(ApiError),
}

/// The client's view of the transcript: what its responses have said.
#[derive(Debug, Default)]
pub(super) struct Transcript {
    /// `final_audio_proc_ms` last sent.
    final_ms: u64,
    /// `total_audio_proc_ms` last sent.
    total_ms: u64,
    /// The non-final tokens last sent.
    non_final: Vec<Token>,
}

impl Transcript {
    /// Folds a batch of events into one response: the newly final tokens
    /// and `<end>`/`<fin>` markers in the order they came, then the complete
    /// current non-final set. Returns `None` for the frame when the batch
    /// changed nothing a Soniox client sees; stops at `end` or `error`.
    pub(super) fn fold(
        &mut self,
        batch: impl IntoIterator<Item = Event>,
    ) -> (Option<Value>, Option<Terminal>) {
        let mut tokens = Vec::new();
        let mut non_final_changed = false;
        let mut terminal = None;
        for event in batch {
            match event {
                Event::Token(mut token) => {
                    token.upstream = None;
                    if let Some(end) = token.end_ms {
                        self.final_ms = self.final_ms.max(end);
                    }
                    tokens.push(json!(token));
                }
                Event::Partial {
                    tokens: partial, ..
                } => {
                    self.non_final = partial;
                    non_final_changed = true;
                }
                Event::Endpoint { end_ms, .. } => {
                    self.final_ms = self.final_ms.max(end_ms.unwrap_or(0));
                    tokens.push(json!({"text": "<end>", "is_final": true}));
                }
                Event::Finalized { end_ms, .. } => {
                    self.final_ms = self.final_ms.max(end_ms.unwrap_or(0));
                    tokens.push(json!({"text": "<fin>", "is_final": true}));
                }
                Event::End { audio_ms, .. } => {
                    terminal = Some(Terminal::End { audio_ms });
                    break;
                }
                Event::Error {
                    code,
                    status,
                    message,
                    ..
                } => {
                    terminal = Some(Terminal::Error(api_error_from_event(
                        &code, status, &message,
                    )));
                    break;
                }
                // No Soniox equivalent: the client sees an uninterrupted stream.
                other @ (Event::Start { .. }
                | Event::Queued { .. }
                | Event::Reconnect { .. }
                | Event::Overrun { .. }
                | Event::Fallback { .. }) => debug!(event = ?other, "not relayed"),
            }
        }
        if tokens.is_empty() && !non_final_changed {
            return (None, terminal);
        }
        if !non_final_changed {
            // Words the session made final in this batch may still be in the
            // set last sent, if its emptied `partial` is in the next batch.
            let final_ms = self.final_ms;
            self.non_final
                .retain(|t| t.start_ms.is_none_or(|start| start >= final_ms));
        }
        for token in &mut self.non_final {
            token.upstream = None;
            if let Some(end) = token.end_ms {
                self.total_ms = self.total_ms.max(end);
            }
        }
        self.total_ms = self.total_ms.max(self.final_ms);
        tokens.extend(self.non_final.iter().map(|t| json!(t)));
        let frame = json!({
            "tokens": tokens,
            "final_audio_proc_ms": self.final_ms,
            "total_audio_proc_ms": self.total_ms,
        });
        (Some(frame), terminal)
    }

    /// The last response: everything read is processed and final.
    pub(super) fn finished(&mut self, audio_ms: u64) -> Value {
        let all = audio_ms.max(self.total_ms).max(self.final_ms);
        self.final_ms = all;
        self.total_ms = all;
        json!({
            "tokens": [],
            "final_audio_proc_ms": all,
            "total_audio_proc_ms": all,
            "finished": true,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queued_extension_is_exactly_this() {
        assert_eq!(
            queued_frame(3),
            r#"{"tokens":[],"sttpipe":{"queued":{"position":3}}}"#
        );
        let parsed: Value = serde_json::from_str(&queued_frame(12)).unwrap();
        assert_eq!(parsed["sttpipe"]["queued"]["position"], 12);
    }

    fn token(text: &str, start: u64, is_final: bool) -> Token {
        Token {
            text: text.into(),
            start_ms: Some(start),
            end_ms: Some(start + 100),
            confidence: Some(0.9),
            is_final,
            upstream: Some(1),
            ..Default::default()
        }
    }

    #[test]
    fn batches_fold_into_soniox_responses() {
        let mut t = Transcript::default();
        let (frame, end) = t.fold([Event::Partial {
            text: " a b".into(),
            tokens: vec![token(" a", 0, false), token(" b", 200, false)],
        }]);
        let frame = frame.unwrap();
        assert_eq!(end, None);
        assert_eq!(frame["tokens"].as_array().unwrap().len(), 2);
        assert_eq!(
            (
                frame["final_audio_proc_ms"].as_u64(),
                frame["total_audio_proc_ms"].as_u64()
            ),
            (Some(0), Some(300))
        );
        assert!(
            frame["tokens"][0].get("upstream").is_none(),
            "sttpipe's own field is dropped"
        );

        // " a" became final and `<fin>` came, but the emptied partial is in the
        // next batch: the stale " a" must not show as non-final too.
        let (frame, _) = t.fold([
            Event::Token(token(" a", 0, true)),
            Event::Finalized {
                end_ms: Some(100),
                silent_until_ms: None,
            },
        ]);
        let frame = frame.unwrap();
        let texts: Vec<&str> = frame["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["text"].as_str().unwrap())
            .collect();
        assert_eq!(texts, [" a", "<fin>", " b"]);
        assert_eq!(
            frame["tokens"][1],
            json!({"text": "<fin>", "is_final": true})
        );
        assert_eq!(
            (
                frame["final_audio_proc_ms"].as_u64(),
                frame["total_audio_proc_ms"].as_u64()
            ),
            (Some(100), Some(300))
        );

        let (frame, _) = t.fold([Event::Start {
            session_id: "s".into(),
            model: "m".into(),
            audio_format: "pcm_s16le".into(),
            sample_rate: Some(16_000),
            num_channels: Some(1),
        }]);
        assert!(frame.is_none(), "no Soniox equivalent, nothing sent");

        let (frame, end) = t.fold([
            Event::Token(token(" b", 200, true)),
            Event::Partial {
                text: String::new(),
                tokens: vec![],
            },
            Event::End {
                audio_ms: 1000,
                tokens: 2,
                duration_ms: 5,
                reason: "eof".into(),
            },
        ]);
        let frame = frame.unwrap();
        assert_eq!(frame["tokens"].as_array().unwrap().len(), 1);
        assert_eq!(end, Some(Terminal::End { audio_ms: 1000 }));
        let finished = t.finished(1000);
        assert_eq!(
            finished,
            json!({"tokens": [], "final_audio_proc_ms": 1000, "total_audio_proc_ms": 1000, "finished": true})
        );
    }
}
