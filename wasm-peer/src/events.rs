//! The events the page receives, as plain JS objects with a `type` field.

use serde::Serialize;

/// One thing the page should show.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// We joined (or re-joined after a lost connection).
    Joined {
        /// Our id.
        peer_id: String,
        /// The room.
        room: String,
    },
    /// A peer is in the room (already there, or new).
    PeerJoined {
        /// Its id.
        peer: String,
        /// Its name.
        name: Option<String>,
    },
    /// A peer's connection state changed (`new`, `connecting`, `connected`, `failed`, …).
    PeerState {
        /// The peer.
        peer: String,
        /// The RTCPeerConnection state.
        state: String,
    },
    /// The data channel to a peer is open (repeated as the stats refresh); how the bytes travel.
    Connected {
        /// The peer.
        peer: String,
        /// The path.
        #[serde(flatten)]
        report: peer_core::path::PathReport,
    },
    /// A peer left.
    PeerLeft {
        /// The peer.
        peer: String,
    },
    /// A chat line from a peer.
    Chat {
        /// The sender.
        from: String,
        /// Its name.
        name: Option<String>,
        /// The line.
        text: String,
    },
    /// A peer offers services (it runs `burrow expose`).
    Services {
        /// The peer.
        peer: String,
        /// What it offers.
        services: Vec<peer_core::channels::ServiceInfo>,
    },
    /// A file transfer started (either direction).
    FileStarted {
        /// Transfer id, unique in this page.
        id: u32,
        /// The other peer.
        peer: String,
        /// `in` or `out`.
        direction: &'static str,
        /// File name.
        name: String,
        /// Size in bytes.
        size: f64,
    },
    /// Bytes moved.
    FileProgress {
        /// Transfer id.
        id: u32,
        /// Bytes done.
        done: f64,
    },
    /// The transfer finished and the hash matched.
    FileDone {
        /// Transfer id.
        id: u32,
        /// The verified SHA-256.
        sha256: String,
        /// For received files: an object URL to download it from.
        url: Option<String>,
    },
    /// The transfer failed.
    FileFailed {
        /// Transfer id.
        id: u32,
        /// Why.
        reason: String,
    },
    /// The server refused something (`room_full`, `invalid_room_id`, …).
    Error {
        /// The protocol's error code.
        code: String,
        /// The server's explanation.
        message: String,
    },
    /// The connection to the server was lost; links to peers carry on; reconnecting.
    ServerLost {
        /// Milliseconds until the next attempt.
        retry_in_ms: u64,
    },
    /// Back in the room after the server was lost.
    ServerBack {
        /// How long the server was away, in milliseconds.
        after_ms: u64,
        /// The server had kept our place: nobody saw us leave.
        resumed: bool,
    },
    /// Nothing comes from a peer over the path (consent checks unanswered).
    PeerUnreachable {
        /// The peer.
        peer: String,
    },
    /// An unreachable peer answers again.
    PeerBack {
        /// The peer.
        peer: String,
        /// How long it was unreachable, in milliseconds.
        after_ms: u64,
    },
    /// A peer joined or left voice.
    Voice {
        /// The peer.
        peer: String,
        /// In voice now.
        on: bool,
        /// It sends audio (`false`: listens only).
        sending: bool,
    },
    /// A link stayed down: ICE is restarted with that peer.
    IceRestart {
        /// The peer.
        peer: String,
    },
}

impl From<peer_core::room::Notice> for Event {
    fn from(notice: peer_core::room::Notice) -> Event {
        use peer_core::room::Notice;
        match notice {
            Notice::Joined { peer_id, room, .. } => Event::Joined { peer_id, room },
            Notice::ServerBack { after, resumed } => Event::ServerBack {
                after_ms: after.as_millis() as u64,
                resumed,
            },
            Notice::ServerLost { retry_in } => Event::ServerLost {
                retry_in_ms: retry_in.as_millis() as u64,
            },
            Notice::PeerJoined { peer, name } => Event::PeerJoined { peer, name },
            Notice::PeerLeft { peer } => Event::PeerLeft { peer },
            Notice::PeerUnreachable { peer } => Event::PeerUnreachable { peer },
            Notice::PeerBack { peer, after } => Event::PeerBack {
                peer,
                after_ms: after.as_millis() as u64,
            },
            Notice::IceRestart { peer } => Event::IceRestart { peer },
            Notice::ServerError { code, message } => Event::Error {
                code: code.as_str().to_string(),
                message,
            },
        }
    }
}
