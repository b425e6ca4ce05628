//! A `webrtc` runtime that keeps the connection's driver turning while TURN-relayed packets are
//! queued inside it.
//!
//! `webrtc` 0.21's driver (`peer_connection/driver.rs`, `event_loop`) runs one pass per wake-up
//! in this order: (1.b) send what the TURN client has queued, (1.c) drain the core's outgoing
//! packets (a relayed one is only handed to the TURN client, which queues it), ... (3.a) feed
//! packets the TURN client decapsulated into the core (whose replies are queued in the core);
//! then it sleeps until the next timer, a socket read or an application send. So a reply to a
//! relayed packet waits for the next wake-up twice (core → TURN queue → socket), and an idle
//! connection's next wake-up is a protocol timer, often SCTP's 200 ms delayed-ack timer: every
//! relayed round trip costs 100–200 ms, and SCTP over it crawls.
//!
//! This runtime delegates everything to the crate's tokio runtime and changes three things:
//! * it asks for 4 MiB socket buffers on the connection's UDP sockets (the ~208 KiB default
//!   overflows under one SCTP burst; see [`SOCKET_BUFFER_BYTES`]);
//! * it watches those sockets for TURN ChannelData (RFC 7983: first byte 64–79; `rtc-turn`
//!   numbers channels from 0x4000, so 64–127 here);
//! * once the connection uses a relay, every wake-up of the driver is followed by two immediate
//!   passes (its `sleep` returns at once), which is exactly what moves a relayed packet out.
//!   Direct connections never take this path.

use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use webrtc::runtime::{
    AsyncInterval, AsyncTcpListener, AsyncTcpStream, AsyncUdpSocket, JoinHandle, RecvMeta, Runtime,
    TokioRuntime, Transmit,
};

/// Socket buffer size asked for on the connection's UDP sockets. SCTP sends a whole congestion
/// window at once (100+ datagrams of ~1.2 KB); a loopback datagram that size costs ~2.3 KB of
/// the ~208 KiB default, so the tail was dropped (`RcvbufErrors`) and each drop cost a
/// fast-recovery round or SCTP's 1 s minimum RTO.
const SOCKET_BUFFER_BYTES: usize = 4 << 20;

/// Extra driver passes after each wake-up of a relayed connection (core → TURN queue → socket).
const EXTRA_PASSES: u8 = 2;

#[derive(Default)]
struct State {
    /// Set once TURN ChannelData has crossed one of this connection's sockets.
    relayed: AtomicBool,
    /// Immediate passes still owed.
    owed: AtomicU8,
}

/// The runtime for one peer connection (see the module docs).
#[derive(Clone)]
pub struct KickRuntime {
    inner: Arc<TokioRuntime>,
    state: Arc<State>,
}

impl fmt::Debug for KickRuntime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KickRuntime")
            .field("relayed", &self.state.relayed.load(Ordering::Relaxed))
            .finish()
    }
}

impl KickRuntime {
    /// A fresh runtime; use one per peer connection.
    pub fn new() -> KickRuntime {
        KickRuntime {
            inner: Arc::new(TokioRuntime),
            state: Arc::new(State::default()),
        }
    }
}

impl Default for KickRuntime {
    fn default() -> Self {
        KickRuntime::new()
    }
}

fn is_channel_data(b: &[u8]) -> bool {
    b.len() >= 4 && (64..=127).contains(&b[0])
}

/// The driver's timer: ends at once while passes are owed; a wake-up by anything else (the
/// future dropped unfinished) or by the timer itself owes [`EXTRA_PASSES`] more.
struct KickSleep {
    state: Arc<State>,
    sleep: Option<Pin<Box<dyn Future<Output = ()> + Send + 'static>>>,
    done: bool,
}

impl Future for KickSleep {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = &mut *self;
        match this.sleep.as_mut() {
            None => {
                this.done = true;
                Poll::Ready(())
            }
            Some(s) => match s.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    this.done = true;
                    if this.state.relayed.load(Ordering::Relaxed) {
                        this.state.owed.store(EXTRA_PASSES, Ordering::Relaxed);
                    }
                    Poll::Ready(())
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl Drop for KickSleep {
    fn drop(&mut self) {
        // Dropped unfinished (even an immediate one): the driver woke for a packet or an
        // application event, whose consequences need passes of their own.
        if !self.done && self.state.relayed.load(Ordering::Relaxed) {
            self.state.owed.store(EXTRA_PASSES, Ordering::Relaxed);
        }
    }
}

impl Runtime for KickRuntime {
    fn spawn(&self, future: Pin<Box<dyn Future<Output = ()> + Send>>) -> Box<dyn JoinHandle> {
        self.inner.spawn(future)
    }

    fn spawn_reactor(
        &self,
        reactor_pool_size: usize,
        future: Pin<Box<dyn Future<Output = ()> + Send>>,
    ) -> Box<dyn JoinHandle> {
        self.inner.spawn_reactor(reactor_pool_size, future)
    }

    fn wrap_udp_socket(&self, socket: std::net::UdpSocket) -> io::Result<Arc<dyn AsyncUdpSocket>> {
        // The peer's SCTP sends a whole congestion window at once; the default receive buffer
        // (~208 KiB, ~90 datagrams of 1.2 KB) overflows on a fast path and every drop costs a
        // fast-recovery round or SCTP's 1 s minimum RTO. Best effort: the kernel caps it at
        // `net.core.rmem_max` (the granted size is doubled for bookkeeping).
        let sock = socket2::SockRef::from(&socket);
        let _ = sock.set_recv_buffer_size(SOCKET_BUFFER_BYTES);
        let _ = sock.set_send_buffer_size(SOCKET_BUFFER_BYTES);
        let inner = self.inner.wrap_udp_socket(socket)?;
        Ok(Arc::new(WatchedSocket {
            inner,
            state: self.state.clone(),
        }))
    }

    fn wrap_tcp_listener(
        &self,
        listener: std::net::TcpListener,
    ) -> io::Result<Arc<dyn AsyncTcpListener>> {
        self.inner.wrap_tcp_listener(listener)
    }

    fn connect_tcp<'a>(
        &'a self,
        remote_addr: SocketAddr,
    ) -> Pin<Box<dyn Future<Output = io::Result<Arc<dyn AsyncTcpStream>>> + Send + 'a>> {
        self.inner.connect_tcp(remote_addr)
    }

    fn resolve_host<'a>(
        &'a self,
        host: &'a str,
    ) -> Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>> {
        self.inner.resolve_host(host)
    }

    fn sleep(&self, duration: Duration) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        let owed = self.state.owed.load(Ordering::Relaxed);
        if owed > 0 && !duration.is_zero() {
            self.state.owed.store(owed - 1, Ordering::Relaxed);
            return Box::pin(KickSleep {
                state: self.state.clone(),
                sleep: None,
                done: false,
            });
        }
        Box::pin(KickSleep {
            state: self.state.clone(),
            sleep: Some(self.inner.sleep(duration)),
            done: false,
        })
    }

    fn interval(&self, period: Duration) -> Box<dyn AsyncInterval> {
        self.inner.interval(period)
    }

    fn block_on(&self, future: Pin<Box<dyn Future<Output = ()> + '_>>) {
        self.inner.block_on(future)
    }

    fn yield_now(&self) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> {
        self.inner.yield_now()
    }

    fn name(&self) -> &'static str {
        "burrow-kick"
    }
}

/// A UDP socket that notes TURN ChannelData passing through it.
#[derive(Debug)]
struct WatchedSocket {
    inner: Arc<dyn AsyncUdpSocket>,
    state: Arc<State>,
}

impl fmt::Debug for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("State")
    }
}

impl AsyncUdpSocket for WatchedSocket {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.inner.local_addr()
    }

    fn poll_send(&self, cx: &mut Context<'_>, transmit: &Transmit<'_>) -> Poll<io::Result<usize>> {
        if is_channel_data(transmit.contents) {
            self.state.relayed.store(true, Ordering::Relaxed);
        }
        self.inner.poll_send(cx, transmit)
    }

    fn poll_recv(
        &self,
        cx: &mut Context<'_>,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        let r = self.inner.poll_recv(cx, bufs, meta);
        if let Poll::Ready(Ok(n)) = &r {
            if !self.state.relayed.load(Ordering::Relaxed)
                && bufs
                    .iter()
                    .zip(meta.iter())
                    .take(*n)
                    .any(|(b, m)| is_channel_data(&b[..m.len.min(b.len())]))
            {
                self.state.relayed.store(true, Ordering::Relaxed);
            }
        }
        r
    }

    fn max_gso_segments(&self) -> usize {
        self.inner.max_gso_segments()
    }

    fn max_gro_segments(&self) -> usize {
        self.inner.max_gro_segments()
    }
}
