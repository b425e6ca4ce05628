//! Runs a test's body inside a private network namespace of its own, so browsers and peers only
//! ever talk to addresses that exist inside it, and everything vanishes when the test ends.
//!
//! The test calls [`enter`] first: in the parent it re-runs this very test under
//! `unshare --net` and checks that it passed; in that child it builds a tiny network (loopback
//! plus a veth pair 10.200.0.1 ↔ 10.200.0.2 with a default route, because Chromium gathers no
//! candidates without one) and lets the body run.

use std::process::Command;

const CHILD: &str = "BURROW_TEST_IN_NETNS";

/// The address of this namespace's main interface, for servers the browser must reach.
pub const HOST_IP: &str = "10.200.0.1";

/// `true` in the child (run the body), `false` in the parent (the child already ran it, or the
/// test was skipped with a printed reason).
pub fn enter(test_name: &str) -> bool {
    if std::env::var_os(CHILD).is_some() {
        build_network();
        return true;
    }
    if let Some(reason) = cannot_isolate() {
        crate::skip(test_name, &reason);
        return false;
    }
    let exe = std::env::current_exe().expect("test executable");
    let status = Command::new("unshare")
        .args(["--net", "--"])
        .arg(exe)
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .status()
        .expect("run unshare");
    assert!(
        status.success(),
        "{test_name} failed inside its network namespace"
    );
    false
}

/// Why a private network namespace cannot be made here, if it cannot.
pub fn cannot_isolate() -> Option<String> {
    match Command::new("unshare").args(["--net", "true"]).status() {
        Ok(s) if s.success() => None,
        Ok(_) => Some("cannot create a network namespace (needs root)".into()),
        Err(e) => Some(format!("cannot run unshare: {e}")),
    }
}

/// Builds the namespace's tiny network (also for the bench, which re-runs itself under
/// `unshare --net`).
pub fn build_network() {
    for cmd in [
        "link set lo up",
        "link add burrow0 type veth peer name burrow1",
        "addr add 10.200.0.1/24 dev burrow0",
        "addr add 10.200.0.2/24 dev burrow1",
        "link set burrow0 up",
        "link set burrow1 up",
        "route add default via 10.200.0.2 dev burrow0",
    ] {
        crate::lab::ip(cmd);
    }
}
