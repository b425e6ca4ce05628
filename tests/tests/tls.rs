//! The server over https/wss with a certificate made at test time: `burrow` joins an https room
//! link trusting the test CA (`--ca-cert`) and refuses without it; plain HTTP is redirected; and
//! Chromium opens the page over https and chats with a `burrow`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use burrow_tests::browser::Browser;
use burrow_tests::burrow::Burrow;
use burrow_tests::sandbox;
use burrow_tests::server::ServerProcess;
use burrow_tests::{free_port, KillOnDrop};

/// A private CA and a server certificate for `localhost` and 127.0.0.1.
fn certificates(tag: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    burrow_tests::certs::certificates(tag, &["localhost", "127.0.0.1"])
}

/// Chromium on the https `link`, once it is connected to `peer`; asserts the page is a secure
/// context. Chromium does not know the test CAs: it is told to accept the certificate (as a user
/// would by installing the CA).
async fn secure_page_with(link: &str, peer: &str) -> Browser {
    let page = Browser::start_in(None, &["--ignore-certificate-errors"]).await;
    page.open(link).await;
    page.wait_for(
        "the native peer connected",
        &format!(
            "const li = document.querySelector('#peers li[data-peer=\"{peer}\"]'); \
             return li && li.querySelector('.badge').textContent !== '';"
        ),
    )
    .await;
    let secure = page
        .run_async("arguments[arguments.length - 1](window.isSecureContext && location.protocol);")
        .await;
    assert_eq!(secure, "https:", "the page is a secure context over https");
    page
}

fn tls_server(cert: &Path, key: &Path) -> ServerProcess {
    ServerProcess::start(&[
        "--tls-cert",
        cert.to_str().expect("utf-8 path"),
        "--tls-key",
        key.to_str().expect("utf-8 path"),
        "--http-redirect-listen",
        "127.0.0.1:0",
    ])
}

#[test]
fn burrow_joins_an_https_room_and_plain_http_is_redirected() {
    let (dir, ca, cert, key) = certificates("native");
    let server = tls_server(&cert, &key);
    let link = format!("https://{}/r/secure", server.http);
    let ca = ca.to_str().expect("utf-8 path");

    let mut a = Burrow::start(&["--ca-cert", ca, "--name", "alice", "join", &link]);
    let ida = a.peer_id();
    let mut b = Burrow::start(&["--ca-cert", ca, "join", &link]);
    let idb = b.peer_id();
    a.expect_event("connected", &[("peer", &idb)]);
    a.say("over wss");
    let got = b.expect_event("chat", &[("from", &ida)]);
    assert_eq!(got["text"], "over wss");

    // Without the CA the certificate is not trusted: a clear error, not a hang.
    let mut stranger = Burrow::start(&["join", &link]);
    let status = stranger.wait();
    assert!(!status.success());
    let err = stranger.stderr();
    assert!(
        err.contains("certificate") || err.contains("UnknownIssuer"),
        "the error names the certificate problem: {err}"
    );

    // Plain HTTP gets a permanent redirect to the same path over https.
    let redirect = server
        .redirect
        .expect("the server printed its redirect address");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let resp = rt.block_on(burrow_tests::http::get(redirect, "/r/secure?x=1"));
    assert_eq!(resp.status, 308);
    let location = format!(
        "location: https://127.0.0.1:{}/r/secure?x=1",
        server.http.port()
    );
    assert!(resp.headers.contains(&location), "{}", resp.headers);
    let _ = std::fs::remove_dir_all(dir);
}

/// The reach issue: `burrow netcheck https://…` refused ("needs the server's plain http://
/// address"), though every public deployment is https. It asks over TLS (trusting the test CA)
/// and checks over UDP as before; without the CA it refuses, saying why.
#[test]
fn netcheck_asks_an_https_server() {
    let (dir, ca, cert, key) = certificates("netcheck");
    let server = tls_server(&cert, &key);
    let base = format!("https://localhost:{}", server.http.port());
    let ca = ca.to_str().expect("utf-8 path");
    let mut check = Burrow::start(&["--ca-cert", ca, "netcheck", &base]);
    let report = check.expect_event("netcheck", &[]);
    assert_eq!(
        report["mapped"].as_array().map(Vec::len),
        Some(2),
        "{report}"
    );
    assert!(check.wait().success(), "{}", check.stderr());
    // A room link on it works too.
    let mut link = Burrow::start(&["--ca-cert", ca, "netcheck", &format!("{base}/r/some-room")]);
    link.expect_event("netcheck", &[]);
    assert!(link.wait().success());
    let mut untrusted = Burrow::start(&["netcheck", &base]);
    assert!(!untrusted.wait().success(), "an unknown CA is refused");
    assert!(
        untrusted.stderr().contains("TLS with localhost:"),
        "{}",
        untrusted.stderr()
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// Where UDP is blocked (here: every UDP datagram leaving this namespace is dropped), netcheck
/// says so instead of a bare timeout.
#[test]
fn netcheck_says_when_udp_is_blocked() {
    if !sandbox::enter("netcheck_says_when_udp_is_blocked") {
        return;
    }
    let server = ServerProcess::start_on(sandbox::HOST_IP, &[]);
    let nft = |rule: &str| {
        let ok = std::process::Command::new("nft")
            .args(rule.split(' '))
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "nft {rule}");
    };
    nft("add table inet noudp");
    nft("add chain inet noudp out { type filter hook output priority 0 ; }");
    nft("add rule inet noudp out meta l4proto udp drop");
    let mut check = Burrow::start(&["netcheck", &format!("http://{}", server.http)]);
    assert!(!check.wait().success());
    let said = check.stderr();
    assert!(
        said.contains("UDP blocked: no STUN answer from stun:"),
        "{said}"
    );
    assert!(said.contains("Burrow will relay over TCP/TLS"), "{said}");
}

#[tokio::test]
async fn the_page_over_https_chats_with_burrow() {
    if !sandbox::enter("the_page_over_https_chats_with_burrow") {
        return;
    }
    let (dir, ca, cert, key) = certificates("page");
    let server = tls_server(&cert, &key);
    let link = format!("https://{}/r/secure-page", server.http);
    let mut native = Burrow::start(&["--ca-cert", ca.to_str().expect("utf-8 path"), "join", &link]);
    let native_id = native.peer_id();
    let page = secure_page_with(&link, &native_id).await;
    native.say("hello page, over wss");
    page.wait_chat("hello page, over wss").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    page.close().await;
    let _ = std::fs::remove_dir_all(dir);
}

/// Pebble (Let's Encrypt's ACME test server) and its DNS stand-in, inside this test's network
/// namespace: Pebble validates TLS-ALPN-01 by connecting to `tls_port` of whatever the name
/// resolves to (127.0.0.1).
fn pebble(dir: &Path, cert: &Path, key: &Path, tls_port: u16) -> (KillOnDrop, KillOnDrop) {
    let dns = std::process::Command::new("pebble-challtestsrv")
        .args([
            "-defaultIPv4",
            "127.0.0.1",
            "-defaultIPv6",
            "",
            "-dns01",
            "127.0.0.1:8053",
            "-http01",
            "",
            "-https01",
            "",
            "-tlsalpn01",
            "",
            "-management",
            "127.0.0.1:8055",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pebble-challtestsrv");
    let config = dir.join("pebble.json");
    let json = serde_json::json!({ "pebble": {
        "listenAddress": "127.0.0.1:14000",
        "managementListenAddress": "127.0.0.1:15000",
        "certificate": cert,
        "privateKey": key,
        "httpPort": 5002,
        "tlsPort": tls_port,
        "ocspResponderURL": "",
        "externalAccountBindingRequired": false,
    }});
    std::fs::write(&config, json.to_string()).expect("pebble config");
    let ca = std::process::Command::new("pebble")
        .arg("-config")
        .arg(&config)
        .args(["-dnsserver", "127.0.0.1:8053"])
        .env("PEBBLE_VA_NOSLEEP", "1")
        .env("PEBBLE_WFE_NONCEREJECT", "0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start pebble");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect("127.0.0.1:14000").is_err() {
        assert!(std::time::Instant::now() < deadline, "pebble did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    (KillOnDrop(dns), KillOnDrop(ca))
}

/// Pebble's root of the run (regenerated at every start), fetched from its management port.
fn pebble_root(dir: &Path) -> PathBuf {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import ssl, urllib.request, sys; \
             ctx = ssl._create_unverified_context(); \
             sys.stdout.write(urllib.request.urlopen('https://127.0.0.1:15000/roots/0', context=ctx).read().decode())",
        ])
        .output()
        .expect("run python3");
    assert!(out.status.success(), "fetch pebble's root");
    let path = dir.join("pebble-root.pem");
    std::fs::write(&path, &out.stdout).expect("write root");
    path
}

/// The ACME case: the server obtains its certificate from Pebble by itself (TLS-ALPN-01
/// answered on its own port), `burrow` verifies that certificate against Pebble's root and
/// joins over wss, and Chromium opens the page over https.
#[tokio::test]
async fn the_server_gets_its_certificate_over_acme_from_pebble() {
    if !sandbox::enter("the_server_gets_its_certificate_over_acme_from_pebble") {
        return;
    }
    if std::process::Command::new("pebble")
        .arg("-h")
        .output()
        .is_err()
    {
        burrow_tests::skip(
            "the_server_gets_its_certificate_over_acme_from_pebble",
            "pebble is not installed (scripts/setup.sh test installs it)",
        );
        return;
    }
    let (dir, pebble_ca, pebble_cert, pebble_key) = certificates("acme");
    let port = free_port();
    let (_dns, _pebble) = pebble(&dir, &pebble_cert, &pebble_key, port);
    let mut cmd = std::process::Command::new(burrow_tests::binary("signal-server"));
    cmd.args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--stun-listen", "127.0.0.1:0"])
        .arg("--www")
        .arg(burrow_tests::workspace_root().join("www"))
        .args(["--acme-domain", "localhost"])
        .args(["--acme-directory", "https://127.0.0.1:14000/dir"])
        .arg("--acme-ca-cert")
        .arg(&pebble_ca)
        .arg("--acme-cache")
        .arg(dir.join("acme-cache"))
        .env("RUST_LOG", "warn");
    let _server = ServerProcess::spawn(cmd);
    let root = pebble_root(&dir);
    let root = root.to_str().expect("utf-8 path");
    let link = format!("https://localhost:{port}/r/acme");

    // Until the certificate is issued the handshake fails and burrow says so; then it joins.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut joined = None;
    while joined.is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "no certificate from Pebble in time"
        );
        let mut b = Burrow::start(&["--ca-cert", root, "join", &link]);
        let until = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < until {
            b.drain();
            if b.has_seen("joined") {
                break;
            }
            if b.try_exit().is_some() {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        if b.has_seen("joined") {
            joined = Some(b);
        } else {
            std::thread::sleep(Duration::from_millis(500));
        }
    }
    let mut native = joined.expect("joined");
    let native_id = native.peer_id();

    let page = secure_page_with(&link, &native_id).await;
    page.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
