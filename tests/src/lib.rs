//! Support code for Burrow's end-to-end tests: start the real binaries, talk to them.
//!
//! The binaries are the ones `cargo build --workspace` put beside this test executable
//! (`target/<profile>/`); the README's test command builds them first.

pub mod browser;
pub mod burrow;
pub mod certs;
pub mod delay;
pub mod http;
pub mod lab;
pub mod netns;
pub mod sandbox;
pub mod server;
pub mod site;
pub mod udp;
pub mod ws;

use std::path::PathBuf;

/// Path of a workspace binary built next to the running test executable (or in
/// `$BURROW_BIN_DIR`: the bench points it at `target/release`).
pub fn binary(name: &str) -> PathBuf {
    let dir = match std::env::var_os("BURROW_BIN_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => {
            let exe = std::env::current_exe().expect("test executable path");
            // target/<profile>/deps/<test>-<hash> → target/<profile>/<name>
            exe.parent()
                .and_then(|deps| deps.parent())
                .expect("test executable lives in target/<profile>/deps")
                .to_path_buf()
        }
    };
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace first (cargo build --workspace --bins)",
        path.display()
    );
    path
}

/// The field names of a JSON object, sorted (to compare two peers' events field by field).
pub fn json_keys(v: &serde_json::Value) -> Vec<String> {
    let mut keys: Vec<String> = v
        .as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

/// The workspace root (for `www/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
        .to_path_buf()
}

/// Says loudly that a test could not run here, and why. Written straight to the process's
/// stderr (not through `eprintln!`, which the test harness captures), so the reason shows in the
/// run's output and in `scripts/test.sh`'s summary.
pub fn skip(test: &str, reason: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED {test}: {reason}");
}

/// A free TCP port on loopback (bound and released: fine for a test that binds it next).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A child process (a helper server of a test: coturn, Pebble, …) killed by PID and reaped when
/// dropped, so it goes even when the test fails.
pub struct KillOnDrop(pub std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A fresh folder under the system's temp dir, removed when dropped (even when the test fails).
pub struct TempDir(PathBuf);

impl TempDir {
    /// `burrow-TAG-PID`, emptied if it exists.
    pub fn new(tag: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("burrow-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl From<PathBuf> for TempDir {
    /// Takes over a folder made elsewhere (e.g. by [`certs::certificates`]): removed when
    /// dropped, however the test ends.
    fn from(dir: PathBuf) -> TempDir {
        TempDir(dir)
    }
}

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;
    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
