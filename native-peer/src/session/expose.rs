//! `burrow expose`: the streams peers open on each stream channel are let through the service's
//! gate and connected to it, one after another.

use std::sync::Arc;

use webrtc::data_channel::DataChannel;

use super::Session;
use crate::events::Event;
use crate::streams;

impl Session {
    /// A peer opened a stream channel: serve its streams in the background (closed at once
    /// when nothing is exposed).
    pub(super) async fn accept_stream(&mut self, id: &str, dc: Arc<dyn DataChannel>) {
        let link = self.peers.get(id).map(|p| p.udp.clone());
        match (&self.exposed, link) {
            (Some(gate), Some(link)) => {
                let gate = gate.clone();
                let printer = self.printer;
                let from = id.to_string();
                // Wrong tokens count against the client's address, whatever id it rejoins as.
                let client = self.client_of(id);
                self.tasks.spawn(async move {
                    let report = |e: streams::StreamError| match e {
                        streams::StreamError::Blocked(blocked) => {
                            printer.print(Event::StreamRefused {
                                peer: from.clone(),
                                reason: "too many wrong tokens".into(),
                                retry_in_secs: blocked.retry_in_secs(),
                            })
                        }
                        e => printer.print(Event::StreamFailed {
                            peer: from.clone(),
                            reason: e.to_string(),
                        }),
                    };
                    streams::serve(
                        dc,
                        gate,
                        link,
                        streams::Who {
                            peer: &from,
                            client: &client,
                        },
                        report,
                    )
                    .await;
                });
            }
            _ => {
                let _ = dc.close().await;
            }
        }
    }
}
