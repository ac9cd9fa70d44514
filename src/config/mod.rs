//! Resolved configuration: plain data, what the flags, a socket header or a
//! start request mean once checked.
//!
//! [`resolve`] turns the raw [`crate::cli`] values into these types; nothing
//! here holds an engine or an open resource, so every type is `Clone` and
//! `Debug` (the key's `Debug` is redacted). [`RecognitionOptions`] are the
//! engine-independent session options, [`SessionConfig`] everything the
//! session core needs, [`ServiceConfig`] where the Soniox engine connects
//! and with which key, and [`FilterConfig`] the whole of a filter run, its
//! output ([`OutputConfig`]) included.

mod key;
pub(crate) mod output;
pub(crate) mod resolve;

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use soniox_wire::Translation;

use crate::audio::AudioFormat;
use crate::cli::SessionArgs;
use crate::cli::values::{EngineChoice, LocalModel};
use crate::error::{Error, Result};
use crate::input::InputOptions;
use crate::output::OutputConfig;
pub(crate) use key::load_api_key;

/// The name of the key file systemd's `LoadCredential=` provides.
pub(crate) const CREDENTIAL_NAME: &str = "soniox-api-key";

/// How far ahead of real time paced input may run: Soniox wants about
/// real-time pace, and 2 s of lead absorbs a bursty writer.
pub(crate) const MAX_LEAD: Duration = Duration::from_secs(2);

/// Options that shape recognition, whatever the engine.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct RecognitionOptions {
    /// Model name.
    pub(crate) model: String,
    /// Expected languages.
    pub(crate) language_hints: Vec<String>,
    /// Restrict to the hinted languages.
    pub(crate) language_hints_strict: bool,
    /// Context: plain text or a structured object.
    pub(crate) context: Option<serde_json::Value>,
    /// Speaker labels.
    pub(crate) diarize: bool,
    /// Per-token language.
    pub(crate) language_id: bool,
    /// `<end>` at utterance ends.
    pub(crate) endpoint_detection: bool,
    /// Longest endpoint delay, ms.
    pub(crate) max_endpoint_delay_ms: Option<u32>,
    /// Endpoint tuning, −1 to 1.
    pub(crate) endpoint_sensitivity: Option<f64>,
    /// Endpoint latency level, 0 to 3.
    pub(crate) endpoint_latency_adjustment_level: Option<u8>,
    /// Translation, if any.
    pub(crate) translation: Option<Translation>,
    /// Usage-log id.
    pub(crate) client_reference_id: Option<String>,
    /// Start-request fields sttpipe does not name, sent as given
    /// (`--start-field`, a WebSocket client's newer options); never one of
    /// the fields above, nor the key.
    pub(crate) start_fields: serde_json::Map<String, serde_json::Value>,
}

/// An API key. Its `Debug` is redacted so it cannot reach a log by
/// accident; it has no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ApiKey(String);

impl ApiKey {
    /// Wraps a key (trimmed).
    pub(crate) fn new(key: &str) -> ApiKey {
        ApiKey(key.trim().to_owned())
    }

    /// The key itself, for the Authorization header only.
    pub(crate) fn expose(&self) -> &str {
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
pub(crate) struct Timing {
    /// Real-time speed-up; always from [`Timing::MIN_FACTOR`] to
    /// [`Timing::MAX_FACTOR`].
    pub(crate) factor: f64,
}

impl Timing {
    /// Real time.
    pub(crate) const REAL: Timing = Timing { factor: 1.0 };
    /// The slowest pace accepted.
    pub(crate) const MIN_FACTOR: f64 = 0.01;
    /// The fastest pace accepted.
    pub(crate) const MAX_FACTOR: f64 = 1000.0;

    /// The wall time that stands for `duration` of real time.
    pub(crate) fn wall(self, duration: Duration) -> Duration {
        duration.div_f64(self.factor)
    }

    /// Reads `STTPIPE_PACE_FACTOR`.
    pub(crate) fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Timing> {
        match env("STTPIPE_PACE_FACTOR").filter(|v| !v.is_empty()) {
            None => Ok(Timing::REAL),
            Some(value) => match value.parse::<f64>() {
                Ok(factor) if (Timing::MIN_FACTOR..=Timing::MAX_FACTOR).contains(&factor) => {
                    Ok(Timing { factor })
                }
                _ => Err(Error::Config(format!(
                    "STTPIPE_PACE_FACTOR must be a number from {} to {}, not {value:?}",
                    Timing::MIN_FACTOR,
                    Timing::MAX_FACTOR
                ))),
            },
        }
    }
}

/// Where and how the Soniox engine connects.
#[derive(Debug, Clone)]
pub(crate) struct ServiceConfig {
    /// WebSocket URLs, in the order given: the first is tried first, and a
    /// session that cannot reach one tries the next (never empty).
    pub(crate) urls: Vec<String>,
    /// The key, sent as `Authorization: Bearer`.
    pub(crate) api_key: ApiKey,
    /// PEM file of trusted CAs replacing the built-in roots.
    pub(crate) ca_file: Option<PathBuf>,
    /// Time scale of the protocol timers (keepalive, half-open detection).
    pub(crate) timing: Timing,
}

/// Where the local engine's files are and which model it runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LocalEngineConfig {
    /// `--model-dir` (`None`: the default directory).
    pub(crate) model_dir: Option<PathBuf>,
    /// `--local-model`.
    pub(crate) model: LocalModel,
}

/// A session's bounds on idleness, failures, its cap and its drain: the
/// filter's flags, or the daemon's settings for its clients.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionLimits {
    /// Close the upstream session after this long without audio.
    pub(crate) idle_close: Option<Duration>,
    /// Bound on waiting for final tokens after a stop signal.
    pub(crate) drain_timeout: Duration,
    /// Audio kept for replay after a failure.
    pub(crate) replay_buffer: Duration,
    /// The service's cap on one upstream session; rotation comes before it.
    pub(crate) max_session: Duration,
    /// Longest outage before giving up.
    pub(crate) retry_budget: Duration,
}

impl Default for SessionLimits {
    /// The filter's defaults.
    fn default() -> SessionLimits {
        use crate::cli::groups as defaults;
        SessionLimits {
            idle_close: defaults::DEFAULT_IDLE_CLOSE.nonzero(),
            drain_timeout: defaults::DEFAULT_FILTER_DRAIN.get(),
            replay_buffer: defaults::DEFAULT_REPLAY_BUFFER.get(),
            max_session: defaults::DEFAULT_MAX_SESSION.get(),
            retry_budget: defaults::DEFAULT_RETRY_BUDGET.get(),
        }
    }
}

/// What a session asks for, checked: its recognition options, its audio,
/// whether it wants partials, and which engines.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SessionRequest {
    /// Recognition options for the engine.
    pub(crate) recognition: RecognitionOptions,
    /// The audio format sent.
    pub(crate) audio: AudioFormat,
    /// Output non-final tokens as `partial` events.
    pub(crate) partials: bool,
    /// The engines asked for.
    pub(crate) engines: EngineRequest,
}

/// How the session core treats its input and upstream.
#[derive(Debug, Clone)]
pub(crate) struct SessionConfig {
    /// Recognition options for the engine.
    pub(crate) recognition: RecognitionOptions,
    /// The audio format sent.
    pub(crate) audio: AudioFormat,
    /// Output non-final tokens as `partial` events.
    pub(crate) partials: bool,
    /// Close the upstream session after this long without audio.
    pub(crate) idle_close: Option<Duration>,
    /// Bound on waiting for final tokens after a stop signal.
    pub(crate) drain_timeout: Duration,
    /// Largest lead over real time allowed to input that comes faster.
    pub(crate) max_lead: Duration,
    /// Audio kept for replay after a failure.
    pub(crate) replay_buffer: Duration,
    /// The service's cap on one upstream session; rotation comes before it.
    pub(crate) max_session: Duration,
    /// Longest outage before giving up.
    pub(crate) retry_budget: Duration,
    /// Longest wait for the first upstream session to open, at most
    /// `retry_budget`.
    pub(crate) connect_budget: Duration,
    /// Where to tell the user at once that the service cannot be reached
    /// (the filter's stderr); `None` in the daemon, whose log says it.
    pub(crate) tell_user: Option<fn(&str)>,
    /// Time scale of pacing and every timer above.
    pub(crate) timing: Timing,
}

impl SessionConfig {
    /// A session as `request` asks, within `limits`, paced to real time.
    pub(crate) fn new(
        request: &SessionRequest,
        limits: &SessionLimits,
        timing: Timing,
    ) -> SessionConfig {
        SessionConfig {
            recognition: request.recognition.clone(),
            audio: request.audio.clone(),
            partials: request.partials,
            idle_close: limits.idle_close,
            drain_timeout: limits.drain_timeout,
            max_lead: MAX_LEAD,
            replay_buffer: limits.replay_buffer,
            max_session: limits.max_session,
            retry_budget: limits.retry_budget,
            connect_budget: limits.retry_budget,
            tell_user: None,
            timing,
        }
    }
}

/// What a daemon client asks of the daemon's engines; what it leaves unset,
/// the daemon decides. The local engine's files and model are the daemon's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct EngineRequest {
    /// `--engine`.
    pub(crate) engine: Option<EngineChoice>,
    /// `--fallback local`.
    pub(crate) fallback_local: bool,
}

/// Where the filter's audio goes.
#[derive(Debug)]
pub(crate) enum Target {
    /// Straight to Soniox.
    Soniox(ServiceConfig),
    /// The local engine.
    Local(LocalEngineConfig),
    /// Through the sttpipe daemon at `socket`.
    Daemon {
        /// The daemon's socket.
        socket: PathBuf,
        /// The session's options as the header sends them (a context file
        /// already read here, never by the daemon).
        header: SessionArgs,
    },
}

/// Everything the filter needs, resolved from the command line.
#[derive(Debug)]
pub(crate) struct FilterConfig {
    /// Input source and declared format.
    pub(crate) input: InputOptions,
    /// Session settings (its audio format is settled once the input is sniffed).
    pub(crate) session: SessionConfig,
    /// Soniox directly, the local engine, or a daemon.
    pub(crate) target: Target,
    /// What the writer thread writes, and where.
    pub(crate) output: OutputConfig,
    /// `--fallback local`: the local engine to go on with.
    pub(crate) fallback: Option<LocalEngineConfig>,
}
