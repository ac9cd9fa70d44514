//! The local engine: offline speech-to-text with no key and no network,
//! Moonshine (tiny-en, or base-en) behind Silero VAD, through sherpa-onnx's
//! C library loaded at run time.
//!
//! # Why run-time loading
//!
//! sherpa-onnx ships as a PyPI wheel holding `libsherpa-onnx-c-api.so` and
//! `libonnxruntime.so`; `scripts/fetch-local-engine` installs them, the
//! models and the VAD into a cache directory. The `sherpa-onnx` crate would
//! link against that library at build time (its build script downloads from
//! GitHub otherwise), so the engine could only be an optional cargo feature
//! built on a provisioned machine. Loading the library with `libloading`
//! instead means the default binary, built anywhere, runs `--engine local` as
//! soon as the files are provisioned: no rebuild, no `LD_LIBRARY_PATH`, no
//! rpath; and the engine's code is compiled and type-checked in every build.
//!
//! The price is hand-written `#[repr(C)]` declarations of the C API's
//! configuration structs, which sherpa-onnx changes between releases. That
//! risk is contained four ways: the fetch script pins the wheel by sha256
//! (and every installed file too), so the library is exactly 2.0.1; the
//! engine refuses any library whose `SherpaOnnxGetVersionStr()` is not
//! [`SHERPA_ONNX_VERSION`]; the structs are transcribed field by field from
//! the 2.0.1 header shipped in the wheel, and compile-time assertions check
//! every size and the offsets of the fields set here against what a C compiler
//! gave for that header (x86_64, the only platform the wheels exist for); and
//! the tests run real speech through the library. Moonshine's own
//! `libmoonshine.so` (the study's other run-time option) was not taken: its
//! C API is younger (0.1.x), the wheel that carries the model has a library
//! that rejects options later ones accept, and it brings its own VAD where
//! this engine wants Silero with explicit padding. All `unsafe` of the local
//! engine is in this module, each block with its `SAFETY:` argument.
//!
//! # Files
//!
//! [`LocalEngine::new`] looks in `$XDG_CACHE_HOME/sttpipe/local-engine/1/`
//! (`~/.cache/…` without `XDG_CACHE_HOME`; `1` is [`LAYOUT_VERSION`]) or in
//! the directory it is given, for:
//!
//! ```text
//! lib/libsherpa-onnx-c-api.so  lib/libonnxruntime.so  silero_vad.onnx
//! moonshine-tiny-en/{encoder_model.ort,decoder_model_merged.ort,tokens.txt}
//! moonshine-base-en/…          (scripts/fetch-local-engine --model base-en)
//! ```
//!
//! Missing files are an [`Error::Config`] naming the command that provisions
//! them. The library and the model are loaded on the first
//! [`LocalEngine::open`] (or [`LocalEngine::preload`]), once per engine, and
//! shared by its sessions; decoding is serialised between sessions (each
//! decode already uses the cores). The library stays loaded for the life of
//! the process: onnxruntime is not made to be unloaded.
//!
//! # What a session does
//!
//! One worker thread per session takes `pcm_s16le` mono at the session's
//! rate (anything else is [`Error::BadAudio`]), resamples it to 16 kHz if
//! needed (linear interpolation up, averaging down), and feeds Silero VAD in
//! 32 ms windows (threshold 0.5, 0.25 s minimum speech and silence, segments
//! split past 20 s). Each speech segment is decoded with Moonshine widened by
//! [`PRE_ROLL_MS`] before and [`TAIL_MS`] after: Silero reports onsets late,
//! and without the padding first words came out clipped ("Please" as "Lace").
//!
//! It answers in Soniox's shape ([`Update`]):
//!
//! * Final word tokens, one per word with a leading space. **Their times are
//!   interpolated**: Moonshine gives no word times, so each word gets a share
//!   of its VAD segment (onset to the start of the trailing silence) in
//!   proportion to its characters. Segment boundaries are as good as the VAD;
//!   a word's place inside a segment is an estimate. `confidence` is absent.
//! * A `<end>` token after the words of each segment, when the session asked
//!   for endpoint detection (Soniox sends `<end>` only then, and so does this
//!   engine; the segment end is the endpoint).
//! * Non-final tokens (partials) while speech goes on: the segment so far is
//!   decoded again every 0.5 s of audio, or less often when decoding is slow
//!   (the next partial waits four times the last one's decoding time, so at
//!   real-time pace partials take at most a quarter of the wall time). Every
//!   update carries the complete current non-final set, empty once the words
//!   became final. [`LocalEngine::with_partials`]`(false)` saves that CPU.
//! * `Finalize` ends the current segment where the audio stands and answers
//!   `<fin>`; `EndOfAudio` does the same and sends `Finished`.
//! * `total_audio_proc_ms` is the audio received; `final_audio_proc_ms` the
//!   end of the last segment made final, or in silence the audio the VAD can
//!   no longer reach back into (its onset look-back, 0.31 s).
//!
//! Moonshine is English only: the language options are ignored (with a
//! warning), tokens carry `language: "en"` when language identification was
//! asked for, and translation is refused ([`Error::Usage`]).
//!
//! # Figures
//!
//! On the 2-core test machine, for `tests/fixtures/speech-16k.wav` (33 s of
//! piper speech, ten sentences, 90 words), release build, audio fed as fast
//! as taken: tiny-en WER 6.7 %, RTF 0.038 finals only and 0.155 with
//! partials, peak RSS 148 MiB, loading 0.55 s; base-en WER 5.6 %, RTF 0.39
//! (0.71 with partials), 630 MiB. Fed at real-time pace, a segment's finals
//! and `<end>` come 0.45–0.55 s after the speaker stops (0.25 s of that is
//! the VAD's silence). Segment edges land within 0.15 s of the speech's (as
//! its energy shows); the word times inside them are the interpolation's.
#![allow(unsafe_code)]

mod dsp;
mod ffi;
mod runtime;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{OnceCell, mpsc};
use tracing::warn;

use super::{COMMAND_QUEUE, EVENT_QUEUE, EngineLink};
use crate::audio::AudioFormat;
use crate::cli::values::LocalModel;
use crate::config::{LocalEngineConfig, RecognitionOptions};
use crate::error::{Error, Result};
use runtime::{Runtime, Vad};
use worker::Worker;

/// The provisioning command, named in every "files missing" error.
pub(crate) const FETCH_COMMAND: &str = "scripts/fetch-local-engine";
/// The layout version: the cache directory's last component. The fetch
/// script has the same number; both change whenever a pinned file does.
pub(crate) const LAYOUT_VERSION: &str = "1";
/// The sherpa-onnx release whose C structs this module declares.
pub(crate) const SHERPA_ONNX_VERSION: &str = "2.0.1";
/// The rate the VAD and Moonshine work at.
pub(crate) const SAMPLE_RATE: u32 = 16_000;
/// Audio decoded before each VAD segment (Silero reports onsets late).
pub(crate) const PRE_ROLL_MS: u64 = 300;
/// Audio decoded after each VAD segment.
pub(crate) const TAIL_MS: u64 = 200;

/// Silero's window: 512 samples at 16 kHz.
const VAD_WINDOW: usize = 512;
const VAD_THRESHOLD: f32 = 0.5;
const VAD_MIN_SILENCE_S: f32 = 0.25;
const VAD_MIN_SPEECH_S: f32 = 0.25;
/// Past this, the VAD raises its threshold to split the segment.
const VAD_MAX_SPEECH_S: f32 = 20.0;
/// The VAD's own buffer.
const VAD_BUFFER_S: f32 = 90.0;
/// How far back of the audio fed the VAD dates a detected onset: two
/// windows and the minimum speech (sherpa-onnx's rule).
const ONSET_LOOKBACK: u64 = 2 * VAD_WINDOW as u64 + (VAD_MIN_SPEECH_S * 16_000.0) as u64;

/// The directory of a model's files inside the engine directory.
fn model_dir_name(model: LocalModel) -> &'static str {
    match model {
        LocalModel::TinyEn => "moonshine-tiny-en",
        LocalModel::BaseEn => "moonshine-base-en",
    }
}

/// The default engine directory:
/// `${XDG_CACHE_HOME:-$HOME/.cache}/sttpipe/local-engine/<LAYOUT_VERSION>`,
/// as the fetch script computes it. `None` without either variable.
pub(crate) fn default_dir() -> Option<PathBuf> {
    let cache = match std::env::var_os("XDG_CACHE_HOME") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => match std::env::var_os("HOME") {
            Some(home) if !home.is_empty() => PathBuf::from(home).join(".cache"),
            _ => return None,
        },
    };
    Some(
        cache
            .join("sttpipe")
            .join("local-engine")
            .join(LAYOUT_VERSION),
    )
}

/// The offline engine: opens sessions that decode on this machine.
#[derive(Clone)]
pub(crate) struct LocalEngine {
    dir: PathBuf,
    /// Whether `dir` is the default, for the hint in errors.
    default_dir: bool,
    model: LocalModel,
    partials: bool,
    /// The library and the recognizer, loaded on first use.
    runtime: Arc<OnceCell<Arc<Runtime>>>,
}

impl std::fmt::Debug for LocalEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalEngine")
            .field("dir", &self.dir)
            .field("model", &self.model)
            .field("partials", &self.partials)
            .field("loaded", &self.runtime.initialized())
            .finish()
    }
}

impl LocalEngine {
    /// The engine `config` describes: its directory (the one
    /// `scripts/fetch-local-engine` prints, or [`default_dir`]) and model,
    /// partials on. Checks that the files are there; loads nothing yet.
    pub(crate) fn new(config: &LocalEngineConfig) -> Result<LocalEngine> {
        let (dir, default_dir) = match &config.model_dir {
            Some(dir) => (dir.clone(), false),
            None => match default_dir() {
                Some(dir) => (dir, true),
                None => {
                    return Err(Error::Config(format!(
                        "no cache directory for the local engine (neither XDG_CACHE_HOME nor HOME \
                         is set): run {FETCH_COMMAND} --dest DIR and give DIR as the model directory"
                    )));
                }
            },
        };
        let engine = LocalEngine {
            dir,
            default_dir,
            model: config.model,
            partials: true,
            runtime: Arc::new(OnceCell::new()),
        };
        engine.check_files()?;
        Ok(engine)
    }

    /// Whether sessions decode partial (non-final) results; on by default.
    /// Off, a session decodes each segment once, when it ends.
    pub(crate) fn with_partials(mut self, partials: bool) -> LocalEngine {
        self.partials = partials;
        self
    }

    /// The engine's directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The model sessions use.
    pub(crate) fn model(&self) -> LocalModel {
        self.model
    }

    /// Loads the library and the model now rather than at the first
    /// [`open`](LocalEngine::open) (0.4–1.3 s): for a daemon at start.
    pub(crate) async fn preload(&self) -> Result<()> {
        self.runtime().await.map(|_| ())
    }

    /// Opens a session: checks the format and options, loads the engine if
    /// needed, and starts the session's worker thread.
    pub(crate) async fn open(
        &self,
        recognition: &RecognitionOptions,
        audio: &AudioFormat,
    ) -> Result<EngineLink> {
        let input_rate = check_format(audio)?;
        let options = SessionOptions::new(recognition, self.partials)?;
        let runtime = self.runtime().await?;
        let vad = {
            let runtime = runtime.clone();
            tokio::task::spawn_blocking(move || Vad::new(runtime))
                .await
                .map_err(|e| Error::Internal(format!("creating the VAD: {e}")))??
        };
        let (commands_tx, commands_rx) = mpsc::channel(COMMAND_QUEUE);
        let (events_tx, events_rx) = mpsc::channel(EVENT_QUEUE);
        let worker = Worker::new(runtime, vad, input_rate, options);
        std::thread::Builder::new()
            .name("sttpipe-local".into())
            .spawn(move || worker.run(commands_rx, events_tx))
            .map_err(|e| Error::Internal(format!("starting the local engine's thread: {e}")))?;
        Ok(EngineLink {
            commands: commands_tx,
            events: events_rx,
        })
    }

    async fn runtime(&self) -> Result<Arc<Runtime>> {
        let runtime = self
            .runtime
            .get_or_try_init(|| {
                let (dir, model, hint) = (self.dir.clone(), self.model, self.fetch_hint());
                async move {
                    tokio::task::spawn_blocking(move || Runtime::load(&dir, model, &hint))
                        .await
                        .map_err(|e| Error::Internal(format!("loading the local engine: {e}")))?
                        .map(Arc::new)
                }
            })
            .await?;
        Ok(runtime.clone())
    }

    /// The fetch command that provisions what this engine needs.
    fn fetch_hint(&self) -> String {
        let mut hint = FETCH_COMMAND.to_owned();
        if self.model != LocalModel::TinyEn {
            hint.push_str(" --model ");
            hint.push_str(self.model.name());
        }
        if !self.default_dir {
            hint.push_str(&format!(" --dest {}", self.dir.display()));
        }
        hint
    }

    fn check_files(&self) -> Result<()> {
        let required = required_files(self.model);
        let missing: Vec<&str> = required
            .iter()
            .filter(|file| !self.dir.join(file).is_file())
            .map(String::as_str)
            .collect();
        // Name the files only when some are there: a partial install.
        let which = match missing.len() {
            0 => return Ok(()),
            n if n == required.len() => String::new(),
            _ => format!(" (missing {})", missing.join(", ")),
        };
        Err(Error::Config(format!(
            "the local engine is not provisioned in {}{which}: run {}",
            self.dir.display(),
            self.fetch_hint()
        )))
    }
}

/// The files an engine directory must hold for `model`.
fn required_files(model: LocalModel) -> Vec<String> {
    let mut files = vec![
        "lib/libsherpa-onnx-c-api.so".to_owned(),
        "lib/libonnxruntime.so".to_owned(),
        "silero_vad.onnx".to_owned(),
    ];
    for name in [
        "encoder_model.ort",
        "decoder_model_merged.ort",
        "tokens.txt",
    ] {
        files.push(format!("{}/{name}", model_dir_name(model)));
    }
    files
}

/// The input rate, for the one format the engine takes.
fn check_format(audio: &AudioFormat) -> Result<u32> {
    match (audio.name.as_str(), audio.sample_rate, audio.channels) {
        ("pcm_s16le", Some(rate), Some(1)) if (4_000..=192_000).contains(&rate) => Ok(rate),
        ("pcm_s16le", Some(rate), Some(1)) => Err(Error::BadAudio(format!(
            "the local engine takes 4000 to 192000 Hz, not {rate} Hz"
        ))),
        _ => Err(Error::BadAudio(format!(
            "the local engine takes pcm_s16le mono only, not {audio}; convert it first \
             (e.g. ffmpeg -i IN -f s16le -ac 1 -ar 16000 -)"
        ))),
    }
}

/// What a session takes from the recognition options.
#[derive(Debug, Clone)]
struct SessionOptions {
    endpoints: bool,
    partials: bool,
    language: Option<String>,
}

impl SessionOptions {
    fn new(recognition: &RecognitionOptions, partials: bool) -> Result<SessionOptions> {
        if recognition.translation.is_some() {
            return Err(Error::Usage(
                "the local engine does not translate: drop the translation options or use Soniox"
                    .into(),
            ));
        }
        if recognition.diarize {
            warn!("the local engine has no speaker labels: --diarize is ignored");
        }
        let english = |hint: &String| hint == "en" || hint.starts_with("en-");
        if !recognition.language_hints.is_empty() && !recognition.language_hints.iter().any(english)
        {
            warn!(hints = ?recognition.language_hints, "the local engine recognises English only");
        }
        Ok(SessionOptions {
            endpoints: recognition.endpoint_detection,
            partials,
            language: recognition.language_id.then(|| "en".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests {
    //! The pure parts always run. The tests marked "engine" need the
    //! provisioned files (found in the default directory):
    //! without them they print why and pass, unless the environment has
    //! `STTPIPE_REQUIRE_LOCAL_ENGINE=1`, in which case they fail with the
    //! command to run. CI sets it after running `scripts/fetch-local-engine`,
    //! so that a provisioning problem cannot pass as a skipped test.

    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::Translation;
    use crate::engine::{EngineCommand, EngineEvent};
    use crate::event::Token;
    use crate::wer::word_error_rate;
    use bytes::Bytes;

    fn at(dir: &Path, model: LocalModel) -> LocalEngineConfig {
        LocalEngineConfig {
            model_dir: Some(dir.to_owned()),
            model,
        }
    }

    // --- pure parts -------------------------------------------------------

    #[test]
    fn only_pcm_s16le_mono_is_taken() {
        assert_eq!(check_format(&AudioFormat::default_pcm()).unwrap(), 16_000);
        assert_eq!(
            check_format(&AudioFormat::raw("pcm_s16le", 44_100, 1)).unwrap(),
            44_100
        );
        for format in [
            AudioFormat::container("mp3"),
            AudioFormat::raw("pcm_s16le", 16_000, 2),
            AudioFormat::raw("pcm_f32le", 16_000, 1),
            AudioFormat::raw("mulaw", 8_000, 1),
            AudioFormat::raw("pcm_s16le", 1_000, 1),
        ] {
            let err = check_format(&format).unwrap_err();
            assert!(matches!(err, Error::BadAudio(_)), "{format}: {err:?}");
        }
    }

    #[test]
    fn translation_is_refused() {
        let recognition = RecognitionOptions {
            translation: Some(Translation::OneWay {
                target_language: "de".into(),
            }),
            ..Default::default()
        };
        let err = SessionOptions::new(&recognition, true).unwrap_err();
        assert!(matches!(err, Error::Usage(_)), "{err:?}");
    }

    #[test]
    fn missing_files_name_the_fetch_command() {
        let dir = tempfile::tempdir().unwrap();
        let err = LocalEngine::new(&at(dir.path(), LocalModel::TinyEn)).unwrap_err();
        let message = err.to_string();
        assert!(matches!(err, Error::Config(_)), "{err:?}");
        assert_eq!(err.exit_code(), crate::error::EXIT_CONFIG);
        assert!(!message.contains('\n'), "one line: {message}");
        assert!(
            message.contains("scripts/fetch-local-engine --dest"),
            "{message}"
        );
        assert!(!message.contains("missing"), "nothing there: {message}");

        // All but base-en's files: tiny-en works, base-en names its option.
        for file in required_files(LocalModel::TinyEn) {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        LocalEngine::new(&at(dir.path(), LocalModel::TinyEn)).unwrap();
        let err = LocalEngine::new(&at(dir.path(), LocalModel::BaseEn)).unwrap_err();
        assert!(err.to_string().contains("--model base-en"), "{err}");
        // Part of an install: the missing files are named.
        std::fs::remove_file(dir.path().join("silero_vad.onnx")).unwrap();
        let err = LocalEngine::new(&at(dir.path(), LocalModel::TinyEn)).unwrap_err();
        assert!(
            err.to_string().contains("(missing silero_vad.onnx)"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn open_rejects_other_formats_before_loading() {
        // Empty stand-in files: the format check comes before any loading.
        let dir = tempfile::tempdir().unwrap();
        for file in required_files(LocalModel::TinyEn) {
            let path = dir.path().join(file);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, b"").unwrap();
        }
        let engine = LocalEngine::new(&at(dir.path(), LocalModel::TinyEn)).unwrap();
        let err = engine
            .open(
                &RecognitionOptions::default(),
                &AudioFormat::container("wav"),
            )
            .await
            .unwrap_err();
        assert!(matches!(err, Error::BadAudio(_)), "{err:?}");
    }

    // --- with the engine ---------------------------------------------------

    /// The provisioned engine, or `None` (after saying why) when its files
    /// are missing and `STTPIPE_REQUIRE_LOCAL_ENGINE=1` is not set.
    fn engine() -> Option<LocalEngine> {
        let default = LocalEngineConfig {
            model_dir: None,
            model: LocalModel::TinyEn,
        };
        match LocalEngine::new(&default) {
            Ok(engine) => Some(engine),
            Err(err) => {
                if std::env::var("STTPIPE_REQUIRE_LOCAL_ENGINE").as_deref() == Ok("1") {
                    panic!("STTPIPE_REQUIRE_LOCAL_ENGINE=1 but {err}");
                }
                eprintln!("skipped: {err} (STTPIPE_REQUIRE_LOCAL_ENGINE=1 makes this a failure)");
                None
            }
        }
    }

    const FIXTURE_WAV: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech-16k.wav");
    const FIXTURE_TXT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/speech-16k.txt");

    /// The fixture's samples (16 kHz mono pcm_s16le WAV).
    fn fixture() -> (Vec<i16>, String) {
        let wav = std::fs::read(FIXTURE_WAV).expect("tests/fixtures/speech-16k.wav");
        assert_eq!(&wav[..4], b"RIFF");
        assert_eq!(&wav[8..12], b"WAVE");
        let mut at = 12;
        let mut format = None;
        while at + 8 <= wav.len() {
            let id = &wav[at..at + 4];
            let size = u32::from_le_bytes(wav[at + 4..at + 8].try_into().unwrap()) as usize;
            let body = &wav[at + 8..(at + 8 + size).min(wav.len())];
            match id {
                b"fmt " => format = Some(body.to_vec()),
                b"data" => {
                    let fmt = format.expect("fmt before data");
                    let channels = u16::from_le_bytes([fmt[2], fmt[3]]);
                    let rate = u32::from_le_bytes(fmt[4..8].try_into().unwrap());
                    let bits = u16::from_le_bytes([fmt[14], fmt[15]]);
                    assert_eq!((channels, rate, bits), (1, 16_000, 16));
                    let samples = body
                        .chunks_exact(2)
                        .map(|b| i16::from_le_bytes([b[0], b[1]]))
                        .collect();
                    let text = std::fs::read_to_string(FIXTURE_TXT).expect("speech-16k.txt");
                    return (samples, text);
                }
                _ => {}
            }
            at += 8 + size + size % 2;
        }
        panic!("no data chunk in {FIXTURE_WAV}");
    }

    /// What a run of a session gave.
    #[derive(Debug, Default)]
    struct Run {
        finals: Vec<Token>,
        /// Updates that carried non-final tokens.
        partial_updates: usize,
        /// `total_audio_proc_ms` of the `Finished` event.
        total_ms: u64,
        wall: Duration,
    }

    impl Run {
        fn text(&self) -> String {
            self.finals
                .iter()
                .filter(|t| !t.text.starts_with('<'))
                .map(|t| t.text.as_str())
                .collect()
        }

        fn count(&self, marker: &str) -> usize {
            self.finals.iter().filter(|t| t.text == marker).count()
        }
    }

    /// Streams `pcm` (at `rate`) in 100 ms chunks as fast as the engine
    /// takes it, with a `Finalize` after `finalize_after` chunks if given,
    /// and collects the events until `Finished`.
    async fn run(
        engine: &LocalEngine,
        pcm: &[i16],
        rate: u32,
        finalize_after: Option<usize>,
    ) -> Run {
        let recognition = RecognitionOptions {
            endpoint_detection: true,
            ..Default::default()
        };
        let started = Instant::now();
        let link = engine
            .open(&recognition, &AudioFormat::raw("pcm_s16le", rate, 1))
            .await
            .expect("open");
        let bytes: Vec<u8> = pcm.iter().flat_map(|s| s.to_le_bytes()).collect();
        let chunk = rate as usize / 10 * 2;
        let commands = link.commands.clone();
        let finalize_after = finalize_after.unwrap_or(usize::MAX);
        let sender = tokio::spawn(async move {
            for (i, piece) in bytes.chunks(chunk).enumerate() {
                if i == finalize_after {
                    commands.send(EngineCommand::Finalize).await.unwrap();
                }
                let audio = EngineCommand::Audio(Bytes::copy_from_slice(piece));
                commands.send(audio).await.unwrap();
            }
            commands.send(EngineCommand::EndOfAudio).await.unwrap();
        });
        let mut run = Run::default();
        let mut events = link.events;
        let mut last_final_ms = 0;
        let mut last_total_ms = 0;
        while let Some(event) = events.recv().await {
            let (update, finished) = match event {
                EngineEvent::Update(update) => (update, false),
                EngineEvent::Finished(update) => (update, true),
                EngineEvent::Failed(err) => panic!("the session failed: {err}"),
            };
            assert!(
                update.final_audio_proc_ms >= last_final_ms,
                "final progress goes back"
            );
            assert!(
                update.total_audio_proc_ms >= last_total_ms,
                "total progress goes back"
            );
            assert!(update.final_audio_proc_ms <= update.total_audio_proc_ms);
            last_final_ms = update.final_audio_proc_ms;
            last_total_ms = update.total_audio_proc_ms;
            let mut seen_non_final = false;
            for token in update.tokens {
                if token.is_final {
                    assert!(!seen_non_final, "finals come before non-finals");
                    run.finals.push(token);
                } else {
                    seen_non_final = true;
                }
            }
            run.partial_updates += usize::from(seen_non_final);
            if finished {
                run.total_ms = update.total_audio_proc_ms;
                assert_eq!(update.final_audio_proc_ms, update.total_audio_proc_ms);
                break;
            }
        }
        assert!(events.recv().await.is_none(), "nothing after Finished");
        sender.await.unwrap();
        run.wall = started.elapsed();
        run
    }

    /// Final word times: each word ends after it starts, starts no earlier
    /// than the previous one ended, and lies within the audio.
    fn check_times(run: &Run, audio_ms: u64) {
        let mut previous_end = 0;
        for token in run.finals.iter().filter(|t| !t.text.starts_with('<')) {
            let (start, end) = (token.start_ms.unwrap(), token.end_ms.unwrap());
            assert!(start <= end, "{token:?}");
            assert!(
                start >= previous_end,
                "{token:?} starts before {previous_end}"
            );
            assert!(
                end <= audio_ms,
                "{token:?} ends after the audio ({audio_ms} ms)"
            );
            previous_end = end;
        }
    }

    fn peak_rss_mib() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024)
    }

    /// Engine: ~33 s of piper speech, ten sentences: WER ≤ 20 %, sane times,
    /// an endpoint per sentence or so, partials on the way.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn real_speech_is_transcribed() {
        let Some(engine) = engine() else { return };
        let (pcm, reference) = fixture();
        let audio_ms = pcm.len() as u64 * 1000 / 16_000;
        let started = Instant::now();
        engine.preload().await.expect("load the engine");
        let load = started.elapsed();
        let run = run(&engine, &pcm, 16_000, None).await;
        let text = run.text();
        let wer = word_error_rate(&reference, &text);
        let rtf = run.wall.as_secs_f64() / (audio_ms as f64 / 1000.0);
        eprintln!(
            "local tiny-en: WER {:.1} %, RTF {rtf:.3} (with partials; load {} ms), \
             {} endpoints, {} partial updates, peak RSS {:?} MiB\n{text}",
            wer * 100.0,
            load.as_millis(),
            run.count("<end>"),
            run.partial_updates,
            peak_rss_mib(),
        );
        assert!(wer <= 0.20, "WER {:.1} % > 20 %: {text}", wer * 100.0);
        assert_eq!(run.total_ms, audio_ms);
        check_times(&run, audio_ms);
        let sentences = reference.lines().count();
        let endpoints = run.count("<end>");
        assert!(
            (sentences / 2..=sentences * 2).contains(&endpoints),
            "{endpoints} endpoints for {sentences} sentences"
        );
        assert!(run.partial_updates > 0, "no partials");
        assert_eq!(run.count("<fin>"), 0);
    }

    /// Engine: a finalize mid-stream answers `<fin>` after the words so far,
    /// and the rest still comes; without partials, at 48 kHz (resampled).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn finalize_and_resampling() {
        let Some(engine) = engine() else { return };
        let engine = engine.with_partials(false);
        let (pcm, reference) = fixture();
        // Up to 48 kHz by linear interpolation, so that the engine brings it
        // down again.
        let mut pcm48 = Vec::with_capacity(pcm.len() * 3);
        for pair in pcm.windows(2) {
            let (a, b) = (f32::from(pair[0]), f32::from(pair[1]));
            for k in 0..3 {
                pcm48.push((a + (b - a) * k as f32 / 3.0) as i16);
            }
        }
        let audio_ms = pcm48.len() as u64 * 1000 / 48_000;
        // 10 s in: inside the fourth sentence.
        let run = run(&engine, &pcm48, 48_000, Some(100)).await;
        let text = run.text();
        let wer = word_error_rate(&reference, &text);
        eprintln!(
            "48 kHz with a finalize at 10 s: WER {:.1} %\n{text}",
            wer * 100.0
        );
        assert!(wer <= 0.25, "WER {:.1} %: {text}", wer * 100.0);
        assert_eq!(run.count("<fin>"), 1);
        assert_eq!(run.partial_updates, 0, "partials were turned off");
        check_times(&run, audio_ms);
        let fin = run.finals.iter().position(|t| t.text == "<fin>").unwrap();
        assert!(fin > 0, "words before the finalize");
        assert!(
            run.finals[..fin]
                .iter()
                .filter_map(|t| t.end_ms)
                .all(|end| end <= 10_000),
            "words before <fin> are in the first 10 s"
        );
        assert!(
            run.finals[fin..].iter().any(|t| !t.text.starts_with('<')),
            "words after the finalize"
        );
    }

    /// Engine: silence gives no words, only progress; a session dropped
    /// without end of audio ends its thread quietly.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn silence_and_abandonment() {
        let Some(engine) = engine() else { return };
        let silence = vec![0i16; 16_000 * 3];
        let run = run(&engine, &silence, 16_000, None).await;
        assert!(run.finals.is_empty(), "{:?}", run.finals);
        assert_eq!(run.total_ms, 3_000);

        let link = engine
            .open(&RecognitionOptions::default(), &AudioFormat::default_pcm())
            .await
            .unwrap();
        link.commands
            .send(EngineCommand::Audio(Bytes::from(vec![0u8; 3_200])))
            .await
            .unwrap();
        let mut events = link.events;
        drop(link.commands);
        // The worker sees the closed channel and ends: the events close.
        let closed = tokio::time::timeout(Duration::from_secs(10), async {
            while events.recv().await.is_some() {}
        })
        .await;
        assert!(closed.is_ok(), "the worker did not end");
    }

    /// Engine: base-en, when provisioned (`--model base-en`).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn base_en_when_provisioned() {
        if engine().is_none() {
            return;
        }
        let base = LocalEngineConfig {
            model_dir: None,
            model: LocalModel::BaseEn,
        };
        let Ok(engine) = LocalEngine::new(&base) else {
            eprintln!("skipped: base-en is not provisioned ({FETCH_COMMAND} --model base-en)");
            return;
        };
        let engine = engine.with_partials(false);
        let (pcm, reference) = fixture();
        let audio_ms = pcm.len() as u64 * 1000 / 16_000;
        let run = run(&engine, &pcm, 16_000, None).await;
        let text = run.text();
        let wer = word_error_rate(&reference, &text);
        eprintln!(
            "local base-en: WER {:.1} %, RTF {:.3} (finals only, load included)\n{text}",
            wer * 100.0,
            run.wall.as_secs_f64() / (audio_ms as f64 / 1000.0)
        );
        assert!(wer <= 0.20, "WER {:.1} %: {text}", wer * 100.0);
        check_times(&run, audio_ms);
    }
}
