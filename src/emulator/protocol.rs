//! Wire-level rules of the emulated API: the error catalogue and the
//! validation of start requests (§4 and §8 of the protocol notes).
//!
//! Messages quoted in §8.1 of the notes are reproduced byte for byte. A few
//! checks have no documented message (endpoint tuning ranges, v5-only
//! fields); their messages are the emulator's own and are marked as such.

use serde_json::{Map, Value};

/// `error_message` of the 503 the real service sends when it drops a session.
pub(crate) const MSG_CANNOT_CONTINUE: &str = "Cannot continue request (code 4). Please restart the request. Refer to: https://soniox.com/url/cannot-continue-request";
/// `error_message` of a 500.
pub(crate) const MSG_INTERNAL: &str = "The server had an error processing your request. Sorry about that! You can retry your request, or contact us through our support email support@soniox.com if you keep seeing this error.";
/// The 400 sent when `audio_format` is absent.
pub(crate) const MSG_MISSING_FORMAT: &str = "Missing audio format. Specify a valid audio format (e.g. s16le, f32le, wav, ogg, flac...) or \"auto\" for auto format detection.";

/// Models the emulator accepts (§4.3).
pub(crate) const MODELS: &[&str] = &[
    "stt-rt-v3",
    "stt-rt-v4",
    "stt-rt-v5",
    "stt-rt-preview",
    "stt-rt-preview-v2",
    "stt-rt-v3-preview",
];

/// Models that accept the v5 endpoint tuning fields.
const V5_MODELS: &[&str] = &["stt-rt-v5"];

/// Container formats, named explicitly or detected with `auto` (§4.4).
const CONTAINERS: &[&str] = &[
    "auto", "aac", "aiff", "amr", "asf", "flac", "mp3", "ogg", "wav", "webm",
];

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

/// An error frame to send before closing the session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    /// HTTP-style status code (`error_code`).
    pub(crate) code: u16,
    /// Stable error type (`error_type`, §8.2).
    pub(crate) error_type: &'static str,
    /// Human-readable message (`error_message`, §8.1).
    pub(crate) message: String,
}

impl ApiError {
    /// An error with explicit parts.
    pub(crate) fn new(code: u16, error_type: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            error_type,
            message: message.into(),
        }
    }

    /// A 400 `invalid_request`.
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request", message)
    }

    /// 400 `Start request is malformed.`
    pub(crate) fn malformed_start() -> ApiError {
        ApiError::bad_request("Start request is malformed.")
    }

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
            // Undocumented message; the type is documented (§8.1 "Newer additions").
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
    /// after the start request: as [`ApiError::canonical`], except that a
    /// 400 blames the start request (`Start request is malformed.`) rather
    /// than audio that has not been sent yet.
    pub(crate) fn rejection(code: u16) -> ApiError {
        match code {
            400 => ApiError::malformed_start(),
            c => ApiError::canonical(c),
        }
    }

    /// The error frame as JSON text.
    pub(crate) fn to_json(&self, request_id: &str) -> String {
        let anchor = self.error_type.replace('_', "-");
        serde_json::json!({
            "error_code": self.code,
            "error_type": self.error_type,
            "error_message": self.message,
            "more_info": format!("https://soniox.com/docs/api-reference/errors#{anchor}"),
            "request_id": request_id,
        })
        .to_string()
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

/// What a format name denotes, before rate and channels are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FormatKind {
    Raw { bytes_per_sample: u32, s16le: bool },
    Container,
}

/// Parses an `audio_format` name; `None` if unknown.
fn parse_format(name: &str) -> Option<FormatKind> {
    if CONTAINERS.contains(&name) {
        return Some(FormatKind::Container);
    }
    if name == "mulaw" || name == "alaw" {
        return Some(FormatKind::Raw {
            bytes_per_sample: 1,
            s16le: false,
        });
    }
    // `pcm_s16le` and the short `s16le` spelling are both accepted (§4.4).
    let base = name.strip_prefix("pcm_").unwrap_or(name);
    let mut chars = base.chars();
    let kind = chars.next()?;
    let rest = chars.as_str();
    let digits_end = rest
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(rest.len());
    let (bits, endian) = rest.split_at(digits_end);
    let bits: u32 = bits.parse().ok()?;
    let valid_bits = match kind {
        's' | 'u' => matches!(bits, 8 | 16 | 24 | 32),
        'f' => matches!(bits, 32 | 64),
        _ => false,
    };
    // Byte order is mandatory except for 8-bit integer samples.
    let valid_endian = match endian {
        "le" | "be" => true,
        "" => bits == 8 && kind != 'f',
        _ => false,
    };
    (valid_bits && valid_endian).then_some(FormatKind::Raw {
        bytes_per_sample: bits / 8,
        s16le: kind == 's' && bits == 16 && endian == "le",
    })
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

/// Parses the text of a start request into a JSON object.
pub(crate) fn parse_start(text: &str) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::malformed_start()),
    }
}

/// The deprecated `api_key` field of a start request, if present.
pub(crate) fn start_api_key(map: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    opt_str(map, "api_key").map(|k| k.map(str::to_owned))
}

/// A field that is absent or explicitly `null` (both mean "not set").
fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

fn opt_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    match field(map, key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(ApiError::malformed_start()),
    }
}

fn opt_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    match field(map, key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::malformed_start()),
    }
}

fn opt_number(map: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match field(map, key) {
        None => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(ApiError::malformed_start()),
    }
}

/// Validates a start request (everything except authentication).
pub(crate) fn validate_start(map: &Map<String, Value>) -> Result<StartConfig, ApiError> {
    let invalid_model = || ApiError::new(400, "model_not_available", "Invalid model specified.");
    let model = match field(map, "model") {
        Some(Value::String(m)) if MODELS.contains(&m.as_str()) => m.clone(),
        _ => return Err(invalid_model()),
    };
    let is_v5 = V5_MODELS.contains(&model.as_str());

    let format_name = match field(map, "audio_format") {
        None => return Err(ApiError::bad_request(MSG_MISSING_FORMAT)),
        Some(Value::String(s)) => s.as_str(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid audio data format: {other}"
            )));
        }
    };
    let format = match parse_format(format_name) {
        None => {
            return Err(ApiError::bad_request(format!(
                "Invalid audio data format: {format_name}"
            )));
        }
        Some(FormatKind::Container) => AudioFormat::Container,
        Some(FormatKind::Raw {
            bytes_per_sample,
            s16le,
        }) => {
            // Rates and channel counts outside sane bounds count as "not
            // specified": the real bounds are undocumented.
            let rate = opt_number(map, "sample_rate")?
                .filter(|r| r.fract() == 0.0 && (1.0..=1_000_000.0).contains(r));
            let Some(rate) = rate else {
                return Err(ApiError::bad_request(
                    "Audio data sample rate must be specified for PCM formats",
                ));
            };
            let channels = opt_number(map, "num_channels")?
                .filter(|c| c.fract() == 0.0 && (1.0..=64.0).contains(c));
            let Some(channels) = channels else {
                return Err(ApiError::bad_request(
                    "Audio data channels must be specified for PCM formats",
                ));
            };
            AudioFormat::Raw {
                bytes_per_sample,
                // Both were checked to be whole numbers in range above.
                sample_rate: rate as u32,
                channels: channels as u16,
                s16le,
            }
        }
    };

    if let Some(hints) = field(map, "language_hints") {
        let Value::Array(hints) = hints else {
            return Err(ApiError::malformed_start());
        };
        let mut seen: Vec<&str> = Vec::with_capacity(hints.len());
        for h in hints {
            match h {
                Value::String(code) if is_language(code) => {
                    if seen.contains(&code.as_str()) {
                        return Err(ApiError::bad_request("Language hints must be unique."));
                    }
                    seen.push(code);
                }
                _ => return Err(ApiError::bad_request("Invalid language hint.")),
            }
        }
    }
    opt_bool(map, "language_hints_strict")?;

    if let Some(context) = field(map, "context") {
        let chars = match context {
            Value::String(s) => s.chars().count(),
            Value::Object(_) => context.to_string().chars().count(),
            _ => return Err(ApiError::malformed_start()),
        };
        if chars > MAX_CONTEXT_CHARS {
            return Err(ApiError::bad_request(
                "Context is too long (max length 10000).",
            ));
        }
    }

    let diarization = opt_bool(map, "enable_speaker_diarization")?.unwrap_or(false);
    let language_id = opt_bool(map, "enable_language_identification")?.unwrap_or(false);
    let endpoint_detection = opt_bool(map, "enable_endpoint_detection")?.unwrap_or(false);
    let non_final_tokens = opt_bool(map, "enable_non_final_tokens")?.unwrap_or(true);

    let max_endpoint_delay_ms = match opt_number(map, "max_endpoint_delay_ms")? {
        None => None,
        Some(d) if d.fract() == 0.0 && (500.0..=3000.0).contains(&d) => Some(d as u64),
        // Emulator's own message: the real one is undocumented.
        Some(_) => {
            return Err(ApiError::bad_request(
                "Invalid max_endpoint_delay_ms: must be an integer between 500 and 3000.",
            ));
        }
    };
    if let Some(s) = opt_number(map, "endpoint_sensitivity")? {
        // Emulator's own messages: the real ones are undocumented.
        if !is_v5 {
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
    if let Some(l) = opt_number(map, "endpoint_latency_adjustment_level")? {
        if !is_v5 {
            return Err(ApiError::bad_request(
                "Model does not support endpoint_latency_adjustment_level.",
            ));
        }
        if l.fract() != 0.0 || !(0.0..=3.0).contains(&l) {
            return Err(ApiError::bad_request(
                "Invalid endpoint_latency_adjustment_level: must be 0, 1, 2 or 3.",
            ));
        }
    }
    if let Some(id) = opt_str(map, "client_reference_id")?
        && id.chars().count() > MAX_CLIENT_REFERENCE_CHARS
    {
        return Err(ApiError::bad_request(
            "Client reference ID is too long (max length 256)",
        ));
    }

    let translation = match field(map, "translation") {
        None => None,
        Some(Value::Object(t)) => Some(parse_translation(t)?),
        Some(_) => return Err(ApiError::malformed_start()),
    };

    Ok(StartConfig {
        model,
        format,
        diarization,
        language_id,
        endpoint_detection,
        max_endpoint_delay_ms,
        non_final_tokens,
        translation,
    })
}

/// Validates the `translation` object.
fn parse_translation(t: &Map<String, Value>) -> Result<Translation, ApiError> {
    let bad_language = || ApiError::bad_request("Invalid translation target language.");
    let lang = |key: &str| -> Result<String, ApiError> {
        match field(t, key) {
            Some(Value::String(code)) if is_language(code) => Ok(code.clone()),
            _ => Err(bad_language()),
        }
    };
    match opt_str(t, "type")? {
        Some("one_way") => Ok(Translation::OneWay {
            target: lang("target_language")?,
        }),
        Some("two_way") => {
            let (a, b) = (lang("language_a")?, lang("language_b")?);
            if a == b {
                return Err(bad_language());
            }
            Ok(Translation::TwoWay { a, b })
        }
        _ => Err(ApiError::malformed_start()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(v: Value) -> Result<StartConfig, ApiError> {
        validate_start(v.as_object().unwrap())
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
            assert!(
                matches!(parse_format(ok), Some(FormatKind::Raw { .. })),
                "{ok}"
            );
        }
        for c in CONTAINERS {
            assert_eq!(parse_format(c), Some(FormatKind::Container));
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
            assert_eq!(parse_format(bad), None, "{bad}");
        }
        assert_eq!(
            parse_format("s16le"),
            Some(FormatKind::Raw {
                bytes_per_sample: 2,
                s16le: true
            })
        );
        assert_eq!(
            parse_format("pcm_s16be"),
            Some(FormatKind::Raw {
                bytes_per_sample: 2,
                s16le: false
            })
        );
    }

    #[test]
    fn validation_messages() {
        assert!(check(base()).is_ok());
        let e = check(with("model", json!("stt-async-v3"))).unwrap_err();
        assert_eq!(
            (e.code, e.error_type, e.message.as_str()),
            (400, "model_not_available", "Invalid model specified.")
        );
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
            "api_key",
        ] {
            v[k] = Value::Null;
        }
        assert!(check(v.clone()).is_ok());
        assert_eq!(start_api_key(v.as_object().unwrap()), Ok(None));
    }

    #[test]
    fn error_json_shape() {
        let e = ApiError::canonical(503);
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
