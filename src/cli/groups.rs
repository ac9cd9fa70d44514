//! Flag groups shared by the filter and `sttpipe serve`, with their
//! defaults as named constants.

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};

use super::values::{LocalModel, Region, Seconds};

/// Close an idle upstream session after this long without audio.
pub(crate) const DEFAULT_IDLE_CLOSE: Seconds = Seconds::from_secs(60);
/// Audio kept for replay after a failure.
pub(crate) const DEFAULT_REPLAY_BUFFER: Seconds = Seconds::from_secs(300);
/// Soniox's cap on one session: 300 minutes.
pub(crate) const DEFAULT_MAX_SESSION: Seconds = Seconds::from_secs(18_000);
/// Longest outage before giving up.
pub(crate) const DEFAULT_RETRY_BUDGET: Seconds = Seconds::from_secs(300);
/// Longest wait for a stream's first upstream session.
pub(crate) const DEFAULT_CONNECT_BUDGET: Seconds = Seconds::from_secs(30);
/// The filter's bound on the drain after SIGINT or SIGTERM.
pub(crate) const DEFAULT_FILTER_DRAIN: Seconds = Seconds::from_secs(5);

/// Where the Soniox service is and how to reach it.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
pub(crate) struct ServiceArgs {
    /// Soniox region; the API key must belong to a project in it.
    #[arg(
        long,
        value_enum,
        value_name = "REGION",
        default_value_t = Region::Us,
        help_heading = "Service"
    )]
    pub(crate) region: Region,

    /// WebSocket URL of the service, overriding --region. Give it more
    /// than once for failover: a session that cannot reach one URL tries
    /// the next, starting from the last that worked (SONIOX_WS_URL holds
    /// one).
    #[arg(
        long,
        value_name = "URL",
        env = "SONIOX_WS_URL",
        action = clap::ArgAction::Append,
        help_heading = "Service"
    )]
    #[serde(default, deserialize_with = "one_or_many")]
    pub(crate) url: Vec<String>,

    /// Read the API key from PATH (first line) instead of SONIOX_API_KEY or
    /// $CREDENTIALS_DIRECTORY/soniox-api-key.
    #[arg(long, value_name = "PATH", help_heading = "Service")]
    pub(crate) api_key_file: Option<PathBuf>,

    /// Trust the certificate authorities in PATH (PEM) instead of the
    /// built-in roots, for a private endpoint.
    #[arg(long, value_name = "PATH", help_heading = "Service")]
    pub(crate) ca_file: Option<PathBuf>,
}

/// A settings-file value that may be one string or a list of them
/// (`url = "wss://…"` or `url = ["wss://a/…", "wss://b/…"]`).
fn one_or_many<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
        None(()),
    }
    Ok(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(one) => vec![one],
        OneOrMany::Many(many) => many,
        OneOrMany::None(()) => Vec::new(),
    })
}

/// Where the local engine's files are, and which model it runs.
#[derive(Debug, Clone, PartialEq, Args, Serialize, Deserialize)]
pub(crate) struct LocalEngineArgs {
    /// The local engine's directory, as `sttpipe engine install --dir`
    /// made it [default: ~/.local/share/sttpipe].
    ///
    /// Without it: $STTPIPE_MODEL_DIR, then $STATE_DIRECTORY (the daemon's
    /// under systemd), then ~/.local/share/sttpipe ($XDG_DATA_HOME/sttpipe)
    /// or /var/lib/sttpipe, whichever holds the engine; `sttpipe engine
    /// list` shows which.
    #[arg(long, value_name = "DIR", help_heading = "Engine")]
    pub(crate) model_dir: Option<PathBuf>,

    /// The local engine's model: tiny-en (fast) or base-en (more accurate).
    #[arg(
        long,
        value_enum,
        value_name = "MODEL",
        default_value_t = LocalModel::TinyEn,
        help_heading = "Engine"
    )]
    pub(crate) local_model: LocalModel,
}

/// How the filter's session rides out failures, idleness and the cap.
#[derive(Debug, Clone, PartialEq, Args)]
pub(crate) struct ReliabilityArgs {
    /// Close the Soniox session after SECS without audio (Soniox bills idle
    /// time); a new one opens when audio returns. 0 keeps it open.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_IDLE_CLOSE,
        help_heading = "Reliability"
    )]
    pub(crate) idle_close: Seconds,

    /// Keep up to SECS of audio that no final token covers yet, to replay
    /// into a new upstream session after a failure. Past it, the oldest
    /// audio is dropped and an `overrun` event names the lost range.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_REPLAY_BUFFER,
        help_heading = "Reliability"
    )]
    pub(crate) replay_buffer: Seconds,

    /// The service's limit on one session (Soniox: 300 minutes). sttpipe
    /// opens the next session before it and hands over without a gap.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_MAX_SESSION,
        help_heading = "Reliability"
    )]
    pub(crate) max_session: Seconds,

    /// Give up reconnecting after SECS without a working upstream session.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_RETRY_BUDGET,
        help_heading = "Reliability"
    )]
    pub(crate) retry_budget: Seconds,

    /// Give up after SECS when no upstream session has opened yet (a wrong
    /// URL, no network); once one has, --retry-budget applies.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_CONNECT_BUDGET,
        help_heading = "Reliability"
    )]
    pub(crate) connect_budget: Seconds,

    /// After SIGINT or SIGTERM, wait at most SECS for the final tokens.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_FILTER_DRAIN,
        help_heading = "Reliability"
    )]
    pub(crate) drain_timeout: Seconds,
}
