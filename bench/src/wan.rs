//! `wan`: `burrow send` across two NATs on long and lossy paths, beside the kernel's TCP (cubic
//! and BBR) on the very same path in the same run (the streams issue's table).
//!
//! The NAT lab (`burrow_tests::lab`) with two hosts behind endpoint-independent NATs, so the
//! peers punch a hole and talk directly. Each router's uplink runs through a delay line
//! (`burrow_tests::delay`, set up by `Lab::slow_uplink`): a delay D each way on each uplink gives the peers a 4·D round trip.
//! TCP goes from host 2 to host 1 through a port forward (DNAT) on router 1. Each transfer is
//! timed from the link being up (`connected`) to the receiver having every byte checked.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use burrow_tests::burrow::random_file;
use burrow_tests::lab::{run as sh, Host, Lab, Nat};

use crate::report::Figure;

const CHILD: &str = "BURROW_BENCH_WAN";
/// The variable that makes the bench binary a TCP sink (`ADDR`).
const SINK: &str = "BURROW_TCPSINK";
/// The variable that makes the bench binary a TCP sender (`ADDR,CONGESTION,BYTES`).
const SEND: &str = "BURROW_TCPSEND";
/// The variable that makes the bench binary a client of requests on new connections
/// (`ADDR,COUNT`): it prints the median and 90th percentile, in milliseconds.
const PING: &str = "BURROW_TCPPING";
/// Requests timed on new connections.
const REQUESTS: usize = 30;
const TCP_PORT: u16 = 5201;
/// Longest a transfer may take before it counts as failed.
const PATIENCE: Duration = Duration::from_secs(90);

/// One path: the delay on each uplink each way, the loss on each, its rate (0: no cap), the
/// bytes to move, and whether to move them through the server's relay too.
struct Profile {
    delay_ms: f64,
    loss: f64,
    mbits: f64,
    bytes: usize,
    relayed_too: bool,
}

const fn profile(delay_ms: f64, loss: f64, mbits: f64, mib: usize, relayed_too: bool) -> Profile {
    Profile {
        delay_ms,
        loss,
        mbits,
        bytes: mib << 20,
        relayed_too,
    }
}

const PROFILES: [Profile; 5] = [
    profile(10.0, 0.0, 100.0, 16, true),
    profile(10.0, 0.0, 0.0, 32, false),
    profile(25.0, 0.0, 0.0, 32, false),
    profile(10.0, 0.001, 0.0, 8, false),
    profile(10.0, 0.01, 0.0, 4, false),
];

/// Runs the bench: in the parent, starts the child and takes its figures.
pub fn run(out: &mut Vec<Figure>) {
    crate::child::in_lab(
        "wan",
        CHILD,
        ("burrow send, 40 ms round trip", "MB/s"),
        measure,
        out,
    );
}

/// When the TCP sink or sender variable is set: runs it and exits.
pub fn serve_if_asked() {
    if let Ok(addr) = std::env::var(SINK) {
        sink(&addr);
        std::process::exit(0);
    }
    if let Ok(spec) = std::env::var(PING) {
        let (addr, count) = spec.split_once(',').unwrap_or((&spec, "10"));
        let mut times = Vec::new();
        for _ in 0..count.parse().unwrap_or(10) {
            match request(addr) {
                Ok(ms) => times.push(ms),
                Err(e) => eprintln!("request: {e}"),
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let p50 = crate::report::quantile(&mut times, 0.5);
        let p90 = crate::report::quantile(&mut times, 0.9);
        if let (Some(p50), Some(p90)) = (p50, p90) {
            println!("{p50} {p90}");
        }
        std::process::exit(0);
    }
    if let Ok(spec) = std::env::var(SEND) {
        let parts: Vec<&str> = spec.split(',').collect();
        let [addr, cc, bytes] = parts[..] else {
            std::process::exit(2);
        };
        match send(addr, cc, bytes.parse().unwrap_or(0)) {
            Ok(secs) => {
                println!("{secs}");
                std::process::exit(0);
            }
            Err(e) => {
                eprintln!("tcp send: {e}");
                std::process::exit(1);
            }
        }
    }
}

/// Accepts connections for ever: reads each to its end, then answers one byte.
fn sink(addr: &str) {
    let Ok(listener) = TcpListener::bind(addr) else {
        std::process::exit(1);
    };
    let mut buf = vec![0u8; 1 << 20];
    while let Ok((mut s, _)) = listener.accept() {
        while matches!(s.read(&mut buf), Ok(n) if n > 0) {}
        let _ = s.write_all(b"k");
    }
}

/// One request on a new connection to a sink: connect, one byte, half-close, until its answer;
/// milliseconds.
fn request(addr: &str) -> std::io::Result<f64> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    s.set_nodelay(true)?;
    s.write_all(b"?")?;
    s.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)?;
    Ok(started.elapsed().as_secs_f64() * 1000.0)
}

/// Sends `bytes` with congestion control `cc`; the seconds until the sink had them all.
fn send(addr: &str, cc: &str, bytes: usize) -> std::io::Result<f64> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr)?;
    // SAFETY: a valid socket and a buffer of the given length.
    let set = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            cc.as_ptr().cast(),
            cc.len() as libc::socklen_t,
        )
    };
    if set < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let chunk = vec![7u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])?;
        left -= n;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack)?;
    Ok(started.elapsed().as_secs_f64())
}

/// The lab's name prefix (the internet namespace is `PREFIX-inet`).
fn lab_prefix(lab: &Lab) -> String {
    lab.internet.trim_end_matches("-inet").to_string()
}

/// Seconds for `burrow send` of `file` from `from` to `to`, from `connected` to the receiver
/// having it (hash `want`); `None` if it did not arrive in time or took another path than asked
/// (`relayed`: both ends `--relay-only`; else a punched hole).
fn burrow_send(
    from: &Host,
    to: &Host,
    link: &str,
    file: &Path,
    want: &str,
    relayed: bool,
) -> Option<f64> {
    let inbox = file.with_extension("inbox");
    let inbox_arg = inbox.display().to_string();
    let file_arg = file.display().to_string();
    let only = if relayed {
        vec!["--relay-only"]
    } else {
        Vec::new()
    };
    let mut receiver = to.burrow(&[&only[..], &["join", "--accept", &inbox_arg, link]].concat());
    let receiver_id = receiver.peer_id();
    let mut sender = from.burrow(&[&only[..], &["send", &file_arg, link]].concat());
    let up = sender.expect_event("connected", &[("peer", &receiver_id)]);
    let started = Instant::now();
    let got = receiver.expect("the file", |v| {
        v["event"] == "file_received" || v["event"] == "file_failed"
    });
    let secs = started.elapsed().as_secs_f64();
    let _ = sender.wait();
    let _ = std::fs::remove_dir_all(&inbox);
    (got["sha256"] == want && (up["path"] == "relayed") == relayed && secs < PATIENCE.as_secs_f64())
        .then_some(secs)
}

/// Seconds for `bytes` over TCP with `cc` from host 2 to host 1's sink (through router 1).
fn tcp_send(from: &Host, cc: &str, bytes: usize) -> Option<f64> {
    let exe = std::env::current_exe().ok()?;
    let out = Command::new("ip")
        .args(["netns", "exec", &from.ns, "timeout", "90"])
        .arg(exe)
        .env(SEND, format!("203.0.113.1:{TCP_PORT},{cc},{bytes}"))
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

/// Inside the child: the lab, the delay lines, each path's transfers.
fn measure(out: &mut Vec<Figure>) {
    let Some(mut lab) = Lab::new("bench-wan") else {
        return;
    };
    let h1 = lab.behind_nat(1, Nat::EndpointIndependent);
    let h2 = lab.behind_nat(2, Nat::EndpointIndependent);
    let server = lab.server(0);
    // TCP to host 1 through a port forward on its router.
    let router1 = format!("{}-nat1", lab_prefix(&lab));
    sh(
        "ip",
        &format!(
            "netns exec {router1} nft add table ip portfwd ; add chain ip portfwd pre {{ type nat hook prerouting priority dstnat ; }} ; add rule ip portfwd pre iifname wan tcp dport {TCP_PORT} dnat to {}:{TCP_PORT} ; add rule inet filter forward ct status dnat accept",
            h1.ip
        ),
    );
    let exe = std::env::current_exe().expect("the bench binary");
    let mut sink = Command::new("ip")
        .args(["netns", "exec", &h1.ns])
        .arg(&exe)
        .env(SINK, format!("0.0.0.0:{TCP_PORT}"))
        .spawn()
        .expect("start the TCP sink");
    let mut lines = [lab.slow_uplink(1, 0.0, 0.0), lab.slow_uplink(2, 0.0, 0.0)];
    let set_path = |lines: &mut [burrow_tests::lab::SlowUplink; 2], p: &Profile| {
        for line in lines.iter_mut() {
            line.set(p.delay_ms, p.loss, p.mbits);
        }
    };
    let dir = std::env::temp_dir().join(format!("burrow-bench-wan-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    for (n, path) in PROFILES.iter().enumerate() {
        set_path(&mut lines, path);
        let file = dir.join(format!("wan{n}.bin"));
        let want = random_file(&file, path.bytes);
        let link = server.room_link(&format!("wan{n}"));
        let mb = |secs: Option<f64>| secs.map(|s| path.bytes as f64 / s / 1e6);
        let ours = mb(burrow_send(&h2, &h1, &link, &file, &want, false));
        let cubic = mb(tcp_send(&h2, "cubic", path.bytes));
        let bbr = mb(tcp_send(&h2, "bbr", path.bytes));
        // Through the server's relay too, on the clean paths.
        let relayed = path
            .relayed_too
            .then(|| {
                let link = server.room_link(&format!("wan{n}-relayed"));
                mb(burrow_send(&h2, &h1, &link, &file, &want, true))
            })
            .flatten();
        let _ = std::fs::remove_file(&file);
        let rtt = path.delay_ms * 4.0;
        let rate = if path.mbits > 0.0 {
            format!("{} Mbit/s", path.mbits)
        } else {
            "no rate cap".into()
        };
        let what = format!(
            "burrow send, {rtt:.0} ms round trip, {}% loss on each uplink, {rate}",
            path.loss * 100.0
        );
        let show = |v: Option<f64>| v.map_or("failed".to_string(), |v| format!("{v:.2}"));
        Figure::new("wan", &what, ours, "MB/s")
            .against("TCP cubic, same path and run", cubic)
            .note(format!(
                "{} MiB, hole punched; TCP bbr {} MB/s; through the server's relay (both \
                 --relay-only) {}; a delay line in user space on each router's uplink",
                path.bytes >> 20,
                show(bbr),
                if path.relayed_too {
                    format!("{} MB/s", show(relayed))
                } else {
                    "not run".into()
                }
            ))
            .emit(out);
    }
    // A request on a new connection, 40 ms round trip: through `burrow forward` to a service
    // `burrow expose` offers, beside the same request straight over TCP (connect, then ask).
    set_path(&mut lines, &PROFILES[1]);
    let link = server.room_link("wan-requests");
    let service = format!("127.0.0.1:{TCP_PORT}");
    let mut exposer = h1.burrow(&["expose", "--kind", "tcp", &service, &link]);
    let exposer_id = exposer.peer_id();
    let mut forwarder = h2.burrow(&["forward", &link, "--listen", "127.0.0.1:9000"]);
    forwarder.expect_event("services", &[("peer", &exposer_id)]);
    let up = forwarder.expect_event("connected", &[("peer", &exposer_id)]);
    let ping = |addr: &str| -> Option<(f64, f64)> {
        let out = Command::new("ip")
            .args(["netns", "exec", &h2.ns, "timeout", "60"])
            .arg(&exe)
            .env(PING, format!("{addr},{REQUESTS}"))
            .output()
            .ok()?;
        let text = String::from_utf8_lossy(&out.stdout);
        let mut it = text.split_whitespace().map(|v| v.parse::<f64>().ok());
        Some((it.next()??, it.next()??))
    };
    let tunnel = ping("127.0.0.1:9000");
    let direct = ping(&format!("203.0.113.1:{TCP_PORT}"));
    drop(forwarder);
    drop(exposer);
    Figure::new(
        "wan",
        "request on a new connection through forward → expose, 40 ms round trip, p50",
        tunnel.map(|t| t.0),
        "ms",
    )
    .against(
        "straight over TCP (connect, then ask), same path",
        direct.map(|d| d.0),
    )
    .note(format!(
        "{REQUESTS} requests, one at a time; p90 {} ms (TCP {} ms); path {}; one round trip \
         is 40 ms",
        tunnel.map_or("—".into(), |t| format!("{:.1}", t.1)),
        direct.map_or("—".into(), |d| format!("{:.1}", d.1)),
        up["path"].as_str().unwrap_or("?")
    ))
    .emit(out);
    drop(lines);
    let _ = sink.kill();
    let _ = sink.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
