//! The daemon's socket protocol: one JSON header line, then raw audio.
//!
//! ```text
//! client → daemon   {"audio_format":"pcm_s16le","rate":16000,"language_hints":["en"]}\n
//!                   <raw audio bytes …>
//!                   half-close (shutdown(SHUT_WR)), or the header's end_marker
//! daemon → client   {"type":"start",…}\n {"type":"token",…}\n … {"type":"end",…}\n, then close
//! ```
//!
//! The header's keys are the filter's session flags with underscores
//! (`--language-hints en,de` is `"language_hints":["en","de"]`); a header is
//! checked by turning it back into those flags, so the daemon and the filter
//! accept exactly the same options with the same messages. Protocol keys:
//! `v` (1), `end_marker` (a byte string that ends the audio, for clients
//! that cannot half-close: pick a long random one), `command`
//! (`"status"` asks for the daemon's status instead of a session), and the
//! engine keys `engine` (`"soniox"` or `"local"`) and `fallback`
//! (`"local"`), which ask for the daemon's engines; left out, the daemon's
//! own settings decide.
//! Documented for users in sttpipe-protocol(7).

use clap::Parser;
use serde_json::{Map, Value, json};

use crate::cli::{FallbackChoice, Opts};
use crate::config::{EngineRequest, SessionConfig, Timing, Translation};
use crate::error::{Error, Result};

/// Longest header line accepted, newline included.
pub const MAX_HEADER_BYTES: usize = 16 * 1024;

/// The protocol version this daemon speaks.
pub const VERSION: u64 = 1;

/// Header keys that are session flags, as the filter names them.
const SESSION_KEYS: &[&str] = &[
    "audio_format",
    "rate",
    "channels",
    "partials",
    "model",
    "language_hints",
    "language_hints_strict",
    "context",
    "diarize",
    "language_id",
    "endpoint_detection",
    "max_endpoint_delay_ms",
    "translate_to",
    "translate",
    "client_reference_id",
    "engine",
    "fallback",
];

/// What a client asked for.
#[derive(Debug)]
pub enum Request {
    /// A transcription session.
    Session {
        /// Its settings (the daemon adds its own limits).
        config: Box<SessionConfig>,
        /// Bytes that end the audio, if the client cannot half-close.
        end_marker: Option<Vec<u8>>,
        /// The engines it asks for.
        engines: EngineRequest,
    },
    /// The daemon's status.
    Status,
}

/// Parses a header line (without its newline).
pub fn parse_header(line: &[u8], timing: Timing) -> Result<Request> {
    let value: Value = serde_json::from_slice(line)
        .map_err(|e| Error::Usage(format!("the header is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(Error::Usage("the header must be a JSON object".into()));
    };
    let mut args = vec!["sttpipe".to_owned()];
    let mut end_marker = None;
    let mut status = false;
    for (key, value) in map {
        match key.as_str() {
            "v" => match value.as_u64() {
                Some(VERSION) => {}
                _ => {
                    return Err(Error::Usage(format!(
                        "protocol version {value} is not supported (this daemon speaks {VERSION})"
                    )));
                }
            },
            "end_marker" => match value {
                Value::String(marker) if marker.len() >= 4 => {
                    end_marker = Some(marker.into_bytes())
                }
                _ => {
                    return Err(Error::Usage(
                        "end_marker must be a string of at least 4 bytes".into(),
                    ));
                }
            },
            "command" => match value.as_str() {
                Some("status") => status = true,
                _ => return Err(Error::Usage(format!("unknown command {value}"))),
            },
            key if SESSION_KEYS.contains(&key) => push_flag(&mut args, key, value)?,
            _ => return Err(Error::Usage(format!("unknown option {key:?}"))),
        }
    }
    if status {
        return Ok(Request::Status);
    }
    let opts = Opts::try_parse_from(&args).map_err(|e| {
        let text = e.render().to_string();
        let first = text.lines().next().unwrap_or("invalid option");
        Error::Usage(first.trim_start_matches("error: ").to_owned())
    })?;
    Ok(Request::Session {
        config: Box::new(SessionConfig::from_opts(&opts, timing)?),
        end_marker,
        engines: EngineRequest {
            engine: opts.engine,
            fallback_local: opts.fallback == Some(FallbackChoice::Local),
        },
    })
}

/// Adds `--key value` for one header entry.
fn push_flag(args: &mut Vec<String>, key: &str, value: Value) -> Result<()> {
    let flag = format!("--{}", key.replace('_', "-"));
    match value {
        Value::Null | Value::Bool(false) => {}
        Value::Bool(true) => args.push(flag),
        Value::Number(n) => args.extend([flag, n.to_string()]),
        Value::String(s) => args.extend([flag, s]),
        Value::Array(items) => {
            let mut parts = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) if !s.contains(',') => parts.push(s),
                    other => {
                        return Err(Error::Usage(format!(
                            "{key}: expected a list of strings, found {other}"
                        )));
                    }
                }
            }
            if !parts.is_empty() {
                args.extend([flag, parts.join(",")]);
            }
        }
        // A structured context travels as its JSON text, as on the command line.
        Value::Object(_) if key == "context" => args.extend([flag, value.to_string()]),
        other => return Err(Error::Usage(format!("{key}: unexpected value {other}"))),
    }
    Ok(())
}

/// The header a client sends for `config` and `engines` (the inverse of
/// [`parse_header`]).
pub fn header_for(config: &SessionConfig, engines: EngineRequest) -> Value {
    let mut header = Map::new();
    header.insert("v".into(), json!(VERSION));
    if let Some(engine) = engines.engine {
        header.insert("engine".into(), json!(engine.name()));
    }
    if engines.fallback_local {
        header.insert("fallback".into(), json!("local"));
    }
    let audio = &config.audio;
    header.insert("audio_format".into(), json!(audio.name));
    if let Some(rate) = audio.sample_rate {
        header.insert("rate".into(), json!(rate));
    }
    if let Some(channels) = audio.channels {
        header.insert("channels".into(), json!(channels));
    }
    let r = &config.recognition;
    header.insert("model".into(), json!(r.model));
    let flags = [
        ("partials", config.partials),
        ("language_hints_strict", r.language_hints_strict),
        ("diarize", r.diarize),
        ("language_id", r.language_id),
        ("endpoint_detection", r.endpoint_detection),
    ];
    for (key, on) in flags {
        if on {
            header.insert(key.into(), json!(true));
        }
    }
    if !r.language_hints.is_empty() {
        header.insert("language_hints".into(), json!(r.language_hints));
    }
    if let Some(context) = &r.context {
        header.insert("context".into(), context.clone());
    }
    if let Some(ms) = r.max_endpoint_delay_ms {
        header.insert("max_endpoint_delay_ms".into(), json!(ms));
    }
    match &r.translation {
        Some(Translation::OneWay { target_language }) => {
            header.insert("translate_to".into(), json!(target_language));
        }
        Some(Translation::TwoWay {
            language_a,
            language_b,
        }) => {
            header.insert(
                "translate".into(),
                json!(format!("{language_a}:{language_b}")),
            );
        }
        None => {}
    }
    if let Some(id) = &r.client_reference_id {
        header.insert("client_reference_id".into(), json!(id));
    }
    Value::Object(header)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(line: &str) -> Result<SessionConfig> {
        session_and_engines(line).map(|(config, _)| config)
    }

    fn session_and_engines(line: &str) -> Result<(SessionConfig, EngineRequest)> {
        match parse_header(line.as_bytes(), Timing::REAL)? {
            Request::Session {
                config, engines, ..
            } => Ok((*config, engines)),
            Request::Status => panic!("not a session"),
        }
    }

    #[test]
    fn headers_use_the_filter_flag_names() {
        let config = session(
            r#"{"rate":8000,"channels":2,"language_hints":["en","de"],"diarize":true,"translate":"en:es","context":{"terms":["x"]},"partials":true}"#,
        )
        .unwrap();
        assert_eq!(config.audio.sample_rate, Some(8000));
        assert_eq!(config.audio.channels, Some(2));
        assert_eq!(config.recognition.language_hints, ["en", "de"]);
        assert!(config.recognition.diarize && config.partials);
        assert_eq!(config.recognition.context, Some(json!({"terms": ["x"]})));
    }

    #[test]
    fn a_header_round_trips() {
        let config = session(
            r#"{"audio_format":"mulaw","rate":8000,"language_hints":["fr"],"translate_to":"en","max_endpoint_delay_ms":900,"client_reference_id":"r"}"#,
        )
        .unwrap();
        let (again, engines) =
            session_and_engines(&header_for(&config, EngineRequest::default()).to_string())
                .unwrap();
        assert_eq!(again.recognition, config.recognition);
        assert_eq!(again.audio, config.audio);
        assert_eq!(
            engines,
            EngineRequest::default(),
            "unset: the daemon decides"
        );
    }

    #[test]
    fn engine_requests_round_trip() {
        let config = session("{}").unwrap();
        for engines in [
            EngineRequest {
                engine: Some(crate::cli::EngineChoice::Local),
                fallback_local: false,
            },
            EngineRequest {
                engine: Some(crate::cli::EngineChoice::Soniox),
                fallback_local: true,
            },
        ] {
            let header = header_for(&config, engines).to_string();
            assert_eq!(session_and_engines(&header).unwrap().1, engines, "{header}");
        }
        assert!(matches!(
            session(r#"{"engine":"whisper"}"#),
            Err(Error::Usage(_))
        ));
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
            r#"{"audio_format":"avi"}"#,
            r#"{"end_marker":"x"}"#,
            r#"{"command":"shutdown"}"#,
        ] {
            assert!(matches!(session(line), Err(Error::Usage(_))), "{line}");
        }
        assert!(matches!(
            parse_header(br#"{"command":"status"}"#, Timing::REAL),
            Ok(Request::Status)
        ));
    }
}
