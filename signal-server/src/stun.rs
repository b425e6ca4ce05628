//! The embedded STUN server: answers Binding requests with the sender's post-NAT address
//! (XOR-MAPPED-ADDRESS, FINGERPRINT), the seed's "server records each client's ip:port".
//!
//! Built on the `turn` crate's server, which answers STUN Binding on the same socket it serves
//! TURN on.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use turn::auth::AuthHandler;
use turn::relay::relay_none::RelayAddressGeneratorNone;
use turn::server::config::{ConnConfig, ServerConfig};
use turn::server::Server;

/// A running STUN server.
pub struct StunServer {
    /// The UDP address it answers on.
    pub local_addr: SocketAddr,
    server: Server,
}

/// Refuses every TURN allocation: only Binding requests are served.
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

impl StunServer {
    /// Binds `addr` and starts answering.
    pub async fn start(addr: SocketAddr) -> anyhow::Result<StunServer> {
        let socket = UdpSocket::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot bind STUN on udp {addr}: {e}"))?;
        let local_addr = socket.local_addr()?;
        let server = Server::new(ServerConfig {
            conn_configs: vec![ConnConfig {
                conn: Arc::new(socket),
                relay_addr_generator: Box::new(RelayAddressGeneratorNone {
                    address: local_addr.ip().to_string(),
                    net: Arc::new(webrtc_util::vnet::net::Net::new(None)),
                }),
            }],
            realm: "burrow".into(),
            auth_handler: Arc::new(NoTurn),
            channel_bind_timeout: Duration::from_secs(0),
            alloc_close_notify: None,
        })
        .await?;
        Ok(StunServer { local_addr, server })
    }

    /// Stops answering.
    pub async fn close(self) {
        let _ = self.server.close().await;
    }
}
