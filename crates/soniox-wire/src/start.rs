//! The start request: the first message of a session, a JSON object.

use std::fmt;
use std::ops::RangeInclusive;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Number, Value};

use crate::error::ApiError;
use crate::fields::{self, field, opt_bool, opt_number, opt_str};
use crate::format;

/// A secret a client presented. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Secret(pub String);

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Translation settings, in Soniox's shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Translation {
    /// Everything into one language.
    OneWay {
        /// Target language code.
        target_language: String,
    },
    /// Between two languages, each into the other.
    TwoWay {
        /// First language code.
        language_a: String,
        /// Second language code.
        language_b: String,
    },
}

/// What a reader accepts as a raw format's layout: a value outside counts
/// as not specified, and gets Soniox's message for a missing one.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// `sample_rate`, Hz.
    pub sample_rate: RangeInclusive<u32>,
    /// `num_channels`.
    pub channels: RangeInclusive<u16>,
}

/// A start request. Options left unset are left out when it is written, as
/// the official SDKs do; fields this vocabulary does not name travel in
/// [`StartRequest::extra`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StartRequest {
    /// The deprecated key field (refused by Soniox from 2027-01-15; the key
    /// belongs in the connection's `Authorization` header). Read, never
    /// written by sttpipe.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_key: Option<Secret>,
    /// Model name.
    pub model: String,
    /// `audio_format`, in its long spelling once read (`pcm_s16le`).
    pub audio_format: String,
    /// Samples per second, for raw formats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sample_rate: Option<u32>,
    /// Interleaved channels, for raw formats.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub num_channels: Option<u16>,
    /// Expected languages.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub language_hints: Vec<String>,
    /// Restrict recognition to the hinted languages.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language_hints_strict: Option<bool>,
    /// Context: text (legacy) or a structured object.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub context: Option<Value>,
    /// Speaker labels.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_speaker_diarization: Option<bool>,
    /// Per-token language.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_language_identification: Option<bool>,
    /// `<end>` at utterance ends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_endpoint_detection: Option<bool>,
    /// Longest endpoint delay, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_endpoint_delay_ms: Option<u64>,
    /// Endpoint tuning, −1 to 1 (v5 and later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_sensitivity: Option<f64>,
    /// Endpoint latency level, 0 to 3 (v5 and later).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint_latency_adjustment_level: Option<Number>,
    /// Translation.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub translation: Option<Translation>,
    /// Usage-log id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_reference_id: Option<String>,
    /// Legacy switch for the non-final tokens (default on).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enable_non_final_tokens: Option<bool>,
    /// Every other field, as sent.
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// The fields [`StartRequest`] names; the rest go to `extra`, which must
/// hold none of these (the written request would have the key twice).
pub const NAMED_FIELDS: &[&str] = &[
    "api_key",
    "model",
    "audio_format",
    "sample_rate",
    "num_channels",
    "language_hints",
    "language_hints_strict",
    "context",
    "enable_speaker_diarization",
    "enable_language_identification",
    "enable_endpoint_detection",
    "max_endpoint_delay_ms",
    "endpoint_sensitivity",
    "endpoint_latency_adjustment_level",
    "translation",
    "client_reference_id",
    "enable_non_final_tokens",
];

impl StartRequest {
    /// Reads a start request, checking JSON shapes only (in the order
    /// Soniox reports them: model, format, the rest); which models,
    /// languages and ranges exist is the caller's check.
    pub fn read(mut map: Map<String, Value>, bounds: &Bounds) -> Result<StartRequest, ApiError> {
        let api_key = fields::api_key(&map)?.map(Secret);
        let model = fields::model(&map)?.to_owned();
        let name = fields::audio_format_name(&map)?;
        let audio_format = format::long_format_name(name)
            .ok_or_else(|| ApiError::invalid_format(name))?
            .into_owned();
        let (sample_rate, num_channels) = if format::raw_sample_bytes(&audio_format).is_some() {
            let (rate, channels) =
                fields::raw_layout(&map, bounds.sample_rate.clone(), bounds.channels.clone())?;
            (Some(rate), Some(channels))
        } else {
            (None, None)
        };
        let language_hints = fields::language_hints(&map)?;
        let language_hints_strict = opt_bool(&map, "language_hints_strict")?;
        let context = fields::context(&map)?.cloned();
        let enable_speaker_diarization = opt_bool(&map, "enable_speaker_diarization")?;
        let enable_language_identification = opt_bool(&map, "enable_language_identification")?;
        let enable_endpoint_detection = opt_bool(&map, "enable_endpoint_detection")?;
        let max_endpoint_delay_ms = fields::max_endpoint_delay_ms(&map)?;
        let endpoint_sensitivity =
            opt_number(&map, "endpoint_sensitivity")?.and_then(Number::as_f64);
        let endpoint_latency_adjustment_level =
            opt_number(&map, "endpoint_latency_adjustment_level")?.cloned();
        let client_reference_id = opt_str(&map, "client_reference_id")?.map(str::to_owned);
        let translation = read_translation(&map)?;
        let enable_non_final_tokens = opt_bool(&map, "enable_non_final_tokens")?;
        map.retain(|key, _| !NAMED_FIELDS.contains(&key.as_str()));
        Ok(StartRequest {
            api_key,
            model,
            audio_format,
            sample_rate,
            num_channels,
            language_hints,
            language_hints_strict,
            context,
            enable_speaker_diarization,
            enable_language_identification,
            enable_endpoint_detection,
            max_endpoint_delay_ms,
            endpoint_sensitivity,
            endpoint_latency_adjustment_level,
            translation,
            client_reference_id,
            enable_non_final_tokens,
            extra: map,
        })
    }

    /// The request as JSON text.
    pub fn to_json(&self) -> String {
        // Strings, numbers, and JSON values with string keys always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// `translation`: an object with a known `type` (else malformed) and its
/// languages as strings (else an invalid target language).
fn read_translation(map: &Map<String, Value>) -> Result<Option<Translation>, ApiError> {
    let Some(value) = field(map, "translation") else {
        return Ok(None);
    };
    let Value::Object(t) = value else {
        return Err(ApiError::malformed_start());
    };
    let language = |key: &str| match field(t, key) {
        Some(Value::String(code)) => Ok(code.clone()),
        _ => Err(ApiError::invalid_translation_language()),
    };
    match opt_str(t, "type")? {
        Some("one_way") => Ok(Some(Translation::OneWay {
            target_language: language("target_language")?,
        })),
        Some("two_way") => Ok(Some(Translation::TwoWay {
            language_a: language("language_a")?,
            language_b: language("language_b")?,
        })),
        _ => Err(ApiError::malformed_start()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOUNDS: Bounds = Bounds {
        sample_rate: 1..=384_000,
        channels: 1..=32,
    };

    fn read(v: Value) -> Result<StartRequest, ApiError> {
        match v {
            Value::Object(map) => StartRequest::read(map, &BOUNDS),
            _ => panic!("an object"),
        }
    }

    #[test]
    fn a_written_request_reads_back() {
        let start = StartRequest {
            model: "stt-rt-v6".into(),
            audio_format: "pcm_s16le".into(),
            sample_rate: Some(16_000),
            num_channels: Some(1),
            language_hints: vec!["en".into()],
            enable_endpoint_detection: Some(true),
            translation: Some(Translation::TwoWay {
                language_a: "en".into(),
                language_b: "es".into(),
            }),
            extra: Map::from_iter([("future_option".to_owned(), json!({"a": 1}))]),
            ..StartRequest::default()
        };
        let text = start.to_json();
        let map = fields::parse_object(&text).unwrap();
        assert_eq!(StartRequest::read(map, &BOUNDS).unwrap(), start);
        assert!(!text.contains("api_key"), "{text}");
    }

    #[test]
    fn unset_options_are_left_out() {
        let start = StartRequest {
            model: "m".into(),
            audio_format: "mp3".into(),
            ..StartRequest::default()
        };
        assert_eq!(start.to_json(), r#"{"model":"m","audio_format":"mp3"}"#);
    }

    #[test]
    fn shapes_are_checked() {
        let ok =
            json!({"model": "m", "audio_format": "s16le", "sample_rate": 8000, "num_channels": 1});
        assert_eq!(read(ok.clone()).unwrap().audio_format, "pcm_s16le");
        let with = |key: &str, value: Value| {
            let mut v = ok.clone();
            v[key] = value;
            read(v)
        };
        assert_eq!(with("model", json!(5)), Err(ApiError::invalid_model()));
        assert_eq!(
            with("enable_speaker_diarization", json!("yes")),
            Err(ApiError::malformed_start())
        );
        assert_eq!(
            with("translation", json!({"type": "one_way"})),
            Err(ApiError::invalid_translation_language())
        );
        assert!(with("sample_rate", json!(0)).is_err());
        assert!(with("audio_format", json!("avi")).is_err());
        let key = with("api_key", json!("secret")).unwrap();
        assert_eq!(format!("{:?}", key.api_key), "Some(<redacted>)");
        let mp3 = read(json!({"model": "m", "audio_format": "mp3", "sample_rate": "x"})).unwrap();
        assert_eq!(mp3.sample_rate, None, "containers take no layout");
    }
}
