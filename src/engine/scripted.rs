//! A scripted engine for the session core's unit tests: upstream sessions
//! that answer like Soniox, at once (so tests run in virtual time), and fail
//! on cue.
//!
//! The "speech" is pcm_s16le mono in which every sample of word *n* holds
//! the value *n*, its first with [`WORD_START`] set, and silence is 0;
//! [`speech`] writes it. An upstream session decodes the words from whatever
//! stretch of the stream it is fed, so a replay recognises the same words at
//! the same stream times, and a stretch that begins inside a word (not at a
//! final-token boundary) shows. After every chunk it answers as Soniox does:
//!
//! * a word is non-final from its first sample on (its end clamped to the
//!   audio received), and final once [`ScriptedEngine::lag_ms`] of audio
//!   followed its end;
//! * `final_audio_proc_ms` is the start of the first word not yet final, at
//!   most the audio received less the lag, and never goes back;
//!   [`ScriptedEngine::trailing_final_ms`] holds it that much behind, as a
//!   service whose final point trails the tokens it has made final;
//! * a finalize makes everything received final, then `<fin>`; the end of
//!   audio makes everything final, then `finished`.
//!
//! Each connection attempt meets the next [`Attempt`] of the script, and the
//! last one given forever after. What every upstream session received is in
//! [`ScriptedEngine::log`].

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::{
    COMMAND_QUEUE, ControlKind, EVENT_QUEUE, EngineCommand, EngineEvent, EngineLink, Update,
};
use crate::audio::AudioFormat;
use crate::error::{Error, Result};
use crate::event::Token;

/// What one connection attempt meets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Attempt {
    /// A session that works to the end.
    Serve,
    /// No connection (refused: worth retrying).
    Refuse,
    /// The service rejects the key (401) as soon as the session opens: not
    /// worth retrying.
    Reject,
    /// The connection drops once the session has had this much audio (ms);
    /// the answer to the chunk that reached the mark is lost with it.
    DropAfter(u64),
    /// Like [`Attempt::DropAfter`], with a service error frame (e.g. 503).
    ErrorAfter(u64, u16),
    /// A 429 past the cap on connections (`max_concurrent_connections_reached`)
    /// as soon as the session opens.
    Crowded,
}

/// One word of [`speech`], on the stream's timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Word {
    /// Its text as a token carries it.
    pub(crate) text: String,
    /// Start, ms.
    pub(crate) start_ms: u64,
    /// End, ms.
    pub(crate) end_ms: u64,
}

/// What one upstream session received.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Received {
    /// Audio, ms.
    pub(crate) audio_ms: u64,
    /// Whether its first audio was inside a word (no final-token boundary).
    pub(crate) began_mid_word: bool,
    /// Finalize commands.
    pub(crate) finalizes: u32,
    /// Control messages, each with the audio (ms) received before it.
    pub(crate) controls: Vec<(u64, String)>,
    /// Whether the end of audio came.
    pub(crate) ended: bool,
}

/// What the engine saw, over all its upstream sessions.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Log {
    /// When each connection attempt came, refused ones included.
    pub(crate) attempts: Vec<Instant>,
    /// Every upstream session opened, in order.
    pub(crate) sessions: Vec<Received>,
}

#[derive(Debug)]
struct Script {
    /// Attempts still to come; the last one repeats.
    attempts: VecDeque<Attempt>,
    log: Log,
}

/// An engine whose upstream sessions follow a script; see the module
/// documentation.
#[derive(Debug, Clone)]
pub(crate) struct ScriptedEngine {
    lag_ms: u64,
    trailing_final_ms: u64,
    script: Arc<Mutex<Script>>,
}

/// The bit that marks a word's first sample.
pub(crate) const WORD_START: u16 = 0x8000;

/// The text of word `n` (from 1).
pub(crate) fn word_text(n: u16) -> String {
    format!(" w{n}")
}

/// `total_ms` of 16 kHz speech with a word of `word_ms` every `every_ms`,
/// from `every_ms` on, as far as it fits.
pub(crate) fn speech(total_ms: u64, every_ms: u64, word_ms: u64) -> (Vec<u8>, Vec<Word>) {
    const SAMPLES_PER_MS: u64 = 16;
    let mut samples = vec![0u16; (total_ms * SAMPLES_PER_MS) as usize];
    let mut words = Vec::new();
    let mut start_ms = every_ms;
    while start_ms + word_ms <= total_ms {
        let n = u16::try_from(words.len() + 1).unwrap_or(!WORD_START);
        let (from, to) = (
            start_ms * SAMPLES_PER_MS,
            (start_ms + word_ms) * SAMPLES_PER_MS,
        );
        samples[from as usize..to as usize].fill(n);
        samples[from as usize] |= WORD_START;
        words.push(Word {
            text: word_text(n),
            start_ms,
            end_ms: start_ms + word_ms,
        });
        start_ms += every_ms;
    }
    let bytes = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
    (bytes, words)
}

impl ScriptedEngine {
    /// An engine whose connection attempts meet `attempts` in turn, then
    /// `then` forever. Words are final 300 ms after their end.
    pub(crate) fn new(attempts: impl IntoIterator<Item = Attempt>, then: Attempt) -> Self {
        let mut attempts: VecDeque<Attempt> = attempts.into_iter().collect();
        attempts.push_back(then);
        ScriptedEngine {
            lag_ms: 300,
            trailing_final_ms: 0,
            script: Arc::new(Mutex::new(Script {
                attempts,
                log: Log::default(),
            })),
        }
    }

    /// An engine that always works.
    pub(crate) fn serving() -> Self {
        ScriptedEngine::new([], Attempt::Serve)
    }

    /// Audio past a word's end before it is final, ms.
    pub(crate) fn lag_ms(mut self, ms: u64) -> Self {
        self.lag_ms = ms;
        self
    }

    /// How far `final_audio_proc_ms` trails the final tokens, ms.
    pub(crate) fn trailing_final_ms(mut self, ms: u64) -> Self {
        self.trailing_final_ms = ms;
        self
    }

    /// What the engine saw so far.
    pub(crate) fn log(&self) -> Log {
        self.lock().log.clone()
    }

    fn lock(&self) -> MutexGuard<'_, Script> {
        // Plain field updates: a panic cannot leave the script half-done.
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens an upstream session as the script says.
    pub(crate) async fn open(&self, audio: &AudioFormat) -> Result<EngineLink> {
        let rate = match (audio.name.as_str(), audio.channels, audio.sample_rate) {
            ("pcm_s16le", Some(1), Some(rate)) if rate > 0 => u64::from(rate),
            _ => {
                return Err(Error::Usage(format!(
                    "the scripted engine hears no {audio}"
                )));
            }
        };
        let (attempt, index) = {
            let mut script = self.lock();
            script.log.attempts.push(Instant::now());
            let attempt = match script.attempts.len() {
                1 => script.attempts[0],
                _ => script.attempts.pop_front().unwrap_or(Attempt::Serve),
            };
            if attempt != Attempt::Refuse {
                script.log.sessions.push(Received::default());
            }
            (attempt, script.log.sessions.len().saturating_sub(1))
        };
        let fault = match attempt {
            Attempt::Refuse => {
                return Err(Error::Connect {
                    url: "scripted:".into(),
                    reason: "connection refused".into(),
                    transient: true,
                });
            }
            Attempt::Serve => None,
            Attempt::Reject => Some((0, Fault::Service(401))),
            Attempt::DropAfter(ms) => Some((ms, Fault::Drop)),
            Attempt::ErrorAfter(ms, code) => Some((ms, Fault::Service(code))),
            Attempt::Crowded => Some((0, Fault::Crowded)),
        };
        let (commands_tx, commands) = mpsc::channel(COMMAND_QUEUE);
        let (events, events_rx) = mpsc::channel(EVENT_QUEUE);
        let upstream = ScriptedUpstream {
            recogniser: Recogniser::new(rate, self.lag_ms, self.trailing_final_ms),
            fault,
            engine: self.clone(),
            index,
        };
        tokio::spawn(upstream.run(commands, events));
        Ok(EngineLink {
            commands: commands_tx,
            events: events_rx,
            url: None,
        })
    }
}

/// How a scripted session fails.
#[derive(Debug, Clone, Copy)]
enum Fault {
    Drop,
    Service(u16),
    Crowded,
}

impl Fault {
    fn error(self) -> Error {
        match self {
            Fault::Drop => Error::Disconnected("the scripted connection dropped".into()),
            Fault::Service(code) => Error::Service {
                code,
                error_type: None,
                message: "scripted failure".into(),
            },
            Fault::Crowded => Error::Service {
                code: 429,
                error_type: Some("max_concurrent_connections_reached".into()),
                message: "scripted: too many connections".into(),
            },
        }
    }
}

/// One scripted upstream session's task.
struct ScriptedUpstream {
    recogniser: Recogniser,
    /// Fails once it has had this much audio (ms).
    fault: Option<(u64, Fault)>,
    engine: ScriptedEngine,
    /// Its place in the log.
    index: usize,
}

impl ScriptedUpstream {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<EngineCommand>,
        events: mpsc::Sender<EngineEvent>,
    ) {
        if let Some((0, fault)) = self.fault {
            let _ = events.send(EngineEvent::Failed(fault.error())).await;
            return;
        }
        // A closed command channel without the end of audio: abandoned.
        while let Some(command) = commands.recv().await {
            let event = match command {
                EngineCommand::Audio(chunk) => {
                    let first = self.recogniser.samples == 0;
                    self.recogniser.hear(&chunk);
                    let heard_ms = self.recogniser.heard_ms();
                    self.record(|received| {
                        received.audio_ms = heard_ms;
                        if first {
                            received.began_mid_word = starts_in_word(&chunk);
                        }
                    });
                    match self.fault {
                        Some((after_ms, fault)) if heard_ms >= after_ms => {
                            EngineEvent::Failed(fault.error())
                        }
                        _ => EngineEvent::Update(self.recogniser.update()),
                    }
                }
                EngineCommand::Finalize => {
                    self.record(|received| received.finalizes += 1);
                    EngineEvent::Update(self.recogniser.finalize())
                }
                EngineCommand::Control(control) => {
                    let heard_ms = self.recogniser.heard_ms();
                    self.record(|received| received.controls.push((heard_ms, control.text)));
                    match control.kind {
                        ControlKind::Finalize => EngineEvent::Update(self.recogniser.finalize()),
                        ControlKind::Keepalive | ControlKind::Other => continue,
                    }
                }
                EngineCommand::EndOfAudio => {
                    self.record(|received| received.ended = true);
                    EngineEvent::Finished(self.recogniser.finish())
                }
            };
            let last = !matches!(event, EngineEvent::Update(_));
            if events.send(event).await.is_err() || last {
                return;
            }
        }
    }

    fn record(&self, change: impl FnOnce(&mut Received)) {
        if let Some(received) = self.engine.lock().log.sessions.get_mut(self.index) {
            change(received);
        }
    }
}

/// Whether `chunk` begins inside a word, not at its first sample.
fn starts_in_word(chunk: &Bytes) -> bool {
    match chunk.get(..2) {
        Some(&[low, high]) => {
            let value = u16::from_le_bytes([low, high]);
            value != 0 && value & WORD_START == 0
        }
        _ => false,
    }
}

/// A word heard whole, not final yet.
#[derive(Debug, Clone, Copy)]
struct Heard {
    n: u16,
    start_ms: u64,
    end_ms: u64,
}

impl Heard {
    fn token(self, is_final: bool) -> Token {
        Token {
            text: word_text(self.n),
            start_ms: Some(self.start_ms),
            end_ms: Some(self.end_ms),
            confidence: Some(0.9),
            is_final,
            ..Token::default()
        }
    }
}

/// One session's recognition: no I/O.
#[derive(Debug)]
struct Recogniser {
    rate: u64,
    lag_ms: u64,
    trailing_final_ms: u64,
    /// Samples heard.
    samples: u64,
    /// The first byte of a sample split between chunks.
    odd: Option<u8>,
    /// The word whose samples are arriving: its number and first sample.
    current: Option<(u16, u64)>,
    /// Whole words not final yet, in order.
    heard: VecDeque<Heard>,
    /// The `final_audio_proc_ms` last reported.
    final_ms: u64,
}

impl Recogniser {
    fn new(rate: u64, lag_ms: u64, trailing_final_ms: u64) -> Recogniser {
        Recogniser {
            rate,
            lag_ms,
            trailing_final_ms,
            samples: 0,
            odd: None,
            current: None,
            heard: VecDeque::new(),
            final_ms: 0,
        }
    }

    fn ms(&self, sample: u64) -> u64 {
        sample * 1000 / self.rate
    }

    fn heard_ms(&self) -> u64 {
        self.ms(self.samples)
    }

    fn hear(&mut self, chunk: &[u8]) {
        let mut bytes = chunk.iter().copied();
        if let Some(low) = self.odd.take() {
            match bytes.next() {
                Some(high) => self.sample(u16::from_le_bytes([low, high])),
                None => self.odd = Some(low),
            }
        }
        loop {
            match (bytes.next(), bytes.next()) {
                (Some(low), Some(high)) => self.sample(u16::from_le_bytes([low, high])),
                (Some(low), None) => self.odd = Some(low),
                _ => break,
            }
        }
    }

    fn sample(&mut self, value: u16) {
        let at = self.samples;
        let word = value & !WORD_START;
        match self.current {
            Some((n, _)) if n == word && value & WORD_START == 0 => {}
            // A new word, silence, or the first sample heard of a cut word.
            _ => {
                self.close_word(at);
                if word != 0 {
                    self.current = Some((word, at));
                }
            }
        }
        self.samples += 1;
    }

    /// Ends the word in progress at sample `at`.
    fn close_word(&mut self, at: u64) {
        if let Some((n, start)) = self.current.take() {
            let word = Heard {
                n,
                start_ms: self.ms(start),
                end_ms: self.ms(at),
            };
            self.heard.push_back(word);
        }
    }

    /// The answer to a chunk: newly final words, then the non-final tail.
    fn update(&mut self) -> Update {
        let total = self.heard_ms();
        let mut tokens = Vec::new();
        while let Some(word) = self.heard.front().copied()
            && word.end_ms + self.lag_ms <= total
        {
            self.heard.pop_front();
            tokens.push(word.token(true));
        }
        let pending = self.heard.front().map(|word| word.start_ms);
        let pending = pending.or(self.current.map(|(_, start)| self.ms(start)));
        let final_point = total
            .saturating_sub(self.lag_ms)
            .min(pending.unwrap_or(u64::MAX))
            .saturating_sub(self.trailing_final_ms);
        self.final_ms = self.final_ms.max(final_point);
        tokens.extend(self.heard.iter().map(|word| word.token(false)));
        if let Some((n, start)) = self.current {
            let start_ms = self.ms(start);
            tokens.push(
                Heard {
                    n,
                    start_ms,
                    end_ms: total,
                }
                .token(false),
            );
        }
        Update {
            tokens,
            final_audio_proc_ms: self.final_ms,
            total_audio_proc_ms: total,
        }
    }

    /// Everything heard becomes final (a word in progress is cut here).
    fn flush(&mut self) -> Vec<Token> {
        self.close_word(self.samples);
        self.final_ms = self.heard_ms();
        self.heard.drain(..).map(|word| word.token(true)).collect()
    }

    fn finalize(&mut self) -> Update {
        let mut tokens = self.flush();
        tokens.push(Token {
            text: "<fin>".into(),
            is_final: true,
            ..Token::default()
        });
        Update {
            tokens,
            final_audio_proc_ms: self.final_ms,
            total_audio_proc_ms: self.heard_ms(),
        }
    }

    fn finish(&mut self) -> Update {
        Update {
            tokens: self.flush(),
            final_audio_proc_ms: self.final_ms,
            total_audio_proc_ms: self.heard_ms(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RecognitionOptions;
    use crate::engine::Engine;

    async fn open(engine: &ScriptedEngine) -> Result<EngineLink> {
        Engine::Scripted(engine.clone())
            .open(&RecognitionOptions::default(), &AudioFormat::default_pcm())
            .await
    }

    async fn send(link: &EngineLink, command: EngineCommand) {
        assert!(
            link.commands.send(command).await.is_ok(),
            "the session is gone"
        );
    }

    #[tokio::test]
    async fn connection_attempts_follow_the_script() {
        let engine = ScriptedEngine::new(
            [Attempt::Refuse, Attempt::DropAfter(1_000), Attempt::Reject],
            Attempt::ErrorAfter(500, 503),
        );
        assert!(matches!(
            open(&engine).await,
            Err(Error::Connect {
                transient: true,
                ..
            })
        ));
        let (audio, _) = speech(2_000, 500, 300);
        let chunk = || Bytes::copy_from_slice(&audio[..600 * 32]);
        let mut dropping = open(&engine).await.expect("the second attempt connects");
        send(&dropping, EngineCommand::Audio(chunk())).await;
        assert!(matches!(
            dropping.events.recv().await,
            Some(EngineEvent::Update(_))
        ));
        send(&dropping, EngineCommand::Audio(chunk())).await;
        assert!(matches!(
            dropping.events.recv().await,
            Some(EngineEvent::Failed(Error::Disconnected(_)))
        ));
        assert!(dropping.events.recv().await.is_none(), "nothing follows");
        let mut rejected = open(&engine).await.expect("the third attempt connects");
        assert!(matches!(
            rejected.events.recv().await,
            Some(EngineEvent::Failed(Error::Service { code: 401, .. }))
        ));
        // The last attempt of the script repeats.
        for _ in 0..2 {
            let mut failing = open(&engine).await.expect("connects");
            send(&failing, EngineCommand::Audio(chunk())).await;
            assert!(matches!(
                failing.events.recv().await,
                Some(EngineEvent::Failed(Error::Service { code: 503, .. }))
            ));
        }
        let log = engine.log();
        assert_eq!(log.attempts.len(), 5);
        assert_eq!(log.sessions.len(), 4, "a refused attempt opens nothing");
        assert_eq!(log.sessions[0].audio_ms, 1_200);
        assert!(!log.sessions[0].began_mid_word && !log.sessions[0].ended);
    }

    #[tokio::test]
    async fn a_session_answers_finalizes_and_finishes() {
        let engine = ScriptedEngine::serving().lag_ms(100).trailing_final_ms(0);
        let mut link = open(&engine).await.expect("connects");
        let (audio, _) = speech(2_000, 500, 300);
        send(
            &link,
            EngineCommand::Audio(Bytes::copy_from_slice(&audio[600 * 32..1_200 * 32])),
        )
        .await;
        let Some(EngineEvent::Update(update)) = link.events.recv().await else {
            panic!("an update");
        };
        // Fed from 600 ms: the rest of w1, final, then w2 in progress.
        let times = |t: &Token| (t.text.clone(), t.start_ms, t.end_ms, t.is_final);
        assert_eq!(
            update.tokens.iter().map(times).collect::<Vec<_>>(),
            [
                (" w1".to_owned(), Some(0), Some(200), true),
                (" w2".to_owned(), Some(400), Some(600), false)
            ]
        );
        send(&link, EngineCommand::Finalize).await;
        let Some(EngineEvent::Update(update)) = link.events.recv().await else {
            panic!("an update");
        };
        assert_eq!(texts(&update).last(), Some(&("<fin>".to_owned(), true)));
        send(&link, EngineCommand::EndOfAudio).await;
        assert!(matches!(
            link.events.recv().await,
            Some(EngineEvent::Finished(_))
        ));
        assert!(link.events.recv().await.is_none());
        let received = &engine.log().sessions[0];
        assert_eq!(
            (received.audio_ms, received.finalizes, received.ended),
            (600, 1, true)
        );
    }

    fn texts(update: &Update) -> Vec<(String, bool)> {
        update
            .tokens
            .iter()
            .map(|t| (t.text.clone(), t.is_final))
            .collect()
    }

    #[test]
    fn words_are_heard_back_with_their_times_and_finalised_after_the_lag() {
        let (audio, words) = speech(2_000, 500, 300);
        assert_eq!(words.len(), 3);
        assert_eq!((words[1].start_ms, words[1].end_ms), (1_000, 1_300));
        let mut recogniser = Recogniser::new(16_000, 300, 0);
        // 1 200 ms: w1 whole (final at 1 100), w2 in progress.
        recogniser.hear(&audio[..1_200 * 32]);
        let update = recogniser.update();
        assert_eq!(
            texts(&update),
            [(" w1".to_owned(), true), (" w2".to_owned(), false)]
        );
        assert_eq!(update.tokens[1].end_ms, Some(1_200), "clamped to the audio");
        assert_eq!(update.final_audio_proc_ms, 900);
        assert_eq!(update.total_audio_proc_ms, 1_200);
        // Odd chunk boundaries change nothing.
        recogniser.hear(&audio[1_200 * 32..1_200 * 32 + 1]);
        recogniser.hear(&audio[1_200 * 32 + 1..]);
        let finished = recogniser.finish();
        assert_eq!(
            texts(&finished),
            [(" w2".to_owned(), true), (" w3".to_owned(), true)]
        );
        assert_eq!(finished.final_audio_proc_ms, 2_000);
    }

    #[test]
    fn the_final_point_can_trail_and_a_finalize_cuts_a_word() {
        let (audio, _) = speech(2_000, 500, 300);
        let mut recogniser = Recogniser::new(16_000, 100, 150);
        recogniser.hear(&audio[..1_500 * 32]);
        let update = recogniser.update();
        // w1 and w2 final; total - lag = 1 400; less the trail.
        assert_eq!(update.tokens.len(), 2);
        assert_eq!(update.final_audio_proc_ms, 1_250);
        let mut finalizing = Recogniser::new(16_000, 300, 0);
        finalizing.hear(&audio[..1_100 * 32]);
        let update = finalizing.finalize();
        assert_eq!(
            texts(&update),
            [
                (" w1".to_owned(), true),
                (" w2".to_owned(), true),
                ("<fin>".to_owned(), true)
            ]
        );
        assert_eq!(update.tokens[1].end_ms, Some(1_100), "cut at the finalize");
    }
}
