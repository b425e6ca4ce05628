//! `burrow netcheck`: what this machine's NAT does, in the style of Tailscale's netcheck.
//!
//! From one UDP socket, ask the server's two STUN ports for our public address. If both see the
//! same `ip:port`, the NAT maps a socket to one public port whatever the destination
//! (endpoint-independent mapping): a peer can reach that port, so hole punching works. If they
//! differ, the mapping depends on the destination (a symmetric NAT): the port a peer learns is not
//! the one it must use, and connections will be relayed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use serde::Serialize;
use stun::agent::TransactionId;
use stun::message::{Getter, Message, BINDING_REQUEST, BINDING_SUCCESS};
use stun::xoraddr::XorMappedAddress;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};

pub use peer_core::netcheck::Mapping;

/// What netcheck found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// The local socket used.
    pub local: SocketAddr,
    /// The STUN servers asked.
    pub servers: Vec<String>,
    /// The public address each one saw.
    pub mapped: Vec<SocketAddr>,
    /// The verdict.
    pub mapping: Mapping,
    /// The verdict in words.
    pub advice: &'static str,
}

/// Runs the check against the server at `base` (`http://host:port`, `https://host`, or any
/// room link on it); `tls` is whom to trust for https (the STUN checks are UDP either way).
pub async fn run(base: &str, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Report> {
    let servers = stun_servers(base, tls).await?;
    let socket = UdpSocket::bind("0.0.0.0:0").await?;
    let mut mapped = Vec::new();
    for url in &servers {
        let target = resolve(url).await?;
        mapped.push(binding(&socket, target).await.with_context(|| {
            format!(
                "UDP blocked: no STUN answer from {url}. Burrow will relay over TCP/TLS \
                 (the server's relay on its STUN port over TCP, or on its https port over TLS)"
            )
        })?);
    }
    // The local address as the OS would route it to the first server.
    let local = {
        let probe = UdpSocket::bind("0.0.0.0:0").await?;
        probe.connect(resolve(&servers[0]).await?).await?;
        SocketAddr::new(probe.local_addr()?.ip(), socket.local_addr()?.port())
    };
    let mapping = Mapping::classify(Some(&local), &mapped);
    Ok(Report {
        local,
        servers,
        mapped,
        mapping,
        advice: mapping.advice(),
    })
}

/// Asks the server which two STUN URLs to compare (`GET /api/netcheck`, over TLS for https).
async fn stun_servers(base: &str, tls: Arc<rustls::ClientConfig>) -> anyhow::Result<Vec<String>> {
    let (scheme, rest) = base.split_once("://").unwrap_or(("http", base));
    let secure = match scheme {
        "http" => false,
        "https" => true,
        other => bail!("netcheck needs an http:// or https:// address, not {other}://"),
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        bail!("no server in {base}");
    }
    // A port is given after the host (after the brackets of an IPv6 literal).
    let has_port = authority
        .rsplit_once(':')
        .is_some_and(|(host, port)| !port.contains(']') && !host.is_empty());
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:{}", if secure { 443 } else { 80 })
    };
    let tcp = tokio::time::timeout(TIMEOUT, TcpStream::connect(&addr))
        .await
        .map_err(|_| anyhow!("cannot reach the server at {addr}: timed out"))?
        .map_err(|e| anyhow!("cannot reach the server at {addr}: {e}"))?;
    let raw = if secure {
        let host = addr
            .rsplit_once(':')
            .map_or(addr.as_str(), |(h, _)| h)
            .trim_matches(['[', ']']);
        let name = rustls::pki_types::ServerName::try_from(host.to_string())
            .map_err(|_| anyhow!("{host} is not a host name"))?;
        let stream = tokio::time::timeout(
            TIMEOUT,
            tokio_rustls::TlsConnector::from(tls).connect(name, tcp),
        )
        .await
        .map_err(|_| anyhow!("TLS with {addr} timed out"))?
        .map_err(|e| anyhow!("TLS with {addr} failed: {e}"))?;
        get(stream, authority).await?
    } else {
        get(tcp, authority).await?
    };
    let text = String::from_utf8_lossy(&raw);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b)
        .ok_or_else(|| anyhow!("bad HTTP answer from the server"))?;
    #[derive(serde::Deserialize)]
    struct Answer {
        stun: Vec<String>,
    }
    let answer: Answer = serde_json::from_str(body)
        .map_err(|_| anyhow!("{base} is not a Burrow server (no /api/netcheck)"))?;
    if answer.stun.is_empty() {
        bail!("the server lists no STUN ports");
    }
    Ok(answer.stun)
}

/// How long the server has to connect, shake hands and answer.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Largest answer read from `/api/netcheck` (it is two URLs).
const MAX_ANSWER: u64 = 64 * 1024;

/// `GET /api/netcheck` on `stream`: the whole answer, head and body.
async fn get<S: AsyncRead + AsyncWrite + Unpin>(
    mut stream: S,
    authority: &str,
) -> anyhow::Result<Vec<u8>> {
    let request =
        format!("GET /api/netcheck HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    let mut limited = stream.take(MAX_ANSWER);
    match tokio::time::timeout(TIMEOUT, limited.read_to_end(&mut raw)).await {
        Ok(Ok(_)) => Ok(raw),
        // A TLS server may close without close_notify: what arrived is the answer.
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof && !raw.is_empty() => Ok(raw),
        Ok(Err(e)) => Err(anyhow!("reading the server's answer: {e}")),
        Err(_) => Err(anyhow!("the server did not answer /api/netcheck")),
    }
}

async fn resolve(url: &str) -> anyhow::Result<SocketAddr> {
    let hostport = url.trim_start_matches("stun:");
    tokio::net::lookup_host(hostport)
        .await?
        .find(|a| a.is_ipv4())
        .ok_or_else(|| anyhow!("cannot resolve {hostport}"))
}

/// One Binding request (retried), returning the XOR-MAPPED-ADDRESS.
async fn binding(socket: &UdpSocket, target: SocketAddr) -> anyhow::Result<SocketAddr> {
    let mut req = Message::new();
    req.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])?;
    let mut buf = [0u8; 1500];
    for _ in 0..5 {
        socket.send_to(&req.raw, target).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_millis(700);
        while let Ok(got) = tokio::time::timeout_at(deadline, socket.recv_from(&mut buf)).await {
            let (n, _) = got?;
            let mut resp = Message::new();
            resp.raw = buf[..n].to_vec();
            if resp.decode().is_err()
                || resp.transaction_id != req.transaction_id
                || resp.typ != BINDING_SUCCESS
            {
                continue;
            }
            let mut xor = XorMappedAddress::default();
            xor.get_from(&resp)?;
            return Ok(SocketAddr::new(xor.ip, xor.port));
        }
    }
    bail!("timed out")
}
