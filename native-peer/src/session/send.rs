//! `burrow send`: every file to each peer in the room (or the first to join), one after
//! another, and how the session knows it is done.

use std::path::PathBuf;

use anyhow::{bail, Context};

use super::{Internal, Session};
use crate::events::RoomEvent;
use crate::files;

impl Session {
    /// Sends every file to one peer, one after another, in the background.
    pub(super) fn start_sends(&mut self, id: &str) {
        let Some(peer) = self.peers.get(id) else {
            return;
        };
        self.pending_sends
            .insert(id.to_string(), self.to_send.len());
        let pc = peer.pc.clone();
        let own = peer.own.clone();
        let files = self.to_send.clone();
        let tx = self.internal_tx.clone();
        let to = id.to_string();
        let hidden = self.printer.json;
        self.tasks.spawn(async move {
            for path in files {
                let size = tokio::fs::metadata(&path)
                    .await
                    .map(|m| m.len())
                    .unwrap_or(0);
                let label = format!("{} → {to}", path.display());
                let bar = files::progress(size, &label, hidden);
                let result = files::send(pc.clone(), &own, &path, bar).await;
                let name = peer_core::transfer::safe_file_name(&path.to_string_lossy());
                let _ = tx.send(Internal::SendDone(to.clone(), name, result)).await;
            }
        });
    }

    /// One file to `to` finished (delivered, refused or failed).
    pub(super) fn on_send_done(
        &mut self,
        to: String,
        name: String,
        result: Result<files::Done, files::FileError>,
    ) {
        if let Some(n) = self.pending_sends.get_mut(&to) {
            *n -= 1;
            if *n == 0 {
                self.pending_sends.remove(&to);
            }
        }
        match result {
            Ok(done) => {
                self.delivered += 1;
                self.printer.print(RoomEvent::FileSent {
                    to,
                    name: done.name,
                    size: done.size,
                    sha256: done.sha256,
                    id: None,
                })
            }
            Err(e) => {
                // A refusal is the receiver's choice, not a broken transfer.
                if !matches!(e, files::FileError::Refused(_)) {
                    self.failures += 1;
                }
                self.printer.print(RoomEvent::FileFailed {
                    peer: to,
                    name,
                    reason: e.to_string(),
                    id: None,
                });
            }
        }
    }

    /// Send mode's end, once every targeted peer got (or failed to get) every file.
    pub(super) fn send_outcome(&self) -> Option<anyhow::Result<()>> {
        if !(self.targeted && self.owed.is_empty() && self.pending_sends.is_empty()) {
            return None;
        }
        Some(if self.failures > 0 {
            Err(anyhow::anyhow!("{} transfer(s) failed", self.failures))
        } else if self.delivered == 0 {
            Err(anyhow::anyhow!("no peer accepted the files"))
        } else {
            Ok(())
        })
    }
}

/// Checks that every file to send exists and is a regular file, before joining.
pub fn check_files(files: &[PathBuf]) -> anyhow::Result<()> {
    for f in files {
        let meta = std::fs::metadata(f).with_context(|| format!("cannot read {}", f.display()))?;
        if !meta.is_file() {
            bail!("{} is not a regular file", f.display());
        }
    }
    Ok(())
}
