//! One remote peer: its `webrtc` connection, perfect negotiation (from `peer_core`), trickle ICE,
//! and the control channel.

use std::sync::Arc;

use peer_core::channels::CONTROL_LABEL;
use peer_core::driver::{Connection, Driver, Handled, Signaling};
use peer_core::negotiation::DescriptionKind;
use signal_protocol::{ClientMessage, PeerSignal};
use tokio::sync::mpsc;
use webrtc::data_channel::DataChannel;
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionEventHandler, RTCIceCandidateInit, RTCIceConnectionState,
    RTCIceGatheringState, RTCPeerConnectionIceEvent, RTCPeerConnectionState, RTCSessionDescription,
};

use crate::rtc::{self, Network};
use crate::signaling::Outbox;

/// What a peer connection reports to the session loop.
pub enum PeerEvent {
    /// A local candidate to trickle (`None`: gathering finished).
    LocalCandidate(Option<RTCIceCandidateInit>),
    /// The connection's state changed.
    State(RTCPeerConnectionState),
    /// The remote side opened a data channel.
    IncomingChannel(Arc<dyn DataChannel>),
    /// ICE found a working pair (DTLS starts now).
    IceConnected,
    /// The peer sends audio (voice).
    Track(Arc<dyn webrtc::media_stream::track_remote::TrackRemote>),
}

/// Forwards `webrtc` callbacks, tagged with the peer id, to the session loop.
struct Handler {
    peer: String,
    tx: mpsc::Sender<(String, PeerEvent)>,
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_candidate(&self, event: RTCPeerConnectionIceEvent) {
        if let Ok(init) = event.candidate.to_json() {
            let _ = self
                .tx
                .send((self.peer.clone(), PeerEvent::LocalCandidate(Some(init))))
                .await;
        }
    }

    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self
                .tx
                .send((self.peer.clone(), PeerEvent::LocalCandidate(None)))
                .await;
        }
    }

    async fn on_ice_connection_state_change(&self, state: RTCIceConnectionState) {
        if state == RTCIceConnectionState::Connected {
            let _ = self
                .tx
                .send((self.peer.clone(), PeerEvent::IceConnected))
                .await;
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        let _ = self
            .tx
            .send((self.peer.clone(), PeerEvent::State(state)))
            .await;
    }

    async fn on_track(&self, track: Arc<dyn webrtc::media_stream::track_remote::TrackRemote>) {
        let _ = self
            .tx
            .send((self.peer.clone(), PeerEvent::Track(track)))
            .await;
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let _ = self
            .tx
            .send((self.peer.clone(), PeerEvent::IncomingChannel(dc)))
            .await;
    }
}

/// A remote peer and our connection to it.
pub struct Peer {
    /// Its id.
    pub id: String,
    /// Its display name.
    pub name: Option<String>,
    /// The server's tag of its address ([`signal_protocol::PeerInfo::client`]): what the
    /// wrong-token limit counts by, so a rejoin under a new id does not start afresh.
    pub client: Option<String>,
    /// The connection.
    pub pc: Arc<dyn PeerConnection>,
    /// The control channel, once open.
    pub control: Option<Arc<dyn DataChannel>>,
    /// The stream channels we keep toward it (`burrow forward`).
    pub dialer: Arc<crate::streams::Dialer>,
    /// The channels we opened toward it (so an echo of one is not taken for the peer's).
    pub own: Arc<crate::own::OwnChannels>,
    /// Its datagram channel and the UDP sessions on it.
    pub udp: Arc<crate::udp::Link>,
    /// The control channel's rules (the engine's): what the peer says, what we say first,
    /// what a path reading is worth telling.
    pub control_state: peer_core::control::Control,
    /// The ICE agent says the link is up (connection state `connected`).
    pub ice_up: bool,
    /// Our checks on the selected pair get answers (see `peer_core::path::Consent`).
    pub consent_up: bool,
    /// The path last read (for `burrow status`).
    pub path: Option<crate::rtc::PathInfo>,
    /// The task that watches the path for changes, stopped when the peer goes.
    pub path_watch: Option<tokio::task::AbortHandle>,
    /// The control channel we created (offering side), for [`Peer::nudge`].
    own_control: Option<Arc<dyn DataChannel>>,
    /// Perfect negotiation, performed by the shared engine over [`Rtc`].
    driver: Driver<Rtc>,
    /// The options it was made with (kept for ICE restarts).
    options: rtc::Options,
    /// Our audio transceiver is not in the peer's offer yet: offer it once we answered.
    renegotiate: bool,
}

impl Peer {
    /// Whether the link is up (its control channel opened).
    pub fn is_connected(&self) -> bool {
        self.control_state.is_open()
    }

    /// Creates the connection (nothing is sent yet).
    #[allow(clippy::too_many_arguments)]
    pub async fn new(
        me: &str,
        id: String,
        name: Option<String>,
        ice_servers: &[signal_protocol::IceServer],
        network: Network,
        options: rtc::Options,
        outbox: Outbox,
        events: mpsc::Sender<(String, PeerEvent)>,
    ) -> webrtc::error::Result<Peer> {
        let handler = Arc::new(Handler {
            peer: id.clone(),
            tx: events,
        });
        let pc = rtc::new_connection(ice_servers, network, handler, options).await?;
        let own = Arc::new(crate::own::OwnChannels::default());
        let rtc = Rtc {
            pc: pc.clone(),
            outbox,
            to: id.clone(),
        };
        Ok(Peer {
            driver: Driver::new(rtc, me, &id),
            id,
            name,
            client: None,
            dialer: crate::streams::Dialer::new(pc.clone(), own.clone()),
            own,
            udp: Arc::default(),
            pc,
            control: None,
            control_state: Default::default(),
            ice_up: false,
            consent_up: true,
            path_watch: None,
            path: None,
            own_control: None,
            options,
            renegotiate: false,
        })
    }

    /// Opens the control channel and sends the first offer (we are the newcomer).
    pub async fn start(&mut self) -> webrtc::error::Result<Arc<dyn DataChannel>> {
        let control = self.own.create(&self.pc, CONTROL_LABEL).await?;
        self.own_control = Some(control.clone());
        self.offer().await.map(|()| control)
    }

    /// Restarts ICE (the link stayed down): new local candidates, and an offer with new ICE
    /// credentials. DTLS and SCTP carry on over the new path, and so do the data channels.
    /// An offer of ours still unanswered is rolled back first (a repeat means it was lost, e.g.
    /// with the server connection); while answering the peer's offer, nothing is done.
    pub async fn restart_ice(&mut self) -> webrtc::error::Result<()> {
        self.driver.restart_ice().await
    }

    /// Gathers with `ice_servers` from the next ICE restart on (a new welcome's credentials).
    pub async fn use_ice_servers(&self, ice_servers: &[signal_protocol::IceServer]) {
        if ice_servers.is_empty() {
            return;
        }
        let config = rtc::configuration(ice_servers, self.options);
        if let Err(e) = self.pc.set_configuration(config).await {
            tracing::debug!(peer = %self.id, "ICE servers not updated: {e}");
        }
    }

    /// Handles a signal from this peer (perfect negotiation is the engine's: [`Driver`]).
    pub async fn on_signal(&mut self, signal: PeerSignal) -> webrtc::error::Result<()> {
        if self.driver.on_signal(signal).await? == Handled::Answered
            && std::mem::take(&mut self.renegotiate)
        {
            self.offer().await?;
        }
        Ok(())
    }

    /// Adds our audio: `track` to send (returns its sender), or, without one, a receive-only
    /// transceiver. When we are not the offerer, it is offered right after our answer.
    pub async fn add_voice(
        &mut self,
        track: Option<
            Arc<webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample>,
        >,
        offering: bool,
    ) -> webrtc::error::Result<Option<Arc<dyn webrtc::rtp_transceiver::RtpSender>>> {
        let sender = match track {
            Some(track) => Some(self.pc.add_track(track).await?),
            None => {
                let init = rtc::RtpTransceiverInit {
                    direction: rtc::RtpDirection::Recvonly,
                    streams: vec![],
                    send_encodings: vec![],
                };
                self.pc
                    .add_transceiver_from_kind(rtc::AudioKind::Audio, Some(init))
                    .await?;
                None
            }
        };
        self.renegotiate = !offering;
        Ok(sender)
    }

    /// Creates, sets and sends an offer (the first one, a renegotiation, or an ICE restart).
    async fn offer(&self) -> webrtc::error::Result<()> {
        self.driver.offer().await
    }

    /// Trickles one of our candidates (or the end of them) to this peer.
    pub fn trickle(&self, candidate: Option<RTCIceCandidateInit>) {
        let Some(c) = candidate else {
            self.signal(PeerSignal::EndOfCandidates);
            return;
        };
        let (sdp_mid, sdp_m_line_index) =
            peer_core::negotiation::candidate_placement(c.sdp_mid, c.sdp_mline_index);
        self.signal(PeerSignal::Candidate {
            candidate: c.candidate,
            sdp_mid,
            sdp_m_line_index,
        });
    }

    /// Wakes the connection's driver. `webrtc` 0.21 queues the packets it makes while handling
    /// a state change (the DTLS ClientHello once ICE connects, the SCTP INIT once DTLS is up)
    /// until its next timer, 50 to 200 ms later; any call that touches a data channel flushes
    /// them. Call on ICE connected and on connected.
    pub async fn nudge(&self) {
        if let Some(dc) = &self.own_control {
            let _ = dc
                .set_buffered_amount_low_threshold(peer_core::transfer::LOW_WATER as u32)
                .await;
        }
    }

    /// Keeps nudging for a short while until our control channel is open: once DTLS is up, the
    /// SCTP handshake and the channel's open message each wait for a wake-up too.
    pub fn nudge_until_open(&self) {
        let Some(dc) = self.own_control.clone() else {
            return;
        };
        tokio::spawn(async move {
            for _ in 0..100 {
                match dc.ready_state().await {
                    Ok(webrtc::data_channel::RTCDataChannelState::Connecting) => {}
                    _ => return,
                }
                let _ = dc
                    .set_buffered_amount_low_threshold(peer_core::transfer::LOW_WATER as u32)
                    .await;
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        });
    }

    /// Stops everything about this peer.
    pub async fn close(&self) {
        if let Some(watch) = &self.path_watch {
            watch.abort();
        }
        let _ = self.pc.close().await;
    }

    fn signal(&self, data: PeerSignal) {
        self.driver.connection().send(data);
    }
}

/// The `webrtc` crate's peer connection as the engine's [`Connection`]: the steps of perfect
/// negotiation, and the way to the peer through the server.
pub struct Rtc {
    pc: Arc<dyn PeerConnection>,
    outbox: Outbox,
    to: String,
}

impl Connection for Rtc {
    type Error = webrtc::error::Error;
    type Candidate = RTCIceCandidateInit;

    async fn signaling(&self) -> Signaling {
        let local = self.pc.pending_local_description().await.is_some();
        let remote = self.pc.pending_remote_description().await.is_some();
        match (local, remote) {
            (false, false) => Signaling::Stable,
            (true, false) => Signaling::LocalOffer,
            _ => Signaling::Other,
        }
    }

    async fn rollback(&self) -> webrtc::error::Result<()> {
        self.pc
            .set_local_description(RTCSessionDescription::rollback(None)?)
            .await
    }

    async fn set_remote(&self, kind: DescriptionKind, sdp: String) -> webrtc::error::Result<()> {
        let desc = match kind {
            DescriptionKind::Offer => RTCSessionDescription::offer(sdp)?,
            DescriptionKind::Answer => RTCSessionDescription::answer(sdp)?,
        };
        self.pc.set_remote_description(desc).await
    }

    async fn create_offer(&self) -> webrtc::error::Result<String> {
        let offer = self.pc.create_offer(None).await?;
        self.pc.set_local_description(offer.clone()).await?;
        Ok(offer.sdp)
    }

    async fn create_answer(&self) -> webrtc::error::Result<String> {
        let answer = self.pc.create_answer(None).await?;
        self.pc.set_local_description(answer.clone()).await?;
        Ok(answer.sdp)
    }

    async fn restart_ice(&self) -> webrtc::error::Result<()> {
        self.pc.restart_ice().await
    }

    async fn add_candidate(&self, init: RTCIceCandidateInit) {
        let text = init.candidate.clone();
        if let Err(e) = self.pc.add_ice_candidate(init).await {
            // e.g. an mDNS name that cannot be resolved here: the others still connect.
            tracing::debug!(peer = %self.to, candidate = %text, "candidate not usable: {e}");
        }
    }

    fn candidate(
        &self,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_mline_index: Option<u16>,
    ) -> RTCIceCandidateInit {
        RTCIceCandidateInit {
            candidate,
            sdp_mid,
            sdp_mline_index,
            ..Default::default()
        }
    }

    fn send(&self, data: PeerSignal) {
        self.outbox.send(ClientMessage::Signal {
            to: self.to.clone(),
            data,
        });
    }
}
