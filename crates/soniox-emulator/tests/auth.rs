//! The API key: the three places a client may put it, the 401 frames for a
//! missing or wrong one, and the header-only mode.

mod common;

use serde_json::json;
use soniox_emulator::marker;
use soniox_emulator::{AuthMethod, EmulatorConfig, Outcome};

use common::{Auth, KEY, emulator, expect_error, finish, started_with, transcribe};

#[tokio::test]
async fn auth_three_ways() {
    let emu = emulator(EmulatorConfig::default()).await;
    let words = marker::script(2, 400, 100);
    let mut a = started_with(&emu, Auth::Header(KEY), json!({})).await;
    transcribe(&mut a, &words, 1500).await;
    let mut b = started_with(&emu, Auth::Subprotocol(KEY), json!({})).await;
    transcribe(&mut b, &words, 1500).await;
    let mut c = started_with(&emu, Auth::None, json!({"api_key": KEY})).await;
    transcribe(&mut c, &words, 1500).await;
    let s = emu.sessions();
    let auths: Vec<_> = s
        .iter()
        .map(|r| (r.index, r.auth, r.key_ok, r.outcome))
        .collect();
    assert_eq!(
        auths,
        vec![
            (0, AuthMethod::Header, true, Outcome::Finished),
            (1, AuthMethod::Subprotocol, true, Outcome::Finished),
            (2, AuthMethod::StartMessage, true, Outcome::Finished),
        ]
    );
    assert_eq!(
        s[2].start_request.as_ref().unwrap()["api_key"],
        "<redacted>"
    );
    assert!(s.iter().all(|r| r.ended_audio));
    emu.shutdown().await;
}

#[tokio::test]
async fn auth_failures_are_401_frames() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = started_with(&emu, Auth::None, json!({})).await;
    let e = expect_error(&mut ws, 401, "Missing API key.").await;
    assert_eq!(e["error_type"], "unauthenticated");

    for (auth, extra) in [
        (Auth::Header("wrong"), json!({})),
        (Auth::Subprotocol("wrong"), json!({})),
        (Auth::None, json!({"api_key": "nope"})),
    ] {
        let mut ws = started_with(&emu, auth, extra).await;
        expect_error(&mut ws, 401, "Invalid API key.").await;
    }

    // The header key wins over a (wrong) start-message key.
    let mut ws = started_with(&emu, Auth::Header(KEY), json!({"api_key": "nope"})).await;
    let (msgs, _) = finish(&mut ws).await;
    assert_eq!(msgs.last().unwrap()["finished"], true);

    let outcomes: Vec<_> = emu
        .sessions()
        .iter()
        .map(|r| (r.key_ok, r.outcome))
        .collect();
    assert_eq!(outcomes[..4], [(false, Outcome::Error(401)); 4]);
    emu.shutdown().await;
}

#[tokio::test]
async fn strict_2027_mode_refuses_start_message_keys() {
    let emu = emulator(EmulatorConfig {
        require_header_auth: true,
        ..Default::default()
    })
    .await;
    let mut ws = started_with(&emu, Auth::None, json!({"api_key": KEY})).await;
    expect_error(&mut ws, 401, "Missing API key.").await;
    let mut ws = started_with(&emu, Auth::Header(KEY), json!({})).await;
    let (msgs, _) = finish(&mut ws).await;
    assert_eq!(msgs.last().unwrap()["finished"], true);
    emu.shutdown().await;
}
