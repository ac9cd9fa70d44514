//! HTTP on the WebSocket endpoint, up to the handshake: reading the request
//! head (bounded in size; the caller bounds it in time), parsing it, routing
//! it (the page, the health check, an upgrade, or a plain refusal, with who
//! may upgrade without a token), checking a WebSocket upgrade and reading
//! the client's key from it, and the plain responses.
//!
//! Nothing here keeps a connection open past one response, except an
//! accepted upgrade, which the caller turns into a WebSocket.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

/// The browser page served at `GET /`.
const PAGE: &str = include_str!("page.html");

/// Longest request head accepted (request line and headers).
const MAX_HEAD_BYTES: usize = 16 * 1024;
/// Most headers in a request head; browsers send about 20.
const MAX_HEADERS: usize = 64;
/// Bytes read from the socket at a time while reading the head.
const HEAD_CHUNK: usize = 2048;
/// The subprotocol that announces a key in the next subprotocol.
const KEY_SUBPROTOCOL: &str = "soniox-api-key";

/// Why no request head was read.
#[derive(Debug)]
pub(super) enum HeadError {
    /// Longer than [`MAX_HEAD_BYTES`], or more than [`MAX_HEADERS`]
    /// headers: 431.
    TooLarge,
    /// Not an HTTP/1.x request head, or a header value that is not UTF-8:
    /// 400.
    Malformed,
    /// The socket failed: nothing to answer.
    Io(std::io::Error),
}

/// Reads up to the end of the request head. Returns the parsed head and
/// the bytes read past it (the start of the WebSocket stream, if the
/// client did not wait for the 101); `None` if the client closed first.
pub(super) async fn read_head(
    stream: &mut (impl AsyncRead + Unpin),
) -> Result<Option<(Head, Vec<u8>)>, HeadError> {
    let mut buf = Vec::with_capacity(HEAD_CHUNK);
    loop {
        let read_from = buf.len();
        buf.reserve(HEAD_CHUNK);
        let n = stream.read_buf(&mut buf).await.map_err(HeadError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        // A head ends with a newline and a header is counted at one, so
        // parsing only when new bytes bring a newline misses neither the
        // end nor one header too many; and since each such read ends a new
        // line of the head, one head is parsed at most MAX_HEADERS + 2
        // times however the client trickles it in.
        if buf[read_from..].contains(&b'\n')
            && let Some((head, len)) = Head::parse(&buf)?
        {
            if len > MAX_HEAD_BYTES {
                return Err(HeadError::TooLarge);
            }
            let rest = buf.split_off(len);
            return Ok(Some((head, rest)));
        }
        if buf.len() > MAX_HEAD_BYTES {
            return Err(HeadError::TooLarge);
        }
    }
}

/// A parsed request head.
#[derive(Debug)]
pub(super) struct Head {
    method: String,
    /// The target's path, without the query.
    pub(super) path: String,
    /// Header names as sent, in order, repeats kept.
    headers: Vec<(String, String)>,
}

impl Head {
    /// Parses the HTTP/1.x request head at the start of `bytes`: the head
    /// and its length in bytes (blank line included), or `None` if `bytes`
    /// ends before the head does.
    pub(super) fn parse(bytes: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
        // httparse skips empty lines before the request line; they are
        // refused instead, so that every line of a head read so far is one
        // of its own (which bounds the parses in `read_head`).
        if matches!(bytes.first(), Some(b'\r' | b'\n')) {
            return Err(HeadError::Malformed);
        }
        let mut slots = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut request = httparse::Request::new(&mut slots);
        let len = match request.parse(bytes) {
            Ok(httparse::Status::Complete(len)) => len,
            Ok(httparse::Status::Partial) => return Ok(None),
            Err(httparse::Error::TooManyHeaders) => return Err(HeadError::TooLarge),
            Err(_) => return Err(HeadError::Malformed),
        };
        // A complete parse sets the method and the target (httparse's
        // contract); their absence would be a head that is not one.
        let (Some(method), Some(target)) = (request.method, request.path) else {
            return Err(HeadError::Malformed);
        };
        let path = target.split(['?', '#']).next().unwrap_or_default();
        let headers = request
            .headers
            .iter()
            .map(|header| {
                let value = std::str::from_utf8(header.value).map_err(|_| HeadError::Malformed)?;
                Ok((header.name.to_owned(), value.trim().to_owned()))
            })
            .collect::<Result<_, HeadError>>()?;
        let head = Head {
            method: method.to_owned(),
            path: path.to_owned(),
            headers,
        };
        Ok(Some((head, len)))
    }

    /// Every value of header `name` (any case), joined by commas.
    fn header(&self, name: &str) -> Option<String> {
        let values: Vec<&str> = self
            .headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect();
        (!values.is_empty()).then(|| values.join(", "))
    }

    /// Whether header `name` lists `token` (comma-separated, any case).
    fn has_token(&self, name: &str, token: &str) -> bool {
        self.header(name)
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    }
}

/// Where a request goes.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Route {
    /// The browser page; no body for HEAD.
    Page { with_body: bool },
    /// `GET /health` (or HEAD): for load balancers.
    Health { with_body: bool },
    /// A WebSocket upgrade at a Soniox path.
    Upgrade,
    /// A plain refusal.
    Plain(u16, &'static str),
}

/// Routes a request. `has_token` says whether the daemon has a local token;
/// `local` is the address the client connected to (the listen address, or
/// one of its interfaces' for a wildcard bind).
pub(super) fn route(head: &Head, has_token: bool, local: Option<SocketAddr>) -> Route {
    let upgrade = head.has_token("upgrade", "websocket");
    if upgrade {
        if head.path != "/" && head.path != "/transcribe-websocket" {
            return Route::Plain(404, "Not Found");
        }
        if !has_token && !names_this_host(head, local) {
            return Route::Plain(403, "Forbidden");
        }
        return Route::Upgrade;
    }
    match (head.method.as_str(), head.path.as_str()) {
        ("GET", "/") => Route::Page { with_body: true },
        ("HEAD", "/") => Route::Page { with_body: false },
        ("GET", "/health") => Route::Health { with_body: true },
        ("HEAD", "/health") => Route::Health { with_body: false },
        (_, "/" | "/health") => Route::Plain(405, "Method Not Allowed"),
        _ => Route::Plain(404, "Not Found"),
    }
}

/// Without a token, whether an upgrade comes from this machine: its `Host`
/// (and its `Origin`, if sent) must name a loopback host or the address the
/// client connected to.
///
/// Any local process may connect anyway, so a page on a loopback origin
/// gains nothing; a page elsewhere must not use this daemon's key through
/// its visitor's browser. Comparing `Origin` with `Host` is not enough:
/// DNS rebinding points the attacker's own name at 127.0.0.1, and the
/// browser then sends that name in both. A name the attacker owns never
/// passes here, since only `localhost` and address literals do.
fn names_this_host(head: &Head, local: Option<SocketAddr>) -> bool {
    let Some(host) = head.header("host") else {
        return false;
    };
    if !is_local_authority(&host, 80, local) {
        return false;
    }
    let Some(origin) = head.header("origin") else {
        // Non-browser clients send no Origin.
        return true;
    };
    let (default_port, authority) = match origin.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => (80, rest),
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("https") => (443, rest),
        // `null` (a sandboxed or file page) and other schemes.
        _ => return false,
    };
    is_local_authority(authority.trim_end_matches('/'), default_port, local)
}

/// Whether `authority` (`host[:port]`, `[v6]:port`) names a loopback host
/// (`localhost`, 127.0.0.0/8, `[::1]`) on any port, or exactly `local`
/// (its port being `default_port` if none is given).
fn is_local_authority(authority: &str, default_port: u16, local: Option<SocketAddr>) -> bool {
    let (ip, port) = if let Some(rest) = authority.strip_prefix('[') {
        let Some((v6, after)) = rest.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        match v6.parse::<Ipv6Addr>() {
            Ok(ip) => (Some(IpAddr::V6(ip)), port),
            Err(_) => return false,
        }
    } else {
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        };
        if host.eq_ignore_ascii_case("localhost") {
            (None, port)
        } else {
            match host.parse::<Ipv4Addr>() {
                Ok(ip) => (Some(IpAddr::V4(ip)), port),
                Err(_) => return false,
            }
        }
    };
    let port = match port {
        None => default_port,
        // Digits only: `u16::from_str` would also take a sign.
        Some(port) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => {
            match port.parse::<u16>() {
                Ok(port) => port,
                Err(_) => return false,
            }
        }
        Some(_) => return false,
    };
    let Some(ip) = ip.map(|ip| ip.to_canonical()) else {
        // `localhost`.
        return true;
    };
    ip.is_loopback()
        || local.is_some_and(|local| local.ip().to_canonical() == ip && local.port() == port)
}

/// A checked WebSocket upgrade request.
pub(super) struct Upgrade {
    /// The `Sec-WebSocket-Accept` answer.
    accept: String,
    /// Whether the client offered `soniox-api-key` (to be echoed).
    key_subprotocol: bool,
    /// The client's key from the header or the subprotocols, if any.
    pub(super) key: Option<ClientKey>,
}

/// A key a client presented, and where it came from (for the log: the key
/// itself is never logged).
pub(super) struct ClientKey {
    pub(super) key: String,
    pub(super) source: &'static str,
}

impl std::fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClientKey({}, <redacted>)", self.source)
    }
}

type HttpRefusal = (u16, &'static str, &'static [&'static str]);

impl Upgrade {
    /// Checks an upgrade request (RFC 6455 §4.2.1) and reads its key.
    pub(super) fn check(head: &Head) -> Result<Upgrade, HttpRefusal> {
        if head.method != "GET" || !head.has_token("connection", "upgrade") {
            return Err((400, "Bad Request", &[]));
        }
        if head.header("sec-websocket-version").as_deref() != Some("13") {
            return Err((426, "Upgrade Required", &["Sec-WebSocket-Version: 13"]));
        }
        let Some(nonce) = head
            .header("sec-websocket-key")
            .filter(|k| !k.contains(','))
        else {
            return Err((400, "Bad Request", &[]));
        };
        let bearer = head.header("authorization").and_then(|value| {
            let (scheme, key) = value.split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| key.trim().to_owned())
        });
        let protocols: Vec<String> = head
            .header("sec-websocket-protocol")
            .unwrap_or_default()
            .split(',')
            .map(|p| p.trim().to_owned())
            .filter(|p| !p.is_empty())
            .collect();
        let at = protocols.iter().position(|p| p == KEY_SUBPROTOCOL);
        let sub_key = at.map(|i| protocols.get(i + 1).cloned().unwrap_or_default());
        let key = match (bearer, sub_key) {
            (Some(key), _) => Some(ClientKey {
                key,
                source: "header",
            }),
            (None, Some(key)) => Some(ClientKey {
                key,
                source: "subprotocol",
            }),
            (None, None) => None,
        };
        Ok(Upgrade {
            accept: derive_accept_key(nonce.as_bytes()),
            key_subprotocol: at.is_some(),
            key,
        })
    }

    /// The `101 Switching Protocols` head that accepts this upgrade.
    pub(super) fn response(&self) -> String {
        let mut response = format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {}\r\n",
            self.accept
        );
        // Browsers fail the handshake unless the server selects one of the
        // subprotocols they offered.
        if self.key_subprotocol {
            response.push_str("Sec-WebSocket-Protocol: ");
            response.push_str(KEY_SUBPROTOCOL);
            response.push_str("\r\n");
        }
        response.push_str("\r\n");
        response
    }
}

/// Writes a plain-text refusal and closes.
pub(super) async fn refuse(
    stream: &mut (impl AsyncWrite + Unpin),
    status: u16,
    reason: &str,
    extra_headers: &[&str],
) {
    let body = format!("{status} {reason}\n");
    let mut head = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n",
        body.len()
    );
    for header in extra_headers {
        head.push_str(header);
        head.push_str("\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body.as_bytes());
    // The client may be gone already; nothing to do about it.
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

/// Serves the page (its head only for `HEAD`), with headers that keep it
/// self-contained: it may run inline script, an AudioWorklet from a blob:
/// URL and a WebSocket to its own origin, and load nothing else.
pub(super) async fn respond_page(stream: &mut (impl AsyncWrite + Unpin), with_body: bool) {
    let length = PAGE.len();
    let body: &[u8] = if with_body { PAGE.as_bytes() } else { b"" };
    let csp = "Content-Security-Policy: default-src 'none'; script-src 'unsafe-inline' blob:; style-src 'unsafe-inline'; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
    let mut head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {length}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n{csp}\r\n\r\n"
    )
    .into_bytes();
    head.extend_from_slice(body);
    let _ = stream.write_all(&head).await;
    let _ = stream.shutdown().await;
}

/// Answers a health check: 200 while the daemon serves, 503 while it
/// drains (so a load balancer sends new clients elsewhere), with a small
/// JSON body that a person can read too.
pub(super) async fn respond_health(
    stream: &mut (impl AsyncWrite + Unpin),
    with_body: bool,
    draining: bool,
    sessions: usize,
) {
    let (status, reason, state) = if draining {
        (503, "Service Unavailable", "draining")
    } else {
        (200, "OK", "ok")
    };
    let body = format!("{{\"status\":\"{state}\",\"sessions\":{sessions}}}\n");
    let mut out = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if with_body {
        out.extend_from_slice(body.as_bytes());
    }
    let _ = stream.write_all(&out).await;
    let _ = stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `text` as a whole request head (the blank line added).
    fn head(text: &str) -> Head {
        let bytes = format!("{text}\r\n\r\n");
        match Head::parse(bytes.as_bytes()) {
            Ok(Some((head, len))) => {
                assert_eq!(len, bytes.len(), "the whole head is read");
                head
            }
            other => panic!("not a request head: {other:?}"),
        }
    }

    fn parse(bytes: &[u8]) -> Result<Option<(Head, usize)>, HeadError> {
        Head::parse(bytes)
    }

    /// The head `read_head` reads from `parts`, each of them one read at
    /// most (a chain reads one part at a time), and all that follows it:
    /// what was read with the head, then what was left in the stream.
    async fn read(parts: &[&[u8]]) -> Result<Option<(Head, Vec<u8>)>, HeadError> {
        let mut reader: Box<dyn AsyncRead + Unpin + Send> = Box::new(tokio::io::empty());
        for part in parts {
            reader = Box::new(reader.chain(std::io::Cursor::new(part.to_vec())));
        }
        let Some((head, mut rest)) = read_head(&mut reader).await? else {
            return Ok(None);
        };
        reader.read_to_end(&mut rest).await.map_err(HeadError::Io)?;
        Ok(Some((head, rest)))
    }

    fn upgrade_head(path: &str, extra: &str) -> Head {
        head(&format!(
            "GET {path} HTTP/1.1\r\nHost: localhost:3001\r\nUpgrade: websocket\r\nConnection: keep-alive, Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=={extra}"
        ))
    }

    #[test]
    fn routes() {
        assert_eq!(
            route(&head("GET / HTTP/1.1\r\nHost: x"), false, None),
            Route::Page { with_body: true }
        );
        assert_eq!(
            route(&head("GET /?token=abc HTTP/1.1"), false, None),
            Route::Page { with_body: true }
        );
        assert_eq!(
            route(&head("HEAD / HTTP/1.1"), false, None),
            Route::Page { with_body: false }
        );
        assert_eq!(
            route(&head("GET /nope HTTP/1.1"), false, None),
            Route::Plain(404, "Not Found")
        );
        assert_eq!(
            route(
                &head("GET /health HTTP/1.1\r\nHost: lb.example"),
                false,
                None
            ),
            Route::Health { with_body: true },
            "no token, no local name needed"
        );
        assert_eq!(
            route(&head("HEAD /health?x HTTP/1.1"), true, None),
            Route::Health { with_body: false }
        );
        assert_eq!(
            route(&head("POST /health HTTP/1.1"), false, None),
            Route::Plain(405, "Method Not Allowed")
        );
        assert_eq!(
            route(&head("POST / HTTP/1.1"), false, None),
            Route::Plain(405, "Method Not Allowed")
        );
        assert_eq!(route(&upgrade_head("/", ""), false, None), Route::Upgrade);
        assert_eq!(
            route(&upgrade_head("/transcribe-websocket?x=1", ""), false, None),
            Route::Upgrade
        );
        assert_eq!(
            route(&upgrade_head("/other", ""), false, None),
            Route::Plain(404, "Not Found")
        );
        assert!(matches!(
            parse(b"GARBAGE\r\n\r\n"),
            Err(HeadError::Malformed)
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nno colon\r\n\r\n"),
            Err(HeadError::Malformed)
        ));
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nName : v\r\n\r\n"),
            Err(HeadError::Malformed)
        ));
        assert!(matches!(
            parse(b"GET / HTTP/2.0\r\n\r\n"),
            Err(HeadError::Malformed)
        ));
        assert!(
            matches!(
                parse(b"\r\nGET / HTTP/1.1\r\n\r\n"),
                Err(HeadError::Malformed)
            ),
            "no empty line before the request line"
        );
        assert!(matches!(parse(b"GET / HTTP/1.1\r\nHost: x\r\n"), Ok(None)));
    }

    const LO: &str = "127.0.0.1:3001";
    const LAN: &str = "192.168.1.5:3001";

    /// Upgrades without a token: `Host` and `Origin` (`None`: not sent),
    /// the address the client connected to, and whether it may upgrade.
    const UNTOKENED: &[(Option<&str>, Option<&str>, &str, bool)] = &[
        (Some("localhost"), None, LO, true),
        (Some("LocalHost:3001"), None, LO, true),
        (Some("localhost:1"), None, LO, true),
        (Some("127.0.0.1:3001"), None, LO, true),
        (Some("127.0.0.1"), None, LO, true),
        (Some("127.255.0.9:80"), None, LO, true),
        (Some("[::1]:3001"), None, LO, true),
        (Some("[::1]"), None, LO, true),
        (Some("[::ffff:127.0.0.1]:3001"), None, LO, true),
        (Some("127.0.0.1:3001"), None, "not an address", true),
        // Names an attacker may own, and what only looks local.
        (Some("evil.example"), None, LO, false),
        (Some("evil.example:3001"), None, LO, false),
        (Some("localhost.evil.example:3001"), None, LO, false),
        (Some("127.0.0.1.evil.example:3001"), None, LO, false),
        (Some("sub.localhost:3001"), None, LO, false),
        (Some("localhost.:3001"), None, LO, false),
        (Some("0.0.0.0:3001"), None, LO, false),
        (Some("192.168.1.5:3001"), None, LO, false),
        (Some("127.1:3001"), None, LO, false),
        (Some("2130706433:3001"), None, LO, false),
        (Some("0x7f.0.0.1:3001"), None, LO, false),
        (Some("[127.0.0.1]:3001"), None, LO, false),
        (Some("::1"), None, LO, false),
        (Some("[::1]x"), None, LO, false),
        (Some("[::2]:3001"), None, LO, false),
        (Some("localhost:"), None, LO, false),
        (Some("localhost:+3001"), None, LO, false),
        (Some("localhost:65536"), None, LO, false),
        (Some("localhost:3001, evil.example"), None, LO, false),
        (Some(""), None, LO, false),
        (None, None, LO, false),
        // The address connected to is the daemon's own; loopback still is.
        (Some("192.168.1.5:3001"), None, LAN, true),
        (Some("localhost:3001"), None, LAN, true),
        (Some("192.168.1.5"), None, "192.168.1.5:80", true),
        (Some("[fe80::1]:3001"), None, "[fe80::1]:3001", true),
        (Some("192.168.1.5:3002"), None, LAN, false),
        (Some("192.168.1.5"), None, LAN, false),
        (Some("192.168.1.6:3001"), None, LAN, false),
        (Some("lan.example:3001"), None, LAN, false),
        // The Origin must be local too.
        (Some(LO), Some("http://127.0.0.1:3001"), LO, true),
        (Some(LO), Some("http://localhost:5173"), LO, true),
        (Some(LO), Some("https://localhost"), LO, true),
        (Some(LO), Some("HTTP://[::1]:8080/"), LO, true),
        (Some(LO), Some("https://evil.example"), LO, false),
        (Some(LO), Some("http://evil.example:3001"), LO, false),
        (
            Some(LO),
            Some("http://localhost.evil.example:3001"),
            LO,
            false,
        ),
        (Some(LO), Some("null"), LO, false),
        (Some(LO), Some("file://"), LO, false),
        (Some(LO), Some("chrome-extension://abcdef"), LO, false),
        (Some(LO), Some("127.0.0.1:3001"), LO, false),
        (Some(LO), Some(""), LO, false),
        (Some(LAN), Some("https://192.168.1.5:3001"), LAN, true),
        (Some(LAN), Some("https://192.168.1.5"), LAN, false),
        // DNS rebinding: the attacker's name in both, same origin.
        (
            Some("evil.example:3001"),
            Some("http://evil.example:3001"),
            LO,
            false,
        ),
    ];

    #[test]
    fn without_a_token_only_names_of_this_machine_may_upgrade() {
        for &(host, origin, local, ok) in UNTOKENED {
            let mut text = String::from(
                "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
            );
            for (name, value) in [("Host", host), ("Origin", origin)] {
                if let Some(value) = value {
                    text.push_str(&format!("\r\n{name}: {value}"));
                }
            }
            let expected = if ok {
                Route::Upgrade
            } else {
                Route::Plain(403, "Forbidden")
            };
            let got = route(&head(&text), false, local.parse().ok());
            assert_eq!(got, expected, "Host {host:?}, Origin {origin:?} on {local}");
        }
    }

    #[test]
    fn with_a_token_any_names_may_upgrade() {
        let other = upgrade_head(
            "/",
            "\r\nHost: evil.example\r\nOrigin: https://evil.example",
        );
        assert_eq!(
            route(&other, true, None),
            Route::Upgrade,
            "the token is the access rule then"
        );
    }

    #[test]
    fn upgrade_keys_and_subprotocol_echo() {
        // RFC 6455's example nonce and answer.
        let plain = Upgrade::check(&upgrade_head("/", "")).ok().unwrap();
        assert_eq!(plain.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert!(!plain.key_subprotocol && plain.key.is_none());
        let sub = Upgrade::check(&upgrade_head(
            "/",
            "\r\nSec-WebSocket-Protocol: soniox-api-key, abc",
        ))
        .ok()
        .unwrap();
        assert!(sub.key_subprotocol);
        assert_eq!(
            sub.key.as_ref().map(|k| (k.key.as_str(), k.source)),
            Some(("abc", "subprotocol"))
        );
        let both = Upgrade::check(&upgrade_head(
            "/",
            "\r\nAuthorization: Bearer hdr\r\nSec-WebSocket-Protocol: soniox-api-key\r\nSec-WebSocket-Protocol: sub",
        ))
        .ok()
        .unwrap();
        assert_eq!(
            both.key.as_ref().map(|k| (k.key.as_str(), k.source)),
            Some(("hdr", "header"))
        );
        assert!(format!("{:?}", both.key).contains("<redacted>"));
        let old = head(
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 8\r\nSec-WebSocket-Key: x",
        );
        assert_eq!(Upgrade::check(&old).err().map(|e| e.0), Some(426));
    }

    #[test]
    fn header_names_are_matched_in_any_case_and_repeats_joined() {
        let head = head(
            "GET / HTTP/1.1\r\nhost: localhost:3001\r\nUPGRADE: WebSocket\r\nconnection: upgrade\r\nSEC-WEBSOCKET-VERSION: 13\r\nsec-websocket-key: dGhlIHNhbXBsZSBub25jZQ==\r\nX-Many: a\r\nx-many:  b \r\nX-MANY:",
        );
        assert_eq!(head.header("x-many").as_deref(), Some("a, b, "));
        assert_eq!(head.header("Host").as_deref(), Some("localhost:3001"));
        assert_eq!(route(&head, false, None), Route::Upgrade);
        let upgrade = Upgrade::check(&head).expect("a valid upgrade");
        assert_eq!(upgrade.accept, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn a_header_value_must_be_text() {
        assert!(matches!(
            parse(b"GET / HTTP/1.1\r\nUser-Agent: caf\xe9\r\n\r\n"),
            Err(HeadError::Malformed)
        ));
        let utf8 = head("GET / HTTP/1.1\r\nUser-Agent: café");
        assert_eq!(utf8.header("user-agent").as_deref(), Some("café"));
    }

    #[test]
    fn headers_are_bounded_in_number() {
        let many = |n: usize| {
            let mut text = String::from("GET / HTTP/1.1\r\n");
            for i in 0..n {
                text.push_str(&format!("X-{i}: v\r\n"));
            }
            text.push_str("\r\n");
            text
        };
        assert!(matches!(parse(many(MAX_HEADERS).as_bytes()), Ok(Some(_))));
        assert!(matches!(
            parse(many(MAX_HEADERS + 1).as_bytes()),
            Err(HeadError::TooLarge)
        ));
    }

    #[tokio::test]
    async fn a_head_may_come_in_pieces_and_what_follows_is_kept() {
        let whole = b"GET /transcribe-websocket?x=1 HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
        // Split in the request line, in a name, between CR and LF, in the
        // blank line, at its end and in what follows.
        for cuts in [&[5, 30][..], &[52], &[48], &[69], &[70], &[71, 73]] {
            let mut parts = Vec::new();
            let mut from = 0;
            for &cut in cuts {
                parts.push(&whole[from..cut]);
                from = cut;
            }
            parts.push(&whole[from..]);
            let (head, rest) = read(&parts)
                .await
                .ok()
                .flatten()
                .unwrap_or_else(|| panic!("a head from {cuts:?}"));
            assert_eq!(head.path, "/transcribe-websocket", "{cuts:?}");
            assert_eq!(head.header("host").as_deref(), Some("h"), "{cuts:?}");
            assert_eq!(head.header("upgrade").as_deref(), Some("websocket"));
            assert_eq!(rest, b"\x81\x02hi", "{cuts:?}");
        }
        assert!(
            matches!(read(&[b"GET / HTTP/1.1\r\nHost"]).await, Ok(None)),
            "the client closed first"
        );
    }

    #[tokio::test]
    async fn a_head_is_bounded_in_size() {
        let head_of = |value_len: usize| {
            let head = format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(value_len));
            head.into_bytes()
        };
        let at_limit = head_of(MAX_HEAD_BYTES - 23);
        assert_eq!(at_limit.len(), MAX_HEAD_BYTES);
        assert!(matches!(read(&[&at_limit]).await, Ok(Some(_))));
        assert!(matches!(
            read(&[&head_of(MAX_HEAD_BYTES - 22)]).await,
            Err(HeadError::TooLarge)
        ));
        let endless = "a".repeat(MAX_HEAD_BYTES + HEAD_CHUNK);
        assert!(matches!(
            read(&[b"GET / HTTP/1.1\r\nX: ", endless.as_bytes()]).await,
            Err(HeadError::TooLarge)
        ));
        let trickled: Vec<&[u8]> = std::iter::once(&b"GET / HTTP/1.1\r\n"[..])
            .chain(std::iter::repeat_n(&b"X: v\r\n"[..], MAX_HEADERS + 1))
            .collect();
        assert!(matches!(read(&trickled).await, Err(HeadError::TooLarge)));
    }
}
