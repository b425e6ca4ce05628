//! Reading the server's messages and peer signals without serde's buffering.
//!
//! An internally tagged enum (`{"type": "welcome", …}`) derives a deserializer that first buffers
//! the whole object into serde's private `Content` tree, then reads it again; that machinery is
//! a sixth of the browser bundle. The messages the page reads are therefore read as one flat
//! struct holding every variant's fields, and the variant is picked by the tag afterwards. The
//! wire format is unchanged (serialization is still derived); a field of another variant that
//! happens to be present must still have its own type.

use serde::Deserialize;

use crate::{ErrorCode, IceServer, PeerInfo, PeerSignal, ServerMessage};

/// A field the tag's variant requires, or the error naming it (for flat message structs in
/// other crates too).
pub fn need<T>(value: Option<T>, field: &str, tag: &str) -> Result<T, String> {
    value.ok_or_else(|| format!("missing field `{field}` in `{tag}`"))
}

/// Every field of every [`ServerMessage`] variant.
#[derive(Deserialize)]
pub(crate) struct ServerWire {
    #[serde(rename = "type")]
    tag: String,
    version: Option<u32>,
    peer_id: Option<String>,
    room: Option<String>,
    peers: Option<Vec<PeerInfo>>,
    ice_servers: Option<Vec<IceServer>>,
    #[serde(default)]
    resume_token: String,
    #[serde(default)]
    resumed: bool,
    peer: Option<PeerInfo>,
    from: Option<String>,
    data: Option<PeerSignal>,
    code: Option<ErrorCode>,
    message: Option<String>,
}

impl TryFrom<ServerWire> for ServerMessage {
    type Error = String;

    fn try_from(w: ServerWire) -> Result<ServerMessage, String> {
        let t = w.tag.as_str();
        Ok(match t {
            "welcome" => ServerMessage::Welcome {
                version: need(w.version, "version", t)?,
                peer_id: need(w.peer_id, "peer_id", t)?,
                room: need(w.room, "room", t)?,
                peers: need(w.peers, "peers", t)?,
                ice_servers: need(w.ice_servers, "ice_servers", t)?,
                resume_token: w.resume_token,
                resumed: w.resumed,
            },
            "peer_joined" => ServerMessage::PeerJoined {
                peer: need(w.peer, "peer", t)?,
            },
            "peer_left" => ServerMessage::PeerLeft {
                peer_id: need(w.peer_id, "peer_id", t)?,
            },
            "signal" => ServerMessage::Signal {
                from: need(w.from, "from", t)?,
                data: need(w.data, "data", t)?,
            },
            "error" => ServerMessage::Error {
                code: need(w.code, "code", t)?,
                message: need(w.message, "message", t)?,
            },
            other => return Err(format!("unknown variant `{other}`")),
        })
    }
}

/// Every field of every [`PeerSignal`] variant.
#[derive(Deserialize)]
pub(crate) struct SignalWire {
    kind: String,
    sdp: Option<String>,
    candidate: Option<String>,
    sdp_mid: Option<String>,
    sdp_m_line_index: Option<u16>,
}

impl TryFrom<SignalWire> for PeerSignal {
    type Error = String;

    fn try_from(w: SignalWire) -> Result<PeerSignal, String> {
        let t = w.kind.as_str();
        Ok(match t {
            "offer" => PeerSignal::Offer {
                sdp: need(w.sdp, "sdp", t)?,
            },
            "answer" => PeerSignal::Answer {
                sdp: need(w.sdp, "sdp", t)?,
            },
            "candidate" => PeerSignal::Candidate {
                candidate: need(w.candidate, "candidate", t)?,
                sdp_mid: w.sdp_mid,
                sdp_m_line_index: w.sdp_m_line_index,
            },
            "end_of_candidates" => PeerSignal::EndOfCandidates,
            other => return Err(format!("unknown variant `{other}`")),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PeerKind;

    #[test]
    fn every_message_reads_back_as_written() {
        let signal = PeerSignal::Candidate {
            candidate: "candidate:1 1 udp 1 1.2.3.4 5 typ host".into(),
            sdp_mid: Some("0".into()),
            sdp_m_line_index: None,
        };
        let peer = PeerInfo {
            id: "p".into(),
            name: Some("n".into()),
            kind: PeerKind::Native,
            client: Some("c".into()),
        };
        let all = [
            ServerMessage::Welcome {
                version: 1,
                peer_id: "me".into(),
                room: "r".into(),
                peers: vec![peer.clone()],
                ice_servers: vec![],
                resume_token: "t".into(),
                resumed: true,
            },
            ServerMessage::PeerJoined { peer },
            ServerMessage::PeerLeft {
                peer_id: "p".into(),
            },
            ServerMessage::Signal {
                from: "p".into(),
                data: signal,
            },
            ServerMessage::Signal {
                from: "p".into(),
                data: PeerSignal::EndOfCandidates,
            },
            ServerMessage::Error {
                code: ErrorCode::RoomFull,
                message: "full".into(),
            },
        ];
        for m in all {
            let text = serde_json::to_string(&m).unwrap();
            assert_eq!(serde_json::from_str::<ServerMessage>(&text).unwrap(), m);
        }
    }

    #[test]
    fn a_wrong_message_is_refused_with_a_reason() {
        let err = |text: &str| {
            serde_json::from_str::<ServerMessage>(text)
                .unwrap_err()
                .to_string()
        };
        assert!(err(r#"{"type":"peer_left"}"#).contains("missing field `peer_id`"));
        assert!(err(r#"{"type":"nope"}"#).contains("unknown variant `nope`"));
        assert!(err(r#"{"type":"signal","from":"p","data":{"kind":"offer"}}"#).contains("sdp"));
        assert!(err(r#"{"peer_id":"x"}"#).contains("missing field `type`"));
        assert!(err(r#"{"type":"peer_left","peer_id":7}"#).contains("invalid type"));
    }

    #[test]
    fn a_kind_this_version_does_not_know_is_a_browser() {
        let joined = r#"{"type":"peer_joined","peer":{"id":"p","name":null,"kind":"mobile"}}"#;
        let Ok(ServerMessage::PeerJoined { peer }) = serde_json::from_str(joined) else {
            panic!("refused a peer of an unknown kind");
        };
        assert_eq!(peer.kind, PeerKind::Browser);
        let native = r#"{"type":"peer_joined","peer":{"id":"p","name":null,"kind":"native"}}"#;
        let Ok(ServerMessage::PeerJoined { peer }) = serde_json::from_str(native) else {
            panic!("refused a native peer");
        };
        assert_eq!(peer.kind, PeerKind::Native);
    }
}
