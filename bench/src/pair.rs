//! Two native peers meeting through the real server, as `burrow` does it (its `peer` and
//! `signaling` modules), for the connect and throughput benches.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context};
use native_peer::peer::{Peer, PeerEvent};
use native_peer::rtc::{Network, Options};
use native_peer::signaling;
use peer_core::link::RoomLink;
use signal_protocol::{IceServer, ServerMessage};
use tokio::sync::{mpsc, oneshot};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

/// The channel pair a side's peer connections report on.
type PeerEvents = (
    mpsc::Sender<(String, PeerEvent)>,
    mpsc::Receiver<(String, PeerEvent)>,
);

/// Runs one side: creates peers as the server announces them, relays their signals and
/// candidates, and hands out the first data channel that opens.
#[allow(clippy::too_many_arguments)]
fn drive(
    me: String,
    ice: Vec<IceServer>,
    options: Options,
    outbox: signaling::Outbox,
    mut server: signaling::Server,
    mut first: Option<Peer>,
    opened: oneshot::Sender<Arc<dyn DataChannel>>,
    events: PeerEvents,
) -> tokio::task::JoinHandle<()> {
    let network = Network::for_server_host("127.0.0.1", None);
    let (peer_tx, mut peer_rx) = events;
    let mut opened = Some(opened);
    tokio::spawn(async move {
        let mut peer = first.take();
        loop {
            tokio::select! {
                msg = server.recv() => match msg {
                    Some(signaling::Link::Message(ServerMessage::PeerJoined { peer: info })) => {
                        match Peer::new(&me, info.id, None, &ice, network, options, outbox.clone(), peer_tx.clone()).await {
                            Ok(p) => peer = Some(p),
                            Err(e) => eprintln!("bench: peer: {e}"),
                        }
                    }
                    Some(signaling::Link::Message(ServerMessage::Signal { data, .. })) => {
                        if let Some(p) = peer.as_mut() {
                            let _ = p.on_signal(data).await;
                        }
                    }
                    Some(signaling::Link::Lost(_)) | None => break,
                    Some(_) => {}
                },
                Some((_, event)) = peer_rx.recv() => match event {
                    PeerEvent::LocalCandidate(c) => {
                        if let Some(p) = &peer {
                            p.trickle(c);
                        }
                    }
                    PeerEvent::IncomingChannel(dc) => {
                        if let Some(tx) = opened.take() {
                            let _ = tx.send(dc);
                        }
                    }
                    // The reference runs the crate as it comes: no nudges.
                    _ if options.crate_defaults => {}
                    PeerEvent::IceConnected => {
                        if let Some(p) = &peer {
                            p.nudge().await;
                        }
                    }
                    PeerEvent::State(state) => {
                        if let (Some(p), webrtc::peer_connection::RTCPeerConnectionState::Connected) = (&peer, state) {
                            p.nudge_until_open();
                        }
                    }
                    PeerEvent::Track(_) => {}
                },
            }
        }
        if let Some(p) = peer {
            p.close().await;
        }
    })
}

/// A connected pair: B's channel to A, A's end of it, and how long it took.
pub struct Pair {
    /// The joining side's channel (B).
    pub b: Arc<dyn DataChannel>,
    /// The first side's end (A).
    pub a: Arc<dyn DataChannel>,
    /// From B's join until the first message came back.
    pub elapsed: Duration,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Drop for Pair {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Joins A, then times B's join → channel open → "ping" answered by "pong".
pub async fn connect(
    link: &RoomLink,
    options: Options,
    use_ice_servers: bool,
) -> anyhow::Result<Pair> {
    let (wa, outbox_a, server_a) =
        signaling::join(link, None, native_peer::tls::client_config(None)?).await?;
    let (a_open_tx, a_open_rx) = oneshot::channel();
    let ice_a = if use_ice_servers {
        wa.ice_servers.clone()
    } else {
        Vec::new()
    };
    let task_a = drive(
        wa.peer_id,
        ice_a,
        options,
        outbox_a,
        server_a,
        None,
        a_open_tx,
        mpsc::channel(1024),
    );

    let start = Instant::now();
    let (wb, outbox_b, server_b) =
        signaling::join(link, None, native_peer::tls::client_config(None)?).await?;
    let a_info = wb
        .peers
        .first()
        .cloned()
        .ok_or_else(|| anyhow!("A is not in the room"))?;
    let ice_b = if use_ice_servers {
        wb.ice_servers.clone()
    } else {
        Vec::new()
    };
    let network = Network::for_server_host("127.0.0.1", None);
    let (peer_tx, peer_rx) = mpsc::channel(1024);
    let mut b = Peer::new(
        &wb.peer_id,
        a_info.id,
        None,
        &ice_b,
        network,
        options,
        outbox_b.clone(),
        peer_tx.clone(),
    )
    .await?;
    let b_dc = b.start().await?;
    let (unused_tx, _) = oneshot::channel();
    let task_b = drive(
        wb.peer_id,
        ice_b,
        options,
        outbox_b,
        server_b,
        Some(b),
        unused_tx,
        (peer_tx, peer_rx),
    );

    // B: wait for open, say ping.
    wait_open(&b_dc).await?;
    b_dc.send_text("ping").await?;
    // A: answer pong.
    let a_dc = tokio::time::timeout(Duration::from_secs(30), a_open_rx)
        .await
        .context("A never saw the channel")??;
    let a = a_dc.clone();
    tokio::spawn(async move {
        while let Some(ev) = a.poll().await {
            if let DataChannelEvent::OnMessage(m) = ev {
                if m.is_string && &m.data[..] == b"ping" {
                    let _ = a.send_text("pong").await;
                    break;
                }
            }
        }
    });
    // B: wait for pong.
    loop {
        match tokio::time::timeout(Duration::from_secs(30), b_dc.poll()).await {
            Ok(Some(DataChannelEvent::OnMessage(m))) if m.is_string && &m.data[..] == b"pong" => {
                break
            }
            Ok(Some(_)) => continue,
            _ => return Err(anyhow!("no pong")),
        }
    }
    Ok(Pair {
        b: b_dc,
        a: a_dc,
        elapsed: start.elapsed(),
        tasks: vec![task_a, task_b],
    })
}

async fn wait_open(dc: &Arc<dyn DataChannel>) -> anyhow::Result<()> {
    loop {
        match tokio::time::timeout(Duration::from_secs(30), dc.poll()).await {
            Ok(Some(DataChannelEvent::OnOpen)) => return Ok(()),
            Ok(Some(_)) => continue,
            _ => return Err(anyhow!("the channel never opened")),
        }
    }
}
