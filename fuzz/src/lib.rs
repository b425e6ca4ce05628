#![warn(missing_docs)]
//! Fuzzing Burrow's input handling on stable Rust, for a bounded time.
//!
//! Why this and not `cargo fuzz`: cargo-fuzz (libFuzzer) needs a nightly toolchain, which this
//! project cannot install. So this crate is a small mutation fuzzer of its own: each target has
//! a few valid inputs as seeds (inline, in `src/targets.rs`), the engine mutates them
//! (bit flips, byte edits, inserts, deletes, splices, and tokens from a per-target dictionary:
//! JSON punctuation, field names, escapes, control and bidi characters), runs the target on each
//! and stops at the first panic. Without coverage instrumentation it steers by *outcomes*
//! instead: an input that makes the target end in a way not seen before (another message kind,
//! another error class) joins the corpus and is mutated further.
//!
//! Every target checks: no panic on any input; and where it means something, the round trip:
//! what decodes, encodes to a canonical form that decodes to the same value and re-encodes to
//! itself (for the seeds, `encode(decode(x)) == x` exactly).
//!
//! Run: `cargo test -p burrow-fuzz` (each target for `BURROW_FUZZ_SECS`, default 3 s), or for
//! longer `cargo run --release -p burrow-fuzz -- --secs 300 [TARGET…]` (`--list` names them).
//! A failure prints the seed (`BURROW_FUZZ_SEED` / `--seed` repeats a run) and writes the input
//! to a file that `--replay FILE TARGET` runs again.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

mod targets;

pub use targets::{target, TARGETS};

/// Longest input the engine makes: the decoders' interesting paths are all short.
const MAX_LEN: usize = 4096;

/// Most inputs kept in a target's corpus.
const MAX_CORPUS: usize = 512;

/// One thing to fuzz: its seeds, its dictionary, and the check that must not panic.
pub struct Target {
    /// Its name on the command line and in test names.
    pub name: &'static str,
    /// What it feeds and what it checks.
    pub about: &'static str,
    /// Valid inputs to start from.
    seeds: fn() -> Vec<Vec<u8>>,
    /// Byte strings worth inserting (tokens of the format).
    dictionary: &'static [&'static str],
    /// Runs the code under test on one input; panics when a property fails. Returns a short
    /// class of what happened (`ok:chat`, `err:missing field`), to spot new behaviour.
    check: fn(&[u8]) -> String,
}

impl Target {
    /// Runs the check on one input, as the fuzzer would (for replaying a saved failure).
    pub fn run_once(&self, input: &[u8]) -> Result<String, String> {
        catch_unwind(AssertUnwindSafe(|| (self.check)(input))).map_err(panic_message)
    }

    /// The seeds (for tests that check they are valid and canonical).
    pub fn seeds(&self) -> Vec<Vec<u8>> {
        (self.seeds)()
    }
}

/// How long and from where to fuzz.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Time to spend on the target.
    pub budget: Duration,
    /// The random seed: the same seed and budget replays the same inputs (given the same speed).
    pub seed: u64,
}

impl Options {
    /// `BURROW_FUZZ_SECS` (default 3) and `BURROW_FUZZ_SEED` (default: from the clock).
    pub fn from_env() -> Options {
        let secs = std::env::var("BURROW_FUZZ_SECS")
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(3.0);
        let seed = std::env::var("BURROW_FUZZ_SEED")
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or_else(clock_seed);
        Options {
            budget: Duration::from_secs_f64(secs),
            seed,
        }
    }
}

/// A seed from the clock, so each run tries other inputs.
pub fn clock_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// What a fuzzing run did.
#[derive(Debug, Clone)]
pub struct Report {
    /// The target.
    pub target: &'static str,
    /// Inputs run.
    pub execs: u64,
    /// Time spent.
    pub elapsed: Duration,
    /// Inputs kept for mutation (seeds included).
    pub corpus: usize,
    /// Distinct outcome classes seen.
    pub outcomes: usize,
    /// The random seed used.
    pub seed: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let secs = self.elapsed.as_secs_f64();
        write!(
            f,
            "{:<16} {:>10} execs in {:>5.1} s ({:>8.0}/s), corpus {:>3}, {:>3} outcome classes, seed {}",
            self.target,
            self.execs,
            secs,
            self.execs as f64 / secs.max(1e-9),
            self.corpus,
            self.outcomes,
            self.seed
        )
    }
}

/// A property failed (the target panicked) on `input`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{target}: {message}\n  seed {seed}; input ({} bytes): b\"{}\"", input.len(), input.escape_ascii())]
pub struct Failure {
    /// The target.
    pub target: &'static str,
    /// The random seed of the run.
    pub seed: u64,
    /// The input that failed.
    pub input: Vec<u8>,
    /// The panic message.
    pub message: String,
}

impl Failure {
    /// Writes the input to a file in the temp folder, for `--replay`; returns its path.
    pub fn save(&self) -> std::io::Result<std::path::PathBuf> {
        let path =
            std::env::temp_dir().join(format!("burrow-fuzz-{}-{}.bin", self.target, self.seed));
        std::fs::write(&path, &self.input)?;
        Ok(path)
    }
}

/// Fuzzes `target` for `options.budget`. `Err` carries the first input that broke a property.
pub fn fuzz(target: &'static Target, options: &Options) -> Result<Report, Failure> {
    let started = Instant::now();
    let mut rng = SmallRng::seed_from_u64(options.seed);
    let mut corpus: Vec<Vec<u8>> = Vec::new();
    let mut outcomes: HashSet<u64> = HashSet::new();
    let mut execs = 0u64;
    let fail = |input: Vec<u8>, message: String| Failure {
        target: target.name,
        seed: options.seed,
        input,
        message,
    };
    for seed in target.seeds() {
        execs += 1;
        match target.run_once(&seed) {
            Ok(outcome) => {
                outcomes.insert(class(&outcome));
                corpus.push(seed);
            }
            Err(message) => return Err(fail(seed, message)),
        }
    }
    if corpus.is_empty() {
        corpus.push(Vec::new());
    }
    let deadline = started + options.budget;
    'run: loop {
        // The clock is read every few hundred inputs only.
        for _ in 0..256 {
            let parent = &corpus[rng.random_range(0..corpus.len())];
            let other = &corpus[rng.random_range(0..corpus.len())];
            let mut input = parent.clone();
            for _ in 0..rng.random_range(1..=4) {
                mutate(&mut input, other, target.dictionary, &mut rng);
            }
            execs += 1;
            match target.run_once(&input) {
                Ok(outcome) => {
                    if outcomes.insert(class(&outcome)) && corpus.len() < MAX_CORPUS {
                        corpus.push(input);
                    }
                }
                Err(message) => return Err(fail(input, message)),
            }
        }
        if Instant::now() >= deadline {
            break 'run;
        }
    }
    Ok(Report {
        target: target.name,
        execs,
        elapsed: started.elapsed(),
        corpus: corpus.len(),
        outcomes: outcomes.len(),
        seed: options.seed,
    })
}

fn class(outcome: &str) -> u64 {
    let mut h = DefaultHasher::new();
    outcome.hash(&mut h);
    h.finish()
}

fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic with a non-text payload".to_string()
    }
}

/// Bytes that tend to matter to parsers: delimiters, escapes, controls, UTF-8 lead bytes.
const INTERESTING: &[u8] = &[
    0, 1, b'\t', b'\n', b'\r', 0x1b, b' ', b'"', b'\\', b'/', b':', b',', b'{', b'}', b'[', b']',
    b'0', b'9', b'-', b'.', b'e', b'u', 0x7f, 0x80, 0x9b, 0xbf, 0xc2, 0xe2, 0xf0, 0xff,
];

/// One random edit of `input`.
fn mutate(input: &mut Vec<u8>, other: &[u8], dictionary: &[&str], rng: &mut SmallRng) {
    let len = input.len();
    let pos = |rng: &mut SmallRng| rng.random_range(0..=len);
    match rng.random_range(0..10) {
        // Flip one bit.
        0 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] ^= 1 << rng.random_range(0..8);
        }
        // Replace a byte with an interesting one.
        1 if len > 0 => {
            let i = rng.random_range(0..len);
            input[i] = INTERESTING[rng.random_range(0..INTERESTING.len())];
        }
        // Insert random or interesting bytes.
        2 => {
            let at = pos(rng);
            let n = rng.random_range(1..=4);
            for _ in 0..n {
                let b = if rng.random_bool(0.5) {
                    rng.random()
                } else {
                    INTERESTING[rng.random_range(0..INTERESTING.len())]
                };
                input.insert(at, b);
            }
        }
        // Delete a range.
        3 if len > 0 => {
            let at = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - at).min(16));
            input.drain(at..at + n);
        }
        // Duplicate a range.
        4 if len > 0 => {
            let at = rng.random_range(0..len);
            let n = rng.random_range(1..=(len - at).min(32));
            let copy = input[at..at + n].to_vec();
            let to = pos(rng);
            input.splice(to..to, copy);
        }
        // Insert a dictionary token.
        5 | 6 if !dictionary.is_empty() => {
            let token = dictionary[rng.random_range(0..dictionary.len())].as_bytes();
            let at = pos(rng);
            if rng.random_bool(0.5) || len == 0 {
                input.splice(at..at, token.iter().copied());
            } else {
                // Overwrite instead.
                let end = (at + token.len()).min(len);
                input.splice(at..end, token.iter().copied());
            }
        }
        // Splice: a prefix of this input, a suffix of another.
        7 => {
            let cut = pos(rng);
            let from = rng.random_range(0..=other.len());
            input.truncate(cut);
            input.extend_from_slice(&other[from..]);
        }
        // Truncate.
        8 if len > 0 => input.truncate(rng.random_range(0..len)),
        // Replace a run of digits by an extreme number.
        _ => {
            const NUMBERS: &[&str] = &[
                "0",
                "-1",
                "65535",
                "65536",
                "4294967296",
                "18446744073709551615",
                "18446744073709551616",
                "1e999",
                "-0",
                "1.5",
            ];
            let n = NUMBERS[rng.random_range(0..NUMBERS.len())].as_bytes();
            match input.iter().position(u8::is_ascii_digit) {
                Some(start) => {
                    let end = input[start..]
                        .iter()
                        .position(|b| !b.is_ascii_digit())
                        .map_or(input.len(), |e| start + e);
                    input.splice(start..end, n.iter().copied());
                }
                None => {
                    let at = pos(rng);
                    input.splice(at..at, n.iter().copied());
                }
            }
        }
    }
    input.truncate(MAX_LEN);
}

#[cfg(test)]
mod tests {
    use super::*;

    static PLANTED: Target = Target {
        name: "planted",
        about: "panics on an input holding `{}` after a `:`",
        seeds: || vec![b"ab".to_vec()],
        dictionary: &["{", "}", ":"],
        check: |data| {
            let text = String::from_utf8_lossy(data);
            if let Some(i) = text.find(':') {
                assert!(!text[i..].contains("{}"), "planted bug");
            }
            format!("{}", text.len().min(4))
        },
    };

    #[test]
    fn the_engine_finds_a_planted_bug() {
        let options = Options {
            budget: Duration::from_secs(20),
            seed: 7,
        };
        let failure = fuzz(&PLANTED, &options).expect_err("the planted bug is found");
        assert!(failure.message.contains("planted bug"));
        assert!(String::from_utf8_lossy(&failure.input).contains("{}"));
        assert!(
            PLANTED.run_once(&failure.input).is_err(),
            "the failure replays"
        );
    }

    #[test]
    fn a_clean_target_runs_for_its_budget() {
        let options = Options {
            budget: Duration::from_millis(200),
            seed: 1,
        };
        let report =
            fuzz(crate::target("text").expect("text target"), &options).expect("safe_line holds");
        assert!(report.execs > 256, "{report}");
        assert!(report.elapsed >= options.budget);
    }
}
