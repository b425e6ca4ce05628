//! The server over https/wss with a certificate made at test time: `burrow` joins an https room
//! link trusting the test CA (`--ca-cert`) and refuses without it; plain HTTP is redirected; and
//! Chromium opens the page over https and chats with a `burrow`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use burrow_tests::browser::Browser;
use burrow_tests::burrow::Burrow;
use burrow_tests::sandbox;
use burrow_tests::server::ServerProcess;

/// A private CA and a server certificate it signed for `localhost` and 127.0.0.1, written as
/// PEM files into a fresh folder: (folder, ca.pem, cert.pem, key.pem).
fn certificates(tag: &str) -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
    let dir = std::env::temp_dir().join(format!("burrow-tls-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca =
        CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("ca key")).expect("ca");
    let key = KeyPair::generate().expect("key");
    let params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("params");
    let cert = params.signed_by(&key, &ca).expect("cert");
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write pem");
        path
    };
    let ca_pem = write("ca.pem", ca.pem());
    let cert_pem = write("cert.pem", cert.pem());
    let key_pem = write("key.pem", key.serialize_pem());
    (dir, ca_pem, cert_pem, key_pem)
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
    // Chromium does not know the test CA: told to accept the certificate (as a user would by
    // installing it).
    let page = Browser::start_in(None, &["--ignore-certificate-errors"]).await;
    page.open(&link).await;
    let secure = page
        .run_async("arguments[arguments.length - 1](window.isSecureContext && location.protocol);")
        .await;
    assert_eq!(secure, "https:", "the page is a secure context over https");
    page.wait_for(
        "the native peer connected",
        &format!(
            "const li = document.querySelector('#peers li[data-peer=\"{native_id}\"]'); \
             return li && li.querySelector('.badge').textContent !== '';"
        ),
    )
    .await;
    native.say("hello page, over wss");
    page.wait_for(
        "the native peer's line",
        "return [...document.querySelectorAll('#chat-log li.msg .text')]\
           .some((e) => e.textContent === 'hello page, over wss');",
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    page.close().await;
    let _ = std::fs::remove_dir_all(dir);
}
