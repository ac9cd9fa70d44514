//! A local emulator of the Soniox real-time speech-to-text WebSocket API,
//! for offline tests, benchmarks and demos: a test tool, not part of
//! sttpipe.
//!
//! The crate owns everything about the fake server: the deterministic
//! "speech" encoding ([`marker`]), the service's own checks of a start
//! request on top of the shared wire vocabulary (`soniox-wire`), the fake
//! recognizer that turns audio into token responses, and the WebSocket
//! server with its fault knobs ([`Emulator`]).
//!
//! Behaviour follows Soniox's WebSocket API reference: auth by header,
//! subprotocol or start message; start-request validation with the real
//! error strings; non-final then final tokens, `<fin>`, `<end>`, `finished`;
//! idle and start timeouts; and injected faults (abrupt drops, error frames,
//! half-open stalls, rejected connects, concurrency limits by tier, a cap
//! on connections idle ones included) and the live counts at
//! `GET /v1/concurrency-limits` ([`quota`], on [`Emulator::rest_url`]).
//! With a [`TlsIdentity`] in [`EmulatorConfig::tls`] it serves `wss://`
//! instead ([`tls::test_identity`] makes one), so clients' TLS paths
//! (custom CA files, name checks) can be tested too. A [`Probe`] in
//! [`EmulatorConfig::probe`] sees every audio frame and final token with its
//! time, for benchmarks of relays.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use soniox_emulator::{Emulator, EmulatorConfig, marker};
//! let emu = Emulator::start(EmulatorConfig::default()).await?;
//! let audio = marker::encode(&marker::script(3, 500, 200), 3000, 16_000, 1);
//! // connect to emu.url() with key "test-key", send a pcm_s16le start
//! // request and `audio`, then an empty frame …
//! # let _ = audio;
//! emu.shutdown().await;
//! # Ok(())
//! # }
//! ```

pub mod marker;
mod protocol;
pub mod quota;
mod recognizer;
pub mod server;
mod session;
pub mod tls;

pub use quota::LimitTier;
pub use server::{
    AuthMethod, Emulator, EmulatorConfig, EmulatorCounts, Faults, Outcome, Probe, ProbeEvent,
    ProbeKind, SessionRecord, TlsIdentity,
};
