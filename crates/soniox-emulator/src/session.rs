//! One emulated session: the task that serves a single WebSocket connection
//! from the upgrade to the close.
//!
//! The task owns its connection, its [`Recognizer`] and its record slot.
//! With TLS on, it first completes the TLS handshake; everything after that
//! is generic over the stream type, so plain connections carry no TLS cost.
//! Per audio frame it takes only its own, uncontended record lock and reads
//! one atomic (the fault generation); shared locks are taken when a session
//! starts or the fault knobs change. A configured [`Probe`] is called inline,
//! per audio frame and per final token; without one, nothing is.
//!
//! With `queue_first` set, the emulator acts as an sttpipe gateway that
//! holds each session in its queue for a while (queued frames, the audio
//! held) before recognising it; Soniox itself never does.
//!
//! [`Probe`]: super::Probe

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::http::header::{AUTHORIZATION, SEC_WEBSOCKET_PROTOCOL};
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use soniox_wire::ApiError;

use super::protocol;
use super::quota;
use super::recognizer::{Emitted, Recognizer, RecognizerSettings};
use super::server::{
    AudioFaults, AuthMethod, Outcome, ProbeEvent, ProbeKind, SessionRecord, Shared, lock,
};

/// What a connection's byte stream must be: a bare TCP stream or a TLS
/// stream over one.
pub(crate) trait Conn: AsyncRead + AsyncWrite + Unpin + Send {}

impl<S: AsyncRead + AsyncWrite + Unpin + Send> Conn for S {}

/// The subprotocol name that announces a key in the next subprotocol.
const KEY_SUBPROTOCOL: &str = "soniox-api-key";
/// How long to wait for the client's close reply after our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves one connection, first completing the TLS handshake if `tls` is
/// set; returns when the connection is closed.
pub(crate) async fn run(
    shared: Arc<Shared>,
    stream: TcpStream,
    tls: Option<TlsAcceptor>,
    slot: Arc<Mutex<SessionRecord>>,
    cancel: CancellationToken,
) {
    let (index, request_id) = {
        let rec = lock(&slot);
        (rec.index, rec.request_id.clone())
    };
    let (faults_gen, faults) = shared.audio_faults();
    let mut session = Session {
        shared,
        slot,
        index,
        request_id,
        reference: None,
        holds_stream: false,
        holds_connection: false,
        faults_gen,
        faults,
    };
    // The TLS handshake and the upgrade together count against the start
    // timeout.
    let deadline = Instant::now() + session.scaled(session.shared.config.start_timeout);
    match tls {
        None => session.serve(stream, deadline, cancel).await,
        Some(acceptor) => {
            if let Some(tls) = session
                .tls_handshake(&acceptor, stream, deadline, &cancel)
                .await
            {
                session.serve(tls, deadline, cancel).await;
            }
        }
    }
}

/// Which timer is due next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    Start,
    Idle,
    FirstAudio,
}

/// The connection and the futures the event loop selects on.
struct Io<S> {
    ws: WebSocketStream<S>,
    /// Re-armed lazily: the deadline moves with activity, but the timer is
    /// only reset when it fires early, not on every frame.
    sleep: Pin<Box<Sleep>>,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

/// One event of the loop.
enum Event {
    Msg(Message),
    Closed,
    Timer,
    Cancelled,
}

impl<S: Conn> Io<S> {
    async fn next(&mut self) -> Event {
        tokio::select! {
            biased;
            _ = &mut self.cancelled => Event::Cancelled,
            m = self.ws.next() => match m {
                Some(Ok(m)) => Event::Msg(m),
                _ => Event::Closed,
            },
            _ = &mut self.sleep => Event::Timer,
        }
    }
}

/// Timer state: activity moves the deadlines without touching the timer.
struct Clock {
    /// Last audio or keepalive (or the connect / start request).
    last_activity: Instant,
    started: Option<Instant>,
    first_audio: Option<Instant>,
}

/// How the streaming phase ended, when the connection must be handled
/// specially.
enum Stop {
    /// Everything has been sent; just release the connection.
    Done,
    /// Close the TCP connection without a close frame.
    Drop,
    /// Go half-open.
    Stall,
}

struct Session {
    shared: Arc<Shared>,
    slot: Arc<Mutex<SessionRecord>>,
    /// The record's index, for the probe.
    index: u64,
    request_id: String,
    /// The start request's `client_reference_id`, kept only for the probe.
    reference: Option<String>,
    /// Whether this session holds a concurrency slot.
    holds_stream: bool,
    /// Whether this connection holds a connection slot.
    holds_connection: bool,
    faults_gen: u64,
    faults: AudioFaults,
}

impl Drop for Session {
    fn drop(&mut self) {
        // Runs even if the task panics, so the counters stay right.
        self.release_stream();
        if std::mem::take(&mut self.holds_connection) {
            self.shared.release_connection();
        }
        self.set_outcome(Outcome::ClientClosed);
        self.shared.note_closed();
    }
}

impl Session {
    fn release_stream(&mut self) {
        if std::mem::take(&mut self.holds_stream) {
            self.shared.release_stream();
        }
    }

    /// Records the outcome unless one was already decided.
    fn set_outcome(&mut self, outcome: Outcome) {
        let mut rec = lock(&self.slot);
        if rec.outcome == Outcome::Active {
            rec.outcome = outcome;
            drop(rec);
            self.shared.note_ended();
        }
    }

    fn scaled(&self, d: Duration) -> Duration {
        self.shared.config.scaled(d)
    }

    /// Tells the probe, if there is one, that `kind` happened at `at`.
    fn tell(&self, kind: ProbeKind, at: std::time::Instant) {
        if let Some(probe) = &self.shared.config.probe {
            probe.tell(&ProbeEvent {
                index: self.index,
                client_reference_id: self.reference.as_deref(),
                at,
                kind,
            });
        }
    }

    /// The next deadline and what it is for.
    fn due(&self, clock: &Clock) -> (Instant, Timer) {
        let config = &self.shared.config;
        let Some(started) = clock.started else {
            return (
                clock.last_activity + self.scaled(config.start_timeout),
                Timer::Start,
            );
        };
        let idle = (
            clock.last_activity + self.scaled(config.idle_timeout),
            Timer::Idle,
        );
        match (config.first_audio_timeout, clock.first_audio) {
            (Some(t), None) => {
                let first = (started + self.scaled(t), Timer::FirstAudio);
                if first.0 < idle.0 { first } else { idle }
            }
            _ => idle,
        }
    }

    /// The server side of the TLS handshake, bounded by `deadline` and
    /// `cancel`. On failure (logged at debug: a client that does not trust
    /// the certificate is expected in tests) the outcome is recorded and
    /// `None` returned; other connections are not affected.
    async fn tls_handshake(
        &mut self,
        acceptor: &TlsAcceptor,
        stream: TcpStream,
        deadline: Instant,
        cancel: &CancellationToken,
    ) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
        let peer = stream.peer_addr().ok();
        let handshake = tokio::time::timeout_at(deadline, acceptor.accept(stream));
        let result = tokio::select! {
            _ = cancel.cancelled() => None,
            r = handshake => Some(r),
        };
        match result {
            Some(Ok(Ok(tls))) => return Some(tls),
            Some(Ok(Err(e))) => {
                tracing::debug!(request_id = %self.request_id, ?peer, error = %e, "TLS handshake failed");
            }
            Some(Err(_)) => {
                tracing::debug!(request_id = %self.request_id, ?peer, "TLS handshake timed out");
            }
            None => {}
        }
        self.set_outcome(Outcome::ClientClosed);
        None
    }

    async fn serve<S: Conn>(&mut self, stream: S, deadline: Instant, cancel: CancellationToken) {
        let mut conn_key: Option<(AuthMethod, String)> = None;
        // The signature is tungstenite's `Callback`; we never return `Err`.
        #[allow(clippy::result_large_err)]
        let callback = |req: &Request, resp: Response| -> Result<Response, ErrorResponse> {
            Ok(inspect_upgrade(req, resp, &mut conn_key))
        };
        // The upgrade itself counts against the start timeout.
        let upgrade = tokio::time::timeout_at(
            deadline,
            tokio_tungstenite::accept_hdr_async_with_config(
                stream,
                callback,
                Some(soniox_wire::websocket_config()),
            ),
        );
        let handshake = tokio::select! {
            _ = cancel.cancelled() => None,
            r = upgrade => r.ok().and_then(Result::ok),
        };
        let Some(ws) = handshake else {
            self.set_outcome(Outcome::ClientClosed);
            return;
        };
        let now = Instant::now();
        let mut clock = Clock {
            last_activity: now,
            started: None,
            first_audio: None,
        };
        let mut io = Io {
            ws,
            sleep: Box::pin(tokio::time::sleep_until(self.due(&clock).0)),
            cancelled: Box::pin(cancel.cancelled_owned()),
        };
        // Idle connections count against the cap on connections too.
        if !self.shared.acquire_connection() {
            return self.fail(&mut io, quota::connections_refusal()).await;
        }
        self.holds_connection = true;

        // Phase 1: wait for the start request; keepalives may come first.
        let start_text = loop {
            match io.next().await {
                Event::Msg(Message::Text(t)) => {
                    if is_keepalive(&t) {
                        lock(&self.slot).keepalives += 1;
                        clock.last_activity = Instant::now();
                        continue;
                    }
                    break t;
                }
                Event::Msg(Message::Binary(_)) => {
                    let e = ApiError::bad_request("Start request must be a text message.");
                    return self.fail(&mut io, e).await;
                }
                Event::Msg(Message::Close(_)) => return self.client_closed(&mut io).await,
                Event::Msg(_) => continue,
                Event::Closed => return self.set_outcome(Outcome::ClientClosed),
                Event::Cancelled => return self.shut_down(&mut io).await,
                Event::Timer => {
                    let (at, _) = self.due(&clock);
                    if at <= Instant::now() {
                        let e = ApiError::new(408, "request_timeout", "Start request timeout");
                        return self.fail(&mut io, e).await;
                    }
                    io.sleep.as_mut().reset(at);
                }
            }
        };

        // Phase 2: authenticate and validate.
        let recognizer = match self.start(&start_text, conn_key) {
            Ok(r) => r,
            Err(e) => return self.fail(&mut io, e).await,
        };
        clock.started = Some(Instant::now());
        clock.last_activity = Instant::now();
        io.sleep.as_mut().reset(self.due(&clock).0);

        // Phase 3 (a gateway's, on request): queued, the audio held.
        let mut recognizer = recognizer;
        let held = match self.shared.config.queue_first {
            Some(wait) => match self.queued(&mut io, &mut clock, wait).await {
                Ok(held) => held,
                Err(stop) => return self.stopped(io, stop).await,
            },
            None => Vec::new(),
        };
        for msg in held {
            if let Some(stop) = self
                .dispatch(&mut io, &mut clock, &mut recognizer, msg)
                .await
            {
                return self.stopped(io, stop).await;
            }
        }

        // Phase 4: stream.
        let stop = self.stream(&mut io, &mut clock, recognizer).await;
        self.stopped(io, stop).await;
    }

    /// Ends the connection as the streaming phase's end says.
    async fn stopped<S: Conn>(&mut self, io: Io<S>, stop: Stop) {
        match stop {
            Stop::Done => {}
            Stop::Drop => {
                self.release_stream();
                self.set_outcome(Outcome::Dropped);
                tracing::debug!(request_id = %self.request_id, "fault: dropping connection");
                // Dropping `io` closes the socket with no close frame.
            }
            Stop::Stall => {
                self.release_stream();
                self.set_outcome(Outcome::Stalled);
                tracing::debug!(request_id = %self.request_id, "fault: stalling connection");
                stall(io).await;
            }
        }
    }

    /// Handles the start request: authentication, validation, injected
    /// rejections and the concurrency limit.
    fn start(
        &mut self,
        text: &str,
        conn_key: Option<(AuthMethod, String)>,
    ) -> Result<Recognizer, ApiError> {
        let map = soniox_wire::fields::parse_object(text)?;
        let mut redacted = map.clone();
        if let Some(k) = redacted.get_mut("api_key")
            && !k.is_null()
        {
            *k = Value::String("<redacted>".to_owned());
        }
        lock(&self.slot).start_request = Some(Value::Object(redacted));

        let message_key = soniox_wire::fields::api_key(&map)?;
        // The key sent with the connection wins over the start message's.
        let (method, key) = match conn_key {
            Some((method, key)) => (method, Some(key)),
            None => match message_key {
                Some(key) => (AuthMethod::StartMessage, Some(key)),
                None => (AuthMethod::None, None),
            },
        };
        lock(&self.slot).auth = method;
        let config = &self.shared.config;
        let unauthenticated = |m: &str| ApiError::new(401, "unauthenticated", m);
        let Some(key) = key else {
            return Err(unauthenticated("Missing API key."));
        };
        if method == AuthMethod::StartMessage && config.require_header_auth {
            // The real wording for refused start-message keys is unknown.
            return Err(unauthenticated("Missing API key."));
        }
        if !config.api_keys.contains(&key) {
            return Err(unauthenticated("Invalid API key."));
        }
        lock(&self.slot).key_ok = true;

        let reference = map
            .get("client_reference_id")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let start = protocol::validate_start(map, &config.models)?;
        if let Some(code) = self.shared.take_reject() {
            return Err(protocol::rejection(code));
        }
        if !self.shared.acquire_stream() {
            return Err(quota::concurrency_refusal(config.limit_tier));
        }
        self.holds_stream = true;
        let settings = RecognizerSettings {
            finalize_lag_ms: config.finalize_lag_ms,
            default_endpoint_delay_ms: config.default_endpoint_delay_ms,
            container_bytes_per_ms: config.container_bytes_per_ms,
        };
        tracing::debug!(request_id = %self.request_id, model = %start.model, "session started");
        if config.probe.is_some() {
            self.reference = reference;
            self.tell(ProbeKind::Started, std::time::Instant::now());
        }
        Ok(Recognizer::new(settings, start))
    }

    /// A gateway's queue: queued frames for `wait` (scaled), the client's
    /// audio and control messages held for after it. `Err` ends the
    /// connection (the client left, the emulator stops).
    async fn queued<S: Conn>(
        &mut self,
        io: &mut Io<S>,
        clock: &mut Clock,
        wait: Duration,
    ) -> Result<Vec<Message>, Stop> {
        let began = Instant::now();
        let until = began + self.scaled(wait);
        let heartbeat = self.scaled(crate::server::QUEUED_HEARTBEAT);
        // Position 2 for the first half of the wait, 1 for the second.
        let mid = began + (until - began) / 2;
        let mut sent: Option<(u64, Instant)> = None;
        let mut held = Vec::new();
        loop {
            let now = Instant::now();
            if now >= until {
                return Ok(held);
            }
            let at = if now < mid { 2 } else { 1 };
            if sent.is_none_or(|(p, t)| p != at || now >= t + heartbeat) {
                self.send(io, soniox_wire::extension::queued_frame(at))
                    .await?;
                sent = Some((at, now));
            }
            let mut next = until;
            if let Some((_, t)) = sent {
                next = next.min(t + heartbeat);
            }
            if now < mid {
                next = next.min(mid);
            }
            tokio::select! {
                () = tokio::time::sleep_until(next) => {}
                m = io.ws.next() => match m {
                    Some(Ok(Message::Close(_))) => {
                        self.client_closed(io).await;
                        return Err(Stop::Done);
                    }
                    Some(Ok(msg @ (Message::Binary(_) | Message::Text(_)))) => {
                        clock.last_activity = Instant::now();
                        held.push(msg);
                    }
                    Some(Ok(_)) => {}
                    _ => {
                        self.set_outcome(Outcome::ClientClosed);
                        return Err(Stop::Done);
                    }
                },
                _ = &mut io.cancelled => {
                    self.shut_down(io).await;
                    return Err(Stop::Done);
                }
            }
        }
    }

    /// Handles one message of the streaming phase; `Some` ends it.
    async fn dispatch<S: Conn>(
        &mut self,
        io: &mut Io<S>,
        clock: &mut Clock,
        rec: &mut Recognizer,
        msg: Message,
    ) -> Option<Stop> {
        match msg {
            Message::Binary(data) if !data.is_empty() => {
                self.audio(io, clock, rec, &data).await.err()
            }
            Message::Text(t) if !t.is_empty() => self.control(io, clock, rec, &t).await.err(),
            // An empty frame, text or binary, ends the audio.
            Message::Binary(_) | Message::Text(_) => {
                self.finish(io, rec).await;
                Some(Stop::Done)
            }
            Message::Close(_) => {
                self.client_closed(io).await;
                Some(Stop::Done)
            }
            // Pings are answered by tungstenite on the next read.
            _ => None,
        }
    }

    /// The streaming phase: audio, control messages and timers.
    async fn stream<S: Conn>(
        &mut self,
        io: &mut Io<S>,
        clock: &mut Clock,
        mut rec: Recognizer,
    ) -> Stop {
        loop {
            let msg = match io.next().await {
                Event::Msg(m) => m,
                Event::Closed => {
                    self.set_outcome(Outcome::ClientClosed);
                    return Stop::Done;
                }
                Event::Cancelled => {
                    self.shut_down(io).await;
                    return Stop::Done;
                }
                Event::Timer => {
                    let (at, timer) = self.due(clock);
                    if at > Instant::now() {
                        io.sleep.as_mut().reset(at);
                        continue;
                    }
                    let message = match timer {
                        Timer::FirstAudio => "Timed out while waiting for the first audio chunk",
                        Timer::Idle | Timer::Start => "Request timeout.",
                    };
                    self.fail(io, ApiError::new(408, "request_timeout", message))
                        .await;
                    return Stop::Done;
                }
            };
            if let Some(stop) = self.dispatch(io, clock, &mut rec, msg).await {
                return stop;
            }
        }
    }

    /// Handles one audio frame. `Err` ends the streaming phase.
    async fn audio<S: Conn>(
        &mut self,
        io: &mut Io<S>,
        clock: &mut Clock,
        rec: &mut Recognizer,
        data: &[u8],
    ) -> Result<(), Stop> {
        let now = Instant::now();
        clock.last_activity = now;
        let first = *clock.first_audio.get_or_insert(now);
        let audio_ms = rec.count(data);
        let total_bytes = {
            let mut r = lock(&self.slot);
            r.first_audio_at.get_or_insert(first.into_std());
            r.audio_bytes += data.len() as u64;
            r.audio_ms = audio_ms;
            r.receipts
                .push(((now - first).as_millis() as u64, audio_ms));
            r.audio_bytes
        };
        self.tell(ProbeKind::Audio { total_bytes }, now.into_std());
        if self.shared.faults_gen() != self.faults_gen {
            (self.faults_gen, self.faults) = self.shared.audio_faults();
        }
        let f = self.faults;
        if f.drop_after_audio_ms.is_some_and(|t| audio_ms >= t) {
            return Err(Stop::Drop);
        }
        if let Some((t, code)) = f.error_after_audio_ms
            && audio_ms >= t
        {
            self.fail(io, protocol::canonical(code)).await;
            return Err(Stop::Done);
        }
        if f.stall_after_audio_ms.is_some_and(|t| audio_ms >= t) {
            return Err(Stop::Stall);
        }
        if audio_ms > self.shared.config.max_stream_ms {
            self.fail(io, ApiError::bad_request("Audio is too long."))
                .await;
            return Err(Stop::Done);
        }
        if let Some(json) = rec.recognize(data) {
            self.record(rec.take_emitted());
            self.send(io, json).await?;
        }
        Ok(())
    }

    /// Handles a non-empty text frame after the start request.
    async fn control<S: Conn>(
        &mut self,
        io: &mut Io<S>,
        clock: &mut Clock,
        rec: &mut Recognizer,
        text: &str,
    ) -> Result<(), Stop> {
        lock(&self.slot).controls.push(text.to_owned());
        let malformed = || ApiError::bad_request("Control request is malformed.");
        let Ok(Value::Object(map)) = serde_json::from_str::<Value>(text) else {
            self.fail(io, malformed()).await;
            return Err(Stop::Done);
        };
        match map.get("type").and_then(Value::as_str) {
            Some("keepalive") => {
                lock(&self.slot).keepalives += 1;
                clock.last_activity = Instant::now();
                Ok(())
            }
            Some("finalize") => {
                let silence_ok = match map.get("trailing_silence_ms") {
                    None | Some(Value::Null) => true,
                    Some(v) => v.as_f64().is_some_and(|ms| ms >= 0.0),
                };
                if !silence_ok {
                    self.fail(io, malformed()).await;
                    return Err(Stop::Done);
                }
                lock(&self.slot).finalizes += 1;
                let json = rec.finalize();
                self.record(rec.take_emitted());
                self.send(io, json).await
            }
            _ => {
                self.fail(io, ApiError::bad_request("Control request invalid type."))
                    .await;
                Err(Stop::Done)
            }
        }
    }

    /// End of audio: the last finals, `finished`, close 1000.
    async fn finish<S: Conn>(&mut self, io: &mut Io<S>, rec: &mut Recognizer) {
        let messages = rec.finish();
        self.record(rec.take_emitted());
        lock(&self.slot).ended_audio = true;
        // Free the slot before the client can see `finished`, so a client
        // that reconnects at once is not refused by the concurrency limit.
        self.release_stream();
        self.set_outcome(Outcome::Finished);
        for json in messages {
            if io.ws.send(Message::text(json)).await.is_err() {
                return;
            }
        }
        close_gracefully(io).await;
    }

    /// Adds emitted tokens to the record (and tells the probe: the caller
    /// sends their responses next).
    fn record(&self, emitted: Emitted) {
        if emitted.is_empty() {
            return;
        }
        if self.shared.config.probe.is_some() {
            let at = std::time::Instant::now();
            for &start_ms in &emitted.final_starts {
                self.tell(ProbeKind::Final { start_ms }, at);
            }
        }
        let mut r = lock(&self.slot);
        r.words_sent_final.extend(emitted.finals);
        r.fins_sent += emitted.fins;
        r.ends_sent += emitted.ends;
    }

    /// Sends a response; a failed send means the client is gone.
    async fn send<S: Conn>(&mut self, io: &mut Io<S>, json: String) -> Result<(), Stop> {
        if io.ws.send(Message::text(json)).await.is_err() {
            self.set_outcome(Outcome::ClientClosed);
            return Err(Stop::Done);
        }
        Ok(())
    }

    /// Sends an error frame and closes (close code 1000).
    async fn fail<S: Conn>(&mut self, io: &mut Io<S>, e: ApiError) {
        tracing::debug!(request_id = %self.request_id, code = e.code, message = %e.message, "session error");
        self.release_stream();
        self.set_outcome(Outcome::Error(e.code));
        if io
            .ws
            .send(Message::text(e.to_json(&self.request_id)))
            .await
            .is_ok()
        {
            close_gracefully(io).await;
        }
    }

    /// The client sent a close frame: let tungstenite flush its reply.
    async fn client_closed<S: Conn>(&mut self, io: &mut Io<S>) {
        self.set_outcome(Outcome::ClientClosed);
        drain(io).await;
    }

    /// The emulator is shutting down: close with 1001.
    async fn shut_down<S: Conn>(&mut self, io: &mut Io<S>) {
        self.set_outcome(Outcome::Shutdown);
        let frame = CloseFrame {
            code: CloseCode::Away,
            reason: "emulator shutting down".into(),
        };
        let _ = tokio::time::timeout(Duration::from_millis(200), io.ws.close(Some(frame))).await;
    }
}

/// Reads the upgrade request's auth headers and echoes the key subprotocol.
fn inspect_upgrade(
    req: &Request,
    mut resp: Response,
    conn_key: &mut Option<(AuthMethod, String)>,
) -> Response {
    let headers = req.headers();
    let bearer = headers
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|k| k.trim().to_owned());
    let protocols: Vec<String> = headers
        .get_all(SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_owned())
        .collect();
    let sub_key = protocols
        .iter()
        .position(|p| p == KEY_SUBPROTOCOL)
        .map(|i| protocols.get(i + 1).cloned().unwrap_or_default());
    if sub_key.is_some() {
        // Browsers fail the handshake unless the server selects one of the
        // offered subprotocols.
        resp.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(KEY_SUBPROTOCOL),
        );
    }
    *conn_key = match (bearer, sub_key) {
        (Some(k), _) => Some((AuthMethod::Header, k)),
        (None, Some(k)) => Some((AuthMethod::Subprotocol, k)),
        (None, None) => None,
    };
    resp
}

/// Whether a text frame is `{"type":"keepalive"}`.
fn is_keepalive(text: &str) -> bool {
    // Cheap pre-check before parsing: most pre-start texts are start requests.
    text.contains("keepalive")
        && serde_json::from_str::<Value>(text)
            .is_ok_and(|v| v.get("type").and_then(Value::as_str) == Some("keepalive"))
}

/// Sends close 1000 and waits (bounded) for the client's reply, so the TCP
/// connection ends cleanly rather than with a reset.
async fn close_gracefully<S: Conn>(io: &mut Io<S>) {
    let frame = CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    };
    if io.ws.send(Message::Close(Some(frame))).await.is_ok() {
        drain(io).await;
    }
}

/// Reads until the connection ends, for at most [`CLOSE_GRACE`].
async fn drain<S: Conn>(io: &mut Io<S>) {
    let read_all = async { while let Some(Ok(_)) = io.ws.next().await {} };
    tokio::select! {
        _ = &mut io.cancelled => {}
        _ = tokio::time::timeout(CLOSE_GRACE, read_all) => {}
    }
}

/// Half-open: never answer again. The raw socket is still read (and the
/// bytes discarded) only to notice when the client gives up, so the task
/// and its file descriptor do not outlive the client.
async fn stall<S: Conn>(mut io: Io<S>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        tokio::select! {
            _ = &mut io.cancelled => return,
            r = io.ws.get_mut().read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            },
        }
    }
}
