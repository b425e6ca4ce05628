//! TCP-like streams to a peer's exposed service, over `burrow-stream` channels kept open and
//! reused one stream at a time (rules in `peer_core::stream`), for the page's service worker:
//! `room.openStream(...)` resolves to a [`Stream`] as soon as a channel is ready (at once when
//! one is idle); the request's bytes follow the `open` without waiting for the answer, and a
//! refusal comes to `on_end(reason)`.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use js_sys::{Function, Promise, Uint8Array};
use peer_core::channels::{StreamMessage, STREAM_LABEL};
use peer_core::stream::{Heard, Take};
use peer_core::transfer::{HIGH_WATER, LOW_WATER};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageEvent, RtcDataChannel, RtcDataChannelState, RtcDataChannelType};

use crate::peer::Peer;

/// The stream channels the page keeps toward one peer.
pub(crate) type Pool = peer_core::stream::Pool<Rc<Channel>>;

/// One pooled channel and the stream it carries now, if any.
pub(crate) struct Channel {
    dc: RtcDataChannel,
    current: RefCell<Option<Rc<State>>>,
    /// Waiting in the pool (not carrying a stream, and opened).
    idle: Cell<bool>,
    /// Wakes a writer waiting for the buffer to drain.
    drained: RefCell<Option<Function>>,
}

/// One stream's state on its channel.
struct State {
    /// What the peer's messages mean, and whether the stream is over (shared rules).
    proto: RefCell<peer_core::stream::Stream>,
    on_data: Function,
    on_end: Function,
    /// `on_end` was called.
    told: Cell<bool>,
}

impl State {
    fn tell_end(&self, reason: JsValue) {
        if !self.told.replace(true) {
            let _ = self.on_end.call1(&JsValue::NULL, &reason);
        }
    }
}

/// One open stream. `write` waits while the channel's buffer is full.
#[wasm_bindgen]
pub struct Stream {
    peer: Rc<Peer>,
    ch: Rc<Channel>,
    state: Rc<State>,
}

#[wasm_bindgen]
impl Stream {
    /// Sends bytes; the promise resolves once the channel can take more.
    pub fn write(&self, data: Uint8Array) -> Promise {
        let ch = self.ch.clone();
        let state = self.state.clone();
        wasm_bindgen_futures::future_to_promise(async move {
            if !state.proto.borrow().may_send() {
                return Err("stream closed".into());
            }
            ch.dc.send_with_array_buffer_view(&data)?;
            while ch.dc.buffered_amount() as usize > HIGH_WATER
                && ch.dc.ready_state() == RtcDataChannelState::Open
            {
                let wait = Promise::new(&mut |resolve, _| {
                    *ch.drained.borrow_mut() = Some(resolve);
                });
                JsFuture::from(wait).await?;
            }
            Ok(JsValue::UNDEFINED)
        })
    }

    /// Half-closes: no more bytes from this side.
    pub fn end(&self) {
        let end = self.state.proto.borrow_mut().end();
        self.send_final(end);
    }

    /// Aborts the stream.
    pub fn close(&self) {
        let reset = self.state.proto.borrow_mut().reset("closed by the page");
        self.send_final(reset);
    }

    fn send_final(&self, m: Option<StreamMessage>) {
        if let Some(m) = m {
            let _ = self.ch.dc.send_with_str(&m.encode());
            release_if_finished(&self.peer, &self.ch);
        }
    }
}

/// The stream on `ch` is finished both ways: `ch` waits for the next one.
fn release_if_finished(peer: &Rc<Peer>, ch: &Rc<Channel>) {
    let finished = ch
        .current
        .borrow()
        .as_ref()
        .is_some_and(|s| s.proto.borrow().is_finished());
    if finished {
        *ch.current.borrow_mut() = None;
        ch.idle.set(true);
        peer.streams.borrow_mut().give_back(ch.clone());
    }
}

/// Opens a stream to `service` on `peer`. `on_data(Uint8Array)` gets the bytes, `on_end(reason)`
/// is called once when the other side ends (reason `null`), refuses, or the stream breaks.
pub fn open(
    peer: Rc<Peer>,
    service: String,
    token: Option<String>,
    on_data: Function,
    on_end: Function,
) -> Promise {
    let (proto, open) = peer_core::stream::Stream::dial(&service, token);
    let state = Rc::new(State {
        proto: RefCell::new(proto),
        on_data,
        on_end,
        told: Cell::new(false),
    });
    let open = open.encode();
    loop {
        let take = peer.streams.borrow_mut().take();
        match take {
            Take::Idle(ch) if ch.dc.ready_state() == RtcDataChannelState::Open => {
                return Promise::resolve(&start(&peer, ch, state, &open));
            }
            // Closed while idle.
            Take::Idle(_) => peer.streams.borrow_mut().lost(),
            Take::Wait => return Promise::reject(&"too many streams to this peer".into()),
            Take::Open => {
                return Promise::new(&mut |resolve, reject| {
                    new_channel(&peer, state.clone(), open.clone(), resolve, reject)
                })
            }
        }
    }
}

/// Starts `state`'s stream on the open channel `ch`: the `open` goes out, bytes may follow.
fn start(peer: &Rc<Peer>, ch: Rc<Channel>, state: Rc<State>, open: &str) -> JsValue {
    *ch.current.borrow_mut() = Some(state.clone());
    ch.idle.set(false);
    let _ = ch.dc.send_with_str(open);
    Stream {
        peer: peer.clone(),
        ch,
        state,
    }
    .into()
}

/// Opens a new pooled channel for `state`'s stream; `resolve` gets the stream once it is open.
fn new_channel(
    peer: &Rc<Peer>,
    state: Rc<State>,
    open: String,
    resolve: Function,
    reject: Function,
) {
    let dc = peer.pc.create_data_channel(STREAM_LABEL);
    dc.set_binary_type(RtcDataChannelType::Arraybuffer);
    dc.set_buffered_amount_low_threshold(LOW_WATER as u32);
    let ch = Rc::new(Channel {
        dc: dc.clone(),
        current: RefCell::new(None),
        idle: Cell::new(false),
        drained: RefCell::new(None),
    });
    let weak = Rc::downgrade(peer);
    let first = RefCell::new(Some((state, resolve)));
    let c = ch.clone();
    let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        let (Some(peer), Some((state, resolve))) = (weak.upgrade(), first.borrow_mut().take())
        else {
            return;
        };
        let stream = start(&peer, c.clone(), state, &open);
        let _ = resolve.call1(&JsValue::NULL, &stream);
    });
    let weak = Rc::downgrade(peer);
    // Weak: the channel owns its handlers, which must not keep it alive.
    let c = Rc::downgrade(&ch);
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
        let (Some(peer), Some(ch)) = (weak.upgrade(), c.upgrade()) else {
            return;
        };
        let Some(state) = ch.current.borrow().clone() else {
            return;
        };
        let data = ev.unchecked_into::<MessageEvent>().data();
        let Some(text) = data.as_string() else {
            if state.proto.borrow().takes_data() {
                let _ = state.on_data.call1(&JsValue::NULL, &Uint8Array::new(&data));
            }
            return;
        };
        let heard = state.proto.borrow_mut().on_text(&text);
        let answer = match heard {
            Heard::Ended => {
                state.tell_end(JsValue::NULL);
                None
            }
            Heard::Refused(reason) | Heard::Reset(reason) => {
                state.tell_end(reason.into());
                state.proto.borrow_mut().reset("stream over")
            }
            Heard::Accepted | Heard::Open { .. } | Heard::Ignored => None,
        };
        if let Some(m) = answer {
            let _ = ch.dc.send_with_str(&m.encode());
        }
        release_if_finished(&peer, &ch);
    });
    let c = Rc::downgrade(&ch);
    let on_low = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        if let Some(f) = c.upgrade().and_then(|c| c.drained.borrow_mut().take()) {
            let _ = f.call0(&JsValue::NULL);
        }
    });
    dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    dc.set_onbufferedamountlow(Some(on_low.as_ref().unchecked_ref()));
    // The channel owns its handlers (and the pool's place): released when it closes.
    let weak = Rc::downgrade(peer);
    crate::own_until_close(&dc, vec![on_open, on_message, on_low], move || {
        if let Some(f) = ch.drained.borrow_mut().take() {
            let _ = f.call0(&JsValue::NULL);
        }
        if let Some(state) = ch.current.borrow_mut().take() {
            if state.proto.borrow_mut().on_closed() {
                state.tell_end("the stream closed".into());
            }
        }
        let _ = reject.call1(&JsValue::NULL, &"the stream closed".into());
        // An idle channel stays listed until a stream finds it closed, and is counted off then.
        if let (Some(peer), false) = (weak.upgrade(), ch.idle.get()) {
            peer.streams.borrow_mut().lost();
        }
    });
}
