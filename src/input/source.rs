//! Opening the source and waiting for it: stdin, a path, a named FIFO
//! opened without waiting for its writer (and reopened for the next one with
//! `--follow`), and the readiness wait that tells a FIFO's first writer, or
//! data on a non-blocking stdin, from a false EOF. The module docs of
//! [`super`] say why a FIFO is opened this way.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{FcntlArg, OFlag, fcntl};
use nix::sys::statfs::fstatfs;
use tokio::io::Interest;
use tokio::net::unix::pipe;
use tokio::runtime::Runtime;
use tokio::sync::mpsc;

use super::{InputEvent, Source};
use crate::error::Error;

/// The name [`Error::InputMissing`] reports when stdin cannot be used.
const STDIN_NAME: &str = "<stdin>";

/// Opens the source without blocking. Returns the file and, for a FIFO, its
/// path (to reopen it with --follow).
pub(super) fn open(source: &Source) -> Result<(File, Option<PathBuf>), Error> {
    match source {
        Source::Stdin => {
            // A duplicate, so the thread owns its fd and closing it leaves fd
            // 0 alone. Its O_NONBLOCK flag, if a parent set one, is shared
            // with other processes and stays as it is: reads wait on EAGAIN.
            let missing = |source| Error::InputMissing {
                path: PathBuf::from(STDIN_NAME),
                source,
            };
            let fd = io::stdin().as_fd().try_clone_to_owned().map_err(missing)?;
            Ok((File::from(fd), None))
        }
        Source::Path(path) => open_path(path).map_err(|source| Error::InputMissing {
            path: path.clone(),
            source,
        }),
    }
}

/// The source's name for people: its path, or `<stdin>`.
pub(super) fn label(source: &Source) -> String {
    match source {
        Source::Stdin => STDIN_NAME.to_owned(),
        Source::Path(path) => path.display().to_string(),
    }
}

/// Opens `path` for reading without waiting for a FIFO writer; see the module
/// docs. Permissions are checked by this open, so errors surface here.
fn open_path(path: &Path) -> io::Result<(File, Option<PathBuf>)> {
    let file = open_nonblocking(path)?;
    // Decide by the opened fd, not by an earlier stat of the path, so a path
    // swapped in between cannot fool us.
    let file_type = file.metadata()?.file_type();
    if file_type.is_dir() {
        return Err(Errno::EISDIR.into());
    }
    if file_type.is_fifo() && !is_anonymous_pipe(&file)? {
        // Stays O_NONBLOCK until its first writer: see reader::Reader::segment.
        return Ok((file, Some(path.to_owned())));
    }
    set_blocking(&file)?;
    Ok((file, None))
}

/// Whether `file` is an unnamed pipe reached through a path such as
/// `/dev/stdin` or bash's `<(command)` (`/dev/fd/63`). Such a pipe reports
/// hang-up as soon as its writers are gone, fresh fd or not, and no new writer
/// can come: treated as a FIFO, --follow would spin on EOF.
fn is_anonymous_pipe(file: &File) -> io::Result<bool> {
    /// `PIPEFS_MAGIC` from linux/magic.h: the filesystem of unnamed pipes.
    const PIPEFS_MAGIC: i128 = 0x5049_5045;
    let fs_type = fstatfs(file)?.filesystem_type();
    Ok(i128::from(fs_type.0) == PIPEFS_MAGIC)
}

/// `open(path, O_RDONLY|O_NONBLOCK|O_CLOEXEC)`: returns at once even for a
/// FIFO without a writer.
fn open_nonblocking(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(OFlag::O_NONBLOCK.bits())
        .open(path)
}

/// Clears `O_NONBLOCK`, so reads block instead of returning EAGAIN.
pub(super) fn set_blocking(file: &File) -> io::Result<()> {
    let flags = OFlag::from_bits_retain(fcntl(file, FcntlArg::F_GETFL)?);
    if flags.contains(OFlag::O_NONBLOCK) {
        fcntl(file, FcntlArg::F_SETFL(flags.difference(OFlag::O_NONBLOCK)))?;
    }
    Ok(())
}

/// Opens the FIFO at `path` again, for its next writer, without waiting for
/// one (the fd is `O_NONBLOCK`, as [`open`] leaves a FIFO). Fails if the path
/// is no longer a FIFO.
pub(super) fn reopen_fifo(path: &Path) -> io::Result<File> {
    let next = open_nonblocking(path)?;
    if !next.metadata()?.file_type().is_fifo() {
        let message = format!("{} is no longer a FIFO", path.display());
        return Err(io::Error::other(message));
    }
    Ok(next)
}

/// How a [`Waiter::wait`] ended.
#[derive(Debug)]
pub(super) enum Woken {
    /// The fd has data, or its writers hung up: a read will not block and
    /// will not return a false EOF.
    Readable,
    /// The receiver was dropped: nobody listens any more.
    ReceiverGone,
}

/// Waits for an fd to become readable, on a current-thread tokio reactor of
/// its own, built the first time it is needed (FIFO sources, or a
/// non-blocking stdin) and kept for the next wait.
#[derive(Default)]
pub(super) struct Waiter {
    /// `None` until the first wait.
    runtime: Option<Runtime>,
}

impl Waiter {
    /// Blocks until `file` is readable or hung up, without spinning, or until
    /// the receiver of `tx` is dropped.
    pub(super) fn wait(&mut self, file: &File, tx: &mpsc::Sender<InputEvent>) -> io::Result<Woken> {
        let runtime = match self.runtime.take() {
            Some(runtime) => runtime,
            None => tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .build()?,
        };
        // tokio's pipe receiver is the safe way to wait on an fd we keep
        // (AsyncFd's safe constructor is deprecated; its replacement is
        // unsafe), and works on any pollable fd: pipe, FIFO, tty, socket.
        // It gets a duplicate (same open file description, so the same
        // readiness); dropping it deregisters and closes only the dup.
        let watched = file.try_clone()?;
        let waited = runtime.block_on(async move {
            let watched = pipe::Receiver::from_file_unchecked(watched)?;
            loop {
                tokio::select! {
                    ready = watched.ready(Interest::READABLE) => {
                        let ready = ready?;
                        // tokio allows an empty, spurious wake-up; reading on
                        // one could mistake a FIFO without writer for EOF.
                        if ready.is_readable() || ready.is_read_closed() {
                            return Ok(Woken::Readable);
                        }
                    }
                    () = tx.closed() => return Ok(Woken::ReceiverGone),
                }
            }
        });
        self.runtime = Some(runtime);
        waited
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::os::fd::AsRawFd;

    use super::*;
    use crate::audio::AudioFormat;
    use crate::input::test_support::{Ev, audio_bytes, audio_lens, collect, options, pattern};
    use crate::input::{InputOptions, spawn, start};

    #[test]
    fn missing_path_fails_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.raw");
        match spawn(options(&path)) {
            Err(Error::InputMissing {
                path: reported,
                source,
            }) => {
                assert_eq!(reported, path);
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected InputMissing, got {other:?}"),
        }
    }

    #[test]
    fn directory_is_input_missing() {
        let dir = tempfile::tempdir().unwrap();
        let result = spawn(options(dir.path()));
        assert!(
            matches!(result, Err(Error::InputMissing { .. })),
            "{result:?}"
        );
    }

    #[test]
    fn unreadable_file_is_input_missing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret.raw");
        std::fs::write(&path, [0; 4]).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o000)).unwrap();
        if File::open(&path).is_ok() {
            // Running as root (or with CAP_DAC_OVERRIDE): permissions do not apply.
            return;
        }
        let result = spawn(options(&path));
        assert!(
            matches!(&result, Err(Error::InputMissing { source, .. }) if source.kind() == io::ErrorKind::PermissionDenied),
            "{result:?}"
        );
    }

    #[tokio::test]
    async fn nonblocking_stream_waits_instead_of_failing() {
        // As when a parent left stdin O_NONBLOCK: reads return EAGAIN.
        let (reader, mut writer) = io::pipe().unwrap();
        let file = File::from(std::os::fd::OwnedFd::from(reader));
        let flags = OFlag::from_bits_retain(fcntl(&file, FcntlArg::F_GETFL).unwrap());
        fcntl(&file, FcntlArg::F_SETFL(flags | OFlag::O_NONBLOCK)).unwrap();
        let opened = crate::input::Opened {
            file,
            fifo: None,
            label: label(&Source::Stdin),
        };
        let rx = start([opened].into(), &InputOptions::new(Source::Stdin)).unwrap();

        let input = pattern(4000);
        let to_write = input.clone();
        std::thread::spawn(move || writer.write_all(&to_write));
        let events = collect(rx).await;
        assert_eq!(events[0], Ev::Format(AudioFormat::default_pcm()));
        assert_eq!(audio_lens(&events), [3200, 800]);
        assert_eq!(audio_bytes(&events), input);
    }

    #[tokio::test]
    async fn follow_on_an_unnamed_pipe_path_reads_to_eof() {
        // `sttpipe --follow /dev/fd/63` from bash's `<(command)`: the writer's
        // EOF ends the input instead of a loop of WriterClosed.
        let (reader, mut writer) = io::pipe().unwrap();
        let path = PathBuf::from(format!("/proc/self/fd/{}", reader.as_fd().as_raw_fd()));
        let rx = spawn(InputOptions {
            follow: true,
            ..options(&path)
        })
        .unwrap();
        drop(reader);
        let input = pattern(3200);
        writer.write_all(&input).unwrap();
        drop(writer);
        let events = collect(rx).await;
        assert_eq!(
            events,
            [Ev::Format(AudioFormat::default_pcm()), Ev::Audio(input)]
        );
    }
}
