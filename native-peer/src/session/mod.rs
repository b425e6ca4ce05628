//! A room session: the full mesh of peer connections, driven by one event loop that reads the
//! server, the peers' callbacks, stdin (chat) and finished transfers.
//!
//! The room's rules (who offers, when to restart, what to tell the user) are `peer_core`'s;
//! this module carries them out. What each mode adds lives beside it: `send` (files out, and
//! when the session is done), `join` (files in), `expose` (streams let in through the gate),
//! `forward` (local TCP connections out as streams), `in_voice` (recordings, the player).

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{anyhow, Context};
use peer_core::channels::{ControlMessage, ServiceInfo, CONTROL_LABEL, FILE_LABEL, STREAM_LABEL};
use peer_core::control::Heard;
use peer_core::link::RoomLink;
use peer_core::path::PathNews;
use peer_core::room::{Action, LinkState, Notice, Room};
use signal_protocol::{IceServer, PeerInfo};
use std::time::{Duration, Instant};
use tokio::io::AsyncBufReadExt;
use tokio::sync::mpsc;
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::peer_connection::RTCPeerConnectionState;

use crate::events::{Event, Printer, RoomEvent};
use crate::files;
use crate::peer::{Peer, PeerEvent};
use crate::rtc::{self, Network};
use crate::signaling::{self, Link, Outbox};
use crate::streams;
use crate::voice;

mod admin;
mod expose;
mod forward;
mod in_voice;
mod join;
mod send;

use forward::accept_tcp;
pub use send::check_files;

/// What the session is for.
pub enum Mode {
    /// Stay in the room: chat from stdin (unless `read_stdin` is off), receive files into
    /// `accept` when given.
    Join {
        /// Folder for received files; `None` refuses files.
        accept: Option<PathBuf>,
        /// Most files one client may send us at once.
        max_files_at_once: usize,
        /// The largest file accepted (none: what the disk has free).
        max_file_size: Option<u64>,
        /// Read chat lines from stdin; its end quits.
        read_stdin: bool,
        /// Voice: what to send, where to record.
        voice: Voice,
    },
    /// Send these files to the peers in the room (or the first to join), then quit.
    Send {
        /// The files.
        files: Vec<PathBuf>,
        /// Give up when they are not delivered within this time (`None`: wait for a peer as
        /// long as it takes).
        timeout: Option<Duration>,
    },
    /// Offer local services to the room; streams peers open are connected to them.
    Expose {
        /// The services.
        services: Vec<streams::Exposed>,
        /// Most streams (and UDP sessions) one peer may have open at once.
        max_streams: usize,
        /// The config file they came from, read again when it changes or on SIGHUP.
        config: Option<PathBuf>,
        /// How often each service's health is checked (zero: never).
        health_every: Duration,
    },
    /// Turn each TCP connection accepted on `listen` into a stream to the peer exposing
    /// `service` (or the first service offered).
    Forward {
        /// Where to accept connections.
        listen: std::net::SocketAddr,
        /// The service's name, if several are offered.
        service: Option<String>,
        /// Where its access token comes from, if it has one.
        token: streams::TokenSource,
    },
}

/// Voice in join mode (`--voice-play`, `--voice-record`).
#[derive(Default)]
pub struct Voice {
    /// The clip to send as our voice, looped.
    pub clip: Option<voice::Clip>,
    /// Where to write what each peer says.
    pub record: Option<PathBuf>,
    /// How much of it to keep.
    pub limits: voice::RecordLimits,
}

/// Options common to every mode.
pub struct Options {
    /// Our display name.
    pub name: Option<String>,
    /// Where to print events.
    pub printer: Printer,
    /// Local IP to bind, overriding the automatic choice.
    pub bind: Option<std::net::IpAddr>,
    /// TLS trust for `wss://` servers.
    pub tls: Arc<rustls::ClientConfig>,
    /// Relayed candidates only.
    pub relay_only: bool,
    /// Serve the status page (`burrow status`) here.
    pub admin: Option<std::net::SocketAddr>,
}

/// Things the loop hears about besides the server and the peers' callbacks.
enum Internal {
    ControlOpen(String, Arc<dyn DataChannel>),
    /// A text on a peer's control channel (`peer_core::control` says what it means).
    ControlText(String, String),
    /// A reading of a peer's path, off the session loop (the first one even without a pair).
    Path(String, Option<rtc::PathInfo>),
    SendDone(String, String, Result<files::Done, files::FileError>),
    Received(String, Result<files::Done, (String, files::FileError)>),
    /// The selected pair stopped answering (or answers again): the link is down (or back)
    /// whatever the ICE agent says.
    Consent(String, bool),
    /// Expose mode: the config file changed (or SIGHUP): read it again.
    Reload,
    /// Expose mode: a service went down or came back: tell every peer.
    Announce,
}

/// How often freed memory is handed back to the system ([`give_back_memory`]).
const TRIM_EVERY: Duration = Duration::from_secs(10);

struct Session {
    /// The room across reconnects: who we are, whom we link to, when to repair (shared rules).
    room: Room,
    /// Monotonic origin of the room's clock.
    epoch: Instant,
    /// The shareable link, for the `joined` line.
    page_url: String,
    ice_servers: Vec<IceServer>,
    /// The shims that carry TURN over TCP for the `webrtc` crate.
    tcp_relays: crate::turn_tcp::TcpRelays,
    network: Network,
    outbox: Outbox,
    printer: Printer,
    peers: HashMap<String, Peer>,
    peer_tx: mpsc::Sender<(String, PeerEvent)>,
    internal_tx: mpsc::Sender<Internal>,
    accept: Option<PathBuf>,
    /// Files being received at once, per client.
    intake: Arc<files::Intake>,
    /// Send mode: files to send, peers still owed them, and whether any transfer failed.
    to_send: Vec<PathBuf>,
    owed: HashSet<String>,
    pending_sends: HashMap<String, usize>,
    failures: usize,
    /// Send mode: some peer was chosen to receive the files.
    targeted: bool,
    /// Send mode: files confirmed by a receiver.
    delivered: usize,
    /// Expose mode: the service offered, behind its gate (token, wrong-token limit).
    exposed: Option<Arc<streams::Gate>>,
    /// The services each peer offers.
    offered: HashMap<String, Vec<ServiceInfo>>,
    /// Forward mode: stream channels are opened ahead toward peers that offer services.
    forwarding: bool,
    /// Forward mode: the UDP side, for when the service is a UDP one.
    forward_udp: Option<forward::Udp>,
    /// Forward mode: what its streams carried.
    carried: Arc<crate::meter::Meter>,
    /// Expose mode: the config file the services come from.
    reload_from: Option<PathBuf>,
    /// When to say hello again (the join was refused for now).
    hello_at: Option<tokio::time::Instant>,
    /// The last reason the server connection failed, so an outage is described once.
    last_loss: Option<String>,
    /// We were in the room at least once.
    joined_once: bool,
    /// Voice is on (`--voice-play` or `--voice-record`).
    voice_on: bool,
    /// Relayed candidates only (`--relay-only`).
    relay_only: bool,
    /// Sends our voice clip to every peer.
    player: Option<voice::Player>,
    /// Where recordings go.
    record_dir: Option<PathBuf>,
    record_limits: voice::RecordLimits,
    /// The recordings in progress, stopped (and their files closed) on quit.
    recordings: Vec<(
        String,
        String,
        tokio::task::JoinHandle<anyhow::Result<voice::Received>>,
    )>,
    record_stop: tokio::sync::watch::Sender<bool>,
    /// Every task the session starts (transfers, streams, control readers): reaped as they end,
    /// awaited (then cancelled) on quit, so nothing outlives the session.
    tasks: tokio::task::JoinSet<()>,
}

/// Joins the room behind `link` and runs until done (send mode), stdin ends, Ctrl-C, or a
/// refusal retrying cannot fix. Losing the server is not one: links to peers carry on, and the
/// session reconnects (with backoff) and takes its place in the room again.
pub async fn run(link: &RoomLink, mode: Mode, opts: Options) -> anyhow::Result<()> {
    let network = Network::for_server_host(link.host(), opts.bind);
    let printer = opts.printer;

    // Bounded: a peer that floods (chat, channels) waits on its own data channel, which SCTP
    // then slows down; the session loop never sends into these itself.
    let (peer_tx, mut peer_rx) = mpsc::channel(1024);
    let (internal_tx, mut internal_rx) = mpsc::channel(256);
    let mut exposed = None;
    let mut forward = None;
    let mut forward_udp = None;
    let mut reload_from = None;
    let mut health_every = None;
    let mut give_up = None;
    let mut voice = Voice::default();
    let mut files_at_once = 1;
    let mut max_file = None;
    let (accept, read_stdin, to_send) = match mode {
        Mode::Join {
            accept,
            max_files_at_once,
            max_file_size,
            read_stdin,
            voice: v,
        } => {
            voice = v;
            files_at_once = max_files_at_once;
            max_file = max_file_size;
            (accept, read_stdin, Vec::new())
        }
        Mode::Send { files, timeout } => {
            give_up = timeout.map(|t| tokio::time::Instant::now() + t);
            (None, false, files)
        }
        Mode::Expose {
            services,
            max_streams,
            config,
            health_every: every,
        } => {
            exposed = Some(Arc::new(streams::Gate::new(services, max_streams)));
            health_every = Some(every).filter(|e| !e.is_zero());
            reload_from = config;
            (None, false, Vec::new())
        }
        Mode::Forward {
            listen,
            service,
            token,
        } => {
            let listener = tokio::net::TcpListener::bind(listen)
                .await
                .with_context(|| format!("cannot listen on {listen}"))?;
            forward_udp = Some(forward::Udp::new(listen, service.clone(), token.clone()));
            forward = Some((listener, service, token));
            (None, false, Vec::new())
        }
    };
    let mut server = signaling::Server::start(link, opts.tls.clone());
    let mut session = Session {
        room: Room::new(opts.name.clone(), signal_protocol::PeerKind::Native),
        epoch: Instant::now(),
        page_url: link.page_url(),
        ice_servers: Vec::new(),
        tcp_relays: crate::turn_tcp::TcpRelays::new(opts.tls.clone()),
        network,
        outbox: server.outbox(),
        printer,
        peers: HashMap::new(),
        peer_tx,
        internal_tx,
        accept,
        intake: files::Intake::new(files_at_once, max_file),
        to_send,
        owed: HashSet::new(),
        pending_sends: HashMap::new(),
        failures: 0,
        targeted: false,
        delivered: 0,
        exposed,
        offered: HashMap::new(),
        forwarding: forward.is_some(),
        forward_udp,
        carried: Arc::default(),
        reload_from: None,
        hello_at: None,
        last_loss: None,
        joined_once: false,
        voice_on: voice.clip.is_some() || voice.record.is_some(),
        relay_only: opts.relay_only,
        player: voice.clip.map(voice::Player::start),
        record_dir: voice.record,
        record_limits: voice.limits,
        recordings: Vec::new(),
        record_stop: tokio::sync::watch::channel(false).0,
        tasks: tokio::task::JoinSet::new(),
    };

    if let Some(path) = reload_from {
        session.reload_from = Some(path.clone());
        session
            .tasks
            .spawn(expose::watch_config(path, session.internal_tx.clone()));
    }
    if let (Some(gate), Some(every)) = (&session.exposed, health_every) {
        let (gate, tx) = (gate.clone(), session.internal_tx.clone());
        session
            .tasks
            .spawn(expose::watch_health(gate, every, printer, tx));
    }

    // `--admin`: the status page asks the loop for a snapshot (answered between events).
    let (asks, mut asked) = mpsc::channel(8);
    if let Some(addr) = opts.admin {
        let listener = crate::status::listen(addr).await?;
        session.printer.print(Event::Admin {
            url: format!("http://{addr}/"),
        });
        session.tasks.spawn(crate::status::serve(listener, asks));
    }

    let mut stdin = tokio::io::BufReader::new(tokio::io::stdin()).lines();
    let stdin_open = read_stdin;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut trim = tokio::time::interval(TRIM_EVERY);
    trim.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let outcome: anyhow::Result<()> = loop {
        tokio::select! {
            event = server.recv() => {
                let Some(event) = event else {
                    break Err(anyhow!("the signaling client stopped"));
                };
                if let Err(e) = session.on_link(event, &server).await {
                    break Err(e);
                }
            }
            Some((peer, event)) = peer_rx.recv() => session.on_peer_event(&peer, event).await,
            Some(event) = internal_rx.recv() => session.on_internal(event).await,
            Some(reply) = asked.recv() => {
                let _ = reply.send(session.status());
            }
            _ = tick.tick() => {
                let actions = session.room.tick(session.now());
                session.perform(actions).await;
                while session.tasks.try_join_next().is_some() {}
            }
            _ = trim.tick() => give_back_memory(),
            () = sleep_until(session.hello_at) => {
                session.hello_at = None;
                let hello = session.room.hello();
                session.outbox.send(hello);
            }
            () = sleep_until(give_up) => {
                break Err(anyhow!("timed out before the files were delivered"));
            }
            conn = accept_tcp(&forward) => {
                if let (Ok((tcp, from)), Some((_, service, token))) = (conn, &forward) {
                    session.forward(tcp, from, service.as_deref(), token.clone());
                }
            }
            line = stdin.next_line(), if stdin_open => match line {
                Ok(Some(line)) => session.chat(&line).await,
                _ => break Ok(()),
            },
            _ = tokio::signal::ctrl_c() => break Ok(()),
        }
        if let Some(outcome) = session.send_outcome() {
            break outcome;
        }
    };
    // The status page stops first (it waits for this end to go).
    drop(asked);
    session.close_all().await;
    server.leave().await;
    outcome
}

/// Sleeps until `at`; never resolves for `None`.
async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Session {
    /// What per-client limits (wrong tokens, files at once) count peer `id` by: the server's
    /// tag of its address, which a rejoin under a new id keeps; its id when there is none.
    fn client_of(&self, id: &str) -> String {
        match self.peers.get(id).and_then(|p| p.client.as_deref()) {
            Some(tag) => format!("client {tag}"),
            None => format!("peer {id}"),
        }
    }

    /// Milliseconds on the room's clock.
    fn now(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    async fn add_peer(&mut self, info: PeerInfo, offer: bool) -> anyhow::Result<()> {
        let id = info.id;
        let options = rtc::Options {
            voice: self.voice_on,
            relay_only: self.relay_only,
            ..Default::default()
        };
        let mut peer = Peer::new(
            self.room.me().unwrap_or_default(),
            id.clone(),
            info.name,
            &self.ice_servers,
            self.network,
            options,
            self.outbox.clone(),
            self.peer_tx.clone(),
        )
        .await
        .context("cannot create a peer connection")?;
        peer.client = info.client;
        if self.voice_on {
            let track = match &self.player {
                Some(_) => Some(voice::new_track().context("cannot make an audio track")?),
                None => None,
            };
            let sender = peer
                .add_voice(track.clone(), offer)
                .await
                .context("cannot add audio")?;
            if let (Some(player), Some(track), Some(sender)) = (&self.player, track, sender) {
                player.add(&id, track, sender).await;
            }
        }
        if offer {
            let control = peer.start().await.context("cannot make an offer")?;
            self.watch_control(id.clone(), control);
        }
        self.peers.insert(id, peer);
        Ok(())
    }

    /// Something happened on the server connection.
    async fn on_link(&mut self, event: Link, server: &signaling::Server) -> anyhow::Result<()> {
        match event {
            Link::Open => {
                let hello = self.room.hello();
                self.outbox.send(hello);
            }
            Link::Message(msg) => {
                let now = self.now();
                let actions = self.room.on_server(msg, now)?;
                self.perform(actions).await;
            }
            Link::Untrusted(reason) if !self.joined_once => {
                // Most likely a private CA not given with --ca-cert: say it, do not loop.
                anyhow::bail!(reason);
            }
            Link::Lost(reason) | Link::Untrusted(reason) => {
                let now = self.now();
                let (retry_in, actions) = self.room.server_lost(now, rand::random::<f64>());
                if self.last_loss.as_deref() != Some(reason.as_str()) {
                    tracing::info!("{reason}");
                    if !self.joined_once {
                        self.warn(reason.clone());
                    }
                    self.last_loss = Some(reason);
                }
                self.hello_at = None;
                self.perform(actions).await;
                server.reconnect(retry_in);
            }
        }
        Ok(())
    }

    /// Does what the room decided.
    async fn perform(&mut self, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Connect {
                    peer,
                    offer,
                    listed,
                } => {
                    // `send` delivers to the peers already in the room, or else to the first
                    // one to join; not to whoever joins later.
                    if !self.to_send.is_empty() && (listed || !self.targeted) {
                        self.owed.insert(peer.id.clone());
                        self.targeted = true;
                    }
                    let id = peer.id.clone();
                    if let Err(e) = self.add_peer(peer, offer).await {
                        self.room.forget(&id);
                        self.warn(format!("{e:#}"));
                    }
                }
                Action::Close { peer } => self.drop_peer(&peer).await,
                Action::UseIceServers { servers } => {
                    // Fresh TURN credentials: new connections and ICE restarts (ours or the
                    // peer's) gather with them.
                    self.ice_servers = self.tcp_relays.adapt(&servers);
                    for p in self.peers.values() {
                        p.use_ice_servers(&self.ice_servers).await;
                    }
                }
                Action::RestartIce { peer } => {
                    if let Some(p) = self.peers.get_mut(&peer) {
                        if let Err(e) = p.restart_ice().await {
                            tracing::debug!(%peer, "ICE restart failed: {e}");
                        }
                    }
                }
                Action::Signal { peer, data } => {
                    let Some(p) = self.peers.get_mut(&peer) else {
                        continue;
                    };
                    if let Err(e) = p.on_signal(data).await {
                        self.warn(format!("negotiation with {peer} failed: {e}"));
                    }
                }
                Action::HelloAgain { after } => {
                    self.hello_at = Some(tokio::time::Instant::now() + after);
                }
                Action::Notify(notice) => self.notify(notice),
            }
        }
    }

    /// Tells the user what the room noticed (the page is told the same, see
    /// `peer_core::events`); the CLI shows `joined` once, with the link to share.
    fn notify(&mut self, notice: Notice) {
        let mut event = RoomEvent::from(notice);
        match &mut event {
            RoomEvent::Joined { link, peers, .. } => {
                if self.joined_once {
                    return;
                }
                self.joined_once = true;
                *link = Some(self.page_url.clone());
                if !self.to_send.is_empty() && *peers == 0 {
                    eprintln!("waiting for a peer to join {} …", self.page_url);
                }
            }
            RoomEvent::ServerBack { .. } => self.last_loss = None,
            _ => {}
        }
        self.printer.print(event);
    }

    /// Closes and forgets one peer (it left, or was forgotten).
    async fn drop_peer(&mut self, id: &str) {
        if let Some(player) = &self.player {
            player.remove(id);
        }
        if let Some(peer) = self.peers.remove(id) {
            peer.close().await;
        }
        self.offered.remove(id);
        self.refresh_udp().await;
        if self.pending_sends.contains_key(id) {
            // Its transfers fail on their own now that the connection is closed.
            tracing::debug!(peer = %id, "left during a transfer");
        }
        if self.owed.remove(id) {
            self.failures += 1;
            self.printer.print(RoomEvent::FileFailed {
                peer: id.to_string(),
                name: "(all files)".into(),
                reason: "the peer left before receiving them".into(),
                id: None,
            });
        }
    }

    async fn on_peer_event(&mut self, id: &str, event: PeerEvent) {
        let Some(peer) = self.peers.get(id) else {
            return;
        };
        match event {
            PeerEvent::LocalCandidate(c) => peer.trickle(c),
            PeerEvent::IceConnected => peer.nudge().await,
            PeerEvent::Track(track) => self.on_track(id, track),
            PeerEvent::State(state) => {
                tracing::debug!(peer = id, %state, "connection state");
                let link = match state {
                    RTCPeerConnectionState::Connected => {
                        peer.nudge_until_open();
                        LinkState::Connected
                    }
                    RTCPeerConnectionState::Disconnected => LinkState::Disconnected,
                    RTCPeerConnectionState::Failed => LinkState::Failed,
                    RTCPeerConnectionState::Closed => LinkState::Closed,
                    _ => LinkState::Connecting,
                };
                // Up only when the agent says so *and* our checks get answers.
                let link = match self.peers.get_mut(id) {
                    Some(p) => {
                        p.ice_up = link == LinkState::Connected;
                        if p.ice_up && !p.consent_up {
                            LinkState::Disconnected
                        } else {
                            link
                        }
                    }
                    None => link,
                };
                let now = self.now();
                let actions = self.room.on_link(id, link, now);
                self.perform(actions).await;
            }
            PeerEvent::IncomingChannel(dc) => {
                let Some(peer) = self.peers.get(id) else {
                    return;
                };
                match peer.own.classify(&dc) {
                    crate::own::Origin::Echo => return,
                    crate::own::Origin::Theirs => {}
                    crate::own::Origin::Unsure => {
                        // Asked again once our channels being created have their ids.
                        let (own, tx, peer) =
                            (peer.own.clone(), self.peer_tx.clone(), id.to_string());
                        self.tasks.spawn(async move {
                            own.settled().await;
                            let _ = tx.send((peer, PeerEvent::IncomingChannel(dc))).await;
                        });
                        return;
                    }
                }
                let label = dc.label().await.unwrap_or_default();
                if label == CONTROL_LABEL {
                    self.watch_control(id.to_string(), dc.clone());
                    self.control_open(id.to_string(), dc).await;
                } else if label == FILE_LABEL {
                    self.receive_file(id, dc);
                } else if label == STREAM_LABEL {
                    self.accept_stream(id, dc).await;
                } else if label == peer_core::datagram::UDP_LABEL {
                    match (&self.exposed, self.peers.get(id)) {
                        (Some(_), Some(peer)) => peer.udp.attach(dc).await,
                        _ => {
                            let _ = dc.close().await;
                        }
                    }
                } else {
                    tracing::debug!(peer = id, %label, "ignoring unknown channel");
                    let _ = dc.close().await;
                }
            }
        }
    }

    /// Reads the control channel in the background.
    fn watch_control(&mut self, peer: String, dc: Arc<dyn DataChannel>) {
        let tx = self.internal_tx.clone();
        self.tasks.spawn(async move {
            while let Some(event) = dc.poll().await {
                match event {
                    DataChannelEvent::OnOpen => {
                        let _ = tx
                            .send(Internal::ControlOpen(peer.clone(), dc.clone()))
                            .await;
                    }
                    DataChannelEvent::OnMessage(m) if m.is_string => {
                        let text = String::from_utf8_lossy(&m.data).into_owned();
                        let _ = tx.send(Internal::ControlText(peer.clone(), text)).await;
                    }
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
        });
    }

    /// A peer's control channel is open (ours or theirs, whichever comes first): the link is
    /// up; what we offer is said first (voice, services), and the path watcher starts.
    async fn control_open(&mut self, id: String, dc: Arc<dyn DataChannel>) {
        let services = self.exposed.as_ref().map(|gate| gate.infos());
        let offer = peer_core::control::Offer {
            voice: self.voice_on.then_some(self.player.is_some()),
            services: services.as_deref(),
        };
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let Some(first) = peer.control_state.opened(offer) else {
            return;
        };
        peer.control = Some(dc.clone());
        for msg in first {
            if let Err(e) = dc.send_text(&msg.encode()).await {
                tracing::debug!(peer = %id, "not told on connect: {e}");
            }
        }
        // Reading the selected pair can take a while (a stats call): the watcher reads it and
        // reports back, so the loop never waits on one peer.
        let tcp = self.tcp_relays.relayed();
        let watch = watch_path(self.internal_tx.clone(), id.clone(), peer.pc.clone(), tcp);
        if let Some(peer) = self.peers.get_mut(&id) {
            peer.path_watch = Some(self.tasks.spawn(watch));
        }
    }

    /// A path reading for `id`: reported when it is news, the peer told how we reach the
    /// relay when that changed (`peer_core::control`).
    async fn on_path(&mut self, id: String, info: Option<rtc::PathInfo>) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        let reading = peer.control_state.on_path(info);
        if let Some(path) = reading.path {
            peer.path = Some(path);
            self.room.on_path(&id, &path);
        }
        let Some(peer) = self.peers.get(&id) else {
            return;
        };
        if let (Some(msg), Some(dc)) = (&reading.tell, &peer.control) {
            if let Err(e) = dc.send_text(&msg.encode()).await {
                tracing::debug!(peer = %id, "relay transport not told: {e}");
            }
        }
        match reading.news {
            PathNews::Connected => {
                self.printer.print(RoomEvent::Connected {
                    peer: id.clone(),
                    report: reading.path.into(),
                });
                if self.owed.remove(&id) {
                    self.start_sends(&id);
                }
            }
            PathNews::Changed => self.printer.print(RoomEvent::PathChanged {
                peer: id,
                report: reading.path.into(),
            }),
            PathNews::Same => {}
        }
    }

    /// A text on `id`'s control channel, as `peer_core::control` reads it.
    async fn on_control_text(&mut self, id: String, text: &str) {
        let Some(peer) = self.peers.get_mut(&id) else {
            return;
        };
        match peer.control_state.on_text(text) {
            Ok(Heard::Chat(text)) => {
                let name = peer.name.clone();
                self.printer.print(RoomEvent::Chat {
                    from: id,
                    name,
                    text,
                });
            }
            Ok(Heard::Services(services)) => self.on_services(id, services).await,
            Ok(Heard::Voice { on, sending }) => self.printer.print(RoomEvent::Voice {
                peer: id,
                on,
                sending,
            }),
            Ok(Heard::Nothing) => {}
            Err(e) => tracing::debug!(peer = %id, "{e}"),
        }
    }

    /// The services `peer` offers now.
    async fn on_services(&mut self, peer: String, services: Vec<ServiceInfo>) {
        self.printer.print(RoomEvent::Services {
            peer: peer.clone(),
            services: services.clone(),
        });
        // Forwarding: channels ready before the first connection comes.
        let dialer = self.peers.get(&peer).map(|p| p.dialer.clone());
        if let (Some(dialer), true, false) = (dialer, self.forwarding, services.is_empty()) {
            self.tasks.spawn(async move { dialer.warm_up().await });
        }
        self.offered.insert(peer, services);
        self.refresh_udp().await;
    }

    async fn on_internal(&mut self, event: Internal) {
        match event {
            Internal::ControlOpen(id, dc) => self.control_open(id, dc).await,
            Internal::ControlText(id, text) => self.on_control_text(id, &text).await,
            Internal::Path(id, info) => self.on_path(id, info).await,
            Internal::Reload => self.reload().await,
            Internal::Announce => self.announce_all().await,
            Internal::Consent(peer, up) => {
                tracing::debug!(%peer, up, "consent of the selected pair");
                let Some(p) = self.peers.get_mut(&peer) else {
                    return;
                };
                p.consent_up = up;
                let link = match (up, p.ice_up) {
                    (false, _) => LinkState::Disconnected,
                    (true, true) => LinkState::Connected,
                    // The agent itself still says down: its own report will bring the link back.
                    (true, false) => return,
                };
                let now = self.now();
                let actions = self.room.on_link(&peer, link, now);
                self.perform(actions).await;
            }
            Internal::SendDone(to, name, result) => self.on_send_done(to, name, result),
            Internal::Received(from, result) => self.on_received(from, result),
        }
    }

    /// Sends a chat line to every connected peer.
    async fn chat(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        let text = ControlMessage::Chat {
            text: line.to_string(),
        }
        .encode();
        for peer in self.peers.values() {
            if let Some(dc) = &peer.control {
                if let Err(e) = dc.send_text(&text).await {
                    tracing::debug!(peer = %peer.id, "chat not sent: {e}");
                }
            }
        }
    }

    fn warn(&self, message: String) {
        self.printer.print(Event::Warning { message });
    }

    async fn close_all(&mut self) {
        // Recordings end first, so each file is closed with its last page.
        self.stop_voice().await;
        // Then the connections: their channels close, so transfers and streams end on their own
        // (a `.part` file is removed, a forwarded TCP connection is reset); what is left after a
        // moment is cancelled, and cancelling removes a `.part` file too.
        for (_, peer) in self.peers.drain() {
            peer.close().await;
        }
        let tasks = &mut self.tasks;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        self.tasks.shutdown().await;
    }
}

/// Hands the memory freed since back to the system (every [`TRIM_EVERY`]): glibc keeps freed
/// pages in its arenas, so after a load of many streams RSS would stay at its peak for the
/// whole session (255 MiB against 63 after 64 streams at once: bench `tunnel`).
fn give_back_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Reads the path of a connection that just opened, then every few seconds, and hands each
/// reading to the session (which tells what is news: `peer_core::control`); watches the
/// selected pair's consent too. Off the session loop: a stats call can take a while.
async fn watch_path(
    tx: mpsc::Sender<Internal>,
    id: String,
    pc: Arc<dyn webrtc::peer_connection::PeerConnection>,
    tcp: rtc::TcpRelayed,
) {
    use peer_core::path::{Consent, ConsentNews};
    let first = rtc::path_info(&pc, &tcp).await;
    if tx.send(Internal::Path(id.clone(), first)).await.is_err() {
        return;
    }
    let epoch = Instant::now();
    let mut consent = Consent::default();
    loop {
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let (info, reading) = rtc::path_and_consent(&pc, &tcp).await;
        let reading = reading.as_ref().map(|(pair, n)| (pair.as_str(), *n));
        let up = match consent.observe(reading, epoch.elapsed().as_millis() as u64) {
            ConsentNews::Lost => Some(false),
            ConsentNews::Back => Some(true),
            ConsentNews::Same => None,
        };
        if let Some(up) = up {
            if tx.send(Internal::Consent(id.clone(), up)).await.is_err() {
                break;
            }
        }
        if info.is_some() && tx.send(Internal::Path(id.clone(), info)).await.is_err() {
            break;
        }
    }
}
