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
mod systemd;
mod timer;
#[cfg(test)]
#[path = "../tests/util/wer.rs"]
mod wer;

pub use entry::run;
