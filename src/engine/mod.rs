//! The engine interface: one upstream recognition session as a pair of
//! bounded channels.
//!
//! [`Engine::open`] starts an upstream session and returns an [`EngineLink`]:
//! the session core sends [`EngineCommand`]s (audio, finalize, a client's
//! control message, end of audio)
//! and receives [`EngineEvent`]s (tokens and progress, finished, failure).
//! Each engine runs its own task behind the link, so the session core never
//! sees a socket, and engine-specific chores (Soniox's keepalives) stay in
//! the engine. Dropping the command sender without [`EngineCommand::EndOfAudio`]
//! abandons the upstream session.
//!
//! Two engines: [`soniox`], the service, and [`local`], Moonshine on this
//! machine. Unit tests have a third, `scripted`: upstream sessions that
//! follow a script, for the session core.

pub(crate) mod install;
pub(crate) mod local;
pub(crate) mod quota;
pub(crate) mod rate;
#[cfg(test)]
pub(crate) mod scripted;
pub(crate) mod soniox;

pub(crate) use rate::RateLimiter;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::audio::AudioFormat;
use crate::config::RecognitionOptions;
use crate::error::Result;
use crate::event::Token;

/// Commands queued towards the engine. Audio is ~100 ms a command, so this
/// bound is about 1.6 s of audio before the session core waits.
pub(crate) const COMMAND_QUEUE: usize = 16;
/// Engine events queued towards the session core.
pub(crate) const EVENT_QUEUE: usize = 64;

/// What the session core asks of an upstream session.
#[derive(Debug)]
pub(crate) enum EngineCommand {
    /// Audio in the session's format, whole frames for raw formats.
    Audio(Bytes),
    /// Make everything sent so far final (`<fin>` follows).
    Finalize,
    /// A Soniox client's control message, in order with the audio: sent on
    /// as it came by the Soniox engine; the local engine acts on a
    /// finalize and ignores the rest.
    Control(Control),
    /// No more audio: finish, send the last finals, then [`EngineEvent::Finished`].
    EndOfAudio,
}

/// A control message a Soniox client sent after its start request
/// (`finalize` with its options, `keepalive`, or a type sttpipe does not
/// know), kept as it came so that options sttpipe does not read still
/// reach the service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Control {
    /// The message's JSON text, unchanged.
    pub(crate) text: String,
    /// Its type, as far as sttpipe acts on it.
    pub(crate) kind: ControlKind,
}

/// The types of control message sttpipe acts on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ControlKind {
    /// `finalize`: everything so far becomes final (`<fin>` follows).
    Finalize,
    /// `keepalive`: means nothing without an upstream session.
    Keepalive,
    /// Any other type: for the service to interpret.
    Other,
}

/// One update from the engine: Soniox's response shape.
#[derive(Debug, Clone, Default)]
pub(crate) struct Update {
    /// Newly final tokens first, then the complete current non-final set.
    pub(crate) tokens: Vec<Token>,
    /// Audio processed into final tokens, ms from this upstream session's start.
    pub(crate) final_audio_proc_ms: u64,
    /// Audio processed into final and non-final tokens, ms.
    pub(crate) total_audio_proc_ms: u64,
}

/// What an upstream session reports.
#[derive(Debug)]
pub(crate) enum EngineEvent {
    /// Tokens and progress.
    Update(Update),
    /// The session finished after end of audio; its last tokens are inside.
    /// Nothing follows.
    Finished(Update),
    /// The upstream is a gateway whose queue the session waits in, at this
    /// 1-based position: no answer yet, no failure either.
    Queued(u64),
    /// The session failed; nothing follows.
    Failed(crate::error::Error),
}

/// The session core's end of one upstream session.
#[derive(Debug)]
pub(crate) struct EngineLink {
    /// Commands to the engine task.
    pub(crate) commands: mpsc::Sender<EngineCommand>,
    /// Events from the engine task; closes after `Finished` or `Failed`.
    pub(crate) events: mpsc::Receiver<EngineEvent>,
    /// The service URL it is connected to (`None`: not a network engine).
    pub(crate) url: Option<String>,
}

/// A recognition engine.
#[derive(Debug, Clone)]
pub(crate) enum Engine {
    /// Soniox real-time over WebSocket.
    Soniox(soniox::SonioxEngine),
    /// Moonshine through sherpa-onnx, on this machine: no key, no network.
    Local(local::LocalEngine),
    /// Upstream sessions that follow a script (unit tests).
    #[cfg(test)]
    Scripted(scripted::ScriptedEngine),
}

impl Engine {
    /// The model a session with these options runs: Soniox's by name, or
    /// the local engine's (`moonshine-tiny-en`), for the `start` event.
    pub(crate) fn model_name(&self, recognition: &RecognitionOptions) -> String {
        match self {
            Engine::Soniox(_) => recognition.model.clone(),
            Engine::Local(engine) => format!("moonshine-{}", engine.model().name()),
            #[cfg(test)]
            Engine::Scripted(_) => "scripted".to_owned(),
        }
    }

    /// Opens an upstream session; returns once it accepts audio.
    pub(crate) async fn open(
        &self,
        recognition: &RecognitionOptions,
        audio: &AudioFormat,
    ) -> Result<EngineLink> {
        match self {
            Engine::Soniox(engine) => engine.open(recognition, audio).await,
            Engine::Local(engine) => engine.open(recognition, audio).await,
            #[cfg(test)]
            Engine::Scripted(engine) => engine.open(audio).await,
        }
    }
}

/// What one session runs on: the engine it starts on, and the one it goes
/// on with if Soniox fails for good.
#[derive(Debug, Clone)]
pub(crate) struct SessionEngines {
    /// The engine it starts on.
    pub(crate) engine: Engine,
    /// The engine it goes on with if the first fails for good.
    pub(crate) fallback: Option<Engine>,
}

impl SessionEngines {
    /// Whether the session starts on this machine (so it needs no real-time
    /// pacing: the local engine takes audio as fast as it can decode it).
    pub(crate) fn is_local(&self) -> bool {
        matches!(self.engine, Engine::Local(_))
    }
}
