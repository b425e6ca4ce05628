//! The browser bundle: how many bytes a visitor's browser downloads for the page's wasm, gzipped
//! as a web server would send it (`gzip -9`), beside the budget of 100 KiB. Reads the
//! module `scripts/build-wasm.sh` built into `www/pkg`; says so when there is none.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::report::Figure;

/// The budget the data-paths issue set, KiB.
const BUDGET_KIB: f64 = 100.0;

/// Bytes of `data` after `gzip -9`, if `gzip` runs.
fn gzipped(data: &[u8]) -> Option<usize> {
    let mut child = Command::new("gzip")
        .arg("-9c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(data).ok()?;
    let out = child.wait_with_output().ok()?;
    out.status.success().then_some(out.stdout.len())
}

/// Measures `www/pkg/wasm_peer_bg.wasm` (and notes the JavaScript glue beside it).
pub fn run(all: &mut Vec<Figure>) {
    let pkg = Path::new(env!("CARGO_MANIFEST_DIR")).join("../www/pkg");
    let wasm = std::fs::read(pkg.join("wasm_peer_bg.wasm")).ok();
    let glue = std::fs::read(pkg.join("wasm_peer.js")).ok();
    let kib = |n: usize| n as f64 / 1024.0;
    let value = wasm.as_deref().and_then(gzipped).map(kib);
    let note = match (&wasm, glue.as_deref().and_then(gzipped)) {
        (None, _) => "no www/pkg/wasm_peer_bg.wasm: run scripts/build-wasm.sh first".to_string(),
        (Some(w), glue) => format!(
            "{:.1} KiB before gzip; the JS glue wasm_peer.js {} KiB gzipped",
            kib(w.len()),
            glue.map_or("?".into(), |g| format!("{:.1}", kib(g)))
        ),
    };
    Figure::new("bundle", "page wasm, gzip -9", value, "KiB")
        .against("the issue's budget", Some(BUDGET_KIB))
        .note(note)
        .emit(all);
}
