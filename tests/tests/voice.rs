//! Voice between the page (Chromium with its fake microphone, which beeps) and `burrow`
//! (`--voice-play` a tone made here with ffmpeg, `--voice-record` what it hears). What is asserted
//! is what a listener would notice: a recording that plays and is not silence, packets and
//! energy arriving at the page, silence while muted.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use burrow_tests::browser::Browser;
use burrow_tests::burrow::Burrow;
use burrow_tests::sandbox::{self, HOST_IP};
use burrow_tests::server::ServerProcess;

const MEDIA_FLAGS: [&str; 3] = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
];

/// The media flags, plus the server's plain-http origin treated as secure (browsers give the
/// microphone to secure contexts only; a deployment uses https).
fn media_flags(server: &ServerProcess) -> Vec<String> {
    let mut flags: Vec<String> = MEDIA_FLAGS.iter().map(|f| f.to_string()).collect();
    flags.push(format!(
        "--unsafely-treat-insecure-origin-as-secure=http://{}",
        server.http
    ));
    flags
}

fn ffmpeg_or_skip(test: &str) -> bool {
    let found = Command::new("ffmpeg").arg("-version").output().is_ok();
    if !found {
        burrow_tests::skip(
            test,
            "ffmpeg is not installed (scripts/setup.sh test installs it)",
        );
    }
    found
}

/// A folder for one test, removed when the test ends, however it ends.
fn tempdir(tag: &str) -> burrow_tests::TempDir {
    burrow_tests::TempDir::new(&format!("voice-{tag}"))
}

/// A 440 Hz tone, Ogg/Opus, made with ffmpeg.
fn tone(path: &Path, secs: u32) {
    let ok = Command::new("ffmpeg")
        .args(["-loglevel", "error", "-y", "-f", "lavfi", "-i"])
        .arg(format!("sine=frequency=440:duration={secs}"))
        .args(["-c:a", "libopus", "-b:a", "32k"])
        .arg(path)
        .status()
        .expect("ffmpeg");
    assert!(ok.success(), "ffmpeg made the tone");
}

/// Duration (s) and loudest level (dB) of an audio file, decoded by ffmpeg.
fn loudness(path: &Path) -> (f64, f64) {
    let out = Command::new("ffmpeg")
        .args(["-hide_banner", "-i"])
        .arg(path)
        .args(["-af", "volumedetect", "-f", "null", "-"])
        .output()
        .expect("ffmpeg");
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "ffmpeg decodes {}: {log}",
        path.display()
    );
    let after = |key: &str| -> Option<f64> {
        let rest = &log[log.find(key)? + key.len()..];
        let end = rest.find([' ', ',', '\n'])?;
        Some(rest[..end].trim().to_string()).and_then(|v| {
            // "00:00:04.02" or "-17.9"
            if v.contains(':') {
                let mut secs = 0.0;
                for part in v.split(':') {
                    secs = secs * 60.0 + part.parse::<f64>().ok()?;
                }
                Some(secs)
            } else {
                v.parse().ok()
            }
        })
    };
    (
        after("Duration: ").unwrap_or_else(|| panic!("no duration in ffmpeg's log:\n{log}")),
        // Seen once in a full run (not alone): a recording with a duration and no level.
        after("max_volume: ").unwrap_or_else(|| panic!("no level in ffmpeg's log:\n{log}")),
    )
}

async fn voice_stats(page: &Browser) -> serde_json::Value {
    page.run_async(
        "const done = arguments[arguments.length - 1]; \
         window.burrowRoom.voiceStats().then(done, () => done([]));",
    )
    .await
}

/// The page's fake microphone, recorded by `burrow`: a valid Ogg/Opus file of about the time it
/// was in voice, and not silence.
#[tokio::test]
async fn burrow_records_what_the_page_says() {
    if !sandbox::enter("burrow_records_what_the_page_says")
        || !ffmpeg_or_skip("burrow_records_what_the_page_says")
    {
        return;
    }
    let server = ServerProcess::start_on(HOST_IP, &[]);
    let link = server.room_link("voice-rec");
    let dir = tempdir("rec");
    let mut native = Burrow::start(&["join", "--voice-record", dir.to_str().unwrap(), &link]);
    let native_id = native.peer_id();
    let flags = media_flags(&server);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let page = Browser::start_in(None, &flags).await;
    page.open(&link).await;
    page.wait_connected(&native_id).await;
    page.click("#voice-join").await;
    let page_id = native.expect_event("voice", &[])["peer"]
        .as_str()
        .unwrap()
        .to_string();
    let said = native.expect_event("voice", &[("peer", &page_id)]);
    assert_eq!(said["sending"], true, "{said}");
    let rec = native.expect_event("voice_recording", &[("peer", &page_id)]);
    let started = Instant::now();
    // The page shows burrow in voice (it announced itself, listening only).
    page.wait_for(
        "burrow shown in voice",
        &format!(
            "const li = document.querySelector('#peers li[data-peer=\"{native_id}\"]'); \
             return li && li.querySelector('.voice').textContent.startsWith('in voice');"
        ),
    )
    .await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(native.quit().success(), "{}", native.stderr());
    let spoken = started.elapsed().as_secs_f64();
    let path = PathBuf::from(rec["path"].as_str().unwrap());
    let (secs, max_db) = loudness(&path);
    eprintln!("recording: {secs:.2} s (in voice {spoken:.2} s), loudest {max_db} dB");
    assert!(
        secs > spoken - 1.5 && secs < spoken + 1.5,
        "about as long as the page spoke: {secs} s vs {spoken} s"
    );
    assert!(
        max_db > -40.0,
        "the fake microphone's beep, not silence: {max_db} dB"
    );
    page.close().await;
}

/// `burrow --voice-play` a tone; the page, in voice, receives packets with audio energy.
#[tokio::test]
async fn the_page_hears_burrow_play_a_file() {
    if !sandbox::enter("the_page_hears_burrow_play_a_file")
        || !ffmpeg_or_skip("the_page_hears_burrow_play_a_file")
    {
        return;
    }
    let dir = tempdir("play");
    let clip = dir.join("tone.ogg");
    tone(&clip, 3);
    // A file that is not Ogg/Opus is refused before joining, clearly.
    let bogus = dir.join("not-audio.ogg");
    std::fs::write(&bogus, b"not an ogg file at all").unwrap();
    let nowhere = "http://127.0.0.1:1/r/x";
    let mut refused = Burrow::start(&["join", "--voice-play", bogus.to_str().unwrap(), nowhere]);
    assert!(!refused.wait().success());
    assert!(
        refused.stderr().contains("not an Ogg/Opus file"),
        "{}",
        refused.stderr()
    );

    let server = ServerProcess::start_on(HOST_IP, &[]);
    let link = server.room_link("voice-play");
    let mut native = Burrow::start(&["join", "--voice-play", clip.to_str().unwrap(), &link]);
    let native_id = native.peer_id();
    let flags = media_flags(&server);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let page = Browser::start_in(None, &flags).await;
    page.open(&link).await;
    page.wait_connected(&native_id).await;
    page.click("#voice-join").await;
    native.expect_event("voice", &[]);
    let deadline = Instant::now() + Duration::from_secs(20);
    let (packets, energy) = loop {
        let stats = voice_stats(&page).await;
        let mine = stats
            .as_array()
            .and_then(|a| a.iter().find(|s| s["peer"] == native_id.as_str()))
            .cloned();
        if let Some(s) = mine {
            let packets = s["packets"].as_f64().unwrap_or(0.0);
            let energy = s["energy"].as_f64().unwrap_or(0.0);
            if packets > 100.0 && energy > 0.0 {
                break (packets, energy);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the page never heard burrow: {stats}"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    eprintln!("page heard burrow: {packets} packets, total energy {energy:.4}");
    // The speaking indicator lights for the tone.
    page.wait_for(
        "burrow shown speaking",
        &format!(
            "const li = document.querySelector('#peers li[data-peer=\"{native_id}\"]'); \
             return li && li.querySelector('.voice.speaking') !== null;"
        ),
    )
    .await;
    page.close().await;
}

/// Voice across the NAT lab's relayed case: both behind symmetric NATs, so the audio goes
/// through the TURN relay; the recording is the tone, and the receiver counted its packets.
#[test]
fn voice_crosses_the_relay_between_symmetric_nats() {
    use burrow_tests::lab::{Lab, Nat, SERVER_IP};
    let test = "voice_crosses_the_relay_between_symmetric_nats";
    if !ffmpeg_or_skip(test) {
        return;
    }
    let Some(mut lab) = Lab::new(test) else {
        return;
    };
    let h1 = lab.behind_nat(1, Nat::Symmetric);
    let h2 = lab.behind_nat(2, Nat::Symmetric);
    let server = ServerProcess::spawn(Lab::wrap(
        &lab.internet,
        &ServerProcess::command(SERVER_IP, &[]),
    ));
    let link = server.room_link("voice-relayed");
    let dir = tempdir("relayed");
    let clip = dir.join("tone.ogg");
    tone(&clip, 2);
    let rec = dir.join("rec");
    let burrow = |host: &burrow_tests::lab::Host, args: &[&str]| {
        Burrow::spawn(Lab::wrap(&host.ns, &Burrow::command(args)))
    };
    let mut speaker = burrow(
        &h1,
        &["join", "--voice-play", clip.to_str().unwrap(), &link],
    );
    let speaker_id = speaker.peer_id();
    let mut listener = burrow(
        &h2,
        &["join", "--voice-record", rec.to_str().unwrap(), &link],
    );
    let path = listener.expect_event("connected", &[("peer", &speaker_id)]);
    assert_eq!(path["path"], "relayed", "{path}");
    listener.expect_event("voice_recording", &[("peer", &speaker_id)]);
    std::thread::sleep(Duration::from_secs(4));
    assert!(listener.quit().success(), "{}", listener.stderr());
    let got = listener.expect_event("voice_recorded", &[("peer", &speaker_id)]);
    eprintln!("relayed voice: {got}");
    let packets = got["packets"].as_u64().unwrap_or(0);
    assert!(packets > 150, "about 50 packets a second for 4 s: {got}");
    let (secs, max_db) = loudness(&PathBuf::from(got["path"].as_str().unwrap()));
    assert!(secs > 3.0, "{secs} s");
    assert!(max_db > -30.0, "the tone, not silence: {max_db} dB");
}

/// An Ogg/Opus clip a hostile peer would send: `packets` packets of `size` bytes, each 2.5 ms
/// long (CELT narrowband, one frame), 400 a second: far more than any voice.
fn flood_clip(path: &Path, packets: usize, size: usize) {
    use ogg::writing::{PacketWriteEndInfo, PacketWriter};
    let mut out = PacketWriter::new(std::fs::File::create(path).expect("create the clip"));
    let mut head = b"OpusHead".to_vec();
    head.extend_from_slice(&[1, 2, 0x38, 0x01]); // version, channels, pre-skip 312
    head.extend_from_slice(&48_000u32.to_le_bytes());
    head.extend_from_slice(&[0, 0, 0]); // gain, mapping family
    out.write_packet(head, 1, PacketWriteEndInfo::EndPage, 0)
        .expect("head");
    let mut tags = b"OpusTags".to_vec();
    tags.extend_from_slice(&4u32.to_le_bytes());
    tags.extend_from_slice(b"test");
    tags.extend_from_slice(&0u32.to_le_bytes());
    out.write_packet(tags, 1, PacketWriteEndInfo::EndPage, 0)
        .expect("tags");
    for i in 0..packets {
        let mut p = vec![(i % 251) as u8; size];
        p[0] = 16 << 3; // TOC: config 16 (CELT NB 2.5 ms), code 0
        let end = if i + 1 == packets {
            PacketWriteEndInfo::EndStream
        } else {
            PacketWriteEndInfo::NormalPacket
        };
        out.write_packet(p, 1, end, (i as u64 + 1) * 120)
            .expect("packet");
    }
}

/// The hardening issue: `--voice-record` kept whatever a peer sent (8.4 MiB/s filled a disk
/// in 26 s). A peer floods 400 KB/s of "voice" at a recorder limited to 20 KiB/s and 48 KiB:
/// packets over the rate are dropped and counted, and the recording stops at its size, saying
/// so, with a file no larger.
#[test]
fn a_recording_keeps_to_its_rate_and_size() {
    let server = ServerProcess::start(&[]);
    let link = server.room_link("voice-flood");
    let dir = tempdir("flood");
    let clip = dir.join("flood.ogg");
    flood_clip(&clip, 4000, 1000);
    let rec = dir.join("rec");
    let mut flooder = Burrow::start(&["join", "--voice-play", clip.to_str().unwrap(), &link]);
    let flooder_id = flooder.peer_id();
    let mut listener = Burrow::start(&[
        "join",
        "--voice-record",
        rec.to_str().unwrap(),
        "--voice-record-max-rate",
        "20KiB",
        "--voice-record-max",
        "48KiB",
        &link,
    ]);
    listener.expect_event("voice_recording", &[("peer", &flooder_id)]);
    std::thread::sleep(Duration::from_secs(4));
    assert!(listener.quit().success(), "{}", listener.stderr());
    let got = listener.expect_event("voice_recorded", &[("peer", &flooder_id)]);
    eprintln!("flooded recording: {got}");
    let packets = got["packets"].as_u64().unwrap_or(0);
    let dropped = got["dropped"].as_u64().unwrap_or(0);
    assert!(packets > 200, "the flood arrived: {got}");
    assert!(dropped > packets / 2, "most of it over the rate: {got}");
    assert_eq!(
        got["stopped"], "reached its size limit (48.0 KiB, --voice-record-max)",
        "{got}"
    );
    let size = std::fs::metadata(got["path"].as_str().unwrap())
        .expect("the file")
        .len();
    assert!(size <= 48 * 1024 + 1024, "{size} bytes kept");
    assert!(
        size > 30 * 1024,
        "what the limits allow was kept: {size} bytes"
    );
    drop(flooder);
}

/// Waits (up to 20 s) until `page` receives audio energy from `peer`.
async fn wait_heard(page: &Browser, peer: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while energy_from(page, peer).await <= 0.0 {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

async fn energy_from(page: &Browser, peer: &str) -> f64 {
    let stats = voice_stats(page).await;
    stats
        .as_array()
        .and_then(|a| a.iter().find(|s| s["peer"] == peer))
        .and_then(|s| s["energy"].as_f64())
        .unwrap_or(0.0)
}

/// Two pages in voice; one mutes: the other receives silence from it, then sound again after
/// unmuting (the audio energy its stats report stops growing, then grows).
#[tokio::test]
async fn a_muted_page_is_silent_until_it_unmutes() {
    if !sandbox::enter("a_muted_page_is_silent_until_it_unmutes") {
        return;
    }
    let server = ServerProcess::start_on(HOST_IP, &[]);
    let link = server.room_link("voice-mute");
    let flags = media_flags(&server);
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let a = Browser::start_in(None, &flags).await;
    a.open(&link).await;
    let b = Browser::start_in(None, &flags).await;
    b.open(&link).await;
    let idb = b
        .wait_for(
            "b joined",
            "return window.burrowRoom && window.burrowRoom.peerId;",
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string();
    a.wait_connected(&idb).await;
    a.click("#voice-join").await;
    b.click("#voice-join").await;
    // Sound from b arrives at a.
    wait_heard(&a, &idb, "a never heard b").await;
    b.click("#voice-mute").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = energy_from(&a, &idb).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let muted = energy_from(&a, &idb).await - before;
    b.click("#voice-mute").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = energy_from(&a, &idb).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let unmuted = energy_from(&a, &idb).await - before;
    eprintln!("energy from b over 3 s: muted {muted:.6}, unmuted {unmuted:.6}");
    assert!(muted < 1e-6, "silence while muted: {muted}");
    assert!(unmuted > 1e-4, "sound after unmuting: {unmuted}");
    let shots = burrow_tests::workspace_root().join("target/screenshots");
    let _ = std::fs::create_dir_all(&shots);
    a.screenshot(&shots.join("voice-two-pages.png")).await;
    a.close().await;
    b.close().await;
}

/// A page without a microphone joins voice listening only, says so, and still hears; leaving
/// voice is seen by the others.
#[tokio::test]
async fn a_page_without_a_microphone_listens_and_can_leave() {
    if !sandbox::enter("a_page_without_a_microphone_listens_and_can_leave")
        || !ffmpeg_or_skip("a_page_without_a_microphone_listens_and_can_leave")
    {
        return;
    }
    let dir = tempdir("nomic");
    let clip = dir.join("tone.ogg");
    tone(&clip, 2);
    let server = ServerProcess::start_on(HOST_IP, &[]);
    let link = server.room_link("voice-nomic");
    let mut native = Burrow::start(&["join", "--voice-play", clip.to_str().unwrap(), &link]);
    let native_id = native.peer_id();
    // No fake device: getUserMedia finds no microphone.
    let insecure_ok = format!(
        "--unsafely-treat-insecure-origin-as-secure=http://{}",
        server.http
    );
    let page = Browser::start_in(
        None,
        &[
            "--use-fake-ui-for-media-stream",
            "--autoplay-policy=no-user-gesture-required",
            &insecure_ok,
        ],
    )
    .await;
    page.open(&link).await;
    page.wait_connected(&native_id).await;
    page.click("#voice-join").await;
    let note = page
        .wait_for(
            "the page says it listens only",
            "const t = document.getElementById('voice-note').textContent; \
             return t.includes('No microphone') && t;",
        )
        .await;
    eprintln!("page: {note}");
    let joined = native.expect_event("voice", &[]);
    assert_eq!(joined["sending"], false, "{joined}");
    let page_id = joined["peer"].as_str().unwrap().to_string();
    wait_heard(&page, &native_id, "the listening page never heard burrow").await;
    page.click("#voice-join").await; // now "Leave voice"
    let left = native.expect("the page leaving voice", |v| {
        v["event"] == "voice" && v["peer"] == page_id.as_str() && v["on"] == false
    });
    eprintln!("burrow: {left}");
    page.close().await;
}
