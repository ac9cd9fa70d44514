//! The events a session gives out: the NDJSON output schema.
//!
//! # Format
//!
//! One JSON object a line, each with a `type`. Consumers must ignore types
//! and fields they do not know: new ones may be added.
//!
//! ```json
//! {"type":"start","session_id":"5f0c…","model":"stt-rt-v6","audio_format":"pcm_s16le","sample_rate":16000,"num_channels":1}
//! {"type":"token","text":" Hello","start_ms":600,"end_ms":760,"confidence":0.97,"is_final":true}
//! {"type":"partial","text":" are you","tokens":[{"text":" are","start_ms":900,"end_ms":1020,"confidence":0.8,"is_final":false}, …]}
//! {"type":"endpoint","end_ms":1500,"silent_until_ms":3500}
//! {"type":"finalized","end_ms":2200,"silent_until_ms":2400}
//! {"type":"error","code":"service","status":503,"message":"…","exit_code":75}
//! {"type":"end","audio_ms":10000,"tokens":31,"duration_ms":10450,"reason":"eof"}
//! ```
//!
//! Final tokens come once each, in order. A `partial` event (only with
//! `--partials`) carries the complete current set of non-final tokens; it
//! replaces the previous `partial`, and is emptied (`"tokens":[]`) once its
//! words became final. Timestamps are milliseconds from the first audio of
//! the whole stream. An `endpoint` or `finalized` says how far the engine
//! had heard when it came (`silent_until_ms`): no word starts between the
//! last final's end and it, so a caption may stay up that long.

use serde::{Deserialize, Serialize};

/// One recognised piece of text, with Soniox's field names. `Default` is an
/// empty non-final token with no optional field set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub(crate) struct Token {
    /// The text, with its leading space: concatenate as-is.
    pub(crate) text: String,
    /// Start in ms from the first audio of the stream; absent on translations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) start_ms: Option<u64>,
    /// End in ms from the first audio of the stream; absent on translations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) end_ms: Option<u64>,
    /// Recognition confidence, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) confidence: Option<f64>,
    /// Whether the token is final (sent once, never changes).
    pub(crate) is_final: bool,
    /// Speaker label (`"1"`, `"2"`, …) with diarization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) speaker: Option<String>,
    /// Language code with language identification or translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) language: Option<String>,
    /// `none`, `original` or `translation` with translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) translation_status: Option<String>,
    /// The spoken language of a translated token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) source_language: Option<String>,
    /// The upstream session (1-based) that recognised it: speaker labels
    /// restart with each. Set by sttpipe, not by Soniox.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) upstream: Option<u32>,
}

impl From<soniox_wire::Token> for Token {
    fn from(t: soniox_wire::Token) -> Token {
        Token {
            text: t.text,
            start_ms: t.start_ms,
            end_ms: t.end_ms,
            confidence: t.confidence,
            is_final: t.is_final,
            speaker: t.speaker,
            language: t.language,
            translation_status: t.translation_status,
            source_language: t.source_language,
            upstream: None,
        }
    }
}

impl From<Token> for soniox_wire::Token {
    /// The token as Soniox spells it: without sttpipe's `upstream`.
    fn from(t: Token) -> soniox_wire::Token {
        soniox_wire::Token {
            text: t.text,
            start_ms: t.start_ms,
            end_ms: t.end_ms,
            confidence: t.confidence,
            is_final: t.is_final,
            speaker: t.speaker,
            language: t.language,
            translation_status: t.translation_status,
            source_language: t.source_language,
        }
    }
}

impl Token {
    /// Shifts the timestamps by `offset_ms` (a later upstream session's
    /// times start again at zero).
    pub(crate) fn rebase(&mut self, offset_ms: u64) {
        if let Some(t) = self.start_ms.as_mut() {
            *t += offset_ms;
        }
        if let Some(t) = self.end_ms.as_mut() {
            *t += offset_ms;
        }
    }
}

/// An output event; serialized with its `type` tag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Event {
    /// The stream began: the first upstream session is open.
    Start {
        /// This stream's id, for logs and support.
        session_id: String,
        /// The model asked for.
        model: String,
        /// The audio format sent.
        audio_format: String,
        /// Sample rate, for raw formats.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sample_rate: Option<u32>,
        /// Channels, for raw formats.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        num_channels: Option<u16>,
    },
    /// A final token (or, with `--partials`, never a non-final one: those
    /// travel in [`Event::Partial`]).
    Token(Token),
    /// The current non-final tail; replaces the previous one.
    Partial {
        /// The tokens' text concatenated.
        text: String,
        /// The non-final tokens.
        tokens: Vec<Token>,
    },
    /// The speaker finished an utterance (`<end>`, endpoint detection).
    Endpoint {
        /// End of the last final token before it, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end_ms: Option<u64>,
        /// How far the engine had heard when it said so, short of any word
        /// not final yet: the next word starts at or after it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        silent_until_ms: Option<u64>,
    },
    /// A manual finalization completed (`<fin>`): all audio sent so far is final.
    Finalized {
        /// End of the last final token before it, if any.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        end_ms: Option<u64>,
        /// As for [`Event::Endpoint`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        silent_until_ms: Option<u64>,
    },
    /// A new upstream session took over; the stream goes on, one timeline.
    Reconnect {
        /// Why: `dropped`, `error`, `stalled` or `rotation`.
        reason: String,
        /// The new upstream session (1-based).
        upstream: u32,
        /// Wall time without a working upstream session, ms.
        gap_ms: u64,
        /// Audio replayed into the new session, ms.
        replayed_ms: u64,
        /// The failure, for people.
        message: String,
        /// The service URL the new session is connected to (Soniox: with
        /// `--url` given more than once, the one failover chose).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
    },
    /// Audio was lost: it left the replay buffer before any session made it
    /// final. Times on the stream's timeline.
    Overrun {
        /// Start of the lost audio, ms.
        start_ms: u64,
        /// End of the lost audio, ms.
        end_ms: u64,
    },
    /// The daemon has no upstream slot free yet: the session waits.
    Queued {
        /// 1-based place in the queue.
        position: usize,
    },
    /// The service failed for good (unreachable from the start, or the
    /// retry budget spent): the stream goes on with the local engine.
    Fallback {
        /// The engine now in use: `local`.
        engine: String,
        /// Where on the stream's timeline it took over (the first audio no
        /// final token covered), ms.
        from_ms: u64,
        /// The service's failure, for people.
        message: String,
    },
    /// The stream failed; the process exits with `exit_code`.
    Error {
        /// Kind of failure: `config`, `service`, `connect`, `bad_audio`, …
        code: String,
        /// The service's status code, for service errors.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        status: Option<u16>,
        /// What went wrong, for people.
        message: String,
        /// The exit status sttpipe ends with.
        exit_code: u8,
    },
    /// The stream ended; always the last event of a stream that started.
    End {
        /// Audio sent to the service, in ms (raw formats) or as the service counted it.
        audio_ms: u64,
        /// Final tokens given out.
        tokens: u64,
        /// Wall time of the stream, in ms.
        duration_ms: u64,
        /// Why it ended: `eof`, `signal` or `error`.
        reason: String,
    },
}

impl Event {
    /// The error event for `err`.
    pub(crate) fn error(err: &crate::error::Error) -> Event {
        let status = match err {
            crate::error::Error::Service { code, .. } => Some(*code),
            _ => None,
        };
        Event::Error {
            code: err.kind().to_owned(),
            status,
            message: err.to_string(),
            exit_code: err.exit_code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_keeps_soniox_field_names() {
        let token = Event::Token(Token {
            text: " Hello".into(),
            start_ms: Some(600),
            end_ms: Some(760),
            confidence: Some(0.97),
            is_final: true,
            ..Default::default()
        });
        assert_eq!(
            serde_json::to_string(&token).unwrap(),
            r#"{"type":"token","text":" Hello","start_ms":600,"end_ms":760,"confidence":0.97,"is_final":true}"#
        );
    }
}
