//! Where `sttpipe engine install` puts the offline engine's files by
//! default, as src/engine/local/place.rs computes it: the layout directory
//! `${XDG_DATA_HOME:-$HOME/.local/share}/sttpipe/local-engine/1`. For the
//! tests and benchmarks that need to know whether it is provisioned. One
//! file, included by the integration tests and the offline-engine benchmark.

use std::path::PathBuf;

/// The default engine's layout directory; `None` without either variable.
pub(crate) fn default_engine_dir() -> Option<PathBuf> {
    let data = match std::env::var_os("XDG_DATA_HOME") {
        Some(dir) if PathBuf::from(&dir).is_absolute() => PathBuf::from(dir),
        _ => match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join(".local").join("share"),
            _ => return None,
        },
    };
    Some(data.join("sttpipe").join("local-engine").join("1"))
}
