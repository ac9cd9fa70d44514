//! The page transcribes the fake microphone: the emulator's words in
//! order; Stop ends the session upstream.

use soniox_emulator::marker;
use soniox_emulator::{AuthMethod, EmulatorConfig};

use super::{FINAL_TEXT, RATE, final_words, open_page};
use crate::util;

/// Words in the WAV (one loop of the fake device).
const WORDS: usize = 8;
/// How long the WAV lasts (the fake device loops it).
const TOTAL_MS: u64 = 5_000;

/// The page, a fake microphone playing marker speech at 44.1 kHz, and the
/// emulator's words in the transcript, in order; then Stop ends the session.
#[tokio::test(flavor = "multi_thread")]
async fn the_browser_page_shows_the_emulators_words() {
    let emu = util::emulator(EmulatorConfig::default()).await;
    // Real time: the fake microphone delivers audio in real time anyway.
    let daemon = util::ws_daemon(&emu, &[], 1.0).await;

    // The first word 1 s in, so that the page's start (the microphone opens
    // before the WebSocket does) cannot cut it.
    let words = marker::script(WORDS, 400, 1_000);
    let pcm = marker::encode(&words, TOTAL_MS, RATE, 1);
    let dir = tempfile::tempdir().unwrap();
    let wav = util::write_file(dir.path(), "speech.wav", &util::wav(&pcm, RATE, 1));
    let (chromium, mut page, port, browser_path) = open_page(&daemon, &wav, "").await;
    assert_eq!(
        page.eval("document.querySelector('#transcript') !== null")
            .await,
        true,
        "the page has a place for the transcript"
    );

    page.eval("document.querySelector('#toggle').click(); true")
        .await;
    page.wait_until(
        "document.body.dataset.state === 'streaming'",
        "the page streams",
    )
    .await;
    let enough = format!(
        "(document.querySelector('#error').textContent !== '') || \
         ({FINAL_TEXT}).trim().split(/\\s+/).length >= {WORDS}"
    );
    page.wait_until(&enough, "the words in the transcript")
        .await;
    let error = page
        .eval("document.querySelector('#error').textContent")
        .await;
    assert_eq!(error, "", "the page shows no error");
    let shown = final_words(&mut page).await;
    let expected: Vec<String> = words.iter().map(|w| w.text.trim().to_owned()).collect();
    assert_eq!(
        shown[..WORDS],
        expected[..],
        "the emulator's words, in order (the fake device loops the file)"
    );

    // Stop: the page ends the audio and the daemon answers `finished`.
    page.eval("document.querySelector('#toggle').click(); true")
        .await;
    page.wait_until(
        "document.body.dataset.finished === '1' && document.body.dataset.state === 'stopped'",
        "the session finishes after Stop",
    )
    .await;
    assert_eq!(
        page.eval("document.querySelector('#error').textContent")
            .await,
        "",
        "no error at the end"
    );

    // Upstream: the daemon's own key, and the page's own rate.
    let sessions = emu.sessions();
    assert_eq!(sessions.len(), 1, "one upstream session: {sessions:?}");
    let record = &sessions[0];
    assert_eq!((record.auth, record.key_ok), (AuthMethod::Header, true));
    let start = record.start_request.as_ref().expect("a start request");
    assert_eq!(start["sample_rate"], RATE, "{start}");
    assert_eq!(start["audio_format"], "pcm_s16le", "{start}");
    assert_eq!(start["num_channels"], 1, "{start}");
    assert!(start.get("api_key").is_none(), "{start}");
    assert!(
        record.ended_audio,
        "the page's Stop ends the audio upstream"
    );
    assert!(
        record.words_sent_final.len() >= WORDS,
        "{:?}",
        record.words_sent_final
    );

    let mut browser = super::Cdp::connect(&format!("ws://127.0.0.1:{port}{browser_path}")).await;
    chromium.close(&mut browser).await;
}
