//! The events the page receives, as plain JS objects with an `event` field: the room's events,
//! the same set the CLI prints (`peer_core::events`), and the page's own (connection state,
//! transfer progress).

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
    /// An event of the room or a link (the same the CLI prints).
    #[serde(untagged)]
    Room(RoomEvent),
}

impl From<RoomEvent> for Event {
    fn from(event: RoomEvent) -> Event {
        Event::Room(event)
    }
}
