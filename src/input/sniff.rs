//! What a stream's first bytes say it is: a WAV header, a media container
//! sttpipe decodes (or one it passes through), or none; and, for none, whether
//! the bytes look like text or like random data rather than 16-bit audio.
//!
//! Pure functions of the bytes: the reader reads up to [`SNIFF_BYTES`] and
//! asks. An MPEG audio or ADTS frame header is taken only when the next
//! frame's header follows where the first says it ends (or the stream ends
//! there): two bytes of raw PCM can look like a frame sync, two chained
//! frames hardly.

/// The most a sniff looks at.
pub(super) const SNIFF_BYTES: usize = 4096;

/// Below this, text and noise are not judged.
const JUDGE_MIN_BYTES: usize = 64;

/// A media format, by its magic bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Media {
    /// MPEG audio layer III, or anything behind an ID3v2 tag.
    Mp3,
    /// Native FLAC.
    Flac,
    /// Ogg with Vorbis (or FLAC) inside.
    Ogg,
    /// Ogg with Opus inside: no well-kept pure-Rust decoder, so passed through.
    OggOpus,
    /// ISO base media: MP4, M4A (AAC).
    Mp4,
    /// Matroska or WebM.
    Matroska,
    /// AIFF or AIFF-C.
    Aiff,
    /// Raw AAC in ADTS frames.
    Adts,
}

impl Media {
    /// Every format, for `sttpipe --version`.
    pub(super) const ALL: [Media; 8] = [
        Media::Mp3,
        Media::Flac,
        Media::Ogg,
        Media::OggOpus,
        Media::Mp4,
        Media::Matroska,
        Media::Aiff,
        Media::Adts,
    ];

    /// The name for people.
    pub(super) fn name(self) -> &'static str {
        match self {
            Media::Mp3 => "MP3",
            Media::Flac => "FLAC",
            Media::Ogg => "Ogg Vorbis",
            Media::OggOpus => "Ogg Opus",
            Media::Mp4 => "MP4/M4A",
            Media::Matroska => "Matroska/WebM",
            Media::Aiff => "AIFF",
            Media::Adts => "AAC (ADTS)",
        }
    }

    /// Whether sttpipe decodes it; if not, it is passed through to Soniox.
    pub(super) fn decodable(self) -> bool {
        self != Media::OggOpus
    }
}

/// What the first bytes are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Sniffed {
    /// `RIFF....WAVE` or `RF64....WAVE`.
    Wav,
    /// A media container or stream.
    Media(Media),
    /// Nothing known: raw audio of the declared format, but the bytes read
    /// as text.
    Text,
    /// Nothing known, and the bytes do not look like 16-bit audio.
    Noise,
    /// Nothing known: raw audio.
    Raw,
}

/// Sniffs `head`, the stream's first bytes (all of it if `complete`, the
/// stream being that short).
pub(super) fn sniff(head: &[u8], complete: bool) -> Sniffed {
    let at = |range: std::ops::Range<usize>| head.get(range).unwrap_or_default();
    if matches!(at(0..4), b"RIFF" | b"RF64") && at(8..12) == b"WAVE" {
        return Sniffed::Wav;
    }
    if at(0..4) == b"fLaC" {
        return Sniffed::Media(Media::Flac);
    }
    if at(0..3) == b"ID3" {
        return Sniffed::Media(Media::Mp3);
    }
    if at(0..4) == b"OggS" {
        return Sniffed::Media(ogg(head));
    }
    if at(4..8) == b"ftyp" {
        return Sniffed::Media(Media::Mp4);
    }
    if at(0..4) == [0x1A, 0x45, 0xDF, 0xA3] {
        return Sniffed::Media(Media::Matroska);
    }
    if at(0..4) == b"FORM" && matches!(at(8..12), b"AIFF" | b"AIFC") {
        return Sniffed::Media(Media::Aiff);
    }
    if let Some(media) = frames(head, complete) {
        return Sniffed::Media(media);
    }
    if head.len() < JUDGE_MIN_BYTES {
        Sniffed::Raw
    } else if looks_like_text(head) {
        Sniffed::Text
    } else if looks_like_noise(head) {
        Sniffed::Noise
    } else {
        Sniffed::Raw
    }
}

/// The codec of an Ogg stream, from its first packet (the ID header).
fn ogg(head: &[u8]) -> Media {
    // The first page: a 27-byte header, then its segment table.
    let segments = head.get(26).map_or(0, |&n| usize::from(n));
    let packet = head.get(27 + segments..).unwrap_or_default();
    if packet.starts_with(b"OpusHead") {
        Media::OggOpus
    } else {
        Media::Ogg
    }
}

/// An MPEG layer III or ADTS stream: a frame header, and the next frame's
/// header where the first frame ends.
fn frames(head: &[u8], complete: bool) -> Option<Media> {
    let (media, length) = mp3_frame(head).or_else(|| adts_frame(head))?;
    match head.get(length..length + 2) {
        Some(next) => (next[0] == 0xFF && next[1] & 0xF0 == head[1] & 0xF0).then_some(media),
        // The stream is that frame and no more.
        None => (complete && length == head.len()).then_some(media),
    }
}

/// An MPEG audio layer III frame header at the start of `head`: its length.
fn mp3_frame(head: &[u8]) -> Option<(Media, usize)> {
    const V1: [u32; 15] = [
        0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
    ];
    const V2: [u32; 15] = [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160];
    let &[b0, b1, b2, ..] = head else {
        return None;
    };
    // Sync, and layer III (layers I and II are not decoded).
    if b0 != 0xFF || b1 & 0xE0 != 0xE0 || (b1 >> 1) & 3 != 1 {
        return None;
    }
    let version = (b1 >> 3) & 3;
    let (bitrate, rate_index) = (usize::from(b2 >> 4), usize::from((b2 >> 2) & 3));
    if version == 1 || bitrate == 0 || bitrate == 15 || rate_index == 3 {
        return None;
    }
    let padding = u32::from((b2 >> 1) & 1);
    let (kbps, rate, factor) = match version {
        3 => (V1[bitrate], [44_100, 48_000, 32_000][rate_index], 144_000),
        2 => (V2[bitrate], [22_050, 24_000, 16_000][rate_index], 72_000),
        _ => (V2[bitrate], [11_025, 12_000, 8_000][rate_index], 72_000),
    };
    Some((Media::Mp3, (factor * kbps / rate + padding) as usize))
}

/// An ADTS (raw AAC) frame header at the start of `head`: its length.
fn adts_frame(head: &[u8]) -> Option<(Media, usize)> {
    let &[b0, b1, _, b3, b4, b5, ..] = head else {
        return None;
    };
    if b0 != 0xFF || b1 & 0xF6 != 0xF0 {
        return None;
    }
    let length = (usize::from(b3 & 0x03) << 11) | (usize::from(b4) << 3) | (usize::from(b5) >> 5);
    (length >= 7).then_some((Media::Adts, length))
}

/// Whether `head` reads as text: UTF-8 without control characters but
/// white space (a cut character at the end is allowed).
fn looks_like_text(head: &[u8]) -> bool {
    let text = match std::str::from_utf8(head) {
        Ok(text) => text,
        Err(err) if err.error_len().is_none() => {
            // Only the last character is cut short.
            let valid = err.valid_up_to();
            std::str::from_utf8(&head[..valid]).unwrap_or_default()
        }
        Err(_) => return false,
    };
    !text.is_empty()
        && text
            .chars()
            .all(|c| !c.is_control() || matches!(c, '\n' | '\r' | '\t'))
}

/// Whether `head` is unlike 16-bit audio: in pcm_s16le speech, music or
/// silence, most samples are small, so most high bytes are near 0x00 or
/// 0xFF; in random (or compressed) bytes only one in eight is.
fn looks_like_noise(head: &[u8]) -> bool {
    let highs = head.iter().skip(1).step_by(2);
    let count = highs.clone().count();
    let small = highs.filter(|&&b| !(0x10..0xF0).contains(&b)).count();
    count > 0 && small * 10 < count * 3
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An MPEG-1 layer III frame of 128 kb/s at 44.1 kHz: 417 bytes.
    fn mp3_frame_bytes() -> Vec<u8> {
        let mut frame = vec![0xFF, 0xFB, 0x90, 0x64];
        frame.resize(417, 0);
        frame
    }

    #[test]
    fn containers_by_their_magic() {
        let ogg = |id: &[u8]| {
            let mut page = b"OggS".to_vec();
            page.resize(26, 0);
            page.push(1);
            page.push(30);
            page.extend_from_slice(id);
            page
        };
        let mut mp4 = vec![0, 0, 0, 0x20];
        mp4.extend_from_slice(b"ftypM4A ");
        let cases: [(Vec<u8>, Sniffed); 9] = [
            (b"RIFF\0\0\0\0WAVEfmt ".to_vec(), Sniffed::Wav),
            (b"RF64\xff\xff\xff\xffWAVE".to_vec(), Sniffed::Wav),
            (b"fLaC\0\0\0\x22".to_vec(), Sniffed::Media(Media::Flac)),
            (b"ID3\x04\0\0".to_vec(), Sniffed::Media(Media::Mp3)),
            (ogg(b"\x01vorbis"), Sniffed::Media(Media::Ogg)),
            (ogg(b"OpusHead"), Sniffed::Media(Media::OggOpus)),
            (mp4, Sniffed::Media(Media::Mp4)),
            (
                vec![0x1A, 0x45, 0xDF, 0xA3, 0x9F],
                Sniffed::Media(Media::Matroska),
            ),
            (b"FORM\0\0\0\0AIFC".to_vec(), Sniffed::Media(Media::Aiff)),
        ];
        for (head, expected) in cases {
            assert_eq!(sniff(&head, false), expected, "{head:?}");
        }
        assert!(!Media::OggOpus.decodable());
        assert!(Media::Mp4.decodable());
    }

    #[test]
    fn a_frame_sync_counts_only_with_its_next_frame() {
        let two = [mp3_frame_bytes(), mp3_frame_bytes()].concat();
        assert_eq!(sniff(&two, false), Sniffed::Media(Media::Mp3));
        assert_eq!(sniff(&mp3_frame_bytes(), true), Sniffed::Media(Media::Mp3));
        // The same header with anything else where the next should be.
        let mut lone = mp3_frame_bytes();
        lone.resize(1000, 0);
        assert_eq!(sniff(&lone, false), Sniffed::Raw);
        // An ADTS frame of 10 bytes, then the next.
        let adts = [0xFF, 0xF1, 0x50, 0x80, 0x01, 0x5F, 0xFC, 0, 0, 0];
        let stream = [&adts[..], &adts[..]].concat();
        assert_eq!(sniff(&stream, false), Sniffed::Media(Media::Adts));
    }

    #[test]
    fn text_noise_and_audio() {
        let text = "WEBVTT\n\nsome words — and more words, for a while longer\n".repeat(4);
        assert_eq!(sniff(text.as_bytes(), true), Sniffed::Text);
        // A byte pattern that is spread over every value, as compressed data.
        let noise: Vec<u8> = (0..2048u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        assert_eq!(sniff(&noise, false), Sniffed::Noise);
        // Quiet pcm_s16le: small samples of either sign.
        let audio: Vec<u8> = (0..1024i32)
            .flat_map(|i| (((i * 37) % 2000 - 1000) as i16).to_le_bytes())
            .collect();
        assert_eq!(sniff(&audio, false), Sniffed::Raw);
        assert_eq!(sniff(&[0; 2048], false), Sniffed::Raw);
        assert_eq!(sniff(b"hello", true), Sniffed::Raw);
    }
}
