//! Headless Chromium driven over WebDriver (Debian's `chromium` and `chromedriver`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// How long to wait for something to appear in a page (not a timing test).
pub const PATIENCE: Duration = Duration::from_secs(60);

/// One browser with its own chromedriver and a fresh profile.
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Child,
    profile: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with the flags that work as root, offline.
    pub async fn start() -> Browser {
        Browser::start_in(None, &[]).await
    }

    /// A browser on a NAT lab host (namespace `ns`): it resolves no name (nothing there to
    /// ask) but loopback and the lab's server.
    pub async fn start_in_lab(ns: &str) -> Browser {
        let rules = format!(
            "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1, EXCLUDE {}",
            crate::lab::SERVER_IP
        );
        Browser::start_in(Some(ns), &[&rules]).await
    }

    /// The same, inside network namespace `ns` (reached through a forwarding socket), with
    /// extra Chromium flags.
    pub async fn start_in(ns: Option<&str>, extra_args: &[&str]) -> Browser {
        let port = crate::free_port();
        let mut cmd = Command::new("chromedriver");
        cmd.arg(format!("--port={port}"));
        if let Some(ns) = ns {
            cmd = crate::lab::Lab::wrap(ns, &cmd);
        }
        let driver = cmd
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver (apt-get install chromium-driver)");
        let driver_port = match ns {
            Some(ns) => crate::netns::forward(ns, port),
            None => port,
        };
        let profile = std::env::temp_dir().join(format!("burrow-chromium-{port}"));
        let _ = std::fs::remove_dir_all(&profile);
        let args = vec![
            "--headless=new".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--window-size=1100,900".into(),
            format!("--user-data-dir={}", profile.display()),
        ];
        let mut args = args;
        args.extend(extra_args.iter().map(|a| a.to_string()));
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({ "binary": "/usr/bin/chromium", "args": args }),
        );
        let url = format!("http://127.0.0.1:{driver_port}");
        let deadline = Instant::now() + PATIENCE;
        let client = loop {
            let attempt =
                ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                    .capabilities(caps.clone())
                    .connect(&url)
                    .await;
            match attempt {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = e;
                }
                Err(e) => panic!("cannot start a WebDriver session: {e}"),
            }
        };
        Browser {
            client,
            driver,
            profile,
        }
    }

    /// Opens a URL. Chromium's own "A network change was detected" page (`ERR_NETWORK_CHANGED`, seen when a
    /// test's namespace is still settling as Chromium starts) is reloaded, as a user would.
    pub async fn open(&self, url: &str) {
        for _ in 0..3 {
            self.client.goto(url).await.expect("navigate");
            let changed = self
                .client
                .execute(
                    "return !!document.body && document.body.innerText.includes('ERR_NETWORK_CHANGED');",
                    vec![],
                )
                .await
                .unwrap_or(Value::Null);
            if changed != Value::Bool(true) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }

    /// Runs `script` (a function body that may `return`) until it returns something truthy.
    pub async fn wait_for(&self, what: &str, script: &str) -> Value {
        let got = self
            .poll(|| async {
                self.client
                    .execute(script, vec![])
                    .await
                    .unwrap_or(Value::Null)
            })
            .await;
        match got {
            Some(v) => v,
            None => {
                let text = self.text("body").await;
                panic!("the page never showed {what}; page text:\n{text}");
            }
        }
    }

    /// Like [`Browser::wait_for`], in the frame reached from the top by `frames` (indexes), entered
    /// anew before each try: a frame that navigates (a form's POST) may leave WebDriver's current
    /// context behind. Ends in that frame; a failure prints that frame's text.
    pub async fn wait_in_frame(&self, frames: &[u16], what: &str, script: &str) -> Value {
        let got = self
            .poll(|| async {
                match self.enter_frames(frames).await {
                    Ok(()) => self
                        .client
                        .execute(script, vec![])
                        .await
                        .unwrap_or(Value::Null),
                    Err(_) => Value::Null,
                }
            })
            .await;
        if let Some(v) = got {
            return v;
        }
        let text = self.text("body").await;
        let url = self
            .client
            .execute("return location.href;", vec![])
            .await
            .unwrap_or(Value::Null);
        panic!("the frame never showed {what}; frame {url}, its text:\n{text}");
    }

    /// Tries `attempt` every 200 ms until it gives something truthy, for [`PATIENCE`].
    async fn poll<F, Fut>(&self, mut attempt: F) -> Option<Value>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Value>,
    {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = attempt().await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::String(s) => !s.is_empty(),
                Value::Array(a) => !a.is_empty(),
                _ => true,
            };
            if truthy {
                return Some(v);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Enters the frame reached from the top document by `frames` (indexes).
    pub async fn enter_frames(&self, frames: &[u16]) -> Result<(), fantoccini::error::CmdError> {
        // Up to the top: a parent switch at the top stays there.
        for _ in 0..=frames.len() {
            self.client.enter_parent_frame().await?;
        }
        for &i in frames {
            self.client.enter_frame(i).await?;
        }
        Ok(())
    }

    /// Waits until the page lists `peer` as connected.
    pub async fn wait_connected(&self, peer: &str) {
        self.wait_for(
            &format!("peer {peer} connected"),
            &format!(
                "const li = document.querySelector('#peers li[data-peer=\"{peer}\"]'); \
                 return li && li.dataset.state === 'connected';"
            ),
        )
        .await;
    }

    /// Waits until the page shows a chat line `text` from another peer.
    pub async fn wait_chat(&self, text: &str) {
        let script = format!(
            "return [...document.querySelectorAll('#chat-log li.msg:not(.mine) .text')]\
             .some(e => e.textContent === {});",
            Value::String(text.to_string())
        );
        self.wait_for(&format!("chat line {text:?}"), &script).await;
    }

    /// The page's peer id, once it joined.
    pub async fn peer_id(&self) -> String {
        self.wait_for(
            "a peer id",
            "return window.burrowRoom && window.burrowRoom.peerId;",
        )
        .await
        .as_str()
        .unwrap_or_default()
        .to_string()
    }

    /// Runs an async script (the last argument is the callback) and returns its result.
    pub async fn run_async(&self, script: &str) -> Value {
        self.client
            .execute_async(script, vec![])
            .await
            .expect("async script")
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Types into an element.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.client.find(Locator::Css(css)).await.expect("element");
        e.send_keys(text).await.expect("type");
    }

    /// Clicks an element.
    pub async fn click(&self, css: &str) {
        let e = self.client.find(Locator::Css(css)).await.expect("element");
        e.click().await.expect("click");
    }

    /// Picks a local file in a file input.
    pub async fn pick_file(&self, css: &str, path: &Path) {
        let e = self
            .client
            .find(Locator::Css(css))
            .await
            .expect("file input");
        e.send_keys(&path.display().to_string())
            .await
            .expect("choose file");
    }

    /// Saves a PNG screenshot.
    pub async fn screenshot(&self, path: &Path) {
        if let Ok(png) = self.client.screenshot().await {
            let _ = std::fs::write(path, png);
        }
    }

    /// Ends the session and the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.kill();
        let _ = self.driver.wait();
        // A test that failed before `close` leaves Chromium running without its driver: find its
        // processes by this browser's own profile folder and kill them by PID.
        let marker = format!("--user-data-dir={}", self.profile.display());
        if let Ok(procs) = std::fs::read_dir("/proc") {
            for entry in procs.flatten() {
                let Some(pid) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<i32>().ok())
                else {
                    continue;
                };
                let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
                if cmdline
                    .split(|b| *b == 0)
                    .any(|arg| arg == marker.as_bytes())
                {
                    // SAFETY: kill(2) on a PID just read from /proc; at worst it has exited.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
        }
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}
