#![warn(missing_docs)]
//! The signaling protocol spoken between Burrow peers and the rendezvous server.
//!
//! One definition, used by the server (`signal-server`), the native peer (`burrow`) and the browser
//! peer (`wasm-peer`). Every message is one JSON object in one WebSocket **text** frame, tagged by
//! its `"type"` field. Messages are named by direction:
//!
//! * [`ClientMessage`]: client → server (`hello`, `leave`, `signal`);
//! * [`ServerMessage`]: server → client (`welcome`, `peer_joined`, `peer_left`, `signal`, `error`);
//! * [`PeerSignal`]: the peer → peer payload that the server relays untouched (SDP offer and
//!   answer, trickled ICE candidates, end of candidates).
//!
//! # Flow
//!
//! A client opens `ws://HOST/ws/{room}` and sends `hello` with the [`PROTOCOL_VERSION`] it speaks.
//! The server answers `welcome` (its peer id, the peers already in the room, the ICE servers to
//! use) or an `error` (wrong version, bad room id, full room: the socket stays open and `hello` may
//! be sent again). Every other member of the room then gets `peer_joined`. From then on a client
//! addresses a [`PeerSignal`] to one peer id; the server delivers it to that peer only, stamped with
//! the sender's id. A client that quits says `leave`, and the room gets `peer_left` at once.
//!
//! # Coming back
//!
//! A socket that closes without `leave`, or stops answering pings, is *lost*: the server keeps the
//! peer's place for a grace period, keeping what is sent to it. The welcome carried a
//! `resume_token`; a client that reconnects says `hello` with `resume: {peer_id, token}` and, within
//! the grace period, gets its id back with `resumed: true` and the kept messages: the room saw
//! nothing. After the grace period (then `peer_left` was sent) or a server restart, a proven id
//! that is free is given back and announced with `peer_joined`; peers that still hold a
//! connection to that id keep it.
//!
//! # Example exchange
//!
//! ```text
//! A → S  {"type":"hello","version":1,"name":"alice"}
//! S → A  {"type":"welcome","version":1,"peer_id":"k3J9xQ2m","room":"demo","peers":[],
//!         "ice_servers":[{"urls":["stun:203.0.113.7:3478"]}],"resume_token":"q0dA…","resumed":false}
//! B → S  {"type":"hello","version":1}
//! S → B  {"type":"welcome","version":1,"peer_id":"Zp0aL7wE","room":"demo",
//!         "peers":[{"id":"k3J9xQ2m","name":"alice"}],"ice_servers":[…],"resume_token":"…","resumed":false}
//! S → A  {"type":"peer_joined","peer":{"id":"Zp0aL7wE","name":null}}
//! B → S  {"type":"signal","to":"k3J9xQ2m","data":{"kind":"offer","sdp":"v=0…"}}
//! S → A  {"type":"signal","from":"Zp0aL7wE","data":{"kind":"offer","sdp":"v=0…"}}
//! A → S  {"type":"signal","to":"Zp0aL7wE","data":{"kind":"answer","sdp":"v=0…"}}
//! A → S  {"type":"signal","to":"Zp0aL7wE","data":{"kind":"candidate","candidate":"candidate:1 1 udp …",
//!         "sdp_mid":"0","sdp_m_line_index":0}}
//! B → S  {"type":"signal","to":"nobody","data":{"kind":"end_of_candidates"}}
//! S → B  {"type":"error","code":"unknown_peer","message":"no peer 'nobody' in this room"}
//! (B's socket drops; B reconnects within the grace period)
//! B → S  {"type":"hello","version":1,"resume":{"peer_id":"Zp0aL7wE","token":"…"}}
//! S → B  {"type":"welcome",…,"peer_id":"Zp0aL7wE",…,"resumed":true}   (A is told nothing)
//! B → S  {"type":"leave"}
//! S → A  {"type":"peer_left","peer_id":"Zp0aL7wE"}
//! ```

use serde::{Deserialize, Serialize};

pub mod decode;
pub mod json;

/// The protocol version this crate speaks; a `hello` with another version is refused.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest room id accepted, in characters.
pub const MAX_ROOM_ID_LEN: usize = 64;

/// Longest display name accepted, in characters (longer names are cut, not refused).
pub const MAX_NAME_LEN: usize = 64;

/// A display name as every peer is shown it: control characters, bidi controls (which make
/// text read backwards or move a name's id) and invisible characters (zero-width spaces and
/// joiners, soft hyphens, word joiners, BOMs: "alice" and "al\u{200B}ice" would look alike)
/// dropped; runs of whitespace one space; trimmed; at most [`MAX_NAME_LEN`] characters. `None`
/// when nothing is left. The server cleans every `hello`'s name with it; peers show the id
/// beside it anyway, since two peers may pick the same name.
pub fn clean_name(name: &str) -> Option<String> {
    let invisible = |c: char| {
        c.is_control()
            || matches!(c,
                '\u{00AD}' | '\u{034F}' | '\u{061C}' | '\u{115F}' | '\u{1160}' | '\u{17B4}'
                | '\u{17B5}' | '\u{180B}'..='\u{180F}' | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}' | '\u{FEFF}' | '\u{FFA0}' | '\u{FFF0}'..='\u{FFFB}'
                | '\u{E0000}'..='\u{E0FFF}')
    };
    let mut out = String::new();
    for word in name
        .split(char::is_whitespace)
        .map(|w| w.chars().filter(|&c| !invisible(c)).collect::<String>())
        .filter(|w| !w.is_empty())
    {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(&word);
    }
    let out: String = out.chars().take(MAX_NAME_LEN).collect();
    let out = out.trim_end().to_string();
    (!out.is_empty()).then_some(out)
}

/// A peer's id, assigned by the server when it joins a room, unique within the server.
pub type PeerId = String;

/// Messages a client sends to the server.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientMessage {
    /// Join the room named in the WebSocket URL.
    Hello {
        /// The protocol version the client speaks ([`PROTOCOL_VERSION`]).
        version: u32,
        /// An optional display name shown to the other peers.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        name: Option<String>,
        /// The identity this client had before its connection was lost, to take it back.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resume: Option<Resume>,
        /// What the client runs on; told to the others so they know who offers to whom.
        #[serde(default, skip_serializing_if = "PeerKind::is_browser")]
        kind: PeerKind,
    },
    /// Leave the room now (the client is quitting). A connection that is lost without it keeps
    /// the peer's place in the room for the server's grace period, so it can come back.
    Leave,
    /// Relay `data` to peer `to` in the same room.
    Signal {
        /// The addressed peer.
        to: PeerId,
        /// The payload, delivered untouched.
        data: PeerSignal,
    },
}

/// Messages the server sends to a client.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    rename_all = "snake_case",
    try_from = "decode::ServerWire"
)]
pub enum ServerMessage {
    /// The answer to a successful `hello`.
    Welcome {
        /// The server's protocol version.
        version: u32,
        /// The id the server gave this client.
        peer_id: PeerId,
        /// The room joined.
        room: String,
        /// The peers that were in the room before this one.
        peers: Vec<PeerInfo>,
        /// The ICE servers (STUN, TURN) the client should use.
        ice_servers: Vec<IceServer>,
        /// Proof of this identity, to present in [`Resume`] after a lost connection.
        #[serde(default)]
        resume_token: String,
        /// The server still held this peer's place (it came back within the grace period): the
        /// others saw neither a leave nor a join.
        #[serde(default)]
        resumed: bool,
    },
    /// Another peer joined the room.
    PeerJoined {
        /// Who joined.
        peer: PeerInfo,
    },
    /// A peer left the room (socket closed, or it stopped answering pings).
    PeerLeft {
        /// Who left.
        peer_id: PeerId,
    },
    /// A signal from another peer in the room.
    Signal {
        /// The sender, as stamped by the server.
        from: PeerId,
        /// The payload, as the sender wrote it.
        data: PeerSignal,
    },
    /// A request failed; the connection stays usable unless the message says otherwise.
    Error {
        /// A stable machine-readable code.
        code: ErrorCode,
        /// A human-readable explanation.
        message: String,
    },
}

/// A returning client's previous identity: its peer id and the token its `welcome` gave it.
///
/// The server gives the id back when the token is genuine (and, after a restart without a
/// shared secret, when the id is free and the server started less than a grace period ago).
/// Otherwise the client simply gets a new id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resume {
    /// The id the client had.
    pub peer_id: PeerId,
    /// The `resume_token` of its last `welcome`.
    pub token: String,
}

/// A member of a room as others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerInfo {
    /// The server-assigned id.
    pub id: PeerId,
    /// The display name the peer gave in `hello`, if any.
    pub name: Option<String>,
    /// What the peer said it runs on in `hello`.
    #[serde(default, skip_serializing_if = "PeerKind::is_browser")]
    pub kind: PeerKind,
    /// An opaque tag the server gives the peer's address (per /64 for IPv6), the same for every
    /// join from that address to this room and different in every other room: peers count what
    /// one client may try (wrong access tokens) by it, since a rejoin gets a new id but keeps
    /// its tag. It says nothing about the address itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

/// What a peer runs on. It matters for one decision: between a browser and `burrow`, `burrow`
/// offers, so it controls ICE. The `webrtc` crate, when controlled, keeps the first pair it is
/// told to use, while a controlling browser may nominate the relay first and move to a direct
/// pair later; as the controlling side `burrow` nominates once, after direct pairs had their
/// chance (see `peer_core::room`). Unknown or absent means a browser, the cautious choice.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", from = "String")]
pub enum PeerKind {
    /// A web page (wasm over the browser's WebRTC).
    #[default]
    Browser,
    /// `burrow`, the native peer (the `webrtc` crate).
    Native,
}

impl From<String> for PeerKind {
    /// `native`, or else a browser (a kind a newer client may send is not refused).
    fn from(kind: String) -> PeerKind {
        if kind == "native" {
            PeerKind::Native
        } else {
            PeerKind::Browser
        }
    }
}

impl PeerKind {
    /// Whether this is the default kind (left out on the wire).
    pub fn is_browser(&self) -> bool {
        *self == PeerKind::Browser
    }
}

/// One ICE server entry, shaped like the browser's `RTCIceServer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IceServer {
    /// `stun:host:port` or `turn:host:port?transport=udp` URLs.
    pub urls: Vec<String>,
    /// TURN username (for TURN entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// TURN password (for TURN entries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<String>,
}

/// The peer → peer payload carried inside `signal` messages.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    try_from = "decode::SignalWire"
)]
pub enum PeerSignal {
    /// An SDP offer.
    Offer {
        /// The session description.
        sdp: String,
    },
    /// An SDP answer.
    Answer {
        /// The session description.
        sdp: String,
    },
    /// One trickled ICE candidate.
    Candidate {
        /// The `candidate:` attribute line, as `RTCIceCandidate.candidate`.
        candidate: String,
        /// The media stream id it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_mid: Option<String>,
        /// The m-line index it belongs to.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        sdp_m_line_index: Option<u16>,
    },
    /// The sender has gathered all its candidates.
    EndOfCandidates,
}

/// Why a request failed: stable codes clients can match on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The message was not valid JSON or lacked a field.
    MalformedMessage,
    /// The message's `type` is not one this server knows.
    UnknownType,
    /// The message was larger than the server accepts.
    MessageTooLarge,
    /// The client speaks another protocol version.
    UnsupportedVersion,
    /// The room id in the URL is not valid.
    InvalidRoomId,
    /// The room already holds the maximum number of peers.
    RoomFull,
    /// The server already holds the maximum number of rooms.
    ServerFull,
    /// A signal was addressed to a peer that is not in the room.
    UnknownPeer,
    /// The client sent messages faster than allowed; the message was dropped.
    RateLimited,
    /// A signal was sent before a successful `hello`.
    NotJoined,
    /// A second `hello` was sent after joining.
    AlreadyJoined,
    /// The addressed peer is not reading its messages; the signal was dropped.
    PeerCongested,
}

impl ErrorCode {
    /// The code as it appears on the wire (`"room_full"`), for logs and user messages.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::MalformedMessage => "malformed_message",
            ErrorCode::UnknownType => "unknown_type",
            ErrorCode::MessageTooLarge => "message_too_large",
            ErrorCode::UnsupportedVersion => "unsupported_version",
            ErrorCode::InvalidRoomId => "invalid_room_id",
            ErrorCode::RoomFull => "room_full",
            ErrorCode::ServerFull => "server_full",
            ErrorCode::UnknownPeer => "unknown_peer",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::NotJoined => "not_joined",
            ErrorCode::AlreadyJoined => "already_joined",
            ErrorCode::PeerCongested => "peer_congested",
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why an incoming client message could not be used: the code and text for the error reply.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {message}")]
pub struct ParseError {
    /// `malformed_message` or `unknown_type`.
    pub code: ErrorCode,
    /// What was wrong, for the human reading the reply.
    pub message: String,
}

impl ClientMessage {
    /// Parses one text frame, telling an unknown `type` apart from a malformed message.
    pub fn parse(text: &str) -> Result<ClientMessage, ParseError> {
        json::from_str(text).map_err(|e| {
            #[derive(Deserialize)]
            struct Tag {
                #[serde(rename = "type")]
                kind: String,
            }
            match json::from_str::<Tag>(text) {
                Ok(tag) if !matches!(tag.kind.as_str(), "hello" | "leave" | "signal") => {
                    ParseError {
                        code: ErrorCode::UnknownType,
                        message: format!("unknown message type '{}'", tag.kind),
                    }
                }
                _ => ParseError {
                    code: ErrorCode::MalformedMessage,
                    message: format!("malformed message: {e}"),
                },
            }
        })
    }
}

/// Why a room id was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoomIdError {
    /// The id is empty.
    #[error("room id is empty")]
    Empty,
    /// The id is longer than [`MAX_ROOM_ID_LEN`].
    #[error("room id is longer than {MAX_ROOM_ID_LEN} characters")]
    TooLong,
    /// The id holds a character outside `A-Z a-z 0-9 - _`.
    #[error("room id may only hold letters, digits, '-' and '_'")]
    BadCharacter,
}

/// Checks a room id: 1 to [`MAX_ROOM_ID_LEN`] characters of `A-Z a-z 0-9 - _` (URL-safe as is).
pub fn validate_room_id(id: &str) -> Result<(), RoomIdError> {
    if id.is_empty() {
        return Err(RoomIdError::Empty);
    }
    if id.len() > MAX_ROOM_ID_LEN {
        return Err(RoomIdError::TooLong);
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err(RoomIdError::BadCharacter);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_lose_what_would_disguise_them() {
        assert_eq!(clean_name("  alice  "), Some("alice".into()));
        assert_eq!(
            clean_name("al\u{200B}ice"),
            Some("alice".into()),
            "zero-width space"
        );
        assert_eq!(
            clean_name("\u{202E}ecila"),
            Some("ecila".into()),
            "right-to-left override"
        );
        assert_eq!(
            clean_name("a\u{2066}b\u{2069}"),
            Some("ab".into()),
            "isolates"
        );
        assert_eq!(clean_name("a\nb\tc   d"), Some("a b c d".into()));
        assert_eq!(
            clean_name("mal\x1b]0;x\x07ory"),
            Some("mal]0;xory".into()),
            "escapes go"
        );
        assert_eq!(clean_name("\u{FEFF}\u{00AD}"), None);
        assert_eq!(clean_name(""), None);
        assert_eq!(
            clean_name("Zoë 李"),
            Some("Zoë 李".into()),
            "real names stay"
        );
        let long = "x".repeat(100);
        assert_eq!(
            clean_name(&long).map(|n| n.chars().count()),
            Some(MAX_NAME_LEN)
        );
    }

    #[test]
    fn hello_round_trips_and_omits_missing_name() {
        let m = ClientMessage::Hello {
            version: 1,
            name: None,
            resume: None,
            kind: PeerKind::Browser,
        };
        let s = serde_json::to_string(&m).unwrap();
        assert_eq!(s, r#"{"type":"hello","version":1}"#);
        assert_eq!(serde_json::from_str::<ClientMessage>(&s).unwrap(), m);
    }

    #[test]
    fn signal_wire_format_is_stable() {
        let m = ClientMessage::Signal {
            to: "abc".into(),
            data: PeerSignal::Candidate {
                candidate: "candidate:1 1 udp 1 1.2.3.4 5 typ host".into(),
                sdp_mid: Some("0".into()),
                sdp_m_line_index: Some(0),
            },
        };
        let v: serde_json::Value = serde_json::to_value(&m).unwrap();
        assert_eq!(v["type"], "signal");
        assert_eq!(v["data"]["kind"], "candidate");
        assert_eq!(v["data"]["sdp_m_line_index"], 0);
        let end = serde_json::to_string(&PeerSignal::EndOfCandidates).unwrap();
        assert_eq!(end, r#"{"kind":"end_of_candidates"}"#);
    }

    #[test]
    fn error_codes_serialize_as_their_names() {
        for code in [
            ErrorCode::RoomFull,
            ErrorCode::UnknownPeer,
            ErrorCode::MessageTooLarge,
        ] {
            let s = serde_json::to_string(&code).unwrap();
            assert_eq!(s, format!("\"{}\"", code.as_str()));
        }
    }

    #[test]
    fn parse_tells_unknown_type_from_malformed() {
        let e = ClientMessage::parse(r#"{"type":"dance"}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::UnknownType);
        let e = ClientMessage::parse(r#"{"type":"signal","to":3}"#).unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedMessage);
        let e = ClientMessage::parse("not json").unwrap_err();
        assert_eq!(e.code, ErrorCode::MalformedMessage);
        assert!(ClientMessage::parse(r#"{"type":"hello","version":1}"#).is_ok());
    }

    #[test]
    fn room_ids_are_validated() {
        assert!(validate_room_id("abc-DEF_123").is_ok());
        assert_eq!(validate_room_id(""), Err(RoomIdError::Empty));
        assert_eq!(validate_room_id(&"a".repeat(65)), Err(RoomIdError::TooLong));
        assert_eq!(validate_room_id("a/b"), Err(RoomIdError::BadCharacter));
        assert_eq!(validate_room_id("äb"), Err(RoomIdError::BadCharacter));
    }
}
