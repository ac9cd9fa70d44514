//! Entry points for the fuzz targets in `crates/fuzz` (the `fuzzing`
//! feature only): the parsers that take untrusted bytes (a socket header, a
//! WebSocket request head and start request, a WAV header, a media file),
//! driven as the daemon and the filter drive them. The decode benchmark
//! (`benches/decode.rs`) times [`decode_media`]. A panic anywhere below is a finding.
//! Nothing here reads files or opens connections: a client's options are
//! resolved as a client's ([`Origin::Client`]).

use crate::config::resolve::{self, Origin};
use crate::protocol::{self, Request};

/// A socket client's header line, as the daemon reads and resolves it.
pub fn socket_header(line: &[u8]) {
    if let Ok(Request::Session { args, .. }) = protocol::parse_header(line) {
        let _ = resolve::session(&args, Origin::Client);
    }
}

/// A WebSocket client's start request (any bytes: not UTF-8 is skipped, as
/// tungstenite refuses such a text frame), read and resolved as the
/// endpoint does.
pub fn start_request(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        crate::daemon::ws_fuzz::start_request(text);
    }
}

/// An HTTP request head on the WebSocket endpoint, parsed, routed and
/// checked.
pub fn http_head(bytes: &[u8]) {
    crate::daemon::ws_fuzz::http_head(bytes);
}

/// A WAV `fmt ` chunk's body, as the input reader parses it.
pub fn wav_fmt(body: &[u8]) {
    let _ = crate::input::wav::parse_fmt(body);
}

/// A Wyoming client's byte stream, as the daemon's Wyoming front end reads
/// it: events, then what each one becomes.
pub fn wyoming_events(bytes: &[u8]) {
    crate::daemon::wyoming::fuzz_events(bytes);
}

/// A media file in memory, sniffed and decoded as the input reader does:
/// the count of 16 kHz samples it gives, `None` if it is no media sttpipe
/// decodes or does not decode.
pub fn decode_media(bytes: &[u8]) -> Option<u64> {
    crate::input::decode_in_memory(bytes)
}
