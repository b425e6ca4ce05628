//! The data-channel layout between two Burrow peers, and the messages on each channel.
//!
//! | channel label | opened by | options | carries |
//! | --- | --- | --- | --- |
//! | `burrow-control` | the offering side, before its offer | reliable, ordered | [`ControlMessage`] as JSON text: chat, the services a peer exposes |
//! | `burrow-file` | the sending side, one per file | reliable, ordered | one file: a [`FileMessage::Header`] (text), the bytes as binary messages of at most [`crate::transfer::CHUNK_SIZE`], a [`FileMessage::End`] with the SHA-256 (text); the receiver answers [`FileMessage::Received`] or [`FileMessage::Refused`] and the sender closes the channel |
//! | `burrow-stream` | the connecting side, one per TCP connection | reliable, ordered | one TCP stream: [`StreamMessage::Open`] (text) naming a service, [`StreamMessage::Accepted`] or [`StreamMessage::Refused`] back, then the bytes as binary messages both ways; [`StreamMessage::End`] is a half-close (no more bytes from this side), [`StreamMessage::Reset`] an abort. For a UDP service, the same messages open and end one UDP session (its `open` carries the session's number) and no bytes follow |
//! | `burrow-udp` | the forwarding side, one per connection | unreliable, unordered | the datagrams of every UDP session toward that peer, each one binary message: the session's number, then the datagram ([`crate::datagram`]) |
//!
//! Each file and each TCP stream gets its own channel, so a large transfer never holds up chat
//! or another stream, and the framing needs no ids: everything on a channel is that one file or
//! stream, in order. The receiver checks a file's size and hash from `End`; a channel that closes
//! before `End` means the transfer was abandoned (for a stream: reset).
//!
//! A stream names a *service*, never an address: the exposing peer connects only to the one
//! local address it was told to expose, so no peer can make it connect anywhere else.

use serde::{Deserialize, Serialize};
use signal_protocol::decode::need;
use signal_protocol::json;

/// Label of the per-pair control channel.
pub const CONTROL_LABEL: &str = "burrow-control";

/// Label of a per-file channel.
pub const FILE_LABEL: &str = "burrow-file";

/// Label of a per-TCP-connection channel.
pub const STREAM_LABEL: &str = "burrow-stream";

/// Messages on the control channel (JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", try_from = "ChannelWire")]
pub enum ControlMessage {
    /// A chat line.
    Chat {
        /// The text, as typed.
        text: String,
    },
    /// The services this peer exposes (sent on connect; replaces any earlier list).
    Services {
        /// What can be opened.
        services: Vec<ServiceInfo>,
    },
    /// How this peer reaches its TURN relay, when not over UDP (`tcp`, `tls`; `null`: no longer),
    /// so the other side's path label says `relayed (TCP)` too.
    Relay {
        /// Its transport to the relay.
        #[serde(default)]
        over: Option<crate::path::RelayOver>,
    },
    /// Whether this peer is in voice (sent on connect when it is, and on every change). Its
    /// audio track comes by renegotiation on the same connection.
    Voice {
        /// In voice now.
        on: bool,
        /// It sends audio (`false`: it listens only, e.g. no microphone).
        #[serde(default)]
        sending: bool,
    },
}

/// A service a peer exposes, as others see it (its local address is never told).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceInfo {
    /// The name streams ask for.
    pub name: String,
    /// `http` (the page can open it), `tcp` or `udp`.
    pub kind: ServiceKind,
    /// Whether opening a stream needs a token.
    #[serde(default)]
    pub protected: bool,
    /// The exposing side's health check finds its local service not answering: new streams
    /// would fail, so the page greys it and `burrow forward` refuses with this reason.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub down: bool,
}

/// What kind of bytes a service speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceKind {
    /// A web site: browsers can open it.
    Http,
    /// Any TCP protocol.
    Tcp,
    /// Datagrams (a game server, DNS, WireGuard): `burrow forward` opens a UDP socket.
    Udp,
}

/// Text messages on a stream channel (the bytes in between are binary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", try_from = "ChannelWire")]
pub enum StreamMessage {
    /// First message, from the connecting side.
    Open {
        /// The service asked for.
        service: String,
        /// The service's access token, if it has one.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        token: Option<String>,
        /// For a UDP service: the number this session's datagrams carry on `burrow-udp`.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        session: Option<u32>,
    },
    /// The exposing side connected to its local service: bytes may flow.
    Accepted,
    /// The exposing side will not connect.
    Refused {
        /// Why.
        reason: String,
    },
    /// No more bytes from the sender of this message (TCP half-close).
    End,
    /// The stream was aborted (TCP reset or error).
    Reset {
        /// Why.
        reason: String,
    },
}

impl StreamMessage {
    /// Encodes as the JSON text sent on the channel.
    pub fn encode(&self) -> String {
        json::to_string(self).unwrap_or_default()
    }

    /// Decodes one text message from the channel.
    pub fn decode(text: &str) -> Result<StreamMessage, FramingError> {
        Ok(json::from_str(text)?)
    }
}

/// Text messages on a file channel (the data in between is binary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case", try_from = "ChannelWire")]
pub enum FileMessage {
    /// First message: what is coming.
    Header {
        /// The file's base name (no folders).
        name: String,
        /// Its size in bytes.
        size: u64,
        /// Its MIME type, if the sender knows it.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        mime: Option<String>,
    },
    /// Last message from the sender: the SHA-256 of all bytes sent, lower-case hex.
    End {
        /// Hex SHA-256.
        sha256: String,
    },
    /// The receiver's reply: the file arrived whole and hashes to `sha256`.
    Received {
        /// Hex SHA-256 of what arrived.
        sha256: String,
    },
    /// The receiver's reply: the file was refused or failed its checks.
    Refused {
        /// Why, for the sender's user.
        reason: String,
    },
}

/// Every field of every channel message, read flat and then sorted by its tag `t` (see
/// `signal_protocol::decode` for why: the derived reader of a tagged enum is large in the
/// browser bundle).
#[derive(Deserialize)]
struct ChannelWire {
    t: String,
    text: Option<String>,
    services: Option<Vec<ServiceInfo>>,
    on: Option<bool>,
    #[serde(default)]
    sending: bool,
    service: Option<String>,
    token: Option<String>,
    session: Option<u32>,
    reason: Option<String>,
    name: Option<String>,
    size: Option<u64>,
    mime: Option<String>,
    sha256: Option<String>,
    over: Option<crate::path::RelayOver>,
}

impl TryFrom<ChannelWire> for ControlMessage {
    type Error = String;

    fn try_from(w: ChannelWire) -> Result<ControlMessage, String> {
        let t = w.t.as_str();
        Ok(match t {
            "chat" => ControlMessage::Chat {
                text: need(w.text, "text", t)?,
            },
            "services" => ControlMessage::Services {
                services: need(w.services, "services", t)?,
            },
            "relay" => ControlMessage::Relay { over: w.over },
            "voice" => ControlMessage::Voice {
                on: need(w.on, "on", t)?,
                sending: w.sending,
            },
            other => return Err(format!("unknown variant `{other}`")),
        })
    }
}

impl TryFrom<ChannelWire> for StreamMessage {
    type Error = String;

    fn try_from(w: ChannelWire) -> Result<StreamMessage, String> {
        let t = w.t.as_str();
        Ok(match t {
            "open" => StreamMessage::Open {
                service: need(w.service, "service", t)?,
                token: w.token,
                session: w.session,
            },
            "accepted" => StreamMessage::Accepted,
            "refused" => StreamMessage::Refused {
                reason: need(w.reason, "reason", t)?,
            },
            "end" => StreamMessage::End,
            "reset" => StreamMessage::Reset {
                reason: need(w.reason, "reason", t)?,
            },
            other => return Err(format!("unknown variant `{other}`")),
        })
    }
}

impl TryFrom<ChannelWire> for FileMessage {
    type Error = String;

    fn try_from(w: ChannelWire) -> Result<FileMessage, String> {
        let t = w.t.as_str();
        Ok(match t {
            "header" => FileMessage::Header {
                name: need(w.name, "name", t)?,
                size: need(w.size, "size", t)?,
                mime: w.mime,
            },
            "end" => FileMessage::End {
                sha256: need(w.sha256, "sha256", t)?,
            },
            "received" => FileMessage::Received {
                sha256: need(w.sha256, "sha256", t)?,
            },
            "refused" => FileMessage::Refused {
                reason: need(w.reason, "reason", t)?,
            },
            other => return Err(format!("unknown variant `{other}`")),
        })
    }
}

/// Why a data-channel text message could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("unreadable message on a data channel: {0}")]
pub struct FramingError(#[from] json::JsonError);

impl ControlMessage {
    /// Encodes as the JSON text sent on the channel.
    pub fn encode(&self) -> String {
        json::to_string(self).unwrap_or_default()
    }

    /// Decodes one text message from the channel.
    pub fn decode(text: &str) -> Result<ControlMessage, FramingError> {
        Ok(json::from_str(text)?)
    }
}

impl FileMessage {
    /// Encodes as the JSON text sent on the channel.
    pub fn encode(&self) -> String {
        json::to_string(self).unwrap_or_default()
    }

    /// Decodes one text message from the channel.
    pub fn decode(text: &str) -> Result<FileMessage, FramingError> {
        Ok(json::from_str(text)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_formats_are_stable() {
        let chat = ControlMessage::Chat { text: "hi".into() };
        assert_eq!(chat.encode(), r#"{"t":"chat","text":"hi"}"#);
        let h = FileMessage::Header {
            name: "a.bin".into(),
            size: 3,
            mime: None,
        };
        assert_eq!(h.encode(), r#"{"t":"header","name":"a.bin","size":3}"#);
        assert_eq!(FileMessage::decode(&h.encode()).unwrap(), h);
        assert!(ControlMessage::decode("{").is_err());
        let open = StreamMessage::Open {
            service: "web".into(),
            token: None,
            session: None,
        };
        assert_eq!(open.encode(), r#"{"t":"open","service":"web"}"#);
        assert_eq!(
            StreamMessage::decode(r#"{"t":"end"}"#).unwrap(),
            StreamMessage::End
        );
        let services = ControlMessage::Services {
            services: vec![ServiceInfo {
                name: "web".into(),
                kind: ServiceKind::Http,
                protected: false,
                down: false,
            }],
        };
        assert_eq!(
            services.encode(),
            r#"{"t":"services","services":[{"name":"web","kind":"http","protected":false}]}"#
        );
        let down = r#"{"t":"services","services":[{"name":"web","kind":"http","down":true}]}"#;
        let ControlMessage::Services { services } = ControlMessage::decode(down).unwrap() else {
            panic!("services")
        };
        assert!(services[0].down && !services[0].protected);
    }

    #[test]
    fn every_channel_message_reads_back_and_a_hostile_one_is_refused() {
        let control = [
            ControlMessage::Chat { text: "hi".into() },
            ControlMessage::Voice {
                on: true,
                sending: false,
            },
            ControlMessage::Services { services: vec![] },
            ControlMessage::Relay {
                over: Some(crate::path::RelayOver::Tls),
            },
            ControlMessage::Relay { over: None },
        ];
        for m in control {
            assert_eq!(ControlMessage::decode(&m.encode()).unwrap(), m);
        }
        let file = [
            FileMessage::Header {
                name: "a".into(),
                size: 1,
                mime: Some("text/plain".into()),
            },
            FileMessage::End {
                sha256: "00".into(),
            },
            FileMessage::Received {
                sha256: "00".into(),
            },
            FileMessage::Refused {
                reason: "no".into(),
            },
        ];
        for m in file {
            assert_eq!(FileMessage::decode(&m.encode()).unwrap(), m);
        }
        let stream = [
            StreamMessage::Open {
                service: "web".into(),
                token: Some("k".into()),
                session: None,
            },
            StreamMessage::Open {
                service: "dns".into(),
                token: None,
                session: Some(7),
            },
            StreamMessage::Accepted,
            StreamMessage::Refused { reason: "r".into() },
            StreamMessage::End,
            StreamMessage::Reset { reason: "r".into() },
        ];
        for m in stream {
            assert_eq!(StreamMessage::decode(&m.encode()).unwrap(), m);
        }
        // A tag of another channel, a missing field, a wrong type, a negative size.
        assert!(ControlMessage::decode(r#"{"t":"header","name":"a","size":1}"#).is_err());
        assert!(FileMessage::decode(r#"{"t":"header","name":"a"}"#).is_err());
        assert!(ControlMessage::decode(r#"{"t":"chat","text":5}"#).is_err());
        assert!(FileMessage::decode(r#"{"t":"header","name":"a","size":-1}"#).is_err());
    }
}
