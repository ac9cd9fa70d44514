//! Deterministic "speech" for tests: word markers hidden in pcm_s16le audio.
//!
//! This module owns the audio side of the emulator's fake recognition. Test
//! audio is silence (zero samples) in which each word is announced by a short
//! *marker*: a run of consecutive samples that spells the word's text and
//! duration. The emulator's [`Decoder`] finds the markers in the audio stream
//! and reports each word with the exact millisecond at which its marker begins,
//! so transcripts and timestamps are fully predictable.
//!
//! # Marker layout
//!
//! A marker is `6 + L` consecutive samples (frames), where `L` is the number of
//! UTF-8 bytes of the word's text (1..=[`MAX_TEXT_BYTES`]):
//!
//! | sample | value |
//! |---|---|
//! | 0 | [`MAGIC0`] (`0x5A17` = 23063) |
//! | 1 | [`MAGIC1`] (`0xB395` as i16 = -19563) |
//! | 2 | `L`, the text length in bytes |
//! | 3 .. 3+L | the text's UTF-8 bytes, one byte (0..=255) per sample |
//! | 3+L | `duration_ms >> 16` (as u16 bits) |
//! | 4+L | `duration_ms & 0xFFFF` (as u16 bits) |
//! | 5+L | checksum: FNV-1a over the u16 values of samples 2..5+L, folded to 16 bits |
//!
//! The two magic values are loud (|x| > 19000) and of opposite sign, so
//! silence and low-level noise never produce them; a chance match in loud
//! audio is rejected by the length bound and the checksum.
//!
//! The marker is written identically into **every channel** of a frame; the
//! [`Decoder`] reads channel 0 only. A word whose `start_ms` is `S` begins at
//! frame `ceil(S * sample_rate / 1000)` (exactly `S * sample_rate / 1000` for
//! rates that are multiples of 1000 Hz such as 8, 16 or 48 kHz), and the
//! decoder reports `floor(frame * 1000 / sample_rate)`, which gives back `S`
//! exactly for any rate of at least 1000 Hz.

/// First marker sample. Loud and positive: silence and noise never reach it.
pub const MAGIC0: i16 = 0x5A17;
/// Second marker sample. Loud and negative, so a DC offset or a clipped run
/// can never produce the pair.
pub const MAGIC1: i16 = 0xB395_u16 as i16;
/// The longest word text a marker can carry, in UTF-8 bytes.
pub const MAX_TEXT_BYTES: usize = 1024;

/// Samples a marker occupies besides its text bytes: two magics, the length,
/// two duration halves and the checksum.
const MARKER_OVERHEAD: usize = 6;

/// One recognised (or to be encoded) word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The token text, normally with a leading space like Soniox tokens (`" quick"`).
    pub text: String,
    /// Where the word's marker begins, in ms from the start of the stream.
    pub start_ms: u64,
    /// How long the word lasts, in ms; its end is `start_ms + duration_ms`.
    pub duration_ms: u32,
}

impl Word {
    /// The end of the word, in ms from the start of the stream.
    pub fn end_ms(&self) -> u64 {
        self.start_ms + u64::from(self.duration_ms)
    }
}

/// Number of frames a marker for `text` occupies.
pub fn marker_frames(text: &str) -> usize {
    text.len() + MARKER_OVERHEAD
}

/// The checksum of a marker's payload (length, text bytes, duration halves).
fn checksum(values: impl IntoIterator<Item = u16>) -> u16 {
    // FNV-1a over the 16-bit values, folded: cheap and order-sensitive.
    let mut h: u32 = 0x811C_9DC5;
    for v in values {
        h ^= u32::from(v);
        h = h.wrapping_mul(0x0100_0193);
    }
    ((h >> 16) ^ (h & 0xFFFF)) as u16
}

/// The frame at which a word starting at `start_ms` begins (rounded up).
fn start_frame(start_ms: u64, sample_rate: u32) -> u64 {
    (start_ms * u64::from(sample_rate)).div_ceil(1000)
}

/// Checks that [`encode`] can write `words` into `total_ms` of audio; the
/// error says which word is at fault. The rules are listed under [`encode`].
pub fn validate(
    words: &[Word],
    total_ms: u64,
    sample_rate: u32,
    channels: u16,
) -> Result<(), String> {
    if sample_rate < 1000 {
        return Err(format!("sample rate {sample_rate} Hz is below 1000 Hz"));
    }
    if channels == 0 {
        return Err("at least one channel is needed".to_owned());
    }
    let total_frames = total_ms * u64::from(sample_rate) / 1000;
    let mut prev_end_ms = 0u64;
    let mut prev_marker_end = 0u64;
    for (i, w) in words.iter().enumerate() {
        let len = w.text.len();
        if !(1..=MAX_TEXT_BYTES).contains(&len) {
            return Err(format!("word {i}: text must be 1..={MAX_TEXT_BYTES} bytes"));
        }
        if i > 0 && w.start_ms < prev_end_ms {
            return Err(format!(
                "word {i} ({:?}) at {} ms overlaps the previous word ending at {prev_end_ms} ms",
                w.text, w.start_ms
            ));
        }
        let frame = start_frame(w.start_ms, sample_rate);
        if i > 0 && frame < prev_marker_end {
            return Err(format!(
                "word {i} ({:?}): marker overlaps the previous marker",
                w.text
            ));
        }
        let marker_end = frame + marker_frames(&w.text) as u64;
        if marker_end > total_frames {
            return Err(format!(
                "word {i} ({:?}): marker does not fit in {total_ms} ms",
                w.text
            ));
        }
        prev_end_ms = w.end_ms();
        prev_marker_end = marker_end;
    }
    Ok(())
}

/// Encodes `words` as `total_ms` of pcm_s16le audio with `channels`
/// interleaved channels: silence everywhere except the word markers (see the
/// module docs for the layout), each written into every channel.
///
/// The result has `total_ms * sample_rate / 1000` frames.
///
/// # Panics
/// When [`validate`] fails: if `sample_rate < 1000` or `channels == 0`; if a
/// word's text is empty or longer than [`MAX_TEXT_BYTES`]; if the words are
/// not in order or overlap (a word must start at or after the previous
/// word's end, and its marker after the previous marker); or if a marker does
/// not fit inside `total_ms` (only the marker must fit: a word's duration may
/// run past the end). Also if the audio would not fit in memory.
pub fn encode(words: &[Word], total_ms: u64, sample_rate: u32, channels: u16) -> Vec<u8> {
    if let Err(e) = validate(words, total_ms, sample_rate, channels) {
        panic!("marker::encode: {e}");
    }
    let ch = usize::from(channels);
    let total_frames = total_ms * u64::from(sample_rate) / 1000;
    let frame_count = usize::try_from(total_frames).expect("audio too long for memory");
    let mut out = vec![0u8; frame_count * ch * 2];
    let mut samples: Vec<u16> = Vec::with_capacity(64);
    for w in words {
        samples.clear();
        samples.push(MAGIC0 as u16);
        samples.push(MAGIC1 as u16);
        // The length is at most MAX_TEXT_BYTES (validated), which fits in u16.
        samples.push(w.text.len() as u16);
        samples.extend(w.text.bytes().map(u16::from));
        samples.push((w.duration_ms >> 16) as u16);
        samples.push((w.duration_ms & 0xFFFF) as u16);
        let sum = checksum(samples[2..].iter().copied());
        samples.push(sum);
        // The marker ends within total_frames (validated), which fits in usize.
        let base = start_frame(w.start_ms, sample_rate) as usize;
        for (k, s) in samples.iter().enumerate() {
            let bytes = s.to_le_bytes();
            for c in 0..ch {
                let at = ((base + k) * ch + c) * 2;
                out[at..at + 2].copy_from_slice(&bytes);
            }
        }
    }
    out
}

/// Where the [`Decoder`] is inside a marker.
#[derive(Debug, Clone, Copy)]
enum State {
    /// Looking for [`MAGIC0`].
    Idle,
    /// Saw [`MAGIC0`] at frame `start`; expecting [`MAGIC1`].
    Magic { start: u64 },
    /// Saw both magics; expecting the length.
    Len { start: u64 },
    /// Collecting `len` text samples, two duration samples and the checksum.
    Body { start: u64, len: usize },
}

/// Incremental marker decoder for a pcm_s16le stream.
///
/// Feed it the audio as it arrives, in chunks of any size: a chunk may end in
/// the middle of a sample, a frame or a marker. Idle scanning looks only at
/// channel 0 and only for [`MAGIC0`], so it costs a compare per frame.
#[derive(Debug)]
pub struct Decoder {
    sample_rate: u32,
    frame_bytes: usize,
    /// Bytes of an incomplete frame left over from the previous chunk.
    partial: Vec<u8>,
    /// Index of the next frame to be examined.
    frame_pos: u64,
    state: State,
    /// Payload samples (text, duration, checksum) of the marker being read.
    body: Vec<u16>,
}

impl Decoder {
    /// A decoder for pcm_s16le audio with `channels` interleaved channels.
    ///
    /// # Panics
    /// If `sample_rate` or `channels` is zero.
    pub fn new(sample_rate: u32, channels: u16) -> Decoder {
        assert!(
            sample_rate > 0 && channels > 0,
            "rate and channels must be positive"
        );
        let frame_bytes = usize::from(channels) * 2;
        Decoder {
            sample_rate,
            frame_bytes,
            partial: Vec::with_capacity(frame_bytes),
            frame_pos: 0,
            state: State::Idle,
            body: Vec::new(),
        }
    }

    /// Number of complete frames consumed so far.
    pub fn frames(&self) -> u64 {
        self.frame_pos
    }

    /// Consumes the next chunk of audio and returns the words whose markers
    /// were completed by it, in stream order. Corrupt markers (bad length,
    /// bad text bytes, bad checksum, invalid UTF-8) are skipped silently.
    pub fn push(&mut self, mut bytes: &[u8]) -> Vec<Word> {
        let mut out = Vec::new();
        let fb = self.frame_bytes;
        if !self.partial.is_empty() {
            let need = fb - self.partial.len();
            if bytes.len() < need {
                self.partial.extend_from_slice(bytes);
                return out;
            }
            self.partial.extend_from_slice(&bytes[..need]);
            bytes = &bytes[need..];
            let s = i16::from_le_bytes([self.partial[0], self.partial[1]]);
            self.partial.clear();
            self.step(s, &mut out);
        }
        let whole = bytes.len() / fb * fb;
        let (frames, rest) = bytes.split_at(whole);
        let n = frames.len() / fb;
        let [m0, m1] = MAGIC0.to_le_bytes();
        let mut i = 0;
        while i < n {
            if matches!(self.state, State::Idle) {
                // Fast path: skip straight to the next frame whose channel 0
                // sample is MAGIC0.
                let found = frames[i * fb..]
                    .chunks_exact(fb)
                    .position(|f| f[0] == m0 && f[1] == m1);
                match found {
                    Some(j) => {
                        self.frame_pos += j as u64;
                        i += j;
                    }
                    None => {
                        self.frame_pos += (n - i) as u64;
                        break;
                    }
                }
            }
            let at = i * fb;
            let s = i16::from_le_bytes([frames[at], frames[at + 1]]);
            self.step(s, &mut out);
            i += 1;
        }
        self.partial.extend_from_slice(rest);
        out
    }

    /// Advances the marker state machine by one channel-0 sample.
    fn step(&mut self, s: i16, out: &mut Vec<Word>) {
        let pos = self.frame_pos;
        self.frame_pos += 1;
        self.state = match self.state {
            State::Idle if s == MAGIC0 => State::Magic { start: pos },
            State::Idle => State::Idle,
            State::Magic { start } if s == MAGIC1 => State::Len { start },
            // A repeated MAGIC0 may itself be the start of a marker.
            State::Magic { .. } if s == MAGIC0 => State::Magic { start: pos },
            State::Magic { .. } => State::Idle,
            State::Len { start } => {
                let len = s as u16 as usize;
                if (1..=MAX_TEXT_BYTES).contains(&len) {
                    self.body.clear();
                    State::Body { start, len }
                } else if s == MAGIC0 {
                    State::Magic { start: pos }
                } else {
                    State::Idle
                }
            }
            State::Body { start, len } => {
                self.body.push(s as u16);
                if self.body.len() < len + 3 {
                    State::Body { start, len }
                } else {
                    if let Some(w) = self.finish(start, len) {
                        out.push(w);
                    }
                    State::Idle
                }
            }
        };
    }

    /// Validates a complete marker body and builds its word.
    fn finish(&self, start: u64, len: usize) -> Option<Word> {
        let body = &self.body;
        let text_ok = body[..len].iter().all(|&v| v <= 0xFF);
        let sum = checksum(std::iter::once(len as u16).chain(body[..len + 2].iter().copied()));
        if !text_ok || sum != body[len + 2] {
            return None;
        }
        let text = String::from_utf8(body[..len].iter().map(|&v| v as u8).collect()).ok()?;
        let duration_ms = (u32::from(body[len]) << 16) | u32::from(body[len + 1]);
        Some(Word {
            text,
            start_ms: start * 1000 / u64::from(self.sample_rate),
            duration_ms,
        })
    }
}

/// The built-in vocabulary of [`script`]: a pangram followed by common words.
const VOCABULARY: &[&str] = &[
    "the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "seven",
    "bright", "birds", "sing", "about", "warm", "rain", "on", "a", "quiet", "morning", "and",
    "every", "river", "runs", "toward", "the", "open", "sea", "under", "silver", "clouds", "near",
    "green", "hills", "where", "children", "play", "simple", "games", "until", "evening",
];

/// The duration [`script`] gives each word, unless the spacing is shorter.
pub const SCRIPT_WORD_MS: u32 = 300;

/// A deterministic word list for tests: `words` English words from a built-in
/// vocabulary (cycling), each with a leading space (`" the"`, `" quick"`, …).
/// Word `i` starts at `first_ms + i * spacing_ms` and lasts
/// `min(SCRIPT_WORD_MS, spacing_ms)` ms, so words never overlap.
pub fn script(words: usize, spacing_ms: u64, first_ms: u64) -> Vec<Word> {
    let duration =
        u32::try_from(spacing_ms.min(u64::from(SCRIPT_WORD_MS))).unwrap_or(SCRIPT_WORD_MS);
    (0..words)
        .map(|i| Word {
            text: format!(" {}", VOCABULARY[i % VOCABULARY.len()]),
            start_ms: first_ms + i as u64 * spacing_ms,
            duration_ms: duration,
        })
        .collect()
}

/// Words for a sentence: each whitespace-separated word of `text` becomes a
/// [`Word`] with a leading space, lasting `word_ms`, with `gap_ms` of silence
/// between words; the first starts at `start_ms`.
pub fn sentence(text: &str, start_ms: u64, word_ms: u32, gap_ms: u64) -> Vec<Word> {
    let step = u64::from(word_ms) + gap_ms;
    text.split_whitespace()
        .enumerate()
        .map(|(i, w)| Word {
            text: format!(" {w}"),
            start_ms: start_ms + i as u64 * step,
            duration_ms: word_ms,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Tiny xorshift64* PRNG, so the tests need no `rand` crate.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn decode_chunked(
        audio: &[u8],
        rate: u32,
        ch: u16,
        rng: &mut XorShift,
        max_chunk: u64,
    ) -> Vec<Word> {
        let mut d = Decoder::new(rate, ch);
        let mut out = Vec::new();
        let mut rest = audio;
        while !rest.is_empty() {
            let n = (1 + rng.below(max_chunk) as usize).min(rest.len());
            out.extend(d.push(&rest[..n]));
            rest = &rest[n..];
        }
        out
    }

    #[test]
    fn round_trip_random_chunkings() {
        let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
        let words = script(40, 450, 120);
        let total = words.last().unwrap().end_ms() + 700;
        for &(rate, ch) in &[
            (16_000, 1),
            (8_000, 1),
            (48_000, 2),
            (44_100, 1),
            (22_050, 3),
        ] {
            let audio = encode(&words, total, rate, ch);
            assert_eq!(
                audio.len() as u64,
                total * u64::from(rate) / 1000 * u64::from(ch) * 2
            );
            for max_chunk in [1, 3, 7, 100, 3840, 100_000] {
                let got = decode_chunked(&audio, rate, ch, &mut rng, max_chunk);
                assert_eq!(got, words, "rate {rate} ch {ch} chunk {max_chunk}");
            }
        }
    }

    #[test]
    fn stereo_marker_in_every_channel() {
        let words = sentence("hello there", 10, 200, 50);
        let audio = encode(&words, 1000, 16_000, 2);
        // Frame 160 (10 ms) holds MAGIC0 in both channels.
        let at = 160 * 4;
        assert_eq!(i16::from_le_bytes([audio[at], audio[at + 1]]), MAGIC0);
        assert_eq!(i16::from_le_bytes([audio[at + 2], audio[at + 3]]), MAGIC0);
        assert_eq!(Decoder::new(16_000, 2).push(&audio), words);
    }

    #[test]
    fn word_at_the_very_end() {
        // 10 text bytes → a 16-frame marker = exactly the last ms at 16 kHz.
        let words = vec![Word {
            text: " last-word".into(),
            start_ms: 999,
            duration_ms: 300,
        }];
        assert_eq!(marker_frames(&words[0].text), 16);
        let audio = encode(&words, 1000, 16_000, 1);
        assert_eq!(audio.len(), 32_000);
        let mut d = Decoder::new(16_000, 1);
        // Nothing until the very last byte (which completes the checksum) arrives.
        assert!(d.push(&audio[..audio.len() - 1]).is_empty());
        assert_eq!(d.push(&audio[audio.len() - 1..]), words);
        // Same at 8 kHz with stereo: "ab" → 8 frames = the last ms.
        let w8 = vec![Word {
            text: "ab".into(),
            start_ms: 999,
            duration_ms: 1,
        }];
        let a8 = encode(&w8, 1000, 8_000, 2);
        assert_eq!(Decoder::new(8_000, 2).push(&a8), w8);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn marker_past_the_end_panics() {
        let words = vec![Word {
            text: " toolong".into(),
            start_ms: 999,
            duration_ms: 1,
        }];
        encode(&words, 1000, 8_000, 1);
    }

    #[test]
    #[should_panic(expected = "overlaps")]
    fn overlapping_words_panic() {
        let words = vec![
            Word {
                text: " a".into(),
                start_ms: 0,
                duration_ms: 300,
            },
            Word {
                text: " b".into(),
                start_ms: 200,
                duration_ms: 300,
            },
        ];
        encode(&words, 2000, 16_000, 1);
    }

    #[test]
    fn corrupt_markers_are_ignored() {
        let words = script(3, 500, 100);
        let mut audio = encode(&words, 2000, 16_000, 1);
        // Flip one text byte of the second word (frame 600*16 + 4).
        let at = (600 * 16 + 4) * 2;
        audio[at] ^= 0x01;
        let got = Decoder::new(16_000, 1).push(&audio);
        assert_eq!(got, vec![words[0].clone(), words[2].clone()]);
        // Break the checksum of the third word: only the first survives.
        let sum_frame = 1100 * 16 + marker_frames(&words[2].text) - 1;
        audio[sum_frame * 2] ^= 0x40;
        assert_eq!(Decoder::new(16_000, 1).push(&audio), vec![words[0].clone()]);
    }

    #[test]
    fn noise_does_not_produce_words() {
        let mut rng = XorShift(42);
        let mut audio = Vec::new();
        for _ in 0..200_000 {
            // Low-level noise, ±2000.
            let s = (rng.below(4001) as i32 - 2000) as i16;
            audio.extend_from_slice(&s.to_le_bytes());
        }
        // A stray magic pair followed by garbage must not decode either.
        for s in [MAGIC0, MAGIC1, 5, 1, 2, 3, 4, 5, 6, 7, 8] {
            audio.extend_from_slice(&s.to_le_bytes());
        }
        assert!(Decoder::new(16_000, 1).push(&audio).is_empty());
    }

    #[test]
    fn exact_start_for_odd_rates() {
        for ms in [0u64, 1, 7, 333, 1001, 59_999] {
            let w = vec![Word {
                text: " x".into(),
                start_ms: ms,
                duration_ms: 5,
            }];
            for rate in [1000u32, 11_025, 22_050, 44_100, 96_000] {
                let audio = encode(&w, ms + 20, rate, 1);
                assert_eq!(Decoder::new(rate, 1).push(&audio), w, "ms {ms} rate {rate}");
            }
        }
    }

    #[test]
    fn script_and_sentence_shapes() {
        let s = script(3, 200, 50);
        assert_eq!(s[0].text, " the");
        assert_eq!(s[1].text, " quick");
        assert_eq!(s[2].start_ms, 450);
        assert_eq!(s[2].duration_ms, 200);
        let t = sentence("hello  world", 100, 250, 50);
        assert_eq!(
            t[1],
            Word {
                text: " world".into(),
                start_ms: 400,
                duration_ms: 250
            }
        );
    }

    #[test]
    fn unicode_text_round_trips() {
        let w = sentence("naïve café 東京", 0, 300, 100);
        let audio = encode(&w, 2000, 16_000, 1);
        assert_eq!(Decoder::new(16_000, 1).push(&audio), w);
    }
}
