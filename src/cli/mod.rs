//! The command line, as the user types it.
//!
//! Doc comments here are the `--help` text. Values are typed and
//! range-checked by their types ([`values`]); [`crate::config`] resolves
//! the rest. The flags fall in groups: [`SessionArgs`], one session's
//! options, which are also the daemon's socket header; [`ServiceArgs`] and
//! [`LocalEngineArgs`], shared by the filter and `serve`; the filter's
//! [`ReliabilityArgs`]; and [`ServeArgs`], which are also the keys of the
//! daemon's settings file.

pub(crate) mod completions;
pub(crate) mod engine;
pub(crate) mod groups;
pub(crate) mod session_args;
pub(crate) mod values;
mod version;

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use serde::{Deserialize, Serialize};

pub(crate) use groups::{LocalEngineArgs, ReliabilityArgs, ServiceArgs};
pub(crate) use session_args::{ContextArg, SessionArgs};
use values::{EngineChoice, FallbackChoice, IpNet, ListenAddr, OutputFormat, Seconds};

/// Where the daemon listens by default (and where sttpipe.socket puts it).
pub(crate) const DEFAULT_SOCKET: &str = "/run/sttpipe/sttpipe.sock";
/// Soniox's default limit of concurrent streams per project.
pub(crate) const DEFAULT_MAX_UPSTREAM: usize = 10;
/// Soniox's default limit of new streams a minute per project.
pub(crate) const DEFAULT_NEW_SESSIONS_PER_MINUTE: u32 = 100;
/// Sessions that may wait for an upstream slot.
pub(crate) const DEFAULT_QUEUE: usize = 100;
/// Upstream connections the daemon keeps open and ready.
pub(crate) const DEFAULT_WARM_POOL: usize = 2;
/// The daemon's bound on the drain after SIGTERM; below the units'
/// `TimeoutStopSec=`.
pub(crate) const DEFAULT_DAEMON_DRAIN: Seconds = Seconds::from_secs(10);
/// How long a client has for its header line.
pub(crate) const DEFAULT_HEADER_TIMEOUT: Seconds = Seconds::from_secs(5);
/// How long an admitted socket client has for its first audio.
pub(crate) const DEFAULT_FIRST_AUDIO_TIMEOUT: Seconds = Seconds::from_secs(30);
/// Characters a caption line, at most (the broadcast rule).
pub(crate) const DEFAULT_CUE_LINE_CHARS: usize = 42;
/// Lines a caption cue, at most.
pub(crate) const DEFAULT_CUE_LINES: usize = 2;
/// The shortest a cue stays on screen, where the audio allows.
pub(crate) const DEFAULT_CUE_MIN_DURATION: Seconds = Seconds::from_secs(1);
/// The longest a cue lasts.
pub(crate) const DEFAULT_CUE_MAX_DURATION: Seconds = Seconds::from_secs(7);
/// The silence between words that begins a new cue.
pub(crate) const DEFAULT_CUE_PAUSE: Seconds = Seconds::from_millis(1200);
/// The reading speed a cue is held for, characters a second.
pub(crate) const DEFAULT_CUE_READING_SPEED: u32 = 17;

/// The examples after the flags: one command a line, short enough not to
/// wrap at 80 columns.
const EXAMPLES: &str = "\
Examples:
  sttpipe --format text talk.mp3
  sttpipe --format srt talk.mp4 > talk.srt
Offline, no key (once: sttpipe engine install):
  sttpipe --engine local --format text talk.mp3";

/// Streaming speech-to-text as a Unix filter, for the Soniox real-time API.
///
/// Reads audio from FILEs (one after another, on one timeline), or stdin,
/// or a named FIFO: WAV, MP3, FLAC, Ogg Vorbis, MP4/M4A (AAC),
/// Matroska/WebM, AIFF are recognised and decoded here; anything else is raw
/// audio (pcm_s16le, 16 kHz, mono unless --audio-format, --rate and
/// --channels say otherwise). Streams it to Soniox at real-time pace (files
/// too: Soniox takes audio no faster), or to the local engine as fast as it
/// decodes, and writes the transcript to stdout as NDJSON, one event a line,
/// flushed as it arrives.
///
/// The API key comes from SONIOX_API_KEY, --api-key-file, or
/// $CREDENTIALS_DIRECTORY/soniox-api-key; never from the command line.
/// See sttpipe(1) for the output schema and exit statuses.
#[derive(Debug, Parser)]
#[command(
    name = "sttpipe",
    version = version::text(),
    max_term_width = 100,
    args_conflicts_with_subcommands = true,
    after_help = EXAMPLES
)]
pub(crate) struct Opts {
    /// Run as a daemon, or ask one for its status (without: the filter).
    #[command(subcommand)]
    pub(crate) command: Option<Command>,

    /// Audio files to read one after another, on one timeline (`-` for
    /// stdin); without any, stdin.
    #[arg(value_name = "FILE", conflicts_with = "input")]
    pub(crate) files: Vec<PathBuf>,

    /// Read audio from PATH (a file or a named FIFO) instead of stdin.
    #[arg(short, long, value_name = "PATH", help_heading = "Input")]
    pub(crate) input: Option<PathBuf>,

    /// Send the input to Soniox as it is, undecoded (audio_format auto):
    /// for a format sttpipe does not decode. Such input cannot be replayed
    /// after a reconnect, nor rotated, nor given to the local engine.
    #[arg(long, conflicts_with = "audio_format", help_heading = "Input")]
    pub(crate) passthrough: bool,

    /// Keep reading a FIFO across writers: each writer's audio is finalized
    /// when it closes, and the next writer's audio continues the stream.
    #[arg(long, help_heading = "Input")]
    pub(crate) follow: bool,

    /// Output format: NDJSON events, plain text for people (a line break at
    /// each endpoint, finalization and the end), or live captions (srt,
    /// vtt: each cue written once complete; --endpoint-detection is on).
    #[arg(
        long,
        value_enum,
        value_name = "FORMAT",
        default_value = "ndjson",
        help_heading = "Output"
    )]
    pub(crate) format: OutputFormat,

    /// With --format text: begin each line with the time of its first word,
    /// as [HH:MM:SS.mmm].
    #[arg(long, help_heading = "Output")]
    pub(crate) timestamps: bool,

    /// Captions: at most N characters a line.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CUE_LINE_CHARS, help_heading = "Output")]
    pub(crate) cue_line_chars: usize,

    /// Captions: at most N lines a cue.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CUE_LINES, help_heading = "Output")]
    pub(crate) cue_lines: usize,

    /// Captions: a cue stays at least SECS, where the next words allow.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_CUE_MIN_DURATION, help_heading = "Output")]
    pub(crate) cue_min_duration: Seconds,

    /// Captions: a cue lasts at most SECS.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_CUE_MAX_DURATION, help_heading = "Output")]
    pub(crate) cue_max_duration: Seconds,

    /// Captions: a silence of SECS or more between words begins a new cue.
    #[arg(long, value_name = "SECS", default_value_t = DEFAULT_CUE_PAUSE, help_heading = "Output")]
    pub(crate) cue_pause: Seconds,

    /// Captions: hold a cue long enough to read at N characters a second,
    /// where the next words allow.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CUE_READING_SPEED, help_heading = "Output")]
    pub(crate) cue_reading_speed: u32,

    /// With --format srt or vtt and a translation: write the translation's
    /// captions to FILE, cue for cue with the spoken text's times.
    #[arg(long, value_name = "FILE", help_heading = "Output")]
    pub(crate) captions_translation: Option<PathBuf>,

    /// Keep the caption showing now (or the words being spoken) in PATH,
    /// replaced whole at each change: for OBS text sources and status bars.
    #[arg(long, value_name = "PATH", help_heading = "Output")]
    pub(crate) now_file: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) session: SessionArgs,

    #[command(flatten)]
    pub(crate) local_engine: LocalEngineArgs,

    /// Stream through the sttpipe daemon listening at SOCKET instead of to
    /// Soniox directly: same flags, same output, no API key needed here.
    #[arg(
        long,
        value_name = "SOCKET",
        env = "STTPIPE_SOCKET",
        help_heading = "Service"
    )]
    pub(crate) connect: Option<PathBuf>,

    #[command(flatten)]
    pub(crate) service: ServiceArgs,

    #[command(flatten)]
    pub(crate) reliability: ReliabilityArgs,

    /// More log output on stderr (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Run the daemon: a Unix socket that multiplexes client sessions onto
    /// Soniox with the daemon's key, within Soniox's quotas; optionally a
    /// Soniox-compatible WebSocket endpoint and a Wyoming server for Home
    /// Assistant. See sttpipe-protocol(7).
    Serve(Box<ServeArgs>),
    /// Print the daemon's status as JSON: sessions, queue, upstream usage.
    Status(StatusArgs),
    /// Print a shell completion script, e.g.
    /// `sttpipe completions bash > ~/.local/share/bash-completion/completions/sttpipe`.
    Completions(completions::CompletionsArgs),
    /// Install the local engine (sttpipe engine install), or list what is
    /// installed and where.
    Engine(engine::EngineArgs),
}

/// `sttpipe serve`. Its long flags are also the keys of the settings file
/// (with underscores); a flag given on the command line wins over the file.
#[derive(Debug, Clone, Args, Serialize, Deserialize)]
pub(crate) struct ServeArgs {
    /// The Unix socket to listen on, unless systemd passes one (socket
    /// activation).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,

    /// Settings file (TOML, keys named as these flags with underscores);
    /// flags win. Read again on SIGHUP [default: /etc/sttpipe/sttpipe.toml,
    /// if it exists].
    #[arg(long, value_name = "PATH")]
    #[serde(skip)]
    pub(crate) config: Option<PathBuf>,

    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) service: ServiceArgs,

    /// Upstream sessions open at once (Soniox's project limit).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_MAX_UPSTREAM)]
    pub(crate) max_upstream: usize,

    /// New upstream sessions a minute (Soniox's limit).
    #[arg(long, value_name = "N", default_value_t = DEFAULT_NEW_SESSIONS_PER_MINUTE)]
    pub(crate) new_sessions_per_minute: u32,

    /// Sessions that may wait for an upstream slot; past it, `busy`.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_QUEUE)]
    pub(crate) queue: usize,

    /// Sessions one uid may have at once; 0 for no limit.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub(crate) max_sessions_per_uid: usize,

    /// Only these uids may connect (comma-separated; root always may).
    #[arg(long, value_name = "UIDS", value_delimiter = ',')]
    pub(crate) allow_uid: Vec<u32>,

    /// Only processes whose group is one of these gids may connect.
    #[arg(long, value_name = "GIDS", value_delimiter = ',')]
    pub(crate) allow_gid: Vec<u32>,

    /// Group to own a socket the daemon binds itself (mode 0660).
    #[arg(long, value_name = "GROUP")]
    pub(crate) socket_group: Option<String>,

    /// Also serve the Soniox WebSocket protocol (and a browser page) on
    /// ADDR, e.g. 127.0.0.1:3001.
    #[arg(long, value_name = "ADDR")]
    pub(crate) ws_listen: Option<SocketAddr>,

    /// Clients of the WebSocket endpoint must present one of the tokens in
    /// PATH as their API key: `NAME:TOKEN` lines (`NAME:TOKEN:max=N` limits
    /// that name to N sessions; a lone token is named `default`), read again
    /// on SIGHUP; without it, anyone who can reach the endpoint may use it.
    #[arg(long, value_name = "PATH")]
    pub(crate) ws_token_file: Option<PathBuf>,

    /// Serve the WebSocket endpoint (and its page and /health) over TLS
    /// with the PEM certificate chain in PATH (leaf first); needs
    /// --ws-tls-key. Read again on SIGHUP, where a bad one keeps the old.
    #[arg(long, value_name = "PATH", requires = "ws_tls_key")]
    pub(crate) ws_tls_cert: Option<PathBuf>,

    /// The PEM private key of --ws-tls-cert.
    #[arg(long, value_name = "PATH", requires = "ws_tls_cert")]
    pub(crate) ws_tls_key: Option<PathBuf>,

    /// Also serve the Wyoming protocol, Home Assistant's speech-to-text, on
    /// HOST or HOST:PORT (port 10300 when left out), e.g. 0.0.0.0 for the
    /// local network; see --wyoming-allow.
    #[arg(long, value_name = "HOST[:PORT]")]
    pub(crate) wyoming_listen: Option<ListenAddr>,

    /// Wyoming clients that may connect besides loopback (always allowed):
    /// addresses or ADDR/PREFIX blocks, comma-separated, e.g.
    /// 192.168.1.0/24 [default: loopback only].
    #[arg(long, value_name = "NETS", value_delimiter = ',')]
    pub(crate) wyoming_allow: Vec<IpNet>,

    /// Wyoming: end a turn at Soniox's endpoint (the `transcript` goes out
    /// when the speaker stops) and tell clients they need no VAD of their own.
    #[arg(long)]
    pub(crate) wyoming_endpointing: bool,

    /// Wyoming: answer with the final `transcript` only, no
    /// transcript-start, transcript-chunk or transcript-stop.
    #[arg(long)]
    pub(crate) wyoming_no_streaming: bool,

    /// Upstream connections kept open and ready, so that a session's first
    /// audio goes out without a handshake.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_WARM_POOL)]
    pub(crate) warm_pool: usize,

    /// Show Soniox's live counts of streams and connections and their
    /// limits (GET /v1/concurrency-limits) in `status`, asked at most every
    /// 15 s while sessions wait in the queue.
    #[arg(long)]
    pub(crate) live_quota: bool,

    /// The base URL of Soniox's REST API, for --live-quota [default: from
    /// the WebSocket URL: api.soniox.com over HTTPS for the US region].
    #[arg(long, value_name = "URL")]
    pub(crate) quota_url: Option<String>,

    /// On SIGTERM, wait at most SECS for the sessions' final tokens; keep it
    /// below the unit's TimeoutStopSec.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_DAEMON_DRAIN,
        help_heading = "Reliability"
    )]
    pub(crate) drain_timeout: Seconds,

    /// A client must send its header line within SECS.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_HEADER_TIMEOUT,
        help_heading = "Reliability"
    )]
    pub(crate) header_timeout: Seconds,

    /// A socket client must send its first audio within SECS of being
    /// admitted; else it gets an error and its slot goes to the next
    /// client. 0 waits for ever.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = DEFAULT_FIRST_AUDIO_TIMEOUT,
        help_heading = "Reliability"
    )]
    pub(crate) first_audio_timeout: Seconds,

    /// Close a client's upstream session after SECS without audio (Soniox
    /// bills idle time) and give its slot to the next waiting client; the
    /// session asks again, in turn, when its audio returns. 0 keeps both.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = groups::DEFAULT_IDLE_CLOSE,
        help_heading = "Reliability"
    )]
    pub(crate) idle_close: Seconds,

    /// A client's session gives up reconnecting after SECS without a
    /// working upstream session; time queued again after Soniox refused a
    /// start (429) does not count.
    #[arg(
        long,
        value_name = "SECS",
        default_value_t = groups::DEFAULT_RETRY_BUDGET,
        help_heading = "Reliability"
    )]
    pub(crate) retry_budget: Seconds,

    /// The engine for sessions that do not ask for one: the Soniox service,
    /// or Moonshine on this machine, loaded at start; with local, no API key
    /// is needed.
    #[arg(
        long,
        value_enum,
        value_name = "ENGINE",
        default_value_t = EngineChoice::Soniox,
        help_heading = "Engine"
    )]
    pub(crate) engine: EngineChoice,

    /// When Soniox cannot be reached or fails for good, sessions go on with
    /// the local engine (loaded at start).
    #[arg(long, value_enum, value_name = "ENGINE", help_heading = "Engine")]
    pub(crate) fallback: Option<FallbackChoice>,

    #[command(flatten)]
    #[serde(flatten)]
    pub(crate) local_engine: LocalEngineArgs,

    /// More log output (-v info, -vv debug). RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count)]
    #[serde(skip)]
    pub(crate) verbose: u8,
}

/// `sttpipe status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    /// The daemon's socket.
    #[arg(long, value_name = "PATH", env = "STTPIPE_SOCKET", default_value = DEFAULT_SOCKET)]
    pub(crate) socket: PathBuf,
}

impl std::fmt::Display for EngineChoice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineChoice::Soniox => "soniox",
            EngineChoice::Local => "local",
        })
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
        let page = include_str!("../../man/sttpipe.1");
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
