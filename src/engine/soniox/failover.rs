//! Upstream failover: the order in which a connection attempt tries the
//! service's URLs (`--url` given more than once), round-robin from the last
//! one that worked.
//!
//! The cursor is the engine's, shared by its sessions and its warm pool, so
//! that once one session has found a URL dead the others start past it. A
//! URL that fails (refused, TLS, no answer, a 5xx at the upgrade, a working
//! connection lost) moves the cursor to the next, unless another attempt
//! has moved it meanwhile.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::error::Error;

/// The service's URLs and where the next attempt starts.
#[derive(Debug, Clone)]
pub(crate) struct Upstreams {
    urls: Arc<[String]>,
    /// Index of the last URL that worked (or the next to try after one
    /// failed).
    cursor: Arc<AtomicUsize>,
}

impl Upstreams {
    /// `urls` in the order given; the first is tried first.
    pub(crate) fn new(urls: &[String]) -> Upstreams {
        Upstreams {
            urls: urls.into(),
            cursor: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// How many URLs there are.
    pub(crate) fn len(&self) -> usize {
        self.urls.len()
    }

    /// The URL at `index`.
    pub(crate) fn url(&self, index: usize) -> &str {
        &self.urls[index % self.urls.len()]
    }

    /// The indices to try, in order: every URL once, from the cursor on.
    pub(crate) fn order(&self) -> impl Iterator<Item = usize> + use<> {
        let n = self.urls.len();
        let from = self.cursor.load(Ordering::Relaxed) % n.max(1);
        (0..n).map(move |i| (from + i) % n)
    }

    /// The URL at `index` worked: the next attempt starts there.
    pub(crate) fn good(&self, index: usize) {
        self.cursor.store(index, Ordering::Relaxed);
    }

    /// The URL at `index` failed: the next attempt starts at the one after
    /// it, unless the cursor has moved meanwhile (another session found a
    /// URL that works, or already moved past this one).
    pub(crate) fn failed(&self, index: usize) {
        let next = (index + 1) % self.urls.len();
        let _ = self
            .cursor
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Whether a failure to connect to one URL is worth trying the next for:
/// the host is down, unreachable, slow, untrusted, or failing (5xx). A
/// refusal of the key or the request (4xx, a 429 quota) would be the same
/// everywhere: it is not.
pub(crate) fn fails_over(err: &Error) -> bool {
    match err {
        Error::Connect { .. } | Error::Disconnected(_) | Error::Stalled(_) => true,
        Error::Service { code, .. } => *code >= 500,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstreams(n: usize) -> Upstreams {
        let urls: Vec<String> = (0..n).map(|i| format!("wss://host{i}/ws")).collect();
        Upstreams::new(&urls)
    }

    fn order(upstreams: &Upstreams) -> Vec<usize> {
        upstreams.order().collect()
    }

    #[test]
    fn every_url_once_from_the_last_good_one() {
        let up = upstreams(3);
        assert_eq!(order(&up), [0, 1, 2]);
        up.good(1);
        assert_eq!(order(&up), [1, 2, 0]);
        up.good(2);
        assert_eq!(order(&up), [2, 0, 1]);
        assert_eq!(up.url(2), "wss://host2/ws");
    }

    #[test]
    fn a_failure_moves_on_to_the_next_round_robin() {
        let up = upstreams(3);
        up.failed(0);
        assert_eq!(order(&up), [1, 2, 0]);
        up.failed(1);
        up.failed(2);
        assert_eq!(order(&up), [0, 1, 2], "wraps around");
    }

    #[test]
    fn a_stale_failure_does_not_move_a_cursor_already_moved() {
        let up = upstreams(3);
        // Two sessions tried host 0; the first to fail moved on to 1 and
        // found it good; the second's failure of 0 changes nothing.
        up.failed(0);
        up.good(1);
        up.failed(0);
        assert_eq!(order(&up), [1, 2, 0]);
    }

    #[test]
    fn one_url_is_always_the_one() {
        let up = upstreams(1);
        up.failed(0);
        assert_eq!(order(&up), [0]);
    }

    #[test]
    fn failing_over_is_for_the_host_not_the_key() {
        let connect = Error::Connect {
            url: "wss://x/".into(),
            reason: "refused".into(),
            transient: true,
        };
        assert!(fails_over(&connect));
        let service = |code| Error::Service {
            code,
            error_type: None,
            message: String::new(),
        };
        assert!(fails_over(&service(503)) && fails_over(&service(502)));
        assert!(!fails_over(&service(401)) && !fails_over(&service(429)));
        assert!(!fails_over(&Error::Config("x".into())));
    }
}
