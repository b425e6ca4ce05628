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

/// Why a file transfer failed (on either side).
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
    /// The file being sent changed size while it was read.
    #[error("the file changed while it was sent ({got} bytes read, {expected} announced)")]
    Changed {
        /// Bytes read.
        got: u64,
        /// The size announced in the header.
        expected: u64,
    },
    /// The receiver said no (or found the bytes wrong).
    #[error("the receiver refused it: {0}")]
    Refused(String),
    /// The receiver's reply was not a verdict on this file.
    #[error("unexpected reply from the receiver: {0}")]
    BadReply(String),
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

/// The sending side of one file: the header to announce, the bytes as they go, the end
/// message, and what the receiver's reply means. The platform reads the file and moves the
/// bytes (waiting while the channel's buffer is above [`HIGH_WATER`]).
pub struct Outgoing {
    name: String,
    size: u64,
    sent: u64,
    hasher: Hasher,
    sha256: Option<String>,
}

impl Outgoing {
    /// Starts a file `name` of `size` bytes; returns the header to send first.
    pub fn start(name: &str, size: u64, mime: Option<String>) -> (Outgoing, FileMessage) {
        let name = safe_file_name(name);
        let header = FileMessage::Header {
            name: name.clone(),
            size,
            mime: mime.filter(|m| !m.is_empty()),
        };
        let me = Outgoing {
            name,
            size,
            sent: 0,
            hasher: Hasher::default(),
            sha256: None,
        };
        (me, header)
    }

    /// Accounts for one chunk about to be sent (a file that grew is stopped here).
    pub fn on_chunk(&mut self, data: &[u8]) -> Result<(), TransferError> {
        self.sent += data.len() as u64;
        if self.sent > self.size {
            return Err(TransferError::Changed {
                got: self.sent,
                expected: self.size,
            });
        }
        self.hasher.update(data);
        Ok(())
    }

    /// The name the receiver sees.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Bytes sent so far.
    pub fn sent(&self) -> u64 {
        self.sent
    }

    /// The end message, once every announced byte went (a file that shrank is stopped here).
    pub fn end(&mut self) -> Result<FileMessage, TransferError> {
        if self.sent != self.size {
            return Err(TransferError::Changed {
                got: self.sent,
                expected: self.size,
            });
        }
        let sha256 = std::mem::take(&mut self.hasher).finish();
        self.sha256 = Some(sha256.clone());
        Ok(FileMessage::End { sha256 })
    }

    /// Reads the receiver's reply to the end message: `Ok` carries the hash both sides agree on.
    pub fn on_reply(&self, reply: &str) -> Result<String, TransferError> {
        match FileMessage::decode(reply) {
            Ok(FileMessage::Received { sha256 }) if self.sha256.as_ref() == Some(&sha256) => {
                Ok(sha256)
            }
            Ok(FileMessage::Refused { reason }) => Err(TransferError::Refused(shown(&reason))),
            _ => Err(TransferError::BadReply(shown(reply))),
        }
    }
}

/// A peer's text as it may be shown in an error: one safe line, at most 200 characters.
fn shown(text: &str) -> String {
    safe_line(text).chars().take(200).collect()
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

/// Longest file name kept, in bytes: file systems allow 255, and a receiver may add " (12)"
/// to make a name unique.
pub const MAX_NAME_BYTES: usize = 240;

/// Keeps only a plain base name: no folders, no leading dots, nothing [`safe_line`] removes
/// (control characters, bidi overrides; line breaks become spaces), no invisible characters,
/// no look-alike slashes (they become `_`: "a∕..∕b" must not pass for a path), at most
/// [`MAX_NAME_BYTES`] bytes (cut in the name before its extension). The name is both a path on
/// the receiver's disk and text shown to its user.
pub fn safe_file_name(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = safe_line(base)
        .chars()
        .filter(|c| !is_invisible(*c))
        .map(|c| if is_slash_like(c) { '_' } else { c })
        .collect();
    // Dots and spaces in any order: " .x" must not become the hidden ".x".
    let cleaned = cleaned
        .trim_start_matches(|c: char| c == '.' || c.is_whitespace())
        .trim_end();
    if cleaned.is_empty() {
        return "received-file".to_string();
    }
    fit(cleaned, MAX_NAME_BYTES)
}

/// `name` cut to at most `max` bytes on a character boundary, keeping a short extension.
fn fit(name: &str, max: usize) -> String {
    if name.len() <= max {
        return name.to_string();
    }
    let (stem, ext) = match name.rsplit_once('.') {
        Some((stem, ext)) if !stem.is_empty() && ext.len() < 16 => (stem, &name[stem.len()..]),
        _ => (name, ""),
    };
    let mut cut = max - ext.len();
    while !stem.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}{ext}", stem[..cut].trim_end())
}

/// Characters that show as nothing: zero-width spaces and joiners, word joiners, soft hyphens,
/// direction marks, the byte-order mark, invisible operators.
fn is_invisible(c: char) -> bool {
    matches!(
        c,
        '\u{AD}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{2060}'..='\u{2064}' | '\u{FEFF}'
    )
}

/// Characters drawn like `/` or `\\`.
fn is_slash_like(c: char) -> bool {
    matches!(
        c,
        '\u{2044}'
            | '\u{2215}'
            | '\u{2216}'
            | '\u{29F5}'
            | '\u{29F8}'
            | '\u{29F9}'
            | '\u{FF0F}'
            | '\u{FF3C}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The sender's messages go through a receiver, as two peers would exchange them.
    #[test]
    fn a_file_goes_from_outgoing_to_incoming_and_the_reply_checks_out() {
        let data: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let (mut out, header) = Outgoing::start("dir/report.pdf", data.len() as u64, None);
        let mut incoming =
            Incoming::start(&FileMessage::decode(&header.encode()).unwrap()).unwrap();
        assert_eq!(incoming.name, "report.pdf");
        for chunk in data.chunks(CHUNK_SIZE) {
            out.on_chunk(chunk).unwrap();
            incoming.on_chunk(chunk).unwrap();
        }
        let end = out.end().unwrap();
        let sha = incoming.finish(&end).unwrap();
        let reply = FileMessage::Received {
            sha256: sha.clone(),
        };
        assert_eq!(out.on_reply(&reply.encode()).unwrap(), sha);
    }

    #[test]
    fn a_refused_file_a_wrong_hash_and_a_changed_file_fail_clearly() {
        let (mut out, _) = Outgoing::start("a", 3, None);
        out.on_chunk(b"abc").unwrap();
        out.end().unwrap();
        let refused = FileMessage::Refused {
            reason: "no\x1b[31m thanks".into(),
        };
        let err = out.on_reply(&refused.encode()).unwrap_err();
        assert!(
            matches!(&err, TransferError::Refused(r) if !r.contains('\x1b')),
            "{err}"
        );
        let wrong = FileMessage::Received {
            sha256: "00".into(),
        };
        assert!(matches!(
            out.on_reply(&wrong.encode()),
            Err(TransferError::BadReply(_))
        ));
        assert!(matches!(
            out.on_reply(&"x".repeat(100_000)),
            Err(TransferError::BadReply(r)) if r.len() <= 200
        ));
        // Grew while sent: stopped at the first byte too many; shrank: no end message.
        let (mut grew, _) = Outgoing::start("b", 2, None);
        assert!(matches!(
            grew.on_chunk(b"abc"),
            Err(TransferError::Changed {
                got: 3,
                expected: 2
            })
        ));
        let (mut shrank, _) = Outgoing::start("c", 5, None);
        shrank.on_chunk(b"ab").unwrap();
        assert!(shrank.end().is_err());
    }

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
    fn a_sender_leaving_mid_transfer_is_told_with_how_far_it_got() {
        let (mut out, header) = Outgoing::start("big.bin", 10, None);
        let mut incoming = Incoming::start(&header).unwrap();
        out.on_chunk(b"abcd").unwrap();
        incoming.on_chunk(b"abcd").unwrap();
        // The channel closes here: no end message.
        assert_eq!(
            incoming.abandoned(),
            TransferError::Abandoned {
                got: 4,
                expected: 10
            }
        );
        assert_eq!(
            incoming.abandoned().to_string(),
            "the sender went away after 4 of 10 bytes"
        );
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
        assert_eq!(safe_file_name("a\u{2215}..\u{2215}b.txt"), "a_.._b.txt");
        assert_eq!(safe_file_name("\u{FF0F}etc\u{FF0F}passwd"), "_etc_passwd");
        assert_eq!(safe_file_name("pay\u{200B}pal\u{FEFF}.pdf"), "paypal.pdf");
        assert_eq!(safe_file_name("\u{200B}.hidden"), "hidden");
    }

    #[test]
    fn long_names_fit_in_bytes_and_keep_their_extension() {
        let long = format!("{}.bin", "n".repeat(300));
        let kept = safe_file_name(&long);
        assert_eq!(kept.len(), MAX_NAME_BYTES);
        assert!(kept.ends_with("n.bin"), "{kept}");
        // 100 characters of 3 bytes each: cut on a character boundary, in bytes.
        let wide = format!("{}.pdf", "报".repeat(100));
        let kept = safe_file_name(&wide);
        assert!(kept.len() <= MAX_NAME_BYTES, "{}", kept.len());
        assert!(kept.ends_with("报.pdf"), "{kept}");
        assert_eq!(safe_file_name("short.txt"), "short.txt");
        let no_ext = "x".repeat(400);
        assert_eq!(safe_file_name(&no_ext).len(), MAX_NAME_BYTES);
    }
}
