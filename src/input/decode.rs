//! Media input decoded in-process: a container's audio track through
//! symphonia, downmixed to mono and resampled to 16 kHz.
//!
//! Why decode here rather than pass the container to Soniox: from here on
//! the audio is raw PCM, whose byte count is its duration, so the session
//! can replay it into a new upstream session after a failure, rotate, close
//! an idle session and fall back to the local engine; a container's bytes
//! from its middle are no stream at all.
//!
//! Why 16 kHz mono `pcm_s16le`: it is the rate the local engine works at and
//! the one Soniox recommends for real-time speech; Soniox recognises the
//! channels mixed anyway; and it holds the replay buffer to 32 kB a second
//! (44.1 kHz stereo float would take 11 times that). 16 bits keep every bit
//! of 16-bit sources: a 16 kHz mono FLAC of 16-bit audio comes out sample
//! for sample as it went in.
//!
//! The interface is one call: [`decode`] reads a [`MediaSource`] to its end
//! and hands the samples to a sink in pieces of any size; the caller cuts
//! them into chunks. A packet that does not decode is skipped (a damaged
//! frame of an MP3 is not the end of the talk); a stream whose codec
//! sttpipe lacks is an error that says so.

use std::fmt;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as MediaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;
use tracing::debug;

use super::sniff::Media;
use crate::audio::resample::{self, To16k};

/// Why decoding stopped early.
#[derive(Debug)]
pub(super) enum DecodeError<E> {
    /// The sink failed (it gets its own error back).
    Sink(E),
    /// The source could not be read.
    Read(std::io::Error),
    /// The stream cannot be decoded, and why, for people.
    Media(String),
}

impl<E> DecodeError<E> {
    fn media(what: Media, message: impl fmt::Display) -> DecodeError<E> {
        DecodeError::Media(format!(
            "cannot decode the {} input: {message}",
            what.name()
        ))
    }
}

/// What one decode did, for the log and the benchmark.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Decoded {
    /// The source's rate and channels (of its first packet).
    pub(super) rate: u32,
    pub(super) channels: usize,
    /// 16 kHz samples given to the sink.
    pub(super) samples: u64,
    /// Packets skipped because they did not decode.
    pub(super) skipped: u64,
}

/// Decodes the audio track of `source` (sniffed as `what`) to 16 kHz mono
/// samples in [-1, 1], handed to `sink` as they come.
pub(super) fn decode<E>(
    source: Box<dyn MediaSource + '_>,
    what: Media,
    sink: &mut dyn FnMut(&[f32]) -> Result<(), E>,
) -> Result<Decoded, DecodeError<E>> {
    let stream = MediaSourceStream::new(source, Default::default());
    let mut hint = Hint::new();
    hint.with_extension(extension(what));
    let probed = symphonia::default::get_probe().probe(
        &hint,
        stream,
        FormatOptions::default(),
        MetadataOptions::default(),
    );
    let mut format = probed.map_err(|e| from_media(what, e))?;
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(|| DecodeError::media(what, "it has no audio track"))?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|params| params.audio())
        .ok_or_else(|| DecodeError::media(what, "its audio track has no codec parameters"))?;
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(params, &AudioDecoderOptions::default())
        .map_err(|e| match e {
            MediaError::Unsupported(_) => DecodeError::media(
                what,
                format!(
                    "sttpipe has no decoder for its codec ({}); give --passthrough to send it to Soniox as it is",
                    params.codec
                ),
            ),
            other => from_media(what, other),
        })?;

    let mut decoded = Decoded::default();
    let mut resampler: Option<To16k> = None;
    let (mut interleaved, mut mono, mut out) = (Vec::<f32>::new(), Vec::new(), Vec::new());
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A stream cut short ends where it was cut.
            Err(MediaError::IoError(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(MediaError::IoError(e)) => return Err(DecodeError::Read(e)),
            // A chained stream whose next part needs new decoders: the
            // rare case of concatenated Ogg files. What came so far stands.
            Err(MediaError::ResetRequired) => break,
            Err(e) => return Err(from_media(what, e)),
        };
        if packet.track_id != track_id {
            continue;
        }
        let buffer = match decoder.decode(&packet) {
            Ok(buffer) => buffer,
            Err(MediaError::DecodeError(reason)) => {
                decoded.skipped += 1;
                debug!(reason, "skipped a packet that does not decode");
                continue;
            }
            Err(MediaError::IoError(e)) => return Err(DecodeError::Read(e)),
            Err(e) => return Err(from_media(what, e)),
        };
        let rate = buffer.spec().rate();
        let channels = buffer.spec().channels().count().max(1);
        if buffer.frames() == 0 {
            continue;
        }
        buffer.copy_to_vec_interleaved(&mut interleaved);
        mono.clear();
        mono.extend(
            interleaved
                .chunks_exact(channels)
                .map(|frame| frame.iter().sum::<f32>() / channels as f32),
        );
        out.clear();
        match resampler.as_mut() {
            Some(r) if r.rate() == rate => {}
            _ => {
                // The first packet, or a rate that changed mid-stream:
                // flush what the old rate held, then go on at the new one.
                if let Some(mut old) = resampler.take() {
                    old.finish(&mut out).map_err(|e| DecodeError::Media(e.0))?;
                } else {
                    (decoded.rate, decoded.channels) = (rate, channels);
                    debug!(media = what.name(), rate, channels, "decoding");
                }
                if rate == 0 {
                    return Err(DecodeError::media(what, "its sample rate is 0"));
                }
                resampler = Some(To16k::new(rate).map_err(|e| DecodeError::Media(e.0))?);
            }
        }
        if let Some(r) = resampler.as_mut() {
            r.push(&mono, &mut out)
                .map_err(|e| DecodeError::Media(e.0))?;
        }
        give(&out, &mut decoded, sink)?;
    }
    if let Some(mut r) = resampler {
        out.clear();
        r.finish(&mut out).map_err(|e| DecodeError::Media(e.0))?;
        give(&out, &mut decoded, sink)?;
    }
    debug!(
        media = what.name(),
        seconds = decoded.samples / u64::from(resample::RATE),
        skipped = decoded.skipped,
        "decoded"
    );
    Ok(decoded)
}

/// Hands `samples` to the sink, counting them.
fn give<E>(
    samples: &[f32],
    decoded: &mut Decoded,
    sink: &mut dyn FnMut(&[f32]) -> Result<(), E>,
) -> Result<(), DecodeError<E>> {
    if samples.is_empty() {
        return Ok(());
    }
    decoded.samples += samples.len() as u64;
    sink(samples).map_err(DecodeError::Sink)
}

/// A symphonia error as ours: read errors stay read errors.
fn from_media<E>(what: Media, error: MediaError) -> DecodeError<E> {
    match error {
        MediaError::IoError(e) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
            DecodeError::Read(e)
        }
        other => DecodeError::media(what, other),
    }
}

/// The file extension that steers symphonia's probe to the sniffed format
/// first (the probe still checks the bytes).
fn extension(what: Media) -> &'static str {
    match what {
        Media::Mp3 => "mp3",
        Media::Flac => "flac",
        Media::Ogg | Media::OggOpus => "ogg",
        Media::Mp4 => "m4a",
        Media::Matroska => "mkv",
        Media::Aiff => "aiff",
        Media::Adts => "aac",
    }
}

/// Converts samples in [-1, 1] to pcm_s16le bytes (rounded, clipped),
/// appended to `out`.
pub(super) fn to_s16le(samples: &[f32], out: &mut bytes::BytesMut) {
    out.reserve(samples.len() * 2);
    for &sample in samples {
        let value = (sample * 32768.0).round().clamp(-32768.0, 32767.0) as i16;
        out.extend_from_slice(&value.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s16_values_survive_the_round_trip() {
        let values: Vec<i16> = vec![i16::MIN, -12345, -1, 0, 1, 999, i16::MAX];
        let samples: Vec<f32> = values.iter().map(|&v| f32::from(v) / 32768.0).collect();
        let mut out = bytes::BytesMut::new();
        to_s16le(&samples, &mut out);
        let back: Vec<i16> = out
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        assert_eq!(back, values);
        let mut clipped = bytes::BytesMut::new();
        to_s16le(&[1.5, -2.0], &mut clipped);
        assert_eq!(&clipped[..], &[0xFF, 0x7F, 0x00, 0x80]);
    }

    #[test]
    fn garbage_behind_a_magic_is_a_media_error() {
        let mut bytes = b"fLaC".to_vec();
        bytes.extend(std::iter::repeat_n(0x55, 500));
        let source = Box::new(std::io::Cursor::new(bytes));
        let result = decode::<()>(source, Media::Flac, &mut |_| Ok(()));
        assert!(matches!(result, Err(DecodeError::Media(_))), "{result:?}");
    }
}
