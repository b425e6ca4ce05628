//! UDP services, peer to peer: the datagrams between `burrow forward`'s local clients and a UDP
//! service a peer exposes (a game server, a DNS resolver, WireGuard).
//!
//! Each local client (its source address) is a *session*. A session opens as a stream does
//! ([`crate::stream`]): an `open` on a `burrow-stream` channel, naming the service and carrying
//! the session's number, which the exposing side's gate lets through or refuses (name, token,
//! the per-peer limit) exactly as it does a TCP stream; the session ends with that stream, after
//! [`IDLE`] without a datagram either way (or when either side stops). The datagrams
//! themselves travel on one `burrow-udp` channel per connection, unreliable and unordered like
//! UDP itself: a lost datagram is not resent, a late one not waited for, so one session's loss
//! never holds up another's. Each datagram is one binary message, so its boundaries are kept:
//! the session's number (4 bytes, big-endian), then the datagram.
//!
//! The exposing side sends a session's datagrams only to its one service address, from a
//! socket of the session's own, and only datagrams from that address come back.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::Duration;

/// Label of the per-connection datagram channel.
pub const UDP_LABEL: &str = "burrow-udp";

/// The largest datagram carried: the largest a UDP socket can send over IPv4. (A data channel
/// message may be larger; a socket's datagram may not.)
pub const MAX_DATAGRAM: usize = 65_507;

/// Bytes before the datagram in each message: the session's number.
pub const HEADER: usize = 4;

/// A session silent this long, both ways, is ended (as NATs and frp end UDP mappings).
pub const IDLE: Duration = Duration::from_secs(60);

/// Datagrams a forwarding side holds for a session still opening; beyond, they are dropped
/// (as a full socket buffer would).
pub const OPENING_QUEUE: usize = 64;

/// Why a datagram was not carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("a datagram of {0} bytes is over the {MAX_DATAGRAM} bytes carried")]
pub struct TooBig(pub usize);

/// The message carrying `datagram` for `session`.
pub fn frame(session: u32, datagram: &[u8]) -> Result<Vec<u8>, TooBig> {
    if datagram.len() > MAX_DATAGRAM {
        return Err(TooBig(datagram.len()));
    }
    let mut m = Vec::with_capacity(HEADER + datagram.len());
    m.extend_from_slice(&session.to_be_bytes());
    m.extend_from_slice(datagram);
    Ok(m)
}

/// The session and datagram a message carries; `None` for a message too short or too long
/// (dropped: it came from a hostile or broken peer).
pub fn parse(message: &[u8]) -> Option<(u32, &[u8])> {
    if message.len() < HEADER || message.len() - HEADER > MAX_DATAGRAM {
        return None;
    }
    let (head, datagram) = message.split_at(HEADER);
    let session = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
    Some((session, datagram))
}

/// What the forwarding side does with a datagram from a local client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// The client's session is open (or opening): this number.
    Known(u32),
    /// A new client: open a session with this number.
    New(u32),
    /// As many sessions as allowed are open: dropped.
    Full,
}

/// The forwarding side's sessions, one per local client address `A`, on time given by the
/// caller (a `Duration` since any fixed start).
#[derive(Debug)]
pub struct Sessions<A> {
    by_addr: HashMap<A, u32>,
    by_id: HashMap<u32, (A, Duration)>,
    next: u32,
    max: usize,
}

impl<A: Hash + Eq + Clone> Sessions<A> {
    /// No session yet; at most `max` at once.
    pub fn new(max: usize) -> Sessions<A> {
        Sessions {
            by_addr: HashMap::new(),
            by_id: HashMap::new(),
            next: 1,
            max,
        }
    }

    /// A datagram from `client` at `now`: its session (counted as activity), or a new one.
    pub fn lookup(&mut self, client: &A, now: Duration) -> Lookup {
        if let Some(&id) = self.by_addr.get(client) {
            if let Some(entry) = self.by_id.get_mut(&id) {
                entry.1 = now;
            }
            return Lookup::Known(id);
        }
        if self.by_id.len() >= self.max {
            return Lookup::Full;
        }
        // Numbers are not reused while the process lives (2^32 sessions): a late datagram of
        // an ended session never reaches a new one.
        let id = self.next;
        self.next = self.next.wrapping_add(1).max(1);
        self.by_addr.insert(client.clone(), id);
        self.by_id.insert(id, (client.clone(), now));
        Lookup::New(id)
    }

    /// A datagram came back for `session` at `now`: its client (counted as activity), if the
    /// session is still there.
    pub fn heard(&mut self, session: u32, now: Duration) -> Option<A> {
        let entry = self.by_id.get_mut(&session)?;
        entry.1 = now;
        Some(entry.0.clone())
    }

    /// The sessions silent for `idle` at `now`, removed.
    pub fn expire(&mut self, now: Duration, idle: Duration) -> Vec<u32> {
        let gone: Vec<u32> = self
            .by_id
            .iter()
            .filter(|(_, (_, last))| now.saturating_sub(*last) >= idle)
            .map(|(id, _)| *id)
            .collect();
        for id in &gone {
            self.remove(*id);
        }
        gone
    }

    /// Forgets `session` (it ended or failed to open).
    pub fn remove(&mut self, session: u32) {
        if let Some((addr, _)) = self.by_id.remove(&session) {
            self.by_addr.remove(&addr);
        }
    }

    /// Sessions open now.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether no session is open.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: Duration = Duration::from_secs(1);

    #[test]
    fn a_datagram_keeps_its_session_and_its_bytes() {
        let m = frame(7, b"\x00query\xff").unwrap();
        assert_eq!(m.len(), HEADER + 7);
        assert_eq!(parse(&m), Some((7, &b"\x00query\xff"[..])));
        let empty = frame(u32::MAX, b"").unwrap();
        assert_eq!(
            parse(&empty),
            Some((u32::MAX, &b""[..])),
            "an empty datagram is one"
        );
    }

    #[test]
    fn oversized_and_truncated_messages_are_refused() {
        assert_eq!(
            frame(1, &vec![0; MAX_DATAGRAM]).map(|m| m.len()),
            Ok(MAX_DATAGRAM + 4)
        );
        assert_eq!(
            frame(1, &vec![0; MAX_DATAGRAM + 1]),
            Err(TooBig(MAX_DATAGRAM + 1))
        );
        assert_eq!(parse(b"abc"), None);
        assert_eq!(parse(&vec![0; HEADER + MAX_DATAGRAM + 1]), None);
    }

    #[test]
    fn each_client_address_is_one_session_until_it_is_idle() {
        let mut s: Sessions<&str> = Sessions::new(2);
        assert_eq!(s.lookup(&"a", T0), Lookup::New(1));
        assert_eq!(s.lookup(&"a", T0), Lookup::Known(1));
        assert_eq!(s.lookup(&"b", T0), Lookup::New(2));
        assert_eq!(s.lookup(&"c", T0), Lookup::Full, "at most two");
        assert_eq!(
            s.heard(2, T0 + IDLE / 2),
            Some("b"),
            "an answer keeps b alive"
        );
        assert_eq!(s.heard(9, T0), None, "an unknown session has no client");
        assert_eq!(s.expire(T0 + IDLE, IDLE), vec![1]);
        assert_eq!(s.len(), 1);
        assert_eq!(
            s.lookup(&"a", T0 + IDLE),
            Lookup::New(3),
            "numbers are not reused"
        );
        s.remove(2);
        s.remove(3);
        assert!(s.is_empty());
    }
}
