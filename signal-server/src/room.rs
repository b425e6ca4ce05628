//! Rooms: who is in which room, and the one place where a signal is relayed to its addressee.
//!
//! Each member is represented by the sending half of its connection's outgoing queue. Messages are
//! serialized once and queued as shared bytes; a member whose queue is full is not waited for.
//!
//! With `--redis` ([`crate::cluster`]) the room's members may be on other instances too: joins and
//! limits go through Redis, and what is for a peer elsewhere is published to its instance.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::ws::Utf8Bytes;
use prometheus_client::metrics::counter::Counter;
use rand::Rng;
use signal_protocol::{ErrorCode, PeerId, PeerInfo, PeerSignal, ServerMessage};
use tokio::sync::mpsc;

/// The queue a connection drains into its WebSocket; dropping every sender closes the connection.
pub type Outbox = mpsc::Sender<Utf8Bytes>;

/// All rooms of the server.
pub struct Rooms {
    rooms: Mutex<HashMap<String, Room>>,
    max_rooms: usize,
    max_peers_per_room: usize,
    /// Counts every departure, however it happened (`burrow_leaves_total`).
    leaves: Counter,
    /// The other instances, when several serve the same rooms (`--redis`).
    cluster: Option<Arc<crate::cluster::Cluster>>,
}

#[derive(Default)]
struct Room {
    members: Vec<Member>,
}

struct Member {
    info: PeerInfo,
    outbox: Outbox,
}

/// A refused request: the code and the message for the error reply.
pub type Refusal = (ErrorCode, String);

impl Rooms {
    /// An empty registry with the given limits, counting departures in `leaves`.
    pub fn new(max_rooms: usize, max_peers_per_room: usize, leaves: Counter) -> Rooms {
        Rooms {
            rooms: Mutex::new(HashMap::new()),
            max_rooms,
            max_peers_per_room,
            leaves,
            cluster: None,
        }
    }

    /// The same, sharing rooms with other instances through `cluster`.
    pub fn with_cluster(mut self, cluster: Arc<crate::cluster::Cluster>) -> Rooms {
        self.cluster = Some(cluster);
        self
    }

    /// Adds a peer to `room` (creating the room), announces it to the others, and returns its new
    /// id and the peers that were already there (on every instance).
    pub async fn join(
        &self,
        room: &str,
        name: Option<String>,
        outbox: Outbox,
    ) -> Result<(PeerId, Vec<PeerInfo>), Refusal> {
        let Some(cluster) = &self.cluster else {
            return self.join_local(room, name, outbox);
        };
        let info = PeerInfo {
            id: new_peer_id(),
            name,
        };
        let members = cluster
            .join(room, &info, self.max_peers_per_room, self.max_rooms)
            .await?;
        let joined = encode(&ServerMessage::PeerJoined { peer: info.clone() });
        let dropped = {
            let mut rooms = self.lock();
            let entry = rooms.entry(room.to_string()).or_default();
            let dropped = entry.broadcast(&joined, &self.leaves);
            entry.members.push(Member {
                info: info.clone(),
                outbox,
            });
            dropped
        };
        cluster.publish(room, &members, joined.as_str()).await;
        self.departed(room, dropped).await;
        Ok((info.id, members.into_iter().map(|m| m.info).collect()))
    }

    /// Removes a peer, announces its departure (on every instance), and drops the room when it
    /// empties.
    pub async fn leave(&self, room: &str, id: &str) {
        let (removed, mut dropped) = self.leave_local(room, id);
        if removed {
            dropped.insert(0, id.to_string());
        }
        self.departed(room, dropped).await;
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
        entry.members.retain(|m| {
            if !to.contains(&m.info.id) {
                return true;
            }
            match m.outbox.try_send(text.clone()) {
                Ok(()) => true,
                Err(_) => {
                    dropped.push(m.info.id.clone());
                    false
                }
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

    /// [`Rooms::join`] on this instance alone.
    fn join_local(
        &self,
        room: &str,
        name: Option<String>,
        outbox: Outbox,
    ) -> Result<(PeerId, Vec<PeerInfo>), Refusal> {
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
        let id = loop {
            let candidate = new_peer_id();
            if entry.members.iter().all(|m| m.info.id != candidate) {
                break candidate;
            }
        };
        let info = PeerInfo {
            id: id.clone(),
            name,
        };
        let existing = entry.members.iter().map(|m| m.info.clone()).collect();
        let joined = encode(&ServerMessage::PeerJoined { peer: info.clone() });
        entry.broadcast(&joined, &self.leaves);
        entry.members.push(Member { info, outbox });
        Ok((id, existing))
    }

    /// Removes a peer here and announces it here; returns whether it was a member, and who else
    /// was dropped on the way (queues full).
    fn leave_local(&self, room: &str, id: &str) -> (bool, Vec<PeerId>) {
        let mut rooms = self.lock();
        let Some(entry) = rooms.get_mut(room) else {
            return (false, Vec::new());
        };
        let before = entry.members.len();
        entry.members.retain(|m| m.info.id != id);
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
        let outbox = {
            let rooms = self.lock();
            let member = rooms
                .get(room)
                .and_then(|r| r.members.iter().find(|m| m.info.id == to))
                .ok_or_else(unknown)?;
            member.outbox.clone()
        };
        let text = encode(&ServerMessage::Signal {
            from: from.to_string(),
            data,
        });
        outbox.try_send(text).map_err(|_| {
            (
                ErrorCode::PeerCongested,
                format!("peer '{to}' is not reading its messages; signal dropped"),
            )
        })
    }

    /// How many rooms and peers there are now (for logs and `/healthz`).
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

impl Room {
    /// Queues `text` for every member. A member whose queue is full has fallen too far behind to
    /// keep a correct view of the room, so it is dropped (its connection then closes), and, like
    /// every departure, announced to the others with `peer_left`, which may drop more.
    fn broadcast(&mut self, text: &Utf8Bytes, leaves: &Counter) -> Vec<PeerId> {
        let mut all_dropped = Vec::new();
        let mut pending = vec![text.clone()];
        while let Some(text) = pending.pop() {
            let mut dropped = Vec::new();
            self.members
                .retain(|m| match m.outbox.try_send(text.clone()) {
                    Ok(()) => true,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        tracing::warn!(peer = %m.info.id, "peer's queue is full; dropping it");
                        dropped.push(m.info.id.clone());
                        false
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => {
                        dropped.push(m.info.id.clone());
                        false
                    }
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

/// A fresh peer id: 12 URL-safe characters (72 random bits).
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

    fn outbox() -> (Outbox, mpsc::Receiver<Utf8Bytes>) {
        mpsc::channel(4)
    }

    #[test]
    fn join_relay_leave() {
        let rooms = Rooms::new(10, 2, Counter::default());
        let (a_tx, mut a_rx) = outbox();
        let (b_tx, mut b_rx) = outbox();
        let (a, before_a) = rooms.join_local("r", Some("a".into()), a_tx).unwrap();
        assert!(before_a.is_empty());
        let (b, before_b) = rooms.join_local("r", None, b_tx).unwrap();
        assert_eq!(before_b[0].id, a);
        assert!(a_rx.try_recv().unwrap().as_str().contains("peer_joined"));

        let (c_tx, _c_rx) = outbox();
        let (code, _) = rooms.join_local("r", None, c_tx).unwrap_err();
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

        rooms.leave_local("r", &b);
        assert!(a_rx.try_recv().unwrap().as_str().contains("peer_left"));
        rooms.leave_local("r", &a);
        assert_eq!(rooms.counts(), (0, 0));
    }

    #[test]
    fn a_peer_dropped_for_a_full_queue_is_announced() {
        let rooms = Rooms::new(10, 4, Counter::default());
        let (a_tx, mut a_rx) = mpsc::channel(8);
        let (a, _) = rooms.join_local("r", None, a_tx).unwrap();
        let (slow_tx, _slow_rx) = mpsc::channel(1);
        let (slow, _) = rooms.join_local("r", None, slow_tx).unwrap();
        assert!(a_rx.try_recv().unwrap().as_str().contains("peer_joined"));
        // The slow peer's queue takes one message (this join), then overflows on the next.
        rooms.join_local("r", None, mpsc::channel(8).0).unwrap();
        rooms.join_local("r", None, mpsc::channel(8).0).unwrap();
        let mut seen = Vec::new();
        while let Ok(m) = a_rx.try_recv() {
            seen.push(m.as_str().to_string());
        }
        assert!(
            seen.iter()
                .any(|m| m.contains("peer_left") && m.contains(&slow)),
            "a hears that the slow peer left: {seen:?}"
        );
        let (_, peers) = rooms.join_local("r", None, mpsc::channel(8).0).unwrap();
        assert!(
            peers.iter().all(|p| p.id != slow),
            "newcomers are not told of it"
        );
        assert!(peers.iter().any(|p| p.id == a));
    }

    #[test]
    fn max_rooms_is_enforced() {
        let rooms = Rooms::new(1, 4, Counter::default());
        rooms.join_local("one", None, outbox().0).unwrap();
        let (code, _) = rooms.join_local("two", None, outbox().0).unwrap_err();
        assert_eq!(code, ErrorCode::ServerFull);
    }

    #[test]
    fn a_full_queue_refuses_signals_without_blocking() {
        let rooms = Rooms::new(10, 4, Counter::default());
        let (a, _) = rooms.join_local("r", None, outbox().0).unwrap();
        let (b_tx, _b_rx) = mpsc::channel(1);
        let (b, _) = rooms.join_local("r", None, b_tx).unwrap();
        rooms
            .relay_local("r", &a, &b, PeerSignal::EndOfCandidates)
            .unwrap();
        let (code, _) = rooms
            .relay_local("r", &a, &b, PeerSignal::EndOfCandidates)
            .unwrap_err();
        assert_eq!(code, ErrorCode::PeerCongested);
    }
}
