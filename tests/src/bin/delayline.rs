//! `delayline A B MS LOSS`: forwards every frame between interfaces A and B, holding each MS
//! milliseconds and dropping a share LOSS (0–1) of them (see `burrow_tests::delay`). The NAT
//! lab runs it on a router's uplink to emulate a long, lossy path (this kernel has no netem).

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [a, b, ms, loss] = &args[..] else {
        eprintln!("usage: delayline A B MS LOSS");
        std::process::exit(2);
    };
    let delay = std::time::Duration::from_secs_f64(ms.parse::<f64>().unwrap_or(0.0) / 1000.0);
    let loss = loss.parse::<f64>().unwrap_or(0.0);
    if let Err(e) = burrow_tests::delay::run(a, b, delay, loss) {
        eprintln!("delayline {a} <-> {b}: {e}");
        std::process::exit(1);
    }
}
