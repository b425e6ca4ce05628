//! `burrow-fuzz`: run Burrow's fuzz targets for as long as you like (the tests run each for a
//! few seconds).
//!
//! ```text
//! cargo run --release -p burrow-fuzz -- --secs 300            # every target, 300 s each
//! cargo run --release -p burrow-fuzz -- --secs 60 room_link text
//! cargo run --release -p burrow-fuzz -- --list
//! cargo run --release -p burrow-fuzz -- --replay /tmp/burrow-fuzz-text-123.bin text
//! ```

use std::process::ExitCode;
use std::time::Duration;

use burrow_fuzz::{fuzz, target, Options, TARGETS};

const USAGE: &str =
    "usage: burrow-fuzz [--secs N] [--seed N] [TARGET…] | --list | --replay FILE TARGET";

fn main() -> ExitCode {
    let mut options = Options::from_env();
    let mut names: Vec<String> = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--secs" => match args.next().and_then(|s| s.parse::<f64>().ok()) {
                Some(s) if s.is_finite() && s >= 0.0 => options.budget = Duration::from_secs_f64(s),
                _ => return usage("--secs needs a number of seconds"),
            },
            "--seed" => match args.next().and_then(|s| s.parse().ok()) {
                Some(seed) => options.seed = seed,
                None => return usage("--seed needs a number"),
            },
            "--list" => {
                for t in TARGETS {
                    println!("{:<16} {}", t.name, t.about);
                }
                return ExitCode::SUCCESS;
            }
            "--replay" => {
                let (Some(file), Some(name)) = (args.next(), args.next()) else {
                    return usage("--replay needs FILE and TARGET");
                };
                return replay(&file, &name);
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return ExitCode::SUCCESS;
            }
            name => names.push(name.to_string()),
        }
    }
    let chosen: Vec<_> = if names.is_empty() {
        TARGETS.iter().collect()
    } else {
        let mut chosen = Vec::new();
        for n in &names {
            match target(n) {
                Some(t) => chosen.push(t),
                None => return usage(&format!("no target named '{n}' (see --list)")),
            }
        }
        chosen
    };
    let mut failed = false;
    for (i, t) in chosen.into_iter().enumerate() {
        // A different stream per target, all derived from the one seed shown.
        let options = Options {
            seed: options.seed.wrapping_add(i as u64),
            ..options
        };
        match fuzz(t, &options) {
            Ok(report) => println!("{report}"),
            Err(failure) => {
                failed = true;
                eprintln!("FAILED {failure}");
                match failure.save() {
                    Ok(path) => eprintln!(
                        "  input saved: burrow-fuzz --replay {} {}",
                        path.display(),
                        t.name
                    ),
                    Err(e) => eprintln!("  (could not save the input: {e})"),
                }
            }
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn replay(file: &str, name: &str) -> ExitCode {
    let Some(t) = target(name) else {
        return usage(&format!("no target named '{name}'"));
    };
    let input = match std::fs::read(file) {
        Ok(i) => i,
        Err(e) => return usage(&format!("cannot read {file}: {e}")),
    };
    match t.run_once(&input) {
        Ok(outcome) => {
            println!("{name}: passes ({outcome})");
            ExitCode::SUCCESS
        }
        Err(message) => {
            eprintln!("{name}: FAILED: {message}");
            ExitCode::FAILURE
        }
    }
}

fn usage(problem: &str) -> ExitCode {
    eprintln!("burrow-fuzz: {problem}\n{USAGE}");
    ExitCode::from(2)
}
