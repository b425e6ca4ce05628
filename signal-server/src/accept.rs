//! Accepting TCP connections: the first line of defence.
//!
//! A public rendezvous server meets clients that open thousands of connections and never speak,
//! or send request headers one byte a minute (slowloris), until the process runs out of file
//! descriptors and `/healthz` stops answering. So before any byte is read:
//!
//! * each connection takes a [`Slot`] from [`ConnectionLimits`]: at most `--max-connections-per-ip`
//!   per client address (IPv6 clients are counted per /64, what one subscriber usually holds) and
//!   `--max-connections` in total; a connection over either limit is closed at once;
//! * the slot travels *with* the socket (see [`Limited`]), so a connection upgraded to a
//!   WebSocket keeps counting until the WebSocket closes;
//! * HTTP/1 request headers must arrive within `--header-timeout` and fit in 16 KiB
//!   (larger gets `431 Request Header Fields Too Large`);
//! * a connection that carries no byte either way for `--idle-timeout` is closed, whatever it
//!   speaks (HTTP/2 has no header deadline of its own: an idle h2c connection would hold its
//!   slot for ever).
//!
//! This is the accept loop axum's own `serve` would run, written out on hyper so those limits can
//! be set.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;

/// Largest HTTP/1 read buffer, which bounds the request line plus headers.
const MAX_HEADER_BYTES: usize = 16 * 1024;

/// How long open HTTP connections get to finish after the shutdown signal.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Counts open connections per client and in total.
pub struct ConnectionLimits {
    per_ip: usize,
    total: usize,
    open: Mutex<Open>,
    /// Told when the last connection closes (shutdown waits for it).
    none_open: tokio::sync::Notify,
}

#[derive(Default)]
struct Open {
    total: usize,
    by_client: HashMap<IpAddr, usize>,
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The client already holds its maximum of connections.
    #[error("too many connections from this client")]
    PerClient,
    /// The server holds its maximum of connections.
    #[error("too many connections in total")]
    Total,
}

/// One admitted connection; dropping it frees its place.
pub struct Slot {
    limits: Arc<ConnectionLimits>,
    client: IpAddr,
}

impl ConnectionLimits {
    /// Limits of `per_ip` connections per client and `total` in all (0: no limit).
    pub fn new(per_ip: usize, total: usize) -> Arc<ConnectionLimits> {
        Arc::new(ConnectionLimits {
            per_ip,
            total,
            open: Mutex::new(Open::default()),
            none_open: tokio::sync::Notify::new(),
        })
    }

    /// Takes a place for a connection from `ip`, or says which limit it would break.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let client = client_key(ip);
        let mut open = self.lock();
        if self.total != 0 && open.total >= self.total {
            return Err(Refused::Total);
        }
        let held = open.by_client.get(&client).copied().unwrap_or(0);
        if self.per_ip != 0 && held >= self.per_ip {
            return Err(Refused::PerClient);
        }
        open.total += 1;
        open.by_client.insert(client, held + 1);
        Ok(Slot {
            limits: self.clone(),
            client,
        })
    }

    /// How many connections are open now.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    /// Returns once no connection is open.
    pub async fn all_closed(&self) {
        loop {
            // Registered before the count is read, so a close in between is not missed.
            let told = self.none_open.notified();
            tokio::pin!(told);
            told.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            told.await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.limits.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(n) = open.by_client.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                open.by_client.remove(&self.client);
            }
        }
        if open.total == 0 {
            self.limits.none_open.notify_waiters();
        }
    }
}

/// The address a client is counted under: IPv4 as is, IPv6 by its /64.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// A socket that holds its connection's [`Slot`] for as long as it lives.
pub struct Limited<S> {
    stream: S,
    _slot: Slot,
    idle: Idle,
}

/// The idle deadline of one connection: moved on by every byte read or written; once it
/// passes, reads end (hyper then closes the connection).
struct Idle {
    after: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl Idle {
    fn new(after: Duration) -> Idle {
        Idle {
            after,
            deadline: Box::pin(tokio::time::sleep(after)),
        }
    }

    fn active(&mut self) {
        let next = tokio::time::Instant::now() + self.after;
        self.deadline.as_mut().reset(next);
    }

    fn expired(&mut self, cx: &mut Context<'_>) -> bool {
        self.deadline.as_mut().poll(cx).is_ready()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Limited<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.stream).poll_read(cx, buf) {
            Poll::Ready(Ok(())) if buf.filled().len() > before => {
                self.idle.active();
                Poll::Ready(Ok(()))
            }
            Poll::Pending if self.idle.expired(cx) => {
                tracing::debug!("connection idle too long; closing");
                Poll::Ready(Ok(())) // end of stream
            }
            other => other,
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Limited<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.idle.active();
        }
        r
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.stream).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.idle.active();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// How [`serve`] treats each connection.
pub struct Policy {
    /// Open connections, within their limits.
    pub limits: Arc<ConnectionLimits>,
    /// Where refusals are counted.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Time for a new connection's first byte, its TLS handshake, and each request's headers.
    pub header_timeout: Duration,
    /// Silence (no byte either way) after which a connection is closed.
    pub idle_timeout: Duration,
    /// TLS, when on (`--tls-cert`).
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// The TURN relay, served over TLS on this port to clients whose first bytes are STUN.
    pub turn: Option<Arc<crate::relay::Relay>>,
}

/// Serves `app` on `listener` until `shutdown` resolves, within `policy`.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    policy: Policy,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let Policy {
        limits,
        metrics,
        header_timeout,
        idle_timeout,
        tls,
        turn,
    } = policy;
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32);
    let graceful = GracefulShutdown::new();
    // Every connection's task, owned here: reaped as they end, the rest stopped at shutdown.
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while connections.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: wait, go on.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let slot = match limits.admit(peer.ip()) {
            Ok(slot) => slot,
            Err(why) => {
                tracing::debug!(%peer, "connection refused: {why}");
                let limit = match why {
                    Refused::PerClient => "per_client",
                    Refused::Total => "total",
                };
                metrics
                    .connections_refused
                    .get_or_create(&[("limit", limit)])
                    .inc();
                continue; // dropping `stream` closes it
            }
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let tls = tls.clone();
        let (turn, turn_metrics) = (turn.clone(), metrics.clone());
        connections.spawn(async move {
            // hyper's header deadline starts once it reads a request head; a client that never
            // sends a byte would wait before that, in protocol detection, for ever.
            let mut first = [0u8; 1];
            if !matches!(
                tokio::time::timeout(header_timeout, stream.peek(&mut first)).await,
                Ok(Ok(1))
            ) {
                tracing::debug!(%peer, "no request in time (or closed); closing");
                return;
            }
            match tls {
                None => serve_io(stream, slot, idle_timeout, builder, app, peer, watcher).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(stream))
                            if stream.get_ref().1.alpn_protocol()
                                == Some(crate::tls::ACME_ALPN) =>
                        {
                            // A TLS-ALPN-01 validation: the handshake was the answer.
                            tracing::debug!(%peer, "ACME challenge handshake answered");
                        }
                        Ok(Ok(mut stream)) => {
                            // TURN over TLS shares the port: its first bytes are STUN.
                            let Some(first) = first_bytes(&mut stream, header_timeout).await else {
                                return;
                            };
                            if turn.is_some() && crate::turn_tcp::is_stun(&first) {
                                let _slot = slot;
                                crate::turn_tcp::connection(
                                    stream,
                                    first,
                                    peer,
                                    turn,
                                    &turn_metrics,
                                )
                                .await;
                                return;
                            }
                            let stream = Prefixed {
                                first,
                                at: 0,
                                stream,
                            };
                            serve_io(stream, slot, idle_timeout, builder, app, peer, watcher).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(SHUTDOWN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("some HTTP connections did not finish in time");
    }
    connections.shutdown().await;
    Ok(())
}

/// How many first bytes tell STUN from HTTP.
const FIRST_BYTES: usize = 8;

/// Reads a connection's first [`FIRST_BYTES`] (fewer if it ends or pauses past `wait` after
/// sending some); `None` if it sends nothing in time.
async fn first_bytes<S: AsyncRead + Unpin>(stream: &mut S, wait: Duration) -> Option<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let mut first = vec![0u8; FIRST_BYTES];
    let mut got = 0;
    let deadline = tokio::time::Instant::now() + wait;
    while got < FIRST_BYTES {
        match tokio::time::timeout_at(deadline, stream.read(&mut first[got..])).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => got += n,
            Err(_) => break,
        }
    }
    first.truncate(got);
    (got > 0).then_some(first)
}

/// A stream whose first bytes were read already: they are read again first.
struct Prefixed<S> {
    first: Vec<u8>,
    at: usize,
    stream: S,
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.first.len() {
            let n = (self.first.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.first[at..at + n]);
            self.at += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// Serves HTTP (1 or 2, with upgrades to WebSocket) on one accepted connection, which holds
/// `slot` for as long as it lives.
async fn serve_io<S>(
    stream: S,
    slot: Slot,
    idle_timeout: Duration,
    builder: auto::Builder<TokioExecutor>,
    app: Router,
    peer: SocketAddr,
    watcher: hyper_util::server::graceful::Watcher,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut req| {
        req.extensions_mut().insert(ConnectInfo(peer));
        tower::ServiceExt::oneshot(app.clone(), req)
    });
    let io = Limited {
        stream,
        _slot: slot,
        idle: Idle::new(idle_timeout),
    };
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn.into_owned()).await {
        tracing::debug!(%peer, error = %e, "http connection ended");
    }
}

/// The client address axum handlers can extract (set by [`serve`] on every request).
pub type ClientAddr = ConnectInfo<SocketAddr>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_client_and_total_limits() {
        let limits = ConnectionLimits::new(2, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let a1 = limits.admit(a).unwrap();
        let _a2 = limits.admit(a).unwrap();
        assert_eq!(limits.admit(a).err(), Some(Refused::PerClient));
        let _b1 = limits.admit(b).unwrap();
        assert_eq!(limits.admit(b).err(), Some(Refused::Total));
        drop(a1);
        let _a3 = limits.admit(a).unwrap();
        assert_eq!(limits.open(), 3);
    }

    #[test]
    fn ipv6_clients_count_per_64() {
        let limits = ConnectionLimits::new(1, 0);
        let _x = limits.admit("2001:db8::1".parse().unwrap()).unwrap();
        assert_eq!(
            limits.admit("2001:db8::ffff".parse().unwrap()).err(),
            Some(Refused::PerClient)
        );
        assert!(limits.admit("2001:db8:0:1::1".parse().unwrap()).is_ok());
    }
}
