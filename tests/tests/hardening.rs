//! The signaling server against a hostile client (the hardening issue's rows 5–8 and 11), spoken
//! to over raw TCP and WebSocket on loopback. Each test is bounded in count and time.

use std::net::SocketAddr;
use std::time::Duration;

use burrow_tests::server::ServerProcess;
use burrow_tests::ws::{peer_id, WsClient};
use futures_util::{SinkExt, StreamExt};
use signal_protocol::{ErrorCode, ServerMessage};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A TCP connection to `server` from the loopback address `from` (127.0.0.x), so a test can
/// act as several clients.
async fn connect_from(from: &str, server: SocketAddr) -> std::io::Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    sock.bind(format!("{from}:0").parse().expect("address"))?;
    sock.connect(server).await
}

/// Whether the server closed `s` (EOF or reset) within `wait`, reading and discarding the rest.
async fn closed_within(s: &mut TcpStream, wait: Duration) -> bool {
    let deadline = tokio::time::Instant::now() + wait;
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

/// Row 5 and 8: a peer that stops reading its WebSocket while others send it signals is dropped
/// by the write deadline, everyone hears it left, and newcomers are not told it is there.
#[tokio::test]
async fn a_peer_that_stops_reading_is_dropped_and_announced() {
    let server = ServerProcess::start(&[
        "--write-timeout",
        "1s",
        // Keepalive far away: the write deadline, not the ping timeout, must catch it.
        "--ping-interval",
        "60s",
        "--ping-timeout",
        "120s",
    ]);
    let url = server.ws_url("stalled");
    let (mut a, _) = WsClient::join(&url, None).await;
    let (_b, wb) = WsClient::join(&url, None).await; // never read again
    let b = peer_id(&wb);
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));

    let left = burrow_tests::ws::flood_until_left(&mut a, &b, Duration::from_secs(15)).await;
    assert!(left, "a is told that the stalled peer left");

    let (_c, wc) = WsClient::join(&url, None).await;
    match wc {
        ServerMessage::Welcome { peers, .. } => {
            assert!(
                peers.iter().all(|p| p.id != b),
                "newcomer told of a gone peer"
            );
            assert_eq!(peers.len(), 1, "only a is there: {peers:?}");
        }
        other => panic!("expected welcome, got {other:?}"),
    }
}

/// Row 6: one client cannot hold more than its share of connections, silent WebSockets and
/// slowloris requests are closed by deadlines, and the server keeps answering others.
#[tokio::test]
async fn idle_and_slow_clients_are_limited_and_timed_out() {
    let server = ServerProcess::start(&[
        "--max-connections-per-ip",
        "20",
        "--hello-timeout",
        "1s",
        "--header-timeout",
        "1s",
    ]);
    // 20 connections from 127.0.0.3 that never send a byte are accepted; the 21st is closed.
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(
            connect_from("127.0.0.3", server.http)
                .await
                .expect("connect"),
        );
    }
    let mut extra = connect_from("127.0.0.3", server.http)
        .await
        .expect("the kernel accepts the TCP handshake");
    assert!(
        closed_within(&mut extra, Duration::from_secs(5)).await,
        "the 21st connection from one address is closed at once"
    );
    // Another client is served meanwhile.
    let health = burrow_tests::http::get(server.http, "/healthz").await;
    assert_eq!(health.status, 200);

    // Slowloris: a request line, then silence: closed by the header deadline.
    let mut slow = connect_from("127.0.0.4", server.http)
        .await
        .expect("connect");
    slow.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    assert!(
        closed_within(&mut slow, Duration::from_secs(6)).await,
        "a request whose headers never end is closed"
    );
    // The held silent connections were closed by the same deadline, freeing their places.
    for s in &mut held {
        assert!(closed_within(s, Duration::from_secs(6)).await);
    }
    drop(held);
    let mut again = connect_from("127.0.0.3", server.http)
        .await
        .expect("connect");
    again
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .await
        .expect("write");
    let mut answer = String::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), again.read_to_string(&mut answer)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer:?}");

    // A WebSocket that never says hello is closed by the hello deadline.
    let mut ws = WsClient::connect(&server.ws_url("quiet")).await;
    assert!(
        ws.closed_within(Duration::from_secs(5)).await,
        "no hello, no connection"
    );
}

/// Row 7: every frame counts against the rate limit (binary and oversized ones too), refusals
/// are not answered one for one, and a client that ignores them is disconnected.
#[tokio::test]
async fn every_frame_is_rate_limited() {
    let server = ServerProcess::start(&[
        "--rate-per-sec",
        "10",
        "--rate-burst",
        "50",
        "--max-message-bytes",
        "65536",
    ]);
    let (ws, _) = tokio_tungstenite::connect_async(server.ws_url("flood"))
        .await
        .expect("connect");
    let (mut tx, mut rx) = ws.split();
    let reader = tokio::spawn(async move {
        let (mut replies, mut limited, mut closed_code) = (0usize, 0usize, None);
        while let Ok(Some(msg)) = tokio::time::timeout(Duration::from_secs(5), rx.next()).await {
            match msg {
                Ok(Message::Text(t)) => {
                    replies += 1;
                    if let Ok(ServerMessage::Error { code, .. }) = serde_json::from_str(&t) {
                        limited += usize::from(code == ErrorCode::RateLimited);
                    }
                }
                Ok(Message::Close(frame)) => {
                    closed_code = frame.map(|f| u16::from(f.code));
                    break;
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        (replies, limited, closed_code)
    });
    // 1,000 binary frames, then 600 frames of 70 KB (over the size limit), as in the audit.
    let mut sent = 0;
    for _ in 0..1000 {
        if tx.send(Message::binary(vec![0u8; 16])).await.is_err() {
            break;
        }
        sent += 1;
    }
    let big = "z".repeat(70_000);
    for _ in 0..600 {
        if tx.send(Message::text(big.clone())).await.is_err() {
            break;
        }
        sent += 1;
    }
    let (replies, limited, closed_code) = reader.await.expect("reader");
    assert!(limited >= 1, "the client is told it is rate limited");
    assert!(
        replies <= 60,
        "{replies} replies to {sent} frames: refusals must not be answered one for one"
    );
    assert_eq!(
        closed_code,
        Some(1008),
        "a client that ignores the limit is closed"
    );
}

/// Row 11: a WebSocket from a foreign page's origin is refused, huge request headers are
/// refused, and every page response carries the security headers.
#[tokio::test]
async fn foreign_origins_and_huge_headers_are_refused_and_pages_carry_security_headers() {
    let server = ServerProcess::start(&[]);
    let url = server.ws_url("origin");

    let mut req = url.as_str().into_client_request().expect("request");
    req.headers_mut()
        .insert("Origin", "http://evil.example".parse().expect("header"));
    match tokio_tungstenite::connect_async(req).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => {
            assert_eq!(resp.status(), 403)
        }
        Ok(_) => panic!("a foreign origin opened the signaling socket"),
        Err(e) => panic!("expected 403, got {e}"),
    }
    // The page's own origin, and no Origin at all (the CLI), are fine.
    let mut own = url.as_str().into_client_request().expect("request");
    own.headers_mut().insert(
        "Origin",
        format!("http://{}", server.http).parse().expect("header"),
    );
    assert!(tokio_tungstenite::connect_async(own).await.is_ok());
    let (_cli, _) = WsClient::join(&url, None).await;

    // 400 KB of request headers.
    let mut s = TcpStream::connect(server.http).await.expect("connect");
    let filler = "a".repeat(8000);
    let mut req = String::from("GET / HTTP/1.1\r\nHost: x\r\n");
    for i in 0..50 {
        req.push_str(&format!("X-Filler-{i}: {filler}\r\n"));
    }
    req.push_str("\r\n");
    let _ = s.write_all(req.as_bytes()).await; // the server may close before reading it all
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 431"),
        "huge headers: {answer:?}"
    );
    assert!(!answer.starts_with("HTTP/1.1 200"));

    // The room link's QR code is drawn for this server's links only.
    let own = format!("http://{}/r/some-room", server.http)
        .replace(':', "%3A")
        .replace('/', "%2F");
    let qr = burrow_tests::http::get(server.http, &format!("/qr.svg?text={own}")).await;
    assert_eq!(qr.status, 200);
    assert!(
        qr.headers.contains("content-type: image/svg+xml"),
        "{}",
        qr.headers
    );
    let other = "https%3A%2F%2Fevil.example%2Fr%2Fsome-room";
    let qr = burrow_tests::http::get(server.http, &format!("/qr.svg?text={other}")).await;
    assert_eq!(qr.status, 400, "another site's room link is not drawn");

    for path in ["/", "/r/some-room", "/app.js"] {
        let resp = burrow_tests::http::get(server.http, path).await;
        assert_eq!(resp.status, 200, "{path}");
        let h = &resp.headers;
        assert!(h.contains("content-security-policy:"), "{path}: {h}");
        assert!(h.contains("frame-ancestors 'none'"), "{path}");
        assert!(h.contains("x-content-type-options: nosniff"), "{path}");
        assert!(h.contains("referrer-policy: no-referrer"), "{path}");
    }
}

/// A request sender on an HTTP/2 connection without TLS (h2c, prior knowledge).
type H2 = hyper::client::conn::http2::SendRequest<http_body_util::Empty<hyper::body::Bytes>>;

/// An h2c connection to `addr`: its sender, and the task driving it (finished once the server
/// closed it).
async fn h2c(addr: SocketAddr) -> (H2, tokio::task::JoinHandle<hyper::Result<()>>) {
    let stream = TcpStream::connect(addr).await.expect("connect");
    let (send, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .expect("h2c handshake (prior knowledge)");
    (send, tokio::spawn(conn))
}

/// The status of a GET for `url` on `send`'s connection (the body read to its end).
fn h2_status(send: &mut H2, url: String) -> impl std::future::Future<Output = u16> {
    use http_body_util::BodyExt;
    let req = hyper::Request::get(url)
        .body(http_body_util::Empty::new())
        .expect("request");
    let fut = send.send_request(req);
    async move {
        let resp = fut.await.expect("response");
        let code = resp.status().as_u16();
        let _ = resp.into_body().collect().await;
        code
    }
}

/// Over HTTP/2 (what browsers speak over TLS) the host comes in `:authority`, not `Host`: a site
/// origin must still get only its host-frame files, never the room page's API.
#[tokio::test]
async fn site_origins_get_only_their_files_over_http2_too() {
    let server = ServerProcess::start(&[]);
    let (mut send, _conn) = h2c(server.http).await;
    let site = format!(
        "0123456789abcdef0123456789abcdef.localhost:{}",
        server.http.port()
    );
    let mut status = |path: &str| h2_status(&mut send, format!("http://{site}{path}"));
    assert_eq!(status("/metrics").await, 404, "no metrics on a site origin");
    assert_eq!(status("/healthz").await, 404);
    assert_eq!(
        status("/r/some-room").await,
        404,
        "no room page on a site origin"
    );
    assert_eq!(
        status("/__burrow/host.html").await,
        200,
        "its own host frame"
    );
}

/// The hardening issue's low finding: HTTP/2 connections (h2c) escaped every deadline (idle
/// ones, 61 from one address, were still open after 70 s). A connection silent for
/// `--idle-timeout` is closed, an HTTP/1 keep-alive one alike; one in use stays open.
#[tokio::test]
async fn idle_http2_and_keep_alive_connections_are_closed() {
    let server = ServerProcess::start(&["--idle-timeout", "2s", "--ping-interval", "1s"]);
    let url = format!("http://127.0.0.1:{}/healthz", server.http.port());
    let health = |send: &mut H2| h2_status(send, url.clone());
    let (mut idle, idle_conn) = h2c(server.http).await;
    let (mut busy, busy_conn) = h2c(server.http).await;
    assert_eq!(health(&mut idle).await, 200);
    let mut keep_alive = TcpStream::connect(server.http).await.expect("connect");
    keep_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        .await
        .expect("write");
    let mut first = [0u8; 12];
    keep_alive.read_exact(&mut first).await.expect("an answer");
    assert_eq!(&first, b"HTTP/1.1 200");
    // The busy connection asks every half second for 5 s: it is never idle.
    for _ in 0..10 {
        assert_eq!(
            health(&mut busy).await,
            200,
            "a connection in use is served"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        idle_conn.is_finished(),
        "the idle h2c connection was closed by the server"
    );
    assert!(!busy_conn.is_finished(), "the busy one is still open");
    assert!(
        closed_within(&mut keep_alive, Duration::from_secs(3)).await,
        "an idle keep-alive connection is closed"
    );
}

/// The hardening issue's low finding: names kept bidi overrides and invisible characters, so
/// anyone could appear as "alice" (or as text read backwards). Every member is told the name
/// cleaned: what is shown is what it looks like.
#[tokio::test]
async fn names_reach_the_room_without_bidi_or_invisible_characters() {
    let server = ServerProcess::start(&[]);
    let url = server.ws_url("names");
    let (mut a, _) = WsClient::join(&url, Some("alice")).await;
    let (_b, _) = WsClient::join(&url, Some("\u{202E}al\u{200B}ice\u{2066}\u{FEFF}  x\n")).await;
    match a.recv().await {
        ServerMessage::PeerJoined { peer } => {
            assert_eq!(peer.name.as_deref(), Some("alice x"), "{peer:?}");
        }
        other => panic!("expected peer_joined, got {other:?}"),
    }
    let (_c, _) = WsClient::join(&url, Some("\u{200B}\u{202E}")).await;
    match a.recv().await {
        ServerMessage::PeerJoined { peer } => assert_eq!(peer.name, None, "nothing visible"),
        other => panic!("expected peer_joined, got {other:?}"),
    }
}

/// A server on loopback answers only to loopback names: a page elsewhere whose own name resolves
/// to 127.0.0.1 (DNS rebinding) would otherwise pass the Origin check, which compares the page's
/// origin with `Host`.
#[tokio::test]
async fn a_loopback_server_refuses_foreign_host_names() {
    let server = ServerProcess::start(&[]);
    let ask = |host: String| async move {
        let mut s = TcpStream::connect(server_addr(&host))
            .await
            .expect("connect");
        let req = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.expect("write");
        let mut answer = String::new();
        let _ = s.read_to_string(&mut answer).await;
        answer
    };
    let port = server.http.port();
    fn server_addr(host: &str) -> SocketAddr {
        let port = host.rsplit_once(':').map(|(_, p)| p).unwrap_or("80");
        format!("127.0.0.1:{port}").parse().expect("addr")
    }
    assert!(ask(format!("rebind.evil.example:{port}"))
        .await
        .starts_with("HTTP/1.1 421"));
    assert!(ask(format!("localhost:{port}"))
        .await
        .starts_with("HTTP/1.1 200"));
    assert!(ask(format!("127.0.0.1:{port}"))
        .await
        .starts_with("HTTP/1.1 200"));
}
