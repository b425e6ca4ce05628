//! Files in the browser, with the same framing as the native peer (`peer_core::channels`):
//! sending reads the `File` a chunk at a time and waits on `bufferedamountlow`; receiving hashes
//! each chunk and folds chunks into `Blob`s every [`FOLD_BYTES`], so the bytes are held once, by
//! the browser's blob store (which may page them to disk), never twice in JS and wasm.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;

use js_sys::{Array, ArrayBuffer, Uint8Array};
use peer_core::channels::{FileMessage, FILE_LABEL};
use peer_core::transfer::{Incoming, Outgoing, CHUNK_SIZE, HIGH_WATER, LOW_WATER};
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{Blob, BlobPropertyBag, File, MessageEvent, RtcDataChannel, RtcDataChannelType, Url};

use crate::events::{Event, RoomEvent};
use crate::peer::Peer;

/// Received chunks are folded into one `Blob` whenever this many bytes are pending.
const FOLD_BYTES: usize = 16 * 1024 * 1024;

/// How much of a file the sender reads at once (each read is a promise to wait for).
const READ_SIZE: usize = 16 * CHUNK_SIZE;

/// Something to wait for inside an async function, woken from an event handler.
#[derive(Default)]
struct Notify {
    resolve: RefCell<Option<js_sys::Function>>,
}

impl Notify {
    async fn wait(&self) {
        let promise = js_sys::Promise::new(&mut |resolve, _reject| {
            *self.resolve.borrow_mut() = Some(resolve);
        });
        let _ = JsFuture::from(promise).await;
    }

    fn wake(&self) {
        if let Some(f) = self.resolve.borrow_mut().take() {
            let _ = f.call0(&JsValue::NULL);
        }
    }
}

/// The sending side's view of its file channel.
#[derive(Default)]
struct SendChannel {
    open: Cell<bool>,
    closed: Cell<bool>,
    replies: RefCell<VecDeque<String>>,
    notify: Notify,
}

/// Sends `file` to `peer` in the background, reporting progress to the page.
pub fn send(peer: Rc<Peer>, file: File, id: u32) {
    wasm_bindgen_futures::spawn_local(async move {
        // The name as the receiver sees it, in both events (as `burrow` reports it).
        let (name, size) = (
            peer_core::transfer::safe_file_name(&file.name()),
            file.size() as u64,
        );
        let event = match send_file(&peer, &file, id).await {
            Ok(sha256) => RoomEvent::FileSent {
                to: peer.id.clone(),
                name,
                size,
                sha256,
                id: Some(id),
            },
            Err(reason) => RoomEvent::FileFailed {
                peer: peer.id.clone(),
                name,
                reason,
                id: Some(id),
            },
        };
        peer.emit(event);
    });
}

async fn send_file(peer: &Rc<Peer>, file: &File, id: u32) -> Result<String, String> {
    let size = file.size();
    peer.emit(Event::FileStarted {
        id,
        peer: peer.id.clone(),
        direction: "out",
        name: file.name(),
        size,
    });
    let dc = peer.pc.create_data_channel(FILE_LABEL);
    dc.set_binary_type(RtcDataChannelType::Arraybuffer);
    dc.set_buffered_amount_low_threshold(LOW_WATER as u32);
    let chan = Rc::new(SendChannel::default());
    watch_send_channel(&dc, &chan);
    let closed = || "the connection closed before the transfer finished".to_string();

    while !chan.open.get() {
        if chan.closed.get() {
            return Err(closed());
        }
        chan.notify.wait().await;
    }
    let (mut out, header) = Outgoing::start(&file.name(), size as u64, Some(file.type_()));
    dc.send_with_str(&header.encode()).map_err(|_| closed())?;
    let mut offset = 0f64;
    let mut last_report = 0f64;
    let mut bytes = vec![0u8; READ_SIZE];
    while offset < size {
        // One read per READ_SIZE (a promise each), sent as CHUNK_SIZE messages.
        let read_end = (offset + READ_SIZE as f64).min(size);
        let blob = file
            .slice_with_f64_and_f64(offset, read_end)
            .map_err(|_| "cannot read the file".to_string())?;
        let buf: ArrayBuffer = JsFuture::from(blob.array_buffer())
            .await
            .map_err(|_| "cannot read the file".to_string())?
            .unchecked_into();
        let read = Uint8Array::new(&buf);
        let len = read.length() as usize;
        if len > bytes.len() {
            return Err("cannot read the file".into());
        }
        read.copy_to(&mut bytes[..len]);
        out.on_chunk(&bytes[..len]).map_err(|e| e.to_string())?;
        let mut at = 0u32;
        while at < read.length() {
            let chunk = read.subarray(at, (at + CHUNK_SIZE as u32).min(read.length()));
            dc.send_with_array_buffer_view(&chunk)
                .map_err(|_| closed())?;
            at += chunk.length();
            while dc.buffered_amount() as usize > HIGH_WATER {
                if chan.closed.get() {
                    return Err(closed());
                }
                chan.notify.wait().await;
            }
        }
        offset = read_end;
        if offset - last_report >= size / 100.0 || offset >= size {
            last_report = offset;
            peer.emit(Event::FileProgress { id, done: offset });
        }
    }
    let end = out.end().map_err(|e| e.to_string())?;
    dc.send_with_str(&end.encode()).map_err(|_| closed())?;
    let reply = loop {
        if let Some(reply) = chan.replies.borrow_mut().pop_front() {
            break reply;
        }
        if chan.closed.get() {
            return Err(closed());
        }
        chan.notify.wait().await;
    };
    dc.close();
    out.on_reply(&reply).map_err(|e| e.to_string())
}

fn watch_send_channel(dc: &RtcDataChannel, chan: &Rc<SendChannel>) {
    let c = chan.clone();
    let on_open = Closure::<dyn FnMut(JsValue)>::new(move |_| {
        c.open.set(true);
        c.notify.wake();
    });
    let c = chan.clone();
    let on_low = Closure::<dyn FnMut(JsValue)>::new(move |_| c.notify.wake());
    let c = chan.clone();
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
        if let Some(text) = ev.unchecked_into::<MessageEvent>().data().as_string() {
            c.replies.borrow_mut().push_back(text);
            c.notify.wake();
        }
    });
    dc.set_onopen(Some(on_open.as_ref().unchecked_ref()));
    dc.set_onbufferedamountlow(Some(on_low.as_ref().unchecked_ref()));
    dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The channel owns its handlers; it is closed when the transfer ends.
    let c = chan.clone();
    crate::own_until_close(dc, vec![on_open, on_low, on_message], move || {
        c.closed.set(true);
        c.notify.wake();
    });
}

/// The receiving side of one file channel.
struct Receiving {
    id: u32,
    /// The file's name once its header came (kept for a failure after the check).
    name: String,
    file: Option<Incoming>,
    parts: Array,
    part_bytes: usize,
    blobs: Array,
    last_report: u64,
    finished: bool,
    /// Where each message's bytes are copied to be hashed (`CHUNK_SIZE`, reused; freed when
    /// the transfer ends).
    scratch: Vec<u8>,
}

impl Receiving {
    /// The transfer is over (delivered, refused or abandoned): later messages are ignored and
    /// what it held is let go.
    fn finish(&mut self) {
        self.finished = true;
        self.scratch = Vec::new();
        self.parts = Array::new();
        self.blobs = Array::new();
    }
}

/// Receives one file from an incoming channel and offers it to the page as a download.
pub fn receive(peer: Rc<Peer>, dc: RtcDataChannel) {
    dc.set_binary_type(RtcDataChannelType::Arraybuffer);
    let id = peer.room.upgrade().map(|r| r.transfer_id()).unwrap_or(0);
    let state = Rc::new(RefCell::new(Receiving {
        id,
        file: None,
        parts: Array::new(),
        part_bytes: 0,
        blobs: Array::new(),
        last_report: 0,
        finished: false,
        name: String::new(),
        scratch: Vec::new(),
    }));
    let (p, s, d) = (peer.clone(), state.clone(), dc.clone());
    let on_message = Closure::<dyn FnMut(JsValue)>::new(move |ev: JsValue| {
        let data = ev.unchecked_into::<MessageEvent>().data();
        let result = on_receive(&p, &mut s.borrow_mut(), &d, data);
        if let Err(reason) = result {
            let mut st = s.borrow_mut();
            st.finish();
            let _ = d.send_with_str(
                &FileMessage::Refused {
                    reason: reason.clone(),
                }
                .encode(),
            );
            p.emit(RoomEvent::FileFailed {
                peer: p.id.clone(),
                name: st.name.clone(),
                reason,
                id: Some(st.id),
            });
        }
    });
    dc.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    // The channel owns its handlers (and through them the peer): released when it closes.
    let (p, s) = (peer, state);
    crate::own_until_close(&dc, vec![on_message], move || {
        let mut st = s.borrow_mut();
        if st.finished {
            return;
        }
        st.finish();
        if let Some(file) = &st.file {
            p.emit(RoomEvent::FileFailed {
                peer: p.id.clone(),
                name: file.name.clone(),
                reason: file.abandoned().to_string(),
                id: Some(st.id),
            });
        }
    });
}

fn on_receive(
    peer: &Peer,
    st: &mut Receiving,
    dc: &RtcDataChannel,
    data: JsValue,
) -> Result<(), String> {
    if st.finished {
        return Ok(());
    }
    if let Some(text) = data.as_string() {
        let msg = FileMessage::decode(&text).map_err(|e| e.to_string())?;
        let Some(file) = st.file.take() else {
            let file = Incoming::start(&msg).map_err(|e| e.to_string())?;
            peer.emit(Event::FileStarted {
                id: st.id,
                peer: peer.id.clone(),
                direction: "in",
                name: file.name.clone(),
                size: file.size as f64,
            });
            st.name = file.name.clone();
            st.file = Some(file);
            return Ok(());
        };
        let (name, size) = (file.name.clone(), file.size);
        let sha256 = file.finish(&msg).map_err(|e| e.to_string())?;
        st.blobs.push(&fold(&st.parts, None)?.into());
        // Never the sender's type: a blob URL lives on the room page's origin, and an HTML or
        // SVG file opened from it would run there. Bytes of no type only ever download.
        let blob = fold(&st.blobs, Some(DOWNLOAD_TYPE))?;
        st.finish();
        let url = Url::create_object_url_with_blob(&blob).map_err(|_| "cannot offer the file")?;
        let _ = dc.send_with_str(
            &FileMessage::Received {
                sha256: sha256.clone(),
            }
            .encode(),
        );
        peer.emit(RoomEvent::FileReceived {
            from: peer.id.clone(),
            name,
            size,
            sha256,
            path: None,
            url: Some(url),
            id: Some(st.id),
        });
        return Ok(());
    }
    let Some(file) = st.file.as_mut() else {
        return Err("no file header".into());
    };
    let buf: ArrayBuffer = data.dyn_into().map_err(|_| "unexpected message type")?;
    let view = Uint8Array::new(&buf);
    let n = view.length();
    // Hashed CHUNK_SIZE at a time through one buffer, whatever size the peer's message is (the
    // first piece beyond the announced size stops the transfer).
    st.scratch.resize(CHUNK_SIZE, 0);
    let mut at = 0;
    while at < n {
        let piece = view.subarray(at, (at + CHUNK_SIZE as u32).min(n));
        let len = piece.length() as usize;
        piece.copy_to(&mut st.scratch[..len]);
        file.on_chunk(&st.scratch[..len])
            .map_err(|e| e.to_string())?;
        at += len as u32;
    }
    st.parts.push(&buf);
    st.part_bytes += n as usize;
    if st.part_bytes >= FOLD_BYTES {
        st.blobs.push(&fold(&st.parts, None)?.into());
        st.parts = Array::new();
        st.part_bytes = 0;
    }
    let received = file.received();
    if received - st.last_report >= (file.size / 100).max(1) || received == file.size {
        st.last_report = received;
        peer.emit(Event::FileProgress {
            id: st.id,
            done: received as f64,
        });
    }
    Ok(())
}

/// The type every received file is offered with (see where it is folded).
const DOWNLOAD_TYPE: &str = "application/octet-stream";

/// One `Blob` from a list of parts (ArrayBuffers or Blobs).
fn fold(parts: &Array, mime: Option<&str>) -> Result<Blob, String> {
    let bag = BlobPropertyBag::new();
    if let Some(m) = mime {
        bag.set_type(m);
    }
    Blob::new_with_blob_sequence_and_options(parts, &bag)
        .map_err(|_| "cannot store the file".to_string())
}
