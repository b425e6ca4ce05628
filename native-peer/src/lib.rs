#![warn(missing_docs)]
//! The native Burrow peer, used by the `burrow` binary (and by the benchmarks).
//!
//! * [`signaling`]: the WebSocket to the rendezvous server;
//! * [`peer`]: one remote peer: its connection, negotiation, trickled candidates;
//! * [`kick`]: the `webrtc` runtime that keeps relayed packets moving, and big socket buffers;
//! * [`rtc`]: `webrtc` settings (ICE timing, buffers) and the path from stats;
//! * [`session`]: a room: the mesh, chat, files, expose/forward, driven by one event loop;
//! * [`files`]: sending and receiving files;
//! * [`streams`]: TCP streams over data channels (`burrow expose` / `burrow forward`);
//! * `own`: the channels we opened, told apart from echoes the `webrtc` crate announces;
//! * [`services`]: what `burrow expose` offers, from its command line or a config file;
//! * [`meter`]: one service's bytes, streams, health and bandwidth cap;
//! * `health`: the checks that find a local service down or back;
//! * [`udp`]: UDP services: the datagram channel, and the forwarding side's sessions;
//! * [`tls`]: whom `burrow` trusts on https room links;
//! * [`turn_tcp`]: TURN over TCP for the `webrtc` crate, through a local shim;
//! * [`netcheck`]: what this machine's NAT does;
//! * [`voice`]: voice from an Ogg/Opus file, and recordings of what peers say;
//! * [`status`]: the `--admin` status page, and `burrow status` that reads it;
//! * [`events`]: what is printed.

pub mod events;
pub mod files;
mod health;
pub mod kick;
pub mod meter;
pub mod netcheck;
mod own;
pub mod peer;
pub mod rtc;
pub mod services;
pub mod session;
pub mod signaling;
pub mod status;
pub mod streams;
pub mod tls;
pub mod turn_tcp;
pub mod udp;
pub mod voice;
