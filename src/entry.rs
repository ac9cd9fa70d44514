//! The `sttpipe` command: parse, configure, run, map the result to an exit
//! status.

use std::process::ExitCode;

use clap::error::ErrorKind;
use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Command, Opts};
use crate::config::FilterConfig;
use crate::error::{EXIT_OK, Error};
use crate::filter::{self, Exit};
use crate::{logging, output};

/// Runs the command with the process's arguments and environment.
pub fn run() -> ExitCode {
    // A panic is a bug: in the filter, say so on one line and exit 70
    // (EX_SOFTWARE) whichever thread it was on. The daemon sets its own hook.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("sttpipe: internal error: {info}");
        std::process::exit(i32::from(crate::error::EXIT_SOFTWARE));
    }));
    let parsed = Opts::command()
        .try_get_matches()
        .and_then(|matches| Opts::from_arg_matches(&matches).map(|opts| (opts, matches)));
    let (opts, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(err)
            if matches!(
                err.kind(),
                ErrorKind::DisplayHelp | ErrorKind::DisplayVersion
            ) =>
        {
            let _ = err.print();
            return ExitCode::from(EXIT_OK);
        }
        Err(err) => return fail(&Error::Usage(usage_line(&err))),
    };
    match opts.command {
        Some(Command::Serve(serve)) => {
            // First, before any thread exists: the sockets systemd passed.
            let fds = match crate::systemd::take_listen_fds() {
                Ok(fds) => fds,
                Err(err) => {
                    return fail(&Error::Config(format!("LISTEN_FDS: {err}")));
                }
            };
            logging::init(serve.verbose);
            // Which flags were given, so the settings file fills in the rest.
            let given = matches
                .subcommand_matches("serve")
                .cloned()
                .unwrap_or_default();
            ExitCode::from(crate::daemon::main(*serve, given, fds))
        }
        Some(Command::Status(status)) => {
            logging::init(0);
            match client_status(&status.socket) {
                Ok(text) => {
                    println!("{text}");
                    ExitCode::from(EXIT_OK)
                }
                Err(err) => {
                    filter::report(&err);
                    ExitCode::from(err.exit_code())
                }
            }
        }
        None => {
            logging::init(opts.verbose);
            let config = match FilterConfig::from_opts(opts, &|name| std::env::var(name).ok()) {
                Ok(config) => config,
                Err(err) => return fail(&err),
            };
            match filter::run(config) {
                Exit::Code(code) => ExitCode::from(code),
                Exit::Signal(signal) => {
                    // Die by the signal, as the shell expects of an interrupted
                    // filter; the exit status is only reached if that fails.
                    let _ = signal_hook::low_level::emulate_default_handler(signal);
                    ExitCode::from(128 + signal as u8)
                }
            }
        }
    }
}

/// `sttpipe status`, on a small runtime of its own.
fn client_status(socket: &std::path::Path) -> Result<String, Error> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Error::Internal(format!("cannot start the runtime: {e}")))?
        .block_on(crate::client::status(socket))
}

/// Reports an error that came before any session: one line on stderr, one
/// `error` event on stdout.
fn fail(err: &Error) -> ExitCode {
    filter::report(err);
    output::write_event_now(&crate::event::Event::error(err));
    ExitCode::from(err.exit_code())
}

/// clap's message, on one line, with the values a flag takes (clap puts
/// them on a line of their own) and the way to more help.
fn usage_line(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    if err.kind() == ErrorKind::MissingRequiredArgument {
        return format!("{first} (see sttpipe --help)");
    }
    match err.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(values)) if !values.is_empty() => {
            format!("{first} (one of {}); see sttpipe --help", values.join(", "))
        }
        _ => format!("{first}; see sttpipe --help"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(args: &[&str]) -> String {
        match Opts::command().try_get_matches_from(args) {
            Err(err) => usage_line(&err),
            Ok(_) => panic!("{args:?} parsed"),
        }
    }

    #[test]
    fn a_bad_value_names_the_good_ones() {
        assert_eq!(
            line(&["sttpipe", "--format", "sbv"]),
            "invalid value 'sbv' for '--format <FORMAT>' (one of ndjson, text, srt, vtt); \
             see sttpipe --help"
        );
        assert_eq!(
            line(&["sttpipe", "--no-such-flag"]),
            "unexpected argument '--no-such-flag' found; see sttpipe --help"
        );
    }
}
