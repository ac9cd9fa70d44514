//! Responses: tokens and progress, the last one `finished`, or an error
//! frame instead.

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// One token of a response, with Soniox's field names.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Token {
    /// The text, with its leading space: concatenate as-is.
    pub text: String,
    /// Start in ms from the session's first audio; absent on translations
    /// and markers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ms: Option<u64>,
    /// End in ms from the session's first audio.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_ms: Option<u64>,
    /// Recognition confidence, 0 to 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Whether the token is final (sent once, never changes).
    pub is_final: bool,
    /// Speaker label (`"1"`, `"2"`, …) with diarization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub speaker: Option<String>,
    /// Language code with language identification or translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
    /// `none`, `original` or `translation` with translation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub translation_status: Option<String>,
    /// The spoken language of a translated token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_language: Option<String>,
}

/// A response: the newly final tokens first (with `<end>`/`<fin>` markers
/// among them), then the complete current non-final set.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Response {
    /// The tokens.
    #[serde(default)]
    pub tokens: Vec<Token>,
    /// Audio processed into final tokens, ms.
    #[serde(default)]
    pub final_audio_proc_ms: u64,
    /// Audio processed into final and non-final tokens, ms.
    #[serde(default)]
    pub total_audio_proc_ms: u64,
    /// The last response of a session: nothing follows.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub finished: bool,
}

impl Response {
    /// The response as JSON text.
    pub fn to_json(&self) -> String {
        // Strings, numbers and booleans always serialize.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Any message a server sends after the start request: a response or an
/// error frame, told apart by `error_code`/`error_message`. (Its fields are
/// spelled out rather than flattened from [`Response`]: serde's flatten
/// buffers every message, and this is read for each one.)
#[derive(Debug, Deserialize)]
pub struct ServerMessage {
    #[serde(default)]
    tokens: Vec<Token>,
    #[serde(default)]
    final_audio_proc_ms: u64,
    #[serde(default)]
    total_audio_proc_ms: u64,
    #[serde(default)]
    finished: bool,
    error_code: Option<u16>,
    error_type: Option<String>,
    error_message: Option<String>,
    /// sttpipe's extension ([`crate::extension`]), from a gateway; read
    /// leniently, since Soniox clients ignore it whatever it holds.
    #[serde(default)]
    sttpipe: Option<serde_json::Value>,
}

impl ServerMessage {
    /// The queue position a gateway reports, if this is its queued frame.
    pub fn queued_position(&self) -> Option<u64> {
        self.sttpipe
            .as_ref()?
            .get("queued")?
            .get("position")?
            .as_u64()
    }

    /// The response, or the error the frame carries.
    pub fn into_result(self) -> Result<Response, ApiError> {
        if self.error_code.is_none() && self.error_message.is_none() {
            return Ok(Response {
                tokens: self.tokens,
                final_audio_proc_ms: self.final_audio_proc_ms,
                total_audio_proc_ms: self.total_audio_proc_ms,
                finished: self.finished,
            });
        }
        let code = self.error_code.unwrap_or(0);
        Err(ApiError {
            code,
            error_type: self
                .error_type
                .map_or(crate::error::error_type_for(code).into(), Into::into),
            message: self.error_message.unwrap_or_default(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> Result<Response, ApiError> {
        serde_json::from_str::<ServerMessage>(text)
            .unwrap()
            .into_result()
    }

    #[test]
    fn responses_and_errors_are_told_apart() {
        let response = Response {
            tokens: vec![Token {
                text: " Hello".into(),
                start_ms: Some(600),
                end_ms: Some(760),
                confidence: Some(0.97),
                is_final: true,
                ..Token::default()
            }],
            final_audio_proc_ms: 760,
            total_audio_proc_ms: 900,
            finished: false,
        };
        let text = response.to_json();
        assert_eq!(
            text,
            r#"{"tokens":[{"text":" Hello","start_ms":600,"end_ms":760,"confidence":0.97,"is_final":true}],"final_audio_proc_ms":760,"total_audio_proc_ms":900}"#
        );
        assert_eq!(message(&text), Ok(response));
        let error = message(
            r#"{"error_code":401,"error_type":"unauthenticated","error_message":"Invalid API key.","request_id":"x"}"#,
        )
        .unwrap_err();
        assert_eq!(
            error,
            ApiError::new(401, "unauthenticated", "Invalid API key.")
        );
        assert!(
            message(r#"{"tokens":[],"finished":true}"#)
                .unwrap()
                .finished
        );
    }
}
