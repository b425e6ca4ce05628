//! Burrow's TURN relay (RFC 8656; clients over UDP or TCP, peers over UDP): allocations,
//! permissions, channels, and the forwarding of datagrams between clients and their peers.
//!
//! A client reaches the relay on a *listener*: one of the UDP sockets, or one TCP connection
//! ([`crate::turn_tcp`], for networks that block UDP). Allocations are keyed by listener and
//! client address (the 5-tuple), and answered on the same listener; a TCP connection's
//! allocations end with it.
//!
//! # What a client does
//!
//! A peer whose NAT cannot be punched asks the relay for an *allocation* (Allocate): a UDP
//! socket on the server whose address (XOR-RELAYED-ADDRESS) it hands to the other peer as a
//! relayed candidate. It then installs *permissions* for the peer IPs it wants to hear from and
//! talk to (CreatePermission, 300 s each), and sends them data in Send indications, or, after
//! binding a 4-byte-header *channel* to one peer (ChannelBind, 600 s), in ChannelData messages.
//! What peers send to the relayed address comes back to the client as Data indications or
//! ChannelData. Allocations live for their LIFETIME (at most `--turn-max-lifetime`) unless
//! refreshed (Refresh; a lifetime of 0 deletes).
//!
//! # Who may
//!
//! Every request that creates or changes state is authenticated with the long-term credential
//! mechanism (RFC 8489 §9.2): a request without MESSAGE-INTEGRITY gets 401 with REALM "burrow"
//! and a NONCE ([`crate::nonce`]: stateless, so unauthenticated traffic costs no memory); the
//! client retries with USERNAME, REALM, NONCE and an HMAC keyed by
//! MD5(username:realm:password), the password being the TURN REST API credential minted at
//! welcome ([`crate::credentials`]). Only once that HMAC checks out does anything count
//! against a quota ([`crate::turn_guard::Ledger`]). Credentials are also bound to the
//! signaling session: the relay keeps the set of *live* peer ids, filled and emptied through
//! [`TurnAccess`] when a peer joins and leaves, and refuses (401) a peer that has left, closing
//! its allocations at once. Which peer addresses may be reached is
//! [`crate::turn_guard::PeerPolicy`]'s call; data flows only to and from peers with a
//! permission.
//!
//! # How it is fast
//!
//! Each listening socket has one task reading datagrams ([`crate::stun`]); each allocation has
//! one task reading its relay socket. Both look allocations, permissions and channels up in
//! hash maps behind `std` locks held for a lookup and never across an `.await`, and send with
//! a non-blocking `sendto` (a full socket buffer drops the datagram, as UDP may). Relayed
//! data is never copied into a new buffer: datagrams from peers are read into a per-thread
//! buffer with room in front, where the ChannelData or Data indication header is written in
//! place. An allocation's task is aborted when the allocation expires, is deleted or revoked,
//! or the server closes.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::io::ErrorKind;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;
use tokio::task::AbortHandle;

use crate::credentials::{self, Minter};
use crate::nonce::Nonces;
use crate::turn_guard::{Ledger, PeerPolicy, PeerVerdict, Quotas};
use crate::wire::{self, attr, method, Builder, Class, Message};

/// How long a permission lasts (RFC 8656 §9).
pub const PERMISSION_LIFETIME: Duration = Duration::from_secs(300);
/// How long a channel binding lasts (RFC 8656 §12).
pub const CHANNEL_LIFETIME: Duration = Duration::from_secs(600);
/// The lifetime granted when a client asks for none (RFC 8656 §3.2), unless the maximum is
/// lower.
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(600);
/// Most permissions (peer IPs) one allocation may hold.
pub const MAX_PERMISSIONS: usize = 64;
/// Most channels one allocation may bind.
pub const MAX_CHANNELS: usize = 64;
/// Largest datagram relayed (the largest a UDP/IPv4 socket sends).
const MAX_DATAGRAM: usize = 65_507;
/// Info-level log lines about refusals per second, at most (the rest go to debug).
const INFO_LOGS_PER_SEC: u32 = 10;

/// How the relay is set up.
#[derive(Clone)]
pub struct RelayConfig {
    /// The REALM of the long-term credentials.
    pub realm: String,
    /// Checks usernames and derives their passwords.
    pub minter: Minter,
    /// Which peer addresses may be reached.
    pub policy: PeerPolicy,
    /// Allocation quotas.
    pub quotas: Quotas,
    /// The IP advertised in XOR-RELAYED-ADDRESS.
    pub relay_ip: IpAddr,
    /// The IP relay sockets are bound to (unspecified: all).
    pub bind_ip: IpAddr,
    /// Longest lifetime granted (a requested LIFETIME is clamped to it).
    pub max_lifetime: Duration,
    /// Relayed bytes per second per peer (all its allocations, both directions); 0: no cap.
    pub max_bps: u64,
    /// Where refusals and relayed bytes are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Unauthenticated answers one client network gets per second (0: no limit); genuine
    /// clients send a few Allocates per peer connection.
    pub unauthenticated_rate: u32,
}

/// How the relay reaches a client: its UDP listening socket, or its TCP connection's writer.
#[derive(Clone)]
enum Back {
    Udp(Arc<UdpSocket>),
    Tcp(TcpWriter),
}

impl Back {
    /// Sends `data` to `client` now or never; the bytes sent.
    fn send(&self, data: &[u8], client: SocketAddr) -> Option<usize> {
        match self {
            Back::Udp(socket) => send_now(socket, data, client).ok(),
            Back::Tcp(writer) => writer.try_send(data).then_some(data.len()),
        }
    }
}

/// Most bytes queued toward one TCP client: past them, what comes is dropped, as a full UDP
/// buffer would drop it (a client that does not read cannot make the relay hold more).
pub const TCP_QUEUE_BYTES: usize = 1 << 20;

/// The queue toward one TCP client (answers and relayed data, in order), bounded in bytes.
#[derive(Clone)]
pub struct TcpWriter {
    tx: tokio::sync::mpsc::Sender<Vec<u8>>,
    queued: Arc<std::sync::atomic::AtomicUsize>,
}

impl TcpWriter {
    /// A writer, and the queue its connection's writer task drains.
    pub fn new() -> (TcpWriter, tokio::sync::mpsc::Receiver<Vec<u8>>) {
        let (tx, rx) = tokio::sync::mpsc::channel(1024);
        let queued = Arc::default();
        (TcpWriter { tx, queued }, rx)
    }

    /// Queues `data`; `false` (dropped) when the queue is full.
    pub fn try_send(&self, data: &[u8]) -> bool {
        let before = self.queued.fetch_add(data.len(), Ordering::Relaxed);
        if before + data.len() <= TCP_QUEUE_BYTES && self.tx.try_send(data.to_vec()).is_ok() {
            return true;
        }
        self.queued.fetch_sub(data.len(), Ordering::Relaxed);
        false
    }

    /// `n` bytes of the queue were written to the client.
    pub fn written(&self, n: usize) {
        self.queued.fetch_sub(n, Ordering::Relaxed);
    }
}

/// Listener numbers from here on are TCP connections (below: the UDP sockets).
const FIRST_TCP_LISTENER: usize = 1 << 20;

/// The relay: configuration, the listening sockets (to reach clients) and every allocation.
pub struct Relay {
    cfg: RelayConfig,
    nonces: Nonces,
    listeners: Vec<Arc<UdpSocket>>,
    /// The TCP connections' writers, by listener number.
    tcp: RwLock<HashMap<usize, TcpWriter>>,
    next_tcp: std::sync::atomic::AtomicUsize,
    table: RwLock<Table>,
    logs: LogBudget,
    /// Unauthenticated answers (401, 438, 400) sent per client network per second: they are
    /// larger than the requests, so with spoofed sources they would make the relay a reflector.
    challenges: Mutex<HashMap<IpAddr, (u64, u32)>>,
}

/// The network an unauthenticated answer is counted under.
fn challenge_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            IpAddr::from([a, b, c, 0])
        }
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::from([s[0], s[1], s[2], 0, 0, 0, 0, 0])
        }
    }
}

/// Everything that changes, under one lock: lookups take it for reading.
#[derive(Default)]
struct Table {
    /// By (listening socket index, client address): the 5-tuple of RFC 8656 over UDP.
    allocations: HashMap<(usize, SocketAddr), Entry>,
    /// Ports of live relay sockets (the only ports reachable on the server's own addresses).
    relay_ports: HashSet<u16>,
    ledger: Ledger,
    /// Peer ids whose signaling session is open.
    live: HashSet<Box<str>>,
    /// Per-peer bandwidth buckets, with how many allocations share each.
    buckets: HashMap<Box<str>, (Arc<Bucket>, usize)>,
    closed: bool,
}

/// An allocation in the table; removing it aborts its task.
struct Entry {
    alloc: Arc<Allocation>,
    task: AbortHandle,
}

impl Drop for Entry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Allocation {
    client: SocketAddr,
    username: Box<str>,
    peer_id: Box<str>,
    socket: UdpSocket,
    /// The relay socket is IPv6 (dual-stack): IPv4 peers are written as v4-mapped.
    socket_v6: bool,
    relayed: SocketAddr,
    allocate_tid: [u8; 12],
    bucket: Option<Arc<Bucket>>,
    state: Mutex<AllocState>,
}

struct AllocState {
    expires: Instant,
    lifetime: u32,
    permissions: HashMap<IpAddr, Instant>,
    channels: HashMap<u16, (SocketAddr, Instant)>,
    channel_of: HashMap<SocketAddr, u16>,
}

impl Allocation {
    /// `peer` as the relay socket wants it.
    fn socket_addr(&self, peer: SocketAddr) -> SocketAddr {
        match peer.ip() {
            IpAddr::V4(v4) if self.socket_v6 => {
                SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), peer.port())
            }
            _ => peer,
        }
    }
}

/// A token bucket over relayed bytes.
struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<(f64, Instant)>,
}

impl Bucket {
    fn new(bytes_per_sec: u64) -> Bucket {
        let rate = bytes_per_sec as f64;
        let burst = rate.max(f64::from(u16::MAX));
        Bucket {
            rate,
            burst,
            state: Mutex::new((burst, Instant::now())),
        }
    }

    /// Takes `n` bytes' worth of tokens; `false`: over the cap, drop the datagram.
    fn take(&self, n: usize) -> bool {
        let mut s = lock(&self.state);
        let now = Instant::now();
        let refill = now.saturating_duration_since(s.1).as_secs_f64() * self.rate;
        s.0 = (s.0 + refill).min(self.burst);
        s.1 = now;
        if s.0 >= n as f64 {
            s.0 -= n as f64;
            true
        } else {
            false
        }
    }
}

/// Rate-limits info-level refusal logs, so a client cannot flood the log.
struct LogBudget {
    second: AtomicU64,
    count: AtomicU32,
    start: Instant,
}

impl LogBudget {
    fn allow(&self) -> bool {
        let now = self.start.elapsed().as_secs();
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.count.store(0, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed) < INFO_LOGS_PER_SEC
    }
}

/// Logs a refusal at info level within the budget, else at debug.
macro_rules! refusal {
    ($relay:expr, $($arg:tt)+) => {
        if $relay.logs.allow() {
            tracing::info!($($arg)+);
        } else {
            tracing::debug!($($arg)+);
        }
    };
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An authenticated request's credentials.
struct Auth<'m> {
    username: &'m str,
    peer_id: &'m str,
    key: Vec<u8>,
}

/// Why a request was not authenticated.
enum AuthRefusal {
    /// 401 with REALM and NONCE (no or bad credentials).
    Challenge,
    /// 400: MESSAGE-INTEGRITY without USERNAME, REALM or NONCE.
    BadRequest,
    /// 438 with a fresh NONCE (signed if the username's key is known).
    StaleNonce(Option<Vec<u8>>),
}

/// What an authenticated request led to.
enum Outcome {
    Allocated {
        relayed: SocketAddr,
        lifetime: u32,
    },
    Refreshed {
        lifetime: u32,
    },
    Done,
    Refused(u16, &'static str),
    /// The peer's session is over (or never was): 401.
    NotLive,
}

impl Relay {
    /// A relay answering through `listeners` (index = the listener number the stun module
    /// passes with each datagram).
    pub fn new(cfg: RelayConfig, listeners: Vec<Arc<UdpSocket>>) -> Arc<Relay> {
        Arc::new(Relay {
            cfg,
            nonces: Nonces::new(),
            listeners,
            tcp: RwLock::default(),
            next_tcp: std::sync::atomic::AtomicUsize::new(FIRST_TCP_LISTENER),
            table: RwLock::new(Table::default()),
            challenges: Mutex::new(HashMap::new()),
            logs: LogBudget {
                second: AtomicU64::new(0),
                count: AtomicU32::new(0),
                start: Instant::now(),
            },
        })
    }

    fn read(&self) -> RwLockReadGuard<'_, Table> {
        self.table.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, Table> {
        self.table.write().unwrap_or_else(|p| p.into_inner())
    }

    fn find(&self, listener: usize, client: SocketAddr) -> Option<Arc<Allocation>> {
        self.read()
            .allocations
            .get(&(listener, client))
            .map(|e| e.alloc.clone())
    }

    /// A TCP client connection opened: its listener number (answers and relayed data for its
    /// allocations go to `writer`).
    pub fn open_tcp(&self, writer: TcpWriter) -> usize {
        let n = self.next_tcp.fetch_add(1, Ordering::Relaxed);
        self.tcp
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(n, writer);
        n
    }

    /// A TCP client connection closed: its allocations are deleted (RFC 8656 §3.1).
    pub fn close_tcp(&self, listener: usize) {
        self.tcp
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&listener);
        let mut t = self.write();
        let keys: Vec<_> = t
            .allocations
            .keys()
            .filter(|(l, _)| *l == listener)
            .copied()
            .collect();
        for k in &keys {
            remove(&mut t, k);
        }
    }

    /// Whether a TCP connection's client holds an allocation.
    pub fn has_allocation(&self, listener: usize) -> bool {
        self.read().allocations.keys().any(|(l, _)| *l == listener)
    }

    /// How to reach the clients of `listener`.
    fn back(&self, listener: usize) -> Option<Back> {
        match self.listeners.get(listener) {
            Some(socket) => Some(Back::Udp(socket.clone())),
            None => self
                .tcp
                .read()
                .unwrap_or_else(|p| p.into_inner())
                .get(&listener)
                .cloned()
                .map(Back::Tcp),
        }
    }

    /// Live allocations.
    pub fn allocations(&self) -> usize {
        self.read().allocations.len()
    }

    fn grant(&self, peer_id: &str) {
        let mut t = self.write();
        if !t.closed {
            t.live.insert(peer_id.into());
        }
    }

    fn revoke(&self, peer_id: &str) {
        let mut t = self.write();
        t.live.remove(peer_id);
        if t.ledger.peer_count(peer_id) == 0 {
            return;
        }
        let keys: Vec<_> = t
            .allocations
            .iter()
            .filter(|(_, e)| &*e.alloc.peer_id == peer_id)
            .map(|(k, _)| *k)
            .collect();
        for k in &keys {
            remove(&mut t, k);
        }
        drop(t);
        tracing::info!(peer = %peer_id, allocations = keys.len(), "TURN: peer left; its allocations are closed");
    }

    fn is_live(&self, peer_id: &str) -> bool {
        self.read().live.contains(peer_id)
    }

    /// Stops everything: every allocation is closed and nobody is live any more.
    pub fn close(&self) {
        self.tcp.write().unwrap_or_else(|p| p.into_inner()).clear();
        let mut t = self.write();
        t.closed = true;
        t.live.clear();
        let all: Vec<_> = t.allocations.keys().copied().collect();
        for k in &all {
            remove(&mut t, k);
        }
    }

    /// Drops what has expired: allocations, permissions, channel bindings. Called every second.
    pub fn reap(&self) {
        let now = Instant::now();
        let mut expired = Vec::new();
        {
            let t = self.read();
            for (k, e) in &t.allocations {
                let mut st = lock(&e.alloc.state);
                if st.expires <= now {
                    expired.push(*k);
                    continue;
                }
                st.permissions.retain(|_, until| *until > now);
                let AllocState {
                    channels,
                    channel_of,
                    ..
                } = &mut *st;
                channels.retain(|_, (peer, until)| {
                    let keep = *until > now;
                    if !keep {
                        channel_of.remove(peer);
                    }
                    keep
                });
            }
        }
        if expired.is_empty() {
            return;
        }
        let mut t = self.write();
        for k in &expired {
            let still = t
                .allocations
                .get(k)
                .is_some_and(|e| lock(&e.alloc.state).expires <= now);
            if still {
                remove(&mut t, k);
                tracing::debug!(client = %k.1, "TURN: allocation expired");
            }
        }
    }

    /// Whether the relay may exchange datagrams with `peer` (policy, and on the server's own
    /// addresses only live relay ports).
    fn permissible(&self, peer: SocketAddr) -> bool {
        match self.cfg.policy.judge(peer) {
            PeerVerdict::Permit => true,
            PeerVerdict::Deny(_) => false,
            PeerVerdict::OwnAddress => self.read().relay_ports.contains(&peer.port()),
        }
    }

    /// The per-datagram check: free unless `peer` is one of the server's own addresses.
    fn reachable(&self, peer: SocketAddr) -> bool {
        !self.cfg.policy.is_own(peer.ip()) || self.permissible(peer)
    }

    fn default_lifetime(&self) -> u32 {
        DEFAULT_LIFETIME.min(self.max_lifetime()).as_secs() as u32
    }

    fn max_lifetime(&self) -> Duration {
        self.cfg.max_lifetime.max(Duration::from_secs(1))
    }

    fn peer_family_ok(&self, peer: SocketAddr) -> bool {
        peer.ip().to_canonical().is_ipv6() == self.cfg.relay_ip.is_ipv6()
    }

    // ---- requests -------------------------------------------------------------------------

    /// Answers a TURN request (Allocate, Refresh, CreatePermission, ChannelBind) from
    /// `client` on listener `listener`; the response is written into `out`.
    pub fn on_request(
        self: &Arc<Self>,
        listener: usize,
        client: SocketAddr,
        msg: &Message<'_>,
        out: &mut Vec<u8>,
    ) {
        let tid = msg.transaction_id();
        let m = msg.method();
        let auth = match self.authenticate(msg, client) {
            Ok(auth) => auth,
            Err(refusal) => return self.write_refusal(out, m, tid, client, refusal),
        };
        let outcome = if !self.is_live(auth.peer_id) {
            Outcome::NotLive
        } else {
            match m {
                method::ALLOCATE => self.allocate(listener, client, msg, &auth),
                // The rest act on the caller's own allocation, looked up once here.
                method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND => {
                    match self.own_allocation(listener, client, &auth) {
                        Err(refused) => refused,
                        Ok(alloc) if m == method::REFRESH => {
                            self.refresh(listener, client, msg, &alloc)
                        }
                        Ok(alloc) if m == method::CREATE_PERMISSION => {
                            self.create_permission(client, msg, &alloc)
                        }
                        Ok(alloc) => self.channel_bind(client, msg, &alloc),
                    }
                }
                _ => Outcome::Refused(400, "Bad Request"),
            }
        };
        if let Outcome::NotLive = outcome {
            refusal!(self, %client, peer = %auth.peer_id, "TURN: refused credentials of a peer that is not in a room");
        }
        self.write_outcome(out, m, tid, client, outcome, &auth.key);
    }

    /// RFC 8489 §9.2.4, in order: integrity present, attributes present, nonce valid,
    /// username valid, integrity matches. Nothing is stored before this succeeds.
    fn authenticate<'m>(
        &self,
        msg: &Message<'m>,
        client: SocketAddr,
    ) -> Result<Auth<'m>, AuthRefusal> {
        if !msg.has_integrity() {
            return Err(AuthRefusal::Challenge);
        }
        let (Some(user), Some(realm), Some(nonce)) = (
            msg.get(attr::USERNAME),
            msg.get(attr::REALM),
            msg.get(attr::NONCE),
        ) else {
            return Err(AuthRefusal::BadRequest);
        };
        let Ok(username) = std::str::from_utf8(user) else {
            return Err(AuthRefusal::Challenge);
        };
        let password = self.cfg.minter.check(username);
        if let Err(e) = self.nonces.check(nonce, client) {
            tracing::debug!(%client, "TURN: {e}");
            let key = password
                .as_ref()
                .ok()
                .map(|p| credentials::long_term_key(username, &self.cfg.realm, p));
            return Err(AuthRefusal::StaleNonce(key));
        }
        if realm != self.cfg.realm.as_bytes() {
            return Err(AuthRefusal::Challenge);
        }
        let password = match password {
            Ok(p) => p,
            Err(e) => {
                tracing::debug!(%client, %username, "TURN: credentials refused: {e}");
                return Err(AuthRefusal::Challenge);
            }
        };
        let key = credentials::long_term_key(username, &self.cfg.realm, &password);
        if !msg.integrity_matches(&key) {
            tracing::debug!(%client, %username, "TURN: wrong MESSAGE-INTEGRITY");
            return Err(AuthRefusal::Challenge);
        }
        let Some(peer_id) = credentials::peer_id(username) else {
            return Err(AuthRefusal::Challenge);
        };
        Ok(Auth {
            username,
            peer_id,
            key,
        })
    }

    fn allocate(
        self: &Arc<Self>,
        listener: usize,
        client: SocketAddr,
        msg: &Message<'_>,
        auth: &Auth<'_>,
    ) -> Outcome {
        let tid = msg.transaction_id();
        if let Some(existing) = self.find(listener, client) {
            // A retransmission gets the same answer; anything else is a mismatch.
            if existing.allocate_tid == tid && *existing.username == *auth.username {
                let lifetime = lock(&existing.state).lifetime;
                return Outcome::Allocated {
                    relayed: existing.relayed,
                    lifetime,
                };
            }
            return Outcome::Refused(437, "Allocation Mismatch");
        }
        match msg.get(attr::REQUESTED_TRANSPORT) {
            None => return Outcome::Refused(400, "Bad Request"),
            Some(v) if v.first() != Some(&17) => {
                return Outcome::Refused(442, "Unsupported Transport Protocol")
            }
            Some(_) => {}
        }
        if let Some(family) = msg.get(attr::REQUESTED_ADDRESS_FAMILY) {
            let v6 = match family.first() {
                Some(1) => false,
                Some(2) => true,
                _ => return Outcome::Refused(440, "Address Family not Supported"),
            };
            if v6 != self.cfg.relay_ip.is_ipv6() {
                return Outcome::Refused(440, "Address Family not Supported");
            }
        }
        let lifetime = match msg.u32_attr(attr::LIFETIME) {
            Some(asked) => asked
                .max(self.default_lifetime())
                .min(self.max_lifetime().as_secs() as u32),
            None => self.default_lifetime(),
        };
        let Some(back) = self.back(listener) else {
            return Outcome::Refused(500, "Server Error");
        };
        // Count it first (so an over-quota request costs no socket), then open the socket
        // outside the lock, then insert; anything failing in between gives the count back.
        {
            let mut t = self.write();
            if t.closed {
                return Outcome::Refused(508, "Insufficient Capacity");
            }
            if t.allocations.contains_key(&(listener, client)) {
                return Outcome::Refused(437, "Allocation Mismatch");
            }
            if !t.live.contains(auth.peer_id) {
                return Outcome::NotLive;
            }
            if let Err(q) = t.ledger.admit(auth.peer_id, client.ip(), self.cfg.quotas) {
                drop(t);
                refusal!(self, %client, peer = %auth.peer_id, code = q.code(), "TURN: allocation refused: {q}");
                let reason = match q.code() {
                    486 => "Allocation Quota Reached",
                    _ => "Insufficient Capacity",
                };
                return Outcome::Refused(q.code(), reason);
            }
        }
        let give_back = |outcome: Outcome| {
            self.write().ledger.release(auth.peer_id, client.ip());
            outcome
        };
        let (socket, local) = match bind_relay_socket(self.cfg.bind_ip) {
            Ok(bound) => bound,
            Err(e) => {
                refusal!(self, %client, "TURN: cannot open a relay socket: {e}");
                return give_back(Outcome::Refused(508, "Insufficient Capacity"));
            }
        };
        let relayed = SocketAddr::new(self.cfg.relay_ip, local.port());

        let mut t = self.write();
        // Revoked or closed while the socket was opened: nothing is inserted.
        if t.closed || !t.live.contains(auth.peer_id) {
            t.ledger.release(auth.peer_id, client.ip());
            return Outcome::NotLive;
        }
        let bucket = (self.cfg.max_bps > 0).then(|| {
            let slot = t
                .buckets
                .entry(auth.peer_id.into())
                .or_insert_with(|| (Arc::new(Bucket::new(self.cfg.max_bps)), 0));
            slot.1 += 1;
            slot.0.clone()
        });
        let alloc = Arc::new(Allocation {
            client,
            username: auth.username.into(),
            peer_id: auth.peer_id.into(),
            socket_v6: local.is_ipv6(),
            socket,
            relayed,
            allocate_tid: tid,
            bucket,
            state: Mutex::new(AllocState {
                expires: Instant::now() + Duration::from_secs(u64::from(lifetime)),
                lifetime,
                permissions: HashMap::new(),
                channels: HashMap::new(),
                channel_of: HashMap::new(),
            }),
        });
        let task = tokio::spawn(pump(self.clone(), alloc.clone(), back));
        t.allocations.insert(
            (listener, client),
            Entry {
                alloc,
                task: task.abort_handle(),
            },
        );
        t.relay_ports.insert(local.port());
        drop(t);
        tracing::debug!(%client, %relayed, lifetime, "TURN: allocated");
        Outcome::Allocated { relayed, lifetime }
    }

    /// The caller's allocation, if it is the caller's: the 5-tuple's, under the same username.
    fn own_allocation(
        &self,
        listener: usize,
        client: SocketAddr,
        auth: &Auth<'_>,
    ) -> Result<Arc<Allocation>, Outcome> {
        let alloc = self
            .find(listener, client)
            .ok_or(Outcome::Refused(437, "Allocation Mismatch"))?;
        if *alloc.username != *auth.username {
            return Err(Outcome::Refused(441, "Wrong Credentials"));
        }
        Ok(alloc)
    }

    fn refresh(
        &self,
        listener: usize,
        client: SocketAddr,
        msg: &Message<'_>,
        alloc: &Allocation,
    ) -> Outcome {
        let lifetime = match msg.u32_attr(attr::LIFETIME) {
            Some(0) => {
                let mut t = self.write();
                remove(&mut t, &(listener, client));
                tracing::debug!(%client, "TURN: allocation deleted");
                return Outcome::Refreshed { lifetime: 0 };
            }
            Some(asked) => asked.min(self.max_lifetime().as_secs() as u32),
            None => self.default_lifetime(),
        };
        let mut st = lock(&alloc.state);
        st.expires = Instant::now() + Duration::from_secs(u64::from(lifetime));
        st.lifetime = lifetime;
        Outcome::Refreshed { lifetime }
    }

    fn create_permission(
        &self,
        client: SocketAddr,
        msg: &Message<'_>,
        alloc: &Allocation,
    ) -> Outcome {
        let peers = match msg.xor_addresses(attr::XOR_PEER_ADDRESS) {
            Some(p) if !p.is_empty() => p,
            _ => return Outcome::Refused(400, "Bad Request"),
        };
        // All or nothing (RFC 8656 §9.2): one refused address refuses the request.
        for &peer in &peers {
            if !self.peer_family_ok(peer) {
                return Outcome::Refused(443, "Peer Address Family Mismatch");
            }
            if !self.permissible(peer) {
                refusal!(self, %client, %peer, "TURN: refused a permission toward a forbidden peer address");
                return Outcome::Refused(403, "Forbidden");
            }
        }
        let until = Instant::now() + PERMISSION_LIFETIME;
        let mut st = lock(&alloc.state);
        let new: HashSet<IpAddr> = peers
            .iter()
            .map(|p| p.ip().to_canonical())
            .filter(|ip| !st.permissions.contains_key(ip))
            .collect();
        if st.permissions.len() + new.len() > MAX_PERMISSIONS {
            return Outcome::Refused(508, "Insufficient Capacity");
        }
        for peer in peers {
            st.permissions.insert(peer.ip().to_canonical(), until);
        }
        Outcome::Done
    }

    fn channel_bind(&self, client: SocketAddr, msg: &Message<'_>, alloc: &Allocation) -> Outcome {
        let number = match msg.get(attr::CHANNEL_NUMBER) {
            Some(&[hi, lo, ..]) => u16::from_be_bytes([hi, lo]),
            _ => return Outcome::Refused(400, "Bad Request"),
        };
        if !wire::is_channel_number(number) {
            return Outcome::Refused(400, "Bad Request");
        }
        let Some(peer) = msg.xor_address(attr::XOR_PEER_ADDRESS) else {
            return Outcome::Refused(400, "Bad Request");
        };
        let peer = canonical(peer);
        if !self.peer_family_ok(peer) {
            return Outcome::Refused(443, "Peer Address Family Mismatch");
        }
        if !self.permissible(peer) {
            refusal!(self, %client, %peer, "TURN: refused a channel toward a forbidden peer address");
            return Outcome::Refused(403, "Forbidden");
        }
        let now = Instant::now();
        let mut st = lock(&alloc.state);
        if st.channels.get(&number).is_some_and(|(p, _)| *p != peer)
            || st.channel_of.get(&peer).is_some_and(|n| *n != number)
        {
            return Outcome::Refused(400, "Bad Request");
        }
        let new_channel = !st.channels.contains_key(&number);
        let new_permission = !st.permissions.contains_key(&peer.ip());
        if (new_channel && st.channels.len() >= MAX_CHANNELS)
            || (new_permission && st.permissions.len() >= MAX_PERMISSIONS)
        {
            return Outcome::Refused(508, "Insufficient Capacity");
        }
        st.channels.insert(number, (peer, now + CHANNEL_LIFETIME));
        st.channel_of.insert(peer, number);
        st.permissions.insert(peer.ip(), now + PERMISSION_LIFETIME);
        Outcome::Done
    }

    /// Takes one unauthenticated answer from `ip`'s network budget for this second.
    fn may_answer_unauthenticated(&self, ip: IpAddr) -> bool {
        if self.cfg.unauthenticated_rate == 0 {
            return true;
        }
        let second = self.logs.start.elapsed().as_secs();
        let mut budget = self.challenges.lock().unwrap_or_else(|p| p.into_inner());
        if budget.len() > 10_000 {
            budget.retain(|_, (s, _)| *s == second); // bounded, whatever the sources
        }
        let entry = budget.entry(challenge_key(ip)).or_insert((second, 0));
        if entry.0 != second {
            *entry = (second, 0);
        }
        entry.1 += 1;
        self.cfg.unauthenticated_rate == 0 || entry.1 <= self.cfg.unauthenticated_rate
    }

    fn write_refusal(
        &self,
        out: &mut Vec<u8>,
        m: u16,
        tid: [u8; 12],
        client: SocketAddr,
        refusal: AuthRefusal,
    ) {
        if !self.may_answer_unauthenticated(client.ip()) {
            out.clear(); // over budget: no answer at all
            return;
        }
        let mut b = Builder::new(out, m, Class::Error, tid);
        match refusal {
            AuthRefusal::Challenge => {
                b.error_code(401, "Unauthorized")
                    .attr(attr::REALM, self.cfg.realm.as_bytes())
                    .attr(attr::NONCE, self.nonces.mint(client).as_bytes());
            }
            AuthRefusal::BadRequest => {
                self.cfg.metrics.turn_refusal(400);
                b.error_code(400, "Bad Request");
            }
            AuthRefusal::StaleNonce(key) => {
                self.cfg.metrics.turn_refusal(438);
                b.error_code(438, "Stale Nonce")
                    .attr(attr::REALM, self.cfg.realm.as_bytes())
                    .attr(attr::NONCE, self.nonces.mint(client).as_bytes());
                if let Some(key) = key {
                    b.integrity(&key);
                }
            }
        }
        b.fingerprint();
    }

    fn write_outcome(
        &self,
        out: &mut Vec<u8>,
        m: u16,
        tid: [u8; 12],
        client: SocketAddr,
        outcome: Outcome,
        key: &[u8],
    ) {
        match outcome {
            Outcome::Allocated { relayed, lifetime } => {
                Builder::new(out, m, Class::Success, tid)
                    .xor_address(attr::XOR_RELAYED_ADDRESS, relayed)
                    .u32_attr(attr::LIFETIME, lifetime)
                    .xor_address(attr::XOR_MAPPED_ADDRESS, client)
                    .integrity(key)
                    .fingerprint();
            }
            Outcome::Refreshed { lifetime } => {
                Builder::new(out, m, Class::Success, tid)
                    .u32_attr(attr::LIFETIME, lifetime)
                    .integrity(key)
                    .fingerprint();
            }
            Outcome::Done => {
                Builder::new(out, m, Class::Success, tid)
                    .integrity(key)
                    .fingerprint();
            }
            Outcome::Refused(code, reason) => {
                self.cfg.metrics.turn_refusal(code);
                Builder::new(out, m, Class::Error, tid)
                    .error_code(code, reason)
                    .integrity(key)
                    .fingerprint();
            }
            Outcome::NotLive => {
                self.cfg.metrics.turn_refusal(401);
                Builder::new(out, m, Class::Error, tid)
                    .error_code(401, "Unauthorized")
                    .attr(attr::REALM, self.cfg.realm.as_bytes())
                    .attr(attr::NONCE, self.nonces.mint(client).as_bytes())
                    .integrity(key)
                    .fingerprint();
            }
        }
    }

    // ---- data -----------------------------------------------------------------------------

    /// A Send indication from `client`: relays its DATA to its XOR-PEER-ADDRESS, if the
    /// allocation has a permission for that peer; otherwise drops it.
    pub fn on_send(&self, listener: usize, client: SocketAddr, msg: &Message<'_>) {
        let (Some(peer), Some(data)) =
            (msg.xor_address(attr::XOR_PEER_ADDRESS), msg.get(attr::DATA))
        else {
            return;
        };
        let Some(alloc) = self.find(listener, client) else {
            return;
        };
        let peer = canonical(peer);
        if !lock(&alloc.state).permissions.contains_key(&peer.ip()) {
            return;
        }
        self.to_peer(&alloc, peer, data);
    }

    /// A ChannelData message from `client`: relays its data to the channel's peer, if bound
    /// (and permitted); otherwise drops it.
    pub fn on_channel_data(&self, listener: usize, client: SocketAddr, datagram: &[u8]) {
        let Some((number, data)) = wire::channel_data(datagram) else {
            return;
        };
        let Some(alloc) = self.find(listener, client) else {
            return;
        };
        let peer = {
            let st = lock(&alloc.state);
            match st.channels.get(&number) {
                Some(&(peer, _)) if st.permissions.contains_key(&peer.ip()) => peer,
                _ => return,
            }
        };
        self.to_peer(&alloc, peer, data);
    }

    fn to_peer(&self, alloc: &Allocation, peer: SocketAddr, data: &[u8]) {
        if !self.reachable(peer) {
            return;
        }
        if let Some(bucket) = &alloc.bucket {
            if !bucket.take(data.len()) {
                return;
            }
        }
        if let Ok(n) = send_now(&alloc.socket, data, alloc.socket_addr(peer)) {
            self.cfg.metrics.turn_bytes.inc_by(n as u64);
        }
    }

    /// A datagram `buf[HEADROOM..HEADROOM + n]` from `peer` on `alloc`'s relay socket: to the
    /// client as ChannelData (if a channel is bound to the peer) or a Data indication, if
    /// the peer has a permission.
    fn deliver_to_client(
        &self,
        alloc: &Allocation,
        back: &Back,
        buf: &mut [u8],
        n: usize,
        peer: SocketAddr,
        tid: &mut [u8; 12],
    ) {
        let peer = canonical(peer);
        let channel = {
            let st = lock(&alloc.state);
            if !st.permissions.contains_key(&peer.ip()) {
                return;
            }
            st.channel_of.get(&peer).copied()
        };
        if !self.reachable(peer) {
            return;
        }
        if let Some(bucket) = &alloc.bucket {
            if !bucket.take(n) {
                return;
            }
        }
        let out = match channel {
            Some(number) => {
                if n > MAX_DATAGRAM - wire::CHANNEL_HEADER_LEN {
                    return;
                }
                let start = HEADROOM - wire::CHANNEL_HEADER_LEN;
                buf[start..start + 2].copy_from_slice(&number.to_be_bytes());
                buf[start + 2..HEADROOM].copy_from_slice(&(n as u16).to_be_bytes());
                // Over TCP, ChannelData is padded to a multiple of 4 bytes (RFC 8656 §12.5).
                let end = match back {
                    Back::Udp(_) => HEADROOM + n,
                    Back::Tcp(_) => HEADROOM + wire::padded(n),
                };
                if end > buf.len() {
                    return;
                }
                buf[HEADROOM + n..end].fill(0);
                &buf[start..end]
            }
            None => {
                let end = HEADROOM + wire::padded(n);
                if end > MAX_DATAGRAM || end > buf.len() {
                    return;
                }
                let counter = u32::from_be_bytes([tid[8], tid[9], tid[10], tid[11]]);
                tid[8..].copy_from_slice(&counter.wrapping_add(1).to_be_bytes());
                let Some(head) = buf.first_chunk_mut::<HEADROOM>() else {
                    return;
                };
                let start = wire::data_indication_header(head, tid, peer, n);
                buf[HEADROOM + n..end].fill(0);
                &buf[start..end]
            }
        };
        if let Some(n) = back.send(out, alloc.client) {
            self.cfg.metrics.turn_bytes.inc_by(n as u64);
        }
    }
}

/// Removes an allocation: its quota, its relay port, its share of the peer's bucket; dropping
/// the entry aborts its task (which closes the relay socket).
fn remove(t: &mut Table, key: &(usize, SocketAddr)) {
    let Some(entry) = t.allocations.remove(key) else {
        return;
    };
    let alloc = &entry.alloc;
    t.ledger.release(&alloc.peer_id, alloc.client.ip());
    if let Ok(local) = alloc.socket.local_addr() {
        t.relay_ports.remove(&local.port());
    }
    if alloc.bucket.is_some() {
        if let Some(slot) = t.buckets.get_mut(&alloc.peer_id) {
            slot.1 -= 1;
            if slot.1 == 0 {
                t.buckets.remove(&alloc.peer_id);
            }
        }
    }
}

/// Sends a datagram at once or not at all (a full socket buffer drops it, as UDP may): a plain
/// non-blocking `sendto`. Not tokio's `try_send_to`, which also answers WouldBlock while the
/// reactor has not yet seen the socket writable, as with every brand-new relay socket.
pub fn send_now(socket: &UdpSocket, data: &[u8], to: SocketAddr) -> std::io::Result<usize> {
    use nix::sys::socket::{sendto, MsgFlags, SockaddrIn, SockaddrIn6};
    use std::os::fd::AsRawFd;
    let fd = socket.as_raw_fd();
    let flags = MsgFlags::MSG_DONTWAIT;
    let sent = match to {
        SocketAddr::V4(a) => sendto(fd, data, &SockaddrIn::from(a), flags),
        SocketAddr::V6(a) => sendto(fd, data, &SockaddrIn6::from(a), flags),
    };
    sent.map_err(std::io::Error::from)
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

/// A fresh relay socket on `ip` (any free port), and its local address.
fn bind_relay_socket(ip: IpAddr) -> std::io::Result<(UdpSocket, SocketAddr)> {
    let socket = std::net::UdpSocket::bind(SocketAddr::new(ip, 0))?;
    socket.set_nonblocking(true)?;
    // A data channel's sender bursts a whole congestion window at once (on loopback or a fast
    // LAN, 100+ datagrams of ~1.2 KB in well under a millisecond); the default buffer (~208 KiB,
    // ~90 such datagrams) drops the tail, and SCTP then waits out its 1 s minimum RTO.
    crate::socket::enlarge_buffers_to(&socket, RELAY_BUFFER_BYTES);
    let local = socket.local_addr()?;
    Ok((UdpSocket::from_std(socket)?, local))
}

/// Socket buffer size asked for on each relay (allocation) socket (the kernel may grant less).
const RELAY_BUFFER_BYTES: usize = 1 << 20;

/// Room in front of relayed data for the largest header written there.
const HEADROOM: usize = wire::DATA_INDICATION_HEADROOM;

thread_local! {
    /// The buffer relay sockets are read into: one per worker thread, not one per allocation
    /// (thousands of idle allocations cost no buffer memory).
    static PUMP_BUFFER: RefCell<Vec<u8>> = RefCell::new(vec![0; HEADROOM + 65_536 + 4]);
}

/// Datagrams read per wake-up before the task lets others run.
const PUMP_BATCH: usize = 64;

/// One allocation's task: reads its relay socket and hands each datagram to the client, until
/// aborted (the allocation ended) or the socket fails.
async fn pump(relay: Arc<Relay>, alloc: Arc<Allocation>, back: Back) {
    use rand::RngCore;
    let mut tid = [0u8; 12];
    rand::rng().fill_bytes(&mut tid);
    loop {
        if alloc.socket.readable().await.is_err() {
            return;
        }
        let mut drained = false;
        for _ in 0..PUMP_BATCH {
            drained = PUMP_BUFFER.with(|cell| {
                let mut buf = cell.borrow_mut();
                let end = buf.len() - 4;
                match alloc.socket.try_recv_from(&mut buf[HEADROOM..end]) {
                    Ok((n, peer)) => {
                        relay.deliver_to_client(&alloc, &back, &mut buf, n, peer, &mut tid);
                        false
                    }
                    Err(e) if e.kind() == ErrorKind::WouldBlock => true,
                    // Errors reported on the socket (e.g. ICMP) are consumed by reading them.
                    Err(_) => false,
                }
            });
            if drained {
                break;
            }
        }
        if !drained {
            // A busy peer: let other allocations run before reading more.
            tokio::task::yield_now().await;
        }
    }
}

/// Who may use the relay: the set of live peer ids, kept by the signaling code.
///
/// Call [`TurnAccess::grant`] when a peer is welcomed (before its TURN credentials are sent)
/// and [`TurnAccess::revoke`] when it leaves: from then on its username is refused (401) and
/// its allocations are closed at once, so credentials die with the WebSocket instead of
/// living out their 12 h, and a re-join (a new peer id) starts afresh without keeping the old
/// allocations. Cloning is cheap; with TURN off every call does nothing.
#[derive(Clone, Default)]
pub struct TurnAccess {
    relay: Option<Arc<Relay>>,
}

impl TurnAccess {
    /// Access to `relay` (`None`: TURN is off).
    pub fn new(relay: Option<Arc<Relay>>) -> TurnAccess {
        TurnAccess { relay }
    }

    /// Lets `peer_id`'s credentials be used.
    pub fn grant(&self, peer_id: &str) {
        if let Some(r) = &self.relay {
            r.grant(peer_id);
        }
    }

    /// Refuses `peer_id`'s credentials from now on and closes its allocations.
    pub fn revoke(&self, peer_id: &str) {
        if let Some(r) = &self.relay {
            r.revoke(peer_id);
        }
    }

    /// How many allocations are live now (for `/metrics`).
    pub fn allocations(&self) -> usize {
        self.relay.as_ref().map_or(0, |r| r.allocations())
    }
}

impl std::fmt::Debug for TurnAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TurnAccess")
            .field("enabled", &self.relay.is_some())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::turn_guard::QuotaError;

    const REALM: &str = "burrow";

    fn relay(quotas: Quotas) -> (Arc<Relay>, Minter) {
        let minter = Minter::new("secret", Duration::from_secs(600));
        let listener = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let listener = Arc::new(UdpSocket::from_std(listener).unwrap());
        let relay = Relay::new(
            RelayConfig {
                realm: REALM.into(),
                minter: minter.clone(),
                policy: PeerPolicy::default(),
                quotas,
                relay_ip: "127.0.0.1".parse().unwrap(),
                bind_ip: "127.0.0.1".parse().unwrap(),
                max_lifetime: Duration::from_secs(600),
                max_bps: 0,
                metrics: Arc::default(),
                unauthenticated_rate: 0,
            },
            vec![listener],
        );
        (relay, minter)
    }

    /// Sends a request built by `build` from `client`; returns (class, error code or 0, nonce).
    fn ask(
        relay: &Arc<Relay>,
        client: SocketAddr,
        build: impl FnOnce(&mut Builder<'_>),
        m: u16,
    ) -> (Class, u16, Option<String>) {
        let mut req = Vec::new();
        let mut tid = [0u8; 12];
        rand::RngCore::fill_bytes(&mut rand::rng(), &mut tid);
        {
            let mut b = Builder::new(&mut req, m, Class::Request, tid);
            build(&mut b);
        }
        let msg = Message::parse(&req).expect("a request");
        let mut out = Vec::new();
        relay.on_request(0, client, &msg, &mut out);
        let resp = Message::parse(&out).expect("a response");
        assert_eq!(resp.transaction_id(), tid);
        let code = resp
            .get(attr::ERROR_CODE)
            .map(|v| u16::from(v[2]) * 100 + u16::from(v[3]))
            .unwrap_or(0);
        let nonce = resp
            .get(attr::NONCE)
            .map(|n| String::from_utf8_lossy(n).into_owned());
        (resp.class(), code, nonce)
    }

    fn nonce_for(relay: &Arc<Relay>, client: SocketAddr) -> String {
        let (class, code, nonce) = ask(
            relay,
            client,
            |b| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0]);
            },
            method::ALLOCATE,
        );
        assert_eq!((class, code), (Class::Error, 401));
        nonce.expect("a 401 carries a nonce")
    }

    fn allocate(
        relay: &Arc<Relay>,
        client: SocketAddr,
        user: &str,
        key: &[u8],
        nonce: &str,
    ) -> (Class, u16) {
        let (class, code, _) = ask(
            relay,
            client,
            |b| {
                b.attr(attr::REQUESTED_TRANSPORT, &[17, 0, 0, 0])
                    .attr(attr::USERNAME, user.as_bytes())
                    .attr(attr::REALM, REALM.as_bytes())
                    .attr(attr::NONCE, nonce.as_bytes())
                    .integrity(key)
                    .fingerprint();
            },
            method::ALLOCATE,
        );
        (class, code)
    }

    #[test]
    fn the_bandwidth_bucket_caps_bytes_per_second() {
        let b = Bucket::new(100_000);
        // A full bucket holds one second's worth.
        assert!(b.take(60_000));
        assert!(b.take(40_000));
        assert!(!b.take(1_200), "empty");
        std::thread::sleep(Duration::from_millis(50));
        assert!(b.take(1_200), "refilled at 100 kB/s: ~5 kB after 50 ms");
        assert!(!b.take(10_000));
        // Slow caps still let a whole datagram through.
        let slow = Bucket::new(10);
        assert!(slow.take(1_500));
    }

    #[tokio::test]
    async fn forged_allocates_use_up_no_quota() {
        let (relay, minter) = relay(Quotas {
            per_peer: 1,
            per_ip: 1,
            total: 1,
        });
        relay.grant("victim");
        let (user, pass) = minter.mint("victim");
        let key = credentials::long_term_key(&user, REALM, &pass);
        // Well-formed, unexpired, for a live peer, with a valid nonce: only the HMAC is forged.
        for i in 0..200u16 {
            let client = SocketAddr::new("127.0.0.1".parse().unwrap(), 10_000 + i);
            let nonce = nonce_for(&relay, client);
            assert_eq!(
                allocate(&relay, client, &user, &[0u8; 16], &nonce),
                (Class::Error, 401)
            );
        }
        assert_eq!(relay.read().ledger.total(), 0, "nothing counted");
        assert_eq!(relay.allocations(), 0);
        // The genuine one still gets the only slot; a second is over quota.
        let client: SocketAddr = "127.0.0.1:20000".parse().unwrap();
        let nonce = nonce_for(&relay, client);
        assert_eq!(
            allocate(&relay, client, &user, &key, &nonce),
            (Class::Success, 0)
        );
        let other: SocketAddr = "127.0.0.1:20001".parse().unwrap();
        let nonce = nonce_for(&relay, other);
        assert_eq!(
            allocate(&relay, other, &user, &key, &nonce),
            (Class::Error, QuotaError::PerPeer.code())
        );
        assert_eq!(relay.allocations(), 1);
    }

    #[tokio::test]
    async fn a_nonce_from_another_address_is_stale() {
        let (relay, minter) = relay(Quotas {
            per_peer: 4,
            per_ip: 4,
            total: 4,
        });
        relay.grant("p");
        let (user, pass) = minter.mint("p");
        let key = credentials::long_term_key(&user, REALM, &pass);
        let a: SocketAddr = "127.0.0.1:30000".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:30001".parse().unwrap();
        let nonce = nonce_for(&relay, a);
        assert_eq!(
            allocate(&relay, b, &user, &key, &nonce),
            (Class::Error, 438)
        );
        assert_eq!(
            allocate(&relay, a, &user, &key, &nonce),
            (Class::Success, 0)
        );
    }

    #[tokio::test]
    async fn revoking_a_peer_refuses_it_and_closes_its_allocations() {
        let (relay, minter) = relay(Quotas {
            per_peer: 4,
            per_ip: 4,
            total: 4,
        });
        let (user, pass) = minter.mint("leaver");
        let key = credentials::long_term_key(&user, REALM, &pass);
        let client: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let nonce = nonce_for(&relay, client);
        assert_eq!(
            allocate(&relay, client, &user, &key, &nonce),
            (Class::Error, 401),
            "never granted"
        );
        relay.grant("leaver");
        assert_eq!(
            allocate(&relay, client, &user, &key, &nonce),
            (Class::Success, 0)
        );
        assert_eq!(relay.allocations(), 1);
        relay.revoke("leaver");
        assert_eq!(relay.allocations(), 0);
        assert_eq!(relay.read().ledger.total(), 0);
        let (class, code, _) = ask(
            &relay,
            client,
            |b| {
                b.u32_attr(attr::LIFETIME, 600)
                    .attr(attr::USERNAME, user.as_bytes())
                    .attr(attr::REALM, REALM.as_bytes())
                    .attr(attr::NONCE, nonce.as_bytes())
                    .integrity(&key)
                    .fingerprint();
            },
            method::REFRESH,
        );
        assert_eq!((class, code), (Class::Error, 401));
    }
}
