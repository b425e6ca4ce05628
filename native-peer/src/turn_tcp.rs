//! TURN over TCP and TLS for the `webrtc` crate, which speaks TURN over UDP only
//! (webrtc-rs/webrtc#539): each `turn:HOST:PORT?transport=tcp` and `turns:HOST:PORT` server the
//! welcome lists is given to the crate as a local UDP one, `turn:127.0.0.1:N`, and a shim
//! carries what the crate sends there to the real server over TCP (or TLS, trusting what the
//! room link's https trusts), one connection per crate socket, and the answers back. The crate's own TURN client
//! does everything else (credentials, allocation, permissions, channels, refreshes): the shim
//! only moves messages, framed as RFC 8656 §3.1 asks (ChannelData padded to 4 bytes on TCP).
//!
//! UDP stays first: before it opens a TCP connection, a shim asks the server's UDP TURN address
//! (listed beside it) a STUN Binding; when that is answered, UDP reaches the relay, and the crate's requests to the shim are
//! dropped (it gives up on that server, and relays over UDP as before, with no second
//! allocation on the server). Only where UDP does not get through (about a second later) does
//! TCP carry the relay. The answer is asked again after [`UDP_VERDICT_LIFE`]. TLS comes after
//! TCP the same way: where the server is listed over both, a TLS shim waits for the TCP one's
//! connection and stands aside when it connects, so one allocation is made, not two. The shim
//! remembers which relayed addresses it saw allocated, so the path can say `relayed (TCP)`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};

use peer_core::path::RelayOver;
use std::time::Duration;

use signal_protocol::IceServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinSet;

/// How long connecting to the server over TCP may take.
const CONNECT_WAIT: Duration = Duration::from_secs(5);
/// Messages queued toward the server on one connection before more are dropped (as UDP would).
const QUEUE: usize = 256;
/// The largest frame: a STUN message's header and its longest body.
const MAX_FRAME: usize = 20 + 65_535;
/// How long a Binding over UDP may take to be answered before UDP counts as blocked (asked
/// twice).
const UDP_PROBE_WAIT: Duration = Duration::from_millis(500);
/// Crate sockets one shim carries at once (a connection each); datagrams from more are dropped.
const MAX_LEGS: usize = 64;
/// How long a connection stays open with nothing from its crate socket (a used relay carries
/// consent checks every few seconds; an unused one is let go).
const LEG_IDLE: Duration = Duration::from_secs(120);
/// How long "UDP reaches the relay" holds before it is asked again.
pub const UDP_VERDICT_LIFE: Duration = Duration::from_secs(60);

/// Whether a STUN Binding over UDP to `server` is answered: then UDP reaches the relay.
async fn udp_reaches(server: &str) -> bool {
    let Ok(Some(to)) = tokio::net::lookup_host(server).await.map(|mut a| a.next()) else {
        return false;
    };
    let any: SocketAddr = if to.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let Ok(socket) = UdpSocket::bind(any).await else {
        return false;
    };
    let tid: [u8; 12] = rand::random();
    let mut request = vec![0x00, 0x01, 0x00, 0x00, 0x21, 0x12, 0xA4, 0x42];
    request.extend_from_slice(&tid);
    let mut buf = [0u8; 512];
    for _ in 0..2 {
        if socket.send_to(&request, to).await.is_err() {
            return false;
        }
        let answer = tokio::time::timeout(UDP_PROBE_WAIT, async {
            loop {
                match socket.recv_from(&mut buf).await {
                    Ok((n, from)) if from == to && n >= 20 && buf[8..20] == tid => return true,
                    Ok(_) => continue,
                    Err(_) => return false,
                }
            }
        })
        .await;
        if answer == Ok(true) {
            return true;
        }
    }
    false
}

/// Relayed addresses allocated over TCP, shared by the shims and the path reader.
type Relayed = crate::rtc::TcpRelayed;

/// The shims of one session, by transport and TURN server (`host:port`), kept across
/// welcomes (credentials change; the server's address rarely does); stopped when this is
/// dropped.
pub struct TcpRelays {
    shims: HashMap<(RelayOver, String), SocketAddr>,
    /// Per TCP shim: when its last connection was tried, and whether it connected.
    verdicts: HashMap<(RelayOver, String), Verdict>,
    relayed: Relayed,
    tls: Arc<rustls::ClientConfig>,
    tasks: JoinSet<()>,
}

impl TcpRelays {
    /// No shims yet; TLS ones trust what `tls` trusts.
    pub fn new(tls: Arc<rustls::ClientConfig>) -> TcpRelays {
        TcpRelays {
            shims: HashMap::new(),
            verdicts: HashMap::new(),
            relayed: Relayed::default(),
            tls,
            tasks: JoinSet::new(),
        }
    }

    /// `servers` as the crate can use them: every TURN URL over TCP or TLS becomes the local
    /// UDP address of its shim (started on first sight), the rest as they are.
    pub fn adapt(&mut self, servers: &[IceServer]) -> Vec<IceServer> {
        servers
            .iter()
            .map(|s| {
                // The server's UDP face, asked before TCP is used; its TCP face, before TLS.
                let probe = s.urls.iter().find_map(|u| udp_server(u));
                let tcp = s
                    .urls
                    .iter()
                    .filter_map(|u| stream_server(u))
                    .find(|(over, _)| *over == RelayOver::Tcp);
                IceServer {
                    urls: s
                        .urls
                        .iter()
                        .filter_map(|url| match stream_server(url) {
                            Some(server) => {
                                let before = match (&server.0, &tcp) {
                                    (RelayOver::Tls, Some(tcp)) => Some(self.verdict(tcp)),
                                    _ => None,
                                };
                                self.shim(server, probe.clone(), before)
                                    .map(|at| format!("turn:{at}"))
                            }
                            None => Some(url.clone()),
                        })
                        .collect(),
                    ..s.clone()
                }
            })
            .collect()
    }

    /// A handle the path reader can ask [`tcp_relayed`] with.
    pub fn relayed(&self) -> Relayed {
        self.relayed.clone()
    }

    /// The verdict `server`'s shim gives on its connections (made when first asked).
    fn verdict(&mut self, server: &(RelayOver, String)) -> Verdict {
        self.verdicts
            .entry(server.clone())
            .or_insert_with(|| Arc::new(tokio::sync::watch::Sender::new(None)))
            .clone()
    }

    fn shim(
        &mut self,
        server: (RelayOver, String),
        probe: Option<String>,
        before: Option<Verdict>,
    ) -> Option<SocketAddr> {
        if let Some(at) = self.shims.get(&server) {
            return Some(*at);
        }
        let verdict = (server.0 == RelayOver::Tcp).then(|| self.verdict(&server));
        let socket = std::net::UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0))
            .and_then(|s| s.set_nonblocking(true).map(|()| s))
            .and_then(UdpSocket::from_std);
        let socket = match socket {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("no TURN over {:?} to {}: {e}", server.0, server.1);
                return None;
            }
        };
        let at = socket.local_addr().ok()?;
        tracing::debug!(server = %server.1, over = ?server.0, %at, "TURN over a stream through a local shim");
        let to = To {
            over: server.0,
            server: server.1.clone(),
            probe,
            before,
            verdict,
            tls: self.tls.clone(),
        };
        self.tasks.spawn(shim(socket, to, self.relayed.clone()));
        self.shims.insert(server, at);
        Some(at)
    }
}

/// How `relayed` (a relay candidate's address) is reached, if over TCP or TLS.
pub fn tcp_relayed(set: &Relayed, relayed: SocketAddr) -> Option<RelayOver> {
    set.lock()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&relayed)
        .copied()
}

/// The transport and `HOST:PORT` of a TURN URL over TCP (`turn:…?transport=tcp`) or TLS
/// (`turns:…`).
fn stream_server(url: &str) -> Option<(RelayOver, String)> {
    let (over, rest) = match url.split_once(':')? {
        ("turn", rest) => (RelayOver::Tcp, rest),
        ("turns", rest) => (RelayOver::Tls, rest),
        _ => return None,
    };
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    let tcp = query
        .split('&')
        .any(|q| q.eq_ignore_ascii_case("transport=tcp"));
    match over {
        RelayOver::Tcp if !tcp => None,
        RelayOver::Tls => Some((over, with_port(hostport, 443))),
        _ => Some((over, with_port(hostport, 3478))),
    }
}

/// `HOST:PORT` of a TURN URL over UDP.
fn udp_server(url: &str) -> Option<String> {
    let rest = url.strip_prefix("turn:")?;
    let (hostport, query) = rest.split_once('?').unwrap_or((rest, ""));
    (query.is_empty() || query.eq_ignore_ascii_case("transport=udp"))
        .then(|| with_port(hostport, 3478))
}

/// `host` with `port` unless it names one.
fn with_port(host: &str, port: u16) -> String {
    let named = host.rsplit_once(':').is_some_and(|(h, p)| {
        p.parse::<u16>().is_ok() && (!h.starts_with('[') || h.ends_with(']'))
    });
    if named {
        host.to_string()
    } else {
        format!("{host}:{port}")
    }
}

/// A TCP shim's last connection attempt: when it was made, and whether it connected; TLS
/// shims of the same server wait for it.
type Verdict = Arc<tokio::sync::watch::Sender<Option<(tokio::time::Instant, bool)>>>;

/// How long a TLS shim waits for the TCP shim's verdict, after its own UDP probe (the TCP
/// shim probed at the same time): a TCP connection that gets through does in a round trip;
/// where TCP is dropped (a network that lets only HTTPS out), TLS is not held up for the TCP
/// shim's whole [`CONNECT_WAIT`].
const TCP_VERDICT_WAIT: Duration = Duration::from_secs(1);

/// Where a shim's connections go.
#[derive(Clone)]
struct To {
    over: RelayOver,
    server: String,
    /// The server's UDP TURN address, asked first.
    probe: Option<String>,
    /// TLS: the same server's TCP shim, whose connection is waited for first.
    before: Option<Verdict>,
    /// TCP: where this shim's connections are told, for the TLS shim.
    verdict: Option<Verdict>,
    tls: Arc<rustls::ClientConfig>,
}

/// How many bytes the frame at the start of `buf` takes, and how many of them are the message
/// (ChannelData's padding is not): `None` until its header is there, `Some(Err)` for bytes
/// that are neither STUN nor ChannelData.
fn frame(buf: &[u8]) -> Option<Result<(usize, usize), ()>> {
    let head = buf.get(..4)?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    Some(match head[0] & 0xC0 {
        0x00 if len % 4 == 0 => Ok((20 + len, 20 + len)),
        0x40 => Ok((4 + ((len + 3) & !3), 4 + len)),
        _ => Err(()),
    })
}

/// One shim: datagrams from the crate's sockets go to the server on a TCP connection per
/// socket; what the server sends back goes to the socket it is for.
async fn shim(socket: UdpSocket, to: To, relayed: Relayed) {
    // By crate socket: its leg's number and queue; and the relayed address it was allocated.
    let mut legs: HashMap<SocketAddr, (u64, mpsc::Sender<Vec<u8>>)> = HashMap::new();
    let mut allocations: HashMap<SocketAddr, SocketAddr> = HashMap::new();
    let mut next = 0u64;
    let mut tasks = JoinSet::new();
    let (back_tx, mut back) = mpsc::channel::<(SocketAddr, Vec<u8>)>(QUEUE);
    let mut buf = vec![0u8; MAX_FRAME + 4];
    loop {
        tokio::select! {
            got = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = got else { continue };
                // Only TURN (STUN or ChannelData), from a bounded number of sockets (the shim is
                // on loopback: only this machine reaches it; the crate's sockets send from
                // their own addresses).
                if !matches!(frame(&buf[..n]), Some(Ok(_))) {
                    continue;
                }
                let mut message = buf[..n].to_vec();
                // Over TCP, ChannelData is padded to a multiple of 4 bytes.
                if message.first().is_some_and(|b| b & 0xC0 == 0x40) {
                    message.resize((n + 3) & !3, 0);
                }
                if legs.get(&from).is_some_and(|(_, tx)| tx.is_closed()) {
                    legs.remove(&from);
                }
                if !legs.contains_key(&from) && legs.len() >= MAX_LEGS {
                    continue;
                }
                let (_, leg_tx) = legs.entry(from).or_insert_with(|| {
                    let (tx, rx) = mpsc::channel(QUEUE);
                    next += 1;
                    let number = next;
                    let to = to.clone();
                    let back = back_tx.clone();
                    tasks.spawn(async move {
                        leg(to, from, rx, back).await;
                        (from, number)
                    });
                    (number, tx)
                });
                let _ = leg_tx.try_send(message);
            }
            Some((back_to, message)) = back.recv() => {
                if let Some(addr) = allocated(&message) {
                    relayed.lock().unwrap_or_else(PoisonError::into_inner).insert(addr, to.over);
                    allocations.insert(back_to, addr);
                }
                let _ = socket.send_to(&message, back_to).await;
            }
            Some(ended) = tasks.join_next(), if !tasks.is_empty() => {
                let Ok((from, number)) = ended else { continue };
                // Only the leg that ended (a newer one for the same socket stays).
                if legs.get(&from).is_some_and(|(n, _)| *n == number) {
                    legs.remove(&from);
                }
                // Its allocation ended with its connection.
                if let Some(addr) = allocations.remove(&from) {
                    relayed.lock().unwrap_or_else(PoisonError::into_inner).remove(&addr);
                }
            }
        }
    }
}

/// The TCP connection for the crate's socket `from`: `rx` to the server, frames back to `back`,
/// until either ends or the crate is silent for [`LEG_IDLE`] (the next datagram opens another).
async fn leg(
    to: To,
    from: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    back: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) {
    let server = &to.server;
    if let Some(probe) = &to.probe {
        if udp_reaches(probe).await {
            tracing::debug!(%server, "UDP reaches the relay: no TURN over a stream for now");
            // The crate's requests go unanswered, so it relays over UDP only.
            let _ = tokio::time::timeout(UDP_VERDICT_LIFE, async {
                while rx.recv().await.is_some() {}
            })
            .await;
            return;
        }
    }
    if let Some(tcp) = &to.before {
        // A verdict from this gathering (the TCP shim is asked at the same moment) or a
        // recent one.
        let mut seen = tcp.subscribe();
        let tcp_works = tokio::time::timeout(
            TCP_VERDICT_WAIT,
            seen.wait_for(|v| v.is_some_and(|(at, _)| at.elapsed() < UDP_VERDICT_LIFE)),
        )
        .await
        .ok()
        .and_then(|got| got.ok().and_then(|v| *v))
        .is_some_and(|(_, connected)| connected);
        if tcp_works {
            tracing::debug!(%server, "TCP reaches the relay: no TURN over TLS for now");
            let _ = tokio::time::timeout(UDP_VERDICT_LIFE, async {
                while rx.recv().await.is_some() {}
            })
            .await;
            return;
        }
    }
    let tried = tokio::time::Instant::now();
    let connected = tokio::time::timeout(CONNECT_WAIT, connect(&to)).await;
    if let Some(verdict) = &to.verdict {
        verdict.send_replace(Some((tried, matches!(connected, Ok(Ok(_))))));
    }
    match connected {
        Ok(Ok(Stream::Tcp(tcp))) => carry(tcp, from, rx, back).await,
        Ok(Ok(Stream::Tls(tls))) => carry(*tls, from, rx, back).await,
        Ok(Err(e)) => tracing::debug!(%server, "TURN over a stream: cannot connect: {e}"),
        Err(_) => tracing::debug!(%server, "TURN over a stream: no connection in {CONNECT_WAIT:?}"),
    }
}

/// A connection to the server, plain or TLS.
enum Stream {
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

async fn connect(to: &To) -> std::io::Result<Stream> {
    let tcp = TcpStream::connect(&to.server).await?;
    let _ = tcp.set_nodelay(true);
    if to.over != RelayOver::Tls {
        return Ok(Stream::Tcp(tcp));
    }
    let host = to
        .server
        .rsplit_once(':')
        .map_or(to.server.as_str(), |(h, _)| h)
        .trim_start_matches('[')
        .trim_end_matches(']');
    let name = rustls::pki_types::ServerName::try_from(host.to_string())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let tls = tokio_rustls::TlsConnector::from(to.tls.clone())
        .connect(name, tcp)
        .await?;
    Ok(Stream::Tls(Box::new(tls)))
}

/// Moves messages both ways on `stream` until either side ends.
async fn carry<S>(
    stream: S,
    from: SocketAddr,
    mut rx: mpsc::Receiver<Vec<u8>>,
    back: mpsc::Sender<(SocketAddr, Vec<u8>)>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let to_server = async {
        while let Ok(Some(message)) = tokio::time::timeout(LEG_IDLE, rx.recv()).await {
            if write.write_all(&message).await.is_err() {
                return;
            }
        }
    };
    let from_server = async {
        let mut buf = Vec::with_capacity(8 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            while let Some(f) = frame(&buf) {
                let Ok((len, message)) = f else {
                    return;
                };
                if buf.len() < len {
                    break;
                }
                if back.send((from, buf[..message].to_vec())).await.is_err() {
                    return;
                }
                buf.drain(..len);
            }
            match read.read(&mut chunk).await {
                Ok(n) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                _ => return,
            }
        }
    };
    tokio::select! {
        () = to_server => {}
        () = from_server => {}
    }
}

/// The XOR-RELAYED-ADDRESS of an Allocate success response, if `message` is one.
fn allocated(message: &[u8]) -> Option<SocketAddr> {
    const ALLOCATE_SUCCESS: u16 = 0x0103;
    const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    const COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
    if message.get(..2)? != ALLOCATE_SUCCESS.to_be_bytes() || message.get(4..8)? != COOKIE {
        return None;
    }
    let tid = message.get(8..20)?;
    let mut at = 20;
    while let Some(head) = message.get(at..at + 4) {
        let kind = u16::from_be_bytes([head[0], head[1]]);
        let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
        let value = message.get(at + 4..at + 4 + len)?;
        if kind == XOR_RELAYED_ADDRESS && value.len() >= 8 {
            let port = u16::from_be_bytes([value[2] ^ COOKIE[0], value[3] ^ COOKIE[1]]);
            let ip: std::net::IpAddr = match (value[1], value.len()) {
                (0x01, _) => {
                    let b: [u8; 4] = std::array::from_fn(|i| value[4 + i] ^ COOKIE[i]);
                    b.into()
                }
                (0x02, 20..) => {
                    let key: Vec<u8> = COOKIE.iter().chain(tid).copied().collect();
                    let b: [u8; 16] = std::array::from_fn(|i| value[4 + i] ^ key[i]);
                    b.into()
                }
                _ => return None,
            };
            return Some(SocketAddr::new(ip, port));
        }
        at += 4 + ((len + 3) & !3);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_turn_urls_over_tcp_or_tls_go_through_a_shim() {
        let tcp = |h: &str| Some((RelayOver::Tcp, h.to_string()));
        let tls = |h: &str| Some((RelayOver::Tls, h.to_string()));
        assert_eq!(
            stream_server("turn:relay.example:3478?transport=tcp"),
            tcp("relay.example:3478")
        );
        assert_eq!(
            stream_server("turn:[2001:db8::1]:3478?transport=tcp"),
            tcp("[2001:db8::1]:3478")
        );
        assert_eq!(
            stream_server("turns:burrow.example?transport=tcp"),
            tls("burrow.example:443")
        );
        assert_eq!(
            stream_server("turns:[2001:db8::1]"),
            tls("[2001:db8::1]:443")
        );
        assert_eq!(stream_server("turn:relay.example:3478?transport=udp"), None);
        assert_eq!(stream_server("stun:relay.example:3478"), None);
        assert_eq!(
            udp_server("turn:relay.example:3478?transport=udp").as_deref(),
            Some("relay.example:3478")
        );
        assert_eq!(udp_server("turn:relay.example?transport=tcp"), None);
    }

    #[test]
    fn frames_keep_channel_data_without_its_padding() {
        assert_eq!(frame(&[0x40, 0x00, 0x00, 0x05]), Some(Ok((12, 9))));
        assert_eq!(frame(&[0x01, 0x03, 0x00, 0x0c]), Some(Ok((32, 32))));
        assert_eq!(frame(&[0x40, 0x00]), None);
        assert_eq!(frame(&[0xff, 0, 0, 0]), Some(Err(())));
    }

    #[test]
    fn the_relayed_address_is_read_from_an_allocate_success() {
        // XOR-RELAYED-ADDRESS 203.0.113.7:50000.
        let cookie = [0x21u8, 0x12, 0xA4, 0x42];
        let port = (50000u16 ^ 0x2112).to_be_bytes();
        let ip = [203u8, 0, 113, 7];
        let mut m = vec![0x01, 0x03, 0x00, 0x0c];
        m.extend_from_slice(&cookie);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&[0x00, 0x16, 0x00, 0x08, 0x00, 0x01, port[0], port[1]]);
        m.extend((0..4).map(|i| ip[i] ^ cookie[i]));
        assert_eq!(allocated(&m), Some("203.0.113.7:50000".parse().unwrap()));
        m[1] = 0x01; // a Binding success: not an allocation
        assert_eq!(allocated(&m), None);
    }
}
