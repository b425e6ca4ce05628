//! Each fuzz target for a bounded time (`BURROW_FUZZ_SECS`, default 3 s; `BURROW_FUZZ_SEED` to
//! repeat a run), and the seeds' own checks. Longer runs: `cargo run --release -p burrow-fuzz`.

use std::io::Write;

use burrow_fuzz::{fuzz, target, Options, TARGETS};

fn run(name: &str) {
    let Some(t) = target(name) else {
        panic!("no fuzz target {name}");
    };
    match fuzz(t, &Options::from_env()) {
        // Straight to stderr: the harness would hide an `eprintln!`.
        Ok(report) => {
            let _ = writeln!(std::io::stderr(), "fuzz {report}");
        }
        Err(failure) => {
            let saved = failure
                .save()
                .map(|p| format!("burrow-fuzz --replay {} {name}", p.display()))
                .unwrap_or_default();
            panic!("{failure}\n  {saved}");
        }
    }
}

#[test]
fn client_message() {
    run("client_message");
}

#[test]
fn server_message() {
    run("server_message");
}

#[test]
fn room_id() {
    run("room_id");
}

#[test]
fn control_message() {
    run("control_message");
}

#[test]
fn stream_message() {
    run("stream_message");
}

#[test]
fn file_message() {
    run("file_message");
}

#[test]
fn file_transfer() {
    run("file_transfer");
}

#[test]
fn file_name() {
    run("file_name");
}

#[test]
fn room_link() {
    run("room_link");
}

#[test]
fn stun_message() {
    run("stun_message");
}

#[test]
fn text() {
    run("text");
}

#[test]
fn every_target_has_a_test_and_passing_seeds() {
    let here = include_str!("targets.rs");
    for t in TARGETS {
        assert!(
            here.contains(&format!("fn {}()", t.name)),
            "{} has no test here",
            t.name
        );
        for seed in t.seeds() {
            if let Err(e) = t.run_once(&seed) {
                panic!(
                    "{}: seed {:?} fails: {e}",
                    t.name,
                    String::from_utf8_lossy(&seed)
                );
            }
        }
    }
}

#[test]
fn json_seeds_are_canonical() {
    // encode(decode(x)) == x for every valid JSON seed: the wire formats are stable.
    fn canonical<T: serde::Serialize + serde::de::DeserializeOwned>(seed: &[u8]) {
        let text = std::str::from_utf8(seed).expect("seeds are UTF-8");
        let value: T = serde_json::from_str(text).expect("seed decodes");
        assert_eq!(serde_json::to_string(&value).expect("encodes"), text);
    }
    let seeds = |name: &str| target(name).expect("target").seeds();
    for s in seeds("client_message") {
        canonical::<signal_protocol::ClientMessage>(&s);
    }
    for s in seeds("server_message") {
        canonical::<signal_protocol::ServerMessage>(&s);
    }
    for s in seeds("control_message") {
        canonical::<peer_core::channels::ControlMessage>(&s);
    }
    for s in seeds("stream_message") {
        canonical::<peer_core::channels::StreamMessage>(&s);
    }
    for s in seeds("file_message") {
        canonical::<peer_core::channels::FileMessage>(&s);
    }
}
