//! The Soniox side of a session's start and end: a start request read as
//! the session's options (the same schema and resolution as every other
//! client's), the reference id a gateway's client streams under, and the
//! Soniox error frame for whatever ended a session.

use serde_json::Value;

use soniox_wire::{ApiError, Bounds, StartRequest, Translation};

use crate::cli::session_args::StartField;
use crate::cli::{ContextArg, SessionArgs};
use crate::config::resolve;
use crate::daemon::launch::Refusal;
use crate::error::Error;

/// The Soniox error frame for an error that ended a session.
pub(super) fn api_error(err: &Error) -> ApiError {
    match err {
        // The daemon's own key was refused upstream: the client's key is
        // fine, so a 401 would send it chasing the wrong problem.
        Error::Service { code: 401, .. } => ApiError::with_code(
            500,
            "The daemon's upstream API key was rejected by the service.",
        ),
        Error::Service {
            code,
            error_type,
            message,
        } => match error_type {
            Some(error_type) => ApiError::new(*code, error_type.clone(), message.clone()),
            None => ApiError::with_code(*code, message.clone()),
        },
        Error::RetryBudgetSpent { last, .. } if matches!(**last, Error::Service { .. }) => {
            api_error(last)
        }
        Error::Busy(_) => ApiError::with_code(429, err.to_string()),
        Error::Forbidden(_) => ApiError::with_code(403, err.to_string()),
        Error::Usage(_) | Error::BadAudio(_) => ApiError::bad_request(err.to_string()),
        Error::Connect { .. }
        | Error::Disconnected(_)
        | Error::Stalled(_)
        | Error::RetryBudgetSpent { .. } => ApiError::with_code(503, err.to_string()),
        _ => ApiError::with_code(500, err.to_string()),
    }
}

/// The Soniox error frame for a session that was not started.
pub(super) fn refusal_error(refusal: &Refusal) -> ApiError {
    match refusal {
        Refusal::Error(err) => api_error(err),
        Refusal::Stopping => ApiError::with_code(
            503,
            "The server is shutting down. Please restart the request.",
        ),
    }
}

/// The frame for an `error` event, when the error itself is not at hand.
pub(super) fn api_error_from_event(code: &str, status: Option<u16>, message: &str) -> ApiError {
    let status = status.unwrap_or(match code {
        "busy" => 429,
        "forbidden" => 403,
        "usage" | "bad_audio" => 400,
        "connect" | "disconnected" | "stalled" | "retry_budget" => 503,
        _ => 500,
    });
    ApiError::with_code(status, message)
}

/// The layouts the daemon takes for raw formats (as for the filter's
/// `--rate` and `--channels`).
pub(super) const BOUNDS: Bounds = Bounds {
    sample_rate: 1..=resolve::MAX_RATE,
    channels: 1..=resolve::MAX_CHANNELS,
};

/// A start request as the session's options: the same schema as the
/// filter's flags and the socket header, resolved by the same function. A
/// Soniox client wants the non-final tokens unless it opted out, and knows
/// nothing of engines (the daemon's own serve).
///
/// Every field goes upstream as the client sent it, the ones sttpipe does
/// not name as start fields, except what the daemon owns: `api_key` (the
/// daemon's own key authenticates upstream, in the header) and
/// `enable_non_final_tokens` (the session core always reads the non-final
/// tokens: containers are paced by the progress they bring; the client's
/// value decides only whether it is sent them). A value the daemon checks
/// and cannot hold (a level that is not a small whole number) becomes one
/// that resolution refuses.
pub(super) fn session_args(start: &StartRequest) -> SessionArgs {
    let defaults = SessionArgs::default();
    let (translate_to, translate) = match &start.translation {
        Some(Translation::OneWay { target_language }) => (Some(target_language.clone()), None),
        Some(Translation::TwoWay {
            language_a,
            language_b,
        }) => (None, Some(format!("{language_a}:{language_b}"))),
        None => (None, None),
    };
    SessionArgs {
        audio_format: start.audio_format.clone(),
        rate: start.sample_rate.unwrap_or(defaults.rate),
        channels: start.num_channels.unwrap_or(defaults.channels),
        partials: start.enable_non_final_tokens.unwrap_or(true),
        model: start.model.clone(),
        language_hints: start.language_hints.clone(),
        language_hints_strict: start.language_hints_strict.unwrap_or(false),
        context: start.context.as_ref().map(|context| match context {
            // A string that names a file is refused as from any client.
            Value::String(text) => match text.strip_prefix('@') {
                Some(path) => ContextArg::File(path.into()),
                None => ContextArg::Text(text.clone()),
            },
            Value::Object(map) => ContextArg::Structured(map.clone()),
            other => ContextArg::Text(other.to_string()),
        }),
        diarize: start.enable_speaker_diarization.unwrap_or(false),
        language_id: start.enable_language_identification.unwrap_or(false),
        endpoint_detection: start.enable_endpoint_detection.unwrap_or(false),
        max_endpoint_delay_ms: start
            .max_endpoint_delay_ms
            .map(|ms| u32::try_from(ms).unwrap_or(u32::MAX)),
        endpoint_sensitivity: start.endpoint_sensitivity,
        endpoint_latency_adjustment_level: start.endpoint_latency_adjustment_level.as_ref().map(
            |level| {
                soniox_wire::fields::whole(level)
                    .and_then(|l| u8::try_from(l).ok())
                    .unwrap_or(u8::MAX)
            },
        ),
        translate_to,
        translate,
        client_reference_id: start.client_reference_id.clone(),
        start_field: start
            .extra
            .iter()
            .map(|(key, value)| StartField {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        engine: None,
        fallback: None,
    }
}

/// The `client_reference_id` a named client's session streams under, so
/// that Soniox's usage logs attribute its cost: `gateway/NAME/ID`, ID being
/// the client's own reference id if it sent one, else the session's id;
/// cut to Soniox's limit (the name is never cut: the prefix is at most 73
/// characters).
pub(super) fn reference_id(name: &str, theirs: Option<&str>, session_id: &str) -> String {
    let id = format!("gateway/{name}/{}", theirs.unwrap_or(session_id));
    id.chars()
        .take(resolve::MAX_CLIENT_REFERENCE_CHARS)
        .collect()
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::config::resolve::Origin;

    /// A start request as the daemon reads it: shapes, then the session
    /// options resolved as any client's.
    fn start(value: Value) -> Result<(StartRequest, crate::config::SessionRequest), ApiError> {
        let Value::Object(map) = value else {
            panic!("an object")
        };
        let start = StartRequest::read(map, &BOUNDS)?;
        let request =
            resolve::session(&session_args(&start), Origin::Client).map_err(|e| api_error(&e))?;
        Ok((start, request))
    }

    fn message(value: Value) -> String {
        start(value).expect_err("an error").message
    }

    #[test]
    fn start_requests_become_session_settings() {
        let (parsed, request) = start(json!({
            "api_key": "client-key",
            "model": "stt-rt-v5",
            "audio_format": "s16le",
            "sample_rate": 48000,
            "num_channels": 2,
            "language_hints": ["en", "de"],
            "language_hints_strict": true,
            "context": {"terms": ["Celebrex"]},
            "enable_speaker_diarization": true,
            "enable_language_identification": null,
            "enable_endpoint_detection": true,
            "max_endpoint_delay_ms": 800,
            "translation": {"type": "two_way", "language_a": "en", "language_b": "es"},
            "client_reference_id": "demo-1",
        }))
        .unwrap();
        assert_eq!(
            request.audio,
            crate::audio::AudioFormat::raw("pcm_s16le", 48_000, 2)
        );
        assert!(request.partials);
        assert_eq!(request.engines, crate::config::EngineRequest::default());
        let r = &request.recognition;
        assert_eq!(r.language_hints, ["en", "de"]);
        assert!(r.language_hints_strict && r.diarize && !r.language_id && r.endpoint_detection);
        assert_eq!(r.max_endpoint_delay_ms, Some(800));
        assert_eq!(r.client_reference_id.as_deref(), Some("demo-1"));
        // What goes upstream is what came in, minus the key.
        let again = crate::engine::soniox::start_request(r, &request.audio);
        assert_eq!(again.audio_format, "pcm_s16le");
        assert_eq!(again.translation, parsed.translation);
        assert_eq!(again.context, Some(json!({"terms": ["Celebrex"]})));
        assert_eq!(again.api_key, None);
        assert!(!format!("{parsed:?}").contains("client-key"));

        let (_, mp3) =
            start(json!({"model": "stt-rt-v5", "audio_format": "mp3", "sample_rate": null}))
                .unwrap();
        assert_eq!(mp3.audio, crate::audio::AudioFormat::container("mp3"));
        let (_, legacy) =
            start(json!({"model": "m", "audio_format": "auto", "enable_non_final_tokens": false}))
                .unwrap();
        assert!(!legacy.partials);
    }

    #[test]
    fn every_field_but_the_key_goes_upstream_as_sent() {
        let sent = json!({
            "model": "stt-rt-v6",
            "audio_format": "pcm_s16le",
            "sample_rate": 16000,
            "num_channels": 1,
            "enable_endpoint_detection": true,
            "endpoint_sensitivity": -0.75,
            "endpoint_latency_adjustment_level": 3,
            "enable_agent_text_input": true,
            "future_option": {"nested": [1, null, "x"]},
        });
        let mut with_key = sent.clone();
        with_key["api_key"] = json!("client-key");
        with_key["enable_non_final_tokens"] = json!(true);
        let (_, request) = start(with_key).unwrap();
        let upstream =
            crate::engine::soniox::start_request(&request.recognition, &request.audio).to_json();
        assert_eq!(serde_json::from_str::<Value>(&upstream).unwrap(), sent);
        for bad in [json!(1.5), json!(4), json!(-1), json!(1e10)] {
            let mut v = sent.clone();
            v["endpoint_latency_adjustment_level"] = bad.clone();
            assert!(
                message(v).contains("--endpoint-latency-adjustment-level"),
                "{bad}"
            );
        }
        let mut v = sent.clone();
        v["endpoint_sensitivity"] = json!(2);
        assert!(message(v).contains("out of range"));
    }

    #[test]
    fn bad_start_requests_get_sonioxs_messages() {
        let base = |extra: Value| {
            let mut v = json!({"model": "stt-rt-v5", "audio_format": "pcm_s16le", "sample_rate": 16000, "num_channels": 1});
            for (k, x) in extra.as_object().unwrap() {
                v[k] = x.clone();
            }
            v
        };
        assert_eq!(
            message(json!({"model": "stt-rt-v5"})),
            soniox_wire::error::MSG_MISSING_FORMAT
        );
        assert_eq!(
            message(base(json!({"audio_format": "avi"}))),
            "Invalid audio data format: avi"
        );
        assert_eq!(
            message(base(json!({"sample_rate": null}))),
            "Audio data sample rate must be specified for PCM formats"
        );
        assert_eq!(
            message(base(json!({"num_channels": 0}))),
            "Audio data channels must be specified for PCM formats"
        );
        assert_eq!(
            message(base(json!({"model": null}))),
            "Invalid model specified."
        );
        assert_eq!(
            message(base(json!({"language_hints": "en"}))),
            "Start request is malformed."
        );
        assert_eq!(
            message(base(json!({"enable_endpoint_detection": "yes"}))),
            "Start request is malformed."
        );
        assert_eq!(
            message(base(json!({"api_key": 5}))),
            "Start request is malformed."
        );
        assert_eq!(
            message(base(json!({"translation": {"type": "one_way"}}))),
            "Invalid translation target language."
        );
        assert_eq!(
            message(base(json!({"context": 3}))),
            "Start request is malformed."
        );
        // A context that names a file is refused, whether or not it exists.
        let exists = message(base(json!({"context": "@/etc/hostname"})));
        let missing = message(base(json!({"context": "@/nonexistent/file"})));
        assert_eq!(exists, missing);
        assert!(exists.contains("@FILE"), "{exists}");
    }

    #[test]
    fn named_clients_stream_under_their_name() {
        assert_eq!(reference_id("ha", None, "1a-3"), "gateway/ha/1a-3");
        assert_eq!(
            reference_id("ha", Some("call-7"), "1a-3"),
            "gateway/ha/call-7"
        );
        let long = reference_id("ha", Some(&"é".repeat(300)), "x");
        assert_eq!(long.chars().count(), 256);
        assert!(long.starts_with("gateway/ha/é"));
    }

    #[test]
    fn errors_map_to_soniox_frames() {
        let service = Error::Service {
            code: 503,
            error_type: Some("service_unavailable".into()),
            message: "Cannot continue request (code 4).".into(),
        };
        let frame: Value = serde_json::from_str(&api_error(&service).to_json("r1")).unwrap();
        assert_eq!(frame["error_code"], 503);
        assert_eq!(frame["error_message"], "Cannot continue request (code 4).");
        assert_eq!(
            frame["more_info"],
            "https://soniox.com/docs/api-reference/errors#service-unavailable"
        );
        assert_eq!(frame["request_id"], "r1");
        let busy = api_error(&Error::Busy("full".into()));
        assert_eq!(
            (busy.code, busy.error_type.as_ref()),
            (429, "limit_exceeded")
        );
        let forbidden = api_error(&Error::Forbidden("no".into()));
        assert_eq!(
            (forbidden.code, forbidden.error_type.as_ref()),
            (403, "permission_denied")
        );
        let usage = api_error(&Error::Usage("bad".into()));
        assert_eq!(
            (usage.code, usage.error_type.as_ref()),
            (400, "invalid_request")
        );
        let upstream_key = Error::Service {
            code: 401,
            error_type: None,
            message: "Invalid API key.".into(),
        };
        assert_eq!(
            api_error(&upstream_key).code,
            500,
            "the daemon's key, not the client's"
        );
        assert_eq!(api_error_from_event("busy", None, "x").code, 429);
        assert_eq!(api_error_from_event("service", Some(402), "x").code, 402);
    }
}
