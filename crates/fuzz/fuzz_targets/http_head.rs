//! The WebSocket endpoint's HTTP request head: parsed, routed, checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|head: &[u8]| sttpipe::fuzzing::http_head(head));
