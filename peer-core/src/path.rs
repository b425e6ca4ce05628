//! Naming how a connection goes, from the selected ICE candidate pair: its candidate types and,
//! where known, its addresses.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// An ICE candidate type (RFC 8445 §5.1.1), as reported by stats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CandidateType {
    /// An address on a local interface.
    Host,
    /// The address a NAT mapped us to, learnt from STUN.
    Srflx,
    /// An address learnt from the peer's connectivity checks.
    Prflx,
    /// An address on a TURN relay.
    Relay,
}

impl CandidateType {
    /// Parses the stats / SDP spelling (`host`, `srflx`, `prflx`, `relay`, any case).
    pub fn parse(s: &str) -> Option<CandidateType> {
        match s.to_ascii_lowercase().as_str() {
            "host" => Some(CandidateType::Host),
            "srflx" | "serverreflexive" | "server-reflexive" => Some(CandidateType::Srflx),
            "prflx" | "peerreflexive" | "peer-reflexive" => Some(CandidateType::Prflx),
            "relay" | "relayed" => Some(CandidateType::Relay),
            _ => None,
        }
    }
}

/// How the bytes between two peers travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// Both ends used local addresses: same network, no NAT in between.
    DirectLan,
    /// Direct, through a NAT mapping opened by ICE (a reflexive address on either side).
    HolePunched,
    /// Through the TURN relay.
    Relayed,
}

/// How our side reaches its TURN relay, when our candidate is relayed: over UDP, or, on a
/// network that drops UDP, over TCP or TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayOver {
    /// TURN over UDP.
    Udp,
    /// TURN over TCP.
    Tcp,
    /// TURN over TLS (`turns:`).
    Tls,
}

impl RelayOver {
    /// Parses the stats spelling (`relayProtocol`: `udp`, `tcp`, `tls`).
    pub fn parse(s: &str) -> Option<RelayOver> {
        match s.to_ascii_lowercase().as_str() {
            "udp" => Some(RelayOver::Udp),
            "tcp" => Some(RelayOver::Tcp),
            "tls" => Some(RelayOver::Tls),
            _ => None,
        }
    }
}

/// The selected candidate pair, as read from a connection's stats.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SelectedPath {
    /// Direct (LAN), hole punched, or relayed.
    pub kind: PathKind,
    /// Our side's candidate type.
    pub local: CandidateType,
    /// The peer's candidate type.
    pub remote: CandidateType,
    /// Round-trip time of the last ICE check, in milliseconds, if measured.
    pub rtt_ms: Option<f64>,
    /// How our side reaches the relay, when our candidate is relayed and that is known.
    pub relay_over: Option<RelayOver>,
    /// How the peer reaches its relay, as it told us, when its candidate is relayed.
    pub peer_relay_over: Option<RelayOver>,
}

impl SelectedPath {
    /// The path between two endpoints of the selected pair (classified here, the same way on
    /// both peers), with its round-trip time when measured.
    pub fn between(local: Endpoint, remote: Endpoint, rtt_ms: Option<f64>) -> SelectedPath {
        SelectedPath {
            kind: PathKind::classify_pair(local, remote),
            local: local.kind,
            remote: remote.kind,
            rtt_ms,
            relay_over: None,
            peer_relay_over: None,
        }
    }

    /// The same path, the peer reaching its relay over `over`, as it told us (kept only when
    /// its candidate is relayed).
    pub fn peer_relayed_over(self, over: Option<RelayOver>) -> SelectedPath {
        SelectedPath {
            peer_relay_over: over.filter(|_| self.remote == CandidateType::Relay),
            ..self
        }
    }

    /// The same path, our side reaching its relay over `over` (kept only when our candidate is
    /// relayed).
    pub fn relayed_over(self, over: Option<RelayOver>) -> SelectedPath {
        SelectedPath {
            relay_over: over.filter(|_| self.local == CandidateType::Relay),
            ..self
        }
    }

    /// What a user reads: `relayed (TCP)` when a side (ours first, else the peer's) reaches
    /// the relay over TCP, the same on both peers.
    pub fn label(&self) -> String {
        let over = match self.relay_over {
            Some(RelayOver::Udp) | None => self.peer_relay_over,
            ours => ours,
        };
        match (self.kind, over) {
            (PathKind::Relayed, Some(RelayOver::Tcp)) => "relayed (TCP)".into(),
            (PathKind::Relayed, Some(RelayOver::Tls)) => "relayed (TLS)".into(),
            (kind, _) => kind.label().into(),
        }
    }
}

/// Follows a connection's path as its stats are read again and again, and says what is worth
/// telling: `connected` the first time, `path_changed` when the pair's kind or candidate types
/// change (the controlling side may move from a relay to a hole punched, or ICE was restarted),
/// nothing otherwise (a new RTT alone is not news).
#[derive(Debug, Default)]
pub struct PathWatch {
    last: Option<Option<Shape>>,
    /// What we last told the peer of how we reach the relay.
    told: Option<Option<RelayOver>>,
}

/// What tells one path from another: its kind, both candidate types, the relay's transport.
type Shape = (
    PathKind,
    CandidateType,
    CandidateType,
    Option<RelayOver>,
    Option<RelayOver>,
);

/// What one reading of the path means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathNews {
    /// The first report: the link is up.
    Connected,
    /// Another pair than before.
    Changed,
    /// The same pair.
    Same,
}

impl PathWatch {
    /// What to tell the peer of how our side reaches the relay (over TCP or TLS, or no longer),
    /// when that changed with this reading: so its label says `relayed (TCP)` too.
    pub fn to_tell(&mut self, path: Option<&SelectedPath>) -> Option<Option<RelayOver>> {
        let now = path?.relay_over.filter(|o| *o != RelayOver::Udp);
        let before = self.told.replace(now);
        (before != Some(now) && (now.is_some() || before.is_some())).then_some(now)
    }

    /// Takes one reading (`None`: the stats named no pair).
    pub fn observe(&mut self, path: Option<&SelectedPath>) -> PathNews {
        let now = path.map(|p| (p.kind, p.local, p.remote, p.relay_over, p.peer_relay_over));
        let Some(before) = self.last else {
            self.last = Some(now);
            return PathNews::Connected;
        };
        if now.is_some() && before != now {
            self.last = Some(now);
            PathNews::Changed
        } else {
            PathNews::Same
        }
    }
}

/// How a connection goes, as both peers report it to their users (`connected` events).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PathReport {
    /// `direct_lan`, `hole_punched` or `relayed` (absent when the stats named no pair).
    pub path: Option<PathKind>,
    /// "direct (LAN)", "direct (hole punched)", "relayed" (or "connected").
    pub label: String,
    /// Our candidate type.
    pub local: Option<CandidateType>,
    /// The peer's candidate type.
    pub remote: Option<CandidateType>,
    /// Round-trip time in ms.
    pub rtt_ms: Option<f64>,
    /// How our side reaches the relay (`udp`, `tcp`, `tls`) when our candidate is relayed;
    /// `null` otherwise (always present: both peers' events have the same fields).
    pub relay_over: Option<RelayOver>,
    /// How the peer reaches its relay, as it told us (`tcp`, `tls`), when its candidate is
    /// relayed; `null` otherwise.
    pub peer_relay_over: Option<RelayOver>,
}

impl From<Option<SelectedPath>> for PathReport {
    fn from(p: Option<SelectedPath>) -> PathReport {
        PathReport {
            path: p.map(|p| p.kind),
            label: p.map(|p| p.label()).unwrap_or_else(|| "connected".into()),
            local: p.map(|p| p.local),
            remote: p.map(|p| p.remote),
            rtt_ms: p.and_then(|p| p.rtt_ms),
            relay_over: p.and_then(|p| p.relay_over),
            peer_relay_over: p.and_then(|p| p.peer_relay_over),
        }
    }
}

/// One end of the selected candidate pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Endpoint {
    /// The candidate type.
    pub kind: CandidateType,
    /// Its address, when stats tell it (browsers hide some behind mDNS names).
    pub ip: Option<IpAddr>,
}

/// Addresses that only mean something inside one site: RFC 1918, CGNAT, link-local, loopback,
/// unique-local IPv6.
pub fn is_private(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || (o[0] == 100 && (o[1] & 0xc0) == 64)
        }
        IpAddr::V6(v6) => {
            let first = v6.segments()[0];
            v6.is_loopback() || (first & 0xfe00) == 0xfc00 || (first & 0xffc0) == 0xfe80
        }
    }
}

/// Whether two addresses share a network: the same IPv4 /24, or the same IPv6 /64.
fn same_network(a: IpAddr, b: IpAddr) -> bool {
    match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => a.octets()[..3] == b.octets()[..3],
        (IpAddr::V6(a), IpAddr::V6(b)) => a.segments()[..4] == b.segments()[..4],
        _ => false,
    }
}

impl PathKind {
    /// Classifies the selected candidate pair by type alone.
    pub fn classify(local: CandidateType, remote: CandidateType) -> PathKind {
        Self::classify_pair(
            Endpoint {
                kind: local,
                ip: None,
            },
            Endpoint {
                kind: remote,
                ip: None,
            },
        )
    }

    /// Classifies the selected candidate pair:
    /// * a relay candidate on either end: **relayed**;
    /// * both addresses private (same site): **direct (LAN)**, whatever the types (a browser's
    ///   mDNS-hidden host shows up as peer-reflexive on the other side);
    /// * the peer's private host address answered (whatever ours shows as, e.g. a browser's
    ///   local peer-reflexive candidate without an address): **direct (LAN)**;
    /// * host to host, both public: **direct (LAN)** (no NAT in between);
    /// * otherwise the path crosses a NAT mapping that ICE opened: **direct (hole punched)**.
    pub fn classify_pair(local: Endpoint, remote: Endpoint) -> PathKind {
        use CandidateType::*;
        if local.kind == Relay || remote.kind == Relay {
            return PathKind::Relayed;
        }
        // The peer answered on its private host address: only its own network reaches that.
        let remote_private_host = remote.kind == Host && remote.ip.is_some_and(is_private);
        match (local.ip, remote.ip) {
            (Some(l), Some(r)) if is_private(l) && is_private(r) => PathKind::DirectLan,
            _ if remote_private_host => PathKind::DirectLan,
            (Some(l), Some(r)) if local.kind == Host && remote.kind == Host => {
                // Two global addresses on different networks (IPv6 homes: no NAT, a stateful
                // firewall each side, opened by the checks going out): through the internet.
                if is_private(l) != is_private(r) || !same_network(l, r) {
                    PathKind::HolePunched
                } else {
                    PathKind::DirectLan
                }
            }
            (Some(_), Some(_)) => PathKind::HolePunched,
            _ if local.kind == Host && remote.kind == Host => PathKind::DirectLan,
            _ => PathKind::HolePunched,
        }
    }

    /// The words shown to people: "direct (LAN)", "direct (hole punched)", "relayed".
    pub fn label(self) -> &'static str {
        match self {
            PathKind::DirectLan => "direct (LAN)",
            PathKind::HolePunched => "direct (hole punched)",
            PathKind::Relayed => "relayed",
        }
    }
}

/// How long the selected pair may go without one answer to our consent checks before the link
/// is taken as down (the checks go out every second).
pub const CONSENT_LOST_AFTER: u64 = 5_000;

/// Consent freshness (RFC 7675) judged from the selected pair's answers, for an ICE agent that
/// judges it from anything the peer's address sends: the `webrtc` crate keeps a pair "alive"
/// when the peer's packets reach us another way (through our relay) while everything we send on
/// the pair is lost, and the link then only works one way. Feed it the selected pair's count of
/// answers to our checks, about every second or two.
#[derive(Debug, Default)]
pub struct Consent {
    /// The pair (any name that changes with it, and with an ICE restart) and its answers.
    last: Option<(String, u64)>,
    since: u64,
    lost: bool,
}

/// What one reading of the answers means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsentNews {
    /// Nothing to tell.
    Same,
    /// No answer for [`CONSENT_LOST_AFTER`]: the link is down, whatever the agent says.
    Lost,
    /// A pair answers again after [`ConsentNews::Lost`].
    Back,
}

impl Consent {
    /// One reading at `now` (ms): the selected pair and its answers so far, or `None` while the
    /// agent is not connected (checking, restarting): nothing is judged then, and the wait
    /// starts over when it is connected again.
    pub fn observe(&mut self, reading: Option<(&str, u64)>, now: u64) -> ConsentNews {
        let Some((pair, answers)) = reading else {
            self.last = None;
            return ConsentNews::Same;
        };
        match &mut self.last {
            Some((p, a)) if p == pair => {
                if *a == answers {
                    if !self.lost && now.saturating_sub(self.since) >= CONSENT_LOST_AFTER {
                        self.lost = true;
                        return ConsentNews::Lost;
                    }
                    return ConsentNews::Same;
                }
                // A new answer on the same pair: consent is fresh.
                *a = answers;
                self.since = now;
                if std::mem::take(&mut self.lost) {
                    ConsentNews::Back
                } else {
                    ConsentNews::Same
                }
            }
            _ => {
                // The first reading, or another pair: wait for its answers.
                self.last = Some((pair.to_string(), answers));
                self.since = now;
                ConsentNews::Same
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CandidateType::*;

    #[test]
    fn classification() {
        assert_eq!(PathKind::classify(Host, Host), PathKind::DirectLan);
        assert_eq!(PathKind::classify(Srflx, Prflx), PathKind::HolePunched);
        assert_eq!(PathKind::classify(Host, Srflx), PathKind::HolePunched);
        assert_eq!(PathKind::classify(Relay, Host), PathKind::Relayed);
        assert_eq!(PathKind::classify(Srflx, Relay), PathKind::Relayed);
        assert_eq!(CandidateType::parse("PRFLX"), Some(Prflx));
        assert_eq!(CandidateType::parse("bogus"), None);
        assert_eq!(PathKind::Relayed.label(), "relayed");
    }

    fn ep(kind: CandidateType, ip: &str) -> Endpoint {
        Endpoint {
            kind,
            ip: ip.parse().ok(),
        }
    }

    #[test]
    fn classification_with_addresses() {
        // Two IPv6 homes (global addresses, stateful firewalls): through the internet; one
        // IPv6 network: a LAN.
        assert_eq!(
            PathKind::classify_pair(ep(Host, "2001:db8:1::2"), ep(Host, "2001:db8:2::2")),
            PathKind::HolePunched
        );
        assert_eq!(
            PathKind::classify_pair(ep(Host, "2001:db8:1::2"), ep(Host, "2001:db8:1::3")),
            PathKind::DirectLan
        );
        // Same LAN, browser's mDNS host learnt as prflx: still LAN.
        assert_eq!(
            PathKind::classify_pair(ep(Host, "192.168.1.2"), ep(Prflx, "192.168.1.3")),
            PathKind::DirectLan
        );
        // Behind NAT, talking to a public host (seed case 1, NAT'd side).
        assert_eq!(
            PathKind::classify_pair(ep(Host, "10.0.1.2"), ep(Host, "203.0.113.10")),
            PathKind::HolePunched
        );
        // The public side of case 1 sees the NAT's mapping as prflx.
        assert_eq!(
            PathKind::classify_pair(ep(Host, "203.0.113.10"), ep(Prflx, "203.0.113.1")),
            PathKind::HolePunched
        );
        // Both behind NATs (case 2).
        assert_eq!(
            PathKind::classify_pair(ep(Host, "10.0.1.2"), ep(Srflx, "203.0.113.2")),
            PathKind::HolePunched
        );
        assert_eq!(
            PathKind::classify_pair(ep(Relay, "203.0.113.10"), ep(Prflx, "203.0.113.2")),
            PathKind::Relayed
        );
        // A browser's local candidate as prflx without an address, to the peer's private host:
        // both on one LAN (seen by a Chromium test where burrow said LAN and the page did not).
        let unknown = Endpoint {
            kind: Prflx,
            ip: None,
        };
        assert_eq!(
            PathKind::classify_pair(unknown, ep(Host, "10.200.0.1")),
            PathKind::DirectLan
        );
        // Our private host to the peer's public mapping is still through a NAT.
        assert_eq!(
            PathKind::classify_pair(ep(Host, "10.0.1.2"), ep(Prflx, "203.0.113.2")),
            PathKind::HolePunched
        );
        assert!(is_private("100.64.0.1".parse().unwrap()));
        assert!(!is_private("203.0.113.1".parse().unwrap()));
        assert!(is_private("fd00::1".parse().unwrap()));
    }

    #[test]
    fn a_path_is_news_once_then_on_change() {
        let relayed = SelectedPath {
            kind: PathKind::Relayed,
            local: CandidateType::Relay,
            remote: CandidateType::Srflx,
            rtt_ms: Some(1.0),
            relay_over: None,
            peer_relay_over: None,
        };
        let punched = SelectedPath {
            kind: PathKind::HolePunched,
            local: CandidateType::Host,
            remote: CandidateType::Srflx,
            rtt_ms: Some(0.5),
            relay_over: None,
            peer_relay_over: None,
        };
        let mut w = PathWatch::default();
        assert_eq!(w.observe(Some(&relayed)), PathNews::Connected);
        let slower = SelectedPath {
            rtt_ms: Some(9.0),
            ..relayed
        };
        assert_eq!(w.observe(Some(&slower)), PathNews::Same);
        assert_eq!(w.observe(None), PathNews::Same);
        assert_eq!(w.observe(Some(&punched)), PathNews::Changed);
        assert_eq!(w.observe(Some(&punched)), PathNews::Same);
        // The relay reached over TCP instead: another path, labelled so.
        let over_tcp = relayed.relayed_over(Some(RelayOver::Tcp));
        assert_eq!(over_tcp.label(), "relayed (TCP)");
        assert_eq!(w.observe(Some(&over_tcp)), PathNews::Changed);
        assert_eq!(punched.relayed_over(Some(RelayOver::Tcp)).relay_over, None);
        // What the peer is told: once when it starts, once when it ends.
        let mut w = PathWatch::default();
        assert_eq!(w.to_tell(Some(&relayed)), None);
        assert_eq!(w.to_tell(Some(&over_tcp)), Some(Some(RelayOver::Tcp)));
        assert_eq!(w.to_tell(Some(&over_tcp)), None);
        assert_eq!(w.to_tell(None), None);
        assert_eq!(w.to_tell(Some(&punched)), Some(None));
        // The peer's side (its candidate relayed, ours not): the same label.
        let theirs = SelectedPath {
            local: CandidateType::Srflx,
            remote: CandidateType::Relay,
            ..relayed
        }
        .peer_relayed_over(Some(RelayOver::Tcp));
        assert_eq!(theirs.label(), "relayed (TCP)");
        assert_eq!(
            relayed
                .peer_relayed_over(Some(RelayOver::Tcp))
                .peer_relay_over,
            None
        );
    }

    #[test]
    fn a_pair_that_stops_answering_is_lost_then_back() {
        let mut c = Consent::default();
        assert_eq!(c.observe(Some(("p", 3)), 0), ConsentNews::Same);
        assert_eq!(c.observe(Some(("p", 5)), 2_000), ConsentNews::Same);
        // Our checks go unanswered (the peer's packets may still reach us another way).
        assert_eq!(c.observe(Some(("p", 5)), 4_000), ConsentNews::Same);
        assert_eq!(c.observe(Some(("p", 5)), 7_000), ConsentNews::Lost);
        assert_eq!(
            c.observe(Some(("p", 5)), 9_000),
            ConsentNews::Same,
            "told once"
        );
        // While the agent checks (a restart), nothing is judged, however long it takes…
        assert_eq!(c.observe(None, 10_000), ConsentNews::Same);
        assert_eq!(c.observe(None, 30_000), ConsentNews::Same);
        // …and a new pair is back once it answers.
        assert_eq!(c.observe(Some(("q", 1)), 31_000), ConsentNews::Same);
        assert_eq!(c.observe(Some(("q", 2)), 33_000), ConsentNews::Back);
        assert_eq!(c.observe(Some(("q", 3)), 35_000), ConsentNews::Same);
    }

    #[test]
    fn a_restart_the_peer_makes_is_not_a_lost_link() {
        let mut c = Consent::default();
        assert_eq!(c.observe(Some(("p", 1)), 0), ConsentNews::Same);
        // The peer restarts ICE: the agent checks for 8 s, then a pair is connected again.
        assert_eq!(c.observe(None, 2_000), ConsentNews::Same);
        assert_eq!(c.observe(None, 8_000), ConsentNews::Same);
        assert_eq!(c.observe(Some(("p", 1)), 10_000), ConsentNews::Same);
        assert_eq!(c.observe(Some(("p", 2)), 12_000), ConsentNews::Same);
    }
}
