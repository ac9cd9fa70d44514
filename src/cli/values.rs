//! Typed values of the flags, the socket header and the settings file:
//! each checks its own range when it is parsed, so no later arithmetic on
//! it can overflow and no input can reach a panic.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use clap::ValueEnum;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest duration any flag takes: 30 days. Far past every useful
/// setting, and far enough from `Instant`'s range that deadlines built from
/// it (even scaled by the test pace factor) cannot overflow.
pub(crate) const MAX_SECONDS: f64 = 30.0 * 24.0 * 3600.0;

/// A duration given in seconds: a finite number from 0 to [`MAX_SECONDS`],
/// fractions allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Seconds(Duration);

impl Seconds {
    /// A whole number of seconds (for defaults).
    pub(crate) const fn from_secs(secs: u64) -> Seconds {
        Seconds(Duration::from_secs(secs))
    }

    /// A whole number of milliseconds (for defaults).
    pub(crate) const fn from_millis(ms: u64) -> Seconds {
        Seconds(Duration::from_millis(ms))
    }

    /// A number of seconds, if it is in range.
    pub(crate) fn new(secs: f64) -> Result<Seconds, String> {
        if secs.is_finite() && (0.0..=MAX_SECONDS).contains(&secs) {
            // In range, checked just above, so the conversion cannot fail.
            Duration::try_from_secs_f64(secs)
                .map(Seconds)
                .map_err(|e| e.to_string())
        } else {
            Err(format!(
                "{secs} is not a number of seconds from 0 to {MAX_SECONDS}"
            ))
        }
    }

    /// The duration.
    pub(crate) fn get(self) -> Duration {
        self.0
    }

    /// `None` for zero: the flags where 0 turns a timer off.
    pub(crate) fn nonzero(self) -> Option<Duration> {
        (!self.0.is_zero()).then_some(self.0)
    }
}

impl FromStr for Seconds {
    type Err = String;

    fn from_str(text: &str) -> Result<Seconds, String> {
        let secs: f64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{text:?} is not a number of seconds"))?;
        Seconds::new(secs)
    }
}

impl fmt::Display for Seconds {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0.as_secs_f64())
    }
}

impl Serialize for Seconds {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(self.0.as_secs_f64())
    }
}

impl<'de> Deserialize<'de> for Seconds {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Seconds, D::Error> {
        let secs = f64::deserialize(deserializer)?;
        Seconds::new(secs).map_err(serde::de::Error::custom)
    }
}

/// How events are written to stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum OutputFormat {
    /// One JSON event a line.
    Ndjson,
    /// The transcript as text, a line per utterance.
    Text,
    /// SubRip captions, each cue written as soon as it is complete.
    Srt,
    /// WebVTT captions, each cue written as soon as it is complete.
    Vtt,
}

/// Recognition engines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum EngineChoice {
    /// The Soniox real-time service.
    Soniox,
    /// Moonshine through sherpa-onnx, on this machine.
    Local,
}

/// Engines to fall back on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FallbackChoice {
    /// Moonshine through sherpa-onnx, on this machine.
    Local,
}

/// Soniox data-residency regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Region {
    /// United States (default).
    #[default]
    Us,
    /// European Union.
    Eu,
    /// Japan.
    Jp,
}

impl Region {
    /// The real-time endpoint of the region.
    pub(crate) fn url(self) -> &'static str {
        match self {
            Region::Us => "wss://stt-rt.soniox.com/transcribe-websocket",
            Region::Eu => "wss://stt-rt.eu.soniox.com/transcribe-websocket",
            Region::Jp => "wss://stt-rt.jp.soniox.com/transcribe-websocket",
        }
    }
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value_name(self, f)
    }
}

/// The Moonshine models the local engine runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub(crate) enum LocalModel {
    /// Moonshine tiny-en (43 MB): fast, about 150 MiB. The default.
    #[default]
    TinyEn,
    /// Moonshine base-en (63 MB): fewer errors, about 600 MiB.
    BaseEn,
}

impl LocalModel {
    /// The model's name: `tiny-en`, `base-en`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LocalModel::TinyEn => "tiny-en",
            LocalModel::BaseEn => "base-en",
        }
    }
}

impl fmt::Display for LocalModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_value_name(self, f)
    }
}

/// A value enum's name as the command line spells it.
fn write_value_name(value: &impl ValueEnum, f: &mut fmt::Formatter<'_>) -> fmt::Result {
    match value.to_possible_value() {
        Some(name) => f.write_str(name.get_name()),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_are_checked_when_parsed() {
        assert_eq!("2.5".parse(), Ok(Seconds(Duration::from_millis(2500))));
        assert_eq!(Seconds::from_secs(0).nonzero(), None);
        for bad in ["1e300", "-1", "NaN", "inf", "1e19", "fast", ""] {
            assert!(bad.parse::<Seconds>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Seconds>("1e300").is_err());
        assert_eq!(
            serde_json::from_str::<Seconds>("10").unwrap(),
            Seconds::from_secs(10)
        );
        assert_eq!(Seconds::from_secs(5).to_string(), "5");
    }

    #[test]
    fn value_names_match_the_command_line() {
        assert_eq!(Region::Eu.to_string(), "eu");
        assert_eq!(LocalModel::BaseEn.to_string(), "base-en");
        assert_eq!(
            serde_json::to_string(&LocalModel::BaseEn).unwrap(),
            "\"base-en\""
        );
    }
}
