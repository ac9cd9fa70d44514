//! Wire-level rules of the emulated API: the validation of start requests
//! as the real service does it, and the errors the fault knobs inject.
//!
//! The vocabulary the emulator shares with sttpipe (the typed start
//! request and its shape checks, the error catalogue and frame, the
//! `audio_format` spelling rule) is `soniox-wire`'s; this module adds the
//! checks only the real service makes: known models and languages,
//! lengths, ranges, and the fields only v5 and later take. Messages Soniox
//! documents are reproduced byte for byte. A few checks have no documented
//! message (endpoint tuning ranges, fields of later models); their messages
//! are the emulator's own and are marked as such.

use serde_json::{Map, Value};
use soniox_wire::error::{MSG_CANNOT_CONTINUE, MSG_INTERNAL};
use soniox_wire::{ApiError, Bounds, StartRequest};

/// Models the emulator accepts by default (`EmulatorConfig::models`).
pub(crate) const MODELS: &[&str] = &[
    "stt-rt-v3",
    "stt-rt-v4",
    "stt-rt-v5",
    "stt-rt-v6",
    "stt-rt-preview",
    "stt-rt-preview-v2",
    "stt-rt-v3-preview",
];

/// Whether `model` takes the endpoint tuning fields: `stt-rt-vN` from v5
/// on, so that a later model added to the list by configuration takes
/// them too (each release so far has taken every option of the one
/// before).
fn takes_endpoint_tuning(model: &str) -> bool {
    model
        .strip_prefix("stt-rt-v")
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| n >= 5)
}

/// ISO 639-1 codes of the languages Soniox lists as supported.
const LANGUAGES: &[&str] = &[
    "af", "ar", "az", "be", "bg", "bn", "bs", "ca", "cs", "cy", "da", "de", "el", "en", "es", "et",
    "eu", "fa", "fi", "fr", "gl", "gu", "he", "hi", "hr", "hu", "id", "it", "ja", "kk", "kn", "ko",
    "lt", "lv", "mk", "ml", "mr", "ms", "nl", "no", "pa", "pl", "pt", "ro", "ru", "sk", "sl", "sq",
    "sr", "sv", "sw", "ta", "te", "th", "tl", "tr", "uk", "ur", "vi", "zh",
];

/// Longest accepted context, in characters (serialized JSON for objects).
const MAX_CONTEXT_CHARS: usize = 10_000;
/// Longest accepted `client_reference_id`, in characters.
const MAX_CLIENT_REFERENCE_CHARS: usize = 256;

/// Whether `code` is a language the emulator knows.
pub(crate) fn is_language(code: &str) -> bool {
    LANGUAGES.contains(&code)
}

// The fault knobs' errors. `ApiError` is the shared catalogue's type; which
// error stands for a status code is the emulator's choice, so it is here.

/// The representative error for a status code, as used by the fault
/// knobs: the message the real service sends most often with that code.
pub(crate) fn canonical(code: u16) -> ApiError {
    match code {
        400 => ApiError::bad_request("Audio decode error"),
        401 => ApiError::new(401, "unauthenticated", "Invalid API key."),
        402 => ApiError::new(
            402,
            "organization_balance_exhausted",
            "Organization balance exhausted. Please either add funds manually or enable autopay.",
        ),
        // Undocumented message; the type is documented.
        403 => ApiError::new(
            403,
            "temp_api_key_session_expired",
            "Temporary API key session expired.",
        ),
        408 => ApiError::new(408, "request_timeout", "Request timeout."),
        429 => ApiError::new(
            429,
            "limit_exceeded",
            "Your project has exceeded max number of concurrent requests.",
        ),
        500 => ApiError::new(500, "internal_error", MSG_INTERNAL),
        503 => ApiError::new(503, "service_unavailable", MSG_CANNOT_CONTINUE),
        c if c >= 500 => ApiError::new(c, "internal_error", MSG_INTERNAL),
        c => ApiError::new(c, "invalid_request", "Emulated error."),
    }
}

/// The error used by the `reject_connects` fault, which strikes right
/// after the start request: as [`canonical`], except that a
/// 400 blames the start request (`Start request is malformed.`) rather
/// than audio that has not been sent yet.
pub(crate) fn rejection(code: u16) -> ApiError {
    match code {
        400 => ApiError::malformed_start(),
        c => canonical(c),
    }
}

/// How audio of the declared format is measured and recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AudioFormat {
    /// Headerless samples: duration follows from the byte count.
    Raw {
        /// Bytes of one sample of one channel.
        bytes_per_sample: u32,
        /// Declared `sample_rate`.
        sample_rate: u32,
        /// Declared `num_channels`.
        channels: u16,
        /// pcm_s16le (or `s16le`): the only format the marker decoder reads.
        s16le: bool,
    },
    /// A container (or `auto`): duration is estimated from bytes.
    Container,
}

/// Translation settings of a start request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Translation {
    /// Everything is translated into `target`.
    OneWay {
        /// `target_language`.
        target: String,
    },
    /// Speech in `a` is translated into `b` and vice versa.
    TwoWay {
        /// `language_a`.
        a: String,
        /// `language_b`.
        b: String,
    },
}

impl Translation {
    /// The language speech in `source` is translated into, if any.
    pub(crate) fn target_for(&self, source: &str) -> Option<&str> {
        match self {
            Translation::OneWay { target } => (target != source).then_some(target.as_str()),
            Translation::TwoWay { a, b } if a == source => Some(b),
            Translation::TwoWay { a, b } if b == source => Some(a),
            Translation::TwoWay { .. } => None,
        }
    }
}

/// A validated start request: what the session needs to behave.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StartConfig {
    /// The model name as requested.
    pub(crate) model: String,
    /// The declared audio format.
    pub(crate) format: AudioFormat,
    /// `enable_speaker_diarization`.
    pub(crate) diarization: bool,
    /// `enable_language_identification`.
    pub(crate) language_id: bool,
    /// `enable_endpoint_detection`.
    pub(crate) endpoint_detection: bool,
    /// `max_endpoint_delay_ms`, if given.
    pub(crate) max_endpoint_delay_ms: Option<u64>,
    /// Legacy `enable_non_final_tokens` (default true).
    pub(crate) non_final_tokens: bool,
    /// `translation`, if configured.
    pub(crate) translation: Option<Translation>,
}

/// The layouts the emulator takes for raw formats; past them a rate or a
/// channel count counts as not specified.
const BOUNDS: Bounds = Bounds {
    sample_rate: 1..=1_000_000,
    channels: 1..=64,
};

/// Validates a start request (everything except authentication) against
/// the `models` served: its shapes as [`StartRequest::read`] checks them,
/// then what only the real service knows.
pub(crate) fn validate_start(
    map: Map<String, Value>,
    models: &[String],
) -> Result<StartConfig, ApiError> {
    let start = StartRequest::read(map, &BOUNDS)?;
    if !models.contains(&start.model) {
        return Err(ApiError::invalid_model());
    }
    let tunable = takes_endpoint_tuning(&start.model);

    let format = match (
        soniox_wire::format::raw_sample_bytes(&start.audio_format),
        start.sample_rate,
        start.num_channels,
    ) {
        (Some(bytes), Some(sample_rate), Some(channels)) => AudioFormat::Raw {
            // At most 8 (pcm_f64), so the cast is exact.
            bytes_per_sample: bytes as u32,
            sample_rate,
            channels,
            s16le: start.audio_format == "pcm_s16le",
        },
        _ => AudioFormat::Container,
    };

    let mut seen: Vec<&str> = Vec::new();
    for code in &start.language_hints {
        if !is_language(code) {
            return Err(ApiError::invalid_language_hint());
        }
        if seen.contains(&code.as_str()) {
            return Err(ApiError::bad_request("Language hints must be unique."));
        }
        seen.push(code);
    }

    if let Some(context) = &start.context {
        let chars = match context {
            Value::String(s) => s.chars().count(),
            _ => context.to_string().chars().count(),
        };
        if chars > MAX_CONTEXT_CHARS {
            return Err(ApiError::bad_request(
                "Context is too long (max length 10000).",
            ));
        }
    }

    if start
        .max_endpoint_delay_ms
        .is_some_and(|d| !(500..=3000).contains(&d))
    {
        return Err(ApiError::invalid_endpoint_delay());
    }
    if let Some(s) = start.endpoint_sensitivity {
        // Emulator's own messages: the real ones are undocumented.
        if !tunable {
            return Err(ApiError::bad_request(
                "Model does not support endpoint_sensitivity.",
            ));
        }
        if !(-1.0..=1.0).contains(&s) {
            return Err(ApiError::bad_request(
                "Invalid endpoint_sensitivity: must be between -1.0 and 1.0.",
            ));
        }
    }
    if let Some(level) = &start.endpoint_latency_adjustment_level {
        if !tunable {
            return Err(ApiError::bad_request(
                "Model does not support endpoint_latency_adjustment_level.",
            ));
        }
        if soniox_wire::fields::whole(level).is_none_or(|l| l > 3) {
            return Err(ApiError::bad_request(
                "Invalid endpoint_latency_adjustment_level: must be 0, 1, 2 or 3.",
            ));
        }
    }
    // A voice agent's own text into the session (v6 release); only its
    // type is known.
    soniox_wire::fields::opt_bool(&start.extra, "enable_agent_text_input")?;
    if let Some(id) = &start.client_reference_id
        && id.chars().count() > MAX_CLIENT_REFERENCE_CHARS
    {
        return Err(ApiError::bad_request(
            "Client reference ID is too long (max length 256)",
        ));
    }

    let translation = start.translation.map(known_languages).transpose()?;

    Ok(StartConfig {
        model: start.model,
        format,
        diarization: start.enable_speaker_diarization.unwrap_or(false),
        language_id: start.enable_language_identification.unwrap_or(false),
        endpoint_detection: start.enable_endpoint_detection.unwrap_or(false),
        max_endpoint_delay_ms: start.max_endpoint_delay_ms,
        non_final_tokens: start.enable_non_final_tokens.unwrap_or(true),
        translation,
    })
}

/// A translation whose languages the emulator knows (and, two-way,
/// differ).
fn known_languages(t: soniox_wire::Translation) -> Result<Translation, ApiError> {
    let known = |code: &str| {
        is_language(code)
            .then(|| code.to_owned())
            .ok_or_else(ApiError::invalid_translation_language)
    };
    match t {
        soniox_wire::Translation::OneWay { target_language } => Ok(Translation::OneWay {
            target: known(&target_language)?,
        }),
        soniox_wire::Translation::TwoWay {
            language_a,
            language_b,
        } => {
            let (a, b) = (known(&language_a)?, known(&language_b)?);
            if a == b {
                return Err(ApiError::invalid_translation_language());
            }
            Ok(Translation::TwoWay { a, b })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use soniox_wire::error::MSG_MISSING_FORMAT;

    fn check(v: Value) -> Result<StartConfig, ApiError> {
        let models: Vec<String> = MODELS.iter().map(|m| (*m).to_owned()).collect();
        validate_start(v.as_object().unwrap().clone(), &models)
    }

    fn base() -> Value {
        json!({"model":"stt-rt-v5","audio_format":"pcm_s16le","sample_rate":16000,"num_channels":1})
    }

    fn with(key: &str, value: Value) -> Value {
        let mut v = base();
        v[key] = value;
        v
    }

    fn msg(v: Value) -> String {
        check(v).unwrap_err().message
    }

    fn format_of(name: &str) -> Result<AudioFormat, ApiError> {
        check(with("audio_format", json!(name))).map(|start| start.format)
    }

    #[test]
    fn formats() {
        for ok in [
            "pcm_s16le",
            "s16le",
            "pcm_s8",
            "pcm_u8",
            "u8",
            "pcm_s24be",
            "pcm_u32le",
            "pcm_f32le",
            "f64be",
            "mulaw",
            "alaw",
            "pcm_s8le",
        ] {
            assert!(matches!(format_of(ok), Ok(AudioFormat::Raw { .. })), "{ok}");
        }
        for c in soniox_wire::format::CONTAINER_FORMATS {
            assert_eq!(format_of(c), Ok(AudioFormat::Container));
        }
        for bad in [
            "avi",
            "pcm_s16",
            "pcm_f16le",
            "pcm_s12le",
            "pcm_f8",
            "s16xe",
            "",
            "pcm_",
        ] {
            assert!(format_of(bad).is_err(), "{bad}");
        }
        assert_eq!(
            format_of("s16le"),
            Ok(AudioFormat::Raw {
                bytes_per_sample: 2,
                sample_rate: 16_000,
                channels: 1,
                s16le: true
            })
        );
        assert!(matches!(
            format_of("pcm_s16be"),
            Ok(AudioFormat::Raw {
                bytes_per_sample: 2,
                s16le: false,
                ..
            })
        ));
    }

    #[test]
    fn validation_messages() {
        assert!(check(base()).is_ok());
        let e = check(with("model", json!("stt-async-v3"))).unwrap_err();
        assert_eq!(e, ApiError::invalid_model());
        let mut v = base();
        v.as_object_mut().unwrap().remove("audio_format");
        assert_eq!(msg(v), MSG_MISSING_FORMAT);
        assert_eq!(msg(with("audio_format", Value::Null)), MSG_MISSING_FORMAT);
        assert_eq!(
            msg(with("audio_format", json!("avi"))),
            "Invalid audio data format: avi"
        );
        assert_eq!(
            msg(with("sample_rate", Value::Null)),
            "Audio data sample rate must be specified for PCM formats"
        );
        assert_eq!(
            msg(with("num_channels", json!(0))),
            "Audio data channels must be specified for PCM formats"
        );
        assert!(check(json!({"model":"stt-rt-v3","audio_format":"auto"})).is_ok());
        assert_eq!(
            msg(with("language_hints", json!(["en", "xx"]))),
            "Invalid language hint."
        );
        assert_eq!(
            msg(with("language_hints", json!(["en", "en"]))),
            "Language hints must be unique."
        );
        assert_eq!(
            msg(with("context", json!("x".repeat(10_001)))),
            "Context is too long (max length 10000)."
        );
        assert!(check(with("context", json!("x".repeat(10_000)))).is_ok());
        assert_eq!(
            msg(with("context", json!({"text": "y".repeat(9_990)}))),
            "Context is too long (max length 10000)."
        );
        assert_eq!(
            msg(with("client_reference_id", json!("r".repeat(257)))),
            "Client reference ID is too long (max length 256)"
        );
        assert!(msg(with("max_endpoint_delay_ms", json!(499))).contains("max_endpoint_delay_ms"));
        assert!(check(with("max_endpoint_delay_ms", json!(3000))).is_ok());
        assert!(check(with("endpoint_sensitivity", json!(0.5))).is_ok());
        assert!(check(with("endpoint_sensitivity", json!(1.5))).is_err());
        assert!(check(with("endpoint_latency_adjustment_level", json!(4))).is_err());
        let mut v3 = with("endpoint_sensitivity", json!(0.5));
        v3["model"] = json!("stt-rt-v3");
        assert!(msg(v3).contains("does not support"));
        assert_eq!(
            msg(with("enable_agent_text_input", json!("yes"))),
            "Start request is malformed."
        );
        assert_eq!(
            msg(with(
                "translation",
                json!({"type":"one_way","target_language":"xx"})
            )),
            "Invalid translation target language."
        );
        assert_eq!(
            msg(with("translation", json!({"type":"three_way"}))),
            "Start request is malformed."
        );
        assert!(
            check(with(
                "translation",
                json!({"type":"two_way","language_a":"en","language_b":"es"})
            ))
            .is_ok()
        );
        assert_eq!(
            msg(with("enable_endpoint_detection", json!("yes"))),
            "Start request is malformed."
        );
    }

    #[test]
    fn v6_takes_every_v5_option_and_the_model_list_is_the_callers() {
        let mut v6 = base();
        for (key, value) in [
            ("model", json!("stt-rt-v6")),
            ("endpoint_sensitivity", json!(-0.25)),
            ("endpoint_latency_adjustment_level", json!(3)),
            ("max_endpoint_delay_ms", json!(800)),
            ("enable_endpoint_detection", json!(true)),
            ("enable_agent_text_input", json!(true)),
        ] {
            v6[key] = value;
        }
        assert_eq!(check(v6.clone()).unwrap().model, "stt-rt-v6");
        let mut v7 = v6.clone();
        v7["model"] = json!("stt-rt-v7");
        assert_eq!(check(v7.clone()), Err(ApiError::invalid_model()));
        let only_v7 = vec!["stt-rt-v7".to_owned()];
        let map = |v: &Value| v.as_object().unwrap().clone();
        assert!(
            validate_start(map(&v7), &only_v7).is_ok(),
            "tuning from v5 on"
        );
        assert_eq!(
            validate_start(map(&v6), &only_v7),
            Err(ApiError::invalid_model())
        );
        assert!(!takes_endpoint_tuning("stt-rt-v3-preview"));
        assert!(!takes_endpoint_tuning("stt-rt-v4"));
    }

    #[test]
    fn explicit_nulls_are_accepted() {
        let mut v = base();
        for k in [
            "context",
            "client_reference_id",
            "language_hints",
            "translation",
            "max_endpoint_delay_ms",
            "enable_speaker_diarization",
            "endpoint_sensitivity",
            "enable_agent_text_input",
            "api_key",
        ] {
            v[k] = Value::Null;
        }
        assert!(check(v.clone()).is_ok());
        assert_eq!(
            soniox_wire::fields::api_key(v.as_object().unwrap()),
            Ok(None)
        );
    }

    #[test]
    fn error_json_shape() {
        let e = canonical(503);
        let v: Value = serde_json::from_str(&e.to_json("rid")).unwrap();
        assert_eq!(v["error_code"], 503);
        assert_eq!(v["error_type"], "service_unavailable");
        assert_eq!(v["error_message"], MSG_CANNOT_CONTINUE);
        assert_eq!(
            v["more_info"],
            "https://soniox.com/docs/api-reference/errors#service-unavailable"
        );
        assert_eq!(v["request_id"], "rid");
    }

    #[test]
    fn translation_targets() {
        let one = Translation::OneWay {
            target: "fr".into(),
        };
        assert_eq!(one.target_for("en"), Some("fr"));
        assert_eq!(
            Translation::OneWay {
                target: "en".into()
            }
            .target_for("en"),
            None
        );
        let two = Translation::TwoWay {
            a: "es".into(),
            b: "en".into(),
        };
        assert_eq!(two.target_for("en"), Some("es"));
    }
}
