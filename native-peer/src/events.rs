//! What `burrow` tells its user: one line per event, for people or (`--json`) for scripts.

use std::io::Write;

use peer_core::path::PathReport;
use serde::Serialize;

/// Something that happened, as printed.
#[derive(Debug, Clone, Serialize)]
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
        /// The link to share.
        link: String,
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
        report: PathReport,
    },
    /// The connection moved to another candidate pair.
    PathChanged {
        /// The peer id.
        peer: String,
        /// The new path.
        #[serde(flatten)]
        report: PathReport,
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
    /// A file was sent and the receiver confirmed its hash.
    FileSent {
        /// The receiver.
        to: String,
        /// The file name.
        name: String,
        /// Its size.
        size: u64,
        /// Its SHA-256.
        sha256: String,
    },
    /// A file arrived intact and was saved.
    FileReceived {
        /// The sender.
        from: String,
        /// The file name.
        name: String,
        /// Where it was saved.
        path: String,
        /// Its size.
        size: u64,
        /// Its verified SHA-256.
        sha256: String,
    },
    /// A transfer failed; nothing was left under the final name.
    FileFailed {
        /// The other peer.
        peer: String,
        /// The file name.
        name: String,
        /// Why.
        reason: String,
    },
    /// A peer offers services (`burrow expose` on its side).
    Services {
        /// The peer.
        peer: String,
        /// What it offers.
        services: Vec<peer_core::channels::ServiceInfo>,
    },
    /// A forwarded or exposed stream failed.
    StreamFailed {
        /// The other peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A non-fatal problem.
    Warning {
        /// What happened.
        message: String,
    },
}

/// Prints events in the chosen format.
#[derive(Clone, Copy)]
pub struct Printer {
    /// One JSON object per line instead of text.
    pub json: bool,
}

impl Printer {
    /// Prints one event on stdout.
    pub fn print(&self, event: &Event) {
        let line = if self.json {
            serde_json::to_string(event).unwrap_or_default()
        } else {
            human(event)
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

fn who(id: &str, name: &Option<String>) -> String {
    match name {
        Some(n) => format!("{n} ({id})"),
        None => id.to_string(),
    }
}

/// "direct (hole punched) [host ↔ srflx], rtt 1.1 ms".
fn describe(r: &PathReport) -> String {
    let pair = match (r.local, r.remote) {
        (Some(l), Some(r)) => format!(" [{l:?} ↔ {r:?}]").to_lowercase(),
        _ => String::new(),
    };
    let rtt = r
        .rtt_ms
        .map(|ms| format!(", rtt {ms:.1} ms"))
        .unwrap_or_default();
    format!("{}{pair}{rtt}", r.label)
}

fn human(event: &Event) -> String {
    match event {
        Event::Joined {
            room,
            peer_id,
            peers,
            link,
        } => format!("joined room {room} as {peer_id}; {peers} peer(s) here. Share: {link}"),
        Event::PeerJoined { peer, name } => format!("* {} joined", who(peer, name)),
        Event::Connected { peer, report } => {
            format!("* connected to {peer}: {}", describe(report))
        }
        Event::PathChanged { peer, report } => format!("* {peer} now: {}", describe(report)),
        Event::ConnectionFailed { peer } => {
            format!("* could not connect to {peer}: no path found (is a TURN relay available?)")
        }
        Event::PeerLeft { peer } => format!("* {peer} left"),
        Event::Chat { from, name, text } => format!("<{}> {text}", who(from, name)),
        Event::FileSent {
            to,
            name,
            size,
            sha256,
        } => format!("* sent {name} ({size} bytes) to {to}; sha256 {sha256} confirmed"),
        Event::FileReceived {
            from,
            name,
            path,
            size,
            sha256,
        } => format!("* received {name} ({size} bytes) from {from} → {path}; sha256 {sha256} ok"),
        Event::FileFailed { peer, name, reason } => {
            format!("* transfer of {name} with {peer} failed: {reason}")
        }
        Event::Services { peer, services } => {
            let list: Vec<String> = services
                .iter()
                .map(|s| {
                    let kind = format!("{:?}", s.kind).to_lowercase();
                    let token = if s.protected { ", token needed" } else { "" };
                    format!("{} ({kind}{token})", s.name)
                })
                .collect();
            format!("* {peer} offers {}", list.join(", "))
        }
        Event::StreamFailed { peer, reason } => format!("! stream with {peer}: {reason}"),
        Event::Warning { message } => format!("! {message}"),
    }
}
