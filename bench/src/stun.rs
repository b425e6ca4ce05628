//! `stun`: STUN Binding responses per second from one client socket, against the embedded server
//! and, when a `turnserver` binary (Debian's coturn) is found, against coturn in the same run.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use stun::agent::TransactionId;
use stun::message::{Message, BINDING_REQUEST};
use tokio::net::UdpSocket;

use crate::report::Figure;

/// Binding responses per second with up to `window` requests in flight, for `time`.
async fn rate(target: SocketAddr, time: Duration) -> Option<f64> {
    let sock = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    let window = 64;
    let mut in_flight: HashMap<[u8; 12], Instant> = HashMap::new();
    let mut answered = 0u64;
    let start = Instant::now();
    let mut buf = [0u8; 1500];
    let new_request = || {
        let mut m = Message::new();
        m.build(&[Box::new(TransactionId::new()), Box::new(BINDING_REQUEST)])
            .ok()?;
        Some(m)
    };
    while start.elapsed() < time {
        while in_flight.len() < window {
            let m = new_request()?;
            let _ = sock.send_to(&m.raw, target).await;
            in_flight.insert(m.transaction_id.0, Instant::now());
        }
        match tokio::time::timeout(Duration::from_millis(100), sock.recv_from(&mut buf)).await {
            Ok(Ok((n, _))) if n >= 20 => {
                let mut id = [0u8; 12];
                id.copy_from_slice(&buf[8..20]);
                if in_flight.remove(&id).is_some() {
                    answered += 1;
                }
            }
            _ => {
                // Lost datagrams: forget requests older than a second.
                in_flight.retain(|_, t| t.elapsed() < Duration::from_secs(1));
            }
        }
    }
    Some(answered as f64 / start.elapsed().as_secs_f64())
}

/// Runs the bench.
pub async fn run(time: Duration, out: &mut Vec<Figure>) {
    let ours = match crate::signaling::Server::start(&[]) {
        Ok(server) => match server.stun.parse() {
            Ok(addr) => rate(addr, time).await,
            Err(_) => None,
        },
        Err(_) => None,
    };
    let coturn = coturn_rate(time).await;
    let mut f = Figure::new("stun", "Binding responses/s, one client", ours, "resp/s");
    f = match coturn {
        Some(v) => f.against("coturn (turnserver), same run", Some(v)),
        None => f.note("no turnserver binary found (apt-get install coturn): no reference"),
    };
    f.emit(out);
}

async fn coturn_rate(time: Duration) -> Option<f64> {
    let which = Command::new("sh")
        .args(["-c", "command -v turnserver"])
        .output()
        .ok()?;
    if !which.status.success() {
        return None;
    }
    let port = std::net::UdpSocket::bind("127.0.0.1:0")
        .ok()?
        .local_addr()
        .ok()?
        .port();
    let mut child = Command::new("turnserver")
        .args([
            "-n",
            "--stun-only",
            "--no-tls",
            "--no-dtls",
            "--no-cli",
            "--listening-ip",
            "127.0.0.1",
        ])
        .args([
            "--listening-port",
            &port.to_string(),
            "--log-file",
            "stdout",
            "--simple-log",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    let r = rate(SocketAddr::from(([127, 0, 0, 1], port)), time).await;
    let _ = child.kill();
    let _ = child.wait();
    r
}
