//! `soniox-emulator`: a local fake of the Soniox real-time speech-to-text
//! WebSocket API, and a generator of the marker audio it "recognises".
//!
//! `serve` runs the emulator (see the `soniox_emulator` library) until SIGINT or
//! SIGTERM, printing its WebSocket URL as the first line on stdout; with
//! `--tls-cert` and `--tls-key` it serves `wss://`.
//! `markers` writes pcm_s16le audio carrying word markers; `decode` lists the
//! markers found in such audio.

use std::io::{Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use soniox_emulator::marker;
use soniox_emulator::{Emulator, EmulatorConfig, LimitTier, TlsIdentity};

/// A local emulator of the Soniox real-time speech-to-text WebSocket API.
///
/// Audio in pcm_s16le carrying word markers (see `markers`) is "recognised"
/// deterministically, with exact timestamps; other audio only advances the
/// progress counters.
#[derive(Debug, Parser)]
#[command(name = "soniox-emulator", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the emulator until SIGINT/SIGTERM. Prints the ws:// (or, with
    /// --tls-cert/--tls-key, wss://) URL as the first line on stdout; logs
    /// go to stderr (filter with RUST_LOG).
    Serve(Box<ServeArgs>),
    /// Write pcm_s16le marker audio (silence carrying words) to stdout or a file.
    Markers(MarkersArgs),
    /// Read pcm_s16le audio (a file or stdin) and list the word markers in it.
    Decode(DecodeArgs),
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// A valid API key; repeat for several. Default: test-key.
    #[arg(long = "key", value_name = "KEY")]
    keys: Vec<String>,
    /// A model to accept; repeat for several. Default: stt-rt-v3 to
    /// stt-rt-v6 and the previews.
    #[arg(long = "model", value_name = "MODEL")]
    models: Vec<String>,
    /// Refuse keys sent only in the start request (the 2027 behaviour).
    #[arg(long)]
    require_header_auth: bool,
    /// Audio (ms) past a word's end before it becomes final.
    #[arg(long, default_value_t = 800)]
    finalize_lag_ms: u64,
    /// Endpoint delay (ms) when the request sets no max_endpoint_delay_ms.
    #[arg(long, default_value_t = 2000)]
    endpoint_delay_ms: u64,
    /// No audio or keepalive for this long → 408 "Request timeout.".
    #[arg(long, default_value_t = 20_000)]
    idle_timeout_ms: u64,
    /// No start request for this long → 408 "Start request timeout".
    #[arg(long, default_value_t = 10_000)]
    start_timeout_ms: u64,
    /// No audio this long after the start request → 408 (off by default).
    #[arg(long)]
    first_audio_timeout_ms: Option<u64>,
    /// Most sessions streaming at once; one more gets 429.
    #[arg(long)]
    max_concurrent: Option<usize>,
    /// How that 429 names the tier: organization, project (the message
    /// names it) or unnamed.
    #[arg(long, value_name = "TIER", default_value = "project", value_parser = parse_tier)]
    limit_tier: LimitTier,
    /// Most connections open at once, idle ones included; one more gets 429
    /// max_concurrent_connections_reached.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Where to serve GET /v1/concurrency-limits over plain HTTP (logged
    /// at start).
    #[arg(long, default_value = "127.0.0.1:0")]
    rest_listen: SocketAddr,
    /// Longest stream in ms of audio; more gets 400 "Audio is too long.".
    #[arg(long, default_value_t = 300 * 60 * 1000)]
    max_stream_ms: u64,
    /// For container formats, bytes counted as 1 ms of audio.
    #[arg(long, default_value_t = 16.0)]
    container_bytes_per_ms: f64,
    /// Divide every wall-clock timeout by this factor (e.g. 100 for tests).
    #[arg(long, default_value_t = 1.0)]
    time_scale: f64,
    /// Fault: abruptly close TCP once a session has received this much audio (ms).
    #[arg(long, value_name = "MS")]
    drop_after_audio_ms: Option<u64>,
    /// Fault: send error CODE (e.g. 503) once a session has received MS of audio.
    #[arg(long, value_name = "MS:CODE", value_parser = parse_ms_code)]
    error_after_audio_ms: Option<(u64, u16)>,
    /// Fault: go half-open (silent, pings unanswered) after this much audio (ms).
    #[arg(long, value_name = "MS")]
    stall_after_audio_ms: Option<u64>,
    /// Act as a gateway queueing each session for SECS after its start
    /// request (sttpipe's queued frames), then recognise its audio.
    #[arg(long, value_name = "SECS")]
    queue_first: Option<f64>,
    /// Fault: reject the first sessions with these codes, in order (e.g. 503,429).
    #[arg(long, value_name = "CODES", value_delimiter = ',')]
    reject_connects: Vec<u16>,
    /// Serve wss:// with this PEM certificate chain (leaf first); needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The PEM private key of --tls-cert; needs --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["text", "words"])))]
struct MarkersArgs {
    /// The words to speak, separated by spaces.
    #[arg(long)]
    text: Option<String>,
    /// Instead of --text: this many words from the built-in script.
    #[arg(long)]
    words: Option<usize>,
    /// With --words: ms from one word's start to the next.
    #[arg(long, default_value_t = 500)]
    spacing_ms: u64,
    /// With --text: duration of each word (ms). With --words it is
    /// min(300, spacing).
    #[arg(long, default_value_t = 300)]
    word_ms: u32,
    /// With --text: silence between words (ms).
    #[arg(long, default_value_t = 200)]
    gap_ms: u64,
    /// Silence before the first word (ms).
    #[arg(long, default_value_t = 500)]
    lead_ms: u64,
    /// Total length (ms). Default: the last word's end plus 1500 ms of
    /// silence, enough for the words to become final.
    #[arg(long)]
    total_ms: Option<u64>,
    /// Sample rate (Hz).
    #[arg(long, default_value_t = 16_000)]
    rate: u32,
    /// Channels (the markers go into every channel).
    #[arg(long, default_value_t = 1)]
    channels: u16,
    /// Write here instead of stdout.
    #[arg(long, short)]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
struct DecodeArgs {
    /// Sample rate (Hz).
    #[arg(long, default_value_t = 16_000)]
    rate: u32,
    /// Channels.
    #[arg(long, default_value_t = 1)]
    channels: u16,
    /// The audio file; stdin if absent.
    file: Option<PathBuf>,
}

/// Parses a `--limit-tier`.
fn parse_tier(s: &str) -> Result<LimitTier, String> {
    match s {
        "organization" => Ok(LimitTier::Organization),
        "project" => Ok(LimitTier::Project),
        "unnamed" => Ok(LimitTier::Unnamed),
        _ => Err(format!(
            "expected organization, project or unnamed, got {s:?}"
        )),
    }
}

/// Parses `MS:CODE`.
fn parse_ms_code(s: &str) -> Result<(u64, u16), String> {
    let (ms, code) = s
        .split_once(':')
        .ok_or_else(|| format!("expected MS:CODE, got {s:?}"))?;
    let ms = ms.parse().map_err(|e| format!("bad MS {ms:?}: {e}"))?;
    let code = code
        .parse()
        .map_err(|e| format!("bad CODE {code:?}: {e}"))?;
    Ok((ms, code))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Markers(args) => markers(args),
        Command::Decode(args) => decode(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soniox-emulator: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Reads a PEM file, naming it in the error.
fn read_pem(path: &std::path::Path, what: &str) -> std::io::Result<String> {
    std::fs::read_to_string(path).map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot read {what} {}: {e}", path.display()),
        )
    })
}

fn serve(args: ServeArgs) -> std::io::Result<()> {
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsIdentity {
            cert_chain_pem: read_pem(cert, "--tls-cert")?,
            key_pem: read_pem(key, "--tls-key")?,
        }),
        // clap's `requires` makes the two flags come together.
        _ => None,
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = EmulatorConfig {
        listen: args.listen,
        api_keys: if args.keys.is_empty() {
            EmulatorConfig::default().api_keys
        } else {
            args.keys
        },
        models: if args.models.is_empty() {
            EmulatorConfig::default().models
        } else {
            args.models
        },
        require_header_auth: args.require_header_auth,
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        start_timeout: Duration::from_millis(args.start_timeout_ms),
        first_audio_timeout: args.first_audio_timeout_ms.map(Duration::from_millis),
        finalize_lag_ms: args.finalize_lag_ms,
        default_endpoint_delay_ms: args.endpoint_delay_ms,
        max_concurrent: args.max_concurrent,
        limit_tier: args.limit_tier,
        max_connections: args.max_connections,
        rest_listen: args.rest_listen,
        max_stream_ms: args.max_stream_ms,
        container_bytes_per_ms: args.container_bytes_per_ms,
        drop_after_audio_ms: args.drop_after_audio_ms,
        error_after_audio_ms: args.error_after_audio_ms,
        stall_after_audio_ms: args.stall_after_audio_ms,
        reject_connects: args.reject_connects,
        time_scale: args.time_scale,
        tls,
        // Timestamps are for benchmarks in the emulator's own process.
        probe: None,
        queue_first: args
            .queue_first
            .filter(|secs| secs.is_finite() && *secs > 0.0)
            .map(Duration::from_secs_f64),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let emulator = Emulator::start(config).await?;
        {
            // The URL is the first stdout line: scripts read it to connect.
            let mut out = std::io::stdout().lock();
            writeln!(out, "{}", emulator.url())?;
            out.flush()?;
        }
        tracing::info!(url = %emulator.rest_url(), "GET /v1/concurrency-limits served");
        wait_for_signal().await?;
        tracing::info!("shutting down");
        emulator.shutdown().await;
        Ok(())
    })
}

/// Waits for SIGINT or SIGTERM.
async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

fn markers(args: MarkersArgs) -> std::io::Result<()> {
    let words = match (&args.text, args.words) {
        (Some(text), _) => marker::sentence(text, args.lead_ms, args.word_ms, args.gap_ms),
        (None, Some(n)) => marker::script(n, args.spacing_ms, args.lead_ms),
        // clap's required group guarantees one of the two.
        (None, None) => unreachable!("--text or --words is required"),
    };
    let end = words.last().map_or(0, marker::Word::end_ms);
    let total_ms = args.total_ms.unwrap_or(end + 1500);
    // Report bad arguments as an error rather than letting encode panic.
    marker::validate(&words, total_ms, args.rate, args.channels)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let audio = marker::encode(&words, total_ms, args.rate, args.channels);
    match &args.out {
        Some(path) => std::fs::write(path, &audio)?,
        None => {
            let mut out = std::io::stdout().lock();
            out.write_all(&audio)?;
            out.flush()?;
        }
    }
    eprintln!(
        "{} words, {total_ms} ms, {} Hz, {} channel(s), {} bytes",
        words.len(),
        args.rate,
        args.channels,
        audio.len()
    );
    Ok(())
}

fn decode(args: DecodeArgs) -> std::io::Result<()> {
    if args.rate == 0 || args.channels == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "--rate and --channels must be positive",
        ));
    }
    let mut input: Box<dyn Read> = match &args.file {
        Some(path) => Box::new(std::fs::File::open(path)?),
        None => Box::new(std::io::stdin().lock()),
    };
    let mut decoder = marker::Decoder::new(args.rate, args.channels);
    let mut buf = vec![0u8; 64 * 1024];
    let mut out = std::io::stdout().lock();
    loop {
        let n = input.read(&mut buf)?;
        if n == 0 {
            break;
        }
        for w in decoder.push(&buf[..n]) {
            writeln!(out, "{}\t{}\t{:?}", w.start_ms, w.duration_ms, w.text)?;
        }
    }
    Ok(())
}
