//! The reader thread's state machine: it reads each stream (the whole input,
//! one file operand, or one FIFO writer with `--follow`), sniffs its first
//! bytes, and then cuts raw audio into chunks of whole frames, decodes media
//! into 16 kHz PCM chunks, or passes container bytes through; it reports
//! each step as an [`InputEvent`], in the order the module docs of
//! [`super`] give.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::path::PathBuf;

use bytes::{Buf, BytesMut};
use symphonia::core::io::{MediaSource, ReadOnlySource};
use tokio::sync::mpsc;

use super::decode::{self, DecodeError};
use super::sniff::{self, Media, Sniffed};
use super::source::{self, Waiter, Woken};
use super::{InputEvent, InputOptions, Opened, wav};
use crate::audio::AudioFormat;
use crate::error::Error;

/// Scratch size for skipping chunks and trailing bytes that are not audio.
const SKIP_BUFFER_BYTES: usize = 8192;

/// Why the reader thread stops before the end of input. Seen outside this
/// file only as the error of the header walk it runs for [`wav`].
pub(super) enum Halt {
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
pub(super) struct Reader {
    /// The open source. For a FIFO, replaced (new first, then old dropped) at
    /// each writer's EOF with --follow; at its end, by the next operand.
    file: File,
    /// The FIFO's path, if the source is a FIFO.
    fifo: Option<PathBuf>,
    /// The source's name for people: its path, or `<stdin>`.
    label: String,
    /// The operands still to read, in order.
    rest: VecDeque<Opened>,
    /// Whether `file` is a FIFO fd still `O_NONBLOCK` that has not seen its
    /// writer: reading it now would return a false EOF.
    awaiting_writer: bool,
    /// Keep reading across FIFO writers (only ever acts on a FIFO).
    follow: bool,
    /// The format to use when the stream has no header sttpipe knows.
    declared: AudioFormat,
    /// Whether to sniff the start of each stream.
    sniff: bool,
    /// Whether the format is the default rather than the user's: then media
    /// are decoded, and a stream that looks like text or noise is warned of.
    decode: bool,
    /// Bytes sniffed and not yet consumed: every read takes these first.
    head: BytesMut,
    /// Chunk duration for raw formats.
    chunk_ms: u32,
    /// Chunk size for containers, at least 1.
    container_chunk_bytes: usize,
    /// The channel; dropping it (with the thread) closes the receiver's end.
    tx: mpsc::Sender<InputEvent>,
    /// Waits for readiness: a FIFO's writer, or data on a non-blocking stdin.
    waiter: Waiter,
    /// The last format sent, so a follow-up stream repeats it only on change.
    reported: Option<AudioFormat>,
}

impl Reader {
    /// The reader for opened sources, read in order (at least one).
    pub(super) fn new(
        first: Opened,
        rest: VecDeque<Opened>,
        options: &InputOptions,
        tx: mpsc::Sender<InputEvent>,
    ) -> Reader {
        let sniff =
            !options.format_explicit || matches!(options.format.name.as_str(), "auto" | "wav");
        Reader {
            awaiting_writer: first.fifo.is_some(),
            follow: options.follow,
            fifo: first.fifo,
            file: first.file,
            label: first.label,
            rest,
            declared: options.format.clone(),
            sniff,
            decode: !options.format_explicit,
            head: BytesMut::new(),
            chunk_ms: options.chunk_ms,
            container_chunk_bytes: options.container_chunk_bytes.max(1),
            tx,
            waiter: Waiter::default(),
            reported: None,
        }
    }

    /// The thread's body: read everything, report a failure if any.
    pub(super) fn run(mut self) {
        match self.pump() {
            Ok(()) | Err(Halt::Closed) => {}
            Err(Halt::Failed(error)) => {
                tracing::debug!(%error, "input failed");
                // If the receiver is gone as well, nobody is left to tell.
                let _ = self.tx.blocking_send(InputEvent::Failed(error));
            }
        }
    }

    /// Reads one stream after another: with --follow, a FIFO's writers;
    /// then the next operand.
    fn pump(&mut self) -> Result<(), Halt> {
        loop {
            self.segment()?;
            if self.follow && self.fifo.is_some() {
                self.reopen()?;
            } else if let Some(next) = self.rest.pop_front() {
                self.awaiting_writer = next.fifo.is_some();
                (self.file, self.fifo, self.label) = (next.file, next.fifo, next.label);
            } else {
                return Ok(());
            }
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
        self.head.clear();
        let sniffed = if self.sniff {
            self.sniff_head()?
        } else {
            Sniffed::Raw
        };
        let (format, data_bytes) = match sniffed {
            Sniffed::Wav => {
                // The header walk starts after `RIFF....WAVE`.
                self.skip(12)?;
                let (format, data_bytes) = wav::read_header(self)?;
                tracing::debug!(%format, "input has a WAV header");
                (format, data_bytes)
            }
            Sniffed::Media(media) if self.decode && media.decodable() => {
                return self.stream_decoded(media);
            }
            Sniffed::Media(media) if self.decode => {
                // No decoder here (Opus): Soniox decodes it, and the
                // stream has the limits of a container.
                tracing::debug!(media = media.name(), "passing the input through undecoded");
                (AudioFormat::container("ogg"), None)
            }
            Sniffed::Text if self.decode => {
                self.warn(format!(
                    "{} looks like text, not audio; reading it as raw {} (give --audio-format if that is right)",
                    self.label, self.declared
                ))?;
                (self.declared.clone(), None)
            }
            Sniffed::Noise if self.decode => {
                self.warn(format!(
                    "{} is no audio format sttpipe knows and does not look like 16-bit audio; reading it as raw {} (give --audio-format if that is right)",
                    self.label, self.declared
                ))?;
                (self.declared.clone(), None)
            }
            _ => (self.declared.clone(), None),
        };
        self.report(&format)?;
        match format.bytes_per_frame() {
            Some(frame) => {
                let chunk = format.chunk_bytes(self.chunk_ms, frame);
                let at_data_end = self.stream_raw(BytesMut::new(), frame, chunk, data_bytes)?;
                if at_data_end {
                    // Chunks after a WAV's data (LIST, id3) are not audio. Read
                    // them anyway: a FIFO writer must not meet a closed pipe.
                    self.skip(u64::MAX)?;
                }
                Ok(())
            }
            None => self.stream_container(BytesMut::new()),
        }
    }

    /// Sends the stream's format, unless it is the one last sent.
    fn report(&mut self, format: &AudioFormat) -> Result<(), Halt> {
        if self.reported.as_ref() != Some(format) {
            self.reported = Some(format.clone());
            self.send(InputEvent::Format(format.clone()))?;
        }
        Ok(())
    }

    /// A warning for the user.
    fn warn(&self, message: String) -> Result<(), Halt> {
        self.send(InputEvent::Warning(message))
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

    /// Reads the stream's first bytes (up to [`sniff::SNIFF_BYTES`], fewer
    /// at EOF) into `head`, where every later read finds them, and says
    /// what they are.
    fn sniff_head(&mut self) -> Result<Sniffed, Halt> {
        let mut head = vec![0u8; sniff::SNIFF_BYTES];
        let n = self.read_full(&mut head)?;
        head.truncate(n);
        let sniffed = sniff::sniff(&head, n < sniff::SNIFF_BYTES);
        self.head.extend_from_slice(&head);
        Ok(sniffed)
    }

    /// Decodes a media stream and sends it as 16 kHz mono pcm_s16le chunks
    /// of `chunk_ms`.
    fn stream_decoded(&mut self, media: Media) -> Result<(), Halt> {
        let format = AudioFormat::default_pcm();
        self.report(&format)?;
        let chunk = format.chunk_bytes(self.chunk_ms, 2);
        let tx = self.tx.clone();
        let mut pcm = BytesMut::new();
        let mut sink = |samples: &[f32]| -> Result<(), Halt> {
            decode::to_s16le(samples, &mut pcm);
            while pcm.len() >= chunk {
                let audio = pcm.split_to(chunk).freeze();
                tx.blocking_send(InputEvent::Audio(audio))
                    .map_err(|_| Halt::Closed)?;
            }
            Ok(())
        };
        let label = self.label.clone();
        let result = match self.seekable()? {
            // A file decodes from the file itself: formats such as MP4 keep
            // their index at the end and must seek to it.
            Some(file) => decode::decode(Box::new(file), media, &mut sink),
            None => {
                let mut pull = Pull {
                    reader: self,
                    halt: None,
                };
                let result = decode::decode(
                    Box::new(ReadOnlySource::new(&mut pull)) as Box<dyn MediaSource + '_>,
                    media,
                    &mut sink,
                );
                match (result, pull.halt) {
                    // The stream's own failure, not what symphonia made of it.
                    (Err(DecodeError::Read(_)), Some(halt)) => return Err(halt),
                    (result, _) => result,
                }
            }
        };
        match result {
            Ok(_) => {}
            Err(DecodeError::Sink(halt)) => return Err(halt),
            Err(DecodeError::Read(e)) => return Err(read_failed(e)),
            Err(DecodeError::Media(message)) => {
                return Err(Halt::Failed(Error::BadAudio(format!("{label}: {message}"))));
            }
        }
        if !pcm.is_empty() {
            self.send(InputEvent::Audio(pcm.freeze()))?;
        }
        // Whatever follows the track (a trailing tag) is read, as a WAV's is.
        self.skip(u64::MAX)?;
        Ok(())
    }

    /// A regular file's own handle, positioned where the sniffed bytes
    /// began, for a decoder that seeks; `None` for a pipe, FIFO or device.
    fn seekable(&mut self) -> Result<Option<File>, Halt> {
        let is_file = self.file.metadata().is_ok_and(|m| m.is_file());
        if !is_file {
            return Ok(None);
        }
        let back = i64::try_from(self.head.len()).unwrap_or(i64::MAX);
        let mut file = self.file.try_clone().map_err(read_failed)?;
        file.seek(SeekFrom::Current(-back)).map_err(read_failed)?;
        self.head.clear();
        Ok(Some(file))
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

    /// One read: the sniffed bytes first; then from the source, retrying
    /// EINTR and waiting out EAGAIN (a non-blocking stdin).
    fn read_some(&mut self, out: &mut [u8]) -> Result<usize, Halt> {
        if !self.head.is_empty() {
            let n = out.len().min(self.head.len());
            self.head.copy_to_slice(&mut out[..n]);
            return Ok(n);
        }
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

/// The decoder's reads of a stream that cannot seek: through the reader's
/// own reads (sniffed bytes first, the same waits). A failure is kept, to
/// be reported as itself rather than as the decoder's read error.
struct Pull<'a> {
    reader: &'a mut Reader,
    halt: Option<Halt>,
}

impl Read for Pull<'_> {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self.reader.read_some(out) {
            Ok(n) => Ok(n),
            Err(halt) => {
                self.halt = Some(halt);
                Err(io::Error::other("the input stopped"))
            }
        }
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
    use crate::audio::AudioFormat;
    use crate::input::InputOptions;
    use crate::input::test_support::{Ev, audio_bytes, audio_lens, options, pattern, read_file};
    use crate::input::wav::fixtures::{chunk, fmt_body, riff};

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
}
