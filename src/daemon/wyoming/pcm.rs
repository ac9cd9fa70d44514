//! A Wyoming client's PCM as the engine takes it: any sample width made
//! `pcm_s16le`, channels kept or mixed down to mono, at the client's rate.
//!
//! Soniox takes `pcm_s16le` at any rate and channel count, so a Soniox
//! session gets the client's rate and channels unchanged; the local engine
//! takes mono only (and resamples to 16 kHz itself), so a session that may
//! run on it, from its start or by falling back, gets the channels averaged.
//! Resampling is never needed here for that reason. Chunks may split a
//! frame: the odd bytes wait for the next chunk.

use bytes::Bytes;

/// Bytes a sample may have: 8, 16, 24 or 32-bit signed little-endian
/// integers, as Wyoming's `width` counts them.
pub(crate) const WIDTHS: std::ops::RangeInclusive<u16> = 1..=4;

/// Turns one client's chunks into the session's audio.
#[derive(Debug)]
pub(crate) struct Converter {
    width: usize,
    channels: usize,
    mono: bool,
    /// A partial frame from the last chunk.
    carry: Vec<u8>,
}

impl Converter {
    /// For samples of `width` bytes (in [`WIDTHS`]) in `channels` (at least
    /// 1) interleaved channels; `mono` mixes them down.
    pub(crate) fn new(width: u16, channels: u16, mono: bool) -> Converter {
        Converter {
            width: usize::from(width.clamp(*WIDTHS.start(), *WIDTHS.end())),
            channels: usize::from(channels.max(1)),
            mono,
            carry: Vec::new(),
        }
    }

    /// Channels of the audio that comes out.
    pub(crate) fn channels_out(&self) -> usize {
        if self.mono { 1 } else { self.channels }
    }

    /// Whether the client's bytes go out as they are.
    fn passthrough(&self) -> bool {
        self.width == 2 && self.channels_out() == self.channels
    }

    /// The whole frames of `chunk` (after what an earlier chunk left) as
    /// `pcm_s16le`; `None` while not even one frame is complete.
    pub(crate) fn push(&mut self, chunk: &[u8]) -> Option<Bytes> {
        let frame = self.width * self.channels;
        let joined;
        let input: &[u8] = if self.carry.is_empty() {
            chunk
        } else {
            self.carry.extend_from_slice(chunk);
            joined = std::mem::take(&mut self.carry);
            &joined
        };
        let whole = input.len() / frame * frame;
        self.carry.extend_from_slice(&input[whole..]);
        let input = &input[..whole];
        if input.is_empty() {
            return None;
        }
        if self.passthrough() {
            return Some(Bytes::copy_from_slice(input));
        }
        let frames = input.len() / frame;
        let mut out = Vec::with_capacity(frames * self.channels_out() * 2);
        for frame in input.chunks_exact(frame) {
            let samples = frame.chunks_exact(self.width).map(sample);
            if self.mono {
                let sum: i32 = samples.map(i32::from).sum();
                // The mean of i16 values is an i16: no clipping, no overflow
                // (at most 32 channels of ±32768 sum to well within i32).
                let mean = sum / self.channels as i32;
                out.extend_from_slice(&(mean as i16).to_le_bytes());
            } else {
                for s in samples {
                    out.extend_from_slice(&s.to_le_bytes());
                }
            }
        }
        Some(Bytes::from(out))
    }

    /// Bytes of a partial frame left at the end of the audio.
    pub(crate) fn leftover(&self) -> usize {
        self.carry.len()
    }
}

/// One little-endian signed sample of 1 to 4 bytes, as 16 bits: the top
/// 16 bits of wider samples, 8-bit ones scaled up.
fn sample(bytes: &[u8]) -> i16 {
    match *bytes {
        [a] => i16::from(a as i8) << 8,
        [a, b] => i16::from_le_bytes([a, b]),
        [_, b, c] | [_, _, b, c] => i16::from_le_bytes([b, c]),
        // `Converter::new` clamps the width to 1..=4.
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s16(samples: &[i16]) -> Vec<u8> {
        samples.iter().flat_map(|s| s.to_le_bytes()).collect()
    }

    #[test]
    fn sixteen_bit_audio_passes_through_in_whole_frames() {
        let mut c = Converter::new(2, 2, false);
        assert_eq!(c.channels_out(), 2);
        let audio = s16(&[1, 2, 3, 4, 5]);
        assert_eq!(c.push(&audio[..3]), None, "not one whole frame yet");
        assert_eq!(c.push(&audio[3..]).unwrap(), s16(&[1, 2, 3, 4]));
        assert_eq!(c.leftover(), 2, "half a frame waits");
        assert_eq!(c.push(&s16(&[6])).unwrap(), s16(&[5, 6]));
        assert_eq!(c.leftover(), 0);
    }

    #[test]
    fn stereo_is_mixed_down_for_the_local_engine() {
        let mut c = Converter::new(2, 2, true);
        assert_eq!(c.channels_out(), 1);
        let out = c
            .push(&s16(&[100, 300, -32768, -32768, 32767, 32767, 5, -6]))
            .unwrap();
        assert_eq!(out, s16(&[200, -32768, 32767, 0]));
        let mut six = Converter::new(2, 6, true);
        assert_eq!(six.push(&s16(&[6, 6, 6, 6, 6, 6])).unwrap(), s16(&[6]));
    }

    #[test]
    fn other_widths_become_sixteen_bits() {
        let mut c8 = Converter::new(1, 1, false);
        assert_eq!(
            c8.push(&[0x7f, 0x80, 0x00]).unwrap(),
            s16(&[0x7f00, -32768, 0])
        );
        let mut c24 = Converter::new(3, 1, false);
        assert_eq!(
            c24.push(&[0xff, 0x34, 0x12, 0x00, 0x00, 0x80]).unwrap(),
            s16(&[0x1234, -32768])
        );
        let mut c32 = Converter::new(4, 2, true);
        let frame: Vec<u8> = [0x1000_0000_i32, 0x3000_0000]
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        assert_eq!(c32.push(&frame).unwrap(), s16(&[0x2000]));
    }
}
