//! The physical floor: a bare tokio-tungstenite frame forwarder with no
//! session core. For each WebSocket client it accepts it opens one
//! WebSocket to the upstream and forwards every text, binary and close
//! frame both ways as it comes, and nothing else: the least a relay on this
//! stack can do (the same runtime, WebSocket library and buffer settings as
//! the daemon).
//!
//! It runs in a process of its own, this bench binary started again with
//! [`UPSTREAM_ENV`] set, so that its CPU and memory are measured as the
//! other relays' are. It listens on a free loopback port, which the bench
//! reads from `/proc` as it does the daemon's.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{Sink, SinkExt, Stream, StreamExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::{Error, Message};

/// When set, to the upstream's `ws://` URL, the bench binary is the floor
/// forwarder and nothing else.
pub(crate) const UPSTREAM_ENV: &str = "STTPIPE_BENCH_FLOOR_UPSTREAM";

/// Forwards clients to `upstream` until the process is killed; returns only
/// if it cannot listen.
pub(crate) fn serve(upstream: String) -> Result<(), String> {
    // As the daemon's: a multi-thread runtime with a worker per core.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("tokio runtime: {e}"))?;
    runtime.block_on(async move {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(|e| format!("listen: {e}"))?;
        let upstream: Arc<str> = upstream.into();
        loop {
            match listener.accept().await {
                Ok((client, _)) => {
                    tokio::spawn(relay(client, Arc::clone(&upstream)));
                }
                Err(e) => {
                    // Out of file descriptors, say: the bench reports the
                    // sessions that fail; pausing keeps a retry loop from
                    // taking the CPU being measured.
                    eprintln!("floor: accept: {e}");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
    })
}

/// One client: its upstream connection, then both directions until each
/// has ended.
async fn relay(client: TcpStream, upstream: Arc<str>) {
    let config = soniox_wire::websocket_config();
    let _ = client.set_nodelay(true);
    let client = match tokio_tungstenite::accept_async_with_config(client, Some(config)).await {
        Ok(client) => client,
        Err(e) => {
            eprintln!("floor: client handshake: {e}");
            return;
        }
    };
    let server =
        match tokio_tungstenite::connect_async_with_config(&*upstream, Some(config), true).await {
            Ok((server, _)) => server,
            Err(e) => {
                eprintln!("floor: connect upstream: {e}");
                return;
            }
        };
    let (client_tx, client_rx) = client.split();
    let (server_tx, server_rx) = server.split();
    tokio::join!(forward(client_rx, server_tx), forward(server_rx, client_tx));
}

/// Sends on `to` every text, binary and close frame `from` yields, up to
/// and including a close; then closes `to`, so that a peer that vanished
/// ends the other side's connection too. Pings are answered by tungstenite
/// itself on each side, not forwarded.
async fn forward<R, W>(mut from: R, mut to: W)
where
    R: Stream<Item = Result<Message, Error>> + Unpin,
    W: Sink<Message, Error = Error> + Unpin,
{
    while let Some(Ok(message)) = from.next().await {
        let close = message.is_close();
        if !(close || message.is_text() || message.is_binary()) {
            continue;
        }
        if to.send(message).await.is_err() || close {
            break;
        }
    }
    // The other side may have closed first: nothing to do then.
    let _ = to.close().await;
}
