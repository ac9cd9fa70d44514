//! A WAV `fmt ` chunk.
#![no_main]

libfuzzer_sys::fuzz_target!(|body: &[u8]| sttpipe::fuzzing::wav_fmt(body));
