//! What `sttpipe --version` says: the release, the commit it was built
//! from (build.rs), the default models and what is compiled in, so a bug
//! report names the exact binary.

use std::sync::LazyLock;

use super::session_args::DEFAULT_MODEL;
use super::values::LocalModel;

/// The git commit, from build.rs ("unknown" outside a checkout).
const COMMIT: &str = env!("STTPIPE_GIT_COMMIT");

static TEXT: LazyLock<String> = LazyLock::new(|| {
    let fuzzing = if cfg!(feature = "fuzzing") {
        "on"
    } else {
        "off"
    };
    let decoders: Vec<&str> = crate::input::decoded_formats().collect();
    format!(
        "{version}\n\
         commit: {COMMIT}\n\
         default model: {DEFAULT_MODEL} (Soniox), {local} (local engine)\n\
         engines: soniox, local (sherpa-onnx, loaded at run time)\n\
         decoders: {decoders}\n\
         features: fuzzing {fuzzing}",
        version = env!("CARGO_PKG_VERSION"),
        local = LocalModel::TinyEn.name(),
        decoders = decoders.join(", "),
    )
});

/// The text after "sttpipe " for both `-V` and `--version`.
pub(crate) fn text() -> &'static str {
    TEXT.as_str()
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_the_commit_the_models_and_the_features() {
        let text = super::text();
        assert!(text.starts_with(env!("CARGO_PKG_VERSION")), "{text}");
        assert!(text.contains("\ncommit: "), "{text}");
        assert!(text.contains("stt-rt-v6 (Soniox)"), "{text}");
        assert!(text.contains("MP3") && text.contains("WAV"), "{text}");
        assert!(
            !text.contains("Ogg Opus"),
            "passed through, not decoded: {text}"
        );
        assert!(
            text.ends_with("fuzzing off") || text.ends_with("fuzzing on"),
            "{text}"
        );
    }

    /// The local model named is the one --local-model defaults to.
    #[test]
    fn the_local_model_is_the_flags_default() {
        use clap::CommandFactory;
        let command = crate::cli::Opts::command();
        let arg = command
            .get_arguments()
            .find(|arg| arg.get_long() == Some("local-model"))
            .expect("--local-model exists");
        let default = arg.get_default_values().first().expect("it has a default");
        assert_eq!(default.to_str(), Some(super::LocalModel::TinyEn.name()));
    }
}
