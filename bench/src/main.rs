//! Burrow's benchmarks. `cargo run --release -p bench` runs them all and prints one JSON object
//! per figure, then a table; each figure stands beside its reference, measured in the same run
//! where one can be (the `webrtc` crate's defaults, plain TCP, coturn) or quoted from the issue's
//! matchbox measurements on this machine kind. Nothing here is a pass/fail test.

mod browser;
mod bundle;
mod child;
mod connect;
mod durable;
mod lab;
mod pair;
mod procs;
mod relay;
mod report;
mod signaling;
mod stun;
mod throughput;
mod tunnel;
mod udp;
mod voice;
mod wan;

use std::time::Duration;

use clap::Parser;
use peer_core::link::RoomLink;
use signal_server::Config;

/// What to run and how long.
#[derive(Parser)]
#[command(
    name = "bench",
    about = "Burrow benchmarks: connect, throughput, signaling, STUN, durable links, voice, the browser, the NAT lab, long and lossy paths beside TCP, the page bundle, the tunnel beside rathole (TCP and UDP), the relay over UDP, TCP and TLS"
)]
struct Args {
    /// Only these benches (connect, throughput, signaling-idle, signaling-relay,
    /// signaling-cluster, stun, durable, voice, browser, lab, wan, bundle, tunnel, udp, relay).
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    /// Connect rounds.
    #[arg(long, default_value_t = 30)]
    rounds: usize,
    /// Throughput: most bytes to send.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Throughput, relay and STUN: most seconds per run.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Idle peers to hold.
    /// (20,000 is the target, but this workplace caps a process at 20,000 open files.)
    #[arg(long, default_value_t = 19_800)]
    idle_peers: usize,
}

/// A running in-process server for the peer benches, and the run's settings.
pub struct Env {
    http: std::net::SocketAddr,
    rounds: usize,
    bytes: u64,
    time: Duration,
}

impl Env {
    /// A room link on the bench's server.
    pub fn link(&self, room: &str) -> RoomLink {
        RoomLink::parse(&format!("http://{}/r/{room}", self.http), None)
            .expect("a valid bench room link")
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // The `wan` bench runs this binary again as its TCP ends.
    wan::serve_if_asked();
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error,turn=off")),
        )
        .with_writer(std::io::stderr)
        .init();
    let fds = signaling::raise_fd_limit();
    let wants = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut config = Config::defaults();
    config.listen = "127.0.0.1:0".parse()?;
    config.stun_listen = "127.0.0.1:0".parse()?;
    config.rate_per_sec = 1_000_000;
    config.rate_burst = 1_000_000;
    // Every bench client comes from 127.0.0.1.
    config.max_connections_per_ip = 0;
    config.max_connections = 0;
    // The TURN run relays between two peers on loopback, which is otherwise refused.
    config.turn_allowed_peer = vec!["127.0.0.0/8".parse()?];
    let running = signal_server::start(config, std::future::pending()).await?;
    let env = Env {
        http: running.http_addr,
        rounds: args.rounds,
        bytes: args.bytes,
        time: Duration::from_secs(args.seconds),
    };
    eprintln!(
        "bench: {} cores, open-file limit {fds}; this takes a few minutes",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    );
    let mut all = Vec::new();
    if wants("connect") {
        connect::run(&env, &mut all).await;
    }
    if wants("throughput") {
        throughput::run(&env, &mut all).await;
    }
    if wants("signaling-idle") {
        signaling::idle(args.idle_peers, &mut all).await;
    }
    if wants("signaling-relay") {
        let time = Duration::from_secs(args.seconds.min(5));
        signaling::relay(100, time, &mut all).await;
        signaling::relay(1000, time, &mut all).await;
    }
    if wants("signaling-cluster") {
        signaling::cluster(Duration::from_secs(args.seconds.min(5)), &mut all).await;
    }
    if wants("stun") {
        stun::run(Duration::from_secs(args.seconds.min(5)), &mut all).await;
    }
    if wants("durable") {
        durable::run(&mut all).await;
    }
    if wants("voice") {
        voice::run(&env, &mut all).await;
    }
    if wants("browser") {
        browser::run(&mut all).await;
    }
    if wants("lab") {
        lab::run(&mut all);
    }
    if wants("wan") {
        wan::run(&mut all);
    }
    if wants("tunnel") {
        tunnel::run(&env, &mut all).await;
    }
    if wants("udp") {
        udp::run(&env, &mut all).await;
    }
    if wants("relay") {
        relay::run(&mut all);
    }
    if wants("bundle") {
        bundle::run(&mut all);
    }
    report::table(&all);
    Ok(())
}
