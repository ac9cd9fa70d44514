//! Session ids: 16 lowercase hex digits, in `start` events, logs and
//! `sttpipe status`.
//!
//! The filter's one stream takes a random id. A daemon takes a random base
//! once and adds a counter to it: unique for the daemon's whole life (the
//! sum wraps, so every count gives a different id) and unlikely to meet
//! another daemon's, while consecutive sessions still read as a sequence.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};

/// A random id.
pub(crate) fn random() -> String {
    format(random_u64())
}

/// A daemon's ids: a random base plus a counter.
#[derive(Debug)]
pub(crate) struct SessionIds {
    base: u64,
    next: AtomicU64,
}

impl Default for SessionIds {
    fn default() -> SessionIds {
        SessionIds::starting_at(random_u64())
    }
}

impl SessionIds {
    fn starting_at(base: u64) -> SessionIds {
        SessionIds {
            base,
            next: AtomicU64::new(0),
        }
    }

    /// The next id, never given before by this generator.
    pub(crate) fn next(&self) -> String {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        format(self.base.wrapping_add(n))
    }
}

fn format(id: u64) -> String {
    format!("{id:016x}")
}

/// 64 bits from the kernel's generator; time and pid if it cannot be read
/// (an id, not a secret).
fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    let from_kernel =
        std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes));
    match from_kernel {
        Ok(()) => u64::from_le_bytes(bytes),
        Err(_) => {
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ (u64::from(std::process::id()) << 40)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    fn is_documented_form(id: &str) -> bool {
        id.len() == 16 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    }

    #[test]
    fn ids_are_16_lowercase_hex_digits() {
        assert!(is_documented_form(&random()));
        let ids = SessionIds::default();
        for _ in 0..100 {
            let id = ids.next();
            assert!(is_documented_form(&id), "{id}");
        }
        // Small values keep their leading zeros.
        assert_eq!(SessionIds::starting_at(0).next(), "0000000000000000");
    }

    #[test]
    fn a_daemon_never_repeats_an_id_even_across_the_wrap() {
        let ids = SessionIds::starting_at(u64::MAX - 500);
        let given: HashSet<String> = (0..1000).map(|_| ids.next()).collect();
        assert_eq!(given.len(), 1000);
        assert!(given.contains("ffffffffffffffff") && given.contains("0000000000000000"));
        assert!(given.iter().all(|id| is_documented_form(id)));
    }

    #[test]
    fn two_daemons_start_apart() {
        assert_ne!(SessionIds::default().next(), SessionIds::default().next());
    }
}
