//! Faults (issue 3): reconnect and replay, rotation, half-open, overflow,
//! slow consumer, retry policy.
//!
//! Each fault test streams at least 60 s of marker audio through the real
//! binary against its own emulator. sttpipe (`STTPIPE_PACE_FACTOR`) and the
//! emulator (`time_scale`) both run [`harness::PACE`] times faster than real
//! time; audio timestamps stay audio time, so every word's `start_ms` is
//! exact. A fault that must happen once is injected at run time by a
//! controller that waits on the emulator's state (bounded), never on a guess
//! of how long things take.
//!
//! The cases, by fault class:
//!
//! * `breaks`: a connection that breaks mid-stream: dropped every 10 s
//!   (case 1), a 503 frame (case 2), a half-open stall (case 3), the other
//!   retryable error frames (408, 429, 500);
//! * `refusals`: a service that refuses: the first three connects rejected
//!   (case 4), the fatal error classes (400 to 403), the retry budget spent
//!   after a working session (exit 75) and against a closed port (exit 69),
//!   an outage longer than `--replay-buffer` (case 9);
//! * `rotation`: `--max-session` rotation alone (case 5), with every fault
//!   at once on a live stream (case 6), and with drops around handovers;
//! * `media`: a FLAC stream through drops every 4 s (the decoded PCM is
//!   what is replayed); a dead URL said at once and given up on after
//!   `--connect-budget`, and `--retry-budget` once a session has worked;
//! * `local_io`: sttpipe's own side: a FIFO writer pausing 30 s, kept alive
//!   or idle-closed (cases 7a, 7b), stdout blocked for 20 s (case 8).
//!
//! `harness` holds what they share: the emulator's fault set-ups, running
//! the binary with its input fed as a file or live while a controller
//! injects faults, and the checks (every word once with its exact
//! `start_ms`; reconnect events and the tokens' upstream indices agreeing).

pub(crate) mod harness;

mod breaks;
mod local_io;
mod media;
mod refusals;
mod rotation;
