//! systemd integration: socket activation (`LISTEN_FDS`) and `sd_notify`
//! (`NOTIFY_SOCKET`: readiness, status, reload, stop, watchdog).
//!
//! Both protocols are small and stable, so they are written here with std
//! and `nix` instead of linking libsystemd; see sd_listen_fds(3) and
//! sd_notify(3).
//!
//! * [`listen`]: socket activation: the `LISTEN_*` variables, the passed
//!   descriptors ([`ListenFds`]) and which of them are the listeners wanted.
//! * [`fds`]: the two steps of it that need `unsafe`, taking ownership of
//!   the passed descriptors and unsetting the `LISTEN_*` variables; the only
//!   file of this module allowed `unsafe`.
//! * [`notify`]: [`Notifier`], the `sd_notify` datagrams.

mod fds;
mod listen;
mod notify;

pub(crate) use listen::{ListenFds, take_listen_fds};
pub(crate) use notify::Notifier;

/// A non-negative decimal number, nothing else (no sign, no spaces): the
/// syntax of `LISTEN_PID`, `LISTEN_FDS`, `WATCHDOG_USEC` and `WATCHDOG_PID`.
fn parse_decimal(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || !bytes.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(bytes).ok()?.parse().ok()
}
