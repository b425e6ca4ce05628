//! `signaling-idle` (how many idle WebSocket peers the server holds, and its memory per peer) and
//! `signaling-relay` (rooms of two ping-ponging signals: messages/s and relay latency). The server
//! runs as its own process, so its memory is its own.

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use signal_protocol::{ClientMessage, PeerSignal, ServerMessage, PROTOCOL_VERSION};
use tokio::sync::Mutex;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::report::{quantile, Figure};

/// A `signal-server` child process.
pub struct Server {
    child: Child,
    /// `/proc/<pid>/status`, opened up front: with 20,000 sockets open this process may have no
    /// file descriptor left to open it later.
    status: std::fs::File,
    /// Its HTTP address.
    pub http: String,
    /// Its STUN address.
    pub stun: String,
}

impl Server {
    /// Starts `target/<profile>/signal-server` with `extra` flags.
    pub fn start(extra: &[&str]) -> anyhow::Result<Server> {
        let exe = std::env::current_exe()?;
        let bin = exe.with_file_name("signal-server");
        let mut child = Command::new(&bin)
            .args([
                "--listen",
                "127.0.0.1:0",
                "--stun-listen",
                "127.0.0.1:0",
                "--www",
                "www",
                // Every bench client comes from 127.0.0.1: lift the per-client and total
                // connection limits meant for strangers on the internet.
                "--max-connections-per-ip",
                "0",
                "--max-connections",
                "0",
            ])
            .args(extra)
            .env("RUST_LOG", "error,turn=off")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!(
                    "cannot start {}: {e} (cargo build --release)",
                    bin.display()
                )
            })?;
        let mut line = String::new();
        use std::io::BufRead;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        std::io::BufReader::new(stdout).read_line(&mut line)?;
        let field = |k: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(k))
                .map(str::to_string)
                .unwrap_or_default()
        };
        let status = std::fs::File::open(format!("/proc/{}/status", child.id()))?;
        Ok(Server {
            http: field("http="),
            stun: field("stun="),
            status,
            child,
        })
    }

    /// Resident memory now, KiB.
    pub fn rss_kib(&self) -> Option<u64> {
        use std::io::{Read, Seek};
        let mut f = &self.status;
        f.seek(std::io::SeekFrom::Start(0)).ok()?;
        let mut s = String::new();
        f.read_to_string(&mut s).ok()?;
        s.lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn join(url: &str) -> anyhow::Result<(Ws, String)> {
    let mut config = WebSocketConfig::default();
    config.read_buffer_size = 4096;
    config.write_buffer_size = 0;
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(url, Some(config), true).await?;
    let hello = serde_json::to_string(&ClientMessage::Hello {
        version: PROTOCOL_VERSION,
        name: None,
        resume: None,
        kind: Default::default(),
    })?;
    ws.send(Message::text(hello)).await?;
    while let Some(msg) = ws.next().await {
        if let Message::Text(t) = msg? {
            if let Ok(ServerMessage::Welcome { peer_id, .. }) = serde_json::from_str(&t) {
                return Ok((ws, peer_id));
            }
        }
    }
    anyhow::bail!("no welcome")
}

/// Raises this process's open-file limit as far as allowed (children inherit it).
pub fn raise_fd_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid, initialised struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 {
            // As root the hard limit may be raised too; otherwise take the hard limit.
            let want = libc::rlimit {
                rlim_cur: 200_000,
                rlim_max: 200_000.max(lim.rlim_max),
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) != 0 {
                lim.rlim_cur = lim.rlim_max;
                libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
            }
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        }
        lim.rlim_cur
    }
}

/// Runs `signaling-idle` with `peers` idle peers in rooms of 4.
pub async fn idle(peers: usize, out: &mut Vec<Figure>) {
    let server = match Server::start(&[
        "--max-rooms",
        "1000000",
        "--ping-interval",
        "60s",
        "--ping-timeout",
        "120s",
    ]) {
        Ok(s) => s,
        Err(e) => {
            Figure::new("signaling-idle", "peers held", None, "peers")
                .note(format!("{e:#}"))
                .emit(out);
            return;
        }
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib().unwrap_or(0);
    let held = Arc::new(Mutex::new(Vec::with_capacity(peers)));
    let failed = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let next = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..64)
        .map(|_| {
            let (held, failed, next, http) = (
                held.clone(),
                failed.clone(),
                next.clone(),
                server.http.clone(),
            );
            tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst) as usize;
                    if i >= peers {
                        break;
                    }
                    let url = format!("ws://{http}/ws/idle-{}", i / 4);
                    match join(&url).await {
                        Ok((ws, _)) => held.lock().await.push(ws),
                        Err(_) => {
                            failed.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                }
            })
        })
        .collect();
    for w in workers {
        let _ = w.await;
    }
    let took = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib().unwrap_or(0);
    let n = held.lock().await.len();
    let per_peer = (after.saturating_sub(before)) as f64 / n.max(1) as f64;
    Figure::new("signaling-idle", "peers held", Some(n as f64), "peers")
        .against(
            "matchbox 0.14, measured on this machine kind",
            Some(20000.0),
        )
        .note(format!(
            "{} failed; rooms of 4",
            failed.load(Ordering::SeqCst)
        ))
        .emit(out);
    Figure::new("signaling-idle", "RSS per idle peer", Some(per_peer), "KiB")
        .against("matchbox 0.14, measured on this machine kind", Some(137.0))
        .note(format!("server RSS {before} KiB before, {after} KiB after"))
        .emit(out);
    Figure::new("signaling-idle", "time to connect all", Some(took), "s")
        .against("matchbox 0.14, measured on this machine kind", Some(130.0))
        .emit(out);
}

/// The next signal on a socket (room news skipped): its sender and the send time it carries.
async fn next_signal<S>(rx: &mut S) -> Option<(String, u128)>
where
    S: futures_util::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(Ok(msg)) = rx.next().await {
        let Message::Text(t) = msg else { continue };
        if let Ok(ServerMessage::Signal {
            from,
            data: PeerSignal::Offer { sdp },
        }) = serde_json::from_str(&t)
        {
            return Some((from, sdp.parse().unwrap_or(0)));
        }
    }
    None
}

/// Rooms of two ping-ponging signals for `time`, one peer of each room on `http_a` and the other
/// on `http_b` (the same server, or two instances sharing rooms): (messages delivered, seconds,
/// latencies in ms).
async fn ping_pong(
    http_a: &str,
    http_b: &str,
    rooms: usize,
    time: Duration,
) -> (u64, f64, Vec<f64>) {
    let epoch = Instant::now();
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let delivered = Arc::new(AtomicU64::new(0));
    let mut pairs = Vec::new();
    for r in 0..rooms {
        let url_a = format!("ws://{http_a}/ws/relay-{r}");
        let url_b = format!("ws://{http_b}/ws/relay-{r}");
        let (Ok((a, _)), Ok((b, idb))) = (join(&url_a).await, join(&url_b).await) else {
            continue;
        };
        pairs.push((a, b, idb));
    }
    let deadline = epoch + Duration::from_millis(200) + time;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for (a, b, idb) in pairs {
        let (lat, count) = (latencies.clone(), delivered.clone());
        tasks.push(tokio::spawn(async move {
            // A sends to B; B answers A; each message carries its send time.
            let (mut a_tx, mut a_rx) = a.split();
            let (mut b_tx, mut b_rx) = b.split();
            let mut local = Vec::new();
            let stamp = |epoch: Instant| format!("{}", epoch.elapsed().as_nanos());
            let send = |to: &str, sdp: String| {
                Message::text(
                    serde_json::to_string(&ClientMessage::Signal {
                        to: to.to_string(),
                        data: PeerSignal::Offer { sdp },
                    })
                    .unwrap_or_default(),
                )
            };
            if a_tx.send(send(&idb, stamp(epoch))).await.is_err() {
                return;
            }
            while Instant::now() < deadline {
                // B gets A's signal and answers; then A gets B's and sends the next.
                let Some((from, sent)) = next_signal(&mut b_rx).await else {
                    break;
                };
                local.push((epoch.elapsed().as_nanos().saturating_sub(sent)) as f64 / 1e6);
                count.fetch_add(1, Ordering::Relaxed);
                if b_tx.send(send(&from, stamp(epoch))).await.is_err() {
                    break;
                }
                let Some((_, sent)) = next_signal(&mut a_rx).await else {
                    break;
                };
                local.push((epoch.elapsed().as_nanos().saturating_sub(sent)) as f64 / 1e6);
                count.fetch_add(1, Ordering::Relaxed);
                if a_tx.send(send(&idb, stamp(epoch))).await.is_err() {
                    break;
                }
            }
            lat.lock().await.extend(local);
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let secs = start.elapsed().as_secs_f64();
    let n = delivered.load(Ordering::Relaxed);
    let lat = latencies.lock().await.clone();
    (n, secs, lat)
}

/// Runs `signaling-relay` with `rooms` rooms of 2 for `time`.
pub async fn relay(rooms: usize, time: Duration, out: &mut Vec<Figure>) {
    let server = match Server::start(&["--rate-per-sec", "10000000", "--rate-burst", "10000000"]) {
        Ok(s) => s,
        Err(e) => {
            Figure::new("signaling-relay", "messages/s", None, "msg/s")
                .note(format!("{e:#}"))
                .emit(out);
            return;
        }
    };
    let (n, secs, mut lat) = ping_pong(&server.http, &server.http, rooms, time).await;
    let (ref_rate, ref_p99) = if rooms <= 100 {
        (63000.0, 8.0)
    } else {
        (33000.0, 183.0)
    };
    let reference = "matchbox 0.14, measured on this machine kind";
    Figure::new(
        "signaling-relay",
        &format!("{rooms} rooms of 2: messages/s"),
        Some(n as f64 / secs),
        "msg/s",
    )
    .against(reference, Some(ref_rate))
    .emit(out);
    Figure::new(
        "signaling-relay",
        &format!("{rooms} rooms of 2: latency p50"),
        quantile(&mut lat, 0.5),
        "ms",
    )
    .emit(out);
    Figure::new(
        "signaling-relay",
        &format!("{rooms} rooms of 2: latency p99"),
        quantile(&mut lat, 0.99),
        "ms",
    )
    .against(reference, Some(ref_p99))
    .emit(out);
}

/// A `redis-server` on a free loopback port for the cluster bench, killed when dropped.
struct Redis {
    child: Child,
    url: String,
}

impl Redis {
    fn start() -> anyhow::Result<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start redis-server: {e} (apt-get install redis-server)")
            })?;
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                anyhow::bail!("redis-server did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Redis {
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

/// Idle peers joined to `http` (4 per room) and the server's RSS growth per peer, KiB.
async fn idle_cost(server: &Server, peers: usize) -> (usize, f64) {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = server.rss_kib().unwrap_or(0);
    let mut held = Vec::with_capacity(peers);
    for i in 0..peers {
        if let Ok((ws, _)) = join(&format!("ws://{}/ws/idle-{}", server.http, i / 4)).await {
            held.push(ws);
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = server.rss_kib().unwrap_or(0);
    let n = held.len();
    (n, after.saturating_sub(before) as f64 / n.max(1) as f64)
}

/// `signaling-cluster`: what going multi-instance costs. 100 rooms of 2 with the two peers of
/// each room on two instances sharing rooms through Redis, beside the same on one instance in
/// the same run; and the idle memory per peer with Redis on and off.
pub async fn cluster(time: Duration, out: &mut Vec<Figure>) {
    let flags = ["--rate-per-sec", "10000000", "--rate-burst", "10000000"];
    let started = Redis::start().and_then(|redis| {
        let with = |r: &Redis| {
            let mut f = flags.to_vec();
            f.extend(["--redis", r.url.as_str()]);
            Server::start(&f)
        };
        Ok((with(&redis)?, with(&redis)?, Server::start(&flags)?, redis))
    });
    let (one, two, single, _redis) = match started {
        Ok(s) => s,
        Err(e) => {
            Figure::new("signaling-cluster", "messages/s", None, "msg/s")
                .note(format!("{e:#}"))
                .emit(out);
            return;
        }
    };
    let (n1, s1, mut l1) = ping_pong(&single.http, &single.http, 100, time).await;
    let (n2, s2, mut l2) = ping_pong(&one.http, &two.http, 100, time).await;
    let same_run = "one instance, same run";
    Figure::new(
        "signaling-cluster",
        "100 rooms of 2 across two instances + Redis: messages/s",
        Some(n2 as f64 / s2),
        "msg/s",
    )
    .against(same_run, Some(n1 as f64 / s1))
    .emit(out);
    Figure::new(
        "signaling-cluster",
        "100 rooms of 2 across two instances + Redis: latency p50",
        quantile(&mut l2, 0.5),
        "ms",
    )
    .against(same_run, quantile(&mut l1, 0.5))
    .emit(out);
    Figure::new(
        "signaling-cluster",
        "100 rooms of 2 across two instances + Redis: latency p99",
        quantile(&mut l2, 0.99),
        "ms",
    )
    .against(same_run, quantile(&mut l1, 0.99))
    .emit(out);
    let (_, without) = idle_cost(&single, 2000).await;
    let (held, with) = idle_cost(&one, 2000).await;
    Figure::new(
        "signaling-cluster",
        &format!("idle memory per peer with Redis ({held} peers)"),
        Some(with),
        "KiB",
    )
    .against(same_run, Some(without))
    .emit(out);
}
