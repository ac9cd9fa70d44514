//! What a client sent that its session has not taken yet: audio in whole
//! frames and finalize requests, in the order they came, and whether the
//! client has ended its audio.
//!
//! The relay reads the client into the inbox as long as it has room, also
//! while the client waits in the queue for an upstream slot (so its pings
//! are answered and its keepalives seen), and the session takes from it at
//! its real-time pace. The inbox is bounded (about a minute of audio); when
//! it is full the client is not read, so TCP holds it back.

use std::collections::VecDeque;

use bytes::{Buf, Bytes, BytesMut};
use tracing::debug;

use crate::session::SessionInput;

/// Audio held for a client, in seconds of its format: enough for a wait in
/// the queue, or for a client that sends faster than real time.
const HELD_SECONDS: u64 = 60;
/// Most audio bytes held, whatever the format's rate (and for containers,
/// whose rate is unknown): a minute of 16 kHz stereo f32 is under this.
const MAX_HELD_BYTES: u64 = 8 << 20;
/// Most messages held: a minute of 10 ms messages.
const MAX_HELD_MESSAGES: usize = 6000;

/// See the module documentation.
#[derive(Debug)]
pub(super) struct Inbox {
    /// Bytes in one audio frame (1 for containers).
    frame: usize,
    /// The start of a frame that the next message completes.
    carry: BytesMut,
    held: VecDeque<SessionInput>,
    /// Audio bytes in `held`.
    held_bytes: usize,
    /// Past this many audio bytes held, the inbox is full.
    max_bytes: usize,
    /// The client ended its audio, or its session stopped reading: nothing
    /// more goes in.
    closed: bool,
}

impl Inbox {
    /// An inbox for audio of `frame` bytes a frame (1 for containers) and
    /// `bytes_per_second` (`None` if unknown).
    pub(super) fn new(frame: usize, bytes_per_second: Option<u64>) -> Inbox {
        let max_bytes = bytes_per_second.map_or(MAX_HELD_BYTES, |rate| {
            rate.saturating_mul(HELD_SECONDS).min(MAX_HELD_BYTES)
        });
        Inbox {
            frame: frame.max(1),
            carry: BytesMut::new(),
            held: VecDeque::new(),
            held_bytes: 0,
            // At most MAX_HELD_BYTES, which fits any usize of 32 bits or more.
            max_bytes: usize::try_from(max_bytes).unwrap_or(usize::MAX),
            closed: false,
        }
    }

    /// Whether the client may be read: the inbox is not full. One message
    /// may take it past its bound (up to the largest message), never two.
    pub(super) fn has_room(&self) -> bool {
        self.held.len() < MAX_HELD_MESSAGES && self.held_bytes < self.max_bytes
    }

    /// Whether nothing is held.
    pub(super) fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    /// Whether nothing more goes in (see [`Inbox::end`], [`Inbox::discard`]).
    pub(super) fn is_closed(&self) -> bool {
        self.closed
    }

    /// Holds the whole frames of an audio message (with what the last one
    /// left of a frame), keeping a partial frame back for the next. Returns
    /// `false`, holding nothing, once the audio has ended.
    ///
    /// Chunks are copied out at their exact size: a frame's payload shares
    /// tungstenite's read buffer, and a chunk kept in the inbox or the
    /// replay buffer would pin that whole block with it (122 KiB of RSS per
    /// session at N = 1000 in benches/relay, against 81 KiB on the Unix
    /// socket).
    pub(super) fn audio(&mut self, data: &Bytes) -> bool {
        if self.closed {
            return false;
        }
        let chunk = if self.carry.is_empty() && data.len().is_multiple_of(self.frame) {
            Bytes::copy_from_slice(data)
        } else {
            self.carry.extend_from_slice(data);
            let whole = self.carry.len() / self.frame * self.frame;
            let chunk = Bytes::copy_from_slice(&self.carry[..whole]);
            self.carry.advance(whole);
            chunk
        };
        if !chunk.is_empty() {
            self.held_bytes += chunk.len();
            self.held.push_back(SessionInput::Audio(chunk));
        }
        true
    }

    /// Holds a finalize request, after the audio before it. Returns `false`,
    /// holding nothing, once the audio has ended.
    pub(super) fn finalize(&mut self) -> bool {
        if self.closed {
            return false;
        }
        self.held.push_back(SessionInput::Finalize);
        true
    }

    /// The client ended its audio: what is held still goes in, then
    /// nothing more.
    pub(super) fn end(&mut self) {
        if !self.closed && !self.carry.is_empty() {
            debug!(
                bytes = self.carry.len(),
                "dropped a partial frame at the end of the audio"
            );
        }
        self.closed = true;
        self.carry.clear();
    }

    /// The session stopped reading: what is held is dropped, and nothing
    /// more goes in.
    pub(super) fn discard(&mut self) {
        self.end();
        self.held.clear();
        self.held_bytes = 0;
    }

    /// The oldest message held, for the session.
    pub(super) fn pop(&mut self) -> Option<SessionInput> {
        let message = self.held.pop_front()?;
        if let SessionInput::Audio(chunk) = &message {
            self.held_bytes -= chunk.len();
        }
        Some(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn audio_of(message: Option<SessionInput>) -> Vec<u8> {
        match message {
            Some(SessionInput::Audio(chunk)) => chunk.to_vec(),
            other => panic!("not audio: {other:?}"),
        }
    }

    #[test]
    fn whole_frames_in_order_with_finalize_between() {
        let mut inbox = Inbox::new(4, Some(64_000));
        assert!(inbox.audio(&Bytes::from_static(b"abcdef")));
        assert!(inbox.finalize());
        assert!(inbox.audio(&Bytes::from_static(b"gh")));
        assert!(inbox.audio(&Bytes::from_static(b"ijklm")));
        assert_eq!(audio_of(inbox.pop()), b"abcd");
        assert!(matches!(inbox.pop(), Some(SessionInput::Finalize)));
        assert_eq!(audio_of(inbox.pop()), b"efgh");
        assert_eq!(audio_of(inbox.pop()), b"ijkl");
        assert!(inbox.pop().is_none() && inbox.is_empty());
        inbox.end();
        assert!(inbox.is_closed());
        assert!(!inbox.audio(&Bytes::from_static(b"nope")), "after the end");
        assert!(!inbox.finalize());
        assert!(inbox.is_empty(), "the partial frame is dropped");
    }

    #[test]
    fn bounded_by_a_minute_of_audio_and_by_messages() {
        // 100 bytes a second: full at 6000 bytes.
        let mut inbox = Inbox::new(1, Some(100));
        while inbox.has_room() {
            assert!(inbox.audio(&Bytes::from(vec![0; 1000])));
        }
        assert_eq!(inbox.held_bytes, 6000);
        assert!(inbox.pop().is_some());
        assert!(inbox.has_room(), "room again once the session takes some");
        let mut containers = Inbox::new(1, None);
        assert_eq!(containers.max_bytes as u64, MAX_HELD_BYTES);
        for _ in 0..MAX_HELD_MESSAGES {
            assert!(containers.has_room());
            containers.finalize();
        }
        assert!(!containers.has_room(), "tiny messages are bounded too");
        let fast = Inbox::new(8, Some(48_000 * 8));
        assert_eq!(fast.max_bytes as u64, MAX_HELD_BYTES, "at most 8 MiB");
    }

    #[test]
    fn discarded_when_the_session_stops_reading() {
        let mut inbox = Inbox::new(2, Some(32_000));
        inbox.audio(&Bytes::from_static(b"abcd"));
        inbox.discard();
        assert!(inbox.is_empty() && inbox.is_closed());
        assert_eq!(inbox.held_bytes, 0);
    }
}
