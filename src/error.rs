//! Errors, each with one exit status and one NDJSON `error` event.
//!
//! Exit statuses follow sysexits(3), so systemd units and scripts can key on
//! them (`RestartPreventExitStatus=64 78`). The mapping lives in one place,
//! [`Error::exit_code`], and the man page's EXIT STATUS section mirrors it.

use std::io;
use std::path::PathBuf;

/// Successful exit.
pub(crate) const EXIT_OK: u8 = 0;
/// Bad flags or arguments (EX_USAGE).
pub(crate) const EXIT_USAGE: u8 = 64;
/// Input data unusable: a bad WAV header, audio the service cannot decode,
/// a download that is not the file pinned (EX_DATAERR).
pub(crate) const EXIT_DATAERR: u8 = 65;
/// Input file or FIFO missing or unreadable (EX_NOINPUT).
pub(crate) const EXIT_NOINPUT: u8 = 66;
/// The service could not be reached or refuses this account (EX_UNAVAILABLE).
pub(crate) const EXIT_UNAVAILABLE: u8 = 69;
/// A bug in sttpipe (EX_SOFTWARE).
pub(crate) const EXIT_SOFTWARE: u8 = 70;
/// Writing the output failed, or the engine's files (EX_IOERR).
pub(crate) const EXIT_IOERR: u8 = 74;
/// A temporary failure worth retrying: timeouts, rate limits, 5xx (EX_TEMPFAIL).
pub(crate) const EXIT_TEMPFAIL: u8 = 75;
/// The API key was rejected (EX_NOPERM).
pub(crate) const EXIT_NOPERM: u8 = 77;
/// A key or configuration is missing or invalid (EX_CONFIG).
pub(crate) const EXIT_CONFIG: u8 = 78;

/// Everything that can end a session early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Error {
    /// The command line or session options make no sense.
    #[error("{0}")]
    Usage(String),
    /// No API key, an unreadable key file, a bad CA file.
    #[error("{0}")]
    Config(String),
    /// The input cannot be opened.
    #[error("cannot open {}: {source}", path.display())]
    InputMissing {
        /// The path the user gave.
        path: PathBuf,
        /// Why opening failed.
        #[source]
        source: io::Error,
    },
    /// Reading the input failed after it was opened.
    #[error("reading input: {0}")]
    InputRead(#[source] io::Error),
    /// The input is not audio in the format declared.
    #[error("{0}")]
    BadAudio(String),
    /// The service could not be reached (DNS, TCP, TLS, WebSocket handshake).
    #[error("cannot reach {url}: {reason}")]
    Connect {
        /// The endpoint, without credentials.
        url: String,
        /// What went wrong, with its cause chain.
        reason: String,
        /// Whether the failure may pass (a refused or reset connection) rather
        /// than a misconfiguration (bad URL, certificate).
        transient: bool,
    },
    /// The connection broke during a session.
    #[error("connection lost: {0}")]
    Disconnected(String),
    /// The service answered with an error frame.
    #[error("{}", service_message(*code, message))]
    Service {
        /// Soniox's `error_code`, an HTTP-style status.
        code: u16,
        /// Soniox's `error_type`, when sent.
        error_type: Option<String>,
        /// Soniox's `error_message`.
        message: String,
    },
    /// The connection went silent while an answer was owed (half-open).
    #[error("connection stalled: {0}")]
    Stalled(String),
    /// The service sent something that breaks the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// Writing the output failed (other than a closed pipe, which is a quiet stop).
    #[error("writing output: {0}")]
    Output(#[source] io::Error),
    /// Reconnecting failed for longer than the retry budget.
    #[error("gave up after {budget_secs} s of failed reconnects: {last}")]
    RetryBudgetSpent {
        /// The budget, in seconds.
        budget_secs: u64,
        /// The last failure.
        last: Box<Error>,
        /// Whether the service answered at all during the stream.
        reached: bool,
    },
    /// The daemon refused this client (its uid or gid is not allowed).
    #[error("{0}")]
    Forbidden(String),
    /// The daemon has no slot and no room in its queue.
    #[error("{0}")]
    Busy(String),
    /// The daemon reported an error (already given out as its `error` event).
    #[error("{message}")]
    Remote {
        /// The event's `code`.
        code: String,
        /// The event's `message`.
        message: String,
        /// The event's `exit_code`.
        exit_code: u8,
    },
    /// A download is not the file pinned (`sttpipe engine install`).
    #[error("{0}")]
    Checksum(String),
    /// Creating, writing or renaming files failed (`sttpipe engine install`).
    #[error("{0}")]
    Files(String),
    /// An invariant broke: a bug.
    #[error("internal error: {0}")]
    Internal(String),
}

/// A message for a Soniox error frame that says what it means to the user.
fn service_message(code: u16, message: &str) -> String {
    let meaning = match code {
        400 => "the service rejected the request",
        401 => "the API key was rejected",
        402 => "the Soniox account is out of funds or budget",
        403 => "the API key is not allowed to do this",
        408 => "the service timed out waiting",
        429 => "rate or concurrency limit reached",
        500 => "the service had an internal error",
        503 => "the service cannot continue this stream",
        _ => "the service returned an error",
    };
    format!("{meaning} ({code}): {message}")
}

impl Error {
    /// The process exit status for this error (sysexits).
    pub(crate) fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Config(_) => EXIT_CONFIG,
            Error::InputMissing { .. } => EXIT_NOINPUT,
            Error::InputRead(_) => EXIT_NOINPUT,
            Error::BadAudio(_) => EXIT_DATAERR,
            Error::Connect {
                transient: true, ..
            } => EXIT_UNAVAILABLE,
            Error::Connect { .. } => EXIT_CONFIG,
            Error::Disconnected(_) | Error::Stalled(_) => EXIT_TEMPFAIL,
            Error::Service { code, message, .. } => match code {
                400 if is_audio_complaint(message) => EXIT_DATAERR,
                400 => EXIT_USAGE,
                401 | 403 => EXIT_NOPERM,
                402 => EXIT_UNAVAILABLE,
                _ => EXIT_TEMPFAIL,
            },
            Error::Protocol(_) => EXIT_UNAVAILABLE,
            Error::Output(_) => EXIT_IOERR,
            Error::RetryBudgetSpent { reached: true, .. } => EXIT_TEMPFAIL,
            Error::RetryBudgetSpent { .. } => EXIT_UNAVAILABLE,
            Error::Forbidden(_) => EXIT_NOPERM,
            Error::Busy(_) => EXIT_TEMPFAIL,
            Error::Remote { exit_code, .. } => *exit_code,
            // The bytes a server sent are not the pinned ones; a retry gets
            // the same bytes from the same mirror or proxy.
            Error::Checksum(_) => EXIT_DATAERR,
            Error::Files(_) => EXIT_IOERR,
            Error::Internal(_) => EXIT_SOFTWARE,
        }
    }

    /// A stable machine-readable name for the `error` event's `code` field.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Error::Usage(_) => "usage",
            Error::Config(_) => "config",
            Error::InputMissing { .. } => "input_missing",
            Error::InputRead(_) => "input_read",
            Error::BadAudio(_) => "bad_audio",
            Error::Connect { .. } => "connect",
            Error::Disconnected(_) => "disconnected",
            Error::Stalled(_) => "stalled",
            Error::Service { .. } => "service",
            Error::Protocol(_) => "protocol",
            Error::Output(_) => "output",
            Error::RetryBudgetSpent { .. } => "retry_budget",
            Error::Forbidden(_) => "forbidden",
            Error::Busy(_) => "busy",
            Error::Remote { .. } => "remote",
            Error::Checksum(_) => "checksum",
            Error::Files(_) => "files",
            Error::Internal(_) => "internal",
        }
    }

    /// Whether a retry (a new upstream session) may succeed.
    pub(crate) fn is_retryable(&self) -> bool {
        match self {
            Error::Connect { transient, .. } => *transient,
            Error::Disconnected(_) | Error::Stalled(_) => true,
            Error::Service { code, .. } => matches!(code, 408 | 429 | 500 | 503),
            _ => false,
        }
    }
}

/// 400 errors about the audio itself rather than the request's options.
fn is_audio_complaint(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("audio")
        && !m.contains("format")
        && !m.contains("sample rate")
        && !m.contains("channels")
}

/// Results in sttpipe.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    fn service(code: u16, message: &str) -> Error {
        Error::Service {
            code,
            error_type: None,
            message: message.into(),
        }
    }

    #[test]
    fn service_codes_map_to_sysexits() {
        assert_eq!(service(401, "Invalid API key.").exit_code(), EXIT_NOPERM);
        assert_eq!(service(403, "x").exit_code(), EXIT_NOPERM);
        assert_eq!(service(402, "x").exit_code(), EXIT_UNAVAILABLE);
        assert_eq!(
            service(400, "Invalid model specified.").exit_code(),
            EXIT_USAGE
        );
        assert_eq!(service(400, "Audio decode error").exit_code(), EXIT_DATAERR);
        assert_eq!(
            service(
                400,
                "Audio data sample rate must be specified for PCM formats"
            )
            .exit_code(),
            EXIT_USAGE
        );
        for code in [408, 429, 500, 503] {
            assert_eq!(service(code, "x").exit_code(), EXIT_TEMPFAIL);
            assert!(service(code, "x").is_retryable());
        }
        assert!(!service(401, "x").is_retryable());
    }

    #[test]
    fn message_says_what_it_means() {
        let text = service(401, "Invalid API key.").to_string();
        assert_eq!(text, "the API key was rejected (401): Invalid API key.");
    }
}
