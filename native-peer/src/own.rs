//! The data channels this peer opened, told apart from the ones the peer opened.
//!
//! The `webrtc` crate (0.21) can announce one of our own new channels back to us, through
//! `on_data_channel`, as if the peer had opened it: `create_data_channel` registers our handle
//! only after it let go of the connection's core, and if the channel's open handshake completes
//! in between, the crate's driver takes the channel for an incoming one. It then delivers the
//! channel's `OnOpen` to that second handle (ours never hears it), and when that second handle
//! is closed or dropped our own channel ends too. Under load this happened about once in
//! 20,000 new channels: a forwarded connection reset, or a `burrow send` that never began.
//!
//! So every channel we open goes through [`OwnChannels::create`], which records its id (ids
//! are never reused); every incoming channel is first shown to [`OwnChannels::classify`]; an
//! echo of ours is kept, untouched, for the connection's life. And [`opened`] waits for one of
//! our channels by its state as well as by the event.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use webrtc::data_channel::{DataChannel, RTCDataChannelId, RTCDataChannelState};
use webrtc::peer_connection::PeerConnection;

/// What an incoming channel is.
#[derive(Debug, PartialEq, Eq)]
pub enum Origin {
    /// One of ours, announced back: kept here, nothing else to do with it.
    Echo,
    /// The peer's.
    Theirs,
    /// One of ours may still be being created: ask again once [`OwnChannels::settled`].
    Unsure,
}

/// The channels opened toward one peer.
#[derive(Default)]
pub struct OwnChannels {
    state: Mutex<State>,
    /// Told when a creation ends.
    created: tokio::sync::Notify,
}

#[derive(Default)]
struct State {
    /// Ids of the channels we created.
    ids: HashSet<RTCDataChannelId>,
    /// Creations under way (their ids not known yet).
    pending: usize,
    /// Echoes of our channels, held so that dropping them does not end ours. At most one per
    /// channel we created.
    echoes: Vec<Arc<dyn DataChannel>>,
}

impl OwnChannels {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Each change is one step; a panic elsewhere cannot leave it half-done.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Opens a channel labelled `label` on `pc` (reliable, ordered), recording it as ours.
    pub async fn create(
        &self,
        pc: &Arc<dyn PeerConnection>,
        label: &str,
    ) -> webrtc::error::Result<Arc<dyn DataChannel>> {
        self.create_with(pc, label, None).await
    }

    /// The same, with `options` (say, unreliable and unordered).
    pub async fn create_with(
        &self,
        pc: &Arc<dyn PeerConnection>,
        label: &str,
        options: Option<webrtc::data_channel::RTCDataChannelInit>,
    ) -> webrtc::error::Result<Arc<dyn DataChannel>> {
        self.state().pending += 1;
        let made = pc.create_data_channel(label, options).await;
        {
            let mut s = self.state();
            s.pending -= 1;
            if let Ok(dc) = &made {
                s.ids.insert(dc.id());
            }
        }
        self.created.notify_waiters();
        made
    }

    /// Whether `dc`, announced as incoming, is the peer's or an echo of ours (then kept).
    pub fn classify(&self, dc: &Arc<dyn DataChannel>) -> Origin {
        let mut s = self.state();
        if s.ids.contains(&dc.id()) {
            tracing::debug!(id = ?dc.id(), "one of our channels was announced back; kept");
            s.echoes.push(dc.clone());
            return Origin::Echo;
        }
        if s.pending == 0 {
            Origin::Theirs
        } else {
            Origin::Unsure
        }
    }

    /// Returns once no creation is under way (or after a while: a creation stuck that long is
    /// not one a channel announced now can belong to).
    pub async fn settled(&self) {
        let wait = async {
            loop {
                let told = self.created.notified();
                tokio::pin!(told);
                told.as_mut().enable();
                if self.state().pending == 0 {
                    return;
                }
                told.await;
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), wait).await;
    }
}

/// How often [`opened`] looks at a channel's state.
const STATE_EVERY: Duration = Duration::from_millis(50);

/// Waits until our channel `dc` is open: `open_event` (which resolves when the channel's own
/// reader hears `OnOpen`, `false` when the channel ended) or the channel's state, whichever
/// says so first (the event may have gone to an echo). `false` if the channel closed.
pub async fn opened(
    dc: &Arc<dyn DataChannel>,
    open_event: impl std::future::Future<Output = bool>,
) -> bool {
    tokio::pin!(open_event);
    let mut every = tokio::time::interval(STATE_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            open = &mut open_event => return open,
            _ = every.tick() => match dc.ready_state().await {
                Ok(RTCDataChannelState::Open) => return true,
                Ok(RTCDataChannelState::Closing | RTCDataChannelState::Closed) | Err(_) => {
                    return false
                }
                Ok(_) => {}
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Quiet;
    impl webrtc::peer_connection::PeerConnectionEventHandler for Quiet {}

    async fn connection() -> Arc<dyn PeerConnection> {
        let network = crate::rtc::Network {
            bind: std::net::Ipv4Addr::LOCALHOST.into(),
            ipv6: false,
        };
        crate::rtc::new_connection(&[], network, Arc::new(Quiet), Default::default())
            .await
            .expect("a peer connection")
    }

    #[tokio::test]
    async fn an_echo_of_our_channel_is_kept_and_the_peers_channels_are_theirs() {
        let pc = connection().await;
        let own = OwnChannels::default();
        let ours = own.create(&pc, "burrow-stream").await.expect("ours");
        // Made past the record: stands for a channel the peer opened.
        let theirs = pc
            .create_data_channel("burrow-stream", None)
            .await
            .expect("theirs");
        // The crate announces an echo as a second handle with our channel's id.
        assert_eq!(own.classify(&ours), Origin::Echo);
        assert_eq!(own.state().echoes.len(), 1, "the echo is held");
        assert_eq!(own.classify(&theirs), Origin::Theirs);
        // While a creation is under way, an unknown id may still turn out to be ours.
        own.state().pending += 1;
        assert_eq!(own.classify(&theirs), Origin::Unsure);
        let own = Arc::new(own);
        let waiting = tokio::spawn({
            let own = own.clone();
            async move { own.settled().await }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "waits for the creation");
        own.state().pending -= 1;
        own.created.notify_waiters();
        tokio::time::timeout(Duration::from_secs(1), waiting)
            .await
            .expect("settled once the creation ended")
            .expect("no panic");
        assert_eq!(own.classify(&theirs), Origin::Theirs);
        let _ = pc.close().await;
    }
}
