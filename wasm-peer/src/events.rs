//! The events the page receives, as plain JS objects with an `event` field: the room's events,
//! the same set the CLI prints (`peer_core::events`: joins, paths, chat, files sent, received
//! or failed), and the page's own (connection state, a transfer's start and progress).

use serde::Serialize;

/// The events the CLI prints too.
pub use peer_core::events::Event as RoomEvent;

/// One thing the page should show.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// A peer's connection state changed (`new`, `connecting`, `connected`, `failed`, …).
    PeerState {
        /// The peer.
        peer: String,
        /// The RTCPeerConnection state.
        state: String,
    },
    /// The path again, with a fresh round-trip time (every few seconds; the page's RTT).
    PathStats {
        /// The peer.
        peer: String,
        /// The path.
        #[serde(flatten)]
        report: peer_core::path::PathReport,
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
    /// An event of the room or a link (the same the CLI prints).
    #[serde(untagged)]
    Room(RoomEvent),
}

impl From<RoomEvent> for Event {
    fn from(event: RoomEvent) -> Event {
        Event::Room(event)
    }
}
