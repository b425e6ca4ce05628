//! Native peers (`burrow` processes) against a real server on loopback.

use std::time::Duration;

use burrow_tests::burrow::{peak_rss_kib, random_file, sha256_file, Burrow};
use burrow_tests::server::ServerProcess;

#[test]
fn two_peers_chat_both_ways() {
    let server = ServerProcess::start(&[]);
    let link = server.room_link("chat2");
    let mut a = Burrow::start(&["--name", "alice", "join", &link]);
    let ida = a.peer_id();
    let mut b = Burrow::start(&["--name", "bob", "join", &link]);
    let idb = b.peer_id();
    a.expect_event("connected", &[("peer", &idb)]);
    b.expect_event("connected", &[("peer", &ida)]);

    a.say("hello bob, ünïcødé ✓");
    let got = b.expect_event("chat", &[("from", &ida)]);
    assert_eq!(got["text"], "hello bob, ünïcødé ✓");
    assert_eq!(got["name"], "alice");
    b.say("hi alice");
    let got = a.expect_event("chat", &[("from", &idb)]);
    assert_eq!(got["text"], "hi alice");
    assert_eq!(got["name"], "bob");

    // Both report how they are connected: on loopback, host to host.
    let conn = a.expect_event("connected", &[("peer", &idb)]);
    assert_eq!(conn["path"], "direct_lan", "{conn}");
    assert_eq!(conn["label"], "direct (LAN)");
}

#[test]
fn three_peers_form_a_full_mesh() {
    let server = ServerProcess::start(&[]);
    let link = server.room_link("mesh3");
    let mut peers: Vec<Burrow> = Vec::new();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut p = Burrow::start(&["join", &link]);
        ids.push(p.peer_id());
        peers.push(p);
    }
    for (i, p) in peers.iter_mut().enumerate() {
        for (j, id) in ids.iter().enumerate() {
            if i != j {
                p.expect_event("connected", &[("peer", id)]);
            }
        }
    }
    for (i, id) in ids.iter().enumerate() {
        let line = format!("line from peer {i}");
        peers[i].say(&line);
        for (j, other) in peers.iter_mut().enumerate() {
            if i != j {
                let got = other.expect_event("chat", &[("from", id)]);
                assert_eq!(got["text"], line.as_str());
            }
        }
    }
}

#[test]
fn a_64_mib_file_arrives_intact_with_bounded_sender_memory() {
    let server = ServerProcess::start(&[]);
    let link = server.room_link("files");
    let dir = tempdir("files");
    let inbox = dir.join("inbox");
    let source = dir.join("random.bin");
    let len = 64 * 1024 * 1024;
    let want = random_file(&source, len);

    let mut receiver = Burrow::start(&["join", "--accept", inbox.to_str().unwrap(), &link]);
    let rid = receiver.peer_id();
    let mut sender = Burrow::start(&["send", source.to_str().unwrap(), &link]);
    let pid = sender.pid();
    // Sample the sender's peak RSS while it runs.
    let mut peak = 0;
    loop {
        if let Some(kib) = peak_rss_kib(pid) {
            peak = peak.max(kib);
        }
        sender.drain();
        if sender.has_seen("file_sent") {
            break;
        }
        if let Some(status) = sender.try_exit() {
            sender.drain();
            assert!(
                sender.has_seen("file_sent"),
                "sender ended early: {status:?} {:?}",
                sender.seen
            );
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let sent = sender.expect_event("file_sent", &[("to", &rid)]);
    assert_eq!(sent["sha256"], want.as_str());
    assert!(sender.wait().success(), "send exits 0 once confirmed");

    let got = receiver.expect_event("file_received", &[]);
    assert_eq!(got["sha256"], want.as_str());
    assert_eq!(got["size"], len as u64);
    let saved = std::path::PathBuf::from(got["path"].as_str().unwrap());
    assert_eq!(saved, inbox.join("random.bin"));
    assert_eq!(sha256_file(&saved), want, "bytes on disk hash right");
    // No partial files left behind.
    let names: Vec<_> = std::fs::read_dir(&inbox)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");

    eprintln!("sender peak RSS: {} KiB for a {} MiB file", peak, len >> 20);
    // Bounded: far below the file's size plus the process's baseline.
    assert!(
        peak < 64 * 1024,
        "sender peak RSS {peak} KiB: memory not bounded"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_peer_that_quits_is_reported_left() {
    let server = ServerProcess::start(&[]);
    let link = server.room_link("quit");
    let mut a = Burrow::start(&["join", &link]);
    a.peer_id();
    let mut b = Burrow::start(&["join", &link]);
    let idb = b.peer_id();
    a.expect_event("connected", &[("peer", &idb)]);
    assert!(b.quit().success(), "end of stdin quits cleanly");
    a.expect_event("peer_left", &[("peer", &idb)]);
}

#[test]
fn bad_link_and_unreachable_server_fail_clearly() {
    let mut bad = Burrow::start(&["join", "ftp://nowhere/x"]);
    let status = bad.wait();
    assert!(!status.success());
    assert!(
        bad.stderr().contains("is not a room link"),
        "{}",
        bad.stderr()
    );

    let mut bad_room = Burrow::start(&["join", "http://127.0.0.1:1/r/bad.room"]);
    assert!(!bad_room.wait().success());
    assert!(
        bad_room.stderr().contains("bad room id"),
        "{}",
        bad_room.stderr()
    );

    // A port nothing listens on.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let link = format!("http://127.0.0.1:{port}/r/room");
    let mut gone = Burrow::start(&["join", &link]);
    assert!(!gone.wait().success());
    let err = gone.stderr();
    assert!(err.contains("cannot reach the server"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");

    let mut missing = Burrow::start(&["send", "/no/such/file", &link]);
    assert!(!missing.wait().success());
    assert!(missing.stderr().contains("cannot read /no/such/file"));
}

#[test]
fn a_full_room_is_refused_clearly() {
    let server = ServerProcess::start(&["--max-peers-per-room", "1"]);
    let link = server.room_link("tiny");
    let mut a = Burrow::start(&["join", &link]);
    a.peer_id();
    let mut b = Burrow::start(&["join", &link]);
    assert!(!b.wait().success());
    assert!(b.stderr().contains("room_full"), "{}", b.stderr());
}

#[test]
fn a_receiver_vanishing_mid_transfer_fails_the_send() {
    let server = ServerProcess::start(&[]);
    let link = server.room_link("vanish");
    let dir = tempdir("vanish");
    let source = dir.join("big.bin");
    random_file(&source, 256 * 1024 * 1024);
    let inbox = dir.join("inbox");
    let mut receiver = Burrow::start(&["join", "--accept", inbox.to_str().unwrap(), &link]);
    receiver.peer_id();
    let mut sender = Burrow::start(&["send", source.to_str().unwrap(), &link]);
    sender.expect_event("connected", &[]);
    // Let some bytes flow, then pull the plug.
    std::thread::sleep(Duration::from_millis(500));
    receiver.kill();
    let status = sender.wait();
    assert!(!status.success(), "{:?}", sender.seen);
    assert!(sender.stderr().contains("failed"), "{}", sender.stderr());
    let _ = std::fs::remove_dir_all(&dir);
}

fn tempdir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("burrow-test-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
