//! systemd integration: socket activation (`LISTEN_FDS`) and `sd_notify`
//! (`NOTIFY_SOCKET`: readiness, status, reload, stop, watchdog).
//!
//! Both protocols are small and declared stable by systemd ("reimplementable
//! independently"), so they are written here with std and `nix` instead of
//! linking libsystemd. See sd_listen_fds(3) and sd_notify(3).
//!
//! This is the only module of the crate allowed `unsafe`: taking ownership of
//! the file descriptors systemd passed, and unsetting the `LISTEN_*`
//! variables. Both happen in [`take_listen_fds`], which the daemon calls first
//! thing in a synchronous `main`, before the tokio runtime (or any other
//! thread) exists.
#![allow(unsafe_code)]

use std::ffi::OsString;
use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram, UnixListener};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use nix::fcntl::{FcntlArg, FdFlag, fcntl};
use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname};
use nix::sys::socket::{getsockopt, sockopt};

/// `SD_LISTEN_FDS_START`: the first passed file descriptor.
const LISTEN_FDS_START: RawFd = 3;

/// The name systemd's `sd_listen_fds_with_names()` reports for a passed fd
/// without one.
const UNKNOWN_NAME: &str = "unknown";

/// How long a notification may wait for room in the receiver's queue. The
/// watchdog is pinged from the daemon's main loop, which must not hang on a
/// wedged service manager.
const NOTIFY_SEND_TIMEOUT: Duration = Duration::from_secs(1);

/// Set by the first [`take_listen_fds`]: the descriptors can be owned once.
static LISTEN_FDS_TAKEN: AtomicBool = AtomicBool::new(false);

// ---------------------------------------------------------------------------
// Socket activation
// ---------------------------------------------------------------------------

/// Sockets passed by systemd (LISTEN_FDS), taken once in a synchronous main
/// before any thread exists.
///
/// Each descriptor is owned: the ones no `take_*` method claims are closed
/// when the set is dropped.
#[derive(Debug, Default)]
pub(crate) struct ListenFds {
    /// The passed descriptors in order (fd 3, 4, …) with their names from
    /// `LISTEN_FDNAMES`; `None` once taken.
    fds: Vec<Option<(OwnedFd, String)>>,
}

/// Takes the file descriptors systemd passed for socket activation.
///
/// Checks `LISTEN_PID == getpid()`, reads `LISTEN_FDS` and `LISTEN_FDNAMES`,
/// sets `FD_CLOEXEC` on each descriptor, and unsets the three variables so
/// that children do not inherit them. Returns an empty set when the process
/// was not socket-activated (or the variables are meant for another process).
///
/// **Call it first thing in `main`, before any thread exists** (build the
/// tokio runtime afterwards, not with `#[tokio::main]`): unsetting
/// environment variables races with any other thread reading the
/// environment. As a safety net the variables are left in place (and a
/// warning logged) when this process already has more than one thread. Only
/// the first call takes the descriptors; later calls return an empty set.
///
/// Errors: `LISTEN_FDS` or `LISTEN_FDNAMES` malformed, or a passed descriptor
/// not open.
pub(crate) fn take_listen_fds() -> io::Result<ListenFds> {
    let pid = std::env::var_os("LISTEN_PID");
    let count = std::env::var_os("LISTEN_FDS");
    let names = std::env::var_os("LISTEN_FDNAMES");
    if pid.is_none() && count.is_none() && names.is_none() {
        return Ok(ListenFds::default());
    }
    // Like sd_listen_fds(unset_environment=1): unset whether or not the
    // variables are for us, and whether or not they parse.
    unset_listen_env();
    let fds = parse_listen_env(
        pid.as_deref().map(OsStrExt::as_bytes),
        count.as_deref().map(OsStrExt::as_bytes),
        names.as_deref().map(OsStrExt::as_bytes),
        std::process::id(),
    )?;
    if fds.is_empty() {
        return Ok(ListenFds::default());
    }
    if LISTEN_FDS_TAKEN.swap(true, Ordering::SeqCst) {
        tracing::debug!("LISTEN_FDS already taken; ignoring them");
        return Ok(ListenFds::default());
    }
    let mut owned = Vec::with_capacity(fds.len());
    for (fd, name) in fds {
        // SAFETY: fds 3..3+LISTEN_FDS were passed to this very process
        // (LISTEN_PID matched) and nothing else in the process owns them:
        // the flag above lets this run once, and the caller takes them before
        // any other code could have opened or adopted these numbers. The
        // borrow only lives for the validity check below.
        let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
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
    Ok(ListenFds::from_fds(owned))
}

/// Unsets `LISTEN_PID`, `LISTEN_FDS` and `LISTEN_FDNAMES`, unless other
/// threads exist.
fn unset_listen_env() {
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

/// The passed descriptors and their names, from the values of `LISTEN_PID`,
/// `LISTEN_FDS` and `LISTEN_FDNAMES`; empty unless `LISTEN_PID` is `my_pid`.
fn parse_listen_env(
    pid: Option<&[u8]>,
    count: Option<&[u8]>,
    names: Option<&[u8]>,
    my_pid: u32,
) -> io::Result<Vec<(RawFd, String)>> {
    let invalid = |what: String| io::Error::new(io::ErrorKind::InvalidInput, what);
    // sd_listen_fds: no LISTEN_PID (or another process's) means "not for us".
    let Some(pid) = pid else {
        return Ok(Vec::new());
    };
    let pid = parse_decimal(pid).ok_or_else(|| invalid("LISTEN_PID is not a number".into()))?;
    if pid != u64::from(my_pid) {
        tracing::debug!(listen_pid = pid, "LISTEN_PID is another process's");
        return Ok(Vec::new());
    }
    let Some(count) = count else {
        return Ok(Vec::new());
    };
    let count = parse_decimal(count)
        .and_then(|n| RawFd::try_from(n).ok())
        .filter(|&n| n <= RawFd::MAX - LISTEN_FDS_START)
        .ok_or_else(|| invalid("LISTEN_FDS is not a valid count".into()))?;
    let names: Vec<String> = match names {
        None => vec![UNKNOWN_NAME.to_owned(); count as usize],
        Some(names) => {
            let names: Vec<String> = names
                .split(|&b| b == b':')
                .map(|name| String::from_utf8_lossy(name).into_owned())
                .collect();
            // An empty LISTEN_FDNAMES with no fds splits into one empty name.
            let names = if count == 0 { Vec::new() } else { names };
            if names.len() != count as usize {
                return Err(invalid(format!(
                    "LISTEN_FDNAMES has {} names for {count} descriptors",
                    names.len()
                )));
            }
            names
        }
    };
    Ok((LISTEN_FDS_START..)
        .zip(names)
        .map(|(fd, name)| {
            let name = if name.is_empty() {
                UNKNOWN_NAME.to_owned()
            } else {
                name
            };
            (fd, name)
        })
        .collect())
}

/// A non-negative decimal number, nothing else (no sign, no spaces).
fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}

impl ListenFds {
    /// A set made of these descriptors (in `LISTEN_FDS` order) and names.
    fn from_fds(fds: Vec<(OwnedFd, String)>) -> ListenFds {
        ListenFds {
            fds: fds.into_iter().map(Some).collect(),
        }
    }

    /// Removes and returns the first descriptor still in the set for which
    /// `matches` holds.
    fn take_first(&mut self, matches: impl Fn(&OwnedFd) -> bool) -> Option<(OwnedFd, String)> {
        self.fds
            .iter_mut()
            .find(|slot| slot.as_ref().is_some_and(|(fd, _)| matches(fd)))
            .and_then(Option::take)
    }

    /// The first passed fd that is a listening AF_UNIX SOCK_STREAM socket,
    /// as a std `UnixListener` set non-blocking (ready for
    /// `tokio::net::UnixListener::from_std`), with its name from
    /// `LISTEN_FDNAMES` (systemd's `FileDescriptorName=`, by default the
    /// socket unit's name; "unknown" without names).
    ///
    /// Checked as loosely as sd_is_socket_unix(3) does: the socket type, the
    /// listening state and the address family, not the path (systemd owns
    /// the socket: never unlink it, never shut it down).
    pub(crate) fn take_unix_listener(&mut self) -> io::Result<Option<(UnixListener, String)>> {
        let Some((fd, name)) =
            self.take_first(|fd| is_listening_stream(fd, &[AddressFamily::Unix]))
        else {
            return Ok(None);
        };
        let listener = UnixListener::from(fd);
        listener.set_nonblocking(true)?;
        Ok(Some((listener, name)))
    }

    /// The first passed fd that is a listening TCP socket (IPv4 or IPv6, for
    /// a `ListenStream=127.0.0.1:3001`), set non-blocking.
    pub(crate) fn take_tcp_listener(&mut self) -> io::Result<Option<TcpListener>> {
        let Some((fd, _name)) = self
            .take_first(|fd| is_listening_stream(fd, &[AddressFamily::Inet, AddressFamily::Inet6]))
        else {
            return Ok(None);
        };
        let listener = TcpListener::from(fd);
        listener.set_nonblocking(true)?;
        Ok(Some(listener))
    }

    #[cfg(test)]
    /// Whether no passed descriptor is left (none was passed, or all were
    /// taken).
    pub(crate) fn is_empty(&self) -> bool {
        self.fds.iter().all(Option::is_none)
    }
}

/// Whether `fd` is a `SOCK_STREAM` socket in the listening state whose
/// address family is one of `families`. Any failed query means no: a FIFO
/// or a file passed by `ListenFIFO=`/`ListenSpecial=` gets `ENOTSOCK`.
fn is_listening_stream(fd: &OwnedFd, families: &[AddressFamily]) -> bool {
    let sock_type = getsockopt(fd, sockopt::SockType);
    if !matches!(sock_type, Ok(SockType::Stream)) {
        return false;
    }
    if !matches!(getsockopt(fd, sockopt::AcceptConn), Ok(true)) {
        return false;
    }
    getsockname::<SockaddrStorage>(fd.as_fd().as_raw_fd())
        .ok()
        .and_then(|addr| addr.family())
        .is_some_and(|family| families.contains(&family))
}

// ---------------------------------------------------------------------------
// sd_notify
// ---------------------------------------------------------------------------

/// sd_notify: datagrams to `$NOTIFY_SOCKET` (a path, or an abstract socket
/// written `@name`), read once at construction (the variable is left set). A
/// no-op when the variable is absent. Never panics; send errors are ignored
/// (logged at debug).
///
/// systemd attributes each datagram to the sending process (`SCM_CREDENTIALS`),
/// so with `NotifyAccess=main` only the daemon's own process may send these:
/// not a helper, not `systemd-notify` from a script.
#[derive(Debug)]
pub(crate) struct Notifier {
    /// Where the datagrams go, with an unbound socket to send them from;
    /// `None` when not run by a service manager.
    target: Option<(UnixDatagram, SocketAddr)>,
    /// Half of `WATCHDOG_USEC`, when the watchdog is on for this process.
    watchdog_interval: Option<Duration>,
}

impl Notifier {
    /// Reads `NOTIFY_SOCKET`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
    pub(crate) fn from_env() -> Notifier {
        Notifier::from_vars(
            std::env::var_os("NOTIFY_SOCKET"),
            std::env::var_os("WATCHDOG_USEC"),
            std::env::var_os("WATCHDOG_PID"),
            std::process::id(),
        )
    }

    /// A notifier from the values of `NOTIFY_SOCKET`, `WATCHDOG_USEC` and
    /// `WATCHDOG_PID`, for the process `my_pid`.
    fn from_vars(
        notify_socket: Option<OsString>,
        watchdog_usec: Option<OsString>,
        watchdog_pid: Option<OsString>,
        my_pid: u32,
    ) -> Notifier {
        Notifier {
            target: notify_socket.and_then(|socket| notify_target(&socket)),
            watchdog_interval: watchdog_interval(
                watchdog_usec.as_deref().map(OsStrExt::as_bytes),
                watchdog_pid.as_deref().map(OsStrExt::as_bytes),
                my_pid,
            ),
        }
    }

    /// `READY=1`, with a status line: startup is complete (the key is
    /// loaded and the socket is usable), or a reload is.
    pub(crate) fn ready(&self, status: &str) {
        self.send(&format!("READY=1\nSTATUS={}", one_line(status)));
    }

    /// `STATUS=…`: a line shown by `systemctl status`.
    pub(crate) fn status(&self, status: &str) {
        self.send(&format!("STATUS={}", one_line(status)));
    }

    /// `RELOADING=1` with `MONOTONIC_USEC=` (which `Type=notify-reload`, from
    /// systemd 253, requires; older versions ignore it). Follow it with
    /// [`ready`](Self::ready) once the reload is done.
    pub(crate) fn reloading(&self) {
        match monotonic_usec() {
            Some(usec) => self.send(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")),
            None => self.send("RELOADING=1"),
        }
    }

    /// `STOPPING=1`, with a status line: shutdown has begun.
    pub(crate) fn stopping(&self, status: &str) {
        self.send(&format!("STOPPING=1\nSTATUS={}", one_line(status)));
    }

    /// `WATCHDOG=1`: the keep-alive ping. Send it every
    /// [`watchdog_interval`](Self::watchdog_interval) from the loop that
    /// does the work, so that a wedged loop stops pinging.
    pub(crate) fn watchdog(&self) {
        self.send("WATCHDOG=1");
    }

    /// Half of `WATCHDOG_USEC` when the watchdog is on for this process
    /// (`WATCHDOG_PID` absent or equal to its pid): how often to call
    /// [`watchdog`](Self::watchdog).
    pub(crate) fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog_interval
    }

    /// Sends one datagram; failures are logged at debug and otherwise
    /// ignored.
    fn send(&self, message: &str) {
        let Some((socket, address)) = &self.target else {
            return;
        };
        if let Err(error) = socket.send_to_addr(message.as_bytes(), address) {
            tracing::debug!(%error, "sd_notify: sending to NOTIFY_SOCKET failed");
        }
    }
}

/// The socket to send from and the address to send to, for a
/// `NOTIFY_SOCKET` value: an absolute path, or `@name` for an abstract
/// socket. `None` (logged at debug) for anything else, such as a `vsock:`
/// address, or when the socket cannot be made.
fn notify_target(value: &std::ffi::OsStr) -> Option<(UnixDatagram, SocketAddr)> {
    let bytes = value.as_bytes();
    let address = match bytes.first() {
        Some(b'/') => SocketAddr::from_pathname(PathBuf::from(value)),
        Some(b'@') => SocketAddr::from_abstract_name(&bytes[1..]),
        _ => {
            tracing::debug!(
                notify_socket = %value.to_string_lossy(),
                "sd_notify: unsupported NOTIFY_SOCKET; notifications disabled"
            );
            return None;
        }
    };
    let made = address.and_then(|address| {
        let socket = UnixDatagram::unbound()?;
        socket.set_write_timeout(Some(NOTIFY_SEND_TIMEOUT))?;
        Ok((socket, address))
    });
    match made {
        Ok(target) => Some(target),
        Err(error) => {
            tracing::debug!(%error, "sd_notify: cannot use NOTIFY_SOCKET; notifications disabled");
            None
        }
    }
}

/// Half of `WATCHDOG_USEC` (a positive number of microseconds) when
/// `WATCHDOG_PID` is absent or `my_pid`, like sd_watchdog_enabled(3).
fn watchdog_interval(usec: Option<&[u8]>, pid: Option<&[u8]>, my_pid: u32) -> Option<Duration> {
    let usec = parse_decimal(usec?).filter(|&usec| usec > 0)?;
    if let Some(pid) = pid
        && parse_decimal(pid) != Some(u64::from(my_pid))
    {
        return None;
    }
    Some(Duration::from_micros(usec) / 2)
}

/// `CLOCK_MONOTONIC` now, in microseconds.
fn monotonic_usec() -> Option<u64> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).ok()?;
    let seconds = u64::try_from(now.tv_sec()).ok()?;
    let micros = u64::try_from(now.tv_nsec()).ok()? / 1_000;
    seconds.checked_mul(1_000_000)?.checked_add(micros)
}

/// A status text on one line: a newline would start another `KEY=` line.
fn one_line(status: &str) -> String {
    status.replace(['\n', '\r'], " ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::unix::net::UnixStream;

    /// Receives one datagram as text, waiting at most a few seconds.
    fn receive(socket: &UnixDatagram) -> String {
        socket
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    fn notifier_for(socket: &str) -> Notifier {
        Notifier::from_vars(Some(socket.into()), None, None, std::process::id())
    }

    fn check_messages(notifier: &Notifier, receiver: &UnixDatagram) {
        notifier.ready("0 sessions");
        assert_eq!(receive(receiver), "READY=1\nSTATUS=0 sessions");
        notifier.status("3 sessions,\n1 queued");
        assert_eq!(receive(receiver), "STATUS=3 sessions, 1 queued");
        notifier.watchdog();
        assert_eq!(receive(receiver), "WATCHDOG=1");
        notifier.reloading();
        let reloading = receive(receiver);
        let usec = reloading
            .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
            .expect(&reloading);
        assert!(usec.parse::<u64>().unwrap() > 0);
        notifier.stopping("draining 2 sessions");
        assert_eq!(receive(receiver), "STOPPING=1\nSTATUS=draining 2 sessions");
    }

    #[test]
    fn notifies_a_socket_path() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let receiver = UnixDatagram::bind(&path).unwrap();
        let notifier = notifier_for(path.to_str().unwrap());
        check_messages(&notifier, &receiver);
    }

    #[test]
    fn notifies_an_abstract_socket() {
        let name = format!("sttpipe-notify-test-{}", std::process::id());
        let address = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let receiver = UnixDatagram::bind_addr(&address).unwrap();
        let notifier = notifier_for(&format!("@{name}"));
        check_messages(&notifier, &receiver);
    }

    #[test]
    fn without_a_usable_socket_notifying_does_nothing() {
        for notifier in [
            Notifier::from_vars(None, None, None, 1),
            notifier_for("relative/notify.sock"),
            notifier_for("vsock:2:1234"),
            notifier_for(""),
            // Nobody listens there: the send fails, quietly.
            notifier_for("/nonexistent/sttpipe/notify.sock"),
        ] {
            notifier.ready("x");
            notifier.status("x");
            notifier.reloading();
            notifier.watchdog();
            notifier.stopping("x");
        }
    }

    #[test]
    fn watchdog_interval_is_half_the_period_for_this_process() {
        let interval = |usec: Option<&str>, pid: Option<&str>| {
            Notifier::from_vars(None, usec.map(Into::into), pid.map(Into::into), 4242)
                .watchdog_interval()
        };
        assert_eq!(
            interval(Some("30000000"), None),
            Some(Duration::from_secs(15))
        );
        assert_eq!(
            interval(Some("200000"), Some("4242")),
            Some(Duration::from_millis(100))
        );
        assert_eq!(interval(Some("30000000"), Some("4243")), None);
        assert_eq!(interval(Some("30000000"), Some("x")), None);
        assert_eq!(interval(None, Some("4242")), None);
        assert_eq!(interval(Some("0"), None), None);
        assert_eq!(interval(Some("-5"), None), None);
        assert_eq!(interval(Some("soon"), None), None);
    }

    #[test]
    fn parses_the_listen_variables() {
        let parse = |pid: Option<&str>, count: Option<&str>, names: Option<&str>| {
            parse_listen_env(
                pid.map(str::as_bytes),
                count.map(str::as_bytes),
                names.map(str::as_bytes),
                77,
            )
        };
        assert_eq!(
            parse(Some("77"), Some("2"), Some("sttpipe:web")).unwrap(),
            vec![(3, "sttpipe".to_owned()), (4, "web".to_owned())]
        );
        assert_eq!(
            parse(Some("77"), Some("2"), None).unwrap(),
            vec![(3, "unknown".to_owned()), (4, "unknown".to_owned())]
        );
        assert_eq!(
            parse(Some("77"), Some("2"), Some(":web")).unwrap(),
            vec![(3, "unknown".to_owned()), (4, "web".to_owned())]
        );
        // Not for this process, or not activated at all.
        assert!(parse(Some("78"), Some("1"), Some("x")).unwrap().is_empty());
        assert!(parse(None, Some("1"), None).unwrap().is_empty());
        assert!(parse(Some("77"), None, None).unwrap().is_empty());
        assert!(parse(Some("77"), Some("0"), Some("")).unwrap().is_empty());
        // Malformed.
        assert!(parse(Some("77"), Some("1"), Some("a:b")).is_err());
        assert!(parse(Some("77"), Some("-1"), None).is_err());
        assert!(parse(Some("77"), Some("99999999999"), None).is_err());
        assert!(parse(Some(" 77"), Some("1"), None).is_err());
    }

    /// A set of real descriptors, as systemd would pass them: a FIFO-like
    /// pipe, a connected socket pair end, a bound but not listening stream
    /// socket, a datagram socket, a TCP listener, and two Unix listeners.
    #[test]
    fn takes_listeners_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let (pipe_read, _pipe_write) = nix::unistd::pipe().unwrap();
        let (pair, _peer) = UnixStream::pair().unwrap();
        let not_listening = nix::sys::socket::socket(
            AddressFamily::Unix,
            SockType::Stream,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let unbound_path = nix::sys::socket::UnixAddr::new(&dir.path().join("bound.sock")).unwrap();
        nix::sys::socket::bind(not_listening.as_raw_fd(), &unbound_path).unwrap();
        let datagram = UnixDatagram::bind(dir.path().join("dgram.sock")).unwrap();
        let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
        let tcp_address = tcp.local_addr().unwrap();
        let first_path = dir.path().join("first.sock");
        let first = UnixListener::bind(&first_path).unwrap();
        let second = UnixListener::bind(dir.path().join("second.sock")).unwrap();

        let mut fds = ListenFds::from_fds(vec![
            (pipe_read, "fifo".into()),
            (OwnedFd::from(pair), "pair".into()),
            (not_listening, "bound".into()),
            (OwnedFd::from(datagram), "dgram".into()),
            (OwnedFd::from(tcp), "web".into()),
            (OwnedFd::from(first), "sttpipe".into()),
            (OwnedFd::from(second), "second".into()),
        ]);
        assert!(!fds.is_empty());

        let (listener, name) = fds.take_unix_listener().unwrap().expect("a unix listener");
        assert_eq!(name, "sttpipe");
        assert_eq!(
            listener.local_addr().unwrap().as_pathname(),
            Some(first_path.as_path())
        );
        // Non-blocking: no pending connection means WouldBlock, not a hang.
        let error = listener.accept().unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        let mut client = UnixStream::connect(&first_path).unwrap();
        client.write_all(b"hi").unwrap();
        let (mut server, _) = loop {
            match listener.accept() {
                Ok(accepted) => break accepted,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(error) => panic!("accept: {error}"),
            }
        };
        server.set_nonblocking(false).unwrap();
        let mut got = [0u8; 2];
        server.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hi");

        let (_, name) = fds.take_unix_listener().unwrap().expect("the second one");
        assert_eq!(name, "second");
        assert!(fds.take_unix_listener().unwrap().is_none());

        let tcp = fds.take_tcp_listener().unwrap().expect("the tcp listener");
        assert_eq!(tcp.local_addr().unwrap(), tcp_address);
        assert_eq!(tcp.accept().unwrap_err().kind(), io::ErrorKind::WouldBlock);
        let _client = TcpStream::connect(tcp_address).unwrap();
        assert!(fds.take_tcp_listener().unwrap().is_none());

        // What no taker wanted stays in the set.
        assert!(!fds.is_empty());
        assert_eq!(fds.fds.iter().flatten().count(), 4);
    }

    #[test]
    fn takes_an_ipv6_listener_and_nothing_from_an_empty_set() {
        let mut empty = ListenFds::default();
        assert!(empty.is_empty());
        assert!(empty.take_unix_listener().unwrap().is_none());
        assert!(empty.take_tcp_listener().unwrap().is_none());

        // IPv6 may be off on a CI machine: then there is nothing to test.
        let Ok(tcp6) = TcpListener::bind("[::1]:0") else {
            return;
        };
        let mut fds = ListenFds::from_fds(vec![(OwnedFd::from(tcp6), "web6".into())]);
        assert!(fds.take_unix_listener().unwrap().is_none());
        assert!(fds.take_tcp_listener().unwrap().is_some());
        assert!(fds.is_empty());
    }
}
