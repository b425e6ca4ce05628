//! Rooms: who is in which room, and the one place where a signal is relayed to its addressee.
//!
//! Each member is represented by the sending half of its connection's outgoing queue. Messages are
//! serialized once and queued as shared bytes; a member whose queue is full is not waited for.
//!
//! A member whose connection is lost without a `leave` stays in the room, *away*, for the grace
//! period (`--resume-grace`): what arrives for it meanwhile is kept (a bounded backlog), and a
//! client that comes back with its resume token takes its place again, unseen by the others.
//! When the grace period ends the member is removed and announced as left.
//!
//! With `--redis` ([`crate::cluster`]) the room's members may be on other instances too: joins and
//! limits go through Redis, and what is for a peer elsewhere is published to its instance.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::ws::Utf8Bytes;
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use signal_protocol::{ErrorCode, PeerId, PeerInfo, PeerKind, PeerSignal, ServerMessage};
use tokio::sync::mpsc;

/// The queue a connection drains into its WebSocket; dropping every sender closes the connection.
pub type Outbox = mpsc::Sender<Utf8Bytes>;

/// Most messages kept for an away member; older ones are dropped first (the client reconciles
/// with the peer list of its next welcome anyway).
const BACKLOG: usize = 64;

/// Most bytes kept for one away member (signals are up to `--max-message-bytes` each).
const BACKLOG_BYTES: usize = 256 * 1024;

/// Most bytes kept for the away members of one client address (IPv6: one /64), so one client's
/// peers cannot take what others' away peers need.
const SOURCE_BYTES: usize = 2 * 1024 * 1024;

/// Most bytes kept for all away members of this server together: beyond it, what arrives for an
/// away peer is dropped, so peers that come and go cannot make the server hoard memory.
const AWAY_BYTES: usize = 32 * 1024 * 1024;

/// What the server keeps for away members: how many and how many bytes, per client address
/// and in all. A lost connection beyond the limits is removed at once, as before resuming
/// existed: away members stay bounded like connections are.
#[derive(Default)]
struct AwayBook {
    members: usize,
    bytes: usize,
    by_source: HashMap<IpAddr, (usize, usize)>,
    /// Most away members per client address and in all (0: no limit).
    max_per_source: usize,
    max_members: usize,
}

impl AwayBook {
    /// Takes a place for an away member from `source`, if the limits allow.
    fn admit(&mut self, source: IpAddr) -> bool {
        let (members, _) = self.by_source.get(&source).copied().unwrap_or_default();
        let full = (self.max_per_source > 0 && members >= self.max_per_source)
            || (self.max_members > 0 && self.members >= self.max_members);
        if full {
            return false;
        }
        self.members += 1;
        self.by_source.entry(source).or_default().0 += 1;
        true
    }

    /// Whether `len` more bytes fit for `source`.
    fn fits(&self, source: IpAddr, len: usize) -> bool {
        let (_, bytes) = self.by_source.get(&source).copied().unwrap_or_default();
        self.bytes + len <= AWAY_BYTES && bytes + len <= SOURCE_BYTES
    }

    fn add_bytes(&mut self, source: IpAddr, len: usize) {
        self.bytes += len;
        self.by_source.entry(source).or_default().1 += len;
    }

    fn sub_bytes(&mut self, source: IpAddr, len: usize) {
        self.bytes = self.bytes.saturating_sub(len);
        if let Some(entry) = self.by_source.get_mut(&source) {
            entry.1 = entry.1.saturating_sub(len);
        }
    }

    /// Gives back an away member's place and bytes.
    fn release(&mut self, source: IpAddr, bytes: usize) {
        self.sub_bytes(source, bytes);
        self.members = self.members.saturating_sub(1);
        if let Some(entry) = self.by_source.get_mut(&source) {
            entry.0 = entry.0.saturating_sub(1);
            if *entry == (0, 0) {
                self.by_source.remove(&source);
            }
        }
    }
}

/// What became of a message for a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Queued {
    /// On its connection's queue, or kept while it is away.
    Yes,
    /// It is away and what is kept for it is full: dropped.
    Dropped,
    /// Its connection's queue is full or closed.
    Failed,
}

/// All rooms of the server.
pub struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
    max_rooms: usize,
    max_peers_per_room: usize,
    /// How long an away member keeps its place.
    grace: Duration,
    /// Counts every departure, however it happened (`burrow_leaves_total`).
    leaves: Counter,
    /// The other instances, when several serve the same rooms (`--redis`).
    cluster: Option<Arc<crate::cluster::Cluster>>,
    /// What is kept for away members.
    away: Arc<Mutex<AwayBook>>,
}

#[derive(Default)]
struct Room {
    members: Vec<Member>,
}

struct Member {
    info: PeerInfo,
    /// The connection holding this member (a resumed member moves to a new one).
    conn: u64,
    /// Where messages for it go: its connection's queue, or its backlog while away.
    link: Link,
}

enum Link {
    Live(Outbox),
    Away {
        until: Instant,
        backlog: VecDeque<Utf8Bytes>,
        /// The backlog's size, counted in `book` (with the member's place) until this link is
        /// dropped.
        bytes: usize,
        /// The client address the member's connection came from.
        source: IpAddr,
        book: Arc<Mutex<AwayBook>>,
    },
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Link::Away {
            bytes,
            source,
            book,
            ..
        } = self
        {
            lock(book).release(*source, *bytes);
        }
    }
}

/// Locks a mutex, taking it over if a panic poisoned it (the book is only counters).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// What became of a member whose connection was lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detached {
    /// Away, for the grace period.
    Kept,
    /// No longer a member (removed now, or earlier).
    Gone,
    /// A newer connection holds it (the client came back before this one was noticed dead).
    TakenOver,
}

/// A refused request: the code and the message for the error reply.
pub type Refusal = (ErrorCode, String);

/// What a join gave the client.
#[derive(Debug)]
pub struct Joined {
    /// Its id (the one it claimed, when given back).
    pub id: PeerId,
    /// The other members.
    pub peers: Vec<PeerInfo>,
    /// It took back its place while away: nobody saw it leave or join.
    pub resumed: bool,
}

impl Rooms {
    /// An empty registry with the given limits, counting departures in `leaves`.
    pub fn new(
        max_rooms: usize,
        max_peers_per_room: usize,
        grace: Duration,
        leaves: Counter,
    ) -> Rooms {
        Rooms {
            rooms: Mutex::new(HashMap::new()),
            max_rooms,
            max_peers_per_room,
            grace,
            leaves,
            cluster: None,
            away: Arc::default(),
        }
    }

    /// Limits the away members: per client address and in all (0: no limit); the server uses
    /// its connection limits.
    pub fn with_away_limits(self, per_source: usize, total: usize) -> Rooms {
        {
            let mut book = lock(&self.away);
            book.max_per_source = per_source;
            book.max_members = total;
        }
        self
    }

    /// The same, sharing rooms with other instances through `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Rooms {
        self.cluster = Some(cluster);
        self
    }

    /// Adds a peer to `room` (creating the room), announces it to the others, and returns its id
    /// and the peers that were already there (on every instance).
    ///
    /// `claim` is an id the client had, and whether it proved it: a proven id's member (away,
    /// or held by a connection not yet noticed dead) is resumed: nothing is announced, its
    /// backlog is delivered. Any claimed id that is free is given back (after a server restart),
    /// announced as a join. Otherwise the client gets a new id.
    pub async fn join(
        &self,
        room: &str,
        profile: Profile,
        claim: Option<(PeerId, bool)>,
        conn: u64,
        outbox: Outbox,
    ) -> Result<Joined, Refusal> {
        if let Some((id, true)) = &claim {
            if let Some(joined) = self.resume_local(room, id, conn, &outbox) {
                return Ok(joined);
            }
        }
        let proven = claim.as_ref().is_some_and(|(_, proven)| *proven);
        // An unproven claim (after a restart without a durable secret) gets only an id nobody
        // holds anywhere on this server.
        let claim = claim
            .filter(|(id, proven)| *proven || !self.id_in_use(id))
            .map(|(id, _)| id);
        let Some(cluster) = &self.cluster else {
            return self.join_local(room, profile, claim, conn, outbox);
        };
        // An unproven claim may not take a member held elsewhere; only a free id.
        let claim = match claim {
            Some(id) if proven || cluster.locate(room, &id).await.is_none() => Some(id),
            _ => None,
        };
        let info = profile.into_info(claim.unwrap_or_else(new_peer_id));
        let (members, moved) = cluster
            .join(room, &info, self.max_peers_per_room, self.max_rooms)
            .await
            .map_err(|refused| {
                let code = match refused {
                    crate::cluster::JoinRefused::RoomFull(_) => ErrorCode::RoomFull,
                    _ => ErrorCode::ServerFull,
                };
                (code, refused.to_string())
            })?;
        let joined = encode(&ServerMessage::PeerJoined { peer: info.clone() });
        let dropped = {
            let mut rooms = self.lock();
            let entry = rooms.entry(room.to_string()).or_default();
            let dropped = if moved {
                Vec::new()
            } else {
                entry.broadcast(&joined, &self.leaves)
            };
            entry.members.push(Member {
                info: info.clone(),
                conn,
                link: Link::Live(outbox),
            });
            dropped
        };
        if !moved {
            cluster.publish(room, &members, joined.as_str()).await;
        }
        self.departed(room, dropped).await;
        Ok(Joined {
            id: info.id,
            peers: members.into_iter().map(|m| m.info).collect(),
            resumed: moved,
        })
    }

    /// Removes a peer held by connection `conn`, announces its departure (on every instance), and
    /// drops the room when it empties. Nothing happens if another connection took it over;
    /// returns whether it was removed.
    pub async fn leave(&self, room: &str, id: &str, conn: u64) -> bool {
        let (removed, mut dropped) = self.leave_local(room, id, Some(conn));
        if removed {
            dropped.insert(0, id.to_string());
        }
        self.departed(room, dropped).await;
        removed
    }

    /// Whether member `id` of `room` is now held by another connection than `conn`.
    pub fn held_elsewhere(&self, room: &str, id: &str, conn: u64) -> bool {
        let rooms = self.lock();
        rooms
            .get(room)
            .and_then(|r| r.members.iter().find(|m| m.info.id == id))
            .is_some_and(|m| m.conn != conn)
    }

    /// Whether any room of this instance has a member `id`.
    fn id_in_use(&self, id: &str) -> bool {
        let rooms = self.lock();
        rooms
            .values()
            .any(|r| r.members.iter().any(|m| m.info.id == id))
    }

    /// Connection `conn` of member `id` was lost without a leave: keep its place, away, for the
    /// grace period (with a zero grace period, it leaves now).
    /// The connection came from `source` (its client address key): away members per address
    /// are limited like connections.
    pub async fn detach(&self, room: &str, id: &str, conn: u64, source: IpAddr) -> Detached {
        let kept = {
            let mut rooms = self.lock();
            let Some(member) = rooms
                .get_mut(room)
                .and_then(|r| r.members.iter_mut().find(|m| m.info.id == id))
            else {
                return Detached::Gone;
            };
            if member.conn != conn {
                return Detached::TakenOver;
            }
            let admitted = !self.grace.is_zero() && lock(&self.away).admit(source);
            if admitted {
                member.link = Link::Away {
                    until: Instant::now() + self.grace,
                    backlog: VecDeque::new(),
                    bytes: 0,
                    source,
                    book: self.away.clone(),
                };
            }
            admitted
        };
        if kept {
            Detached::Kept
        } else {
            self.leave(room, id, conn).await;
            Detached::Gone
        }
    }

    /// Removes the away members whose grace period is over, announcing each; returns them
    /// (room, id), so their other grants can be revoked.
    pub async fn expire(&self) -> Vec<(String, PeerId)> {
        let now = Instant::now();
        let expired: Vec<(String, PeerId, u64)> = {
            let rooms = self.lock();
            rooms
                .iter()
                .flat_map(|(room, r)| {
                    r.members.iter().filter_map(move |m| match &m.link {
                        Link::Away { until, .. } if *until <= now => {
                            Some((room.clone(), m.info.id.clone(), m.conn))
                        }
                        _ => None,
                    })
                })
                .collect()
        };
        let mut gone = Vec::new();
        for (room, id, conn) in expired {
            // Resumed on another instance meanwhile: forget it here without a word.
            if let Some(cluster) = &self.cluster {
                let elsewhere = cluster
                    .locate(&room, &id)
                    .await
                    .is_some_and(|m| m.instance != cluster.instance());
                if elsewhere {
                    self.forget_local(&room, &id, conn);
                    continue;
                }
            }
            self.leave(&room, &id, conn).await;
            gone.push((room, id));
        }
        gone
    }

    /// Tells the other instances that `ids`, peers of this instance already removed and
    /// announced here, left `room`.
    pub async fn departed(&self, room: &str, ids: Vec<PeerId>) {
        let Some(cluster) = &self.cluster else {
            return;
        };
        if ids.is_empty() {
            return;
        }
        let rest = cluster.leave(room, &ids).await;
        for peer_id in ids {
            let left = encode(&ServerMessage::PeerLeft { peer_id });
            cluster.publish(room, &rest, left.as_str()).await;
        }
    }

    /// Delivers `data` from `from` to `to`, both in `room` (on any instance); nobody else sees it.
    pub async fn relay(
        &self,
        room: &str,
        from: &str,
        to: &str,
        data: PeerSignal,
    ) -> Result<(), Refusal> {
        let local = {
            let rooms = self.lock();
            rooms
                .get(room)
                .is_some_and(|r| r.members.iter().any(|m| m.info.id == to))
        };
        let Some(cluster) = self.cluster.as_ref().filter(|_| !local && from != to) else {
            return self.relay_local(room, from, to, data);
        };
        let Some(member) = cluster.locate(room, to).await else {
            return Err(unknown_peer(to));
        };
        let text = encode(&ServerMessage::Signal {
            from: from.to_string(),
            data,
        });
        cluster
            .publish(room, std::slice::from_ref(&member), text.as_str())
            .await;
        Ok(())
    }

    /// Queues `text` (published by another instance) for the local members of `room` among `to`;
    /// returns those dropped because their queue was full (already announced here).
    pub fn deliver(&self, room: &str, to: &[String], text: Utf8Bytes) -> Vec<PeerId> {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            return Vec::new();
        };
        let mut dropped = Vec::new();
        entry.members.retain_mut(|m| {
            if !to.contains(&m.info.id) {
                return true;
            }
            if m.link.queue(text.clone()) == Queued::Failed {
                dropped.push(m.info.id.clone());
                false
            } else {
                true
            }
        });
        self.leaves.inc_by(dropped.len() as u64);
        let mut all = dropped.clone();
        for peer_id in dropped {
            let left = encode(&ServerMessage::PeerLeft { peer_id });
            all.extend(entry.broadcast(&left, &self.leaves));
        }
        if entry.members.is_empty() {
            rooms.remove(room);
        }
        all
    }

    /// Announces to this instance's members of `room` that `ids` (peers of another, dead,
    /// instance) left.
    pub fn announce_left_locally(&self, room: &str, ids: &[PeerId]) {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        self.leaves.inc_by(ids.len() as u64);
        for peer_id in ids {
            let left = encode(&ServerMessage::PeerLeft {
                peer_id: peer_id.clone(),
            });
            entry.broadcast(&left, &self.leaves);
        }
    }

    /// The rooms this instance has members in.
    pub fn local_rooms(&self) -> Vec<String> {
        self.lock().keys().cloned().collect()
    }

    /// Puts an away member `id` of this instance back on connection `conn`, delivering what
    /// arrived for it meanwhile.
    fn resume_local(&self, room: &str, id: &str, conn: u64, outbox: &Outbox) -> Option<Joined> {
        let mut rooms = self.lock();
        let entry = rooms.get_mut(room)?;
        let member = entry.members.iter_mut().find(|m| m.info.id == id)?;
        // A live member with this id: its old connection is dead but not yet noticed (the
        // client saw the loss first). The new connection takes over; the old one closes.
        let mut old = std::mem::replace(&mut member.link, Link::Live(outbox.clone()));
        let backlog = match &mut old {
            Link::Away { backlog, .. } => std::mem::take(backlog),
            Link::Live(_) => VecDeque::new(),
        };
        drop(old);
        member.conn = conn;
        for text in backlog {
            let _ = outbox.try_send(text);
        }
        let peers = entry
            .members
            .iter()
            .filter(|m| m.info.id != id)
            .map(|m| m.info.clone())
            .collect();
        Some(Joined {
            id: id.to_string(),
            peers,
            resumed: true,
        })
    }

    /// [`Rooms::join`] on this instance alone.
    fn join_local(
        &self,
        room: &str,
        profile: Profile,
        claim: Option<PeerId>,
        conn: u64,
        outbox: Outbox,
    ) -> Result<Joined, Refusal> {
        let mut rooms = self.lock();
        let room_count = rooms.len();
        let entry = match rooms.get_mut(room) {
            Some(r) => r,
            None if room_count >= self.max_rooms => {
                return Err((
                    ErrorCode::ServerFull,
                    format!(
                        "the server holds its maximum of {} rooms; try later",
                        self.max_rooms
                    ),
                ))
            }
            None => rooms.entry(room.to_string()).or_default(),
        };
        if entry.members.len() >= self.max_peers_per_room {
            return Err((
                ErrorCode::RoomFull,
                format!(
                    "room is full ({} peers); try again when someone leaves",
                    self.max_peers_per_room
                ),
            ));
        }
        let free = |id: &str| entry.members.iter().all(|m| m.info.id != id);
        let id = match claim.filter(|c| free(c)) {
            Some(id) => id,
            None => loop {
                let candidate = new_peer_id();
                if free(&candidate) {
                    break candidate;
                }
            },
        };
        let info = profile.into_info(id.clone());
        let existing = entry.members.iter().map(|m| m.info.clone()).collect();
        let joined = encode(&ServerMessage::PeerJoined { peer: info.clone() });
        entry.broadcast(&joined, &self.leaves);
        entry.members.push(Member {
            info,
            conn,
            link: Link::Live(outbox),
        });
        Ok(Joined {
            id,
            peers: existing,
            resumed: false,
        })
    }

    /// Removes a peer here (held by `conn`, when given) and announces it here; returns whether
    /// it was a member, and who else was dropped on the way (queues full).
    fn leave_local(&self, room: &str, id: &str, conn: Option<u64>) -> (bool, Vec<PeerId>) {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            return (false, Vec::new());
        };
        let before = entry.members.len();
        entry
            .members
            .retain(|m| m.info.id != id || conn.is_some_and(|c| c != m.conn));
        let removed = entry.members.len() != before;
        let mut dropped = Vec::new();
        if removed {
            self.leaves.inc();
            let left = encode(&ServerMessage::PeerLeft {
                peer_id: id.to_string(),
            });
            dropped = entry.broadcast(&left, &self.leaves);
        }
        if entry.members.is_empty() {
            rooms.remove(room);
        }
        (removed, dropped)
    }

    /// Removes member `id` (still held by `conn`) here without announcing anything: it lives on
    /// another instance now.
    fn forget_local(&self, room: &str, id: &str, conn: u64) {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            return;
        };
        entry.members.retain(|m| m.info.id != id || m.conn != conn);
        if entry.members.is_empty() {
            rooms.remove(room);
        }
    }

    /// [`Rooms::relay`] on this instance alone.
    fn relay_local(
        &self,
        room: &str,
        from: &str,
        to: &str,
        data: PeerSignal,
    ) -> Result<(), Refusal> {
        let unknown = || unknown_peer(to);
        if from == to {
            return Err(unknown());
        }
        let text = encode(&ServerMessage::Signal {
            from: from.to_string(),
            data,
        });
        let mut rooms = self.lock();
        let member = rooms
            .get_mut(room)
            .and_then(|r| r.members.iter_mut().find(|m| m.info.id == to))
            .ok_or_else(unknown)?;
        match member.link.queue(text) {
            Queued::Yes => Ok(()),
            Queued::Dropped => Err((
                ErrorCode::PeerCongested,
                format!("peer '{to}' is away and what is kept for it is full; signal dropped"),
            )),
            Queued::Failed => Err((
                ErrorCode::PeerCongested,
                format!("peer '{to}' is not reading its messages; signal dropped"),
            )),
        }
    }

    /// Bytes kept for away members now.
    pub fn away_bytes(&self) -> usize {
        lock(&self.away).bytes
    }

    /// How many rooms and peers there are now, away ones included (for logs and `/healthz`).
    pub fn counts(&self) -> (usize, usize) {
        let rooms = self.lock();
        let peers = rooms.values().map(|r| r.members.len()).sum();
        (rooms.len(), peers)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Room>> {
        // A panic while holding the lock cannot leave a room half-edited in a way that matters
        // more than stopping service, so a poisoned lock is simply taken over.
        self.rooms.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Link {
    /// Queues `text`: on the connection, or in the backlog while away (dropping the oldest of
    /// this member's when full, or the new one when its client's or the server's share is used).
    fn queue(&mut self, text: Utf8Bytes) -> Queued {
        match self {
            Link::Live(outbox) => match outbox.try_send(text) {
                Ok(()) => Queued::Yes,
                Err(_) => Queued::Failed,
            },
            Link::Away {
                backlog,
                bytes,
                source,
                book,
                ..
            } => {
                let len = text.len();
                let mut book = lock(book);
                while !backlog.is_empty()
                    && (backlog.len() >= BACKLOG || *bytes + len > BACKLOG_BYTES)
                {
                    if let Some(old) = backlog.pop_front() {
                        *bytes -= old.len();
                        book.sub_bytes(*source, old.len());
                    }
                }
                if len > BACKLOG_BYTES || !book.fits(*source, len) {
                    return Queued::Dropped;
                }
                book.add_bytes(*source, len);
                *bytes += len;
                backlog.push_back(text);
                Queued::Yes
            }
        }
    }
}

impl Room {
    /// Queues `text` for every member. A member whose queue is full has fallen too far behind to
    /// keep a correct view of the room, so it is dropped (its connection then closes), and, like
    /// every departure, announced to the others with `peer_left`, which may drop more.
    fn broadcast(&mut self, text: &Utf8Bytes, leaves: &Counter) -> Vec<PeerId> {
        let mut all_dropped = Vec::new();
        let mut pending = vec![text.clone()];
        while let Some(text) = pending.pop() {
            let mut dropped = Vec::new();
            self.members.retain_mut(|m| {
                if m.link.queue(text.clone()) != Queued::Failed {
                    return true;
                }
                tracing::warn!(peer = %m.info.id, "peer's queue is full or closed; dropping it");
                dropped.push(m.info.id.clone());
                false
            });
            leaves.inc_by(dropped.len() as u64);
            all_dropped.extend(dropped.iter().cloned());
            pending.extend(
                dropped
                    .into_iter()
                    .map(|peer_id| encode(&ServerMessage::PeerLeft { peer_id })),
            );
        }
        all_dropped
    }
}

/// The refusal of a signal to a peer that is not in the room.
fn unknown_peer(to: &str) -> Refusal {
    (
        ErrorCode::UnknownPeer,
        format!("no peer '{to}' in this room"),
    )
}

/// Serializes a server message once, to be queued for one or many peers.
pub fn encode(msg: &ServerMessage) -> Utf8Bytes {
    // Serializing these plain structs cannot fail; an empty frame would be the visible symptom.
    serde_json::to_string(msg).unwrap_or_default().into()
}

/// Whether `id` has the form of the ids this server hands out (so a claimed one can be no other).
pub fn is_peer_id(id: &str) -> bool {
    id.len() == 12
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A fresh peer id: 12 URL-safe characters (72 random bits).
/// What a joining client is, before it has an id: its name and kind from `hello`, and its
/// client tag (see [`PeerInfo::client`]), which the server computes from its address.
pub struct Profile {
    /// The cleaned display name.
    pub name: Option<String>,
    /// What it runs on.
    pub kind: PeerKind,
    /// The tag of its address in this room.
    pub client: Option<String>,
}

impl Profile {
    fn into_info(self, id: PeerId) -> PeerInfo {
        PeerInfo {
            id,
            name: self.name,
            kind: self.kind,
            client: self.client,
        }
    }

    #[cfg(test)]
    fn browser(name: Option<String>) -> Profile {
        Profile {
            name,
            kind: PeerKind::Browser,
            client: None,
        }
    }
}

fn new_peer_id() -> PeerId {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut rng = rand::rng();
    (0..12)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    fn outbox() -> (Outbox, mpsc::Receiver<Utf8Bytes>) {
        mpsc::channel(4)
    }

    #[test]
    fn join_relay_leave() {
        let rooms = Rooms::new(10, 2, Duration::from_secs(30), Counter::default());
        let (a_tx, mut a_rx) = outbox();
        let (b_tx, mut b_rx) = outbox();
        let Joined {
            id: a,
            peers: before_a,
            ..
        } = rooms
            .join_local("r", Profile::browser(Some("a".into())), None, 0, a_tx)
            .unwrap();
        assert!(before_a.is_empty());
        let Joined {
            id: b,
            peers: before_b,
            ..
        } = rooms
            .join_local("r", Profile::browser(None), None, 0, b_tx)
            .unwrap();
        assert_eq!(before_b[0].id, a);
        assert!(a_rx.try_recv().unwrap().as_str().contains("peer_joined"));

        let (c_tx, _c_rx) = outbox();
        let (code, _) = rooms
            .join_local("r", Profile::browser(None), None, 0, c_tx)
            .unwrap_err();
        assert_eq!(code, ErrorCode::RoomFull);

        rooms
            .relay_local("r", &a, &b, PeerSignal::EndOfCandidates)
            .unwrap();
        let got = b_rx.try_recv().unwrap();
        assert!(got.as_str().contains(&a));
        let (code, _) = rooms
            .relay_local("r", &a, "ghost", PeerSignal::EndOfCandidates)
            .unwrap_err();
        assert_eq!(code, ErrorCode::UnknownPeer);
        let (code, _) = rooms
            .relay_local("other", &a, &b, PeerSignal::EndOfCandidates)
            .unwrap_err();
        assert_eq!(code, ErrorCode::UnknownPeer);

        rooms.leave_local("r", &b, None);
        assert!(a_rx.try_recv().unwrap().as_str().contains("peer_left"));
        rooms.leave_local("r", &a, None);
        assert_eq!(rooms.counts(), (0, 0));
    }

    #[test]
    fn a_peer_dropped_for_a_full_queue_is_announced() {
        let rooms = Rooms::new(10, 4, Duration::from_secs(30), Counter::default());
        let (a_tx, mut a_rx) = mpsc::channel(8);
        let Joined { id: a, .. } = rooms
            .join_local("r", Profile::browser(None), None, 0, a_tx)
            .unwrap();
        let (slow_tx, _slow_rx) = mpsc::channel(1);
        let Joined { id: slow, .. } = rooms
            .join_local("r", Profile::browser(None), None, 0, slow_tx)
            .unwrap();
        assert!(a_rx.try_recv().unwrap().as_str().contains("peer_joined"));
        // The slow peer's queue takes one message (this join), then overflows on the next.
        rooms
            .join_local("r", Profile::browser(None), None, 0, mpsc::channel(8).0)
            .unwrap();
        rooms
            .join_local("r", Profile::browser(None), None, 0, mpsc::channel(8).0)
            .unwrap();
        let mut seen = Vec::new();
        while let Ok(m) = a_rx.try_recv() {
            seen.push(m.as_str().to_string());
        }
        assert!(
            seen.iter()
                .any(|m| m.contains("peer_left") && m.contains(&slow)),
            "a hears that the slow peer left: {seen:?}"
        );
        let Joined { peers, .. } = rooms
            .join_local("r", Profile::browser(None), None, 0, mpsc::channel(8).0)
            .unwrap();
        assert!(
            peers.iter().all(|p| p.id != slow),
            "newcomers are not told of it"
        );
        assert!(peers.iter().any(|p| p.id == a));
    }

    #[test]
    fn max_rooms_is_enforced() {
        let rooms = Rooms::new(1, 4, Duration::from_secs(30), Counter::default());
        rooms
            .join_local("one", Profile::browser(None), None, 0, outbox().0)
            .unwrap();
        let (code, _) = rooms
            .join_local("two", Profile::browser(None), None, 0, outbox().0)
            .unwrap_err();
        assert_eq!(code, ErrorCode::ServerFull);
    }

    #[test]
    fn a_full_queue_refuses_signals_without_blocking() {
        let rooms = Rooms::new(10, 4, Duration::from_secs(30), Counter::default());
        let Joined { id: a, .. } = rooms
            .join_local("r", Profile::browser(None), None, 0, outbox().0)
            .unwrap();
        let (b_tx, _b_rx) = mpsc::channel(1);
        let Joined { id: b, .. } = rooms
            .join_local("r", Profile::browser(None), None, 0, b_tx)
            .unwrap();
        rooms
            .relay_local("r", &a, &b, PeerSignal::EndOfCandidates)
            .unwrap();
        let (code, _) = rooms
            .relay_local("r", &a, &b, PeerSignal::EndOfCandidates)
            .unwrap_err();
        assert_eq!(code, ErrorCode::PeerCongested);
    }

    #[tokio::test]
    async fn a_lost_peer_keeps_its_place_and_what_was_sent_to_it() {
        let rooms = Rooms::new(10, 4, Duration::from_millis(200), Counter::default());
        let (a_tx, mut a_rx) = mpsc::channel(8);
        let Joined { id: a, .. } = rooms
            .join("r", Profile::browser(None), None, 1, a_tx)
            .await
            .unwrap();
        let (b_tx, _b_rx) = mpsc::channel(8);
        let Joined { id: b, .. } = rooms
            .join("r", Profile::browser(None), None, 2, b_tx)
            .await
            .unwrap();
        while a_rx.try_recv().is_ok() {}

        assert_eq!(rooms.detach("r", &b, 2, LOCAL).await, Detached::Kept);
        rooms
            .relay("r", &a, &b, PeerSignal::EndOfCandidates)
            .await
            .expect("a signal to an away peer is kept");
        // b comes back on connection 3, claiming its id: resumed, nobody told.
        let (b2_tx, mut b2_rx) = mpsc::channel(8);
        let back = rooms
            .join(
                "r",
                Profile::browser(None),
                Some((b.clone(), true)),
                3,
                b2_tx,
            )
            .await
            .unwrap();
        assert_eq!((back.id.as_str(), back.resumed), (b.as_str(), true));
        assert_eq!(back.peers.len(), 1);
        assert!(b2_rx
            .try_recv()
            .unwrap()
            .as_str()
            .contains("end_of_candidates"));
        assert!(a_rx.try_recv().is_err(), "a saw neither a leave nor a join");
        // The old connection's end changes nothing now.
        assert_eq!(rooms.detach("r", &b, 2, LOCAL).await, Detached::TakenOver);
        rooms.leave("r", &b, 2).await;
        assert_eq!(rooms.counts(), (1, 2));

        // Away past the grace period: removed and announced.
        assert_eq!(rooms.detach("r", &b, 3, LOCAL).await, Detached::Kept);
        tokio::time::sleep(Duration::from_millis(250)).await;
        let gone = rooms.expire().await;
        assert_eq!(gone, vec![("r".to_string(), b.clone())]);
        assert!(a_rx.try_recv().unwrap().as_str().contains("peer_left"));
        // Claiming a free id (the server forgot it) gives it back, announced as a join.
        let again = rooms
            .join(
                "r",
                Profile::browser(None),
                Some((b.clone(), false)),
                4,
                mpsc::channel(8).0,
            )
            .await
            .unwrap();
        assert_eq!((again.id.as_str(), again.resumed), (b.as_str(), false));
        assert!(a_rx.try_recv().unwrap().as_str().contains("peer_joined"));
        // Claiming, unproven, an id someone holds gets a new one.
        let thief = rooms
            .join(
                "r",
                Profile::browser(None),
                Some((a.clone(), false)),
                5,
                mpsc::channel(8).0,
            )
            .await;
        assert!(thief.is_ok_and(|j| j.id != a && !j.resumed));
    }

    #[tokio::test]
    async fn what_is_kept_for_away_peers_is_bounded_and_released() {
        let rooms = Rooms::new(10, 4, Duration::from_secs(30), Counter::default());
        let Joined { id: a, .. } = rooms
            .join("r", Profile::browser(None), None, 1, mpsc::channel(8).0)
            .await
            .unwrap();
        let Joined { id: b, .. } = rooms
            .join("r", Profile::browser(None), None, 2, mpsc::channel(8).0)
            .await
            .unwrap();
        rooms.detach("r", &b, 2, LOCAL).await;
        let big = "x".repeat(60_000);
        for _ in 0..100 {
            rooms
                .relay("r", &a, &b, PeerSignal::Offer { sdp: big.clone() })
                .await
                .unwrap();
        }
        let kept = rooms.away_bytes();
        assert!(kept > 0 && kept <= BACKLOG_BYTES, "{kept}");
        // b comes back: the backlog is delivered (as much as its queue takes) and released.
        let (tx, mut rx) = mpsc::channel(64);
        rooms
            .join("r", Profile::browser(None), Some((b.clone(), true)), 3, tx)
            .await
            .unwrap();
        assert_eq!(rooms.away_bytes(), 0);
        assert!(rx.try_recv().is_ok());
        // Gone for good while away: released too.
        rooms.detach("r", &b, 3, LOCAL).await;
        rooms
            .relay("r", &a, &b, PeerSignal::Offer { sdp: big })
            .await
            .unwrap();
        assert!(rooms.away_bytes() > 0);
        rooms.leave("r", &b, 3).await;
        assert_eq!(rooms.away_bytes(), 0);
    }

    #[tokio::test]
    async fn away_peers_are_bounded_per_client_like_connections() {
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        let rooms =
            Rooms::new(100, 4, Duration::from_secs(30), Counter::default()).with_away_limits(2, 0);
        let mut ids = Vec::new();
        for (i, room) in ["a", "b", "c"].into_iter().enumerate() {
            let Joined { id, .. } = rooms
                .join(
                    room,
                    Profile::browser(None),
                    None,
                    i as u64,
                    mpsc::channel(8).0,
                )
                .await
                .unwrap();
            ids.push((room, id, i as u64));
        }
        // Two away peers from one client are kept; the third is removed at once.
        let kept: Vec<Detached> = {
            let mut out = Vec::new();
            for (room, id, conn) in &ids {
                out.push(rooms.detach(room, id, *conn, LOCAL).await);
            }
            out
        };
        assert_eq!(kept, [Detached::Kept, Detached::Kept, Detached::Gone]);
        assert_eq!(rooms.counts(), (2, 2));
        // Another client's peer is kept even so.
        let Joined { id, .. } = rooms
            .join("d", Profile::browser(None), None, 9, mpsc::channel(8).0)
            .await
            .unwrap();
        assert_eq!(rooms.detach("d", &id, 9, other).await, Detached::Kept);
    }

    #[tokio::test]
    async fn one_clients_away_peers_share_a_bounded_part_of_the_memory() {
        let other: IpAddr = "192.0.2.7".parse().unwrap();
        let rooms = Rooms::new(100, 16, Duration::from_secs(30), Counter::default());
        let Joined { id: sender, .. } = rooms
            .join("r", Profile::browser(None), None, 0, mpsc::channel(8).0)
            .await
            .unwrap();
        let big = "x".repeat(60_000);
        let mut refused = 0;
        for n in 1..=10u64 {
            let Joined { id, .. } = rooms
                .join("r", Profile::browser(None), None, n, mpsc::channel(8).0)
                .await
                .unwrap();
            assert_eq!(rooms.detach("r", &id, n, LOCAL).await, Detached::Kept);
            for _ in 0..4 {
                let sent = rooms
                    .relay("r", &sender, &id, PeerSignal::Offer { sdp: big.clone() })
                    .await;
                if let Err((code, _)) = sent {
                    assert_eq!(code, ErrorCode::PeerCongested);
                    refused += 1;
                }
            }
        }
        assert!(refused > 0, "one client's away peers are capped together");
        assert!(rooms.away_bytes() <= SOURCE_BYTES);
        // An away peer of another client gets signals whatever the first one's did.
        let Joined { id, .. } = rooms
            .join("r", Profile::browser(None), None, 99, mpsc::channel(8).0)
            .await
            .unwrap();
        assert_eq!(rooms.detach("r", &id, 99, other).await, Detached::Kept);
        rooms
            .relay("r", &sender, &id, PeerSignal::Offer { sdp: big.clone() })
            .await
            .expect("another client's away peer has its own share");
    }

    #[test]
    fn only_ids_of_the_servers_form_can_be_claimed() {
        assert!(is_peer_id(&new_peer_id()));
        for bad in [
            "",
            "short",
            "ZZZZZZZZZZZZZ",
            "a\0bcdefghijk",
            " aaaaaaaaaaa",
            "aaaaaaaaaaa\u{e9}",
        ] {
            assert!(!is_peer_id(bad), "{bad:?}");
        }
    }
}
