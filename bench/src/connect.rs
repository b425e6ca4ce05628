//! `connect`: from a second native peer's join until its data channel to the first is open and a
//! first message has come back, on loopback without STUN; beside the same with the `webrtc`
//! crate's default settings.

use native_peer::rtc::Options;

use crate::report::{quantile, Figure};
use crate::Env;

async fn rounds(env: &Env, options: Options, n: usize) -> Vec<f64> {
    let mut ms = Vec::new();
    for i in 0..n {
        let link = env.link(&format!("connect-{}-{i}", options.crate_defaults));
        match crate::pair::connect(&link, options, false).await {
            Ok(pair) => ms.push(pair.elapsed.as_secs_f64() * 1000.0),
            Err(e) => eprintln!("connect round {i}: {e:#}"),
        }
    }
    ms
}

/// Runs the bench.
pub async fn run(env: &Env, out: &mut Vec<Figure>) {
    let n = env.rounds;
    let mut ours = rounds(env, Options::default(), n).await;
    let mut theirs = rounds(
        env,
        Options {
            crate_defaults: true,
            ..Options::default()
        },
        n,
    )
    .await;
    let over_100 = ours.iter().filter(|&&m| m > 100.0).count();
    let reference = "webrtc 0.21 defaults";
    Figure::new("connect", "median", quantile(&mut ours, 0.5), "ms")
        .against(reference, quantile(&mut theirs, 0.5))
        .note(format!("{} rounds, loopback, no STUN", ours.len()))
        .emit(out);
    Figure::new("connect", "p90", quantile(&mut ours, 0.9), "ms")
        .against(reference, quantile(&mut theirs, 0.9))
        .emit(out);
    Figure::new(
        "connect",
        "max",
        ours.iter().cloned().reduce(f64::max),
        "ms",
    )
    .against(reference, theirs.iter().cloned().reduce(f64::max))
    .emit(out);
    Figure::new(
        "connect",
        "rounds over 100 ms",
        Some(over_100 as f64),
        "rounds",
    )
    .against(
        reference,
        Some(theirs.iter().filter(|&&m| m > 100.0).count() as f64),
    )
    .emit(out);
}
