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
use std::sync::Arc;

use bytes::BytesMut;
use peer_core::channels::{ServiceInfo, StreamMessage, STREAM_LABEL};
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

/// Why a stream ended badly.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The exposing peer refused.
    #[error("refused: {0}")]
    Refused(String),
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

/// The exposing side: answers one incoming stream channel by connecting to the service.
pub async fn accept(dc: Arc<dyn DataChannel>, service: Arc<Exposed>) -> Result<(), StreamError> {
    let mut rx = reader(dc.clone());
    let open = loop {
        match rx.recv().await {
            Some(Incoming::Text(t)) => break StreamMessage::decode(&t).ok(),
            Some(Incoming::Open) => continue,
            _ => return Err(StreamError::Closed),
        }
    };
    let refuse = |reason: String| StreamMessage::Refused { reason };
    if let Err(reason) = admit(open.as_ref(), &service) {
        let _ = dc.send_text(&refuse(reason.clone()).encode()).await;
        drain(&dc).await;
        let _ = dc.close().await;
        return Err(StreamError::Refused(reason));
    }
    // The one address this peer was told to expose: nothing in the request can change it.
    let tcp = match TcpStream::connect(service.addr).await {
        Ok(tcp) => tcp,
        Err(e) => {
            let msg = refuse(format!("the service is not answering: {e}"));
            let _ = dc.send_text(&msg.encode()).await;
            drain(&dc).await;
            let _ = dc.close().await;
            return Err(e.into());
        }
    };
    dc.send_text(&StreamMessage::Accepted.encode()).await?;
    pipe(tcp, dc, rx).await
}

/// Whether a stream's first message may open `service`: the right name, and its token if it
/// has one.
fn admit(open: Option<&StreamMessage>, service: &Exposed) -> Result<(), String> {
    match open {
        Some(StreamMessage::Open { service: name, .. }) if *name != service.info.name => {
            Err(format!("no service named '{name}' here"))
        }
        Some(StreamMessage::Open { token, .. })
            if service.token.is_some() && *token != service.token =>
        {
            Err("wrong or missing access token".into())
        }
        Some(StreamMessage::Open { .. }) => Ok(()),
        _ => Err("the first message must be open".into()),
    }
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
    let open = StreamMessage::Open {
        service: service.to_string(),
        token,
    };
    dc.send_text(&open.encode()).await?;
    loop {
        match rx.recv().await {
            Some(Incoming::Text(t)) => match StreamMessage::decode(&t) {
                Ok(StreamMessage::Accepted) => break,
                Ok(StreamMessage::Refused { reason }) => return Err(StreamError::Refused(reason)),
                _ => return Err(StreamError::Closed),
            },
            Some(Incoming::Open) => continue,
            _ => return Err(StreamError::Closed),
        }
    }
    pipe(tcp, dc, rx).await
}

/// Moves bytes both ways until both directions have ended (or one side resets).
async fn pipe(
    tcp: TcpStream,
    dc: Arc<dyn DataChannel>,
    mut rx: mpsc::Receiver<Incoming>,
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
                Incoming::Text(t) => match StreamMessage::decode(&t) {
                    Ok(StreamMessage::End) => {
                        tcp_write.shutdown().await?;
                        return Ok::<bool, StreamError>(true);
                    }
                    Ok(StreamMessage::Reset { .. }) => return Ok(false),
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

    fn open(name: &str, token: Option<&str>) -> StreamMessage {
        StreamMessage::Open {
            service: name.into(),
            token: token.map(str::to_string),
        }
    }

    #[test]
    fn only_the_exposed_service_is_admitted() {
        let s = service(None);
        assert!(admit(Some(&open("web", None)), &s).is_ok());
        assert!(admit(Some(&open("127.0.0.1:22", None)), &s).is_err());
        assert!(admit(Some(&open("ssh", None)), &s).is_err());
        assert!(admit(Some(&StreamMessage::End), &s).is_err());
        assert!(admit(None, &s).is_err());
    }

    #[test]
    fn a_token_is_checked() {
        let s = service(Some("k"));
        assert!(admit(Some(&open("web", Some("k"))), &s).is_ok());
        assert!(admit(Some(&open("web", None)), &s).is_err());
        assert!(admit(Some(&open("web", Some("x"))), &s).is_err());
    }
}
