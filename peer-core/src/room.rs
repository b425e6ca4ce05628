//! The room as one peer keeps it across server reconnects and network changes, as a sans-IO
//! state machine both peers drive (the native CLI and the page).
//!
//! The platform tells it what happened (a server message, the server connection lost, a peer
//! connection's state, the clock) and does what it answers ([`Action`]): create or close a peer
//! connection, restart ICE, report something to the user. The rules it keeps:
//!
//! * **Who offers.** The newcomer offers to the peers the welcome lists and waits for offers
//!   from those who join after it; between a browser and `burrow`, `burrow` always offers, so it
//!   controls ICE (see [`PeerKind`] for why).
//! * **The server is not needed by established links.** When the signaling connection is lost,
//!   nothing is closed; the platform reconnects after [`Room::server_lost`]'s delay (jittered
//!   exponential backoff, [`Backoff`]) and says `hello` with [`Room::hello`], which presents the
//!   resume token of the last welcome.
//! * **Coming back.** A welcome that keeps our id keeps every connection: peers it lists that we
//!   know are matched to their connection (restarted if it is down), peers we do not know are
//!   offered to, peers it does not list are kept while their connection works (they may still be
//!   reconnecting after a server restart) and forgotten once it has been down for
//!   [`FORGET_AFTER`]. A `peer_joined` for a peer we know (it re-joined a restarted server) is
//!   the same peer: no new connection. A welcome with a new id (the server could not give ours
//!   back) starts over.
//! * **Repair.** A connection that goes `disconnected` is reported unreachable; once it has been
//!   down for [`RESTART_AFTER`] (or at once when it `failed`), the impolite side of the pair
//!   (between a browser and `burrow`: always `burrow`) restarts ICE, and the polite side does too if nothing came of it after
//!   [`POLITE_RESTART_AFTER`] (perfect negotiation settles a collision). A restart needs the
//!   server to carry the new candidates, so it waits for the server while it is away, and is
//!   retried every [`RESTART_RETRY`] until the connection is back.

use std::collections::HashMap;
use std::time::Duration;

use signal_protocol::{
    ClientMessage, ErrorCode, PeerId, PeerInfo, PeerKind, PeerSignal, Resume, ServerMessage,
    PROTOCOL_VERSION,
};

/// How long a connection may be down before ICE is restarted.
pub const RESTART_AFTER: Duration = Duration::from_secs(2);
/// How long the polite side waits for the impolite one to restart before it restarts itself.
pub const POLITE_RESTART_AFTER: Duration = Duration::from_secs(6);
/// How often a restart is tried again while the connection stays down.
pub const RESTART_RETRY: Duration = Duration::from_secs(8);
/// How long a peer the server no longer lists is kept while its connection is down.
pub const FORGET_AFTER: Duration = Duration::from_secs(45);

/// Jittered exponential backoff: about 0.5 s, doubling up to 10 s.
#[derive(Debug, Clone)]
pub struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first delay.
    pub const FIRST: Duration = Duration::from_millis(500);
    /// The longest delay.
    pub const MAX: Duration = Duration::from_secs(10);

    /// A backoff at its first delay.
    pub fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    /// The delay before the next attempt, jittered by `random` (uniform in `[0, 1)`, from the
    /// platform) to between 75 % and 125 % of the nominal delay.
    pub fn next_delay(&mut self, random: f64) -> Duration {
        let nominal = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        nominal.mul_f64(0.75 + 0.5 * random.clamp(0.0, 1.0))
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// A peer connection's state as the platform reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Connecting (new, or checking after a restart).
    Connecting,
    /// Connected: data flows.
    Connected,
    /// Consent lost: no answer from the peer for a few seconds (may come back).
    Disconnected,
    /// ICE gave up on every pair.
    Failed,
    /// Closed (by us, or the peer closed it).
    Closed,
}

/// What the user is told, in the platform's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// In the room (first time, or again after the server was lost).
    Joined {
        /// Our id.
        peer_id: PeerId,
        /// The room.
        room: String,
        /// How many peers the server listed.
        peers: usize,
    },
    /// The server came back after `after`; `resumed` when it had kept our place.
    ServerBack {
        /// How long it was away.
        after: Duration,
        /// The server had kept our place (nobody saw us leave).
        resumed: bool,
    },
    /// The server connection was lost; the next attempt is in `retry_in`.
    ServerLost {
        /// Delay before reconnecting.
        retry_in: Duration,
    },
    /// A peer joined.
    PeerJoined {
        /// Its id.
        peer: PeerId,
        /// Its display name.
        name: Option<String>,
    },
    /// A peer left (or was forgotten).
    PeerLeft {
        /// Its id.
        peer: PeerId,
    },
    /// The connection to a peer failed before it ever came up (no path was found).
    ConnectionFailed {
        /// Its id.
        peer: PeerId,
    },
    /// A peer's path went quiet.
    PeerUnreachable {
        /// Its id.
        peer: PeerId,
    },
    /// A peer that was unreachable answers again.
    PeerBack {
        /// Its id.
        peer: PeerId,
        /// How long it was unreachable.
        after: Duration,
    },
    /// We restarted ICE with a peer.
    IceRestart {
        /// Its id.
        peer: PeerId,
    },
    /// The server refused something.
    ServerError {
        /// Its code.
        code: ErrorCode,
        /// Its explanation.
        message: String,
    },
}

/// What the platform must do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Create a connection to `peer`; send the first offer when `offer`.
    Connect {
        /// Who.
        peer: PeerInfo,
        /// We send the first offer (see `Room::we_offer`).
        offer: bool,
        /// The peer was in the room when we joined (the welcome listed it), rather than joining
        /// after us: `burrow send` sends to those, or else to the first who joins.
        listed: bool,
    },
    /// Close the connection to `peer` and forget it.
    Close {
        /// Who.
        peer: PeerId,
    },
    /// Use these ICE servers from now on, for every connection (new and existing): each welcome
    /// brings fresh TURN credentials, and a restarted server has a new secret, so a connection
    /// that kept the old ones (even one only answering the other's ICE restart) would be refused
    /// by the relay. Comes before the welcome's other actions.
    UseIceServers {
        /// The welcome's servers.
        servers: Vec<signal_protocol::IceServer>,
    },
    /// Restart ICE with `peer`: new credentials, an offer through the server.
    RestartIce {
        /// Who.
        peer: PeerId,
    },
    /// Hand a signal to `peer`'s connection.
    Signal {
        /// From whom.
        peer: PeerId,
        /// The payload.
        data: PeerSignal,
    },
    /// The join was refused for now (a full room or server): send [`Room::hello`] again after
    /// this delay.
    HelloAgain {
        /// The delay.
        after: Duration,
    },
    /// Tell the user.
    Notify(Notice),
}

/// A refusal that retrying cannot fix.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the server refused to join: {message} ({code})")]
pub struct Fatal {
    /// The code.
    pub code: ErrorCode,
    /// The server's explanation.
    pub message: String,
}

#[derive(Debug)]
struct Known {
    /// The server lists it (welcome, peer_joined) and has not said it left.
    listed: bool,
    state: LinkState,
    /// Since when (ms) the connection has been down, if it is.
    down_since: Option<u64>,
    /// When (ms) we last restarted ICE with it.
    restarted_at: Option<u64>,
    /// Reported unreachable, not yet back.
    unreachable: bool,
    /// The connection came up at least once.
    linked: bool,
    /// Its selected path goes through a TURN relay (as the platform last read it).
    relayed: bool,
    /// The server came back without it: restart once it is listed again (its relay is gone).
    restart_when_listed: bool,
    /// What it runs on.
    kind: PeerKind,
}

/// One peer's view of its room. Times are milliseconds on any monotonic clock the platform
/// chooses.
#[derive(Debug)]
pub struct Room {
    name: Option<String>,
    kind: PeerKind,
    me: Option<PeerId>,
    token: Option<String>,
    /// The peers we know, in no order (a `HashMap`: a `BTreeMap` here cost the page 3 KB).
    peers: HashMap<PeerId, Known>,
    /// When (ms) the server connection was lost, while it is.
    lost_at: Option<u64>,
    /// Between hello and welcome.
    joining: bool,
    backoff: Backoff,
}

impl Room {
    /// A room we are about to join as `name`, running on `kind`.
    pub fn new(name: Option<String>, kind: PeerKind) -> Room {
        Room {
            name,
            kind,
            me: None,
            token: None,
            peers: HashMap::new(),
            lost_at: None,
            joining: false,
            backoff: Backoff::new(),
        }
    }

    /// Our id, once joined.
    pub fn me(&self) -> Option<&str> {
        self.me.as_deref()
    }

    /// Whether the server connection is up and we are in the room.
    pub fn online(&self) -> bool {
        self.lost_at.is_none() && self.me.is_some() && !self.joining
    }

    /// The `hello` to send on a (re)opened server connection.
    pub fn hello(&mut self) -> ClientMessage {
        self.joining = true;
        ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            name: self.name.clone(),
            resume: match (&self.me, &self.token) {
                (Some(peer_id), Some(token)) if !token.is_empty() => Some(Resume {
                    peer_id: peer_id.clone(),
                    token: token.clone(),
                }),
                _ => None,
            },
            kind: self.kind,
        }
    }

    /// Between a browser and `burrow`, `burrow` leads (offers, restarts ICE: it must stay the
    /// controlling side, see [`PeerKind`]): whether a peer of kind `us` leads toward one of kind
    /// `other`, or `None` between two of a kind.
    fn we_lead(us: PeerKind, other: PeerKind) -> Option<bool> {
        (us != other).then_some(us == PeerKind::Native)
    }

    /// Whether we offer to `peer`: the leader between a browser and `burrow`; otherwise the
    /// newcomer offers to those already in the room.
    fn we_offer(&self, peer: &PeerInfo, we_are_new: bool) -> bool {
        Room::we_lead(self.kind, peer.kind).unwrap_or(we_are_new)
    }

    /// The server connection was lost (or could not be opened) at `now`: returns how long to
    /// wait before the next attempt, `random` in `[0, 1)` jittering it.
    pub fn server_lost(&mut self, now: u64, random: f64) -> (Duration, Vec<Action>) {
        if self.lost_at.is_none() {
            self.lost_at = Some(now);
        }
        self.joining = false;
        let retry_in = self.backoff.next_delay(random);
        (
            retry_in,
            vec![Action::Notify(Notice::ServerLost { retry_in })],
        )
    }

    /// A message from the server. `Err` when the server refused us for good (retrying cannot
    /// help: another protocol version, an invalid room).
    pub fn on_server(&mut self, msg: ServerMessage, now: u64) -> Result<Vec<Action>, Fatal> {
        let mut out = Vec::new();
        match msg {
            ServerMessage::Welcome {
                peer_id,
                room,
                peers,
                resume_token,
                resumed,
                ice_servers,
                ..
            } => {
                out.push(Action::UseIceServers {
                    servers: ice_servers,
                });
                self.on_welcome(peer_id, room, peers, resume_token, resumed, now, &mut out)
            }
            ServerMessage::PeerJoined { peer } => {
                if peer.id == self.me.clone().unwrap_or_default() {
                    return Ok(out);
                }
                match self.peers.get_mut(&peer.id) {
                    // It re-joined a restarted server: the same peer, the same connection.
                    Some(known) => {
                        known.listed = true;
                        out.extend(self.restart_if_relayed(&peer.id, now));
                    }
                    None => {
                        self.peers.insert(peer.id.clone(), Known::new(peer.kind));
                        out.push(Action::Notify(Notice::PeerJoined {
                            peer: peer.id.clone(),
                            name: peer.name.clone(),
                        }));
                        let offer = self.we_offer(&peer, false);
                        out.push(Action::Connect {
                            peer,
                            offer,
                            listed: false,
                        });
                    }
                }
            }
            ServerMessage::PeerLeft { peer_id } => {
                if self.peers.remove(&peer_id).is_some() {
                    out.push(Action::Close {
                        peer: peer_id.clone(),
                    });
                    out.push(Action::Notify(Notice::PeerLeft { peer: peer_id }));
                }
            }
            ServerMessage::Signal { from, data } => {
                if self.peers.contains_key(&from) {
                    out.push(Action::Signal { peer: from, data });
                }
            }
            ServerMessage::Error { code, message } => {
                let joining = self.joining;
                let hopeless = matches!(
                    code,
                    ErrorCode::UnsupportedVersion | ErrorCode::InvalidRoomId
                );
                if joining && hopeless {
                    return Err(Fatal { code, message });
                }
                out.push(Action::Notify(Notice::ServerError { code, message }));
                if joining {
                    self.joining = false;
                    out.push(Action::HelloAgain {
                        after: self.backoff.next_delay(0.5),
                    });
                }
            }
        }
        Ok(out)
    }

    #[allow(clippy::too_many_arguments)]
    fn on_welcome(
        &mut self,
        peer_id: PeerId,
        room: String,
        peers: Vec<PeerInfo>,
        token: String,
        resumed: bool,
        now: u64,
        out: &mut Vec<Action>,
    ) {
        self.joining = false;
        self.backoff.reset();
        let lost_at = self.lost_at.take();
        let same_id = self.me.as_deref() == Some(peer_id.as_str());
        if !same_id {
            // A new identity: the others know us by another id (or not at all); start over.
            for (id, _) in std::mem::take(&mut self.peers) {
                out.push(Action::Close { peer: id.clone() });
                out.push(Action::Notify(Notice::PeerLeft { peer: id }));
            }
        }
        out.push(Action::Notify(Notice::Joined {
            peer_id: peer_id.clone(),
            room,
            peers: peers.len(),
        }));
        if let Some(lost) = lost_at {
            out.push(Action::Notify(Notice::ServerBack {
                after: Duration::from_millis(now.saturating_sub(lost)),
                resumed,
            }));
        }
        self.me = Some(peer_id);
        self.token = Some(token);
        for known in self.peers.values_mut() {
            known.listed = false;
            if lost_at.is_some() {
                // Restart offers sent while the server was away may be lost: send anew.
                known.restarted_at = None;
                // A relayed link went through the server's relay, which a restarted server
                // (or another instance) no longer has: repaired at once, as soon as both
                // peers are back in the room, rather than after the link is seen down.
                known.restart_when_listed = known.relayed;
            }
        }
        for info in peers {
            match self.peers.get_mut(&info.id) {
                Some(known) => {
                    known.listed = true;
                    out.extend(self.restart_if_relayed(&info.id, now));
                }
                None => {
                    let mut known = Known::new(info.kind);
                    known.listed = true;
                    self.peers.insert(info.id.clone(), known);
                    out.push(Action::Notify(Notice::PeerJoined {
                        peer: info.id.clone(),
                        name: info.name.clone(),
                    }));
                    let offer = self.we_offer(&info, true);
                    out.push(Action::Connect {
                        peer: info,
                        offer,
                        listed: true,
                    });
                }
            }
        }
        // Links that went down while the server was away are repaired now.
        out.extend(self.tick(now));
    }

    /// A peer connection changed state at `now`.
    pub fn on_link(&mut self, peer: &str, state: LinkState, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let Some(known) = self.peers.get_mut(peer) else {
            return out;
        };
        known.state = state;
        match state {
            LinkState::Connected => {
                known.linked = true;
                let down = known.down_since.take();
                known.restarted_at = None;
                if std::mem::take(&mut known.unreachable) {
                    out.push(Action::Notify(Notice::PeerBack {
                        peer: peer.to_string(),
                        after: Duration::from_millis(now.saturating_sub(down.unwrap_or(now))),
                    }));
                }
            }
            LinkState::Disconnected | LinkState::Failed => {
                if state == LinkState::Failed && !known.linked {
                    out.push(Action::Notify(Notice::ConnectionFailed {
                        peer: peer.to_string(),
                    }));
                }
                known.down_since.get_or_insert(now);
                if !std::mem::replace(&mut known.unreachable, true) {
                    out.push(Action::Notify(Notice::PeerUnreachable {
                        peer: peer.to_string(),
                    }));
                }
                if state == LinkState::Failed {
                    out.extend(self.tick(now));
                }
            }
            LinkState::Closed => {
                self.peers.remove(peer);
                out.push(Action::Close {
                    peer: peer.to_string(),
                });
                out.push(Action::Notify(Notice::PeerLeft {
                    peer: peer.to_string(),
                }));
            }
            LinkState::Connecting => {}
        }
        out
    }

    /// Call about once a second: restarts ICE on links that stay down, forgets peers nobody
    /// lists whose link is gone.
    pub fn tick(&mut self, now: u64) -> Vec<Action> {
        let mut out = Vec::new();
        let online = self.online();
        let me = self.me.clone().unwrap_or_default();
        let mut forget = Vec::new();
        let us = self.kind;
        for (id, known) in self.peers.iter_mut() {
            let Some(down) = known.down_since else {
                continue;
            };
            let down_for = now.saturating_sub(down);
            if !known.listed && online && down_for >= FORGET_AFTER.as_millis() as u64 {
                forget.push(id.clone());
                continue;
            }
            let Some(first) = Room::restarts_first(us, &me, known.kind, id) else {
                continue;
            };
            if !online {
                continue;
            }
            let wait = if first || known.state == LinkState::Failed {
                RESTART_AFTER
            } else {
                POLITE_RESTART_AFTER
            };
            let due = match known.restarted_at {
                None => down_for >= wait.as_millis() as u64,
                Some(at) => now.saturating_sub(at) >= RESTART_RETRY.as_millis() as u64,
            };
            if due {
                known.restarted_at = Some(now);
                out.push(Action::RestartIce { peer: id.clone() });
                out.push(Action::Notify(Notice::IceRestart { peer: id.clone() }));
            }
        }
        for id in forget {
            self.peers.remove(&id);
            out.push(Action::Close { peer: id.clone() });
            out.push(Action::Notify(Notice::PeerLeft { peer: id }));
        }
        out
    }

    /// Whether we restart ICE with a peer (`peer_kind`, `peer_id`) first (`Some(true)`), after
    /// it (`Some(false)`), or never (`None`): between a browser and `burrow`, only `burrow`
    /// restarts (a browser that offers a restart may take ICE control back); between two of a
    /// kind, the impolite side (the smaller id) goes first.
    fn restarts_first(us: PeerKind, me: &str, peer_kind: PeerKind, peer_id: &str) -> Option<bool> {
        match Room::we_lead(us, peer_kind) {
            Some(false) => None,
            Some(true) => Some(true),
            None => Some(me < peer_id),
        }
    }

    /// The platform read `peer`'s selected path (the room repairs relayed links at once when
    /// the server comes back: see [`Room::on_server`]).
    pub fn on_path(&mut self, peer: &str, path: &crate::path::SelectedPath) {
        if let Some(known) = self.peers.get_mut(peer) {
            known.relayed = path.kind == crate::path::PathKind::Relayed;
        }
    }

    /// `peer` is listed again after the server came back: its relayed link is restarted now
    /// by the side that restarts first ([`Room::restarts_first`]; the other follows by
    /// [`Room::tick`] if the link is then seen down).
    fn restart_if_relayed(&mut self, peer: &str, now: u64) -> Vec<Action> {
        let me = self.me.clone().unwrap_or_default();
        let us = self.kind;
        let Some(known) = self.peers.get_mut(peer) else {
            return Vec::new();
        };
        if !std::mem::take(&mut known.restart_when_listed) {
            return Vec::new();
        }
        if Room::restarts_first(us, &me, known.kind, peer) != Some(true) {
            return Vec::new();
        }
        known.restarted_at = Some(now);
        vec![
            Action::RestartIce {
                peer: peer.to_string(),
            },
            Action::Notify(Notice::IceRestart {
                peer: peer.to_string(),
            }),
        ]
    }

    /// Forgets a peer whose connection the platform had to give up (e.g. it could not be
    /// created).
    pub fn forget(&mut self, peer: &str) {
        self.peers.remove(peer);
    }
}

impl Known {
    fn new(kind: PeerKind) -> Known {
        Known {
            kind,
            listed: true,
            state: LinkState::Connecting,
            down_since: None,
            restarted_at: None,
            unreachable: false,
            linked: false,
            relayed: false,
            restart_when_listed: false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(id: &str) -> PeerInfo {
        PeerInfo {
            id: id.into(),
            name: None,
            kind: PeerKind::Browser,
            client: None,
        }
    }

    #[test]
    fn burrow_offers_to_a_browser_whoever_came_first() {
        let native = |id: &str| PeerInfo {
            kind: PeerKind::Native,
            ..info(id)
        };
        // A browser joins a room where `burrow` is: it does not offer to it…
        let mut page = Room::new(None, PeerKind::Browser);
        page.hello();
        let mut w = welcome("p", &[], false);
        if let ServerMessage::Welcome { peers, .. } = &mut w {
            peers.push(native("n"));
            peers.push(info("q"));
        }
        let out = page.on_server(w, 0).unwrap();
        assert_eq!(connects(&out), [("n".into(), false), ("q".into(), true)]);
        // …`burrow` offers to the browser that joined after it…
        let mut cli = Room::new(None, PeerKind::Native);
        cli.hello();
        cli.on_server(welcome("n", &[], false), 0).unwrap();
        let joined = |peer| ServerMessage::PeerJoined { peer };
        let out = cli.on_server(joined(info("p")), 1).unwrap();
        assert_eq!(connects(&out), [("p".into(), true)]);
        assert!(
            out.iter()
                .all(|a| !matches!(a, Action::Connect { listed: true, .. })),
            "it joined after us: offered to, but not one `send` targets"
        );
        // …and between two of a kind the newcomer offers.
        let out = cli.on_server(joined(native("m")), 2).unwrap();
        assert_eq!(connects(&out), [("m".into(), false)]);
        let mut other = Room::new(None, PeerKind::Native);
        other.hello();
        let mut w = welcome("m", &[], false);
        if let ServerMessage::Welcome { peers, .. } = &mut w {
            peers.push(native("n"));
        }
        assert_eq!(
            connects(&other.on_server(w, 0).unwrap()),
            [("n".into(), true)]
        );
    }

    fn welcome(me: &str, peers: &[&str], resumed: bool) -> ServerMessage {
        ServerMessage::Welcome {
            version: PROTOCOL_VERSION,
            peer_id: me.into(),
            room: "r".into(),
            peers: peers.iter().map(|p| info(p)).collect(),
            ice_servers: vec![],
            resume_token: format!("token-{me}"),
            resumed,
        }
    }

    fn connects(actions: &[Action]) -> Vec<(String, bool)> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Connect { peer, offer, .. } => Some((peer.id.clone(), *offer)),
                _ => None,
            })
            .collect()
    }

    fn closes(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::Close { peer } => Some(peer.clone()),
                _ => None,
            })
            .collect()
    }

    fn restarts(actions: &[Action]) -> Vec<String> {
        actions
            .iter()
            .filter_map(|a| match a {
                Action::RestartIce { peer } => Some(peer.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn backoff_doubles_to_ten_seconds_with_jitter() {
        let mut b = Backoff::new();
        let delays: Vec<u128> = (0..8).map(|_| b.next_delay(0.5).as_millis()).collect();
        assert_eq!(delays, [500, 1000, 2000, 4000, 8000, 10000, 10000, 10000]);
        assert_eq!(b.next_delay(0.0).as_millis(), 7500);
        b.reset();
        assert_eq!(b.next_delay(0.999_999).as_millis(), 624);
    }

    #[test]
    fn hello_presents_the_last_token() {
        let mut room = Room::new(Some("me".into()), PeerKind::Browser);
        assert!(matches!(
            room.hello(),
            ClientMessage::Hello { resume: None, .. }
        ));
        room.on_server(welcome("a", &[], false), 0).unwrap();
        let ClientMessage::Hello {
            resume: Some(resume),
            ..
        } = room.hello()
        else {
            panic!("no resume")
        };
        assert_eq!(
            (resume.peer_id.as_str(), resume.token.as_str()),
            ("a", "token-a")
        );
    }

    /// A restarted server mints TURN credentials from a new secret: the welcome's servers are
    /// handed on first, for every connection, also one that only answers the other's restarts.
    #[test]
    fn each_welcome_hands_on_its_ice_servers_first() {
        let turn = |user: &str| signal_protocol::IceServer {
            urls: vec!["turn:relay.example:3478".into()],
            username: Some(user.into()),
            credential: Some("c".into()),
        };
        let mut room = Room::new(None, PeerKind::Browser);
        room.hello();
        let mut w = welcome("a", &["b"], false);
        if let ServerMessage::Welcome { ice_servers, .. } = &mut w {
            *ice_servers = vec![turn("old")];
        }
        let first = room.on_server(w, 0).unwrap();
        assert_eq!(
            first[0],
            Action::UseIceServers {
                servers: vec![turn("old")]
            }
        );
        room.on_link("b", LinkState::Connected, 10);
        room.server_lost(1_000, 0.5);
        room.hello();
        let mut w = welcome("a", &["b"], false);
        if let ServerMessage::Welcome { ice_servers, .. } = &mut w {
            *ice_servers = vec![turn("new")];
        }
        let back = room.on_server(w, 2_000).unwrap();
        assert_eq!(
            back[0],
            Action::UseIceServers {
                servers: vec![turn("new")]
            }
        );
        assert!(
            connects(&back).is_empty(),
            "the connection is kept: {back:?}"
        );
    }

    /// Both peers say a connection that never came up failed (no path), once; one that was up
    /// and failed later is only unreachable (and repaired).
    #[test]
    fn a_connection_that_never_came_up_is_told_failed() {
        let failed = |out: &[Action]| {
            out.iter()
                .filter(|a| matches!(a, Action::Notify(Notice::ConnectionFailed { .. })))
                .count()
        };
        let mut room = Room::new(None, PeerKind::Native);
        room.hello();
        room.on_server(welcome("a", &["b", "c"], false), 0).unwrap();
        let out = room.on_link("b", LinkState::Failed, 10);
        assert_eq!(failed(&out), 1, "{out:?}");
        room.on_link("c", LinkState::Connected, 10);
        let out = room.on_link("c", LinkState::Failed, 20);
        assert_eq!(failed(&out), 0, "{out:?}");
        assert!(out.contains(&Action::Notify(Notice::PeerUnreachable {
            peer: "c".into()
        })));
    }

    const RELAYED: crate::path::SelectedPath = crate::path::SelectedPath {
        kind: crate::path::PathKind::Relayed,
        local: crate::path::CandidateType::Relay,
        remote: crate::path::CandidateType::Srflx,
        rtt_ms: None,
        relay_over: None,
        peer_relay_over: None,
    };

    /// A relayed link went through the server's relay, gone with a restart: it is restarted as
    /// soon as both peers are back in the room (listed in the welcome, or re-joining after us),
    /// by the side that restarts first; a direct link is left alone.
    #[test]
    fn relayed_links_are_restarted_once_the_server_and_the_peer_are_back() {
        let mut room = Room::new(None, PeerKind::Native);
        room.hello();
        room.on_server(welcome("a", &["b", "c", "d"], false), 0)
            .unwrap();
        for p in ["b", "c", "d"] {
            room.on_link(p, LinkState::Connected, 10);
        }
        room.on_path("b", &RELAYED);
        room.on_path("c", &RELAYED);
        room.server_lost(1_000, 0.5);
        room.hello();
        // Back: b and d are listed, c re-joins later.
        let back = room
            .on_server(welcome("a", &["b", "d"], false), 2_000)
            .unwrap();
        assert_eq!(
            restarts(&back),
            ["b"],
            "only the relayed peer that is back: {back:?}"
        );
        let c = room
            .on_server(ServerMessage::PeerJoined { peer: info("c") }, 2_500)
            .unwrap();
        assert_eq!(restarts(&c), ["c"]);
        assert!(restarts(&room.tick(3_000)).is_empty(), "not again at once");

        // Between two `burrow`s, the polite side (the larger id) leaves it to the other.
        let with_native = |me: &str| {
            let mut w = welcome(me, &[], false);
            if let ServerMessage::Welcome { peers, .. } = &mut w {
                peers.push(PeerInfo {
                    kind: PeerKind::Native,
                    ..info("b")
                });
            }
            w
        };
        let mut polite = Room::new(None, PeerKind::Native);
        polite.hello();
        polite.on_server(with_native("z"), 0).unwrap();
        polite.on_link("b", LinkState::Connected, 10);
        polite.on_path("b", &RELAYED);
        polite.server_lost(1_000, 0.5);
        polite.hello();
        let back = polite.on_server(with_native("z"), 2_000).unwrap();
        assert!(restarts(&back).is_empty(), "{back:?}");
        // And a page leaves every restart to `burrow`.
        let mut page = Room::new(None, PeerKind::Browser);
        page.hello();
        page.on_server(with_native("a"), 0).unwrap();
        page.on_link("b", LinkState::Connected, 10);
        page.on_path("b", &RELAYED);
        page.server_lost(1_000, 0.5);
        page.hello();
        assert!(restarts(&page.on_server(with_native("a"), 2_000).unwrap()).is_empty());
    }

    #[test]
    fn a_server_restart_keeps_every_connection() {
        let mut room = Room::new(None, PeerKind::Browser);
        room.hello();
        let first = room.on_server(welcome("a", &["b", "c"], false), 0).unwrap();
        assert_eq!(connects(&first), [("b".into(), true), ("c".into(), true)]);
        room.on_link("b", LinkState::Connected, 10);
        room.on_link("c", LinkState::Connected, 10);

        let (retry, _) = room.server_lost(1_000, 0.5);
        assert_eq!(retry, Backoff::FIRST);
        assert!(!room.online());
        // Back: the restarted server knows only b so far; c re-joins later.
        room.hello();
        let back = room.on_server(welcome("a", &["b"], false), 3_000).unwrap();
        assert!(connects(&back).is_empty() && closes(&back).is_empty());
        assert!(back.contains(&Action::Notify(Notice::ServerBack {
            after: Duration::from_secs(2),
            resumed: false
        })));
        let c_back = room
            .on_server(ServerMessage::PeerJoined { peer: info("c") }, 4_000)
            .unwrap();
        assert!(
            c_back.is_empty(),
            "c is matched to its connection: {c_back:?}"
        );
        // A newcomer is offered by itself; we answer.
        let d = room
            .on_server(ServerMessage::PeerJoined { peer: info("d") }, 5_000)
            .unwrap();
        assert_eq!(connects(&d), [("d".into(), false)]);
    }

    #[test]
    fn a_new_id_starts_over() {
        let mut room = Room::new(None, PeerKind::Browser);
        room.on_server(welcome("a", &["b"], false), 0).unwrap();
        room.server_lost(10, 0.5);
        let back = room.on_server(welcome("z", &["b"], false), 20).unwrap();
        assert_eq!(closes(&back), ["b"]);
        assert_eq!(connects(&back), [("b".into(), true)]);
    }

    #[test]
    fn the_impolite_side_restarts_first_and_waits_for_the_server() {
        // "a" < "b": a is impolite and restarts after RESTART_AFTER.
        let mut a = Room::new(None, PeerKind::Browser);
        a.on_server(welcome("a", &["b"], false), 0).unwrap();
        a.on_link("b", LinkState::Connected, 0);
        let down = a.on_link("b", LinkState::Disconnected, 1_000);
        assert!(down.contains(&Action::Notify(Notice::PeerUnreachable {
            peer: "b".into()
        })));
        assert!(restarts(&a.tick(2_000)).is_empty());
        assert_eq!(restarts(&a.tick(3_000)), ["b"]);
        assert!(restarts(&a.tick(4_000)).is_empty(), "not again at once");
        assert_eq!(restarts(&a.tick(11_000)), ["b"], "retried");
        let up = a.on_link("b", LinkState::Connected, 12_000);
        assert!(up.contains(&Action::Notify(Notice::PeerBack {
            peer: "b".into(),
            after: Duration::from_secs(11)
        })));

        // "b" is polite: it waits longer.
        let mut b = Room::new(None, PeerKind::Browser);
        b.on_server(welcome("b", &["a"], false), 0).unwrap();
        b.on_link("a", LinkState::Disconnected, 0);
        assert!(restarts(&b.tick(3_000)).is_empty());
        assert_eq!(restarts(&b.tick(6_000)), ["a"]);

        // With the server away, nothing can be signaled: the restart waits for the welcome.
        let mut c = Room::new(None, PeerKind::Browser);
        c.on_server(welcome("a", &["b"], false), 0).unwrap();
        c.on_link("b", LinkState::Failed, 0);
        c.server_lost(0, 0.5);
        assert!(restarts(&c.tick(5_000)).is_empty());
        c.hello();
        let back = c.on_server(welcome("a", &["b"], true), 6_000).unwrap();
        assert_eq!(restarts(&back), ["b"]);
    }

    #[test]
    fn a_page_leaves_restarts_to_burrow() {
        let mut page = Room::new(None, PeerKind::Browser);
        page.hello();
        let mut w = welcome("a", &[], false);
        if let ServerMessage::Welcome { peers, .. } = &mut w {
            peers.push(PeerInfo {
                kind: PeerKind::Native,
                ..info("b")
            });
        }
        page.on_server(w, 0).unwrap();
        page.on_link("b", LinkState::Connected, 0);
        page.on_link("b", LinkState::Disconnected, 1_000);
        // The page is the impolite side ("a" < "b"), yet it waits for `burrow`'s restart.
        assert!(restarts(&page.tick(20_000)).is_empty());
    }

    #[test]
    fn unlisted_dead_peers_are_forgotten_listed_ones_wait_for_the_server() {
        let mut room = Room::new(None, PeerKind::Browser);
        room.on_server(welcome("a", &["b", "c"], false), 0).unwrap();
        room.server_lost(0, 0.5);
        room.on_server(welcome("a", &["b"], false), 1_000).unwrap();
        room.on_link("b", LinkState::Disconnected, 1_000);
        room.on_link("c", LinkState::Disconnected, 1_000);
        let later = room.tick(1_000 + FORGET_AFTER.as_millis() as u64);
        assert_eq!(closes(&later), ["c"]);
        let left = room
            .on_server(
                ServerMessage::PeerLeft {
                    peer_id: "b".into(),
                },
                50_000,
            )
            .unwrap();
        assert_eq!(closes(&left), ["b"]);
    }

    #[test]
    fn signals_from_strangers_and_fatal_refusals() {
        let mut room = Room::new(None, PeerKind::Browser);
        room.hello();
        let refused = room.on_server(
            ServerMessage::Error {
                code: ErrorCode::UnsupportedVersion,
                message: "old".into(),
            },
            0,
        );
        assert!(refused.is_err());
        let mut room = Room::new(None, PeerKind::Browser);
        room.hello();
        let full = room.on_server(
            ServerMessage::Error {
                code: ErrorCode::RoomFull,
                message: "full".into(),
            },
            0,
        );
        assert!(
            full.is_ok_and(|a| a.iter().any(|a| matches!(a, Action::HelloAgain { .. }))),
            "a full room is worth retrying"
        );
        room.on_server(welcome("a", &[], false), 0).unwrap();
        let stray = room
            .on_server(
                ServerMessage::Signal {
                    from: "ghost".into(),
                    data: PeerSignal::EndOfCandidates,
                },
                0,
            )
            .unwrap();
        assert!(stray.is_empty());
    }
}
