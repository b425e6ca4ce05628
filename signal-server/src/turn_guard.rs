//! The TURN relay's policy, enforced in front of the `turn` crate's server: which peer addresses
//! may be relayed to, and how many allocations a peer and the server may hold.
//!
//! [`GuardedConn`] wraps the listening UDP socket. Each datagram is looked at before the TURN
//! server sees it: a CreatePermission or ChannelBind naming a forbidden peer address is answered
//! with 403 Forbidden and goes no further; a Send indication to one is dropped; an authenticated
//! Allocate beyond a quota gets 486 Allocation Quota Reached (per peer) or 508 Insufficient
//! Capacity (in total). Allocations are counted per TURN username (one per peer, see
//! `credentials`) and forgotten when the TURN server reports them closed.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use ipnet::IpNet;
use stun::attributes::{ATTR_USERNAME, ATTR_XOR_PEER_ADDRESS};
use stun::error_code::{
    ErrorCode, ErrorCodeAttribute, CODE_ALLOC_QUOTA_REACHED, CODE_FORBIDDEN,
    CODE_INSUFFICIENT_CAPACITY,
};
use stun::message::{
    Getter, Message, MessageType, CLASS_ERROR_RESPONSE, CLASS_INDICATION, CLASS_REQUEST,
    METHOD_ALLOCATE, METHOD_CHANNEL_BIND, METHOD_CREATE_PERMISSION, METHOD_SEND,
};
use stun::textattrs::TextAttribute;
use turn::proto::peeraddr::PeerAddress;
use webrtc_util::Conn;

/// Which peer addresses the relay may reach.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Extra ranges to refuse (`--turn-denied-peer`).
    pub denied: Vec<IpNet>,
    /// Ranges allowed even if denied otherwise (`--turn-allowed-peer`), coturn-style.
    pub allowed: Vec<IpNet>,
    /// The server's own sockets (HTTP, STUN/TURN): never a relay target.
    pub own: Vec<SocketAddr>,
}

impl PeerPolicy {
    /// Whether relaying to `peer` is allowed.
    pub fn permits(&self, peer: SocketAddr) -> bool {
        let ip = peer.ip().to_canonical();
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return true;
        }
        if self
            .own
            .iter()
            .any(|own| own.port() == peer.port() && (own.ip() == ip || own.ip().is_unspecified()))
        {
            return false;
        }
        !(is_special(ip) || self.denied.iter().any(|n| n.contains(&ip)))
    }
}

/// Loopback, link-local, unspecified, multicast, broadcast: never relayed to.
fn is_special(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_multicast()
                || v4.is_broadcast()
        }
        IpAddr::V6(v6) => {
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (v6.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// Allocation quotas.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    /// Most live allocations one peer (TURN username) may hold.
    pub per_peer: usize,
    /// Most live allocations in total.
    pub total: usize,
}

/// Live allocations: username → client addresses holding one.
#[derive(Default)]
pub struct Ledger {
    by_user: Mutex<HashMap<String, HashSet<SocketAddr>>>,
}

impl Ledger {
    /// Forgets an allocation the TURN server closed.
    pub fn closed(&self, username: &str, client: SocketAddr) {
        let mut map = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(set) = map.get_mut(username) {
            set.remove(&client);
            if set.is_empty() {
                map.remove(username);
            }
        }
    }

    /// Counts a new allocation attempt, or says which quota it would break.
    fn admit(&self, username: &str, client: SocketAddr, quotas: Quotas) -> Result<(), ErrorCode> {
        let mut map = self.by_user.lock().unwrap_or_else(|p| p.into_inner());
        if map.get(username).is_some_and(|s| s.contains(&client)) {
            return Ok(()); // a retry of the same allocation
        }
        if map.get(username).map_or(0, HashSet::len) >= quotas.per_peer {
            return Err(CODE_ALLOC_QUOTA_REACHED);
        }
        if map.values().map(HashSet::len).sum::<usize>() >= quotas.total {
            return Err(CODE_INSUFFICIENT_CAPACITY);
        }
        map.entry(username.to_string()).or_default().insert(client);
        Ok(())
    }
}

/// The listening socket, with the policy applied to what arrives on it.
pub struct GuardedConn {
    inner: Arc<dyn Conn + Send + Sync>,
    policy: PeerPolicy,
    quotas: Quotas,
    ledger: Arc<Ledger>,
    /// Checks usernames, so only credentialed allocations are counted.
    minter: Option<crate::credentials::Minter>,
}

/// What to do with one datagram.
enum Verdict {
    Pass,
    Drop,
    Refuse(Vec<u8>),
}

impl GuardedConn {
    /// Wraps `inner`.
    pub fn new(
        inner: Arc<dyn Conn + Send + Sync>,
        policy: PeerPolicy,
        quotas: Quotas,
        ledger: Arc<Ledger>,
        minter: Option<crate::credentials::Minter>,
    ) -> GuardedConn {
        GuardedConn {
            inner,
            policy,
            quotas,
            ledger,
            minter,
        }
    }

    fn judge(&self, data: &[u8], from: SocketAddr) -> Verdict {
        if !stun::message::is_message(data) {
            return Verdict::Pass; // ChannelData: its channel was bound only if permitted
        }
        // Read the type from the header first: Binding (the bulk) and refreshes pass untouched.
        let mut typ = MessageType::default();
        typ.read_value(u16::from_be_bytes([data[0], data[1]]));
        let relevant = [
            METHOD_CREATE_PERMISSION,
            METHOD_CHANNEL_BIND,
            METHOD_SEND,
            METHOD_ALLOCATE,
        ];
        if !relevant.contains(&typ.method) {
            return Verdict::Pass;
        }
        let mut msg = Message::new();
        msg.raw = data.to_vec();
        if msg.decode().is_err() {
            return Verdict::Pass; // the TURN server drops it itself
        }
        let method = msg.typ.method;
        let class = msg.typ.class;
        let names_peer = (method == METHOD_CREATE_PERMISSION || method == METHOD_CHANNEL_BIND)
            && class == CLASS_REQUEST
            || method == METHOD_SEND && class == CLASS_INDICATION;
        if names_peer {
            let forbidden = msg
                .attributes
                .0
                .iter()
                .filter(|a| a.typ == ATTR_XOR_PEER_ADDRESS)
                .any(|a| {
                    let mut one = Message::new();
                    one.transaction_id = msg.transaction_id;
                    one.add(a.typ, &a.value);
                    let mut peer = PeerAddress::default();
                    match peer.get_from(&one) {
                        Ok(()) => !self.policy.permits(SocketAddr::new(peer.ip, peer.port)),
                        Err(_) => false,
                    }
                });
            if forbidden {
                tracing::info!(%from, "TURN: refused a relay to a forbidden peer address");
                return if class == CLASS_REQUEST {
                    Verdict::Refuse(error_response(&msg, CODE_FORBIDDEN))
                } else {
                    Verdict::Drop
                };
            }
        }
        if method == METHOD_ALLOCATE && class == CLASS_REQUEST && msg.contains(ATTR_USERNAME) {
            let credentialed =
                |user: &str| self.minter.as_ref().is_some_and(|m| m.check(user).is_ok());
            if let Ok(user) = TextAttribute::get_from_as(&msg, ATTR_USERNAME) {
                if !credentialed(&user.text) {
                    return Verdict::Pass; // the TURN server refuses it
                }
                if let Err(code) = self.ledger.admit(&user.text, from, self.quotas) {
                    tracing::info!(%from, user = %user.text, code = code.0, "TURN: allocation over quota");
                    return Verdict::Refuse(error_response(&msg, code));
                }
            }
        }
        Verdict::Pass
    }
}

/// An error response to `req` with `code` (no integrity: the request was not processed).
fn error_response(req: &Message, code: ErrorCode) -> Vec<u8> {
    let mut resp = Message::new();
    let result = resp.build(&[
        Box::new(req.transaction_id),
        Box::new(MessageType::new(req.typ.method, CLASS_ERROR_RESPONSE)),
        Box::new(ErrorCodeAttribute {
            code,
            reason: Vec::new(),
        }),
    ]);
    match result {
        Ok(()) => resp.raw,
        Err(_) => Vec::new(),
    }
}

#[async_trait::async_trait]
impl Conn for GuardedConn {
    async fn connect(&self, addr: SocketAddr) -> webrtc_util::Result<()> {
        self.inner.connect(addr).await
    }

    async fn recv(&self, buf: &mut [u8]) -> webrtc_util::Result<usize> {
        self.inner.recv(buf).await
    }

    async fn recv_from(&self, buf: &mut [u8]) -> webrtc_util::Result<(usize, SocketAddr)> {
        loop {
            let (n, from) = self.inner.recv_from(buf).await?;
            match self.judge(&buf[..n], from) {
                Verdict::Pass => return Ok((n, from)),
                Verdict::Drop => continue,
                Verdict::Refuse(reply) => {
                    if !reply.is_empty() {
                        let _ = self.inner.send_to(&reply, from).await;
                    }
                }
            }
        }
    }

    async fn send(&self, buf: &[u8]) -> webrtc_util::Result<usize> {
        self.inner.send(buf).await
    }

    async fn send_to(&self, buf: &[u8], target: SocketAddr) -> webrtc_util::Result<usize> {
        self.inner.send_to(buf, target).await
    }

    fn local_addr(&self) -> webrtc_util::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.remote_addr()
    }

    async fn close(&self) -> webrtc_util::Result<()> {
        self.inner.close().await
    }

    fn as_any(&self) -> &(dyn std::any::Any + Send + Sync) {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn special_and_own_addresses_are_refused() {
        let policy = PeerPolicy {
            own: vec![addr("203.0.113.10:3478")],
            ..Default::default()
        };
        assert!(policy.permits(addr("203.0.113.2:50000")));
        assert!(policy.permits(addr("10.0.0.2:50000")));
        assert!(!policy.permits(addr("127.0.0.1:50000")));
        assert!(!policy.permits(addr("[::1]:50000")));
        assert!(!policy.permits(addr("169.254.1.1:50000")));
        assert!(!policy.permits(addr("0.0.0.0:50000")));
        assert!(!policy.permits(addr("224.0.0.251:5353")));
        assert!(!policy.permits(addr("203.0.113.10:3478")));
        assert!(policy.permits(addr("203.0.113.10:40000")));
    }

    #[test]
    fn denied_and_allowed_ranges() {
        let policy = PeerPolicy {
            denied: vec!["10.0.0.0/8".parse().unwrap()],
            allowed: vec![
                "127.0.0.0/8".parse().unwrap(),
                "10.1.0.0/16".parse().unwrap(),
            ],
            own: vec![],
        };
        assert!(!policy.permits(addr("10.0.0.2:1")));
        assert!(policy.permits(addr("10.1.0.2:1")));
        assert!(policy.permits(addr("127.0.0.1:1")));
    }

    #[test]
    fn quotas_count_per_peer_and_in_total() {
        let ledger = Ledger::default();
        let q = Quotas {
            per_peer: 2,
            total: 3,
        };
        assert!(ledger.admit("u1", addr("1.1.1.1:1"), q).is_ok());
        assert!(ledger.admit("u1", addr("1.1.1.1:1"), q).is_ok(), "retry");
        assert!(ledger.admit("u1", addr("1.1.1.1:2"), q).is_ok());
        assert!(ledger.admit("u1", addr("1.1.1.1:3"), q) == Err(CODE_ALLOC_QUOTA_REACHED));
        assert!(ledger.admit("u2", addr("2.2.2.2:1"), q).is_ok());
        assert!(ledger.admit("u3", addr("3.3.3.3:1"), q) == Err(CODE_INSUFFICIENT_CAPACITY));
        ledger.closed("u1", addr("1.1.1.1:1"));
        assert!(ledger.admit("u3", addr("3.3.3.3:1"), q).is_ok());
    }
}
