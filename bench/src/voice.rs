//! `voice`: 30 s of voice between two `burrow` processes, on loopback and through the embedded
//! relay (`--relay-only`): the packet rate, jitter and loss the receiving side counts (RFC 3550,
//! reported when its recording closes). The clip is a tone made with ffmpeg (skipped without it).

use std::process::Command;
use std::time::Duration;

use crate::procs::Peer;
use crate::report::Figure;
use crate::Env;

/// How long the voice runs.
const SECONDS: u64 = 30;

/// Runs both paths.
pub async fn run(env: &Env, out: &mut Vec<Figure>) {
    let link = |room: &str| format!("http://{}/r/{room}", env.http);
    let (direct, relayed) = (link("voice-direct"), link("voice-relayed"));
    match tokio::task::spawn_blocking(move || measure(&direct, &relayed)).await {
        Ok(Ok(figures)) => {
            for f in figures {
                f.emit(out);
            }
        }
        Ok(Err(e)) => eprintln!("bench voice: {e:#}"),
        Err(e) => eprintln!("bench voice: {e}"),
    }
}

fn measure(direct: &str, relayed: &str) -> anyhow::Result<Vec<Figure>> {
    let dir = std::env::temp_dir().join(format!("burrow-bench-voice-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let clip = dir.join("tone.ogg");
    let made = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg("sine=frequency=440:duration=10")
        .args(["-c:a", "libopus", "-b:a", "32k"])
        .arg(&clip)
        .status();
    if !made.is_ok_and(|s| s.success()) {
        anyhow::bail!("ffmpeg is needed to make the clip (scripts/setup.sh test installs it)");
    }
    let mut figures = Vec::new();
    for (path, link, relay_only) in [("loopback", direct, false), ("relayed", relayed, true)] {
        let mut flags: Vec<&str> = Vec::new();
        if relay_only {
            flags.push("--relay-only");
        }
        let clip = clip.to_string_lossy().to_string();
        let rec = dir.join(path).to_string_lossy().to_string();
        let mut speak = flags.clone();
        speak.extend(["join", "--no-stdin", "--voice-play", &clip, link]);
        let mut listen = flags.clone();
        listen.extend(["join", "--voice-record", &rec, link]);
        let wait = Duration::from_secs(30);
        let speaker = Peer::start_with(&speak)?;
        speaker
            .next("joined", wait)
            .ok_or_else(|| anyhow::anyhow!("the speaker never joined"))?;
        let mut listener = Peer::start_with(&listen)?;
        listener
            .next("voice_recording", wait)
            .ok_or_else(|| anyhow::anyhow!("no audio reached the listener ({path})"))?;
        std::thread::sleep(Duration::from_secs(SECONDS));
        listener.close_stdin();
        let (_, got) = listener
            .next("voice_recorded", wait)
            .ok_or_else(|| anyhow::anyhow!("the recording never closed ({path})"))?;
        drop(speaker);
        let packets = got["packets"].as_f64().unwrap_or(0.0);
        let secs = got["secs"].as_f64().unwrap_or(0.0);
        let lost = got["lost"].as_f64().unwrap_or(0.0);
        let rate = (secs > 0.0).then(|| packets / secs);
        let loss = (packets + lost > 0.0).then(|| 100.0 * lost / (packets + lost));
        let note = format!("{SECONDS} s of a 32 kbit/s Opus tone, 20 ms packets");
        figures.push(
            Figure::new("voice", &format!("packet rate, {path}"), rate, "packets/s")
                .against("sent (20 ms packets)", Some(50.0))
                .note(note),
        );
        figures.push(Figure::new(
            "voice",
            &format!("jitter, {path}"),
            got["jitter_ms"].as_f64(),
            "ms",
        ));
        figures.push(Figure::new("voice", &format!("loss, {path}"), loss, "%"));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(figures)
}
