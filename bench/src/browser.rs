//! `browser`: file throughput between headless Chromium (the page) and `burrow`, both ways, and
//! between two pages, beside `burrow` → `burrow` with the same file in the same run.
//!
//! Chromium gathers no candidates without a default route, so the bench re-runs itself under
//! `unshare --net` (the tests' private network, `burrow_tests::sandbox`) and collects the
//! child's figures. It drives the release binaries (`burrow`, `signal-server`) next to itself and
//! the page in `www/pkg`; what is missing is reported, not measured.

use std::path::Path;
use std::time::Instant;

use burrow_tests::browser::Browser;
use burrow_tests::burrow::{random_file, Burrow};
use burrow_tests::sandbox::HOST_IP;
use burrow_tests::server::ServerProcess;

use crate::report::Figure;

const CHILD: &str = "BURROW_BENCH_IN_NETNS";
const BYTES: usize = 64 << 20;

/// Runs the bench: in the parent, starts the child in its namespace and takes its figures.
pub async fn run(out: &mut Vec<Figure>) {
    if crate::child::is_child(CHILD) {
        burrow_tests::sandbox::build_network();
        measure(out).await;
        return;
    }
    let why = match burrow_tests::sandbox::cannot_isolate() {
        Some(why) => why,
        None => match crate::child::run("browser", CHILD, true, out) {
            Ok(()) => return,
            Err(why) => why,
        },
    };
    Figure::new("browser", "page → burrow", None, "MB/s")
        .note(why)
        .emit(out)
}

fn mb_per_s(bytes: usize, secs: f64) -> Option<f64> {
    (secs > 0.0).then(|| bytes as f64 / 1e6 / secs)
}

/// Inside the namespace: a server, `burrow join`, a page; 64 MiB each way, then burrow→burrow.
async fn measure(out: &mut Vec<Figure>) {
    let server = ServerProcess::start_on(HOST_IP, &[]);
    let link = server.room_link("bench-browser");
    let dir = std::env::temp_dir().join(format!("burrow-bench-browser-{}", std::process::id()));
    let _ = std::fs::create_dir_all(&dir);
    let inbox = dir.join("inbox");
    let file = dir.join("bench.bin");
    random_file(&file, BYTES);

    let mut native = Burrow::start(&["join", "--accept", &inbox.display().to_string(), &link]);
    let native_id = native.peer_id();
    let page = Browser::start().await;
    page.open(&link).await;
    let page_id = page.peer_id().await;
    page.wait_connected(&native_id).await;
    native.expect_event("connected", &[("peer", &page_id)]);

    // Page → burrow: from picking the file until burrow has it all.
    let started = Instant::now();
    page.pick_file("#file-input", &file).await;
    native.expect_event("file_received", &[("from", &page_id)]);
    let up = started.elapsed().as_secs_f64();

    // burrow → page: from the sender's connection until it is done (the page acknowledged).
    let down = send_and_time(&file, &link, &page_id);
    page.close().await;
    drop(native);

    // The reference: burrow → burrow, the same file, the same namespace (another room: the
    // first `burrow` keeps its place a while after being killed).
    let link = server.room_link("bench-browser-reference");
    let reference_inbox = dir.join("inbox2");
    let mut receiver = Burrow::start(&[
        "join",
        "--accept",
        &reference_inbox.display().to_string(),
        &link,
    ]);
    let receiver_id = receiver.peer_id();
    let native_pair = send_and_time(&file, &link, &receiver_id);
    drop(receiver);

    // Chromium → Chromium, the same file: what Chromium's own data channel does between two
    // pages, to tell its limits from Burrow's.
    let link = server.room_link("bench-browser-pages");
    let (sender, receiver) = (Browser::start().await, Browser::start().await);
    sender.open(&link).await;
    receiver.open(&link).await;
    let receiver_id = receiver.peer_id().await;
    sender.wait_connected(&receiver_id).await;
    receiver.wait_connected(&sender.peer_id().await).await;
    let started = Instant::now();
    sender.pick_file("#file-input", &file).await;
    receiver
        .wait_for(
            "the file received",
            "return document.querySelector('#transfers li[data-direction=in].done');",
        )
        .await;
    let pages = started.elapsed().as_secs_f64();
    sender.close().await;
    receiver.close().await;

    // Chromium's data channel without any Burrow code: two connections in one blank page,
    // the same bytes in the same 64 KiB messages with the same flow control.
    let blank = Browser::start().await;
    blank.open(&format!("http://{}/healthz", server.http)).await;
    // (A failure here is a missing figure with its reason, not a lost run.)
    let raw = match blank.client.execute_async(RAW_CHANNEL, vec![]).await {
        Ok(serde_json::Value::Number(secs)) => Ok(secs.as_f64().unwrap_or_default()),
        Ok(other) => Err(other.to_string()),
        Err(e) => Err(e.to_string()),
    };
    blank.close().await;
    let _ = std::fs::remove_dir_all(&dir);

    let reference = "burrow → burrow, same file, same run";
    let native_pair = native_pair.and_then(|s| mb_per_s(BYTES, s));
    let note = format!("{} MiB, Chromium headless, loopback veth", BYTES >> 20);
    Figure::new("browser", "page → burrow", mb_per_s(BYTES, up), "MB/s")
        .against(reference, native_pair)
        .note(note.clone())
        .emit(out);
    Figure::new(
        "browser",
        "burrow → page",
        down.and_then(|s| mb_per_s(BYTES, s)),
        "MB/s",
    )
    .against(reference, native_pair)
    .note(note.clone())
    .emit(out);
    Figure::new("browser", "page → page", mb_per_s(BYTES, pages), "MB/s")
        .against(reference, native_pair)
        .note(format!(
            "{note}; two Chromium pages, the receiver polled every 0.2 s"
        ))
        .emit(out);
    Figure::new(
        "browser",
        "Chromium data channel alone",
        raw.as_ref().ok().and_then(|s| mb_per_s(BYTES, *s)),
        "MB/s",
    )
    .against(reference, native_pair)
    .note(match &raw {
        Ok(_) => "two RTCPeerConnections in one blank page, no Burrow code, same messages and \
                  flow control"
            .to_string(),
        Err(why) => format!("the script failed: {why}"),
    })
    .emit(out);
}

/// Seconds Chromium takes to move [`BYTES`] between two of its own connections in one page
/// (64 KiB messages, waiting above `HIGH_WATER` until `LOW_WATER`, as Burrow's page does).
const RAW_CHANNEL: &str = r#"
const done = arguments[arguments.length - 1];
(async () => {
  const total = 64 * 1024 * 1024, chunk = new ArrayBuffer(64 * 1024);
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  let got = 0;
  const received = new Promise((resolve) => {
    b.ondatachannel = (e) => {
      e.channel.binaryType = 'arraybuffer';
      e.channel.onmessage = (m) => { got += m.data.byteLength; if (got >= total) resolve(); };
    };
  });
  const dc = a.createDataChannel('bench');
  dc.bufferedAmountLowThreshold = 256 * 1024;
  await a.setLocalDescription();
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription();
  await a.setRemoteDescription(b.localDescription);
  await new Promise((resolve) => (dc.onopen = resolve));
  const t0 = performance.now();
  for (let sent = 0; sent < total; sent += chunk.byteLength) {
    if (dc.bufferedAmount > 1024 * 1024) {
      await new Promise((resolve) => (dc.onbufferedamountlow = resolve));
    }
    dc.send(chunk);
  }
  await received;
  done((performance.now() - t0) / 1000);
})().catch((e) => done(String(e)));
"#;

/// `burrow send FILE LINK` to `peer`: seconds from its `connected` to its exit.
fn send_and_time(file: &Path, link: &str, peer: &str) -> Option<f64> {
    let mut sender = Burrow::start(&["send", &file.display().to_string(), link]);
    sender.expect_event("connected", &[("peer", peer)]);
    let started = Instant::now();
    let ok = sender.wait().success();
    ok.then(|| started.elapsed().as_secs_f64())
}
