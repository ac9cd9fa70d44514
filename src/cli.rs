//! The command line, as the user types it.
//!
//! Doc comments here are the `--help` text. Nothing is validated here beyond
//! what clap checks by type; [`crate::config`] turns these raw options into a
//! resolved, validated configuration.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Streaming speech-to-text as a Unix filter, for the Soniox real-time API.
///
/// Reads raw audio (pcm_s16le, 16 kHz, mono by default) from stdin, a file or
/// a named FIFO, streams it to Soniox at real-time pace, and writes the
/// transcript to stdout as NDJSON, one event a line, flushed as it arrives.
///
/// Example: ffmpeg -loglevel error -i talk.mp3 -f s16le -ar 16000 -ac 1 - | sttpipe | jq -j 'select(.type=="token").text'
///
/// The API key comes from SONIOX_API_KEY, --api-key-file, or
/// $CREDENTIALS_DIRECTORY/soniox-api-key; never from the command line.
/// See sttpipe(1) for the output schema and exit statuses.
#[derive(Debug, Parser)]
#[command(
    name = "sttpipe",
    version,
    max_term_width = 100,
    args_conflicts_with_subcommands = true
)]
pub struct Opts {
    /// Run as a daemon, or ask one for its status (without: the filter).
    #[command(subcommand)]
    pub command: Option<Command>,

    /// Stream through the sttpipe daemon listening at SOCKET instead of to
    /// Soniox directly: same flags, same output, no API key needed here.
    #[arg(
        long,
        value_name = "SOCKET",
        env = "STTPIPE_SOCKET",
        help_heading = "Service"
    )]
    pub connect: Option<PathBuf>,

    /// Read audio from PATH (a file or a named FIFO) instead of stdin.
    #[arg(short, long, value_name = "PATH", help_heading = "Input")]
    pub input: Option<PathBuf>,

    /// Audio format: a raw format (pcm_s16le, pcm_f32le, mulaw, alaw, …) or a
    /// container passed through (auto, wav, mp3, ogg, flac, webm, …). A WAV
    /// header on the input is recognised and its format used.
    #[arg(
        long,
        value_name = "FORMAT",
        default_value = "pcm_s16le",
        help_heading = "Input"
    )]
    pub audio_format: String,

    /// Sample rate of raw input, in Hz.
    #[arg(
        long,
        value_name = "HZ",
        default_value_t = 16_000,
        help_heading = "Input"
    )]
    pub rate: u32,

    /// Channels of raw input (interleaved).
    #[arg(long, value_name = "N", default_value_t = 1, help_heading = "Input")]
    pub channels: u16,

    /// Keep reading a FIFO across writers: each writer's audio is finalized
    /// when it closes, and the next writer's audio continues the stream.
    #[arg(long, help_heading = "Input")]
    pub follow: bool,

    /// Close the Soniox session after SECS without audio (Soniox bills idle
    /// time); a new one opens when audio returns. 0 keeps it open.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 60,
        help_heading = "Input"
    )]
    pub idle_close: u64,

    /// Also output the non-final tokens, as `partial` events that each
    /// replace the previous one.
    #[arg(long, help_heading = "Output")]
    pub partials: bool,

    /// Output format: NDJSON events, or plain text for people (a line break
    /// at each endpoint, finalization and the end).
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value = "ndjson",
        help_heading = "Output"
    )]
    pub format: OutputFormat,

    /// Soniox model.
    #[arg(
        long,
        value_name = "MODEL",
        default_value = "stt-rt-v5",
        help_heading = "Recognition"
    )]
    pub model: String,

    /// Languages to expect, comma-separated ISO 639-1 codes (en,de).
    #[arg(
        long,
        value_name = "LANGS",
        value_delimiter = ',',
        help_heading = "Recognition"
    )]
    pub language_hints: Vec<String>,

    /// Restrict recognition to the hinted languages.
    #[arg(long, help_heading = "Recognition")]
    pub language_hints_strict: bool,

    /// Context for recognition: text, a JSON object, or @FILE holding either.
    #[arg(long, value_name = "TEXT|@FILE", help_heading = "Recognition")]
    pub context: Option<String>,

    /// Label speakers (`speaker` field on tokens).
    #[arg(long, help_heading = "Recognition")]
    pub diarize: bool,

    /// Identify the language of each token (`language` field).
    #[arg(long, help_heading = "Recognition")]
    pub language_id: bool,

    /// Detect the end of utterances (`endpoint` events).
    #[arg(long, help_heading = "Recognition")]
    pub endpoint_detection: bool,

    /// Longest wait for an endpoint, in ms (500 to 3000).
    #[arg(long, value_name = "MS", help_heading = "Recognition")]
    pub max_endpoint_delay_ms: Option<u32>,

    /// Translate everything spoken into LANG (one-way translation).
    #[arg(
        long,
        value_name = "LANG",
        conflicts_with = "translate",
        help_heading = "Recognition"
    )]
    pub translate_to: Option<String>,

    /// Translate between two languages, each into the other (two-way), e.g. en:es.
    #[arg(long, value_name = "A:B", help_heading = "Recognition")]
    pub translate: Option<String>,

    /// An id recorded in Soniox's usage logs (at most 256 characters).
    #[arg(long, value_name = "ID", help_heading = "Recognition")]
    pub client_reference_id: Option<String>,

    /// The recognition engine: the Soniox service, or Moonshine on this
    /// machine (no key, no network; provision it with
    /// scripts/fetch-local-engine). With --connect, asks the daemon for it
    /// [default: soniox; with --connect, the daemon's].
    #[arg(long, value_enum, value_name = "ENGINE", help_heading = "Service")]
    pub engine: Option<EngineChoice>,

    /// When Soniox cannot be reached from the start, or fails for good (the
    /// retry budget spent), go on with the local engine from the first audio
    /// no final token covers; a `fallback` event says so.
    #[arg(long, value_enum, value_name = "ENGINE", help_heading = "Service")]
    pub fallback: Option<FallbackChoice>,

    /// Where the local engine's files are [default: the fetch script's
    /// cache directory].
    #[arg(long, value_name = "DIR", help_heading = "Service")]
    pub model_dir: Option<PathBuf>,

    /// The local engine's model: tiny-en (fast) or base-en (more accurate).
    #[arg(
        long,
        value_name = "MODEL",
        default_value = "tiny-en",
        help_heading = "Service"
    )]
    pub local_model: String,

    /// Soniox region; the API key must belong to a project in it.
    #[arg(
        long,
        value_enum,
        value_name = "REGION",
        default_value = "us",
        help_heading = "Service"
    )]
    pub region: Region,

    /// WebSocket URL of the service, overriding --region.
    #[arg(
        long,
        value_name = "URL",
        env = "SONIOX_WS_URL",
        help_heading = "Service"
    )]
    pub url: Option<String>,

    /// Read the API key from PATH (first line).
    #[arg(long, value_name = "PATH", help_heading = "Service")]
    pub api_key_file: Option<PathBuf>,

    /// Trust the certificate authorities in PATH (PEM) instead of the
    /// built-in roots, for a private endpoint.
    #[arg(long, value_name = "PATH", help_heading = "Service")]
    pub ca_file: Option<PathBuf>,

    /// Keep up to SECS of audio that no final token covers yet, to replay
    /// into a new upstream session after a failure. Past it, the oldest
    /// audio is dropped and an `overrun` event names the lost range.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        help_heading = "Service"
    )]
    pub replay_buffer: u64,

    /// The service's limit on one session (Soniox: 300 minutes). sttpipe
    /// opens the next session before it and hands over without a gap.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 18_000,
        help_heading = "Service"
    )]
    pub max_session: u64,

    /// Give up reconnecting after SECS without a working upstream session.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 300,
        help_heading = "Service"
    )]
    pub retry_budget: u64,

    /// After SIGINT or SIGTERM, wait at most SECS for the final tokens.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = 5.0,
        help_heading = "Service"
    )]
    pub drain_timeout: f64,

    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon: a Unix socket that multiplexes client sessions onto
    /// Soniox with the daemon's key, within Soniox's quotas; optionally a
    /// Soniox-compatible WebSocket endpoint. See sttpipe-protocol(7).
    Serve(Box<ServeOpts>),
    /// Print the daemon's status as JSON: sessions, queue, upstream usage.
    Status(StatusOpts),
}

/// `sttpipe serve`. Unset options come from the settings file, then from
/// the defaults.
#[derive(Debug, Default, Args)]
pub struct ServeOpts {
    /// The Unix socket to listen on, unless systemd passes one (socket
    /// activation) [default: /run/sttpipe/sttpipe.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Settings file (TOML, keys named as these flags with underscores);
    /// flags win. Read again on SIGHUP [default: /etc/sttpipe/sttpipe.toml,
    /// if it exists].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Read the API key from PATH (else SONIOX_API_KEY, else
    /// $CREDENTIALS_DIRECTORY/soniox-api-key). Read again on SIGHUP.
    #[arg(long, value_name = "PATH")]
    pub api_key_file: Option<PathBuf>,

    /// Soniox region [default: us].
    #[arg(long, value_enum, value_name = "REGION")]
    pub region: Option<Region>,

    /// WebSocket URL of the service, overriding --region.
    #[arg(long, value_name = "URL", env = "SONIOX_WS_URL")]
    pub url: Option<String>,

    /// Trust the certificate authorities in PATH (PEM).
    #[arg(long, value_name = "PATH")]
    pub ca_file: Option<PathBuf>,

    /// Upstream sessions open at once [default: 10, Soniox's project limit].
    #[arg(long, value_name = "N")]
    pub max_upstream: Option<usize>,

    /// New upstream sessions a minute [default: 100, Soniox's limit].
    #[arg(long, value_name = "N")]
    pub new_sessions_per_minute: Option<u32>,

    /// Sessions that may wait for an upstream slot; past it, `busy`
    /// [default: 100].
    #[arg(long, value_name = "N")]
    pub queue: Option<usize>,

    /// Sessions one uid may have at once; 0 for no limit [default: 0].
    #[arg(long, value_name = "N")]
    pub max_sessions_per_uid: Option<usize>,

    /// Only these uids may connect (comma-separated; root always may).
    #[arg(long, value_name = "UIDS", value_delimiter = ',')]
    pub allow_uid: Option<Vec<u32>>,

    /// Only processes whose group is one of these gids may connect.
    #[arg(long, value_name = "GIDS", value_delimiter = ',')]
    pub allow_gid: Option<Vec<u32>>,

    /// Group to own a socket the daemon binds itself (mode 0660).
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Also serve the Soniox WebSocket protocol (and a browser page) on
    /// ADDR, e.g. 127.0.0.1:3001.
    #[arg(long, value_name = "ADDR")]
    pub ws_listen: Option<std::net::SocketAddr>,

    /// Clients of the WebSocket endpoint must present the token in PATH as
    /// their API key; without it, anyone who can reach the endpoint may use it.
    #[arg(long, value_name = "PATH")]
    pub ws_token_file: Option<PathBuf>,

    /// Upstream connections kept open and ready, so that a session's first
    /// audio goes out without a handshake [default: 2].
    #[arg(long, value_name = "N")]
    pub warm_pool: Option<usize>,

    /// On SIGTERM, wait at most SECS for the sessions' final tokens; keep it
    /// below the unit's TimeoutStopSec [default: 10].
    #[arg(long, value_name = "SECS")]
    pub drain_timeout: Option<f64>,

    /// A client must send its header line within SECS [default: 5].
    #[arg(long, value_name = "SECS")]
    pub header_timeout: Option<f64>,

    /// The engine for sessions that do not ask for one: the Soniox service,
    /// or Moonshine on this machine, loaded at start; with local, no API key
    /// is needed [default: soniox].
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub engine: Option<EngineChoice>,

    /// When Soniox cannot be reached or fails for good, sessions go on with
    /// the local engine (loaded at start).
    #[arg(long, value_enum, value_name = "ENGINE")]
    pub fallback: Option<FallbackChoice>,

    /// Where the local engine's files are [default: the fetch script's
    /// cache directory for the daemon's user].
    #[arg(long, value_name = "DIR")]
    pub model_dir: Option<PathBuf>,

    /// The local engine's model: tiny-en or base-en [default: tiny-en].
    #[arg(long, value_name = "MODEL")]
    pub local_model: Option<String>,

    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

/// `sttpipe status`.
#[derive(Debug, Args)]
pub struct StatusOpts {
    /// The daemon's socket.
    #[arg(long, value_name = "PATH", env = "STTPIPE_SOCKET", default_value = DEFAULT_SOCKET)]
    pub socket: PathBuf,
}

/// Where the daemon listens by default (and where sttpipe.socket puts it).
pub const DEFAULT_SOCKET: &str = "/run/sttpipe/sttpipe.sock";

/// How events are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// One JSON event a line.
    Ndjson,
    /// The transcript as text, a line per utterance.
    Text,
}

/// Recognition engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EngineChoice {
    /// The Soniox real-time service.
    Soniox,
    /// Moonshine through sherpa-onnx, on this machine.
    Local,
}

impl EngineChoice {
    /// The name on the command line and in the socket protocol's header.
    pub fn name(self) -> &'static str {
        match self {
            EngineChoice::Soniox => "soniox",
            EngineChoice::Local => "local",
        }
    }
}

/// Engines to fall back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FallbackChoice {
    /// Moonshine through sherpa-onnx, on this machine.
    Local,
}

/// Soniox data-residency regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Region {
    /// United States (default).
    Us,
    /// European Union.
    Eu,
    /// Japan.
    Jp,
}

impl Region {
    /// The real-time endpoint of the region.
    pub fn url(self) -> &'static str {
        match self {
            Region::Us => "wss://stt-rt.soniox.com/transcribe-websocket",
            Region::Eu => "wss://stt-rt.eu.soniox.com/transcribe-websocket",
            Region::Jp => "wss://stt-rt.jp.soniox.com/transcribe-websocket",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Opts::command().debug_assert();
    }

    /// The man page documents every flag (ripgrep generates its page for
    /// the same reason; this test keeps a hand-written page honest).
    #[test]
    fn man_page_lists_every_flag() {
        let page = include_str!("../man/sttpipe.1");
        let command = Opts::command();
        let arguments = command
            .get_arguments()
            .chain(command.get_subcommands().flat_map(|c| c.get_arguments()));
        for arg in arguments {
            if let Some(long) = arg.get_long() {
                let roff = format!("\\-\\-{}", long.replace('-', "\\-"));
                assert!(
                    page.contains(&roff),
                    "man/sttpipe.1 does not document --{long}"
                );
            }
        }
    }
}
