//! Voice in `burrow join` (`--voice-play`, `--voice-record`): a peer's track is recorded; on
//! quit the player stops and every recording is closed with its last page.

use std::sync::Arc;
use std::time::Duration;

use super::Session;
use crate::events::Event;
use crate::voice;

impl Session {
    /// A peer's audio track arrived: record it when asked to.
    pub(super) fn on_track(
        &mut self,
        id: &str,
        track: Arc<dyn webrtc::media_stream::track_remote::TrackRemote>,
    ) {
        let Some(dir) = &self.record_dir else {
            return;
        };
        let path = voice::recording_path(dir, id);
        let shown = path.display().to_string();
        self.printer.print(Event::VoiceRecording {
            peer: id.to_string(),
            path: shown.clone(),
        });
        let handle = voice::record(
            track,
            path,
            self.record_limits,
            self.record_stop.subscribe(),
        );
        self.recordings.push((id.to_string(), shown, handle));
    }

    /// Stops sending and closes every recording (reported with what it received).
    pub(super) async fn stop_voice(&mut self) {
        if let Some(player) = self.player.take() {
            player.stop().await;
        }
        let _ = self.record_stop.send(true);
        for (peer, path, handle) in std::mem::take(&mut self.recordings) {
            match tokio::time::timeout(Duration::from_secs(2), handle).await {
                Ok(Ok(Ok(received))) => self.printer.print(Event::VoiceRecorded {
                    peer,
                    path,
                    received,
                }),
                Ok(Ok(Err(e))) => self.warn(format!("recording of {peer}: {e:#}")),
                Ok(Err(_)) => {}
                Err(_) => self.warn(format!("the recording of {peer} did not close in time")),
            }
        }
    }
}
