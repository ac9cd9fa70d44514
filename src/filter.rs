//! The filter front end: stdin, a file or a FIFO in; stdout out.
//!
//! Wires [`crate::input`] (a reader thread) and signals into the session
//! core's input, and the session's events into [`crate::output`] (a writer
//! thread). Signals: the first SIGINT or SIGTERM stops reading and drains
//! the finals within `--drain-timeout`; a second SIGINT exits at once;
//! SIGUSR1 finalizes (push-to-talk).

use std::io::{self, IsTerminal};

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::cli::SessionArgs;
use crate::client;
use crate::config::{FilterConfig, SessionConfig, Target};
use crate::engine::local::LocalEngine;
use crate::engine::soniox::SonioxEngine;
use crate::engine::{Engine, SessionEngines};
use crate::error::{EXIT_OK, EXIT_SOFTWARE, Error};
use crate::event::Event;
use crate::input::{self, InputEvent};
use crate::output::{self, OutputEnd};
use crate::session::{self, SessionInput};

/// How the process should end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Exit with this status.
    Code(u8),
    /// Re-raise this signal with its default action, so the parent sees
    /// the process killed by it (exit status 128+n in a shell).
    Signal(i32),
}

/// Session input queue: small, since the reader's own queue holds the audio.
const SESSION_INPUT_QUEUE: usize = 4;

/// Runs the filter to completion on a fresh runtime.
pub(crate) fn run(config: FilterConfig) -> Exit {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            report(&Error::Internal(format!("cannot start the runtime: {err}")));
            return Exit::Code(EXIT_SOFTWARE);
        }
    };
    runtime.block_on(run_async(config))
}

async fn run_async(config: FilterConfig) -> Exit {
    let (events, writer) = match output::spawn_stdout(&config.output) {
        Ok(pair) => pair,
        Err(err) => {
            report(&Error::Output(err));
            return Exit::Code(crate::error::EXIT_IOERR);
        }
    };
    let stop = CancellationToken::new();
    let signalled = match watch_signals(stop.clone()) {
        Ok(signalled) => signalled,
        Err(err) => {
            report(&Error::Internal(format!(
                "cannot install signal handlers: {err}"
            )));
            return Exit::Code(EXIT_SOFTWARE);
        }
    };
    // Installed before anything can block, so an early SIGUSR1 is never fatal.
    let usr1 = match signal(SignalKind::user_defined1()) {
        Ok(usr1) => usr1,
        Err(err) => {
            report(&Error::Internal(format!(
                "cannot install signal handlers: {err}"
            )));
            return Exit::Code(EXIT_SOFTWARE);
        }
    };
    let result = stream(config, events, stop, usr1).await;
    let output_end = tokio::task::spawn_blocking(move || writer.join())
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or(OutputEnd::Done);
    match output_end {
        // The consumer chose to stop, like `yes | head`: not an error.
        OutputEnd::ConsumerGone => return Exit::Code(EXIT_OK),
        OutputEnd::Failed(err) => {
            let err = Error::Output(err);
            report(&err);
            return Exit::Code(err.exit_code());
        }
        OutputEnd::Done => {}
    }
    if let Err(err) = &result {
        report(err);
    }
    match (signalled.signal(), result) {
        (Some(signal), _) => Exit::Signal(signal),
        (None, Ok(())) => Exit::Code(EXIT_OK),
        (None, Err(err)) => Exit::Code(err.exit_code()),
    }
}

/// Opens the input and engine, then runs the session. Errors before the
/// session starts are given out as `error` events here; the session reports
/// its own.
async fn stream(
    config: FilterConfig,
    events: mpsc::Sender<Event>,
    stop: CancellationToken,
    usr1: tokio::signal::unix::Signal,
) -> Result<(), Error> {
    let prepared = prepare(config).await;
    let (engine, mut session_config, mut input) = match prepared {
        Ok(prepared) => prepared,
        Err(err) => {
            let _ = events.send(Event::error(&err)).await;
            return Err(err);
        }
    };
    // The reader's first event says what the stream really holds (a WAV
    // header decides it). A FIFO may make this wait for its first writer.
    let first = loop {
        let first = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            first = input.recv() => first,
        };
        match first {
            Some(InputEvent::Warning(message)) => warn_user(&message),
            other => break other,
        }
    };
    match first {
        Some(InputEvent::Format(format)) => session_config.audio = format,
        Some(InputEvent::Failed(err)) => {
            let _ = events.send(Event::error(&err)).await;
            return Err(err);
        }
        other => {
            let err = Error::Internal(format!("reader began with {other:?}"));
            let _ = events.send(Event::error(&err)).await;
            return Err(err);
        }
    }
    debug!(format = %session_config.audio, "input open");
    if !session_config.audio.is_raw() && session_config.idle_close.take().is_some() {
        // A new upstream session would get the container from its middle,
        // without the header it needs.
        debug!("no idle-close for container input");
    }
    let (session_tx, session_rx) = mpsc::channel(SESSION_INPUT_QUEUE);
    let pump = tokio::spawn(pump_input(
        input,
        session_config.audio.clone(),
        session_tx,
        stop.clone(),
        usr1,
    ));
    let result = match engine {
        Upstream::Engines(engines) => session::run(
            engines,
            None,
            &session_config,
            crate::session_id::random(),
            session_rx,
            events,
            stop,
        )
        .await
        .map(|_summary| ()),
        Upstream::Daemon { socket, mut header } => {
            // The header says what the input holds, as its reader found it.
            let audio = &session_config.audio;
            header.audio_format.clone_from(&audio.name);
            if let (Some(rate), Some(channels)) = (audio.sample_rate, audio.channels) {
                (header.rate, header.channels) = (rate, channels);
            }
            let drain = session_config.timing.wall(session_config.drain_timeout);
            let result =
                client::run(&socket, &header, drain, session_rx, events.clone(), stop).await;
            // The daemon's own errors came as its events; ours (no daemon,
            // a lost connection) need one too.
            if let Err(err) = &result
                && !matches!(err, Error::Remote { .. })
            {
                let _ = events.send(Event::error(err)).await;
            }
            result
        }
    };
    pump.abort();
    result
}

/// Where the session runs: here, on an engine, or in the daemon.
enum Upstream {
    Engines(SessionEngines),
    Daemon {
        socket: std::path::PathBuf,
        header: SessionArgs,
    },
}

async fn prepare(
    config: FilterConfig,
) -> Result<(Upstream, SessionConfig, mpsc::Receiver<InputEvent>), Error> {
    let mut session = config.session;
    session.tell_user = Some(warn_user);
    let partials = session.partials;
    let fallback = match &config.fallback {
        Some(local) => Some(Engine::Local(
            LocalEngine::new(local)?.with_partials(partials),
        )),
        None => None,
    };
    let upstream = match config.target {
        Target::Soniox(service) => Upstream::Engines(SessionEngines {
            engine: Engine::Soniox(SonioxEngine::new(service)?),
            fallback,
        }),
        Target::Local(local) => {
            // Real-time pace is the service's rule; the local engine takes a
            // file as fast as it can decode it.
            session.max_lead = crate::session::UNPACED;
            for ignored in crate::engine::local::ignored_options(&session.recognition) {
                warn_user(&ignored);
            }
            Upstream::Engines(SessionEngines {
                engine: Engine::Local(LocalEngine::new(&local)?.with_partials(partials)),
                fallback,
            })
        }
        Target::Daemon { socket, header } => Upstream::Daemon { socket, header },
    };
    if config.input.sources.contains(&input::Source::Stdin) && io::stdin().is_terminal() {
        warn_user(
            "reading audio from the terminal: give a FILE, or pipe audio in (Ctrl-C to stop)",
        );
    }
    let input = input::spawn(config.input)?;
    Ok((upstream, session, input))
}

/// Moves the reader's events into the session, adding a finalize for each
/// SIGUSR1 and for each FIFO writer that closed.
async fn pump_input(
    mut input: mpsc::Receiver<InputEvent>,
    format: crate::audio::AudioFormat,
    session: mpsc::Sender<SessionInput>,
    stop: CancellationToken,
    mut usr1: tokio::signal::unix::Signal,
) {
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return,
            _ = usr1.recv() => SessionInput::Finalize,
            event = input.recv() => match event {
                Some(InputEvent::Audio(bytes)) => SessionInput::Audio(bytes),
                Some(InputEvent::WriterClosed) => SessionInput::Finalize,
                Some(InputEvent::Warning(message)) => {
                    warn_user(&message);
                    continue;
                }
                Some(InputEvent::PartialFrameDropped(bytes)) => {
                    warn_user(&format!(
                        "dropped {bytes} trailing byte{} that did not make a whole sample frame",
                        if bytes == 1 { "" } else { "s" }
                    ));
                    continue;
                }
                Some(InputEvent::Failed(err)) => SessionInput::Failed(err),
                // A later FIFO writer's WAV header: one stream has one format.
                Some(InputEvent::Format(next)) if next == format => continue,
                Some(InputEvent::Format(next)) => SessionInput::Failed(Error::BadAudio(format!(
                    "a later input is {next}, but the stream is {format}"
                ))),
                None => return,
            },
        };
        if session.send(message).await.is_err() {
            return;
        }
    }
}

/// The signal that stopped the filter, if any.
#[derive(Debug, Clone, Default)]
struct Signalled(std::sync::Arc<std::sync::atomic::AtomicI32>);

impl Signalled {
    fn signal(&self) -> Option<i32> {
        match self.0.load(std::sync::atomic::Ordering::SeqCst) {
            0 => None,
            n => Some(n),
        }
    }
}

/// First SIGINT/SIGTERM: cancel `stop` (drain, then exit by the signal).
/// A SIGINT after that exits at once, from the signal handler itself, so it
/// works however busy the runtime is.
fn watch_signals(stop: CancellationToken) -> io::Result<Signalled> {
    use std::sync::atomic::{AtomicBool, Ordering};
    let draining = std::sync::Arc::new(AtomicBool::new(false));
    signal_hook::flag::register_conditional_shutdown(nix::libc::SIGINT, 130, draining.clone())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let signalled = Signalled::default();
    let record = signalled.clone();
    tokio::spawn(async move {
        loop {
            let number = tokio::select! {
                _ = interrupt.recv() => nix::libc::SIGINT,
                _ = terminate.recv() => nix::libc::SIGTERM,
            };
            if stop.is_cancelled() {
                // Two SIGINTs that arrived together were merged into one
                // wake-up here: the user insists all the same.
                if number == nix::libc::SIGINT {
                    std::process::exit(130);
                }
                continue;
            }
            record.0.store(number, Ordering::SeqCst);
            draining.store(true, Ordering::SeqCst);
            info!(
                signal = number,
                "stopping: draining the final tokens (a second SIGINT exits at once)"
            );
            stop.cancel();
        }
    });
    Ok(signalled)
}

/// The one-line error report on stderr.
pub(crate) fn report(err: &Error) {
    eprintln!("sttpipe: {err}");
}

/// A warning for the user on stderr (not a log line).
pub(crate) fn warn_user(message: &str) {
    eprintln!("sttpipe: warning: {message}");
}
