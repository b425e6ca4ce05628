//! `durable`: how fast a room is whole again after the server restarts, how fast a relayed link
//! carries data again after the server (and its TURN relay) restarted, and how fast a link
//! carries data again after its path went silent long enough to be restarted. Real processes on
//! loopback: a `signal-server` and two `burrow join --json`.
//!
//! There is no measured Tailscale figure to stand beside these offline; its design constants
//! are quoted instead (from `wgengine/magicsock`: a direct path is pinged every 3 s and trusted
//! for 6.5 s without a pong before traffic also goes through DERP).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::procs::{Peer, Proc};
use crate::report::{quantile, Figure};

/// Starts the server on `port`; returns it once it listens.
fn server(port: u16, secret: &std::path::Path) -> anyhow::Result<Proc> {
    let bin = std::env::current_exe()?.with_file_name("signal-server");
    let mut child = Command::new(&bin)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--stun-listen", "127.0.0.1:0", "--www", "www"])
        .arg("--resume-secret-file")
        .arg(secret)
        // The relayed measurement relays between loopback peers (refused by default).
        .args(["--turn-allowed-peer", "127.0.0.0/8"])
        .env("RUST_LOG", "error")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let stdout = child
        .stdout
        .take()
        .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    Ok(Proc(child))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs both measurements.
pub async fn run(out: &mut Vec<Figure>) {
    match tokio::task::spawn_blocking(measure).await {
        Ok(Ok(figures)) => {
            for f in figures {
                f.emit(out);
            }
        }
        Ok(Err(e)) => eprintln!("bench durable: {e:#}"),
        Err(e) => eprintln!("bench durable: {e}"),
    }
}

fn measure() -> anyhow::Result<Vec<Figure>> {
    const ROUNDS: usize = 5;
    let wait = Duration::from_secs(30);
    let port = free_port()?;
    let secret = std::env::temp_dir().join(format!("burrow-bench-resume-{}", std::process::id()));
    let _ = std::fs::remove_file(&secret);
    let mut srv = server(port, &secret)?;
    let link = format!("http://127.0.0.1:{port}/r/durable");
    let a = Peer::start(&link)?;
    a.next("joined", wait)
        .ok_or_else(|| anyhow::anyhow!("a never joined"))?;
    let b = Peer::start(&link)?;
    for p in [&a, &b] {
        p.next("connected", wait)
            .ok_or_else(|| anyhow::anyhow!("the peers never connected"))?;
    }

    // The server crashes, stays down 1 s, comes back: until both peers are back in the room.
    let mut whole = Vec::new();
    for _ in 0..ROUNDS {
        drop(srv);
        for p in [&a, &b] {
            p.next("server_lost", wait);
        }
        std::thread::sleep(Duration::from_secs(1));
        srv = server(port, &secret)?;
        let up = Instant::now();
        let mut last = up;
        for p in [&a, &b] {
            let (at, _) = p
                .next("server_back", wait)
                .ok_or_else(|| anyhow::anyhow!("a peer never came back"))?;
            last = last.max(at);
        }
        whole.push(last.duration_since(up).as_secs_f64() * 1000.0);
    }
    let median = quantile(&mut whole.clone(), 0.5);
    let max = whole
        .iter()
        .cloned()
        .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))));
    let mut figures = vec![
        Figure::new(
            "durable",
            "room whole after a server restart, median",
            median,
            "ms",
        )
        .note(format!(
            "{ROUNDS} crashes (SIGKILL, 1 s down); from the new server listening to both \
                 peers' server_back; the clients' backoff (0.5 s doubling, ±25 %) sets most of it"
        )),
        Figure::new(
            "durable",
            "room whole after a server restart, worst",
            max,
            "ms",
        ),
    ];

    // B's path goes silent for 8 s (process frozen: no FIN, nothing): A reports it unreachable,
    // restarts ICE, and the link carries data again once B runs.
    let mut back = Vec::new();
    let mut restarts = 0;
    for _ in 0..3 {
        b.signal(libc::SIGSTOP);
        a.next("peer_unreachable", wait);
        std::thread::sleep(Duration::from_secs(8));
        b.signal(libc::SIGCONT);
        let resumed = Instant::now();
        let Some((at, _, n)) = a.next_counting("peer_back", "ice_restart", wait) else {
            continue;
        };
        back.push(at.duration_since(resumed).as_secs_f64() * 1000.0);
        restarts += n;
    }
    let rounds = back.len();
    figures.push(
        Figure::new(
            "durable",
            "link back after its path was silent 8 s, median",
            quantile(&mut back, 0.5),
            "ms",
        )
        .note(format!(
            "{rounds}/3 rounds, {restarts} ICE restarts by the watching side; from the silent \
             peer running again to peer_back on the other side. Tailscale (design constants, not a measurement): pings a direct path \
             every 3 s, trusts it 6.5 s without a pong"
        )),
    );
    drop(a);
    drop(b);
    figures.extend(relayed_restart(&mut srv, port, &secret)?);
    drop(srv);
    let _ = std::fs::remove_file(&secret);
    Ok(figures)
}

/// Two `--relay-only` peers linked through the server's TURN relay; the server is SIGKILLed
/// and started again at once (a new TURN secret, no allocation kept): from the new server
/// listening to a chat line arriving over the rebuilt relayed link, A saying a line every
/// 100 ms until B hears one.
fn relayed_restart(
    srv: &mut Proc,
    port: u16,
    secret: &std::path::Path,
) -> anyhow::Result<Vec<Figure>> {
    const ROUNDS: usize = 3;
    let wait = Duration::from_secs(30);
    let link = format!("http://127.0.0.1:{port}/r/durable-relayed");
    let mut a = Peer::start_with(&["--relay-only", "join", &link])?;
    a.next("joined", wait)
        .ok_or_else(|| anyhow::anyhow!("a never joined"))?;
    let b = Peer::start_with(&["--relay-only", "join", &link])?;
    for p in [&a, &b] {
        let (_, c) = p
            .next("connected", wait)
            .ok_or_else(|| anyhow::anyhow!("the relayed peers never connected"))?;
        anyhow::ensure!(c["path"] == "relayed", "not relayed: {c}");
    }
    let mut back = Vec::new();
    for round in 0..ROUNDS {
        // SIGKILL, then a new server on the same port.
        let _ = srv.0.kill();
        let _ = srv.0.wait();
        *srv = server(port, secret)?;
        let up = Instant::now();
        let mut heard = None;
        for n in 0.. {
            if up.elapsed() > wait {
                break;
            }
            a.say(&format!("relayed {round} {n}"))?;
            if let Some((at, _)) = b.next("chat", Duration::from_millis(100)) {
                heard = Some(at);
                break;
            }
        }
        if let Some(at) = heard {
            back.push(at.duration_since(up).as_secs_f64() * 1000.0);
        }
        // Let the rest of this round's lines arrive before the next round.
        std::thread::sleep(Duration::from_secs(1));
        while b.next("chat", Duration::from_millis(50)).is_some() {}
    }
    let rounds = back.len();
    Ok(vec![Figure::new(
        "durable",
        "relayed link carrying chat after a server restart, median",
        quantile(&mut back, 0.5),
        "ms",
    )
    .note(format!(
        "{rounds}/{ROUNDS} rounds; --relay-only peers through the embedded TURN; the server \
         SIGKILLed and started at once (new TURN secret); from the new server listening to the \
         first chat line heard over the rebuilt link (the reach issue asks for 10 s)"
    ))])
}
