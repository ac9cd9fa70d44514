//! The findings on the Soniox-compatible WebSocket endpoint: who may
//! upgrade without a token (row 3), queued clients kept alive (row 7), a
//! departed client's audio dropped (row 16), oversized messages closed with
//! 1009 (row 18). Each test runs the real daemon with its endpoint on a free
//! loopback port ([`util::ws_daemon`]) and speaks the Soniox protocol to it.

use std::collections::VecDeque;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use soniox_emulator::{Emulator, EmulatorConfig, Outcome};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::BOUND;
use crate::daemon::Daemon;
use crate::util::{self, KEY};

/// How many times faster than real time the daemon and the emulator run.
const PACE: f64 = 8.0;
/// Bytes of 16 kHz mono pcm_s16le per 100 ms message.
const CHUNK: usize = 3200;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn start_request() -> Value {
    json!({
        "model": "stt-rt-v5",
        "audio_format": "pcm_s16le",
        "sample_rate": 16000,
        "num_channels": 1,
    })
}

async fn emulator() -> Emulator {
    util::emulator(EmulatorConfig {
        time_scale: PACE,
        ..EmulatorConfig::default()
    })
    .await
}

/// A connection to `url` that has sent [`start_request`].
async fn started(url: &str) -> Ws {
    let (mut ws, _) = tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake within the bound")
        .expect("the upgrade succeeds");
    ws.send(Message::text(start_request().to_string()))
        .await
        .unwrap();
    ws
}

/// Final spoken tokens of Soniox responses as (text, start_ms).
fn finals(frames: &[Value]) -> Vec<(String, u64)> {
    frames
        .iter()
        .flat_map(|f| f["tokens"].as_array().cloned().unwrap_or_default())
        .filter(|t| t["is_final"] == true && !t["text"].as_str().unwrap().starts_with('<'))
        .map(|t| {
            let text = t["text"].as_str().unwrap().to_owned();
            (text, t["start_ms"].as_u64().expect("start_ms"))
        })
        .collect()
}

/// Waits (bounded) until the daemon's status satisfies `condition`.
async fn wait_status(daemon: &util::WsDaemon, what: &str, condition: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + BOUND;
    loop {
        let status = daemon.status().await;
        if condition(&status) {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: {status}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The status line the endpoint answers a WebSocket upgrade with, given
/// the request's `Host` and `Origin` lines (each ending in CRLF).
async fn upgrade_status(port: u16, headers: &str) -> String {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let request = format!(
        "GET /transcribe-websocket HTTP/1.1\r\n{headers}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut line = Vec::new();
    let read = async {
        let mut byte = [0u8; 1];
        while !line.ends_with(b"\r\n") && stream.read(&mut byte).await.unwrap_or(0) == 1 {
            line.push(byte[0]);
        }
    };
    tokio::time::timeout(BOUND, read)
        .await
        .expect("an answer within the bound");
    String::from_utf8_lossy(&line).trim_end().to_owned()
}

/// The `sttpipe: warning:` lines a daemon with `args` prints on stderr
/// when it starts and when it reloads once.
async fn warnings(emulator: &Emulator, args: &[&str]) -> Vec<String> {
    let mut daemon = Daemon::launch(Some((&emulator.url(), KEY)), args, &[]).await;
    let pid = nix::unistd::Pid::from_raw(daemon.child.id().unwrap() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    daemon.expect_notification("READY=1").await;
    let mut stderr = daemon.child.stderr.take().unwrap();
    assert!(daemon.terminate().await.success());
    let mut text = String::new();
    tokio::time::timeout(BOUND, stderr.read_to_string(&mut text))
        .await
        .expect("stderr ends with the daemon")
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("sttpipe: warning:"))
        .map(str::to_owned)
        .collect()
}

/// Row 3 (medium): without a token, Origin == Host was the only guard, and
/// DNS rebinding passes it; a non-loopback address without a token went
/// unwarned.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row3_without_a_token_only_local_names_may_upgrade() {
    let emu = emulator().await;
    let daemon = util::ws_daemon(&emu, &[], PACE).await;
    let port = daemon.port;
    for headers in [
        // A page on evil.example, its name pointed at 127.0.0.1: same
        // origin, and the name is the attacker's.
        format!("Host: evil.example:{port}\r\nOrigin: http://evil.example:{port}\r\n"),
        format!("Host: evil.example:{port}\r\n"),
        format!("Host: localhost.evil.example:{port}\r\n"),
        format!("Host: 127.0.0.1.evil.example:{port}\r\n"),
        format!("Host: 127.0.0.1:{port}\r\nOrigin: https://evil.example\r\n"),
        format!("Host: 127.0.0.1:{port}\r\nOrigin: null\r\n"),
        String::new(),
    ] {
        assert_eq!(
            upgrade_status(port, &headers).await,
            "HTTP/1.1 403 Forbidden",
            "{headers:?}"
        );
    }
    for headers in [
        format!("Host: 127.0.0.1:{port}\r\n"),
        format!("Host: 127.0.0.1:{port}\r\nOrigin: http://127.0.0.1:{port}\r\n"),
        format!("Host: localhost:{port}\r\nOrigin: http://localhost:{port}\r\n"),
        format!("Host: 127.0.0.2:{port}\r\n"),
        format!("Host: [::1]:{port}\r\n"),
    ] {
        assert_eq!(
            upgrade_status(port, &headers).await,
            "HTTP/1.1 101 Switching Protocols",
            "{headers:?}"
        );
    }
    // With a token, the token is the access rule, whatever the names.
    let dir = tempfile::tempdir().unwrap();
    let token = util::write_file(dir.path(), "token", b"local-token\n");
    let guarded = util::ws_daemon(&emu, &["--ws-token-file", token.to_str().unwrap()], PACE).await;
    let headers = format!(
        "Host: evil.example:{0}\r\nOrigin: http://evil.example:{0}\r\n",
        guarded.port
    );
    assert_eq!(
        upgrade_status(guarded.port, &headers).await,
        "HTTP/1.1 101 Switching Protocols"
    );

    // A non-loopback address without a token is said at start and reload.
    let open = warnings(&emu, &["--ws-listen", "0.0.0.0:0"]).await;
    assert_eq!(open.len(), 2, "{open:?}");
    assert!(
        open[0].contains("0.0.0.0:") && open[0].contains("--ws-token-file"),
        "{open:?}"
    );
    let loopback = warnings(&emu, &["--ws-listen", "127.0.0.1:0"]).await;
    assert_eq!(loopback, Vec::<String>::new());
    let token_arg = token.to_str().unwrap();
    let with_token = warnings(
        &emu,
        &["--ws-listen", "0.0.0.0:0", "--ws-token-file", token_arg],
    )
    .await;
    assert_eq!(with_token, Vec::<String>::new());
}

/// How often the keepalive client pings, and how late a pong may be.
const PING_EVERY: Duration = Duration::from_millis(200);
const PONG_TIMEOUT: Duration = Duration::from_secs(1);

/// A Soniox client with a fast keepalive (Python `websockets` pings every
/// 20 s and gives up after 20 s more): it sends `audio` at the daemon's
/// real-time pace, then the end of audio, and reads to the close; it gives
/// up as soon as a pong is [`PONG_TIMEOUT`] late. Returns the responses.
async fn keepalive_client(url: String, audio: Vec<u8>) -> Result<Vec<Value>, String> {
    let mut ws = started(&url).await;
    let mut chunks: VecDeque<Vec<u8>> = audio.chunks(CHUNK).map(<[u8]>::to_vec).collect();
    let mut sent_all = false;
    let mut pings = tokio::time::interval(PING_EVERY);
    let mut feed = tokio::time::interval(Duration::from_secs_f64(0.1 / PACE));
    let mut ping_out: Option<Instant> = None;
    let mut frames = Vec::new();
    let deadline = tokio::time::sleep(BOUND);
    tokio::pin!(deadline);
    loop {
        tokio::select! {
            _ = pings.tick() => match ping_out {
                Some(at) if at.elapsed() > PONG_TIMEOUT => {
                    return Err(format!("no pong within {PONG_TIMEOUT:?}"));
                }
                Some(_) => {}
                None => {
                    ws.send(Message::Ping(vec![7].into())).await.map_err(|e| e.to_string())?;
                    ping_out = Some(Instant::now());
                }
            },
            _ = feed.tick(), if !sent_all => {
                let message = match chunks.pop_front() {
                    Some(chunk) => Message::binary(chunk),
                    None => {
                        sent_all = true;
                        Message::text("")
                    }
                };
                ws.send(message).await.map_err(|e| e.to_string())?;
            }
            message = ws.next() => match message {
                Some(Ok(Message::Pong(_))) => ping_out = None,
                Some(Ok(Message::Text(text))) => {
                    frames.push(serde_json::from_str(&text).map_err(|e| e.to_string())?);
                }
                Some(Ok(Message::Close(Some(close)))) if close.code == CloseCode::Normal => {
                    return Ok(frames);
                }
                Some(Ok(Message::Close(close))) => return Err(format!("closed: {close:?}")),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err.to_string()),
                None => return Err("the connection ended without a close".into()),
            },
            () = &mut deadline => return Err("not finished within the bound".into()),
        }
    }
}

/// Row 7 (medium): queued WebSocket clients got no pong until a slot
/// freed, so clients with a keepalive dropped; a queued client that left
/// kept its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row7_queued_clients_get_pongs_keep_their_audio_and_leave_at_once() {
    let emu = emulator().await;
    let daemon = util::ws_daemon(&emu, &["--max-upstream", "1"], PACE).await;
    let url = daemon.url("/transcribe-websocket");
    // The slot's holder sends a little audio, then keepalives only, until
    // it is let go.
    let mut holder = started(&url).await;
    holder
        .send(Message::binary(vec![0u8; CHUNK]))
        .await
        .unwrap();
    util::wait_for(BOUND, "the holder streams", || {
        emu.streaming_sessions() == 1
    })
    .await;
    let (release, mut released) = tokio::sync::oneshot::channel::<()>();
    let holder = tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = &mut released => break,
                () = tokio::time::sleep(Duration::from_millis(100)) => {
                    let keepalive = Message::text(r#"{"type":"keepalive"}"#);
                    holder.send(keepalive).await.unwrap();
                }
            }
        }
        holder.send(Message::text("")).await.unwrap();
        while let Some(Ok(_)) = holder.next().await {}
    });

    let (words, audio) = util::marker_audio(12, 500, 7_000);
    let queued: Vec<_> = (0..3)
        .map(|_| tokio::spawn(keepalive_client(url.clone(), audio.clone())))
        .collect();
    let leaver = started(&url).await;
    wait_status(&daemon, "four clients queued", |s| {
        s["queue"]["waiting"] == 4
    })
    .await;
    drop(leaver);
    wait_status(&daemon, "the client that left gave up its place", |s| {
        s["queue"]["waiting"] == 3
    })
    .await;
    // Queued for many ping intervals, with all their audio sent.
    tokio::time::sleep(PONG_TIMEOUT * 3).await;
    release.send(()).unwrap();
    for (n, client) in queued.into_iter().enumerate() {
        let frames = client
            .await
            .unwrap()
            .unwrap_or_else(|err| panic!("queued client {n}: {err}"));
        assert_eq!(finals(&frames), util::expected(&words), "client {n}");
        assert_eq!(frames.last().unwrap()["finished"], true, "client {n}");
    }
    holder.await.unwrap();
    assert_eq!(
        emu.counts().connected,
        4,
        "the client that left never went upstream"
    );
    for record in emu.sessions().iter().skip(1) {
        assert_eq!(
            record.audio_bytes,
            audio.len() as u64,
            "every byte, in order"
        );
    }
    wait_status(&daemon, "no session left", |s| s["sessions"] == json!([])).await;
}

/// Row 16 (low): a client that flooded ~145 s of audio and left kept its
/// session streaming (and billed) for 2.5 min.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row16_a_departed_clients_buffered_audio_is_not_streamed() {
    let emu = emulator().await;
    let daemon = util::ws_daemon(&emu, &[], PACE).await;
    let mut ws = started(&daemon.url("/")).await;
    // 100 s of silence as fast as the socket takes it (the buffers on
    // both sides hold it), so the daemon has nothing to answer until the
    // client is gone.
    let flooded_ms: u64 = 100_000;
    let flood = async {
        for _ in 0..flooded_ms / 100 {
            ws.send(Message::binary(vec![0u8; CHUNK])).await.unwrap();
        }
    };
    tokio::time::timeout(BOUND, flood)
        .await
        .expect("the flood is taken within the bound");
    util::wait_for(BOUND, "the upstream session streams", || {
        emu.streaming_sessions() == 1
    })
    .await;
    let streamed_before = emu.session(0).unwrap().audio_ms;
    drop(ws);
    let left = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(5),
        emu.wait_until(|c| c.ended == 1 && c.open == 0),
    )
    .await
    .unwrap_or_else(|_| {
        let record = emu.session(0).unwrap();
        panic!(
            "the upstream session goes on: {:?} after {} ms of audio",
            record.outcome, record.audio_ms
        )
    });
    let record = emu.session(0).unwrap();
    assert_eq!(record.outcome, Outcome::ClientClosed);
    let streamed_after = record.audio_ms - streamed_before;
    assert!(
        streamed_after < 20_000,
        "{streamed_after} of the {flooded_ms} ms sent streamed in the {:?} after the client left",
        left.elapsed()
    );
    wait_status(&daemon, "the session is gone", |s| {
        s["sessions"] == json!([])
    })
    .await;
}

/// The close frame the daemon sends after `message`, sent in place of the
/// start request (`start` false) or after it.
async fn close_after(url: &str, start: bool, message: Message) -> Option<(CloseCode, String)> {
    let (mut ws, _) = tokio::time::timeout(BOUND, tokio_tungstenite::connect_async(url))
        .await
        .expect("handshake within the bound")
        .expect("the upgrade succeeds");
    if start {
        ws.send(Message::text(start_request().to_string()))
            .await
            .unwrap();
    }
    // The daemon may stop reading before the whole message is out.
    let _ = tokio::time::timeout(BOUND, ws.send(message)).await;
    loop {
        match tokio::time::timeout(BOUND, ws.next())
            .await
            .expect("bounded")
        {
            Some(Ok(Message::Close(frame))) => {
                return frame.map(|f| (f.code, f.reason.to_string()));
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => return None,
        }
    }
}

/// Row 18 (low): a 64 MiB WebSocket message got a TCP drop, no close frame.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row18_an_oversized_message_gets_close_1009() {
    let emu = emulator().await;
    let daemon = util::ws_daemon(&emu, &[], PACE).await;
    let url = daemon.url("/");
    let big = Message::binary(vec![0u8; 64 << 20]);
    let (code, reason) = close_after(&url, true, big)
        .await
        .expect("a close frame, not a dropped connection");
    assert_eq!(code, CloseCode::Size);
    assert!(!reason.is_empty(), "a reason");
    wait_status(&daemon, "the session is abandoned", |s| {
        s["sessions"] == json!([])
    })
    .await;
    tokio::time::timeout(BOUND, emu.wait_until(|c| c.open == 0))
        .await
        .expect("nothing left upstream");
    // As the start request too.
    let big_start = Message::text("x".repeat(20 << 20));
    let (code, _) = close_after(&url, false, big_start)
        .await
        .expect("a close frame, not a dropped connection");
    assert_eq!(code, CloseCode::Size);
}
