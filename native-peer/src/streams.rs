//! TCP streams over `burrow-stream` data channels (framing and reuse rules in
//! `peer_core::stream`): the exposing side ([`serve`]) and the forwarding side ([`open`], over a
//! [`Dialer`]'s pool of channels), and the pipe between a TCP socket and a channel, with
//! half-close, resets and backpressure.
//!
//! Channels are kept open and reused, one stream at a time: a new connection's `open` and its
//! first bytes leave at once on an idle channel (no channel handshake, no wait for the answer),
//! and no SCTP stream id is reused while its reset is in flight (the cause of lost streams when
//! channels were opened and closed per connection).
//!
//! Backpressure: channel → TCP, each channel buffers at most [`STREAM_BUFFER`] messages before
//! it stops reading (which, in turn, pauses the peer connection's reads: the peer's sender then
//! waits); TCP → channel, `send` waits while the channel's send buffer is full
//! (`rtc::SEND_BUFFER_LIMIT`), so a fast sender cannot grow memory.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use peer_core::access::{token_matches, AttemptLimiter, Blocked, LimitPolicy};
use peer_core::channels::{ServiceInfo, ServiceKind, StreamMessage, STREAM_LABEL};
use peer_core::stream::{Heard, Pool, Stream, Take, ANSWER_WAIT, CONNECT_WAIT};

use crate::meter::{Meter, Way};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::PeerConnection;

/// Messages buffered per stream between the channel and the TCP socket (64 KiB chunks).
pub const STREAM_BUFFER: usize = 32;

/// What `burrow expose` serves.
#[derive(Debug, Clone)]
pub struct Exposed {
    /// How peers see it.
    pub info: ServiceInfo,
    /// The only address streams are ever connected to.
    pub addr: SocketAddr,
    /// The token a stream must present, if any.
    pub token: Option<String>,
    /// Its bytes, streams, health and bandwidth cap (`max_rate`), shared by all its streams.
    pub meter: Arc<Meter>,
}

impl Exposed {
    /// A service offered as `info` at `addr`, behind `token`, held to `limits`.
    pub fn new(
        info: ServiceInfo,
        addr: SocketAddr,
        token: Option<String>,
        limits: crate::meter::Limits,
    ) -> Exposed {
        Exposed {
            info,
            addr,
            token,
            meter: Arc::new(Meter::new(limits)),
        }
    }

    /// Whether `other` offers the very same service (a reload that changes nothing of it).
    pub fn same_as(&self, other: &Exposed) -> bool {
        self.info == other.info
            && self.addr == other.addr
            && self.token == other.token
            && self.meter.limits() == other.meter.limits()
    }
}

/// Where `burrow forward` gets the token it presents.
#[derive(Debug, Clone, Default)]
pub enum TokenSource {
    /// No token.
    #[default]
    None,
    /// This one (`--token`, `BURROW_TOKEN`).
    Given(String),
    /// The first line of this file, read anew for each connection (`--token-file`): the token
    /// stays out of the process list, and can be changed without a restart.
    File(std::path::PathBuf),
}

impl TokenSource {
    /// The token to present now.
    pub async fn read(&self) -> std::io::Result<Option<String>> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Given(token) => Ok(Some(token.clone())),
            TokenSource::File(path) => {
                let text = tokio::fs::read_to_string(path).await?;
                let line = text.lines().next().unwrap_or("");
                Ok(Some(line.to_string()))
            }
        }
    }
}

/// The exposing side's door: the services, and the limit on wrong tokens that all their
/// streams share (`peer_core::access`).
#[derive(Debug)]
pub struct Gate {
    services: std::sync::RwLock<Arc<[Exposed]>>,
    /// Most streams one peer may have open at once (all services together).
    max_streams: usize,
    limiter: Mutex<AttemptLimiter<String>>,
    epoch: Instant,
    /// Per peer: streams open, and channels served.
    counts: Mutex<std::collections::HashMap<String, Counts>>,
}

/// What one peer holds at the exposing side.
#[derive(Debug, Default)]
struct Counts {
    streams: usize,
    channels: usize,
}

/// Most stream channels one peer may have served at once: an honest dialer keeps at most
/// [`peer_core::stream::POOL_MAX`] in its pool and [`RETIRED_MAX`] set aside; channels beyond
/// are closed unread.
const CHANNELS_PER_PEER: usize = peer_core::stream::POOL_MAX + RETIRED_MAX;

/// A stream or a channel counted against its peer while this lives.
struct Held<'a> {
    gate: &'a Gate,
    peer: String,
    stream: bool,
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut counts = self.gate.counts();
        if let Some(c) = counts.get_mut(&self.peer) {
            if self.stream {
                c.streams = c.streams.saturating_sub(1);
            } else {
                c.channels = c.channels.saturating_sub(1);
            }
            if c.streams == 0 && c.channels == 0 {
                counts.remove(&self.peer);
            }
        }
    }
}

impl Gate {
    /// A gate for `services` with the default limit (5 wrong tokens, then 60 s, growing).
    pub fn new(services: Vec<Exposed>, max_streams: usize) -> Gate {
        Gate::with_policy(services, max_streams, LimitPolicy::default())
    }

    /// A gate with another limit.
    pub fn with_policy(services: Vec<Exposed>, max_streams: usize, policy: LimitPolicy) -> Gate {
        Gate {
            services: std::sync::RwLock::new(services.into()),
            max_streams,
            limiter: Mutex::new(AttemptLimiter::new(policy)),
            epoch: Instant::now(),
            counts: Mutex::default(),
        }
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, Counts>> {
        // Never held across an await; each change is one step.
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Counts a stream of `peer` while the result lives, or refuses it past the peer's limit.
    fn hold_stream(&self, peer: &str) -> Result<Held<'_>, StreamError> {
        let mut counts = self.counts();
        let c = counts.entry(peer.to_string()).or_default();
        if c.streams >= self.max_streams {
            return Err(StreamError::Refused(format!(
                "too many open streams from this peer (at most {})",
                self.max_streams
            )));
        }
        c.streams += 1;
        Ok(Held {
            gate: self,
            peer: peer.to_string(),
            stream: true,
        })
    }

    /// Counts a channel of `peer` while the result lives; `None` past [`CHANNELS_PER_PEER`].
    fn hold_channel(&self, peer: &str) -> Option<Held<'_>> {
        let mut counts = self.counts();
        let c = counts.entry(peer.to_string()).or_default();
        if c.channels >= CHANNELS_PER_PEER {
            return None;
        }
        c.channels += 1;
        Some(Held {
            gate: self,
            peer: peer.to_string(),
            stream: false,
        })
    }

    /// What is exposed now.
    pub fn services(&self) -> Arc<[Exposed]> {
        self.services
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces what is exposed (a reloaded config): new streams see the new services; open
    /// ones carry on with theirs. A service kept at the same address and cap keeps its counters
    /// and its cap's budget (a reload is no way around `max_rate`).
    pub fn replace(&self, mut services: Vec<Exposed>) {
        let old = self.services();
        for new in &mut services {
            if let Some(kept) = old.iter().find(|o| {
                o.info.name == new.info.name
                    && o.addr == new.addr
                    && o.meter.max_rate() == new.meter.max_rate()
            }) {
                new.meter = kept.meter.clone();
            }
        }
        *self
            .services
            .write()
            .unwrap_or_else(PoisonError::into_inner) = services.into();
    }

    /// How peers see what is exposed (with what the health checks found).
    pub fn infos(&self) -> Vec<ServiceInfo> {
        self.services()
            .iter()
            .map(|s| ServiceInfo {
                down: s.meter.is_down(),
                ..s.info.clone()
            })
            .collect()
    }

    /// Which service a first message from `client` may open, `now` after the gate's creation:
    /// one by that name; and, if it has a token, a client not cooling down and the right token
    /// (compared in constant time; wrong ones are counted).
    fn admit(&self, open: &Heard, client: &str, now: Duration) -> Result<Exposed, StreamError> {
        let Heard::Open {
            service: name,
            token,
            ..
        } = open
        else {
            return Err(StreamError::Refused(
                "the first message must be open".into(),
            ));
        };
        let services = self.services();
        let Some(service) = services.iter().find(|s| s.info.name == *name) else {
            return Err(StreamError::Refused(format!(
                "no service named '{name}' here"
            )));
        };
        let Some(expected) = service.token.as_deref() else {
            return Ok(service.clone());
        };
        let client = client.to_string();
        // Never held across an await: the lock only guards a few map operations.
        let mut limiter = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        // Before the token is looked at: while cooling down, even the right one is refused.
        limiter.check(&client, now).map_err(StreamError::Blocked)?;
        if token_matches(Some(expected), token.as_deref()) {
            limiter.succeeded(&client);
            return Ok(service.clone());
        }
        limiter.failed(&client, now).map_err(StreamError::Blocked)?;
        Err(StreamError::Refused("wrong or missing access token".into()))
    }
}

/// Why a stream ended badly.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// One side refused: the peer refused ours, or we refused the peer's (the reason).
    #[error("refused: {0}")]
    Refused(String),
    /// We refused the peer's stream unseen: it sent too many wrong tokens and is cooling down.
    #[error("{0}")]
    Blocked(Blocked),
    /// The channel closed before the stream was over.
    #[error("the peer closed the stream")]
    Closed,
    /// A local socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The channel failed.
    #[error("data channel: {0}")]
    Channel(#[from] webrtc::error::Error),
    /// The peer did not answer the stream (or a new channel did not open) in time.
    #[error("the peer did not answer")]
    NoAnswer,
}

/// One event from a stream channel.
enum Incoming {
    Open,
    Text(String),
    Data(BytesMut),
    Closed,
}

/// A stream channel and the queue its reader fills, kept together across the streams it
/// carries.
pub struct Channel {
    dc: Arc<dyn DataChannel>,
    rx: mpsc::Receiver<Incoming>,
}

impl Channel {
    fn new(dc: Arc<dyn DataChannel>) -> Channel {
        let rx = reader(dc.clone());
        Channel { dc, rx }
    }

    async fn send_text(&self, m: &StreamMessage) -> Result<(), StreamError> {
        self.dc.send_text(&m.encode()).await?;
        Ok(())
    }

    async fn close(self) {
        drain(&self.dc).await;
        let _ = self.dc.close().await;
    }
}

/// How long a channel's reader still takes messages after `OnClose` (the crate may deliver a
/// peer's last messages after it).
const CLOSE_GRACE: Duration = Duration::from_millis(250);

/// Reads a channel in the background into a bounded queue; ends with [`Incoming::Closed`]
/// [`CLOSE_GRACE`] after the channel closed, or when the connection ends (the crate's `poll`
/// goes on after `OnClose` for as long as the handle lives).
fn reader(dc: Arc<dyn DataChannel>) -> mpsc::Receiver<Incoming> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        let mut closed_at: Option<tokio::time::Instant> = None;
        loop {
            let event = match closed_at {
                None => dc.poll().await,
                // Nothing more within the grace: over.
                Some(at) => tokio::time::timeout_at(at + CLOSE_GRACE, dc.poll())
                    .await
                    .unwrap_or_default(),
            };
            let Some(event) = event else {
                break;
            };
            let item = match event {
                DataChannelEvent::OnClose => {
                    closed_at.get_or_insert_with(tokio::time::Instant::now);
                    continue;
                }
                DataChannelEvent::OnOpen => Incoming::Open,
                DataChannelEvent::OnMessage(m) if m.is_string => {
                    Incoming::Text(String::from_utf8_lossy(&m.data).into_owned())
                }
                DataChannelEvent::OnMessage(m) => Incoming::Data(m.data),
                _ => continue,
            };
            if tx.send(item).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Incoming::Closed).await;
    });
    rx
}

/// How long a stream we reset (or refused) waits for the peer's final message before its
/// channel is given up (closed, not reused).
const FINAL_WAIT: Duration = Duration::from_secs(10);

/// How long a new channel may take to open before it is set aside and another is tried. The
/// `webrtc` crate frees a closed channel's SCTP stream id at once, while the stream's reset is
/// still in flight; a channel given that id in the meantime never opens (its stream "already
/// exists") and, opened after the connection was up, has no handshake deadline of its own.
const OPEN_WAIT: Duration = Duration::from_secs(3);

/// New channels tried for one stream before it fails.
const OPEN_TRIES: usize = 3;

/// Broken channels set aside without `close()` (so their ids are not handed out again while a
/// reset may be in flight); beyond this many, broken channels are closed.
const RETIRED_MAX: usize = 64;

/// The forwarding side's stream channels toward one peer (`peer_core::stream::Pool`).
pub struct Dialer {
    pc: Arc<dyn PeerConnection>,
    own: Arc<crate::own::OwnChannels>,
    pool: Mutex<Pool<Channel>>,
    /// Wakes streams waiting for a channel (the pool is at its cap).
    freed: Notify,
    /// Broken channels set aside so far (see [`RETIRED_MAX`]).
    retired: std::sync::atomic::AtomicUsize,
}

impl Dialer {
    /// A dialer over `pc`, with no channel open yet; it opens channels through `own`.
    pub fn new(pc: Arc<dyn PeerConnection>, own: Arc<crate::own::OwnChannels>) -> Arc<Dialer> {
        Arc::new(Dialer {
            pc,
            own,
            pool: Mutex::new(Pool::default()),
            freed: Notify::new(),
            retired: Default::default(),
        })
    }

    /// Puts a broken channel out of use: set aside open (its id stays taken, see
    /// [`OPEN_WAIT`]) while fewer than [`RETIRED_MAX`] are, closed otherwise. Its reader ends
    /// at the channel's next event, which is then dropped.
    async fn retire(&self, ch: Channel) {
        use std::sync::atomic::Ordering;
        let n = self.retired.fetch_add(1, Ordering::Relaxed);
        if n >= RETIRED_MAX {
            ch.close().await;
            return;
        }
        // Best effort: a stream the peer still serves on it is over (the peer answers with its
        // own final and lets go of the service's socket); on a channel between streams the
        // peer ignores it.
        let reset = StreamMessage::Reset {
            reason: "channel retired".into(),
        };
        let _ = ch.dc.try_send_text(&reset.encode()).await;
    }

    fn pool(&self) -> std::sync::MutexGuard<'_, Pool<Channel>> {
        // A panic elsewhere cannot leave the pool half-changed: each change is one call.
        self.pool.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens channels until [`peer_core::stream::POOL_WARM`] wait idle, so the first
    /// connections skip the channel handshake too.
    pub async fn warm_up(&self) {
        let n = self.pool().warm_up();
        for _ in 0..n {
            match self.new_channel().await {
                Ok(ch) => self.give_back(ch),
                Err(e) => {
                    tracing::debug!("stream channel not opened: {e}");
                    self.lost();
                }
            }
        }
    }

    /// A new channel, open: one that does not open within [`OPEN_WAIT`] is retired and
    /// another tried (it gets another id), up to [`OPEN_TRIES`] in all.
    async fn new_channel(&self) -> Result<Channel, StreamError> {
        for _ in 0..OPEN_TRIES {
            let dc = self.own.create(&self.pc, STREAM_LABEL).await?;
            let mut ch = Channel::new(dc);
            let rx = &mut ch.rx;
            let open_event = async {
                loop {
                    match rx.recv().await {
                        Some(Incoming::Open) => return true,
                        None | Some(Incoming::Closed) => return false,
                        Some(_) => continue,
                    }
                }
            };
            let opened =
                tokio::time::timeout(OPEN_WAIT, crate::own::opened(&ch.dc, open_event)).await;
            match opened {
                Ok(true) => return Ok(ch),
                Ok(false) => return Err(StreamError::Closed),
                Err(_) => {
                    tracing::debug!("a stream channel did not open in {OPEN_WAIT:?}; another");
                    self.retire(ch).await;
                }
            }
        }
        Err(StreamError::NoAnswer)
    }

    /// A channel for a new stream: an idle one, a new one, or (at the cap) the next freed.
    async fn take(&self) -> Result<Channel, StreamError> {
        loop {
            // Registered before the pool is asked, so a channel freed in between is not missed.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let take = self.pool().take();
            match take {
                Take::Idle(mut ch) => {
                    // A channel the peer closed while idle says so in its queue.
                    match ch.rx.try_recv() {
                        Ok(Incoming::Closed) | Err(mpsc::error::TryRecvError::Disconnected) => {
                            self.pool().lost();
                            continue;
                        }
                        _ => return Ok(ch),
                    }
                }
                Take::Open => {
                    return self.new_channel().await.inspect_err(|_| self.lost());
                }
                Take::Wait => freed.await,
            }
        }
    }

    fn give_back(&self, ch: Channel) {
        self.pool().give_back(ch);
        self.freed.notify_one();
    }

    fn lost(&self) {
        self.pool().lost();
        self.freed.notify_one();
    }
}

/// The forwarding side: carries `tcp` as a stream to `service` over one of `dialer`'s
/// channels. The `open` and the connection's first bytes leave together; the channel goes back
/// to the pool when both sides are done with the stream.
pub async fn open(
    dialer: Arc<Dialer>,
    service: &str,
    token: Option<String>,
    tcp: TcpStream,
    meter: &Meter,
) -> Result<(), StreamError> {
    let (stream, open) = Stream::dial(service, token);
    let mut ch = start(&dialer, &open).await?;
    let result = pipe(tcp, &mut ch, stream, meter).await;
    settle(&dialer, ch, result.map(|f| f.refused)).await
}

/// After a stream on `ch`: a finished one gives the channel back to the pool (and says if it
/// was refused); a broken one retires it.
async fn settle(
    dialer: &Dialer,
    ch: Channel,
    result: Result<Option<String>, StreamError>,
) -> Result<(), StreamError> {
    match result {
        Ok(refused) => {
            dialer.give_back(ch);
            match refused {
                Some(reason) => Err(StreamError::Refused(reason)),
                None => Ok(()),
            }
        }
        Err(e) => {
            dialer.lost();
            dialer.retire(ch).await;
            Err(e)
        }
    }
}

/// The exposing side: answers the streams `peer` opens on `dc`, one after another, each let
/// through `gate` and connected to the service, until the channel closes. `report` hears each
/// stream that ended badly.
pub async fn serve(
    dc: Arc<dyn DataChannel>,
    gate: Arc<Gate>,
    link: Arc<crate::udp::Link>,
    who: Who<'_>,
    report: impl Fn(StreamError),
) {
    let Some(_held) = gate.hold_channel(who.peer) else {
        report(StreamError::Refused(format!(
            "too many stream channels from this peer (at most {CHANNELS_PER_PEER}); closed one"
        )));
        let _ = dc.close().await;
        return;
    };
    let mut ch = Channel::new(dc);
    loop {
        match accept(&mut ch, &gate, &link, who, &report).await {
            Ok(Some(_)) => {}
            Ok(None) => return,
            Err(e) => {
                report(e);
                ch.close().await;
                return;
            }
        }
    }
}

/// Who opened a stream channel: the peer (its streams and channels are counted by its id) and
/// its client (wrong tokens are counted by the server's tag of its address, which a rejoin
/// under a new id keeps; the id when the server gave no tag).
#[derive(Clone, Copy)]
pub struct Who<'a> {
    /// The peer's id.
    pub peer: &'a str,
    /// What the wrong-token limit counts by.
    pub client: &'a str,
}

/// Answers one stream on `ch`: `None` when the channel closed between streams. A refusal is
/// told to `report` and the channel carries on.
async fn accept(
    ch: &mut Channel,
    gate: &Gate,
    link: &Arc<crate::udp::Link>,
    who: Who<'_>,
    report: &impl Fn(StreamError),
) -> Result<Option<Finished>, StreamError> {
    let mut stream = Stream::answer();
    let open = loop {
        match ch.rx.recv().await {
            // Bytes before an `open` are the tail of a stream before it: dropped.
            Some(Incoming::Text(t)) => match stream.on_text(&t) {
                Heard::Ignored => continue,
                heard => break heard,
            },
            Some(Incoming::Open | Incoming::Data(_)) => continue,
            None | Some(Incoming::Closed) => return Ok(None),
        }
    };
    let session = match &open {
        Heard::Open { session, .. } => *session,
        _ => None,
    };
    let admitted = gate
        .admit(&open, who.client, gate.epoch.elapsed())
        .and_then(|service| match service.meter.full() {
            Some(why) => Err(StreamError::Refused(why)),
            None => Ok((service, gate.hold_stream(who.peer)?)),
        });
    // Counted against the peer until this stream is over.
    let (_held, verdict) = match admitted {
        // The one address this peer was told to expose: nothing in the request can change it.
        Ok((service, held)) => {
            let verdict = match (service.info.kind, session) {
                (ServiceKind::Udp, Some(id)) => {
                    crate::udp::socket_to(service.addr, link, id, service.meter.clone())
                        .await
                        .map(|(id, socket)| Local::Udp(id, socket, service.meter.clone()))
                }
                (ServiceKind::Udp, None) => Err(StreamError::Refused(format!(
                    "'{}' is a UDP service: use burrow forward",
                    service.info.name
                ))),
                (_, Some(_)) => Err(StreamError::Refused(format!(
                    "'{}' is not a UDP service",
                    service.info.name
                ))),
                _ => {
                    let connect = TcpStream::connect(service.addr);
                    match tokio::time::timeout(CONNECT_WAIT, connect).await {
                        Ok(connected) => connected
                            .map(|tcp| Local::Tcp(tcp, service.meter.clone()))
                            .map_err(StreamError::Io),
                        Err(_) => Err(StreamError::Io(std::io::ErrorKind::TimedOut.into())),
                    }
                }
            };
            (Some(held), verdict)
        }
        Err(e) => (None, Err(e)),
    };
    match verdict {
        Ok(Local::Tcp(tcp, meter)) => {
            ch.send_text(&stream.decide(Ok(()))).await?;
            pipe(tcp, ch, stream, &meter).await.map(Some)
        }
        Ok(Local::Udp(id, socket, meter)) => {
            ch.send_text(&stream.decide(Ok(()))).await?;
            let served = serve_session(ch, stream, link, (id, &socket), &meter).await;
            link.unroute(id);
            served.map(Some)
        }
        Err(e) => {
            let reason = match &e {
                StreamError::Refused(reason) => reason.clone(),
                StreamError::Io(io) => format!("the service is not answering: {io}"),
                other => other.to_string(),
            };
            ch.send_text(&stream.decide(Err(reason.clone()))).await?;
            report(e);
            // Drop what the dialing side sent behind its `open`, up to its final; then the
            // channel may carry the next stream.
            wait_final(ch, &mut stream).await?;
            Ok(Some(Finished {
                refused: Some(reason),
            }))
        }
    }
}

/// What an admitted stream is connected to on this side.
enum Local {
    /// A TCP service's connection (and the service's meter).
    Tcp(TcpStream, Arc<Meter>),
    /// A UDP session's number and its socket, connected to the service.
    Udp(u32, Arc<tokio::net::UdpSocket>, Arc<Meter>),
}

/// The exposing side of an accepted UDP session: the service's datagrams go to the peer on the
/// link (the peer's come in through the link's route), until the session's stream ends. Past
/// the service's cap, datagrams are dropped.
async fn serve_session(
    ch: &mut Channel,
    mut stream: Stream,
    link: &crate::udp::Link,
    (id, socket): (u32, &tokio::net::UdpSocket),
    meter: &Meter,
) -> Result<Finished, StreamError> {
    let _open = meter.opened();
    let mut buf = vec![0u8; peer_core::datagram::MAX_DATAGRAM + 1];
    loop {
        tokio::select! {
            got = socket.recv(&mut buf) => match got {
                Ok(n) if meter.admit(Way::Out, n) => link.send(id, &buf[..n]).await,
                Ok(_) => {}
                // The service is not listening (an ICMP error): its next answer may come.
                Err(e) => {
                    tracing::debug!(session = id, "udp service: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            },
            item = ch.rx.recv() => match item {
                Some(Incoming::Text(t)) => {
                    let answer = match stream.on_text(&t) {
                        Heard::Ended => stream.end(),
                        Heard::Reset(_) => stream.reset("reset by the peer"),
                        _ => None,
                    };
                    if let Some(m) = answer {
                        ch.send_text(&m).await?;
                    }
                    if stream.is_finished() {
                        return Ok(Finished::default());
                    }
                }
                Some(Incoming::Open | Incoming::Data(_)) => {}
                None | Some(Incoming::Closed) => return Err(StreamError::Closed),
            },
        }
    }
}

/// The forwarding side of one UDP session: opens it as a stream on one of `dialer`'s
/// channels; says `opened` once the peer accepted; ends it when `end` fires (the session was
/// idle) or the peer ends it. The datagrams themselves go on the link, not here.
pub async fn udp_session(
    dialer: Arc<Dialer>,
    service: &str,
    token: Option<String>,
    id: u32,
    opened: impl std::future::Future<Output = ()>,
    end: tokio::sync::oneshot::Receiver<()>,
) -> Result<(), StreamError> {
    let (mut stream, open) = Stream::dial_session(service, token, Some(id));
    let mut ch = start(&dialer, &open).await?;
    let result = async {
        let mut opened = Some(opened);
        let mut refused = None;
        let mut end = std::pin::pin!(end);
        let mut ending = false;
        loop {
            if stream.is_finished() {
                return Ok(refused);
            }
            let wait = if !stream.answered() {
                Some((ANSWER_WAIT, StreamError::NoAnswer))
            } else if !stream.may_send() {
                Some((FINAL_WAIT, StreamError::Closed))
            } else {
                None
            };
            let item = tokio::select! {
                _ = &mut end, if !ending && stream.may_send() => {
                    ending = true;
                    if let Some(m) = stream.end() {
                        ch.send_text(&m).await?;
                    }
                    continue;
                }
                item = async {
                    match wait {
                        Some((limit, late)) => tokio::time::timeout(limit, ch.rx.recv())
                            .await
                            .map_err(|_| late),
                        None => Ok(ch.rx.recv().await),
                    }
                } => item?,
            };
            match item {
                Some(Incoming::Text(t)) => {
                    let answer = match stream.on_text(&t) {
                        Heard::Accepted => {
                            if let Some(opened) = opened.take() {
                                opened.await;
                            }
                            None
                        }
                        Heard::Refused(reason) => {
                            refused = Some(reason);
                            stream.reset("refused")
                        }
                        Heard::Reset(_) => stream.reset("reset by the peer"),
                        Heard::Ended => stream.end(),
                        _ => None,
                    };
                    if let Some(m) = answer {
                        ch.send_text(&m).await?;
                    }
                }
                Some(Incoming::Open | Incoming::Data(_)) => {}
                None | Some(Incoming::Closed) => return Err(StreamError::Closed),
            }
        }
    }
    .await;
    settle(&dialer, ch, result).await
}

/// A channel of `dialer`'s with `open` sent on it: a channel that fails the `open` itself
/// carried nothing of the stream, and another is tried.
async fn start(dialer: &Dialer, open: &StreamMessage) -> Result<Channel, StreamError> {
    let mut tries = 0;
    loop {
        let ch = dialer.take().await?;
        match ch.send_text(open).await {
            Ok(()) => return Ok(ch),
            Err(e) => {
                tracing::debug!("a stream channel failed the open ({e}); another");
                dialer.lost();
                dialer.retire(ch).await;
                tries += 1;
                if tries == OPEN_TRIES {
                    return Err(e);
                }
            }
        }
    }
}

/// How a stream that finished (both finals sent and heard) ended. (A reset is no failure: one
/// side's client aborted, and the other side's socket is reset in turn.)
#[derive(Debug, Default)]
struct Finished {
    /// The answering side refused it: why.
    refused: Option<String>,
}

/// Reads `ch` until the peer's final for `stream`, dropping bytes, for at most [`FINAL_WAIT`].
async fn wait_final(ch: &mut Channel, stream: &mut Stream) -> Result<(), StreamError> {
    let deadline = tokio::time::sleep(FINAL_WAIT);
    tokio::pin!(deadline);
    while !stream.peer_done() {
        tokio::select! {
            item = ch.rx.recv() => match item {
                Some(Incoming::Text(t)) => {
                    stream.on_text(&t);
                }
                Some(Incoming::Open | Incoming::Data(_)) => {}
                None | Some(Incoming::Closed) => return Err(StreamError::Closed),
            },
            () = &mut deadline => return Err(StreamError::Closed),
        }
    }
    Ok(())
}

/// Moves bytes both ways until the stream is finished on this channel (both finals sent and
/// heard), so the channel can carry the next one.
/// Every byte is counted on `meter`, and held to its cap.
async fn pipe(
    tcp: TcpStream,
    ch: &mut Channel,
    stream: Stream,
    meter: &Meter,
) -> Result<Finished, StreamError> {
    let _open = meter.opened();
    // A tunnel passes bytes on as they come: no Nagle delay on either local socket (a reply
    // written in two pieces would otherwise wait for the client's delayed ACK, 40 ms).
    let _ = tcp.set_nodelay(true);
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let stream = Mutex::new(stream);
    // Never held across an await.
    let state = || stream.lock().unwrap_or_else(PoisonError::into_inner);
    let dc = ch.dc.clone();
    let rx = &mut ch.rx;
    // The upstream's final is counted as sent (`Stream::end`) before its `send` finished: the
    // stream may look finished meanwhile, and the send must not be dropped with the upstream
    // (the peer would wait for it forever, and take the next stream's `open` for this one's).
    let final_in_flight = std::sync::atomic::AtomicBool::new(false);
    let send_final = |m: StreamMessage| {
        final_in_flight.store(true, std::sync::atomic::Ordering::Relaxed);
        let dc = dc.clone();
        async move { dc.send_text(&m.encode()).await }
    };
    // TCP → channel, until EOF (our `end`) or a read error (our `reset`).
    let upstream = async {
        let mut buf = vec![0u8; peer_core::transfer::CHUNK_SIZE];
        loop {
            let n = match tcp_read.read(&mut buf).await {
                Ok(n) => n,
                Err(e) => {
                    let reset = state().reset(&e.to_string());
                    if let Some(m) = reset {
                        send_final(m).await?;
                    }
                    return Ok::<(), StreamError>(());
                }
            };
            if n == 0 {
                let end = state().end();
                if let Some(m) = end {
                    send_final(m).await?;
                }
                return Ok(());
            }
            meter.pace(Way::Out, n).await;
            if !state().may_send() {
                return Ok(());
            }
            dc.send(BytesMut::from(&buf[..n])).await?;
        }
    };
    // Channel → TCP, until the peer's final (and, after a reset, until ours is sent too).
    let downstream = async {
        let mut finished = Finished::default();
        let mut write_failed = false;
        loop {
            // The answer to our open is owed within ANSWER_WAIT; after we aborted, the
            // peer's final within FINAL_WAIT.
            let wait = if !state().answered() {
                Some((ANSWER_WAIT, StreamError::NoAnswer))
            } else if state().aborted() {
                Some((FINAL_WAIT, StreamError::Closed))
            } else {
                None
            };
            let item = match wait {
                Some((limit, late)) => match tokio::time::timeout(limit, rx.recv()).await {
                    Ok(item) => item,
                    Err(_) => return Err(late),
                },
                None => rx.recv().await,
            };
            let Some(item) = item else {
                return Err(StreamError::Closed);
            };
            match item {
                Incoming::Data(data) => {
                    if !state().takes_data() || write_failed {
                        continue;
                    }
                    meter.pace(Way::In, data.len()).await;
                    if let Err(e) = tcp_write.write_all(&data).await {
                        // Our client is gone: reset, and drop the rest up to the peer's final.
                        write_failed = true;
                        let reset = state().reset(&e.to_string());
                        if let Some(m) = reset {
                            dc.send_text(&m.encode()).await?;
                        }
                    }
                }
                Incoming::Text(t) => {
                    let heard = state().on_text(&t);
                    let answer = match heard {
                        Heard::Ended => {
                            if !write_failed {
                                let _ = tcp_write.shutdown().await;
                            }
                            None
                        }
                        Heard::Refused(reason) => {
                            finished.refused = Some(reason);
                            state().reset("refused")
                        }
                        Heard::Reset(_) => state().reset("reset by the peer"),
                        Heard::Accepted | Heard::Open { .. } | Heard::Ignored => None,
                    };
                    if let Some(m) = answer {
                        dc.send_text(&m.encode()).await?;
                    }
                }
                Incoming::Open => {}
                Incoming::Closed => return Err(StreamError::Closed),
            }
            if state().peer_done() {
                return Ok(finished);
            }
        }
    };
    tokio::pin!(upstream, downstream);
    let mut up_done = false;
    let finished = loop {
        tokio::select! {
            r = &mut upstream, if !up_done => {
                r?;
                up_done = true;
            }
            r = &mut downstream => break r?,
        }
    };
    // The peer's direction is over. A refusal or reset ends ours too (it was answered, and the
    // client's socket is dropped: reset if data is unread); otherwise our client may still be
    // sending: carry it to its end.
    let final_pending = final_in_flight.load(std::sync::atomic::Ordering::Relaxed);
    if !up_done && (final_pending || !state().is_finished()) {
        (&mut upstream).await?;
    }
    if state().is_finished() {
        Ok(finished)
    } else {
        Err(StreamError::Closed)
    }
}

/// Waits (a bounded while) until everything sent on `dc` has left, so closing it loses nothing.
async fn drain(dc: &Arc<dyn DataChannel>) {
    for _ in 0..500 {
        match dc.outstanding_bytes().await {
            Ok(0) | Err(_) => return,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peer_core::channels::ServiceKind;

    fn service(token: Option<&str>) -> Exposed {
        Exposed::new(
            ServiceInfo {
                name: "web".into(),
                kind: ServiceKind::Http,
                protected: token.is_some(),
                down: false,
            },
            "127.0.0.1:8080".parse().unwrap(),
            token.map(str::to_string),
            crate::meter::Limits::default(),
        )
    }

    fn open(name: &str, token: Option<&str>) -> Heard {
        Heard::Open {
            service: name.into(),
            token: token.map(str::to_string),
            session: None,
        }
    }

    fn gate(token: Option<&str>) -> Gate {
        Gate::new(vec![service(token)], 2)
    }

    const T0: Duration = Duration::from_secs(1);

    #[test]
    fn only_the_exposed_service_is_admitted() {
        let g = gate(None);
        assert!(g.admit(&open("web", None), "p", T0).is_ok());
        assert!(g.admit(&open("127.0.0.1:22", None), "p", T0).is_err());
        assert!(g.admit(&open("ssh", None), "p", T0).is_err());
        assert!(g.admit(&Heard::Ended, "p", T0).is_err());
        assert!(g.admit(&Heard::Ignored, "p", T0).is_err());
    }

    #[test]
    fn a_token_is_checked() {
        let g = gate(Some("k"));
        assert!(g.admit(&open("web", Some("k")), "p", T0).is_ok());
        assert!(g.admit(&open("web", None), "p", T0).is_err());
        assert!(g.admit(&open("web", Some("x")), "p", T0).is_err());
    }

    #[test]
    fn wrong_tokens_lock_the_peer_out_even_with_the_right_one() {
        let g = gate(Some("k"));
        for _ in 0..4 {
            let e = g.admit(&open("web", Some("x")), "mallory", T0);
            assert!(matches!(e, Err(StreamError::Refused(_))), "{e:?}");
        }
        let fifth = g.admit(&open("web", Some("x")), "mallory", T0);
        assert!(matches!(fifth, Err(StreamError::Blocked(_))), "{fifth:?}");
        let right = g.admit(&open("web", Some("k")), "mallory", T0 + T0);
        let Err(StreamError::Blocked(b)) = right else {
            panic!("the right token during the cool-down: {right:?}");
        };
        assert_eq!(b.retry_in_secs(), 59);
        assert_eq!(
            StreamError::Blocked(b).to_string(),
            "too many wrong tokens; retry in 59 s"
        );
        // Another peer is not affected; the same one is let in after the cool-down.
        assert!(g.admit(&open("web", Some("k")), "alice", T0).is_ok());
        let after = T0 + Duration::from_secs(61);
        assert!(g.admit(&open("web", Some("k")), "mallory", after).is_ok());
    }

    #[test]
    fn streams_and_channels_are_counted_per_peer_and_released() {
        let g = gate(None);
        let a1 = g.hold_stream("a").expect("first");
        let _a2 = g.hold_stream("a").expect("second");
        let third = g.hold_stream("a");
        let Err(StreamError::Refused(why)) = third else {
            panic!("a third stream: {:?}", third.is_ok());
        };
        assert_eq!(why, "too many open streams from this peer (at most 2)");
        assert!(g.hold_stream("b").is_ok(), "another peer has its own count");
        drop(a1);
        assert!(
            g.hold_stream("a").is_ok(),
            "a finished stream frees its place"
        );
        let channels: Vec<_> = (0..CHANNELS_PER_PEER)
            .map(|_| g.hold_channel("a").expect("within the cap"))
            .collect();
        assert!(g.hold_channel("a").is_none(), "past the cap");
        drop(channels);
        assert!(g.hold_channel("a").is_some());
        drop(_a2);
    }

    #[test]
    fn an_open_service_counts_nothing() {
        let g = gate(None);
        for _ in 0..20 {
            assert!(g.admit(&open("web", Some("x")), "p", T0).is_ok());
        }
    }
}
