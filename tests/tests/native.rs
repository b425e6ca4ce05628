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
fn a_bad_link_fails_clearly_and_an_unreachable_server_is_retried() {
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
    // `join` does not give up: it says why, once, and keeps trying with growing delays.
    let mut gone = Burrow::start(&["join", &link]);
    let warning = gone.expect_event("warning", &[]);
    assert!(
        warning["message"]
            .as_str()
            .is_some_and(|m| m.contains("cannot reach the server")),
        "{warning}"
    );
    gone.expect_event("server_lost", &[]);
    let second = gone.expect("a second attempt", |v| {
        v["event"] == "server_lost" && v["retry_in_ms"].as_u64().is_some_and(|ms| ms > 700)
    });
    assert!(
        second["retry_in_ms"].as_u64().unwrap() <= 12_500,
        "{second}"
    );
    assert!(gone.try_exit().is_none(), "still trying");
    gone.drain();
    let warnings = gone.seen.iter().filter(|v| v["event"] == "warning").count();
    assert_eq!(warnings, 1, "said once: {:?}", gone.seen);
    // `send` gives up at its --timeout.
    let file = std::env::temp_dir().join(format!("burrow-timeout-{}", std::process::id()));
    std::fs::write(&file, b"x").unwrap();
    let mut send = Burrow::start(&["send", "--timeout", "2", file.to_str().unwrap(), &link]);
    assert!(!send.wait().success());
    assert!(send.stderr().contains("timed out"), "{}", send.stderr());
    let _ = std::fs::remove_file(&file);

    let mut missing = Burrow::start(&["send", "/no/such/file", &link]);
    assert!(!missing.wait().success());
    assert!(missing.stderr().contains("cannot read /no/such/file"));
}

#[test]
fn a_full_room_is_refused_clearly_and_joined_when_a_place_frees() {
    let server = ServerProcess::start(&["--max-peers-per-room", "1"]);
    let link = server.room_link("tiny");
    let mut a = Burrow::start(&["join", &link]);
    a.peer_id();
    let mut b = Burrow::start(&["join", &link]);
    let refused = b.expect_event("error", &[("code", "room_full")]);
    assert!(
        refused["message"]
            .as_str()
            .is_some_and(|m| m.contains("full")),
        "{refused}"
    );
    assert!(b.try_exit().is_none(), "b waits for a place");
    assert!(a.quit().success());
    b.peer_id();
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
}

/// A folder for one test, removed when the test ends, however it ends.
fn tempdir(tag: &str) -> burrow_tests::TempDir {
    burrow_tests::TempDir::new(&format!("test-{tag}"))
}

/// A `burrow` process in human mode (no `--json`): its stdout as raw bytes, to check what a
/// terminal would receive.
struct HumanBurrow {
    child: std::process::Child,
    out: std::sync::Arc<std::sync::Mutex<Vec<u8>>>,
}

impl HumanBurrow {
    fn start(args: &[&str]) -> HumanBurrow {
        use std::io::Read;
        let mut child = std::process::Command::new(burrow_tests::binary("burrow"))
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("start burrow");
        let mut stdout = child.stdout.take().expect("piped stdout");
        let out = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = out.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        HumanBurrow { child, out }
    }

    fn bytes(&self) -> Vec<u8> {
        self.out.lock().unwrap().clone()
    }

    /// Waits until stdout holds `needle`.
    fn wait_for(&self, needle: &str) {
        let deadline = std::time::Instant::now() + burrow_tests::burrow::PATIENCE;
        while !String::from_utf8_lossy(&self.bytes()).contains(needle) {
            assert!(
                std::time::Instant::now() < deadline,
                "burrow never printed {needle:?}; stdout: {:?}",
                String::from_utf8_lossy(&self.bytes())
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for HumanBurrow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn terminal_escapes_from_a_peer_never_reach_the_terminal() {
    let server = ServerProcess::start(&[]);
    let link = server.room_link("escapes");
    let b = HumanBurrow::start(&["--name", "bob", "join", "--no-stdin", &link]);
    b.wait_for("joined room escapes");
    // ESC and BEL in the name and a right-to-left override (the server strips them too; the
    // receiver does not rely on it).
    let mut a = Burrow::start(&["--name", "mal\x1b]0;x\x07\u{202e}lory", "join", &link]);
    let ida = a.peer_id();
    a.expect_event("connected", &[]);
    b.wait_for(&format!("* connected to {ida}"));

    // An OSC 0 title change, a CSI erase line + carriage return to forge a status line, an OSC
    // 52 clipboard write, an 8-bit CSI (U+009B), a bidi override.
    a.say(
        "hi \x1b]0;owned\x07title \x1b[2K\r* forged status \x1b]52;c;b3duZWQ=\x07clip \u{9b}31m \u{202e}end-of-line",
    );
    b.wait_for("end-of-line");
    let out = b.bytes();
    let text = String::from_utf8(out.clone()).expect("stdout is UTF-8");
    // No byte that starts an escape sequence or rings the bell. (The test's other output is
    // ASCII plus "↔" (E2 86 94), so a 0x9B byte can only be a leaked U+009B's.)
    for bad in [0x1b, 0x07, 0x9b] {
        assert!(
            !out.contains(&bad),
            "byte {bad:#04x} reached stdout: {text:?}"
        );
    }
    assert!(
        !text.contains('\u{202e}'),
        "bidi override reached stdout: {text:?}"
    );
    assert!(
        !text.contains('\r'),
        "carriage return reached stdout: {text:?}"
    );
    // The visible rest of the line is shown, on one line of its own.
    let want = format!(
        "<mal]0;xlory ({ida})> hi ]0;ownedtitle [2K * forged status ]52;c;b3duZWQ=clip 31m end-of-line"
    );
    assert!(
        text.lines().any(|l| l == want),
        "expected {want:?} in {text:?}"
    );
    assert!(
        !text.lines().any(|l| l.starts_with("* forged")),
        "a forged status line: {text:?}"
    );
}

/// Ctrl-C in the middle of receiving a file: `burrow` quits promptly and leaves no `.part` file
/// (the sender is frozen, so the transfer is surely unfinished).
#[test]
fn quitting_mid_transfer_leaves_no_part_file() {
    let server = ServerProcess::start(&[]);
    let link = server.room_link("quit-mid");
    let dir = tempdir("quit-mid");
    let inbox = dir.join("inbox");
    let source = dir.join("big.bin");
    random_file(&source, 64 * 1024 * 1024);
    let mut receiver = Burrow::start(&["join", "--accept", inbox.to_str().unwrap(), &link]);
    receiver.peer_id();
    let mut sender = Burrow::start(&["send", source.to_str().unwrap(), &link]);
    let parts = || {
        std::fs::read_dir(&inbox)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".part"))
                    .count()
            })
            .unwrap_or(0)
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while parts() == 0 {
        assert!(std::time::Instant::now() < deadline, "no transfer started");
        std::thread::sleep(Duration::from_millis(5));
    }
    let stop = |p: &Burrow, sig| {
        let pid = libc::pid_t::try_from(p.pid()).expect("pid");
        // SAFETY: signals to children this test started and still owns.
        unsafe { libc::kill(pid, sig) };
    };
    stop(&sender, libc::SIGSTOP);
    stop(&receiver, libc::SIGINT);
    let quit = std::time::Instant::now();
    receiver.wait();
    assert!(quit.elapsed() < Duration::from_secs(8), "quit promptly");
    assert_eq!(parts(), 0, "no .part file left in {}", inbox.display());
    stop(&sender, libc::SIGCONT);
    sender.kill();
}

/// A file announced larger than the receiver's free disk space (a sparse 1 TiB file, read as
/// zeros) is refused before a byte is written: the sender is told why and fails, the receiver
/// says so, and nothing is left in its folder.
#[test]
fn a_file_larger_than_the_free_disk_is_refused_up_front() {
    let server = ServerProcess::start(&[]);
    let link = server.room_link("disk");
    let dir = tempdir("disk");
    let source = dir.join("huge.bin");
    std::fs::File::create(&source)
        .and_then(|f| f.set_len(1 << 40))
        .expect("a sparse file");
    let inbox = dir.join("inbox");
    let mut receiver = Burrow::start(&["join", "--accept", inbox.to_str().unwrap(), &link]);
    receiver.peer_id();
    let mut sender = Burrow::start(&["send", source.to_str().unwrap(), &link]);
    let told = sender.expect_event("file_failed", &[]);
    let reason = told["reason"].as_str().unwrap_or_default().to_string();
    assert!(
        reason.starts_with(
            "the receiver refused it: not enough free disk space here (1.00 TiB announced,"
        ),
        "{told}"
    );
    let status = sender.wait();
    assert!(!status.success(), "the send failed");
    let seen = receiver.expect_event("file_failed", &[]);
    assert!(
        seen["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("not enough free disk space here"),
        "{seen}"
    );
    let left: Vec<_> = std::fs::read_dir(&inbox).unwrap().collect();
    assert!(left.is_empty(), "nothing written: {left:?}");
}

/// A small disk: the receiver's folder is a 3 MiB tmpfs in a mount namespace of its own (only
/// it sees the mount, gone with it; the receiver checks each file's SHA-256 itself). Two 2 MiB files sent at once each fit what is free when
/// announced, not both: one arrives intact, the other is refused (up front if the first had
/// already taken the space, else at the write that ran out), its sender told why; nothing
/// half-written is left, and a file that fits what is left arrives.
#[test]
fn a_small_disk_takes_what_fits_and_refuses_the_rest_with_the_reason() {
    const TEST: &str = "a_small_disk_takes_what_fits_and_refuses_the_rest_with_the_reason";
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        burrow_tests::skip(TEST, "mounting a tmpfs needs root");
        return;
    }
    let server = ServerProcess::start(&[]);
    let link = server.room_link("small-disk");
    let dir = tempdir("small-disk");
    let inbox = dir.join("inbox");
    std::fs::create_dir_all(&inbox).unwrap();
    let mut cmd = std::process::Command::new("unshare");
    cmd.args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg("mount -t tmpfs -o size=3m burrow-test \"$0\" && exec \"$@\"")
        .arg(&inbox)
        .arg(burrow_tests::binary("burrow"))
        .args(["--json", "join", "--accept"])
        .arg(&inbox)
        .arg(&link);
    let mut receiver = Burrow::spawn(cmd);
    receiver.peer_id();
    let files: Vec<_> = (0..2)
        .map(|i| {
            let path = dir.join(format!("two-mib-{i}.bin"));
            let sha = random_file(&path, 2 << 20);
            (path, sha)
        })
        .collect();
    let mut senders: Vec<Burrow> = files
        .iter()
        .map(|(path, _)| Burrow::start(&["send", path.to_str().unwrap(), &link]))
        .collect();
    let got = receiver.expect_event("file_received", &[]);
    let failed = receiver.expect_event("file_failed", &[]);
    assert!(
        files.iter().any(|(_, sha)| got["sha256"] == sha.as_str()),
        "{got}"
    );
    // Each sender also offers its file to the other sender (a `burrow send` in the room, which
    // refuses it): only what each was told of the receiver counts.
    let rid = receiver.peer_id();
    let told: Vec<serde_json::Value> = senders
        .iter_mut()
        .filter_map(|s| {
            s.wait();
            s.seen
                .iter()
                .find(|v| v["event"] == "file_failed" && v["peer"] == rid.as_str())
                .cloned()
        })
        .collect();
    assert_eq!(
        told.len(),
        1,
        "one sender is refused by the receiver: {told:?}"
    );
    let reason = told[0]["reason"].as_str().unwrap_or_default();
    eprintln!("the refused sender was told: {reason}");
    assert!(
        reason.contains("not enough free disk space here")
            || reason.contains("cannot write the file here"),
        "the sender is told why: {}; the receiver said {failed}",
        told[0]
    );
    // Nothing half-written stays: the refused file's part is removed, so what fits in the
    // 1 MiB left still arrives (the mount is the receiver's own: this process cannot look).
    let small = dir.join("small.bin");
    let want = random_file(&small, 300_000);
    let mut sender = Burrow::start(&["send", small.to_str().unwrap(), &link]);
    let got = receiver.expect_event("file_received", &[("name", "small.bin")]);
    assert_eq!(got["sha256"], want.as_str());
    assert!(sender.wait().success());
    drop(receiver);
}

/// `--max-file-size`: a file announced larger is refused before a byte is written (the sender
/// told why, nothing left in the folder); one within it arrives intact.
#[test]
fn a_file_over_max_file_size_is_refused_and_one_within_it_arrives() {
    let server = ServerProcess::start(&[]);
    let link = server.room_link("max-size");
    let dir = tempdir("max-size");
    let big = dir.join("big.bin");
    random_file(&big, 300_000);
    let small = dir.join("small.bin");
    let want = random_file(&small, 200_000);
    let inbox = dir.join("inbox");
    let mut receiver = Burrow::start(&[
        "join",
        "--accept",
        inbox.to_str().unwrap(),
        "--max-file-size",
        "256KiB",
        &link,
    ]);
    receiver.peer_id();
    let mut sender = Burrow::start(&["send", big.to_str().unwrap(), &link]);
    let told = sender.expect_event("file_failed", &[]);
    assert_eq!(
        told["reason"],
        "the receiver refused it: too large: this peer accepts files up to 256.00 KiB (292.97 KiB announced)",
        "{told}"
    );
    assert!(!sender.wait().success(), "the send failed");
    let seen = receiver.expect_event("file_failed", &[]);
    assert!(
        seen["reason"]
            .as_str()
            .unwrap_or_default()
            .contains("too large"),
        "{seen}"
    );
    assert_eq!(
        std::fs::read_dir(&inbox).unwrap().count(),
        0,
        "nothing written"
    );
    let mut sender = Burrow::start(&["send", small.to_str().unwrap(), &link]);
    let got = receiver.expect_event("file_received", &[]);
    assert_eq!(got["sha256"], want.as_str());
    assert!(sender.wait().success());
}

/// A file whose name is near the file system's 255-byte limit arrives, its name cut to fit
/// (extension kept), its bytes intact: the receiver's temporary name no longer grows with it.
#[test]
fn a_file_with_a_250_byte_name_arrives_intact() {
    let server = ServerProcess::start(&[]);
    let link = server.room_link("longname");
    let dir = tempdir("longname");
    let name = format!("{}.bin", "n".repeat(246));
    let source = dir.join(&name);
    let want = random_file(&source, 100_000);
    let inbox = dir.join("inbox");
    let mut receiver = Burrow::start(&["join", "--accept", inbox.to_str().unwrap(), &link]);
    receiver.peer_id();
    let mut sender = Burrow::start(&["send", source.to_str().unwrap(), &link]);
    let got = receiver.expect_event("file_received", &[]);
    let kept = format!("{}.bin", "n".repeat(236));
    assert_eq!(got["name"], kept.as_str(), "{got}");
    assert_eq!(got["sha256"], want.as_str());
    assert_eq!(sha256_file(&inbox.join(&kept)), want);
    assert!(sender.wait().success(), "the sender got its verdict");
}
