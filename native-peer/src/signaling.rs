//! The signaling client: one WebSocket to the rendezvous server, `hello`, then messages both ways.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peer_core::link::RoomLink;
use signal_protocol::{
    ClientMessage, ErrorCode, IceServer, PeerId, PeerInfo, ServerMessage, PROTOCOL_VERSION,
};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

/// How long to wait for the server to accept the WebSocket and answer `hello`.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why joining a room failed.
#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    /// The server could not be reached.
    #[error("cannot reach the server at {url}: {reason}")]
    Unreachable {
        /// The WebSocket URL tried.
        url: String,
        /// What went wrong.
        reason: String,
    },
    /// The server refused the join.
    #[error("the server refused to join: {message} ({code})")]
    Refused {
        /// The protocol error code.
        code: ErrorCode,
        /// The server's explanation.
        message: String,
    },
    /// The server said something unexpected.
    #[error("unexpected answer from the server: {0}")]
    Protocol(String),
}

/// What the server told us on joining.
#[derive(Debug, Clone)]
pub struct Welcome {
    /// Our id in the room.
    pub peer_id: PeerId,
    /// The peers that were there first.
    pub peers: Vec<PeerInfo>,
    /// The ICE servers to use.
    pub ice_servers: Vec<IceServer>,
}

/// Sends client messages to the server (cheap to clone).
#[derive(Clone)]
pub struct Outbox(mpsc::UnboundedSender<ClientMessage>);

impl Outbox {
    /// Queues a message; silently dropped if the connection is gone (the inbox reports that).
    pub fn send(&self, msg: ClientMessage) {
        let _ = self.0.send(msg);
    }
}

/// Connects, says `hello`, and waits for the welcome. Messages after the welcome arrive on the
/// returned receiver, which closes when the connection is lost.
pub async fn join(
    link: &RoomLink,
    name: Option<String>,
    tls: Arc<rustls::ClientConfig>,
) -> Result<(Welcome, Outbox, mpsc::UnboundedReceiver<ServerMessage>), JoinError> {
    let url = link.ws_url();
    let unreachable = |reason: String| JoinError::Unreachable {
        url: url.clone(),
        reason,
    };
    // `wss://` links use `tls` (public roots plus `--ca-cert`); `ws://` ones ignore it.
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        &url,
        None,
        true,
        Some(tokio_tungstenite::Connector::Rustls(tls)),
    );
    let (mut ws, _) = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| unreachable("timed out".into()))?
        .map_err(|e| unreachable(e.to_string()))?;
    let hello = serde_json::to_string(&ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        name,
    })
    .map_err(|e| JoinError::Protocol(e.to_string()))?;
    ws.send(Message::text(hello))
        .await
        .map_err(|e| unreachable(e.to_string()))?;

    let welcome = tokio::time::timeout(CONNECT_TIMEOUT, async {
        while let Some(frame) = ws.next().await {
            let frame = frame.map_err(|e| unreachable(e.to_string()))?;
            let Message::Text(text) = frame else { continue };
            return match serde_json::from_str::<ServerMessage>(&text) {
                Ok(ServerMessage::Welcome {
                    peer_id,
                    peers,
                    ice_servers,
                    ..
                }) => Ok(Welcome {
                    peer_id,
                    peers,
                    ice_servers,
                }),
                Ok(ServerMessage::Error { code, message }) => {
                    Err(JoinError::Refused { code, message })
                }
                Ok(other) => Err(JoinError::Protocol(format!("{other:?}"))),
                Err(e) => Err(JoinError::Protocol(e.to_string())),
            };
        }
        Err(unreachable("the server closed the connection".into()))
    })
    .await
    .map_err(|_| unreachable("no answer to hello".into()))??;

    let (out_tx, mut out_rx) = mpsc::unbounded_channel::<ClientMessage>();
    let (in_tx, in_rx) = mpsc::unbounded_channel::<ServerMessage>();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                outgoing = out_rx.recv() => {
                    let Some(msg) = outgoing else { break };
                    let Ok(text) = serde_json::to_string(&msg) else { continue };
                    if ws.send(Message::text(text)).await.is_err() {
                        break;
                    }
                }
                incoming = ws.next() => {
                    let text = match incoming {
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break,
                        Some(Ok(_)) => continue,
                    };
                    match serde_json::from_str::<ServerMessage>(&text) {
                        Ok(msg) => {
                            if in_tx.send(msg).is_err() {
                                break;
                            }
                        }
                        Err(e) => tracing::warn!("unreadable message from the server: {e}"),
                    }
                }
            }
        }
        let _ = ws.close(None).await;
    });
    Ok((welcome, Outbox(out_tx), in_rx))
}
