//! Integration tests: the built `sttpipe` binary against the in-process
//! Soniox emulator, run as a user would run it.

// One test crate: `pub` in its modules only shares fixtures between them.
#![allow(unreachable_pub)]

// Shared fixtures: running the binary, marker audio, assertions.
mod util;

// The filter end to end: words, timestamps, pacing, flags, keys, exit statuses.
mod filter;
// Input edge cases: empty input, odd byte counts, WAV headers, FIFOs.
mod input;
// Signals and a closed stdout.
mod signals;
// Faults: reconnect and replay, rotation, half-open, overflow, slow consumer.
mod reliability;
// TLS with a private CA, and certificate errors.
mod tls;
// The daemon: socket protocol, multiplexing, quotas, access, shutdown, notify.
mod daemon;
// The daemon behind a smaller upstream limit than it was told.
mod quota;
// The Soniox-compatible WebSocket endpoint.
mod proxy;
// What the WebSocket endpoint passes on unchanged: start fields, controls.
mod passthrough;
// The browser page in headless Chromium, with a fake microphone.
mod browser;
// The official Soniox Python SDK against the WebSocket endpoint.
mod sdk;
// The gateway: TLS, named tokens, /health and the queued extension.
mod gateway;
// The offline engine on real speech.
mod local;
// `sttpipe engine install|list` against a wheel server on loopback.
mod engine_install;
// The Wyoming front end, through the official wyoming package's client.
mod wyoming;
// Media files and FILE operands: every decoded format, one timeline, `-`.
mod media;
// Live captions: SRT and WebVTT, the translation track, text timestamps.
mod captions;
// What an adversarial pass found, one test per finding.
mod hardening;
// The README's command lines against the built binary's --help; the man page against --help.
mod readme;
// More than one host: failover over several URLs, a gateway's queue, edges
// behind HAProxy in front of two gateways.
mod lb;
