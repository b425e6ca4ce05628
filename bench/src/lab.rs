//! `lab`: a 64 MiB `burrow send` between two hosts behind symmetric NATs (no hole can be
//! punched: the relay carries it), beside the same transfer between two hosts behind cone NATs
//! (a hole punched, direct) in the same lab and run. The data-path issue's mark: under 3 s.
//!
//! The lab is the tests' (`burrow_tests::lab`: namespaces, nftables NATs; needs root). The bench
//! runs it in a child of itself pointed at the release binaries (`BURROW_BIN_DIR`), and takes
//! its figures; what is missing is reported, not measured.

use std::path::Path;
use std::time::Instant;

use burrow_tests::burrow::random_file;
use burrow_tests::lab::{Host, Lab, Nat};

use crate::report::{quantile, Figure};

const CHILD: &str = "BURROW_BENCH_LAB";
const BYTES: usize = 64 << 20;
const ROUNDS: usize = 3;

/// Runs the bench: in the parent, starts the child and takes its figures.
pub fn run(out: &mut Vec<Figure>) {
    crate::child::in_lab(
        "lab",
        CHILD,
        ("64 MiB, symmetric NATs (relayed)", "s"),
        measure,
        out,
    );
}

/// Seconds from `burrow send` start until the receiver has `file` (its hash `want` checked),
/// and whether the sender said the path was relayed.
fn transfer(from: &Host, to: &Host, link: &str, file: &Path, want: &str) -> (f64, bool) {
    let inbox = file.with_extension("inbox");
    let mut receiver = to.burrow(&["join", "--accept", &inbox.display().to_string(), link]);
    let receiver_id = receiver.peer_id();
    let started = Instant::now();
    let mut sender = from.burrow(&["send", &file.display().to_string(), link]);
    let sent = sender.expect_event("connected", &[("peer", &receiver_id)]);
    let got = receiver.expect_event("file_received", &[]);
    let secs = started.elapsed().as_secs_f64();
    assert_eq!(got["sha256"], want, "the file arrived intact");
    let _ = sender.wait();
    let _ = std::fs::remove_dir_all(&inbox);
    (secs, sent["path"] == "relayed")
}

/// Inside the child: the lab, a server on its internet, rounds of both transfers.
fn measure(out: &mut Vec<Figure>) {
    let Some(mut lab) = Lab::new("bench-lab") else {
        return;
    };
    let s1 = lab.behind_nat(1, Nat::Symmetric);
    let s2 = lab.behind_nat(2, Nat::Symmetric);
    let c1 = lab.behind_nat(3, Nat::EndpointIndependent);
    let c2 = lab.behind_nat(4, Nat::EndpointIndependent);
    let server = lab.server(0);
    let dir = std::env::temp_dir().join(format!("burrow-bench-lab-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let file = dir.join("bench.bin");
    let want = random_file(&file, BYTES);
    let (mut relayed, mut direct) = (Vec::new(), Vec::new());
    let mut all_relayed = true;
    let mut any_relayed_direct = false;
    for round in 0..ROUNDS {
        let link = server.room_link(&format!("sym{round}"));
        let (secs, was_relayed) = transfer(&s2, &s1, &link, &file, &want);
        relayed.push(secs);
        all_relayed &= was_relayed;
        let link = server.room_link(&format!("cone{round}"));
        let (secs, was_relayed) = transfer(&c2, &c1, &link, &file, &want);
        direct.push(secs);
        any_relayed_direct |= was_relayed;
    }
    let _ = std::fs::remove_dir_all(&dir);
    let list = |v: &[f64]| {
        v.iter()
            .map(|s| format!("{s:.2}"))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut note = format!(
        "{} MiB, {ROUNDS} rounds, release binaries, median of: relayed {} s; direct {} s",
        BYTES >> 20,
        list(&relayed),
        list(&direct)
    );
    if !all_relayed || any_relayed_direct {
        note.push_str("; a path was not the one expected (see the events)");
    }
    Figure::new(
        "lab",
        "64 MiB, symmetric NATs (relayed)",
        quantile(&mut relayed, 0.5),
        "s",
    )
    .against(
        "cone NATs, hole punched, same run",
        quantile(&mut direct, 0.5),
    )
    .note(note)
    .emit(out);
}
