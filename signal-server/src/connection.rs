//! One WebSocket connection: reads client messages, answers them, drains the peer's outbox, and
//! keeps the connection alive with pings.
//!
//! Everything runs in a single task per connection (no reader/writer split), which keeps an idle
//! peer down to its socket, its small buffers, a queue and this task's state.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};
use signal_protocol::{
    validate_room_id, ClientMessage, ErrorCode, ServerMessage, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;
use tokio::time::MissedTickBehavior;

use crate::metrics::Metrics;
use crate::rate::RateLimit;
use crate::resume::Claim;
use crate::room::{encode, Refusal};
use crate::state::AppState;

/// The close code that tells a client the server is going away and it should reconnect
/// (1012, "Service Restart", from the IANA WebSocket close code registry).
pub const GOING_AWAY: u16 = 1012;

/// What the connection learned about the client when it upgraded.
pub struct Client {
    /// The room named in the URL (not yet validated).
    pub room: String,
    /// The host the client used to reach us, for the ICE server URLs.
    pub host: Option<String>,
    /// The client's address (for logs).
    pub addr: SocketAddr,
}

/// Serves one upgraded WebSocket until it closes, goes silent, stops reading, or misbehaves.
///
/// Every frame the client sends (text, binary, ping, oversized) is counted by the rate limiter
/// before anything else is done with it. A client must say `hello` within `--hello-timeout`, and
/// every write must complete within `--write-timeout`: a peer that stops reading is dropped (and
/// announced as left) instead of pinning memory and this task.
pub async fn serve(mut socket: WebSocket, client: Client, state: Arc<AppState>) {
    let cfg = &state.config;
    let (outbox, mut inbox) = mpsc::channel::<Utf8Bytes>(cfg.peer_queue);
    let mut session = Session {
        client,
        state: state.clone(),
        outbox: Some(outbox),
        conn: state.next_connection(),
        peer_id: None,
        rate: RateLimit::new(cfg.rate_per_sec, cfg.rate_burst),
        refused: Refusals::default(),
    };
    let mut ping = tokio::time::interval(cfg.ping_interval);
    ping.set_missed_tick_behavior(MissedTickBehavior::Delay);
    ping.tick().await;
    let mut last_heard = Instant::now();
    let hello_deadline = tokio::time::sleep(cfg.hello_timeout);
    tokio::pin!(hello_deadline);
    let write = cfg.write_timeout;
    let mut stopping = state.stopping.clone();

    // The connection was lost (closed or silent) rather than ended by the server for a reason:
    // only then does the room keep the peer's place for the grace period.
    let mut lost = false;
    let end = loop {
        tokio::select! {
            incoming = socket.recv() => {
                let msg = match incoming {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => {
                        if is_too_large(&e) {
                            let reply = too_large(&state.metrics, cfg.max_message_bytes);
                            let _ = timed(write, socket.send(Message::Text(reply))).await;
                            break Some((1009, "message too large"));
                        }
                        tracing::debug!(error = %e, "websocket read failed");
                        lost = true;
                        break None;
                    }
                    None => {
                        lost = true;
                        break None;
                    }
                };
                last_heard = Instant::now();
                if matches!(msg, Message::Close(_)) {
                    lost = true;
                    break None;
                }
                let reply = match session.admit() {
                    Admit::Yes => session.on_frame(msg).await,
                    Admit::RefuseQuietly => None,
                    Admit::Refuse(reply) => Some(reply),
                    Admit::Close => break Some((1008, "rate limit exceeded")),
                };
                if let Some(reply) = reply {
                    if let Err(fail) = timed(write, socket.send(Message::Text(reply))).await {
                        lost = fail == WriteFail::Io;
                        break None;
                    }
                }
            }
            queued = inbox.recv() => {
                // `None`: the room let go of this connection: the client said `leave`, a newer
                // connection took its place (a resume), or its queue overflowed.
                let Some(text) = queued else {
                    let room = &session.client.room;
                    break Some(match &session.peer_id {
                        None => (1000, "left the room"),
                        Some(id) if state.rooms.held_elsewhere(room, id, session.conn) => {
                            session.peer_id = None;
                            (1000, "replaced by a newer connection")
                        }
                        Some(_) => (1008, "too far behind"),
                    });
                };
                // Under load, write what else is queued in the same flush: one syscall, not many.
                let mut batch = vec![text];
                while batch.len() < 64 {
                    match inbox.try_recv() {
                        Ok(more) => batch.push(more),
                        Err(_) => break,
                    }
                }
                if let Err(fail) = timed(write, send_all(&mut socket, batch)).await {
                    tracing::debug!(peer = ?session.peer_id, ?fail, "write failed; dropping");
                    lost = fail == WriteFail::Io;
                    break None;
                }
            }
            _ = ping.tick() => {
                if last_heard.elapsed() > cfg.ping_timeout {
                    tracing::debug!(peer = ?session.peer_id, "no pong in time; dropping");
                    lost = true;
                    break None;
                }
                if let Err(fail) = timed(write, socket.send(Message::Ping(Default::default()))).await {
                    lost = fail == WriteFail::Io;
                    break None;
                }
            }
            () = async {
                // A dropped sender means no shutdown will ever be announced.
                if stopping.wait_for(|stop| *stop).await.is_err() {
                    std::future::pending::<()>().await;
                }
            } => {
                break Some((GOING_AWAY, "server restarting; reconnect"));
            }
            () = &mut hello_deadline, if session.peer_id.is_none() => {
                tracing::debug!(addr = %session.client.addr, "no hello in time; closing");
                break Some((1008, "no hello in time"));
            }
        }
    };
    // Settle the room first, so it hears of it even if the close below never completes. A lost
    // connection keeps its place for the grace period; a stopping server keeps everyone's (its
    // clients come back to it, or to another instance, with their resume tokens).
    if end.is_some_and(|(code, _)| code == GOING_AWAY) {
        session.peer_id = None;
    } else if lost {
        session.detach().await;
    } else {
        session.leave().await;
    }
    if let Some((code, reason)) = end {
        state
            .metrics
            .closed
            .get_or_create(&[("reason", reason)])
            .inc();
        let close = Message::Close(Some(CloseFrame {
            code,
            reason: reason.into(),
        }));
        if timed(write, socket.send(close)).await.is_ok() {
            // The closing handshake: read (and discard) until the client's Close, briefly, so
            // the kernel does not answer its frames in flight with a reset that would destroy
            // the replies and the close reason before the client reads them.
            let drain = async {
                while let Some(Ok(m)) = socket.recv().await {
                    if matches!(m, Message::Close(_)) {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
        }
    }
}

/// Why a write did not complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum WriteFail {
    /// The client did not take the bytes in time: it does not read (it is removed).
    Timeout,
    /// The connection broke (it is lost: the peer keeps its place for the grace period).
    Io,
}

/// Runs a write with a deadline.
async fn timed<T>(
    limit: Duration,
    write: impl std::future::Future<Output = Result<T, axum::Error>>,
) -> Result<T, WriteFail> {
    match tokio::time::timeout(limit, write).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(_)) => Err(WriteFail::Io),
        Err(_) => Err(WriteFail::Timeout),
    }
}

/// Writes several text frames and flushes once.
async fn send_all(socket: &mut WebSocket, batch: Vec<Utf8Bytes>) -> Result<(), axum::Error> {
    use futures_util::SinkExt;
    for text in batch {
        socket.feed(Message::Text(text)).await?;
    }
    socket.flush().await
}

/// What the rate limiter says of one incoming frame.
enum Admit {
    /// Within the rate: handle it.
    Yes,
    /// Over the rate: drop it with an error reply (the first of a run of refusals).
    Refuse(Utf8Bytes),
    /// Over the rate, and the client was already told: drop it silently, so refusals cannot be
    /// used to make the server write.
    RefuseQuietly,
    /// Far over the rate for a long run: close the connection.
    Close,
}

/// Consecutive frames refused by the rate limiter.
#[derive(Default)]
struct Refusals {
    in_a_row: u32,
    last_told: Option<Instant>,
}

/// Per-connection protocol state.
struct Session {
    client: Client,
    state: Arc<AppState>,
    /// Handed to the room on join; kept here until then.
    outbox: Option<mpsc::Sender<Utf8Bytes>>,
    /// This connection's serial number: a resumed peer's old connection must not remove it.
    conn: u64,
    peer_id: Option<String>,
    rate: RateLimit,
    refused: Refusals,
}

impl Session {
    /// Counts one incoming frame against the rate limit.
    fn admit(&mut self) -> Admit {
        if self.rate.allow() {
            self.refused.in_a_row = 0;
            return Admit::Yes;
        }
        self.refused.in_a_row += 1;
        self.state.metrics.rate_limited.inc();
        // Twice the burst refused in a row: the client ignores the refusals.
        if self.refused.in_a_row > self.state.config.rate_burst.saturating_mul(2).max(8) {
            tracing::info!(addr = %self.client.addr, peer = ?self.peer_id, "rate limit ignored; closing");
            return Admit::Close;
        }
        let now = Instant::now();
        if self
            .refused
            .last_told
            .is_some_and(|t| now.duration_since(t) < Duration::from_secs(1))
        {
            return Admit::RefuseQuietly;
        }
        self.refused.last_told = Some(now);
        Admit::Refuse(error(
            &self.state.metrics,
            ErrorCode::RateLimited,
            "too many messages; dropped until the rate falls".into(),
        ))
    }

    /// Handles one admitted frame; returns the reply to send, if any.
    async fn on_frame(&mut self, msg: Message) -> Option<Utf8Bytes> {
        match msg {
            Message::Text(text) => self.on_text(&text).await,
            Message::Binary(_) => Some(error(
                &self.state.metrics,
                ErrorCode::MalformedMessage,
                "binary frames are not part of the protocol; send JSON text".into(),
            )),
            Message::Ping(_) | Message::Pong(_) | Message::Close(_) => None,
        }
    }

    /// Handles one text frame; returns the reply to send, if any.
    async fn on_text(&mut self, text: &str) -> Option<Utf8Bytes> {
        if text.len() > self.state.config.max_message_bytes {
            return Some(too_large(
                &self.state.metrics,
                self.state.config.max_message_bytes,
            ));
        }
        let msg = match ClientMessage::parse(text) {
            Ok(m) => m,
            Err(e) => return Some(error(&self.state.metrics, e.code, e.message)),
        };
        let result = match msg {
            ClientMessage::Hello {
                version,
                name,
                resume,
                kind,
            } => self.hello(version, name, kind, resume).await.map(Some),
            ClientMessage::Leave => {
                self.leave().await;
                Ok(None)
            }
            ClientMessage::Signal { to, data } => match &self.peer_id {
                None => Err((
                    ErrorCode::NotJoined,
                    "send hello before signals".to_string(),
                )),
                Some(from) => self
                    .state
                    .rooms
                    .relay(&self.client.room, from, &to, data)
                    .await
                    .map(|()| {
                        self.state.metrics.signals.inc();
                        None
                    }),
            },
        };
        result.unwrap_or_else(|(code, message)| Some(error(&self.state.metrics, code, message)))
    }

    async fn hello(
        &mut self,
        version: u32,
        name: Option<String>,
        kind: signal_protocol::PeerKind,
        resume: Option<signal_protocol::Resume>,
    ) -> Result<Utf8Bytes, Refusal> {
        if self.peer_id.is_some() {
            return Err((ErrorCode::AlreadyJoined, "already in the room".into()));
        }
        if version != PROTOCOL_VERSION {
            return Err((
                ErrorCode::UnsupportedVersion,
                format!(
                    "this server speaks protocol version {PROTOCOL_VERSION}, the client {version}; \
                     update the client (reload the page)"
                ),
            ));
        }
        validate_room_id(&self.client.room)
            .map_err(|e| (ErrorCode::InvalidRoomId, format!("invalid room id: {e}")))?;
        let name = name.as_deref().and_then(signal_protocol::clean_name);
        let outbox = self.outbox.clone().ok_or((
            ErrorCode::AlreadyJoined,
            "this connection was already removed from its room".to_string(),
        ))?;
        let room = &self.client.room;
        // Only ids of the form this server hands out can be claimed.
        let claim = resume
            .filter(|r| crate::room::is_peer_id(&r.peer_id))
            .and_then(
                |r| match self.state.resume.check(room, &r.peer_id, &r.token) {
                    Claim::Refused => None,
                    Claim::Proven => Some((r.peer_id, true)),
                    Claim::IfFree => Some((r.peer_id, false)),
                },
            );
        let proven = claim.as_ref().is_some_and(|(_, proven)| *proven);
        let joined = self
            .state
            .rooms
            .join(
                room,
                crate::room::Profile {
                    name,
                    kind,
                    client: Some(
                        self.state
                            .resume
                            .client_tag(room, crate::accept::client_key(self.client.addr.ip())),
                    ),
                },
                claim,
                self.conn,
                outbox,
            )
            .await?;
        let peer_id = joined.id;
        let peers = joined.peers;
        if joined.resumed {
            self.state.metrics.resumes.inc();
        } else {
            self.state.metrics.joins.inc();
        }
        if proven {
            self.state.metrics.reconnects.inc();
        }
        self.state.turn_access.grant(&peer_id);
        // The room now holds the only sender: if it drops this peer, the connection closes.
        self.outbox = None;
        tracing::info!(room = %self.client.room, peer = %peer_id, resumed = joined.resumed, "peer joined");
        let ice_servers = self
            .state
            .ice_servers(self.client.host.as_deref(), &peer_id);
        let welcome = ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            peer_id: peer_id.clone(),
            room: self.client.room.clone(),
            peers,
            ice_servers,
            resume_token: self.state.resume.mint(&self.client.room, &peer_id),
            resumed: joined.resumed,
        };
        self.peer_id = Some(peer_id);
        Ok(encode(&welcome))
    }

    /// The client said it is leaving: remove it now.
    async fn leave(&mut self) {
        if let Some(id) = self.peer_id.take() {
            let removed = self
                .state
                .rooms
                .leave(&self.client.room, &id, self.conn)
                .await;
            // A peer another connection holds now keeps its relay; one removed here, or
            // earlier (dropped for a full queue while its connection lived on), loses it.
            let held = self
                .state
                .rooms
                .held_elsewhere(&self.client.room, &id, self.conn);
            if removed || !held {
                tracing::info!(room = %self.client.room, peer = %id, "peer left");
                self.state.turn_access.revoke(&id);
            }
        }
    }

    /// The connection was lost: the room keeps the peer's place for the grace period.
    async fn detach(&mut self) {
        if let Some(id) = self.peer_id.take() {
            let detached = self
                .state
                .rooms
                .detach(
                    &self.client.room,
                    &id,
                    self.conn,
                    crate::accept::client_key(self.client.addr.ip()),
                )
                .await;
            tracing::info!(room = %self.client.room, peer = %id, ?detached, "peer's connection lost");
            if detached == crate::room::Detached::Gone {
                self.state.turn_access.revoke(&id);
            }
        }
    }
}

/// An error reply, counted by code.
fn error(metrics: &Metrics, code: ErrorCode, message: String) -> Utf8Bytes {
    metrics.error(code);
    encode(&ServerMessage::Error { code, message })
}

fn too_large(metrics: &Metrics, limit: usize) -> Utf8Bytes {
    error(
        metrics,
        ErrorCode::MessageTooLarge,
        format!("message refused: larger than {limit} bytes"),
    )
}

/// Whether a read failed because a frame or message exceeded the WebSocket size limits.
fn is_too_large(e: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tungstenite::Error::Capacity(_)) = err.downcast_ref::<tungstenite::Error>() {
            return true;
        }
        source = err.source();
    }
    false
}
