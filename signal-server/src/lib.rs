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
//! * [`config`]: flags and defaults;
//! * [`state`]: what every connection shares ([`AppState`]);
//! * [`secrets`]: room ids and random secrets;
//! * [`socket`]: UDP socket buffers;
//! * [`qr`], [`rate`], [`resume`]: the room link's QR code, per-peer rate limits, resume tokens.
//!
//! Modules are private; `fuzz` and `bench` reach [`wire`], [`nonce`], [`turn_guard`],
//! [`Config`] and [`start`]. Imports go one way: `http` → `connection` → `room` → `cluster`,
//! `stun` → `relay`; the cluster reaches the rooms through [`cluster::Local`], which
//! [`AppState`] implements.

mod accept;
mod cluster;
pub mod config;
mod connection;
mod credentials;
mod http;
mod metrics;
pub mod nonce;
mod qr;
mod rate;
mod relay;
mod resume;
mod room;
mod secrets;
mod sites;
mod socket;
mod state;
mod stun;
mod tls;
pub mod turn_guard;
mod turn_tcp;
pub mod wire;

use std::net::SocketAddr;
use std::sync::Arc;

pub use config::Config;
use state::AppState;

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
    /// Everything serving beside the main address, owned here and awaited on shutdown: the
    /// ACME renewal, the cluster's work, the expiry of away peers (all stopped once the main
    /// address is done), the metrics and redirect addresses (which end on the signal).
    tasks: tokio::task::JoinSet<()>,
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
    let mut tasks = tokio::task::JoinSet::new();
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
            resume::ResumeTokens::new(&secrets::resume_key(), false, config.resume_grace)
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
        turn_tcp: stun.tcp_addr.is_some(),
        turn_tls: tls.is_some() && stun.relay().is_some(),
        turn: stun.minter.clone(),
        external_turn,
        turn_access: stun.access.clone(),
        resume,
        connections: Default::default(),
        config,
    });
    if let Some(acme) = acme {
        tasks.spawn(acme);
    }
    // Peers whose connection was lost and who did not come back in time leave now.
    {
        let state = state.clone();
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
            loop {
                tick.tick().await;
                for (_, id) in state.rooms.expire().await {
                    state.turn_access.revoke(&id);
                }
            }
        });
    }

    // The operator's addresses (metrics, redirects) are served until the signal.
    let until_stopping = || {
        let mut stopping = state.stopping.clone();
        async move {
            let _ = stopping.wait_for(|stop| *stop).await;
        }
    };
    let metrics_addr = match metrics_listener {
        Some(listener) => {
            let addr = listener.local_addr()?;
            let app = http::metrics_router(state.clone());
            tasks.spawn(serve_until(listener, app, until_stopping(), "metrics"));
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
            tasks.spawn(serve_until(listener, app, until_stopping(), "redirect"));
            Some(addr)
        }
        None => None,
    };
    if let Some(cluster) = cluster {
        let local = state.clone();
        tasks.spawn(cluster.run(local));
    }
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
        turn: stun.relay(),
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
        tasks,
        state,
        stun,
        http,
    })
}

/// Serves one of the operator's plain addresses until `stop`.
async fn serve_until(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
    what: &'static str,
) {
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(stop)
        .await;
    if let Err(e) = served {
        tracing::warn!("the {what} address stopped: {e}");
    }
}

/// Binds a TCP listener, saying which one failed.
async fn bind(addr: SocketAddr, what: &str) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen{what} on {addr}: {e}"))
}

/// `--external-turn` servers with the minters of their credentials (one secret each, or one
/// for all).
/// Each `--external-turn` box: its URLs (several, space-separated, for one box reached over UDP,
/// TCP and TLS: one credential for all), each a `turn:`, `turns:` or `stun:` URL.
fn external_turn(config: &Config) -> anyhow::Result<Vec<(Vec<String>, credentials::Minter)>> {
    let (urls, secrets) = (&config.external_turn, &config.external_turn_secret);
    if !urls.is_empty() && secrets.len() != 1 && secrets.len() != urls.len() {
        anyhow::bail!(
            "{} --external-turn servers but {} --external-turn-secret: give one secret for each \
             (or one for all)",
            urls.len(),
            secrets.len()
        );
    }
    let mut boxes = Vec::new();
    for (i, entry) in urls.iter().enumerate() {
        let Some(secret) = secrets.get(i).or(secrets.first()) else {
            continue;
        };
        let box_urls: Vec<String> = entry.split_whitespace().map(str::to_string).collect();
        anyhow::ensure!(!box_urls.is_empty(), "--external-turn: an empty entry");
        for url in &box_urls {
            anyhow::ensure!(
                ["turn:", "turns:", "stun:"].iter().any(|s| url.starts_with(s)),
                "--external-turn {url:?}: expected turn:HOST:PORT, turns:HOST:PORT or stun:HOST:PORT \
                 (several URLs of one box separated by spaces)"
            );
        }
        boxes.push((box_urls, credentials::Minter::new(secret, config.turn_ttl)));
    }
    Ok(boxes)
}

/// The TLS acceptor the flags ask for, if any, and the ACME task when the certificate comes
/// from ACME.
type TlsSetup = (tokio_rustls::TlsAcceptor, Option<tls::Renewal>);

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
    pub async fn wait(mut self) -> anyhow::Result<()> {
        let served = self.http.await;
        // Give the WebSockets a moment to send their "going away" close before the process ends.
        let closing = self.state.limits.all_closed();
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), closing).await;
        // The metrics and redirect addresses ended on the signal; the rest loop until stopped.
        self.tasks.shutdown().await;
        self.stun.close().await;
        served??;
        Ok(())
    }
}
