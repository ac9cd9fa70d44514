//! Socket activation, the safe part: reading `LISTEN_PID`, `LISTEN_FDS` and
//! `LISTEN_FDNAMES`, and handing out the passed descriptors ([`ListenFds`])
//! as the listeners the daemon wants, checked like sd_is_socket(3) does.
//!
//! Owning the descriptors and unsetting the variables are
//! [`fds`](super::fds)'s.

use std::io;
use std::net::TcpListener;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixListener;

use nix::sys::socket::{AddressFamily, SockType, SockaddrLike, SockaddrStorage, getsockname};
use nix::sys::socket::{getsockopt, sockopt};

use super::fds::{own_passed_fds, unset_listen_env};
use super::parse_decimal;

/// `SD_LISTEN_FDS_START`: the first passed file descriptor.
const LISTEN_FDS_START: RawFd = 3;

/// The name systemd's `sd_listen_fds_with_names()` reports for a passed fd
/// without one.
const UNKNOWN_NAME: &str = "unknown";

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
    Ok(ListenFds::from_fds(own_passed_fds(fds)?))
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::os::unix::net::{UnixDatagram, UnixStream};
    use std::time::Duration;

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
