//! The emulator's fake speech recognition: turns received audio into the
//! token responses of Soniox's real-time API.
//!
//! This module owns the token state machine of one session and nothing else
//! (no I/O), so its rules are easy to test:
//!
//! * A word decoded from a marker is sent as a non-final token at once. While
//!   its audio is still arriving, its `end_ms` is clamped to the audio received.
//! * It becomes final once the audio received reaches its end plus
//!   `finalize_lag_ms`, or at a `finalize`, an endpoint or the end of audio.
//!   A final token is sent exactly once; its `end_ms` is
//!   `min(start_ms + duration_ms, audio received when it was finalized)`, so
//!   with whole words it is exact.
//! * Each response carries the newly final tokens (each followed by its
//!   translation when translation is on), then any `<fin>`/`<end>` marker,
//!   then the complete current set of non-final tokens.
//! * `total_audio_proc_ms` is all audio received; `final_audio_proc_ms` never
//!   passes the start of the first non-final word nor `total - finalize_lag`,
//!   except that finalize, endpoints and the end of audio bring it up to the
//!   total. Both never decrease.

use std::collections::VecDeque;

use soniox_wire::{Response, Token};

use super::marker::{Decoder, Word};
use super::protocol::{AudioFormat, StartConfig};

/// The language the marker "speech" is in.
const SPOKEN_LANGUAGE: &str = "en";
/// Send a progress response after at least this much new audio (ms).
const PROGRESS_EVERY_MS: u64 = 500;

/// Session-independent recognition settings (from the emulator config).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecognizerSettings {
    /// Audio past a word's end before it is final, in ms.
    pub(crate) finalize_lag_ms: u64,
    /// Endpoint delay used when the request gives no `max_endpoint_delay_ms`.
    pub(crate) default_endpoint_delay_ms: u64,
    /// Bytes counted as 1 ms of audio for container formats.
    pub(crate) container_bytes_per_ms: f64,
}

/// A special marker token closing a response's final tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Special {
    Fin,
    End,
}

/// Recognition state of one session.
#[derive(Debug)]
pub(crate) struct Recognizer {
    settings: RecognizerSettings,
    start: StartConfig,
    /// Marker decoder, for pcm_s16le only.
    decoder: Option<Decoder>,
    /// `channels * bytes_per_sample` and the rate, for raw formats.
    raw: Option<(u64, u64)>,
    audio_bytes: u64,
    audio_ms: u64,
    /// Decoded words not yet final, in order.
    pending: VecDeque<Word>,
    final_ms: u64,
    /// `total_audio_proc_ms` of the last response sent.
    last_sent_total: u64,
    /// Words decoded since the last `<end>`/`<fin>`: an utterance to endpoint.
    utterance_open: bool,
    last_word_end: u64,
    /// What was sent since the last [`Recognizer::take_emitted`].
    emitted: Emitted,
}

/// What responses carried since the last [`Recognizer::take_emitted`], for
/// the session record.
#[derive(Debug, Default)]
pub(crate) struct Emitted {
    /// Texts of the original tokens made final, in order.
    pub(crate) finals: Vec<String>,
    /// Their `start_ms`, in the same order.
    pub(crate) final_starts: Vec<u64>,
    /// `<fin>` tokens sent.
    pub(crate) fins: u32,
    /// `<end>` tokens sent.
    pub(crate) ends: u32,
}

impl Emitted {
    /// Whether nothing was emitted.
    pub(crate) fn is_empty(&self) -> bool {
        self.finals.is_empty() && self.fins == 0 && self.ends == 0
    }
}

impl Recognizer {
    /// A recognizer for a validated start request.
    pub(crate) fn new(settings: RecognizerSettings, start: StartConfig) -> Recognizer {
        let (decoder, raw) = match start.format {
            AudioFormat::Raw {
                bytes_per_sample,
                sample_rate,
                channels,
                s16le,
            } => (
                s16le.then(|| Decoder::new(sample_rate, channels)),
                Some((
                    u64::from(bytes_per_sample) * u64::from(channels),
                    u64::from(sample_rate),
                )),
            ),
            AudioFormat::Container => (None, None),
        };
        Recognizer {
            settings,
            start,
            decoder,
            raw,
            audio_bytes: 0,
            audio_ms: 0,
            pending: VecDeque::new(),
            final_ms: 0,
            last_sent_total: 0,
            utterance_open: false,
            last_word_end: 0,
            emitted: Emitted::default(),
        }
    }

    /// Counts a chunk of audio and returns the new total in ms. Call
    /// [`Recognizer::recognize`] with the same chunk afterwards (the split
    /// lets the session inject faults between counting and responding).
    pub(crate) fn count(&mut self, data: &[u8]) -> u64 {
        self.audio_bytes += data.len() as u64;
        self.audio_ms = match self.raw {
            Some((frame_bytes, rate)) => self.audio_bytes / frame_bytes * 1000 / rate,
            None => (self.audio_bytes as f64 / self.settings.container_bytes_per_ms) as u64,
        };
        self.audio_ms
    }

    /// Runs recognition on a counted chunk; returns a response if the token
    /// state changed or enough audio passed since the last response.
    pub(crate) fn recognize(&mut self, data: &[u8]) -> Option<String> {
        let mut changed = false;
        if let Some(decoder) = &mut self.decoder {
            for w in decoder.push(data) {
                self.last_word_end = w.end_ms();
                self.utterance_open = true;
                self.pending.push_back(w);
                changed = true;
            }
        }
        let mut finals = Vec::new();
        let lag = self.settings.finalize_lag_ms;
        while self
            .pending
            .front()
            .is_some_and(|w| w.end_ms() + lag <= self.audio_ms)
        {
            finals.extend(self.pending.pop_front());
        }
        let mut special = None;
        if self.start.endpoint_detection && self.utterance_open {
            let delay = self
                .start
                .max_endpoint_delay_ms
                .unwrap_or(self.settings.default_endpoint_delay_ms);
            if self.last_word_end + delay <= self.audio_ms {
                finals.extend(self.pending.drain(..));
                self.utterance_open = false;
                special = Some(Special::End);
                self.final_ms = self.audio_ms;
            }
        }
        changed |= !finals.is_empty() || special.is_some();
        let floor = match self.pending.front() {
            Some(w) => self.audio_ms.saturating_sub(lag).min(w.start_ms),
            None => self.audio_ms.saturating_sub(lag),
        };
        self.final_ms = self.final_ms.max(floor);
        if changed || self.audio_ms >= self.last_sent_total + PROGRESS_EVERY_MS {
            Some(self.respond(&finals, special, false))
        } else {
            None
        }
    }

    /// Handles `{"type":"finalize"}`: everything decoded becomes final,
    /// followed by `<fin>`.
    pub(crate) fn finalize(&mut self) -> String {
        let finals: Vec<Word> = self.pending.drain(..).collect();
        self.utterance_open = false;
        self.final_ms = self.audio_ms;
        self.respond(&finals, Some(Special::Fin), false)
    }

    /// Handles the end of audio: the remaining words as finals (if any), then
    /// the `finished` response.
    pub(crate) fn finish(&mut self) -> Vec<String> {
        let finals: Vec<Word> = self.pending.drain(..).collect();
        self.final_ms = self.audio_ms;
        let mut out = Vec::with_capacity(2);
        if !finals.is_empty() {
            out.push(self.respond(&finals, None, false));
        }
        out.push(self.respond(&[], None, true));
        out
    }

    /// What was emitted since the last call.
    pub(crate) fn take_emitted(&mut self) -> Emitted {
        std::mem::take(&mut self.emitted)
    }

    /// Builds one response: `finals` (with translations), the special
    /// marker, then the current non-final set.
    fn respond(&mut self, finals: &[Word], special: Option<Special>, finished: bool) -> String {
        let audio_ms = self.audio_ms;
        let speaker = self.start.diarization.then_some("1");
        let language = self.start.language_id.then_some(SPOKEN_LANGUAGE);
        let target = self
            .start
            .translation
            .as_ref()
            .map(|t| t.target_for(SPOKEN_LANGUAGE));
        let status = match target {
            None => None,
            Some(Some(_)) => Some("original"),
            Some(None) => Some("none"),
        };
        let translated: Vec<String> = match target {
            Some(Some(_)) => finals.iter().map(|w| translate(&w.text)).collect(),
            _ => Vec::new(),
        };
        let owned = |text: Option<&str>| text.map(str::to_owned);
        let mut tokens = Vec::with_capacity(finals.len() * 2 + self.pending.len() + 1);
        for (i, w) in finals.iter().enumerate() {
            tokens.push(Token {
                text: w.text.clone(),
                start_ms: Some(w.start_ms),
                end_ms: Some(w.end_ms().min(audio_ms).max(w.start_ms)),
                confidence: Some(confidence(&w.text, true)),
                is_final: true,
                speaker: owned(speaker),
                language: owned(language),
                translation_status: owned(status),
                source_language: None,
            });
            if let (Some(Some(lang)), Some(text)) = (target, translated.get(i)) {
                tokens.push(Token {
                    text: text.clone(),
                    is_final: true,
                    speaker: owned(speaker),
                    language: Some(lang.to_owned()),
                    translation_status: Some("translation".to_owned()),
                    source_language: Some(SPOKEN_LANGUAGE.to_owned()),
                    ..Token::default()
                });
            }
        }
        if let Some(s) = special {
            tokens.push(Token {
                text: match s {
                    Special::Fin => "<fin>",
                    Special::End => "<end>",
                }
                .to_owned(),
                is_final: true,
                ..Token::default()
            });
        }
        if self.start.non_final_tokens {
            for w in &self.pending {
                tokens.push(Token {
                    text: w.text.clone(),
                    start_ms: Some(w.start_ms),
                    end_ms: Some(w.end_ms().min(audio_ms).max(w.start_ms)),
                    confidence: Some(confidence(&w.text, false)),
                    is_final: false,
                    speaker: owned(speaker),
                    language: owned(language),
                    translation_status: owned(status),
                    source_language: None,
                });
            }
        }
        let response = Response {
            tokens,
            final_audio_proc_ms: self.final_ms.min(audio_ms),
            total_audio_proc_ms: audio_ms,
            finished,
        };
        let json = response.to_json();
        self.emitted
            .finals
            .extend(finals.iter().map(|w| w.text.clone()));
        self.emitted
            .final_starts
            .extend(finals.iter().map(|w| w.start_ms));
        match special {
            Some(Special::Fin) => self.emitted.fins += 1,
            Some(Special::End) => self.emitted.ends += 1,
            None => {}
        }
        self.last_sent_total = audio_ms;
        json
    }
}

/// The emulator's "translation" of a word: the same word upper-cased.
fn translate(text: &str) -> String {
    text.to_uppercase()
}

/// A deterministic confidence in 0.80..0.99, higher once final.
fn confidence(text: &str, is_final: bool) -> f64 {
    let spread = (text.len() % 7) as f64 / 100.0;
    if is_final {
        0.92 + spread
    } else {
        0.80 + spread
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marker::{encode, script};
    use serde_json::Value;

    fn start(endpoint: bool) -> StartConfig {
        StartConfig {
            model: "stt-rt-v5".into(),
            format: AudioFormat::Raw {
                bytes_per_sample: 2,
                sample_rate: 16_000,
                channels: 1,
                s16le: true,
            },
            diarization: false,
            language_id: false,
            endpoint_detection: endpoint,
            max_endpoint_delay_ms: None,
            non_final_tokens: true,
            translation: None,
        }
    }

    fn settings() -> RecognizerSettings {
        RecognizerSettings {
            finalize_lag_ms: 800,
            default_endpoint_delay_ms: 2000,
            container_bytes_per_ms: 16.0,
        }
    }

    /// Feeds audio in 120 ms chunks, returns all parsed responses.
    fn run(r: &mut Recognizer, audio: &[u8]) -> Vec<Value> {
        let mut out = Vec::new();
        for chunk in audio.chunks(3840) {
            r.count(chunk);
            if let Some(j) = r.recognize(chunk) {
                out.push(serde_json::from_str(&j).unwrap());
            }
        }
        out
    }

    #[test]
    fn words_go_non_final_then_final_once() {
        let words = script(5, 500, 200);
        let audio = encode(&words, 3000, 16_000, 1);
        let mut r = Recognizer::new(settings(), start(false));
        let mut msgs = run(&mut r, &audio);
        msgs.extend(
            r.finish()
                .iter()
                .map(|j| serde_json::from_str::<Value>(j).unwrap()),
        );
        let finals: Vec<(String, u64, u64)> = msgs
            .iter()
            .flat_map(|m| m["tokens"].as_array().unwrap().clone())
            .filter(|t| t["is_final"] == true)
            .map(|t| {
                (
                    t["text"].as_str().unwrap().to_owned(),
                    t["start_ms"].as_u64().unwrap(),
                    t["end_ms"].as_u64().unwrap(),
                )
            })
            .collect();
        let expect: Vec<_> = words
            .iter()
            .map(|w| (w.text.clone(), w.start_ms, w.end_ms()))
            .collect();
        assert_eq!(finals, expect);
        let mut prev = (0, 0);
        for m in &msgs {
            let f = m["final_audio_proc_ms"].as_u64().unwrap();
            let t = m["total_audio_proc_ms"].as_u64().unwrap();
            assert!(f <= t && f >= prev.0 && t >= prev.1, "{m}");
            prev = (f, t);
        }
        assert_eq!(msgs.last().unwrap()["finished"], true);
        assert_eq!(prev, (3000, 3000));
    }

    #[test]
    fn endpoint_once_per_utterance() {
        let words = script(2, 400, 100);
        let audio = encode(&words, 5000, 16_000, 1);
        let mut r = Recognizer::new(settings(), start(true));
        let msgs = run(&mut r, &audio);
        let ends = msgs
            .iter()
            .flat_map(|m| m["tokens"].as_array().unwrap().clone())
            .filter(|t| t["text"] == "<end>")
            .count();
        assert_eq!(ends, 1);
    }

    #[test]
    fn container_progress_by_bytes() {
        let mut s = start(false);
        s.format = AudioFormat::Container;
        let mut r = Recognizer::new(settings(), s);
        assert_eq!(r.count(&[0u8; 1600]), 100);
        assert!(r.recognize(&[0u8; 1600]).is_none());
        assert_eq!(r.count(&[0u8; 8000]), 600);
        assert!(r.recognize(&[0u8; 8000]).is_some());
    }
}
