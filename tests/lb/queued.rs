//! A gateway's queue, as the edge sees it: sttpipe's queued frames.

use std::time::Duration;

use soniox_emulator::{EmulatorConfig, Outcome};

use crate::reliability::harness::{
    self, Feed, assert_lossless, emulator, of_type, reconnects, run_with_faults, speech,
};

/// The gateway holds the session 24 s (3 s of wall time at the harness's
/// pace: more than twice the edge's scaled half-open bound) with queued
/// frames at position 2, then 1, repeated every 5 s: the edge's output has
/// one `queued` event per position, before any word; the connection is not
/// taken for dead; every word of the audio sent meanwhile arrives once, with
/// its timestamp.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateways_queue_is_a_queued_event_and_loses_nothing() {
    let gateway = emulator(EmulatorConfig {
        queue_first: Some(Duration::from_secs(24)),
        ..EmulatorConfig::default()
    })
    .await;
    let (words, audio) = speech(40_000);
    let command = harness::sttpipe(&gateway, &[]);
    let run = run_with_faults(command, audio, Feed::Live, harness::no_controller()).await;
    let events = assert_lossless(&run.out, &words);
    let queued: Vec<u64> = of_type(&events, "queued")
        .iter()
        .map(|e| e["position"].as_u64().expect("a position"))
        .collect();
    assert_eq!(queued, [2, 1], "one event per position");
    let first_queued = events.iter().position(|e| e["type"] == "queued").unwrap();
    let first_word = events.iter().position(|e| e["type"] == "token").unwrap();
    assert!(first_queued < first_word, "queued before the first word");
    assert!(reconnects(&events).is_empty(), "{:?}", reconnects(&events));
    assert_eq!(gateway.sessions().len(), 1, "the queued connection held");
    assert_eq!(gateway.session(0).unwrap().outcome, Outcome::Finished);
}
