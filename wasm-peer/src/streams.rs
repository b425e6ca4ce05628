//! TCP-like streams to a peer's exposed service, over `burrow-stream` channels (framing in
//! `peer_core::channels`), for the page's service worker: `room.openStream(...)` resolves to a
//! [`Stream`] once the exposing peer has connected to its local service.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Function, Promise, Uint8Array};
use peer_core::channels::{StreamMessage, STREAM_LABEL};
use peer_core::stream::Heard;
use peer_core::transfer::{HIGH_WATER, LOW_WATER};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageEvent, RtcDataChannel, RtcDataChannelType};

use crate::peer::Peer;

/// One open stream. `write` waits while the channel's buffer is full.
#[wasm_bindgen]
pub struct Stream {
    dc: RtcDataChannel,
    state: Rc<State>,
}

struct State {
    /// What the peer's messages mean, and whether the stream is over (shared rules).
    proto: RefCell<peer_core::stream::Stream>,
    closed: Cell<bool>,
    /// Wakes a writer waiting for the buffer to drain.
    drained: RefCell<Option<Function>>,
}

#[wasm_bindgen]
impl Stream {
    /// Sends bytes; the promise resolves once the channel can take more.
    pub fn write(&self, data: Uint8Array) -> Promise {
        let dc = self.dc.clone();
        let state = self.state.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            if state.closed.get() {
                return Err("stream closed".into());
            }
            dc.send_with_array_buffer_view(&data)?;
            while dc.buffered_amount() as usize > HIGH_WATER && !state.closed.get() {
                let wait = Promise::new(&mut |resolve, _| {
                    *state.drained.borrow_mut() = Some(resolve);
                });
                JsFuture::from(wait).await?;
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Half-closes: no more bytes from this side.
    pub fn end(&self) {
        let _ = self.dc.send_with_str(&StreamMessage::End.encode());
    }

    /// Aborts the stream.
    pub fn close(&self) {
        if let Some(reset) = self.state.proto.borrow_mut().reset("closed by the page") {
            let _ = self.dc.send_with_str(&reset.encode());
        }
        self.dc.close();
    }
}

/// Opens a stream to `service` on `peer`. `on_data(Uint8Array)` gets the bytes, `on_end(reason)`
/// is called once when the other side ends (reason `null`) or the stream breaks.
pub fn open(
    peer: Rc<Peer>,
    service: String,
    token: Option<String>,
    on_data: Function,
    on_end: Function,
) -> Promise {
    let dc = peer.pc.create_data_channel(STREAM_LABEL);
    dc.set_binary_type(RtcDataChannelType::Arraybuffer);
    dc.set_buffered_amount_low_threshold(LOW_WATER as u32);
    let (proto, open) = peer_core::stream::Stream::dial(&service, token);
    let open = open.encode();
    let state = Rc::new(State {
        proto: RefCell::new(proto),
        closed: Cell::new(false),
        drained: RefCell::new(None),
    });
    Promise::new(&mut |resolve, reject| {
        let stream = Rc::new(RefCell::new(Some(Stream {
            dc: dc.clone(),
            state: state.clone(),
        })));
        let open = open.clone();
        let d = dc.clone();
        let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            let _ = d.send_with_str(&open);
        });
        let (s, end, rej, on_data) = (
            state.clone(),
            on_end.clone(),
            reject.clone(),
            on_data.clone(),
        );
        let on_message = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
            let data = ev.unchecked_into::<MessageEvent>().data();
            let Some(text) = data.as_string() else {
                let _ = on_data.call1(&JsValue::NULL, &Uint8Array::new(&data));
                return;
            };
            let heard = s.proto.borrow_mut().on_text(&text);
            match heard {
                Heard::Accepted => {
                    if let Some(st) = stream.borrow_mut().take() {
                        let _ = resolve.call1(&JsValue::NULL, &st.into());
                    }
                }
                Heard::Refused(reason) => {
                    let _ = rej.call1(&JsValue::NULL, &reason.into());
                }
                Heard::Ended => {
                    let _ = end.call1(&JsValue::NULL, &JsValue::NULL);
                }
                Heard::Reset(reason) => {
                    let _ = end.call1(&JsValue::NULL, &reason.into());
                }
                Heard::Open { .. } | Heard::Ignored => {}
            }
        });
        let s = state.clone();
        let on_low = Closure::<dyn FnMut(JsValue)>::new(move |_| {
            if let Some(f) = s.drained.borrow_mut().take() {
                let _ = f.call0(&JsValue::NULL);
            }
        });
        dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));
        dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        dc.set_onbufferedamountlow(Some(on_low.as_ref().unchecked_ref()));
        // The channel owns its handlers: released when the stream's channel closes.
        let (s, end) = (state.clone(), on_end.clone());
        let rej = reject.clone();
        crate::own_until_close(&dc, vec![on_open, on_message, on_low], move || {
            s.closed.set(true);
            if let Some(f) = s.drained.borrow_mut().take() {
                let _ = f.call0(&JsValue::NULL);
            }
            let cut = s.proto.borrow_mut().on_closed();
            if cut {
                let _ = rej.call1(&JsValue::NULL, &"the stream closed".into());
                let _ = end.call1(&JsValue::NULL, &"the stream closed".into());
            }
        });
    })
}
