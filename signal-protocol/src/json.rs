//! JSON text for every message Burrow sends, in one place, so that each platform can use the
//! parser it already has.
//!
//! Natively this is `serde_json`. In the browser (`wasm32`) it is the browser's own `JSON.parse`
//! and `JSON.stringify`, with `serde-wasm-bindgen` moving the values between JavaScript and the
//! Rust types: the page then ships no JSON parser of its own (16 KB of its gzipped wasm).
//!
//! Both write the same text. They read it alike for every message Burrow writes; on hostile
//! text they differ only in what they refuse (the browser keeps the last of duplicate keys and
//! takes `3.0` for 3; `serde_json` refuses both), never in the values they accept. Nesting
//! deeper than [`MAX_DEPTH`] is refused before either parser sees it: no message nests beyond
//! four levels, and a deeply nested value would otherwise reach wasm-bindgen's recursive error
//! printer in the page. The messages' unit tests run natively; the Chromium tests exercise the
//! browser's side.

use serde::{de::DeserializeOwned, Serialize};

/// Why a text could not be read as the message expected (the parser's own words).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct JsonError(String);

/// Deepest nesting of arrays and objects accepted (Burrow's messages nest at most four deep).
pub const MAX_DEPTH: usize = 16;

/// Reads one message from JSON text.
pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, JsonError> {
    if nesting(text) > MAX_DEPTH {
        return Err(JsonError("nested deeper than allowed".into()));
    }
    imp::from_str(text)
}

/// Writes one message as JSON text (`None` fields as `null`, as `serde_json` does); `None` only
/// for a value JSON cannot hold (in the browser: an integer beyond 2^53).
pub fn to_string<T: Serialize>(value: &T) -> Option<String> {
    imp::to_string(value)
}

/// The deepest nesting of arrays and objects in `text`, brackets inside strings not counted.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

#[cfg(not(target_arch = "wasm32"))]
mod imp {
    use super::*;

    pub fn from_str<T: DeserializeOwned>(text: &str) -> Result<T, JsonError> {
        serde_json::from_str(text).map_err(|e| JsonError(e.to_string()))
    }

    pub fn to_string<T: Serialize>(value: &T) -> Option<String> {
        serde_json::to_string(value).ok()
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

    pub fn to_string<T: Serialize>(value: &T) -> Option<String> {
        let serializer = serde_wasm_bindgen::Serializer::new()
            .serialize_missing_as_null(true)
            .serialize_maps_as_objects(true);
        let value = value.serialize(&serializer).ok()?;
        js_sys::JSON::stringify(&value).ok()?.as_string()
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
        assert_eq!(from_str::<ClientMessage>(&to_string(&m).unwrap()), Ok(m));
        let err = from_str::<ClientMessage>("{").unwrap_err();
        assert!(err.to_string().contains("EOF"), "{err}");
    }

    #[test]
    fn deep_nesting_is_refused_before_parsing_but_brackets_in_text_are_fine() {
        let deep = format!(
            r#"{{"t":"chat","text":{}{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        let err = from_str::<serde_json::Value>(&deep).unwrap_err();
        assert!(err.to_string().contains("nested deeper"), "{err}");
        let brackets = r#"{"type":"leave","x":"[[[[[[[[[[[[[[[[[[[[[[[[\"[[[["}"#;
        assert_eq!(nesting(brackets), 1);
        assert_eq!(
            from_str::<ClientMessage>(brackets),
            Ok(ClientMessage::Leave)
        );
        assert_eq!(nesting(r#"{"a":[{"b":[1]}]}"#), 4);
    }
}
