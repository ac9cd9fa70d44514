//! The Soniox real-time protocol's wire vocabulary, as sttpipe speaks it.
//!
//! One definition of each message, used by every party that reads or writes
//! it:
//!
//! | message | written by | read by |
//! |---|---|---|
//! | [`StartRequest`] | sttpipe's Soniox engine | the emulator, sttpipe's WebSocket endpoint |
//! | [`Response`] with its [`Token`]s | the emulator, sttpipe's WebSocket endpoint | sttpipe's Soniox engine |
//! | [`ErrorFrame`] / [`ApiError`] | the emulator, sttpipe's WebSocket endpoint | sttpipe's Soniox engine |
//! | [`extension::queued_frame`] (sttpipe's own) | sttpipe's WebSocket endpoint, the emulator on request | sttpipe's Soniox engine |
//!
//! Readers check JSON shapes only, with Soniox's own messages for a
//! malformed request ([`fields`]); what each server then does with the
//! values (the emulator checks models, languages and ranges as the real
//! service does; the daemon leaves those to the service) stays with it. The
//! rule that an absent field and an explicit `null` both mean "not set", and
//! the short spelling of raw formats (`s16le` for `pcm_s16le`), are here
//! ([`format`](mod@format)).

pub mod error;
pub mod extension;
pub mod fields;
pub mod format;
pub mod response;
pub mod start;

pub use error::{ApiError, ErrorFrame};
pub use response::{Response, ServerMessage, Token};
pub use start::{Bounds, StartRequest, Translation};

use tungstenite::protocol::WebSocketConfig;

/// Bytes tungstenite reads from the socket at a time.
const WS_READ_BUFFER: usize = 4 * 1024;

/// WebSocket settings for every Soniox connection sttpipe opens or serves
/// (the engine's client, the daemon's endpoint, the emulator).
///
/// tungstenite zero-fills its whole read buffer before every read, the
/// reads that find nothing included, and so touches all of it: with the
/// 128 KiB default that was 35 % of the daemon's CPU and 128 KiB of RSS per
/// upstream connection. Soniox messages are small (100 ms of audio is
/// 3,200 bytes; a token response well under 1 KiB), and a larger frame
/// still arrives whole: the buffer grows for it.
pub fn websocket_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(WS_READ_BUFFER)
}
