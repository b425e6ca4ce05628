//! Real processes for the benches that need them: `burrow` peers whose JSON events are read as
//! they come, and children killed when dropped.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// A child process killed when dropped.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A `burrow --json` process and its events, each stamped when it was read.
pub struct Peer {
    /// The process.
    pub proc: Proc,
    /// Its stdin (closing it ends `join`).
    stdin: Option<std::process::ChildStdin>,
    events: mpsc::Receiver<(Instant, Value)>,
}

impl Peer {
    /// `burrow --json join LINK` plus `extra` arguments.
    pub fn start(link: &str) -> anyhow::Result<Peer> {
        Peer::start_with(&["join", link])
    }

    /// `burrow --json ARGS…`.
    pub fn start_with(args: &[&str]) -> anyhow::Result<Peer> {
        let bin = std::env::current_exe()?.with_file_name("burrow");
        let mut child = Command::new(&bin)
            .arg("--json")
            .args(args)
            .env("RUST_LOG", "off")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start {}: {e}", bin.display()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let (tx, events) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    if tx.send((Instant::now(), v)).is_err() {
                        break;
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        Ok(Peer {
            proc: Proc(child),
            stdin,
            events,
        })
    }

    /// Closes stdin: `join` leaves the room and quits (closing its recordings first).
    pub fn close_stdin(&mut self) {
        self.stdin.take();
    }

    /// Writes `line` to stdin (`join` says it as chat).
    pub fn say(&mut self, line: &str) -> anyhow::Result<()> {
        use std::io::Write;
        let stdin = self
            .stdin
            .as_mut()
            .ok_or_else(|| anyhow::anyhow!("stdin closed"))?;
        writeln!(stdin, "{line}")?;
        Ok(stdin.flush()?)
    }

    /// The time of the next event named `name` (others are skipped), within `wait`.
    pub fn next(&self, name: &str, wait: Duration) -> Option<(Instant, Value)> {
        self.next_counting(name, "", wait).map(|(at, v, _)| (at, v))
    }

    /// The same, also counting the skipped events named `count`.
    pub fn next_counting(
        &self,
        name: &str,
        count: &str,
        wait: Duration,
    ) -> Option<(Instant, Value, usize)> {
        let deadline = Instant::now() + wait;
        let mut seen = 0;
        loop {
            let left = deadline.checked_duration_since(Instant::now())?;
            let (at, v) = self.events.recv_timeout(left).ok()?;
            if v["event"] == name {
                return Some((at, v, seen));
            }
            if v["event"] == count {
                seen += 1;
            }
        }
    }

    pub fn signal(&self, sig: libc::c_int) {
        if let Ok(pid) = libc::pid_t::try_from(self.proc.0.id()) {
            // SAFETY: kill(2) on a child this bench started and still owns.
            unsafe { libc::kill(pid, sig) };
        }
    }
}
