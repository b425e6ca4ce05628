//! `delayline A B MS LOSS MBITS`: forwards every frame between interfaces A and B, holding each
//! MS milliseconds, dropping a share LOSS (0–1) of them, at most MBITS Mbit/s each way (0: no
//! cap) (see `burrow_tests::delay`). The NAT
//! lab runs it on a router's uplink to emulate a long, lossy path (this kernel has no netem).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [a, b, ms, loss, mbits] = &args[..] else {
        eprintln!("usage: delayline A B MS LOSS MBITS");
        std::process::exit(2);
    };
    let shape = burrow_tests::delay::Shape {
        delay: std::time::Duration::from_secs_f64(ms.parse::<f64>().unwrap_or(0.0) / 1000.0),
        loss: loss.parse().unwrap_or(0.0),
        rate_bps: (mbits.parse::<f64>().unwrap_or(0.0) * 1e6) as u64,
    };
    if let Err(e) = burrow_tests::delay::run(a, b, shape) {
        eprintln!("delayline {a} <-> {b}: {e}");
        std::process::exit(1);
    }
}
