//! Diagnostics on stderr, or to the journal when stderr is the journal.
//!
//! Logs never go to stdout (that is for NDJSON only) and never carry the API
//! key or audio. The default level is `warn`, so a filter in a pipeline stays
//! quiet; `-v`/`-vv` or `RUST_LOG` raise it.

use std::io::IsTerminal;
use std::os::fd::AsFd;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Installs the global subscriber. `verbosity` counts `-v` flags.
pub(crate) fn init(verbosity: u8) {
    let default = match verbosity {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    if stderr_is_journal()
        && let Ok(journal) = tracing_journald::layer()
    {
        // A failure means a subscriber is already set (tests): keep it.
        let _ = tracing_subscriber::registry()
            .with(filter)
            .with(journal)
            .try_init();
        return;
    }
    let stderr = std::io::stderr();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(stderr.is_terminal())
        .with_target(false)
        .try_init();
}

/// Whether systemd connected stderr to the journal: `JOURNAL_STREAM` names
/// the device and inode of the stream it set up (systemd.exec(5)).
fn stderr_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    let Some((dev, ino)) = stream.split_once(':') else {
        return false;
    };
    let Ok(stat) = nix::sys::stat::fstat(std::io::stderr().as_fd()) else {
        return false;
    };
    dev.parse::<u64>().ok() == Some(stat.st_dev) && ino.parse::<u64>().ok() == Some(stat.st_ino)
}
