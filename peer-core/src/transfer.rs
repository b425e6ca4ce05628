//! File chunking, and the receiving side's checks: the size announced, then the SHA-256.
//!
//! The sender reads the file in [`CHUNK_SIZE`] pieces, sends each as one binary message, and
//! stops sending while more than [`HIGH_WATER`] bytes wait in the channel's buffer, resuming
//! below [`LOW_WATER`]: memory stays bounded whatever the file's size.

use sha2::{Digest, Sha256};

use crate::channels::FileMessage;
use crate::text::safe_line;

/// Bytes per binary message: well under every browser's SCTP message limit (Chromium 256 KiB)
/// and the native peer's (which advertises 256 KiB too).
pub const CHUNK_SIZE: usize = 64 * 1024;

/// Stop sending when this much waits in a channel's send buffer.
pub const HIGH_WATER: usize = 1024 * 1024;

/// Resume sending when the send buffer drains below this.
pub const LOW_WATER: usize = 256 * 1024;

/// Why a received file was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransferError {
    /// The first message was not a header.
    #[error("the sender did not start with a file header")]
    NoHeader,
    /// More bytes arrived than announced.
    #[error("received more than the announced {expected} bytes")]
    TooLong {
        /// The announced size.
        expected: u64,
    },
    /// The transfer ended short.
    #[error("file ended after {got} of {expected} bytes")]
    TooShort {
        /// Bytes received.
        got: u64,
        /// The announced size.
        expected: u64,
    },
    /// The hash does not match.
    #[error("SHA-256 mismatch: sender says {expected}, received bytes hash to {got}")]
    HashMismatch {
        /// The sender's hash.
        expected: String,
        /// The hash of what arrived.
        got: String,
    },
    /// The channel closed before the end message.
    #[error("the sender went away after {got} of {expected} bytes")]
    Abandoned {
        /// Bytes received.
        got: u64,
        /// The announced size.
        expected: u64,
    },
}

/// A running SHA-256 over the bytes sent or received.
#[derive(Default, Clone)]
pub struct Hasher(Sha256);

impl Hasher {
    /// Adds bytes.
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    /// The lower-case hex digest.
    pub fn finish(self) -> String {
        hex::encode(self.0.finalize())
    }
}

/// The receiving side of one file.
pub struct Incoming {
    /// The sanitized file name.
    pub name: String,
    /// The announced size.
    pub size: u64,
    /// The MIME type, if announced.
    pub mime: Option<String>,
    received: u64,
    hasher: Hasher,
}

impl Incoming {
    /// Starts from the channel's first text message.
    pub fn start(first: &FileMessage) -> Result<Incoming, TransferError> {
        match first {
            FileMessage::Header { name, size, mime } => Ok(Incoming {
                name: safe_file_name(name),
                size: *size,
                mime: mime.clone(),
                received: 0,
                hasher: Hasher::default(),
            }),
            _ => Err(TransferError::NoHeader),
        }
    }

    /// Accounts for one binary chunk (the caller stores the bytes).
    pub fn on_chunk(&mut self, data: &[u8]) -> Result<(), TransferError> {
        self.received += data.len() as u64;
        if self.received > self.size {
            return Err(TransferError::TooLong {
                expected: self.size,
            });
        }
        self.hasher.update(data);
        Ok(())
    }

    /// Bytes received so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Checks the end message; `Ok` carries the verified hash.
    pub fn finish(self, end: &FileMessage) -> Result<String, TransferError> {
        let FileMessage::End { sha256 } = end else {
            return Err(TransferError::NoHeader);
        };
        if self.received != self.size {
            return Err(TransferError::TooShort {
                got: self.received,
                expected: self.size,
            });
        }
        let got = self.hasher.finish();
        if !got.eq_ignore_ascii_case(sha256) {
            return Err(TransferError::HashMismatch {
                expected: sha256.clone(),
                got,
            });
        }
        Ok(got)
    }

    /// The error for a channel that closed before `End`.
    pub fn abandoned(&self) -> TransferError {
        TransferError::Abandoned {
            got: self.received,
            expected: self.size,
        }
    }
}

/// Keeps only a plain base name: no folders, no leading dots, nothing [`safe_line`] removes
/// (control characters, bidi overrides; line breaks become spaces), at most 200 characters.
/// The name is both a path on the receiver's disk and text shown to its user.
pub fn safe_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = safe_line(base).chars().take(200).collect();
    // Dots and spaces in any order: " .x" must not become the hidden ".x".
    let cleaned = cleaned
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end();
    if cleaned.is_empty() {
        "received-file".to_string()
    } else {
        cleaned.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(size: u64) -> FileMessage {
        FileMessage::Header {
            name: "../../etc/passwd".into(),
            size,
            mime: None,
        }
    }

    fn sha(data: &[u8]) -> String {
        let mut h = Hasher::default();
        h.update(data);
        h.finish()
    }

    #[test]
    fn a_good_file_passes() {
        let mut f = Incoming::start(&header(6)).unwrap();
        assert_eq!(f.name, "passwd");
        f.on_chunk(b"abc").unwrap();
        f.on_chunk(b"def").unwrap();
        let end = FileMessage::End {
            sha256: sha(b"abcdef"),
        };
        assert_eq!(f.finish(&end).unwrap(), sha(b"abcdef"));
    }

    #[test]
    fn bad_files_are_refused() {
        let mut f = Incoming::start(&header(2)).unwrap();
        assert!(matches!(
            f.on_chunk(b"abc"),
            Err(TransferError::TooLong { .. })
        ));
        let mut f = Incoming::start(&header(3)).unwrap();
        f.on_chunk(b"abc").unwrap();
        let wrong = FileMessage::End {
            sha256: sha(b"xyz"),
        };
        assert!(matches!(
            f.finish(&wrong),
            Err(TransferError::HashMismatch { .. })
        ));
        let f = Incoming::start(&header(3)).unwrap();
        let end = FileMessage::End { sha256: sha(b"") };
        assert!(matches!(
            f.finish(&end),
            Err(TransferError::TooShort { .. })
        ));
    }

    #[test]
    fn names_are_sanitized() {
        assert_eq!(safe_file_name("a/b/c.txt"), "c.txt");
        assert_eq!(safe_file_name("..\\x"), "x");
        assert_eq!(safe_file_name(".."), "received-file");
        assert_eq!(safe_file_name(".hidden"), "hidden");
        assert_eq!(safe_file_name("a\x1b]0;x\x07.txt"), "a]0;x.txt");
        assert_eq!(safe_file_name("invoice\u{202E}fdp.exe"), "invoicefdp.exe");
        assert_eq!(safe_file_name("line\nbreak.txt"), "line break.txt");
        assert_eq!(safe_file_name("报告.pdf"), "报告.pdf");
        assert_eq!(safe_file_name(" . .x "), "x");
    }
}
