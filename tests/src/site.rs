//! Small local services for the expose/forward tests: a plain web site and a TCP echo server,
//! each on its own loopback port, counting the connections they get.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Size of `/big`.
pub const BIG_LEN: usize = 32 * 1024 * 1024;

/// The PNG served at `/image.png`: a valid 3×2 image.
pub const PNG: &[u8] = &[
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52,
    0x00, 0x00, 0x00, 0x03, 0x00, 0x00, 0x00, 0x02, 0x08, 0x02, 0x00, 0x00, 0x00, 0x12, 0x16, 0xf1,
    0x4d, 0x00, 0x00, 0x00, 0x13, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0xf8, 0xcf, 0xc0, 0xf0,
    0x1f, 0x08, 0x19, 0x18, 0xfe, 0x03, 0x00, 0x2a, 0xf6, 0x05, 0xfb, 0x5c, 0x3b, 0xa7, 0x5b, 0x00,
    0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82,
];

/// A running local service.
pub struct Service {
    /// Where it listens.
    pub addr: SocketAddr,
    /// How many connections it accepted.
    pub connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Service {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The deterministic bytes of `/big`.
pub fn big_body() -> Vec<u8> {
    (0..BIG_LEN)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect()
}

async fn serve(handler: fn(TcpStream) -> tokio::task::JoinHandle<()>) -> Service {
    serve_at("127.0.0.1:0".parse().expect("addr"), handler).await
}

async fn serve_at(
    addr: SocketAddr,
    handler: fn(TcpStream) -> tokio::task::JoinHandle<()>,
) -> Service {
    let listener = TcpListener::bind(addr).await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let connections = Arc::new(AtomicUsize::new(0));
    let count = connections.clone();
    let task = tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            handler(stream);
        }
    });
    Service {
        addr,
        connections,
        task,
    }
}

/// A web site: `/` (HTML with an image and a form), `/image.png`, `/big` (32 MiB), `/many` (a
/// page of 200 assets), `/script.js`, and `POST /form` (echoes the posted body).
pub async fn web() -> Service {
    serve(|stream| tokio::spawn(handle_http(stream))).await
}

/// The same web site on `addr` (say, where one that was stopped listened).
pub async fn web_at(addr: SocketAddr) -> Service {
    serve_at(addr, |stream| tokio::spawn(handle_http(stream))).await
}

/// A hostile site: its page probes whether it can reach the room page that opened it (the
/// window above it, its storage, its `burrowRoom`) and writes what happened into `#probe`.
pub async fn hostile() -> Service {
    serve(|stream| tokio::spawn(answer_with(stream, HOSTILE_PAGE))).await
}

/// A hostile site that tries to take over another site's origin (the hardening issue's High
/// finding): its page frames `/__burrow/host.html` of the origin named in its URL's fragment and,
/// if that frame asks it for a port, hands it one of its own that answers every request with
/// a page planting `localStorage.planted`. `#probe` then says `ready: ORIGIN|none, stolen: N`.
pub async fn takeover() -> Service {
    serve(|stream| tokio::spawn(answer_with(stream, TAKEOVER_PAGE))).await
}

const TAKEOVER_PAGE: &str = r#"<!doctype html><html><head><title>takeover</title></head><body>
<pre id="probe">trying</pre><script>
const target = decodeURIComponent(location.hash.slice(1));
let ready = 'none', stolen = 0;
const report = () => { document.getElementById('probe').textContent = 'ready: ' + ready + ', stolen: ' + stolen; };
addEventListener('message', (e) => {
  if (!e.data || e.data.type !== 'burrow-site-ready') return;
  ready = e.origin;
  const ch = new MessageChannel();
  ch.port1.onmessage = (m) => {
    stolen++; report();
    const r = m.ports[0]; if (!r) return;
    const body = new TextEncoder().encode('<script>localStorage.setItem("planted","yes")<\/script><h1 id="greeting">attacker</h1><p id="posted">stolen</p>');
    r.postMessage({ type: 'head', status: 200, statusText: 'OK', headers: { 'content-type': 'text/html' } });
    r.postMessage({ type: 'data', data: body.buffer }, [body.buffer]);
    r.postMessage({ type: 'end' });
  };
  e.source.postMessage({ type: 'burrow-port' }, '*', [ch.port2]);
});
if (target) {
  const f = document.createElement('iframe');
  f.src = target + '/__burrow/host.html';
  document.body.appendChild(f);
  setTimeout(() => { window.done = true; report(); }, 4000);
}
</script></body></html>"#;

/// Answers any request with `page` (HTML) and closes.
async fn answer_with(mut s: TcpStream, page: &'static str) {
    let mut buf = [0u8; 8192];
    let _ = s.read(&mut buf).await;
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        page.len()
    );
    let _ = s.write_all(header.as_bytes()).await;
    let _ = s.write_all(page.as_bytes()).await;
    let _ = s.shutdown().await;
}

/// The hostile page, whatever was asked.
const HOSTILE_PAGE: &str = "<!doctype html><html><head><title>hostile</title></head><body><pre id=\"probe\">\
        </pre><script>\
        const out = [];\
        function t(name, f) { try { out.push(name + ': ' + f()); } catch (e) { out.push(name + ': blocked'); } }\
        t('top', () => String(window.top.document.title));\
        t('room', () => String(window.top.burrowRoom.peerId));\
        t('chat', () => { window.top.burrowRoom.sendChat('pwned'); return 'sent'; });\
        t('room-storage', () => String(window.top.localStorage.getItem('burrow.name')));\
        t('storage', () => { localStorage.setItem('burrow.name', 'pwned'); return 'own ' + location.origin; });\
        document.getElementById('probe').textContent = out.join('\\n');\
        </script></body></html>";

async fn handle_http(mut s: TcpStream) {
    let mut req = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        if let Some(p) = req.windows(4).position(|w| w == b"\r\n\r\n") {
            break p + 4;
        }
    };
    let head = String::from_utf8_lossy(&req[..head_end]).to_string();
    let mut lines = head.lines();
    let first = lines.next().unwrap_or_default().to_string();
    let mut parts = first.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let length: usize = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.trim().parse().ok())
        .unwrap_or(0);
    let mut body = req[head_end..].to_vec();
    while body.len() < length {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&buf[..n]),
        }
    }
    let route = path.split('?').next().unwrap_or_default();
    let (status, ctype, content): (&str, &str, Vec<u8>) = match (method.as_str(), route) {
        ("GET", "/") => (
            "200 OK",
            "text/html; charset=utf-8",
            b"<!doctype html><html><head><title>Local site</title></head><body>\
              <h1 id=\"greeting\">Hello from behind the NAT</h1>\
              <img id=\"pic\" src=\"image.png\" alt=\"pic\">\
              <form id=\"form\" method=\"post\" action=\"form\">\
              <input name=\"word\" id=\"word\" value=\"burrow\"><button id=\"go\">Go</button></form>\
              </body></html>"
                .to_vec(),
        ),
        ("GET", "/image.png") => ("200 OK", "image/png", PNG.to_vec()),
        ("GET", "/big") => ("200 OK", "application/octet-stream", big_body()),
        ("GET", "/many") => ("200 OK", "text/html; charset=utf-8", many_page()),
        ("GET", "/script.js") => (
            "200 OK",
            "text/javascript",
            b"window.scripts = (window.scripts || 0) + 1;".to_vec(),
        ),
        ("POST", "/form") => {
            let text = String::from_utf8_lossy(&body).to_string();
            let page = format!(
                "<!doctype html><html><body><p id=\"posted\">posted: {text}</p></body></html>"
            );
            ("200 OK", "text/html; charset=utf-8", page.into_bytes())
        }
        _ => ("404 Not Found", "text/plain", b"not found".to_vec()),
    };
    let header = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        content.len()
    );
    let _ = s.write_all(header.as_bytes()).await;
    let _ = s.write_all(&content).await;
    let _ = s.shutdown().await;
}

/// Images on `/many`; with its scripts and its POST, the page makes [`MANY_ASSETS`] requests.
pub const MANY_IMAGES: usize = 190;
/// Scripts on `/many`.
pub const MANY_SCRIPTS: usize = 9;
/// Requests `/many` makes once loaded (images, scripts, one POST).
pub const MANY_ASSETS: usize = MANY_IMAGES + MANY_SCRIPTS + 1;

/// A page of [`MANY_ASSETS`] assets, as a real site has: each image counts itself into
/// `window.images` (or `window.broken`), each script into `window.scripts`, and a POST's answer
/// sets `window.posted`.
fn many_page() -> Vec<u8> {
    let mut page = String::from("<!doctype html><html><head><title>Many</title></head><body>");
    for i in 0..MANY_IMAGES {
        page += &format!(
            "<img src=\"image.png?n={i}\" onload=\"window.images=(window.images||0)+1\" \
             onerror=\"window.broken=(window.broken||0)+1\">"
        );
    }
    for i in 0..MANY_SCRIPTS {
        page += &format!("<script src=\"script.js?n={i}\"></script>");
    }
    page += "<script>fetch('form',{method:'POST',body:'word=many'}).then(r=>r.text())\
             .then(t=>{window.posted=t.includes('posted: word=many')})</script></body></html>";
    page.into_bytes()
}

/// An echo server: writes back everything it reads; when the client half-closes, it finishes
/// echoing, writes "<bye>" and closes.
pub async fn echo() -> Service {
    serve(|stream| {
        tokio::spawn(async move {
            let (mut r, mut w) = stream.into_split();
            let mut buf = vec![0u8; 65536];
            loop {
                match r.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(n) => {
                        if w.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                    Err(_) => return,
                }
            }
            let _ = w.write_all(b"<bye>").await;
            let _ = w.shutdown().await;
        })
    })
    .await
}
