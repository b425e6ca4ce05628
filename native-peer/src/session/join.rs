//! `burrow join`'s own work: files peers send (into `--accept DIR`, or refused).

use std::sync::Arc;

use webrtc::data_channel::DataChannel;

use super::{Internal, Session};
use crate::events::RoomEvent;
use crate::files;

impl Session {
    /// A peer opened a file channel: receive it in the background.
    pub(super) fn receive_file(&mut self, id: &str, dc: Arc<dyn DataChannel>) {
        let tx = self.internal_tx.clone();
        let dir = self.accept.clone();
        let hidden = self.printer.json;
        let from = id.to_string();
        // Counted by the client's address tag, like wrong tokens: a rejoin brings no new places.
        let client = self.client_of(id);
        let place = self.intake.admit(&client);
        self.tasks.spawn(async move {
            let result = files::receive(dc, dir, place, hidden).await;
            let _ = tx.send(Internal::Received(from, result)).await;
        });
    }

    /// A file from `from` arrived (or failed to).
    pub(super) fn on_received(
        &mut self,
        from: String,
        result: Result<files::Done, (String, files::FileError)>,
    ) {
        match result {
            Ok(done) => self.printer.print(RoomEvent::FileReceived {
                from,
                name: done.name,
                path: done.path.map(|p| p.display().to_string()),
                size: done.size,
                sha256: done.sha256,
                url: None,
                id: None,
            }),
            Err((name, e)) => self.printer.print(RoomEvent::FileFailed {
                peer: from,
                name,
                reason: e.to_string(),
                id: None,
            }),
        }
    }
}
