//! TCP streams over `burrow-stream` data channels (framing in `peer_core::channels`): the
//! exposing side ([`accept`]) and the forwarding side ([`open`]), and the pipe between a TCP
//! socket and a channel, with half-close, resets and backpressure.
//!
//! One data channel per TCP connection keeps streams independent and the framing trivial.
//! Backpressure: channel → TCP, each stream buffers at most [`STREAM_BUFFER`] messages before
//! it stops reading its channel (which, in turn, pauses the peer connection's reads: the peer's
//! sender then waits); TCP → channel, `send` waits while the channel's send buffer is full
//! (`rtc::SEND_BUFFER_LIMIT`), so a fast sender cannot grow memory.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use peer_core::access::{token_matches, AttemptLimiter, Blocked, LimitPolicy};
use peer_core::channels::{ServiceInfo, StreamMessage, STREAM_LABEL};
use peer_core::stream::{Heard, Stream};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::PeerConnection;

/// Messages buffered per stream between the channel and the TCP socket (64 KiB chunks).
pub const STREAM_BUFFER: usize = 32;

/// What `burrow expose` serves.
#[derive(Debug, Clone)]
pub struct Exposed {
    /// How peers see it.
    pub info: ServiceInfo,
    /// The only address streams are ever connected to.
    pub addr: SocketAddr,
    /// The token a stream must present, if any.
    pub token: Option<String>,
}

/// Where `burrow forward` gets the token it presents.
#[derive(Debug, Clone, Default)]
pub enum TokenSource {
    /// No token.
    #[default]
    None,
    /// This one (`--token`, `BURROW_TOKEN`).
    Given(String),
    /// The first line of this file, read anew for each connection (`--token-file`): the token
    /// stays out of the process list, and can be changed without a restart.
    File(std::path::PathBuf),
}

impl TokenSource {
    /// The token to present now.
    pub async fn read(&self) -> std::io::Result<Option<String>> {
        match self {
            TokenSource::None => Ok(None),
            TokenSource::Given(token) => Ok(Some(token.clone())),
            TokenSource::File(path) => {
                let text = tokio::fs::read_to_string(path).await?;
                let line = text.lines().next().unwrap_or("");
                Ok(Some(line.to_string()))
            }
        }
    }
}

/// The exposing side's door: the service, and the limit on wrong tokens that all its streams
/// share (`peer_core::access`).
#[derive(Debug)]
pub struct Gate {
    service: Exposed,
    limiter: Mutex<AttemptLimiter<String>>,
    epoch: Instant,
}

impl Gate {
    /// A gate for `service` with the default limit (5 wrong tokens, then 60 s, growing).
    pub fn new(service: Exposed) -> Gate {
        Gate::with_policy(service, LimitPolicy::default())
    }

    /// A gate with another limit.
    pub fn with_policy(service: Exposed, policy: LimitPolicy) -> Gate {
        Gate {
            service,
            limiter: Mutex::new(AttemptLimiter::new(policy)),
            epoch: Instant::now(),
        }
    }

    /// What is exposed.
    pub fn service(&self) -> &Exposed {
        &self.service
    }

    /// Whether `peer`'s first message may open the service, `now` after the gate's creation:
    /// the right name; and, if the service has a token, a peer not cooling down and the right
    /// token (compared in constant time; wrong ones are counted).
    fn admit(&self, open: &Heard, peer: &str, now: Duration) -> Result<(), StreamError> {
        let Heard::Open {
            service: name,
            token,
        } = open
        else {
            return Err(StreamError::Refused(
                "the first message must be open".into(),
            ));
        };
        if *name != self.service.info.name {
            return Err(StreamError::Refused(format!(
                "no service named '{name}' here"
            )));
        }
        let Some(expected) = self.service.token.as_deref() else {
            return Ok(());
        };
        let peer = peer.to_string();
        // Never held across an await: the lock only guards a few map operations.
        let mut limiter = self.limiter.lock().unwrap_or_else(PoisonError::into_inner);
        // Before the token is looked at: while cooling down, even the right one is refused.
        limiter.check(&peer, now).map_err(StreamError::Blocked)?;
        if token_matches(Some(expected), token.as_deref()) {
            limiter.succeeded(&peer);
            return Ok(());
        }
        limiter.failed(&peer, now).map_err(StreamError::Blocked)?;
        Err(StreamError::Refused("wrong or missing access token".into()))
    }
}

/// Why a stream ended badly.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// One side refused: the peer refused ours, or we refused the peer's (the reason).
    #[error("refused: {0}")]
    Refused(String),
    /// We refused the peer's stream unseen: it sent too many wrong tokens and is cooling down.
    #[error("{0}")]
    Blocked(Blocked),
    /// The channel closed before the stream was set up.
    #[error("the peer closed the stream")]
    Closed,
    /// A local socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The channel failed.
    #[error("data channel: {0}")]
    Channel(#[from] webrtc::error::Error),
}

/// One event from a stream channel.
enum Incoming {
    Open,
    Text(String),
    Data(BytesMut),
    Closed,
}

/// Reads a channel in the background into a bounded queue.
fn reader(dc: Arc<dyn DataChannel>) -> mpsc::Receiver<Incoming> {
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    tokio::spawn(async move {
        while let Some(event) = dc.poll().await {
            let item = match event {
                DataChannelEvent::OnOpen => Incoming::Open,
                DataChannelEvent::OnMessage(m) if m.is_string => {
                    Incoming::Text(String::from_utf8_lossy(&m.data).into_owned())
                }
                DataChannelEvent::OnMessage(m) => Incoming::Data(m.data),
                DataChannelEvent::OnClose => break,
                _ => continue,
            };
            if tx.send(item).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Incoming::Closed).await;
    });
    rx
}

/// The exposing side: answers one incoming stream channel from `peer` by connecting to the
/// service, if the gate lets it through.
pub async fn accept(
    dc: Arc<dyn DataChannel>,
    gate: Arc<Gate>,
    peer: &str,
) -> Result<(), StreamError> {
    let mut rx = reader(dc.clone());
    let mut stream = Stream::answer();
    let open = loop {
        match rx.recv().await {
            Some(Incoming::Text(t)) => break stream.on_text(&t),
            Some(Incoming::Open) => continue,
            _ => return Err(StreamError::Closed),
        }
    };
    if let Err(e) = gate.admit(&open, peer, gate.epoch.elapsed()) {
        let reason = match &e {
            StreamError::Refused(reason) => reason.clone(),
            other => other.to_string(),
        };
        let _ = dc.send_text(&stream.decide(Err(reason)).encode()).await;
        drain(&dc).await;
        let _ = dc.close().await;
        return Err(e);
    }
    let service = gate.service();
    // The one address this peer was told to expose: nothing in the request can change it.
    let tcp = match TcpStream::connect(service.addr).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let msg = stream.decide(Err(format!("the service is not answering: {e}")));
            let _ = dc.send_text(&msg.encode()).await;
            drain(&dc).await;
            let _ = dc.close().await;
            return Err(e.into());
        }
    };
    dc.send_text(&stream.decide(Ok(())).encode()).await?;
    pipe(tcp, dc, rx, stream).await
}

/// The forwarding side: opens a stream to `service` on `pc` and pipes `tcp` through it.
pub async fn open(
    pc: Arc<dyn PeerConnection>,
    service: &str,
    token: Option<String>,
    tcp: TcpStream,
) -> Result<(), StreamError> {
    let dc = pc.create_data_channel(STREAM_LABEL, None).await?;
    let mut rx = reader(dc.clone());
    loop {
        match rx.recv().await {
            Some(Incoming::Open) => break,
            None | Some(Incoming::Closed) => return Err(StreamError::Closed),
            Some(_) => continue,
        }
    }
    let (mut stream, open) = Stream::dial(service, token);
    dc.send_text(&open.encode()).await?;
    loop {
        match rx.recv().await {
            Some(Incoming::Text(t)) => match stream.on_text(&t) {
                Heard::Accepted => break,
                Heard::Refused(reason) => return Err(StreamError::Refused(reason)),
                _ => return Err(StreamError::Closed),
            },
            Some(Incoming::Open) => continue,
            _ => return Err(StreamError::Closed),
        }
    }
    pipe(tcp, dc, rx, stream).await
}

/// Moves bytes both ways until both directions have ended (or one side resets).
async fn pipe(
    tcp: TcpStream,
    dc: Arc<dyn DataChannel>,
    mut rx: mpsc::Receiver<Incoming>,
    mut stream: Stream,
) -> Result<(), StreamError> {
    let (mut tcp_read, mut tcp_write) = tcp.into_split();
    let dc_up = dc.clone();
    // TCP → channel.
    let upstream = async move {
        let mut buf = vec![0u8; peer_core::transfer::CHUNK_SIZE];
        loop {
            match tcp_read.read(&mut buf).await {
                Ok(0) => {
                    dc_up.send_text(&StreamMessage::End.encode()).await?;
                    return Ok::<bool, StreamError>(true);
                }
                Ok(n) => dc_up.send(BytesMut::from(&buf[..n])).await?,
                Err(e) => {
                    let reset = StreamMessage::Reset {
                        reason: e.to_string(),
                    };
                    let _ = dc_up.send_text(&reset.encode()).await;
                    return Ok(false);
                }
            }
        }
    };
    // Channel → TCP.
    let downstream = async move {
        while let Some(item) = rx.recv().await {
            match item {
                Incoming::Data(data) => tcp_write.write_all(&data).await?,
                Incoming::Text(t) => match stream.on_text(&t) {
                    Heard::Ended => {
                        tcp_write.shutdown().await?;
                        return Ok::<bool, StreamError>(true);
                    }
                    Heard::Reset(_) => return Ok(false),
                    _ => continue,
                },
                Incoming::Open => continue,
                Incoming::Closed => return Ok(false),
            }
        }
        Ok(false)
    };
    tokio::pin!(upstream, downstream);
    let (mut up_done, mut down_done) = (false, false);
    let result = loop {
        tokio::select! {
            r = &mut upstream, if !up_done => match r {
                Ok(true) => up_done = true,
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            },
            r = &mut downstream, if !down_done => match r {
                Ok(true) => down_done = true,
                // A reset from the peer, or the channel went away: abort (dropping the
                // socket halves resets the TCP connection if data is unread).
                Ok(false) => break Ok(()),
                Err(e) => break Err(e),
            },
        }
        if up_done && down_done {
            break Ok(());
        }
    };
    if result.is_ok() {
        drain(&dc).await;
    }
    let _ = dc.close().await;
    result
}

/// Waits (a bounded while) until everything sent on `dc` has left, so closing it loses nothing.
async fn drain(dc: &Arc<dyn DataChannel>) {
    for _ in 0..500 {
        match dc.outstanding_bytes().await {
            Ok(0) | Err(_) => return,
            Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use peer_core::channels::ServiceKind;

    fn service(token: Option<&str>) -> Exposed {
        Exposed {
            info: ServiceInfo {
                name: "web".into(),
                kind: ServiceKind::Http,
                protected: token.is_some(),
            },
            addr: "127.0.0.1:8080".parse().unwrap(),
            token: token.map(str::to_string),
        }
    }

    fn open(name: &str, token: Option<&str>) -> Heard {
        Heard::Open {
            service: name.into(),
            token: token.map(str::to_string),
        }
    }

    fn gate(token: Option<&str>) -> Gate {
        Gate::new(service(token))
    }

    const T0: Duration = Duration::from_secs(1);

    #[test]
    fn only_the_exposed_service_is_admitted() {
        let g = gate(None);
        assert!(g.admit(&open("web", None), "p", T0).is_ok());
        assert!(g.admit(&open("127.0.0.1:22", None), "p", T0).is_err());
        assert!(g.admit(&open("ssh", None), "p", T0).is_err());
        assert!(g.admit(&Heard::Ended, "p", T0).is_err());
        assert!(g.admit(&Heard::Ignored, "p", T0).is_err());
    }

    #[test]
    fn a_token_is_checked() {
        let g = gate(Some("k"));
        assert!(g.admit(&open("web", Some("k")), "p", T0).is_ok());
        assert!(g.admit(&open("web", None), "p", T0).is_err());
        assert!(g.admit(&open("web", Some("x")), "p", T0).is_err());
    }

    #[test]
    fn wrong_tokens_lock_the_peer_out_even_with_the_right_one() {
        let g = gate(Some("k"));
        for _ in 0..4 {
            let e = g.admit(&open("web", Some("x")), "mallory", T0);
            assert!(matches!(e, Err(StreamError::Refused(_))), "{e:?}");
        }
        let fifth = g.admit(&open("web", Some("x")), "mallory", T0);
        assert!(matches!(fifth, Err(StreamError::Blocked(_))), "{fifth:?}");
        let right = g.admit(&open("web", Some("k")), "mallory", T0 + T0);
        let Err(StreamError::Blocked(b)) = right else {
            panic!("the right token during the cool-down: {right:?}");
        };
        assert_eq!(b.retry_in_secs(), 59);
        assert_eq!(
            StreamError::Blocked(b).to_string(),
            "too many wrong tokens; retry in 59 s"
        );
        // Another peer is not affected; the same one is let in after the cool-down.
        assert!(g.admit(&open("web", Some("k")), "alice", T0).is_ok());
        let after = T0 + Duration::from_secs(61);
        assert!(g.admit(&open("web", Some("k")), "mallory", after).is_ok());
    }

    #[test]
    fn an_open_service_counts_nothing() {
        let g = gate(None);
        for _ in 0..20 {
            assert!(g.admit(&open("web", Some("x")), "p", T0).is_ok());
        }
    }
}
