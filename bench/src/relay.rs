//! `relay`: a relayed `burrow send` whose sender reaches the relay over UDP, over TCP (its
//! network drops UDP) and over TLS on 443 (its network lets only HTTPS out), same lab, same
//! server, same run: the time from `burrow send` starting to `connected`, the round trip the
//! ICE checks measured, and the transfer's rate. The receiver always relays over UDP.

use std::path::Path;
use std::time::Instant;

use burrow_tests::burrow::random_file;
use burrow_tests::lab::{Host, Lab, Nat, SERVER_IP};

use crate::report::{quantile, Figure};

const CHILD: &str = "BURROW_BENCH_RELAY";
const BYTES: usize = 16 << 20;
const ROUNDS: usize = 3;

/// Runs the bench: in the parent, starts the child and takes its figures.
pub fn run(out: &mut Vec<Figure>) {
    crate::child::in_lab(
        "relay",
        CHILD,
        ("16 MiB relayed, sender over TCP: rate", "MB/s"),
        measure,
        out,
    );
}

/// One relayed transfer: (seconds to `connected`, rtt ms, MB/s, how the sender relayed).
fn transfer(
    from: &Host,
    to: &Host,
    link: &str,
    ca: &str,
    file: &Path,
    want: &str,
) -> Option<(f64, f64, f64, String)> {
    let inbox = file.with_extension("inbox");
    let mut receiver = to.burrow(&[
        "--ca-cert",
        ca,
        "join",
        "--accept",
        &inbox.display().to_string(),
        link,
    ]);
    let receiver_id = receiver.peer_id();
    let started = Instant::now();
    let mut sender = from.burrow(&["--ca-cert", ca, "send", &file.display().to_string(), link]);
    let up = sender.expect_event("connected", &[("peer", &receiver_id)]);
    let connect = started.elapsed().as_secs_f64();
    let moving = Instant::now();
    let got = receiver.expect("the file", |v| {
        v["event"] == "file_received" || v["event"] == "file_failed"
    });
    let secs = moving.elapsed().as_secs_f64();
    let _ = sender.wait();
    let _ = std::fs::remove_dir_all(&inbox);
    (got["sha256"] == want && up["path"] == "relayed").then(|| {
        (
            connect,
            up["rtt_ms"].as_f64().unwrap_or(f64::NAN),
            BYTES as f64 / secs / 1e6,
            up["relay_over"].as_str().unwrap_or("none").to_string(),
        )
    })
}

/// Inside the child: the lab, a TLS server on 443, rounds of the three transfers.
fn measure(out: &mut Vec<Figure>) {
    let Some(mut lab) = Lab::new("bench-relay") else {
        return;
    };
    let receiver = lab.behind_nat(1, Nat::Symmetric);
    let udp = lab.behind_nat(2, Nat::Symmetric);
    let tcp = lab.behind_nat(3, Nat::Symmetric);
    let tls = lab.behind_nat(4, Nat::Symmetric);
    lab.block_udp(3);
    lab.allow_only_https(4);
    let (certs, ca, cert, key) = burrow_tests::certs::certificates("bench-relay", &[SERVER_IP]);
    let server = lab.server_with(
        443,
        &[
            "--tls-cert",
            &cert.display().to_string(),
            "--tls-key",
            &key.display().to_string(),
        ],
    );
    let ca = ca.display().to_string();
    let dir = std::env::temp_dir().join(format!("burrow-bench-relay-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("bench.bin");
    let want = random_file(&file, BYTES);
    let senders = [("udp", &udp), ("tcp", &tcp), ("tls", &tls)];
    let mut seen: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); senders.len()];
    let mut paths = Vec::new();
    for round in 0..ROUNDS {
        for (i, (name, host)) in senders.iter().enumerate() {
            let link = format!("https://{}/r/{name}{round}", server.http);
            if let Some((connect, rtt, rate, over)) =
                transfer(host, &receiver, &link, &ca, &file, &want)
            {
                seen[i].push((connect, rtt, rate));
                paths.push(format!("{name}→{over}"));
            }
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&certs);
    let median = |i: usize, pick: fn(&(f64, f64, f64)) -> f64| {
        let mut v: Vec<f64> = seen[i].iter().map(pick).collect();
        quantile(&mut v, 0.5)
    };
    let note = format!(
        "{} MiB, {ROUNDS} rounds (medians), release binaries, receiver relayed over UDP; \
         how each sender reached the relay (none: its own side was not relayed): {}",
        BYTES >> 20,
        paths.join(" ")
    );
    type Pick = fn(&(f64, f64, f64)) -> f64;
    let metrics: [(&str, &str, Pick); 3] = [
        ("rate", "MB/s", |s| s.2),
        ("time to connected", "s", |s| s.0),
        ("round trip", "ms", |s| s.1),
    ];
    for (metric, unit, pick) in metrics {
        for (i, over) in [(1, "TCP"), (2, "TLS on 443")] {
            Figure::new(
                "relay",
                &format!("16 MiB relayed, sender over {over}: {metric}"),
                median(i, pick),
                unit,
            )
            .against("sender over UDP, same run", median(0, pick))
            .note(note.clone())
            .emit(out);
        }
    }
}
