//! The Soniox real-time protocol's wire vocabulary, as sttpipe's two Soniox
//! servers speak it: the emulator ([`crate::emulator`]) and the daemon's
//! Soniox-compatible WebSocket endpoint (`daemon::proxy`).
//!
//! This module owns what both must say identically (`soniox-protocol.md` §4
//! and §8): the error catalogue (status codes, `error_type`s, Soniox's exact
//! messages) and the error frame with its `more_info` URL; the rule that an
//! absent field and an explicit `null` both mean "not set"; the short-name
//! rule for `audio_format` (`s16le` is `pcm_s16le`); and the reading of the
//! start-request fields whose JSON shape both check the same way, with the
//! same errors.
//!
//! What each server then does with the values stays with it: the emulator
//! checks models, languages and ranges as the real service does, while the
//! proxy leaves those to the service (whose error frame it relays) and builds
//! sttpipe's own options. So the readers here check shapes only, and take
//! bounds from the caller where the two differ.

use std::borrow::Cow;
use std::fmt::Display;
use std::ops::RangeInclusive;

use serde_json::{Map, Number, Value};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::audio;

/// Bytes tungstenite reads from the socket at a time.
const WS_READ_BUFFER: usize = 4 * 1024;

/// WebSocket settings for every Soniox connection sttpipe opens or serves
/// (the engine's client, the daemon's endpoint, the emulator).
///
/// tungstenite zero-fills its whole read buffer before every read, the
/// reads that find nothing included, and so touches all of it: with the
/// 128 KiB default that was 35 % of the daemon's CPU and 128 KiB of RSS per
/// upstream connection. Soniox messages are small (100 ms of audio is
/// 3,200 bytes; a token response well under 1 KiB), and a larger frame
/// still arrives whole: the buffer grows for it.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER)
}

/// `error_message` of the 503 the real service sends when it drops a session.
pub(crate) const MSG_CANNOT_CONTINUE: &str = "Cannot continue request (code 4). Please restart the request. Refer to: https://soniox.com/url/cannot-continue-request";
/// `error_message` of a 500.
pub(crate) const MSG_INTERNAL: &str = "The server had an error processing your request. Sorry about that! You can retry your request, or contact us through our support email support@soniox.com if you keep seeing this error.";
/// The 400 sent when `audio_format` is absent.
pub(crate) const MSG_MISSING_FORMAT: &str = "Missing audio format. Specify a valid audio format (e.g. s16le, f32le, wav, ogg, flac...) or \"auto\" for auto format detection.";
/// The 400 for a raw format without a (usable) `sample_rate`.
const MSG_MISSING_RATE: &str = "Audio data sample rate must be specified for PCM formats";
/// The 400 for a raw format without a (usable) `num_channels`.
const MSG_MISSING_CHANNELS: &str = "Audio data channels must be specified for PCM formats";

/// Soniox's `error_type` for a status code when nothing more specific
/// applies (§8.2).
pub(crate) fn error_type_for(code: u16) -> &'static str {
    match code {
        400 => "invalid_request",
        401 => "unauthenticated",
        402 => "organization_balance_exhausted",
        403 => "permission_denied",
        408 => "request_timeout",
        429 => "limit_exceeded",
        503 => "service_unavailable",
        _ => "internal_error",
    }
}

/// The error frame as JSON text (§7.5). `more_info` is the errors page
/// anchored at the type, `_` spelled `-`.
pub(crate) fn error_frame(code: u16, error_type: &str, message: &str, request_id: &str) -> String {
    let anchor = error_type.replace('_', "-");
    serde_json::json!({
        "error_code": code,
        "error_type": error_type,
        "error_message": message,
        "more_info": format!("https://soniox.com/docs/api-reference/errors#{anchor}"),
        "request_id": request_id,
    })
    .to_string()
}

/// An error from Soniox's catalogue: a documented `error_type` with its
/// message. The constructors below hold the exact texts of §8.1.
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

    /// 400 `Start request is malformed.`: not JSON, not an object, or a
    /// field of the wrong JSON type.
    pub(crate) fn malformed_start() -> ApiError {
        ApiError::bad_request("Start request is malformed.")
    }

    /// 400 `model_not_available`; Soniox answers a missing model as it does
    /// an unknown one (§4.2).
    pub(crate) fn invalid_model() -> ApiError {
        ApiError::new(400, "model_not_available", "Invalid model specified.")
    }

    /// 400 for an `audio_format` that is not a format; `name` is the value
    /// as sent (JSON text if it is not a string).
    pub(crate) fn invalid_format(name: impl Display) -> ApiError {
        ApiError::bad_request(format!("Invalid audio data format: {name}"))
    }

    /// 400 for an unknown language hint, or one that is not a string.
    pub(crate) fn invalid_language_hint() -> ApiError {
        ApiError::bad_request("Invalid language hint.")
    }

    /// 400 for a translation language that is unknown, missing or not a
    /// string (Soniox has one message for all of them).
    pub(crate) fn invalid_translation_language() -> ApiError {
        ApiError::bad_request("Invalid translation target language.")
    }

    /// 400 for a `max_endpoint_delay_ms` out of range. Soniox's own message
    /// is undocumented: this one is the emulator's, which the proxy shares
    /// so that both refuse alike.
    pub(crate) fn invalid_endpoint_delay() -> ApiError {
        ApiError::bad_request(
            "Invalid max_endpoint_delay_ms: must be an integer between 500 and 3000.",
        )
    }

    /// The error frame as JSON text.
    pub(crate) fn to_json(&self, request_id: &str) -> String {
        error_frame(self.code, self.error_type, &self.message, request_id)
    }
}

/// A field that is absent or explicitly `null` (both mean "not set", §4.2:
/// some clients send `null` for options they leave unset).
fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
    map.get(key).filter(|v| !v.is_null())
}

/// An optional field of the JSON type `as_type` picks; any other type is a
/// malformed request.
fn typed<'a, T>(
    map: &'a Map<String, Value>,
    key: &str,
    as_type: impl FnOnce(&'a Value) -> Option<T>,
) -> Result<Option<T>, ApiError> {
    field(map, key)
        .map(|v| as_type(v).ok_or_else(ApiError::malformed_start))
        .transpose()
}

/// An optional string field.
pub(crate) fn opt_str<'a>(
    map: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a str>, ApiError> {
    typed(map, key, Value::as_str)
}

/// An optional boolean field.
pub(crate) fn opt_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    typed(map, key, Value::as_bool)
}

/// An optional number field.
pub(crate) fn opt_number<'a>(
    map: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Number>, ApiError> {
    typed(map, key, Value::as_number)
}

/// A number's value if it is a whole, non-negative one: any JSON integer,
/// or a float such as `16000.0` up to `u32::MAX` (every bound checked on
/// top of this is far below that).
fn whole(n: &Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(f))
            // Whole and within u32 range, checked just above.
            .map(|f| f as u64)
    })
}

/// The text of a start request as a JSON object.
pub(crate) fn parse_start_object(text: &str) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::malformed_start()),
    }
}

/// The deprecated `api_key` of a start request, if present (§2.2).
pub(crate) fn start_api_key(map: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    opt_str(map, "api_key").map(|k| k.map(str::to_owned))
}

/// `model`: present and a string; which names exist is the caller's check.
pub(crate) fn model(map: &Map<String, Value>) -> Result<&str, ApiError> {
    match field(map, "model") {
        Some(Value::String(model)) => Ok(model),
        _ => Err(ApiError::invalid_model()),
    }
}

/// `audio_format` as sent: present and a string (§4.4).
pub(crate) fn audio_format_name(map: &Map<String, Value>) -> Result<&str, ApiError> {
    match field(map, "audio_format") {
        None => Err(ApiError::bad_request(MSG_MISSING_FORMAT)),
        Some(Value::String(name)) => Ok(name),
        Some(other) => Err(ApiError::invalid_format(other)),
    }
}

/// The long spelling of a known `audio_format` name, or `None` if Soniox
/// does not know the name. Raw formats may drop their `pcm_` prefix (§4.4:
/// Soniox's own message suggests `s16le`), and sttpipe's [`audio`] table
/// knows the long names only.
pub(crate) fn long_format_name(name: &str) -> Option<Cow<'_, str>> {
    if audio::is_known_format(name) {
        return Some(Cow::Borrowed(name));
    }
    if name.starts_with("pcm_") {
        return None;
    }
    let long = format!("pcm_{name}");
    audio::is_known_format(&long).then_some(Cow::Owned(long))
}

/// `sample_rate` and `num_channels` of a raw format. A value outside the
/// caller's bounds counts as not specified (the real bounds are
/// undocumented), and so gets Soniox's message for a missing one.
pub(crate) fn raw_layout(
    map: &Map<String, Value>,
    rate_bounds: RangeInclusive<u32>,
    channel_bounds: RangeInclusive<u16>,
) -> Result<(u32, u16), ApiError> {
    let rate = bounded(map, "sample_rate", rate_bounds, MSG_MISSING_RATE)?;
    let channels = bounded(map, "num_channels", channel_bounds, MSG_MISSING_CHANNELS)?;
    Ok((rate, channels))
}

/// A whole-number field within `bounds`; anything else gets `missing`.
fn bounded<T: TryFrom<u64> + PartialOrd>(
    map: &Map<String, Value>,
    key: &str,
    bounds: RangeInclusive<T>,
    missing: &str,
) -> Result<T, ApiError> {
    opt_number(map, key)?
        .and_then(whole)
        .and_then(|v| T::try_from(v).ok())
        .filter(|v| bounds.contains(v))
        .ok_or_else(|| ApiError::bad_request(missing))
}

/// `language_hints`, in order: an array (else malformed) whose items must
/// each be a string (else an invalid hint). Items are checked as they are
/// read, so a caller's own checks on earlier items come first.
pub(crate) fn language_hints(
    map: &Map<String, Value>,
) -> Result<impl Iterator<Item = Result<&str, ApiError>>, ApiError> {
    let items = typed(map, "language_hints", Value::as_array)?;
    Ok(items.into_iter().flatten().map(|item| match item {
        Value::String(code) => Ok(code.as_str()),
        _ => Err(ApiError::invalid_language_hint()),
    }))
}

/// `context`: a string (legacy) or an object (§4.5); its length is the
/// caller's check.
pub(crate) fn context(map: &Map<String, Value>) -> Result<Option<&Value>, ApiError> {
    typed(map, "context", |v| {
        (v.is_string() || v.is_object()).then_some(v)
    })
}

/// `max_endpoint_delay_ms`: a whole number of milliseconds; its range is
/// the caller's check.
pub(crate) fn max_endpoint_delay_ms(map: &Map<String, Value>) -> Result<Option<u64>, ApiError> {
    match opt_number(map, "max_endpoint_delay_ms")? {
        None => Ok(None),
        Some(n) => whole(n)
            .map(Some)
            .ok_or_else(ApiError::invalid_endpoint_delay),
    }
}

/// The languages of a `translation` object, unchecked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TranslationRequest<'a> {
    /// `{"type": "one_way", "target_language": …}`.
    OneWay { target_language: &'a str },
    /// `{"type": "two_way", "language_a": …, "language_b": …}`.
    TwoWay {
        language_a: &'a str,
        language_b: &'a str,
    },
}

/// `translation`: an object with a known `type` (else malformed) and its
/// languages as strings (else an invalid target language). Which languages
/// exist, and whether a two-way pair may repeat one, is the caller's check.
pub(crate) fn translation(
    map: &Map<String, Value>,
) -> Result<Option<TranslationRequest<'_>>, ApiError> {
    let Some(t) = typed(map, "translation", Value::as_object)? else {
        return Ok(None);
    };
    let language = |key: &str| match field(t, key) {
        Some(Value::String(code)) => Ok(code.as_str()),
        _ => Err(ApiError::invalid_translation_language()),
    };
    match opt_str(t, "type")? {
        Some("one_way") => Ok(Some(TranslationRequest::OneWay {
            target_language: language("target_language")?,
        })),
        Some("two_way") => Ok(Some(TranslationRequest::TwoWay {
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

    fn map(v: Value) -> Map<String, Value> {
        match v {
            Value::Object(map) => map,
            _ => panic!("an object"),
        }
    }

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
    fn raw_layouts_take_the_callers_bounds() {
        let m = map(json!({"sample_rate": 48000.0, "num_channels": 2}));
        assert_eq!(raw_layout(&m, 1..=48_000, 1..=2), Ok((48_000, 2)));
        let e = raw_layout(&m, 1..=44_100, 1..=2).unwrap_err();
        assert!(e.message.contains("sample rate"), "{e:?}");
        let e = raw_layout(&m, 1..=48_000, 1..=1).unwrap_err();
        assert!(e.message.contains("channels"), "{e:?}");
        for rate in [json!(-1), json!(16000.5), json!(1e300)] {
            let m = map(json!({"sample_rate": rate, "num_channels": 1}));
            assert!(raw_layout(&m, 1..=u32::MAX, 1..=1).is_err());
        }
        let m = map(json!({"sample_rate": "16000", "num_channels": 1}));
        assert_eq!(
            raw_layout(&m, 1..=u32::MAX, 1..=1),
            Err(ApiError::malformed_start())
        );
    }

    #[test]
    fn fields_read_null_as_absent() {
        let m =
            map(json!({"model": null, "enable_speaker_diarization": null, "language_hints": null}));
        assert_eq!(opt_bool(&m, "enable_speaker_diarization"), Ok(None));
        assert_eq!(model(&m), Err(ApiError::invalid_model()));
        assert_eq!(language_hints(&m).map(|h| h.count()), Ok(0));
        assert_eq!(translation(&m), Ok(None));
        let hints = map(json!({"language_hints": ["en", 5]}));
        let read: Vec<_> = language_hints(&hints).unwrap().collect();
        assert_eq!(read, [Ok("en"), Err(ApiError::invalid_language_hint())]);
    }

    #[test]
    fn error_frames_link_their_type() {
        let frame: Value = serde_json::from_str(&ApiError::invalid_model().to_json("r")).unwrap();
        assert_eq!(frame["error_type"], "model_not_available");
        assert_eq!(
            frame["more_info"],
            "https://soniox.com/docs/api-reference/errors#model-not-available"
        );
        assert_eq!(error_type_for(429), "limit_exceeded");
        assert_eq!(error_type_for(599), "internal_error");
    }
}
