//! The embedded STUN and TURN server, on UDP.
//!
//! STUN answers Binding requests with the sender's post-NAT address (XOR-MAPPED-ADDRESS,
//! FINGERPRINT): the seed's "server records each client's ip:port". It answers on two ports, so
//! `burrow netcheck` can see whether a NAT maps one socket to the same public port for both
//! (endpoint-independent mapping: hole punching works) or not (symmetric NAT: relay needed).
//!
//! TURN (RFC 5766/8656) relays for peers whose NATs cannot be punched. Credentials are minted per
//! peer (`credentials`), and `turn_guard` decides which peer addresses may be relayed to and how
//! many allocations a peer may hold. Both are built on the `turn` crate's server, which serves
//! STUN Binding and TURN on the same sockets.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use turn::auth::AuthHandler;
use turn::relay::relay_static::RelayAddressGeneratorStatic;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;
use webrtc_util::vnet::net::Net;

use crate::config::Config;
use crate::credentials::{self, Minter};
use crate::turn_guard::{GuardedConn, Ledger, PeerPolicy, Quotas};

/// The realm TURN credentials are bound to.
pub const REALM: &str = "burrow";

/// A running STUN/TURN server.
pub struct StunServer {
    /// The main UDP address (STUN and TURN).
    pub local_addr: SocketAddr,
    /// The second STUN address (for netcheck).
    pub alt_addr: SocketAddr,
    /// Mints TURN credentials, when TURN is on.
    pub minter: Option<Minter>,
    server: Server,
}

/// Refuses every TURN allocation: only Binding requests are served (`--no-turn`).
struct NoTurn;

impl AuthHandler for NoTurn {
    fn auth_handle(
        &self,
        _username: &str,
        _realm: &str,
        _src_addr: SocketAddr,
    ) -> Result<Vec<u8>, turn::Error> {
        Err(turn::Error::ErrNoSuchUser)
    }
}

async fn bind(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    UdpSocket::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind STUN/TURN on udp {addr}: {e}"))
}

/// The IP relayed candidates advertise.
fn relay_ip(cfg: &Config, listen: SocketAddr) -> IpAddr {
    if let Some(ip) = cfg.turn_relay_ip {
        return ip;
    }
    if !listen.ip().is_unspecified() {
        return listen.ip();
    }
    cfg.public_host
        .as_deref()
        .and_then(|h| h.trim_matches(['[', ']']).parse().ok())
        .unwrap_or(IpAddr::from([127, 0, 0, 1]))
}

impl StunServer {
    /// Binds the STUN/TURN sockets and starts answering; `http_addr` is kept off the relay.
    pub async fn start(cfg: &Config, http_addr: SocketAddr) -> anyhow::Result<StunServer> {
        let main = bind(cfg.stun_listen).await?;
        let local_addr = main.local_addr()?;
        let alt_port =
            cfg.stun_alt_port
                .unwrap_or(if local_addr.port() == 0 || cfg.stun_listen.port() == 0 {
                    0
                } else {
                    local_addr.port().wrapping_add(1)
                });
        let alt = bind(SocketAddr::new(cfg.stun_listen.ip(), alt_port)).await?;
        let alt_addr = alt.local_addr()?;

        let relay_ip = relay_ip(cfg, local_addr);
        let policy = PeerPolicy {
            denied: cfg.turn_denied_peer.clone(),
            allowed: cfg.turn_allowed_peer.clone(),
            own: vec![http_addr, local_addr, alt_addr]
                .into_iter()
                .flat_map(|a| [a, SocketAddr::new(relay_ip, a.port())])
                .collect(),
        };
        let quotas = Quotas {
            per_peer: cfg.turn_max_allocations_per_peer,
            total: cfg.turn_max_allocations,
        };
        let minter = (!cfg.no_turn).then(|| {
            let secret = cfg.turn_secret.clone().unwrap_or_else(random_secret);
            Minter::new(&secret, cfg.turn_ttl)
        });
        let ledger = Arc::new(Ledger::default());
        let net = Arc::new(Net::new(None));
        let conn = |socket: UdpSocket| ConnConfig {
            conn: Arc::new(GuardedConn::new(
                Arc::new(socket),
                policy.clone(),
                quotas,
                ledger.clone(),
                minter.clone(),
            )),
            relay_addr_generator: Box::new(RelayAddressGeneratorStatic {
                relay_address: relay_ip,
                address: cfg.stun_listen.ip().to_string(),
                net: net.clone(),
            }),
        };

        let auth: Arc<dyn AuthHandler + Send + Sync> = match &minter {
            Some(m) => Arc::new(credentials::AuthHandler { minter: m.clone() }),
            None => Arc::new(NoTurn),
        };
        let (closed_tx, mut closed_rx) = tokio::sync::mpsc::channel(64);
        let server = Server::new(ServerConfig {
            conn_configs: vec![conn(main), conn(alt)],
            realm: REALM.into(),
            auth_handler: auth,
            channel_bind_timeout: Duration::from_secs(0),
            alloc_close_notify: Some(closed_tx),
        })
        .await?;
        tokio::spawn(async move {
            while let Some(info) = closed_rx.recv().await {
                ledger.closed(&info.username, info.five_tuple.src_addr);
            }
        });
        if minter.is_some() {
            tracing::info!(%local_addr, %relay_ip, "TURN relay on");
        }
        Ok(StunServer {
            local_addr,
            alt_addr,
            minter,
            server,
        })
    }

    /// Stops answering.
    pub async fn close(self) {
        let _ = self.server.close().await;
    }
}

/// 32 random bytes, base64: a per-start TURN secret when none is configured.
fn random_secret() -> String {
    use base64::Engine;
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
