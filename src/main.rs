//! The `sttpipe` command: parse, configure, run, map the result to an exit status.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;

use sttpipe::cli::{Command, Opts};
use sttpipe::config::FilterConfig;
use sttpipe::error::{EXIT_OK, Error};
use sttpipe::filter::{self, Exit};
use sttpipe::{logging, output};

fn main() -> ExitCode {
    // A panic is a bug: say so on one line and exit 70 (EX_SOFTWARE), also in
    // release builds, which abort on panic.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("sttpipe: internal error: {info}");
        std::process::exit(i32::from(sttpipe::error::EXIT_SOFTWARE));
    }));
    let opts = match Opts::try_parse() {
        Ok(opts) => opts,
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
            let fds = match sttpipe::systemd::take_listen_fds() {
                Ok(fds) => fds,
                Err(err) => {
                    return fail(&Error::Config(format!("LISTEN_FDS: {err}")));
                }
            };
            logging::init(serve.verbose);
            ExitCode::from(sttpipe::daemon::main(*serve, fds))
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
        .block_on(sttpipe::client::status(socket))
}

/// Reports an error that came before any session: one line on stderr, one
/// `error` event on stdout.
fn fail(err: &Error) -> ExitCode {
    filter::report(err);
    output::write_event_now(&sttpipe::event::Event::error(err));
    ExitCode::from(err.exit_code())
}

/// clap's message, on one line, with the way to more help.
fn usage_line(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let first = rendered
        .lines()
        .next()
        .unwrap_or("invalid arguments")
        .trim_start_matches("error: ");
    if err.kind() == ErrorKind::MissingRequiredArgument {
        return format!("{first} (see sttpipe --help)");
    }
    format!("{first}; see sttpipe --help")
}
