//! Recognition as a client sees it: tokens going from non-final to final,
//! finalize and `<fin>`, endpoint detection and `<end>`, the optional token
//! fields, other sample rates and channel counts, container formats.

mod common;

use futures_util::SinkExt;
use serde_json::{Value, json};
use soniox_emulator::marker;
use soniox_emulator::{EmulatorConfig, Outcome};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::{Bytes, Message};

use common::{
    Auth, CHUNK, KEY, connect, emulator, final_texts, finish, recv, recv_all, send_audio,
    send_text, started, started_with, texts, tokens, transcribe,
};

#[tokio::test]
async fn tokens_evolve_from_non_final_to_final_once() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = started(&emu).await;
    let words = marker::script(8, 600, 250);
    let total = 6000;
    let msgs = transcribe(&mut ws, &words, total).await;

    // Finals: every word exactly once, in order, with exact timestamps.
    let finals: Vec<(String, u64, u64)> = tokens(&msgs)
        .iter()
        .filter(|t| t["is_final"] == true)
        .map(|t| {
            (
                t["text"].as_str().unwrap().to_owned(),
                t["start_ms"].as_u64().unwrap(),
                t["end_ms"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<_> = words
        .iter()
        .map(|w| (w.text.clone(), w.start_ms, w.end_ms()))
        .collect();
    assert_eq!(finals, expected);

    // Each word was seen non-final before it was final.
    for w in &words {
        let first_nf = msgs.iter().position(|m| {
            m["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["is_final"] == false && t["start_ms"] == w.start_ms)
        });
        let first_f = msgs.iter().position(|m| {
            m["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .any(|t| t["is_final"] == true && t["start_ms"] == w.start_ms)
        });
        assert!(first_nf.unwrap() < first_f.unwrap(), "{}", w.text);
    }

    // Within a message, finals come before non-finals; counters behave.
    let mut prev = (0, 0);
    for m in &msgs {
        let flags: Vec<bool> = m["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["is_final"] == true)
            .collect();
        assert!(flags.windows(2).all(|p| p[0] || !p[1]), "{m}");
        let f = m["final_audio_proc_ms"].as_u64().unwrap();
        let t = m["total_audio_proc_ms"].as_u64().unwrap();
        assert!(f <= t && f >= prev.0 && t >= prev.1 && t <= total, "{m}");
        for tok in m["tokens"].as_array().unwrap() {
            assert!(tok["end_ms"].as_u64().unwrap() <= t);
            let c = tok["confidence"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&c));
            assert!(tok.get("speaker").is_none() && tok.get("language").is_none());
        }
        prev = (f, t);
    }

    let rec = emu.session(0).unwrap();
    assert_eq!(rec.words_sent_final, texts(&words));
    assert_eq!(rec.audio_ms, total);
    assert_eq!(rec.audio_bytes, total * 32);
    assert_eq!(rec.receipts.len(), (total as usize * 32).div_ceil(CHUNK));
    assert_eq!(rec.receipts.last().unwrap().1, total);
    assert_eq!(rec.outcome, Outcome::Finished);
    emu.shutdown().await;
}

#[tokio::test]
async fn finalize_emits_fin_after_finals() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = started(&emu).await;
    let words = marker::script(2, 400, 100);
    // 200 ms of silence after the last word: less than the finalize lag.
    let audio = marker::encode(&words, 1000, 16_000, 1);
    send_audio(&mut ws, &audio).await;
    send_text(&mut ws, r#"{"type":"finalize","trailing_silence_ms":200}"#).await;
    let fin = loop {
        let m = recv(&mut ws).await;
        if tokens(std::slice::from_ref(&m))
            .iter()
            .any(|t| t["text"] == "<fin>")
        {
            break m;
        }
        assert!(final_texts(std::slice::from_ref(&m)).is_empty(), "{m}");
    };
    let toks = fin["tokens"].as_array().unwrap();
    let texts: Vec<_> = toks.iter().map(|t| t["text"].as_str().unwrap()).collect();
    assert_eq!(texts, [" the", " quick", "<fin>"]);
    assert!(toks.iter().all(|t| t["is_final"] == true));
    assert_eq!(toks[2], json!({"text": "<fin>", "is_final": true}));
    assert_eq!(fin["final_audio_proc_ms"], 1000);
    assert_eq!(fin["total_audio_proc_ms"], 1000);
    // A finalize with nothing pending still acknowledges with <fin>.
    send_text(&mut ws, r#"{"type":"finalize"}"#).await;
    let again = recv(&mut ws).await;
    assert_eq!(
        again["tokens"],
        json!([{"text": "<fin>", "is_final": true}])
    );
    let (rest, _) = finish(&mut ws).await;
    assert!(final_texts(&rest).is_empty());
    let rec = emu.session(0).unwrap();
    assert_eq!((rec.finalizes, rec.fins_sent), (2, 2));
    assert_eq!(rec.words_sent_final, [" the", " quick"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn endpoint_detection_emits_end_once_per_utterance() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = started_with(
        &emu,
        Auth::Header(KEY),
        json!({"enable_endpoint_detection": true, "max_endpoint_delay_ms": 1000}),
    )
    .await;
    // Two utterances separated by 3 s of silence.
    let mut words = marker::sentence("hello world", 200, 300, 100);
    words.extend(marker::sentence("good bye", 4000, 300, 100));
    let msgs = transcribe(&mut ws, &words, 7000).await;
    let finals = final_texts(&msgs);
    assert_eq!(
        finals,
        [" hello", " world", "<end>", " good", " bye", "<end>"]
    );
    // The first <end> came once the audio passed 900 + 1000 ms.
    let at = msgs
        .iter()
        .find(|m| {
            tokens(std::slice::from_ref(m))
                .iter()
                .any(|t| t["text"] == "<end>")
        })
        .unwrap();
    let total = at["total_audio_proc_ms"].as_u64().unwrap();
    assert!((1900..1900 + 120).contains(&total), "{at}");
    assert_eq!(emu.session(0).unwrap().ends_sent, 2);
    emu.shutdown().await;
}

#[tokio::test]
async fn default_endpoint_delay_applies() {
    let emu = emulator(EmulatorConfig {
        default_endpoint_delay_ms: 600,
        finalize_lag_ms: 2000,
        ..Default::default()
    })
    .await;
    let mut ws = started_with(
        &emu,
        Auth::Header(KEY),
        json!({"enable_endpoint_detection": true}),
    )
    .await;
    let words = marker::sentence("hi", 100, 300, 0);
    let audio = marker::encode(&words, 1200, 16_000, 1);
    send_audio(&mut ws, &audio).await;
    // The endpoint (at 1000 ms) finalizes the word before the 2 s lag would.
    let m = loop {
        let m = recv(&mut ws).await;
        if !final_texts(std::slice::from_ref(&m)).is_empty() {
            break m;
        }
    };
    assert_eq!(final_texts(std::slice::from_ref(&m)), [" hi", "<end>"]);
    emu.shutdown().await;
}

#[tokio::test]
async fn empty_binary_frame_ends_audio() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = started(&emu).await;
    let words = marker::script(2, 400, 100);
    send_audio(&mut ws, &marker::encode(&words, 700, 16_000, 1)).await;
    ws.send(Message::Binary(Bytes::new())).await.unwrap();
    let (msgs, close) = recv_all(&mut ws).await;
    assert_eq!(final_texts(&msgs), [" the", " quick"]);
    let last = msgs.last().unwrap();
    assert_eq!(last["finished"], true);
    // The second word ends at 800 ms but only 700 ms of audio arrived.
    let end = tokens(&msgs)
        .into_iter()
        .rfind(|t| t["is_final"] == true)
        .unwrap();
    assert_eq!(end["end_ms"], 700);
    assert_eq!(close.unwrap().code, CloseCode::Normal);
    emu.shutdown().await;
}

#[tokio::test]
async fn optional_token_fields() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = started_with(
        &emu,
        Auth::Header(KEY),
        json!({
            "enable_speaker_diarization": true,
            "enable_language_identification": true,
            "translation": {"type": "two_way", "language_a": "en", "language_b": "es"},
        }),
    )
    .await;
    let words = marker::sentence("hola amigo", 100, 300, 100);
    let msgs = transcribe(&mut ws, &words, 2000).await;
    let finals: Vec<Value> = tokens(&msgs)
        .into_iter()
        .filter(|t| t["is_final"] == true)
        .collect();
    assert_eq!(finals.len(), 4);
    assert_eq!(
        finals[0],
        json!({"text": " hola", "start_ms": 100, "end_ms": 400, "confidence": finals[0]["confidence"],
               "is_final": true, "speaker": "1", "language": "en", "translation_status": "original"})
    );
    assert_eq!(
        finals[1],
        json!({"text": " HOLA", "is_final": true, "speaker": "1", "language": "es",
               "translation_status": "translation", "source_language": "en"})
    );
    assert_eq!(finals[3]["text"], " AMIGO");
    // Only originals are recorded.
    assert_eq!(
        emu.session(0).unwrap().words_sent_final,
        [" hola", " amigo"]
    );
    emu.shutdown().await;
}

#[tokio::test]
async fn stereo_and_other_rates_decode() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header(KEY)).await;
    send_text(
        &mut ws,
        json!({"model":"stt-rt-v3","audio_format":"s16le","sample_rate":8000,"num_channels":2})
            .to_string(),
    )
    .await;
    let words = marker::script(3, 500, 333);
    let audio = marker::encode(&words, 2500, 8_000, 2);
    // Odd chunk sizes: frames and markers split across messages.
    for chunk in audio.chunks(1001) {
        ws.send(Message::binary(chunk.to_vec())).await.unwrap();
    }
    let (msgs, _) = finish(&mut ws).await;
    let starts: Vec<u64> = tokens(&msgs)
        .iter()
        .filter(|t| t["is_final"] == true)
        .map(|t| t["start_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(starts, [333, 833, 1333]);
    assert_eq!(msgs.last().unwrap()["total_audio_proc_ms"], 2500);
    emu.shutdown().await;
}

#[tokio::test]
async fn container_formats_count_progress_by_bytes() {
    let emu = emulator(EmulatorConfig::default()).await;
    let mut ws = connect(&emu, Auth::Header(KEY)).await;
    send_text(
        &mut ws,
        json!({"model":"stt-rt-v5","audio_format":"auto"}).to_string(),
    )
    .await;
    for _ in 0..10 {
        ws.send(Message::binary(vec![7u8; 1600])).await.unwrap();
    }
    let (msgs, _) = finish(&mut ws).await;
    assert!(tokens(&msgs).is_empty());
    assert_eq!(msgs.last().unwrap()["total_audio_proc_ms"], 1000);
    assert_eq!(emu.session(0).unwrap().audio_ms, 1000);
    emu.shutdown().await;
}
