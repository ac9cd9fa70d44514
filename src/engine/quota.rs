//! What a refusal by Soniox's quotas says: which limit refused (the tier),
//! and the daemon's count of refusals by tier.
//!
//! Soniox has two concurrency limits: streams (the organization's limit is
//! checked first, then the project's) and connections, idle ones included
//! (`max_concurrent_connections_reached`). How a 429 names the stream
//! tier is not documented, so [`Tier::of`] reads the `error_type` first,
//! then the message, and calls anything else (a bare 429, an HTTP 429 at
//! the upgrade) unknown.

use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{Value, json};

use crate::error::Error;

/// Which limit refused a session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// The organization's concurrent streams.
    Organization,
    /// The project's concurrent streams.
    Project,
    /// Concurrent connections, idle ones included.
    Connections,
    /// A 429 that does not say.
    Unknown,
}

impl Tier {
    /// The tier of a 429; `None` for any other error.
    pub(crate) fn of(err: &Error) -> Option<Tier> {
        let Error::Service {
            code: 429,
            error_type,
            message,
        } = err
        else {
            return None;
        };
        let error_type = error_type.as_deref().unwrap_or("");
        let message = message.to_ascii_lowercase();
        let names = |word: &str| error_type.contains(word) || message.contains(word);
        Some(if names("connection") {
            Tier::Connections
        } else if names("organization") {
            Tier::Organization
        } else if names("project") {
            Tier::Project
        } else {
            Tier::Unknown
        })
    }

    /// Its name in `status` and the logs.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Tier::Organization => "organization",
            Tier::Project => "project",
            Tier::Connections => "connections",
            Tier::Unknown => "unknown",
        }
    }
}

/// 429s seen by tier, over the daemon's life.
#[derive(Debug, Default)]
pub(crate) struct Rejections {
    organization: AtomicU64,
    project: AtomicU64,
    connections: AtomicU64,
    unknown: AtomicU64,
}

impl Rejections {
    /// Counts one refusal.
    pub(crate) fn count(&self, tier: Tier) {
        let counter = match tier {
            Tier::Organization => &self.organization,
            Tier::Project => &self.project,
            Tier::Connections => &self.connections,
            Tier::Unknown => &self.unknown,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// `{"organization": n, "project": n, "connections": n, "unknown": n}`.
    pub(crate) fn to_json(&self) -> Value {
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        json!({
            "organization": get(&self.organization),
            "project": get(&self.project),
            "connections": get(&self.connections),
            "unknown": get(&self.unknown),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(error_type: Option<&str>, message: &str) -> Error {
        Error::Service {
            code: 429,
            error_type: error_type.map(str::to_owned),
            message: message.to_owned(),
        }
    }

    #[test]
    fn the_tier_comes_from_the_type_then_the_message() {
        let cases = [
            (
                refusal(Some("organization_concurrency_limit_exceeded"), "x"),
                Tier::Organization,
            ),
            (
                refusal(Some("project_concurrency_limit_exceeded"), "x"),
                Tier::Project,
            ),
            (
                refusal(
                    Some("limit_exceeded"),
                    "Your project has exceeded max number of concurrent requests.",
                ),
                Tier::Project,
            ),
            (
                refusal(
                    Some("limit_exceeded"),
                    "Your Organization has exceeded max number of concurrent requests.",
                ),
                Tier::Organization,
            ),
            (
                refusal(Some("max_concurrent_connections_reached"), "x"),
                Tier::Connections,
            ),
            (
                refusal(Some("limit_exceeded"), "Too many concurrent requests."),
                Tier::Unknown,
            ),
            (
                refusal(None, "the WebSocket upgrade was refused"),
                Tier::Unknown,
            ),
        ];
        for (err, tier) in cases {
            assert_eq!(Tier::of(&err), Some(tier), "{err:?}");
        }
        let other = Error::Service {
            code: 503,
            error_type: None,
            message: "project".into(),
        };
        assert_eq!(Tier::of(&other), None);
    }

    #[test]
    fn rejections_count_by_tier() {
        let rejections = Rejections::default();
        rejections.count(Tier::Project);
        rejections.count(Tier::Project);
        rejections.count(Tier::Connections);
        assert_eq!(
            rejections.to_json(),
            json!({"organization": 0, "project": 2, "connections": 1, "unknown": 0})
        );
    }
}
