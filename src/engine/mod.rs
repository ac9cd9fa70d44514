//! The engine interface: one upstream recognition session as a pair of
//! bounded channels.
//!
//! [`Engine::open`] starts an upstream session and returns an [`EngineLink`]:
//! the session core sends [`EngineCommand`]s (audio, finalize, end of audio)
//! and receives [`EngineEvent`]s (tokens and progress, finished, failure).
//! Each engine runs its own task behind the link, so the session core never
//! sees a socket, and engine-specific chores (Soniox's keepalives) stay in
//! the engine. Dropping the command sender without [`EngineCommand::EndOfAudio`]
//! abandons the upstream session.
//!
//! Two engines: [`soniox`], the service, and [`local`], Moonshine on this
//! machine.

pub mod local;
pub mod rate;
pub mod soniox;

pub use rate::RateLimiter;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::audio::AudioFormat;
use crate::config::RecognitionOptions;
use crate::error::Result;
use crate::event::Token;

/// Commands queued towards the engine. Audio is ~100 ms a command, so this
/// bound is about 1.6 s of audio before the session core waits.
pub const COMMAND_QUEUE: usize = 16;
/// Engine events queued towards the session core.
pub const EVENT_QUEUE: usize = 64;

/// What the session core asks of an upstream session.
#[derive(Debug)]
pub enum EngineCommand {
    /// Audio in the session's format, whole frames for raw formats.
    Audio(Bytes),
    /// Make everything sent so far final (`<fin>` follows).
    Finalize,
    /// No more audio: finish, send the last finals, then [`EngineEvent::Finished`].
    EndOfAudio,
}

/// One update from the engine: Soniox's response shape.
#[derive(Debug, Clone, Default)]
pub struct Update {
    /// Newly final tokens first, then the complete current non-final set.
    pub tokens: Vec<Token>,
    /// Audio processed into final tokens, ms from this upstream session's start.
    pub final_audio_proc_ms: u64,
    /// Audio processed into final and non-final tokens, ms.
    pub total_audio_proc_ms: u64,
}

/// What an upstream session reports.
#[derive(Debug)]
pub enum EngineEvent {
    /// Tokens and progress.
    Update(Update),
    /// The session finished after end of audio; its last tokens are inside.
    /// Nothing follows.
    Finished(Update),
    /// The session failed; nothing follows.
    Failed(crate::error::Error),
}

/// The session core's end of one upstream session.
#[derive(Debug)]
pub struct EngineLink {
    /// Commands to the engine task.
    pub commands: mpsc::Sender<EngineCommand>,
    /// Events from the engine task; closes after `Finished` or `Failed`.
    pub events: mpsc::Receiver<EngineEvent>,
}

/// A recognition engine.
#[derive(Debug, Clone)]
pub enum Engine {
    /// Soniox real-time over WebSocket.
    Soniox(soniox::SonioxEngine),
    /// Moonshine through sherpa-onnx, on this machine: no key, no network.
    Local(local::LocalEngine),
}

impl Engine {
    /// The model a session with these options runs: Soniox's by name, or
    /// the local engine's (`moonshine-tiny-en`), for the `start` event.
    pub fn model_name(&self, recognition: &RecognitionOptions) -> String {
        match self {
            Engine::Soniox(_) => recognition.model.clone(),
            Engine::Local(engine) => format!("moonshine-{}", engine.model().name()),
        }
    }

    /// Opens an upstream session; returns once it accepts audio.
    pub async fn open(
        &self,
        recognition: &RecognitionOptions,
        audio: &AudioFormat,
    ) -> Result<EngineLink> {
        match self {
            Engine::Soniox(engine) => engine.open(recognition, audio).await,
            Engine::Local(engine) => engine.open(recognition, audio).await,
        }
    }
}
