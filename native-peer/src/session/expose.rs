//! `burrow expose`: streams peers open are let through the service's gate and connected to it.

use std::sync::Arc;

use webrtc::data_channel::DataChannel;

use super::Session;
use crate::events::Event;
use crate::streams;

impl Session {
    /// A peer opened a stream channel: answer it in the background (closed at once when
    /// nothing is exposed).
    pub(super) async fn accept_stream(&mut self, id: &str, dc: Arc<dyn DataChannel>) {
        match &self.exposed {
            Some(gate) => {
                let gate = gate.clone();
                let printer = self.printer;
                let from = id.to_string();
                self.tasks.spawn(async move {
                    match streams::accept(dc, gate, &from).await {
                        Ok(()) => {}
                        Err(streams::StreamError::Blocked(blocked)) => {
                            printer.print(Event::StreamRefused {
                                peer: from,
                                reason: "too many wrong tokens".into(),
                                retry_in_secs: blocked.retry_in_secs(),
                            })
                        }
                        Err(e) => printer.print(Event::StreamFailed {
                            peer: from,
                            reason: e.to_string(),
                        }),
                    }
                });
            }
            None => {
                let _ = dc.close().await;
            }
        }
    }
}
