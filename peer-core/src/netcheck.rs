//! What a NAT does, judged the same way by `burrow netcheck` and by the page's *Your network*
//! panel: the public addresses two STUN servers saw for one local socket.
//!
//! Both the same: the NAT maps a socket to one public port whatever the destination
//! (endpoint-independent mapping), a peer can reach that port, and hole punching works. Different:
//! the mapping depends on the destination (a symmetric NAT), the port a peer learns is not the one
//! it must use, and connections will be relayed.

use serde::Serialize;

/// The verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mapping {
    /// The public address is our own: no NAT.
    NoNat,
    /// Same public `ip:port` for every destination.
    EndpointIndependent,
    /// A different public port (or IP) per destination.
    EndpointDependent,
    /// No STUN answer at all (UDP blocked?).
    Unknown,
}

impl Mapping {
    /// Judges from our local address (when known) and what each STUN server saw (addresses, or
    /// their `ip:port` text: only their equality matters).
    pub fn classify<A: PartialEq>(local: Option<&A>, mapped: &[A]) -> Mapping {
        if mapped.is_empty() {
            Mapping::Unknown
        } else if local.is_some_and(|l| mapped.iter().all(|m| m == l)) {
            Mapping::NoNat
        } else if mapped.windows(2).all(|w| w[0] == w[1]) {
            Mapping::EndpointIndependent
        } else {
            Mapping::EndpointDependent
        }
    }

    /// What it means for a user.
    pub fn advice(self) -> &'static str {
        match self {
            Mapping::NoNat => "no NAT: peers can reach you directly",
            Mapping::EndpointIndependent => {
                "endpoint-independent mapping: direct connections likely"
            }
            Mapping::EndpointDependent => "symmetric NAT: relayed connections likely",
            Mapping::Unknown => "no answer from STUN (UDP blocked?): relayed connections likely",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::SocketAddr;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn verdicts() {
        let local = Some(&a("10.0.1.2:5000"));
        assert_eq!(Mapping::classify(local, &[]), Mapping::Unknown);
        assert_eq!(
            Mapping::classify(Some(&a("203.0.113.20:5000")), &[a("203.0.113.20:5000"); 2]),
            Mapping::NoNat
        );
        assert_eq!(
            Mapping::classify(local, &[a("203.0.113.1:40000"); 2]),
            Mapping::EndpointIndependent
        );
        assert_eq!(
            Mapping::classify(None::<&String>, &["203.0.113.1:40000".to_string()]),
            Mapping::EndpointIndependent
        );
        assert_eq!(
            Mapping::classify(local, &[a("203.0.113.1:40000"), a("203.0.113.1:40001")]),
            Mapping::EndpointDependent
        );
    }
}
