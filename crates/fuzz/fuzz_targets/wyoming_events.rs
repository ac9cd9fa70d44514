//! A Wyoming client's byte stream: framed, read and mapped as the daemon's
//! Wyoming front end does.
#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| sttpipe::fuzzing::wyoming_events(bytes));
