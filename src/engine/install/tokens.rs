//! A Moonshine `tokenizer.bin` as the `tokens.txt` sherpa-onnx reads.
//!
//! `tokenizer.bin` is the token strings one after another, each behind its
//! length in one byte, or two when the first has its high bit set (the low
//! seven bits, then the next byte times 128). `tokens.txt` is a line per
//! token, `base64(bytes) id`, with sentencepiece's word marker U+2581 turned
//! into a space, and `AA==` (a NUL) for an empty token, as Moonshine's own
//! converter writes it; the installed file is checked against its pin.

use base64::Engine as _;

/// The `tokens.txt` for `tokenizer`; `None` when a length runs past the end.
pub(crate) fn tokens_txt(tokenizer: &[u8]) -> Option<String> {
    const MARKER: &[u8] = "\u{2581}".as_bytes();
    let mut out = String::new();
    let mut rest = tokenizer;
    let mut id = 0usize;
    while let Some((&first, tail)) = rest.split_first() {
        let (len, tail) = if first >= 128 {
            let (&second, tail) = tail.split_first()?;
            (usize::from(first & 0x7f) | usize::from(second) << 7, tail)
        } else {
            (usize::from(first), tail)
        };
        if tail.len() < len {
            return None;
        }
        let (token, tail) = tail.split_at(len);
        let token = replace(token, MARKER, b" ");
        let encoded = base64::engine::general_purpose::STANDARD.encode(&token);
        let encoded = if encoded.is_empty() {
            "AA==".to_owned()
        } else {
            encoded
        };
        out.push_str(&format!("{encoded} {id}\n"));
        id += 1;
        rest = tail;
    }
    Some(out)
}

/// `bytes` with every `from` replaced by `to`.
fn replace(bytes: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_markers_and_empty_tokens() {
        let mut bin = vec![0u8]; // an empty token
        bin.push(4);
        bin.extend_from_slice("\u{2581}a".as_bytes()); // three bytes + 'a'
        // A 130-byte token: 130 = 2 | 1 << 7, so 0x82 0x01.
        bin.extend_from_slice(&[0x82, 0x01]);
        bin.extend_from_slice(&[b'x'; 130]);
        let text = tokens_txt(&bin).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0], "AA== 0");
        assert_eq!(lines[1], "IGE= 1"); // " a"
        let (encoded, id) = lines[2].split_once(' ').unwrap();
        assert_eq!(id, "2");
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .unwrap();
        assert_eq!(decoded, vec![b'x'; 130]);
        // Truncated: a length past the end, or a second length byte missing.
        assert_eq!(tokens_txt(&[5, b'a']), None);
        assert_eq!(tokens_txt(&[0x82]), None);
    }
}
