//! TURN (and STUN) over TCP, on the STUN port: for clients whose network drops UDP. The relay
//! still talks UDP to peers; only the client's leg is TCP (RFC 8656 §3.1).
//!
//! A TCP connection carries the same messages as a UDP datagram, back to back: STUN messages
//! (first two bits `00`, length in bytes 2–3, 20-byte header) and ChannelData (first two bits
//! `01`, length in bytes 2–3, 4-byte header, padded to a multiple of 4). Each connection is one
//! listener of the relay: its allocations are keyed by it, answered on it, and deleted when it
//! closes.
//!
//! Over TLS the relay is on the HTTPS port ([`crate::accept`]): after the handshake, a client
//! whose first bytes are a STUN message is handed to [`connection`], every other one to HTTP.
//!
//! The same limits as the HTTP listener and the UDP relay hold: connections per client IP and
//! in all ([`crate::accept::ConnectionLimits`]); each message whole within [`FIRST_WAIT`] of its
//! first byte; some message every [`NO_ALLOCATION_WAIT`], or [`IDLE`] while it holds an
//! allocation; unauthenticated answers and allocation quotas are the relay's, counted by the
//! client's real address; a client that reads too slowly has its data dropped (a queue bounded
//! in bytes, as a full UDP buffer would) and, past [`WRITE_WAIT`], is disconnected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::accept::ConnectionLimits;
use crate::relay::{Relay, TcpWriter};

/// How long a new connection may take to send its first whole message.
pub const FIRST_WAIT: Duration = Duration::from_secs(10);
/// How long a connection holding an allocation may stay silent (clients refresh permissions
/// every 5 minutes at most).
pub const IDLE: Duration = Duration::from_secs(11 * 60);
/// How long a connection without an allocation may stay silent.
pub const NO_ALLOCATION_WAIT: Duration = Duration::from_secs(60);
/// How long one write to a client may take before it is disconnected.
pub const WRITE_WAIT: Duration = Duration::from_secs(10);
/// The largest frame: a STUN message's header and its longest body.
const MAX_FRAME: usize = 20 + 65_535;

/// Accepts TURN clients on `listener` until the task is aborted; their connections are owned
/// here (aborted with it).
pub async fn serve(
    listener: TcpListener,
    relay: Option<Arc<Relay>>,
    metrics: Arc<crate::metrics::Metrics>,
    limits: Arc<ConnectionLimits>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (tcp, from) = match accepted {
                    Ok(got) => got,
                    Err(e) => {
                        tracing::debug!("TURN/TCP accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let slot = match limits.admit(from.ip()) {
                    Ok(slot) => slot,
                    Err(refused) => {
                        tracing::debug!(%from, "TURN/TCP connection refused: {refused:?}");
                        continue;
                    }
                };
                let (relay, metrics) = (relay.clone(), metrics.clone());
                let _ = tcp.set_nodelay(true);
                connections.spawn(async move {
                    let _slot = slot;
                    connection(tcp, Vec::new(), from, relay, &metrics).await;
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// How many bytes the frame at the start of `buf` takes: `None` until its header is there,
/// `Some(Err)` for bytes that are neither STUN nor ChannelData.
fn frame_len(buf: &[u8]) -> Option<Result<usize, ()>> {
    let head = buf.get(..4)?;
    let len = usize::from(u16::from_be_bytes([head[2], head[3]]));
    Some(match head[0] & 0xC0 {
        // STUN: its length a multiple of 4, then the magic cookie.
        0x00 => match buf.get(4..8) {
            None if len % 4 == 0 => return None,
            Some(&[0x21, 0x12, 0xA4, 0x42]) if len % 4 == 0 => Ok(20 + len),
            _ => Err(()),
        },
        0x40 => Ok(4 + crate::wire::padded(len)),
        _ => Err(()),
    })
}

/// Whether a connection's first bytes are a STUN message (its first two bits zero, then the
/// magic cookie): the HTTPS listener tells TURN over TLS from HTTP by them.
pub fn is_stun(first: &[u8]) -> bool {
    first.len() >= 8 && first[0] & 0xC0 == 0 && first[4..8] == [0x21, 0x12, 0xA4, 0x42]
}

/// One client (`first`: bytes already read from it): frames read and handled as the UDP
/// listener handles datagrams; answers and relayed data written back in order by a writer task.
pub async fn connection<S>(
    stream: S,
    first: Vec<u8>,
    from: SocketAddr,
    relay: Option<Arc<Relay>>,
    metrics: &crate::metrics::Metrics,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send,
{
    let (mut read, mut write) = tokio::io::split(stream);
    let (tx, mut rx) = TcpWriter::new();
    // Its allocations end with it, however it ends (even aborted at shutdown).
    let listener = relay.as_ref().map(|r| (r.clone(), r.open_tcp(tx.clone())));
    let _closed = Closed(listener.clone());
    let key = listener.as_ref().map_or(usize::MAX, |(_, n)| *n);
    let queue = tx.clone();
    let writer = async move {
        while let Some(frame) = rx.recv().await {
            match tokio::time::timeout(WRITE_WAIT, write.write_all(&frame)).await {
                Ok(Ok(())) => queue.written(frame.len()),
                _ => return,
            }
        }
    };
    let reader = async {
        let mut buf = first;
        buf.reserve(8 * 1024);
        let mut chunk = vec![0u8; 64 * 1024];
        let mut out = Vec::with_capacity(512);
        let start = tokio::time::Instant::now();
        // A frame (the first one, or one begun) must be whole within FIRST_WAIT of its start.
        let mut partial_since = Some(start);
        let mut last_frame = start;
        let mut quiet_until = start + NO_ALLOCATION_WAIT;
        loop {
            // Every whole frame read so far, then the rest moved to the front once.
            let mut at = 0;
            while let Some(len) = frame_len(&buf[at..]) {
                let Ok(len) = len else {
                    tracing::debug!(%from, "TURN/TCP: not STUN or ChannelData; closed");
                    return;
                };
                if len > MAX_FRAME {
                    return;
                }
                if buf.len() - at < len {
                    break;
                }
                let frame = &buf[at..at + len];
                crate::stun::handle(key, from, frame, relay.as_ref(), metrics, &mut out);
                // A full queue drops the answer; the client retransmits.
                if !out.is_empty() {
                    tx.try_send(&out);
                }
                at += len;
            }
            let now = tokio::time::Instant::now();
            if at > 0 {
                buf.drain(..at);
                last_frame = now;
                quiet_until = now + NO_ALLOCATION_WAIT;
                partial_since = None;
            }
            if !buf.is_empty() && partial_since.is_none() {
                partial_since = Some(now);
            }
            let deadline = match partial_since {
                Some(since) => since + FIRST_WAIT,
                None => quiet_until,
            };
            match tokio::time::timeout_at(deadline, read.read(&mut chunk)).await {
                Ok(Ok(n)) if n > 0 => buf.extend_from_slice(&chunk[..n]),
                Ok(_) => return,
                // Quiet: a client with an allocation may be quiet up to IDLE, others not.
                Err(_) if partial_since.is_none() => {
                    let holds = listener.as_ref().is_some_and(|(r, n)| r.has_allocation(*n));
                    let longest = last_frame + IDLE;
                    if !holds || tokio::time::Instant::now() >= longest {
                        return;
                    }
                    quiet_until = longest;
                }
                Err(_) => return,
            }
        }
    };
    tokio::select! {
        () = reader => {}
        () = writer => {}
    }
}

/// Closes a connection's allocations when it goes.
struct Closed(Option<(Arc<Relay>, usize)>);

impl Drop for Closed {
    fn drop(&mut self) {
        if let Some((relay, listener)) = &self.0 {
            relay.close_tcp(*listener);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_told_apart_by_their_first_bits() {
        // A Binding request with an 8-byte body; ChannelData of 5 bytes (padded to 8).
        let cookie = [0x21, 0x12, 0xA4, 0x42];
        let binding = [[0x00, 0x01, 0x00, 0x08], cookie].concat();
        assert_eq!(frame_len(&binding), Some(Ok(28)));
        assert_eq!(frame_len(&binding[..6]), None);
        assert_eq!(frame_len(&[0x40, 0x00, 0x00, 0x05]), Some(Ok(12)));
        assert_eq!(frame_len(&[0x40, 0x00]), None);
        // TLS: neither (HTTP reads as ChannelData to no channel: dropped by the relay).
        assert_eq!(
            frame_len(&[0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01]),
            Some(Err(()))
        );
        // A STUN length is a multiple of 4.
        assert_eq!(frame_len(&[0x00, 0x01, 0x00, 0x07]), Some(Err(())));
        assert_eq!(
            frame_len(&[0x00, 0x01, 0x00, 0x08, 1, 2, 3, 4]),
            Some(Err(()))
        );
    }
}
