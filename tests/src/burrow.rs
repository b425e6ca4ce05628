//! Runs real `burrow` processes with `--json` and reads their events.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// How long a test waits for an event it expects (generous: this is not a timing test).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// A running `burrow` process.
pub struct Burrow {
    child: Child,
    stdin: Option<ChildStdin>,
    events: mpsc::Receiver<Value>,
    /// Every event seen so far, in order.
    pub seen: Vec<Value>,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl Burrow {
    /// `burrow --json <args>`, with stdin kept open for chat.
    pub fn start(args: &[&str]) -> Burrow {
        Burrow::spawn(Burrow::command(args))
    }

    /// The command `burrow --json <args>` (to wrap, e.g. in `ip netns exec`).
    pub fn command(args: &[&str]) -> Command {
        let mut cmd = Command::new(crate::binary("burrow"));
        cmd.arg("--json").args(args);
        cmd
    }

    /// Spawns a prepared `burrow` command (e.g. under `ip netns exec`).
    pub fn spawn(mut cmd: Command) -> Burrow {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start burrow");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, events) = mpsc::channel();
        // BURROW_TEST_ECHO=1 prints every event as it happens, to watch a test (e.g. a NAT lab
        // case) live.
        let echo = std::env::var_os("BURROW_TEST_ECHO").is_some();
        let tag = cmd
            .get_args()
            .find_map(|a| {
                a.to_str()
                    .filter(|s| s.starts_with("bl"))
                    .map(str::to_string)
            })
            .unwrap_or_else(|| "burrow".into());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("[{tag}] {line}");
                }
                match serde_json::from_str::<Value>(&line) {
                    Ok(v) => {
                        if tx.send(v).is_err() {
                            break;
                        }
                    }
                    Err(_) => eprintln!("burrow (not json): {line}"),
                }
            }
        });
        let stderr_text = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = stderr_text.clone();
        // `BURROW_TEST_LOGS=DIR` also keeps each process's stderr in DIR/burrow-PID.log, for
        // a failure that shows only under a full run (set `RUST_LOG` too).
        let keep = std::env::var_os("BURROW_TEST_LOGS").and_then(|dir| {
            std::fs::File::create(
                std::path::Path::new(&dir).join(format!("burrow-{}.log", child.id())),
            )
            .ok()
        });
        std::thread::spawn(move || {
            let mut keep = keep;
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(f) = keep.as_mut() {
                    use std::io::Write;
                    let _ = writeln!(f, "{line}");
                }
                if let Ok(mut s) = sink.lock() {
                    s.push_str(&line);
                    s.push('\n');
                }
            }
        });
        Burrow {
            stdin: child.stdin.take(),
            child,
            events,
            seen: Vec::new(),
            stderr: stderr_text,
        }
    }

    /// The process id (for memory readings).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Types a chat line.
    pub fn say(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write to burrow's stdin");
        stdin.flush().expect("flush");
    }

    /// Waits for the first event (already seen or new) that `pred` accepts.
    pub fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        if let Some(v) = self.seen.iter().find(|v| pred(v)) {
            return v.clone();
        }
        let deadline = Instant::now() + PATIENCE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.events.recv_timeout(left) {
                Ok(v) => {
                    self.seen.push(v.clone());
                    if pred(&v) {
                        return v;
                    }
                }
                Err(_) => panic!(
                    "burrow never reported {what}; events: {:#?}\nstderr: {}",
                    self.seen,
                    self.stderr()
                ),
            }
        }
    }

    /// Takes in the events printed so far, without waiting.
    pub fn drain(&mut self) {
        while let Ok(v) = self.events.try_recv() {
            self.seen.push(v);
        }
    }

    /// Whether an event of kind `event` was seen.
    pub fn has_seen(&self, event: &str) -> bool {
        self.seen.iter().any(|v| v["event"] == event)
    }

    /// The exit status, if the process has ended.
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Waits for an event of kind `event` whose fields include `fields`.
    pub fn expect_event(&mut self, event: &str, fields: &[(&str, &str)]) -> Value {
        let what = format!("{event} {fields:?}");
        self.expect(&what, |v| {
            v["event"] == event && fields.iter().all(|(k, want)| v[*k] == *want)
        })
    }

    /// Our peer id, from the `joined` event.
    pub fn peer_id(&mut self) -> String {
        self.expect_event("joined", &[])["peer_id"]
            .as_str()
            .expect("peer_id")
            .to_string()
    }

    /// What it printed on stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Closes stdin (which makes `join` quit) and waits for the exit.
    pub fn quit(&mut self) -> ExitStatus {
        self.stdin.take();
        self.wait()
    }

    /// Waits for the process to end on its own.
    pub fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + PATIENCE;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                // Drain the remaining events.
                while let Ok(v) = self.events.recv_timeout(Duration::from_millis(200)) {
                    self.seen.push(v);
                }
                return status;
            }
            assert!(Instant::now() < deadline, "burrow did not exit");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the process at once.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Burrow {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Peak resident memory of a live process so far (VmHWM), in KiB.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Writes `len` pseudo-random bytes to `path` and returns their SHA-256 (hex).
pub fn random_file(path: &Path, len: usize) -> String {
    use sha2::{Digest, Sha256};
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15 ^ len as u64;
    let mut data = vec![0u8; len];
    for chunk in data.chunks_mut(8) {
        // xorshift64*: fast, and different in every byte position.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        let v = state.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes();
        chunk.copy_from_slice(&v[..chunk.len()]);
    }
    std::fs::write(path, &data).expect("write test file");
    hex::encode(Sha256::digest(&data))
}

/// The SHA-256 of a file on disk (hex).
pub fn sha256_file(path: &Path) -> String {
    use sha2::{Digest, Sha256};
    let data = std::fs::read(path).expect("read file");
    hex::encode(Sha256::digest(&data))
}
