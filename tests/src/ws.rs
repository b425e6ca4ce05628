//! A bare signaling client for black-box server tests.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use signal_protocol::{ClientMessage, ServerMessage, PROTOCOL_VERSION};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// One raw WebSocket to the server.
pub struct WsClient {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// How long a test waits for a message it expects before failing (generous: not a timing test).
pub const PATIENCE: Duration = Duration::from_secs(20);

impl WsClient {
    /// Opens `url`.
    pub async fn connect(url: &str) -> WsClient {
        let (ws, _) = tokio_tungstenite::connect_async(url)
            .await
            .expect("websocket connects");
        WsClient { ws }
    }

    /// Opens `url` and joins with `hello`; returns the client and its welcome.
    pub async fn join(url: &str, name: Option<&str>) -> (WsClient, ServerMessage) {
        let mut c = WsClient::connect(url).await;
        c.send(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            name: name.map(str::to_string),
            resume: None,
            kind: Default::default(),
        })
        .await;
        let welcome = c.recv().await;
        assert!(
            matches!(welcome, ServerMessage::Welcome { .. }),
            "expected welcome, got {welcome:?}"
        );
        (c, welcome)
    }

    /// Sends a protocol message.
    pub async fn send(&mut self, msg: &ClientMessage) {
        let text = serde_json::to_string(msg).expect("serialize");
        self.send_raw(&text).await;
    }

    /// Sends any text frame.
    pub async fn send_raw(&mut self, text: &str) {
        self.ws
            .send(Message::text(text.to_string()))
            .await
            .expect("send");
    }

    /// The next protocol message (pings are answered on the way).
    pub async fn recv(&mut self) -> ServerMessage {
        self.try_recv(PATIENCE)
            .await
            .expect("expected a message from the server")
    }

    /// The next protocol message within `wait`, or `None` (timeout or closed).
    pub async fn try_recv(&mut self, wait: Duration) -> Option<ServerMessage> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let next = tokio::time::timeout_at(deadline, self.ws.next())
                .await
                .ok()??;
            match next.ok()? {
                Message::Text(t) => {
                    return Some(serde_json::from_str(&t).expect("server sends valid JSON"))
                }
                Message::Close(_) => return None,
                _ => continue,
            }
        }
    }

    /// Whether the server closed the socket within `wait` (skipping other messages).
    pub async fn closed_within(&mut self, wait: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            match tokio::time::timeout_at(deadline, self.ws.next()).await {
                Err(_) => return false,
                Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return true,
                Ok(Some(Ok(_))) => continue,
            }
        }
    }
}

/// Floods `stalled` (a peer that never reads) with up to 400 large signals from `from`, about
/// 24 MiB, more than the kernel buffers on both sides hold (the rate limiter's burst lets them
/// through, the queue refuses some as congested), watching `from`'s replies; then waits up to
/// `within` more. Whether `from` was told that `stalled` left.
pub async fn flood_until_left(from: &mut WsClient, stalled: &str, within: Duration) -> bool {
    let sdp = "v".repeat(60_000);
    let left_now =
        |m: &ServerMessage| matches!(m, ServerMessage::PeerLeft { peer_id } if peer_id == stalled);
    for _ in 0..400 {
        from.send(&ClientMessage::Signal {
            to: stalled.to_string(),
            data: signal_protocol::PeerSignal::Offer { sdp: sdp.clone() },
        })
        .await;
        // Drain the replies (congestion errors) without waiting.
        while let Some(m) = from.try_recv(Duration::from_millis(1)).await {
            if left_now(&m) {
                return true;
            }
        }
    }
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if let Some(m) = from.try_recv(Duration::from_secs(1)).await {
            if left_now(&m) {
                return true;
            }
        }
    }
    false
}

/// The peer id a welcome hands out (panics on any other message: the test expected a welcome).
pub fn peer_id(welcome: &ServerMessage) -> String {
    match welcome {
        ServerMessage::Welcome { peer_id, .. } => peer_id.clone(),
        other => panic!("expected welcome, got {other:?}"),
    }
}
