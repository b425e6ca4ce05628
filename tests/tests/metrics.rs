//! `/metrics` is Prometheus text, and its counters move with what a client did.

use std::collections::HashMap;
use std::time::Duration;

use burrow_tests::server::ServerProcess;
use burrow_tests::ws::WsClient;
use signal_protocol::{ClientMessage, ErrorCode, PeerSignal, ServerMessage};

/// Parses the text exposition strictly enough to catch a broken one: every line is a comment
/// (`# HELP`, `# TYPE`, `# UNIT`, `# EOF`) or `name{labels} value` with a numeric value.
fn parse(text: &str) -> HashMap<String, f64> {
    let mut samples = HashMap::new();
    assert!(
        text.ends_with("# EOF\n"),
        "OpenMetrics text ends with # EOF"
    );
    for line in text.lines() {
        if let Some(comment) = line.strip_prefix("# ") {
            let kind = comment.split_whitespace().next().unwrap_or("");
            assert!(["HELP", "TYPE", "UNIT", "EOF"].contains(&kind), "{line}");
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("name value");
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
        let name = series.split('{').next().unwrap_or("");
        assert!(
            name.starts_with("burrow_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        samples.insert(series.to_string(), value);
    }
    samples
}

async fn scrape(addr: std::net::SocketAddr) -> HashMap<String, f64> {
    let resp = burrow_tests::http::get(addr, "/metrics").await;
    assert_eq!(resp.status, 200);
    parse(&String::from_utf8(resp.body).expect("utf-8"))
}

#[tokio::test]
async fn metrics_parse_and_move_with_what_clients_do() {
    let server = ServerProcess::start(&["--rate-burst", "5", "--rate-per-sec", "1"]);
    let before = scrape(server.http).await;
    assert_eq!(before["burrow_peers"], 0.0);
    assert_eq!(before["burrow_joins_total"], 0.0);

    let url = server.ws_url("metrics");
    let (mut a, _) = WsClient::join(&url, None).await;
    let (mut b, wb) = WsClient::join(&url, None).await;
    let b_id = match wb {
        ServerMessage::Welcome { peer_id, .. } => peer_id,
        other => panic!("{other:?}"),
    };
    a.send(&ClientMessage::Signal {
        to: b_id,
        data: PeerSignal::EndOfCandidates,
    })
    .await;
    a.send(&ClientMessage::Signal {
        to: "ghost".into(),
        data: PeerSignal::EndOfCandidates,
    })
    .await;
    // Wait for a's replies: peer_joined, then the unknown_peer error.
    loop {
        if let ServerMessage::Error { code, .. } = a.recv().await {
            assert_eq!(code, ErrorCode::UnknownPeer);
            break;
        }
    }
    let during = scrape(server.http).await;
    assert_eq!(during["burrow_rooms"], 1.0);
    assert_eq!(during["burrow_peers"], 2.0);
    assert_eq!(during["burrow_joins_total"], 2.0);
    assert_eq!(during["burrow_signals_relayed_total"], 1.0);
    assert_eq!(during["burrow_errors_total{code=\"unknown_peer\"}"], 1.0);

    // Over the rate: refusals are counted.
    for _ in 0..10 {
        a.send_raw("{}").await;
    }
    b.send(&ClientMessage::Leave).await;
    drop(b);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let after = scrape(server.http).await;
        if after["burrow_leaves_total"] >= 1.0 && after["burrow_rate_limited_frames_total"] >= 1.0 {
            assert_eq!(after["burrow_peers"], 1.0);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{after:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn stun_and_turn_are_counted() {
    use stun::agent::TransactionId;
    use stun::fingerprint::FINGERPRINT;
    use stun::message::{Message, BINDING_REQUEST};
    let server = ServerProcess::start(&[]);
    let sock = tokio::net::UdpSocket::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut req = Message::new();
    req.build(&[
        Box::new(TransactionId::new()),
        Box::new(BINDING_REQUEST),
        Box::new(FINGERPRINT),
    ])
    .expect("binding request");
    let mut buf = [0u8; 1500];
    for _ in 0..3 {
        sock.send_to(&req.raw, server.stun).await.expect("send");
        tokio::time::timeout(Duration::from_secs(10), sock.recv_from(&mut buf))
            .await
            .expect("a STUN answer")
            .expect("recv");
    }
    let samples = scrape(server.http).await;
    assert_eq!(samples["burrow_stun_requests_total"], 3.0);
    assert_eq!(samples["burrow_turn_allocations"], 0.0);
    assert_eq!(samples["burrow_turn_relayed_bytes_total"], 0.0);
}

#[tokio::test]
async fn metrics_can_live_on_their_own_address() {
    let server = ServerProcess::start(&["--metrics-listen", "127.0.0.1:0"]);
    // Not on the public address…
    let public = burrow_tests::http::get(server.http, "/metrics").await;
    assert_ne!(public.status, 200);
    // …but on the operator's.
    let addr = server
        .metrics
        .expect("the server printed its metrics address");
    let samples = scrape(addr).await;
    assert!(samples.contains_key("burrow_connections"));
}
