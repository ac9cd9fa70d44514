//! The WebSocket endpoint's start request: read and resolved as a client's.
#![no_main]

libfuzzer_sys::fuzz_target!(|text: &[u8]| sttpipe::fuzzing::start_request(text));
