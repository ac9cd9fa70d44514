//! The session's arithmetic on audio and text, pure and safe: the ring of
//! recent audio, sample/millisecond conversion, and
//! word tokens with times interpolated over a segment.

use std::collections::VecDeque;

use super::SAMPLE_RATE;
use crate::event::Token;

/// Audio kept for the padding and the partials.
const RING_SECONDS: usize = 30;

/// Samples at 16 kHz in `ms` milliseconds.
pub(crate) const fn samples(ms: u64) -> u64 {
    ms * SAMPLE_RATE as u64 / 1000
}

/// Milliseconds of `samples` at 16 kHz.
pub(crate) const fn ms(samples: u64) -> u64 {
    samples * 1000 / SAMPLE_RATE as u64
}

/// The last [`RING_SECONDS`] of 16 kHz audio, by absolute sample index.
#[derive(Debug)]
pub(crate) struct Ring {
    samples: VecDeque<f32>,
    /// Absolute index of `samples[0]`.
    start: u64,
}

impl Ring {
    const CAPACITY: usize = RING_SECONDS * SAMPLE_RATE as usize;

    pub(crate) fn new() -> Ring {
        Ring {
            samples: VecDeque::with_capacity(Ring::CAPACITY),
            start: 0,
        }
    }

    pub(crate) fn push(&mut self, audio: &[f32]) {
        self.samples.extend(audio);
        let excess = self.samples.len().saturating_sub(Ring::CAPACITY);
        if excess > 0 {
            self.samples.drain(..excess);
            self.start += excess as u64;
        }
    }

    pub(crate) fn end(&self) -> u64 {
        self.start + self.samples.len() as u64
    }

    /// Samples `[from, to)`, clipped to what is kept.
    pub(crate) fn slice(&self, from: u64, to: u64) -> Vec<f32> {
        let from = from.max(self.start);
        let to = to.min(self.end());
        if from >= to {
            return Vec::new();
        }
        let (a, b) = ((from - self.start) as usize, (to - self.start) as usize);
        self.samples.range(a..b).copied().collect()
    }
}

/// Word tokens for `text`, timed by sharing `[start_ms, end_ms]` among the
/// words in proportion to their characters (a space counts as one).
pub(crate) fn word_tokens(
    text: &str,
    start_ms: u64,
    end_ms: u64,
    is_final: bool,
    language: Option<&str>,
) -> Vec<Token> {
    let words: Vec<&str> = text.split_whitespace().collect();
    let lengths: Vec<u64> = words.iter().map(|w| w.chars().count() as u64).collect();
    let total = lengths.iter().sum::<u64>() + lengths.len().saturating_sub(1) as u64;
    let span = end_ms.saturating_sub(start_ms);
    let at = |chars: u64| start_ms + span * chars / total.max(1);
    let mut cursor = 0;
    let mut tokens = Vec::with_capacity(words.len());
    for (word, length) in words.iter().zip(lengths) {
        tokens.push(Token {
            text: format!(" {word}"),
            start_ms: Some(at(cursor)),
            end_ms: Some(at(cursor + length)),
            is_final,
            language: language.map(str::to_owned),
            ..Default::default()
        });
        cursor += length + 1;
    }
    tokens
}

/// A `<end>` or `<fin>` marker.
pub(crate) fn marker(text: &str) -> Token {
    Token {
        text: text.to_owned(),
        is_final: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_last_seconds_by_absolute_index() {
        let mut ring = Ring::new();
        let second: Vec<f32> = vec![1.0; SAMPLE_RATE as usize];
        for _ in 0..RING_SECONDS + 2 {
            ring.push(&second);
        }
        assert_eq!(ring.start, 2 * u64::from(SAMPLE_RATE));
        assert_eq!(
            ring.end(),
            (RING_SECONDS as u64 + 2) * u64::from(SAMPLE_RATE)
        );
        assert!(ring.slice(0, 100).is_empty(), "evicted audio is gone");
        assert_eq!(ring.slice(ring.start - 10, ring.start + 10).len(), 10);
        assert_eq!(ring.slice(ring.end() - 5, ring.end() + 100).len(), 5);
    }

    #[test]
    fn words_share_the_segment_by_characters() {
        let tokens = word_tokens(" Hello big world.", 1_000, 2_600, true, None);
        let texts: Vec<&str> = tokens.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(texts, [" Hello", " big", " world."]);
        // 5 + 1 + 3 + 1 + 6 = 16 characters over 1600 ms: 100 ms each.
        let times: Vec<(u64, u64)> = tokens
            .iter()
            .map(|t| (t.start_ms.unwrap(), t.end_ms.unwrap()))
            .collect();
        assert_eq!(times, [(1_000, 1_500), (1_600, 1_900), (2_000, 2_600)]);
        assert!(tokens.iter().all(|t| t.is_final && t.confidence.is_none()));

        assert!(word_tokens("  ", 0, 100, true, None).is_empty());
        let en = word_tokens("Hi", 5, 5, false, Some("en"));
        assert_eq!(en[0].start_ms, Some(5));
        assert_eq!(en[0].end_ms, Some(5));
        assert_eq!(en[0].language.as_deref(), Some("en"));
        assert!(!en[0].is_final);
    }
}
