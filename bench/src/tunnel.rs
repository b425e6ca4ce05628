//! The tunnel under `burrow expose` / `burrow forward` beside the site reached directly and
//! beside rathole (plain TCP, the relay tool people use for the same job), in the same run on
//! loopback: requests on new connections (16 at a time, and one at a time), kept-alive
//! requests, bulk bodies, and the two processes' memory. Every body is checked by SHA-256; a
//! failed request is counted, never retried.
//!
//! rathole is run when `rathole` is on PATH (`cargo install rathole --no-default-features
//! --features server,client`); otherwise its column says why it is empty.

use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::procs::{Peer, Proc};
use crate::report::{quantile, Figure};

const SMALL: usize = 1024;
const MID: usize = 1024 * 1024;
const BIG: usize = 32 * 1024 * 1024;

fn body(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect()
}

/// The bench's site: `GET /small` (1 KiB), `/mid` (1 MiB), `/big` (32 MiB), HTTP/1.1 with
/// keep-alive unless the client says `Connection: close`.
async fn site() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let bodies = Arc::new([body(SMALL), body(MID), body(BIG)]);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            // As web servers do: a reply is not held back for the client's delayed ACK.
            let _ = s.set_nodelay(true);
            let bodies = bodies.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let end = loop {
                        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                        match s.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
                    buf.drain(..end);
                    let b = if head.starts_with("get /big") {
                        &bodies[2]
                    } else if head.starts_with("get /mid") {
                        &bodies[1]
                    } else {
                        &bodies[0]
                    };
                    let close = head.contains("connection: close");
                    let h = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\n{}\r\n",
                        b.len(),
                        if close { "Connection: close\r\n" } else { "" }
                    );
                    if s.write_all(h.as_bytes()).await.is_err() || s.write_all(b).await.is_err() {
                        return;
                    }
                    if close {
                        let _ = s.shutdown().await;
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// Reads one response with a `Content-Length` from `s` (leftovers kept in `buf`): its body.
async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> anyhow::Result<Vec<u8>> {
    let mut chunk = vec![0u8; 64 * 1024];
    let end = loop {
        if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
        let n = s.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed before the header ended");
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..end]).to_lowercase();
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no content-length"))?;
    buf.drain(..end);
    while buf.len() < len {
        let n = s.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "cut short");
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf.drain(..len).collect())
}

/// One request on a new connection; the body's SHA-256 must be `want`.
async fn fresh(addr: SocketAddr, path: &str, want: &[u8]) -> anyhow::Result<()> {
    let exchange = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut buf = Vec::new();
        read_response(&mut s, &mut buf).await
    };
    let got = tokio::time::timeout(Duration::from_secs(20), exchange).await??;
    anyhow::ensure!(Sha256::digest(&got).as_slice() == want, "body differs");
    Ok(())
}

/// What a load run measured.
struct Load {
    per_sec: f64,
    failed: usize,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    mb_per_sec: f64,
}

/// `n` requests for `path` on new connections, `concurrency` at a time.
async fn new_connections(
    addr: SocketAddr,
    path: &str,
    len: usize,
    n: usize,
    concurrency: usize,
) -> Load {
    let want: Arc<[u8]> = Sha256::digest(body(len)).to_vec().into();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, want, path) = (next.clone(), want.clone(), path.to_string());
            tokio::spawn(async move {
                let (mut times, mut failed) = (Vec::new(), 0);
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let t = Instant::now();
                    match fresh(addr, &path, &want).await {
                        Ok(()) => times.push(t.elapsed().as_secs_f64() * 1000.0),
                        Err(_) => failed += 1,
                    }
                }
                (times, failed)
            })
        })
        .collect();
    let (mut times, mut failed) = (Vec::new(), 0);
    for w in workers {
        if let Ok((t, f)) = w.await {
            times.extend(t);
            failed += f;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    let ok = times.len();
    Load {
        per_sec: ok as f64 / secs,
        failed,
        p50_ms: quantile(&mut times, 0.5),
        p99_ms: quantile(&mut times, 0.99),
        mb_per_sec: (ok * len) as f64 / secs / 1e6,
    }
}

/// `n` requests for `/small` over `concurrency` kept-alive connections.
async fn kept_alive(addr: SocketAddr, n: usize, concurrency: usize) -> Load {
    let want: Arc<[u8]> = Sha256::digest(body(SMALL)).to_vec().into();
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let (next, want) = (next.clone(), want.clone());
            tokio::spawn(async move {
                let (mut times, mut failed) = (Vec::new(), 0);
                let Ok(mut s) = TcpStream::connect(addr).await else {
                    return (times, n);
                };
                let mut buf = Vec::new();
                while next.fetch_add(1, Ordering::SeqCst) < n {
                    let t = Instant::now();
                    let one = async {
                        s.write_all(b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n")
                            .await?;
                        read_response(&mut s, &mut buf).await
                    };
                    match tokio::time::timeout(Duration::from_secs(20), one).await {
                        Ok(Ok(got)) if Sha256::digest(&got).as_slice() == &want[..] => {
                            times.push(t.elapsed().as_secs_f64() * 1000.0)
                        }
                        _ => {
                            failed += 1;
                            break;
                        }
                    }
                }
                (times, failed)
            })
        })
        .collect();
    let (mut times, mut failed) = (Vec::new(), 0);
    for w in workers {
        if let Ok((t, f)) = w.await {
            times.extend(t);
            failed += f;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    Load {
        per_sec: times.len() as f64 / secs,
        failed,
        p50_ms: quantile(&mut times, 0.5),
        p99_ms: quantile(&mut times, 0.99),
        mb_per_sec: (times.len() * SMALL) as f64 / secs / 1e6,
    }
}

/// Resident memory of process `pid`, MiB.
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kib / 1024.0)
}

/// Waits until a request through `addr` succeeds (the tunnel is up).
async fn ready(addr: SocketAddr) -> bool {
    let want = Sha256::digest(body(SMALL));
    for _ in 0..300 {
        if fresh(addr, "/small", &want).await.is_ok() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

/// A tunnel under test: where clients connect, and the two processes (exposing side first).
struct Tunnel {
    addr: SocketAddr,
    pids: [u32; 2],
    _procs: Vec<Proc>,
    _peers: Vec<Peer>,
}

async fn burrow(env: &crate::Env, site: SocketAddr) -> anyhow::Result<Tunnel> {
    let link = format!("http://{}/r/tunnel-bench", env.http);
    let exposer = Peer::start_with(&["expose", &site.to_string(), &link])?;
    let addr = free_addr()?;
    let forwarder = Peer::start_with(&["forward", &link, "--listen", &addr.to_string()])?;
    forwarder
        .next("services", Duration::from_secs(30))
        .ok_or_else(|| anyhow::anyhow!("the forwarder never saw the service"))?;
    anyhow::ensure!(ready(addr).await, "no request went through burrow");
    Ok(Tunnel {
        addr,
        pids: [exposer.proc.0.id(), forwarder.proc.0.id()],
        _procs: Vec::new(),
        _peers: vec![exposer, forwarder],
    })
}

/// Runs a rathole server and client (in that order) carrying one service of `kind` (`tcp` or
/// `udp`): clients reach `bind`, the client side holds `local`.
pub(crate) async fn start_rathole(
    kind: &str,
    bind: SocketAddr,
    local: SocketAddr,
) -> anyhow::Result<[Proc; 2]> {
    let dir = std::env::temp_dir().join(format!(
        "burrow-bench-rathole-{kind}-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir)?;
    let control = free_addr()?;
    let server = format!(
        "[server]\nbind_addr = \"{control}\"\n[server.services.s]\ntype = \"{kind}\"\ntoken = \"bench\"\nbind_addr = \"{bind}\"\n"
    );
    let client = format!(
        "[client]\nremote_addr = \"{control}\"\n[client.services.s]\ntype = \"{kind}\"\ntoken = \"bench\"\nlocal_addr = \"{local}\"\n"
    );
    std::fs::write(dir.join("server.toml"), server)?;
    std::fs::write(dir.join("client.toml"), client)?;
    let start = |args: &[&str]| -> anyhow::Result<Proc> {
        Ok(Proc(
            Command::new("rathole")
                .args(args)
                .env("RUST_LOG", "off")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?,
        ))
    };
    let s = start(&["--server", &dir.join("server.toml").to_string_lossy()]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let c = start(&["--client", &dir.join("client.toml").to_string_lossy()]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok([s?, c?])
}

async fn rathole(site: SocketAddr) -> anyhow::Result<Tunnel> {
    let addr = free_addr()?;
    let [s, c] = start_rathole("tcp", addr, site).await?;
    anyhow::ensure!(ready(addr).await, "no request went through rathole");
    // The client side holds the service, as `expose` does.
    Ok(Tunnel {
        addr,
        pids: [c.0.id(), s.0.id()],
        _procs: vec![s, c],
        _peers: Vec::new(),
    })
}

/// Every load on one target.
struct Row {
    fresh16: Load,
    fresh1: Load,
    fresh64: Load,
    kept: Load,
    big: Load,
    mid4: Load,
    rss_idle: Option<[Option<f64>; 2]>,
    /// The most both sides held while 64 streams carried 1 MiB bodies at once.
    rss_peak64: Option<f64>,
    rss_after: Option<[Option<f64>; 2]>,
}

async fn measure(addr: SocketAddr, pids: Option<[u32; 2]>) -> Row {
    let rss = |p: Option<[u32; 2]>| p.map(|[a, b]| [rss_mib(a), rss_mib(b)]);
    let rss_idle = rss(pids);
    let fresh16 = new_connections(addr, "/small", SMALL, 2_000, 16).await;
    let fresh1 = new_connections(addr, "/small", SMALL, 1_000, 1).await;
    let fresh64 = new_connections(addr, "/small", SMALL, 2_000, 64).await;
    let kept = kept_alive(addr, 2_000, 1).await;
    let big = new_connections(addr, "/big", BIG, 8, 1).await;
    let mid4 = new_connections(addr, "/mid", MID, 64, 4).await;
    // 64 streams at once, each a 1 MiB body: the most both sides hold meanwhile.
    let (done_tx, mut done_rx) = tokio::sync::watch::channel(false);
    let sampler = tokio::spawn(async move {
        let mut peak: Option<f64> = None;
        while !*done_rx.borrow() {
            if let Some([a, b]) = pids {
                let now = rss_mib(a).unwrap_or(0.0) + rss_mib(b).unwrap_or(0.0);
                peak = Some(peak.map_or(now, |p: f64| p.max(now)));
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), done_rx.changed()).await;
        }
        peak
    });
    let _ = new_connections(addr, "/mid", MID, 256, 64).await;
    let _ = done_tx.send(true);
    let rss_peak64 = sampler.await.ok().flatten();
    // Past `burrow`'s memory trim (every 10 s), as a long-running tunnel would be.
    tokio::time::sleep(Duration::from_secs(11)).await;
    Row {
        fresh16,
        fresh1,
        fresh64,
        kept,
        big,
        mid4,
        rss_idle,
        rss_peak64,
        rss_after: rss(pids),
    }
}

/// Runs the tunnel bench.
pub async fn run(env: &crate::Env, all: &mut Vec<Figure>) {
    let site = match site().await {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tunnel: no site: {e}");
            return;
        }
    };
    let direct = measure(site, None).await;
    let burrow = match burrow(env, site).await {
        Ok(t) => Some((measure(t.addr, Some(t.pids)).await, t)),
        Err(e) => {
            eprintln!("tunnel: burrow: {e}");
            None
        }
    };
    let (rathole, why) = match rathole(site).await {
        Ok(t) => (
            Some((measure(t.addr, Some(t.pids)).await, t)),
            String::new(),
        ),
        Err(e) => (None, format!("rathole: {e}")),
    };
    let b = burrow.as_ref().map(|(r, _)| r);
    let r = rathole.as_ref().map(|(r, _)| r);
    type Pick = fn(&Row) -> (f64, usize);
    let rows: [(&str, Pick, &str); 6] = [
        (
            "new connection each, 16 at a time, 1 KiB",
            |r| (r.fresh16.per_sec, r.fresh16.failed),
            "req/s",
        ),
        (
            "new connection each, one at a time, 1 KiB",
            |r| (r.fresh1.per_sec, r.fresh1.failed),
            "req/s",
        ),
        (
            "new connection each, 64 at a time, 1 KiB",
            |r| (r.fresh64.per_sec, r.fresh64.failed),
            "req/s",
        ),
        (
            "kept alive, one at a time, 1 KiB",
            |r| (r.kept.per_sec, r.kept.failed),
            "req/s",
        ),
        (
            "32 MiB bodies, one at a time",
            |r| (r.big.mb_per_sec, r.big.failed),
            "MB/s",
        ),
        (
            "1 MiB bodies, 4 at a time",
            |r| (r.mid4.mb_per_sec, r.mid4.failed),
            "MB/s",
        ),
    ];
    for (metric, pick, unit) in rows {
        let (dv, df) = pick(&direct);
        let bv = b.map(pick);
        let rv = r.map(pick);
        let note = format!(
            "failed: burrow {}, rathole {}, direct {df}; direct {dv:.1} {unit}{}",
            bv.map_or("-".into(), |v| v.1.to_string()),
            rv.map_or("-".into(), |v| v.1.to_string()),
            if why.is_empty() {
                String::new()
            } else {
                format!("; {why}")
            }
        );
        Figure::new("tunnel", metric, bv.map(|v| v.0), unit)
            .against("rathole", rv.map(|v| v.0))
            .note(note)
            .emit(all);
    }
    let latency = |row: Option<&Row>| row.and_then(|r| r.fresh1.p50_ms);
    Figure::new(
        "tunnel",
        "new connection request, p50 (one at a time)",
        latency(b),
        "ms",
    )
    .against("rathole", latency(r))
    .note(format!(
        "p99 burrow {:.2} ms, rathole {:.2} ms; direct p50 {:.2} ms",
        b.and_then(|r| r.fresh1.p99_ms).unwrap_or(f64::NAN),
        r.and_then(|r| r.fresh1.p99_ms).unwrap_or(f64::NAN),
        direct.fresh1.p50_ms.unwrap_or(f64::NAN)
    ))
    .emit(all);
    let mem = |row: Option<&Row>, after: bool| {
        row.and_then(|r| if after { r.rss_after } else { r.rss_idle })
            .map(|[a, b]| a.unwrap_or(0.0) + b.unwrap_or(0.0))
    };
    Figure::new(
        "tunnel",
        "RSS under 64 streams at once (1 MiB bodies), both sides, peak",
        b.and_then(|r| r.rss_peak64),
        "MiB",
    )
    .against("rathole", r.and_then(|r| r.rss_peak64))
    .note("sampled every 50 ms while 256 requests ran 64 at a time")
    .emit(all);
    for (after, metric) in [
        (false, "RSS idle, both sides"),
        (true, "RSS after the load, both sides"),
    ] {
        let each = |row: Option<&Row>| {
            row.and_then(|r| if after { r.rss_after } else { r.rss_idle })
                .map_or("-".into(), |[a, b]| {
                    format!("{:.1} + {:.1}", a.unwrap_or(0.0), b.unwrap_or(0.0))
                })
        };
        Figure::new("tunnel", metric, mem(b, after), "MiB")
            .against("rathole", mem(r, after))
            .note(format!(
                "expose + forward {}; rathole client + server {}",
                each(b),
                each(r)
            ))
            .emit(all);
    }
}
