//! The signaling client: a WebSocket to the rendezvous server that is opened again whenever it
//! is lost. What to say on it (`hello` with a resume token) and when to reconnect (backoff) is
//! decided by the session's [`peer_core::room::Room`]; this only moves messages.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use peer_core::link::RoomLink;
use signal_protocol::{ClientMessage, ServerMessage};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_tungstenite::tungstenite::Message;

/// How long to wait for the server to accept the WebSocket.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// How long the server may stay silent (it pings every 10 s by default) before the connection
/// counts as lost.
const SILENCE: Duration = Duration::from_secs(30);

/// Messages queued for the server; beyond this, signals are dropped (the peers retry).
const QUEUE: usize = 512;

/// What happens on the server connection.
#[derive(Debug)]
pub enum Link {
    /// The WebSocket is open: say hello.
    Open,
    /// A message from the server.
    Message(ServerMessage),
    /// The connection could not be opened, or was lost.
    Lost(String),
    /// The server's certificate is not trusted: retrying will not help until the user acts
    /// (e.g. `--ca-cert`).
    Untrusted(String),
}

enum Command {
    Send(ClientMessage),
    /// Open the connection after this delay (when it is not open).
    Connect(Duration),
    /// Say `leave` and close.
    Leave,
}

/// Sends client messages to the server (cheap to clone).
#[derive(Clone)]
pub struct Outbox(mpsc::Sender<Command>);

impl Outbox {
    /// Queues a message; dropped when the connection is down or the queue is full (the loss is
    /// reported by [`Link::Lost`], and whoever sent it retries).
    pub fn send(&self, msg: ClientMessage) {
        if self.0.try_send(Command::Send(msg)).is_err() {
            tracing::debug!("message to the server dropped (queue full or closed)");
        }
    }
}

/// The server connection: its outbox, its events, and the task that owns the WebSocket.
pub struct Server {
    outbox: Outbox,
    events: mpsc::Receiver<Link>,
    task: JoinHandle<()>,
}

impl Server {
    /// Starts the client for `link`; it connects at once.
    pub fn start(link: &RoomLink, tls: Arc<rustls::ClientConfig>) -> Server {
        let (cmd_tx, cmd_rx) = mpsc::channel(QUEUE);
        let (ev_tx, events) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(link.ws_url(), tls, cmd_rx, ev_tx));
        let outbox = Outbox(cmd_tx);
        let _ = outbox.0.try_send(Command::Connect(Duration::ZERO));
        Server {
            outbox,
            events,
            task,
        }
    }

    /// A handle for sending.
    pub fn outbox(&self) -> Outbox {
        self.outbox.clone()
    }

    /// The next thing that happened (never `None` while the client runs).
    pub async fn recv(&mut self) -> Option<Link> {
        self.events.recv().await
    }

    /// Reconnects after `delay`.
    pub fn reconnect(&self, delay: Duration) {
        let _ = self.outbox.0.try_send(Command::Connect(delay));
    }

    /// Leaves the room (so the others see it at once) and stops the client.
    pub async fn leave(self) {
        let _ = self.outbox.0.try_send(Command::Leave);
        drop(self.outbox);
        let mut task = self.task;
        if tokio::time::timeout(Duration::from_secs(2), &mut task)
            .await
            .is_err()
        {
            task.abort();
        }
    }
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn run(
    url: String,
    tls: Arc<rustls::ClientConfig>,
    mut commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Link>,
) {
    loop {
        // Down: wait for the session's word to connect (signals meanwhile are dropped).
        let delay = loop {
            match commands.recv().await {
                Some(Command::Connect(delay)) => break delay,
                Some(Command::Send(_)) => {}
                Some(Command::Leave) | None => return,
            }
        };
        tokio::time::sleep(delay).await;
        let mut ws = match open(&url, &tls).await {
            Ok(ws) => ws,
            Err(link) => {
                if events.send(link).await.is_err() {
                    return;
                }
                continue;
            }
        };
        if events.send(Link::Open).await.is_err() {
            return;
        }
        // The server pings every few seconds; silence this long means it is gone (a network
        // that drops packets sends no FIN).
        let mut last_heard = tokio::time::Instant::now();
        let mut check = tokio::time::interval(Duration::from_secs(2));
        let reason = loop {
            tokio::select! {
                _ = check.tick() => {
                    if last_heard.elapsed() > SILENCE {
                        break format!("no word from the server for {} s", SILENCE.as_secs());
                    }
                }
                command = commands.recv() => match command {
                    Some(Command::Send(msg)) => {
                        let Ok(text) = serde_json::to_string(&msg) else { continue };
                        if let Err(e) = ws.send(Message::text(text)).await {
                            break e.to_string();
                        }
                    }
                    Some(Command::Connect(_)) => {}
                    Some(Command::Leave) | None => {
                        if let Ok(text) = serde_json::to_string(&ClientMessage::Leave) {
                            let _ = ws.send(Message::text(text)).await;
                        }
                        let _ = tokio::time::timeout(Duration::from_secs(1), ws.close(None)).await;
                        return;
                    }
                },
                incoming = ws.next() => {
                    last_heard = tokio::time::Instant::now();
                    match incoming {
                    Some(Ok(Message::Text(text))) => match serde_json::from_str::<ServerMessage>(&text) {
                        Ok(msg) => {
                            if events.send(Link::Message(msg)).await.is_err() {
                                return;
                            }
                        }
                        Err(e) => tracing::warn!("unreadable message from the server: {e}"),
                    },
                    Some(Ok(Message::Close(frame))) => {
                        break match frame {
                            Some(f) if !f.reason.is_empty() => format!("the server closed the connection: {}", f.reason),
                            _ => "the server closed the connection".to_string(),
                        };
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => break e.to_string(),
                    None => break "the connection ended".to_string(),
                    }
                }
            }
        };
        if events.send(Link::Lost(reason)).await.is_err() {
            return;
        }
    }
}

/// Opens the WebSocket: `wss://` links use `tls` (public roots plus `--ca-cert`).
async fn open(url: &str, tls: &Arc<rustls::ClientConfig>) -> Result<Socket, Link> {
    let connect = tokio_tungstenite::connect_async_tls_with_config(
        url,
        None,
        true,
        Some(tokio_tungstenite::Connector::Rustls(tls.clone())),
    );
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(e)) => {
            let reason = format!("cannot reach the server at {url}: {e}");
            Err(if is_untrusted(&e) {
                Link::Untrusted(reason)
            } else {
                Link::Lost(reason)
            })
        }
        Err(_) => Err(Link::Lost(format!(
            "cannot reach the server at {url}: timed out"
        ))),
    }
}

/// Whether the handshake failed because the server's certificate is not trusted.
fn is_untrusted(e: &tokio_tungstenite::tungstenite::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(rustls::Error::InvalidCertificate(_)) = err.downcast_ref::<rustls::Error>() {
            return true;
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if let Some(rustls::Error::InvalidCertificate(_)) =
                io.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>())
            {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// What the server said on joining, for tools that drive peers by hand (the bench).
#[derive(Debug, Clone)]
pub struct Welcome {
    /// Our id in the room.
    pub peer_id: signal_protocol::PeerId,
    /// The peers that were there first.
    pub peers: Vec<signal_protocol::PeerInfo>,
    /// The ICE servers to use.
    pub ice_servers: Vec<signal_protocol::IceServer>,
}

/// Connects once, says `hello`, and waits for the welcome (no reconnecting: for the bench).
pub async fn join(
    link: &RoomLink,
    name: Option<String>,
    tls: Arc<rustls::ClientConfig>,
) -> anyhow::Result<(Welcome, Outbox, Server)> {
    let mut server = Server::start(link, tls);
    let outbox = server.outbox();
    let welcome = tokio::time::timeout(CONNECT_TIMEOUT, async {
        loop {
            match server.recv().await {
                Some(Link::Open) => outbox.send(ClientMessage::Hello {
                    version: signal_protocol::PROTOCOL_VERSION,
                    name: name.clone(),
                    resume: None,
                    kind: signal_protocol::PeerKind::Native,
                }),
                Some(Link::Message(ServerMessage::Welcome {
                    peer_id,
                    peers,
                    ice_servers,
                    ..
                })) => {
                    return Ok(Welcome {
                        peer_id,
                        peers,
                        ice_servers,
                    })
                }
                Some(Link::Message(ServerMessage::Error { code, message })) => {
                    anyhow::bail!("the server refused to join: {message} ({code})")
                }
                Some(Link::Message(_)) => {}
                Some(Link::Lost(reason)) | Some(Link::Untrusted(reason)) => anyhow::bail!(reason),
                None => anyhow::bail!("the signaling client stopped"),
            }
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("no welcome from the server in time"))??;
    Ok((welcome, outbox, server))
}
