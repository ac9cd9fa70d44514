//! sttpipe: streaming speech-to-text as a Unix filter, for the Soniox
//! real-time API.
//!
//! # Layout
//!
//! One session core serves every front end; the engine sits behind one
//! interface.
//!
//! ```text
//!  stdin / file / FIFO            session core                    engine
//!  ┌────────────┐  InputEvent  ┌──────────────┐ EngineCommand ┌──────────────┐  wss
//!  │ input      │─────────────▶│ session      │──────────────▶│ engine::     │◀────▶ Soniox
//!  │ (thread)   │  (bounded)   │ pacer        │◀──────────────│ soniox       │
//!  └────────────┘   filter     │              │  EngineEvent  └──────────────┘
//!                   (signals)  └──────┬───────┘
//!                                     │ Event (bounded)
//!                              ┌──────▼───────┐
//!                              │ output       │──▶ stdout (NDJSON or text)
//!                              │ (thread)     │
//!                              └──────────────┘
//! ```
//!
//! * [`cli`] and [`config`]: the command line as typed, then resolved and checked.
//! * [`input`]: the reader thread: stdin, files, FIFOs (`--follow`), WAV headers.
//! * [`session`]: the core: upstream sessions, pacing, token bookkeeping, draining.
//! * [`pacer`]: real-time pacing of input that comes faster.
//! * [`engine`]: the engine interface; [`engine::soniox`] the WebSocket client.
//! * [`event`]: the output schema; [`output`]: the stdout writer thread.
//! * [`filter`]: the filter front end: wiring, signals, exit status.
//! * [`error`]: errors, exit statuses, `error` events.
//! * [`emulator`]: a Soniox server emulator for tests, benchmarks and demos.
//! * `soniox_wire`: the protocol vocabulary the emulator and the daemon's
//!   Soniox endpoint share (error catalogue and frames, start-request fields).
//!
//! Every channel is bounded: a slow consumer slows the session, which slows
//! the reader, which leaves the input unread, which (for a pipe) slows the
//! producer.

// Test code shared with the integration tests names the crate `sttpipe::`.
#[cfg(test)]
extern crate self as sttpipe;

pub mod audio;
pub mod cli;
pub mod client;
pub mod config;
pub mod daemon;
pub mod emulator;
pub mod engine;
pub mod error;
pub mod event;
pub mod filter;
pub mod input;
pub mod logging;
pub mod output;
pub mod pacer;
pub mod replay;
pub mod retry;
pub mod session;
pub mod soniox_wire;
pub mod systemd;
pub mod timer;
