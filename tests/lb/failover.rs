//! Upstream failover: `--url` more than once.

use soniox_emulator::{EmulatorConfig, Faults, Outcome};

use crate::reliability::harness::{
    self, Feed, WAIT, assert_lossless, emulator, reconnects, run_with_faults, speech,
};
use crate::util;

/// A `ws://` URL on a loopback port nothing listens on (bound, then freed).
fn dead_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    format!("ws://127.0.0.1:{port}/transcribe-websocket")
}

/// `sttpipe --url first --url second` at the harness's pace.
fn sttpipe_urls(first: &str, second: &str) -> tokio::process::Command {
    let mut command = harness::sttpipe_at(first, &["--url", first, "--url", second]);
    command.env_remove("SONIOX_WS_URL");
    command
}

/// The first URL refuses connections: every word arrives through the
/// second, on the first upstream session (no outage: the failover happens
/// within the connection attempt), and the log names the URL tried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_first_url_fails_over_to_the_second() {
    let live = emulator(EmulatorConfig::default()).await;
    let dead = dead_url();
    let (words, audio) = speech(20_000);
    let mut command = sttpipe_urls(&dead, &live.url());
    command.env("RUST_LOG", "sttpipe=info");
    let run = run_with_faults(command, audio, Feed::File, harness::no_controller()).await;
    let events = assert_lossless(&run.out, &words);
    assert!(reconnects(&events).is_empty(), "{:?}", reconnects(&events));
    assert_eq!(live.sessions().len(), 1);
    assert!(
        run.out.stderr.contains("cannot reach this upstream URL") && run.out.stderr.contains(&dead),
        "the failed URL is logged: {}",
        run.out.stderr
    );
    assert!(
        !run.out.stderr.contains(util::KEY),
        "the key is never logged: {}",
        run.out.stderr
    );
}

/// The first URL answers every start with a 503 frame: the retry goes to
/// the second, and the words arrive.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusing_first_url_fails_over_to_the_second() {
    let refusing = emulator(EmulatorConfig {
        reject_connects: vec![503; 100],
        ..EmulatorConfig::default()
    })
    .await;
    let live = emulator(EmulatorConfig::default()).await;
    let (words, audio) = speech(20_000);
    let command = sttpipe_urls(&refusing.url(), &live.url());
    let run = run_with_faults(command, audio, Feed::File, harness::no_controller()).await;
    assert_lossless(&run.out, &words);
    assert_eq!(
        refusing.sessions().len(),
        1,
        "one refusal, then the other URL"
    );
    assert_eq!(live.sessions().len(), 1);
    assert_eq!(live.session(0).unwrap().outcome, Outcome::Finished);
}

/// Both URLs work; the one serving drops the connection mid-stream and
/// refuses from then on: the session moves to the other (the `reconnect`
/// event names it), every word once with its exact timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_serving_url_dying_mid_stream_moves_the_session_to_the_other() {
    let first = emulator(EmulatorConfig::default()).await;
    let second = emulator(EmulatorConfig::default()).await;
    let controller = {
        let first = first.clone();
        async move {
            util::wait_for(WAIT, "the first URL serves", || {
                first.session(0).is_some_and(|s| s.audio_ms > 5_000)
            })
            .await;
            first.set_faults(Faults {
                drop_after_audio_ms: Some(0),
                reject_connects: vec![503; 10_000],
                ..Faults::default()
            });
        }
    };
    let (words, audio) = speech(30_000);
    let command = sttpipe_urls(&first.url(), &second.url());
    let run = run_with_faults(command, audio, Feed::Live, controller).await;
    let events = assert_lossless(&run.out, &words);
    let found = reconnects(&events);
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0].reason, "dropped");
    let event = &events[found[0].at];
    assert_eq!(event["url"], second.url(), "{event}");
    assert_eq!(
        first.sessions().len(),
        1,
        "the dead URL is not tried again first"
    );
    assert_eq!(second.sessions().len(), 1);
    assert_eq!(second.session(0).unwrap().outcome, Outcome::Finished);
    harness::assert_upstreams(&events, &found);
}
