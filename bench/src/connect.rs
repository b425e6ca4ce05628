//! `connect`: from a second native peer's join until its data channel to the first is open and a
//! first message has come back, on loopback without STUN; beside the same with the `webrtc`
//! crate's default settings; and the same through the TURN relay alone (relay-only ICE), which is
//! what two peers behind symmetric NATs wait: direct checks that never answer do not delay a
//! relayed nomination beyond `native_peer::rtc::RELAY_WAIT`.

use native_peer::rtc::Options;

use crate::report::{quantile, Figure};
use crate::Env;

async fn rounds(env: &Env, options: Options, n: usize) -> Vec<f64> {
    let mut ms = Vec::new();
    for i in 0..n {
        let link = env.link(&format!(
            "connect-{}-{}-{i}",
            options.crate_defaults, options.relay_only
        ));
        match crate::pair::connect(&link, options, options.relay_only).await {
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
    let relay_only = Options {
        relay_only: true,
        ..Options::default()
    };
    let mut relayed = rounds(env, relay_only, n.min(10)).await;
    Figure::new("connect", "relayed, median", quantile(&mut relayed, 0.5), "ms")
        .against(
            "before (relay candidates held back 1.5 s each way, 1 s relay wait)",
            Some(4900.0),
        )
        .note(format!(
            "{} rounds, relay-only ICE through the embedded TURN; the nomination waits RELAY_WAIT = {} ms; \
             the 4.9 s reference is the NAT lab figure the data-path issue measured",
            relayed.len(),
            native_peer::rtc::RELAY_WAIT.as_millis()
        ))
        .emit(out);
    Figure::new(
        "connect",
        "relayed, max",
        relayed.iter().cloned().reduce(f64::max),
        "ms",
    )
    .emit(out);
}
