//! UDP services through the tunnel (`burrow expose --service echo=udp:…`, `burrow forward
//! --service echo`) beside the echo service reached directly and beside rathole's UDP
//! forwarding, in the same run on loopback, with 1,200-byte datagrams: the round trip one at a
//! time, and the datagrams echoed a second with 256 in flight, with the loss. Every datagram is
//! checked byte for byte; a lost one is counted, never resent.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::net::UdpSocket;

use crate::procs::{Peer, Proc};
use crate::report::{quantile, Figure};

const SIZE: usize = 1200;
const ROUND_TRIPS: u32 = 1000;
const BURST: u32 = 20_000;
const IN_FLIGHT: u32 = 256;

fn datagram(i: u32) -> Vec<u8> {
    let mut d = i.to_be_bytes().to_vec();
    d.extend((4..SIZE as u32).map(|j| (i.wrapping_mul(131) ^ j) as u8));
    d
}

async fn echo() -> anyhow::Result<SocketAddr> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    let addr = socket.local_addr()?;
    tokio::spawn(async move {
        let mut buf = vec![0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    Ok(addr)
}

async fn client(to: SocketAddr) -> anyhow::Result<UdpSocket> {
    let socket = UdpSocket::bind("127.0.0.1:0").await?;
    // The answers come in bursts: room for them all.
    let _ = socket2::SockRef::from(&socket).set_recv_buffer_size(8 << 20);
    socket.connect(to).await?;
    Ok(socket)
}

/// What one target did.
#[derive(Default)]
struct Row {
    rtt_p50_ms: Option<f64>,
    rtt_p99_ms: Option<f64>,
    per_sec: Option<f64>,
    loss_pct: Option<f64>,
}

async fn measure(to: SocketAddr) -> anyhow::Result<Row> {
    let s = client(to).await?;
    let mut buf = vec![0u8; 65536];
    // Warm up: the session opens on the first datagram.
    let mut warm = false;
    for _ in 0..50 {
        s.send(&datagram(u32::MAX)).await?;
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(200), s.recv(&mut buf)).await
        {
            if buf[..n] == datagram(u32::MAX)[..] {
                warm = true;
                break;
            }
        }
    }
    anyhow::ensure!(warm, "no datagram came back");
    let mut rtts = Vec::new();
    for i in 0..ROUND_TRIPS {
        let d = datagram(i);
        let t = Instant::now();
        s.send(&d).await?;
        loop {
            match tokio::time::timeout(Duration::from_millis(500), s.recv(&mut buf)).await {
                Ok(Ok(n)) if buf[..n] == d[..] => {
                    rtts.push(t.elapsed().as_secs_f64() * 1e3);
                    break;
                }
                Ok(_) => continue,
                Err(_) => break,
            }
        }
    }
    let s = client(to).await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), async {
        loop {
            s.send(&datagram(u32::MAX)).await?;
            if let Ok(Ok(_)) =
                tokio::time::timeout(Duration::from_millis(200), s.recv(&mut buf)).await
            {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await;
    let (mut sent, mut back) = (0u32, HashSet::new());
    // Datagrams outstanding when a 50 ms silence came: counted lost, no longer in flight.
    let mut given_up = 0u32;
    let start = Instant::now();
    let mut last_heard = Instant::now();
    while (sent < BURST || back.len() < sent as usize)
        && last_heard.elapsed() < Duration::from_millis(500)
    {
        while sent < BURST && sent - (back.len() as u32 + given_up).min(sent) < IN_FLIGHT {
            s.send(&datagram(sent)).await?;
            sent += 1;
        }
        match tokio::time::timeout(Duration::from_millis(50), s.recv(&mut buf)).await {
            Ok(Ok(n)) if n >= 4 => {
                let i = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                if i < BURST && buf[..n] == datagram(i)[..] {
                    back.insert(i);
                    last_heard = Instant::now();
                }
            }
            // Silence: what is outstanding is lost; the next window goes.
            Err(_) => given_up = sent - (back.len() as u32).min(sent),
            _ => {}
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Ok(Row {
        rtt_p50_ms: quantile(&mut rtts.clone(), 0.5),
        rtt_p99_ms: quantile(&mut rtts, 0.99),
        per_sec: Some(back.len() as f64 / secs),
        loss_pct: Some(100.0 * (1.0 - back.len() as f64 / f64::from(sent.max(1)))),
    })
}

async fn burrow(env: &crate::Env, service: SocketAddr) -> anyhow::Result<(SocketAddr, Vec<Peer>)> {
    let link = format!("http://{}/r/udp-bench", env.http);
    let spec = format!("echo=udp:{service}");
    let exposer = Peer::start_with(&["expose", &link, "--service", &spec])?;
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let forwarder = Peer::start_with(&[
        "forward",
        &link,
        "--listen",
        &addr.to_string(),
        "--service",
        "echo",
    ])?;
    forwarder
        .next("udp_forwarding", Duration::from_secs(30))
        .ok_or_else(|| anyhow::anyhow!("the forwarder never opened its UDP socket"))?;
    Ok((addr, vec![exposer, forwarder]))
}

async fn rathole(service: SocketAddr) -> anyhow::Result<(SocketAddr, Vec<Proc>)> {
    let addr = std::net::UdpSocket::bind("127.0.0.1:0")?.local_addr()?;
    let procs = crate::tunnel::start_rathole("udp", addr, service).await?;
    Ok((addr, procs.into()))
}

/// Runs the UDP bench.
pub async fn run(env: &crate::Env, all: &mut Vec<Figure>) {
    let service = match echo().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("udp: no echo service: {e}");
            return;
        }
    };
    let direct = measure(service).await.unwrap_or_default();
    let burrow_row = match burrow(env, service).await {
        Ok((addr, peers)) => {
            let row = measure(addr).await;
            drop(peers);
            row.map_err(|e| format!("burrow: {e}"))
        }
        Err(e) => Err(format!("burrow: {e}")),
    };
    let rathole_row = match rathole(service).await {
        Ok((addr, procs)) => {
            let row = measure(addr).await;
            drop(procs);
            row.map_err(|e| format!("rathole: {e}"))
        }
        Err(e) => Err(format!("rathole: {e}")),
    };
    let why: Vec<String> = [&burrow_row, &rathole_row]
        .iter()
        .filter_map(|r| r.as_ref().err().cloned())
        .collect();
    let b = burrow_row.ok();
    let r = rathole_row.ok();
    let note = |extra: String| {
        if why.is_empty() {
            extra
        } else {
            format!("{extra}; {}", why.join("; "))
        }
    };
    Figure::new(
        "udp",
        "round trip of a 1,200 B datagram, p50 (one at a time)",
        b.as_ref().and_then(|r| r.rtt_p50_ms),
        "ms",
    )
    .against("rathole", r.as_ref().and_then(|r| r.rtt_p50_ms))
    .note(note(format!(
        "p99 burrow {:.2} ms, rathole {:.2} ms; direct p50 {:.3} ms",
        b.as_ref().and_then(|r| r.rtt_p99_ms).unwrap_or(f64::NAN),
        r.as_ref().and_then(|r| r.rtt_p99_ms).unwrap_or(f64::NAN),
        direct.rtt_p50_ms.unwrap_or(f64::NAN)
    )))
    .emit(all);
    Figure::new(
        "udp",
        "1,200 B datagrams echoed a second (256 in flight)",
        b.as_ref().and_then(|r| r.per_sec),
        "/s",
    )
    .against("rathole", r.as_ref().and_then(|r| r.per_sec))
    .note(note(format!(
        "loss burrow {:.2} %, rathole {:.2} %; direct {:.0}/s",
        b.as_ref().and_then(|r| r.loss_pct).unwrap_or(f64::NAN),
        r.as_ref().and_then(|r| r.loss_pct).unwrap_or(f64::NAN),
        direct.per_sec.unwrap_or(f64::NAN)
    )))
    .emit(all);
}
