//! The local engine: offline speech-to-text with no key and no network,
//! Moonshine (tiny-en, or base-en) behind Silero VAD, through sherpa-onnx's
//! C library loaded at run time.
//!
//! # Why run-time loading
//!
//! sherpa-onnx ships as a PyPI wheel holding `libsherpa-onnx-c-api.so` and
//! `libonnxruntime.so`; `sttpipe engine install` ([`crate::engine::install`])
//! installs them, the models and the VAD into the engine directory. The `sherpa-onnx` crate would
//! link against that library at build time (its build script downloads from
//! GitHub otherwise), so the engine could only be an optional cargo feature
//! built on a provisioned machine. Loading the library with `libloading`
//! instead means the default binary, built anywhere, runs `--engine local` as
//! soon as the files are provisioned: no rebuild, no `LD_LIBRARY_PATH`, no
//! rpath; and the engine's code is compiled and type-checked in every build.
//!
//! The price is hand-written `#[repr(C)]` declarations of the C API's
//! configuration structs, which sherpa-onnx changes between releases. That
//! risk is contained four ways: the installer pins the wheel by sha256
//! (and every installed file too), so the library is exactly 2.0.1; the
//! engine refuses any library whose `SherpaOnnxGetVersionStr()` is not
//! [`SHERPA_ONNX_VERSION`]; the structs are transcribed field by field from
//! the 2.0.1 header shipped in the wheel, and compile-time assertions check
//! every size and the offsets of the fields set here against what a C compiler
//! gave for that header (x86_64, the only platform the wheels exist for); and
//! the tests run real speech through the library. Moonshine's own
//! `libmoonshine.so` (the other run-time option) was not taken: its
//! C API is younger (0.1.x), the wheel that carries the model has a library
//! that rejects options later ones accept, and it brings its own VAD where
//! this engine wants Silero with explicit padding.
//!
//! # Files
//!
//! [`LocalEngine::new`] finds the engine directory as [`place`] says
//! (`--model-dir`, `STTPIPE_MODEL_DIR`, `STATE_DIRECTORY`,
//! `~/.local/share/sttpipe`, `/var/lib/sttpipe`) and looks in its layout
//! directory, `local-engine/1/` (`1` is [`place::LAYOUT_VERSION`]), for:
//!
//! ```text
//! lib/libsherpa-onnx-c-api.so  lib/libonnxruntime.so  silero_vad.onnx
//! moonshine-tiny-en/{encoder_model.ort,decoder_model_merged.ort,tokens.txt}
//! moonshine-base-en/…          (sttpipe engine install base-en)
//! ```
//!
//! Missing files are an [`Error::Config`] naming the command that installs
//! them. The library and the model are loaded on the first
//! [`LocalEngine::open`] (or [`LocalEngine::preload`]), once per engine, and
//! shared by its sessions; decoding is serialised between sessions (each
//! decode already uses the cores). The library stays loaded for the life of
//! the process: onnxruntime is not made to be unloaded.
//!
//! # What a session does
//!
//! One worker thread per session takes raw audio of any format Soniox
//! takes (a container is [`Error::BadAudio`]: sttpipe's input decodes media
//! before), mixes it down to mono and resamples it to 16 kHz
//! ([`crate::audio`]), and feeds Silero VAD in
//! 32 ms windows (threshold 0.5, 0.25 s minimum speech and silence, segments
//! split past 20 s). Each speech segment is decoded with Moonshine widened by
//! [`PRE_ROLL_MS`] before and [`TAIL_MS`] after: Silero reports onsets late,
//! and without the padding first words came out clipped ("Please" as "Lace").
//!
//! It answers in Soniox's shape ([`Update`](super::Update)):
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
//!
//! # Source files
//!
//! This one is the engine's front: [`LocalEngine`], the check of its files,
//! the format and option checks, and the constants that fix the engine's
//! behaviour. [`place`] finds the files; [`ffi`] declares the C API and pins its
//! layout; [`runtime`] loads the library and wraps the recognizer and the
//! VAD in safe methods, with every `unsafe` block of the engine and its
//! `SAFETY:` argument; [`worker`] is a session's thread; [`dsp`] is the
//! pure arithmetic it uses (the audio ring, word times).
//! `tests.rs` holds this file's tests, real speech through the provisioned
//! engine among them.

mod dsp;
mod ffi;
pub(crate) mod place;
mod runtime;
mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::{OnceCell, mpsc};
use tracing::info;

use super::{COMMAND_QUEUE, EVENT_QUEUE, EngineLink};
use crate::audio::AudioFormat;
use crate::audio::convert::ToMono;
use crate::audio::resample::To16k;
use crate::cli::values::LocalModel;
use crate::config::{LocalEngineConfig, RecognitionOptions};
use crate::error::{Error, Result};
use place::{Place, Source, required_files};
use runtime::{Runtime, Vad};
use worker::Worker;

/// The installing command, named in every "files missing" error.
pub(crate) const INSTALL_COMMAND: &str = "sttpipe engine install";
/// The sherpa-onnx release whose C structs [`ffi`] declares.
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

/// The offline engine: opens sessions that decode on this machine.
#[derive(Clone)]
pub(crate) struct LocalEngine {
    /// The engine directory.
    place: Place,
    /// Its layout directory, where the files are.
    dir: PathBuf,
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
    /// The engine `config` describes: its directory (`--model-dir`, or
    /// found as [`place`] says) and model, partials on. Checks that the
    /// files are there; loads nothing yet.
    pub(crate) fn new(config: &LocalEngineConfig) -> Result<LocalEngine> {
        let env = |name: &str| std::env::var(name).ok();
        let Some(place) = place::lookup(config.model_dir.as_deref(), config.model, &env) else {
            return Err(Error::Config(format!(
                "no directory for the local engine (none of --model-dir, {}, STATE_DIRECTORY, \
                 XDG_DATA_HOME, HOME is set): run {INSTALL_COMMAND} --dir DIR and give DIR \
                 as --model-dir",
                place::DIR_VARIABLE
            )));
        };
        let engine = LocalEngine {
            dir: place.layout_dir(),
            place,
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

    /// The engine's directory (its layout directory: where the files are).
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
        let (to_mono, resampler) = check_format(audio)?;
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
        let worker = Worker::new(runtime, vad, to_mono, resampler, options);
        std::thread::Builder::new()
            .name("sttpipe-local".into())
            .spawn(move || worker.run(commands_rx, events_tx))
            .map_err(|e| Error::Internal(format!("starting the local engine's thread: {e}")))?;
        Ok(EngineLink {
            commands: commands_tx,
            events: events_rx,
            url: None,
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

    /// The command that installs what this engine needs.
    fn fetch_hint(&self) -> String {
        let mut hint = INSTALL_COMMAND.to_owned();
        if self.model != LocalModel::TinyEn {
            hint.push(' ');
            hint.push_str(self.model.name());
        }
        if self.place.source != Source::User {
            hint.push_str(&format!(" --dir {}", self.place.root.display()));
        }
        hint
    }

    fn check_files(&self) -> Result<()> {
        // A directory that is there but cannot be read is not a missing
        // install: say so, not "run the installer".
        if let Err(err) = std::fs::read_dir(&self.dir)
            && err.kind() != std::io::ErrorKind::NotFound
        {
            return Err(Error::Config(format!(
                "cannot read the local engine's directory {}: {err}",
                self.dir.display()
            )));
        }
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

/// The conversion of a session's audio to the engine's 16 kHz mono: any
/// raw format, any channel count (mixed down); not a container.
fn check_format(audio: &AudioFormat) -> Result<(ToMono, To16k)> {
    let Some(to_mono) = ToMono::new(audio) else {
        return Err(Error::BadAudio(format!(
            "the local engine takes decoded audio, not {audio} passed through: sttpipe decodes \
             WAV, MP3, FLAC, Ogg Vorbis, MP4/M4A, Matroska/WebM and AIFF itself, so drop \
             --passthrough or --audio-format, or convert the input first \
             (e.g. ffmpeg -i IN -f s16le -ac 1 -ar 16000 -)"
        )));
    };
    match audio.sample_rate {
        Some(rate) if (4_000..=384_000).contains(&rate) => {
            let resampler = To16k::new(rate).map_err(|e| Error::Internal(e.0))?;
            Ok((to_mono, resampler))
        }
        rate => Err(Error::BadAudio(format!(
            "the local engine takes 4000 to 384000 Hz, not {} Hz",
            rate.unwrap_or(0)
        ))),
    }
}

/// What the engine cannot honour of `recognition` and ignores, one line
/// each, for people: the filter says them as warnings, the daemon logs them.
/// (Translation is not here: it is refused.)
pub(crate) fn ignored_options(recognition: &RecognitionOptions) -> Vec<String> {
    let mut ignored = Vec::new();
    if recognition.model != crate::cli::session_args::DEFAULT_MODEL {
        ignored.push(format!(
            "the local engine runs Moonshine: --model {} is ignored (--local-model chooses its model)",
            recognition.model
        ));
    }
    if recognition.context.is_some() {
        ignored.push("the local engine takes no context: --context is ignored".to_owned());
    }
    if recognition.diarize {
        ignored.push("the local engine has no speaker labels: --diarize is ignored".to_owned());
    }
    let english = |hint: &String| hint == "en" || hint.starts_with("en-");
    if !recognition.language_hints.is_empty() && !recognition.language_hints.iter().any(english) {
        ignored.push(format!(
            "the local engine recognises English only: --language-hints {} is ignored",
            recognition.language_hints.join(",")
        ));
    }
    ignored
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
        for ignored in ignored_options(recognition) {
            info!("{ignored}");
        }
        Ok(SessionOptions {
            endpoints: recognition.endpoint_detection,
            partials,
            language: recognition.language_id.then(|| "en".to_owned()),
        })
    }
}

#[cfg(test)]
mod tests;
