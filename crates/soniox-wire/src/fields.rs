//! Readers of a start request's fields, by JSON shape, with Soniox's
//! messages for the wrong shape.
//!
//! Absent and explicit `null` are the same ("not set": some clients send
//! `null` for options they leave unset). Bounds are the caller's where the
//! servers differ.

use std::ops::RangeInclusive;

use serde_json::{Map, Number, Value};

use crate::error::{ApiError, MSG_MISSING_CHANNELS, MSG_MISSING_FORMAT, MSG_MISSING_RATE};

/// A field that is absent or explicitly `null`.
pub fn field<'a>(map: &'a Map<String, Value>, key: &str) -> Option<&'a Value> {
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
pub fn opt_str<'a>(map: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, ApiError> {
    typed(map, key, Value::as_str)
}

/// An optional boolean field.
pub fn opt_bool(map: &Map<String, Value>, key: &str) -> Result<Option<bool>, ApiError> {
    typed(map, key, Value::as_bool)
}

/// An optional number field.
pub fn opt_number<'a>(
    map: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Number>, ApiError> {
    typed(map, key, Value::as_number)
}

/// A number's value if it is a whole, non-negative one: any JSON integer,
/// or a float such as `16000.0` up to `u32::MAX` (every bound checked on
/// top of this is far below that).
pub fn whole(n: &Number) -> Option<u64> {
    n.as_u64().or_else(|| {
        n.as_f64()
            .filter(|f| f.fract() == 0.0 && (0.0..=f64::from(u32::MAX)).contains(f))
            // Whole and within u32 range, checked just above.
            .map(|f| f as u64)
    })
}

/// The text of a start request as a JSON object.
pub fn parse_object(text: &str) -> Result<Map<String, Value>, ApiError> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(ApiError::malformed_start()),
    }
}

/// The deprecated `api_key` of a start request, if present.
pub fn api_key(map: &Map<String, Value>) -> Result<Option<String>, ApiError> {
    opt_str(map, "api_key").map(|k| k.map(str::to_owned))
}

/// `model`: present and a string; which names exist is the caller's check.
pub fn model(map: &Map<String, Value>) -> Result<&str, ApiError> {
    match field(map, "model") {
        Some(Value::String(model)) => Ok(model),
        _ => Err(ApiError::invalid_model()),
    }
}

/// `audio_format` as sent: present and a string.
pub fn audio_format_name(map: &Map<String, Value>) -> Result<&str, ApiError> {
    match field(map, "audio_format") {
        None => Err(ApiError::bad_request(MSG_MISSING_FORMAT)),
        Some(Value::String(name)) => Ok(name),
        Some(other) => Err(ApiError::invalid_format(other)),
    }
}

/// `sample_rate` and `num_channels` of a raw format. A value outside the
/// caller's bounds counts as not specified (the real bounds are
/// undocumented), and so gets Soniox's message for a missing one.
pub fn raw_layout(
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
/// each be a string (else an invalid hint).
pub fn language_hints(map: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let items = typed(map, "language_hints", Value::as_array)?;
    items
        .into_iter()
        .flatten()
        .map(|item| match item {
            Value::String(code) => Ok(code.clone()),
            _ => Err(ApiError::invalid_language_hint()),
        })
        .collect()
}

/// `context`: a string (legacy) or an object; its length is the caller's
/// check.
pub fn context(map: &Map<String, Value>) -> Result<Option<&Value>, ApiError> {
    typed(map, "context", |v| {
        (v.is_string() || v.is_object()).then_some(v)
    })
}

/// `max_endpoint_delay_ms`: a whole number of milliseconds; its range is
/// the caller's check.
pub fn max_endpoint_delay_ms(map: &Map<String, Value>) -> Result<Option<u64>, ApiError> {
    match opt_number(map, "max_endpoint_delay_ms")? {
        None => Ok(None),
        Some(n) => whole(n)
            .map(Some)
            .ok_or_else(ApiError::invalid_endpoint_delay),
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
        assert_eq!(language_hints(&m), Ok(vec![]));
        let hints = map(json!({"language_hints": ["en", 5]}));
        assert_eq!(
            language_hints(&hints),
            Err(ApiError::invalid_language_hint())
        );
    }
}
