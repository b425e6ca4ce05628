//! The TURN relay's policy: which peer addresses it may reach, and how many allocations a
//! peer, a client IP and the whole server may hold.
//!
//! A relay is a way into whatever network the server sits in. Left open, anyone holding
//! credentials could make it send datagrams to the server's LAN, to its loopback services, to
//! a cloud metadata address, or back at the server's own ports. So [`PeerPolicy`] denies by
//! default every address that is not plainly public:
//!
//! * IPv4: "this network" 0/8 (and the unspecified address), private 10/8, 172.16/12 and
//!   192.168/16, carrier-grade NAT 100.64/10, loopback 127/8, link-local 169.254/16, multicast
//!   224/4, reserved 240/4 and broadcast;
//! * IPv6: unspecified, loopback, unique-local fc00::/7, link-local fe80::/10, site-local
//!   fec0::/10, multicast ff00::/8 (IPv4-mapped addresses are judged as IPv4);
//! * the server's own addresses: the HTTP and STUN ports on every address of the server are
//!   never reachable; any other port there only if it is one of the relay's own allocations
//!   (two peers both on this relay talk relay to relay).
//!
//! `--turn-denied-peer` adds ranges; `--turn-allowed-peer` opens exactly the ranges it names
//! (a LAN deployment, or tests on loopback), though never the server's HTTP and STUN ports.
//!
//! The [`Ledger`] counts live allocations per peer id, per client IP and in total. The relay
//! calls [`Ledger::admit`] only once a request's MESSAGE-INTEGRITY has been verified, so
//! forged or unauthenticated requests can never use up anyone's quota.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Which peer addresses the relay may reach.
#[derive(Debug, Clone, Default)]
pub struct PeerPolicy {
    /// Extra ranges to refuse (`--turn-denied-peer`).
    pub denied: Vec<IpNet>,
    /// Ranges permitted even if denied otherwise (`--turn-allowed-peer`), except the server's
    /// own service ports.
    pub allowed: Vec<IpNet>,
    /// The server's own addresses (listen, relay, and when listening on a wildcard every
    /// interface address).
    pub own_ips: Vec<IpAddr>,
    /// Whether the server listens on a wildcard address: then the whole loopback range is its
    /// own too.
    pub own_wildcard: bool,
    /// The server's service ports (HTTP, STUN, alternate STUN): never a relay target on any of
    /// its own addresses.
    pub service_ports: Vec<u16>,
}

/// What the policy says about one peer transport address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerVerdict {
    /// The relay may exchange datagrams with it.
    Permit,
    /// Refused, and why.
    Deny(DenyReason),
    /// One of the server's own addresses: only the relay's own allocation ports may be reached
    /// there (the caller knows which are live).
    OwnAddress,
}

/// Why a peer address is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DenyReason {
    /// In a range denied by default (private, loopback, …): the name of the range.
    #[error("{0} address")]
    Special(&'static str),
    /// In a `--turn-denied-peer` range.
    #[error("denied range")]
    Configured,
    /// The server's own HTTP or STUN port.
    #[error("the server's own service port")]
    ServicePort,
}

impl PeerPolicy {
    /// Judges relaying to `peer`.
    pub fn judge(&self, peer: SocketAddr) -> PeerVerdict {
        let ip = peer.ip().to_canonical();
        let own = self.is_own(ip);
        if own && self.service_ports.contains(&peer.port()) {
            return PeerVerdict::Deny(DenyReason::ServicePort);
        }
        if self.allowed.iter().any(|n| n.contains(&ip)) {
            return PeerVerdict::Permit;
        }
        if own {
            return PeerVerdict::OwnAddress;
        }
        if let Some(range) = special_range(ip) {
            return PeerVerdict::Deny(DenyReason::Special(range));
        }
        if self.denied.iter().any(|n| n.contains(&ip)) {
            return PeerVerdict::Deny(DenyReason::Configured);
        }
        PeerVerdict::Permit
    }

    /// Whether `ip` is one of the server's own addresses (where ports need a closer look).
    pub fn is_own(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.own_ips.contains(&ip) || (self.own_wildcard && ip.is_loopback())
    }
}

/// The default-denied range `ip` falls in, by name, if any.
pub fn special_range(ip: IpAddr) -> Option<&'static str> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => special_v4(v4),
        IpAddr::V6(v6) => special_v6(v6),
    }
}

fn special_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    Some(match (a, b) {
        (0, _) => "unspecified (0/8)",
        (10, _) => "private (10/8)",
        (100, b) if b & 0xC0 == 64 => "carrier-grade NAT (100.64/10)",
        (127, _) => "loopback",
        (169, 254) => "link-local",
        (172, b) if b & 0xF0 == 16 => "private (172.16/12)",
        (192, 168) => "private (192.168/16)",
        (192, 0) if ip.octets()[2] == 0 => "IETF protocol assignments (192.0.0/24)",
        (198, b) if b & 0xFE == 18 => "benchmarking (198.18/15)",
        (224..=239, _) => "multicast",
        (240..=255, _) => "reserved or broadcast",
        _ => return None,
    })
}

fn special_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let first = ip.segments()[0];
    Some(if ip.is_unspecified() {
        "unspecified"
    } else if ip.is_loopback() {
        "loopback"
    } else if first & 0xFE00 == 0xFC00 {
        "unique-local (fc00::/7)"
    } else if first & 0xFFC0 == 0xFE80 {
        "link-local"
    } else if first & 0xFFC0 == 0xFEC0 {
        "site-local"
    } else if first & 0xFF00 == 0xFF00 {
        "multicast"
    } else if ip.segments()[..6] == [0x64, 0xff9b, 0, 0, 0, 0]
        || ip.segments()[..3] == [0x64, 0xff9b, 1]
    {
        "NAT64 (64:ff9b::/96, 64:ff9b:1::/48): IPv4 behind a gateway"
    } else if first == 0x2002 {
        "6to4 (2002::/16): IPv4 inside"
    } else if ip.segments()[..6] == [0, 0, 0, 0, 0, 0] {
        "IPv4-compatible (::/96)"
    } else {
        return None;
    })
}

/// Allocation quotas.
#[derive(Debug, Clone, Copy)]
pub struct Quotas {
    /// Most live allocations one peer (one signaling session) may hold.
    pub per_peer: usize,
    /// Most live allocations from one client IP, whoever's credentials they use.
    pub per_ip: usize,
    /// Most live allocations in total.
    pub total: usize,
}

/// Which quota an allocation would break.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum QuotaError {
    /// The peer holds `--turn-max-allocations-per-peer` already.
    #[error("per-peer allocation quota reached")]
    PerPeer,
    /// The client IP holds `--turn-max-per-ip` already.
    #[error("per-IP allocation quota reached")]
    PerIp,
    /// The server holds `--turn-max-allocations` already.
    #[error("the relay is full")]
    Total,
}

impl QuotaError {
    /// The TURN error code: 486 Allocation Quota Reached, or 508 Insufficient Capacity.
    pub fn code(self) -> u16 {
        match self {
            QuotaError::PerPeer | QuotaError::PerIp => 486,
            QuotaError::Total => 508,
        }
    }
}

/// Counts of live, authenticated allocations.
#[derive(Debug, Default)]
pub struct Ledger {
    per_peer: HashMap<Box<str>, usize>,
    per_ip: HashMap<IpAddr, usize>,
    total: usize,
}

impl Ledger {
    /// Counts one more allocation for `peer` from `ip`, or says which quota it would break (and
    /// counts nothing). Call only for a request whose integrity was verified.
    pub fn admit(&mut self, peer: &str, ip: IpAddr, quotas: Quotas) -> Result<(), QuotaError> {
        // One subscriber usually holds a whole IPv6 /64: count it as one client.
        let ip = crate::accept::client_key(ip);
        let ip = ip.to_canonical();
        if self.per_peer.get(peer).copied().unwrap_or(0) >= quotas.per_peer {
            return Err(QuotaError::PerPeer);
        }
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= quotas.per_ip {
            return Err(QuotaError::PerIp);
        }
        if self.total >= quotas.total {
            return Err(QuotaError::Total);
        }
        *self.per_peer.entry(peer.into()).or_default() += 1;
        *self.per_ip.entry(ip).or_default() += 1;
        self.total += 1;
        Ok(())
    }

    /// Forgets one allocation of `peer` from `ip` (it expired, was deleted or revoked).
    pub fn release(&mut self, peer: &str, ip: IpAddr) {
        let ip = crate::accept::client_key(ip);
        let ip = ip.to_canonical();
        if let Some(n) = self.per_peer.get_mut(peer) {
            *n -= 1;
            if *n == 0 {
                self.per_peer.remove(peer);
            }
        }
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n -= 1;
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
        self.total = self.total.saturating_sub(1);
    }

    /// Live allocations of `peer`.
    pub fn peer_count(&self, peer: &str) -> usize {
        self.per_peer.get(peer).copied().unwrap_or(0)
    }

    /// Live allocations in total.
    pub fn total(&self) -> usize {
        self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn net(s: &str) -> IpNet {
        s.parse().unwrap()
    }

    #[test]
    fn every_non_public_range_is_denied_by_default() {
        let policy = PeerPolicy::default();
        for denied in [
            "0.0.0.0:9",
            "0.1.2.3:9",
            "10.0.0.1:9",
            "10.255.255.255:9",
            "172.16.0.1:9",
            "172.31.255.254:9",
            "192.168.1.1:9",
            "100.64.0.1:9",
            "100.127.255.254:9",
            "127.0.0.1:9",
            "127.9.9.9:9",
            "169.254.169.254:80",
            "224.0.0.251:5353",
            "239.255.255.250:1900",
            "240.0.0.1:9",
            "255.255.255.255:9",
            "[::]:9",
            "[::1]:9",
            "[fc00::1]:9",
            "[fd12:3456::1]:9",
            "[fe80::1]:9",
            "[fec0::1]:9",
            "[ff02::1]:9",
            "[::ffff:10.0.0.1]:9",
            "[::ffff:127.0.0.1]:9",
        ] {
            assert!(
                matches!(
                    policy.judge(addr(denied)),
                    PeerVerdict::Deny(DenyReason::Special(_))
                ),
                "{denied} must be denied"
            );
        }
        for public in [
            "203.0.113.5:40000",
            "198.51.100.1:9",
            "8.8.8.8:53",
            "172.32.0.1:9",
            "172.15.255.255:9",
            "100.128.0.1:9",
            "100.63.255.255:9",
            "192.169.0.1:9",
            "11.0.0.1:9",
            "[2001:db8::1]:9",
            "[2a00:1450::1]:443",
            "[::ffff:8.8.8.8]:53",
        ] {
            assert_eq!(
                policy.judge(addr(public)),
                PeerVerdict::Permit,
                "{public} is public"
            );
        }
    }

    #[test]
    fn an_allowed_range_opens_exactly_that_range() {
        let policy = PeerPolicy {
            allowed: vec![net("10.1.0.0/16")],
            ..Default::default()
        };
        assert_eq!(policy.judge(addr("10.1.2.3:9")), PeerVerdict::Permit);
        assert_eq!(policy.judge(addr("10.1.255.255:9")), PeerVerdict::Permit);
        for still_denied in [
            "10.2.0.1:9",
            "10.0.255.255:9",
            "192.168.1.1:9",
            "127.0.0.1:9",
        ] {
            assert!(
                matches!(policy.judge(addr(still_denied)), PeerVerdict::Deny(_)),
                "{still_denied}"
            );
        }
    }

    #[test]
    fn denied_ranges_add_to_the_defaults_and_allowed_wins() {
        let policy = PeerPolicy {
            denied: vec![net("198.51.100.0/24"), net("203.0.113.0/24")],
            allowed: vec![net("203.0.113.128/25")],
            ..Default::default()
        };
        assert_eq!(
            policy.judge(addr("198.51.100.1:9")),
            PeerVerdict::Deny(DenyReason::Configured)
        );
        assert_eq!(
            policy.judge(addr("203.0.113.1:9")),
            PeerVerdict::Deny(DenyReason::Configured)
        );
        assert_eq!(policy.judge(addr("203.0.113.200:9")), PeerVerdict::Permit);
    }

    #[test]
    fn the_servers_own_addresses_expose_no_service_port() {
        let policy = PeerPolicy {
            own_ips: vec!["203.0.113.10".parse().unwrap()],
            service_ports: vec![8080, 3478, 3479],
            allowed: vec![net("203.0.113.0/24"), net("127.0.0.0/8")],
            own_wildcard: true,
            ..Default::default()
        };
        for port in [8080, 3478, 3479] {
            assert_eq!(
                policy.judge(SocketAddr::new("203.0.113.10".parse().unwrap(), port)),
                PeerVerdict::Deny(DenyReason::ServicePort),
                "even inside an allowed range"
            );
            // Listening on a wildcard: every loopback address is the server's too.
            assert_eq!(
                policy.judge(SocketAddr::new("127.0.0.2".parse().unwrap(), port)),
                PeerVerdict::Deny(DenyReason::ServicePort)
            );
        }
        // Other ports there: allowed here because the range is; otherwise only relay ports.
        assert_eq!(
            policy.judge(addr("203.0.113.10:50000")),
            PeerVerdict::Permit
        );
        let strict = PeerPolicy {
            allowed: vec![],
            ..policy
        };
        assert_eq!(
            strict.judge(addr("203.0.113.10:50000")),
            PeerVerdict::OwnAddress
        );
        assert_eq!(
            strict.judge(addr("127.0.0.1:50000")),
            PeerVerdict::OwnAddress
        );
        assert_eq!(
            strict.judge(addr("203.0.113.11:50000")),
            PeerVerdict::Permit
        );
    }

    #[test]
    fn quotas_count_per_peer_per_ip_and_in_total() {
        let mut ledger = Ledger::default();
        let q = Quotas {
            per_peer: 2,
            per_ip: 3,
            total: 4,
        };
        let ip1: IpAddr = "198.51.100.1".parse().unwrap();
        let ip2: IpAddr = "198.51.100.2".parse().unwrap();
        assert_eq!(ledger.admit("a", ip1, q), Ok(()));
        assert_eq!(ledger.admit("a", ip1, q), Ok(()));
        assert_eq!(ledger.admit("a", ip2, q), Err(QuotaError::PerPeer));
        assert_eq!(ledger.admit("b", ip1, q), Ok(()));
        assert_eq!(ledger.admit("c", ip1, q), Err(QuotaError::PerIp));
        assert_eq!(ledger.admit("c", ip2, q), Ok(()));
        assert_eq!(ledger.admit("d", ip2, q), Err(QuotaError::Total));
        assert_eq!(ledger.total(), 4);
        ledger.release("a", ip1);
        assert_eq!(ledger.admit("d", ip2, q), Ok(()));
        assert_eq!(QuotaError::PerPeer.code(), 486);
        assert_eq!(QuotaError::PerIp.code(), 486);
        assert_eq!(QuotaError::Total.code(), 508);
    }

    #[test]
    fn tunnelled_and_reserved_ranges_are_denied_and_a_64_is_one_client() {
        for ip in [
            "192.0.0.9",
            "198.18.0.1",
            "198.19.255.1",
            "64:ff9b::a00:1",
            "2002:a00:1::1",
            "::a00:1",
        ] {
            assert!(special_range(ip.parse().unwrap()).is_some(), "{ip}");
        }
        // The lab's "internet" (TEST-NET-3) stays reachable.
        assert!(special_range("203.0.113.10".parse().unwrap()).is_none());
        let q = Quotas {
            per_peer: 10,
            per_ip: 1,
            total: 10,
        };
        let mut ledger = Ledger::default();
        assert!(ledger.admit("a", "2001:db8::1".parse().unwrap(), q).is_ok());
        assert!(
            ledger
                .admit("b", "2001:db8::2".parse().unwrap(), q)
                .is_err(),
            "another address of the same /64 is the same client"
        );
    }
}
