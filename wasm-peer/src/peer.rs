//! One remote peer in the browser: its RTCPeerConnection, perfect negotiation (from `peer_core`),
//! trickle ICE, and the control channel (chat).

use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};

use js_sys::Reflect;
use peer_core::channels::{ControlMessage, CONTROL_LABEL, FILE_LABEL};
use peer_core::control::{Control, Heard, Offer};
use peer_core::driver::{Connection, Driver, Signaling};
use peer_core::negotiation::DescriptionKind;
use peer_core::path::PathNews;
use peer_core::room::LinkState;
use serde::Serialize;
use signal_protocol::{ClientMessage, PeerSignal};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{
    MessageEvent, RtcDataChannel, RtcDataChannelEvent, RtcDataChannelState, RtcPeerConnection,
    RtcPeerConnectionIceEvent, RtcPeerConnectionState, RtcSignalingState,
};

use crate::events::{Event, RoomEvent};
use crate::Handler;

/// What a peer needs from the room that holds it. The room implements it; the peer never names
/// the room's type, so the two modules do not import each other.
pub(crate) trait Host {
    /// Tells the page.
    fn emit(&self, event: Event);
    /// Gives the page a peer's audio track to play.
    fn emit_track(&self, peer: &str, stream: &JsValue, track: &JsValue);
    /// In voice: whether we send audio (`None`: not in voice), told to each peer on connect.
    fn voice_sending(&self) -> Option<bool>;
    /// Sends a message to the server.
    fn send(&self, msg: &ClientMessage);
    /// A new id for a file transfer shown in the page.
    fn transfer_id(&self) -> u32;
    /// A peer connection changed state.
    fn on_link(self: Rc<Self>, peer: &str, state: LinkState);
    /// A peer's selected path was read (the room's rules want to know: `Room::on_path`).
    fn on_path(&self, peer: &str, path: &peer_core::path::SelectedPath);
    /// The peer opened a file channel.
    fn file_channel(&self, peer: Rc<Peer>, dc: RtcDataChannel);
}

/// A remote peer and the connection to it.
pub struct Peer {
    pub(crate) id: String,
    name: Option<String>,
    pub(crate) pc: RtcPeerConnection,
    pub(crate) room: Weak<dyn Host>,
    /// Perfect negotiation, performed by the shared engine over [`Web`].
    driver: Driver<Web>,
    control: RefCell<Option<RtcDataChannel>>,
    /// The control channel's rules (the engine's): what the peer says, what we say first.
    control_state: RefCell<Control>,
    handlers: RefCell<Vec<Handler>>,
    /// Our audio's sender (or receive-only transceiver) while in voice.
    voice: RefCell<Option<JsValue>>,
    /// Signals not handled yet: one at a time, in order (an offer that arrives while the
    /// answer before it is still being applied must wait for it, or it looks like a collision).
    inbox: RefCell<std::collections::VecDeque<PeerSignal>>,
    busy: Cell<bool>,
    /// The stream channels kept toward this peer (`crate::streams`).
    pub(crate) streams: RefCell<crate::streams::Pool>,
}

/// `{type, sdp}` for setLocal/RemoteDescription.
#[derive(Serialize)]
struct Description<'a> {
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdp: Option<&'a str>,
}

/// `{candidate, sdpMid, sdpMLineIndex}` for addIceCandidate.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct CandidateInit<'a> {
    candidate: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    sdp_mid: Option<&'a str>,
    #[serde(rename = "sdpMLineIndex", skip_serializing_if = "Option::is_none")]
    sdp_m_line_index: Option<u16>,
}

fn to_js<T: Serialize>(value: &T) -> JsValue {
    serde_wasm_bindgen::to_value(value).unwrap_or(JsValue::UNDEFINED)
}

impl Peer {
    /// Creates the connection with the room's ICE servers.
    pub(crate) fn new(
        room: Weak<dyn Host>,
        me: &str,
        id: String,
        name: Option<String>,
        ice_servers: &JsValue,
    ) -> Result<Rc<Peer>, JsValue> {
        let config = js_sys::Object::new();
        Reflect::set(&config, &"iceServers".into(), ice_servers)?;
        let pc = RtcPeerConnection::new_with_configuration(config.unchecked_ref())?;
        let web = Web {
            pc: pc.clone(),
            room: room.clone(),
            to: id.clone(),
        };
        let peer = Rc::new(Peer {
            driver: Driver::new(web, me, &id),
            id,
            name,
            pc,
            room: room.clone(),
            control: RefCell::new(None),
            control_state: RefCell::default(),
            handlers: RefCell::new(Vec::new()),
            voice: RefCell::new(None),
            inbox: RefCell::new(std::collections::VecDeque::new()),
            busy: Cell::new(false),
            streams: RefCell::new(Default::default()),
        });
        Peer::wire(&peer);
        Ok(peer)
    }

    fn wire(this: &Rc<Peer>) {
        let weak = Rc::downgrade(this);
        let on_candidate = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let Some(peer) = weak.upgrade() else { return };
            let ev: RtcPeerConnectionIceEvent = ev.unchecked_into();
            let signal = match ev.candidate() {
                Some(c) if !c.candidate().is_empty() => {
                    let (sdp_mid, sdp_m_line_index) = peer_core::negotiation::candidate_placement(
                        c.sdp_mid(),
                        c.sdp_m_line_index(),
                    );
                    PeerSignal::Candidate {
                        candidate: c.candidate(),
                        sdp_mid,
                        sdp_m_line_index,
                    }
                }
                _ => PeerSignal::EndOfCandidates,
            };
            peer.signal(signal);
        });
        let weak = Rc::downgrade(this);
        let on_state = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let Some(peer) = weak.upgrade() else { return };
            let state = Reflect::get(&peer.pc, &"connectionState".into())
                .ok()
                .and_then(|s| s.as_string())
                .unwrap_or_default();
            let link = match state.as_str() {
                "connected" => LinkState::Connected,
                "disconnected" => LinkState::Disconnected,
                "failed" => LinkState::Failed,
                "closed" => LinkState::Closed,
                _ => LinkState::Connecting,
            };
            peer.emit(Event::PeerState {
                peer: peer.id.clone(),
                state,
            });
            if let Some(room) = peer.room.upgrade() {
                room.on_link(&peer.id, link);
            }
        });
        let weak = Rc::downgrade(this);
        let on_channel = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let Some(peer) = weak.upgrade() else { return };
            let dc = ev.unchecked_into::<RtcDataChannelEvent>().channel();
            match dc.label().as_str() {
                CONTROL_LABEL => Peer::watch_control(&peer, dc),
                FILE_LABEL => match peer.room.upgrade() {
                    Some(room) => room.file_channel(peer, dc),
                    None => dc.close(),
                },
                // This page exposes nothing: refuse streams.
                _ => dc.close(),
            }
        });
        // Voice: a track added or removed later needs a new offer on this connection (not the
        // first one, which `start` makes); a track from the peer goes to the page to play.
        let weak = Rc::downgrade(this);
        let on_negotiation = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let Some(peer) = weak.upgrade() else { return };
            if peer.pc.current_remote_description().is_some() {
                wasm_bindgen_futures::spawn_local(peer.renegotiate());
            }
        });
        let weak = Rc::downgrade(this);
        let on_track = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let Some(peer) = weak.upgrade() else { return };
            let stream =
                js_sys::Array::from(&Reflect::get(&ev, &"streams".into()).unwrap_or_default())
                    .get(0);
            if let Some(room) = peer.room.upgrade() {
                room.emit_track(
                    &peer.id,
                    &stream,
                    &Reflect::get(&ev, &"track".into()).unwrap_or_default(),
                );
            }
        });
        let _ = Reflect::set(
            &this.pc,
            &"onnegotiationneeded".into(),
            on_negotiation.as_ref(),
        );
        let _ = Reflect::set(&this.pc, &"ontrack".into(), on_track.as_ref());
        this.handlers
            .borrow_mut()
            .extend([on_negotiation, on_track]);
        this.pc
            .set_onicecandidate(Some(on_candidate.as_ref().unchecked_ref()));
        this.pc
            .set_onconnectionstatechange(Some(on_state.as_ref().unchecked_ref()));
        this.pc
            .set_ondatachannel(Some(on_channel.as_ref().unchecked_ref()));
        this.handlers
            .borrow_mut()
            .extend([on_candidate, on_state, on_channel]);
    }

    pub(crate) fn emit(&self, event: impl Into<Event>) {
        if let Some(room) = self.room.upgrade() {
            room.emit(event.into());
        }
    }

    fn signal(&self, data: PeerSignal) {
        self.driver.connection().send(data);
    }

    /// Whether the control channel is open.
    pub fn is_connected(&self) -> bool {
        self.control_state.borrow().is_open()
    }

    /// Opens the control channel and sends the first offer (we are the newcomer).
    pub async fn start(self: Rc<Self>) {
        let dc = self.pc.create_data_channel(CONTROL_LABEL);
        Peer::watch_control(&self, dc);
        let result = self.offer().await;
        if let Err(e) = result {
            web_sys::console::error_2(&"offer failed".into(), &e);
        }
    }

    /// Joins voice on this connection: sends `track` (of `stream`), or with no track only
    /// receives. The renegotiation follows from `negotiationneeded`.
    pub(crate) fn add_voice(&self, track: &JsValue, stream: &JsValue) {
        let added = if track.is_null() || track.is_undefined() {
            // The peer already sends us audio on a transceiver of its offer: nothing to add.
            if self.has_audio_transceiver() {
                return;
            }
            let init = js_sys::Object::new();
            let _ = Reflect::set(&init, &"direction".into(), &"recvonly".into());
            call(&self.pc, "addTransceiver", &[&"audio".into(), &init])
        } else {
            call(&self.pc, "addTrack", &[track, stream])
        };
        *self.voice.borrow_mut() = added;
    }

    /// Whether the connection already has an audio transceiver (one the peer's offer made).
    fn has_audio_transceiver(&self) -> bool {
        let list = call(&self.pc, "getTransceivers", &[]).unwrap_or_default();
        js_sys::Array::from(&list).iter().any(|t| {
            Reflect::get(&t, &"receiver".into())
                .and_then(|r| Reflect::get(&r, &"track".into()))
                .and_then(|tr| Reflect::get(&tr, &"kind".into()))
                .ok()
                .and_then(|k| k.as_string())
                .as_deref()
                == Some("audio")
        })
    }

    /// Leaves voice on this connection.
    pub(crate) fn remove_voice(&self) {
        let Some(added) = self.voice.borrow_mut().take() else {
            return;
        };
        // A sender is removed; a receive-only transceiver is stopped.
        if Reflect::has(&added, &"replaceTrack".into()).unwrap_or(false) {
            call(&self.pc, "removeTrack", &[&added]);
        } else {
            call(&added, "stop", &[]);
        }
    }

    /// Sends a control message (voice state) on the control channel.
    pub(crate) fn send_control(&self, msg: &ControlMessage) {
        if let Some(dc) = self.control.borrow().as_ref() {
            if dc.ready_state() == RtcDataChannelState::Open {
                let _ = dc.send_with_str(&msg.encode());
            }
        }
    }

    /// Creates, sets and sends an offer (the first one, a renegotiation, or an ICE restart).
    async fn offer(&self) -> Result<(), JsValue> {
        self.driver.offer().await
    }

    /// A new offer on the established connection (voice added or removed).
    async fn renegotiate(self: Rc<Self>) {
        if self.pc.signaling_state() != RtcSignalingState::Stable {
            return;
        }
        let result = self.offer().await;
        if let Err(e) = result {
            web_sys::console::warn_2(&"renegotiation failed".into(), &e);
        }
    }

    /// Restarts ICE (the link stayed down): an offer with new ICE credentials; the data
    /// channels carry on over the new path. An offer of ours still unanswered is rolled back
    /// first (a repeat means it was lost); while answering the peer's offer, nothing is done.
    pub async fn restart_ice(self: Rc<Self>) {
        let result = self.driver.restart_ice().await;
        if let Err(e) = result {
            web_sys::console::warn_2(&"ICE restart failed".into(), &e);
        }
    }

    /// Gathers with `ice_servers` from the next ICE restart on (a new welcome's credentials:
    /// the server may have restarted, or be another instance), ours or the peer's.
    pub fn use_ice_servers(&self, ice_servers: &JsValue) {
        if ice_servers.is_undefined() {
            return;
        }
        let config = self.pc.get_configuration();
        if Reflect::set(&config, &"iceServers".into(), ice_servers).is_err() {
            return;
        }
        if let Ok(f) = Reflect::get(&self.pc, &"setConfiguration".into()) {
            if let Some(f) = f.dyn_ref::<js_sys::Function>() {
                if let Err(e) = f.call1(&self.pc, &config) {
                    web_sys::console::warn_2(&"ICE servers not updated".into(), &e);
                }
            }
        }
    }

    /// Takes a signal from this peer; signals are handled one at a time, in arrival order.
    pub(crate) fn push_signal(self: &Rc<Self>, signal: PeerSignal) {
        self.inbox.borrow_mut().push_back(signal);
        if self.busy.replace(true) {
            return;
        }
        let peer = self.clone();
        wasm_bindgen_futures::spawn_local(async move {
            loop {
                let next = peer.inbox.borrow_mut().pop_front();
                let Some(signal) = next else { break };
                peer.clone().on_signal(signal).await;
            }
            peer.busy.set(false);
        });
    }

    /// Handles a signal from this peer (perfect negotiation is the engine's: [`Driver`]).
    async fn on_signal(self: Rc<Self>, signal: PeerSignal) {
        if let Err(e) = self.driver.on_signal(signal).await {
            web_sys::console::warn_2(&format!("negotiation with {}:", self.id).into(), &e);
        }
    }

    /// Reads the control channel: open → report the path; messages → chat.
    fn watch_control(this: &Rc<Peer>, dc: RtcDataChannel) {
        let weak = Rc::downgrade(this);
        let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(peer) = weak.upgrade() {
                Peer::opened(&peer);
            }
        });
        let weak = Rc::downgrade(this);
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let Some(peer) = weak.upgrade() else { return };
            let Some(text) = ev.unchecked_into::<MessageEvent>().data().as_string() else {
                return;
            };
            let heard = peer.control_state.borrow_mut().on_text(&text);
            match heard {
                Ok(Heard::Chat(text)) => peer.emit(RoomEvent::Chat {
                    from: peer.id.clone(),
                    name: peer.name.clone(),
                    text,
                }),
                Ok(Heard::Services(services)) => peer.emit(RoomEvent::Services {
                    peer: peer.id.clone(),
                    services,
                }),
                Ok(Heard::Voice { on, sending }) => peer.emit(RoomEvent::Voice {
                    peer: peer.id.clone(),
                    on,
                    sending,
                }),
                Ok(Heard::Nothing) | Err(_) => {}
            }
        });
        dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        let already_open = dc.ready_state() == RtcDataChannelState::Open;
        *this.control.borrow_mut() = Some(dc);
        this.handlers.borrow_mut().extend([on_open, on_message]);
        if already_open {
            Peer::opened(this);
        }
    }

    fn opened(this: &Rc<Peer>) {
        let voice = this.room.upgrade().and_then(|room| room.voice_sending());
        let first = this.control_state.borrow_mut().opened(Offer {
            voice,
            services: None,
        });
        let Some(first) = first else {
            return;
        };
        for msg in &first {
            this.send_control(msg);
        }
        let peer = this.clone();
        wasm_bindgen_futures::spawn_local(async move {
            // Report the path once the stats name a pair (`connected`), then a change of pair
            // (`path_changed`: the browser may move from a relay to a hole punched, or ICE was
            // restarted) as the CLI does; the RTT shown is refreshed with `path_stats`.
            let mut waited = 0;
            while peer.room.upgrade().is_some()
                && peer.pc.connection_state() != RtcPeerConnectionState::Closed
            {
                let info = crate::stats::path_info(&peer.pc).await;
                if info.is_some() || waited >= 1000 {
                    let reading = peer.control_state.borrow_mut().on_path(info);
                    if let Some(msg) = &reading.tell {
                        peer.send_control(msg);
                    }
                    if let (Some(path), Some(room)) = (&reading.path, peer.room.upgrade()) {
                        room.on_path(&peer.id, path);
                    }
                    let id = peer.id.clone();
                    let report = reading.path.into();
                    match reading.news {
                        PathNews::Connected => peer.emit(RoomEvent::Connected { peer: id, report }),
                        PathNews::Changed => peer.emit(RoomEvent::PathChanged { peer: id, report }),
                        PathNews::Same => peer.emit(Event::PathStats { peer: id, report }),
                    }
                    sleep_ms(2000).await;
                } else {
                    waited += 50;
                    sleep_ms(50).await;
                }
            }
        });
    }

    /// Sends a chat line on the control channel.
    pub fn send_chat(&self, text: &str) {
        if let Some(dc) = self.control.borrow().as_ref() {
            if dc.ready_state() == RtcDataChannelState::Open {
                let msg = ControlMessage::Chat {
                    text: text.to_string(),
                };
                let _ = dc.send_with_str(&msg.encode());
            }
        }
    }

    /// Closes the connection.
    pub fn close(&self) {
        self.pc.close();
    }
}

/// Calls `obj.name(args…)`; `None` when it is missing or throws.
fn call(obj: &JsValue, name: &str, args: &[&JsValue]) -> Option<JsValue> {
    let f = Reflect::get(obj, &name.into()).ok()?;
    let f = f.dyn_ref::<js_sys::Function>()?;
    let args: js_sys::Array = args.iter().map(|a| (*a).clone()).collect();
    f.apply(obj, &args).ok()
}

/// Waits `ms` milliseconds (setTimeout as a future).
pub(crate) async fn sleep_ms(ms: i32) {
    let promise = js_sys::Promise::new(&mut |resolve, _| {
        if let Some(w) = web_sys::window() {
            let _ = w.set_timeout_with_callback_and_timeout_and_arguments_0(&resolve, ms);
        }
    });
    let _ = JsFuture::from(promise).await;
}

/// The browser's `RTCPeerConnection` as the engine's [`Connection`]: the steps of perfect
/// negotiation, and the way to the peer through the room's WebSocket.
pub(crate) struct Web {
    pc: RtcPeerConnection,
    room: Weak<dyn Host>,
    to: String,
}

impl Web {
    async fn set_local(&self, kind: &str, sdp: Option<&str>) -> Result<(), JsValue> {
        let desc = to_js(&Description { kind, sdp });
        JsFuture::from(self.pc.set_local_description(desc.unchecked_ref())).await?;
        Ok(())
    }

    /// The SDP of a description the browser created, once set locally.
    async fn set_created(&self, created: JsValue) -> Result<String, JsValue> {
        let sdp = Reflect::get(&created, &"sdp".into())?
            .as_string()
            .unwrap_or_default();
        JsFuture::from(self.pc.set_local_description(created.unchecked_ref())).await?;
        Ok(sdp)
    }
}

impl Connection for Web {
    type Error = JsValue;
    type Candidate = JsValue;

    async fn signaling(&self) -> Signaling {
        match self.pc.signaling_state() {
            RtcSignalingState::Stable => Signaling::Stable,
            RtcSignalingState::HaveLocalOffer => Signaling::LocalOffer,
            _ => Signaling::Other,
        }
    }

    async fn rollback(&self) -> Result<(), JsValue> {
        self.set_local("rollback", None).await
    }

    async fn set_remote(&self, kind: DescriptionKind, sdp: String) -> Result<(), JsValue> {
        let desc = to_js(&Description {
            kind: match kind {
                DescriptionKind::Offer => "offer",
                DescriptionKind::Answer => "answer",
            },
            sdp: Some(&sdp),
        });
        JsFuture::from(self.pc.set_remote_description(desc.unchecked_ref())).await?;
        Ok(())
    }

    async fn create_offer(&self) -> Result<String, JsValue> {
        let offer = JsFuture::from(self.pc.create_offer()).await?;
        self.set_created(offer).await
    }

    async fn create_answer(&self) -> Result<String, JsValue> {
        let answer = JsFuture::from(self.pc.create_answer()).await?;
        self.set_created(answer).await
    }

    async fn restart_ice(&self) -> Result<(), JsValue> {
        // `restartIce()` (not in web-sys's stable API): the next offer carries new credentials.
        if let Ok(restart) = Reflect::get(&self.pc, &"restartIce".into()) {
            if let Some(f) = restart.dyn_ref::<js_sys::Function>() {
                f.call0(&self.pc)?;
            }
        }
        Ok(())
    }

    async fn add_candidate(&self, init: JsValue) {
        let promise = self
            .pc
            .add_ice_candidate_with_opt_rtc_ice_candidate_init(Some(init.unchecked_ref()));
        // One unusable candidate is not fatal: the others may connect.
        let _ = JsFuture::from(promise).await;
    }

    fn candidate(
        &self,
        candidate: String,
        sdp_mid: Option<String>,
        sdp_m_line_index: Option<u16>,
    ) -> JsValue {
        to_js(&CandidateInit {
            candidate: &candidate,
            sdp_mid: sdp_mid.as_deref(),
            sdp_m_line_index,
        })
    }

    fn send(&self, data: PeerSignal) {
        if let Some(room) = self.room.upgrade() {
            room.send(&ClientMessage::Signal {
                to: self.to.clone(),
                data,
            });
        }
    }
}
