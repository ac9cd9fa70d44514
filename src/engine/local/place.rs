//! Where the local engine's files live, found one way for the engine, for
//! `sttpipe engine install` and for `sttpipe engine list`.
//!
//! An *engine directory* (what `--model-dir`, `--dir`, `STTPIPE_MODEL_DIR`
//! name) holds the files of each layout in its own subdirectory,
//! `local-engine/<LAYOUT_VERSION>/`, so that a binary never loads files
//! installed for another set of pins. The engine directory is the first of:
//!
//! 1. `--model-dir DIR` (`model_dir` in the daemon's settings file), or
//!    `--dir DIR` for `sttpipe engine`;
//! 2. `$STTPIPE_MODEL_DIR`;
//! 3. `$STATE_DIRECTORY`, the first of its paths (systemd sets it for a
//!    unit with `StateDirectory=`: `/var/lib/sttpipe` for sttpipe.service);
//! 4. the user's data directory, `$XDG_DATA_HOME/sttpipe` (without it
//!    `~/.local/share/sttpipe`), when it holds the engine (or as the place
//!    to install into);
//! 5. `/var/lib/sttpipe`, when it holds the engine (a system-wide install
//!    that users may read).
//!
//! The first three are taken as given; the last two are looked into, and
//! without an install in either the user's directory is the one named in
//! the error and written by `sttpipe engine install`.

use std::path::{Path, PathBuf};

use crate::cli::values::LocalModel;

/// The layout version: the last component of the layout directory. It
/// changes whenever a pinned file does (`crate::engine::install`'s pins).
pub(crate) const LAYOUT_VERSION: &str = "1";
/// The system-wide engine directory, the daemon's state directory.
pub(crate) const SYSTEM_DIR: &str = "/var/lib/sttpipe";
/// The environment variable naming the engine directory.
pub(crate) const DIR_VARIABLE: &str = "STTPIPE_MODEL_DIR";

/// Why a directory was chosen, for `engine list` and for the hint in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Source {
    /// `--model-dir` or `--dir`.
    Flag,
    /// `$STTPIPE_MODEL_DIR`.
    Variable,
    /// `$STATE_DIRECTORY` (systemd).
    StateDirectory,
    /// The user's data directory.
    User,
    /// `/var/lib/sttpipe`.
    System,
}

impl Source {
    /// How `engine list` says it.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            Source::Flag => "--dir/--model-dir",
            Source::Variable => "$STTPIPE_MODEL_DIR",
            Source::StateDirectory => "$STATE_DIRECTORY",
            Source::User => "the user's data directory",
            Source::System => "the system-wide directory",
        }
    }
}

/// An engine directory and why it was chosen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Place {
    /// The engine directory (what `--model-dir` names).
    pub(crate) root: PathBuf,
    /// Why this one.
    pub(crate) source: Source,
}

impl Place {
    /// The directory the files of this binary's layout are in.
    pub(crate) fn layout_dir(&self) -> PathBuf {
        layout_dir(&self.root)
    }
}

/// The layout directory inside the engine directory `root`.
pub(crate) fn layout_dir(root: &Path) -> PathBuf {
    root.join("local-engine").join(LAYOUT_VERSION)
}

/// The directory the engine runs `model` from: see the module docs for the
/// order. `None` when nothing names one (no `HOME` either).
pub(crate) fn lookup(
    explicit: Option<&Path>,
    model: LocalModel,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Place> {
    if let Some(place) = given(explicit, env) {
        return Some(place);
    }
    let user = user_dir(env);
    let system = Place {
        root: PathBuf::from(SYSTEM_DIR),
        source: Source::System,
    };
    match user {
        Some(user) if holds(&user.layout_dir(), model) => Some(user),
        _ if holds(&system.layout_dir(), model) => Some(system),
        user => user,
    }
}

/// The directory `sttpipe engine install` writes to: the same order
/// without the system-wide fallback. `None` without `HOME`.
pub(crate) fn install_target(
    explicit: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<Place> {
    given(explicit, env).or_else(|| user_dir(env))
}

/// Steps 1 to 3: a directory named by a flag or the environment.
fn given(explicit: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Option<Place> {
    if let Some(dir) = explicit {
        return Some(Place {
            root: dir.to_owned(),
            source: Source::Flag,
        });
    }
    let set = |name: &str| env(name).filter(|value| !value.is_empty());
    if let Some(dir) = set(DIR_VARIABLE) {
        return Some(Place {
            root: PathBuf::from(dir),
            source: Source::Variable,
        });
    }
    // systemd separates several state directories with colons.
    if let Some(dirs) = set("STATE_DIRECTORY")
        && let Some(first) = dirs.split(':').find(|dir| !dir.is_empty())
    {
        return Some(Place {
            root: PathBuf::from(first),
            source: Source::StateDirectory,
        });
    }
    None
}

/// `$XDG_DATA_HOME/sttpipe`, or `$HOME/.local/share/sttpipe`.
fn user_dir(env: &dyn Fn(&str) -> Option<String>) -> Option<Place> {
    let set = |name: &str| env(name).filter(|value| !value.is_empty());
    // The XDG spec: a relative XDG_DATA_HOME is invalid and ignored.
    let data = match set("XDG_DATA_HOME").filter(|dir| Path::new(dir).is_absolute()) {
        Some(dir) => PathBuf::from(dir),
        None => PathBuf::from(set("HOME")?).join(".local").join("share"),
    };
    Some(Place {
        root: data.join("sttpipe"),
        source: Source::User,
    })
}

/// Whether the layout directory `dir` has every file `model` needs.
pub(crate) fn holds(dir: &Path, model: LocalModel) -> bool {
    required_files(model)
        .iter()
        .all(|file| dir.join(file).is_file())
}

/// The directory of a model's files inside the layout directory.
pub(crate) fn model_dir_name(model: LocalModel) -> &'static str {
    match model {
        LocalModel::TinyEn => "moonshine-tiny-en",
        LocalModel::BaseEn => "moonshine-base-en",
    }
}

/// The files a layout directory must hold for `model`.
pub(crate) fn required_files(model: LocalModel) -> Vec<String> {
    let mut files = vec![
        "lib/libsherpa-onnx-c-api.so".to_owned(),
        "lib/libonnxruntime.so".to_owned(),
        "silero_vad.onnx".to_owned(),
    ];
    for name in [
        "encoder_model.ort",
        "decoder_model_merged.ort",
        "tokens.txt",
    ] {
        files.push(format!("{}/{name}", model_dir_name(model)));
    }
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> + use<> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    fn install_into(root: &Path, model: LocalModel) {
        for file in required_files(model) {
            let path = layout_dir(root).join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
    }

    #[test]
    fn flag_then_variable_then_state_directory_then_user() {
        let all = env(&[
            ("STTPIPE_MODEL_DIR", "/m"),
            ("STATE_DIRECTORY", "/var/lib/sttpipe:/other"),
            ("HOME", "/home/u"),
        ]);
        let tiny = LocalModel::TinyEn;
        let at = |place: Option<Place>| place.map(|p| (p.root, p.source));
        assert_eq!(
            at(lookup(Some(Path::new("/f")), tiny, &all)),
            Some(("/f".into(), Source::Flag))
        );
        assert_eq!(
            at(lookup(None, tiny, &all)),
            Some(("/m".into(), Source::Variable))
        );
        let state = env(&[
            ("STATE_DIRECTORY", "/var/lib/sttpipe:/other"),
            ("HOME", "/h"),
        ]);
        assert_eq!(
            at(install_target(None, &state)),
            Some(("/var/lib/sttpipe".into(), Source::StateDirectory))
        );
        let home = env(&[("HOME", "/home/u"), ("STTPIPE_MODEL_DIR", "")]);
        assert_eq!(
            at(install_target(None, &home)),
            Some(("/home/u/.local/share/sttpipe".into(), Source::User))
        );
        let xdg = env(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "/d")]);
        assert_eq!(
            at(install_target(None, &xdg)),
            Some(("/d/sttpipe".into(), Source::User))
        );
        let relative = env(&[("HOME", "/home/u"), ("XDG_DATA_HOME", "d")]);
        assert_eq!(
            install_target(None, &relative).unwrap().root,
            PathBuf::from("/home/u/.local/share/sttpipe")
        );
        assert_eq!(install_target(None, &env(&[])), None);
    }

    #[test]
    fn the_user_directory_is_used_when_it_holds_the_model() {
        let data = tempfile::tempdir().unwrap();
        let vars = env(&[("XDG_DATA_HOME", data.path().to_str().unwrap())]);
        let root = data.path().join("sttpipe");
        // Nothing anywhere (unless this machine has a system-wide install):
        // the user's directory is named.
        if !holds(&layout_dir(Path::new(SYSTEM_DIR)), LocalModel::BaseEn) {
            assert_eq!(lookup(None, LocalModel::BaseEn, &vars).unwrap().root, root);
        }
        install_into(&root, LocalModel::TinyEn);
        let found = lookup(None, LocalModel::TinyEn, &vars).unwrap();
        assert_eq!((found.root, found.source), (root, Source::User));
        assert!(holds(
            &layout_dir(&data.path().join("sttpipe")),
            LocalModel::TinyEn
        ));
        assert!(!holds(
            &layout_dir(&data.path().join("sttpipe")),
            LocalModel::BaseEn
        ));
    }
}
