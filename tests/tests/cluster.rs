//! Two server instances sharing rooms through a real `redis-server` (started here, on
//! loopback): peers on different instances see each other, signal, connect peer to peer, chat
//! and send a file; room limits hold across both; a dead instance's peers are announced as left.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use burrow_tests::burrow::{random_file, sha256_file, Burrow};
use burrow_tests::server::ServerProcess;
use burrow_tests::ws::{peer_id, WsClient};
use signal_protocol::{ClientMessage, ErrorCode, PeerSignal, ServerMessage, PROTOCOL_VERSION};

/// A `redis-server` on a free loopback port, killed when dropped.
struct Redis {
    child: std::process::Child,
    url: String,
}

impl Redis {
    fn start() -> Option<Redis> {
        let port = burrow_tests::free_port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .ok()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(Redis {
            child,
            url: format!("redis://127.0.0.1:{port}"),
        })
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn redis_or_skip(test: &str) -> Option<Redis> {
    let redis = Redis::start();
    if redis.is_none() {
        burrow_tests::skip(
            test,
            "redis-server is not installed (scripts/setup.sh test installs it)",
        );
    }
    redis
}

fn instance(redis: &Redis, extra: &[&str]) -> ServerProcess {
    let mut args = vec!["--redis", redis.url.as_str(), "--redis-instance-ttl", "2s"];
    args.extend_from_slice(extra);
    ServerProcess::start(&args)
}

#[tokio::test]
async fn two_instances_share_rooms_limits_and_departures() {
    let Some(redis) = redis_or_skip("two_instances_share_rooms_limits_and_departures") else {
        return;
    };
    let one = instance(&redis, &["--max-peers-per-room", "3"]);
    let two = instance(&redis, &["--max-peers-per-room", "3"]);

    let (mut a, wa) = WsClient::join(&one.ws_url("shared"), Some("a")).await;
    let ida = peer_id(&wa);
    let (mut b, wb) = WsClient::join(&two.ws_url("shared"), Some("b")).await;
    let idb = peer_id(&wb);
    match &wb {
        ServerMessage::Welcome { peers, .. } => {
            assert!(
                peers.iter().any(|p| p.id == ida),
                "b is told of a, on the other instance"
            );
        }
        _ => unreachable!(),
    }
    match a.recv().await {
        ServerMessage::PeerJoined { peer } => assert_eq!(peer.id, idb),
        other => panic!("expected peer_joined, got {other:?}"),
    }

    // Signals cross instances, to the addressee only.
    a.send(&ClientMessage::Signal {
        to: idb.clone(),
        data: PeerSignal::Offer {
            sdp: "from-a".into(),
        },
    })
    .await;
    match b.recv().await {
        ServerMessage::Signal { from, data } => {
            assert_eq!(from, ida);
            assert!(matches!(data, PeerSignal::Offer { sdp } if sdp == "from-a"));
        }
        other => panic!("expected a signal, got {other:?}"),
    }
    b.send(&ClientMessage::Signal {
        to: ida.clone(),
        data: PeerSignal::EndOfCandidates,
    })
    .await;
    assert!(matches!(a.recv().await, ServerMessage::Signal { from, .. } if from == idb));

    // The room limit (3) holds across both instances.
    let (_c, wc) = WsClient::join(&one.ws_url("shared"), None).await;
    let idc = peer_id(&wc);
    let mut d = WsClient::connect(&two.ws_url("shared")).await;
    d.send(&ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        name: None,
        resume: None,
        kind: Default::default(),
    })
    .await;
    match d.recv().await {
        ServerMessage::Error { code, .. } => assert_eq!(code, ErrorCode::RoomFull),
        other => panic!("expected room_full, got {other:?}"),
    }

    // /healthz says Redis is reachable.
    let health = burrow_tests::http::get(two.http, "/healthz").await;
    let body = String::from_utf8_lossy(&health.body).to_string();
    assert!(body.contains("\"redis\":\"ok\""), "{body}");

    // A clean departure on one instance is announced on the other.
    b.send(&ClientMessage::Leave).await;
    drop(b);
    loop {
        match a.recv().await {
            ServerMessage::PeerLeft { peer_id } if peer_id == idb => break,
            ServerMessage::PeerJoined { .. } => continue,
            other => panic!("expected b's departure, got {other:?}"),
        }
    }

    // An instance dies (no goodbye): its peers are announced as left once its liveness lapses.
    let (_e, we) = WsClient::join(&two.ws_url("shared"), None).await;
    let ide = peer_id(&we);
    assert!(matches!(a.recv().await, ServerMessage::PeerJoined { peer } if peer.id == ide));
    drop(two); // SIGKILL
    let left = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            if let ServerMessage::PeerLeft { peer_id } = a.recv().await {
                return peer_id;
            }
        }
    })
    .await
    .expect("the dead instance's peer is announced as left");
    assert_eq!(left, ide);
    // The room has room again: a newcomer on the live instance joins and sees a and c.
    let (_f, wf) = WsClient::join(&one.ws_url("shared"), None).await;
    match wf {
        ServerMessage::Welcome { peers, .. } => {
            let mut ids: Vec<_> = peers.into_iter().map(|p| p.id).collect();
            ids.sort();
            let mut want = vec![ida, idc];
            want.sort();
            assert_eq!(ids, want);
        }
        other => panic!("expected welcome, got {other:?}"),
    }
}

fn tempdir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("burrow-cluster-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

#[test]
fn peers_on_two_instances_connect_chat_and_send_a_file() {
    let Some(redis) = redis_or_skip("peers_on_two_instances_connect_chat_and_send_a_file") else {
        return;
    };
    let one = instance(&redis, &[]);
    let two = instance(&redis, &[]);
    let dir = tempdir("files");
    let inbox = dir.join("inbox");
    let source = dir.join("across.bin");
    let want = random_file(&source, 4 * 1024 * 1024);

    let mut a = Burrow::start(&["--name", "alice", "join", &one.room_link("across")]);
    let ida = a.peer_id();
    let mut b = Burrow::start(&[
        "join",
        "--accept",
        inbox.to_str().expect("utf-8"),
        &two.room_link("across"),
    ]);
    let idb = b.peer_id();
    a.expect_event("connected", &[("peer", &idb)]);
    b.expect_event("connected", &[("peer", &ida)]);
    a.say("hello from instance one");
    let got = b.expect_event("chat", &[("from", &ida)]);
    assert_eq!(got["text"], "hello from instance one");

    let mut sender = Burrow::start(&[
        "send",
        source.to_str().expect("utf-8"),
        &one.room_link("across"),
    ]);
    let sent = sender.expect_event("file_sent", &[("to", &idb)]);
    assert_eq!(sent["sha256"], want.as_str());
    let got = b.expect_event("file_received", &[]);
    assert_eq!(got["sha256"], want.as_str());
    let saved = PathBuf::from(got["path"].as_str().expect("path"));
    assert_eq!(sha256_file(&saved), want);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A load balancer in miniature: each connection goes to the first backend that accepts it.
async fn balance(listener: tokio::net::TcpListener, backends: Vec<SocketAddr>) {
    loop {
        let Ok((mut client, _)) = listener.accept().await else {
            return;
        };
        let backends = backends.clone();
        tokio::spawn(async move {
            for backend in backends {
                let connect = tokio::net::TcpStream::connect(backend);
                if let Ok(Ok(mut server)) =
                    tokio::time::timeout(Duration::from_secs(1), connect).await
                {
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    return;
                }
            }
        });
    }
}

/// Behind a load balancer, a peer's instance dies: it reconnects through the balancer to the
/// other instance and resumes there with its token (the secret is shared through Redis). The
/// room sees nothing: no departure (not even once the dead instance's peers are swept), and the
/// link to the peer on the other instance carries on.
#[test]
fn a_peer_whose_instance_dies_resumes_on_another() {
    let Some(redis) = redis_or_skip("a_peer_whose_instance_dies_resumes_on_another") else {
        return;
    };
    let one = instance(&redis, &[]);
    let two = instance(&redis, &[]);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let lb = listener.local_addr().expect("addr");
    rt.spawn(balance(listener, vec![one.http, two.http]));

    let mut a = Burrow::start(&["join", &format!("http://{lb}/r/moving")]);
    let ida = a.peer_id();
    let mut b = Burrow::start(&["join", &two.room_link("moving")]);
    let idb = b.peer_id();
    a.expect_event("connected", &[("peer", &idb)]);
    b.expect_event("connected", &[("peer", &ida)]);

    drop(one); // SIGKILL: a's instance is gone
    a.expect_event("server_lost", &[]);
    let back = a.expect_event("server_back", &[]);
    assert_eq!(back["resumed"], true, "a took its place back: {back}");
    a.say("from the other instance");
    assert_eq!(
        b.expect_event("chat", &[("from", &ida)])["text"],
        "from the other instance"
    );
    // Past the dead instance's liveness (2 s) and a sweep: a is not removed.
    std::thread::sleep(Duration::from_secs(5));
    let mut c = Burrow::start(&["join", &two.room_link("moving")]);
    let idc = c.peer_id();
    c.expect_event("connected", &[("peer", &ida)]);
    c.expect_event("connected", &[("peer", &idb)]);
    a.expect_event("connected", &[("peer", &idc)]);
    b.drain();
    assert!(!b.has_seen("peer_left"), "b saw nobody leave: {:?}", b.seen);
    b.say("still here");
    assert_eq!(
        a.expect_event("chat", &[("from", &idb)])["text"],
        "still here"
    );
    drop(rt);
}
