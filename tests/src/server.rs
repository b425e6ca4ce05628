//! Starts a real `signal-server` process on free ports and stops it when dropped.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// A running `signal-server` child process.
pub struct ServerProcess {
    child: Child,
    /// Its HTTP/WebSocket address.
    pub http: SocketAddr,
    /// Its STUN/TURN UDP address.
    pub stun: SocketAddr,
    /// Its second STUN address.
    pub stun_alt: SocketAddr,
    /// Its `/metrics` address, when started with `--metrics-listen`.
    pub metrics: Option<SocketAddr>,
    /// Its plain-HTTP redirect address, when started with `--http-redirect-listen`.
    pub redirect: Option<SocketAddr>,
}

impl ServerProcess {
    /// Starts the server on loopback with port 0 everywhere, plus `extra` flags.
    pub fn start(extra: &[&str]) -> ServerProcess {
        Self::start_on("127.0.0.1", extra)
    }

    /// Starts the server on `ip` with port 0 everywhere, plus `extra` flags.
    pub fn start_on(ip: &str, extra: &[&str]) -> ServerProcess {
        Self::spawn(Self::command(ip, extra))
    }

    /// Starts the server on loopback at HTTP port `port` (to restart it where its clients
    /// expect it), plus `extra` flags.
    pub fn start_at(port: u16, extra: &[&str]) -> ServerProcess {
        Self::spawn(Self::command_at("127.0.0.1", port, extra))
    }

    /// The command that starts the server on `ip` (to wrap, e.g. in `ip netns exec`).
    pub fn command(ip: &str, extra: &[&str]) -> Command {
        Self::command_at(ip, 0, extra)
    }

    /// The command that starts the server on `ip`, HTTP port `port` (0: any).
    pub fn command_at(ip: &str, port: u16, extra: &[&str]) -> Command {
        let www = crate::workspace_root().join("www");
        let mut cmd = Command::new(crate::binary("signal-server"));
        cmd.arg("--listen")
            .arg(format!("{ip}:{port}"))
            .arg("--stun-listen")
            .arg(format!("{ip}:0"))
            .arg("--www")
            .arg(www)
            .args(extra);
        if std::env::var_os("RUST_LOG").is_none() {
            cmd.env("RUST_LOG", "warn,turn=off");
        }
        cmd
    }

    /// Spawns a prepared server command (e.g. wrapped in `ip netns exec`) and waits for its
    /// "listening" line.
    pub fn spawn(mut cmd: Command) -> ServerProcess {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start signal-server");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read server's first line");
        let field = |key: &str| -> SocketAddr {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("server printed no {key} address: {line:?}"))
        };
        let http = field("http=");
        let stun = field("stun=");
        let stun_alt = field("stun-alt=");
        let optional = |key: &str| -> Option<SocketAddr> {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(key))
                .and_then(|v| v.parse().ok())
        };
        let metrics = optional("metrics=");
        let redirect = optional("redirect=");
        ServerProcess {
            child,
            http,
            stun,
            stun_alt,
            metrics,
            redirect,
        }
    }

    /// Sends SIGTERM (what a deploy or `systemctl stop` does) and waits for the process to end.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).expect("pid fits");
        // SAFETY: kill(2) with a PID this struct owns (the child is not reaped yet).
        unsafe { libc::kill(pid, libc::SIGTERM) };
        self.child.wait().expect("wait for the server")
    }

    /// Kills the server at once (a crash: no goodbye to anyone) and waits for it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The server process's id (e.g. to read its memory use from `/proc`).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `ws://…/ws/{room}` for this server.
    pub fn ws_url(&self, room: &str) -> String {
        format!("ws://{}/ws/{room}", self.http)
    }

    /// `http://…/r/{room}` for this server (the shareable link).
    pub fn room_link(&self, room: &str) -> String {
        format!("http://{}/r/{room}", self.http)
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
