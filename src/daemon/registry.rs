//! The sessions the daemon serves, for `sttpipe status`, STATUS=, the
//! per-uid limit and the per-name limit of the WebSocket endpoint's named
//! clients.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use serde_json::{Value, json};
use tokio::time::Instant;

/// Who is on the other end of a connection (SO_PEERCRED; the pid only for
/// logs, since pids are reused).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peer {
    /// User id.
    pub(crate) uid: u32,
    /// Group id.
    pub(crate) gid: u32,
    /// Process id, when known.
    pub(crate) pid: Option<i32>,
}

/// A session's state, as `status` shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum State {
    /// Waiting for an upstream slot.
    Queued = 0,
    /// Streaming.
    Streaming = 1,
    /// Audio ended; final tokens awaited.
    Draining = 2,
    /// No audio for a while: its upstream session closed, its slot given
    /// back until audio returns.
    Idle = 3,
}

impl State {
    fn name(raw: u8) -> &'static str {
        match raw {
            0 => "queued",
            1 => "streaming",
            2 => "draining",
            _ => "idle",
        }
    }
}

/// A named client of the WebSocket endpoint (its token's name), and the
/// sessions that name may have at once (0: no limit of its own).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ClientName {
    /// The token's name.
    pub(crate) name: Arc<str>,
    /// Its limit.
    pub(crate) max_sessions: usize,
}

#[derive(Debug)]
struct Entry {
    session_id: String,
    front: &'static str,
    peer: Peer,
    client: Option<Arc<str>>,
    started: Instant,
    progress: Arc<Progress>,
}

/// What a session's front end updates as it goes.
#[derive(Debug, Default)]
pub(crate) struct Progress {
    audio_bytes: AtomicU64,
    /// Bytes per second of the audio (0 for containers).
    bytes_per_second: AtomicU64,
    state: AtomicU8,
    /// The service URL of its upstream session now (failover may change it).
    upstream_url: Mutex<Option<Arc<str>>>,
}

impl Progress {
    /// Sets the service URL of its upstream session.
    pub(crate) fn set_upstream_url(&self, url: &str) {
        let mut now = self.upstream_url.lock().unwrap_or_else(|e| e.into_inner());
        if now.as_deref() != Some(url) {
            *now = Some(url.into());
        }
    }

    fn upstream_url(&self) -> Option<Arc<str>> {
        // A plain value, set whole.
        self.upstream_url
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Counts audio read from the client.
    pub(crate) fn add_audio(&self, bytes: u64) {
        self.audio_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Sets the state.
    pub(crate) fn set_state(&self, state: State) {
        self.state.store(state as u8, Ordering::Relaxed);
    }

    /// Sets the audio rate, so status can say ms.
    pub(crate) fn set_bytes_per_second(&self, rate: Option<u64>) {
        self.bytes_per_second
            .store(rate.unwrap_or(0), Ordering::Relaxed);
    }

    fn audio_ms(&self) -> u64 {
        match self.bytes_per_second.load(Ordering::Relaxed) {
            0 => 0,
            rate => self.audio_bytes.load(Ordering::Relaxed) * 1000 / rate,
        }
    }
}

/// All sessions now, and totals since start.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    entries: Mutex<HashMap<u64, Entry>>,
    next_id: AtomicU64,
    /// Audio of the sessions that ended, ms.
    finished_audio_ms: AtomicU64,
    /// Sessions served since start.
    served: AtomicU64,
}

/// A registered session; removed on drop.
#[derive(Debug)]
pub(crate) struct Registration {
    registry: Arc<Registry>,
    /// The registry's key, in the order of registration.
    id: u64,
    session_id: String,
    /// Updated by the front end.
    pub(crate) progress: Arc<Progress>,
}

impl Registration {
    /// The session's id.
    pub(crate) fn session_id(&self) -> &str {
        &self.session_id
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Some(entry) = self.registry.lock().remove(&self.id) {
            self.registry
                .finished_audio_ms
                .fetch_add(entry.progress.audio_ms(), Ordering::Relaxed);
        }
    }
}

impl Registry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        // Short critical sections that cannot leave the map inconsistent.
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Adds the session `session_id`; refused (the error says why) if
    /// `peer.uid` already has `per_uid_limit` sessions (0: no limit), or
    /// `client`'s name its own limit.
    pub(crate) fn register(
        self: &Arc<Self>,
        session_id: String,
        front: &'static str,
        peer: Peer,
        per_uid_limit: usize,
        client: Option<&ClientName>,
    ) -> Result<Registration, String> {
        let mut entries = self.lock();
        if per_uid_limit > 0
            && entries.values().filter(|e| e.peer.uid == peer.uid).count() >= per_uid_limit
        {
            return Err(format!("uid {} has too many sessions", peer.uid));
        }
        if let Some(client) = client.filter(|c| c.max_sessions > 0) {
            let held = entries
                .values()
                .filter(|e| e.client.as_deref() == Some(&*client.name))
                .count();
            if held >= client.max_sessions {
                return Err(format!(
                    "client {} has too many sessions (at most {})",
                    client.name, client.max_sessions
                ));
            }
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let progress = Arc::new(Progress::default());
        entries.insert(
            id,
            Entry {
                session_id: session_id.clone(),
                front,
                peer,
                client: client.map(|c| c.name.clone()),
                started: Instant::now(),
                progress: progress.clone(),
            },
        );
        self.served.fetch_add(1, Ordering::Relaxed);
        Ok(Registration {
            registry: self.clone(),
            id,
            session_id,
            progress,
        })
    }

    /// Sessions now.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    #[cfg(test)]
    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The `status` document's session part.
    pub(crate) fn status(&self) -> Value {
        let entries = self.lock();
        let mut per_uid: BTreeMap<u32, usize> = BTreeMap::new();
        let mut per_client: BTreeMap<&str, usize> = BTreeMap::new();
        let mut live_audio_ms = 0;
        let mut sessions: Vec<(u64, Value)> = entries
            .iter()
            .map(|(id, e)| {
                *per_uid.entry(e.peer.uid).or_default() += 1;
                if let Some(name) = &e.client {
                    *per_client.entry(name).or_default() += 1;
                }
                let audio_ms = e.progress.audio_ms();
                live_audio_ms += audio_ms;
                (
                    *id,
                    json!({
                        "id": e.session_id,
                        "front": e.front,
                        "peer": {"uid": e.peer.uid, "gid": e.peer.gid, "pid": e.peer.pid},
                        "client": e.client.as_deref(),
                        "age_ms": e.started.elapsed().as_millis() as u64,
                        "audio_ms": audio_ms,
                        "state": State::name(e.progress.state.load(Ordering::Relaxed)),
                        "upstream_url": e.progress.upstream_url().as_deref(),
                    }),
                )
            })
            .collect();
        sessions.sort_by_key(|(id, _)| *id);
        let total_ms = self.finished_audio_ms.load(Ordering::Relaxed) + live_audio_ms;
        json!({
            "sessions": sessions.into_iter().map(|(_, s)| s).collect::<Vec<_>>(),
            "per_uid": per_uid.into_iter().map(|(uid, n)| (uid.to_string(), json!(n))).collect::<serde_json::Map<_, _>>(),
            "per_client": per_client,
            "sessions_served": self.served.load(Ordering::Relaxed),
            "audio_minutes": total_ms as f64 / 60_000.0,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_uid_limit_and_totals() {
        let registry = Arc::new(Registry::default());
        let peer = Peer {
            uid: 1000,
            gid: 1000,
            pid: Some(1),
        };
        let first = registry
            .register("00000000000000a1".into(), "unix", peer, 1, None)
            .expect("first");
        assert!(
            registry
                .register("00000000000000a2".into(), "unix", peer, 1, None)
                .is_err()
        );
        first.progress.set_bytes_per_second(Some(32_000));
        first.progress.add_audio(64_000);
        let status = registry.status();
        // The id the session's `start` event and logs carry.
        assert_eq!(status["sessions"][0]["id"], "00000000000000a1");
        assert_eq!(status["sessions"][0]["audio_ms"], 2000);
        assert_eq!(status["per_uid"]["1000"], 1);
        assert_eq!(status["sessions"][0]["upstream_url"], Value::Null);
        first.progress.set_upstream_url("wss://b/ws");
        assert_eq!(
            registry.status()["sessions"][0]["upstream_url"],
            "wss://b/ws"
        );
        drop(first);
        assert!(registry.is_empty());
        assert_eq!(registry.status()["audio_minutes"], 2000.0 / 60_000.0);
        assert!(
            registry
                .register("00000000000000a3".into(), "unix", peer, 1, None)
                .is_ok()
        );
    }

    /// A session id of the documented form.
    fn session_id(n: u64) -> String {
        format!("{n:016x}")
    }

    #[test]
    fn per_client_limit_and_counts() {
        let registry = Arc::new(Registry::default());
        let peer = Peer {
            uid: u32::MAX,
            gid: u32::MAX,
            pid: None,
        };
        let named = |name: &str, max_sessions| ClientName {
            name: name.into(),
            max_sessions,
        };
        let (a, b) = (named("a", 2), named("b", 0));
        let a1 = registry
            .register(session_id(177), "ws", peer, 0, Some(&a))
            .expect("a1");
        let _a2 = registry
            .register(session_id(178), "ws", peer, 0, Some(&a))
            .expect("a2");
        let refused = registry
            .register(session_id(179), "ws", peer, 0, Some(&a))
            .expect_err("a3");
        assert_eq!(refused, "client a has too many sessions (at most 2)");
        let _b: Vec<_> = (0..3)
            .map(|i| {
                registry
                    .register(session_id(0xc0 + i), "ws", peer, 0, Some(&b))
                    .expect("b has no limit")
            })
            .collect();
        let _anonymous = registry
            .register(session_id(180), "ws", peer, 0, None)
            .expect("no name");
        let status = registry.status();
        assert_eq!(status["per_client"], json!({"a": 2, "b": 3}));
        assert_eq!(status["sessions"][0]["client"], "a");
        assert_eq!(status["sessions"][5]["client"], Value::Null);
        drop(a1);
        assert!(
            registry
                .register(session_id(181), "ws", peer, 0, Some(&a))
                .is_ok()
        );
    }
}
