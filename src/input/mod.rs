//! Audio input: stdin, a file or a named FIFO, read into a bounded channel of
//! chunks.
//!
//! This module owns everything between the byte sources and the session:
//! opening them (file operands are read one after another, on one
//! timeline), waiting for FIFO writers (and, with `--follow`, for the next
//! one), sniffing each stream's first bytes, reading a WAV header,
//! decoding media (MP3, FLAC, Ogg Vorbis, MP4/M4A, Matroska/WebM, AIFF,
//! ADTS AAC) into 16 kHz mono PCM, and cutting raw audio into chunks of
//! whole frames. It does not pace audio to real time (the pacer does) and
//! does not know where the chunks go.
//!
//! # Threading and backpressure
//!
//! One dedicated `std::thread` per input does blocking reads and
//! `blocking_send`s into a bounded [`mpsc`] channel. A thread, not a tokio
//! task, because a blocking read cannot be cancelled (tokio's own stdin is a
//! blocking read on a hidden thread too); owning the thread keeps that fact in
//! one place. The channel's bound is the backpressure: while the consumer is
//! slow, the thread blocks in `blocking_send` and reads nothing more, so the
//! pipe fills and the producer (`arecord`, `ffmpeg`) blocks. When the receiver
//! is dropped the thread ends quietly at its next send, or at once while it
//! waits for a FIFO writer.
//!
//! # Events
//!
//! In order, per input:
//!
//! ```text
//! Warning?  Format  Audio*  PartialFrameDropped?  ( WriterClosed  Warning?  Format?  Audio*  PartialFrameDropped? )*
//! ```
//!
//! then the channel closes. `Failed` may replace any event and is always the
//! last. `WriterClosed` ends one stream of several: a FIFO writer with
//! `--follow`, or a file operand with another after it. Each stream is
//! sniffed afresh: a second `Format` follows `WriterClosed` only when the
//! next stream differs from the last reported format (say, a WAV with
//! another rate; decoded media are always 16 kHz mono pcm_s16le).
//!
//! # What a stream is
//!
//! Unless the user named a raw format, the first bytes ([`sniff`], up to
//! 4 KiB) decide: a WAV header is read ([`wav`]) and its samples streamed
//! as they are; a media container is decoded ([`decode`]); Ogg Opus, which
//! nothing here decodes, is passed through for Soniox to decode; anything
//! else is raw audio of the declared format, with a `Warning` when it reads
//! as text or does not look like 16-bit audio. `--audio-format auto` (or
//! `--passthrough`) and a named container pass every non-WAV stream through
//! as it is.
//!
//! # FIFOs
//!
//! A read-only `open` of a FIFO blocks until a writer appears, so every path
//! is opened `O_RDONLY|O_NONBLOCK`, which returns at once: [`spawn`] fails fast
//! on a missing or unreadable path and never waits for a writer. A FIFO fd
//! opened that way reads EOF while no writer has come yet, so the thread first
//! waits for readiness (epoll, through a current-thread tokio reactor of its
//! own, built only for such waits): Linux reports neither data nor hang-up on
//! that fd until a writer has written or come and gone. Then the thread clears
//! `O_NONBLOCK` and reads blocking. (Nothing simpler is race-free: a blocking
//! reopen in the thread waits for the *next* writer, so one that came, wrote
//! and left in between would have its bytes stranded in the pipe.)
//!
//! Without `--follow` the first writer's EOF ends the input. With it, at EOF
//! the thread opens a new read-only fd (non-blocking, as above) **before**
//! closing the old one, so at no moment does the FIFO lack a reader: a writer
//! arriving in between neither blocks in `open` nor dies of SIGPIPE, and its
//! bytes wait in the pipe for the new fd. Writers that overlap in time merge
//! into one stream, because EOF comes only when the last of them closes. A
//! failure (a malformed WAV from one writer, say) ends the whole input.
//! `--follow` on stdin or a regular file just reads to EOF.
//!
//! # Files
//!
//! This file holds the surface ([`spawn`] and its types) and starts the
//! thread. [`source`] opens the sources and waits for readiness, [`reader`]
//! is the thread itself (each stream read, sniffed and cut into chunks),
//! [`sniff`] tells formats by their first bytes, [`wav`] reads a WAV header
//! and [`decode`] decodes media.

mod decode;
mod reader;
mod sniff;
mod source;
#[cfg(test)]
mod test_support;
pub(crate) mod wav;

use std::collections::VecDeque;
use std::fs::File;
use std::path::PathBuf;

use tokio::sync::mpsc;

use self::reader::Reader;
use crate::audio::AudioFormat;
use crate::error::Error;

/// Default duration of a raw-audio chunk: short enough for live latency, long
/// enough that per-message overhead stays small.
pub(crate) const DEFAULT_CHUNK_MS: u32 = 100;

/// Default chunk size for containers, whose frames sttpipe does not parse.
pub(crate) const DEFAULT_CONTAINER_CHUNK_BYTES: usize = 4096;

/// Default channel bound: 16 chunks, about 1.6 s of raw audio at 100 ms each.
pub(crate) const DEFAULT_QUEUE_CHUNKS: usize = 16;

/// The formats the reader decodes itself (WAV, and the media sttpipe
/// sniffs and decodes), for `sttpipe --version`.
pub(crate) fn decoded_formats() -> impl Iterator<Item = &'static str> {
    std::iter::once("WAV").chain(
        sniff::Media::ALL
            .into_iter()
            .filter(|media| media.decodable())
            .map(sniff::Media::name),
    )
}

/// Where audio comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Source {
    /// Standard input (`-`).
    Stdin,
    /// A regular file, a named FIFO or a device.
    Path(PathBuf),
}

/// How to read it.
#[derive(Debug, Clone)]
pub(crate) struct InputOptions {
    /// What to read: one source, or file operands read one after another
    /// (at least one).
    pub(crate) sources: Vec<Source>,
    /// Declared format (from --audio-format/--rate/--channels); default
    /// pcm_s16le/16000/1.
    pub(crate) format: AudioFormat,
    /// Whether the user named the format explicitly: an explicit raw format
    /// disables sniffing; "auto"/"wav" sniff WAV headers only; the default
    /// sniffs, and decodes media.
    pub(crate) format_explicit: bool,
    /// --follow: on a FIFO, keep reading across writers. Ignored for stdin and
    /// regular files, which are read to EOF.
    pub(crate) follow: bool,
    /// Chunk duration for raw formats (100 ms).
    pub(crate) chunk_ms: u32,
    /// Chunk bytes for containers (e.g. 4096).
    pub(crate) container_chunk_bytes: usize,
    /// Bound of the channel, in chunks (0 counts as 1).
    pub(crate) queue_chunks: usize,
}

impl InputOptions {
    /// Options for `source` with the defaults: pcm_s16le 16 kHz mono (not
    /// explicit, so a WAV header may override it), no follow,
    /// [`DEFAULT_CHUNK_MS`], [`DEFAULT_CONTAINER_CHUNK_BYTES`],
    /// [`DEFAULT_QUEUE_CHUNKS`].
    pub(crate) fn new(source: Source) -> InputOptions {
        InputOptions {
            sources: vec![source],
            format: AudioFormat::default_pcm(),
            format_explicit: false,
            follow: false,
            chunk_ms: DEFAULT_CHUNK_MS,
            container_chunk_bytes: DEFAULT_CONTAINER_CHUNK_BYTES,
            queue_chunks: DEFAULT_QUEUE_CHUNKS,
        }
    }
}

/// What the reader thread reports, in the order given in the module docs.
#[derive(Debug)]
pub(crate) enum InputEvent {
    /// Always first: the format actually in the stream (a WAV header, if
    /// found, decides it). With --follow, sent again after
    /// [`InputEvent::WriterClosed`] if the next writer's format differs.
    Format(AudioFormat),
    /// A chunk of audio: whole frames only for raw formats.
    Audio(bytes::Bytes),
    /// One stream ended and the next one's audio will follow: a FIFO writer
    /// closed (--follow), or a file operand ended with another after it.
    WriterClosed,
    /// Something the user should know about the input, for people (one
    /// line, no prefix): it looks like text, say.
    Warning(String),
    /// At the end of input (or of a writer, with --follow): this many trailing
    /// bytes did not make a whole frame and were dropped.
    PartialFrameDropped(usize),
    /// Reading failed; no further events follow.
    Failed(Error),
}

/// An opened source.
#[derive(Debug)]
struct Opened {
    file: File,
    /// The FIFO's path when `file` is a FIFO opened `O_NONBLOCK` that has not
    /// seen a writer yet.
    fifo: Option<PathBuf>,
    /// Its name for people.
    label: String,
}

/// Opens every source (an error here: Error::InputMissing, e.g. a
/// nonexistent path or permission, for the first that fails) and spawns a
/// reader thread that sends events; end of input = the channel closes.
///
/// Never blocks on a FIFO without a writer: the thread waits for it.
pub(crate) fn spawn(options: InputOptions) -> Result<mpsc::Receiver<InputEvent>, Error> {
    let opened = options
        .sources
        .iter()
        .map(|source| {
            let (file, fifo) = source::open(source)?;
            Ok(Opened {
                file,
                fifo,
                label: source::label(source),
            })
        })
        .collect::<Result<VecDeque<_>, Error>>()?;
    start(opened, &options)
}

/// Spawns the reader thread on opened sources.
fn start(
    mut opened: VecDeque<Opened>,
    options: &InputOptions,
) -> Result<mpsc::Receiver<InputEvent>, Error> {
    let first = opened
        .pop_front()
        .ok_or_else(|| Error::Internal("no input to read".into()))?;
    let (tx, rx) = mpsc::channel(options.queue_chunks.max(1));
    let reader = Reader::new(first, opened, options, tx);
    std::thread::Builder::new()
        .name("sttpipe-input".to_owned())
        .spawn(move || reader.run())
        // Only resource exhaustion stops a thread from starting; the input
        // is what cannot be read then.
        .map_err(Error::InputRead)?;
    Ok(rx)
}

/// Sniffs and decodes `bytes` as the reader does a stream, counting the
/// samples: for the fuzz targets and the decode benchmark.
#[cfg(feature = "fuzzing")]
pub(crate) fn decode_in_memory(bytes: &[u8]) -> Option<u64> {
    let sniff::Sniffed::Media(media) = sniff::sniff(bytes, true) else {
        return None;
    };
    let source = Box::new(std::io::Cursor::new(bytes.to_vec()));
    let decoded = decode::decode::<()>(source, media, &mut |_| Ok(())).ok()?;
    Some(decoded.samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs::OpenOptions;
    use std::io::{self, Write};
    use std::path::Path;
    use std::sync::mpsc as std_mpsc;
    use std::time::{Duration, Instant};

    use nix::sys::stat::Mode;
    use tokio::time::timeout;

    use super::test_support::{Ev, WAIT, audio_bytes, collect, ev, next, options, pattern};
    use super::wav::fixtures::{chunk, data_with_size, fmt_body, riff};

    /// A FIFO in a fresh tempdir (kept alive by the returned guard).
    fn fifo() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.fifo");
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
        (dir, path)
    }

    /// `spawn`, failing the test if it blocks.
    fn spawn_bounded(options: InputOptions) -> mpsc::Receiver<InputEvent> {
        let (done_tx, done_rx) = std_mpsc::channel();
        std::thread::spawn(move || done_tx.send(spawn(options)));
        done_rx
            .recv_timeout(WAIT)
            .expect("spawn returns without waiting for a writer")
            .unwrap()
    }

    /// Writes each of `writers` in turn, as separate opens of the FIFO, from a
    /// thread. The result arrives on the returned channel.
    fn write_in_turn(path: &Path, writers: Vec<Vec<u8>>) -> std_mpsc::Receiver<io::Result<()>> {
        write_with_gaps(path, writers, |_| Duration::ZERO)
    }

    /// As [`write_in_turn`], pausing `gap(i)` before writer `i` opens. The
    /// gaps only vary how writers interleave with the reader's reopen; no
    /// assertion depends on them.
    fn write_with_gaps(
        path: &Path,
        writers: Vec<Vec<u8>>,
        gap: impl Fn(usize) -> Duration + Send + 'static,
    ) -> std_mpsc::Receiver<io::Result<()>> {
        let path = path.to_owned();
        let (done_tx, done_rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            let result = writers.iter().enumerate().try_for_each(|(i, bytes)| {
                std::thread::sleep(gap(i));
                let mut writer = OpenOptions::new().write(true).open(&path)?;
                writer.write_all(bytes)
            });
            let _ = done_tx.send(result);
        });
        done_rx
    }

    /// Whether this process holds an fd open on `path`.
    fn holds_open(path: &Path) -> bool {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|entry| std::fs::read_link(entry.ok()?.path()).ok())
            .any(|target| target == path)
    }

    #[tokio::test]
    async fn fifo_waits_for_its_writer_and_ends_at_its_eof() {
        let (_dir, path) = fifo();
        let mut rx = spawn_bounded(options(&path));
        // No writer yet: the reader must wait, not take the empty FIFO for EOF.
        assert!(
            timeout(Duration::from_millis(200), rx.recv())
                .await
                .is_err()
        );

        let input = pattern(6401);
        let done = write_in_turn(&path, vec![input.clone()]);
        let events = collect(rx).await;
        assert_eq!(events[0], Ev::Format(AudioFormat::default_pcm()));
        assert_eq!(audio_bytes(&events), input[..6400]);
        assert_eq!(events.last(), Some(&Ev::Dropped(1)));
        assert!(!events.contains(&Ev::WriterClosed));
        done.recv_timeout(WAIT).unwrap().unwrap();
    }

    #[tokio::test]
    async fn follow_reads_writer_after_writer() {
        let (_dir, path) = fifo();
        let mut rx = spawn_bounded(InputOptions {
            follow: true,
            ..options(&path)
        });

        let first = pattern(3201);
        let done = write_in_turn(&path, vec![first.clone()]);
        assert_eq!(
            next(&mut rx).await,
            Some(Ev::Format(AudioFormat::default_pcm()))
        );
        assert_eq!(next(&mut rx).await, Some(Ev::Audio(first[..3200].to_vec())));
        assert_eq!(next(&mut rx).await, Some(Ev::Dropped(1)));
        assert_eq!(next(&mut rx).await, Some(Ev::WriterClosed));
        done.recv_timeout(WAIT).unwrap().unwrap();
        // The new reader must not see EOF before a writer comes (no busy loop
        // of WriterClosed events).
        assert!(
            timeout(Duration::from_millis(200), rx.recv())
                .await
                .is_err()
        );

        // The second writer opens once the first has gone: it must find a
        // reader and never get EPIPE (the write result says so).
        let second = pattern(6400);
        let done = write_in_turn(&path, vec![second.clone()]);
        assert_eq!(
            next(&mut rx).await,
            Some(Ev::Audio(second[..3200].to_vec()))
        );
        assert_eq!(
            next(&mut rx).await,
            Some(Ev::Audio(second[3200..].to_vec()))
        );
        assert_eq!(next(&mut rx).await, Some(Ev::WriterClosed));
        done.recv_timeout(WAIT).unwrap().unwrap();
    }

    #[tokio::test]
    async fn follow_survives_writers_in_quick_succession() {
        let (_dir, path) = fifo();
        let mut rx = spawn_bounded(InputOptions {
            follow: true,
            ..options(&path)
        });
        // Each writer opens the moment the previous one closes, racing the
        // reader's reopen. None may see EPIPE and no byte may be lost;
        // writers that overlap the reopen may merge into one stream.
        let writers: Vec<Vec<u8>> = (0..1000).map(|i| vec![(i % 251) as u8; 64]).collect();
        let expected: Vec<u8> = writers.concat();
        // Gaps of 0 to 300 µs let some writers start right after the reader
        // saw EOF, inside the reopen, and others merge.
        let done = write_with_gaps(&path, writers, |i| {
            Duration::from_micros((i as u64 % 4) * 100)
        });
        let mut received = Vec::new();
        let mut writers_done = false;
        let deadline = Instant::now() + WAIT;
        while received.len() < expected.len() {
            // A writer's EPIPE ends its thread early, and the reader then
            // waits for bytes that never come: report the EPIPE, not a hang.
            if let Ok(result) = done.try_recv() {
                result.expect("writers never meet EPIPE");
                writers_done = true;
            }
            assert!(
                Instant::now() < deadline,
                "got {} of {} bytes",
                received.len(),
                expected.len()
            );
            match timeout(Duration::from_millis(50), rx.recv())
                .await
                .map(|e| e.map(ev))
            {
                Ok(Some(Ev::Audio(bytes))) => received.extend(bytes),
                Ok(Some(Ev::Format(_) | Ev::WriterClosed | Ev::Warning(_))) | Err(_) => {}
                Ok(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(received, expected);
        if !writers_done {
            done.recv_timeout(WAIT).unwrap().unwrap();
        }
    }

    #[tokio::test]
    async fn follow_sniffs_each_writer() {
        let (_dir, path) = fifo();
        let mut rx = spawn_bounded(InputOptions {
            follow: true,
            ..options(&path)
        });
        let raw = pattern(3200);
        let samples = pattern(1600);
        let wav = riff(&[
            chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)),
            data_with_size(u32::MAX, &samples),
        ]);
        let done = write_in_turn(&path, vec![raw.clone()]);
        assert_eq!(
            next(&mut rx).await,
            Some(Ev::Format(AudioFormat::default_pcm()))
        );
        assert_eq!(next(&mut rx).await, Some(Ev::Audio(raw.clone())));
        assert_eq!(next(&mut rx).await, Some(Ev::WriterClosed));
        done.recv_timeout(WAIT).unwrap().unwrap();

        let done = write_in_turn(&path, vec![wav]);
        assert_eq!(
            next(&mut rx).await,
            Some(Ev::Format(AudioFormat::raw("pcm_s16le", 8000, 1)))
        );
        assert_eq!(next(&mut rx).await, Some(Ev::Audio(samples)));
        assert_eq!(next(&mut rx).await, Some(Ev::WriterClosed));
        done.recv_timeout(WAIT).unwrap().unwrap();

        // Back to the declared format for a writer without a header. (Each
        // writer starts after the reader saw the previous one close: writers
        // that overlap merge into one stream, header and all.)
        let done = write_in_turn(&path, vec![raw.clone()]);
        assert_eq!(
            next(&mut rx).await,
            Some(Ev::Format(AudioFormat::default_pcm()))
        );
        assert_eq!(next(&mut rx).await, Some(Ev::Audio(raw)));
        assert_eq!(next(&mut rx).await, Some(Ev::WriterClosed));
        done.recv_timeout(WAIT).unwrap().unwrap();
    }

    #[tokio::test]
    async fn dropping_the_receiver_releases_a_waiting_fifo() {
        let (_dir, path) = fifo();
        let rx = spawn_bounded(options(&path));
        assert!(holds_open(&path));
        drop(rx);
        // The thread, waiting for a writer, must notice and close the FIFO.
        let deadline = Instant::now() + WAIT;
        while holds_open(&path) {
            assert!(Instant::now() < deadline, "the reader still holds the FIFO");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn backpressure_stops_reading_while_the_queue_is_full() {
        let input = pattern(3200 * 20);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("input");
        std::fs::write(&path, &input).unwrap();
        let mut rx = spawn(InputOptions {
            queue_chunks: 2,
            ..options(&path)
        })
        .unwrap();
        // The bound holds however long the consumer waits.
        assert_eq!(
            next(&mut rx).await,
            Some(Ev::Format(AudioFormat::default_pcm()))
        );
        let deadline = Instant::now() + Duration::from_millis(100);
        while Instant::now() < deadline {
            assert!(rx.len() <= 2);
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let events = collect(rx).await;
        assert_eq!(events.len(), 20);
    }
}
