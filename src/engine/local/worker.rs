//! A session's worker thread: the state machine between the commands
//! (audio, `Finalize`, `EndOfAudio`) and the updates. It turns raw audio
//! of any layout into 16 kHz mono samples, feeds the VAD window by window, decodes each
//! closed segment, padded, into final words (and `<end>`), and the speech
//! in progress into partials when they are due. Safe code: the library is
//! reached through [`Runtime`] and [`Vad`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tracing::debug;

use super::dsp::{Ring, marker, ms, samples, word_tokens};
use super::runtime::{Runtime, Segment, Vad};
use super::{ONSET_LOOKBACK, PRE_ROLL_MS, SAMPLE_RATE, SessionOptions, TAIL_MS, VAD_WINDOW};
use crate::audio::convert::ToMono;
use crate::audio::resample::To16k;
use crate::engine::{Control, ControlKind, EngineCommand, EngineEvent, Update};
use crate::error::{Error, Result};
use crate::event::Token;

/// Partials at most this often (audio time)...
const PARTIAL_EVERY_MS: u64 = 500;
/// ...and only once the speech is this long.
const PARTIAL_MIN_MS: u64 = 300;
/// The next partial waits this many times the last one's decoding time, so
/// that at real-time pace partials take at most a quarter of the wall time.
const PARTIAL_COST_FACTOR: u32 = 4;
/// A progress-only update at most this often (audio time), as Soniox does.
const PROGRESS_EVERY_MS: u64 = 500;

/// How a segment came to an end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Close {
    /// The VAD heard the silence after it: an endpoint.
    Silence,
    /// A `Finalize`: the audio so far is final, the speaker may go on.
    Finalize,
    /// The end of the audio.
    End,
}

/// One session's state, on its own thread.
pub(crate) struct Worker {
    runtime: Arc<Runtime>,
    vad: Vad,
    options: SessionOptions,
    /// The session's raw audio as mono samples (a partial frame carried).
    to_mono: ToMono,
    resampler: To16k,
    /// Resampled audio not yet given to the VAD (less than a window).
    unfed: Vec<f32>,
    ring: Ring,
    /// 16 kHz samples received.
    received: u64,
    /// Samples given to the VAD.
    fed: u64,
    /// Audio before this was decoded into finals: no decode reaches back
    /// before it.
    decoded_to: u64,
    /// End of the last final word, ms: later words never start before it.
    last_word_end_ms: u64,
    /// Estimated start of the speech in progress (for partials).
    onset: Option<u64>,
    /// `fed` at which the next partial may be decoded.
    next_partial: u64,
    /// The current non-final tokens.
    partial: Vec<Token>,
    /// `final_audio_proc_ms`, in samples.
    final_to: u64,
    /// `total_audio_proc_ms` of the last update sent.
    sent_total_ms: u64,
    /// Decoding time spent, for the log.
    decode_time: Duration,
}

impl Worker {
    pub(crate) fn new(
        runtime: Arc<Runtime>,
        vad: Vad,
        to_mono: ToMono,
        resampler: To16k,
        options: SessionOptions,
    ) -> Worker {
        Worker {
            runtime,
            vad,
            options,
            to_mono,
            resampler,
            unfed: Vec::new(),
            ring: Ring::new(),
            received: 0,
            fed: 0,
            decoded_to: 0,
            last_word_end_ms: 0,
            onset: None,
            next_partial: 0,
            partial: Vec::new(),
            final_to: 0,
            sent_total_ms: 0,
            decode_time: Duration::ZERO,
        }
    }

    pub(crate) fn run(
        mut self,
        mut commands: mpsc::Receiver<EngineCommand>,
        events: mpsc::Sender<EngineEvent>,
    ) {
        let started = Instant::now();
        loop {
            let Some(command) = commands.blocking_recv() else {
                debug!("local session abandoned");
                return;
            };
            let (event, last) = match self.handle(command) {
                Ok((update, false)) => (update.map(EngineEvent::Update), false),
                Ok((update, true)) => (update.map(EngineEvent::Finished), true),
                Err(err) => (Some(EngineEvent::Failed(err)), true),
            };
            if let Some(event) = event
                && events.blocking_send(event).is_err()
            {
                debug!("local session abandoned (no event receiver)");
                return;
            }
            if last {
                debug!(
                    audio_ms = ms(self.received),
                    decode_ms = self.decode_time.as_millis() as u64,
                    wall_ms = started.elapsed().as_millis() as u64,
                    "local session finished"
                );
                return;
            }
        }
    }

    /// One command: the update to send, if any, and whether it is the last.
    fn handle(&mut self, command: EngineCommand) -> Result<(Option<Update>, bool)> {
        match command {
            EngineCommand::Audio(bytes) => {
                let mut finals = Vec::new();
                self.take_audio(&bytes, false)?;
                let partial_changed = self.feed(&mut finals)?;
                let progressed = ms(self.received) >= self.sent_total_ms + PROGRESS_EVERY_MS;
                Ok((
                    (!finals.is_empty() || partial_changed || progressed)
                        .then(|| self.update(finals)),
                    false,
                ))
            }
            EngineCommand::Finalize
            | EngineCommand::Control(Control {
                kind: ControlKind::Finalize,
                ..
            }) => {
                let mut finals = Vec::new();
                self.close(Close::Finalize, &mut finals)?;
                finals.push(marker("<fin>"));
                Ok((Some(self.update(finals)), false))
            }
            EngineCommand::EndOfAudio => {
                let mut finals = Vec::new();
                // The resampler's last few milliseconds.
                self.take_audio(&[], true)?;
                self.feed(&mut finals)?;
                self.close(Close::End, &mut finals)?;
                Ok((Some(self.update(finals)), true))
            }
            // A keepalive needs no answer here, and other types are the
            // service's, which this engine does not speak.
            EngineCommand::Control(control) => {
                debug!(control = %control.text, "control message ignored by the local engine");
                Ok((None, false))
            }
        }
    }

    /// An update: the new finals, then the current partial.
    fn update(&mut self, mut tokens: Vec<Token>) -> Update {
        tokens.extend(self.partial.iter().cloned());
        let total_ms = ms(self.received);
        self.sent_total_ms = total_ms;
        Update {
            tokens,
            final_audio_proc_ms: ms(self.final_to.min(self.received)),
            total_audio_proc_ms: total_ms,
        }
    }

    /// Converts raw bytes to 16 kHz mono samples in the ring and the VAD's
    /// queue; at the end of the audio (`last`), flushes the resampler.
    fn take_audio(&mut self, bytes: &[u8], last: bool) -> Result<()> {
        let mut input = Vec::with_capacity(bytes.len() / 2 + 1);
        self.to_mono.push(bytes, &mut input);
        let mut resampled = Vec::with_capacity(input.len() * 4 + 1);
        let failed = |e: crate::audio::resample::ResampleFailed| Error::Internal(e.0);
        self.resampler
            .push(&input, &mut resampled)
            .map_err(failed)?;
        if last {
            self.resampler.finish(&mut resampled).map_err(failed)?;
        }
        self.ring.push(&resampled);
        self.received += resampled.len() as u64;
        self.unfed.extend_from_slice(&resampled);
        Ok(())
    }

    /// Feeds whole windows to the VAD, decodes the segments it closes into
    /// `finals`, and the partial when one is due. Returns whether the
    /// partial changed.
    fn feed(&mut self, finals: &mut Vec<Token>) -> Result<bool> {
        let mut partial_changed = false;
        let windows = self.unfed.len() / VAD_WINDOW;
        for w in 0..windows {
            let window = &self.unfed[w * VAD_WINDOW..(w + 1) * VAD_WINDOW];
            self.vad.accept(window);
            self.fed += VAD_WINDOW as u64;
            while let Some(segment) = self.vad.pop() {
                self.finish_segment(segment, Close::Silence, finals)?;
                partial_changed |= self.clear_partial();
            }
            if self.vad.detected() {
                if self.onset.is_none() {
                    self.onset = Some(self.fed.saturating_sub(ONSET_LOOKBACK).max(self.decoded_to));
                    self.next_partial = 0;
                }
            } else {
                self.onset = None;
                // Silence: nothing before the VAD's look-back can still
                // become speech.
                self.final_to = self
                    .final_to
                    .max(self.fed.saturating_sub(ONSET_LOOKBACK))
                    .max(self.decoded_to);
            }
        }
        self.unfed.drain(..windows * VAD_WINDOW);
        partial_changed |= self.maybe_partial()?;
        Ok(partial_changed)
    }

    /// Empties the partial; returns whether it had tokens.
    fn clear_partial(&mut self) -> bool {
        let had = !self.partial.is_empty();
        self.partial.clear();
        had
    }

    /// Decodes the speech in progress as non-final tokens, when due.
    fn maybe_partial(&mut self) -> Result<bool> {
        let Some(onset) = self.onset else {
            return Ok(false);
        };
        if !self.options.partials
            || self.fed < self.next_partial
            || self.fed < onset + samples(PARTIAL_MIN_MS)
        {
            return Ok(false);
        }
        let audio = self.ring.slice(
            onset
                .saturating_sub(samples(PRE_ROLL_MS))
                .max(self.decoded_to),
            self.fed,
        );
        let started = Instant::now();
        let text = self.runtime.decode(&audio)?;
        let cost = started.elapsed();
        self.decode_time += cost;
        let wait = samples(PARTIAL_EVERY_MS)
            .max((cost * PARTIAL_COST_FACTOR).as_millis() as u64 * SAMPLE_RATE as u64 / 1000);
        self.next_partial = self.fed + wait;
        let start_ms = ms(onset).max(self.last_word_end_ms);
        let tokens = word_tokens(
            &text,
            start_ms,
            ms(self.fed).max(start_ms),
            false,
            self.options.language.as_deref(),
        );
        let changed = tokens != self.partial;
        self.partial = tokens;
        Ok(changed)
    }

    /// Decodes one VAD segment, padded, into final tokens (and `<end>`).
    fn finish_segment(
        &mut self,
        segment: Segment,
        close: Close,
        finals: &mut Vec<Token>,
    ) -> Result<()> {
        let seg_start = segment.start;
        // What the VAD gave may run past the audio received (the zeros that
        // complete the last window at the end).
        let seg_end = (seg_start + segment.samples.len() as u64).min(self.received);
        // After a finalize, the VAD's next segment may begin inside audio
        // decoded already: skip that part.
        let skip = self.decoded_to.saturating_sub(seg_start);
        let body_start = seg_start + skip;
        if body_start >= seg_end {
            return Ok(());
        }
        let body = &segment.samples[skip as usize..(seg_end - seg_start) as usize];
        let pre_from = seg_start
            .saturating_sub(samples(PRE_ROLL_MS))
            .max(self.decoded_to);
        // A finalize or the end takes all audio received: it is final now.
        let tail_to = match close {
            Close::Silence => (seg_end + samples(TAIL_MS)).min(self.received),
            Close::Finalize | Close::End => self.received,
        };
        let mut audio = self.ring.slice(pre_from, body_start);
        audio.extend_from_slice(body);
        audio.extend(self.ring.slice(seg_end, tail_to));

        let started = Instant::now();
        let text = self.runtime.decode(&audio)?;
        let cost = started.elapsed();
        self.decode_time += cost;
        let start_ms = ms(body_start).max(self.last_word_end_ms);
        let end_ms = ms(seg_end).max(start_ms);
        debug!(
            start_ms,
            end_ms,
            decode_ms = cost.as_millis() as u64,
            ?close,
            text = %text.trim(),
            "local segment"
        );
        let words = word_tokens(
            &text,
            start_ms,
            end_ms,
            true,
            self.options.language.as_deref(),
        );
        if let Some(last) = words.last().and_then(|t| t.end_ms) {
            self.last_word_end_ms = last;
        }
        let spoke = !words.is_empty();
        finals.extend(words);
        if spoke && self.options.endpoints && close != Close::Finalize {
            finals.push(marker("<end>"));
        }
        self.decoded_to = match close {
            Close::Silence => seg_end,
            Close::Finalize | Close::End => self.received,
        };
        self.final_to = self.final_to.max(self.decoded_to);
        Ok(())
    }

    /// Ends the segment in progress at the audio received: for `Finalize`
    /// and the end of audio.
    fn close(&mut self, close: Close, finals: &mut Vec<Token>) -> Result<()> {
        if close == Close::End && !self.unfed.is_empty() {
            // The last part-window, completed with silence.
            let mut window = std::mem::take(&mut self.unfed);
            window.resize(VAD_WINDOW, 0.0);
            self.vad.accept(&window);
            self.fed += VAD_WINDOW as u64;
        }
        self.vad.flush();
        let mut segments = Vec::new();
        while let Some(segment) = self.vad.pop() {
            segments.push(segment);
        }
        let count = segments.len();
        for (i, segment) in segments.into_iter().enumerate() {
            // Earlier ones closed on silence before the flush.
            let how = if i + 1 == count {
                close
            } else {
                Close::Silence
            };
            self.finish_segment(segment, how, finals)?;
        }
        self.clear_partial();
        self.onset = None;
        self.next_partial = 0;
        self.final_to = self.received;
        self.decoded_to = self.decoded_to.max(match close {
            // Speech the VAD has not confirmed yet (under 0.25 s) may still
            // become a segment after a finalize: do not cut it off.
            Close::Finalize => self.decoded_to,
            Close::Silence | Close::End => self.received,
        });
        Ok(())
    }
}
