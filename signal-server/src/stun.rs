//! The embedded STUN and TURN server, on UDP: binds the sockets and starts the tasks.
//!
//! STUN answers Binding requests with the sender's post-NAT address (XOR-MAPPED-ADDRESS,
//! FINGERPRINT): the seed's "server records each client's ip:port". It answers on two ports, so
//! `burrow netcheck` can see whether a NAT maps one socket to the same public port for both
//! (endpoint-independent mapping: hole punching works) or not (symmetric NAT: relay needed).
//!
//! TURN (RFC 8656) relays for peers whose NATs cannot be punched, on the same two sockets:
//! [`crate::relay`] holds the allocations and forwards data, [`crate::credentials`] mints and
//! checks the per-peer credentials, [`crate::nonce`] makes the stateless nonces, and
//! [`crate::turn_guard`] decides which peer addresses may be reached and how many allocations
//! anyone may hold. With `--no-turn` only Binding is answered; TURN requests get 403.
//!
//! Each listening socket has one task ([`serve`]): it reads a datagram, tells ChannelData
//! (first two bits `01`) from STUN (first two bits `00`, magic cookie), and answers or relays
//! it without awaiting anything but the next datagram. A second task expires allocations,
//! permissions and channels once a second. [`StunServer::close`] (or dropping the server)
//! stops them all.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::credentials::Minter;
use crate::relay::{send_now, Relay, RelayConfig, TurnAccess};
use crate::turn_guard::{PeerPolicy, Quotas};
use crate::wire::{attr, method, Builder, Class, Message};

/// The realm TURN credentials are bound to.
pub const REALM: &str = "burrow";

/// Socket buffer size asked for on the listening sockets (the kernel may grant less).
const LISTEN_BUFFER_BYTES: usize = 4 << 20;

/// A running STUN/TURN server.
pub struct StunServer {
    /// The main UDP address (STUN and TURN).
    pub local_addr: SocketAddr,
    /// The second STUN address (for netcheck; TURN is served there too).
    pub alt_addr: SocketAddr,
    /// TURN (and STUN) over TCP, on the main port, when TURN is on and the port was free.
    pub tcp_addr: Option<SocketAddr>,
    /// Mints TURN credentials, when TURN is on.
    pub minter: Option<Minter>,
    /// Who may use the relay: call [`TurnAccess::grant`] with a peer id at welcome and
    /// [`TurnAccess::revoke`] when the peer leaves (its allocations close at once). Does
    /// nothing when TURN is off.
    pub access: TurnAccess,
    relay: Option<Arc<Relay>>,
    tasks: Vec<JoinHandle<()>>,
}

async fn bind(addr: SocketAddr) -> anyhow::Result<UdpSocket> {
    let socket = UdpSocket::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot bind STUN/TURN on udp {addr}: {e}"))?;
    enlarge_buffers(&socket);
    Ok(socket)
}

/// Asks for big socket buffers (bursts of relayed data); beyond `rmem_max` only root may.
fn enlarge_buffers(socket: &UdpSocket) {
    crate::socket::enlarge_buffers_to(socket, LISTEN_BUFFER_BYTES);
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

/// The server's own addresses, and whether it listens on a wildcard (then every interface
/// address is its own).
fn own_ips(listening: &[IpAddr]) -> (Vec<IpAddr>, bool) {
    let wildcard = listening.iter().any(IpAddr::is_unspecified);
    let mut ips: Vec<IpAddr> = listening
        .iter()
        .filter(|ip| !ip.is_unspecified())
        .map(|ip| ip.to_canonical())
        .collect();
    if wildcard {
        ips.extend(interface_addresses());
    }
    ips.sort();
    ips.dedup();
    (ips, wildcard)
}

/// Every address on this host's interfaces (a snapshot at start).
fn interface_addresses() -> Vec<IpAddr> {
    match nix::ifaddrs::getifaddrs() {
        Ok(list) => list
            .filter_map(|i| i.address)
            .filter_map(|a| {
                if let Some(v4) = a.as_sockaddr_in() {
                    Some(IpAddr::V4(v4.ip()))
                } else {
                    a.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
                }
            })
            .map(|ip| ip.to_canonical())
            .collect(),
        Err(e) => {
            tracing::warn!("cannot list interface addresses ({e}): the relay only knows the listen and relay IPs as its own");
            Vec::new()
        }
    }
}

impl StunServer {
    /// Binds the STUN/TURN sockets and starts answering; `http_addr` is kept off the relay.
    pub async fn start(
        cfg: &Config,
        http_addr: SocketAddr,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<StunServer> {
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
        let listeners = vec![Arc::new(main), Arc::new(alt)];

        let minter = (!cfg.no_turn).then(|| {
            let secret = cfg
                .turn_secret
                .clone()
                .unwrap_or_else(crate::secrets::turn_secret);
            Minter::new(&secret, cfg.turn_ttl)
        });
        let relay = minter.as_ref().map(|minter| {
            let relay_ip = relay_ip(cfg, local_addr);
            let (own_ips, own_wildcard) =
                own_ips(&[local_addr.ip(), http_addr.ip(), relay_ip, alt_addr.ip()]);
            let policy = PeerPolicy {
                denied: cfg.turn_denied_peer.clone(),
                allowed: cfg.turn_allowed_peer.clone(),
                own_ips,
                own_wildcard,
                service_ports: vec![http_addr.port(), local_addr.port(), alt_addr.port()],
            };
            tracing::info!(%local_addr, %relay_ip, "TURN relay on");
            Relay::new(
                RelayConfig {
                    realm: REALM.into(),
                    minter: minter.clone(),
                    policy,
                    quotas: Quotas {
                        per_peer: cfg.turn_max_allocations_per_peer,
                        per_ip: cfg.turn_max_per_ip,
                        total: cfg.turn_max_allocations,
                    },
                    relay_ip,
                    bind_ip: cfg.stun_listen.ip(),
                    max_lifetime: cfg.turn_max_lifetime,
                    max_bps: cfg.turn_max_bps,
                    metrics: metrics.clone(),
                    unauthenticated_rate: cfg.turn_unauthenticated_rate,
                },
                listeners.clone(),
            )
        });

        let mut tasks: Vec<JoinHandle<()>> = listeners
            .iter()
            .enumerate()
            .map(|(i, socket)| {
                tokio::spawn(serve(i, socket.clone(), relay.clone(), metrics.clone()))
            })
            .collect();
        if let Some(r) = &relay {
            tasks.push(tokio::spawn(reaper(Arc::downgrade(r))));
        }
        // TURN over TCP on the same port, for networks that drop UDP.
        let mut tcp_addr = None;
        if relay.is_some() {
            match tokio::net::TcpListener::bind(local_addr).await {
                Ok(listener) => {
                    tcp_addr = listener.local_addr().ok();
                    let limits = crate::accept::ConnectionLimits::new(
                        cfg.turn_tcp_max_per_ip,
                        cfg.turn_tcp_max,
                    );
                    tasks.push(tokio::spawn(crate::turn_tcp::serve(
                        listener,
                        relay.clone(),
                        metrics.clone(),
                        limits,
                    )));
                }
                Err(e) => {
                    tracing::warn!(%local_addr, "no TURN over TCP (the port is taken on TCP): {e}")
                }
            }
        }
        Ok(StunServer {
            local_addr,
            alt_addr,
            tcp_addr,
            minter,
            access: TurnAccess::new(relay.clone()),
            relay,
            tasks,
        })
    }

    /// The relay, when TURN is on (the HTTPS listener serves it over TLS too).
    pub fn relay(&self) -> Option<Arc<Relay>> {
        self.relay.clone()
    }

    /// Stops answering: the listening tasks end, every allocation is closed.
    pub async fn close(mut self) {
        self.stop();
        for task in std::mem::take(&mut self.tasks) {
            let _ = task.await;
        }
    }

    fn stop(&self) {
        for task in &self.tasks {
            task.abort();
        }
        if let Some(relay) = &self.relay {
            relay.close();
        }
    }
}

impl Drop for StunServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Expires what has expired, once a second, while the relay exists.
async fn reaper(relay: Weak<Relay>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        match relay.upgrade() {
            Some(r) => r.reap(),
            None => return,
        }
    }
}

/// Serves one listening socket: Binding, TURN requests, Send indications and ChannelData.
async fn serve(
    listener: usize,
    socket: Arc<UdpSocket>,
    relay: Option<Arc<Relay>>,
    metrics: Arc<crate::metrics::Metrics>,
) {
    let mut buf = vec![0u8; 65_536];
    let mut out = Vec::with_capacity(512);
    loop {
        let (n, from) = match socket.recv_from(&mut buf).await {
            Ok(got) => got,
            Err(e) => {
                tracing::debug!("STUN socket read failed: {e}");
                tokio::task::yield_now().await;
                continue;
            }
        };
        handle(
            listener,
            from,
            &buf[..n],
            relay.as_ref(),
            &metrics,
            &mut out,
        );
        // A full send buffer drops the answer; the client retransmits. Nothing to send: the
        // relay chose not to answer (e.g. over the unauthenticated-answer budget).
        if !out.is_empty() {
            let _ = send_now(&socket, &out, from);
        }
    }
}

/// One message from `from` on `listener` (a UDP socket, or a TCP connection of
/// [`crate::turn_tcp`]): Binding answered, TURN requests answered by the relay, Send
/// indications and ChannelData relayed. The answer, if any, is left in `out` (else it is
/// empty).
pub fn handle(
    listener: usize,
    from: SocketAddr,
    datagram: &[u8],
    relay: Option<&Arc<Relay>>,
    metrics: &crate::metrics::Metrics,
    out: &mut Vec<u8>,
) {
    out.clear();
    if datagram.first().is_some_and(|b| b & 0xC0 == 0x40) {
        if let Some(relay) = relay {
            relay.on_channel_data(listener, from, datagram);
        }
        return;
    }
    let Some(msg) = Message::parse(datagram) else {
        return;
    };
    match (msg.method(), msg.class()) {
        (method::SEND, Class::Indication) => {
            if let Some(relay) = relay {
                relay.on_send(listener, from, &msg);
            }
        }
        (method::BINDING, Class::Request) => {
            if !msg.fingerprint_ok() {
                return;
            }
            metrics.stun_requests.inc();
            Builder::new(out, method::BINDING, Class::Success, msg.transaction_id())
                .xor_address(attr::XOR_MAPPED_ADDRESS, from)
                .fingerprint();
        }
        (
            method::ALLOCATE | method::REFRESH | method::CREATE_PERMISSION | method::CHANNEL_BIND,
            Class::Request,
        ) => {
            if !msg.fingerprint_ok() {
                return;
            }
            match relay {
                Some(relay) => relay.on_request(listener, from, &msg, out),
                None => {
                    Builder::new(out, msg.method(), Class::Error, msg.transaction_id())
                        .error_code(403, "TURN relay is off")
                        .fingerprint();
                }
            }
        }
        _ => {}
    }
}
