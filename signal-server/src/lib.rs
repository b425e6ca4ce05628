#![warn(missing_docs)]
//! Burrow's rendezvous server.
//!
//! * [`accept`]: accepting TCP connections within per-client limits and header deadlines;
//! * [`http`]: the routes: the page (`/`, `/r/{room}`, `/new`), the signaling WebSocket
//!   (`/ws/{room}`) and `/healthz`;
//! * [`connection`]: one WebSocket peer, from `hello` to leave;
//! * [`cluster`]: several instances serving the same rooms through Redis;
//! * [`room`]: rooms and the relay of signals between their members;
//! * [`stun`]: the embedded STUN server that tells each client its post-NAT address, and
//!   starts the TURN relay for when no hole can be punched;
//! * [`relay`]: the TURN relay: allocations, permissions, channels, forwarding, and
//!   [`relay::TurnAccess`], which ties credentials to live signaling sessions;
//! * [`credentials`]: ephemeral TURN credentials (TURN REST API scheme);
//! * [`nonce`]: stateless TURN nonces;
//! * [`turn_guard`]: where the relay may send, and allocation quotas;
//! * [`sites`]: exposed sites on origins of their own;
//! * [`tls`]: https/wss with the operator's certificate, and the plain-HTTP redirect;
//! * [`metrics`]: counters and gauges for `/metrics`;
//! * [`wire`]: STUN/TURN message encoding and decoding;
//! * [`config`]: flags and defaults.

pub mod accept;
pub mod cluster;
pub mod config;
pub mod connection;
pub mod credentials;
pub mod http;
pub mod metrics;
pub mod nonce;
pub mod qr;
pub mod rate;
pub mod relay;
pub mod resume;
pub mod room;
pub mod sites;
pub mod stun;
pub mod tls;
pub mod turn_guard;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

use signal_protocol::IceServer;

pub use config::Config;

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
    /// External TURN servers (`--external-turn`) and the minters of their credentials.
    pub external_turn: Vec<(String, credentials::Minter)>,
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
    connections: std::sync::atomic::AtomicU64,
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
            servers.push(IceServer {
                urls: vec![format!("turn:{host}:{port}?transport=udp")],
                username: Some(username),
                credential: Some(credential),
            });
        }
        for (url, minter) in &self.external_turn {
            let (username, credential) = minter.mint(peer_id);
            servers.push(IceServer {
                urls: vec![url.clone()],
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

/// A running server: its bound addresses, and the task serving HTTP.
pub struct Running {
    /// Where HTTP and WebSocket are served.
    pub http_addr: SocketAddr,
    /// Where STUN/TURN is served.
    pub stun_addr: SocketAddr,
    /// The second STUN address.
    pub stun_alt_addr: SocketAddr,
    /// Where `/metrics` is served, when on its own address (`--metrics-listen`).
    pub metrics_addr: Option<SocketAddr>,
    /// Where plain HTTP is redirected to https (`--http-redirect-listen`).
    pub redirect_addr: Option<SocketAddr>,
    /// Whether the main address speaks https.
    pub tls: bool,
    /// Obtains and renews the ACME certificate, when `--acme-domain` is set.
    acme: Option<tokio::task::JoinHandle<()>>,
    /// This instance's share of the cluster's work, with `--redis`.
    cluster: Option<tokio::task::JoinHandle<()>>,
    /// Removes away peers whose grace period ended.
    expiry: tokio::task::JoinHandle<()>,
    state: Arc<AppState>,
    stun: stun::StunServer,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds every socket and starts serving; returns once all are listening.
pub async fn start(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    // What the flags name is checked and loaded before any socket is bound.
    let external_turn = external_turn(&config)?;
    let (tls, acme) = match tls_from(&config)? {
        Some((acceptor, acme)) => (Some(acceptor), acme),
        None => (None, None),
    };
    if config.http_redirect_listen.is_some() && tls.is_none() {
        anyhow::bail!(
            "--http-redirect-listen redirects to https: it needs --tls-cert or --acme-domain"
        );
    }
    let cluster = match &config.redis {
        Some(url) => Some(cluster::Cluster::connect(url, config.redis_instance_ttl).await?),
        None => None,
    };

    let listener = bind(config.listen, "").await?;
    let http_addr = listener.local_addr()?;
    let metrics_listener = match config.metrics_listen {
        Some(addr) => Some(bind(addr, " for metrics").await?),
        None => None,
    };
    let redirect_listener = match config.http_redirect_listen {
        Some(addr) => Some(bind(addr, " for http redirects").await?),
        None => None,
    };
    let metrics = Arc::new(metrics::Metrics::new());
    let stun = stun::StunServer::start(&config, http_addr, metrics.clone()).await?;

    let limits =
        accept::ConnectionLimits::new(config.max_connections_per_ip, config.max_connections);
    let rooms = room::Rooms::new(
        config.max_rooms,
        config.max_peers_per_room,
        config.resume_grace,
        metrics.leaves.clone(),
    )
    // Away members are bounded like the connections they were.
    .with_away_limits(config.max_connections_per_ip, config.max_connections);
    let resume = match (&config.resume_secret_file, &cluster) {
        (Some(path), _) => resume::ResumeTokens::new(
            &resume::ResumeTokens::secret_from_file(path)?,
            true,
            config.resume_grace,
        ),
        (None, Some(c)) => {
            resume::ResumeTokens::new(&c.resume_secret().await?, true, config.resume_grace)
        }
        (None, None) => {
            resume::ResumeTokens::new(&resume::random_secret(), false, config.resume_grace)
        }
    };
    let (stop_tx, stopping) = tokio::sync::watch::channel(false);
    let state = Arc::new(AppState {
        stopping,
        rooms: match &cluster {
            Some(c) => rooms.with_cluster(c.clone()),
            None => rooms,
        },
        cluster: cluster.clone(),
        metrics: metrics.clone(),
        limits: limits.clone(),
        stun_addr: stun.local_addr,
        stun_alt_addr: stun.alt_addr,
        turn: stun.minter.clone(),
        external_turn,
        turn_access: stun.access.clone(),
        resume,
        connections: Default::default(),
        config,
    });
    // Peers whose connection was lost and who did not come back in time leave now.
    let expiry = {
        let state = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                for (_, id) in state.rooms.expire().await {
                    state.turn_access.revoke(&id);
                }
            }
        })
    };

    // The operator's addresses (metrics, redirects) are served until the process ends.
    let metrics_addr = match metrics_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let app = http::metrics_router(state.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            Some(addr)
        }
        None => None,
    };
    let redirect_addr = match redirect_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let https_port = http_addr.port();
            let app = axum::Router::new()
                .fallback(move |headers, uri| tls::redirect(https_port, headers, uri));
            tokio::spawn(async move { axum::serve(listener, app).await });
            Some(addr)
        }
        None => None,
    };
    let cluster_task = cluster.map(|c| tokio::spawn(c.run(state.clone())));
    // On the signal, tell every WebSocket first, then stop accepting.
    let shutdown = async move {
        shutdown.await;
        let _ = stop_tx.send(true);
    };
    let tls_on = tls.is_some();
    let policy = accept::Policy {
        limits,
        metrics,
        header_timeout: state.config.header_timeout,
        // A WebSocket is pinged every --ping-interval: never idle for twice that.
        idle_timeout: state
            .config
            .idle_timeout
            .max(state.config.ping_interval * 2),
        tls,
    };
    let app = http::router(state.clone());
    let http = tokio::spawn(accept::serve(listener, app, policy, shutdown));
    Ok(Running {
        http_addr,
        stun_addr: stun.local_addr,
        stun_alt_addr: stun.alt_addr,
        metrics_addr,
        redirect_addr,
        tls: tls_on,
        acme,
        cluster: cluster_task,
        expiry,
        state,
        stun,
        http,
    })
}

/// Binds a TCP listener, saying which one failed.
async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen{what} on {addr}: {e}"))
}

/// `--external-turn` servers with the minters of their credentials (one secret each, or one
/// for all).
fn external_turn(config: &Config) -> anyhow::Result<Vec<(String, credentials::Minter)>> {
    let (urls, secrets) = (&config.external_turn, &config.external_turn_secret);
    if !urls.is_empty() && secrets.len() != 1 && secrets.len() != urls.len() {
        anyhow::bail!(
            "{} --external-turn servers but {} --external-turn-secret: give one secret for each \
             (or one for all)",
            urls.len(),
            secrets.len()
        );
    }
    Ok(urls
        .iter()
        .enumerate()
        .filter_map(|(i, url)| {
            let secret = secrets.get(i).or(secrets.first())?;
            Some((
                url.clone(),
                credentials::Minter::new(secret, config.turn_ttl),
            ))
        })
        .collect())
}

/// The TLS acceptor the flags ask for, if any, and the ACME task when the certificate comes
/// from ACME.
type TlsSetup = (
    tokio_rustls::TlsAcceptor,
    Option<tokio::task::JoinHandle<()>>,
);

fn tls_from(cfg: &Config) -> anyhow::Result<Option<TlsSetup>> {
    if let (Some(cert), Some(key)) = (&cfg.tls_cert, &cfg.tls_key) {
        return Ok(Some((tls::acceptor(cert, key)?, None)));
    }
    if cfg.acme_domain.is_empty() {
        return Ok(None);
    }
    let (acceptor, task) = tls::acme(tls::AcmeOptions {
        domains: &cfg.acme_domain,
        directory: &cfg.acme_directory,
        cache: &cfg.acme_cache,
        contact: &cfg.acme_contact,
        directory_ca: cfg.acme_ca_cert.as_deref(),
    })?;
    Ok(Some((acceptor, Some(task))))
}

impl Running {
    /// Waits for the HTTP server to finish (after the shutdown signal), then stops STUN.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.http.await;
        if let Some(acme) = &self.acme {
            acme.abort();
        }
        if let Some(cluster) = &self.cluster {
            cluster.abort();
        }
        self.expiry.abort();
        // Give the WebSockets a moment to send their "going away" close before the process ends.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        while self.state.limits.open() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.stun.close().await;
        served??;
        Ok(())
    }
}
