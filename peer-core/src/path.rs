//! Naming how a connection goes, from the types of the selected ICE candidate pair.

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

impl PathKind {
    /// Classifies the selected candidate pair.
    pub fn classify(local: CandidateType, remote: CandidateType) -> PathKind {
        use CandidateType::*;
        match (local, remote) {
            (Relay, _) | (_, Relay) => PathKind::Relayed,
            (Host, Host) => PathKind::DirectLan,
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
}
