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
        Err(err) => {
            let text = text_output_asked(std::env::args_os().skip(1));
            return fail(&Error::Usage(usage_line(&err)), text);
        }
    };
    match opts.command {
        Some(Command::Serve(serve)) => {
            // First, before any thread exists: the sockets systemd passed.
            let fds = match crate::systemd::take_listen_fds() {
                Ok(fds) => fds,
                Err(err) => {
                    return fail(&Error::Config(format!("LISTEN_FDS: {err}")), false);
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
        Some(Command::Completions(args)) => match crate::cli::completions::print(args.shell) {
            Ok(()) => ExitCode::from(EXIT_OK),
            Err(err) => fail(&err, true),
        },
        Some(Command::Engine(engine)) => crate::engine::install::main(engine),
        None => {
            logging::init(opts.verbose);
            let text = opts.format == crate::cli::values::OutputFormat::Text;
            let config = match FilterConfig::from_opts(opts, &|name| std::env::var(name).ok()) {
                Ok(config) => config,
                Err(err) => return fail(&err, text),
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

/// Reports an error that came before any session: one line on stderr, and
/// one `error` event on stdout unless the output is text for people
/// (`text`), which never holds JSON.
fn fail(err: &Error, text: bool) -> ExitCode {
    filter::report(err);
    if !text {
        output::write_event_now(&crate::event::Event::error(err));
    }
    ExitCode::from(err.exit_code())
}

/// Whether the command line, unparsable as it is, asks for `--format text`.
fn text_output_asked(args: impl Iterator<Item = std::ffi::OsString>) -> bool {
    let mut previous_was_format = false;
    for arg in args {
        if arg == "--format=text" || (previous_was_format && arg == "text") {
            return true;
        }
        previous_was_format = arg == "--format";
    }
    false
}

/// clap's message on one line, with what it adds (the values a flag
/// takes, a similar name) and the way to more help.
fn usage_line(err: &clap::Error) -> String {
    use clap::error::{ContextKind, ContextValue};
    let rendered = err.render().to_string();
    let mut lines = rendered
        .lines()
        .map(str::trim)
        // The usage synopsis and the help hint follow the details.
        .take_while(|line| !line.starts_with("Usage:") && !line.starts_with("For more"))
        .filter(|line| !line.is_empty());
    let first = lines
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ")
        .to_owned();
    let details: Vec<&str> = lines.collect();
    let line = if details.is_empty() {
        first.clone()
    } else {
        format!("{first} {}", details.join(" "))
    };
    if err.kind() == ErrorKind::MissingRequiredArgument {
        return format!("{line} (see sttpipe --help)");
    }
    match err.get(ContextKind::ValidValue) {
        Some(ContextValue::Strings(values)) if !values.is_empty() => {
            // clap's own "[possible values: …]" line is said this way instead.
            let tips: Vec<&str> = details
                .iter()
                .copied()
                .filter(|d| !d.starts_with("[possible values"))
                .collect();
            let tips = if tips.is_empty() {
                String::new()
            } else {
                format!(" {}", tips.join(" "))
            };
            format!(
                "{first} (one of {}){tips}; see sttpipe --help",
                values.join(", ")
            )
        }
        _ => format!("{line}; see sttpipe --help"),
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
        // clap's tips stay.
        assert_eq!(
            line(&["sttpipe", "--no-such-flag"]),
            "unexpected argument '--no-such-flag' found tip: to pass '--no-such-flag' as a value, \
             use '-- --no-such-flag'; see sttpipe --help"
        );
    }
}
