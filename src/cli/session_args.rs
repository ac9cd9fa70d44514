//! [`SessionArgs`]: what one transcription session asks for, in one typed
//! schema shared by every front end.
//!
//! The same struct is the filter's session flags (clap), the daemon's
//! socket header (serde: the keys are the flags' names with underscores,
//! `--language-hints en,de` is `"language_hints":["en","de"]`), and what a
//! WebSocket client's Soniox start request becomes. Each field has one
//! type, so a value of the wrong type is refused where it is read (a string
//! for a boolean key is a usage error, never a flag), and all of them are
//! resolved and range-checked by one function (`config::resolve`), which
//! also knows where they came from: a value that names a local resource
//! (`--context @FILE`) is honoured only from the command line.
//!
//! `--start-field KEY=JSON` is the one flag whose header form differs from
//! a list: the fields are one object, `"start_field":{"KEY":JSON,…}`, the
//! shape they take in the start request.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use super::values::{EngineChoice, FallbackChoice};

/// The raw input format when none is given.
pub(crate) const DEFAULT_AUDIO_FORMAT: &str = "pcm_s16le";
/// The raw input's sample rate when none is given, Hz.
pub(crate) const DEFAULT_RATE: u32 = 16_000;
/// The raw input's channels when none are given.
pub(crate) const DEFAULT_CHANNELS: u16 = 1;
/// The Soniox model when none is given.
pub(crate) const DEFAULT_MODEL: &str = "stt-rt-v6";

/// A session's own options. Doc comments here are the `--help` text.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub(crate) struct SessionArgs {
    /// Audio format: a raw format (pcm_s16le, pcm_f32le, mulaw, alaw, …) or a
    /// container passed through (auto, wav, mp3, ogg, flac, webm, …). A WAV
    /// header on the input is recognised and its format used.
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = DEFAULT_AUDIO_FORMAT,
        help_heading = "Input"
    )]
    pub(crate) audio_format: String,

    /// Sample rate of raw input, in Hz.
    #[arg(long, value_name = "HZ", default_value_t = DEFAULT_RATE, help_heading = "Input")]
    pub(crate) rate: u32,

    /// Channels of raw input (interleaved).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CHANNELS, help_heading = "Input")]
    pub(crate) channels: u16,

    /// Also output the non-final tokens, as `partial` events that each
    /// replace the previous one.
    #[arg(long, help_heading = "Output")]
    pub(crate) partials: bool,

    /// Soniox model. Any name goes to Soniox, which refuses one it does not
    /// serve.
    #[arg(
        long,
        value_name = "MODEL",
        default_value = DEFAULT_MODEL,
        help_heading = "Recognition"
    )]
    pub(crate) model: String,

    /// Languages to expect, comma-separated ISO 639-1 codes (en,de).
    #[arg(
        long,
        value_name = "LANGS",
        value_delimiter = ',',
        help_heading = "Recognition"
    )]
    pub(crate) language_hints: Vec<String>,

    /// Restrict recognition to the hinted languages.
    #[arg(long, help_heading = "Recognition")]
    pub(crate) language_hints_strict: bool,

    /// Context for recognition: text, a JSON object, or @FILE holding either.
    #[arg(
        long,
        value_name = "TEXT|@FILE",
        value_parser = ContextArg::parse,
        help_heading = "Recognition"
    )]
    pub(crate) context: Option<ContextArg>,

    /// Label speakers (`speaker` field on tokens).
    #[arg(long, help_heading = "Recognition")]
    pub(crate) diarize: bool,

    /// Identify the language of each token (`language` field).
    #[arg(long, help_heading = "Recognition")]
    pub(crate) language_id: bool,

    /// Detect the end of utterances (`endpoint` events).
    #[arg(long, help_heading = "Recognition")]
    pub(crate) endpoint_detection: bool,

    /// Longest wait for an endpoint, in ms (500 to 3000).
    #[arg(long, value_name = "MS", help_heading = "Recognition")]
    pub(crate) max_endpoint_delay_ms: Option<u32>,

    /// How readily an endpoint is detected, from -1 (later) to 1 (sooner);
    /// stt-rt-v5 and later.
    #[arg(
        long,
        value_name = "X",
        allow_negative_numbers = true,
        help_heading = "Recognition"
    )]
    pub(crate) endpoint_sensitivity: Option<f64>,

    /// Endpoint latency against accuracy, 0 to 3; stt-rt-v5 and later.
    #[arg(long, value_name = "LEVEL", help_heading = "Recognition")]
    pub(crate) endpoint_latency_adjustment_level: Option<u8>,

    /// Translate everything spoken into LANG (one-way translation).
    #[arg(
        long,
        value_name = "LANG",
        conflicts_with = "translate",
        help_heading = "Recognition"
    )]
    pub(crate) translate_to: Option<String>,

    /// Translate between two languages, each into the other (two-way), e.g. en:es.
    #[arg(long, value_name = "A:B", help_heading = "Recognition")]
    pub(crate) translate: Option<String>,

    /// An id recorded in Soniox's usage logs (at most 256 characters).
    #[arg(long, value_name = "ID", help_heading = "Recognition")]
    pub(crate) client_reference_id: Option<String>,

    /// Add a field to the start request, as KEY=JSON (a string is quoted:
    /// KEY='"text"'), for options sttpipe has no flag for; repeatable. A
    /// field sttpipe sets itself is refused.
    #[arg(
        long,
        value_name = "KEY=JSON",
        value_parser = StartField::parse,
        help_heading = "Recognition"
    )]
    #[serde(with = "start_fields")]
    pub(crate) start_field: Vec<StartField>,

    /// The recognition engine: the Soniox service, or Moonshine on this
    /// machine (no key, no network; install it once with `sttpipe engine
    /// install`). With --connect, asks the daemon for it
    /// [default: soniox; with --connect, the daemon's].
    #[arg(long, value_enum, value_name = "ENGINE", help_heading = "Engine")]
    pub(crate) engine: Option<EngineChoice>,

    /// When Soniox cannot be reached from the start, or fails for good (the
    /// retry budget spent), go on with the local engine from the first audio
    /// no final token covers; a `fallback` event says so.
    #[arg(long, value_enum, value_name = "ENGINE", help_heading = "Engine")]
    pub(crate) fallback: Option<FallbackChoice>,
}

impl Default for SessionArgs {
    fn default() -> SessionArgs {
        SessionArgs {
            audio_format: DEFAULT_AUDIO_FORMAT.to_owned(),
            rate: DEFAULT_RATE,
            channels: DEFAULT_CHANNELS,
            partials: false,
            model: DEFAULT_MODEL.to_owned(),
            language_hints: Vec::new(),
            language_hints_strict: false,
            context: None,
            diarize: false,
            language_id: false,
            endpoint_detection: false,
            max_endpoint_delay_ms: None,
            endpoint_sensitivity: None,
            endpoint_latency_adjustment_level: None,
            translate_to: None,
            translate: None,
            client_reference_id: None,
            start_field: Vec::new(),
            engine: None,
            fallback: None,
        }
    }
}

impl SessionArgs {
    /// Whether the input's format was given rather than left at its default
    /// (a WAV header then does not override it).
    pub(crate) fn format_explicit(&self) -> bool {
        self.audio_format != DEFAULT_AUDIO_FORMAT
            || self.rate != DEFAULT_RATE
            || self.channels != DEFAULT_CHANNELS
    }
}

/// One `--start-field`: a start-request key and its JSON value. Which keys
/// are allowed is resolution's check, for the header too.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StartField {
    /// The start request's key.
    pub(crate) key: String,
    /// Its value, as JSON.
    pub(crate) value: Value,
}

impl StartField {
    /// Reads `KEY=JSON`; the value must be JSON, so a typo is a usage error
    /// rather than a string Soniox is left to refuse.
    pub(crate) fn parse(arg: &str) -> Result<StartField, String> {
        let Some((key, json)) = arg.split_once('=').filter(|(key, _)| !key.is_empty()) else {
            return Err("expected KEY=JSON, e.g. enable_agent_text_input=true".into());
        };
        let value = serde_json::from_str(json).map_err(|e| {
            format!("the value of {key} is not JSON ({e}); a string is quoted: {key}='\"text\"'")
        })?;
        Ok(StartField {
            key: key.to_owned(),
            value,
        })
    }
}

/// `start_field` in the header: an object of the fields.
mod start_fields {
    use serde::{Deserialize, Deserializer, Serializer};
    use serde_json::{Map, Value};

    use super::StartField;

    pub(super) fn serialize<S: Serializer>(
        fields: &[StartField],
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(fields.iter().map(|f| (&f.key, &f.value)))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<StartField>, D::Error> {
        let fields = Map::<String, Value>::deserialize(deserializer)?;
        Ok(fields
            .into_iter()
            .map(|(key, value)| StartField { key, value })
            .collect())
    }
}

/// `--context`: text, a structured object, or a file holding either.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ContextArg {
    /// Plain text.
    Text(String),
    /// A structured context (Soniox's object form).
    Structured(Map<String, Value>),
    /// `@FILE`: read from a file, on the command line only.
    File(PathBuf),
}

impl ContextArg {
    /// Reads the flag's value: `@FILE`, a JSON object, or text. Never fails:
    /// anything that is not one of the first two is text.
    pub(crate) fn parse(arg: &str) -> Result<ContextArg, std::convert::Infallible> {
        if let Some(path) = arg.strip_prefix('@') {
            return Ok(ContextArg::File(PathBuf::from(path)));
        }
        Ok(ContextArg::from_text(arg))
    }

    /// Text that may hold a JSON object (a file's content, a flag's value).
    pub(crate) fn from_text(text: &str) -> ContextArg {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => ContextArg::Structured(map),
            _ => ContextArg::Text(text.trim_end().to_owned()),
        }
    }
}

impl Serialize for ContextArg {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ContextArg::Text(text) => serializer.serialize_str(text),
            ContextArg::Structured(map) => map.serialize(serializer),
            ContextArg::File(_) => Err(serde::ser::Error::custom(
                "a context file is read before the header is written",
            )),
        }
    }
}

impl<'de> Deserialize<'de> for ContextArg {
    /// The header's `context`: a string means what the flag's value means
    /// (so `"@/etc/passwd"` is a [`ContextArg::File`], which resolution
    /// refuses from a client), an object is structured context.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ContextArg, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(text) => match ContextArg::parse(&text) {
                Ok(context) => Ok(context),
                Err(never) => match never {},
            },
            Value::Object(map) => Ok(ContextArg::Structured(map)),
            other => Err(serde::de::Error::custom(format!(
                "expected text or an object, found {other}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use serde_json::json;

    #[derive(Debug, Parser)]
    struct Only {
        #[command(flatten)]
        session: SessionArgs,
    }

    #[test]
    fn the_defaults_are_the_flags_defaults() {
        let parsed = Only::try_parse_from(["sttpipe"]).unwrap().session;
        assert_eq!(parsed, SessionArgs::default());
        let from_header: SessionArgs = serde_json::from_str("{}").unwrap();
        assert_eq!(from_header, SessionArgs::default());
        assert!(!parsed.format_explicit());
    }

    #[test]
    fn flags_and_header_keys_are_one_schema() {
        let parsed = Only::try_parse_from([
            "sttpipe",
            "--rate",
            "8000",
            "--language-hints",
            "en,de",
            "--partials",
            "--context",
            r#"{"terms":["x"]}"#,
            "--engine",
            "local",
            "--endpoint-sensitivity",
            "-0.5",
            "--endpoint-latency-adjustment-level",
            "2",
            "--start-field",
            "enable_agent_text_input=true",
            "--start-field",
            r#"future={"a":[1]}"#,
        ])
        .unwrap()
        .session;
        let header: SessionArgs = serde_json::from_value(json!({
            "rate": 8000,
            "language_hints": ["en", "de"],
            "partials": true,
            "context": {"terms": ["x"]},
            "engine": "local",
            "endpoint_sensitivity": -0.5,
            "endpoint_latency_adjustment_level": 2,
            "start_field": {"enable_agent_text_input": true, "future": {"a": [1]}},
        }))
        .unwrap();
        assert_eq!(parsed, header);
        let again: SessionArgs =
            serde_json::from_value(serde_json::to_value(&header).unwrap()).unwrap();
        assert_eq!(again, header);
    }

    #[test]
    fn header_values_of_the_wrong_type_are_refused() {
        for bad in [
            json!({"partials": "--drain-timeout=1e300"}),
            json!({"rate": "fast"}),
            json!({"rate": 4_294_967_296u64}),
            json!({"language_hints": [1]}),
            json!({"language_hints": "en"}),
            json!({"context": 3}),
            json!({"engine": "whisper"}),
            json!({"drain_timeout": 1}),
            json!({"input": "/etc/passwd"}),
            json!({"start_field": ["a=1"]}),
            json!({"endpoint_latency_adjustment_level": 256}),
            json!({"endpoint_sensitivity": "high"}),
        ] {
            assert!(
                serde_json::from_value::<SessionArgs>(bad.clone()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn start_fields_are_key_and_json() {
        assert_eq!(
            StartField::parse("a=\"x=y\""),
            Ok(StartField {
                key: "a".into(),
                value: json!("x=y")
            })
        );
        for bad in ["a", "=1", "a=", "a=text", "a={"] {
            assert!(StartField::parse(bad).is_err(), "{bad}");
        }
        let err = Only::try_parse_from(["sttpipe", "--start-field", "note=hello"]).unwrap_err();
        assert!(err.to_string().contains("not JSON"), "{err}");
    }

    #[test]
    fn a_context_file_is_a_file_from_either_side() {
        let file = ContextArg::File(PathBuf::from("/etc/passwd"));
        assert_eq!(ContextArg::parse("@/etc/passwd"), Ok(file.clone()));
        let header: SessionArgs =
            serde_json::from_value(json!({"context": "@/etc/passwd"})).unwrap();
        assert_eq!(header.context, Some(file));
        assert!(serde_json::to_value(&header).is_err());
        assert_eq!(
            ContextArg::parse("plain words\n"),
            Ok(ContextArg::Text("plain words".into()))
        );
    }
}
