//! Where `scripts/fetch-local-engine` puts the offline engine by default,
//! as the script computes it: `${XDG_CACHE_HOME:-$HOME/.cache}/sttpipe/
//! local-engine/1`. For the tests and benchmarks that need to know whether
//! it is provisioned. One file, included by the integration tests and the
//! offline-engine benchmark.

use std::path::PathBuf;

/// The default engine directory; `None` without either variable.
pub(crate) fn default_engine_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join(".cache"),
            _ => return None,
        },
    };
    Some(cache.join("sttpipe").join("local-engine").join("1"))
}
