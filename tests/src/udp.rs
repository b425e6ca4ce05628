//! UDP services for the tests of UDP forwarding: an echo service, and dnsmasq (a real DNS
//! server) with a DNS query built and read here.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;

/// A UDP service that sends every datagram back to its sender.
pub struct Echo {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Datagrams it got.
    pub datagrams: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Echo {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts an echo service on loopback.
pub async fn echo() -> Echo {
    let socket = UdpSocket::bind("127.0.0.1:0").await.expect("bind udp");
    let addr = socket.local_addr().expect("addr");
    let datagrams = Arc::new(AtomicUsize::new(0));
    let count = datagrams.clone();
    let task = tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            count.fetch_add(1, Ordering::Relaxed);
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    Echo {
        addr,
        datagrams,
        task,
    }
}

/// dnsmasq on loopback, answering every name under `burrow.test` with [`DNS_ANSWER`] (and
/// nothing else: no upstream, no hosts file); killed when dropped.
pub struct Dns {
    /// Where it listens.
    pub addr: SocketAddr,
    _child: crate::KillOnDrop,
}

/// The address dnsmasq gives names under `burrow.test` (TEST-NET-1).
pub const DNS_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 53);

/// Starts dnsmasq (the setup script installs it) and waits until it answers.
pub async fn dnsmasq() -> Dns {
    let port = {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("a free udp port");
        s.local_addr().expect("addr").port()
    };
    let child = std::process::Command::new("dnsmasq")
        .args([
            "--keep-in-foreground",
            "--no-resolv",
            "--no-hosts",
            "--conf-file=/dev/null",
            "--listen-address=127.0.0.1",
            "--bind-interfaces",
            "--address=/burrow.test/192.0.2.53",
            "--pid-file=",
            "--log-facility=/dev/null",
            &format!("--port={port}"),
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("dnsmasq (apt-get install dnsmasq-base)");
    let dns = Dns {
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        _child: crate::KillOnDrop(child),
    };
    for _ in 0..50 {
        if resolve(dns.addr, "ready.burrow.test", 1).await == Some(DNS_ANSWER) {
            return dns;
        }
    }
    panic!("dnsmasq did not answer on {}", dns.addr);
}

/// A DNS query (id `id`, recursion desired) for the A record of `name`.
pub fn query(name: &str, id: u16) -> Vec<u8> {
    let mut q = Vec::new();
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.split('.') {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

/// The first A record of an answer to query `id`, if it is one (no error, an answer).
pub fn a_record(answer: &[u8], id: u16) -> Option<Ipv4Addr> {
    if answer.len() < 12 || answer[..2] != id.to_be_bytes() || answer[3] & 0x0f != 0 {
        return None;
    }
    if u16::from_be_bytes([answer[6], answer[7]]) == 0 {
        return None;
    }
    // Question: the name (labels to a zero), type and class; then the answer's name (a
    // pointer), type, class, TTL, length and the address.
    let mut i = 12;
    while *answer.get(i)? != 0 {
        i += 1 + *answer.get(i)? as usize;
    }
    i += 5;
    let rr = answer.get(i..i + 16)?;
    (rr[2..4] == [0, 1] && rr[10..12] == [0, 4])
        .then(|| Ipv4Addr::new(rr[12], rr[13], rr[14], rr[15]))
}

/// Asks `server` for `name`'s A record, once, waiting at most a second.
pub async fn resolve(server: SocketAddr, name: &str, id: u16) -> Option<Ipv4Addr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await.ok()?;
    socket.send_to(&query(name, id), server).await.ok()?;
    let mut buf = [0u8; 512];
    let (n, _) = tokio::time::timeout(Duration::from_secs(1), socket.recv_from(&mut buf))
        .await
        .ok()?
        .ok()?;
    a_record(&buf[..n], id)
}
