//! The loaded library: sherpa-onnx's functions ([`Api`]), the recognizer
//! an engine's sessions share ([`Runtime`]) and a session's VAD ([`Vad`]),
//! each behind safe methods. Every `unsafe` block of the local engine is in
//! this file, each with its `SAFETY:` argument; [`ffi`] declares the types
//! they call through.
#![allow(unsafe_code)]

use std::ffi::{CStr, CString};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use tracing::debug;

use super::ffi;
use super::{
    INSTALL_COMMAND, SAMPLE_RATE, SHERPA_ONNX_VERSION, VAD_BUFFER_S, VAD_MAX_SPEECH_S,
    VAD_MIN_SILENCE_S, VAD_MIN_SPEECH_S, VAD_THRESHOLD, VAD_WINDOW, place::model_dir_name,
};
use crate::cli::values::LocalModel;
use crate::error::{Error, Result};

/// The library's functions. The pointers come from a library that is never
/// unloaded (see [`Runtime::load`]), so they stay valid.
#[derive(Clone, Copy)]
struct Api {
    create_recognizer: ffi::CreateOfflineRecognizer,
    destroy_recognizer: ffi::DestroyOfflineRecognizer,
    create_stream: ffi::CreateOfflineStream,
    destroy_stream: ffi::DestroyOfflineStream,
    accept_waveform: ffi::AcceptWaveformOffline,
    decode_stream: ffi::DecodeOfflineStream,
    get_result: ffi::GetOfflineStreamResult,
    destroy_result: ffi::DestroyOfflineRecognizerResult,
    create_vad: ffi::CreateVad,
    destroy_vad: ffi::VadVoid,
    vad_accept_waveform: ffi::VadAcceptWaveform,
    vad_empty: ffi::VadFlag,
    vad_detected: ffi::VadFlag,
    vad_front: ffi::VadFront,
    vad_pop: ffi::VadVoid,
    vad_flush: ffi::VadVoid,
    destroy_segment: ffi::DestroySpeechSegment,
}

/// A loaded engine: the library, the recognizer, and what the VADs need.
pub(crate) struct Runtime {
    api: Api,
    recognizer: *const ffi::OfflineRecognizer,
    /// One decode at a time across the engine's sessions: each decode
    /// already uses the cores.
    decoding: Mutex<()>,
    vad_model: CString,
}

// SAFETY: the recognizer is only used through `decode`, which holds
// `decoding`, and by `Drop`, which has `&mut self`; the function pointers
// are plain code addresses in a library that stays loaded. So sharing a
// `Runtime` between threads never runs two calls on the recognizer at once.
unsafe impl Send for Runtime {}
// SAFETY: as above: every use of the recognizer through `&Runtime` is
// serialised by the `decoding` mutex.
unsafe impl Sync for Runtime {}

/// A path for the C API: UTF-8 (libloading wants `&str`), no NUL.
fn c_path(path: &Path) -> Result<CString> {
    let text = path.to_str().ok_or_else(|| {
        Error::Config(format!(
            "the local engine's path {} is not UTF-8",
            path.display()
        ))
    })?;
    CString::new(text).map_err(|_| {
        Error::Config(format!(
            "the local engine's path {} holds a NUL byte",
            path.display()
        ))
    })
}

/// One symbol of the library as a function pointer.
///
/// # Safety
///
/// `T` must be the function's true type (the declarations in [`ffi`]).
unsafe fn symbol<T: Copy>(lib: &'static libloading::Library, name: &str) -> Result<T> {
    // SAFETY: the caller gives the symbol's true type; the library is
    // 'static (leaked), so the copied pointer outlives no library.
    unsafe { lib.get::<T>(name) }
        .map(|symbol| *symbol)
        .map_err(|e| Error::Config(format!("the local engine's library lacks {name}: {e}")))
}

impl Runtime {
    /// Loads the library, checks its version and creates the recognizer:
    /// blocking, 0.4–1.3 s.
    pub(crate) fn load(dir: &Path, model: LocalModel, fetch_hint: &str) -> Result<Runtime> {
        let again = |what: String| Error::Config(format!("{what}; run {fetch_hint} again"));
        let lib_path = dir.join("lib").join("libsherpa-onnx-c-api.so");
        let lib_name = c_path(&lib_path)?.into_string().unwrap_or_default();
        let started = Instant::now();
        // SAFETY: loading runs the library's initialisers: sherpa-onnx's and
        // onnxruntime's (which it finds beside it through its `$ORIGIN`
        // rpath), as pinned and verified by `sttpipe engine install`. They register
        // nothing that conflicts with this process.
        let lib = unsafe { libloading::Library::new(lib_name) }
            .map_err(|e| again(format!("cannot load {}: {e}", lib_path.display())))?;
        // Never unloaded: onnxruntime keeps threads and global state that a
        // dlclose would pull from under them.
        let lib: &'static libloading::Library = Box::leak(Box::new(lib));

        // SAFETY: the declared type is the header's
        // `const char *SherpaOnnxGetVersionStr(void)`.
        let version_fn: ffi::GetVersionStr = unsafe { symbol(lib, "SherpaOnnxGetVersionStr") }?;
        // SAFETY: it returns a pointer to a static NUL-terminated string.
        let version = unsafe { CStr::from_ptr(version_fn()) }
            .to_string_lossy()
            .into_owned();
        if version != SHERPA_ONNX_VERSION {
            return Err(again(format!(
                "{} is sherpa-onnx {version}; this sttpipe needs {SHERPA_ONNX_VERSION}",
                lib_path.display()
            )));
        }
        // SAFETY (every call): each name is given its type from the 2.0.1
        // header, transcribed in `ffi`.
        let api = unsafe {
            Api {
                create_recognizer: symbol(lib, "SherpaOnnxCreateOfflineRecognizer")?,
                destroy_recognizer: symbol(lib, "SherpaOnnxDestroyOfflineRecognizer")?,
                create_stream: symbol(lib, "SherpaOnnxCreateOfflineStream")?,
                destroy_stream: symbol(lib, "SherpaOnnxDestroyOfflineStream")?,
                accept_waveform: symbol(lib, "SherpaOnnxAcceptWaveformOffline")?,
                decode_stream: symbol(lib, "SherpaOnnxDecodeOfflineStream")?,
                get_result: symbol(lib, "SherpaOnnxGetOfflineStreamResult")?,
                destroy_result: symbol(lib, "SherpaOnnxDestroyOfflineRecognizerResult")?,
                create_vad: symbol(lib, "SherpaOnnxCreateVoiceActivityDetector")?,
                destroy_vad: symbol(lib, "SherpaOnnxDestroyVoiceActivityDetector")?,
                vad_accept_waveform: symbol(lib, "SherpaOnnxVoiceActivityDetectorAcceptWaveform")?,
                vad_empty: symbol(lib, "SherpaOnnxVoiceActivityDetectorEmpty")?,
                vad_detected: symbol(lib, "SherpaOnnxVoiceActivityDetectorDetected")?,
                vad_front: symbol(lib, "SherpaOnnxVoiceActivityDetectorFront")?,
                vad_pop: symbol(lib, "SherpaOnnxVoiceActivityDetectorPop")?,
                vad_flush: symbol(lib, "SherpaOnnxVoiceActivityDetectorFlush")?,
                destroy_segment: symbol(lib, "SherpaOnnxDestroySpeechSegment")?,
            }
        };

        let model_dir = dir.join(model_dir_name(model));
        let encoder = c_path(&model_dir.join("encoder_model.ort"))?;
        let decoder = c_path(&model_dir.join("decoder_model_merged.ort"))?;
        let tokens = c_path(&model_dir.join("tokens.txt"))?;
        let provider = c"cpu";
        let greedy = c"greedy_search";
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(4));
        // SAFETY: the config is plain data (pointers, integers, floats), for
        // which all-zero bytes are valid: null strings and zero numbers,
        // which the C API reads as "unset, use the default" (the header asks
        // for a zero-initialised struct).
        let mut config: ffi::OfflineRecognizerConfig = unsafe { std::mem::zeroed() };
        config.feat_config.sample_rate = SAMPLE_RATE as i32;
        config.feat_config.feature_dim = 80;
        config.model_config.moonshine.encoder = encoder.as_ptr();
        config.model_config.moonshine.merged_decoder = decoder.as_ptr();
        config.model_config.tokens = tokens.as_ptr();
        config.model_config.num_threads = threads as i32;
        config.model_config.debug = 0;
        config.model_config.provider = provider.as_ptr();
        config.decoding_method = greedy.as_ptr();
        // SAFETY: `config` is a valid 2.0.1 config whose strings (CStrings
        // and literals above) outlive the call; the library copies what it
        // keeps. It returns null when the model cannot be loaded.
        let recognizer = unsafe { (api.create_recognizer)(&config) };
        if recognizer.is_null() {
            return Err(again(format!(
                "sherpa-onnx could not load the {} model from {}",
                model.name(),
                model_dir.display()
            )));
        }
        let vad_model = c_path(&dir.join("silero_vad.onnx"))?;
        debug!(
            dir = %dir.display(),
            model = model.name(),
            threads,
            load_ms = started.elapsed().as_millis() as u64,
            "local engine loaded"
        );
        Ok(Runtime {
            api,
            recognizer,
            decoding: Mutex::new(()),
            vad_model,
        })
    }

    /// Decodes 16 kHz audio into text (blocking; one decode at a time).
    pub(crate) fn decode(&self, audio: &[f32]) -> Result<String> {
        let n = i32::try_from(audio.len())
            .map_err(|_| Error::Internal("a speech segment too long to decode".into()))?;
        let _one_at_a_time = self.decoding.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: the recognizer is valid while `self` lives and used by one
        // thread at a time (the lock). The stream is created, used and
        // destroyed here; `audio` outlives the call that reads it (the
        // stream copies the samples). The result is read before it is
        // destroyed, and its text is copied out.
        unsafe {
            let stream = (self.api.create_stream)(self.recognizer);
            if stream.is_null() {
                return Err(Error::Internal("sherpa-onnx created no stream".into()));
            }
            (self.api.accept_waveform)(stream, SAMPLE_RATE as i32, audio.as_ptr(), n);
            (self.api.decode_stream)(self.recognizer, stream);
            let result = (self.api.get_result)(stream);
            let text = if result.is_null() || (*result).text.is_null() {
                String::new()
            } else {
                CStr::from_ptr((*result).text)
                    .to_string_lossy()
                    .into_owned()
            };
            if !result.is_null() {
                (self.api.destroy_result)(result);
            }
            (self.api.destroy_stream)(stream);
            Ok(text)
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        // SAFETY: the recognizer came from `create_recognizer`, is not null,
        // and no stream or decode outlives `self` (they live within
        // `decode`, which borrows `self`).
        unsafe { (self.api.destroy_recognizer)(self.recognizer) }
    }
}

/// One speech segment from the VAD.
pub(crate) struct Segment {
    /// Absolute index of its first sample.
    pub(crate) start: u64,
    pub(crate) samples: Vec<f32>,
}

/// A session's Silero VAD.
pub(crate) struct Vad {
    runtime: Arc<Runtime>,
    vad: *const ffi::Vad,
}

// SAFETY: a VAD is owned by one `Vad` and used by one thread at a time (it
// moves into the session's worker); the C object has no thread affinity.
unsafe impl Send for Vad {}

impl Vad {
    pub(crate) fn new(runtime: Arc<Runtime>) -> Result<Vad> {
        let provider = c"cpu";
        // SAFETY: plain data, all-zero valid (see `Runtime::load`).
        let mut config: ffi::VadModelConfig = unsafe { std::mem::zeroed() };
        config.silero_vad.model = runtime.vad_model.as_ptr();
        config.silero_vad.threshold = VAD_THRESHOLD;
        config.silero_vad.min_silence_duration = VAD_MIN_SILENCE_S;
        config.silero_vad.min_speech_duration = VAD_MIN_SPEECH_S;
        config.silero_vad.window_size = VAD_WINDOW as i32;
        config.silero_vad.max_speech_duration = VAD_MAX_SPEECH_S;
        config.sample_rate = SAMPLE_RATE as i32;
        config.num_threads = 1;
        config.provider = provider.as_ptr();
        config.debug = 0;
        // SAFETY: a valid 2.0.1 config whose strings outlive the call (the
        // library copies them); null is returned on failure.
        let vad = unsafe { (runtime.api.create_vad)(&config, VAD_BUFFER_S) };
        if vad.is_null() {
            return Err(Error::Config(format!(
                "sherpa-onnx could not load the VAD model {}; run {INSTALL_COMMAND} again",
                runtime.vad_model.to_string_lossy()
            )));
        }
        Ok(Vad { runtime, vad })
    }

    pub(crate) fn accept(&mut self, window: &[f32]) {
        // SAFETY: a valid VAD used by this thread only; `window` is read
        // during the call (a few hundred samples, well within i32).
        unsafe {
            (self.runtime.api.vad_accept_waveform)(self.vad, window.as_ptr(), window.len() as i32)
        }
    }

    /// Whether speech is going on (a segment has begun and not ended).
    pub(crate) fn detected(&self) -> bool {
        // SAFETY: a valid VAD used by this thread only.
        unsafe { (self.runtime.api.vad_detected)(self.vad) != 0 }
    }

    /// Ends the segment in progress, if any, at the audio fed so far.
    pub(crate) fn flush(&mut self) {
        // SAFETY: a valid VAD used by this thread only.
        unsafe { (self.runtime.api.vad_flush)(self.vad) }
    }

    /// The oldest finished segment, removed from the queue.
    pub(crate) fn pop(&mut self) -> Option<Segment> {
        let api = &self.runtime.api;
        // SAFETY: a valid VAD used by this thread only. `vad_front` returns
        // a new segment (a copy) that this block destroys after copying its
        // samples; `samples` points at `n` floats while it lives.
        unsafe {
            if (api.vad_empty)(self.vad) != 0 {
                return None;
            }
            let front = (api.vad_front)(self.vad);
            let segment = if front.is_null() {
                None
            } else {
                let f = &*front;
                let samples = if f.samples.is_null() || f.n <= 0 {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(f.samples, f.n as usize).to_vec()
                };
                let start = u64::try_from(f.start).unwrap_or(0);
                (api.destroy_segment)(front);
                Some(Segment { start, samples })
            };
            (api.vad_pop)(self.vad);
            segment
        }
    }
}

impl Drop for Vad {
    fn drop(&mut self) {
        // SAFETY: created by `create_vad`, not null, destroyed once; the
        // runtime (and library) it belongs to outlives it (held by `Arc`).
        unsafe { (self.runtime.api.destroy_vad)(self.vad) }
    }
}
