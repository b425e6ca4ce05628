//! The room as the page sees it: the signaling WebSocket (with reconnect), the mesh of peers, and
//! the small JS API (`new Room(url, name, onEvent)`, `sendChat`, `sendFile`, `retry`, `leave`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use peer_core::negotiation::offers_first;
use signal_protocol::{ClientMessage, ServerMessage, PROTOCOL_VERSION};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{CloseEvent, MessageEvent, WebSocket};

use crate::events::Event;
use crate::peer::Peer;
use crate::Handler;

/// A joined room. Create it with `new Room(wsUrl, name, onEvent)`.
#[wasm_bindgen]
pub struct Room {
    inner: Rc<Inner>,
}

/// State shared by the room's callbacks.
pub(crate) struct Inner {
    url: String,
    name: Option<String>,
    on_event: js_sys::Function,
    ws: RefCell<Option<WebSocket>>,
    ws_handlers: RefCell<Vec<Handler>>,
    me: RefCell<Option<String>>,
    ice_servers: RefCell<JsValue>,
    peers: RefCell<HashMap<String, Rc<Peer>>>,
    left: Cell<bool>,
    retry_secs: Cell<u32>,
    next_transfer: Cell<u32>,
}

#[wasm_bindgen]
impl Room {
    /// Connects to `ws_url` (`ws://host/ws/ROOM`) and joins; events go to `on_event`.
    #[wasm_bindgen(constructor)]
    pub fn new(ws_url: String, name: Option<String>, on_event: js_sys::Function) -> Room {
        let inner = Rc::new(Inner {
            url: ws_url,
            name: name.filter(|n| !n.trim().is_empty()),
            on_event,
            ws: RefCell::new(None),
            ws_handlers: RefCell::new(Vec::new()),
            me: RefCell::new(None),
            ice_servers: RefCell::new(JsValue::UNDEFINED),
            peers: RefCell::new(HashMap::new()),
            left: Cell::new(false),
            retry_secs: Cell::new(1),
            next_transfer: Cell::new(1),
        });
        Inner::connect(&inner);
        Room { inner }
    }

    /// Our peer id, once joined.
    #[wasm_bindgen(getter, js_name = peerId)]
    pub fn peer_id(&self) -> Option<String> {
        self.inner.me.borrow().clone()
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

    /// Opens a stream to a service `peer` exposes; resolves to a `Stream` once accepted.
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

    /// Asks to join again (after `room_full`).
    pub fn retry(&self) {
        self.inner.hello();
    }

    /// Leaves the room: closes every connection and the WebSocket.
    pub fn leave(&self) {
        self.inner.left.set(true);
        self.inner.close_peers();
        if let Some(ws) = self.inner.ws.borrow_mut().take() {
            let _ = ws.close();
        }
    }
}

impl Inner {
    /// Passes an event to the page.
    pub(crate) fn emit(&self, event: Event) {
        // `flatten` serializes through a map: make it a plain object, not a JS Map.
        let serializer = serde_wasm_bindgen::Serializer::new().serialize_maps_as_objects(true);
        match serde::Serialize::serialize(&event, &serializer) {
            Ok(v) => {
                let _ = self.on_event.call1(&JsValue::NULL, &v);
            }
            Err(e) => web_sys::console::error_1(&e.into()),
        }
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
        if let Ok(text) = serde_json::to_string(msg) {
            let _ = ws.send_with_str(&text);
        }
    }

    fn hello(&self) {
        self.send(&ClientMessage::Hello {
            version: PROTOCOL_VERSION,
            name: self.name.clone(),
            resume: None,
        });
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
                    inner.retry_secs.set(1);
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
                match serde_json::from_str::<ServerMessage>(&text) {
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
                // Our id dies with the socket: the others drop us; we start over on reconnect.
                inner.close_peers();
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
        let secs = this.retry_secs.get();
        this.retry_secs.set((secs * 2).min(10));
        this.emit(Event::ServerLost { retry_in: secs });
        let weak = Rc::downgrade(this);
        let retry = Closure::once_into_js(move || {
            if let Some(inner) = weak.upgrade() {
                if !inner.left.get() {
                    Inner::connect(&inner);
                }
            }
        });
        if let Some(window) = web_sys::window() {
            let _ = window.set_timeout_with_callback_and_timeout_and_arguments_0(
                retry.unchecked_ref(),
                (secs * 1000) as i32,
            );
        }
    }

    fn close_peers(&self) {
        let peers: Vec<(String, Rc<Peer>)> = self.peers.borrow_mut().drain().collect();
        for (id, peer) in peers {
            peer.close();
            self.emit(Event::PeerLeft { peer: id });
        }
    }

    fn on_server(this: &Rc<Inner>, msg: ServerMessage) {
        match msg {
            ServerMessage::Welcome {
                peer_id,
                room,
                peers,
                ice_servers,
                ..
            } => {
                *this.me.borrow_mut() = Some(peer_id.clone());
                *this.ice_servers.borrow_mut() =
                    serde_wasm_bindgen::to_value(&ice_servers).unwrap_or(JsValue::UNDEFINED);
                this.emit(Event::Joined { peer_id, room });
                for p in peers {
                    Inner::add_peer(this, p.id, p.name, offers_first(true));
                }
            }
            ServerMessage::PeerJoined { peer } => {
                Inner::add_peer(this, peer.id, peer.name, offers_first(false));
            }
            ServerMessage::PeerLeft { peer_id } => {
                let removed = this.peers.borrow_mut().remove(&peer_id);
                if let Some(peer) = removed {
                    peer.close();
                }
                this.emit(Event::PeerLeft { peer: peer_id });
            }
            ServerMessage::Signal { from, data } => {
                let peer = this.peers.borrow().get(&from).cloned();
                if let Some(peer) = peer {
                    wasm_bindgen_futures::spawn_local(peer.on_signal(data));
                }
            }
            ServerMessage::Error { code, message } => this.emit(Event::Error {
                code: code.as_str().to_string(),
                message,
            }),
        }
    }

    fn add_peer(this: &Rc<Inner>, id: String, name: Option<String>, offer: bool) {
        let Some(me) = this.me.borrow().clone() else {
            return;
        };
        this.emit(Event::PeerJoined {
            peer: id.clone(),
            name: name.clone(),
        });
        let ice = this.ice_servers.borrow().clone();
        match Peer::new(this, &me, id.clone(), name, &ice) {
            Ok(peer) => {
                this.peers.borrow_mut().insert(id, peer.clone());
                if offer {
                    wasm_bindgen_futures::spawn_local(peer.start());
                }
            }
            Err(e) => web_sys::console::error_2(&"cannot create a peer connection".into(), &e),
        }
    }
}
