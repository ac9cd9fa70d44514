//! `audio_format` names: the raw formats, whose frame size is known, and the
//! containers Soniox detects or accepts by name.

use std::borrow::Cow;

/// Container formats Soniox detects or accepts by name.
pub const CONTAINER_FORMATS: &[&str] = &[
    "auto", "aac", "aiff", "amr", "asf", "flac", "mp3", "ogg", "wav", "webm",
];

/// Bytes per sample of a raw format's long name (`pcm_s16le`, `mulaw`, …),
/// or `None` if the name is not a raw format.
pub fn raw_sample_bytes(name: &str) -> Option<usize> {
    match name {
        "mulaw" | "alaw" | "pcm_s8" | "pcm_u8" => Some(1),
        _ => {
            let rest = name.strip_prefix("pcm_")?;
            // By `get`, not `split_at`: a name is anyone's string, and the
            // split may fall inside a multi-byte character.
            let at = rest.len().checked_sub(2)?;
            let (kind_bits, endian) = (rest.get(..at)?, rest.get(at..)?);
            if endian != "le" && endian != "be" {
                return None;
            }
            match kind_bits {
                "s8" | "u8" => Some(1),
                "s16" | "u16" => Some(2),
                "s24" | "u24" => Some(3),
                "s32" | "u32" | "f32" => Some(4),
                "f64" => Some(8),
                _ => None,
            }
        }
    }
}

/// Whether `name` is a long format name Soniox accepts (raw or container).
pub fn is_known_format(name: &str) -> bool {
    raw_sample_bytes(name).is_some() || CONTAINER_FORMATS.contains(&name)
}

/// The long spelling of a known `audio_format` name, or `None` if Soniox
/// does not know the name. Raw formats may drop their `pcm_` prefix
/// (Soniox's own message suggests `s16le`).
pub fn long_format_name(name: &str) -> Option<Cow<'_, str>> {
    if is_known_format(name) {
        return Some(Cow::Borrowed(name));
    }
    if name.starts_with("pcm_") {
        return None;
    }
    let long = format!("pcm_{name}");
    is_known_format(&long).then_some(Cow::Owned(long))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_format_names_take_the_long_spelling() {
        assert_eq!(long_format_name("s16le").as_deref(), Some("pcm_s16le"));
        assert_eq!(long_format_name("pcm_f32be").as_deref(), Some("pcm_f32be"));
        assert_eq!(long_format_name("u8").as_deref(), Some("pcm_u8"));
        assert_eq!(long_format_name("mulaw").as_deref(), Some("mulaw"));
        assert_eq!(long_format_name("ogg").as_deref(), Some("ogg"));
        for bad in ["pcm_pcm_s16le", "pcm_ogg", "s16", "avi", ""] {
            assert_eq!(long_format_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn raw_and_container_names() {
        assert_eq!(raw_sample_bytes("pcm_s24be"), Some(3));
        assert_eq!(raw_sample_bytes("pcm_f64le"), Some(8));
        assert_eq!(raw_sample_bytes("mp3"), None);
        assert!(is_known_format("webm"));
        assert!(!is_known_format("avi"));
        assert!(!is_known_format("pcm_s16xx"));
        // Found by the fuzzer: the last two bytes end inside a character.
        assert_eq!(raw_sample_bytes("pcm_s1\u{393}e"), None);
        assert_eq!(long_format_name("s1\u{393}e"), None);
    }
}
