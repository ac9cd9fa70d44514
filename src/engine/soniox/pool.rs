//! The warm pool: upstream connections opened ahead of need, kept alive
//! with keepalives and replaced before [`WARM_MAX_AGE`], never more than the
//! daemon's free slots allow, and one fewer for each refusal past Soniox's
//! cap on connections (idle ones count against it), growing back slowly.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tracing::{debug, warn};

use super::{KEEPALIVE_AFTER, Socket, SonioxEngine, receive};
use crate::engine::quota::Tier;

/// A warm connection older than this is replaced: idle, unconfigured
/// connections are not kept forever by the service (the Python SDK replaces
/// them before 10 minutes).
pub(crate) const WARM_MAX_AGE: Duration = Duration::from_secs(9 * 60);

/// How many idle connections the pool may hold now: the daemon's free
/// upstream slots, so that warm connections and streaming sessions together
/// stay within `--max-upstream` (Soniox counts idle connections too).
pub(crate) type PoolRoom = Arc<dyn Fn() -> usize + Send + Sync>;

/// After a refusal past the cap on connections, the pool grows back by one
/// connection after this long without another.
const POOL_REGROW: Duration = Duration::from_secs(120);

/// Open connections waiting for a session.
pub(super) struct WarmPool {
    /// The size asked for (`--warm-pool`).
    pub(super) size: usize,
    /// The size now: `size`, less one for each refusal past the cap on
    /// connections, grown back by one every [`POOL_REGROW`] without one.
    pub(super) cap: Mutex<(usize, Instant)>,
    pub(super) room: PoolRoom,
    /// Oldest first, with the time each was opened and its URL's index.
    pub(super) idle: Mutex<VecDeque<(Instant, usize, Socket)>>,
    /// A connection was taken, or the pool shrank: see to it now.
    pub(super) wanted: Notify,
}

impl WarmPool {
    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<(Instant, usize, Socket)>> {
        // Plain pushes and pops: a panic cannot leave the queue half-done.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_cap(&self) -> std::sync::MutexGuard<'_, (usize, Instant)> {
        // A plain pair of values, set whole.
        self.cap.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The size now, after growing back if it is time (`regrow`: the
    /// period, in wall time).
    fn size_now(&self, regrow: Duration) -> usize {
        let mut cap = self.lock_cap();
        if cap.0 < self.size && cap.1.elapsed() >= regrow {
            *cap = (cap.0 + 1, Instant::now());
            debug!(size = cap.0, "warm pool: growing back");
        }
        cap.0
    }

    /// The service refused a connection past its cap: one idle connection
    /// fewer from now on, and the oldest idle one closed at once, so that
    /// the session refused can open its own.
    pub(super) fn shrink(&self) {
        let size = {
            let mut cap = self.lock_cap();
            *cap = (cap.0.saturating_sub(1), Instant::now());
            cap.0
        };
        let oldest = self.lock().pop_front();
        if let Some((_, _, mut socket)) = oldest {
            tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
            });
        }
        warn!(
            size,
            "the service's cap on connections was reached: the warm pool shrinks"
        );
        self.wanted.notify_one();
    }

    /// The newest connection young enough to use, with its URL's index.
    pub(super) fn take(&self) -> Option<(usize, Socket)> {
        let taken = {
            let mut idle = self.lock();
            idle.retain(|(opened, _, _)| opened.elapsed() < WARM_MAX_AGE);
            idle.pop_back()
        };
        self.wanted.notify_one();
        taken.map(|(_, index, socket)| (index, socket))
    }
}

/// Keeps the pool full and its connections alive, until the engine is gone.
pub(super) async fn keep_warm(pool: std::sync::Weak<WarmPool>, engine: SonioxEngine) {
    let keepalive_every = engine.service.timing.wall(KEEPALIVE_AFTER);
    let regrow = engine.service.timing.wall(POOL_REGROW);
    loop {
        let Some(strong) = pool.upgrade() else {
            return;
        };
        let target = strong.size_now(regrow).min((strong.room)());
        let missing = target.saturating_sub(strong.lock().len());
        for _ in 0..missing {
            // A warm connection is a new connection as the quota counts it:
            // it takes its token now, and the session that uses it none.
            if let Some(rate) = &engine.rate {
                rate.take().await;
            }
            match engine.connect().await {
                Ok((socket, index)) => strong.lock().push_back((Instant::now(), index, socket)),
                Err(err) => {
                    debug!(error = %err, "warm pool: connect failed");
                    break;
                }
            }
        }
        // Keepalives on the idle connections: the service may send one
        // before the start request (the Python SDK's preconnect does).
        // Past the room (more sessions stream now), the oldest go.
        let idle: Vec<(Instant, usize, Socket)> = strong.lock().drain(..).collect();
        let surplus = idle.len().saturating_sub(target);
        let mut alive = Vec::with_capacity(idle.len());
        for (i, (opened, index, mut socket)) in idle.into_iter().enumerate() {
            let young = opened.elapsed() < WARM_MAX_AGE;
            let usable = match engine.check_idle(&mut socket) {
                Ok(()) => true,
                Err(tier) => {
                    if tier == Some(Tier::Connections) {
                        strong.shrink();
                    }
                    false
                }
            };
            if i >= surplus
                && young
                && usable
                && socket
                    .send(Message::text(r#"{"type":"keepalive"}"#))
                    .await
                    .is_ok()
            {
                alive.push((opened, index, socket));
            } else {
                let _ = tokio::time::timeout(Duration::from_secs(1), socket.close(None)).await;
            }
        }
        strong.lock().extend(alive);
        // Holding the pool while waiting only delays its end by one period.
        tokio::select! {
            () = strong.wanted.notified() => {}
            () = tokio::time::sleep(keepalive_every) => {}
        }
    }
}

impl SonioxEngine {
    /// Whether an idle connection is still usable. What the service sent it
    /// meanwhile is read without waiting: after a close it is not; after an
    /// error frame (a refusal past the cap on connections, typically) it is
    /// not either, and the refusal's tier is given, counted.
    pub(super) fn check_idle(&self, socket: &mut Socket) -> Result<(), Option<Tier>> {
        loop {
            match socket.next().now_or_never() {
                // Nothing more has arrived.
                None => return Ok(()),
                Some(Some(Ok(Message::Text(text)))) => {
                    if let Err(err) = receive(Some(Ok(Message::Text(text)))) {
                        debug!(error = %err, "an idle connection was refused");
                        return Err(self.count(&err));
                    }
                }
                Some(Some(Ok(Message::Close(_)) | Err(_)) | None) => return Err(None),
                Some(Some(Ok(_))) => {}
            }
        }
    }
}
