//! Raw audio of any layout Soniox takes, as mono `f32` samples: every raw
//! sample format (integer of 8 to 32 bits, either sign, either byte order;
//! float of 32 or 64 bits; G.711 µ-law and A-law), any channel count,
//! downmixed by the mean of the channels.
//!
//! Chunks may end inside a frame: the bytes of a partial frame are carried
//! to the next chunk, so the samples out do not depend on where input was
//! cut.

use super::AudioFormat;

/// How one sample is coded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Coding {
    /// Integer of this many bytes, signed or not.
    Int { bytes: usize, signed: bool },
    /// IEEE float of 4 or 8 bytes.
    Float { bytes: usize },
    /// G.711 µ-law.
    Mulaw,
    /// G.711 A-law.
    Alaw,
}

/// Turns raw bytes of one format into mono samples in [-1, 1].
#[derive(Debug)]
pub(crate) struct ToMono {
    coding: Coding,
    big_endian: bool,
    channels: usize,
    /// Bytes of one frame.
    frame: usize,
    /// The start of a frame the last chunk cut short.
    carry: Vec<u8>,
}

impl ToMono {
    /// A converter for `format`; `None` if it is not a raw format.
    pub(crate) fn new(format: &AudioFormat) -> Option<ToMono> {
        let (coding, big_endian) = coding(&format.name)?;
        let channels = usize::from(format.channels?).max(1);
        let frame = format.bytes_per_frame()?;
        Some(ToMono {
            coding,
            big_endian,
            channels,
            frame,
            carry: Vec::new(),
        })
    }

    /// Appends the mono samples of the whole frames in `carry` + `bytes`
    /// to `out`; keeps a trailing partial frame for the next call.
    pub(crate) fn push(&mut self, bytes: &[u8], out: &mut Vec<f32>) {
        let mut rest = bytes;
        if !self.carry.is_empty() {
            let need = self.frame - self.carry.len();
            let take = need.min(rest.len());
            self.carry.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.carry.len() < self.frame {
                return;
            }
            let frame = std::mem::take(&mut self.carry);
            out.push(self.frame_value(&frame));
        }
        let mut frames = rest.chunks_exact(self.frame);
        out.extend(frames.by_ref().map(|frame| self.frame_value(frame)));
        self.carry.extend_from_slice(frames.remainder());
    }

    /// The mean of one frame's channels.
    fn frame_value(&self, frame: &[u8]) -> f32 {
        let width = frame.len() / self.channels;
        let sum: f64 = frame
            .chunks_exact(width)
            .map(|sample| self.sample(sample))
            .sum();
        (sum / self.channels as f64) as f32
    }

    /// One sample's value in [-1, 1].
    fn sample(&self, bytes: &[u8]) -> f64 {
        match self.coding {
            Coding::Mulaw => f64::from(mulaw(bytes[0])) / 32768.0,
            Coding::Alaw => f64::from(alaw(bytes[0])) / 32768.0,
            Coding::Float { bytes: 4 } => f64::from(f32::from_bits(self.word(bytes) as u32)),
            Coding::Float { .. } => f64::from_bits(self.word(bytes)),
            Coding::Int {
                bytes: width,
                signed,
            } => {
                let bits = 8 * width as u32;
                let raw = self.word(bytes);
                let value = if signed {
                    // Sign-extend from `bits`.
                    ((raw << (64 - bits)) as i64 >> (64 - bits)) as f64
                } else {
                    raw as f64 - (1u64 << (bits - 1)) as f64
                };
                value / (1u64 << (bits - 1)) as f64
            }
        }
    }

    /// The sample's bytes as an unsigned integer, in the format's byte order.
    fn word(&self, bytes: &[u8]) -> u64 {
        let fold = |acc: u64, &b: &u8| (acc << 8) | u64::from(b);
        if self.big_endian {
            bytes.iter().fold(0, fold)
        } else {
            bytes.iter().rev().fold(0, fold)
        }
    }
}

/// A raw format name's coding and byte order.
fn coding(name: &str) -> Option<(Coding, bool)> {
    match name {
        "mulaw" => return Some((Coding::Mulaw, false)),
        "alaw" => return Some((Coding::Alaw, false)),
        "pcm_s8" => {
            return Some((
                Coding::Int {
                    bytes: 1,
                    signed: true,
                },
                false,
            ));
        }
        "pcm_u8" => {
            return Some((
                Coding::Int {
                    bytes: 1,
                    signed: false,
                },
                false,
            ));
        }
        _ => {}
    }
    let rest = name.strip_prefix("pcm_")?;
    let (body, big_endian) = match (rest.strip_suffix("le"), rest.strip_suffix("be")) {
        (Some(body), _) => (body, false),
        (_, Some(body)) => (body, true),
        _ => return None,
    };
    let bytes = super::raw_sample_bytes(name)?;
    let coding = match body.get(..1)? {
        "s" => Coding::Int {
            bytes,
            signed: true,
        },
        "u" => Coding::Int {
            bytes,
            signed: false,
        },
        "f" => Coding::Float { bytes },
        _ => return None,
    };
    Some((coding, big_endian))
}

/// G.711 µ-law to 16-bit linear (ITU-T G.711's decoding rule: bias 0x84).
fn mulaw(code: u8) -> i16 {
    let u = !code;
    let exponent = (u >> 4) & 0x07;
    let mantissa = i32::from(u & 0x0F);
    let magnitude = (((mantissa << 3) + 0x84) << exponent) - 0x84;
    let value = if u & 0x80 != 0 { -magnitude } else { magnitude };
    value as i16
}

/// G.711 A-law to 16-bit linear (even bits inverted; the sign bit set
/// means positive).
fn alaw(code: u8) -> i16 {
    let a = code ^ 0x55;
    let exponent = (a >> 4) & 0x07;
    let mantissa = i32::from(a & 0x0F);
    let magnitude = if exponent == 0 {
        (mantissa << 4) + 8
    } else {
        ((mantissa << 4) + 0x108) << (exponent - 1)
    };
    let value = if a & 0x80 != 0 { magnitude } else { -magnitude };
    value as i16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn convert(format: &AudioFormat, bytes: &[u8]) -> Vec<f32> {
        let mut to_mono = ToMono::new(format).unwrap();
        let mut out = Vec::new();
        // One byte at a time: frames cut anywhere give the same samples.
        for byte in bytes {
            to_mono.push(std::slice::from_ref(byte), &mut out);
        }
        let mut whole = Vec::new();
        ToMono::new(format).unwrap().push(bytes, &mut whole);
        assert_eq!(out, whole);
        out
    }

    #[test]
    fn every_integer_layout_gives_the_same_value() {
        // -0.5 and 0.25 in each layout.
        let cases: [(&str, Vec<u8>); 8] = [
            ("pcm_s16le", vec![0x00, 0xC0, 0x00, 0x20]),
            ("pcm_s16be", vec![0xC0, 0x00, 0x20, 0x00]),
            ("pcm_u16le", vec![0x00, 0x40, 0x00, 0xA0]),
            ("pcm_s24le", vec![0, 0, 0xC0, 0, 0, 0x20]),
            ("pcm_s24be", vec![0xC0, 0, 0, 0x20, 0, 0]),
            ("pcm_s32le", vec![0, 0, 0, 0xC0, 0, 0, 0, 0x20]),
            ("pcm_u8", vec![0x40, 0xA0]),
            ("pcm_s8", vec![0xC0, 0x20]),
        ];
        for (name, bytes) in cases {
            let format = AudioFormat::raw(name, 8000, 1);
            assert_eq!(convert(&format, &bytes), [-0.5, 0.25], "{name}");
        }
    }

    #[test]
    fn floats_and_g711() {
        let mut f32le = Vec::new();
        for v in [0.5f32, -0.125] {
            f32le.extend_from_slice(&v.to_le_bytes());
        }
        let format = AudioFormat::raw("pcm_f32le", 8000, 1);
        assert_eq!(convert(&format, &f32le), [0.5, -0.125]);
        let f64be: Vec<u8> = 0.75f64.to_be_bytes().to_vec();
        let format = AudioFormat::raw("pcm_f64be", 8000, 1);
        assert_eq!(convert(&format, &f64be), [0.75]);
        // G.711's silence codes and extremes.
        assert_eq!(mulaw(0xFF), 0);
        assert_eq!(mulaw(0x7F), 0);
        assert_eq!(mulaw(0x00), -32124);
        assert_eq!(mulaw(0x80), 32124);
        assert_eq!(alaw(0xD5), 8);
        assert_eq!(alaw(0x55), -8);
        assert_eq!(alaw(0xAA), 32256);
        assert_eq!(alaw(0x2A), -32256);
    }

    #[test]
    fn channels_are_averaged() {
        // Stereo s16le: (0.5, -0.25), (0.25, 0.25).
        let bytes = [0x00, 0x40, 0x00, 0xE0, 0x00, 0x20, 0x00, 0x20];
        let format = AudioFormat::raw("pcm_s16le", 48_000, 2);
        assert_eq!(convert(&format, &bytes), [0.125, 0.25]);
        assert!(ToMono::new(&AudioFormat::container("mp3")).is_none());
    }
}
