//! The daemon's settings: `serve`'s flags over its settings file over the
//! flags' defaults, resolved and checked once.
//!
//! The settings file's keys are [`ServeArgs`]'s own field names (the long
//! flags with underscores), read into the same struct: a flag given on the
//! command line (or by its environment variable) wins; a key in the file
//! fills in a flag left at its default; an unknown key is an error. There
//! is no second list of settings to keep in step with the flags.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::ArgMatches;
use clap::parser::ValueSource;
use serde_json::Value;

use super::admission::Limits;
use super::registry::Peer;
use crate::cli::ServeArgs;
use crate::cli::values::{EngineChoice, FallbackChoice, IpNet};
use crate::config::{LocalEngineConfig, SessionLimits, Timing, resolve};
use crate::error::{Error, Result};

/// The settings file read when `--config` is not given, if it exists.
pub(crate) const DEFAULT_CONFIG: &str = "/etc/sttpipe/sttpipe.toml";

/// Who may connect: root always; else anyone, or only the listed uids and
/// (primary) gids when either list is given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Access {
    /// Allowed uids.
    pub(crate) uids: Vec<u32>,
    /// Allowed gids.
    pub(crate) gids: Vec<u32>,
}

impl Access {
    /// Whether `peer` may use the daemon.
    pub(crate) fn allows(&self, peer: &Peer) -> bool {
        peer.uid == 0
            || (self.uids.is_empty() && self.gids.is_empty())
            || self.uids.contains(&peer.uid)
            || self.gids.contains(&peer.gid)
    }
}

/// The Wyoming front end's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WyomingRules {
    /// Clients allowed besides loopback.
    pub(crate) allow: Vec<IpNet>,
    /// Whether Soniox's endpoint ends a turn.
    pub(crate) endpointing: bool,
    /// Whether transcripts stream (transcript-start, -chunk, -stop).
    pub(crate) streaming: bool,
}

impl WyomingRules {
    /// Whether a client at `ip` may connect: loopback always (anyone on
    /// this machine can reach the Unix socket too), else only the listed.
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        ip.to_canonical().is_loopback() || self.allow.iter().any(|net| net.contains(ip))
    }
}

/// The daemon's resolved settings.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    /// Socket path, when the daemon binds its own.
    pub(crate) socket: PathBuf,
    /// API key file, if not from the environment or credentials.
    pub(crate) api_key_file: Option<PathBuf>,
    /// Service URLs, for failover (never empty).
    pub(crate) urls: Vec<String>,
    /// CA file for a private endpoint.
    pub(crate) ca_file: Option<PathBuf>,
    /// Slots and queue.
    pub(crate) limits: Limits,
    /// New upstream sessions a minute.
    pub(crate) new_sessions_per_minute: u32,
    /// Sessions per uid (0: no limit).
    pub(crate) max_sessions_per_uid: usize,
    /// Who may connect.
    pub(crate) access: Access,
    /// Group for a socket the daemon binds.
    pub(crate) socket_group: Option<String>,
    /// WebSocket endpoint address.
    pub(crate) ws_listen: Option<SocketAddr>,
    /// Token file for the WebSocket endpoint.
    pub(crate) ws_token_file: Option<PathBuf>,
    /// The WebSocket endpoint's certificate chain and key, for TLS.
    pub(crate) ws_tls: Option<(PathBuf, PathBuf)>,
    /// Wyoming listener address.
    pub(crate) wyoming_listen: Option<SocketAddr>,
    /// The Wyoming front end's rules.
    pub(crate) wyoming: WyomingRules,
    /// Warm upstream connections.
    pub(crate) warm_pool: usize,
    /// The REST API's base URL, when the live quota is on.
    pub(crate) live_quota: Option<String>,
    /// Drain bound on SIGTERM.
    pub(crate) drain_timeout: Duration,
    /// Header bound.
    pub(crate) header_timeout: Duration,
    /// Bound on an admitted client's first audio (`None`: none).
    pub(crate) first_audio_timeout: Option<Duration>,
    /// Idle close of a client's upstream session, which also gives its
    /// slot back (`None`: never).
    pub(crate) idle_close: Option<Duration>,
    /// A client session's longest outage.
    pub(crate) retry_budget: Duration,
    /// The engine of sessions that do not ask for one.
    pub(crate) engine: EngineChoice,
    /// Whether Soniox sessions fall back to the local engine.
    pub(crate) fallback_local: bool,
    /// The local engine's files and model.
    pub(crate) local: LocalEngineConfig,
    /// Time scale (tests).
    pub(crate) timing: Timing,
}

impl Settings {
    /// `args` over the settings file over the defaults; `given` tells which
    /// of `args` the command line set.
    pub(crate) fn resolve(
        args: &ServeArgs,
        given: &ArgMatches,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Settings> {
        let args = with_file(args, given)?;
        check_limits(&args)?;
        let ws_tls = match (args.ws_tls_cert, args.ws_tls_key) {
            (Some(cert), Some(key)) => Some((cert, key)),
            (None, None) => None,
            // The command line cannot get here (clap requires both); the
            // settings file can.
            (Some(_), None) => {
                return Err(Error::Usage("--ws-tls-cert needs --ws-tls-key".into()));
            }
            (None, Some(_)) => {
                return Err(Error::Usage("--ws-tls-key needs --ws-tls-cert".into()));
            }
        };
        let urls = resolve::urls(&args.service.url, args.service.region)?;
        let live_quota = if args.live_quota {
            // The REST API of the first: failover URLs are the same service.
            Some(super::live::rest_base(&urls[0], args.quota_url.as_deref())?)
        } else {
            None
        };
        Ok(Settings {
            live_quota,
            socket: args.socket,
            api_key_file: args.service.api_key_file,
            urls,
            ca_file: args.service.ca_file,
            limits: Limits {
                max_upstream: args.max_upstream,
                queue: args.queue,
            },
            new_sessions_per_minute: args.new_sessions_per_minute,
            max_sessions_per_uid: args.max_sessions_per_uid,
            access: Access {
                uids: args.allow_uid,
                gids: args.allow_gid,
            },
            socket_group: args.socket_group,
            ws_listen: args.ws_listen,
            ws_token_file: args.ws_token_file,
            ws_tls,
            wyoming_listen: args.wyoming_listen.map(|addr| addr.0),
            wyoming: WyomingRules {
                allow: args.wyoming_allow,
                endpointing: args.wyoming_endpointing,
                streaming: !args.wyoming_no_streaming,
            },
            warm_pool: args.warm_pool,
            drain_timeout: args.drain_timeout.get(),
            header_timeout: args.header_timeout.get(),
            first_audio_timeout: args.first_audio_timeout.nonzero(),
            idle_close: args.idle_close.nonzero(),
            retry_budget: args.retry_budget.get(),
            engine: args.engine,
            fallback_local: args.fallback == Some(FallbackChoice::Local),
            local: LocalEngineConfig::from(&args.local_engine),
            timing: Timing::from_env(env)?,
        })
    }

    /// The bounds of a client's session: the filter's defaults, with the
    /// daemon's own drain, idle close and retry budget.
    pub(crate) fn session_limits(&self) -> SessionLimits {
        SessionLimits {
            drain_timeout: self.drain_timeout,
            idle_close: self.idle_close,
            retry_budget: self.retry_budget,
            ..SessionLimits::default()
        }
    }
}

/// Limits that would make every client wait forever, or open more idle
/// connections than the project may have streams, are refused.
fn check_limits(args: &ServeArgs) -> Result<()> {
    if args.max_upstream == 0 {
        return Err(Error::Usage(
            "--max-upstream must be at least 1 (0 would queue every client forever)".into(),
        ));
    }
    if args.new_sessions_per_minute == 0 {
        return Err(Error::Usage(
            "--new-sessions-per-minute must be at least 1 (0 would hold every client forever)"
                .into(),
        ));
    }
    if args.warm_pool > args.max_upstream {
        return Err(Error::Usage(format!(
            "--warm-pool {} is more than --max-upstream {}: idle connections count against Soniox's limits too",
            args.warm_pool, args.max_upstream
        )));
    }
    Ok(())
}

/// `args` with the settings file filling in what the command line left at
/// its defaults.
fn with_file(args: &ServeArgs, given: &ArgMatches) -> Result<ServeArgs> {
    let (path, required) = match &args.config {
        Some(path) => (path.as_path(), true),
        None => (Path::new(DEFAULT_CONFIG), false),
    };
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(err) if !required && err.kind() == std::io::ErrorKind::NotFound => {
            return Ok(args.clone());
        }
        Err(err) => {
            return Err(Error::Config(format!(
                "cannot read settings file {}: {err}",
                path.display()
            )));
        }
    };
    let in_file =
        |message: String| Error::Config(format!("settings file {}: {message}", path.display()));
    let file: toml::Table = toml::from_str(&text).map_err(|e| in_file(e.message().to_owned()))?;
    let Value::Object(mut merged) = as_json(args)? else {
        return Err(Error::Internal("settings: not an object".into()));
    };
    for (key, value) in file {
        if !merged.contains_key(&key) {
            return Err(in_file(format!("unknown setting {key:?}")));
        }
        let from_command_line = matches!(
            given.value_source(&key),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if !from_command_line {
            merged.insert(key, as_json(&value)?);
        }
    }
    let mut merged: ServeArgs =
        serde_json::from_value(Value::Object(merged)).map_err(|e| in_file(e.to_string()))?;
    merged.config.clone_from(&args.config);
    merged.verbose = args.verbose;
    Ok(merged)
}

fn as_json(value: &impl serde::Serialize) -> Result<Value> {
    serde_json::to_value(value).map_err(|e| Error::Internal(format!("settings: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches, Parser};

    #[derive(Debug, Parser)]
    struct Serve {
        #[command(flatten)]
        args: ServeArgs,
    }

    fn resolve(argv: &[&str]) -> Result<Settings> {
        let matches = Serve::command()
            .try_get_matches_from(std::iter::once("serve").chain(argv.iter().copied()))
            .unwrap();
        let args = Serve::from_arg_matches(&matches).unwrap().args;
        Settings::resolve(&args, &matches, &|_| None)
    }

    #[test]
    fn access_rules() {
        let peer = |uid, gid| Peer {
            uid,
            gid,
            pid: None,
        };
        let open = Access::default();
        assert!(open.allows(&peer(1000, 1000)));
        let listed = Access {
            uids: vec![1000],
            gids: vec![50],
        };
        assert!(listed.allows(&peer(1000, 1)));
        assert!(listed.allows(&peer(7, 50)));
        assert!(listed.allows(&peer(0, 0)), "root always may");
        assert!(!listed.allows(&peer(1001, 1001)));
    }

    #[test]
    fn wyoming_clients_are_loopback_only_unless_listed() {
        let ip = |text: &str| text.parse::<IpAddr>().unwrap();
        let settings = resolve(&["--config", "/dev/null", "--wyoming-listen", "0.0.0.0"]).unwrap();
        assert_eq!(
            settings.wyoming_listen,
            Some("0.0.0.0:10300".parse().unwrap())
        );
        assert!(settings.wyoming.streaming && !settings.wyoming.endpointing);
        let rules = &settings.wyoming;
        assert!(rules.allows(ip("127.0.0.1")) && rules.allows(ip("::1")));
        assert!(rules.allows(ip("::ffff:127.0.0.2")));
        assert!(!rules.allows(ip("192.168.1.20")));
        let settings = resolve(&[
            "--config",
            "/dev/null",
            "--wyoming-allow",
            "192.168.1.0/24,fd00::/8",
            "--wyoming-no-streaming",
            "--wyoming-endpointing",
        ])
        .unwrap();
        let rules = &settings.wyoming;
        assert!(rules.allows(ip("192.168.1.20")) && rules.allows(ip("fd00::5")));
        assert!(!rules.allows(ip("192.168.2.20")));
        assert!(rules.allows(ip("127.0.0.1")), "loopback always may");
        assert!(!rules.streaming && rules.endpointing);

        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sttpipe.toml");
        std::fs::write(
            &file,
            "wyoming_listen = \"[::]:10301\"\nwyoming_allow = [\"10.0.0.0/8\"]\n",
        )
        .unwrap();
        let settings = resolve(&["--config", file.to_str().unwrap()]).unwrap();
        assert_eq!(settings.wyoming_listen, Some("[::]:10301".parse().unwrap()));
        assert!(settings.wyoming.allows(ip("10.9.8.7")));
        std::fs::write(&file, "wyoming_allow = [\"10.0.0.1/8\"]\n").unwrap();
        assert!(resolve(&["--config", file.to_str().unwrap()]).is_err());
    }

    #[test]
    fn the_settings_file_fills_in_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sttpipe.toml");
        std::fs::write(
            &file,
            "max_upstream = 3\nqueue = 7\nregion = \"eu\"\nallow_uid = [1000]\ndrain_timeout = 2.5\nlocal_model = \"base-en\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let settings = resolve(&["--config", path, "--queue", "9"]).unwrap();
        assert_eq!(
            settings.limits,
            Limits {
                max_upstream: 3,
                queue: 9
            }
        );
        assert!(settings.urls[0].contains(".eu."));
        assert_eq!(settings.access.uids, [1000]);
        assert_eq!(settings.drain_timeout, Duration::from_millis(2500));
        assert_eq!(settings.local.model, crate::cli::values::LocalModel::BaseEn);
        // Flags the command line set to their default still win.
        let settings = resolve(&["--config", path, "--max-upstream", "10"]).unwrap();
        assert_eq!(settings.limits.max_upstream, 10);

        for bad in [
            "max_upstreams = 3\n",
            "drain_timeout = 1e300\n",
            "region = \"mars\"\n",
            "config = \"/etc/other.toml\"\n",
            "queue = \"many\"\n",
        ] {
            std::fs::write(&file, bad).unwrap();
            assert!(
                matches!(resolve(&["--config", path]), Err(Error::Config(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            resolve(&["--config", "/nonexistent/sttpipe.toml"]),
            Err(Error::Config(_))
        ));
    }

    /// The example the Debian package installs as /etc/sttpipe/sttpipe.toml
    /// is accepted as shipped (all commented out), names every setting, and
    /// is accepted with every line uncommented.
    #[test]
    fn the_packaged_example_names_every_setting() {
        let example = include_str!("../../packaging/debian/sttpipe.toml");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sttpipe.toml");
        std::fs::write(&file, example).unwrap();
        let path = file.to_str().unwrap();
        resolve(&["--config", path]).expect("the example as shipped");

        let uncommented: String = example
            .lines()
            .filter_map(|line| line.strip_prefix('#'))
            .filter(|line| line.starts_with(|c: char| c.is_ascii_lowercase()))
            .map(|line| format!("{line}\n"))
            .collect();
        let table: toml::Table = toml::from_str(&uncommented).expect("uncommented, it is TOML");
        let matches = Serve::command().get_matches_from(["serve"]);
        let args = Serve::from_arg_matches(&matches).unwrap().args;
        let Value::Object(keys) = as_json(&args).unwrap() else {
            panic!("ServeArgs is an object")
        };
        for key in keys.keys() {
            assert!(table.contains_key(key), "the example lacks {key}");
        }
        std::fs::write(&file, &uncommented).unwrap();
        resolve(&["--config", path]).expect("the example with every line uncommented");
    }

    #[test]
    fn the_settings_file_takes_one_url_or_a_list() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sttpipe.toml");
        let path = file.to_str().unwrap();
        std::fs::write(&file, "url = \"wss://a/ws\"\n").unwrap();
        assert_eq!(resolve(&["--config", path]).unwrap().urls, ["wss://a/ws"]);
        std::fs::write(&file, "url = [\"wss://a/ws\", \"wss://b/ws\"]\n").unwrap();
        assert_eq!(
            resolve(&["--config", path]).unwrap().urls,
            ["wss://a/ws", "wss://b/ws"]
        );
        // The command line's list replaces the file's, whole.
        let settings = resolve(&["--config", path, "--url", "ws://c/ws"]).unwrap();
        assert_eq!(settings.urls, ["ws://c/ws"]);
        std::fs::write(&file, "url = [\"http://a/\"]\n").unwrap();
        assert!(matches!(resolve(&["--config", path]), Err(Error::Usage(_))));
    }

    #[test]
    fn tls_takes_a_certificate_and_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("sttpipe.toml");
        std::fs::write(
            &file,
            "ws_tls_cert = \"/etc/sttpipe/cert.pem\"\nws_tls_key = \"/etc/sttpipe/key.pem\"\n",
        )
        .unwrap();
        let path = file.to_str().unwrap();
        let settings = resolve(&["--config", path]).unwrap();
        assert_eq!(
            settings.ws_tls,
            Some((
                "/etc/sttpipe/cert.pem".into(),
                "/etc/sttpipe/key.pem".into()
            ))
        );
        std::fs::write(&file, "ws_tls_cert = \"/etc/sttpipe/cert.pem\"\n").unwrap();
        assert!(matches!(
            resolve(&["--config", path]),
            Err(Error::Usage(message)) if message == "--ws-tls-cert needs --ws-tls-key"
        ));
        assert!(
            Serve::command()
                .try_get_matches_from(["serve", "--ws-tls-key", "k.pem"])
                .is_err(),
            "one without the other is a usage error on the command line too"
        );
    }

    #[test]
    fn limits_that_hold_everyone_are_refused() {
        for argv in [
            &["--max-upstream", "0"][..],
            &["--new-sessions-per-minute", "0"],
            &["--warm-pool", "11"],
            &["--max-upstream", "1", "--warm-pool", "2"],
        ] {
            let mut full = vec!["--config", "/dev/null"];
            full.extend_from_slice(argv);
            assert!(matches!(resolve(&full), Err(Error::Usage(_))), "{argv:?}");
        }
        let settings = resolve(&["--config", "/dev/null", "--queue", "0"]).unwrap();
        assert_eq!(settings.limits.queue, 0, "no queue: busy at once");
    }
}
