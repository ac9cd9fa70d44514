//! `sd_notify`: the [`Notifier`] and the datagrams it sends to
//! `NOTIFY_SOCKET` (readiness, status, reload, stop, watchdog).

use std::ffi::{OsStr, OsString};
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::path::PathBuf;
use std::time::Duration;

use super::parse_decimal;

/// How long a notification may wait for room in the receiver's queue. The
/// watchdog is pinged from the daemon's main loop, which must not hang on a
/// wedged service manager.
const NOTIFY_SEND_TIMEOUT: Duration = Duration::from_secs(1);

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
fn notify_target(value: &OsStr) -> Option<(UnixDatagram, SocketAddr)> {
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
}
