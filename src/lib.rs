//! sttpipe: streaming speech-to-text as a Unix filter and a systemd daemon,
//! for the Soniox real-time API, with an offline engine.
//!
//! The library is the whole program; `main.rs` only calls [`run`]. These
//! docs are for the people who work on it (`cargo doc
//! --document-private-items`).
//!
//! # Layout
//!
//! One session core serves every front end; the engine sits behind one
//! interface. Every front end turns its input into [`session::SessionInput`]
//! and takes [`event::Event`]s out; every daemon front end starts its
//! sessions through one launcher ([`daemon::launch`]).
//!
//! ```text
//!   stdin · file · FIFO     Unix socket           WebSocket (Soniox protocol)
//!          │                     │                        │
//!   ┌──────▼──────┐      ┌───────▼──────┐         ┌───────▼──────┐
//!   │ input       │      │ daemon::unix │         │ daemon::ws   │
//!   │ (thread)    │      └───────┬──────┘         └───────┬──────┘
//!   └──────┬──────┘              └──── daemon::launch ────┘
//!     filter ── --connect ─▶ client ─▶ (a daemon's Unix socket)
//!          │                             │
//!          │  SessionInput (bounded)     │
//!   ┌──────▼─────────────────────────────▼──────┐
//!   │ session: pacer · replay · upstream ·       │──── Event (bounded) ───▶ output (stdout),
//!   │          timeline · retry                  │     the socket's NDJSON, Soniox responses
//!   └──────┬─────────────────────────────▲──────┘
//!          │ EngineCommand    EngineEvent │
//!   ┌──────▼─────────────────────────────┴──────┐
//!   │ engine: soniox (WebSocket) · local (Moonshine, sherpa-onnx) │──wss──▶ Soniox
//!   └────────────────────────────────────────────┘
//! ```
//!
//! * [`entry`]: parse the command line, dispatch, map the result to an exit
//!   status.
//! * [`cli`]: the flags as typed, in groups; [`cli::SessionArgs`] is the one
//!   session schema (flags, socket header, WebSocket start request).
//! * [`config`]: the resolved configuration, plain data; [`config::resolve`]
//!   checks every value once, for every front end.
//! * [`filter`]: the filter front end: wiring, signals, exit status.
//! * [`input`]: the reader thread: stdin, files, FIFOs (`--follow`), WAV
//!   headers, chunking.
//! * [`client`]: `--connect` and `sttpipe status`, the daemon's clients.
//! * [`protocol`]: the daemon's socket protocol (header line, then audio).
//! * [`daemon`]: `sttpipe serve`: settings, admission and quotas, the
//!   registry, the launcher, the Unix socket and WebSocket front ends.
//! * [`session`]: the core: upstream sessions, pacing, replay, rotation,
//!   fallback, the token timeline, draining.
//! * [`pacer`], [`replay`], [`retry`], [`timer`]: the core's parts that
//!   stand alone: real-time pacing, the replay buffer, backoff, lazy timers.
//! * [`engine`]: the engine interface; [`engine::soniox`], the Soniox
//!   WebSocket client; [`engine::local`], Moonshine on this machine.
//! * [`audio`]: audio formats and what a byte of each is worth.
//! * [`event`]: the output schema; [`output`]: the stdout writer thread.
//! * [`error`]: errors, with one exit status and one `error` event each.
//! * [`logging`]: tracing to stderr or journald; [`systemd`]: sd_notify,
//!   socket activation.
//!
//! Beside it, `crates/soniox-wire` holds the Soniox protocol's vocabulary
//! (start request, responses, error frames) and `crates/soniox-emulator`
//! the emulator the tests, benchmarks and demo run against.
//!
//! Every channel is bounded: a slow consumer slows the session, which slows
//! the reader, which leaves the input unread, which (for a pipe) slows the
//! producer.

// These docs are built with --document-private-items: every module is
// private, and the crate's one public item is `run`.
#![allow(rustdoc::private_intra_doc_links)]

mod audio;
mod cli;
mod client;
mod config;
mod daemon;
mod engine;
mod entry;
mod error;
mod event;
mod filter;
mod input;
mod logging;
mod output;
mod pacer;
mod protocol;
mod replay;
mod retry;
mod session;
mod session_id;
mod systemd;
mod timer;
#[cfg(test)]
#[path = "../tests/util/wer.rs"]
mod wer;

pub use entry::run;

#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;
