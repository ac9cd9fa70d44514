//! The daemon's socket header: parsed and resolved as a client's.
#![no_main]

libfuzzer_sys::fuzz_target!(|line: &[u8]| sttpipe::fuzzing::socket_header(line));
