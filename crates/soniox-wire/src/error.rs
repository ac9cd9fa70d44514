//! The error catalogue and the error frame of Soniox's WebSocket API:
//! status codes, `error_type`s and Soniox's exact messages.

use std::borrow::Cow;
use std::fmt::Display;

use serde::{Deserialize, Serialize};

/// `error_message` of the 503 the real service sends when it drops a session.
pub const MSG_CANNOT_CONTINUE: &str = "Cannot continue request (code 4). Please restart the request. Refer to: https://soniox.com/url/cannot-continue-request";
/// `error_message` of a 500.
pub const MSG_INTERNAL: &str = "The server had an error processing your request. Sorry about that! You can retry your request, or contact us through our support email support@soniox.com if you keep seeing this error.";
/// The 400 sent when `audio_format` is absent.
pub const MSG_MISSING_FORMAT: &str = "Missing audio format. Specify a valid audio format (e.g. s16le, f32le, wav, ogg, flac...) or \"auto\" for auto format detection.";
/// The 400 for a raw format without a (usable) `sample_rate`.
pub const MSG_MISSING_RATE: &str = "Audio data sample rate must be specified for PCM formats";
/// The 400 for a raw format without a (usable) `num_channels`.
pub const MSG_MISSING_CHANNELS: &str = "Audio data channels must be specified for PCM formats";

/// Soniox's `error_type` for a status code when nothing more specific
/// applies.
pub fn error_type_for(code: u16) -> &'static str {
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

/// An error frame as it travels: the last message before the server
/// closes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorFrame {
    /// HTTP-style status code.
    pub error_code: u16,
    /// Stable error type.
    pub error_type: String,
    /// Human-readable message.
    pub error_message: String,
    /// The errors page, anchored at the type.
    #[serde(default)]
    pub more_info: String,
    /// The request the error belongs to.
    #[serde(default)]
    pub request_id: String,
}

/// An error from Soniox's catalogue, or one relayed from the service (whose
/// `error_type` may be any string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// HTTP-style status code (`error_code`).
    pub code: u16,
    /// Stable error type (`error_type`).
    pub error_type: Cow<'static, str>,
    /// Human-readable message (`error_message`).
    pub message: String,
}

impl ApiError {
    /// An error with explicit parts.
    pub fn new(
        code: u16,
        error_type: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> ApiError {
        ApiError {
            code,
            error_type: error_type.into(),
            message: message.into(),
        }
    }

    /// An error whose type is the usual one for its code.
    pub fn with_code(code: u16, message: impl Into<String>) -> ApiError {
        ApiError::new(code, error_type_for(code), message)
    }

    /// A 400 `invalid_request`.
    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(400, "invalid_request", message)
    }

    /// 400 `Start request is malformed.`: not JSON, not an object, or a
    /// field of the wrong JSON type.
    pub fn malformed_start() -> ApiError {
        ApiError::bad_request("Start request is malformed.")
    }

    /// 400 `model_not_available`; Soniox answers a missing model as it does
    /// an unknown one.
    pub fn invalid_model() -> ApiError {
        ApiError::new(400, "model_not_available", "Invalid model specified.")
    }

    /// 400 for an `audio_format` that is not a format; `name` is the value
    /// as sent (JSON text if it is not a string).
    pub fn invalid_format(name: impl Display) -> ApiError {
        ApiError::bad_request(format!("Invalid audio data format: {name}"))
    }

    /// 400 for an unknown language hint, or one that is not a string.
    pub fn invalid_language_hint() -> ApiError {
        ApiError::bad_request("Invalid language hint.")
    }

    /// 400 for a translation language that is unknown, missing or not a
    /// string (Soniox has one message for all of them).
    pub fn invalid_translation_language() -> ApiError {
        ApiError::bad_request("Invalid translation target language.")
    }

    /// 400 for a `max_endpoint_delay_ms` out of range. Soniox's own message
    /// is undocumented: this one is the emulator's, which the daemon shares
    /// so that both refuse alike.
    pub fn invalid_endpoint_delay() -> ApiError {
        ApiError::bad_request(
            "Invalid max_endpoint_delay_ms: must be an integer between 500 and 3000.",
        )
    }

    /// The frame for this error.
    pub fn to_frame(&self, request_id: &str) -> ErrorFrame {
        let anchor = self.error_type.replace('_', "-");
        ErrorFrame {
            error_code: self.code,
            error_type: self.error_type.to_string(),
            error_message: self.message.clone(),
            more_info: format!("https://soniox.com/docs/api-reference/errors#{anchor}"),
            request_id: request_id.to_owned(),
        }
    }

    /// The frame for this error, as JSON text.
    pub fn to_json(&self, request_id: &str) -> String {
        // A struct of strings and a number always serializes.
        serde_json::to_string(&self.to_frame(request_id)).unwrap_or_default()
    }
}

impl From<ErrorFrame> for ApiError {
    fn from(frame: ErrorFrame) -> ApiError {
        ApiError::new(frame.error_code, frame.error_type, frame.error_message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    #[test]
    fn error_frames_link_their_type() {
        let frame: Value = serde_json::from_str(&ApiError::invalid_model().to_json("r")).unwrap();
        assert_eq!(frame["error_type"], "model_not_available");
        assert_eq!(
            frame["more_info"],
            "https://soniox.com/docs/api-reference/errors#model-not-available"
        );
        assert_eq!(frame["request_id"], "r");
        assert_eq!(error_type_for(429), "limit_exceeded");
        assert_eq!(error_type_for(599), "internal_error");
    }

    #[test]
    fn frames_read_back() {
        let text = ApiError::with_code(503, MSG_CANNOT_CONTINUE).to_json("x");
        let frame: ErrorFrame = serde_json::from_str(&text).unwrap();
        assert_eq!(
            ApiError::from(frame),
            ApiError::new(503, "service_unavailable", MSG_CANNOT_CONTINUE)
        );
    }
}
