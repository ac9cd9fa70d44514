//! The WebSocket endpoint's client tokens (`--ws-token-file`): who may
//! stream, under which name, and how many sessions each name may have.
//!
//! One client a line, `NAME:TOKEN` or `NAME:TOKEN:max=N` (at most N
//! sessions at once under that name, queued ones included); blank lines and
//! lines starting with `#` are skipped. A line without a colon is the older
//! single-token form, a token named `default`. Names are short and plain
//! (letters, digits, `.`, `_`, `-`), since they go into logs, `status` and
//! Soniox's `client_reference_id`; a token may hold anything but a colon
//! and white space at its ends.
//!
//! A presented key is compared with every token, each in time that depends
//! on the token's length only ([`key_matches`]), so neither which token is
//! near nor how much of one matches shows in the answer's timing.

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;

use crate::error::{Error, Result};

/// Longest client name.
const MAX_NAME: usize = 64;
/// The name of a token given in the single-token form.
pub(crate) const DEFAULT_NAME: &str = "default";

/// One client's token.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct ClientToken {
    /// The client's name.
    pub(crate) name: Arc<str>,
    token: String,
    /// Sessions the name may have at once (0: no limit of its own).
    pub(crate) max_sessions: usize,
}

impl std::fmt::Debug for ClientToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "ClientToken({}, <redacted>, max {})",
            self.name, self.max_sessions
        )
    }
}

/// Every client token of the endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Tokens {
    clients: Vec<ClientToken>,
}

impl Tokens {
    /// Reads the token file at `path`.
    pub(crate) fn read(path: &Path) -> Result<Tokens> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!(
                "cannot read the WebSocket token file {}: {e}",
                path.display()
            ))
        })?;
        Tokens::parse(&text).map_err(|message| {
            Error::Config(format!(
                "the WebSocket token file {}: {message}",
                path.display()
            ))
        })
    }

    /// Parses a token file's text (see the module docs); the error names the
    /// line, never its token.
    pub(crate) fn parse(text: &str) -> std::result::Result<Tokens, String> {
        let mut clients = Vec::new();
        let mut names = HashSet::new();
        let mut tokens = HashSet::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let at = |what: &str| format!("line {}: {what}", n + 1);
            let mut parts = line.splitn(3, ':');
            let (name, token, options) = match (parts.next(), parts.next(), parts.next()) {
                (Some(token), None, _) => (DEFAULT_NAME, token, None),
                (Some(name), Some(token), options) => (name.trim(), token.trim(), options),
                (None, _, _) => continue,
            };
            if name.is_empty()
                || name.len() > MAX_NAME
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
            {
                return Err(at(&format!(
                    "the name must be 1 to {MAX_NAME} letters, digits, '.', '_' or '-'"
                )));
            }
            if token.is_empty() {
                return Err(at("the token is empty"));
            }
            let max_sessions = match options.map(str::trim) {
                None => 0,
                Some(option) => option
                    .strip_prefix("max=")
                    .and_then(|n| n.trim().parse::<usize>().ok())
                    .ok_or_else(|| at("after the token, only max=N (sessions at once) is known"))?,
            };
            if !names.insert(name.to_owned()) {
                return Err(at(&format!("the name {name} is given twice")));
            }
            if !tokens.insert(token.to_owned()) {
                return Err(at("this token is also another client's"));
            }
            clients.push(ClientToken {
                name: name.into(),
                token: token.to_owned(),
                max_sessions,
            });
        }
        if clients.is_empty() {
            return Err("it holds no token".into());
        }
        Ok(Tokens { clients })
    }

    /// The client whose token `presented` is, if any. Every token is
    /// compared, whichever matches.
    pub(crate) fn find(&self, presented: &str) -> Option<&ClientToken> {
        let mut found = None;
        for client in &self.clients {
            if key_matches(presented, &client.token) {
                found = Some(client);
            }
        }
        found
    }

    /// The clients' names, in the file's order.
    pub(crate) fn names(&self) -> impl Iterator<Item = &str> {
        self.clients.iter().map(|c| &*c.name)
    }
}

/// Compares a presented key with a token in time that depends on the
/// token's length only, not on where they differ. Written here rather than
/// taken from a crate: it is these few lines, and what matters (no early
/// exit, no branch on the bytes) is plain to see; the compiler is kept
/// from reasoning about the result by [`std::hint::black_box`].
pub(crate) fn key_matches(presented: &str, token: &str) -> bool {
    let (a, b) = (presented.as_bytes(), token.as_bytes());
    let mut diff = a.len() ^ b.len();
    for (i, byte) in b.iter().enumerate() {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ byte);
        diff = std::hint::black_box(diff);
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_tokens_and_limits() {
        let tokens = Tokens::parse(
            "# the call center\n\ncallcenter:s3cret:max=4\n  ha-1 : other  \nweb.farm_2:x: max=0 \n",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let found = tokens.find("s3cret").expect("callcenter's token");
        assert_eq!((&*found.name, found.max_sessions), ("callcenter", 4));
        assert_eq!(tokens.find("other").map(|c| &*c.name), Some("ha-1"));
        assert!(tokens.find("s3cre").is_none() && tokens.find("").is_none());
        assert!(tokens.find("callcenter:s3cret").is_none());
        assert_eq!(
            tokens.names().collect::<Vec<_>>(),
            ["callcenter", "ha-1", "web.farm_2"],
            "{tokens:?}"
        );
        assert!(!format!("{tokens:?}").contains("s3cret"));
    }

    #[test]
    fn the_single_token_form_is_named_default() {
        let tokens = Tokens::parse("  just-a-token \n").unwrap();
        let found = tokens.find("just-a-token").expect("the token");
        assert_eq!((&*found.name, found.max_sessions), (DEFAULT_NAME, 0));
    }

    #[test]
    fn bad_files_say_which_line() {
        for (text, line) in [
            ("", None),
            ("# only a comment\n", None),
            ("a:\n", Some(1)),
            (":token\n", Some(1)),
            ("ok:1\nbad name:2\n", Some(2)),
            ("a:1\na:2\n", Some(2)),
            ("a:1\nb:1\n", Some(2)),
            ("a:1:max=many\n", Some(1)),
            ("a:1:min=1\n", Some(1)),
            (&format!("{}:1\n", "n".repeat(65)), Some(1)),
            ("one\ntwo\n", Some(2)),
        ] {
            let err = Tokens::parse(text).expect_err(text);
            match line {
                Some(n) => assert!(err.starts_with(&format!("line {n}:")), "{text:?}: {err}"),
                None => assert_eq!(err, "it holds no token"),
            }
        }
    }

    #[test]
    fn keys_match_only_whole() {
        assert!(key_matches("secret", "secret"));
        assert!(!key_matches("secre", "secret"));
        assert!(!key_matches("secret!", "secret"));
        assert!(!key_matches("", "secret"));
    }
}
