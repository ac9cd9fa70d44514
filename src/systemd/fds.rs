//! The two steps of socket activation that need `unsafe`: taking ownership
//! of the descriptors systemd passed, and unsetting the `LISTEN_*`
//! variables. Everything else (parsing the variables, checking the sockets)
//! is [`listen`](super::listen)'s, in safe code.
//!
//! Both rest on the contract of [`take_listen_fds`](super::take_listen_fds),
//! their one caller: the daemon calls it first thing in a synchronous
//! `main`, before the tokio runtime (or any other thread) exists, and it
//! hands over only the descriptors `LISTEN_PID` says are this process's.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use nix::fcntl::{FcntlArg, FdFlag, fcntl};

/// Set by the first [`own_passed_fds`]: the descriptors can be owned once.
static LISTEN_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

/// Owns `fds`, the descriptors `LISTEN_FDS` passed with their names, and
/// sets `FD_CLOEXEC` on each. Only the first call owns them; later calls
/// return none.
///
/// `fds` must be what `LISTEN_FDS` passed to this very process (its
/// `LISTEN_PID` matched), before any other code could have opened or
/// adopted these numbers.
///
/// Errors: a descriptor is not open.
pub(super) fn own_passed_fds(fds: Vec<(RawFd, String)>) -> io::Result<Vec<(OwnedFd, String)>> {
    if LISTEN_FDS_TAKEN.swap(true, Ordering::SeqCst) {
        tracing::debug!("LISTEN_FDS already taken; ignoring them");
        return Ok(Vec::new());
    }
    let mut owned = Vec::with_capacity(fds.len());
    for (fd, name) in fds {
        // SAFETY: fds 3..3+LISTEN_FDS were passed to this very process
        // (LISTEN_PID matched) and nothing else in the process owns them:
        // the flag above lets this run once, and take_listen_fds runs first
        // in main, before any other code could have opened or adopted these
        // numbers. The borrow only lives for the validity check below.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let flags = fcntl(borrowed, FcntlArg::F_GETFD).map_err(|errno| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("LISTEN_FDS: fd {fd} ({name}) is not open: {errno}"),
            )
        })?;
        // SAFETY: as above; F_GETFD just showed the descriptor is open, and
        // from here the OwnedFd is its only owner (it closes it on drop).
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let flags = FdFlag::from_bits_retain(flags) | FdFlag::FD_CLOEXEC;
        fcntl(&fd, FcntlArg::F_SETFD(flags))?;
        owned.push((fd, name));
    }
    Ok(owned)
}

/// Unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, unless other
/// threads exist (then they are left, and a warning logged).
pub(super) fn unset_listen_env() {
    if !single_threaded() {
        tracing::warn!(
            "take_listen_fds called with other threads running; \
             leaving LISTEN_* in the environment"
        );
        return;
    }
    for var in ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES"] {
        // SAFETY: the process has a single thread (this one; checked just
        // above through /proc/self/task), so nothing can read or write the
        // environment concurrently, and only an existing thread could start
        // another. take_listen_fds documents that it must be called first
        // thing in main, before any thread exists.
        unsafe { std::env::remove_var(var) };
    }
}

/// Whether this process has exactly one thread, from `/proc/self/task`.
/// False when that cannot be read.
fn single_threaded() -> bool {
    std::fs::read_dir("/proc/self/task").is_ok_and(|tasks| tasks.count() == 1)
}
