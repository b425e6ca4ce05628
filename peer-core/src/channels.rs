//! The data-channel layout between two Burrow peers, and the messages on each channel.
//!
//! | channel label | opened by | options | carries |
//! | --- | --- | --- | --- |
//! | `burrow-control` | the offering side, before its offer | reliable, ordered | [`ControlMessage`] as JSON text: chat |
//! | `burrow-file` | the sending side, one per file | reliable, ordered | one file: a [`FileMessage::Header`] (text), the bytes as binary messages of at most [`crate::transfer::CHUNK_SIZE`], a [`FileMessage::End`] with the SHA-256 (text); the receiver answers [`FileMessage::Received`] or [`FileMessage::Refused`] and the sender closes the channel |
//!
//! Each file gets its own channel, so a large transfer never holds up chat, and its framing needs
//! no ids: everything on that channel is that file, in order. The receiver checks the size and
//! the hash from `End`; a channel that closes before `End` means the transfer was abandoned.

use serde::{Deserialize, Serialize};

/// Label of the per-pair control channel.
pub const CONTROL_LABEL: &str = "burrow-control";

/// Label of a per-file channel.
pub const FILE_LABEL: &str = "burrow-file";

/// Messages on the control channel (JSON text).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
pub enum ControlMessage {
    /// A chat line.
    Chat {
        /// The text, as typed.
        text: String,
    },
}

/// Text messages on a file channel (the data in between is binary).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "t", rename_all = "snake_case")]
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

/// Why a data-channel text message could not be understood.
#[derive(Debug, thiserror::Error)]
#[error("unreadable message on a data channel: {0}")]
pub struct FramingError(#[from] serde_json::Error);

impl ControlMessage {
    /// Encodes as the JSON text sent on the channel.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes one text message from the channel.
    pub fn decode(text: &str) -> Result<ControlMessage, FramingError> {
        Ok(serde_json::from_str(text)?)
    }
}

impl FileMessage {
    /// Encodes as the JSON text sent on the channel.
    pub fn encode(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    /// Decodes one text message from the channel.
    pub fn decode(text: &str) -> Result<FileMessage, FramingError> {
        Ok(serde_json::from_str(text)?)
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
    }
}
