//! What a peer tells its user, one set for both peers: the CLI prints these (as lines, or as
//! JSON with `--json`) and the page renders them, so the same situation reads the same way on
//! both, files included. Each platform adds a few of its own (streams and voice files for the
//! CLI, transfer progress for the page) beside these.

use serde::Serialize;
use std::time::Duration;

use crate::room::Notice;

/// Something that happened in the room or on a link, tagged by `"event"`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// We joined the room.
    Joined {
        /// The room id.
        room: String,
        /// Our peer id.
        peer_id: String,
        /// How many peers were already there.
        peers: usize,
        /// The link to share (the CLI's; the page shows its own).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        link: Option<String>,
    },
    /// A peer joined after us.
    PeerJoined {
        /// Its id.
        peer: String,
        /// Its name, if any.
        name: Option<String>,
    },
    /// A data channel to a peer is open; how the bytes travel.
    Connected {
        /// The peer id.
        peer: String,
        /// The path.
        #[serde(flatten)]
        report: crate::path::PathReport,
    },
    /// The connection moved to another candidate pair.
    PathChanged {
        /// The peer id.
        peer: String,
        /// The new path.
        #[serde(flatten)]
        report: crate::path::PathReport,
    },
    /// unanswered): its network may be gone. The connection waits for it.
    PeerUnreachable {
        /// The peer id.
        peer: String,
    },
    /// An unreachable peer answers again.
    PeerBack {
        /// The peer id.
        peer: String,
        /// How long it was unreachable, in milliseconds.
        after_ms: u64,
    },
    /// The connection to the server was lost; links to peers carry on. Reconnecting.
    ServerLost {
        /// When the next attempt is, in milliseconds.
        retry_in_ms: u64,
    },
    /// Back in the room after the server was lost.
    ServerBack {
        /// How long the server was away, in milliseconds.
        after_ms: u64,
        /// The server had kept our place: nobody saw us leave.
        resumed: bool,
    },
    /// A peer joined or left voice.
    Voice {
        /// The peer id.
        peer: String,
        /// In voice now.
        on: bool,
        /// It sends audio (`false`: listens only).
        sending: bool,
    },
    /// A link stayed down, so ICE is restarted (new candidates through the server).
    IceRestart {
        /// The peer id.
        peer: String,
    },
    /// The peer connection failed (ICE found no path).
    ConnectionFailed {
        /// The peer id.
        peer: String,
    },
    /// A peer left.
    PeerLeft {
        /// Its id.
        peer: String,
    },
    /// A chat line arrived.
    Chat {
        /// The sender's id.
        from: String,
        /// The sender's name, if any.
        name: Option<String>,
        /// The line.
        text: String,
    },
    /// A file we sent arrived intact: the receiver confirmed its SHA-256.
    FileSent {
        /// The receiver.
        to: String,
        /// The file name.
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Its SHA-256, as both sides computed it.
        sha256: String,
        /// The page's transfer id (the page only: it updates the transfer's row).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
    },
    /// A file arrived intact.
    FileReceived {
        /// The sender.
        from: String,
        /// The file name (made safe).
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Its verified SHA-256.
        sha256: String,
        /// Where `burrow` saved it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path: Option<String>,
        /// Where the page offers it for download (an object URL).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        url: Option<String>,
        /// The page's transfer id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
    },
    /// A transfer failed (either way); nothing was kept under the file's name.
    FileFailed {
        /// The other peer.
        peer: String,
        /// The file name (empty when it failed before the header).
        name: String,
        /// Why.
        reason: String,
        /// The page's transfer id.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        id: Option<u32>,
    },
    /// A peer offers services (`burrow expose` on its side).
    Services {
        /// The peer.
        peer: String,
        /// What it offers.
        services: Vec<crate::channels::ServiceInfo>,
    },
    /// The server refused something (`room_full`, `invalid_room_id`, …).
    Error {
        /// The protocol's error code.
        code: String,
        /// The server's explanation.
        message: String,
    },
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl From<Notice> for Event {
    fn from(notice: Notice) -> Event {
        match notice {
            Notice::Joined {
                peer_id,
                room,
                peers,
            } => Event::Joined {
                room,
                peer_id,
                peers,
                link: None,
            },
            Notice::ServerBack { after, resumed } => Event::ServerBack {
                after_ms: ms(after),
                resumed,
            },
            Notice::ServerLost { retry_in } => Event::ServerLost {
                retry_in_ms: ms(retry_in),
            },
            Notice::PeerJoined { peer, name } => Event::PeerJoined { peer, name },
            Notice::PeerLeft { peer } => Event::PeerLeft { peer },
            Notice::ConnectionFailed { peer } => Event::ConnectionFailed { peer },
            Notice::PeerUnreachable { peer } => Event::PeerUnreachable { peer },
            Notice::PeerBack { peer, after } => Event::PeerBack {
                peer,
                after_ms: ms(after),
            },
            Notice::IceRestart { peer } => Event::IceRestart { peer },
            Notice::ServerError { code, message } => Event::Error {
                code: code.as_str().to_string(),
                message,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_tagged_and_flat() {
        let e = Event::from(Notice::PeerBack {
            peer: "p".into(),
            after: Duration::from_millis(1500),
        });
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"event": "peer_back", "peer": "p", "after_ms": 1500})
        );
        let joined = serde_json::to_value(Event::from(Notice::Joined {
            peer_id: "me".into(),
            room: "r".into(),
            peers: 2,
        }))
        .unwrap();
        assert_eq!(
            joined,
            serde_json::json!({"event": "joined", "room": "r", "peer_id": "me", "peers": 2})
        );
    }
}
