//! UDP services over a peer connection (the rules are `peer_core::datagram`'s): the
//! `burrow-udp` channel and the routes of the sessions on it ([`Link`], both sides), and the
//! forwarding side's socket with its sessions ([`forward`]). A session is opened and ended as a
//! stream (`streams::udp_session` / the exposing side's `accept`), so the exposing side's gate
//! decides it as it decides a TCP stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use peer_core::datagram::{self, Lookup, Sessions, IDLE, OPENING_QUEUE};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent, RTCDataChannelInit};
use webrtc::peer_connection::PeerConnection;

use crate::events::{Event, Printer};
use crate::meter::{Meter, Way};
use crate::own::OwnChannels;
use crate::streams::{self, Dialer, TokenSource};

/// How long SCTP may try to deliver a datagram (milliseconds) before giving it up.
const DATAGRAM_LIFETIME_MS: u16 = 1000;

/// Receive and send buffers asked for on the UDP sockets of sessions (the kernel caps them at
/// `net.core.rmem_max`): a service or client answers in bursts, and a loopback datagram of
/// 1.2 KB costs ~2.3 KB of the ~208 KiB default, so about 90 were kept and the rest of a burst
/// dropped before Burrow could read them.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// `socket` with big buffers (best effort).
pub fn with_big_buffers(socket: UdpSocket) -> UdpSocket {
    let sock = socket2::SockRef::from(&socket);
    let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
    let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
    socket
}

/// Where a session's datagrams from the peer go.
#[derive(Clone)]
pub enum Route {
    /// Exposing side: the session's own socket, connected to the service, and the service's
    /// meter (datagrams past its cap are dropped).
    Service(Arc<UdpSocket>, Arc<Meter>),
    /// Forwarding side: the listening socket, the client the session is for, and what the
    /// forward's streams and sessions carried.
    Client(Arc<UdpSocket>, SocketAddr, Arc<Meter>),
}

/// One peer connection's datagram channel and the sessions routed on it.
#[derive(Default)]
pub struct Link {
    channel: tokio::sync::OnceCell<Arc<dyn DataChannel>>,
    routes: Mutex<HashMap<u32, (Route, Instant)>>,
    /// The channel's reader, owned here (stopped when the link goes with its peer).
    reader: Mutex<Option<tokio::task::AbortHandle>>,
    /// Datagrams dropped: the channel's buffer was full, or no session had their number.
    dropped: AtomicU64,
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(reader) = self.reader.get_mut().ok().and_then(Option::take) {
            reader.abort();
        }
    }
}

impl Link {
    fn routes(&self) -> std::sync::MutexGuard<'_, HashMap<u32, (Route, Instant)>> {
        // Each change is one map operation.
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The peer opened its datagram channel (exposing side): it is read from now on. A second
    /// one is refused (closed).
    pub async fn attach(self: &Arc<Self>, dc: Arc<dyn DataChannel>) {
        if self.channel.set(dc.clone()).is_err() {
            let _ = dc.close().await;
            return;
        }
        self.read(dc);
    }

    /// Our datagram channel toward the peer (forwarding side), opened on first use.
    async fn open(
        self: &Arc<Self>,
        pc: &Arc<dyn PeerConnection>,
        own: &OwnChannels,
    ) -> Result<(), streams::StreamError> {
        let made = self
            .channel
            .get_or_try_init(|| async {
                // Unordered and unreliable, like UDP: a lost datagram is resent only within
                // its short lifetime, then given up, and no datagram waits for another.
                let options = RTCDataChannelInit {
                    ordered: false,
                    max_packet_life_time: Some(DATAGRAM_LIFETIME_MS),
                    ..Default::default()
                };
                let dc = own
                    .create_with(pc, datagram::UDP_LABEL, Some(options))
                    .await?;
                let (tx, open) = oneshot::channel();
                let reader = self.clone();
                let dc2 = dc.clone();
                let task = tokio::spawn(async move {
                    let mut tx = Some(tx);
                    reader.read_loop(&dc2, &mut tx).await;
                });
                *self.reader.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(task.abort_handle());
                let heard = async { open.await.is_ok() };
                if tokio::time::timeout(Duration::from_secs(10), crate::own::opened(&dc, heard))
                    .await
                    != Ok(true)
                {
                    return Err(streams::StreamError::NoAnswer);
                }
                Ok::<_, streams::StreamError>(dc)
            })
            .await;
        made.map(|_| ())
    }

    fn read(self: &Arc<Self>, dc: Arc<dyn DataChannel>) {
        let link = self.clone();
        let task = tokio::spawn(async move { link.read_loop(&dc, &mut None).await });
        *self.reader.lock().unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
    }

    /// Delivers each datagram the peer sends to its session's route, until the channel ends.
    async fn read_loop(&self, dc: &Arc<dyn DataChannel>, open: &mut Option<oneshot::Sender<()>>) {
        while let Some(event) = dc.poll().await {
            match event {
                DataChannelEvent::OnOpen => {
                    if let Some(tx) = open.take() {
                        let _ = tx.send(());
                    }
                }
                DataChannelEvent::OnMessage(m) if !m.is_string => self.deliver(&m.data).await,
                DataChannelEvent::OnClose => return,
                _ => {}
            }
        }
    }

    async fn deliver(&self, message: &[u8]) {
        let Some((session, payload)) = datagram::parse(message) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let route = {
            let mut routes = self.routes();
            routes.get_mut(&session).map(|(route, heard)| {
                *heard = Instant::now();
                route.clone()
            })
        };
        let sent = match route {
            Some(Route::Service(socket, meter)) => {
                if !meter.admit(Way::In, payload.len()) {
                    return;
                }
                socket.send(payload).await.is_ok()
            }
            Some(Route::Client(socket, client, meter)) => {
                meter.admit(Way::In, payload.len());
                socket.send_to(payload, client).await.is_ok()
            }
            None => false,
        };
        if !sent {
            tracing::debug!(
                session,
                "datagram from the peer dropped (no route, or the socket failed)"
            );
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Routes `session`'s datagrams from the peer to `route`; `false` if the number is taken.
    pub fn route(&self, session: u32, route: Route) -> bool {
        let mut routes = self.routes();
        if routes.contains_key(&session) {
            return false;
        }
        routes.insert(session, (route, Instant::now()));
        true
    }

    /// The session is over.
    pub fn unroute(&self, session: u32) {
        self.routes().remove(&session);
    }

    /// When a datagram last came from the peer for `session`.
    fn heard(&self, session: u32) -> Option<Instant> {
        self.routes().get(&session).map(|(_, at)| *at)
    }

    /// Sends one datagram of `session` to the peer; dropped (as UDP would) when the channel's
    /// buffer is full or the channel is not open.
    pub async fn send(&self, session: u32, payload: &[u8]) {
        let (Some(dc), Ok(message)) = (self.channel.get(), datagram::frame(session, payload))
        else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if let Err(e) = dc.try_send(BytesMut::from(&message[..])).await {
            tracing::debug!(session, "datagram dropped: {e}");
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The peer a forwarding side's new sessions go to, kept current by the session loop.
#[derive(Clone)]
pub struct Provider {
    /// Its id.
    pub peer: String,
    /// The service's name there.
    pub service: String,
    /// Its stream channels (each session is a stream).
    pub dialer: Arc<Dialer>,
    /// Its datagram channel.
    pub link: Arc<Link>,
    /// The connection, to open the datagram channel on.
    pub pc: Arc<dyn PeerConnection>,
    /// Our channels toward it.
    pub own: Arc<OwnChannels>,
}

/// What a session's task tells the forwarder.
enum News {
    Opened(u32),
    Ended(u32, Option<(String, streams::StreamError)>),
}

/// A session of the forwarding side, as the forwarder keeps it.
struct Open {
    /// Datagrams that came while it was opening.
    queue: Vec<Vec<u8>>,
    /// Whether the peer accepted it.
    open: bool,
    /// The link and peer it belongs to.
    link: Arc<Link>,
    /// Tells the session's task to end it (idle).
    end: Option<oneshot::Sender<()>>,
}

/// Most sessions (local client addresses) a forwarding side keeps at once.
pub const MAX_SESSIONS: usize = 256;

/// The forwarding side: carries each datagram that reaches `socket` to the UDP service
/// `provider` names, one session per client address, and the answers back (counted on
/// `meter`); runs until the session loop drops it.
pub async fn forward(
    socket: Arc<UdpSocket>,
    provider: watch::Receiver<Option<Provider>>,
    (token, meter): (TokenSource, Arc<Meter>),
    printer: Printer,
) {
    let epoch = Instant::now();
    let mut sessions: Sessions<SocketAddr> = Sessions::new(MAX_SESSIONS);
    let mut open: HashMap<u32, Open> = HashMap::new();
    let mut tasks = tokio::task::JoinSet::new();
    let (news_tx, mut news) = mpsc::channel(64);
    let mut buf = vec![0u8; datagram::MAX_DATAGRAM + 1];
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut warned = None::<Instant>;
    loop {
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                let Ok((n, client)) = got else { continue };
                let payload = &buf[..n];
                meter.admit(Way::Out, n);
                match sessions.lookup(&client, epoch.elapsed()) {
                    Lookup::Known(id) => match open.get_mut(&id) {
                        Some(s) if s.open => s.link.send(id, payload).await,
                        Some(s) if s.queue.len() < OPENING_QUEUE => s.queue.push(payload.to_vec()),
                        _ => {}
                    },
                    Lookup::New(id) => {
                        let Some(p) = provider.borrow().clone() else {
                            sessions.remove(id);
                            // Said at most every 10 s: a client may send many.
                            if warned.is_none_or(|at| at.elapsed() > Duration::from_secs(10)) {
                                warned = Some(Instant::now());
                                printer.print(Event::Warning {
                                    message: format!(
                                        "datagrams from {client} dropped: no connected peer \
                                         offers the UDP service"
                                    ),
                                });
                            }
                            continue;
                        };
                        p.link.route(id, Route::Client(socket.clone(), client, meter.clone()));
                        let (end_tx, end_rx) = oneshot::channel();
                        open.insert(id, Open {
                            queue: vec![payload.to_vec()],
                            open: false,
                            link: p.link.clone(),
                            end: Some(end_tx),
                        });
                        let news = news_tx.clone();
                        let token = token.clone();
                        let meter = meter.clone();
                        tasks.spawn(async move {
                            let _open = meter.opened();
                            let result = session(&p, id, token, end_rx, &news).await;
                            let failed = result.err().map(|e| (p.peer.clone(), e));
                            let _ = news.send(News::Ended(id, failed)).await;
                        });
                    }
                    Lookup::Full => {}
                }
            }
            Some(n) = news.recv() => match n {
                News::Opened(id) => {
                    if let Some(s) = open.get_mut(&id) {
                        s.open = true;
                        for d in std::mem::take(&mut s.queue) {
                            s.link.send(id, &d).await;
                        }
                    }
                }
                News::Ended(id, failed) => {
                    sessions.remove(id);
                    if let Some(s) = open.remove(&id) {
                        s.link.unroute(id);
                    }
                    if let Some((peer, e)) = failed {
                        printer.print(Event::StreamFailed { peer, reason: e.to_string() });
                    }
                }
            },
            _ = tick.tick() => {
                // Answers from the service count as activity too.
                for (id, s) in &open {
                    if let Some(at) = s.link.heard(*id) {
                        sessions.heard(*id, at.saturating_duration_since(epoch));
                    }
                }
                for id in sessions.expire(epoch.elapsed(), IDLE) {
                    if let Some(end) = open.get_mut(&id).and_then(|s| s.end.take()) {
                        let _ = end.send(());
                    }
                }
                while tasks.try_join_next().is_some() {}
            }
        }
    }
}

/// One session: its channel to the peer opened, then a stream that opens it and ends it.
async fn session(
    p: &Provider,
    id: u32,
    token: TokenSource,
    end: oneshot::Receiver<()>,
    news: &mpsc::Sender<News>,
) -> Result<(), streams::StreamError> {
    p.link.open(&p.pc, &p.own).await?;
    let token = token.read().await?;
    let opened = async {
        let _ = news.send(News::Opened(id)).await;
    };
    streams::udp_session(p.dialer.clone(), &p.service, token, id, opened, end).await
}

/// The exposing side's socket for session `id`: its own, connected to the service at `addr`
/// (datagrams go there only, and only its come back), routed on `link`.
pub async fn socket_to(
    addr: SocketAddr,
    link: &Link,
    id: u32,
    meter: Arc<Meter>,
) -> Result<(u32, Arc<UdpSocket>), streams::StreamError> {
    // On loopback for a loopback service: the socket is not reachable from elsewhere at all.
    let any: SocketAddr = match (addr.is_ipv4(), addr.ip().is_loopback()) {
        (true, true) => (std::net::Ipv4Addr::LOCALHOST, 0).into(),
        (true, false) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        (false, true) => (std::net::Ipv6Addr::LOCALHOST, 0).into(),
        (false, false) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = with_big_buffers(UdpSocket::bind(any).await?);
    socket.connect(addr).await?;
    let socket = Arc::new(socket);
    if !link.route(id, Route::Service(socket.clone(), meter)) {
        return Err(streams::StreamError::Refused(format!(
            "session {id} is open already"
        )));
    }
    Ok((id, socket))
}
