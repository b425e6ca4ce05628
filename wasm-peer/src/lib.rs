//! Burrow's browser peer (built with wasm-pack into www/pkg).
use wasm_bindgen::prelude::*;

/// The protocol version, so the page can show it.
#[wasm_bindgen]
pub fn protocol_version() -> u32 {
    signal_protocol::PROTOCOL_VERSION
}
