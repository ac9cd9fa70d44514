//! Streaming resampling of mono audio to 16 kHz, the rate the local engine
//! works at and the one decoded input is sent at, through rubato's FFT
//! resampler (a fixed ratio; band-limited, so downsampling does not fold
//! the high band over).
//!
//! Invariant: the samples out are on the input's timeline. The resampler's
//! delay is trimmed from the front, and [`To16k::finish`] flushes its tail,
//! so `n` input samples give `n * 16000 / rate` samples out (rounded down),
//! whatever the chunking.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler};

/// The output rate.
pub(crate) const RATE: u32 = 16_000;

/// Input frames per resampler call: about 20 ms at 48 kHz, a small delay.
const CHUNK: usize = 1024;

/// A streaming resampler from `rate` to [`RATE`]; a plain copy at 16 kHz.
pub(crate) struct To16k {
    /// `None` at 16 kHz.
    fft: Option<Fft<f32>>,
    rate: u32,
    /// Input not yet resampled (less than one call's worth).
    pending: Vec<f32>,
    /// One call's output.
    scratch: Vec<f32>,
    /// Output still to drop: the resampler's delay.
    skip: usize,
    /// Samples taken in, and given out.
    taken: u64,
    given: u64,
}

impl std::fmt::Debug for To16k {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("To16k")
            .field("rate", &self.rate)
            .field("taken", &self.taken)
            .field("given", &self.given)
            .finish()
    }
}

/// The resampler refused its buffers: a bug here, not a fault of the input.
#[derive(Debug)]
pub(crate) struct ResampleFailed(pub(crate) String);

impl To16k {
    /// A resampler from `rate` Hz (at least 1).
    pub(crate) fn new(rate: u32) -> Result<To16k, ResampleFailed> {
        let fft = if rate == RATE {
            None
        } else {
            let fft = Fft::<f32>::new(rate as usize, RATE as usize, CHUNK, 1, FixedSync::Input)
                .map_err(|e| ResampleFailed(format!("resampling from {rate} Hz: {e}")))?;
            Some(fft)
        };
        let (skip, scratch) = match &fft {
            Some(fft) => (fft.output_delay(), vec![0.0; fft.output_frames_max()]),
            None => (0, Vec::new()),
        };
        Ok(To16k {
            fft,
            rate,
            pending: Vec::with_capacity(CHUNK),
            scratch,
            skip,
            taken: 0,
            given: 0,
        })
    }

    /// The input rate.
    pub(crate) fn rate(&self) -> u32 {
        self.rate
    }

    /// Resamples `input`, appending to `out` what is ready.
    pub(crate) fn push(&mut self, input: &[f32], out: &mut Vec<f32>) -> Result<(), ResampleFailed> {
        self.taken += input.len() as u64;
        if self.fft.is_none() {
            out.extend_from_slice(input);
            self.given += input.len() as u64;
            return Ok(());
        }
        let mut rest = input;
        while !rest.is_empty() {
            let need = self.next_input() - self.pending.len();
            let take = need.min(rest.len());
            self.pending.extend_from_slice(&rest[..take]);
            rest = &rest[take..];
            if self.pending.len() == self.next_input() {
                self.process(None, out)?;
            }
        }
        Ok(())
    }

    /// Flushes the input still held and the resampler's tail into `out`,
    /// up to the exact count the input's duration calls for. The
    /// resampler is spent after this.
    pub(crate) fn finish(&mut self, out: &mut Vec<f32>) -> Result<(), ResampleFailed> {
        if self.fft.is_none() {
            return Ok(());
        }
        let due = self.taken * u64::from(RATE) / u64::from(self.rate);
        let mut partial = Some(self.pending.len());
        // Each call yields output; the tail is at most the delay plus one
        // call's worth, so this loop is short. The bound guards the loop
        // against a resampler that stops yielding.
        for _ in 0..64 {
            if self.given >= due {
                break;
            }
            self.process(partial.take().or(Some(0)), out)?;
        }
        if self.given > due {
            let extra = (self.given - due) as usize;
            out.truncate(out.len().saturating_sub(extra));
            self.given = due;
        }
        Ok(())
    }

    fn next_input(&self) -> usize {
        self.fft
            .as_ref()
            .map_or(CHUNK, |fft| fft.input_frames_next())
    }

    /// One resampler call on `pending` (all of it, or `partial` frames of
    /// it followed by silence).
    fn process(
        &mut self,
        partial: Option<usize>,
        out: &mut Vec<f32>,
    ) -> Result<(), ResampleFailed> {
        let Some(fft) = self.fft.as_mut() else {
            return Ok(());
        };
        let frames_in = fft.input_frames_next();
        self.pending.resize(frames_in, 0.0);
        let failed = |e: &dyn std::fmt::Display| ResampleFailed(format!("resampling: {e}"));
        let input = InterleavedSlice::new(&self.pending, 1, frames_in).map_err(|e| failed(&e))?;
        let capacity = self.scratch.len();
        let mut output =
            InterleavedSlice::new_mut(&mut self.scratch, 1, capacity).map_err(|e| failed(&e))?;
        let indexing = partial.map(|n| rubato::Indexing::new().partial_len(n));
        let (_, written) = fft
            .process_into_buffer(&input, &mut output, indexing.as_ref())
            .map_err(|e| failed(&e))?;
        self.pending.clear();
        let dropped = self.skip.min(written);
        self.skip -= dropped;
        out.extend_from_slice(&self.scratch[dropped..written]);
        self.given += (written - dropped) as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sine of `hz` at `rate`, `n` samples.
    fn sine(hz: f64, rate: u32, n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| (2.0 * std::f64::consts::PI * hz * i as f64 / f64::from(rate)).sin() as f32)
            .collect()
    }

    fn resample(rate: u32, input: &[f32], chunk: usize) -> Vec<f32> {
        let mut to16k = To16k::new(rate).unwrap();
        let mut out = Vec::new();
        for piece in input.chunks(chunk) {
            to16k.push(piece, &mut out).unwrap();
        }
        to16k.finish(&mut out).unwrap();
        out
    }

    #[test]
    fn length_follows_the_exact_ratio_and_time_is_kept() {
        for rate in [8_000, 22_050, 44_100, 48_000] {
            let n = rate as usize * 3 / 2;
            // 440 Hz: the same phase at the same time on both sides.
            let out = resample(rate, &sine(440.0, rate, n), 777);
            assert_eq!(out.len(), n * 16_000 / rate as usize, "{rate} Hz");
            let expected = sine(440.0, 16_000, out.len());
            // Away from the edges, sample by sample: no shift in time. A
            // 440 Hz sine moves at most 0.173 a sample at 16 kHz, so 0.09
            // is half a sample (the FFT resampler's delay is whole output
            // samples; 22.05 kHz leaves a fraction).
            let worst = out[800..out.len() - 800]
                .iter()
                .zip(&expected[800..])
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst < 0.09, "{rate} Hz: off by {worst}");
        }
    }

    #[test]
    fn tones_above_8_khz_are_filtered_out_not_folded_down() {
        // 12 kHz at 48 kHz would alias to 4 kHz at 16 kHz without a filter.
        let out = resample(48_000, &sine(12_000.0, 48_000, 48_000), 1000);
        let rms = (out[800..out.len() - 800]
            .iter()
            .map(|x| f64::from(x * x))
            .sum::<f64>()
            / (out.len() - 1600) as f64)
            .sqrt();
        assert!(rms < 0.01, "rms {rms}");
    }

    #[test]
    fn sixteen_khz_is_copied() {
        let input: Vec<f32> = (0..5000).map(|i| i as f32).collect();
        assert_eq!(resample(16_000, &input, 333), input);
    }
}
