//! Time to first forwarded audio for a new session on the Unix socket,
//! without and with the warm pool: from a client's connect to the
//! emulator's first audio frame of its session, the emulator serving
//! `wss://` so that the TLS and WebSocket handshakes count.

use std::time::{Duration, Instant};

use soniox_emulator::marker::{self, Word};
use soniox_emulator::{Emulator, EmulatorConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

use crate::common::sorted;
use crate::relays::{self, RelayProcess, Target};
use crate::{RATE, ms};

/// Per warm-pool setting, the times (ms) from a client's connect to the
/// emulator's first audio frame of its session.
pub(crate) async fn figures(sessions: usize) -> Vec<(usize, Result<Vec<f64>, String>)> {
    let (ca_pem, identity) = soniox_emulator::tls::test_identity();
    let emulator = Emulator::start(EmulatorConfig {
        tls: Some(identity),
        ..EmulatorConfig::default()
    })
    .await
    .expect("start the wss:// emulator");
    let dir = tempfile::tempdir().expect("tempdir");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write the CA");
    let mut out = Vec::new();
    for pool in [0, 2] {
        let figures =
            match relays::start_daemon(&emulator.url(), 10, pool, false, Some(&ca_file)).await {
                Ok(daemon) => {
                    let figures = times(&emulator, &daemon, pool, sessions).await;
                    daemon.stop().await;
                    figures
                }
                Err(e) => Err(e),
            };
        out.push((pool, figures.map(sorted)));
    }
    let _ = tokio::time::timeout(Duration::from_secs(10), emulator.shutdown()).await;
    out
}

/// `sessions` one after another, 200 ms apart, each a one-word clip sent
/// at once with its header.
async fn times(
    emulator: &Emulator,
    daemon: &RelayProcess,
    pool: usize,
    sessions: usize,
) -> Result<Vec<f64>, String> {
    let Target::Unix(socket) = &daemon.target else {
        return Err("the daemon has no socket".to_owned());
    };
    let words = [Word {
        text: " hi".into(),
        start_ms: 100,
        duration_ms: 200,
    }];
    let audio = marker::encode(&words, 500, RATE, 1);
    let mut figures = Vec::with_capacity(sessions);
    for _ in 0..sessions {
        // Give the pool its time to refill between sessions, as between
        // real arrivals.
        tokio::time::sleep(Duration::from_millis(200)).await;
        let before = emulator.counts().connected;
        let started = Instant::now();
        let session = async {
            let mut stream = UnixStream::connect(socket).await?;
            stream.write_all(b"{\"rate\":16000}\n").await?;
            stream.write_all(&audio).await?;
            stream.shutdown().await?;
            let mut events = String::new();
            stream.read_to_string(&mut events).await?;
            Ok::<_, std::io::Error>(events)
        };
        let events = tokio::time::timeout(Duration::from_secs(30), session)
            .await
            .map_err(|_| "a session did not finish within 30 s".to_owned())?
            .map_err(|e| format!("a session failed: {e}"))?;
        if !events.contains(" hi") {
            return Err(format!("the word did not come back: {events}"));
        }
        // The session's upstream is a new connection or one of the pool's.
        let first_audio = (before.saturating_sub(pool)..emulator.counts().connected)
            .filter_map(|index| emulator.session(index)?.first_audio_at)
            .filter(|t| *t >= started)
            .min()
            .ok_or("the emulator got no audio")?;
        figures.push(ms(first_audio - started));
    }
    Ok(figures)
}
