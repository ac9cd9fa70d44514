//! The now-showing file (`--now-file`): what a caption display shows at
//! this moment, for an OBS text source or a status bar.
//!
//! Each change is written to a temporary file beside it and renamed over
//! it, so a reader always finds a whole text, old or new, never half of
//! one. The text is the lines, joined by line breaks, with no final one.

use std::io;
use std::path::{Path, PathBuf};

/// The file and its temporary sibling.
#[derive(Debug)]
pub(crate) struct NowFile {
    path: PathBuf,
    temporary: PathBuf,
    /// A failure was reported already: say it once, keep trying.
    warned: bool,
}

impl NowFile {
    /// Creates (or empties) the file at `path`: a path that cannot be
    /// written fails here, before the stream starts.
    pub(crate) fn create(path: &Path) -> io::Result<NowFile> {
        let name = path.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("--now-file {}: not a file name", path.display()),
            )
        })?;
        let mut temporary = name.to_owned();
        temporary.push(format!(".{}.tmp", std::process::id()));
        let mut dotted = std::ffi::OsString::from(".");
        dotted.push(temporary);
        let file = NowFile {
            path: path.to_owned(),
            temporary: path.with_file_name(dotted),
            warned: false,
        };
        file.write("")
            .map_err(|e| io::Error::new(e.kind(), format!("--now-file {}: {e}", path.display())))?;
        Ok(file)
    }

    /// Replaces the file's text with `lines`. A failure is reported once on
    /// stderr and does not stop the stream: the transcript matters more.
    pub(crate) fn show(&mut self, lines: &[String]) {
        match self.write(&lines.join("\n")) {
            Ok(()) => self.warned = false,
            Err(err) if !self.warned => {
                self.warned = true;
                crate::filter::warn_user(&format!(
                    "cannot update --now-file {}: {err}",
                    self.path.display()
                ));
            }
            Err(_) => {}
        }
    }

    fn write(&self, text: &str) -> io::Result<()> {
        std::fs::write(&self.temporary, text)?;
        std::fs::rename(&self.temporary, &self.path).inspect_err(|_| {
            let _ = std::fs::remove_file(&self.temporary);
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_is_replaced_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("now.txt");
        std::fs::write(&path, "stale").unwrap();
        let mut now = NowFile::create(&path).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        now.show(&["one".into(), "two".into()]);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "one\ntwo");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
        assert!(NowFile::create(&dir.path().join("missing/now.txt")).is_err());
    }
}
