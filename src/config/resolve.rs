//! From raw values to configuration: one resolution for every front end.
//!
//! [`session`] turns [`SessionArgs`] into a [`SessionRequest`], whoever
//! sent them: the filter's flags, a socket client's header, or a WebSocket
//! client's start request. Every range is checked here, once, with the
//! same messages. The [`Origin`] decides the one thing that differs: only
//! the command line may name a local file (`--context @FILE`); a client
//! that does gets the same refusal whether or not the file exists, and
//! nothing is opened.
//!
//! Start fields (`--start-field`, a WebSocket client's fields sttpipe does
//! not name) go to Soniox as given, except the key and the fields sttpipe
//! writes itself: those are refused with the flag that sets them, so the
//! written request never holds a key twice.

use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::{
    EngineRequest, FilterConfig, LocalEngineConfig, RecognitionOptions, ServiceConfig,
    SessionConfig, SessionLimits, SessionRequest, Target, Timing, Translation, load_api_key,
};
use crate::audio::{self, AudioFormat};
use crate::cli::session_args::StartField;
use crate::cli::values::{EngineChoice, FallbackChoice, Region};
use crate::cli::{ContextArg, LocalEngineArgs, Opts, ReliabilityArgs, SessionArgs};
use crate::error::{Error, Result};
use crate::input::{InputOptions, Source};
use crate::output::Format;

/// Soniox's longest context, in characters (of the JSON text, for an
/// object): a longer one is refused before connecting.
pub(crate) const MAX_CONTEXT_CHARS: usize = 10_000;
/// The most a context file may hold: four bytes a character, and room for
/// the white space of a JSON object.
const MAX_CONTEXT_FILE_BYTES: u64 = 64 * 1024;
/// Highest raw sample rate taken, Hz.
pub(crate) const MAX_RATE: u32 = 384_000;
/// Most raw channels taken.
pub(crate) const MAX_CHANNELS: u16 = 32;
/// Longest `client_reference_id`, in characters (Soniox's limit).
pub(crate) const MAX_CLIENT_REFERENCE_CHARS: usize = 256;

/// Who gave a session's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Origin {
    /// The user, on this machine's command line: may name local files.
    CommandLine,
    /// A client of the daemon: may not.
    Client,
}

/// Resolves and checks a session's options.
pub(crate) fn session(args: &SessionArgs, origin: Origin) -> Result<SessionRequest> {
    Ok(SessionRequest {
        recognition: recognition(args, origin)?,
        audio: format(&args.audio_format, args.rate, args.channels)?,
        partials: args.partials,
        engines: EngineRequest {
            engine: args.engine,
            fallback_local: args.fallback == Some(FallbackChoice::Local),
        },
    })
}

/// The context as sent: a file named on the command line is read here, so
/// what goes anywhere else (a daemon's header) is the text itself.
pub(crate) fn load_context(context: &ContextArg, origin: Origin) -> Result<ContextArg> {
    match (context, origin) {
        (ContextArg::File(path), Origin::CommandLine) => read_context_file(path),
        (ContextArg::File(_), Origin::Client) => Err(Error::Usage(
            "context: @FILE is read only from the command line; send the text itself".into(),
        )),
        (other, _) => Ok(other.clone()),
    }
}

fn read_context_file(path: &Path) -> Result<ContextArg> {
    let cannot = |e: std::io::Error| {
        Error::Config(format!("cannot read context file {}: {e}", path.display()))
    };
    let mut text = String::new();
    std::fs::File::open(path)
        .map_err(cannot)?
        .take(MAX_CONTEXT_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(cannot)?;
    if text.len() as u64 > MAX_CONTEXT_FILE_BYTES {
        return Err(Error::Usage(format!(
            "context file {} is larger than {MAX_CONTEXT_FILE_BYTES} bytes",
            path.display()
        )));
    }
    Ok(ContextArg::from_text(&text))
}

fn context_value(context: &ContextArg, origin: Origin) -> Result<Value> {
    let value = match load_context(context, origin)? {
        ContextArg::Text(text) => Value::String(text),
        ContextArg::Structured(map) => Value::Object(map),
        ContextArg::File(_) => {
            return Err(Error::Internal("a context file was not read".into()));
        }
    };
    let chars = match &value {
        Value::String(text) => text.chars().count(),
        other => other.to_string().chars().count(),
    };
    if chars > MAX_CONTEXT_CHARS {
        return Err(Error::Usage(format!(
            "the context has {chars} characters; Soniox takes at most {MAX_CONTEXT_CHARS}"
        )));
    }
    Ok(value)
}

/// An audio format by name, with a raw format's layout.
pub(crate) fn format(name: &str, rate: u32, channels: u16) -> Result<AudioFormat> {
    if !audio::is_known_format(name) {
        return Err(Error::Usage(format!(
            "unknown audio format {name:?} (try pcm_s16le, pcm_f32le, mulaw, alaw, wav, mp3, ogg, flac, webm or auto)"
        )));
    }
    if rate == 0 || rate > MAX_RATE {
        return Err(Error::Usage(format!(
            "--rate {rate} is out of range (1 to {MAX_RATE} Hz)"
        )));
    }
    if channels == 0 || channels > MAX_CHANNELS {
        return Err(Error::Usage(format!(
            "--channels {channels} is out of range (1 to {MAX_CHANNELS})"
        )));
    }
    let raw = AudioFormat::raw(name, rate, channels);
    Ok(if raw.is_raw() {
        raw
    } else {
        AudioFormat::container(name)
    })
}

fn recognition(args: &SessionArgs, origin: Origin) -> Result<RecognitionOptions> {
    for hint in &args.language_hints {
        check_language("--language-hints", hint)?;
    }
    if let Some(ms) = args.max_endpoint_delay_ms
        && !(500..=3000).contains(&ms)
    {
        return Err(Error::Usage(format!(
            "--max-endpoint-delay-ms {ms} is out of range (500 to 3000)"
        )));
    }
    let translation = match (&args.translate_to, &args.translate) {
        (Some(_), Some(_)) => {
            return Err(Error::Usage(
                "--translate-to and --translate cannot be used together".into(),
            ));
        }
        (Some(target), None) => {
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
    if let Some(x) = args.endpoint_sensitivity
        && !(-1.0..=1.0).contains(&x)
    {
        return Err(Error::Usage(format!(
            "--endpoint-sensitivity {x} is out of range (-1 to 1)"
        )));
    }
    if args
        .endpoint_latency_adjustment_level
        .is_some_and(|l| l > 3)
    {
        return Err(Error::Usage(
            "--endpoint-latency-adjustment-level must be 0, 1, 2 or 3".into(),
        ));
    }
    if let Some(id) = &args.client_reference_id
        && id.chars().count() > MAX_CLIENT_REFERENCE_CHARS
    {
        return Err(Error::Usage(format!(
            "--client-reference-id is longer than {MAX_CLIENT_REFERENCE_CHARS} characters"
        )));
    }
    Ok(RecognitionOptions {
        model: args.model.clone(),
        language_hints: args.language_hints.clone(),
        language_hints_strict: args.language_hints_strict,
        context: args
            .context
            .as_ref()
            .map(|c| context_value(c, origin))
            .transpose()?,
        diarize: args.diarize,
        language_id: args.language_id,
        endpoint_detection: args.endpoint_detection || args.max_endpoint_delay_ms.is_some(),
        max_endpoint_delay_ms: args.max_endpoint_delay_ms,
        endpoint_sensitivity: args.endpoint_sensitivity,
        endpoint_latency_adjustment_level: args.endpoint_latency_adjustment_level,
        translation,
        client_reference_id: args.client_reference_id.clone(),
        start_fields: start_fields(&args.start_field)?,
    })
}

/// The start fields as one object: each key once, none that sttpipe
/// writes itself.
fn start_fields(fields: &[StartField]) -> Result<Map<String, Value>> {
    let mut map = Map::new();
    for StartField { key, value } in fields {
        let named = soniox_wire::start::NAMED_FIELDS.contains(&key.as_str());
        if let Some(why) = refusal(key).or(named.then_some("sttpipe sets this field itself")) {
            return Err(Error::Usage(format!("--start-field {key}: {why}")));
        }
        if map.insert(key.clone(), value.clone()).is_some() {
            return Err(Error::Usage(format!("--start-field {key} is given twice")));
        }
    }
    Ok(map)
}

/// Why a start field may not have this name, with the flag that sets the
/// field instead; `None` for a field left to the user.
fn refusal(key: &str) -> Option<&'static str> {
    Some(match key {
        "api_key" => {
            "the key never goes in the start request, only in the connection's Authorization header (SONIOX_API_KEY, --api-key-file)"
        }
        "model" => "sttpipe sets this field itself; use --model",
        "audio_format" => "sttpipe sets this field itself; use --audio-format",
        "sample_rate" => "sttpipe sets this field itself; use --rate",
        "num_channels" => "sttpipe sets this field itself; use --channels",
        "language_hints" => "sttpipe sets this field itself; use --language-hints",
        "language_hints_strict" => "sttpipe sets this field itself; use --language-hints-strict",
        "context" => "sttpipe sets this field itself; use --context",
        "enable_speaker_diarization" => "sttpipe sets this field itself; use --diarize",
        "enable_language_identification" => "sttpipe sets this field itself; use --language-id",
        "enable_endpoint_detection" => "sttpipe sets this field itself; use --endpoint-detection",
        "max_endpoint_delay_ms" => "sttpipe sets this field itself; use --max-endpoint-delay-ms",
        "endpoint_sensitivity" => "sttpipe sets this field itself; use --endpoint-sensitivity",
        "endpoint_latency_adjustment_level" => {
            "sttpipe sets this field itself; use --endpoint-latency-adjustment-level"
        }
        "translation" => "sttpipe sets this field itself; use --translate or --translate-to",
        "client_reference_id" => "sttpipe sets this field itself; use --client-reference-id",
        "enable_non_final_tokens" => {
            "sttpipe always reads the non-final tokens; --partials decides whether they are output"
        }
        _ => return None,
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

/// The service URLs, in the order given for failover: the `urls` that are
/// not empty, else the region's.
pub(crate) fn urls(urls: &[String], region: Region) -> Result<Vec<String>> {
    let mut given: Vec<String> = urls.iter().filter(|url| !url.is_empty()).cloned().collect();
    if given.is_empty() {
        given.push(region.url().to_owned());
    }
    for url in &given {
        if !(url.starts_with("ws://") || url.starts_with("wss://")) {
            return Err(Error::Usage(format!(
                "--url must be a ws:// or wss:// URL, not {url:?}"
            )));
        }
    }
    Ok(given)
}

/// The smallest replay buffer: on a healthy connection it holds the
/// paced input's lead over real time (2 s) and the audio whose words are
/// not final yet (a second or more), so less would drop audio with no
/// failure at all.
pub(crate) const MIN_REPLAY_BUFFER_SECS: u64 = 10;

/// The filter's session limits.
pub(crate) fn limits(args: &ReliabilityArgs) -> Result<SessionLimits> {
    if args.max_session.get().as_secs() < 3 {
        return Err(Error::Usage(
            "--max-session must be at least 3 seconds".into(),
        ));
    }
    if args.replay_buffer.get().as_secs() < MIN_REPLAY_BUFFER_SECS {
        return Err(Error::Usage(format!(
            "--replay-buffer must be at least {MIN_REPLAY_BUFFER_SECS} seconds: less drops audio on a healthy connection"
        )));
    }
    Ok(SessionLimits {
        idle_close: args.idle_close.nonzero(),
        drain_timeout: args.drain_timeout.get(),
        replay_buffer: args.replay_buffer.get(),
        max_session: args.max_session.get(),
        retry_budget: args.retry_budget.get(),
    })
}

impl From<&LocalEngineArgs> for LocalEngineConfig {
    fn from(args: &LocalEngineArgs) -> LocalEngineConfig {
        LocalEngineConfig {
            model_dir: args.model_dir.clone(),
            model: args.local_model,
        }
    }
}

impl FilterConfig {
    /// Resolves and checks the filter's options. `env` looks up environment
    /// variables (a parameter so tests need not change the process
    /// environment).
    pub(crate) fn from_opts(
        opts: Opts,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<FilterConfig> {
        let timing = Timing::from_env(env)?;
        let output = super::output::resolve(&opts)?;
        let mut session_args = opts.session.clone();
        if opts.passthrough {
            // Soniox detects and decodes the format itself.
            session_args.audio_format = "auto".to_owned();
        }
        // What the writer needs of the session, whoever runs it (here or a
        // daemon): endpoints for captions, the non-final tail for the
        // now-showing file (written only if asked for).
        if matches!(output.format, Format::Captions(_)) {
            session_args.endpoint_detection = true;
        }
        if output.now_file.is_some() {
            session_args.partials = true;
        }
        let request = session(&session_args, Origin::CommandLine)?;
        let mut session = SessionConfig::new(&request, &limits(&opts.reliability)?, timing);
        session.connect_budget = opts.reliability.connect_budget.get();
        let local = LocalEngineConfig::from(&opts.local_engine);
        let target = match (&opts.connect, request.engines.engine) {
            // Through a daemon, the daemon's key, endpoint and engines serve.
            (Some(socket), _) => {
                let mut header = session_args.clone();
                header.context = header
                    .context
                    .as_ref()
                    .map(|c| load_context(c, Origin::CommandLine))
                    .transpose()?;
                Target::Daemon {
                    socket: socket.clone(),
                    header,
                }
            }
            (None, Some(EngineChoice::Local)) => Target::Local(local.clone()),
            (None, Some(EngineChoice::Soniox) | None) => Target::Soniox(ServiceConfig {
                urls: urls(&opts.service.url, opts.service.region)?,
                api_key: load_api_key(opts.service.api_key_file.as_deref(), env)?,
                ca_file: opts.service.ca_file.clone(),
                timing,
            }),
        };
        let fallback = match &target {
            Target::Daemon { .. } => None,
            _ => request.engines.fallback_local.then_some(local),
        };
        Ok(FilterConfig {
            input: InputOptions {
                format: session.audio.clone(),
                format_explicit: session_args.format_explicit(),
                follow: opts.follow,
                sources: sources(opts.input, opts.files),
                ..InputOptions::new(Source::Stdin)
            },
            session,
            target,
            output,
            fallback,
        })
    }
}

/// What the filter reads: `--input PATH`, or the FILE operands in order,
/// or stdin; `-` is stdin.
fn sources(input: Option<PathBuf>, files: Vec<PathBuf>) -> Vec<Source> {
    let paths: Vec<PathBuf> = input.into_iter().chain(files).collect();
    if paths.is_empty() {
        return vec![Source::Stdin];
    }
    paths
        .into_iter()
        .map(|path| {
            if path.as_os_str() == "-" {
                Source::Stdin
            } else {
                Source::Path(path)
            }
        })
        .collect()
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
        assert_eq!(
            service.urls,
            ["wss://stt-rt.soniox.com/transcribe-websocket"]
        );
        assert_eq!(
            config.session.recognition.model,
            crate::cli::session_args::DEFAULT_MODEL
        );
    }

    #[test]
    fn repeated_urls_are_kept_in_order_for_failover() {
        let config = parse(&["--url", "wss://a/ws", "--url", "", "--url", "ws://b/ws"]).unwrap();
        let Target::Soniox(service) = &config.target else {
            panic!("no --connect: straight to Soniox")
        };
        assert_eq!(service.urls, ["wss://a/ws", "ws://b/ws"]);
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
        assert!(service.urls[0].contains(".eu."));
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
            &["--url", "wss://a/", "--url", "http://x"],
            &["--rate", "0"],
            &["--drain-timeout", "1e300"],
            &["--idle-close", "1e19"],
            &["--max-session", "2"],
            &["--replay-buffer", "1"],
            &["--endpoint-sensitivity", "1.5"],
            &["--endpoint-sensitivity", "NaN"],
            &["--endpoint-latency-adjustment-level", "4"],
            &["--start-field", "a=1", "--start-field", "a=2"],
        ] {
            assert!(matches!(parse(args), Err(Error::Usage(_))), "{args:?}");
        }
    }

    #[test]
    fn endpoint_tuning_and_start_fields_resolve() {
        let config = parse(&[
            "--endpoint-sensitivity",
            "-0.25",
            "--endpoint-latency-adjustment-level",
            "3",
            "--start-field",
            "enable_agent_text_input=true",
            "--start-field",
            "future={\"a\":1}",
            "--region",
            "in",
        ])
        .unwrap();
        let r = &config.session.recognition;
        assert_eq!(r.endpoint_sensitivity, Some(-0.25));
        assert_eq!(r.endpoint_latency_adjustment_level, Some(3));
        assert!(
            !r.endpoint_detection,
            "tuning alone does not turn detection on"
        );
        assert_eq!(
            serde_json::Value::Object(r.start_fields.clone()),
            serde_json::json!({"enable_agent_text_input": true, "future": {"a": 1}})
        );
        let Target::Soniox(service) = &config.target else {
            panic!("no --connect: straight to Soniox")
        };
        assert_eq!(
            service.urls,
            ["wss://stt-rt.in.soniox.com/transcribe-websocket"]
        );
    }

    #[test]
    fn start_fields_sttpipe_writes_are_refused_with_their_flag() {
        let refused = |key: &str| match parse(&["--start-field", &format!("{key}=1")]) {
            Err(Error::Usage(message)) => message,
            other => panic!("{key}: {other:?}"),
        };
        for key in soniox_wire::start::NAMED_FIELDS {
            let message = refused(key);
            assert!(refusal(key).is_some(), "{key} has no reason given");
            assert!(
                message.starts_with(&format!("--start-field {key}: ")),
                "{message}"
            );
        }
        assert!(refused("api_key").contains("--api-key-file"));
        assert!(refused("sample_rate").contains("--rate"));
        // The header is refused alike.
        let header = SessionArgs {
            start_field: vec![StartField {
                key: "model".into(),
                value: Value::from("stt-rt-v4"),
            }],
            ..SessionArgs::default()
        };
        assert!(matches!(
            session(&header, Origin::Client),
            Err(Error::Usage(message)) if message.contains("--model")
        ));
    }

    #[test]
    fn context_files_are_read_from_the_command_line_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("context.txt");
        std::fs::write(&file, "secret words\n").unwrap();
        let missing = dir.path().join("missing.txt");
        let named = |path: &Path| SessionArgs {
            context: Some(ContextArg::File(path.to_owned())),
            ..SessionArgs::default()
        };
        let local = session(&named(&file), Origin::CommandLine).unwrap();
        assert_eq!(
            local.recognition.context,
            Some(Value::String("secret words".into()))
        );
        let refusal = |path: &Path| match session(&named(path), Origin::Client) {
            Err(err) => err.to_string(),
            Ok(_) => panic!("a client named a file"),
        };
        assert_eq!(refusal(&file), refusal(&missing), "no existence oracle");
        let long = SessionArgs {
            context: Some(ContextArg::Text("x".repeat(MAX_CONTEXT_CHARS + 1))),
            ..SessionArgs::default()
        };
        assert!(matches!(
            session(&long, Origin::CommandLine),
            Err(Error::Usage(_))
        ));
    }

    #[test]
    fn through_a_daemon_the_header_carries_the_context_itself() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("context.txt");
        std::fs::write(&file, "{\"terms\":[\"Celebrex\"]}").unwrap();
        let context = format!("@{}", file.display());
        let config = parse(&["--connect", "/nonexistent.sock", "--context", &context]).unwrap();
        let Target::Daemon { header, .. } = config.target else {
            panic!("--connect: through the daemon")
        };
        let header = serde_json::to_value(&header).unwrap();
        assert_eq!(
            header["context"],
            serde_json::json!({"terms": ["Celebrex"]})
        );
    }
}
