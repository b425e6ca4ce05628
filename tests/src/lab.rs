//! Small helpers for network set-up commands.

use std::process::Command;

/// Runs `ip <args>` and fails the test with its stderr if it fails.
pub fn ip(args: &str) {
    run("ip", args);
}

/// Runs `prog <args>` (split on spaces) and fails the test with its stderr if it fails.
pub fn run(prog: &str, args: &str) {
    let out = Command::new(prog)
        .args(args.split_whitespace())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {prog}: {e}"));
    assert!(
        out.status.success(),
        "{prog} {args} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
