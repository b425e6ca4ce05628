//! `burrow`: join a Burrow room from a terminal: chat, send and receive files, peer to peer.

use native_peer::{netcheck, session, streams};

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use clap::{Parser, Subcommand};
use peer_core::channels::ServiceKind;
use peer_core::link::RoomLink;
use tracing_subscriber::EnvFilter;

use native_peer::events::Printer;
use native_peer::session::{Mode, Options};

/// Burrow: reach peers behind NAT, peer to peer, from a room link.
#[derive(Parser)]
#[command(
    name = "burrow",
    version,
    about = "Burrow: reach peers behind NAT, peer to peer, from a room link"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Print one JSON object per event instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// The name others see for you.
    #[arg(long, global = true, env = "BURROW_NAME")]
    name: Option<String>,
    /// Server URL (http://host:port), when the room is given as a bare id.
    #[arg(long, global = true, env = "BURROW_SERVER")]
    server: Option<String>,
    /// Local IP for peer connections (default: loopback for a loopback server, else all).
    #[arg(long, global = true)]
    bind: Option<IpAddr>,
    /// Also trust this CA certificate (PEM) for https:// room links (a private deployment).
    #[arg(long, global = true, env = "BURROW_CA_CERT", value_name = "FILE")]
    ca_cert: Option<PathBuf>,
    /// Connect to peers only through the TURN relay: peers never learn your address (and tests
    /// can measure the relayed path).
    #[arg(long, global = true)]
    relay_only: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Join a room: chat with stdin, see who is connected and how.
    Join {
        /// Room link (http://host:port/r/ROOM), ws:// link, or a bare room id with --server.
        link: String,
        /// Save files others send into this folder (without it, files are refused).
        #[arg(long, value_name = "DIR")]
        accept: Option<PathBuf>,
        /// Most files one peer (one address) may send us at once; beyond, its new files are
        /// refused, saying so (each holds a descriptor and a 1 MiB buffer until done).
        #[arg(long, value_name = "N", default_value_t = 4,
              value_parser = clap::value_parser!(u16).range(1..))]
        max_files_at_once: u16,
        /// The largest file accepted (e.g. 4GiB); a larger one is refused up front, saying so.
        /// Without it, files up to the disk's free space are accepted.
        #[arg(long, value_name = "SIZE")]
        max_file_size: Option<bytesize::ByteSize>,
        /// Do not read stdin; run until Ctrl-C (for use in the background).
        #[arg(long)]
        no_stdin: bool,
        /// Join voice, sending this Ogg/Opus file (looped) as our voice.
        #[arg(long, value_name = "FILE.ogg")]
        voice_play: Option<PathBuf>,
        /// Join voice, writing what each peer says to DIR/<peer>.ogg (Ogg/Opus).
        #[arg(long, value_name = "DIR")]
        voice_record: Option<PathBuf>,
        /// Largest recording of one peer (e.g. 64MiB); there it is closed, saying so.
        #[arg(long, value_name = "SIZE", default_value = "64MiB")]
        voice_record_max: bytesize::ByteSize,
        /// Most bytes a second kept of one peer's voice (e.g. 128KiB; real voice is about
        /// 5KiB a second); packets beyond are dropped and counted.
        #[arg(long, value_name = "SIZE", default_value = "128KiB")]
        voice_record_max_rate: bytesize::ByteSize,
    },
    /// Offer local services (say a site on 127.0.0.1:8080) to the room, peer to peer.
    Expose {
        /// The local address to expose (streams are connected there and nowhere else), then the
        /// room link; or only the room link, with `--service NAME=KIND:ADDR`.
        #[arg(required = true, num_args = 1..=2, value_name = "[ADDR] ROOM-LINK")]
        args: Vec<String>,
        /// A service: `NAME=KIND:ADDR` (KIND `http`, `tcp` or `udp`), as many as wanted; or
        /// `NAME`, the name of ADDR's service (default: "web" for http, else the kind).
        #[arg(long = "service", value_name = "NAME[=KIND:ADDR]")]
        service: Vec<String>,
        /// Take the services from this TOML file instead (`[services.NAME]` with `kind`,
        /// `addr`, and `token` or `token_file`); it is read again when it changes or on SIGHUP,
        /// without cutting the streams already open.
        #[arg(long, value_name = "FILE", conflicts_with = "service")]
        config: Option<PathBuf>,
        /// What ADDR speaks: `http` (browsers can open it), `tcp` or `udp`.
        #[arg(long, default_value = "http", value_parser = ["http", "tcp", "udp"])]
        kind: String,
        /// Require this token from peers opening streams (without it, anyone with the room link
        /// can reach the service).
        #[arg(long, env = "BURROW_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Most streams (connections, UDP sessions) one peer may have open at once, all
        /// services together; beyond, its new streams are refused, saying so.
        #[arg(long, value_name = "N", default_value_t = peer_core::stream::POOL_MAX as u16,
              value_parser = clap::value_parser!(u16).range(1..))]
        max_streams_per_peer: u16,
        /// Most streams one service may have open at once, all peers together (in --config,
        /// `max_streams` per service); beyond, new ones are refused, saying so.
        #[arg(long, value_name = "N", default_value_t = native_peer::meter::DEFAULT_MAX_STREAMS as u32,
              value_parser = clap::value_parser!(u32).range(1..))]
        max_streams_per_service: u32,
        /// Cap each service at this many bytes a second, each way, all its streams together
        /// (e.g. 2MiB; in --config, `max_rate` per service). UDP beyond it is dropped.
        #[arg(long, value_name = "RATE", value_parser = native_peer::services::rate)]
        max_rate: Option<u64>,
        /// Check every this many seconds that each local service answers (a TCP connection;
        /// for http, `GET /` with a status below 500), telling peers when one is down or back;
        /// 0: never.
        #[arg(long, value_name = "SECS", default_value_t = 10)]
        health_every: u64,
        /// Serve a status page (services, peers, streams, bytes) on this loopback address,
        /// which `burrow status` reads.
        #[arg(long, value_name = "ADDR", num_args = 0..=1,
              default_missing_value = native_peer::status::DEFAULT_ADMIN)]
        admin: Option<SocketAddr>,
    },
    /// Map a service a peer exposes to a local port: each connection to --listen is carried to it.
    Forward {
        /// Room link.
        link: String,
        /// Where to accept local connections.
        #[arg(long, default_value = "127.0.0.1:9000")]
        listen: SocketAddr,
        /// Which service (default: the first one offered).
        #[arg(long)]
        service: Option<String>,
        /// The service's token, if it has one.
        #[arg(long, env = "BURROW_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Read the token from the first line of this file instead, anew for each connection
        /// (it stays out of the process list, and can change without a restart).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// Serve a status page (peers, streams, bytes) on this loopback address, which `burrow
        /// status` reads.
        #[arg(long, value_name = "ADDR", num_args = 0..=1,
              default_missing_value = native_peer::status::DEFAULT_ADMIN)]
        admin: Option<SocketAddr>,
    },
    /// Show what a running `burrow expose` or `forward` (started with --admin) is doing.
    Status {
        /// Its --admin address.
        #[arg(long, value_name = "ADDR", default_value = native_peer::status::DEFAULT_ADMIN)]
        admin: SocketAddr,
    },
    /// Check what this machine's NAT does: public address, and whether hole punching can work.
    Netcheck {
        /// The server (https://host, http://host:port) or any room link on it; default: --server.
        server: Option<String>,
    },
    /// Send files to the peers in a room (or the first to join), then exit.
    Send {
        /// Give up after this many seconds if the files are not delivered (default: wait as
        /// long as it takes for a peer; the server connection is retried meanwhile).
        #[arg(long, value_name = "SECS")]
        timeout: Option<u64>,
        /// The files, then the room link.
        #[arg(required = true, num_args = 2.., value_name = "FILE… ROOM-LINK")]
        args: Vec<String>,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            // The WebRTC crates warn about routine things (e.g. checks before candidates arrive).
            EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| EnvFilter::new("off,burrow=warn,native_peer=warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("burrow: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let outcome = runtime.block_on(run(cli));
    // The session has closed everything it owns. What may remain is the blocking read of stdin
    // (chat), which cannot be cancelled: do not wait for it, or Ctrl-C would hang until Enter.
    runtime.shutdown_timeout(std::time::Duration::from_millis(200));
    if let Err(e) = outcome {
        // The error may quote the server or a peer (a refusal's message): shown defused.
        eprintln!("burrow: {}", peer_core::text::safe_line(&format!("{e:#}")));
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let opts = Options {
        tls: native_peer::tls::client_config(cli.ca_cert.as_deref())?,
        name: cli.name,
        printer: Printer { json: cli.json },
        bind: cli.bind,
        relay_only: cli.relay_only,
        admin: None,
    };
    let server = cli.server.as_deref();
    match cli.command {
        Command::Join {
            link,
            accept,
            max_files_at_once,
            max_file_size,
            no_stdin,
            voice_play,
            voice_record,
            voice_record_max,
            voice_record_max_rate,
        } => {
            let link = RoomLink::parse(&link, server)?;
            for dir in accept.iter().chain(&voice_record) {
                std::fs::create_dir_all(dir)
                    .map_err(|e| anyhow::anyhow!("cannot use {}: {e}", dir.display()))?;
            }
            // A file that is not Ogg/Opus is refused before joining.
            let clip = voice_play
                .as_deref()
                .map(native_peer::voice::Clip::load)
                .transpose()?;
            let mode = Mode::Join {
                accept,
                max_files_at_once: usize::from(max_files_at_once),
                max_file_size: max_file_size.map(|s| s.as_u64()),
                read_stdin: !no_stdin,
                voice: session::Voice {
                    clip,
                    record: voice_record,
                    limits: native_peer::voice::RecordLimits {
                        max_bytes: voice_record_max.as_u64(),
                        max_rate: voice_record_max_rate.as_u64(),
                    },
                },
            };
            session::run(&link, mode, opts).await
        }
        Command::Expose {
            args,
            service,
            config,
            kind,
            token,
            max_streams_per_peer,
            max_streams_per_service,
            max_rate,
            health_every,
            admin,
        } => {
            let opts = Options { admin, ..opts };
            let (local, link) = match args.as_slice() {
                [link] => (None, link),
                [addr, link] => {
                    let addr = addr.parse().map_err(|_| {
                        anyhow::anyhow!("{addr} is not an address like 127.0.0.1:8080")
                    })?;
                    (Some(addr), link)
                }
                _ => anyhow::bail!("give [ADDR] ROOM-LINK"),
            };
            let link = RoomLink::parse(link, server)?;
            let kind = native_peer::services::kind(&kind).unwrap_or(ServiceKind::Http);
            let services = match &config {
                Some(path) => {
                    anyhow::ensure!(
                        local.is_none(),
                        "give the services either as ADDR/--service or in --config, not both"
                    );
                    native_peer::services::from_file(path)?
                }
                None => native_peer::services::from_cli(
                    local,
                    kind,
                    &service,
                    token.as_deref(),
                    native_peer::meter::Limits {
                        max_rate,
                        max_streams: max_streams_per_service as usize,
                    },
                )?,
            };
            if !opts.printer.json {
                for s in &services {
                    eprintln!(
                        "exposing {} as '{}' ({:?}) to room {} ({}{})",
                        s.addr,
                        s.info.name,
                        s.info.kind,
                        link.page_url(),
                        if s.token.is_some() {
                            "token required"
                        } else {
                            "anyone with the link can reach it"
                        },
                        match s.meter.max_rate() {
                            Some(r) => format!(", at most {}/s each way", bytesize::ByteSize(r)),
                            None => String::new(),
                        }
                    );
                }
            }
            let mode = Mode::Expose {
                services,
                max_streams: usize::from(max_streams_per_peer),
                config,
                health_every: std::time::Duration::from_secs(health_every),
            };
            session::run(&link, mode, opts).await
        }
        Command::Forward {
            link,
            listen,
            service,
            token,
            token_file,
            admin,
        } => {
            let opts = Options { admin, ..opts };
            let link = RoomLink::parse(&link, server)?;
            let token = match (token_file, token) {
                (Some(path), _) => streams::TokenSource::File(path),
                (None, Some(token)) => streams::TokenSource::Given(token),
                (None, None) => streams::TokenSource::None,
            };
            let mode = Mode::Forward {
                listen,
                service,
                token,
            };
            session::run(&link, mode, opts).await
        }
        Command::Status { admin } => {
            let status = native_peer::status::fetch(admin).await?;
            if cli.json {
                let mut v = serde_json::to_value(&status)?;
                v["event"] = "status".into();
                println!("{}", peer_core::text::safe_line(&v.to_string()));
            } else {
                for line in native_peer::status::table(&status).lines() {
                    println!("{}", peer_core::text::safe_line(line));
                }
            }
            Ok(())
        }
        Command::Netcheck { server: arg } => {
            let base = arg.as_deref().or(server).ok_or_else(|| {
                anyhow::anyhow!(
                    "give the server: burrow netcheck https://host (or http://host:port)"
                )
            })?;
            let report = netcheck::run(base, opts.tls.clone()).await?;
            if cli.json {
                let mut v = serde_json::to_value(&report)?;
                v["event"] = "netcheck".into();
                println!("{v}");
            } else {
                println!("local address:   {}", report.local);
                for (url, mapped) in report.servers.iter().zip(&report.mapped) {
                    println!("public address:  {mapped}  (seen by {url})");
                }
                println!("verdict:         {}", report.advice);
            }
            Ok(())
        }
        Command::Send { mut args, timeout } => {
            let link = args.pop().unwrap_or_default();
            let link = RoomLink::parse(&link, server)?;
            let files: Vec<PathBuf> = args.into_iter().map(PathBuf::from).collect();
            session::check_files(&files)?;
            let timeout = timeout.map(std::time::Duration::from_secs);
            session::run(&link, Mode::Send { files, timeout }, opts).await
        }
    }
}
