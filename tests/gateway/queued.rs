//! The `queued` extension frame: a client waiting for an upstream slot is
//! told its place on entering the queue, at each move and as a heartbeat,
//! then gets its transcript as from Soniox; the official Soniox SDK,
//! queued the same way, is not confused by it.

use soniox_emulator::EmulatorConfig;

use super::*;

/// The frame for place `n`, exactly as sent.
fn queued(n: usize) -> String {
    format!(r#"{{"tokens":[],"sttpipe":{{"queued":{{"position":{n}}}}}}}"#)
}

/// With one upstream slot taken, two more clients: the first queued is at
/// 1, the next at 2, told again every heartbeat; the first leaves, and the
/// next is told 1 at once; when the slot frees it gets every word and no
/// extension frame after its first real response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_client_is_told_its_place_then_gets_its_words() {
    let emu = emulator(EmulatorConfig::default()).await;
    let gw = gateway(&emu, &["--max-upstream", "1"]).await;
    let url = gw.url("/transcribe-websocket");
    let start = start_request(json!({}));
    // The slot's holder streams until told to end its audio.
    let mut holder = connect(&url, "", None).await;
    holder.send(Message::text(start.to_string())).await.unwrap();
    holder.send(Message::binary(vec![0; CHUNK])).await.unwrap();
    wait_status(&gw, "the holder streams", |s| {
        s["upstream"]["sessions"] == 1
    })
    .await;

    let mut leaver = connect(&url, "", None).await;
    leaver.send(Message::text(start.to_string())).await.unwrap();
    assert_eq!(next_text(&mut leaver).await, Some(queued(1)));
    let (words, audio) = util::marker_audio(4, 500, 2_500);
    let mut waiter = connect(&url, "", None).await;
    send_all(&mut waiter, &start, &audio).await;
    assert_eq!(next_text(&mut waiter).await, Some(queued(2)));
    // The heartbeat: 5 s of the daemon's time.
    let heard = tokio::time::Instant::now();
    assert_eq!(next_text(&mut waiter).await, Some(queued(2)));
    let gap = heard.elapsed().as_secs_f64() * PACE;
    assert!(
        (4.0..20.0).contains(&gap),
        "a heartbeat every 5 s, not {gap:.2} s"
    );

    drop(leaver);
    assert_eq!(
        next_text(&mut waiter).await,
        Some(queued(1)),
        "told at once when the queue moves"
    );
    holder
        .send(Message::binary(Vec::<u8>::new()))
        .await
        .unwrap();
    let held = texts_to_close(&mut holder).await;
    assert!(
        !held.iter().any(|t| t.contains("sttpipe")),
        "no extension frame for an admitted client: {held:?}"
    );

    let texts = texts_to_close(&mut waiter).await;
    let first_real = texts
        .iter()
        .position(|t| *t != queued(1))
        .expect("real responses");
    assert!(
        !texts[first_real..].iter().any(|t| t.contains("sttpipe")),
        "nothing of sttpipe's once admitted: {texts:?}"
    );
    assert_eq!(finals(&texts), util::expected(&words));
    let last: Value = serde_json::from_str(texts.last().unwrap()).unwrap();
    assert_eq!(last["finished"], true, "{last}");
}

/// The official Soniox SDK, queued behind another client, gets its whole
/// transcript: the extension frames are responses with no tokens to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soniox_sdk_waits_in_the_queue_unconfused() {
    let emu = emulator(EmulatorConfig::default()).await;
    let gw = gateway(&emu, &["--max-upstream", "1"]).await;
    let url = gw.url("/transcribe-websocket");
    let mut holder = connect(&url, "", None).await;
    holder
        .send(Message::text(start_request(json!({})).to_string()))
        .await
        .unwrap();
    holder.send(Message::binary(vec![0; CHUNK])).await.unwrap();
    wait_status(&gw, "the holder streams", |s| {
        s["upstream"]["sessions"] == 1
    })
    .await;

    let dir = tempfile::tempdir().unwrap();
    let (words, audio) = util::marker_audio(4, 500, 2_500);
    let audio_file = util::write_file(dir.path(), "speech.raw", &audio);
    let sdk = tokio::spawn({
        let url = url.clone();
        async move { crate::sdk::run_sdk(&url, "any-key", &audio_file).await }
    });
    wait_status(&gw, "the SDK is queued", |s| s["queue"]["waiting"] == 1).await;
    // The SDK waits through two heartbeats before the slot frees: the time
    // is the point here (the frames it is sent meanwhile), not a guess.
    tokio::time::sleep(Duration::from_secs_f64(10.0 / PACE)).await;
    holder
        .send(Message::binary(Vec::<u8>::new()))
        .await
        .unwrap();
    texts_to_close(&mut holder).await;

    let run = sdk.await.unwrap();
    assert_eq!(run.code, Some(0), "{}\nstderr:\n{}", run.report, run.stderr);
    assert_eq!(run.report["errors"], json!([]), "{}", run.report);
    assert_eq!(run.report["finished"], true, "{}", run.report);
    let finals: Vec<(String, u64)> = run.report["finals"]
        .as_array()
        .expect("finals")
        .iter()
        .map(|f| (f[0].as_str().unwrap().to_owned(), f[1].as_u64().unwrap()))
        .collect();
    assert_eq!(finals, util::expected(&words));
}
