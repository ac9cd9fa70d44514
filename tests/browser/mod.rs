//! The daemon's browser page in headless Chromium.
//!
//! The emulator and the real `sttpipe serve --ws-listen` run as in the proxy
//! tests; Debian's Chromium loads the page the daemon serves at `GET /`, with
//! a fake microphone that plays a marker WAV. The tests drive the page
//! through the Chrome DevTools Protocol (tokio-tungstenite, `Runtime.evaluate`):
//! they press its buttons and wait for what it shows. Chromium plays the file
//! bit-exactly only at its fake device's rate, 44.1 kHz, so the markers
//! survive capture, the AudioWorklet and the float-to-s16 conversion and the
//! emulator recognises every word.
//!
//! This file holds the harness (Chromium, the DevTools connection, the page
//! opened); `page` and `transcript` the tests.
//!
//! Chromium comes from `STTPIPE_TEST_CHROMIUM`, else `chromium` on `PATH`;
//! `scripts/test` installs it. Every wait is bounded by [`WAIT`].

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::util;

/// Bound on each step: Chromium's start, the page's load, the words.
const WAIT: Duration = Duration::from_secs(30);
/// The rate of Chromium's fake audio device: the only one it plays exactly.
const RATE: u32 = 44_100;

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

// The page transcribes the fake microphone; Stop ends the session.
mod page;
// Paragraphs, Start again, the downloads, a token refused; the screenshot.
mod transcript;

/// Where Chromium is: `STTPIPE_TEST_CHROMIUM`, else `chromium` on `PATH`.
fn chromium_path() -> PathBuf {
    if let Some(path) = std::env::var_os("STTPIPE_TEST_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "STTPIPE_TEST_CHROMIUM={} does not exist: run scripts/test, which installs Chromium",
            path.display()
        );
        return path;
    }
    util::which("chromium").unwrap_or_else(|| {
        panic!(
            "no chromium on PATH (nor STTPIPE_TEST_CHROMIUM): run scripts/test, which installs it"
        )
    })
}

/// A headless Chromium in its own process group; the whole group is killed
/// when this is dropped, whatever the test did.
struct Chromium {
    child: Child,
    profile: PathBuf,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Chromium {
    /// Starts Chromium on `url`, with a fake microphone that plays `wav`.
    fn start(url: &str, wav: &Path) -> Chromium {
        let dir = tempfile::tempdir().unwrap();
        let profile = dir.path().join("profile");
        let log = dir.path().join("chromium.log");
        let mut command = Command::new(chromium_path());
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--use-fake-ui-for-media-stream",
                "--use-fake-device-for-media-stream",
                "--autoplay-policy=no-user-gesture-required",
                // Port 0: Chromium picks one and writes it to
                // DevToolsActivePort in the profile (no race for a port).
                "--remote-debugging-port=0",
            ])
            .arg(format!(
                "--use-file-for-fake-audio-capture={}",
                wav.display()
            ))
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg(url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().expect("start chromium");
        Chromium {
            child,
            profile,
            log,
            _dir: dir,
        }
    }

    /// What Chromium logged, for failure messages (its last lines).
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }

    /// The DevTools port and the browser target's path, once Chromium has
    /// written them.
    async fn devtools(&mut self) -> (u16, String) {
        let file = self.profile.join("DevToolsActivePort");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            // Written whole by Chromium, but read until both lines are there.
            if let Ok(text) = std::fs::read_to_string(&file)
                && let Some((port, path)) = text.split_once('\n')
                && let Ok(port) = port.trim().parse()
                && path.trim().starts_with("/devtools/browser/")
            {
                return (port, path.trim().to_owned());
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("chromium exited ({status}):\n{}", self.log_tail());
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromium wrote no DevToolsActivePort within {WAIT:?}:\n{}",
                self.log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Asks Chromium to close over `browser` (its browser target) and waits
    /// for it to exit; on drop the group is killed anyway.
    async fn close(mut self, browser: &mut Cdp) {
        let _ = browser.call("Browser.close", json!({})).await;
        let exited = tokio::time::timeout(WAIT, self.child.wait()).await;
        assert!(
            matches!(exited, Ok(Ok(_))),
            "chromium did not exit after Browser.close"
        );
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        // Renderers and the zygote are in the browser's process group.
        if let Some(pid) = self.child.id() {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// A plain HTTP GET on the DevTools port; the body as JSON. Chromium keeps
/// the connection open, so the body is read by its `Content-Length`.
async fn get_json(port: u16, path: &str) -> Value {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("connect to the DevTools port");
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let read = async {
        let mut response = Vec::new();
        loop {
            if let Some(at) = response.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&response[..at]).into_owned();
                let length: usize = head
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse().ok())
                            .flatten()
                    })
                    .unwrap_or_else(|| panic!("no Content-Length: {head}"));
                if response.len() >= at + 4 + length {
                    return (head, response[at + 4..at + 4 + length].to_vec());
                }
            }
            let mut chunk = [0u8; 4096];
            let n = stream
                .read(&mut chunk)
                .await
                .expect("read a DevTools answer");
            assert!(n > 0, "the DevTools port closed mid-answer");
            response.extend_from_slice(&chunk[..n]);
        }
    };
    let (head, body) = tokio::time::timeout(WAIT, read)
        .await
        .expect("a DevTools HTTP answer within the bound");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&body)))
}

/// One Chrome DevTools Protocol connection (to a page or the browser).
struct Cdp {
    ws: Ws,
    next_id: u64,
}

impl Cdp {
    async fn connect(url: &str) -> Cdp {
        let (ws, _) = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(url))
            .await
            .expect("DevTools handshake within the bound")
            .expect("DevTools handshake");
        Cdp { ws, next_id: 1 }
    }

    /// Calls `method` and returns its `result`; events in between are
    /// skipped. `Err` with the protocol's error, or if the connection ends.
    async fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.next_id;
        self.next_id += 1;
        let request = json!({"id": id, "method": method, "params": params});
        self.ws
            .send(Message::text(request.to_string()))
            .await
            .map_err(|e| e.to_string())?;
        let answer = async {
            while let Some(message) = self.ws.next().await {
                let Ok(Message::Text(text)) = message else {
                    continue;
                };
                let value: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
                if value["id"] == id {
                    return match value.get("error") {
                        Some(error) => Err(error.to_string()),
                        None => Ok(value["result"].clone()),
                    };
                }
            }
            Err("the DevTools connection ended".to_owned())
        };
        tokio::time::timeout(WAIT, answer)
            .await
            .unwrap_or_else(|_| panic!("no answer to {method} within {WAIT:?}"))
    }

    /// Evaluates `expression` in the page and returns its value.
    async fn eval(&mut self, expression: &str) -> Value {
        let result = self
            .call(
                "Runtime.evaluate",
                json!({"expression": expression, "returnByValue": true}),
            )
            .await
            .unwrap_or_else(|e| panic!("Runtime.evaluate {expression:?}: {e}"));
        if let Some(exception) = result.get("exceptionDetails") {
            panic!("{expression:?} threw: {exception}");
        }
        result["result"]["value"].clone()
    }

    /// Evaluates `expression` every 50 ms until it is `true`, for at most
    /// [`WAIT`]; `what` and the page's state for the failure message.
    async fn wait_until(&mut self, expression: &str, what: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.eval(expression).await != true {
            if tokio::time::Instant::now() >= deadline {
                panic!(
                    "{what}: not within {WAIT:?}; page: {}",
                    self.page_state().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The page's visible state, for failure messages.
    async fn page_state(&mut self) -> Value {
        self.eval(
            "JSON.stringify({status: document.querySelector('#status')?.textContent, \
             error: document.querySelector('#error')?.textContent, \
             paragraphs: Array.from(document.querySelectorAll('#transcript p')).map(p => p.textContent), \
             nonfinal: document.querySelector('#nonfinal')?.textContent})",
        )
        .await
    }
}

/// The page's final text: its paragraphs' final spans, in order.
const FINAL_TEXT: &str =
    "Array.from(document.querySelectorAll('#transcript .final')).map(e => e.textContent).join(' ')";

/// The page's final text as words.
async fn final_words(page: &mut Cdp) -> Vec<String> {
    let text = page.eval(FINAL_TEXT).await;
    text.as_str()
        .expect("the page's final text")
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Chromium on the daemon's page (with `query`, "" for none) and a fake
/// microphone playing `wav`, the page loaded: Chromium, the page's DevTools
/// connection, the DevTools port and the browser target's path.
async fn open_page(
    daemon: &util::WsDaemon,
    wav: &Path,
    query: &str,
) -> (Chromium, Cdp, u16, String) {
    let page_url = format!("http://127.0.0.1:{}/{query}", daemon.port);
    let mut chromium = Chromium::start(&page_url, wav);
    let (port, browser_path) = chromium.devtools().await;

    // The page's target, once Chromium lists it.
    let deadline = tokio::time::Instant::now() + WAIT;
    let debugger_url = loop {
        let targets = get_json(port, "/json/list").await;
        let found = targets.as_array().and_then(|targets| {
            targets.iter().find_map(|t| {
                (t["type"] == "page" && t["url"].as_str() == Some(page_url.as_str()))
                    .then(|| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
                    .flatten()
            })
        });
        if let Some(url) = found {
            break url;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no page target for {page_url}: {targets}\n{}",
            chromium.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut page = Cdp::connect(&debugger_url).await;
    page.wait_until(
        "document.readyState === 'complete' && document.body.dataset.sttpipePage === '1'",
        "the page loads",
    )
    .await;
    (chromium, page, port, browser_path)
}
