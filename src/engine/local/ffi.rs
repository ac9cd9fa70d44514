//! The C API of sherpa-onnx 2.0.1, as much of it as this engine uses:
//! declarations transcribed from `sherpa-onnx/c-api/c-api.h` of the
//! `sherpa-onnx-core==2.0.1` wheel, and nothing else. Every struct is
//! declared whole, in the header's order, because the library reads it
//! whole; the constant assertions at the end pin their sizes and the offsets
//! this engine writes. Only declarations: the calls through them, each
//! with its `SAFETY:` argument, are [`runtime`](super::runtime)'s.

use std::ffi::c_char;

type Str = *const c_char;

#[repr(C)]
pub(crate) struct FeatureConfig {
    pub(crate) sample_rate: i32,
    pub(crate) feature_dim: i32,
}

#[repr(C)]
pub(crate) struct TransducerModelConfig {
    encoder: Str,
    decoder: Str,
    joiner: Str,
}

/// The one-path configs: paraformer, nemo_ctc, tdnn, dolphin,
/// zipformer_ctc, wenet_ctc, omnilingual, medasr, fire_red_asr_ctc.
#[repr(C)]
pub(crate) struct OneModelConfig {
    model: Str,
}

#[repr(C)]
pub(crate) struct WhisperModelConfig {
    encoder: Str,
    decoder: Str,
    language: Str,
    task: Str,
    tail_paddings: i32,
    enable_token_timestamps: i32,
    enable_segment_timestamps: i32,
}

#[repr(C)]
pub(crate) struct SenseVoiceModelConfig {
    model: Str,
    language: Str,
    use_itn: i32,
}

#[repr(C)]
pub(crate) struct MoonshineModelConfig {
    pub(crate) preprocessor: Str,
    pub(crate) encoder: Str,
    pub(crate) uncached_decoder: Str,
    pub(crate) cached_decoder: Str,
    pub(crate) merged_decoder: Str,
}

#[repr(C)]
pub(crate) struct FireRedAsrModelConfig {
    encoder: Str,
    decoder: Str,
}

#[repr(C)]
pub(crate) struct CanaryModelConfig {
    encoder: Str,
    decoder: Str,
    src_lang: Str,
    tgt_lang: Str,
    use_pnc: i32,
}

#[repr(C)]
pub(crate) struct FunAsrNanoModelConfig {
    encoder_adaptor: Str,
    llm: Str,
    embedding: Str,
    tokenizer: Str,
    system_prompt: Str,
    user_prompt: Str,
    max_new_tokens: i32,
    temperature: f32,
    top_p: f32,
    seed: i32,
    language: Str,
    itn: i32,
    hotwords: Str,
}

#[repr(C)]
pub(crate) struct Qwen3AsrModelConfig {
    conv_frontend: Str,
    encoder: Str,
    decoder: Str,
    tokenizer: Str,
    max_total_len: i32,
    max_new_tokens: i32,
    temperature: f32,
    top_p: f32,
    seed: i32,
    hotwords: Str,
}

#[repr(C)]
pub(crate) struct CohereTranscribeModelConfig {
    encoder: Str,
    decoder: Str,
    language: Str,
    use_punct: i32,
    use_itn: i32,
}

#[repr(C)]
pub(crate) struct OfflineModelConfig {
    transducer: TransducerModelConfig,
    paraformer: OneModelConfig,
    nemo_ctc: OneModelConfig,
    whisper: WhisperModelConfig,
    tdnn: OneModelConfig,
    pub(crate) tokens: Str,
    pub(crate) num_threads: i32,
    pub(crate) debug: i32,
    pub(crate) provider: Str,
    model_type: Str,
    modeling_unit: Str,
    bpe_vocab: Str,
    telespeech_ctc: Str,
    sense_voice: SenseVoiceModelConfig,
    pub(crate) moonshine: MoonshineModelConfig,
    fire_red_asr: FireRedAsrModelConfig,
    dolphin: OneModelConfig,
    zipformer_ctc: OneModelConfig,
    canary: CanaryModelConfig,
    wenet_ctc: OneModelConfig,
    omnilingual: OneModelConfig,
    medasr: OneModelConfig,
    funasr_nano: FunAsrNanoModelConfig,
    fire_red_asr_ctc: OneModelConfig,
    qwen3_asr: Qwen3AsrModelConfig,
    cohere_transcribe: CohereTranscribeModelConfig,
}

#[repr(C)]
pub(crate) struct LmConfig {
    model: Str,
    scale: f32,
}

#[repr(C)]
pub(crate) struct HomophoneReplacerConfig {
    dict_dir: Str,
    lexicon: Str,
    rule_fsts: Str,
}

#[repr(C)]
pub(crate) struct CtcFstDecoderConfig {
    graph: Str,
    max_active: i32,
}

#[repr(C)]
pub(crate) struct OfflineRecognizerConfig {
    pub(crate) feat_config: FeatureConfig,
    pub(crate) model_config: OfflineModelConfig,
    lm_config: LmConfig,
    pub(crate) decoding_method: Str,
    max_active_paths: i32,
    hotwords_file: Str,
    hotwords_score: f32,
    rule_fsts: Str,
    rule_fars: Str,
    blank_penalty: f32,
    hr: HomophoneReplacerConfig,
    ctc_fst_decoder_config: CtcFstDecoderConfig,
}

/// Only the first field is declared: the struct is only ever read
/// through the library's pointer, and only `text` is read.
#[repr(C)]
pub(crate) struct OfflineRecognizerResultPrefix {
    pub(crate) text: Str,
}

#[repr(C)]
pub(crate) struct SileroVadModelConfig {
    pub(crate) model: Str,
    pub(crate) threshold: f32,
    pub(crate) min_silence_duration: f32,
    pub(crate) min_speech_duration: f32,
    pub(crate) window_size: i32,
    pub(crate) max_speech_duration: f32,
}

#[repr(C)]
pub(crate) struct TenVadModelConfig {
    model: Str,
    threshold: f32,
    min_silence_duration: f32,
    min_speech_duration: f32,
    window_size: i32,
    max_speech_duration: f32,
}

#[repr(C)]
pub(crate) struct VadModelConfig {
    pub(crate) silero_vad: SileroVadModelConfig,
    pub(crate) sample_rate: i32,
    pub(crate) num_threads: i32,
    pub(crate) provider: Str,
    pub(crate) debug: i32,
    ten_vad: TenVadModelConfig,
}

#[repr(C)]
pub(crate) struct SpeechSegment {
    /// Absolute sample index in the VAD's input (int64_t since 2.0).
    pub(crate) start: i64,
    pub(crate) samples: *const f32,
    pub(crate) n: i32,
}

/// Opaque handles.
#[repr(C)]
pub(crate) struct OfflineRecognizer {
    _opaque: [u8; 0],
}
#[repr(C)]
pub(crate) struct OfflineStream {
    _opaque: [u8; 0],
}
#[repr(C)]
pub(crate) struct Vad {
    _opaque: [u8; 0],
}

pub(crate) type GetVersionStr = unsafe extern "C" fn() -> *const c_char;
pub(crate) type CreateOfflineRecognizer =
    unsafe extern "C" fn(*const OfflineRecognizerConfig) -> *const OfflineRecognizer;
pub(crate) type DestroyOfflineRecognizer = unsafe extern "C" fn(*const OfflineRecognizer);
pub(crate) type CreateOfflineStream =
    unsafe extern "C" fn(*const OfflineRecognizer) -> *const OfflineStream;
pub(crate) type DestroyOfflineStream = unsafe extern "C" fn(*const OfflineStream);
pub(crate) type AcceptWaveformOffline =
    unsafe extern "C" fn(*const OfflineStream, i32, *const f32, i32);
pub(crate) type DecodeOfflineStream =
    unsafe extern "C" fn(*const OfflineRecognizer, *const OfflineStream);
pub(crate) type GetOfflineStreamResult =
    unsafe extern "C" fn(*const OfflineStream) -> *const OfflineRecognizerResultPrefix;
pub(crate) type DestroyOfflineRecognizerResult =
    unsafe extern "C" fn(*const OfflineRecognizerResultPrefix);
pub(crate) type CreateVad = unsafe extern "C" fn(*const VadModelConfig, f32) -> *const Vad;
pub(crate) type VadVoid = unsafe extern "C" fn(*const Vad);
pub(crate) type VadAcceptWaveform = unsafe extern "C" fn(*const Vad, *const f32, i32);
pub(crate) type VadFlag = unsafe extern "C" fn(*const Vad) -> i32;
pub(crate) type VadFront = unsafe extern "C" fn(*const Vad) -> *const SpeechSegment;
pub(crate) type DestroySpeechSegment = unsafe extern "C" fn(*const SpeechSegment);

// The layout of sherpa-onnx 2.0.1's structs on x86_64, as `offsetof` and
// `sizeof` gave them for the wheel's c-api.h. A wrong declaration above
// fails the build here, not a session at run time.
#[cfg(target_arch = "x86_64")]
const _: () = {
    use std::mem::{offset_of, size_of};
    assert!(size_of::<OfflineRecognizerConfig>() == 624);
    assert!(size_of::<OfflineModelConfig>() == 504);
    assert!(offset_of!(OfflineRecognizerConfig, model_config) == 8);
    assert!(offset_of!(OfflineRecognizerConfig, lm_config) == 512);
    assert!(offset_of!(OfflineRecognizerConfig, decoding_method) == 528);
    assert!(offset_of!(OfflineRecognizerConfig, hr) == 584);
    assert!(offset_of!(OfflineRecognizerConfig, ctc_fst_decoder_config) == 608);
    assert!(offset_of!(OfflineModelConfig, tokens) == 96);
    assert!(offset_of!(OfflineModelConfig, num_threads) == 104);
    assert!(offset_of!(OfflineModelConfig, provider) == 112);
    assert!(offset_of!(OfflineModelConfig, moonshine) == 176);
    assert!(offset_of!(OfflineModelConfig, funasr_nano) == 312);
    assert!(offset_of!(OfflineModelConfig, qwen3_asr) == 408);
    assert!(offset_of!(OfflineModelConfig, cohere_transcribe) == 472);
    assert!(size_of::<VadModelConfig>() == 88);
    assert!(offset_of!(VadModelConfig, sample_rate) == 32);
    assert!(offset_of!(VadModelConfig, provider) == 40);
    assert!(offset_of!(VadModelConfig, ten_vad) == 56);
    assert!(size_of::<SpeechSegment>() == 24);
    assert!(offset_of!(SpeechSegment, samples) == 8);
    assert!(offset_of!(SpeechSegment, n) == 16);
};
