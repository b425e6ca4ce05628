//! What `burrow` tells its user: one line per event, for people or (`--json`) for scripts.
//!
//! Much of what is printed was chosen by someone else: chat lines, peer names, service and file
//! names, the reasons a peer gives for refusing. None of it reaches the terminal raw:
//!
//! * a human line goes through [`peer_core::text::safe_line`] as a whole: no control
//!   characters (so no escape sequences), no bidi overrides, no line breaks of the sender's;
//! * a `--json` line keeps the original text (a script gets exactly what the peer sent, and
//!   must clean it itself before showing it), but every character `safe_line` would touch is
//!   written as a `\uXXXX` escape: serde already escapes C0 controls, this adds DEL, C1
//!   (`U+009B` is a one-character CSI), bidi controls and U+2028/U+2029. The line stays valid
//!   JSON and its bytes are as harmless in a terminal as a human line.

use std::io::Write;

use peer_core::path::PathReport;
use peer_core::text::{needs_escape, safe_line};
use serde::Serialize;

/// The events the page shows too, one set for both peers (`peer_core::events`).
pub use peer_core::events::Event as RoomEvent;

/// Something that happened, as printed: the room's events, and the CLI's own (files on disk,
/// streams, recordings, warnings).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// Nothing has come from the peer over the path for a few seconds (ICE consent checks went
    /// What a peer says is being recorded here.
    VoiceRecording {
        /// The peer id.
        peer: String,
        /// The Ogg/Opus file.
        path: String,
    },
    /// A recording was closed: where, and what the receiving side counted.
    VoiceRecorded {
        /// The peer id.
        peer: String,
        /// The Ogg/Opus file.
        path: String,
        /// Packets, losses, jitter, length.
        #[serde(flatten)]
        received: crate::voice::Received,
    },
    /// A forwarded or exposed stream failed.
    StreamFailed {
        /// The other peer.
        peer: String,
        /// Why.
        reason: String,
    },
    /// A peer's stream was refused without looking at its token: it sent too many wrong ones
    /// and is cooling down (`peer_core::access`).
    StreamRefused {
        /// The peer.
        peer: String,
        /// Why (`too many wrong tokens`).
        reason: String,
        /// When it may try again.
        retry_in_secs: u64,
    },
    /// `burrow expose` read its config file again: what it offers now.
    ServicesReloaded {
        /// The services' names.
        services: Vec<String>,
    },
    /// `burrow expose`'s health check finds a local service not answering (peers are told).
    ServiceDown {
        /// The service.
        service: String,
        /// What the check saw.
        reason: String,
    },
    /// A service that was down answers again.
    ServiceUp {
        /// The service.
        service: String,
    },
    /// The status page (`--admin`) is served here; `burrow status` reads it.
    Admin {
        /// Its address.
        url: String,
    },
    /// `burrow forward` carries datagrams to a UDP service from now on.
    UdpForwarding {
        /// The service.
        service: String,
        /// The local UDP address clients send to.
        listen: String,
        /// The largest datagram carried (bytes); larger ones are dropped.
        max_datagram: usize,
    },
    /// A non-fatal problem.
    Warning {
        /// What happened.
        message: String,
    },
    /// An event of the room or a link (the same the page gets).
    #[serde(untagged)]
    Room(RoomEvent),
}

impl From<RoomEvent> for Event {
    fn from(event: RoomEvent) -> Event {
        Event::Room(event)
    }
}

/// Prints events in the chosen format.
#[derive(Clone, Copy)]
pub struct Printer {
    /// One JSON object per line instead of text.
    pub json: bool,
}

impl Printer {
    /// Prints one event on stdout.
    pub fn print(&self, event: impl Into<Event>) {
        let event = event.into();
        let line = if self.json {
            json_line(&event)
        } else {
            safe_line(&human(&event))
        };
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
}

/// The event as one JSON line whose bytes a terminal only displays (see the module docs).
fn json_line(event: &Event) -> String {
    let raw = serde_json::to_string(event).unwrap_or_default();
    if !raw.chars().any(needs_escape) {
        return raw;
    }
    let mut out = String::with_capacity(raw.len() + 32);
    for c in raw.chars() {
        // Only inside strings (everything outside is ASCII punctuation, digits, literals), and
        // all in the Basic Multilingual Plane: one `\uXXXX` each.
        if needs_escape(c) {
            out.push_str(&format!("\\u{:04x}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
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
        Event::VoiceRecording { peer, path } => format!("* recording {peer} to {path}"),
        Event::VoiceRecorded {
            peer,
            path,
            received,
        } => {
            let mut line = format!(
                "* recorded {peer} to {path}: {:.1} s, {} packets, {} lost, jitter {:.1} ms",
                received.secs, received.packets, received.lost, received.jitter_ms
            );
            if received.dropped > 0 {
                line += &format!(
                    ", {} dropped (over the rate limit, or too large)",
                    received.dropped
                );
            }
            if let Some(why) = &received.stopped {
                line += &format!("; stopped early: {why}");
            }
            line
        }
        Event::StreamFailed { peer, reason } => format!("! stream with {peer}: {reason}"),
        Event::StreamRefused {
            peer,
            reason,
            retry_in_secs,
        } => format!("! refused a stream from {peer}: {reason}; retry in {retry_in_secs} s"),
        Event::ServicesReloaded { services } => {
            format!("* services reloaded: {}", services.join(", "))
        }
        Event::ServiceDown { service, reason } => {
            format!("! service '{service}' is down ({reason}); peers are told")
        }
        Event::ServiceUp { service } => format!("* service '{service}' answers again"),
        Event::Admin { url } => format!("* status page on {url} (burrow status reads it)"),
        Event::UdpForwarding {
            service,
            listen,
            max_datagram,
        } => format!(
            "* forwarding datagrams on udp {listen} to '{service}' (up to {max_datagram} bytes each)"
        ),
        Event::Warning { message } => format!("! {message}"),

        Event::Room(room) => human_room(room),
    }
}

fn human_room(event: &RoomEvent) -> String {
    match event {
        RoomEvent::Joined {
            room,
            peer_id,
            peers,
            link,
        } => format!(
            "joined room {room} as {peer_id}; {peers} peer(s) here. Share: {}",
            link.as_deref().unwrap_or(room)
        ),
        RoomEvent::PeerJoined { peer, name } => format!("* {} joined", who(peer, name)),
        RoomEvent::Connected { peer, report } => {
            format!("* connected to {peer}: {}", describe(report))
        }
        RoomEvent::PathChanged { peer, report } => format!("* {peer} now: {}", describe(report)),
        RoomEvent::FileSent {
            to,
            name,
            size,
            sha256,
            ..
        } => format!("* sent {name} ({size} bytes) to {to}; sha256 {sha256} confirmed"),
        RoomEvent::FileReceived {
            from,
            name,
            path,
            size,
            sha256,
            ..
        } => format!(
            "* received {name} ({size} bytes) from {from} → {}; sha256 {sha256} ok",
            path.as_deref().unwrap_or("?")
        ),
        RoomEvent::FileFailed {
            peer, name, reason, ..
        } => format!("* transfer of {name} with {peer} failed: {reason}"),
        RoomEvent::PeerUnreachable { peer } => {
            format!("! {peer} is unreachable (no answer on the path); waiting for it")
        }
        RoomEvent::PeerBack { peer, after_ms } => {
            format!(
                "* {peer} is back (unreachable for {:.1} s)",
                *after_ms as f64 / 1000.0
            )
        }
        RoomEvent::ServerLost { retry_in_ms } => format!(
            "! lost the connection to the server; links to peers carry on; reconnecting in {:.1} s",
            *retry_in_ms as f64 / 1000.0
        ),
        RoomEvent::ServerBack { after_ms, resumed } => format!(
            "* back in the room after {:.1} s{}",
            *after_ms as f64 / 1000.0,
            if *resumed {
                " (the server kept our place)"
            } else {
                ""
            }
        ),
        RoomEvent::Voice { peer, on, sending } => match (on, sending) {
            (true, true) => format!("* {peer} is in voice"),
            (true, false) => format!("* {peer} is in voice, listening only"),
            (false, _) => format!("* {peer} left voice"),
        },
        RoomEvent::IceRestart { peer } => {
            format!("* the link to {peer} is down: restarting ICE (looking for a new path)")
        }
        RoomEvent::ConnectionFailed { peer } => {
            format!("* could not connect to {peer}: no path found (is a TURN relay available?)")
        }
        RoomEvent::PeerLeft { peer } => format!("* {peer} left"),
        RoomEvent::Chat { from, name, text } => format!("<{}> {text}", who(from, name)),
        RoomEvent::Services { peer, services } => {
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
        RoomEvent::Error { code, message } => format!("! server: {message} ({code})"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(text: &str, name: &str) -> Event {
        Event::Room(RoomEvent::Chat {
            from: "p1".into(),
            name: Some(name.into()),
            text: text.into(),
        })
    }

    const HOSTILE: &str =
        "hi\x1b]0;owned\x07\x1b[2K\r* x joined\x1b]52;c;aGk=\x07\u{9b}31m\u{202e}gnp.exe\n!";

    #[test]
    fn human_lines_hold_no_controls() {
        let line = safe_line(&human(&chat(HOSTILE, "eve\x1b[31m")));
        assert!(!line.chars().any(needs_escape), "{line:?}");
        assert!(line.starts_with("<eve[31m (p1)> hi]0;owned[2K * x joined"));
    }

    #[test]
    fn json_lines_keep_the_text_but_not_its_bytes() {
        let event = chat(HOSTILE, "eve\x1b[31m");
        let line = json_line(&event);
        assert!(!line.chars().any(needs_escape), "{line:?}");
        assert!(
            !line.bytes().any(|b| matches!(b, 0x1b | 0x07 | 0x9b)),
            "{line:?}"
        );
        let back: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(back["text"], HOSTILE);
        assert_eq!(back["name"], "eve\x1b[31m");
        // Ordinary text is left alone.
        let plain = json_line(&chat("你好 ✓", "bob"));
        assert_eq!(
            plain,
            serde_json::to_string(&chat("你好 ✓", "bob")).unwrap()
        );
    }
}
