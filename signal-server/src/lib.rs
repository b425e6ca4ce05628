//! Burrow's rendezvous server.
//!
//! * [`http`]: the routes: the page (`/`, `/r/{room}`, `/new`), the signaling WebSocket
//!   (`/ws/{room}`) and `/healthz`;
//! * [`connection`]: one WebSocket peer, from `hello` to leave;
//! * [`room`]: rooms and the relay of signals between their members;
//! * [`stun`]: the embedded STUN server that tells each client its post-NAT address;
//! * [`config`]: flags and defaults.

pub mod config;
pub mod connection;
pub mod http;
pub mod rate;
pub mod room;
pub mod stun;

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
    /// Where the STUN server actually listens (its port is advertised to clients).
    pub stun_addr: SocketAddr,
}

impl AppState {
    /// The ICE servers handed to a peer in its welcome.
    pub fn ice_servers(&self, request_host: Option<&str>, _peer_id: &str) -> Vec<IceServer> {
        let host = self.config.ice_host(request_host);
        vec![IceServer {
            urls: vec![format!("stun:{host}:{}", self.stun_addr.port())],
            username: None,
            credential: None,
        }]
    }
}

/// A running server: its bound addresses, and the task serving HTTP.
pub struct Running {
    /// Where HTTP and WebSocket are served.
    pub http_addr: SocketAddr,
    /// Where STUN is served.
    pub stun_addr: SocketAddr,
    stun: stun::StunServer,
    http: tokio::task::JoinHandle<std::io::Result<()>>,
}

/// Binds every socket and starts serving; returns once all are listening.
pub async fn start(
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<Running> {
    let stun = stun::StunServer::start(config.stun_listen).await?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let http_addr = listener.local_addr()?;
    let state = Arc::new(AppState {
        rooms: room::Rooms::new(config.max_rooms, config.max_peers_per_room),
        stun_addr: stun.local_addr,
        config,
    });
    let app = http::router(state);
    let http = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
    });
    Ok(Running {
        http_addr,
        stun_addr: stun.local_addr,
        stun,
        http,
    })
}

impl Running {
    /// Waits for the HTTP server to finish (after the shutdown signal), then stops STUN.
    pub async fn wait(self) -> anyhow::Result<()> {
        let served = self.http.await;
        self.stun.close().await;
        served??;
        Ok(())
    }
}
