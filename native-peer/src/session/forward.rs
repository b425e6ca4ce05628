//! `burrow forward`: each TCP connection accepted locally becomes a stream to the peer that
//! offers the service.

use super::Session;
use crate::events::Event;
use crate::streams;

impl Session {
    /// Carries one accepted TCP connection to the peer offering the service.
    pub(super) fn forward(
        &mut self,
        tcp: tokio::net::TcpStream,
        from: std::net::SocketAddr,
        wanted: Option<&str>,
        token: streams::TokenSource,
    ) {
        let provider = self.offered.iter().find_map(|(peer, services)| {
            let service = services
                .iter()
                .find(|s| wanted.is_none_or(|w| s.name == w))?;
            let p = self.peers.get(peer).filter(|p| p.connected)?;
            Some((p.dialer.clone(), peer.clone(), service.name.clone()))
        });
        let Some((dialer, peer, name)) = provider else {
            self.warn(format!(
                "connection from {from} dropped: no connected peer offers {}",
                wanted.unwrap_or("a service")
            ));
            return;
        };
        let printer = self.printer;
        self.tasks.spawn(async move {
            let result = match token.read().await {
                Ok(token) => streams::open(dialer, &name, token, tcp).await,
                Err(e) => Err(streams::StreamError::Io(std::io::Error::new(
                    e.kind(),
                    format!("cannot read the token file: {e}"),
                ))),
            };
            if let Err(e) = result {
                printer.print(Event::StreamFailed {
                    peer,
                    reason: e.to_string(),
                });
            }
        });
    }
}

/// The next connection on the forward listener; never resolves in other modes.
pub(super) async fn accept_tcp(
    forward: &Option<(
        tokio::net::TcpListener,
        Option<String>,
        streams::TokenSource,
    )>,
) -> std::io::Result<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match forward {
        Some((listener, _, _)) => listener.accept().await,
        None => std::future::pending().await,
    }
}
