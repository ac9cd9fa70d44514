//! Resolved configuration: what the command line (or, later, a daemon
//! client's header) means once checked.
//!
//! [`RecognitionOptions`] are the engine-independent session options; their
//! field names are the flags' names, so a daemon header can use the same
//! words. [`ServiceConfig`] says where the Soniox engine connects and with
//! which key. The key is held in [`ApiKey`], whose `Debug` never shows it.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::audio::{self, AudioFormat};
use crate::cli::Opts;
use crate::error::{Error, Result};
use crate::input::{InputOptions, Source};

/// The name of the key file systemd's `LoadCredential=` provides.
pub const CREDENTIAL_NAME: &str = "soniox-api-key";

/// Options that shape recognition, whatever the engine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RecognitionOptions {
    /// Model name.
    pub model: String,
    /// Expected languages.
    pub language_hints: Vec<String>,
    /// Restrict to the hinted languages.
    pub language_hints_strict: bool,
    /// Context: plain text or a structured object.
    pub context: Option<serde_json::Value>,
    /// Speaker labels.
    pub diarize: bool,
    /// Per-token language.
    pub language_id: bool,
    /// `<end>` at utterance ends.
    pub endpoint_detection: bool,
    /// Longest endpoint delay, ms.
    pub max_endpoint_delay_ms: Option<u32>,
    /// Translation, if any.
    pub translation: Option<Translation>,
    /// Usage-log id.
    pub client_reference_id: Option<String>,
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

/// An API key. Its `Debug` and `Display` are redacted so it cannot reach a
/// log by accident.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key (trimmed).
    pub fn new(key: &str) -> ApiKey {
        ApiKey(key.trim().to_owned())
    }

    /// The key itself, for the Authorization header only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

/// How fast time runs: `STTPIPE_PACE_FACTOR` (default 1) runs pacing and
/// every protocol timer that many times faster, so tests can stream an hour
/// in minutes. Audio timestamps are audio time and never scale.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Timing {
    /// Real-time speed-up; always finite and > 0.
    pub factor: f64,
}

impl Timing {
    /// Real time.
    pub const REAL: Timing = Timing { factor: 1.0 };

    /// The wall time that stands for `duration` of real time.
    pub fn wall(self, duration: Duration) -> Duration {
        duration.div_f64(self.factor)
    }

    /// Reads `STTPIPE_PACE_FACTOR`.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Timing> {
        match env("STTPIPE_PACE_FACTOR").filter(|v| !v.is_empty()) {
            None => Ok(Timing::REAL),
            Some(value) => match value.parse::<f64>() {
                Ok(factor) if factor.is_finite() && factor > 0.0 && factor <= 1000.0 => {
                    Ok(Timing { factor })
                }
                _ => Err(Error::Config(format!(
                    "STTPIPE_PACE_FACTOR must be a number above 0 and at most 1000, not {value:?}"
                ))),
            },
        }
    }
}

/// Where and how the Soniox engine connects.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// WebSocket URL.
    pub url: String,
    /// The key, sent as `Authorization: Bearer`.
    pub api_key: ApiKey,
    /// PEM file of trusted CAs replacing the built-in roots.
    pub ca_file: Option<PathBuf>,
    /// Time scale of the protocol timers (keepalive, half-open detection).
    pub timing: Timing,
}

/// How the session core treats its input and upstream.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// Recognition options for the engine.
    pub recognition: RecognitionOptions,
    /// The audio format sent.
    pub audio: AudioFormat,
    /// Output non-final tokens as `partial` events.
    pub partials: bool,
    /// Close the upstream session after this long without audio.
    pub idle_close: Option<Duration>,
    /// Bound on waiting for final tokens after a stop signal.
    pub drain_timeout: Duration,
    /// Largest lead over real time allowed to input that comes faster.
    pub max_lead: Duration,
    /// Audio kept for replay after a failure.
    pub replay_buffer: Duration,
    /// The service's cap on one upstream session; rotation comes before it.
    pub max_session: Duration,
    /// Longest outage before giving up.
    pub retry_budget: Duration,
    /// Time scale of pacing and every timer above.
    pub timing: Timing,
    /// The engine to go on with when the service fails for good.
    pub fallback: Option<crate::engine::Engine>,
}

/// Where the filter's audio goes.
#[derive(Debug)]
pub enum Target {
    /// Straight to Soniox.
    Soniox(ServiceConfig),
    /// The local engine: its files' directory (`None`: the default) and model.
    Local {
        /// `--model-dir`.
        model_dir: Option<PathBuf>,
        /// `--local-model`.
        model: crate::engine::local::LocalModel,
    },
    /// Through the sttpipe daemon at this socket, asking for these engines.
    Daemon(PathBuf, EngineRequest),
}

/// What a daemon client asks of the daemon's engines; what it leaves unset,
/// the daemon decides. The local engine's files and model are the daemon's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EngineRequest {
    /// `--engine`.
    pub engine: Option<crate::cli::EngineChoice>,
    /// `--fallback local`.
    pub fallback_local: bool,
}

/// Everything the filter needs, resolved from the command line.
#[derive(Debug)]
pub struct FilterConfig {
    /// Input source and declared format.
    pub input: InputOptions,
    /// Session settings (its audio format is settled once the input is sniffed).
    pub session: SessionConfig,
    /// Soniox directly, or a daemon.
    pub target: Target,
    /// Plain text instead of NDJSON.
    pub text_output: bool,
    /// `--fallback local`: the local engine's directory and model.
    pub fallback: Option<(Option<PathBuf>, crate::engine::local::LocalModel)>,
}

/// How far ahead of real time paced input may run (issue: "never more than 2 s").
pub const MAX_LEAD: Duration = Duration::from_secs(2);

impl FilterConfig {
    /// Resolves and checks the options. `env` looks up environment variables
    /// (a parameter so tests need not change the process environment).
    pub fn from_opts(opts: Opts, env: &dyn Fn(&str) -> Option<String>) -> Result<FilterConfig> {
        let timing = Timing::from_env(env)?;
        let session = SessionConfig::from_opts(&opts, timing)?;
        let format_explicit =
            opts.audio_format != "pcm_s16le" || opts.rate != 16_000 || opts.channels != 1;
        // Through a daemon, the daemon's key and endpoint serve.
        let engine = opts.engine.unwrap_or(crate::cli::EngineChoice::Soniox);
        let target = match (&opts.connect, engine) {
            (Some(socket), _) => Target::Daemon(
                socket.clone(),
                EngineRequest {
                    engine: opts.engine,
                    fallback_local: opts.fallback.is_some(),
                },
            ),
            (None, crate::cli::EngineChoice::Local) => Target::Local {
                model_dir: opts.model_dir.clone(),
                model: opts.local_model.parse()?,
            },
            (None, crate::cli::EngineChoice::Soniox) => Target::Soniox(ServiceConfig {
                url: resolve_url(opts.url.as_deref(), opts.region)?,
                api_key: load_api_key(opts.api_key_file.as_deref(), env)?,
                ca_file: opts.ca_file.clone(),
                timing,
            }),
        };
        Ok(FilterConfig {
            input: InputOptions {
                source: match opts.input {
                    Some(path) if path.as_os_str() != "-" => Source::Path(path),
                    _ => Source::Stdin,
                },
                format: session.audio.clone(),
                format_explicit,
                follow: opts.follow,
                chunk_ms: 100,
                container_chunk_bytes: 4096,
                queue_chunks: 16,
            },
            session,
            target,
            text_output: opts.format == crate::cli::OutputFormat::Text,
            // Through a daemon, the daemon's local engine serves.
            fallback: match opts.fallback.filter(|_| opts.connect.is_none()) {
                Some(crate::cli::FallbackChoice::Local) => {
                    Some((opts.model_dir.clone(), opts.local_model.parse()?))
                }
                None => None,
            },
        })
    }
}

impl SessionConfig {
    /// The session settings the filter's flags give (no key, no endpoint).
    /// The daemon builds a client's session from its header this way too.
    pub fn from_opts(opts: &Opts, timing: Timing) -> Result<SessionConfig> {
        if !(opts.drain_timeout.is_finite() && opts.drain_timeout >= 0.0) {
            return Err(Error::Usage(
                "--drain-timeout must be a number of seconds ≥ 0".into(),
            ));
        }
        if opts.max_session < 3 {
            return Err(Error::Usage(
                "--max-session must be at least 3 seconds".into(),
            ));
        }
        Ok(SessionConfig {
            recognition: resolve_recognition(opts)?,
            audio: resolve_format(opts)?,
            partials: opts.partials,
            idle_close: (opts.idle_close > 0).then(|| Duration::from_secs(opts.idle_close)),
            drain_timeout: Duration::from_secs_f64(opts.drain_timeout),
            max_lead: MAX_LEAD,
            replay_buffer: Duration::from_secs(opts.replay_buffer),
            max_session: Duration::from_secs(opts.max_session),
            retry_budget: Duration::from_secs(opts.retry_budget),
            timing,
            fallback: None,
        })
    }
}

/// The service URL: `url` if given and not empty, else the region's.
pub fn resolve_url(url: Option<&str>, region: crate::cli::Region) -> Result<String> {
    let url = url
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| region.url())
        .to_owned();
    if !(url.starts_with("ws://") || url.starts_with("wss://")) {
        return Err(Error::Usage(format!(
            "--url must be a ws:// or wss:// URL, not {url:?}"
        )));
    }
    Ok(url)
}

fn resolve_format(opts: &Opts) -> Result<AudioFormat> {
    let name = opts.audio_format.as_str();
    if !audio::is_known_format(name) {
        return Err(Error::Usage(format!(
            "unknown audio format {name:?} (try pcm_s16le, pcm_f32le, mulaw, alaw, wav, mp3, ogg, flac, webm or auto)"
        )));
    }
    if opts.rate == 0 || opts.rate > 384_000 {
        return Err(Error::Usage(format!(
            "--rate {} is out of range (1 to 384000 Hz)",
            opts.rate
        )));
    }
    if opts.channels == 0 || opts.channels > 32 {
        return Err(Error::Usage(format!(
            "--channels {} is out of range (1 to 32)",
            opts.channels
        )));
    }
    let raw = AudioFormat::raw(name, opts.rate, opts.channels);
    Ok(if raw.is_raw() {
        raw
    } else {
        AudioFormat::container(name)
    })
}

fn resolve_recognition(opts: &Opts) -> Result<RecognitionOptions> {
    for hint in &opts.language_hints {
        if !is_language_code(hint) {
            return Err(Error::Usage(format!(
                "--language-hints: {hint:?} is not a language code like en or de"
            )));
        }
    }
    if let Some(ms) = opts.max_endpoint_delay_ms
        && !(500..=3000).contains(&ms)
    {
        return Err(Error::Usage(format!(
            "--max-endpoint-delay-ms {ms} is out of range (500 to 3000)"
        )));
    }
    let translation = match (&opts.translate_to, &opts.translate) {
        (Some(target), _) => {
            check_language("--translate-to", target)?;
            Some(Translation::OneWay {
                target_language: target.clone(),
            })
        }
        (None, Some(pair)) => {
            let (a, b) = pair.split_once(':').ok_or_else(|| {
                Error::Usage(format!(
                    "--translate takes two languages as A:B, not {pair:?}"
                ))
            })?;
            check_language("--translate", a)?;
            check_language("--translate", b)?;
            Some(Translation::TwoWay {
                language_a: a.to_owned(),
                language_b: b.to_owned(),
            })
        }
        (None, None) => None,
    };
    if let Some(id) = &opts.client_reference_id
        && id.chars().count() > 256
    {
        return Err(Error::Usage(
            "--client-reference-id is longer than 256 characters".into(),
        ));
    }
    Ok(RecognitionOptions {
        model: opts.model.clone(),
        language_hints: opts.language_hints.clone(),
        language_hints_strict: opts.language_hints_strict,
        context: opts.context.as_deref().map(resolve_context).transpose()?,
        diarize: opts.diarize,
        language_id: opts.language_id,
        endpoint_detection: opts.endpoint_detection || opts.max_endpoint_delay_ms.is_some(),
        max_endpoint_delay_ms: opts.max_endpoint_delay_ms,
        translation,
        client_reference_id: opts.client_reference_id.clone(),
    })
}

fn is_language_code(code: &str) -> bool {
    (2..=3).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_lowercase())
}

fn check_language(flag: &str, code: &str) -> Result<()> {
    if is_language_code(code) {
        Ok(())
    } else {
        Err(Error::Usage(format!(
            "{flag}: {code:?} is not a language code like en or de"
        )))
    }
}

/// `--context TEXT|@FILE`: a JSON object is sent as structured context,
/// anything else as text.
fn resolve_context(arg: &str) -> Result<serde_json::Value> {
    let text = match arg.strip_prefix('@') {
        Some(path) => std::fs::read_to_string(path)
            .map_err(|e| Error::Config(format!("cannot read context file {path}: {e}")))?,
        None => arg.to_owned(),
    };
    match serde_json::from_str::<serde_json::Value>(&text) {
        Ok(value @ serde_json::Value::Object(_)) => Ok(value),
        _ => Ok(serde_json::Value::String(text.trim_end().to_owned())),
    }
}

/// Finds the API key: `--api-key-file`, then `SONIOX_API_KEY`, then the
/// systemd credential. Never from argv, where `ps` would show it.
pub fn load_api_key(file: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<ApiKey> {
    if let Some(path) = file {
        return read_key_file(path);
    }
    if let Some(key) = env("SONIOX_API_KEY").filter(|k| !k.trim().is_empty()) {
        return Ok(ApiKey::new(&key));
    }
    if let Some(dir) = env("CREDENTIALS_DIRECTORY") {
        let path = Path::new(&dir).join(CREDENTIAL_NAME);
        if path.exists() {
            return read_key_file(&path);
        }
    }
    Err(Error::Config(
        "no API key: set SONIOX_API_KEY or use --api-key-file PATH".into(),
    ))
}

fn read_key_file(path: &Path) -> Result<ApiKey> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Error::Config(format!("cannot read API key file {}: {e}", path.display())))?;
    let key = text.lines().next().unwrap_or("").trim();
    if key.is_empty() {
        return Err(Error::Config(format!(
            "API key file {} is empty",
            path.display()
        )));
    }
    Ok(ApiKey::new(key))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(args: &[&str]) -> Result<FilterConfig> {
        let mut argv = vec!["sttpipe"];
        argv.extend_from_slice(args);
        let opts = Opts::try_parse_from(argv).map_err(|e| Error::Usage(e.to_string()))?;
        FilterConfig::from_opts(opts, &|name| {
            (name == "SONIOX_API_KEY").then(|| "k".to_owned())
        })
    }

    #[test]
    fn defaults_are_pcm_s16le_16k_mono() {
        let config = parse(&[]).unwrap();
        assert_eq!(config.session.audio, AudioFormat::default_pcm());
        assert!(!config.input.format_explicit);
        let Target::Soniox(service) = &config.target else {
            panic!("no --connect: straight to Soniox")
        };
        assert_eq!(service.url, "wss://stt-rt.soniox.com/transcribe-websocket");
        assert_eq!(config.session.recognition.model, "stt-rt-v5");
    }

    #[test]
    fn flags_resolve() {
        let config = parse(&[
            "--language-hints",
            "en,de",
            "--translate",
            "en:es",
            "--context",
            "{\"terms\":[\"x\"]}",
            "--max-endpoint-delay-ms",
            "800",
            "--region",
            "eu",
            "--audio-format",
            "mp3",
        ])
        .unwrap();
        let r = &config.session.recognition;
        assert_eq!(r.language_hints, ["en", "de"]);
        assert!(r.endpoint_detection);
        assert_eq!(r.context, Some(serde_json::json!({"terms": ["x"]})));
        assert_eq!(
            r.translation,
            Some(Translation::TwoWay {
                language_a: "en".into(),
                language_b: "es".into()
            })
        );
        let Target::Soniox(service) = &config.target else {
            panic!("no --connect: straight to Soniox")
        };
        assert!(service.url.contains(".eu."));
        assert!(!config.session.audio.is_raw());
    }

    #[test]
    fn bad_values_are_usage_errors() {
        for args in [
            &["--audio-format", "avi"][..],
            &["--translate", "en"],
            &["--max-endpoint-delay-ms", "100"],
            &["--language-hints", "English"],
            &["--url", "http://x"],
            &["--rate", "0"],
        ] {
            assert!(matches!(parse(args), Err(Error::Usage(_))), "{args:?}");
        }
    }

    #[test]
    fn key_sources_in_order() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(CREDENTIAL_NAME), "cred-key\n").unwrap();
        let dir_str = dir.path().to_str().unwrap().to_owned();
        let creds_only = |name: &str| (name == "CREDENTIALS_DIRECTORY").then(|| dir_str.clone());
        assert_eq!(
            load_api_key(None, &creds_only).unwrap().expose(),
            "cred-key"
        );
        let env_key = |name: &str| match name {
            "SONIOX_API_KEY" => Some("env-key".to_owned()),
            _ => creds_only(name),
        };
        assert_eq!(load_api_key(None, &env_key).unwrap().expose(), "env-key");
        let file = dir.path().join("k");
        std::fs::write(&file, "file-key\nignored").unwrap();
        assert_eq!(
            load_api_key(Some(&file), &env_key).unwrap().expose(),
            "file-key"
        );
        assert!(matches!(
            load_api_key(None, &|_| None),
            Err(Error::Config(_))
        ));
        assert_eq!(format!("{:?}", ApiKey::new("secret")), "ApiKey(<redacted>)");
    }
}
