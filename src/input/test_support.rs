//! Helpers the input tests share: events in a comparable form, reading a file
//! or a channel to the end, and byte patterns that show misplaced bytes.

use std::path::Path;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{InputEvent, InputOptions, Source, spawn};
use crate::audio::AudioFormat;

/// How long any single wait in these tests may take before it fails.
pub(super) const WAIT: Duration = Duration::from_secs(10);

/// An event in a form tests can compare.
#[derive(Debug, PartialEq)]
pub(super) enum Ev {
    Format(AudioFormat),
    Audio(Vec<u8>),
    WriterClosed,
    Warning(String),
    Dropped(usize),
    /// `Error::kind()` of the failure.
    Failed(&'static str),
}

pub(super) fn ev(event: InputEvent) -> Ev {
    match event {
        InputEvent::Format(format) => Ev::Format(format),
        InputEvent::Audio(bytes) => Ev::Audio(bytes.to_vec()),
        InputEvent::WriterClosed => Ev::WriterClosed,
        InputEvent::Warning(message) => Ev::Warning(message),
        InputEvent::PartialFrameDropped(n) => Ev::Dropped(n),
        InputEvent::Failed(error) => Ev::Failed(error.kind()),
    }
}

/// The next event but warnings, or `None` at the end; panics after
/// [`WAIT`]. (The tests' byte patterns are no audio, so the reader warns of
/// them; [`collect_all`] keeps the warnings, for the tests of warnings.)
pub(super) async fn next(rx: &mut mpsc::Receiver<InputEvent>) -> Option<Ev> {
    loop {
        match next_any(rx).await {
            Some(Ev::Warning(_)) => {}
            other => return other,
        }
    }
}

/// The next event, or `None` at the end; panics after [`WAIT`].
async fn next_any(rx: &mut mpsc::Receiver<InputEvent>) -> Option<Ev> {
    timeout(WAIT, rx.recv())
        .await
        .expect("input event within the time limit")
        .map(ev)
}

/// All events but warnings up to the end of input.
pub(super) async fn collect(rx: mpsc::Receiver<InputEvent>) -> Vec<Ev> {
    let mut events = collect_all(rx).await;
    events.retain(|e| !matches!(e, Ev::Warning(_)));
    events
}

/// All events up to the end of input, warnings included.
pub(super) async fn collect_all(mut rx: mpsc::Receiver<InputEvent>) -> Vec<Ev> {
    let mut events = Vec::new();
    while let Some(event) = next_any(&mut rx).await {
        events.push(event);
    }
    events
}

pub(super) fn options(path: &Path) -> InputOptions {
    InputOptions::new(Source::Path(path.to_owned()))
}

/// Writes `bytes` to a new file and reads it with `options`.
pub(super) async fn read_file(
    bytes: &[u8],
    options: impl FnOnce(&Path) -> InputOptions,
) -> Vec<Ev> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("input");
    std::fs::write(&path, bytes).unwrap();
    collect(spawn(options(&path)).unwrap()).await
}

/// Bytes 0, 1, 2, … wrapping, so misplaced bytes show.
pub(super) fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

pub(super) fn audio_lens(events: &[Ev]) -> Vec<usize> {
    events
        .iter()
        .filter_map(|e| match e {
            Ev::Audio(bytes) => Some(bytes.len()),
            _ => None,
        })
        .collect()
}

pub(super) fn audio_bytes(events: &[Ev]) -> Vec<u8> {
    events
        .iter()
        .filter_map(|e| match e {
            Ev::Audio(bytes) => Some(bytes.as_slice()),
            _ => None,
        })
        .flatten()
        .copied()
        .collect()
}
