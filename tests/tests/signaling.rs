//! Black-box tests of `signal-server`: the real binary on port 0, WebSocket clients, a UDP socket.

use std::time::Duration;

use burrow_tests::server::ServerProcess;
use burrow_tests::ws::{peer_id, WsClient};
use signal_protocol::{ClientMessage, ErrorCode, PeerSignal, ServerMessage, PROTOCOL_VERSION};

fn offer(sdp: &str) -> PeerSignal {
    PeerSignal::Offer { sdp: sdp.into() }
}

/// The next error (room membership news on the way is skipped).
async fn expect_error(c: &mut WsClient, code: ErrorCode) {
    let next = loop {
        match c.recv().await {
            ServerMessage::PeerJoined { .. } | ServerMessage::PeerLeft { .. } => continue,
            other => break other,
        }
    };
    match next {
        ServerMessage::Error { code: got, message } => {
            assert_eq!(got, code, "error message: {message}");
            assert!(!message.is_empty());
        }
        other => panic!("expected error {code}, got {other:?}"),
    }
}

/// The connection still answers: an unknown peer gets its error (proves the socket is usable).
async fn assert_still_usable(c: &mut WsClient) {
    c.send_raw(r#"{"type":"no_such_thing"}"#).await;
    expect_error(c, ErrorCode::UnknownType).await;
}

#[tokio::test]
async fn signals_reach_only_the_addressed_peer_in_the_room() {
    let server = ServerProcess::start(&[]);
    let (mut a, wa) = WsClient::join(&server.ws_url("room1"), Some("alice")).await;
    let (mut b, wb) = WsClient::join(&server.ws_url("room1"), None).await;
    let (mut c, wc) = WsClient::join(&server.ws_url("room1"), None).await;
    let (mut other, _) = WsClient::join(&server.ws_url("room2"), None).await;
    let (ida, idb, idc) = (peer_id(&wa), peer_id(&wb), peer_id(&wc));

    // B's welcome lists A (with its name) and the STUN server.
    match &wb {
        ServerMessage::Welcome {
            peers,
            ice_servers,
            room,
            ..
        } => {
            assert_eq!(room, "room1");
            assert_eq!(peers.len(), 1);
            assert_eq!(peers[0].id, ida);
            assert_eq!(peers[0].name.as_deref(), Some("alice"));
            let url = &ice_servers[0].urls[0];
            assert_eq!(url, &format!("stun:127.0.0.1:{}", server.stun.port()));
        }
        other => panic!("{other:?}"),
    }
    // A learns of B, then C; B learns of C.
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { peer } if peer.id == idb));
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { peer } if peer.id == idc));
    assert!(matches!(b.recv().await, ServerMessage::PeerJoined { peer } if peer.id == idc));

    a.send(&ClientMessage::Signal {
        to: idb.clone(),
        data: offer("v=0 from a"),
    })
    .await;
    match b.recv().await {
        ServerMessage::Signal { from, data } => {
            assert_eq!(from, ida);
            assert_eq!(data, offer("v=0 from a"));
        }
        other => panic!("B expected the signal, got {other:?}"),
    }
    // Nobody else saw it.
    assert!(c.try_recv(Duration::from_millis(500)).await.is_none());
    assert!(other.try_recv(Duration::from_millis(200)).await.is_none());

    // A peer in another room cannot address room1's peers.
    other
        .send(&ClientMessage::Signal {
            to: ida.clone(),
            data: offer("intruder"),
        })
        .await;
    expect_error(&mut other, ErrorCode::UnknownPeer).await;
    assert!(a.try_recv(Duration::from_millis(500)).await.is_none());
}

#[tokio::test]
async fn bad_requests_get_error_codes_and_the_connection_survives() {
    let server =
        ServerProcess::start(&["--max-message-bytes", "1024", "--max-peers-per-room", "2"]);
    let (mut a, _) = WsClient::join(&server.ws_url("r"), None).await;

    // Unknown peer.
    a.send(&ClientMessage::Signal {
        to: "ghost".into(),
        data: PeerSignal::EndOfCandidates,
    })
    .await;
    expect_error(&mut a, ErrorCode::UnknownPeer).await;
    // Malformed JSON, then a well-formed message of the wrong shape.
    a.send_raw("{not json").await;
    expect_error(&mut a, ErrorCode::MalformedMessage).await;
    a.send_raw(r#"{"type":"signal","to":42}"#).await;
    expect_error(&mut a, ErrorCode::MalformedMessage).await;
    // Unknown type.
    assert_still_usable(&mut a).await;
    // A second hello.
    a.send(&ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        name: None,
        resume: None,
        kind: Default::default(),
    })
    .await;
    expect_error(&mut a, ErrorCode::AlreadyJoined).await;
    // Slightly oversized: refused, connection kept.
    let big = format!(
        r#"{{"type":"hello","version":1,"name":"{}"}}"#,
        "x".repeat(2000)
    );
    a.send_raw(&big).await;
    expect_error(&mut a, ErrorCode::MessageTooLarge).await;
    assert_still_usable(&mut a).await;

    // Wrong protocol version: refused, and a correct hello afterwards works.
    let mut old = WsClient::connect(&server.ws_url("r")).await;
    old.send(&ClientMessage::Hello {
        version: 0,
        name: None,
        resume: None,
        kind: Default::default(),
    })
    .await;
    expect_error(&mut old, ErrorCode::UnsupportedVersion).await;
    // A signal before joining.
    old.send(&ClientMessage::Signal {
        to: "x".into(),
        data: PeerSignal::EndOfCandidates,
    })
    .await;
    expect_error(&mut old, ErrorCode::NotJoined).await;
    old.send(&ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        name: None,
        resume: None,
        kind: Default::default(),
    })
    .await;
    assert!(matches!(old.recv().await, ServerMessage::Welcome { .. }));

    // Full room (2 peers: a and old): refused; usable; joins once someone leaves.
    let mut third = WsClient::connect(&server.ws_url("r")).await;
    let hello = ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        name: None,
        resume: None,
        kind: Default::default(),
    };
    third.send(&hello).await;
    expect_error(&mut third, ErrorCode::RoomFull).await;
    assert_still_usable(&mut third).await;
    old.send(&ClientMessage::Leave).await;
    drop(old);
    // a sees old leave; then third may join.
    loop {
        if let ServerMessage::PeerLeft { .. } = a.recv().await {
            break;
        }
    }
    third.send(&hello).await;
    assert!(matches!(third.recv().await, ServerMessage::Welcome { .. }));

    // Bad room ids: refused on hello, connection usable.
    for bad in ["bad.room", &"a".repeat(65)] {
        let mut c = WsClient::connect(&server.ws_url(bad)).await;
        c.send(&hello).await;
        expect_error(&mut c, ErrorCode::InvalidRoomId).await;
        assert_still_usable(&mut c).await;
    }

    // Far oversized: refused with an error, and the server may close.
    let huge = "y".repeat(64 * 1024);
    a.send_raw(&huge).await;
    expect_error(&mut a, ErrorCode::MessageTooLarge).await;
    assert!(a.closed_within(Duration::from_secs(10)).await);
    // The server is fine: a new peer joins.
    let (_fresh, _) = WsClient::join(&server.ws_url("r2"), None).await;
}

/// A socket closed without `leave` (a crash, a lost network) is announced once the grace period
/// for a comeback is over.
#[tokio::test]
async fn closing_a_socket_announces_peer_left() {
    let server = ServerProcess::start(&["--resume-grace", "1s"]);
    let (mut a, _) = WsClient::join(&server.ws_url("leave"), None).await;
    let (b, wb) = WsClient::join(&server.ws_url("leave"), None).await;
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));
    drop(b);
    match a.recv().await {
        ServerMessage::PeerLeft { peer_id: left } => assert_eq!(left, peer_id(&wb)),
        other => panic!("expected peer_left, got {other:?}"),
    }
}

#[tokio::test]
async fn a_silent_peer_is_announced_within_the_keepalive_window() {
    // Plus the grace period a lost peer gets to come back (1 s here).
    let server = ServerProcess::start(&[
        "--ping-interval",
        "200ms",
        "--ping-timeout",
        "1s",
        "--resume-grace",
        "1s",
    ]);
    let (mut a, _) = WsClient::join(&server.ws_url("silent"), None).await;
    // B joins and then never reads again, so it never answers the server's pings.
    let (_b, wb) = WsClient::join(&server.ws_url("silent"), None).await;
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));
    // A keeps reading (and so answering pings) and is told B left, while B's socket is open.
    match a.recv().await {
        ServerMessage::PeerLeft { peer_id: left } => assert_eq!(left, peer_id(&wb)),
        other => panic!("expected peer_left, got {other:?}"),
    }
}

#[tokio::test]
async fn stun_binding_reports_the_senders_address() {
    use stun::agent::TransactionId;
    use stun::fingerprint::FINGERPRINT;
    use stun::message::{Getter, Message, BINDING_REQUEST, BINDING_SUCCESS};
    use stun::xoraddr::XorMappedAddress;

    let server = ServerProcess::start(&[]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let me = sock.local_addr().unwrap();

    // Garbage first: no answer, no crash.
    sock.send_to(b"\x00\x01garbage that is not stun", server.stun)
        .await
        .unwrap();
    let mut buf = [0u8; 1500];
    let silent = tokio::time::timeout(Duration::from_millis(500), sock.recv_from(&mut buf)).await;
    assert!(silent.is_err(), "malformed datagram got a response");

    let mut req = Message::new();
    req.build(&[
        Box::new(TransactionId::new()),
        Box::new(BINDING_REQUEST),
        Box::new(FINGERPRINT),
    ])
    .unwrap();
    sock.send_to(&req.raw, server.stun).await.unwrap();
    let (n, from) = tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
        .await
        .expect("a STUN response")
        .unwrap();
    assert_eq!(from, server.stun);
    let mut resp = Message::new();
    resp.raw = buf[..n].to_vec();
    resp.decode().expect("a valid STUN message");
    assert_eq!(resp.typ, BINDING_SUCCESS);
    assert_eq!(resp.transaction_id, req.transaction_id);
    FINGERPRINT
        .check(&resp)
        .expect("FINGERPRINT present and right");
    let mut mapped = XorMappedAddress::default();
    mapped.get_from(&resp).expect("XOR-MAPPED-ADDRESS");
    assert_eq!(mapped.ip, me.ip());
    assert_eq!(mapped.port, me.port());
}

#[tokio::test]
async fn the_page_and_health_are_served() {
    use burrow_tests::http::get;
    let server = ServerProcess::start(&[]);
    for path in ["/", "/r/some-room_1"] {
        let r = get(server.http, path).await;
        assert_eq!(r.status, 200, "{path}");
        assert!(r.headers.contains("content-type: text/html"), "{path}");
        assert!(String::from_utf8_lossy(&r.body).contains("Burrow"));
    }
    let bad = get(server.http, "/r/bad.room").await;
    assert_eq!(bad.status, 400);
    let new = get(server.http, "/new").await;
    assert!(new.status == 303 || new.status == 307, "{}", new.status);
    let location = new
        .headers
        .lines()
        .find_map(|l| l.strip_prefix("location: "))
        .expect("redirect location")
        .to_string();
    let id = location.strip_prefix("/r/").expect("/r/{id}");
    assert!(id.len() >= 16, "room id {id} has at least 96 bits");
    let health = get(server.http, "/healthz").await;
    assert_eq!(health.status, 200);
    assert!(String::from_utf8_lossy(&health.body).contains("\"ok\""));
}

#[tokio::test]
async fn on_sigterm_the_server_tells_clients_to_come_back() {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    let mut server = ServerProcess::start(&[]);
    let (ws, _) = tokio_tungstenite::connect_async(server.ws_url("deploy"))
        .await
        .expect("connect");
    let (mut tx, mut rx) = ws.split();
    use futures_util::SinkExt;
    let hello = serde_json::to_string(&ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        name: None,
        resume: None,
        kind: Default::default(),
    })
    .expect("json");
    tx.send(Message::text(hello)).await.expect("hello");
    assert!(
        matches!(rx.next().await, Some(Ok(Message::Text(_)))),
        "welcome"
    );
    let status = tokio::task::spawn_blocking(move || {
        let status = server.terminate();
        (server, status)
    });
    let mut code = None;
    while let Ok(Some(Ok(msg))) = tokio::time::timeout(Duration::from_secs(10), rx.next()).await {
        if let Message::Close(frame) = msg {
            code = frame.map(|f| u16::from(f.code));
            break;
        }
    }
    assert_eq!(
        code,
        Some(1012),
        "close code 1012: service restart, reconnect"
    );
    let (_server, status) = status.await.expect("join");
    assert!(
        status.success(),
        "the server stops cleanly on SIGTERM: {status}"
    );
}

#[tokio::test]
async fn several_external_turn_servers_each_get_their_own_credentials() {
    use base64::Engine;
    let server = ServerProcess::start(&[
        "--external-turn",
        "turn:turn1.example.org:3478",
        "--external-turn-secret",
        "first-secret",
        "--external-turn",
        // One box reached over UDP and over TLS on 443: one entry, one credential.
        "turn:turn2.example.org:3478 turns:turn2.example.org:443?transport=tcp",
        "--external-turn-secret",
        "second-secret",
    ]);
    let (_c, welcome) = WsClient::join(&server.ws_url("external"), None).await;
    let ServerMessage::Welcome { ice_servers, .. } = welcome else {
        panic!("expected welcome");
    };
    for (url, secret) in [
        ("turn:turn1.example.org:3478", "first-secret"),
        ("turn:turn2.example.org:3478", "second-secret"),
    ] {
        let s = ice_servers
            .iter()
            .find(|s| s.urls.iter().any(|u| u == url))
            .unwrap_or_else(|| panic!("{url} listed: {ice_servers:?}"));
        let user = s.username.clone().expect("username");
        let key =
            ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, secret.as_bytes());
        let want = base64::engine::general_purpose::STANDARD
            .encode(ring::hmac::sign(&key, user.as_bytes()));
        assert_eq!(s.credential.as_deref(), Some(want.as_str()), "{url}");
    }
    let second = ice_servers
        .iter()
        .find(|s| s.urls.iter().any(|u| u == "turn:turn2.example.org:3478"))
        .expect("the second box");
    assert_eq!(
        second.urls,
        [
            "turn:turn2.example.org:3478",
            "turns:turn2.example.org:443?transport=tcp"
        ],
        "both of its URLs, under one credential"
    );
}
