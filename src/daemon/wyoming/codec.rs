//! Wyoming's framing, both ways, with every length bounded.
//!
//! An event is one JSON header line (`type`, and optionally `data`,
//! `data_length`, `payload_length`, `version`), then `data_length` bytes of
//! JSON object merged over the header's `data`, then `payload_length` bytes
//! of binary payload. What is read here is untrusted: the header line, the
//! data and the payload each have a limit, checked before anything is
//! allocated for them, and a stream that ends inside an event is told apart
//! from one that ends between events.

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// Longest header line, newline included. Headers are a few dozen bytes;
/// the official writer puts `data` after the line, not in it.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;
/// Most bytes of `data` after the header: a `transcribe` with a home's
/// names and terms stays far below it.
pub(crate) const MAX_DATA_BYTES: usize = 256 * 1024;
/// Largest payload, so largest audio chunk: over a second of 384 kHz
/// 32-bit stereo; Home Assistant sends chunks of a few kilobytes.
pub(crate) const MAX_PAYLOAD_BYTES: usize = 4 << 20;

/// The protocol revision whose events this front end speaks, sent as each
/// header's `version` as the official writer does.
pub(crate) const PROTOCOL_VERSION: &str = "1.10.2";

/// One event.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Message {
    /// `type`: `describe`, `audio-chunk`, …
    pub(crate) kind: String,
    /// `data`, with the bytes after the header merged in.
    pub(crate) data: Map<String, Value>,
    /// The payload (empty without one).
    pub(crate) payload: Bytes,
}

/// Why no event could be read.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The stream ended between events: the client is done.
    Closed,
    /// The stream ended inside an event.
    Truncated(&'static str),
    /// A part is longer than its limit.
    TooLarge(String),
    /// Not Wyoming: the message says what.
    Malformed(String),
    /// The socket failed.
    Io(std::io::Error),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Closed => f.write_str("the connection closed"),
            ReadError::Truncated(what) => {
                write!(f, "the connection ended inside an event's {what}")
            }
            ReadError::TooLarge(what) | ReadError::Malformed(what) => f.write_str(what),
            ReadError::Io(err) => write!(f, "reading the connection failed: {err}"),
        }
    }
}

/// Reads one event.
///
/// Not cancel-safe (a half-read event is lost with the future): the
/// connection reads on a task of its own.
pub(crate) async fn read<R: AsyncBufRead + Unpin>(reader: &mut R) -> Result<Message, ReadError> {
    let mut line = Vec::with_capacity(256);
    let read = (&mut *reader)
        .take(MAX_HEADER_BYTES as u64)
        .read_until(b'\n', &mut line)
        .await
        .map_err(ReadError::Io)?;
    match line.last() {
        _ if read == 0 => return Err(ReadError::Closed),
        Some(b'\n') => {
            line.pop();
        }
        _ if read >= MAX_HEADER_BYTES => {
            return Err(ReadError::TooLarge(format!(
                "a header line is longer than {MAX_HEADER_BYTES} bytes"
            )));
        }
        _ => return Err(ReadError::Truncated("header line")),
    }
    let header = parse_header(&line)?;
    let mut data = header.data;
    if header.data_length > 0 {
        let bytes = read_exact(reader, header.data_length, "data").await?;
        let Value::Object(more) = serde_json::from_slice(&bytes)
            .map_err(|e| ReadError::Malformed(format!("an event's data is not JSON: {e}")))?
        else {
            return Err(ReadError::Malformed(
                "an event's data is not a JSON object".into(),
            ));
        };
        data.extend(more);
    }
    let payload = if header.payload_length > 0 {
        read_exact(reader, header.payload_length, "payload")
            .await?
            .freeze()
    } else {
        Bytes::new()
    };
    Ok(Message {
        kind: header.kind,
        data,
        payload,
    })
}

/// A header line's fields, lengths checked against their limits.
struct Header {
    kind: String,
    data: Map<String, Value>,
    data_length: usize,
    payload_length: usize,
}

fn parse_header(line: &[u8]) -> Result<Header, ReadError> {
    let malformed = |what: &str| ReadError::Malformed(format!("a header line {what}"));
    let Value::Object(mut header) = serde_json::from_slice(line)
        .map_err(|e| ReadError::Malformed(format!("a header line is not JSON: {e}")))?
    else {
        return Err(malformed("is not a JSON object"));
    };
    let kind = match header.remove("type") {
        Some(Value::String(kind)) if !kind.is_empty() => kind,
        _ => return Err(malformed("has no type")),
    };
    let data = match header.remove("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data,
        Some(_) => return Err(malformed("has a data that is not an object")),
    };
    let length = |key: &str, max: usize| -> Result<usize, ReadError> {
        match header.get(key) {
            None | Some(Value::Null) => Ok(0),
            Some(value) => match value.as_u64() {
                Some(n) if n <= max as u64 => Ok(n as usize),
                Some(n) => Err(ReadError::TooLarge(format!(
                    "{key} {n} is more than the limit of {max} bytes"
                ))),
                None => Err(malformed(&format!("has a {key} that is not a length"))),
            },
        }
    };
    Ok(Header {
        data_length: length("data_length", MAX_DATA_BYTES)?,
        payload_length: length("payload_length", MAX_PAYLOAD_BYTES)?,
        kind,
        data,
    })
}

/// Exactly `len` bytes (already bounded by the caller), or `Truncated`.
async fn read_exact<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    len: usize,
    what: &'static str,
) -> Result<BytesMut, ReadError> {
    let mut buf = BytesMut::zeroed(len);
    match reader.read_exact(&mut buf).await {
        Ok(_) => Ok(buf),
        Err(err) if err.kind() == std::io::ErrorKind::UnexpectedEof => {
            Err(ReadError::Truncated(what))
        }
        Err(err) => Err(ReadError::Io(err)),
    }
}

/// One event as bytes: the header line, then `data` (if any) as its own
/// JSON, as the official writer sends it. Events out carry no payload.
pub(crate) fn encode(kind: &str, data: Option<&Value>) -> Vec<u8> {
    let data = data
        .filter(|d| d.as_object().is_some_and(|m| !m.is_empty()))
        .map(Value::to_string);
    let mut header = Map::with_capacity(3);
    header.insert("type".into(), Value::from(kind));
    header.insert("version".into(), Value::from(PROTOCOL_VERSION));
    if let Some(data) = &data {
        header.insert("data_length".into(), Value::from(data.len()));
    }
    let mut out = Value::Object(header).to_string().into_bytes();
    out.push(b'\n');
    if let Some(data) = data {
        out.extend_from_slice(data.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use tokio::io::BufReader;

    use super::*;

    async fn read_all(bytes: &[u8]) -> Vec<Result<Message, String>> {
        let mut reader = BufReader::new(bytes);
        let mut out = Vec::new();
        loop {
            match read(&mut reader).await {
                Ok(message) => out.push(Ok(message)),
                Err(ReadError::Closed) => return out,
                Err(err) => {
                    out.push(Err(err.to_string()));
                    return out;
                }
            }
        }
    }

    #[tokio::test]
    async fn events_round_trip_with_data_and_payload() {
        let mut stream = encode("describe", None);
        stream.extend(encode("transcribe", Some(&json!({"language": "de"}))));
        stream.extend_from_slice(
            b"{\"type\":\"audio-chunk\",\"data\":{\"rate\":8000,\"width\":2},\"data_length\":14,\"payload_length\":4}\n{\"channels\":1}\x01\x02\x03\x04",
        );
        let got = read_all(&stream).await;
        assert_eq!(got.len(), 3, "{got:?}");
        let describe = got[0].as_ref().unwrap();
        assert_eq!(
            (describe.kind.as_str(), describe.data.len()),
            ("describe", 0)
        );
        let transcribe = got[1].as_ref().unwrap();
        assert_eq!(transcribe.data["language"], "de");
        let chunk = got[2].as_ref().unwrap();
        assert_eq!(
            Value::Object(chunk.data.clone()),
            json!({"rate": 8000, "width": 2, "channels": 1}),
            "the data after the line merges over the line's"
        );
        assert_eq!(&chunk.payload[..], [1, 2, 3, 4]);
        let bytes = encode("info", Some(&json!({"asr": []})));
        let (line, data) = bytes.split_at(bytes.iter().position(|b| *b == b'\n').unwrap() + 1);
        let header: Value = serde_json::from_slice(line).unwrap();
        assert_eq!(
            header,
            json!({"type": "info", "version": "1.10.2", "data_length": 10})
        );
        assert_eq!(data, br#"{"asr":[]}"#);
        assert_eq!(
            encode("transcript-stop", None),
            b"{\"type\":\"transcript-stop\",\"version\":\"1.10.2\"}\n"
        );
    }

    #[tokio::test]
    async fn lengths_are_bounded_before_anything_is_read() {
        let long = vec![b' '; MAX_HEADER_BYTES + 1];
        let got = read_all(&long).await;
        assert!(
            matches!(&got[..], [Err(e)] if e.contains("longer than")),
            "{got:?}"
        );
        let huge = format!(
            "{{\"type\":\"audio-chunk\",\"payload_length\":{}}}\n",
            MAX_PAYLOAD_BYTES + 1
        );
        let got = read_all(huge.as_bytes()).await;
        assert!(
            matches!(&got[..], [Err(e)] if e.contains("limit")),
            "{got:?}"
        );
        let huge = format!("{{\"type\":\"x\",\"data_length\":{}}}\n", u64::MAX);
        let got = read_all(huge.as_bytes()).await;
        assert!(
            matches!(&got[..], [Err(e)] if e.contains("limit")),
            "{got:?}"
        );
    }

    #[tokio::test]
    async fn short_and_broken_events_are_told_apart() {
        for (bytes, want) in [
            (
                &b"{\"type\":\"audio-chunk\",\"payload_length\":10}\nabc"[..],
                "inside an event's payload",
            ),
            (
                b"{\"type\":\"transcribe\",\"data_length\":10}\n{}",
                "inside an event's data",
            ),
            (b"{\"type\":\"desc", "inside an event's header line"),
            (b"not json\n", "not JSON"),
            (b"[1]\n", "not a JSON object"),
            (b"{\"data\":{}}\n", "has no type"),
            (b"{\"type\":\"x\",\"payload_length\":-1}\n", "not a length"),
            (b"{\"type\":\"x\",\"data\":[1]}\n", "not an object"),
            (
                b"{\"type\":\"x\",\"data_length\":3}\n[1]",
                "not a JSON object",
            ),
        ] {
            let got = read_all(bytes).await;
            assert!(
                matches!(&got[..], [Err(e)] if e.contains(want)),
                "{:?}: {got:?}",
                String::from_utf8_lossy(bytes)
            );
        }
        assert!(
            read_all(b"").await.is_empty(),
            "an empty stream is a clean close"
        );
    }
}
