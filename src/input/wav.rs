//! The WAV header (after [`super::sniff`] saw `RIFF....WAVE` or `RF64`): walking its
//! chunks up to the sample data, and mapping the `fmt ` chunk to the raw
//! format sttpipe streams.
//!
//! The walk reads through a [`HeaderSource`], which the reader thread
//! supplies: this file knows the format and nothing of fds, waits or the
//! channel, and a header is read straight from the stream, never buffered
//! whole.

use crate::audio::AudioFormat;
use crate::config::resolve::{MAX_CHANNELS, MAX_RATE};

/// The largest `fmt ` chunk accepted. The formats sttpipe streams need 16
/// bytes, or 40 for WAVE_FORMAT_EXTENSIBLE; the cap keeps a corrupt size from
/// allocating gigabytes.
const MAX_FMT_BYTES: usize = 4096;

// WAV format tags (mmreg.h) that sttpipe can stream as raw audio.
/// Integer PCM: unsigned at 8 bits, signed above.
const WAVE_FORMAT_PCM: u16 = 0x0001;
/// IEEE float PCM, 32 or 64 bits.
const WAVE_FORMAT_IEEE_FLOAT: u16 = 0x0003;
/// G.711 A-law.
const WAVE_FORMAT_ALAW: u16 = 0x0006;
/// G.711 µ-law.
const WAVE_FORMAT_MULAW: u16 = 0x0007;
/// A wrapper: the real tag is the first two bytes of the subformat GUID.
const WAVE_FORMAT_EXTENSIBLE: u16 = 0xFFFE;

/// The reads a header walk needs, with the caller's error type (the reader
/// thread's also says "the receiver is gone").
pub(super) trait HeaderSource {
    /// The caller's error; a header that cannot be streamed becomes one too.
    type Error: From<BadWav>;

    /// Fills `out` unless EOF comes first. Returns the count read.
    fn read_full(&mut self, out: &mut [u8]) -> Result<usize, Self::Error>;

    /// Reads and discards up to `len` bytes. Returns the count (less at EOF).
    fn skip(&mut self, len: u64) -> Result<u64, Self::Error>;
}

/// A WAV header that cannot be streamed, and why.
#[derive(Debug)]
pub(super) struct BadWav(pub(super) String);

/// The caller's error for a header that cannot be streamed.
fn bad<E: From<BadWav>>(message: impl Into<String>) -> E {
    E::from(BadWav(message.into()))
}

/// Reads WAV chunks after `RIFF....WAVE` (the sniffed 12 bytes, read
/// first) up to the start of the sample
/// data. Returns the format and the data size (`None`: until EOF).
pub(super) fn read_header<S: HeaderSource>(
    source: &mut S,
) -> Result<(AudioFormat, Option<u64>), S::Error> {
    const TRUNCATED: &str = "the WAV header ends before its data chunk";
    let mut format = None;
    loop {
        let mut header = [0u8; 8];
        if source.read_full(&mut header)? < header.len() {
            return Err(bad(TRUNCATED));
        }
        let [i0, i1, i2, i3, s0, s1, s2, s3] = header;
        let size = u32::from_le_bytes([s0, s1, s2, s3]);
        match &[i0, i1, i2, i3] {
            b"fmt " => {
                if format.is_some() {
                    return Err(bad("the WAV header has two fmt chunks"));
                }
                let len = usize::try_from(size)
                    .ok()
                    .filter(|len| (16..=MAX_FMT_BYTES).contains(len))
                    .ok_or_else(|| {
                        bad(format!(
                            "the WAV fmt chunk has {size} bytes, expected 16 to {MAX_FMT_BYTES}"
                        ))
                    })?;
                // RIFF chunks are padded to an even size; the pad byte is
                // not counted in the size.
                let mut body = vec![0u8; len + (len & 1)];
                if source.read_full(&mut body)? < body.len() {
                    return Err(bad(TRUNCATED));
                }
                format = Some(parse_fmt(&body[..len]).map_err(bad)?);
            }
            b"data" => {
                let format =
                    format.ok_or_else(|| bad("the WAV data chunk comes before its fmt chunk"))?;
                // ffmpeg writing to a pipe cannot seek back to fill in the
                // size and leaves 0xFFFFFFFF (RF64 always does); others
                // leave 0.
                let data_bytes = match size {
                    0 | u32::MAX => None,
                    size => Some(u64::from(size)),
                };
                return Ok((format, data_bytes));
            }
            // LIST, fact, ds64 (RF64), bext, …: not needed to stream.
            _ => {
                let len = u64::from(size) + u64::from(size & 1);
                if source.skip(len)? < len {
                    return Err(bad(TRUNCATED));
                }
            }
        }
    }
}

/// The stream format a WAV `fmt ` chunk body describes, or why it cannot be
/// streamed.
pub(crate) fn parse_fmt(body: &[u8]) -> Result<AudioFormat, String> {
    const SHORT: &str = "the WAV fmt chunk is too short";
    let tag = le_u16(body, 0).ok_or(SHORT)?;
    let channels = le_u16(body, 2).ok_or(SHORT)?;
    let rate = le_u32(body, 4).ok_or(SHORT)?;
    let block_align = le_u16(body, 12).ok_or(SHORT)?;
    let bits = le_u16(body, 14).ok_or(SHORT)?;
    let codec = if tag == WAVE_FORMAT_EXTENSIBLE {
        // cbSize, wValidBitsPerSample and dwChannelMask come first; the
        // subformat GUID starts with the real format tag.
        le_u16(body, 24).ok_or("the WAV fmt chunk is too short for WAVE_FORMAT_EXTENSIBLE")?
    } else {
        tag
    };
    let name = match (codec, bits) {
        // 8-bit WAV PCM is unsigned; wider sizes are signed.
        (WAVE_FORMAT_PCM, 8) => "pcm_u8",
        (WAVE_FORMAT_PCM, 16) => "pcm_s16le",
        (WAVE_FORMAT_PCM, 24) => "pcm_s24le",
        (WAVE_FORMAT_PCM, 32) => "pcm_s32le",
        (WAVE_FORMAT_IEEE_FLOAT, 32) => "pcm_f32le",
        (WAVE_FORMAT_IEEE_FLOAT, 64) => "pcm_f64le",
        (WAVE_FORMAT_ALAW, 8) => "alaw",
        (WAVE_FORMAT_MULAW, 8) => "mulaw",
        (WAVE_FORMAT_PCM | WAVE_FORMAT_IEEE_FLOAT | WAVE_FORMAT_ALAW | WAVE_FORMAT_MULAW, _) => {
            return Err(format!("unsupported WAV sample size: {bits} bits"));
        }
        _ => {
            return Err(format!(
                "unsupported WAV encoding (format tag {codec:#06x}): \
                 sttpipe streams PCM, IEEE float, A-law and µ-law WAV"
            ));
        }
    };
    // The same ranges as --rate and --channels: a header is input too.
    if !(1..=MAX_CHANNELS).contains(&channels) || !(1..=MAX_RATE).contains(&rate) {
        return Err(format!(
            "the WAV header declares {channels} channels at {rate} Hz \
             (sttpipe takes 1 to {MAX_CHANNELS} channels at 1 to {MAX_RATE} Hz)"
        ));
    }
    let format = AudioFormat::raw(name, rate, channels);
    if format.bytes_per_frame() != Some(usize::from(block_align)) {
        return Err(format!(
            "the WAV block align ({block_align}) does not match {channels} channels of {bits} bits"
        ));
    }
    Ok(format)
}

/// The little-endian `u16` at `at`, if `bytes` is long enough.
fn le_u16(bytes: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(bytes.get(at..at + 2)?.try_into().ok()?))
}

/// The little-endian `u32` at `at`, if `bytes` is long enough.
fn le_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(bytes.get(at..at + 4)?.try_into().ok()?))
}

#[cfg(test)]
pub(super) mod fixtures {
    //! WAV bytes for tests, chunk by chunk, so that a test can break any part.

    use super::WAVE_FORMAT_EXTENSIBLE;

    /// A `fmt ` chunk body of 16 bytes.
    pub(in crate::input) fn fmt_body(tag: u16, channels: u16, rate: u32, bits: u16) -> Vec<u8> {
        let align = channels * bits / 8;
        let mut body = Vec::new();
        body.extend(tag.to_le_bytes());
        body.extend(channels.to_le_bytes());
        body.extend(rate.to_le_bytes());
        body.extend(rate.wrapping_mul(u32::from(align)).to_le_bytes());
        body.extend(align.to_le_bytes());
        body.extend(bits.to_le_bytes());
        body
    }

    /// A WAVE_FORMAT_EXTENSIBLE `fmt ` chunk body (40 bytes).
    pub(in crate::input) fn fmt_extensible(
        sub_tag: u16,
        channels: u16,
        rate: u32,
        bits: u16,
    ) -> Vec<u8> {
        let mut body = fmt_body(WAVE_FORMAT_EXTENSIBLE, channels, rate, bits);
        body.extend(22u16.to_le_bytes()); // cbSize
        body.extend(bits.to_le_bytes()); // valid bits
        body.extend(3u32.to_le_bytes()); // channel mask
        body.extend(sub_tag.to_le_bytes());
        body.extend([0, 0, 0, 0, 0x10, 0, 0x80, 0, 0, 0xAA, 0, 0x38, 0x9B, 0x71]);
        body
    }

    /// One RIFF chunk, padded to an even size.
    pub(in crate::input) fn chunk(id: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut out = id.to_vec();
        out.extend(u32::try_from(body.len()).unwrap().to_le_bytes());
        out.extend(body);
        if body.len() % 2 == 1 {
            out.push(0);
        }
        out
    }

    /// `RIFF` + size + `WAVE` + chunks; the RIFF size is left as ffmpeg leaves
    /// it on a pipe (0xFFFFFFFF), which readers ignore.
    pub(in crate::input) fn riff(chunks: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"RIFF\xff\xff\xff\xffWAVE".to_vec();
        for c in chunks {
            out.extend(c);
        }
        out
    }

    /// A data chunk header with a given size field, then `samples`.
    pub(in crate::input) fn data_with_size(size: u32, samples: &[u8]) -> Vec<u8> {
        let mut out = b"data".to_vec();
        out.extend(size.to_le_bytes());
        out.extend(samples);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::fixtures::{chunk, data_with_size, fmt_body, fmt_extensible, riff};
    use super::*;
    use crate::input::InputOptions;
    use crate::input::test_support::{Ev, audio_bytes, audio_lens, options, pattern, read_file};

    #[tokio::test]
    async fn riff_that_is_not_wave_is_audio() {
        let mut input = b"RIFF\x10\x00\x00\x00AVI LIST".to_vec();
        input.extend(pattern(4000));
        let events = read_file(&input, options).await;
        assert_eq!(events[0], Ev::Format(AudioFormat::default_pcm()));
        assert_eq!(audio_bytes(&events), input);
    }

    #[tokio::test]
    async fn wav_pcm16_with_list_before_data() {
        let samples = pattern(8000 * 2 * 2 / 10 * 3 + 2);
        let input = riff(&[
            chunk(b"fmt ", &fmt_body(1, 2, 8000, 16)),
            chunk(b"LIST", b"INFOISFT\x05\x00\x00\x00Lavf\x00"), // odd size: padded
            chunk(b"data", &samples),
        ]);
        let events = read_file(&input, options).await;
        assert_eq!(
            events[0],
            Ev::Format(AudioFormat::raw("pcm_s16le", 8000, 2))
        );
        // 100 ms at 8 kHz stereo s16 = 3200 bytes; 2 bytes left are half a frame.
        assert_eq!(audio_lens(&events), [3200, 3200, 3200]);
        assert_eq!(events.last(), Some(&Ev::Dropped(2)));
        assert_eq!(audio_bytes(&events), samples[..9600]);
    }

    #[tokio::test]
    async fn wav_kinds_map_to_raw_formats() {
        let cases = [
            (fmt_body(1, 1, 8000, 8), AudioFormat::raw("pcm_u8", 8000, 1)),
            (
                fmt_body(1, 1, 16000, 24),
                AudioFormat::raw("pcm_s24le", 16000, 1),
            ),
            (
                fmt_body(1, 2, 44100, 32),
                AudioFormat::raw("pcm_s32le", 44100, 2),
            ),
            (
                fmt_body(3, 2, 48000, 32),
                AudioFormat::raw("pcm_f32le", 48000, 2),
            ),
            (
                fmt_body(3, 1, 22050, 64),
                AudioFormat::raw("pcm_f64le", 22050, 1),
            ),
            (fmt_body(6, 1, 8000, 8), AudioFormat::raw("alaw", 8000, 1)),
            (fmt_body(7, 1, 8000, 8), AudioFormat::raw("mulaw", 8000, 1)),
            (
                fmt_extensible(1, 2, 48000, 24),
                AudioFormat::raw("pcm_s24le", 48000, 2),
            ),
            (
                fmt_extensible(3, 2, 48000, 32),
                AudioFormat::raw("pcm_f32le", 48000, 2),
            ),
        ];
        for (fmt, expected) in cases {
            let frame = expected.bytes_per_frame().unwrap();
            let samples = pattern(frame * 10);
            let input = riff(&[chunk(b"fmt ", &fmt), chunk(b"data", &samples)]);
            let events = read_file(&input, options).await;
            assert_eq!(events[0], Ev::Format(expected), "{events:?}");
            assert_eq!(audio_bytes(&events), samples);
            assert_eq!(events.len(), 2, "{events:?}");
        }
    }

    #[tokio::test]
    async fn wav_data_size_is_honoured_and_trailing_chunks_skipped() {
        let samples = pattern(1000);
        let input = riff(&[
            chunk(b"fmt ", &fmt_body(1, 1, 16000, 16)),
            chunk(b"data", &samples),
            chunk(b"LIST", b"INFOIART\x04\x00\x00\x00abc\x00"),
        ]);
        let events = read_file(&input, options).await;
        assert_eq!(
            events,
            [Ev::Format(AudioFormat::default_pcm()), Ev::Audio(samples),]
        );
    }

    #[tokio::test]
    async fn ffmpeg_streamed_wav_reads_to_eof() {
        // ffmpeg -f wav - on a pipe: RIFF and data sizes 0xFFFFFFFF, a LIST
        // chunk between fmt and data.
        let samples = pattern(7001);
        let mut input = riff(&[
            chunk(b"fmt ", &fmt_body(1, 1, 16000, 16)),
            chunk(b"LIST", b"INFOISFT\x0e\x00\x00\x00Lavf61.7.100\x00\x00"),
        ]);
        input.extend(data_with_size(u32::MAX, &samples));
        let events = read_file(&input, options).await;
        assert_eq!(events[0], Ev::Format(AudioFormat::default_pcm()));
        assert_eq!(audio_lens(&events), [3200, 3200, 600]);
        assert_eq!(events.last(), Some(&Ev::Dropped(1)));

        // A data size of 0 means the same.
        let mut input = riff(&[chunk(b"fmt ", &fmt_body(1, 1, 16000, 16))]);
        input.extend(data_with_size(0, &samples[..6400]));
        let events = read_file(&input, options).await;
        assert_eq!(audio_bytes(&events), samples[..6400]);
    }

    #[tokio::test]
    async fn wav_header_overrides_the_default_and_auto() {
        let samples = pattern(800);
        let input = riff(&[
            chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)),
            chunk(b"data", &samples),
        ]);
        for declared in ["auto", "wav"] {
            let events = read_file(&input, |path| InputOptions {
                format: AudioFormat::container(declared),
                format_explicit: true,
                ..options(path)
            })
            .await;
            assert_eq!(
                events[0],
                Ev::Format(AudioFormat::raw("pcm_s16le", 8000, 1))
            );
            assert_eq!(audio_bytes(&events), samples);
        }
    }

    #[tokio::test]
    async fn bad_wavs_fail_with_bad_audio() {
        let fmt16 = chunk(b"fmt ", &fmt_body(1, 1, 16000, 16));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "truncated fmt",
                riff(&[])[..12]
                    .iter()
                    .chain(&fmt16[..14])
                    .copied()
                    .collect(),
            ),
            ("no data chunk", riff(std::slice::from_ref(&fmt16))),
            (
                "data before fmt",
                riff(&[chunk(b"data", &[0; 4]), fmt16.clone()]),
            ),
            (
                "12-bit PCM",
                riff(&[
                    chunk(b"fmt ", &fmt_body(1, 1, 16000, 12)),
                    chunk(b"data", &[0; 4]),
                ]),
            ),
            (
                "MS ADPCM",
                riff(&[
                    chunk(b"fmt ", &fmt_body(2, 1, 16000, 4)),
                    chunk(b"data", &[0; 4]),
                ]),
            ),
            (
                "extensible MP3",
                riff(&[
                    chunk(b"fmt ", &fmt_extensible(0x55, 1, 16000, 16)),
                    chunk(b"data", &[0; 4]),
                ]),
            ),
            (
                "extensible too short",
                riff(&[
                    chunk(b"fmt ", &fmt_body(WAVE_FORMAT_EXTENSIBLE, 1, 16000, 16)),
                    chunk(b"data", &[0; 4]),
                ]),
            ),
            (
                "zero channels",
                riff(&[
                    chunk(b"fmt ", &fmt_body(1, 0, 16000, 16)),
                    chunk(b"data", &[0; 4]),
                ]),
            ),
            (
                "short fmt",
                riff(&[chunk(b"fmt ", &[1, 0, 1, 0]), chunk(b"data", &[0; 4])]),
            ),
            (
                "a rate past --rate's range",
                riff(&[
                    chunk(b"fmt ", &fmt_body(1, 1, u32::MAX, 16)),
                    chunk(b"data", &[0; 4]),
                ]),
            ),
            (
                "more channels than --channels takes",
                riff(&[
                    chunk(b"fmt ", &fmt_body(1, 33, 16000, 16)),
                    chunk(b"data", &[0; 4]),
                ]),
            ),
            (
                "LIST past the end",
                riff(&[fmt16.clone(), b"LIST\x00\x01\x00\x00INFO".to_vec()]),
            ),
        ];
        for (what, input) in cases {
            let events = read_file(&input, options).await;
            assert_eq!(events, [Ev::Failed("bad_audio")], "{what}");
        }

        let mut misaligned = fmt_body(1, 2, 16000, 16);
        misaligned[12] = 3; // block align 3 for 2 × 16 bits
        let events = read_file(
            &riff(&[chunk(b"fmt ", &misaligned), chunk(b"data", &[0; 4])]),
            options,
        )
        .await;
        assert_eq!(events, [Ev::Failed("bad_audio")]);
    }

    #[test]
    fn bad_audio_messages_say_why() {
        let err = parse_fmt(&fmt_body(1, 1, 16000, 12)).unwrap_err();
        assert_eq!(err, "unsupported WAV sample size: 12 bits");
        let err = parse_fmt(&fmt_body(2, 1, 16000, 4)).unwrap_err();
        assert!(err.contains("format tag 0x0002"), "{err}");
    }
}
