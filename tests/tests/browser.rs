//! The page in real headless Chromium, against the real server serving the built page, each test
//! in a private network namespace (see `burrow_tests::sandbox`).

use std::path::PathBuf;
use std::time::Duration;

use sha2::Digest;

use burrow_tests::browser::Browser;
use burrow_tests::burrow::{random_file, Burrow};
use burrow_tests::sandbox::{self, HOST_IP};
use burrow_tests::server::ServerProcess;

const LABELS: [&str; 3] = ["direct (LAN)", "direct (hole punched)", "relayed"];

/// Screenshots go to target/screenshots, to look at what the tests saw.
fn screenshot_path(name: &str) -> PathBuf {
    let dir = burrow_tests::workspace_root().join("target/screenshots");
    let _ = std::fs::create_dir_all(&dir);
    dir.join(name)
}

/// Presses **Open web** for `exposer`'s site and enters the site's frame. The site runs on its
/// own origin: the room page frames its host frame, which frames the site.
async fn open_site(page: &Browser, exposer: &str) {
    let button = format!("#peers li[data-peer=\"{exposer}\"] button.open");
    page.wait_for(
        "the Open button",
        &format!(
            "return !!document.querySelector('{}');",
            button.replace('\'', "\\'")
        ),
    )
    .await;
    page.click(&button).await;
    page.client.enter_frame(0).await.expect("the host frame");
    page.wait_for(
        "the site's frame",
        "return !!document.getElementById('site') && !document.getElementById('site').hidden;",
    )
    .await;
    page.client.enter_frame(0).await.expect("the site's frame");
}

/// Waits until the page has joined, and returns its peer id.
async fn joined(b: &Browser) -> String {
    b.wait_for(
        "a peer id",
        "const t = document.querySelector('#me').textContent; \
         return t.includes('…') ? null : (t.match(/\\(([^)]+)\\)$/)?.[1] || t);",
    )
    .await
    .as_str()
    .unwrap_or_default()
    .to_string()
}

/// Waits until the page shows `peer` connected, and returns its badge text.
async fn badge_for(b: &Browser, peer: &str) -> String {
    let script = format!(
        "const li = document.querySelector('#peers li[data-peer=\"{peer}\"]'); \
         return li && li.dataset.state === 'connected' ? li.querySelector('.badge').textContent : null;"
    );
    b.wait_for(&format!("{peer} connected"), &script)
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
}

async fn say(b: &Browser, text: &str) {
    b.type_into("#chat-input", text).await;
    b.click("#chat-send").await;
}

#[tokio::test]
async fn two_browsers_see_each_other_and_chat() {
    if !sandbox::enter("two_browsers_see_each_other_and_chat") {
        return;
    }
    let server = ServerProcess::start_on(HOST_IP, &[]);
    let link = server.room_link("two-browsers");
    let a = Browser::start().await;
    a.open(&link).await;
    let ida = joined(&a).await;
    let b = Browser::start().await;
    b.open(&link).await;
    let idb = joined(&b).await;

    let badge_a = badge_for(&a, &idb).await;
    let badge_b = badge_for(&b, &ida).await;
    assert!(LABELS.contains(&badge_a.as_str()), "badge {badge_a:?}");
    assert!(LABELS.contains(&badge_b.as_str()), "badge {badge_b:?}");

    say(&a, "hello from browser A").await;
    b.wait_chat("hello from browser A").await;
    say(&b, "and back from B ✓").await;
    a.wait_chat("and back from B ✓").await;

    // A file that would run as a page (HTML with a script) reaches B as bytes to download:
    // never with the sender's type, which would make its blob URL a live page on B's origin.
    a.run_async(
        "const f = new File(['<script>localStorage.x = 1</script>'], 'page.html',            { type: 'text/html' });          window.burrowRoom.sendFile(f); arguments[arguments.length - 1](true);",
    )
    .await;
    let url = b
        .wait_for(
            "the HTML file's download link",
            "const a = document.querySelector('#transfers li[data-direction=in].done a.download');              return a ? a.href : null;",
        )
        .await;
    let got = b
        .run_async(&format!(
            "const done = arguments[arguments.length - 1];              fetch('{}').then(r => r.blob()).then(async b => done(b.type + ' ' + await b.text()));",
            url.as_str().unwrap_or_default()
        ))
        .await;
    assert_eq!(
        got, "application/octet-stream <script>localStorage.x = 1</script>",
        "offered as bytes, intact"
    );

    a.screenshot(&screenshot_path("two-browsers-a.png")).await;
    a.close().await;
    // B is told A left.
    b.wait_for(
        "A's departure",
        &format!(
            "return !document.querySelector('#peers li[data-peer=\"{ida}\"]') && \
                  document.querySelector('#chat-log').textContent.includes('left');"
        ),
    )
    .await;
    b.close().await;
}

#[tokio::test]
async fn browser_and_native_chat_and_swap_files() {
    if !sandbox::enter("browser_and_native_chat_and_swap_files") {
        return;
    }
    let server = ServerProcess::start_on(HOST_IP, &[]);
    let link = server.room_link("mixed");
    let dir = std::env::temp_dir().join(format!("burrow-browser-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let inbox = dir.join("inbox");

    let mut native = Burrow::start(&[
        "--name",
        "term",
        "join",
        "--accept",
        inbox.to_str().unwrap(),
        &link,
    ]);
    let native_id = native.peer_id();
    let page = Browser::start().await;
    page.open(&link).await;
    let page_id = joined(&page).await;

    let badge = badge_for(&page, &native_id).await;
    assert!(LABELS.contains(&badge.as_str()), "badge {badge:?}");
    let conn = native.expect_event("connected", &[("peer", &page_id)]);
    assert!(
        LABELS.contains(&conn["label"].as_str().unwrap_or("")),
        "{conn}\n{}",
        native.stderr()
    );

    // Chat both ways.
    say(&page, "hi terminal").await;
    let got = native.expect_event("chat", &[("from", &page_id)]);
    assert_eq!(got["text"], "hi terminal");
    native.say("hi browser");
    page.wait_chat("hi browser").await;

    // Browser → native: a file picked in the page arrives with the right SHA-256.
    let up = dir.join("from-browser.bin");
    let up_sha = random_file(&up, 3 * 1024 * 1024 + 123);
    page.pick_file("#file-input", &up).await;
    let got = native.expect_event("file_received", &[("from", &page_id)]);
    assert_eq!(got["sha256"], up_sha.as_str());
    assert_eq!(got["name"], "from-browser.bin");
    let saved = PathBuf::from(got["path"].as_str().unwrap());
    assert_eq!(burrow_tests::burrow::sha256_file(&saved), up_sha);
    page.wait_for(
        "the upload marked delivered",
        "return document.querySelector('#transfers li[data-direction=out].done');",
    )
    .await;

    // Native → browser: `burrow send` offers a file; the page's download hashes right.
    let down = dir.join("from-native.bin");
    let down_sha = random_file(&down, 2 * 1024 * 1024 + 7);
    let mut sender = Burrow::start(&["send", down.to_str().unwrap(), &link]);
    let url = page
        .wait_for(
            "a download link",
            "const a = document.querySelector('#transfers li[data-direction=in].done a.download'); \
             return a ? a.href : null;",
        )
        .await;
    let url = url.as_str().unwrap().to_string();
    let name = page
        .wait_for(
            "the file name",
            "return document.querySelector('#transfers li[data-direction=in] .fname').textContent;",
        )
        .await;
    assert_eq!(name, "from-native.bin");
    let data_url = page
        .run_async(&format!(
            "const done = arguments[arguments.length - 1]; \
             fetch('{url}').then(r => r.blob()).then(b => {{ \
               const fr = new FileReader(); fr.onload = () => done(fr.result); fr.readAsDataURL(b); }});"
        ))
        .await;
    let b64 = data_url
        .as_str()
        .and_then(|s| s.split_once(','))
        .map(|(_, b)| b.to_string())
        .expect("a data URL");
    use base64::Engine;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .expect("base64");
    use sha2::Digest;
    assert_eq!(hex::encode(sha2::Sha256::digest(&bytes)), down_sha);
    assert!(sender.wait().success(), "{:?}", sender.seen);

    // Both tell each transfer with the same events (one set, `peer_core::events`): the page's
    // `file_sent` matches what `burrow` received, the page's `file_received` what `burrow` sent,
    // field for field but for where each keeps the file (`path` on disk, `url` in the page) and
    // the page's transfer id.
    let page_events = page
        .run_async("arguments[arguments.length - 1](window.burrowEvents);")
        .await;
    let page_event = |kind: &str| {
        page_events
            .as_array()
            .and_then(|a| a.iter().find(|e| e["event"] == kind).cloned())
            .unwrap_or_else(|| panic!("the page never said {kind}: {page_events}"))
    };
    let sent_by_page = page_event("file_sent");
    let received_by_page = page_event("file_received");
    let sent_by_burrow = sender
        .seen
        .iter()
        .find(|e| e["event"] == "file_sent")
        .cloned()
        .expect("burrow send said file_sent");
    let shared = |v: &serde_json::Value| {
        let mut v = v.clone();
        if let Some(o) = v.as_object_mut() {
            for k in ["path", "url", "id", "event", "from", "to"] {
                o.remove(k);
            }
        }
        v
    };
    assert_eq!(
        shared(&sent_by_page),
        shared(&got),
        "{sent_by_page} vs {got}"
    );
    assert_eq!(sent_by_page["to"], native_id.as_str());
    assert_eq!(got["from"], page_id.as_str());
    assert_eq!(
        shared(&received_by_page),
        shared(&sent_by_burrow),
        "{received_by_page} vs {sent_by_burrow}"
    );
    assert!(received_by_page["url"].is_string() && got["path"].is_string());

    page.screenshot(&screenshot_path("browser-and-native.png"))
        .await;
    page.close().await;
    native.expect_event("peer_left", &[("peer", &page_id)]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The headline: a site on a native peer's loopback opens in the page, peer to peer, through
/// the service worker: text, an image, and a form POST.
#[tokio::test]
async fn the_page_opens_a_site_a_native_peer_exposes() {
    if !sandbox::enter("the_page_opens_a_site_a_native_peer_exposes") {
        return;
    }
    // On 127.0.0.1 the page is a secure context, which service workers need.
    let server = ServerProcess::start(&[]);
    let link = server.room_link("site");
    let web = burrow_tests::site::web().await;
    let local = web.addr.to_string();
    let mut exposer = Burrow::start(&["--bind", "0.0.0.0", "expose", &local, &link]);
    let exposer_id = exposer.peer_id();
    let page = Browser::start().await;
    page.open(&link).await;
    open_site(&page, &exposer_id).await;
    let greeting = page
        .wait_for(
            "the site's heading",
            "return document.getElementById('greeting')?.textContent;",
        )
        .await;
    assert_eq!(greeting, "Hello from behind the NAT");
    let width = page
        .wait_for(
            "the image loaded",
            "const i = document.getElementById('pic'); return i && i.complete && i.naturalWidth;",
        )
        .await;
    assert_eq!(width, 3, "the 3x2 PNG decoded");
    page.click("#go").await;
    // The site's frame navigates to the answer: looked for from the top each time.
    let posted = page
        .wait_in_frame(
            &[0, 0],
            "the form's answer",
            "return document.getElementById('posted')?.textContent;",
        )
        .await;
    assert_eq!(posted, "posted: word=burrow");
    page.enter_frames(&[]).await.expect("back to the page");
    page.screenshot(&screenshot_path("site-in-page.png")).await;
    assert!(web.connections.load(std::sync::atomic::Ordering::SeqCst) >= 3);
    exposer.expect_event("connected", &[]);
    page.close().await;
}

/// Services issue, health: a service whose local server does not answer is greyed on the
/// page (its button cannot be pressed), the other stays open.
#[tokio::test]
async fn the_page_greys_a_service_whose_local_server_is_down() {
    if !sandbox::enter("the_page_greys_a_service_whose_local_server_is_down") {
        return;
    }
    let server = ServerProcess::start(&[]);
    let link = server.room_link("health");
    let web = burrow_tests::site::web().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a port");
    let (site, gone) = (
        format!("site=http:{}", web.addr),
        format!("gone=http:{closed}"),
    );
    let args = [
        "--bind",
        "0.0.0.0",
        "expose",
        &link,
        "--service",
        &site,
        "--service",
        &gone,
        "--health-every",
        "1",
    ];
    let mut exposer = Burrow::start(&args);
    let exposer_id = exposer.peer_id();
    exposer.expect_event("service_down", &[("service", "gone")]);
    let page = Browser::start().await;
    page.open(&link).await;
    let buttons = page
        .wait_for(
            "the two services, one greyed",
            &format!(
                "const bs = [...document.querySelectorAll('#peers li[data-peer=\"{exposer_id}\"] \
                 button.open')]; \
                 const g = bs.find((b) => b.dataset.service === 'gone'); \
                 return g && g.disabled ? bs.map((b) => `${{b.dataset.service}}:${{b.disabled}}:${{b.className}}`).join(' ') : null;"
            ),
        )
        .await;
    assert_eq!(
        buttons, "site:false:button open gone:true:button open down",
        "{buttons}"
    );
    page.screenshot(&screenshot_path("service-down.png")).await;
    page.close().await;
}

/// The streams issue: a page with 200 assets (images, scripts, a POST) opened with **Open
/// web**, every request a new stream right after others ended: every one loads.
#[tokio::test]
async fn a_site_page_with_two_hundred_assets_loads_every_one() {
    if !sandbox::enter("a_site_page_with_two_hundred_assets_loads_every_one") {
        return;
    }
    let server = ServerProcess::start(&[]);
    let link = server.room_link("many");
    let web = burrow_tests::site::web().await;
    let local = web.addr.to_string();
    let mut exposer = Burrow::start(&["--bind", "0.0.0.0", "expose", &local, &link]);
    let exposer_id = exposer.peer_id();
    let page = Browser::start().await;
    page.open(&link).await;
    open_site(&page, &exposer_id).await;
    page.wait_for(
        "the site's heading",
        "return document.getElementById('greeting')?.textContent;",
    )
    .await;
    page.client
        .execute("location.href = 'many'; return true;", vec![])
        .await
        .expect("navigate the site");
    let loaded = page
        .wait_for(
            "every asset",
            "return document.title === 'Many' && (window.images || 0) + (window.broken || 0) \
             === 190 && window.scripts === 9 && window.posted !== undefined \
             && [window.images, window.broken || 0, window.scripts, window.posted].join(' ');",
        )
        .await;
    assert_eq!(
        loaded,
        format!(
            "{} 0 {} true",
            burrow_tests::site::MANY_IMAGES,
            burrow_tests::site::MANY_SCRIPTS
        ),
        "images, broken images, scripts, the POST"
    );
    assert!(
        web.connections.load(std::sync::atomic::Ordering::SeqCst) > burrow_tests::site::MANY_ASSETS,
        "the page and every asset came from the site"
    );
    exposer.expect_event("connected", &[]);
    page.close().await;
}

/// The hardening issue's row 10: a hostile exposed site opened with **Open web** runs on its own
/// origin: it cannot read or script the room page above it, send chat through it, or touch its
/// storage; what it stores stays on its own origin.
#[tokio::test]
async fn a_hostile_exposed_site_cannot_touch_the_room_page() {
    if !sandbox::enter("a_hostile_exposed_site_cannot_touch_the_room_page") {
        return;
    }
    let server = ServerProcess::start(&[]);
    let link = server.room_link("hostile");
    let site = burrow_tests::site::hostile().await;
    let local = site.addr.to_string();
    let mut exposer = Burrow::start(&["--bind", "0.0.0.0", "expose", &local, &link]);
    let exposer_id = exposer.peer_id();
    let page = Browser::start().await;
    page.open(&link).await;
    page.run_async(
        "localStorage.setItem('burrow.name', 'visitor'); arguments[arguments.length - 1](true);",
    )
    .await;
    open_site(&page, &exposer_id).await;
    let probe = page
        .wait_for(
            "the probe's report",
            "const p = document.getElementById('probe'); return p && p.textContent.includes('storage') && p.textContent;",
        )
        .await;
    let probe = probe.as_str().unwrap_or_default().to_string();
    for line in [
        "top: blocked",
        "room: blocked",
        "chat: blocked",
        "room-storage: blocked",
    ] {
        assert!(probe.contains(line), "{line} expected in:\n{probe}");
    }
    assert!(
        probe.contains("storage: own http://") && probe.contains(".localhost:"),
        "the site's storage is its own origin's: {probe}"
    );
    for _ in 0..2 {
        page.client.enter_parent_frame().await.expect("back up");
    }
    let name = page
        .run_async("arguments[arguments.length - 1](localStorage.getItem('burrow.name'));")
        .await;
    assert_eq!(name, "visitor", "the room page's storage is untouched");
    let log = page.text("#chat-log").await;
    assert!(
        !log.contains("pwned"),
        "no chat was sent as the visitor: {log}"
    );
    exposer.expect_event("connected", &[]);
    page.close().await;
}

/// The hardening issue: each unfinished file held a descriptor and a 1 MiB buffer, without
/// limit (1,100 of them used up the descriptors and an innocent peer's send failed). A page
/// sends six files at once to `burrow join --max-files-at-once 2`: the files beyond its places
/// are refused, saying why, on both sides; every file that was let in arrives intact.
#[tokio::test]
async fn files_beyond_the_places_a_peer_has_are_refused() {
    if !sandbox::enter("files_beyond_the_places_a_peer_has_are_refused") {
        return;
    }
    let server = ServerProcess::start_on(HOST_IP, &[]);
    let link = server.room_link("places");
    // Removed when the test ends, however it ends.
    let dir = burrow_tests::TempDir::new("places");
    let mut native = Burrow::start(&[
        "join",
        "--accept",
        dir.to_str().unwrap(),
        "--max-files-at-once",
        "2",
        &link,
    ]);
    let native_id = native.peer_id();
    let page = Browser::start().await;
    page.open(&link).await;
    let page_id = joined(&page).await;
    badge_for(&page, &native_id).await;
    // Six files of 16 MiB, byte i repeated, sent at once.
    const FILES: usize = 6;
    const SIZE: usize = 16 << 20;
    let started = page
        .client
        .execute(
            &format!(
                "let n = 0; for (let i = 0; i < {FILES}; i++) \
                 n += window.burrowRoom.sendFile(new File([new Uint8Array({SIZE}).fill(i)], `f${{i}}.bin`)); \
                 return n;"
            ),
            vec![],
        )
        .await
        .expect("send six files");
    assert_eq!(started, FILES as u64, "six transfers started");
    let why = "too many files at once from this peer (at most 2); send it once one is done";
    let deadline = std::time::Instant::now() + burrow_tests::burrow::PATIENCE * 2;
    let (received, refused) = loop {
        native.drain();
        let of = |e: &str| -> Vec<serde_json::Value> {
            native
                .seen
                .iter()
                .filter(|v| v["event"] == e)
                .cloned()
                .collect()
        };
        let (received, failed) = (of("file_received"), of("file_failed"));
        if received.len() + failed.len() >= FILES {
            break (received, failed);
        }
        assert!(
            std::time::Instant::now() < deadline,
            "not every file was answered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(!refused.is_empty(), "some were over the limit");
    assert!(received.len() >= 2, "the places were used: {received:?}");
    for r in &refused {
        assert_eq!(r["peer"], page_id.as_str());
        assert_eq!(
            r["reason"],
            format!("the receiver refused it: {why}"),
            "{r}"
        );
    }
    for r in &received {
        let name = r["name"].as_str().unwrap_or_default();
        let i: u8 = name[1..2].parse().expect("f<i>.bin");
        let want = format!("{:x}", sha2::Sha256::digest(vec![i; SIZE]));
        assert_eq!(r["sha256"], want.as_str(), "{name} intact");
    }
    // The page says why, for each refused file.
    let shown = page
        .wait_for(
            "the refusals on the page",
            &format!(
                "const t = document.getElementById('transfers').textContent; \
                 return (t.split('at most 2').length - 1) >= {} && t;",
                refused.len()
            ),
        )
        .await;
    assert!(shown
        .as_str()
        .unwrap_or_default()
        .contains("too many files at once"));
    page.close().await;
}

/// The hardening issue's High finding: a hostile exposed site, opened with **Open web** in one
/// tab, tries to take over another peer's site origin (frame its host frame, hand it a port of
/// its own, answer its requests and plant storage there), while the visitor uses the real site
/// in a second tab. The origin's label is the visitor's secret (what every member knows no
/// longer computes it); told the real origin anyway, the hostile site gets no host frame to
/// talk to; the second tab's requests all reach the real service, and nothing was planted.
#[tokio::test]
async fn a_hostile_site_cannot_take_over_another_sites_origin() {
    if !sandbox::enter("a_hostile_site_cannot_take_over_another_sites_origin") {
        return;
    }
    let server = ServerProcess::start(&[]);
    let link = server.room_link("takeover");
    let web = burrow_tests::site::web().await;
    let evil = burrow_tests::site::takeover().await;
    let mut victim = Burrow::start(&["--bind", "0.0.0.0", "expose", &web.addr.to_string(), &link]);
    let victim_id = victim.peer_id();
    let mut attacker =
        Burrow::start(&["--bind", "0.0.0.0", "expose", &evil.addr.to_string(), &link]);
    let attacker_id = attacker.peer_id();
    let page = Browser::start().await;
    let first_tab = page.client.window().await.expect("the first tab");
    page.open(&link).await;
    open_site(&page, &victim_id).await;
    let greeting = page
        .wait_for(
            "the real site's heading",
            "return document.getElementById('greeting')?.textContent;",
        )
        .await;
    assert_eq!(greeting, "Hello from behind the NAT");
    for _ in 0..2 {
        page.client.enter_parent_frame().await.expect("back up");
    }
    let origin = page.text("#site-origin").await;
    assert!(origin.contains(".localhost:"), "a site origin: {origin}");
    // What every member of the room knows: room, peer, service.
    let public_label = page
        .run_async(&format!(
            "const cb = arguments[arguments.length - 1]; \
             const b = new TextEncoder().encode(location.pathname.split('/').pop() + '\\n{victim_id}\\nweb'); \
             crypto.subtle.digest('SHA-256', b).then((d) => cb([...new Uint8Array(d).slice(0, 16)] \
             .map((x) => x.toString(16).padStart(2, '0')).join('')));"
        ))
        .await;
    let public_label = public_label.as_str().unwrap_or_default();
    assert_eq!(public_label.len(), 32);
    assert!(
        !origin.contains(public_label),
        "the origin {origin} is not computable from room, peer and service"
    );

    // Tab 1: the hostile site, told the real origin, tries to drive its host frame.
    open_site(&page, &attacker_id).await;
    page.client
        .execute(
            &format!("location.href = '/x#{origin}'; return true;"),
            vec![],
        )
        .await
        .expect("aim the takeover");
    let probe = page
        .wait_for(
            "the takeover's report",
            "return window.done && document.getElementById('probe').textContent;",
        )
        .await;
    assert_eq!(
        probe, "ready: none, stolen: 0",
        "the host frame never answered"
    );

    // Tab 2: the visitor uses the real site; every request reaches the real service.
    let served_before = web.connections.load(std::sync::atomic::Ordering::SeqCst);
    let second = page.client.new_window(true).await.expect("a second tab");
    page.client
        .switch_to_window(second.handle)
        .await
        .expect("to the second tab");
    page.open(&link).await;
    open_site(&page, &victim_id).await;
    let greeting = page
        .wait_for(
            "the real site's heading again",
            "return document.getElementById('greeting')?.textContent;",
        )
        .await;
    assert_eq!(greeting, "Hello from behind the NAT");
    let planted = page
        .client
        .execute("return localStorage.getItem('planted');", vec![])
        .await
        .expect("the site's storage");
    assert_eq!(planted, serde_json::Value::Null, "nothing was planted");
    page.click("#go").await;
    let posted = page
        .wait_for(
            "the form's answer",
            "return document.getElementById('posted')?.textContent;",
        )
        .await;
    assert_eq!(
        posted, "posted: word=burrow",
        "the POST reached the real site"
    );
    assert!(
        web.connections.load(std::sync::atomic::Ordering::SeqCst) >= served_before + 3,
        "the page, its image and the POST came from the real service"
    );
    page.client
        .switch_to_window(first_tab)
        .await
        .expect("back to the first tab");
    page.client.enter_frame(0).await.expect("the host frame");
    page.client.enter_frame(0).await.expect("the hostile site");
    let probe = page.text("#probe").await;
    assert_eq!(
        probe, "ready: none, stolen: 0",
        "no request went to the hostile site"
    );
    victim.expect_event("connected", &[]);
    attacker.expect_event("connected", &[]);
    page.close().await;
}

/// A peer that vanishes without a word (its process frozen: no FIN, no RST, nothing) is shown
/// unreachable and greyed from the path itself, and connected again when it comes back.
#[tokio::test]
async fn the_page_shows_a_vanished_peer_unreachable_then_back() {
    if !sandbox::enter("the_page_shows_a_vanished_peer_unreachable_then_back") {
        return;
    }
    let server = ServerProcess::start_on(HOST_IP, &[]);
    let link = server.room_link("vanish");
    let mut native = Burrow::start(&["join", &link]);
    let native_id = native.peer_id();
    let page = Browser::start().await;
    page.open(&link).await;
    let connected = format!(
        "const li = document.querySelector('#peers li[data-peer=\"{native_id}\"]'); \
         return li && li.dataset.state === 'connected';"
    );
    page.wait_for("the native peer connected", &connected).await;
    let pid = libc::pid_t::try_from(native.pid()).expect("pid");
    // SAFETY: signals to a child this test started and still owns.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let unreachable = page
        .wait_for(
            "the frozen peer shown unreachable",
            &format!(
                "const li = document.querySelector('#peers li[data-peer=\"{native_id}\"]'); \
                 return li && li.dataset.state === 'disconnected' && \
                   li.querySelector('.state').textContent;"
            ),
        )
        .await;
    assert_eq!(unreachable, "unreachable");
    let opacity = page
        .run_async(&format!(
            "const li = document.querySelector('#peers li[data-peer=\"{native_id}\"]'); \
             arguments[arguments.length - 1](getComputedStyle(li).opacity);"
        ))
        .await;
    assert_eq!(opacity, "0.5", "greyed out");
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGCONT) };
    page.wait_for("the peer back", &connected).await;
    page.close().await;
}

/// The server crashes and comes back on the same address: the page keeps its peer (same id,
/// same connection, no "left"), says what is going on, chat flows over the link meanwhile, and
/// both are back in the room afterwards.
#[tokio::test]
async fn the_page_keeps_its_peers_through_a_server_restart() {
    if !sandbox::enter("the_page_keeps_its_peers_through_a_server_restart") {
        return;
    }
    const PORT: u16 = 8090;
    let mut server = ServerProcess::spawn(ServerProcess::command_at(HOST_IP, PORT, &[]));
    let link = server.room_link("restart");
    let mut native = Burrow::start(&["join", &link]);
    let native_id = native.peer_id();
    let page = Browser::start().await;
    page.open(&link).await;
    let connected = format!(
        "const li = document.querySelector('#peers li[data-peer=\"{native_id}\"]'); \
         return li && li.dataset.state === 'connected';"
    );
    page.wait_for("the native peer connected", &connected).await;
    let page_id = page
        .run_async("arguments[arguments.length - 1](window.burrowRoom.peerId);")
        .await;
    native.expect_event("connected", &[("peer", page_id.as_str().unwrap_or(""))]);

    server.kill();
    page.wait_for(
        "the page says the server is gone and the links carry on",
        "return document.getElementById('status').textContent.includes('links to peers carry on');",
    )
    .await;
    native.say("over the link while the server is away");
    page.wait_for(
        "chat during the outage",
        "return document.getElementById('chat-log').textContent.includes('over the link while the server is away');",
    )
    .await;

    let _server = ServerProcess::spawn(ServerProcess::command_at(HOST_IP, PORT, &[]));
    page.wait_for(
        "back in the room",
        "return document.getElementById('chat-log').textContent.includes('Back in the room');",
    )
    .await;
    native.expect_event("server_back", &[]);
    page.wait_for("the same peer, still connected", &connected)
        .await;
    let same_id = page
        .run_async("arguments[arguments.length - 1](window.burrowRoom.peerId);")
        .await;
    assert_eq!(same_id, page_id, "the page kept its id");
    page.run_async(
        "window.burrowRoom.sendChat('after the restart'); arguments[arguments.length - 1](true);",
    )
    .await;
    let got = native.expect_event("chat", &[("from", page_id.as_str().unwrap_or(""))]);
    assert_eq!(got["text"], "after the restart");
    native.drain();
    assert!(
        !native.has_seen("peer_left"),
        "nobody left: {:?}",
        native.seen
    );
    let left_notes = page
        .run_async("arguments[arguments.length - 1](document.getElementById('chat-log').textContent.includes(' left'));")
        .await;
    assert_eq!(left_notes, false, "the page saw nobody leave");
    page.close().await;
}

/// The page and `burrow` tell the same story in the same words (one event set, from
/// `peer_core::events`): the `connected` each reports for the other names the same path with
/// the same fields, and a third peer joining and leaving is `peer_joined` / `peer_left` with the
/// same fields on both.
#[tokio::test]
async fn the_page_and_burrow_report_the_same_events() {
    if !sandbox::enter("the_page_and_burrow_report_the_same_events") {
        return;
    }
    let server = ServerProcess::start_on(HOST_IP, &[]);
    let link = server.room_link("same-events");
    let mut native = Burrow::start(&["join", &link]);
    let native_id = native.peer_id();
    let page = Browser::start().await;
    page.open(&link).await;
    page.wait_connected(&native_id).await;
    let page_id = page
        .run_async("arguments[arguments.length - 1](window.burrowRoom.peerId);")
        .await;
    let page_id = page_id.as_str().unwrap().to_string();
    let events_of_page = || async {
        page.run_async("arguments[arguments.length - 1](window.burrowEvents);")
            .await
    };
    let find = |events: &serde_json::Value, kind: &str, peer: &str| {
        events
            .as_array()
            .and_then(|a| {
                a.iter()
                    .find(|e| e["event"] == kind && e["peer"] == peer)
                    .cloned()
            })
            .unwrap_or_else(|| panic!("the page never said {kind} for {peer}: {events}"))
    };
    let keys = burrow_tests::json_keys;
    let native_conn = native.expect_event("connected", &[("peer", &page_id)]);
    let page_conn = find(&events_of_page().await, "connected", &native_id);
    assert_eq!(
        keys(&native_conn),
        keys(&page_conn),
        "{native_conn} vs {page_conn}"
    );
    assert_eq!(
        native_conn["path"], page_conn["path"],
        "{native_conn} vs {page_conn}"
    );
    assert_eq!(native_conn["label"], page_conn["label"]);

    let mut third = Burrow::start(&["join", &link]);
    let third_id = third.peer_id();
    let native_joined = native.expect_event("peer_joined", &[("peer", &third_id)]);
    page.wait_connected(&third_id).await;
    let page_joined = find(&events_of_page().await, "peer_joined", &third_id);
    assert_eq!(native_joined, page_joined);
    assert!(third.quit().success());
    let native_left = native.expect_event("peer_left", &[("peer", &third_id)]);
    page.wait_for(
        "the third peer gone",
        &format!("return !document.querySelector('#peers li[data-peer=\"{third_id}\"]');"),
    )
    .await;
    let page_left = find(&events_of_page().await, "peer_left", &third_id);
    assert_eq!(native_left, page_left);
    page.close().await;
}

/// The landing page's *Join* takes a pasted room link (or a bare id) through the same parser
/// `burrow` uses, and refuses what is not one.
#[tokio::test]
async fn the_landing_page_joins_a_pasted_link() {
    if !sandbox::enter("the_landing_page_joins_a_pasted_link") {
        return;
    }
    let server = ServerProcess::start_on(HOST_IP, &[]);
    let page = Browser::start().await;
    page.open(&format!("http://{}/", server.http)).await;
    page.type_into("#join-id", "not a room!").await;
    page.click("#join-form button").await;
    page.wait_for(
        "the page refuses it",
        "return document.getElementById('status').textContent.includes('not a room id or link');",
    )
    .await;
    page.client
        .find(fantoccini::Locator::Css("#join-id"))
        .await
        .unwrap()
        .clear()
        .await
        .unwrap();
    page.type_into("#join-id", "https://elsewhere.example/r/pasted-room?x=1")
        .await;
    page.click("#join-form button").await;
    let path = page
        .wait_for(
            "the room page",
            "return location.pathname.startsWith('/r/') && location.pathname;",
        )
        .await;
    assert_eq!(path, "/r/pasted-room");
    // The room link's QR code, drawn by the server, is shown (a broken image has no size).
    let qr = page
        .wait_for(
            "the QR code",
            "const i = document.querySelector('#qr img'); \
             return i && i.complete && i.naturalWidth > 0 && i.getAttribute('src');",
        )
        .await;
    let link = format!("http://{}/r/pasted-room", server.http);
    assert_eq!(
        qr.as_str(),
        Some(
            format!(
                "/qr.svg?text={}",
                link.replace(':', "%3A").replace('/', "%2F")
            )
            .as_str()
        )
    );
    page.close().await;
}
