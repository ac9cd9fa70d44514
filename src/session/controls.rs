//! A Soniox client's control messages on their way upstream: each is due
//! once the audio read before it has gone to the upstream session, so that
//! it reaches the service where the client put it in the stream, whatever
//! the session is doing meanwhile (connecting, in an outage, rotating).
//!
//! A message waits here until an upstream session has been sent the audio
//! before it; one that an upstream session was sent is not sent again to
//! the next (as a finalize is not). A keepalive means nothing to a session
//! that has no upstream streaming (the engine keeps its own connections
//! alive), so it is dropped then rather than kept for later.

use std::collections::VecDeque;

use tracing::warn;

use crate::engine::{Control, ControlKind};

/// Control messages kept for an upstream session at most. They pile up
/// only while no upstream session streams; past this a client sends them
/// far faster than any protocol needs, and the newest is dropped (said in
/// the log) rather than holding up the live input behind it.
const MAX_PENDING: usize = 64;

/// The control messages not yet sent, oldest first, each with the stream
/// byte offset it is due at.
#[derive(Debug, Default)]
pub(super) struct Controls {
    pending: VecDeque<(u64, Control)>,
}

impl Controls {
    /// Keeps `control`, due once `at` bytes of the stream went upstream;
    /// `streaming` says whether an upstream session takes commands now.
    pub(super) fn push(&mut self, at: u64, control: Control, streaming: bool) {
        if control.kind == ControlKind::Keepalive && !streaming {
            return;
        }
        if self.pending.len() >= MAX_PENDING {
            warn!(control = %control.text, "too many control messages wait for an upstream session; dropped");
            return;
        }
        self.pending.push_back((at, control));
    }

    /// Whether any message waits.
    pub(super) fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The oldest message, if an upstream session that has been sent the
    /// stream up to `sent` is due it.
    pub(super) fn due(&mut self, sent: u64) -> Option<Control> {
        match self.pending.front() {
            Some((at, _)) if *at <= sent => self.pending.pop_front().map(|(_, control)| control),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use tokio::sync::mpsc;
    use tokio::time::sleep;
    use tokio_util::sync::CancellationToken;

    use super::*;
    use crate::engine::scripted::{Attempt, ScriptedEngine, speech};
    use crate::engine::{Engine, SessionEngines};
    use crate::event::Event;
    use crate::session::{SessionInput, run};

    /// pcm_s16le, 16 kHz, mono.
    const BYTES_PER_MS: usize = 32;

    fn control(text: &str, kind: ControlKind) -> Control {
        Control {
            text: text.to_owned(),
            kind,
        }
    }

    #[test]
    fn due_in_order_once_their_audio_went_up() {
        let mut controls = Controls::default();
        let finalize = control(r#"{"type":"finalize"}"#, ControlKind::Finalize);
        let other = control(r#"{"type":"x"}"#, ControlKind::Other);
        controls.push(100, finalize.clone(), false);
        controls.push(100, control("{}", ControlKind::Keepalive), false);
        controls.push(200, other.clone(), true);
        assert_eq!(controls.due(99), None);
        assert_eq!(controls.due(100), Some(finalize));
        assert_eq!(controls.due(150), None, "the keepalive was dropped");
        assert_eq!(controls.due(300), Some(other));
        assert!(controls.is_empty());
        for _ in 0..MAX_PENDING + 1 {
            controls.push(0, control("{}", ControlKind::Other), false);
        }
        assert_eq!(controls.pending.len(), MAX_PENDING, "bounded");
    }

    /// Through the session core, with the first connection refused: each
    /// message reaches the upstream session after exactly the audio read
    /// before it, the finalize makes that audio final, and a keepalive sent
    /// while no upstream streams is dropped.
    #[tokio::test(start_paused = true)]
    async fn controls_follow_the_audio_before_them_upstream() {
        let engine = ScriptedEngine::new([Attempt::Refuse], Attempt::Serve).lag_ms(5_000);
        let config = crate::session::tests::config();
        let (audio, _) = speech(4_000, 500, 300);
        let (input_tx, input) = mpsc::channel(16);
        let (events_tx, mut events) = mpsc::channel(4096);
        let engines = SessionEngines {
            engine: Engine::Scripted(engine.clone()),
            fallback: None,
        };
        let finalize = r#"{"type":"finalize","trailing_silence_ms":300}"#;
        let feeder = async move {
            let send = |message| input_tx.send(message);
            let chunk = |ms: usize| {
                Bytes::copy_from_slice(&audio[ms * BYTES_PER_MS..(ms + 100) * BYTES_PER_MS])
            };
            let keepalive = control(r#"{"type":"keepalive"}"#, ControlKind::Keepalive);
            // Before any upstream session: the keepalive is dropped, the
            // finalize waits for one.
            send(SessionInput::Control(keepalive.clone()))
                .await
                .unwrap();
            for ms in (0..1_400).step_by(100) {
                send(SessionInput::Audio(chunk(ms))).await.unwrap();
            }
            send(SessionInput::Control(control(
                finalize,
                ControlKind::Finalize,
            )))
            .await
            .unwrap();
            for ms in (1_400..3_000).step_by(100) {
                send(SessionInput::Audio(chunk(ms))).await.unwrap();
                sleep(Duration::from_millis(100)).await;
            }
            let unknown = control(r#"{"type":"agent_text","text":"hi"}"#, ControlKind::Other);
            send(SessionInput::Control(unknown)).await.unwrap();
            send(SessionInput::Control(keepalive)).await.unwrap();
            for ms in (3_000..4_000).step_by(100) {
                send(SessionInput::Audio(chunk(ms))).await.unwrap();
            }
        };
        let collector = async {
            let mut all = Vec::new();
            while let Some(event) = events.recv().await {
                all.push(event);
            }
            all
        };
        let stop = CancellationToken::new();
        let session = run(engines, None, &config, "t".into(), input, events_tx, stop);
        let (result, (), all) = tokio::time::timeout(Duration::from_secs(3_600), async {
            tokio::join!(session, feeder, collector)
        })
        .await
        .expect("the session ended");
        result.expect("the session succeeds");
        let log = engine.log();
        assert_eq!(log.attempts.len(), 2, "the first connection was refused");
        assert_eq!(
            log.sessions[0].controls,
            [
                (1_400, finalize.to_owned()),
                (3_000, r#"{"type":"agent_text","text":"hi"}"#.to_owned()),
                (3_000, r#"{"type":"keepalive"}"#.to_owned()),
            ]
        );
        let finalized = all
            .iter()
            .find(|e| matches!(e, Event::Finalized { .. }))
            .expect("the finalize was acted on");
        assert!(
            matches!(
                finalized,
                Event::Finalized {
                    end_ms: Some(1_300),
                    ..
                }
            ),
            "{finalized:?}"
        );
    }
}
