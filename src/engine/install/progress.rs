//! The download's progress on stderr when it is a terminal: one line,
//! redrawn at most ten times a second. Hand-rolled: a line of text does not
//! need a progress-bar crate and its terminal dependencies.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

const REDRAW: Duration = Duration::from_millis(100);
const BAR: usize = 24;

/// A progress line for one download, or nothing off a terminal.
#[derive(Debug)]
pub(crate) struct Progress {
    shown: bool,
    label: String,
    total: u64,
    started: Instant,
    last: Option<Instant>,
}

impl Progress {
    /// A line for `label`, `total` bytes; drawn only on a terminal.
    pub(crate) fn new(label: &str, total: u64) -> Progress {
        Progress {
            shown: std::io::stderr().is_terminal(),
            label: label.to_owned(),
            total,
            started: Instant::now(),
            last: None,
        }
    }

    /// `done` bytes are in.
    pub(crate) fn update(&mut self, done: u64) {
        if !self.shown || self.last.is_some_and(|last| last.elapsed() < REDRAW) {
            return;
        }
        self.last = Some(Instant::now());
        let line = render(&self.label, done, self.total, self.started.elapsed());
        // \r and "erase to end of line": the line is redrawn in place.
        let _ = write!(std::io::stderr(), "\r{line}\x1b[K");
    }

    /// Done (or failed): the line is cleared for what follows.
    pub(crate) fn finish(&mut self) {
        if self.shown && self.last.is_some() {
            let _ = write!(std::io::stderr(), "\r\x1b[K");
        }
        self.last = None;
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}

/// `tiny-en [########----------] 23.1/56.4 MB 41 % 11.2 MB/s`, fitting 80
/// columns for labels of a dozen characters.
fn render(label: &str, done: u64, total: u64, elapsed: Duration) -> String {
    let fraction = if total == 0 {
        1.0
    } else {
        (done as f64 / total as f64).min(1.0)
    };
    let filled = (fraction * BAR as f64).round() as usize;
    let rate = done as f64 / elapsed.as_secs_f64().max(0.001) / 1e6;
    format!(
        "{label} [{}{}] {:.1}/{:.1} MB {:>3.0} % {rate:.1} MB/s",
        "#".repeat(filled),
        "-".repeat(BAR - filled),
        done as f64 / 1e6,
        total as f64 / 1e6,
        fraction * 100.0,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_says_how_far() {
        let line = render("tiny-en", 28_000_000, 56_000_000, Duration::from_secs(2));
        assert_eq!(
            line,
            "tiny-en [############------------] 28.0/56.0 MB  50 % 14.0 MB/s"
        );
        assert!(line.len() <= 80);
    }
}
