#![warn(missing_docs)]
//! Burrow's browser peer, built with `wasm-pack build --target web` into `www/pkg`.
//!
//! The page uses a small JS API: `new Room(wsUrl, name, onEvent)`, `room.sendChat(text)`,
//! `room.sendFile(file)`, `room.openStream(peer, service, token, onData, onEnd)`, `room.retry()`,
//! `room.leave()`, `room.peerId`, and `qrSvg(text)`.
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

/// The browser runs this module on one thread, so the simplest allocator will do.
#[cfg(target_arch = "wasm32")]
#[global_allocator]
static ALLOCATOR: lol_alloc::AssumeSingleThreaded<lol_alloc::FreeListAllocator> =
    // SAFETY: wasm-peer is only ever instantiated on the page's main thread (no threads, no
    // shared memory), which is what AssumeSingleThreaded requires.
    unsafe { lol_alloc::AssumeSingleThreaded::new(lol_alloc::FreeListAllocator::new()) };

/// An SVG QR code of `text` (the room link), for the page to show.
#[wasm_bindgen(js_name = qrSvg)]
pub fn qr_svg(text: &str) -> String {
    use qrcodegen::{QrCode, QrCodeEcc};
    let Ok(qr) = QrCode::encode_text(text, QrCodeEcc::Medium) else {
        return String::new();
    };
    let border = 2;
    let size = qr.size() + 2 * border;
    let mut path = String::new();
    for y in 0..qr.size() {
        for x in 0..qr.size() {
            if qr.get_module(x, y) {
                path.push_str(&format!("M{},{}h1v1h-1z", x + border, y + border));
            }
        }
    }
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" shape-rendering="crispEdges"><rect width="100%" height="100%" fill="#fff"/><path d="{path}" fill="#000"/></svg>"##
    )
}
