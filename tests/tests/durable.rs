//! Durable sessions on loopback: a lost connection keeps its place in the room, a restarted
//! server gets its room back, and `burrow` keeps its links through it all.

use std::time::Duration;

use burrow_tests::burrow::Burrow;
use burrow_tests::server::ServerProcess;
use burrow_tests::ws::{peer_id, WsClient};
use signal_protocol::{ClientMessage, PeerSignal, Resume, ServerMessage, PROTOCOL_VERSION};

/// A fresh path for a resume secret (the server creates the file).
fn secret_path(tag: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!("burrow-resume-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn token(welcome: &ServerMessage) -> String {
    match welcome {
        ServerMessage::Welcome { resume_token, .. } => resume_token.clone(),
        other => panic!("expected welcome, got {other:?}"),
    }
}

fn resumed(welcome: &ServerMessage) -> bool {
    matches!(welcome, ServerMessage::Welcome { resumed: true, .. })
}

async fn rejoin(url: &str, id: &str, token: &str) -> (WsClient, ServerMessage) {
    let mut c = WsClient::connect(url).await;
    c.send(&ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        name: None,
        resume: Some(Resume {
            peer_id: id.to_string(),
            token: token.to_string(),
        }),
        kind: Default::default(),
    })
    .await;
    let welcome = c.recv().await;
    (c, welcome)
}

#[tokio::test]
async fn a_lost_connection_keeps_its_place_for_the_grace_period() {
    let secret = secret_path("grace");
    let server = ServerProcess::start(&[
        "--resume-grace",
        "2s",
        "--resume-secret-file",
        secret.to_str().unwrap(),
    ]);
    let url = server.ws_url("durable");
    let (mut a, wa) = WsClient::join(&url, Some("a")).await;
    let (b, wb) = WsClient::join(&url, Some("b")).await;
    let (ida, idb) = (peer_id(&wa), peer_id(&wb));
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));

    // b's connection dies without a leave; a signals it meanwhile.
    drop(b);
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.send(&ClientMessage::Signal {
        to: idb.clone(),
        data: PeerSignal::EndOfCandidates,
    })
    .await;
    assert!(
        a.try_recv(Duration::from_millis(500)).await.is_none(),
        "a is told nothing: b is away, not gone, and the signal was kept for it"
    );

    // A forged token gets a fresh id (announced as a newcomer), not b's place.
    let (mut thief, wt) = rejoin(&url, &idb, "forged").await;
    assert_ne!(peer_id(&wt), idb);
    assert!(!resumed(&wt));
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { .. }));

    // b comes back with its token: same id, the signal it missed, and nobody hears a thing.
    let (mut b, wb2) = rejoin(&url, &idb, &token(&wb)).await;
    assert_eq!(peer_id(&wb2), idb);
    assert!(resumed(&wb2));
    match b.recv().await {
        ServerMessage::Signal { from, data } => {
            assert_eq!(from, ida);
            assert_eq!(data, PeerSignal::EndOfCandidates);
        }
        other => panic!("expected the kept signal, got {other:?}"),
    }
    assert!(a.try_recv(Duration::from_millis(300)).await.is_none());
    let metrics = burrow_tests::http::get(server.http, "/metrics").await.body;
    let metrics = String::from_utf8_lossy(&metrics);
    for line in ["burrow_resumes_total 1", "burrow_reconnects_total 1"] {
        assert!(metrics.lines().any(|l| l == line), "{line} in {metrics}");
    }

    // Gone for longer than the grace period: the room hears b left.
    drop(b);
    match a.try_recv(Duration::from_secs(5)).await {
        Some(ServerMessage::PeerLeft { peer_id }) => assert_eq!(peer_id, idb),
        other => panic!("expected b's departure, got {other:?}"),
    }
    // A client that says `leave` is announced at once.
    thief.send(&ClientMessage::Leave).await;
    assert!(matches!(
        a.try_recv(Duration::from_secs(1)).await,
        Some(ServerMessage::PeerLeft { .. })
    ));
    let _ = std::fs::remove_file(&secret);
}

#[tokio::test]
async fn a_restarted_server_gives_ids_back() {
    let secret = secret_path("restart");
    let port = burrow_tests::free_port();
    let flags = ["--resume-secret-file", secret.to_str().unwrap()];
    let mut server = ServerProcess::start_at(port, &flags);
    let url = server.ws_url("restart");
    let (_a, wa) = WsClient::join(&url, None).await;
    server.kill();
    let server = ServerProcess::start_at(port, &flags);
    assert_eq!(server.ws_url("restart"), url);
    // The new process knows nothing of the room, but the token (same secret) proves the id.
    let (_a2, wa2) = rejoin(&url, &peer_id(&wa), &token(&wa)).await;
    assert_eq!(peer_id(&wa2), peer_id(&wa));
    assert!(
        !resumed(&wa2),
        "the room was empty: a is announced as joined"
    );
    let _ = std::fs::remove_file(&secret);
}

/// A user's view: two `burrow join` peers linked directly; the server crashes and comes back on
/// the same address. Chat keeps flowing during the outage, both are back in the room with the
/// same ids afterwards (nobody left, nobody re-joined), and a newcomer reaches both.
#[test]
fn burrow_keeps_its_link_through_a_server_restart() {
    let port = burrow_tests::free_port();
    let mut server = ServerProcess::start_at(port, &[]);
    let link = server.room_link("keep");
    let mut a = Burrow::start(&["--name", "alice", "join", &link]);
    let ida = a.peer_id();
    let mut b = Burrow::start(&["--name", "bob", "join", &link]);
    let idb = b.peer_id();
    a.expect_event("connected", &[("peer", &idb)]);
    b.expect_event("connected", &[("peer", &ida)]);

    server.kill();
    a.expect_event("server_lost", &[]);
    b.expect_event("server_lost", &[]);
    a.say("said while the server is down");
    let got = b.expect_event("chat", &[("from", &ida)]);
    assert_eq!(got["text"], "said while the server is down");

    let _server = ServerProcess::start_at(port, &[]);
    let back = a.expect_event("server_back", &[]);
    assert!(back["after_ms"].as_u64().is_some(), "{back}");
    b.expect_event("server_back", &[]);
    b.say("and after");
    let got = a.expect_event("chat", &[("from", &idb)]);
    assert_eq!(got["text"], "and after");

    let mut c = Burrow::start(&["join", &link]);
    let idc = c.peer_id();
    c.expect_event("connected", &[("peer", &ida)]);
    c.expect_event("connected", &[("peer", &idb)]);
    a.expect_event("connected", &[("peer", &idc)]);
    a.drain();
    b.drain();
    assert!(
        !a.has_seen("peer_left") && !b.has_seen("peer_left"),
        "nobody saw a departure"
    );
    assert!(a.try_exit().is_none() && b.try_exit().is_none());
}
