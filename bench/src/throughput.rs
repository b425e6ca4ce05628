//! `throughput`: a reliable, ordered data channel, native → native on loopback, 10 s or 1 GiB,
//! beside a plain TCP loopback copy of the same bytes; and once through the TURN relay.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use native_peer::rtc::Options;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use webrtc::data_channel::{DataChannel, DataChannelEvent};

use crate::report::Figure;
use crate::Env;

const MESSAGE: usize = 64 * 1024;

/// Sends up to `limit` bytes or for `time`, whichever ends first; returns (bytes, MB/s) as the
/// receiver saw them.
async fn channel_rate(
    b: Arc<dyn DataChannel>,
    a: Arc<dyn DataChannel>,
    limit: u64,
    time: Duration,
) -> (u64, f64) {
    let receiver = tokio::spawn(async move {
        let mut got = 0u64;
        let mut start = None;
        while let Some(ev) = a.poll().await {
            if let DataChannelEvent::OnMessage(m) = ev {
                if m.is_string {
                    break;
                }
                start.get_or_insert_with(Instant::now);
                got += m.data.len() as u64;
            }
        }
        let secs = start.map(|s| s.elapsed().as_secs_f64()).unwrap_or(1.0);
        (got, got as f64 / secs / 1e6)
    });
    let chunk = BytesMut::from(&vec![7u8; MESSAGE][..]);
    let start = Instant::now();
    let mut sent = 0u64;
    while sent < limit && start.elapsed() < time {
        if b.send(chunk.clone()).await.is_err() {
            break;
        }
        sent += MESSAGE as u64;
    }
    let _ = b.send_text("done").await;
    receiver.await.unwrap_or((0, 0.0))
}

/// The same bytes over a plain TCP loopback connection.
async fn tcp_rate(bytes: u64) -> f64 {
    let listener = match tokio::net::TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(_) => return 0.0,
    };
    let addr = listener.local_addr().ok();
    let reader = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.ok()?;
        let mut buf = vec![0u8; 256 * 1024];
        let start = Instant::now();
        let mut got = 0u64;
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n as u64,
            }
        }
        Some(got as f64 / start.elapsed().as_secs_f64() / 1e6)
    });
    if let Some(addr) = addr {
        if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
            let chunk = vec![7u8; MESSAGE];
            let mut sent = 0;
            while sent < bytes {
                if s.write_all(&chunk).await.is_err() {
                    break;
                }
                sent += MESSAGE as u64;
            }
        }
    }
    reader.await.ok().flatten().unwrap_or(0.0)
}

/// `n` one-byte round trips (B sends, A echoes), 20 ms apart so each starts on an idle
/// connection (where a stalled driver would show); returns each in ms.
async fn round_trips(b: Arc<dyn DataChannel>, a: Arc<dyn DataChannel>, n: usize) -> Vec<f64> {
    let echo = tokio::spawn(async move {
        let mut left = n;
        while left > 0 {
            match tokio::time::timeout(Duration::from_secs(5), a.poll()).await {
                Ok(Some(DataChannelEvent::OnMessage(m))) => {
                    if a.send(m.data).await.is_err() {
                        break;
                    }
                    left -= 1;
                }
                Ok(Some(_)) => continue,
                _ => break,
            }
        }
    });
    let mut out = Vec::with_capacity(n);
    'rounds: for _ in 0..n {
        let t = Instant::now();
        if b.send(BytesMut::from(&b"p"[..])).await.is_err() {
            break;
        }
        loop {
            match tokio::time::timeout(Duration::from_secs(5), b.poll()).await {
                Ok(Some(DataChannelEvent::OnMessage(_))) => break,
                Ok(Some(_)) => continue,
                _ => break 'rounds,
            }
        }
        out.push(t.elapsed().as_secs_f64() * 1000.0);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = echo.await;
    out
}

/// Emits the median of `rtts` as the round trip of `what`.
fn emit_rtt(what: &str, mut rtts: Vec<f64>, out: &mut Vec<Figure>) {
    Figure::new(
        "throughput",
        &format!("{what}: round trip p50"),
        crate::report::quantile(&mut rtts, 0.5),
        "ms",
    )
    .note(format!(
        "{} one-byte messages on an idle channel",
        rtts.len()
    ))
    .emit(out);
}

/// Runs the bench.
pub async fn run(env: &Env, out: &mut Vec<Figure>) {
    let link = env.link("throughput");
    match crate::pair::connect(&link, Options::default(), false).await {
        Ok(pair) => {
            let rtts = round_trips(pair.b.clone(), pair.a.clone(), 20).await;
            emit_rtt("data channel, loopback", rtts, out);
            let (bytes, rate) =
                channel_rate(pair.b.clone(), pair.a.clone(), env.bytes, env.time).await;
            let tcp = tcp_rate(bytes).await;
            Figure::new("throughput", "data channel, loopback", Some(rate), "MB/s")
                .against("TCP loopback, same bytes", Some(tcp))
                .note(format!("{} MiB in 64 KiB messages", bytes >> 20))
                .emit(out);
        }
        Err(e) => Figure::new("throughput", "data channel, loopback", None, "MB/s")
            .note(format!("failed: {e:#}"))
            .emit(out),
    }
    let link = env.link("throughput-turn");
    let relay = Options {
        relay_only: true,
        ..Options::default()
    };
    let mut relayed_rate = None;
    match crate::pair::connect(&link, relay, true).await {
        Ok(pair) => {
            let rtts = round_trips(pair.b.clone(), pair.a.clone(), 20).await;
            emit_rtt("data channel via TURN relay", rtts, out);
            let (bytes, rate) =
                channel_rate(pair.b.clone(), pair.a.clone(), env.bytes / 4, env.time).await;
            relayed_rate = Some(rate);
            Figure::new(
                "throughput",
                "data channel via TURN relay",
                Some(rate),
                "MB/s",
            )
            .note(format!("{} MiB, relay-only ICE policy", bytes >> 20))
            .emit(out);
        }
        Err(e) => Figure::new("throughput", "data channel via TURN relay", None, "MB/s")
            .note(format!("failed: {e:#}"))
            .emit(out),
    }
    coturn(env, relayed_rate, out).await;
}

/// The same relayed transfer through coturn (the reference relay operators scale out with),
/// between the same kind of peers, in the same run: a `signal-server` with `--no-turn
/// --external-turn` pointing at a `turnserver` on loopback.
async fn coturn(env: &Env, ours: Option<f64>, out: &mut Vec<Figure>) {
    let what = "data channel via coturn (reference relay)";
    let port = match std::net::UdpSocket::bind("127.0.0.1:0").and_then(|s| s.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => {
            Figure::new("throughput", what, None, "MB/s")
                .note(format!("{e}"))
                .emit(out);
            return;
        }
    };
    let turn = std::process::Command::new("turnserver")
        .args(["-c", "/dev/null", "-n", "--listening-ip", "127.0.0.1"])
        .args(["--listening-port", &port.to_string()])
        .args(["--use-auth-secret", "--static-auth-secret", "bench-secret"])
        .args(["--realm", "burrow", "--no-tls", "--no-dtls", "--no-cli"])
        .args([
            "--allow-loopback-peers",
            "--fingerprint",
            "--log-file",
            "/dev/null",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn();
    let Ok(turn) = turn else {
        Figure::new("throughput", what, None, "MB/s")
            .note("turnserver not installed (apt-get install coturn)".to_string())
            .emit(out);
        return;
    };
    let _turn = KillOnDrop(turn);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let url = format!("turn:127.0.0.1:{port}");
    let server = match crate::signaling::Server::start(&[
        "--no-turn",
        "--external-turn",
        &url,
        "--external-turn-secret",
        "bench-secret",
    ]) {
        Ok(s) => s,
        Err(e) => {
            Figure::new("throughput", what, None, "MB/s")
                .note(format!("{e:#}"))
                .emit(out);
            return;
        }
    };
    let link = match peer_core::link::RoomLink::parse(
        &format!("http://{}/r/throughput-coturn", server.http),
        None,
    ) {
        Ok(l) => l,
        Err(e) => {
            Figure::new("throughput", what, None, "MB/s")
                .note(format!("{e}"))
                .emit(out);
            return;
        }
    };
    let relay = Options {
        relay_only: true,
        ..Options::default()
    };
    match crate::pair::connect(&link, relay, true).await {
        Ok(pair) => {
            let (bytes, rate) =
                channel_rate(pair.b.clone(), pair.a.clone(), env.bytes / 4, env.time).await;
            // Printed as ours against coturn's, as the data-path issue compares them.
            Figure::new("throughput", "embedded relay vs coturn", ours, "MB/s")
                .against("coturn 4.6, same peers, same run", Some(rate))
                .note(format!("{} MiB through coturn", bytes >> 20))
                .emit(out);
        }
        Err(e) => Figure::new("throughput", what, None, "MB/s")
            .note(format!("failed: {e:#}"))
            .emit(out),
    }
}

/// A child process killed when dropped.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
