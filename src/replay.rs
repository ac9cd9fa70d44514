//! The replay buffer: the audio that no final token covers yet.
//!
//! Live audio cannot be recorded again, so every chunk read stays here until
//! the service has made it final. When an upstream session dies, the next
//! one is fed from here, starting at a final-token boundary; when it fills
//! (`--replay-buffer`), the oldest audio goes first and the session reports
//! the lost range. Offsets are byte positions on the whole stream, so they
//! survive any number of upstream sessions.

use std::collections::VecDeque;
use std::ops::Range;

use bytes::Bytes;

/// Audio chunks held by stream byte offset.
#[derive(Debug)]
pub(crate) struct ReplayBuffer {
    /// Chunks in stream order, each with its stream byte offset.
    /// Invariant: contiguous, the first starting at `start`.
    chunks: VecDeque<(u64, Bytes)>,
    start: u64,
    end: u64,
    capacity: u64,
}

impl ReplayBuffer {
    /// An empty buffer holding at most `capacity` bytes.
    pub(crate) fn new(capacity: u64) -> ReplayBuffer {
        ReplayBuffer {
            chunks: VecDeque::new(),
            start: 0,
            end: 0,
            capacity,
        }
    }

    /// Stream offset of the oldest byte held.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    /// Stream offset just past the newest byte: all audio read so far.
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Bytes held.
    pub(crate) fn len(&self) -> u64 {
        self.end - self.start
    }

    #[cfg(test)]
    /// Whether nothing is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.start == self.end
    }

    /// Appends a chunk. If that overfills the buffer, the oldest whole
    /// chunks are dropped; returns the dropped range.
    pub(crate) fn push(&mut self, chunk: Bytes) -> Option<Range<u64>> {
        if chunk.is_empty() {
            return None;
        }
        let len = chunk.len() as u64;
        self.chunks.push_back((self.end, chunk));
        self.end += len;
        let dropped_from = self.start;
        while self.len() > self.capacity && self.chunks.len() > 1 {
            self.pop_front();
        }
        (self.start > dropped_from).then_some(dropped_from..self.start)
    }

    /// Forgets the whole chunks that end at or before `offset` (audio the
    /// service has made final).
    pub(crate) fn release(&mut self, offset: u64) {
        while let Some((at, chunk)) = self.chunks.front() {
            if at + chunk.len() as u64 > offset {
                break;
            }
            self.pop_front();
        }
    }

    fn pop_front(&mut self) {
        if let Some((at, chunk)) = self.chunks.pop_front() {
            self.start = at + chunk.len() as u64;
        }
    }

    /// The held audio from `offset` to the end of its chunk, or `None` if
    /// `offset` is not held (before `start`, or at `end`).
    pub(crate) fn chunk_at(&self, offset: u64) -> Option<Bytes> {
        if offset < self.start || offset >= self.end {
            return None;
        }
        // The last chunk starting at or before `offset` holds it.
        let index = self.chunks.partition_point(|(at, _)| *at <= offset) - 1;
        let (at, chunk) = &self.chunks[index];
        Some(chunk.slice((offset - at) as usize..))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chunk(len: usize, fill: u8) -> Bytes {
        Bytes::from(vec![fill; len])
    }

    #[test]
    fn chunks_are_found_by_stream_offset() {
        let mut buffer = ReplayBuffer::new(1000);
        buffer.push(chunk(10, 1));
        buffer.push(chunk(10, 2));
        buffer.push(chunk(10, 3));
        assert_eq!(buffer.chunk_at(0).unwrap(), chunk(10, 1));
        assert_eq!(buffer.chunk_at(15).unwrap(), chunk(5, 2));
        assert_eq!(buffer.chunk_at(29).unwrap(), chunk(1, 3));
        assert!(buffer.chunk_at(30).is_none());
        buffer.release(15);
        assert_eq!(buffer.start(), 10, "a chunk is kept until wholly released");
        assert!(buffer.chunk_at(5).is_none());
        assert_eq!(buffer.chunk_at(12).unwrap(), chunk(8, 2));
        buffer.release(30);
        assert!(buffer.is_empty());
        assert_eq!(buffer.end(), 30);
    }

    #[test]
    fn overflow_drops_the_oldest_and_says_what() {
        let mut buffer = ReplayBuffer::new(25);
        assert_eq!(buffer.push(chunk(10, 1)), None);
        assert_eq!(buffer.push(chunk(10, 2)), None);
        assert_eq!(buffer.push(chunk(10, 3)), Some(0..10));
        assert_eq!(buffer.push(chunk(20, 4)), Some(10..30));
        assert_eq!((buffer.start(), buffer.end()), (30, 50));
        // A single chunk larger than the capacity is kept: audio is never
        // dropped before it could be sent at all.
        assert_eq!(buffer.push(chunk(40, 5)), Some(30..50));
        assert_eq!(buffer.len(), 40);
    }
}
