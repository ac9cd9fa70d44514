//! Audio formats: the names Soniox accepts, and what a byte of each is worth.
//!
//! Raw formats (PCM, µ-law, A-law) have a fixed frame size, so their duration
//! is known from the byte count: that is what lets the pacer hold a file to
//! real time and lets the session cut input only at whole frames. Containers
//! (`wav` passed through, `mp3`, `ogg`, …) are opaque bytes whose duration the
//! service reports back; see [`crate::pacer`].
//!
//! [`convert`] turns any raw format into mono samples, [`resample`] brings
//! them to 16 kHz: the decoded input and the local engine share both.

pub(crate) mod convert;
pub(crate) mod resample;

use std::fmt;

pub(crate) use soniox_wire::format::is_known_format;
use soniox_wire::format::raw_sample_bytes;

/// The audio stream as it goes to the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AudioFormat {
    /// Soniox's `audio_format` name: `pcm_s16le`, `mulaw`, `mp3`, `auto`, …
    pub(crate) name: String,
    /// Samples per second per channel; `None` for containers.
    pub(crate) sample_rate: Option<u32>,
    /// Interleaved channels; `None` for containers.
    pub(crate) channels: Option<u16>,
}

impl AudioFormat {
    /// The default input: pcm_s16le, 16 kHz, mono.
    pub(crate) fn default_pcm() -> AudioFormat {
        AudioFormat::raw("pcm_s16le", 16_000, 1)
    }

    /// A raw format with a known frame layout.
    pub(crate) fn raw(name: &str, sample_rate: u32, channels: u16) -> AudioFormat {
        AudioFormat {
            name: name.to_owned(),
            sample_rate: Some(sample_rate),
            channels: Some(channels),
        }
    }

    /// A container passed through by name.
    pub(crate) fn container(name: &str) -> AudioFormat {
        AudioFormat {
            name: name.to_owned(),
            sample_rate: None,
            channels: None,
        }
    }

    /// Bytes in one sample of one channel, for raw formats.
    pub(crate) fn bytes_per_sample(&self) -> Option<usize> {
        raw_sample_bytes(&self.name)
    }

    /// Bytes in one frame (one sample of every channel), for raw formats.
    pub(crate) fn bytes_per_frame(&self) -> Option<usize> {
        Some(self.bytes_per_sample()? * usize::from(self.channels?))
    }

    /// Bytes in one second of audio, for raw formats.
    pub(crate) fn bytes_per_second(&self) -> Option<u64> {
        Some(self.bytes_per_frame()? as u64 * u64::from(self.sample_rate?))
    }

    /// Whether the duration of a byte count is known without decoding.
    pub(crate) fn is_raw(&self) -> bool {
        self.bytes_per_frame().is_some()
    }

    /// Milliseconds of audio in `bytes` bytes, for raw formats (rounded down).
    pub(crate) fn duration_ms(&self, bytes: u64) -> Option<u64> {
        let per_second = self.bytes_per_second()?;
        Some(bytes * 1000 / per_second)
    }

    /// The chunk size that carries about `ms` milliseconds, a whole number of
    /// frames; `fallback` bytes for containers.
    pub(crate) fn chunk_bytes(&self, ms: u32, fallback: usize) -> usize {
        match (self.bytes_per_frame(), self.sample_rate) {
            (Some(frame), Some(rate)) => {
                let frames = (u64::from(rate) * u64::from(ms) / 1000).max(1);
                frames as usize * frame
            }
            _ => fallback,
        }
    }
}

impl fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.sample_rate, self.channels) {
            (Some(rate), Some(channels)) => write!(f, "{} {rate} Hz {channels} ch", self.name),
            _ => f.write_str(&self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_sizes() {
        let f = AudioFormat::default_pcm();
        assert_eq!(f.bytes_per_frame(), Some(2));
        assert_eq!(f.bytes_per_second(), Some(32_000));
        assert_eq!(f.chunk_bytes(100, 4096), 3200);
        assert_eq!(f.duration_ms(32_000), Some(1000));
        let stereo = AudioFormat::raw("pcm_s24be", 48_000, 2);
        assert_eq!(stereo.bytes_per_frame(), Some(6));
        assert_eq!(
            AudioFormat::raw("mulaw", 8000, 1).bytes_per_second(),
            Some(8000)
        );
        assert_eq!(
            AudioFormat::raw("pcm_f64le", 8000, 1).bytes_per_frame(),
            Some(8)
        );
    }

    #[test]
    fn containers_have_no_frame() {
        let f = AudioFormat::container("mp3");
        assert!(!f.is_raw());
        assert_eq!(f.chunk_bytes(100, 4096), 4096);
    }
}
