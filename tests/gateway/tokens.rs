//! Named client tokens: a wrong one is Soniox's 401 (exit 77 at an edge),
//! `status` and the logs carry the names, Soniox sees them in
//! `client_reference_id`, and a name's own limit refuses its extra
//! session.

use soniox_emulator::EmulatorConfig;

use super::*;

/// A wrong token: Soniox's own 401 frame, exit 77 at the edge, nothing
/// upstream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_token_is_sonioxs_401_and_exit_77() {
    let emu = emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), "# edges\nalpha:token-a\n");
    let path = tokens.to_str().unwrap();
    let gw = gateway(&emu, &["--ws-token-file", path]).await;
    let url = gw.url("/transcribe-websocket");
    let out = util::run(
        edge(&url, "token-b", None),
        util::marker_audio(1, 400, 800).1,
    )
    .await;
    assert_eq!(out.code(), Some(77), "stderr: {}", out.stderr);
    assert!(out.stderr.contains("401"), "{}", out.stderr);

    let mut ws = connect(&url, "token-a-but-longer", None).await;
    send_all(&mut ws, &start_request(json!({})), &[]).await;
    let texts = texts_to_close(&mut ws).await;
    assert_eq!(texts.len(), 1, "{texts:?}");
    let frame: Value = serde_json::from_str(&texts[0]).unwrap();
    assert_eq!(
        (
            &frame["error_code"],
            &frame["error_type"],
            &frame["error_message"]
        ),
        (
            &json!(401),
            &json!("unauthenticated"),
            &json!("Invalid API key.")
        ),
        "{frame}"
    );
    assert_eq!(emu.counts().connected, 0, "nothing reached upstream");
}

/// Two named edges at once: `status` counts their sessions by name (and
/// names a configured client with none), the log lines carry the name,
/// and upstream each session's `client_reference_id` is
/// `gateway/NAME/…`, the edge's own id kept after the name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn named_clients_are_counted_logged_and_attributed() {
    let emu = emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(
        dir.path(),
        "alpha:token-a\nbeta:token-b:max=3\nidle:token-c\n",
    );
    let gw = gateway(&emu, &["--ws-token-file", tokens.to_str().unwrap()]).await;
    let url = gw.url("/transcribe-websocket");
    // 40 s of audio: 5 s at the pace, time enough to look.
    let (words, audio) = util::marker_audio(40, 1_000, 40_000);
    let alpha = tokio::spawn(util::run(edge(&url, "token-a", None), audio.clone()));
    let mut beta = edge(&url, "token-b", None);
    beta.args(["--client-reference-id", "call-7"]);
    let beta = tokio::spawn(util::run(beta, audio));
    let status = wait_status(&gw, "one session for each name", |s| {
        s["per_client"]["alpha"] == 1 && s["per_client"]["beta"] == 1
    })
    .await;
    assert_eq!(status["per_client"]["idle"], 0, "{status}");
    let mut names: Vec<&str> = status["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["client"].as_str().expect("a named session"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["alpha", "beta"], "{status}");

    for run in [alpha, beta] {
        let out = run.await.unwrap();
        assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
        assert_eq!(out.final_words(), util::expected(&words));
    }
    let mut references: Vec<String> = emu
        .sessions()
        .iter()
        .map(|s| {
            let start = s.start_request.as_ref().expect("a start request");
            start["client_reference_id"]
                .as_str()
                .expect("a reference id")
                .to_owned()
        })
        .collect();
    references.sort();
    assert_eq!(references.len(), 2, "{references:?}");
    assert!(
        references[0].starts_with("gateway/alpha/") && references[0].len() > 14,
        "the session id after the name: {references:?}"
    );
    assert_eq!(references[1], "gateway/beta/call-7");
    let logs = gw.logs();
    for name in ["alpha", "beta"] {
        assert!(
            logs.lines().any(|l| l.contains("session start")
                && l.contains(&format!("client=\"{name}\""))
                || l.contains("session start") && l.contains(&format!("client={name}"))),
            "a session start with client {name}:\n{logs}"
        );
    }
}

/// `NAME:TOKEN:max=1`: while the name has a session, its next one is
/// refused with Soniox's 429; once it ends, the name may stream again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_over_its_own_limit_is_refused() {
    let emu = emulator(EmulatorConfig::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let tokens = token_file(dir.path(), "solo:token-s:max=1\nother:token-o\n");
    let gw = gateway(&emu, &["--ws-token-file", tokens.to_str().unwrap()]).await;
    let url = gw.url("/transcribe-websocket");
    let start = start_request(json!({}));
    let mut first = connect(&url, "token-s", None).await;
    first.send(Message::text(start.to_string())).await.unwrap();
    first.send(Message::binary(vec![0; CHUNK])).await.unwrap();
    wait_status(&gw, "solo streams", |s| s["per_client"]["solo"] == 1).await;

    let mut second = connect(&url, "token-s", None).await;
    send_all(&mut second, &start, &[]).await;
    let texts = texts_to_close(&mut second).await;
    let frame: Value = serde_json::from_str(&texts[0]).unwrap();
    assert_eq!(
        (
            &frame["error_code"],
            &frame["error_type"],
            &frame["error_message"]
        ),
        (
            &json!(429),
            &json!("limit_exceeded"),
            &json!("client solo has too many sessions (at most 1)")
        ),
        "{frame}"
    );
    // Another name is not held by solo's limit.
    let (words, audio) = util::marker_audio(2, 500, 1_500);
    let mut other = connect(&url, "token-o", None).await;
    send_all(&mut other, &start, &audio).await;
    assert_eq!(
        finals(&texts_to_close(&mut other).await),
        util::expected(&words)
    );

    first.send(Message::binary(Vec::<u8>::new())).await.unwrap();
    texts_to_close(&mut first).await;
    wait_status(&gw, "solo's session ended", |s| {
        s["per_client"]["solo"] == 0
    })
    .await;
    let mut again = connect(&url, "token-s", None).await;
    send_all(&mut again, &start, &audio).await;
    assert_eq!(
        finals(&texts_to_close(&mut again).await),
        util::expected(&words)
    );
}
