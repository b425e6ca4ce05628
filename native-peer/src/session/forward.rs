//! `burrow forward`: each TCP connection accepted locally becomes a stream to the peer that
//! offers the service; for a UDP service, each client's datagrams on the same address become a
//! session to it (`crate::udp`).

use std::net::SocketAddr;
use std::sync::Arc;

use peer_core::channels::ServiceKind;

use super::Session;
use crate::events::Event;
use crate::{streams, udp};

/// The UDP side of `burrow forward`: its socket is opened once the service turns out to be a
/// UDP one, and its sessions go to whichever connected peer offers it ([`Session::refresh_udp`]).
pub(super) struct Udp {
    listen: SocketAddr,
    wanted: Option<String>,
    token: streams::TokenSource,
    provider: tokio::sync::watch::Sender<Option<udp::Provider>>,
    bound: bool,
}

impl Udp {
    pub(super) fn new(
        listen: SocketAddr,
        wanted: Option<String>,
        token: streams::TokenSource,
    ) -> Udp {
        Udp {
            listen,
            wanted,
            token,
            provider: tokio::sync::watch::channel(None).0,
            bound: false,
        }
    }
}

impl Session {
    /// Carries one accepted TCP connection to the peer offering the service.
    pub(super) fn forward(
        &mut self,
        tcp: tokio::net::TcpStream,
        from: std::net::SocketAddr,
        wanted: Option<&str>,
        token: streams::TokenSource,
    ) {
        // A peer whose service answers, before one whose health check finds it down.
        let provider = self
            .offered
            .iter()
            .filter_map(|(peer, services)| {
                let service = services
                    .iter()
                    .find(|s| wanted.is_none_or(|w| s.name == w))?;
                let p = self.peers.get(peer).filter(|p| p.is_connected())?;
                Some((p.dialer.clone(), peer.clone(), service.clone()))
            })
            .min_by_key(|(_, _, service)| service.down);
        let Some((dialer, peer, service)) = provider else {
            self.warn(format!(
                "connection from {from} dropped: no connected peer offers {}",
                wanted.unwrap_or("a service")
            ));
            return;
        };
        let (name, kind) = (service.name, service.kind);
        if service.down {
            let reason = format!("'{name}' is down at {peer}: its local service does not answer");
            self.warn(format!("connection from {from} refused: {reason}"));
            if kind == ServiceKind::Http {
                self.tasks.spawn(unavailable(tcp, reason));
            }
            return;
        }
        if kind == ServiceKind::Udp {
            self.warn(format!(
                "connection from {from} dropped: '{name}' is a UDP service (send datagrams to \
                 this address instead)"
            ));
            return;
        }
        let printer = self.printer;
        let meter = self.carried.clone();
        self.tasks.spawn(async move {
            let result = match token.read().await {
                Ok(token) => streams::open(dialer, &name, token, tcp, &meter).await,
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

/// Answers a browser or an HTTP client whose site is down with a page that says so (instead
/// of a reset it could not explain), then closes.
async fn unavailable(mut tcp: tokio::net::TcpStream, reason: String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = format!("burrow: {reason}. Try again once it is back.\n");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
         Content-Length: {}\r\nRetry-After: 5\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut buf = [0u8; 4096];
    let answered = async {
        // The request first (a socket closed on unread bytes is reset, and the client would
        // show that instead of the answer), up to the end of its head, at most 16 KiB.
        let mut head = Vec::new();
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        tcp.write_all(answer.as_bytes()).await?;
        tcp.shutdown().await?;
        // Then whatever else it sends, until it closes.
        while tcp.read(&mut buf).await? > 0 {}
        Ok::<(), std::io::Error>(())
    };
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), answered).await;
}

impl Session {
    /// Forward mode: points new UDP sessions at the connected peer offering the service, if it
    /// is a UDP one; the first time, opens the UDP socket on the listening address.
    pub(super) async fn refresh_udp(&mut self) {
        let Some(fwd) = &self.forward_udp else {
            return;
        };
        let wanted = fwd.wanted.as_deref();
        let provider = self.offered.iter().find_map(|(peer, services)| {
            let service = services
                .iter()
                .find(|s| wanted.is_none_or(|w| s.name == w))
                .filter(|s| s.kind == ServiceKind::Udp)?;
            let p = self.peers.get(peer).filter(|p| p.is_connected())?;
            Some(udp::Provider {
                peer: peer.clone(),
                service: service.name.clone(),
                dialer: p.dialer.clone(),
                link: p.udp.clone(),
                pc: p.pc.clone(),
                own: p.own.clone(),
            })
        });
        let start = provider.is_some() && !fwd.bound;
        let (listen, token, service) = (
            fwd.listen,
            fwd.token.clone(),
            provider.as_ref().map(|p| p.service.clone()),
        );
        if let Some(fwd) = &mut self.forward_udp {
            fwd.provider.send_replace(provider);
        }
        if !start {
            return;
        }
        match tokio::net::UdpSocket::bind(listen).await {
            Ok(socket) => {
                let Some(fwd) = &mut self.forward_udp else {
                    return;
                };
                fwd.bound = true;
                self.printer.print(Event::UdpForwarding {
                    service: service.unwrap_or_default(),
                    listen: listen.to_string(),
                    max_datagram: peer_core::datagram::MAX_DATAGRAM,
                });
                let rx = fwd.provider.subscribe();
                let printer = self.printer;
                let socket = Arc::new(udp::with_big_buffers(socket));
                let carried = (token, self.carried.clone());
                self.tasks.spawn(udp::forward(socket, rx, carried, printer));
            }
            Err(e) => self.warn(format!("cannot listen for datagrams on udp {listen}: {e}")),
        }
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
