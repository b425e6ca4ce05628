//! What every connection shares: the configuration, the rooms, the relay's access list and
//! credentials, the limits and the metrics ([`AppState`]).

use std::net::SocketAddr;
use std::sync::Arc;

use signal_protocol::IceServer;

use crate::{accept, cluster, credentials, metrics, relay, resume, room, Config};

/// State shared by every connection.
pub struct AppState {
    /// The server's configuration.
    pub config: Config,
    /// All rooms.
    pub rooms: room::Rooms,
    /// Where the STUN/TURN server actually listens (its port is advertised to clients).
    pub stun_addr: SocketAddr,
    /// The second STUN port (for netcheck).
    pub stun_alt_addr: SocketAddr,
    /// Mints credentials for the embedded TURN relay, when it is on.
    pub turn: Option<credentials::Minter>,
    /// The relay is also reached over TCP on the STUN port.
    pub turn_tcp: bool,
    /// The relay is also reached over TLS on the HTTPS port (`turns:`).
    pub turn_tls: bool,
    /// External TURN servers (`--external-turn`: each box's URLs) and the minters of their
    /// credentials.
    pub external_turn: Vec<(Vec<String>, credentials::Minter)>,
    /// What the server counts, for `/metrics`.
    pub metrics: Arc<metrics::Metrics>,
    /// Open TCP connections, within their limits.
    pub limits: Arc<accept::ConnectionLimits>,
    /// The other instances, with `--redis`.
    pub cluster: Option<Arc<cluster::Cluster>>,
    /// Turns `true` when the server is shutting down: every WebSocket then closes with
    /// [`connection::GOING_AWAY`], telling its client to come back (a deploy is a non-event).
    pub stopping: tokio::sync::watch::Receiver<bool>,
    /// Which peers may use the embedded relay: granted at welcome, revoked at leave.
    pub turn_access: relay::TurnAccess,
    /// Mints and checks the tokens that let a client take back its id.
    pub resume: resume::ResumeTokens,
    /// The last connection serial handed out.
    pub(crate) connections: std::sync::atomic::AtomicU64,
}

/// The cluster reaches this instance's peers through its rooms.
impl cluster::Local for AppState {
    fn deliver(&self, room: &str, to: &[String], text: String) -> Vec<String> {
        self.rooms.deliver(room, to, text.into())
    }

    async fn departed(&self, room: &str, ids: Vec<String>) {
        self.rooms.departed(room, ids).await
    }

    fn rooms(&self) -> Vec<String> {
        self.rooms.local_rooms()
    }

    fn announce_left(&self, room: &str, ids: &[String]) {
        self.rooms.announce_left_locally(room, ids)
    }
}

/// `HOST:PORT` for a `turns:` URL from a request's `Host` (a DNS name, an IPv4 address or a
/// bracketed IPv6 one, and an optional port; 443 when none): `None` for anything else, which
/// then gets no `turns:` entry.
fn tls_authority(host: &str) -> Option<String> {
    let (name, port) = match host.rsplit_once(':') {
        Some((name, port)) if !host.ends_with(']') => (name, Some(port)),
        _ => (host, None),
    };
    let port = match port {
        Some(p) => p.parse::<u16>().ok().filter(|p| *p > 0)?,
        None => 443,
    };
    let ok = match name.strip_prefix('[').and_then(|n| n.strip_suffix(']')) {
        Some(v6) => v6.parse::<std::net::Ipv6Addr>().is_ok(),
        None => {
            !name.is_empty()
                && name.len() <= 253
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        }
    };
    ok.then(|| format!("{name}:{port}"))
}

impl AppState {
    /// A serial number for a new WebSocket connection.
    pub fn next_connection(&self) -> u64 {
        self.connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1
    }

    /// The ICE servers handed to a peer in its welcome: STUN, and TURN with fresh credentials.
    pub fn ice_servers(&self, request_host: Option<&str>, peer_id: &str) -> Vec<IceServer> {
        let host = self.config.ice_host(request_host);
        let port = self.stun_addr.port();
        let mut servers = vec![IceServer {
            urls: vec![format!("stun:{host}:{port}")],
            username: None,
            credential: None,
        }];
        if let Some(minter) = &self.turn {
            let (username, credential) = minter.mint(peer_id);
            // UDP first; TCP for networks that drop UDP (tried in parallel, preferred last).
            let mut urls = vec![format!("turn:{host}:{port}?transport=udp")];
            if self.turn_tcp {
                urls.push(format!("turn:{host}:{port}?transport=tcp"));
            }
            // On the page's own name and port: what its certificate is for, and what a network
            // that lets only HTTPS out still lets out.
            if let (true, Some(page)) = (self.turn_tls, request_host.and_then(tls_authority)) {
                urls.push(format!("turns:{page}?transport=tcp"));
            }
            servers.push(IceServer {
                urls,
                username: Some(username),
                credential: Some(credential),
            });
        }
        for (urls, minter) in &self.external_turn {
            let (username, credential) = minter.mint(peer_id);
            servers.push(IceServer {
                urls: urls.clone(),
                username: Some(username),
                credential: Some(credential),
            });
        }
        servers
    }

    /// The two STUN URLs netcheck compares.
    pub fn netcheck_urls(&self, request_host: Option<&str>) -> [String; 2] {
        let host = self.config.ice_host(request_host);
        [
            format!("stun:{host}:{}", self.stun_addr.port()),
            format!("stun:{host}:{}", self.stun_alt_addr.port()),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::tls_authority;

    #[test]
    fn a_turns_url_takes_only_a_plain_host_and_port() {
        assert_eq!(
            tls_authority("burrow.example").as_deref(),
            Some("burrow.example:443")
        );
        assert_eq!(
            tls_authority("203.0.113.10:8443").as_deref(),
            Some("203.0.113.10:8443")
        );
        assert_eq!(tls_authority("[::1]").as_deref(), Some("[::1]:443"));
        assert_eq!(tls_authority("[::1]:8443").as_deref(), Some("[::1]:8443"));
        for bad in [
            "x?transport=udp",
            "a b",
            "example.com:",
            "::1",
            "[zz]",
            "h:0",
            "",
        ] {
            assert_eq!(tls_authority(bad), None, "{bad}");
        }
    }
}
