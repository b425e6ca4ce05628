//! The NAT lab: real NAT routers built from Linux network namespaces and nftables.
//!
//! ```text
//!                      "internet" namespace: bridge br0, 203.0.113.0/24
//!                      rendezvous server on 203.0.113.10
//!        ┌───────────────────────┼────────────────────────┐
//!   NAT 1 (203.0.113.1)     NAT 2 (203.0.113.2)      public host (203.0.113.20)
//!   masquerade on "wan"     masquerade on "wan"
//!        │ 10.0.1.0/24           │ 10.0.2.0/24
//!   host 1 (10.0.1.2)       host 2 (10.0.2.2)
//! ```
//!
//! Each NAT router forwards LAN→WAN, lets established/related traffic back, masquerades on its
//! WAN (plain: endpoint-independent mapping; `fully-random`: a new port per destination, i.e.
//! symmetric), and drops new unsolicited packets arriving on the WAN, as home routers do. That
//! last rule matters: without it a peer's early punch packet leaves a conntrack entry that makes
//! masquerade pick another port, and every NAT behaves as if symmetric.
//!
//! Everything is torn down when the [`Lab`] is dropped, even when the test fails.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The server's address on the lab's internet.
pub const SERVER_IP: &str = "203.0.113.10";

/// The server's IPv6 address on the lab's internet (with [`Lab::ipv6`]).
pub const SERVER_IP6: &str = "2001:db8::10";

/// How a NAT router maps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nat {
    /// Plain masquerade: one public port per private socket (endpoint-independent mapping),
    /// port-restricted filtering.
    EndpointIndependent,
    /// `masquerade fully-random`: a random public port per destination (symmetric).
    Symmetric,
}

/// A host in the lab: its namespace and address.
#[derive(Debug, Clone)]
pub struct Host {
    /// Namespace name.
    pub ns: String,
    /// Its own IP.
    pub ip: String,
}

/// A set of namespaces that vanish when dropped.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    /// The "internet" namespace (the server runs here).
    pub internet: String,
    public_hosts: u8,
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Why the lab cannot run here, if it cannot (not root, no `ip`/`nft`); probed once per process
/// (tests run in parallel and must not race on the probe).
pub fn unavailable() -> Option<String> {
    static PROBED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    PROBED.get_or_init(probe).clone()
}

fn probe() -> Option<String> {
    for tool in ["ip", "nft"] {
        let found = Command::new(tool)
            .arg("-V")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        if !found {
            return Some(format!(
                "`{tool}` is not installed (scripts/setup.sh test installs it)"
            ));
        }
    }
    let probe = format!("blprobe{}", std::process::id());
    let ok = Command::new("ip")
        .args(["netns", "add", &probe])
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        return Some("cannot create network namespaces (needs root)".into());
    }
    let _ = Command::new("ip").args(["netns", "del", &probe]).status();
    None
}

impl Host {
    /// `burrow --json ARGS` run on this host.
    pub fn burrow(&self, args: &[&str]) -> crate::burrow::Burrow {
        use crate::burrow::Burrow;
        Burrow::spawn(Lab::wrap(&self.ns, &Burrow::command(args)))
    }
}

impl Lab {
    /// The rendezvous server on the lab's internet at [`SERVER_IP`], HTTP on `port` (0: any).
    pub fn server(&self, port: u16) -> crate::server::ServerProcess {
        use crate::server::ServerProcess;
        ServerProcess::spawn(Lab::wrap(
            &self.internet,
            &ServerProcess::command_at(SERVER_IP, port, &[]),
        ))
    }

    /// The rendezvous server as [`Lab::server`], with `extra` flags.
    pub fn server_with(&self, port: u16, extra: &[&str]) -> crate::server::ServerProcess {
        use crate::server::ServerProcess;
        ServerProcess::spawn(Lab::wrap(
            &self.internet,
            &ServerProcess::command_at(SERVER_IP, port, extra),
        ))
    }

    /// Builds the internet with the server's address; `None` (reason printed) if impossible.
    pub fn new(test: &str) -> Option<Lab> {
        if let Some(reason) = unavailable() {
            crate::skip(test, &reason);
            return None;
        }
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let prefix = format!("bl{}x{n}", std::process::id());
        let mut lab = Lab {
            internet: format!("{prefix}-inet"),
            prefix,
            namespaces: Vec::new(),
            public_hosts: 0,
        };
        let inet = lab.internet.clone();
        lab.add_ns(&inet);
        ip(&format!("-n {inet} link add br0 type bridge"));
        ip(&format!("-n {inet} addr add {SERVER_IP}/24 dev br0"));
        ip(&format!("-n {inet} link set br0 up"));
        // Like the real internet, packets toward addresses nobody here holds (a peer's private
        // host candidate) vanish rather than fail to send: a relay that gets "network
        // unreachable" from `sendto` may drop the whole allocation (coturn does).
        // (A veth pair whose far end drops what it gets: no `dummy` module here.)
        ip(&format!(
            "-n {inet} link add void type veth peer name void-end"
        ));
        ip(&format!("-n {inet} link set void arp off up"));
        ip(&format!("-n {inet} link set void-end up"));
        ip(&format!("-n {inet} route add default dev void"));
        Some(lab)
    }

    fn add_ns(&mut self, name: &str) {
        ip(&format!("netns add {name}"));
        self.namespaces.push(name.to_string());
        ip(&format!("-n {name} link set lo up"));
    }

    /// A host with a public address on the internet, no NAT (seed case 1's public side).
    pub fn public_host(&mut self) -> Host {
        self.public_hosts += 1;
        let k = self.public_hosts;
        let ns = format!("{}-pub{k}", self.prefix);
        let addr = format!("203.0.113.{}", 19 + k);
        self.add_ns(&ns);
        ip(&format!(
            "-n {ns} link add eth0 type veth peer name p{k} netns {}",
            self.internet
        ));
        self.attach(&format!("p{k}"));
        ip(&format!("-n {ns} addr add {addr}/24 dev eth0"));
        ip(&format!("-n {ns} link set eth0 up"));
        ip(&format!("-n {ns} route add default via {SERVER_IP}"));
        Host { ns, ip: addr }
    }

    /// A host behind its own NAT router number `i` (1..=9), of the given kind.
    pub fn behind_nat(&mut self, i: u8, kind: Nat) -> Host {
        let router = format!("{}-nat{i}", self.prefix);
        let ns = format!("{}-h{i}", self.prefix);
        self.add_ns(&router);
        self.add_ns(&ns);
        ip(&format!(
            "-n {router} link add wan type veth peer name n{i} netns {}",
            self.internet
        ));
        self.attach(&format!("n{i}"));
        ip(&format!("-n {router} addr add 203.0.113.{i}/24 dev wan"));
        ip(&format!("-n {router} link set wan up"));
        ip(&format!(
            "-n {router} link add lan type veth peer name eth0 netns {ns}"
        ));
        ip(&format!("-n {router} addr add 10.0.{i}.1/24 dev lan"));
        ip(&format!("-n {router} link set lan up"));
        ip(&format!("-n {ns} addr add 10.0.{i}.2/24 dev eth0"));
        ip(&format!("-n {ns} link set eth0 up"));
        ip(&format!("-n {ns} route add default via 10.0.{i}.1"));
        run(
            "ip",
            &format!("netns exec {router} sysctl -qw net.ipv4.ip_forward=1"),
        );
        let masquerade = match kind {
            Nat::EndpointIndependent => "masquerade",
            Nat::Symmetric => "masquerade fully-random",
        };
        let rules = format!(
            "table ip nat {{
  chain postrouting {{
    type nat hook postrouting priority srcnat; policy accept;
    oifname \"wan\" {masquerade}
  }}
}}
table inet filter {{
  chain input {{
    type filter hook input priority filter; policy accept;
    iifname \"wan\" ct state new drop
  }}
  chain forward {{
    type filter hook forward priority filter; policy drop;
    iifname \"lan\" oifname \"wan\" accept
    ct state established,related accept
  }}
}}
"
        );
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &router, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run nft");
        nft.stdin
            .take()
            .expect("nft stdin")
            .write_all(rules.as_bytes())
            .expect("write nft rules");
        assert!(nft.wait().expect("nft").success(), "nft rules failed");
        Host {
            ns,
            ip: format!("10.0.{i}.2"),
        }
    }

    /// Gives the lab's internet IPv6 too: the server's [`SERVER_IP6`] beside its IPv4 address.
    pub fn ipv6(&self) {
        let inet = &self.internet;
        run(
            "ip",
            &format!("netns exec {inet} sysctl -qw net.ipv6.conf.all.forwarding=1"),
        );
        ip(&format!(
            "-n {inet} -6 addr add {SERVER_IP6}/64 dev br0 nodad"
        ));
    }

    /// Makes host `i` behind its NAT router (see [`Lab::behind_nat`]) dual-stack: IPv6 beside
    /// its IPv4 (global, 2001:db8:i::2, not translated; the router's firewall lets in only
    /// answers, for both families). Needs [`Lab::ipv6`].
    pub fn dual_stack(&self, i: u8) {
        let router = format!("{}-nat{i}", self.prefix);
        let ns = format!("{}-h{i}", self.prefix);
        ip(&format!(
            "-n {router} -6 addr add 2001:db8::{i}/64 dev wan nodad"
        ));
        ip(&format!(
            "-n {router} -6 addr add 2001:db8:{i}::1/64 dev lan nodad"
        ));
        ip(&format!(
            "-n {ns} -6 addr add 2001:db8:{i}::2/64 dev eth0 nodad"
        ));
        ip(&format!("-n {ns} -6 route add default via 2001:db8:{i}::1"));
        ip(&format!(
            "-n {router} -6 route add default via {SERVER_IP6}"
        ));
        ip(&format!(
            "-n {} -6 route add 2001:db8:{i}::/64 via 2001:db8::{i}",
            self.internet
        ));
        run(
            "ip",
            &format!("netns exec {router} sysctl -qw net.ipv6.conf.all.forwarding=1"),
        );
    }

    /// A host on its own IPv6-only network number `i` (1..=9, 2001:db8:i::/64, no NAT: every
    /// address is global) behind a stateful firewall, as IPv6 homes are: out goes anything,
    /// in only what answers it. Needs [`Lab::ipv6`].
    pub fn behind_firewall_v6(&mut self, i: u8) -> Host {
        let router = format!("{}-fw{i}", self.prefix);
        let ns = format!("{}-v6h{i}", self.prefix);
        self.add_ns(&router);
        self.add_ns(&ns);
        ip(&format!(
            "-n {router} link add wan type veth peer name f{i} netns {}",
            self.internet
        ));
        self.attach(&format!("f{i}"));
        ip(&format!(
            "-n {router} -6 addr add 2001:db8::{i}/64 dev wan nodad"
        ));
        ip(&format!("-n {router} link set wan up"));
        ip(&format!(
            "-n {router} link add lan type veth peer name eth0 netns {ns}"
        ));
        ip(&format!(
            "-n {router} -6 addr add 2001:db8:{i}::1/64 dev lan nodad"
        ));
        ip(&format!("-n {router} link set lan up"));
        ip(&format!(
            "-n {ns} -6 addr add 2001:db8:{i}::2/64 dev eth0 nodad"
        ));
        ip(&format!("-n {ns} link set eth0 up"));
        ip(&format!("-n {ns} -6 route add default via 2001:db8:{i}::1"));
        ip(&format!(
            "-n {router} -6 route add default via {SERVER_IP6}"
        ));
        ip(&format!(
            "-n {} -6 route add 2001:db8:{i}::/64 via 2001:db8::{i}",
            self.internet
        ));
        run(
            "ip",
            &format!("netns exec {router} sysctl -qw net.ipv6.conf.all.forwarding=1"),
        );
        let rules = "table inet filter {
  chain forward {
    type filter hook forward priority filter; policy drop;
    iifname \"lan\" oifname \"wan\" accept
    ct state established,related accept
    meta l4proto ipv6-icmp accept
  }
}
";
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &router, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("run nft");
        nft.stdin
            .take()
            .expect("nft stdin")
            .write_all(rules.as_bytes())
            .expect("write nft rules");
        assert!(nft.wait().expect("nft").success(), "nft rules failed");
        Host {
            ns,
            ip: format!("2001:db8:{i}::2"),
        }
    }

    /// Makes router `i` (see [`Lab::behind_nat`]) drop every UDP datagram its host sends out
    /// but DNS, as strict corporate networks and some hotels do; TCP passes.
    pub fn block_udp(&self, i: u8) {
        let router = format!("{}-nat{i}", self.prefix);
        run(
            "ip",
            &format!(
                "netns exec {router} nft insert rule inet filter forward \
                 iifname lan meta l4proto udp udp dport != 53 drop"
            ),
        );
    }

    /// Makes router `i` let out only DNS and HTTPS (TCP port 443), as the strictest networks
    /// do: no UDP, no other TCP port.
    pub fn allow_only_https(&self, i: u8) {
        let router = format!("{}-nat{i}", self.prefix);
        for rule in [
            "iifname lan meta l4proto udp udp dport != 53 drop",
            "iifname lan meta l4proto tcp tcp dport != 443 drop",
        ] {
            run(
                "ip",
                &format!("netns exec {router} nft insert rule inet filter forward {rule}"),
            );
        }
    }

    /// Routes router `i`'s uplink (see [`Lab::behind_nat`]) through a delay line holding each
    /// frame `delay_ms` and dropping a share `loss` of them, both ways, at no rate cap: two
    /// slowed uplinks give the peers behind them a round trip of 4 × `delay_ms`.
    /// [`SlowUplink::set`] changes it.
    pub fn slow_uplink(&self, i: u8, delay_ms: f64, loss: f64) -> SlowUplink {
        let inet = &self.internet;
        let router = format!("{}-nat{i}", self.prefix);
        // The router's port comes off the bridge; a new veth pair takes its place there.
        ip(&format!("-n {inet} link set n{i} nomaster"));
        ip(&format!("-n {inet} link add d{i} type veth peer name e{i}"));
        ip(&format!("-n {inet} link set e{i} master br0"));
        for dev in [format!("d{i}"), format!("e{i}")] {
            ip(&format!("-n {inet} link set {dev} up"));
        }
        for dev in [format!("n{i}"), format!("d{i}")] {
            ip(&format!("-n {inet} link set {dev} promisc on"));
        }
        // Raw sockets would see 64 KiB super-frames that do not fit the next interface.
        for (ns, dev) in [
            (inet.as_str(), format!("n{i}")),
            (inet.as_str(), format!("d{i}")),
            (inet.as_str(), format!("e{i}")),
            (router.as_str(), "wan".to_string()),
        ] {
            run(
                "ip",
                &format!("netns exec {ns} ethtool -K {dev} tso off gso off gro off tx off rx off"),
            );
        }
        let mut slow = SlowUplink {
            inet: inet.clone(),
            ends: (format!("n{i}"), format!("d{i}")),
            line: None,
        };
        slow.set(delay_ms, loss, 0.0);
        slow
    }

    fn attach(&self, port: &str) {
        ip(&format!("-n {} link set {port} master br0", self.internet));
        ip(&format!("-n {} link set {port} up", self.internet));
    }

    /// `cmd`, run inside namespace `ns` (through `ip netns exec`), same arguments and env.
    pub fn wrap(ns: &str, cmd: &Command) -> Command {
        let mut wrapped = Command::new("ip");
        wrapped.args(["netns", "exec", ns]).arg(cmd.get_program());
        wrapped.args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        wrapped
    }
}

/// A router's uplink running through a delay line (see [`Lab::slow_uplink`]); the line stops
/// when this is dropped (and with the lab's namespaces in any case).
pub struct SlowUplink {
    inet: String,
    ends: (String, String),
    line: Option<std::process::Child>,
}

impl SlowUplink {
    /// Holds each frame `delay_ms`, drops a share `loss` and lets frames leave at most at
    /// `mbits` Mbit/s (0: no cap), from now on (the line restarts).
    pub fn set(&mut self, delay_ms: f64, loss: f64, mbits: f64) {
        self.stop();
        let line = Command::new("ip")
            .args(["netns", "exec", &self.inet])
            .arg(crate::binary("delayline"))
            .args([&self.ends.0, &self.ends.1])
            .arg(delay_ms.to_string())
            .arg(loss.to_string())
            .arg(mbits.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("start the delay line (cargo build --workspace --bins)");
        self.line = Some(line);
        // Its sockets are open before a frame is sent.
        std::thread::sleep(std::time::Duration::from_millis(100));
    }

    fn stop(&mut self) {
        if let Some(mut line) = self.line.take() {
            let _ = line.kill();
            let _ = line.wait();
        }
    }
}

impl Drop for SlowUplink {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        for ns in self.namespaces.iter().rev() {
            // Anything still running inside goes first, then the namespace and its links.
            if let Ok(out) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

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
