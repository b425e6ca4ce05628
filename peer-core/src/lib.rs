#![warn(missing_docs)]
//! Peer logic that does not depend on the browser or the native stack, used by both peers so
//! they speak exactly the same way:
//!
//! * [`negotiation`]: who offers to whom, and perfect negotiation (polite/impolite) per peer;
//! * [`driver`]: perfect negotiation performed over a small `Connection` trait each peer
//!   implements (rollback, answer, early candidates, ICE restart);
//! * [`channels`]: the data-channel layout and the messages carried on it (chat, file framing);
//! * [`control`]: one peer's control channel: what its messages mean, what we say first, what a
//!   path reading is worth telling;
//! * [`transfer`]: file chunking and the receiving side's checks (size, SHA-256);
//! * [`stream`]: one TCP stream's rules on a data channel (open, data, half-close, reset,
//!   refusal) and the pool of reused stream channels;
//! * [`datagram`]: UDP services: sessions per local client, datagrams framed on `burrow-udp`;
//! * [`path`]: naming how a connection goes (direct LAN, hole punched, relayed) from the
//!   selected ICE candidate pair;
//! * [`events`]: what a peer tells its user, one set for the CLI and the page;
//! * [`room`]: the room across server reconnects and network changes (resume, ICE restart);
//! * [`netcheck`]: what a NAT does, from what two STUN servers saw (CLI and page alike);
//! * [`link`]: turning a room link someone shared into the signaling WebSocket URL;
//! * [`text`]: text a remote peer chose, made safe to show (no terminal escapes, no bidi tricks);
//! * [`voice`]: Opus packets' durations and headers (voice from a file);
//! * [`access`]: an exposed service's token check (constant time) and the limit on wrong tokens.

pub mod access;
pub mod channels;
pub mod control;
pub mod datagram;
pub mod driver;
pub mod events;
pub mod link;
pub mod negotiation;
pub mod netcheck;
pub mod path;
pub mod room;
pub mod stream;
pub mod text;
pub mod transfer;
pub mod voice;
