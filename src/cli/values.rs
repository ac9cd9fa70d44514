//! Typed values of the flags, the socket header and the settings file:
//! each checks its own range when it is parsed, so no later arithmetic on
//! it can overflow and no input can reach a panic.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
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

/// The port a Wyoming listener takes when its address names none (the
/// port Wyoming servers use, and the one the zeroconf files announce).
pub(crate) const WYOMING_PORT: u16 = 10300;

/// A TCP address to listen on: an IP address or `localhost`, with an
/// optional port ([`WYOMING_PORT`] when it is left out). IPv6 addresses take
/// a port only in brackets: `[::1]:10300`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListenAddr(pub(crate) SocketAddr);

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(text: &str) -> Result<ListenAddr, String> {
        let text = text.trim();
        let bad =
            || format!("{text:?} is not HOST[:PORT] with an IP address or localhost for HOST");
        if let Ok(addr) = text.parse::<SocketAddr>() {
            return Ok(ListenAddr(addr));
        }
        let bare = text
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(text);
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Ok(ListenAddr(SocketAddr::new(ip, WYOMING_PORT)));
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) => (host, port.parse::<u16>().map_err(|_| bad())?),
            None => (text, WYOMING_PORT),
        };
        if host.eq_ignore_ascii_case("localhost") {
            Ok(ListenAddr(SocketAddr::new(
                Ipv4Addr::LOCALHOST.into(),
                port,
            )))
        } else {
            Err(bad())
        }
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for ListenAddr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ListenAddr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ListenAddr, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

/// A block of IP addresses, `ADDR/PREFIX` (a bare address is the block of
/// one). Addresses outside the prefix must be zero, so `10.0.0.1/8` is
/// refused: it is more likely a typo than a wish.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// Whether `ip` is in the block; an IPv4-mapped IPv6 address counts as
    /// its IPv4 address (a dual-stack listener sees IPv4 peers so).
    pub(crate) fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                prefix_mask_u32(self.prefix) & (u32::from(net) ^ u32::from(ip)) == 0
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                prefix_mask_u128(self.prefix) & (u128::from(net) ^ u128::from(ip)) == 0
            }
            _ => false,
        }
    }
}

fn prefix_mask_u32(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn prefix_mask_u128(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for IpNet {
    type Err = String;

    fn from_str(text: &str) -> Result<IpNet, String> {
        let text = text.trim();
        let bad = |why: &str| format!("{text:?} is not ADDR[/PREFIX]: {why}");
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let addr: IpAddr = addr.parse().map_err(|_| bad("no IP address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| bad("the prefix is out of range"))?,
        };
        let host_bits = match addr {
            IpAddr::V4(a) => u128::from(!prefix_mask_u32(prefix) & u32::from(a)),
            IpAddr::V6(a) => !prefix_mask_u128(prefix) & u128::from(a),
        };
        if host_bits != 0 {
            return Err(bad("bits set past the prefix"));
        }
        Ok(IpNet { addr, prefix })
    }
}

impl fmt::Display for IpNet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for IpNet {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for IpNet {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<IpNet, D::Error> {
        String::deserialize(deserializer)?
            .parse()
            .map_err(serde::de::Error::custom)
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
    /// India (its host follows the others' pattern, unconfirmed; --url
    /// overrides it).
    In,
}

impl Region {
    /// The real-time endpoint of the region.
    pub(crate) fn url(self) -> &'static str {
        match self {
            Region::Us => "wss://stt-rt.soniox.com/transcribe-websocket",
            Region::Eu => "wss://stt-rt.eu.soniox.com/transcribe-websocket",
            Region::Jp => "wss://stt-rt.jp.soniox.com/transcribe-websocket",
            // Not confirmed by Soniox: the pattern of the other regions.
            Region::In => "wss://stt-rt.in.soniox.com/transcribe-websocket",
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
        assert_eq!(Region::In.to_string(), "in");
        assert_eq!(serde_json::to_string(&Region::In).unwrap(), "\"in\"");
        assert_eq!(LocalModel::BaseEn.to_string(), "base-en");
        assert_eq!(
            serde_json::to_string(&LocalModel::BaseEn).unwrap(),
            "\"base-en\""
        );
    }

    #[test]
    fn listen_addresses_take_the_wyoming_port_when_none_is_given() {
        let addr = |text: &str| text.parse::<ListenAddr>().map(|a| a.0.to_string());
        assert_eq!(addr("0.0.0.0").as_deref(), Ok("0.0.0.0:10300"));
        assert_eq!(addr("127.0.0.1:0").as_deref(), Ok("127.0.0.1:0"));
        assert_eq!(addr("::").as_deref(), Ok("[::]:10300"));
        assert_eq!(addr("[::1]").as_deref(), Ok("[::1]:10300"));
        assert_eq!(addr("[::1]:9").as_deref(), Ok("[::1]:9"));
        assert_eq!(addr("localhost").as_deref(), Ok("127.0.0.1:10300"));
        assert_eq!(addr("localhost:1234").as_deref(), Ok("127.0.0.1:1234"));
        for bad in ["", "example.org", "1.2.3.4:70000", "localhost:x", "1.2.3"] {
            assert!(bad.parse::<ListenAddr>().is_err(), "{bad}");
        }
        let json = serde_json::to_string(&"0.0.0.0".parse::<ListenAddr>().unwrap()).unwrap();
        assert_eq!(json, "\"0.0.0.0:10300\"");
        assert!(serde_json::from_str::<ListenAddr>("\"nowhere\"").is_err());
    }

    #[test]
    fn address_blocks() {
        let net = |text: &str| text.parse::<IpNet>().unwrap();
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        assert!(net("192.168.1.0/24").contains(ip("192.168.1.77")));
        assert!(!net("192.168.1.0/24").contains(ip("192.168.2.1")));
        assert!(
            net("192.168.1.0/24").contains(ip("::ffff:192.168.1.9")),
            "v4-mapped"
        );
        assert!(net("10.1.2.3").contains(ip("10.1.2.3")));
        assert!(!net("10.1.2.3").contains(ip("10.1.2.4")));
        assert!(net("0.0.0.0/0").contains(ip("8.8.8.8")));
        assert!(!net("0.0.0.0/0").contains(ip("::2")), "families do not mix");
        assert!(net("fd00::/8").contains(ip("fd12::1")));
        assert!(net("::/0").contains(ip("2001:db8::1")));
        for bad in [
            "10.0.0.1/8",
            "10.0.0.0/33",
            "::1/129",
            "host",
            "10.0.0.0/",
            "",
        ] {
            assert!(bad.parse::<IpNet>().is_err(), "{bad}");
        }
        assert_eq!(net("fd00::/8").to_string(), "fd00::/8");
    }
}
