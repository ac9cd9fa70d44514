//! Audio input: stdin, a file or a named FIFO, read into a bounded channel of
//! chunks.
//!
//! This module owns everything between the byte source and the session:
//! opening the source, waiting for FIFO writers (and, with `--follow`, for the
//! next one), recognising a WAV header, and cutting raw audio into chunks of
//! whole frames. It does not pace audio to real time (the pacer does)
//! and does not know where the chunks go.
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
//! Format  Audio*  PartialFrameDropped?  ( WriterClosed  Format?  Audio*  PartialFrameDropped? )*
//! ```
//!
//! then the channel closes. `Failed` may replace any event and is always the
//! last. `WriterClosed` comes only with `--follow` on a FIFO, where each writer
//! is sniffed afresh: a second `Format` follows `WriterClosed` only when the
//! next writer's stream differs from the last reported format (say, a WAV with
//! another rate).
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

mod source;
#[cfg(test)]
mod test_support;
mod wav;

use std::fs::File;
use std::io::{self, Read};
use std::path::PathBuf;

use bytes::BytesMut;
use tokio::sync::mpsc;

use self::source::{Waiter, Woken};
use crate::audio::AudioFormat;
use crate::error::Error;

/// Default duration of a raw-audio chunk: short enough for live latency, long
/// enough that per-message overhead stays small.
pub(crate) const DEFAULT_CHUNK_MS: u32 = 100;

/// Default chunk size for containers, whose frames sttpipe does not parse.
pub(crate) const DEFAULT_CONTAINER_CHUNK_BYTES: usize = 4096;

/// Default channel bound: 16 chunks, about 1.6 s of raw audio at 100 ms each.
pub(crate) const DEFAULT_QUEUE_CHUNKS: usize = 16;

/// Scratch size for skipping chunks and trailing bytes that are not audio.
const SKIP_BUFFER_BYTES: usize = 8192;

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
    /// What to read.
    pub(crate) source: Source,
    /// Declared format (from --audio-format/--rate/--channels); default
    /// pcm_s16le/16000/1.
    pub(crate) format: AudioFormat,
    /// Whether the user named the format explicitly (an explicit raw format
    /// disables WAV sniffing; "auto"/"wav" and the default enable it).
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
            source,
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
    /// --follow: one FIFO writer closed; the next writer's audio will follow.
    WriterClosed,
    /// At the end of input (or of a writer, with --follow): this many trailing
    /// bytes did not make a whole frame and were dropped.
    PartialFrameDropped(usize),
    /// Reading failed; no further events follow.
    Failed(Error),
}

/// Opens the source (an error here: Error::InputMissing, e.g. nonexistent
/// path or permission) and spawns a reader thread that sends events; end of
/// input = the channel closes.
///
/// Never blocks on a FIFO without a writer: the thread waits for it.
pub(crate) fn spawn(options: InputOptions) -> Result<mpsc::Receiver<InputEvent>, Error> {
    let (file, fifo) = source::open(&options.source)?;
    start(file, fifo, &options)
}

/// Spawns the reader thread on an opened source. `fifo` is the FIFO's path
/// when `file` is a FIFO opened `O_NONBLOCK` that has not seen a writer yet.
fn start(
    file: File,
    fifo: Option<PathBuf>,
    options: &InputOptions,
) -> Result<mpsc::Receiver<InputEvent>, Error> {
    let (tx, rx) = mpsc::channel(options.queue_chunks.max(1));
    let sniff = !options.format_explicit || matches!(options.format.name.as_str(), "auto" | "wav");
    let reader = Reader {
        awaiting_writer: fifo.is_some(),
        follow: options.follow && fifo.is_some(),
        fifo,
        file,
        declared: options.format.clone(),
        sniff,
        chunk_ms: options.chunk_ms,
        container_chunk_bytes: options.container_chunk_bytes.max(1),
        tx,
        waiter: Waiter::default(),
        reported: None,
    };
    std::thread::Builder::new()
        .name("sttpipe-input".to_owned())
        .spawn(move || reader.run())
        // Only resource exhaustion stops a thread from starting; the input
        // is what cannot be read then.
        .map_err(Error::InputRead)?;
    Ok(rx)
}

/// Why the reader thread stops before the end of input.
enum Halt {
    /// The receiver is gone: nobody listens, so stop quietly.
    Closed,
    /// Reading failed: report it, then stop.
    Failed(Error),
}

/// A read error after opening.
fn read_failed(error: io::Error) -> Halt {
    Halt::Failed(Error::InputRead(error))
}

/// A WAV header that cannot be streamed.
impl From<wav::BadWav> for Halt {
    fn from(wav::BadWav(message): wav::BadWav) -> Halt {
        Halt::Failed(Error::BadAudio(message))
    }
}

/// The state of the reader thread.
struct Reader {
    /// The open source. For a FIFO, replaced (new first, then old dropped) at
    /// each writer's EOF with --follow.
    file: File,
    /// The FIFO's path, if the source is a FIFO.
    fifo: Option<PathBuf>,
    /// Whether `file` is a FIFO fd still `O_NONBLOCK` that has not seen its
    /// writer: reading it now would return a false EOF.
    awaiting_writer: bool,
    /// Keep reading across FIFO writers. Only ever true for a FIFO.
    follow: bool,
    /// The format to use when the stream has no WAV header.
    declared: AudioFormat,
    /// Whether to look for a WAV header at the start of each stream.
    sniff: bool,
    /// Chunk duration for raw formats.
    chunk_ms: u32,
    /// Chunk size for containers, at least 1.
    container_chunk_bytes: usize,
    /// The channel; dropping it (with the thread) closes the receiver's end.
    tx: mpsc::Sender<InputEvent>,
    /// Waits for readiness: a FIFO's writer, or data on a non-blocking stdin.
    waiter: Waiter,
    /// The last format sent, so a follow-up writer repeats it only on change.
    reported: Option<AudioFormat>,
}

impl Reader {
    /// The thread's body: read everything, report a failure if any.
    fn run(mut self) {
        match self.pump() {
            Ok(()) | Err(Halt::Closed) => {}
            Err(Halt::Failed(error)) => {
                tracing::debug!(%error, "input failed");
                // If the receiver is gone as well, nobody is left to tell.
                let _ = self.tx.blocking_send(InputEvent::Failed(error));
            }
        }
    }

    /// Reads one stream, or with --follow one writer after another.
    fn pump(&mut self) -> Result<(), Halt> {
        loop {
            self.segment()?;
            if !self.follow {
                return Ok(());
            }
            self.reopen()?;
            self.send(InputEvent::WriterClosed)?;
        }
    }

    /// Reads one stream (a whole input, or one FIFO writer) to its end.
    fn segment(&mut self) -> Result<(), Halt> {
        if self.awaiting_writer {
            // Readiness = data, or a writer that came and went: only then is
            // a zero-byte read a real EOF.
            self.wait_readable()?;
            source::set_blocking(&self.file).map_err(read_failed)?;
            self.awaiting_writer = false;
            tracing::debug!("input FIFO has a writer");
        }
        let mut buf = BytesMut::new();
        let (format, data_bytes) = if self.sniff {
            self.sniff_wav(&mut buf)?
        } else {
            (self.declared.clone(), None)
        };
        if self.reported.as_ref() != Some(&format) {
            self.reported = Some(format.clone());
            self.send(InputEvent::Format(format.clone()))?;
        }
        match format.bytes_per_frame() {
            Some(frame) => {
                let chunk = format.chunk_bytes(self.chunk_ms, frame);
                let at_data_end = self.stream_raw(buf, frame, chunk, data_bytes)?;
                if at_data_end {
                    // Chunks after a WAV's data (LIST, id3) are not audio. Read
                    // them anyway: a FIFO writer must not meet a closed pipe.
                    self.skip(u64::MAX)?;
                }
                Ok(())
            }
            None => self.stream_container(buf),
        }
    }

    /// At a FIFO writer's EOF: opens the next reader, then drops the old one.
    fn reopen(&mut self) -> Result<(), Halt> {
        let Some(path) = &self.fifo else {
            return Ok(());
        };
        let next = source::reopen_fifo(path).map_err(read_failed)?;
        // Invariant: `next` is open before the old fd closes here, so the FIFO
        // always has a reader and no writer meets EPIPE.
        self.file = next;
        self.awaiting_writer = true;
        tracing::debug!(path = %path.display(), "FIFO writer closed; waiting for the next");
        Ok(())
    }

    /// Looks for a RIFF/WAVE header at the start of the stream. Returns the
    /// stream's format and, for a WAV with a known data size, that size.
    /// Bytes read that are not a WAV header are left in `buf` as audio.
    fn sniff_wav(&mut self, buf: &mut BytesMut) -> Result<(AudioFormat, Option<u64>), Halt> {
        let mut head = [0u8; wav::MAGIC_BYTES];
        let n = self.read_full(&mut head)?;
        if n == head.len() && wav::is_magic(&head) {
            let (format, data_bytes) = wav::read_header(self)?;
            tracing::debug!(%format, "input has a WAV header");
            return Ok((format, data_bytes));
        }
        buf.extend_from_slice(&head[..n]);
        Ok((self.declared.clone(), None))
    }

    /// Streams raw audio in chunks of `chunk` bytes (whole frames), starting
    /// with what `buf` holds. Stops at EOF, or after `data_bytes` if given,
    /// then flushes the whole frames left and reports a partial one. Returns
    /// whether it stopped at `data_bytes` rather than at EOF.
    fn stream_raw(
        &mut self,
        mut buf: BytesMut,
        frame: usize,
        chunk: usize,
        mut data_bytes: Option<u64>,
    ) -> Result<bool, Halt> {
        // Full chunks only until the end: a live source delivers one every
        // chunk_ms anyway, so waiting for a full chunk costs at most one
        // chunk of latency and keeps every chunk the same duration.
        let at_data_end = loop {
            while buf.len() >= chunk {
                let audio = buf.split_to(chunk).freeze();
                self.send(InputEvent::Audio(audio))?;
            }
            let mut want = chunk - buf.len();
            if let Some(left) = data_bytes {
                if left == 0 {
                    break true;
                }
                want = want.min(usize::try_from(left).unwrap_or(usize::MAX));
            }
            let n = self.read_into(&mut buf, want)?;
            if n == 0 {
                break false;
            }
            if let Some(left) = &mut data_bytes {
                // n <= want <= *left, so this cannot underflow.
                *left -= n as u64;
            }
        };
        let whole = buf.len() - buf.len() % frame;
        if whole > 0 {
            let audio = buf.split_to(whole).freeze();
            self.send(InputEvent::Audio(audio))?;
        }
        if !buf.is_empty() {
            self.send(InputEvent::PartialFrameDropped(buf.len()))?;
        }
        Ok(at_data_end)
    }

    /// Passes container bytes through, each read as it comes (up to
    /// `container_chunk_bytes`): there are no frames to wait for.
    fn stream_container(&mut self, mut buf: BytesMut) -> Result<(), Halt> {
        let cap = self.container_chunk_bytes;
        loop {
            while buf.len() >= cap {
                let audio = buf.split_to(cap).freeze();
                self.send(InputEvent::Audio(audio))?;
            }
            let want = cap - buf.len();
            let n = self.read_into(&mut buf, want)?;
            if !buf.is_empty() {
                let audio = buf.split().freeze();
                self.send(InputEvent::Audio(audio))?;
            }
            if n == 0 {
                return Ok(());
            }
        }
    }

    /// Reads up to `want` bytes onto the end of `buf`. Returns the count (0 at
    /// EOF).
    fn read_into(&mut self, buf: &mut BytesMut, want: usize) -> Result<usize, Halt> {
        let start = buf.len();
        buf.resize(start + want, 0);
        let read = self.read_some(&mut buf[start..]);
        buf.truncate(start + *read.as_ref().unwrap_or(&0));
        read
    }

    /// Fills `out` unless EOF comes first. Returns the count read.
    fn read_full(&mut self, out: &mut [u8]) -> Result<usize, Halt> {
        let mut filled = 0;
        while filled < out.len() {
            let n = self.read_some(&mut out[filled..])?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        Ok(filled)
    }

    /// Reads and discards up to `len` bytes. Returns the count (less at EOF).
    fn skip(&mut self, len: u64) -> Result<u64, Halt> {
        let mut scratch = [0u8; SKIP_BUFFER_BYTES];
        let mut skipped = 0;
        while skipped < len {
            let want = usize::try_from(len - skipped)
                .map_or(scratch.len(), |left| left.min(scratch.len()));
            let n = self.read_some(&mut scratch[..want])?;
            if n == 0 {
                break;
            }
            skipped += n as u64;
        }
        Ok(skipped)
    }

    /// One read: retries EINTR and waits out EAGAIN (a non-blocking stdin).
    fn read_some(&mut self, out: &mut [u8]) -> Result<usize, Halt> {
        loop {
            match self.file.read(out) {
                Ok(n) => return Ok(n),
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => self.wait_readable()?,
                Err(error) => return Err(read_failed(error)),
            }
        }
    }

    /// Blocks until `file` is readable or hung up, without spinning, or until
    /// the receiver is dropped (then [`Halt::Closed`]).
    fn wait_readable(&mut self) -> Result<(), Halt> {
        let woken = self.waiter.wait(&self.file, &self.tx);
        match woken.map_err(read_failed)? {
            Woken::Readable => Ok(()),
            Woken::ReceiverGone => Err(Halt::Closed),
        }
    }

    /// Sends one event; [`Halt::Closed`] if the receiver is gone.
    fn send(&self, event: InputEvent) -> Result<(), Halt> {
        self.tx.blocking_send(event).map_err(|_| Halt::Closed)
    }
}

/// The header walk reads through the same waits and errors as the audio.
impl wav::HeaderSource for Reader {
    type Error = Halt;

    fn read_full(&mut self, out: &mut [u8]) -> Result<usize, Halt> {
        Reader::read_full(self, out)
    }

    fn skip(&mut self, len: u64) -> Result<u64, Halt> {
        Reader::skip(self, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::fs::OpenOptions;
    use std::io::Write;
    use std::path::Path;
    use std::sync::mpsc as std_mpsc;
    use std::time::{Duration, Instant};

    use nix::sys::stat::Mode;
    use tokio::time::timeout;

    use super::test_support::{
        Ev, WAIT, audio_bytes, audio_lens, collect, ev, next, options, pattern, read_file,
    };
    use super::wav::fixtures::{chunk, data_with_size, fmt_body, riff};

    #[tokio::test]
    async fn raw_mono_chunks_are_whole_chunk_ms() {
        let input = pattern(10_000);
        let events = read_file(&input, options).await;
        assert_eq!(events[0], Ev::Format(AudioFormat::default_pcm()));
        // 100 ms of s16le 16 kHz mono = 3200 bytes; the tail is whole frames.
        assert_eq!(audio_lens(&events), [3200, 3200, 3200, 400]);
        assert_eq!(audio_bytes(&events), input);
        assert_eq!(events.len(), 5, "{events:?}");
    }

    #[tokio::test]
    async fn raw_stereo_24_bit_chunks_are_whole_frames() {
        // 10 ms of s24le 48 kHz stereo = 480 frames of 6 bytes.
        let input = pattern(2880 * 2 + 6 * 5 + 4);
        let events = read_file(&input, |path| InputOptions {
            format: AudioFormat::raw("pcm_s24le", 48_000, 2),
            format_explicit: true,
            chunk_ms: 10,
            ..options(path)
        })
        .await;
        assert_eq!(
            events[0],
            Ev::Format(AudioFormat::raw("pcm_s24le", 48_000, 2))
        );
        assert_eq!(audio_lens(&events), [2880, 2880, 30]);
        assert_eq!(events.last(), Some(&Ev::Dropped(4)));
        assert_eq!(audio_bytes(&events), input[..input.len() - 4]);
    }

    #[tokio::test]
    async fn odd_byte_count_drops_the_partial_frame() {
        let input = pattern(3201);
        let events = read_file(&input, options).await;
        assert_eq!(
            events,
            [
                Ev::Format(AudioFormat::default_pcm()),
                Ev::Audio(input[..3200].to_vec()),
                Ev::Dropped(1),
            ]
        );
    }

    #[tokio::test]
    async fn empty_input_still_reports_its_format() {
        let events = read_file(&[], options).await;
        assert_eq!(events, [Ev::Format(AudioFormat::default_pcm())]);
    }

    #[tokio::test]
    async fn short_non_wav_input_is_not_lost_when_sniffing() {
        let events = read_file(b"hello", options).await;
        assert_eq!(
            events,
            [
                Ev::Format(AudioFormat::default_pcm()),
                Ev::Audio(b"hell".to_vec()),
                Ev::Dropped(1),
            ]
        );
    }

    #[tokio::test]
    async fn explicit_raw_format_disables_sniffing() {
        let input = riff(&[
            chunk(b"fmt ", &fmt_body(1, 1, 8000, 16)),
            chunk(b"data", &pattern(800)),
        ]);
        let events = read_file(&input, |path| InputOptions {
            format_explicit: true,
            ..options(path)
        })
        .await;
        assert_eq!(events[0], Ev::Format(AudioFormat::default_pcm()));
        assert_eq!(audio_bytes(&events), input);
    }

    #[tokio::test]
    async fn auto_without_riff_passes_container_bytes_through() {
        let input = pattern(10_000);
        let events = read_file(&input, |path| InputOptions {
            format: AudioFormat::container("auto"),
            format_explicit: true,
            container_chunk_bytes: 4096,
            ..options(path)
        })
        .await;
        assert_eq!(events[0], Ev::Format(AudioFormat::container("auto")));
        assert!(audio_lens(&events).iter().all(|&len| len <= 4096));
        assert_eq!(audio_bytes(&events), input);
        assert!(!events.iter().any(|e| matches!(e, Ev::Dropped(_))));
    }

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
                Ok(Some(Ev::Format(_) | Ev::WriterClosed)) | Err(_) => {}
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
