//! Benches that run in a child of the bench binary: the ones driving the release `burrow` and
//! `signal-server` inside network namespaces (`browser` under `unshare --net`, `lab` in the NAT
//! lab's named namespaces). The parent checks what the child needs, starts it with
//! `BURROW_BIN_DIR` pointed at the release binaries, and passes on the figures it prints.

use std::process::Command;

use crate::report::Figure;

/// Whether this process is the child of `bench` (the marker variable is set).
pub fn is_child(marker: &str) -> bool {
    std::env::var_os(marker).is_some()
}

/// Runs `bench --only NAME` again as a child (under `unshare --net` when `own_network`) and
/// emits the figures it prints; `Err` says why nothing was measured.
pub fn run(
    name: &str,
    marker: &str,
    own_network: bool,
    out: &mut Vec<Figure>,
) -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| format!("no executable path: {e}"))?;
    let dir = exe.parent().ok_or("no executable folder")?.to_path_buf();
    for bin in ["burrow", "signal-server", "delayline"] {
        if !dir.join(bin).exists() {
            return Err(format!(
                "{bin} is not built: cargo build --release --workspace --bins"
            ));
        }
    }
    let mut cmd = if own_network {
        let mut c = Command::new("unshare");
        c.args(["--net", "--"]).arg(&exe);
        c
    } else {
        Command::new(&exe)
    };
    let child = cmd
        .args(["--only", name])
        .env(marker, "1")
        .env("BURROW_BIN_DIR", &dir)
        .output()
        .map_err(|e| format!("could not start the child: {e}"))?;
    let mut any = false;
    for line in String::from_utf8_lossy(&child.stdout).lines() {
        if let Ok(figure) = serde_json::from_str::<Figure>(line) {
            figure.emit(out);
            any = true;
        }
    }
    if any {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&child.stderr);
    let lines: Vec<&str> = stderr.lines().collect();
    let tail = &lines[lines.len().saturating_sub(3)..];
    Err(format!("the child measured nothing: {}", tail.join(" / ")))
}

/// A bench in the NAT lab: in the child, `measure`; in the parent, the child run and its
/// figures, or one figure (`bench`, `metric`, `unit`) saying why nothing was measured.
pub fn in_lab(
    bench: &str,
    marker: &str,
    (metric, unit): (&str, &str),
    measure: fn(&mut Vec<Figure>),
    out: &mut Vec<Figure>,
) {
    if is_child(marker) {
        measure(out);
        return;
    }
    let why = match burrow_tests::lab::unavailable() {
        Some(why) => why,
        None => match run(bench, marker, false, out) {
            Ok(()) => return,
            Err(why) => why,
        },
    };
    Figure::new(bench, metric, None, unit).note(why).emit(out)
}
