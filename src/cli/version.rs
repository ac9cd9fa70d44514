//! What `sttpipe --version` says: the release, the commit it was built from,
//! the default model and what was compiled in, so that a bug report carries
//! everything needed to rebuild the same binary.

use super::session_args::DEFAULT_MODEL;

/// The containers and codecs decoded in-process (the symphonia features in
/// Cargo.toml, and sttpipe's own WAV reader).
const DECODERS: &str = "wav, mp3, flac, ogg-vorbis, mp4-aac, matroska, aiff";

/// The long form of the version, for `--version`.
pub(crate) fn long_version() -> String {
    let fuzzing = if cfg!(feature = "fuzzing") {
        "on"
    } else {
        "off"
    };
    format!(
        "{version}\n\
         commit:        {commit}\n\
         default model: {DEFAULT_MODEL}\n\
         decoders:      {DECODERS}\n\
         local engine:  sherpa-onnx, loaded at run time (sttpipe engine install)\n\
         tls:           rustls (ring)\n\
         features:      fuzzing {fuzzing}",
        version = env!("CARGO_PKG_VERSION"),
        commit = env!("STTPIPE_GIT_COMMIT"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_commit_and_the_default_model() {
        let text = long_version();
        assert!(text.starts_with(env!("CARGO_PKG_VERSION")));
        assert!(text.contains(DEFAULT_MODEL));
        let commit = text.lines().nth(1).unwrap_or_default();
        assert!(commit.starts_with("commit:") && commit.len() > "commit:".len() + 4);
    }
}
