//! JSON text for every message Burrow sends, in one place, so that each platform can use the
//! parser it already has.
//!
//! Natively this is `serde_json`. In the browser (`wasm32`) it is the browser's own `JSON.parse`
//! and `JSON.stringify`, with `serde-wasm-bindgen` moving the values between JavaScript and the
//! Rust types: the page then ships no JSON parser of its own, nor the float formatting serde's
//! parse errors bring along (together about a fifth of the page's wasm). Both read and write
//! the same text; the messages' unit tests run natively and the Chromium tests exercise the
//! browser's side.

use serde::{de::DeserializeOwned, Serialize};

/// Why a text could not be read as the message expected (the parser's own words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(String);

/// Reads one message from JSON text.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, JsonError> {
    imp::from_str(text)
}

/// Writes one message as JSON text (`None` fields as `null`, as `serde_json` does).
pub fn to_string<T: Serialize>(value: &T) -> String {
    imp::to_string(value)
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::*;

    pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, JsonError> {
        serde_json::from_str(text).map_err(|e| JsonError(e.to_string()))
    }

    pub fn to_string<T: Serialize>(value: &T) -> String {
        // Burrow's messages are structs and enums with string keys: writing them cannot fail.
        serde_json::to_string(value).unwrap_or_default()
    }
}

#[cfg(target_arch = "wasm32")]
mod imp {
    use super::*;
    use wasm_bindgen::JsValue;

    fn words(e: JsValue) -> JsonError {
        JsonError(
            js_sys::Error::from(e)
                .message()
                .as_string()
                .unwrap_or_else(|| "unreadable JSON".into()),
        )
    }

    pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, JsonError> {
        let value = js_sys::JSON::parse(text).map_err(words)?;
        serde_wasm_bindgen::from_value(value).map_err(|e| words(e.into()))
    }

    pub fn to_string<T: Serialize>(value: &T) -> String {
        let serializer = serde_wasm_bindgen::Serializer::new()
            .serialize_missing_as_null(true)
            .serialize_maps_as_objects(true);
        value
            .serialize(&serializer)
            .ok()
            .and_then(|v| js_sys::JSON::stringify(&v).ok())
            .and_then(|s| s.as_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ClientMessage, PeerSignal};

    #[test]
    fn a_message_reads_back_and_bad_text_says_why() {
        let m = ClientMessage::Signal {
            to: "p".into(),
            data: PeerSignal::EndOfCandidates,
        };
        assert_eq!(from_str::<ClientMessage>(&to_string(&m)), Ok(m));
        let err = from_str::<ClientMessage>("{").unwrap_err();
        assert!(err.to_string().contains("EOF"), "{err}");
    }
}
