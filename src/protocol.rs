//! The daemon's socket protocol: one JSON header line, then raw audio.
//!
//! ```text
//! client → daemon   {"v":1,"audio_format":"pcm_s16le","rate":16000,"language_hints":["en"]}\n
//!                   <raw audio bytes …>
//!                   half-close (shutdown(SHUT_WR)), or the header's end_marker
//! daemon → client   {"type":"start",…}\n {"type":"token",…}\n … {"type":"end",…}\n, then close
//! ```
//!
//! The header's session keys are [`SessionArgs`], the filter's session
//! flags with underscores, read by serde with their types (a string for a
//! boolean key is refused, never turned into a flag) and resolved by the
//! same function as the flags. Protocol keys beside them: `v` (1),
//! `end_marker` (a byte string that ends the audio, for clients that
//! cannot half-close: pick a long random one), and `command` (`"status"`
//! asks for the daemon's status instead of a session). The filter's
//! `--connect` ([`crate::client`]) writes headers, the daemon reads them;
//! both use this module. Documented for users in sttpipe-protocol(7).

use serde_json::{Map, Value};

use crate::cli::SessionArgs;
use crate::error::{Error, Result};

/// Longest header line accepted, newline included.
pub(crate) const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The protocol version this daemon speaks.
pub(crate) const VERSION: u64 = 1;

/// The header line that asks for the daemon's status.
pub(crate) const STATUS_REQUEST: &[u8] = b"{\"command\":\"status\"}\n";

/// What a client asked for.
#[derive(Debug)]
pub(crate) enum Request {
    /// A transcription session.
    Session {
        /// Its options, as the client sent them (not yet resolved).
        args: Box<SessionArgs>,
        /// Bytes that end the audio, if the client cannot half-close.
        end_marker: Option<Vec<u8>>,
    },
    /// The daemon's status.
    Status,
}

/// Parses a header line (without its newline).
pub(crate) fn parse_header(line: &[u8]) -> Result<Request> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| Error::Usage(format!("the header is not JSON: {e}")))?;
    let Value::Object(mut map) = value else {
        return Err(Error::Usage("the header must be a JSON object".into()));
    };
    if let Some(version) = map.remove("v")
        && version.as_u64() != Some(VERSION)
    {
        return Err(Error::Usage(format!(
            "protocol version {version} is not supported (this daemon speaks {VERSION})"
        )));
    }
    let end_marker = match map.remove("end_marker") {
        None => None,
        Some(Value::String(marker)) if marker.len() >= 4 => Some(marker.into_bytes()),
        Some(_) => {
            return Err(Error::Usage(
                "end_marker must be a string of at least 4 bytes".into(),
            ));
        }
    };
    match map.remove("command") {
        None => {}
        Some(Value::String(command)) if command == "status" => return Ok(Request::Status),
        Some(other) => return Err(Error::Usage(format!("unknown command {other}"))),
    }
    let args: SessionArgs = serde_json::from_value(Value::Object(map))
        .map_err(|e| Error::Usage(format!("header: {e}")))?;
    Ok(Request::Session {
        args: Box::new(args),
        end_marker,
    })
}

/// The header line a client sends for `args`, newline included. A context
/// file must have been read into `args` already.
pub(crate) fn header_line(args: &SessionArgs) -> Result<Vec<u8>> {
    let Value::Object(session) =
        serde_json::to_value(args).map_err(|e| Error::Internal(format!("the header: {e}")))?
    else {
        return Err(Error::Internal("the header is not an object".into()));
    };
    let mut header = Map::with_capacity(session.len() + 1);
    header.insert("v".into(), Value::from(VERSION));
    // Defaults and unset options are left out: the header says what the
    // client chose, and a daemon of another version keeps its own defaults.
    let defaults = serde_json::to_value(SessionArgs::default())
        .map_err(|e| Error::Internal(format!("the header: {e}")))?;
    for (key, value) in session {
        if value.is_null() || defaults.get(&key) == Some(&value) {
            continue;
        }
        header.insert(key, value);
    }
    let mut line = serde_json::to_vec(&header).map_err(|e| Error::Internal(e.to_string()))?;
    line.push(b'\n');
    Ok(line)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::values::EngineChoice;

    fn args(line: &str) -> Result<SessionArgs> {
        match parse_header(line.as_bytes())? {
            Request::Session { args, .. } => Ok(*args),
            Request::Status => panic!("not a session"),
        }
    }

    #[test]
    fn a_header_round_trips() {
        let sent = SessionArgs {
            audio_format: "mulaw".into(),
            rate: 8000,
            language_hints: vec!["fr".into()],
            translate_to: Some("en".into()),
            max_endpoint_delay_ms: Some(900),
            client_reference_id: Some("r".into()),
            engine: Some(EngineChoice::Local),
            ..SessionArgs::default()
        };
        let line = header_line(&sent).unwrap();
        assert_eq!(line.last(), Some(&b'\n'));
        let text = std::str::from_utf8(&line).unwrap();
        assert!(text.contains("\"v\":1"), "{text}");
        assert!(!text.contains("\"model\""), "defaults are left out: {text}");
        assert_eq!(args(text.trim_end()).unwrap(), sent);
    }

    #[test]
    fn bad_headers_are_usage_errors() {
        for line in [
            "not json",
            "[1,2]",
            r#"{"api_key":"x"}"#,
            r#"{"input":"/etc/passwd"}"#,
            r#"{"rate":"fast"}"#,
            r#"{"v":2}"#,
            r#"{"language_hints":[1]}"#,
            r#"{"end_marker":"x"}"#,
            r#"{"command":"shutdown"}"#,
            r#"{"partials":"--drain-timeout=1e300"}"#,
        ] {
            assert!(matches!(args(line), Err(Error::Usage(_))), "{line}");
        }
        assert!(matches!(
            parse_header(br#"{"command":"status"}"#),
            Ok(Request::Status)
        ));
        assert!(matches!(
            parse_header(&STATUS_REQUEST[..STATUS_REQUEST.len() - 1]),
            Ok(Request::Status)
        ));
    }
}
