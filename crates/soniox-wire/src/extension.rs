//! sttpipe's extension to the responses: a gateway (`sttpipe serve` with
//! its WebSocket endpoint) tells a client that its session waits for an
//! upstream slot, in a response with no tokens that Soniox clients read as
//! an empty one and ignore:
//!
//! ```json
//! {"tokens":[],"sttpipe":{"queued":{"position":2}}}
//! ```
//!
//! sent on entering the queue, when the position changes, and every few
//! seconds while queued (so that a client's half-open watchdog sees a live
//! connection).

use serde::{Deserialize, Serialize};

/// The `sttpipe` member of a response.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extension {
    /// Set while the session waits for an upstream slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queued: Option<Queued>,
}

/// A session waiting in a gateway's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Queued {
    /// 1-based place in the queue.
    pub position: u64,
}

/// The frame that says a session is queued at `position`.
pub fn queued_frame(position: u64) -> String {
    format!(r#"{{"tokens":[],"sttpipe":{{"queued":{{"position":{position}}}}}}}"#)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ServerMessage;

    #[test]
    fn a_queued_frame_reads_back_and_is_an_empty_response_too() {
        let text = queued_frame(3);
        assert_eq!(text, r#"{"tokens":[],"sttpipe":{"queued":{"position":3}}}"#);
        let message: ServerMessage = serde_json::from_str(&text).unwrap();
        assert_eq!(message.queued_position(), Some(3));
        let response = message.into_result().unwrap();
        assert!(response.tokens.is_empty() && !response.finished);
        let plain: ServerMessage = serde_json::from_str(r#"{"tokens":[]}"#).unwrap();
        assert_eq!(plain.queued_position(), None);
        // An extension this version does not know is no queued state.
        let other: ServerMessage =
            serde_json::from_str(r#"{"tokens":[],"sttpipe":{"later":1}}"#).unwrap();
        assert_eq!(other.queued_position(), None);
        let odd: ServerMessage = serde_json::from_str(r#"{"tokens":[],"sttpipe":"x"}"#).unwrap();
        assert_eq!(odd.queued_position(), None);
    }
}
