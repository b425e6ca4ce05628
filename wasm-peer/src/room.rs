//! The room as the page sees it: the signaling WebSocket (with reconnect), the mesh of peers, and
//! the small JS API (`new Room(url, name, onEvent)`, `sendChat`, `sendFile`, `retry`, `leave`).
//!
//! What to do when the server comes and goes, when a peer re-joins, when a link goes down, is
//! decided by [`peer_core::room::Room`], exactly as in the native peer; this moves the bytes.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use peer_core::channels::ControlMessage;
use peer_core::room::{Action, LinkState};
use signal_protocol::{ClientMessage, ServerMessage};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::events::{Event, RoomEvent};
use crate::peer::{Host, Peer};
use crate::Handler;

/// A joined room. Create it with `new Room(wsUrl, name, onEvent)`.
#[wasm_bindgen]
pub struct Room {
    inner: Rc<Inner>,
}

/// State shared by the room's callbacks.
pub(crate) struct Inner {
    url: String,
    on_event: js_sys::Function,
    ws: RefCell<Option<WebSocket>>,
    ws_handlers: RefCell<Vec<Handler>>,
    /// The room across reconnects (shared rules with the native peer).
    room: RefCell<peer_core::room::Room>,
    ice_servers: RefCell<JsValue>,
    peers: RefCell<HashMap<String, Rc<Peer>>>,
    left: Cell<bool>,
    next_transfer: Cell<u32>,
    /// The room's clock tick (restarts, forgetting), cleared on leave.
    ticker: RefCell<Option<(i32, Handler)>>,
    /// In voice: our microphone track (null: listening only) and its stream.
    voice: RefCell<Option<(JsValue, JsValue)>>,
}

#[wasm_bindgen]
impl Room {
    /// Connects to `ws_url` (`ws://host/ws/ROOM`) and joins; events go to `on_event`.
    #[wasm_bindgen(constructor)]
    pub fn new(ws_url: String, name: Option<String>, on_event: js_sys::Function) -> Room {
        let inner = Rc::new(Inner {
            url: ws_url,
            on_event,
            ws: RefCell::new(None),
            ws_handlers: RefCell::new(Vec::new()),
            room: RefCell::new(peer_core::room::Room::new(
                name.filter(|n| !n.trim().is_empty()),
                signal_protocol::PeerKind::Browser,
            )),
            ice_servers: RefCell::new(JsValue::UNDEFINED),
            peers: RefCell::new(HashMap::new()),
            left: Cell::new(false),
            next_transfer: Cell::new(1),
            ticker: RefCell::new(None),
            voice: RefCell::new(None),
        });
        Inner::connect(&inner);
        Inner::start_ticker(&inner);
        Room { inner }
    }

    /// Our peer id, once joined.
    #[wasm_bindgen(getter, js_name = peerId)]
    pub fn peer_id(&self) -> Option<String> {
        self.inner.room.borrow().me().map(str::to_string)
    }

    /// Sends a chat line to every connected peer.
    #[wasm_bindgen(js_name = sendChat)]
    pub fn send_chat(&self, text: String) {
        let peers: Vec<Rc<Peer>> = self.inner.peers.borrow().values().cloned().collect();
        for peer in peers {
            peer.send_chat(&text);
        }
    }

    /// Sends a file to every connected peer; returns how many transfers started.
    #[wasm_bindgen(js_name = sendFile)]
    pub fn send_file(&self, file: web_sys::File) -> u32 {
        let peers: Vec<Rc<Peer>> = self
            .inner
            .peers
            .borrow()
            .values()
            .filter(|p| p.is_connected())
            .cloned()
            .collect();
        let count = peers.len() as u32;
        for peer in peers {
            let id = self.inner.transfer_id();
            crate::files::send(peer, file.clone(), id);
        }
        count
    }

    /// Opens a stream to a service `peer` exposes; resolves to a `Stream` once a channel is
    /// ready (the request may be written at once; a refusal comes to `on_end`).
    #[wasm_bindgen(js_name = openStream)]
    pub fn open_stream(
        &self,
        peer: String,
        service: String,
        token: Option<String>,
        on_data: js_sys::Function,
        on_end: js_sys::Function,
    ) -> js_sys::Promise {
        let found = self.inner.peers.borrow().get(&peer).cloned();
        match found {
            Some(p) if p.is_connected() => crate::streams::open(p, service, token, on_data, on_end),
            _ => js_sys::Promise::reject(&format!("peer {peer} is not connected").into()),
        }
    }

    /// Joins voice with `stream` (from `getUserMedia`), or `null` to listen only: every peer
    /// connection gets our audio by renegotiation, and every peer is told.
    #[wasm_bindgen(js_name = joinVoice)]
    pub fn join_voice(&self, stream: JsValue) {
        let track = if stream.is_null() || stream.is_undefined() {
            JsValue::NULL
        } else {
            let tracks = js_sys::Reflect::get(&stream, &"getAudioTracks".into())
                .ok()
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
                .and_then(|f| f.call0(&stream).ok())
                .unwrap_or_default();
            let first = js_sys::Array::from(&tracks).get(0);
            if first.is_undefined() {
                JsValue::NULL
            } else {
                first
            }
        };
        *self.inner.voice.borrow_mut() = Some((track.clone(), stream.clone()));
        let msg = self
            .inner
            .voice_sending()
            .map(|sending| ControlMessage::Voice { on: true, sending });
        for peer in self.inner.peers.borrow().values() {
            peer.add_voice(&track, &stream);
            if let Some(msg) = &msg {
                peer.send_control(msg);
            }
        }
    }

    /// Leaves voice: our audio is removed from every connection, and every peer is told.
    #[wasm_bindgen(js_name = leaveVoice)]
    pub fn leave_voice(&self) {
        let Some((track, _)) = self.inner.voice.borrow_mut().take() else {
            return;
        };
        if let Ok(stop) = js_sys::Reflect::get(&track, &"stop".into()) {
            if let Ok(f) = stop.dyn_into::<js_sys::Function>() {
                let _ = f.call0(&track);
            }
        }
        let msg = peer_core::channels::ControlMessage::Voice {
            on: false,
            sending: false,
        };
        for peer in self.inner.peers.borrow().values() {
            peer.remove_voice();
            peer.send_control(&msg);
        }
    }

    /// Mutes or unmutes our microphone (the track keeps flowing, as silence).
    #[wasm_bindgen(js_name = setMuted)]
    pub fn set_muted(&self, muted: bool) {
        if let Some((track, _)) = self.inner.voice.borrow().as_ref() {
            let _ = js_sys::Reflect::set(track, &"enabled".into(), &JsValue::from_bool(!muted));
        }
    }

    /// The audio arriving from each peer: `[{peer, packets, energy, level}]` from `getStats()`
    /// (the speaking indicator; voice tests).
    #[wasm_bindgen(js_name = voiceStats)]
    pub fn voice_stats(&self) -> js_sys::Promise {
        let peers: Vec<Rc<Peer>> = self.inner.peers.borrow().values().cloned().collect();
        wasm_bindgen_futures::future_to_promise(async move {
            let out = js_sys::Array::new();
            for peer in peers {
                let Some((packets, energy, level)) = crate::stats::audio_in(&peer.pc).await else {
                    continue;
                };
                let o = js_sys::Object::new();
                let set = |k: &str, v: JsValue| {
                    let _ = js_sys::Reflect::set(&o, &k.into(), &v);
                };
                set("peer", peer.id.as_str().into());
                set("packets", packets.into());
                set("energy", energy.into());
                set("level", level.into());
                out.push(&o);
            }
            Ok(out.into())
        })
    }

    /// Asks to join again (after `room_full`).
    pub fn retry(&self) {
        self.inner.hello();
    }

    /// Leaves the room: says so to the server (the others see it at once), closes every
    /// connection and the WebSocket.
    pub fn leave(&self) {
        self.inner.left.set(true);
        self.inner.send(&ClientMessage::Leave);
        let peers: Vec<(String, Rc<Peer>)> = self.inner.peers.borrow_mut().drain().collect();
        for (_, peer) in peers {
            peer.close();
        }
        if let Some(ws) = self.inner.ws.borrow_mut().take() {
            let _ = ws.close();
        }
        if let Some((id, _handler)) = self.inner.ticker.borrow_mut().take() {
            if let Some(w) = web_sys::window() {
                w.clear_interval_with_handle(id);
            }
        }
    }
}

impl Inner {
    /// Passes an event to the page.
    pub(crate) fn emit(&self, event: impl Into<Event>) {
        let event = event.into();
        // `flatten` serializes through a map: make it a plain object, not a JS Map.
        let serializer = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);
        match serde::Serialize::serialize(&event, &serializer) {
            Ok(v) => {
                let _ = self.on_event.call1(&JsValue::NULL, &v);
            }
            Err(e) => web_sys::console::error_1(&e.into()),
        }
    }

    /// In voice: whether we send audio (`None`: not in voice).
    pub(crate) fn voice_sending(&self) -> Option<bool> {
        let voice = self.voice.borrow();
        let (track, _) = voice.as_ref()?;
        Some(!track.is_null())
    }

    /// A fresh transfer id.
    pub(crate) fn transfer_id(&self) -> u32 {
        let id = self.next_transfer.get();
        self.next_transfer.set(id + 1);
        id
    }

    /// Sends a message to the server.
    pub(crate) fn send(&self, msg: &ClientMessage) {
        let Some(ws) = self.ws.borrow().clone() else {
            return;
        };
        if let Some(text) = signal_protocol::json::to_string(msg) {
            let _ = ws.send_with_str(&text);
        }
    }

    fn hello(&self) {
        let hello = self.room.borrow_mut().hello();
        self.send(&hello);
    }

    /// Milliseconds on the page's clock (the room only compares them; a clock step makes one
    /// delay shorter or longer, nothing worse).
    fn now() -> u64 {
        js_sys::Date::now() as u64
    }

    /// Ticks the room twice a second (ICE restarts that are due, peers to forget).
    fn start_ticker(this: &Rc<Inner>) {
        let weak = Rc::downgrade(this);
        let tick = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(inner) = weak.upgrade() {
                let actions = inner.room.borrow_mut().tick(Inner::now());
                Inner::perform(&inner, actions);
            }
        });
        let Some(window) = web_sys::window() else {
            return;
        };
        if let Ok(id) = window.set_interval_with_callback_and_timeout_and_arguments_0(
            tick.as_ref().unchecked_ref(),
            500,
        ) {
            *this.ticker.borrow_mut() = Some((id, tick));
        }
    }

    /// A peer connection's state changed (called by the peer).
    pub(crate) fn on_link(this: &Rc<Inner>, peer: &str, state: LinkState) {
        let actions = this.room.borrow_mut().on_link(peer, state, Inner::now());
        Inner::perform(this, actions);
    }

    fn connect(this: &Rc<Inner>) {
        let ws = match WebSocket::new(&this.url) {
            Ok(ws) => ws,
            Err(_) => {
                Inner::schedule_reconnect(this);
                return;
            }
        };
        let on_open = {
            let weak = Rc::downgrade(this);
            Closure::<dyn FnMut(JsValue)>::new(move |_| {
                if let Some(inner) = weak.upgrade() {
                    inner.hello();
                }
            })
        };
        let on_message = {
            let weak = Rc::downgrade(this);
            Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                let Some(inner) = weak.upgrade() else { return };
                let Some(text) = ev.unchecked_into::<MessageEvent>().data().as_string() else {
                    return;
                };
                match signal_protocol::json::from_str::<ServerMessage>(&text) {
                    Ok(msg) => Inner::on_server(&inner, msg),
                    Err(e) => web_sys::console::warn_1(&format!("bad server message: {e}").into()),
                }
            })
        };
        let on_close = {
            let weak = Rc::downgrade(this);
            Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
                let Some(inner) = weak.upgrade() else { return };
                let _ = ev.unchecked_into::<CloseEvent>();
                if inner.left.get() {
                    return;
                }
                inner.ws.borrow_mut().take();
                // Links to peers carry on; the server keeps our place for a while.
                Inner::schedule_reconnect(&inner);
            })
        };
        ws.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        ws.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        ws.set_onclose(Some(on_close.as_ref().unchecked_ref()));
        *this.ws.borrow_mut() = Some(ws);
        *this.ws_handlers.borrow_mut() = vec![on_open, on_message, on_close];
    }

    fn schedule_reconnect(this: &Rc<Inner>) {
        let (retry_in, actions) = this
            .room
            .borrow_mut()
            .server_lost(Inner::now(), js_sys::Math::random());
        Inner::perform(this, actions);
        let weak = Rc::downgrade(this);
        Inner::after(retry_in.as_millis() as i32, move || {
            if let Some(inner) = weak.upgrade() {
                if !inner.left.get() {
                    Inner::connect(&inner);
                }
            }
        });
    }

    /// Runs `f` once after `ms` (the closure frees itself once called).
    fn after(ms: i32, f: impl FnOnce() + 'static) {
        let callback = Closure::once_into_js(f);
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(
                callback.unchecked_ref(),
                ms,
            );
        }
    }

    fn on_server(this: &Rc<Inner>, msg: ServerMessage) {
        let result = this.room.borrow_mut().on_server(msg, Inner::now());
        match result {
            Ok(actions) => Inner::perform(this, actions),
            Err(fatal) => {
                this.left.set(true);
                this.emit(RoomEvent::Error {
                    code: fatal.code.as_str().to_string(),
                    message: fatal.message,
                });
            }
        }
    }

    /// Does what the room decided.
    fn perform(this: &Rc<Inner>, actions: Vec<Action>) {
        for action in actions {
            match action {
                Action::Connect { peer, offer, .. } => {
                    Inner::add_peer(this, peer.id, peer.name, offer)
                }
                Action::Close { peer } => {
                    let removed = this.peers.borrow_mut().remove(&peer);
                    if let Some(p) = removed {
                        p.close();
                    }
                }
                Action::UseIceServers { servers } => {
                    let ice = serde_wasm_bindgen::to_value(&servers).unwrap_or(JsValue::UNDEFINED);
                    for p in this.peers.borrow().values() {
                        p.use_ice_servers(&ice);
                    }
                    *this.ice_servers.borrow_mut() = ice;
                }
                Action::RestartIce { peer } => {
                    let found = this.peers.borrow().get(&peer).cloned();
                    if let Some(p) = found {
                        wasm_bindgen_futures::spawn_local(p.restart_ice());
                    }
                }
                Action::Signal { peer, data } => {
                    let found = this.peers.borrow().get(&peer).cloned();
                    if let Some(p) = found {
                        p.push_signal(data);
                    }
                }
                Action::HelloAgain { after } => {
                    let weak = Rc::downgrade(this);
                    Inner::after(after.as_millis() as i32, move || {
                        if let Some(inner) = weak.upgrade() {
                            inner.hello();
                        }
                    });
                }
                Action::Notify(notice) => this.emit(RoomEvent::from(notice)),
            }
        }
    }

    fn add_peer(this: &Rc<Inner>, id: String, name: Option<String>, offer: bool) {
        let Some(me) = this.room.borrow().me().map(str::to_string) else {
            return;
        };
        let ice = this.ice_servers.borrow().clone();
        let host: Rc<dyn Host> = this.clone();
        match Peer::new(Rc::downgrade(&host), &me, id.clone(), name, &ice) {
            Ok(peer) => {
                if let Some((track, stream)) = this.voice.borrow().as_ref() {
                    peer.add_voice(track, stream);
                }
                this.peers.borrow_mut().insert(id, peer.clone());
                if offer {
                    wasm_bindgen_futures::spawn_local(peer.start());
                }
            }
            Err(e) => {
                this.room.borrow_mut().forget(&id);
                web_sys::console::error_2(&"cannot create a peer connection".into(), &e);
            }
        }
    }
}

impl Host for Inner {
    fn emit(&self, event: Event) {
        Inner::emit(self, event);
    }

    fn emit_track(&self, peer: &str, stream: &JsValue, track: &JsValue) {
        let o = js_sys::Object::new();
        let _ = js_sys::Reflect::set(&o, &"event".into(), &"voice_track".into());
        let _ = js_sys::Reflect::set(&o, &"peer".into(), &peer.into());
        let _ = js_sys::Reflect::set(&o, &"stream".into(), stream);
        let _ = js_sys::Reflect::set(&o, &"track".into(), track);
        let _ = self.on_event.call1(&JsValue::NULL, &o);
    }

    fn voice_sending(&self) -> Option<bool> {
        Inner::voice_sending(self)
    }

    fn on_path(&self, peer: &str, path: &peer_core::path::SelectedPath) {
        self.room.borrow_mut().on_path(peer, path);
    }

    fn send(&self, msg: &ClientMessage) {
        Inner::send(self, msg);
    }

    fn transfer_id(&self) -> u32 {
        Inner::transfer_id(self)
    }

    fn on_link(self: Rc<Self>, peer: &str, state: LinkState) {
        Inner::on_link(&self, peer, state);
    }

    fn file_channel(&self, peer: Rc<Peer>, dc: web_sys::RtcDataChannel) {
        crate::files::receive(peer, dc);
    }
}
