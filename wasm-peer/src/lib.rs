#![warn(missing_docs)]
//! Burrow's browser peer, built with `wasm-pack build --target web` into `www/pkg`.
//!
//! The page uses a small JS API: `new Room(wsUrl, name, onEvent)`, `room.sendChat(text)`,
//! `room.sendFile(file)`, `room.openStream(peer, service, token, onData, onEnd)`, `room.retry()`,
//! `room.leave()`, `room.peerId`.
//! Negotiation, the data-channel layout and the chat and file framing come from `peer-core`, so
//! the browser speaks exactly what the native `burrow` speaks.
//!
//! * [`room`]: the signaling WebSocket (with reconnect) and the mesh;
//! * [`peer`]: one RTCPeerConnection, perfect negotiation, trickle ICE, chat;
//! * [`files`]: file sending and receiving;
//! * [`stats`]: how a connection goes, from `getStats()`;
//! * [`streams`]: streams to a peer's exposed service (for the page's service worker);
//! * [`events`]: what the page is told.

pub mod events;
pub mod files;
pub mod peer;
pub mod room;
pub mod stats;
pub mod streams;

use wasm_bindgen::prelude::*;

pub use room::Room;

/// A JS event handler kept alive as long as the object it is attached to.
pub(crate) type Handler = Closure<dyn FnMut(JsValue)>;

/// Gives a data channel's handlers to the channel: they live until it closes, then its handlers
/// are unset and the closures released (once the close event is over), so nothing made per file
/// or per stream outlives its channel. `on_close` runs first, on the close event.
pub(crate) fn own_until_close(
    dc: &web_sys::RtcDataChannel,
    handlers: Vec<Handler>,
    mut on_close: impl FnMut() + 'static,
) {
    use std::cell::RefCell;
    use std::rc::Rc;
    use wasm_bindgen::JsCast;
    type Owned = (Vec<Handler>, Option<Handler>);
    let slot: Rc<RefCell<Option<Owned>>> = Rc::new(RefCell::new(Some((handlers, None))));
    let (s, d) = (slot.clone(), dc.clone());
    let close = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        on_close();
        d.set_onopen(None);
        d.set_onmessage(None);
        d.set_onbufferedamountlow(None);
        d.set_onclose(None);
        let owned = s.borrow_mut().take();
        // Dropped after this handler returns (a closure must not be freed while it runs).
        wasm_bindgen_futures::spawn_local(async move { drop(owned) });
    });
    dc.set_onclose(Some(close.as_ref().unchecked_ref()));
    let mut owned = slot.borrow_mut();
    if let Some(owned) = owned.as_mut() {
        owned.1 = Some(close);
    }
}

/// The browser runs this module on one thread, so the simplest allocator will do.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::AssumeSingleThreaded<lol_alloc::FreeListAllocator> =
    // SAFETY: wasm-peer is only ever instantiated on the page's main thread (no threads, no
    // shared memory), which is what AssumeSingleThreaded requires.
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::FreeListAllocator::new()) };

/// The NAT verdict for the public addresses (`"ip:port"`) STUN servers saw from one socket:
/// `{mapping, advice}`, the same `burrow netcheck` gives.
#[wasm_bindgen(js_name = netcheckVerdict)]
pub fn netcheck_verdict(mapped: Vec<String>) -> JsValue {
    let mapping = peer_core::netcheck::Mapping::classify(None, &mapped);
    let out = js_sys::Object::new();
    let name = serde_wasm_bindgen::to_value(&mapping).unwrap_or(JsValue::UNDEFINED);
    let _ = js_sys::Reflect::set(&out, &"mapping".into(), &name);
    let _ = js_sys::Reflect::set(&out, &"advice".into(), &mapping.advice().into());
    out.into()
}

/// The room id in what someone typed or pasted (a room link, or a bare id), or `undefined`:
/// the same parser `burrow` uses.
#[wasm_bindgen(js_name = roomIdOf)]
pub fn room_id_of(input: &str, origin: &str) -> Option<String> {
    peer_core::link::RoomLink::parse(input, Some(origin))
        .ok()
        .map(|l| l.room)
}
