//! The transcript the page keeps: a paragraph per utterance, no stray
//! space; Start again keeps it; the downloads (text, SRT, WebVTT) made in
//! the page from its tokens, on one timeline across its sessions, read by
//! ffmpeg and webvtt-py; a refused token called a token. The page's
//! screenshot is written to `docs/browser-page.png` when
//! `STTPIPE_UPDATE_SCREENSHOT=1`.

use std::path::{Path, PathBuf};

use serde_json::json;
use soniox_emulator::EmulatorConfig;
use soniox_emulator::marker::{self, Word};

use super::{Cdp, RATE, WAIT, final_words, open_page};
use crate::captions::{ffmpeg_convert, parse_srt, parse_vtt, webvtt_py};
use crate::util;

/// Two utterances, 2.8 s apart: the emulator's endpoint comes 2 s after
/// the first one's last word.
const FIRST: &str = "good morning everyone";
const SECOND: &str = "thanks for coming";
/// How long the WAV lasts: the second endpoint comes well before the fake
/// device plays it again.
const TOTAL_MS: u64 = 12_000;

fn speech() -> Vec<Word> {
    let mut words = marker::sentence(FIRST, 1_000, 300, 100);
    words.extend(marker::sentence(SECOND, 5_000, 300, 100));
    words
}

/// The final text of each paragraph, as JSON.
const PARAGRAPHS: &str = "JSON.stringify(Array.from(document.querySelectorAll('#transcript p'))\
    .map(p => p.querySelector('.final')?.textContent ?? ''))";

async fn paragraphs(page: &mut Cdp) -> Vec<String> {
    let text = page.eval(PARAGRAPHS).await;
    serde_json::from_str(text.as_str().expect("paragraphs as JSON")).unwrap()
}

async fn click(page: &mut Cdp, id: &str) {
    page.eval(&format!("document.querySelector('#{id}').click(); true"))
        .await;
}

/// Presses Start, waits for streaming, then until `until` holds.
async fn stream_until(page: &mut Cdp, until: &str, what: &str) {
    click(page, "toggle").await;
    page.wait_until(
        "document.body.dataset.state === 'streaming'",
        "the page streams",
    )
    .await;
    let or_error = format!("(document.querySelector('#error').textContent !== '') || ({until})");
    page.wait_until(&or_error, what).await;
    let error = page
        .eval("document.querySelector('#error').textContent")
        .await;
    assert_eq!(error, "", "the page shows no error");
}

async fn stop(page: &mut Cdp) {
    click(page, "toggle").await;
    page.wait_until(
        "document.body.dataset.finished === '1' && document.body.dataset.state === 'stopped'",
        "the session finishes after Stop",
    )
    .await;
}

/// Clicks `button` and waits for the download `name` in `dir`.
async fn download(page: &mut Cdp, button: &str, dir: &Path, name: &str) -> PathBuf {
    click(page, button).await;
    let path = dir.join(name);
    util::wait_for(WAIT, &format!("the download of {name}"), || {
        path.is_file()
            && std::fs::read_dir(dir).unwrap().all(|e| {
                !e.unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".crdownload")
            })
    })
    .await;
    path
}

#[tokio::test(flavor = "multi_thread")]
async fn the_page_keeps_a_paragraph_an_utterance_and_downloads_captions() {
    let emu = util::emulator(EmulatorConfig::default()).await;
    let daemon = util::ws_daemon(&emu, &[], 1.0).await;
    let pcm = marker::encode(&speech(), TOTAL_MS, RATE, 1);
    let dir = tempfile::tempdir().unwrap();
    let wav = util::write_file(dir.path(), "speech.wav", &util::wav(&pcm, RATE, 1));
    let downloads = dir.path().join("downloads");
    std::fs::create_dir(&downloads).unwrap();
    let (chromium, mut page, port, browser_path) = open_page(&daemon, &wav, "").await;
    let mut browser = Cdp::connect(&format!("ws://127.0.0.1:{port}{browser_path}")).await;
    browser
        .call(
            "Browser.setDownloadBehavior",
            json!({"behavior": "allow", "downloadPath": downloads.to_str().unwrap()}),
        )
        .await
        .expect("downloads allowed");
    page.call(
        "Emulation.setDeviceMetricsOverride",
        json!({"width": 800, "height": 400, "deviceScaleFactor": 1, "mobile": false}),
    )
    .await
    .expect("a fixed viewport");

    // Two utterances, two paragraphs.
    let two = format!("{PARAGRAPHS} === {:?}", json!([FIRST, SECOND]).to_string());
    stream_until(&mut page, &two, "two paragraphs").await;
    stop(&mut page).await;
    assert_eq!(paragraphs(&mut page).await, [FIRST, SECOND]);

    // Start again: the transcript stays, the new words follow it, the
    // words not final yet in grey after them.
    let three = "document.querySelectorAll('#transcript p .final').length >= 3 \
                 && document.querySelector('#transcript p:last-child #nonfinal') !== null";
    stream_until(&mut page, three, "a third paragraph and its tail").await;
    let png = screenshot(&mut page).await;
    stop(&mut page).await;
    let kept = paragraphs(&mut page).await;
    assert_eq!(
        kept[..2],
        [FIRST, SECOND],
        "Start again keeps the transcript"
    );
    let words = final_words(&mut page).await;

    let text = download(&mut page, "download-txt", &downloads, "transcript.txt").await;
    let lines: Vec<String> = std::fs::read_to_string(&text)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(lines, kept, "a line a paragraph");

    let srt = download(&mut page, "download-srt", &downloads, "transcript.srt").await;
    let cues = parse_srt(&std::fs::read_to_string(&srt).unwrap());
    let cue_words: Vec<String> = cues.iter().flat_map(crate::captions::Cue::words).collect();
    assert_eq!(cue_words, words, "every word once, in order");
    assert_eq!(cues[0].lines, [FIRST], "an utterance a cue");
    assert_eq!(cues[1].lines, [SECOND]);
    for pair in cues.windows(2) {
        assert!(pair[0].end_ms <= pair[1].start_ms, "one timeline: {pair:?}");
    }
    // ffmpeg reads it (and writes the same cues as WebVTT).
    let converted = ffmpeg_convert(&srt, "ffmpeg.vtt");
    let back = parse_vtt(&std::fs::read_to_string(&converted).unwrap());
    assert_eq!(back.len(), cues.len());

    let vtt = download(&mut page, "download-vtt", &downloads, "transcript.vtt").await;
    let read = webvtt_py(&vtt);
    let times: Vec<(u64, u64)> = cues.iter().map(|c| (c.start_ms, c.end_ms)).collect();
    let vtt_times: Vec<(u64, u64)> = read.iter().map(|c| (c.1, c.2)).collect();
    assert_eq!(vtt_times, times, "the WebVTT has the SRT's cues");

    if std::env::var_os("STTPIPE_UPDATE_SCREENSHOT").is_some() {
        let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        std::fs::create_dir_all(&docs).unwrap();
        std::fs::write(docs.join("browser-page.png"), &png).unwrap();
    }
    chromium.close(&mut browser).await;
}

/// The page as it looks now, as PNG.
async fn screenshot(page: &mut Cdp) -> Vec<u8> {
    let shot = page
        .call("Page.captureScreenshot", json!({"format": "png"}))
        .await
        .expect("a screenshot");
    let png = base64_decode(shot["data"].as_str().expect("base64 data"));
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    png
}

/// A token the daemon does not take, and none where it needs one: the
/// page says "token", the word the user knows, never "API key".
#[tokio::test(flavor = "multi_thread")]
async fn a_refused_token_is_called_a_token() {
    let emu = util::emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let token = util::write_file(dir.path(), "token", b"the-right-token\n");
    let daemon = util::ws_daemon(&emu, &["--ws-token-file", token.to_str().unwrap()], 1.0).await;
    let pcm = marker::encode(&speech(), TOTAL_MS, RATE, 1);
    let wav = util::write_file(dir.path(), "speech.wav", &util::wav(&pcm, RATE, 1));
    let (chromium, mut page, port, browser_path) =
        open_page(&daemon, &wav, "?token=a-wrong-token").await;
    let shown_error = "document.querySelector('#error').textContent !== '' \
                       && document.body.dataset.state === 'stopped'";
    for expected in ["did not accept this token", "needs a token"] {
        click(&mut page, "toggle").await;
        page.wait_until(shown_error, "an error").await;
        let error = page
            .eval("document.querySelector('#error').textContent")
            .await;
        let error = error.as_str().unwrap_or_default().to_owned();
        assert!(error.contains(expected), "{error:?}");
        assert!(!error.contains("API key"), "{error:?}");
        // Next, no token at all.
        page.eval("document.querySelector('#token').value = ''; true")
            .await;
    }
    assert!(emu.sessions().is_empty(), "nothing went upstream");
    let mut browser = Cdp::connect(&format!("ws://127.0.0.1:{port}{browser_path}")).await;
    chromium.close(&mut browser).await;
}

/// Standard base64 (the screenshot's encoding), padding allowed.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => c - b'A',
        b'a'..=b'z' => c - b'a' + 26,
        b'0'..=b'9' => c - b'0' + 52,
        b'+' => 62,
        b'/' => 63,
        _ => panic!("not base64: {c}"),
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').map(value).collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &d)| n | u32::from(d) << (18 - 6 * i));
        out.extend_from_slice(&n.to_be_bytes()[1..chunk.len()]);
    }
    out
}
