//! One connected WebSocket client: its connection, kept whole (not split
//! into halves) so that the TCP stream under it stays at hand, what the
//! daemon sends it, how the daemon sees it leave while its messages are
//! still unread, and the ways the daemon ends a connection: an error
//! frame, a normal close, or 1009 for a message over the limit.

use std::time::Duration;

use bytes::Bytes;
use futures_util::{FutureExt, SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tracing::info;

use soniox_wire::ApiError;

use super::tls::Conn;
use super::{CLOSE_GRACE, MAX_MESSAGE_BYTES};

/// The reason sent with 1009 (at most 123 bytes, as a close reason must be).
const TOO_BIG: &str = "Message too big: the limit is 16 MiB.";
/// Bytes read at a time while dropping the rest of an oversized message.
const SCRAP_CHUNK: usize = 16 * 1024;

const _: () = assert!(MAX_MESSAGE_BYTES == 16 << 20, "TOO_BIG names the limit");

type Ws = WebSocketStream<Conn>;

/// One connected WebSocket client.
pub(super) struct Client {
    ws: Ws,
    /// This connection's id: the session id, and `request_id` in errors.
    pub(super) request_id: String,
}

impl Client {
    pub(super) fn new(ws: Ws, request_id: String) -> Client {
        Client { ws, request_id }
    }

    /// The client's next message; `None` once the connection is over.
    /// Cancel-safe (a `select!` branch): a message is never half-taken.
    pub(super) async fn next(&mut self) -> Option<Result<Message, WsError>> {
        self.ws.next().await
    }

    pub(super) async fn send_text(&mut self, text: String) -> bool {
        self.ws.send(Message::text(text)).await.is_ok()
    }

    /// Sends an error frame, then closes (Soniox closes right after an error).
    pub(super) async fn fail(&mut self, err: &ApiError) {
        info!(code = err.code, error_type = %err.error_type, message = %err.message, "error sent to the client");
        if self.send_text(err.to_json(&self.request_id)).await {
            self.close().await;
        }
    }

    /// Closes with 1000 and waits (bounded) for the client's reply.
    pub(super) async fn close(&mut self) {
        let frame = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        if self.ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }

    /// Whether the client has gone, though what it sent before is still
    /// unread: its FIN or a reset has reached the TCP stream (readiness
    /// keeps that state, whatever is still queued before it).
    pub(super) fn departed(&self) -> bool {
        match self
            .ws
            .get_ref()
            .tcp()
            .ready(Interest::READABLE)
            .now_or_never()
        {
            Some(Ok(ready)) => ready.is_read_closed(),
            Some(Err(_)) => true,
            // Neither data nor an end has arrived.
            None => false,
        }
    }

    /// Pings the client; `false` if the connection failed.
    ///
    /// TCP delivers a FIN only after the data sent before it, and a client
    /// that flooded audio and left has its FIN behind megabytes in its own
    /// send buffer, which drain only as fast as its session reads. But a
    /// closed socket answers new data with a reset, which arrives at once:
    /// a ping brings it, and [`Client::departed`] sees it. A live client
    /// answers with a pong (ignored); a client that reads nothing keeps
    /// the ping in its buffers, so the wait for the send is bounded.
    pub(super) async fn probe(&mut self, bound: Duration) -> bool {
        let ping = self.ws.send(Message::Ping(Bytes::new()));
        !matches!(tokio::time::timeout(bound, ping).await, Ok(Err(_)))
    }

    /// Closes with 1009 after a message or frame over [`MAX_MESSAGE_BYTES`].
    ///
    /// The rest of that message is still on its way and can no longer be
    /// read as frames: it is read and dropped (bounded in time) until the
    /// client closes, since a socket closed with unread data resets the
    /// connection, and a reset may destroy the close frame before the
    /// client reads it.
    pub(super) async fn too_big(&mut self) {
        info!(session = %self.request_id, "a message over the limit: closed with 1009");
        let frame = CloseFrame {
            code: CloseCode::Size,
            reason: TOO_BIG.into(),
        };
        if self.ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        let stream = self.ws.get_mut();
        // Nothing follows the close frame.
        let _ = stream.shutdown().await;
        let mut scrap = vec![0; SCRAP_CHUNK];
        let drain = async { while let Ok(1..) = stream.read(&mut scrap).await {} };
        let _ = tokio::time::timeout(CLOSE_GRACE, drain).await;
    }
}

/// Whether a read failed on a message or frame over the limit.
pub(super) fn is_too_big(err: &WsError) -> bool {
    matches!(err, WsError::Capacity(CapacityError::MessageTooLong { .. }))
}
