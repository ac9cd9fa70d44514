//! What Wyoming's events mean to sttpipe: `transcribe` and `audio-start`
//! as the session's [`SessionArgs`] (resolved afterwards as any client's,
//! [`crate::config::resolve::Origin::Client`]), an audio layout checked, and
//! the `info` that describes the daemon. The table is in
//! sttpipe-protocol(7).

use serde_json::{Map, Value, json};

use super::pcm::WIDTHS;
use crate::cli::values::{EngineChoice, LocalModel};
use crate::cli::{ContextArg, SessionArgs};
use crate::config::resolve::{MAX_CHANNELS, MAX_CONTEXT_CHARS, MAX_RATE};
use crate::daemon::engines::EngineSummary;
use crate::error::{Error, Result};

/// The languages Soniox's real-time models take, for `info`: Home
/// Assistant offers an engine only for the languages its models list.
const SONIOX_LANGUAGES: &[&str] = &[
    "af", "sq", "ar", "az", "eu", "be", "bn", "bs", "bg", "ca", "zh", "hr", "cs", "da", "nl", "en",
    "et", "fi", "fr", "gl", "de", "el", "gu", "he", "hi", "hu", "id", "it", "ja", "kn", "kk", "ko",
    "lv", "lt", "mk", "ms", "ml", "mr", "no", "fa", "pl", "pt", "pa", "ro", "ru", "sr", "sk", "sl",
    "es", "sw", "sv", "tl", "ta", "te", "th", "tr", "uk", "ur", "vi", "cy",
];

/// The endpoint delay for each `vad_sensitivity`, when Soniox's endpoint
/// ends the turn; `default` (or none) leaves Soniox's own.
fn endpoint_delay_ms(sensitivity: &str) -> Option<u32> {
    match sensitivity {
        "aggressive" => Some(500),
        "relaxed" => Some(3000),
        _ => None,
    }
}

/// A `transcribe` event: what the client asks of the next transcription.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Transcribe {
    /// `language`: one language, as Home Assistant names it (`en`, `en-US`).
    pub(crate) language: Option<String>,
    /// `vad_sensitivity`: `default`, `relaxed`, `aggressive`.
    pub(crate) vad_sensitivity: Option<String>,
    /// `transcript_names`, then `transcript_terms`, then `context.terms`:
    /// in priority order.
    pub(crate) terms: Vec<String>,
    /// `context.text`.
    pub(crate) context_text: Option<String>,
}

impl Transcribe {
    /// Reads a `transcribe` event's data. `name` (a model) is not read: the
    /// daemon lists one model and runs it.
    pub(crate) fn read(data: &Map<String, Value>) -> Result<Transcribe> {
        let text = |key: &str| -> Result<Option<String>> {
            match data.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(Error::Usage(format!("transcribe: {key} must be a string"))),
            }
        };
        let list = |value: Option<&Value>, key: &str| -> Result<Vec<String>> {
            match value {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => items
                    .iter()
                    .map(|item| match item {
                        Value::String(s) => Ok(s.clone()),
                        _ => Err(Error::Usage(format!("transcribe: {key} must be strings"))),
                    })
                    .collect(),
                Some(_) => Err(Error::Usage(format!("transcribe: {key} must be a list"))),
            }
        };
        let context = match data.get("context") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(map)) => map.clone(),
            Some(_) => return Err(Error::Usage("transcribe: context must be an object".into())),
        };
        let mut terms = list(data.get("transcript_names"), "transcript_names")?;
        terms.extend(list(data.get("transcript_terms"), "transcript_terms")?);
        terms.extend(list(context.get("terms"), "context.terms")?);
        let context_text = match context.get("text") {
            Some(Value::String(s)) if !s.trim().is_empty() => Some(s.clone()),
            _ => None,
        };
        Ok(Transcribe {
            language: text("language")?,
            vad_sensitivity: text("vad_sensitivity")?,
            terms,
            context_text,
        })
    }
}

/// An `audio-start` or `audio-chunk`'s layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Layout {
    /// `rate`, Hz.
    pub(crate) rate: u32,
    /// `width`, bytes a sample.
    pub(crate) width: u16,
    /// `channels`.
    pub(crate) channels: u16,
}

impl Layout {
    /// Reads and checks `rate`, `width` and `channels`.
    pub(crate) fn read(data: &Map<String, Value>) -> Result<Layout> {
        let field = |key: &str, max: u64| -> Result<u64> {
            match data.get(key).and_then(Value::as_u64) {
                Some(n) if (1..=max).contains(&n) => Ok(n),
                Some(n) => Err(Error::Usage(format!(
                    "audio: {key} {n} is out of range (1 to {max})"
                ))),
                None => Err(Error::Usage(format!(
                    "audio: {key} must be a positive integer"
                ))),
            }
        };
        let narrow = |n: u64| u16::try_from(n).unwrap_or(u16::MAX);
        Ok(Layout {
            rate: u32::try_from(field("rate", u64::from(MAX_RATE))?).unwrap_or(MAX_RATE),
            width: narrow(field("width", u64::from(*WIDTHS.end()))?),
            channels: narrow(field("channels", u64::from(MAX_CHANNELS))?),
        })
    }
}

/// How this daemon's Wyoming front end answers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Style {
    /// Soniox's endpoint ends the turn (`--wyoming-endpointing`).
    pub(crate) endpointing: bool,
    /// transcript-start, -chunk and -stop go out.
    pub(crate) streaming: bool,
}

/// The session options for a transcription: `transcribe` (or its absence)
/// and the `audio-start` layout, as `pcm_s16le` with `channels` channels
/// (the client's, or 1 for a session that may run on the local engine).
pub(crate) fn session_args(
    transcribe: &Transcribe,
    layout: Layout,
    channels: u16,
    style: Style,
) -> SessionArgs {
    let language = transcribe.language.as_deref().map(primary_language);
    SessionArgs {
        rate: layout.rate,
        channels,
        // Partials cost the local engine decoding; chunks carry only final
        // words, which a client can append (a chunk is never taken back).
        partials: false,
        language_hints_strict: language.is_some(),
        language_hints: language.into_iter().collect(),
        context: context(transcribe),
        endpoint_detection: style.endpointing,
        max_endpoint_delay_ms: transcribe
            .vad_sensitivity
            .as_deref()
            .filter(|_| style.endpointing)
            .and_then(endpoint_delay_ms),
        ..SessionArgs::default()
    }
}

/// `en-US`, `en_US`, `EN` → `en`: Soniox's hints are ISO 639 codes.
fn primary_language(tag: &str) -> String {
    tag.split(['-', '_'])
        .next()
        .unwrap_or(tag)
        .trim()
        .to_ascii_lowercase()
}

/// Soniox's structured context: `text`, and `terms` in priority order,
/// without duplicates, as many as fit in Soniox's limit (a home with many
/// names should not lose its voice commands to it).
fn context(transcribe: &Transcribe) -> Option<ContextArg> {
    let text = transcribe.context_text.as_ref();
    // `{"text":…,"terms":[]}`, in characters of its JSON.
    let mut size = 13
        + text.map_or(0, |t| {
            Value::from(t.as_str()).to_string().chars().count() + 8
        });
    if size > MAX_CONTEXT_CHARS {
        // Over the limit on its own: resolution refuses it with the reason.
        let mut map = Map::new();
        map.insert("text".into(), json!(text));
        return Some(ContextArg::Structured(map));
    }
    let mut terms: Vec<&str> = Vec::new();
    for term in &transcribe.terms {
        let term = term.trim();
        if term.is_empty() || terms.contains(&term) {
            continue;
        }
        let cost = Value::from(term).to_string().chars().count() + 1;
        if size + cost > MAX_CONTEXT_CHARS {
            tracing::debug!(
                kept = terms.len(),
                "terms past Soniox's context limit left out"
            );
            break;
        }
        size += cost;
        terms.push(term);
    }
    let mut map = Map::new();
    if let Some(text) = text {
        map.insert("text".into(), json!(text));
    }
    if !terms.is_empty() {
        map.insert("terms".into(), json!(terms));
    }
    (!map.is_empty()).then_some(ContextArg::Structured(map))
}

/// The `info` answer: one ASR program, "sttpipe", with the model sessions
/// run by default.
pub(crate) fn info(engines: EngineSummary, style: Style) -> Value {
    let version = env!("CARGO_PKG_VERSION");
    let local = |model: LocalModel| format!("moonshine-{}", model.name());
    let (model, languages, attribution, description) = match (engines.default, engines.local_model)
    {
        (EngineChoice::Local, Some(model)) => (
            local(model),
            vec!["en"],
            json!({"name": "Moonshine (Useful Sensors)", "url": "https://github.com/usefulsensors/moonshine"}),
            format!(
                "sttpipe: the local engine, Moonshine {} on this machine",
                model.name()
            ),
        ),
        _ => {
            let model = crate::cli::session_args::DEFAULT_MODEL.to_owned();
            let fallback = match engines.local_model.filter(|_| engines.fallback) {
                Some(local_model) => format!(
                    ", falling back to Moonshine {} on this machine",
                    local_model.name()
                ),
                None => String::new(),
            };
            let description = format!("sttpipe: Soniox real-time, model {model}{fallback}");
            (
                model,
                SONIOX_LANGUAGES.to_vec(),
                json!({"name": "Soniox", "url": "https://soniox.com"}),
                description,
            )
        }
    };
    // The project has no public address yet; Wyoming wants a string.
    let sttpipe = json!({"name": "sttpipe", "url": ""});
    json!({
        "asr": [{
            "name": "sttpipe",
            "attribution": sttpipe,
            "installed": true,
            "description": description,
            "version": version,
            "models": [{
                "name": model,
                "attribution": attribution,
                "installed": true,
                "description": description,
                "version": null,
                "languages": languages,
            }],
            "supports_transcript_streaming": style.streaming,
            "requires_external_vad": !style.endpointing,
            "prefers_auto_gain_enabled": true,
            "prefers_noise_reduction_enabled": true,
        }],
        "tts": [],
        "handle": [],
        "intent": [],
        "wake": [],
        "mic": [],
        "snd": [],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::resolve::{self, Origin};

    fn transcribe(data: Value) -> Result<Transcribe> {
        let Value::Object(map) = data else {
            panic!("an object")
        };
        Transcribe::read(&map)
    }

    const STYLE: Style = Style {
        endpointing: false,
        streaming: true,
    };
    const LAYOUT: Layout = Layout {
        rate: 22_050,
        width: 2,
        channels: 2,
    };

    #[test]
    fn transcribe_becomes_a_clients_session() {
        let t = transcribe(json!({
            "name": "whatever",
            "language": "de-AT",
            "vad_sensitivity": "aggressive",
            "transcript_names": ["Küche", "Wohnzimmer"],
            "transcript_terms": ["Rollladen", "Küche", " "],
            "context": {"text": "smart home", "terms": ["Markise"], "conversation_id": "x"},
        }))
        .unwrap();
        let args = session_args(&t, LAYOUT, 2, STYLE);
        let request = resolve::session(&args, Origin::Client).unwrap();
        assert_eq!(
            request.audio,
            crate::audio::AudioFormat::raw("pcm_s16le", 22_050, 2)
        );
        let r = &request.recognition;
        assert_eq!(r.language_hints, ["de"]);
        assert!(r.language_hints_strict);
        assert!(
            !r.endpoint_detection && r.max_endpoint_delay_ms.is_none(),
            "the client's VAD ends turns"
        );
        let start = crate::engine::soniox::start_request(r, &request.audio);
        assert_eq!(
            start.context,
            Some(
                json!({"text": "smart home", "terms": ["Küche", "Wohnzimmer", "Rollladen", "Markise"]})
            )
        );

        let endpointing = Style {
            endpointing: true,
            ..STYLE
        };
        let args = session_args(&t, LAYOUT, 1, endpointing);
        let request = resolve::session(&args, Origin::Client).unwrap();
        assert!(request.recognition.endpoint_detection);
        assert_eq!(request.recognition.max_endpoint_delay_ms, Some(500));
        assert_eq!(request.audio.channels, Some(1));

        let bare = session_args(&Transcribe::default(), LAYOUT, 2, STYLE);
        let request = resolve::session(&bare, Origin::Client).unwrap();
        assert!(
            request.recognition.language_hints.is_empty()
                && !request.recognition.language_hints_strict
        );
        assert_eq!(request.recognition.context, None);
    }

    #[test]
    fn terms_are_cut_to_sonioxs_limit_names_first() {
        let names: Vec<String> = (0..5000).map(|i| format!("name {i}")).collect();
        let t =
            transcribe(json!({"transcript_names": names, "transcript_terms": ["late"]})).unwrap();
        let args = session_args(&t, LAYOUT, 2, STYLE);
        let request = resolve::session(&args, Origin::Client).expect("fits the limit");
        let context = request.recognition.context.unwrap();
        assert!(context.to_string().chars().count() <= MAX_CONTEXT_CHARS);
        let terms = context["terms"].as_array().unwrap();
        assert_eq!(terms[0], "name 0");
        assert!(
            terms.len() > 500 && !terms.contains(&json!("late")),
            "{}",
            terms.len()
        );
    }

    #[test]
    fn bad_values_are_refused() {
        for bad in [
            json!({"language": 5}),
            json!({"transcript_terms": "one"}),
            json!({"transcript_names": [1]}),
            json!({"context": "text"}),
            json!({"context": {"terms": "x"}}),
        ] {
            assert!(transcribe(bad.clone()).is_err(), "{bad}");
        }
        let t = transcribe(json!({"language": "klingon"})).unwrap();
        assert!(resolve::session(&session_args(&t, LAYOUT, 2, STYLE), Origin::Client).is_err());
        let layout = |data: Value| Layout::read(data.as_object().unwrap());
        assert_eq!(
            layout(json!({"rate": 16000, "width": 2, "channels": 1}))
                .unwrap()
                .rate,
            16_000
        );
        for bad in [
            json!({"rate": 0, "width": 2, "channels": 1}),
            json!({"rate": 16000, "width": 5, "channels": 1}),
            json!({"rate": 16000, "width": 2, "channels": 33}),
            json!({"rate": 16000.5, "width": 2, "channels": 1}),
            json!({"rate": 16000, "width": 2}),
        ] {
            assert!(layout(bad.clone()).is_err(), "{bad}");
        }
    }

    #[test]
    fn info_describes_the_default_engine() {
        let soniox = EngineSummary {
            default: EngineChoice::Soniox,
            local_model: Some(LocalModel::TinyEn),
            fallback: true,
        };
        let described = info(soniox, STYLE);
        let asr = &described["asr"][0];
        assert_eq!(asr["name"], "sttpipe");
        assert_eq!(asr["supports_transcript_streaming"], true);
        assert_eq!(asr["requires_external_vad"], true);
        let model = &asr["models"][0];
        assert_eq!(model["name"], crate::cli::session_args::DEFAULT_MODEL);
        assert!(
            model["languages"]
                .as_array()
                .unwrap()
                .contains(&json!("en"))
        );
        assert_eq!(model["languages"].as_array().unwrap().len(), 60);
        let description = asr["description"].as_str().unwrap();
        assert!(
            description.contains("Soniox")
                && description.contains(crate::cli::session_args::DEFAULT_MODEL),
            "{description}"
        );
        assert!(description.contains("Moonshine tiny-en"), "{description}");

        let local = EngineSummary {
            default: EngineChoice::Local,
            local_model: Some(LocalModel::BaseEn),
            fallback: false,
        };
        let described = info(
            local,
            Style {
                endpointing: true,
                streaming: false,
            },
        );
        let asr = &described["asr"][0];
        assert_eq!(asr["models"][0]["name"], "moonshine-base-en");
        assert_eq!(asr["models"][0]["languages"], json!(["en"]));
        assert_eq!(asr["requires_external_vad"], false);
        assert_eq!(asr["supports_transcript_streaming"], false);
    }
}
