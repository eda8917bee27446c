//! Fuzzing the parsers portico owns, on the stable toolchain (no nightly
//! here, so no cargo-fuzz/libFuzzer). A target is a function over bytes
//! that must never panic and asserts the invariants of what it parsed; the
//! runner feeds it its seed inputs, then mutations of them (bit flips,
//! format tokens, edge numbers, splices) chosen by a seeded PRNG, so a run
//! is repeated exactly from its seed.
//!
//! The test suite runs every target for a few thousand inputs
//! (`cargo test --lib fuzz`); `scripts/fuzz TARGET SECONDS` runs one for
//! longer from a release build and saves a failing input under
//! `fuzz/artifacts/TARGET/`, which `scripts/fuzz TARGET FILE` replays.

mod chunked;
mod mutate;
mod targets;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

pub use targets::TARGETS;

/// One fuzz target.
pub struct Target {
    pub name: &'static str,
    /// What it feeds and what it checks.
    pub about: &'static str,
    /// Valid (and some nearly valid) inputs to start from.
    pub seeds: fn() -> Vec<Vec<u8>>,
    /// Tokens of the input's format, inserted by mutations.
    pub dictionary: &'static [&'static [u8]],
    /// Parses one input; panics when an invariant breaks.
    pub check: fn(&[u8]),
    /// Longest input worth trying.
    pub max_len: usize,
}

/// How long a run goes on: whichever limit comes first.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    pub inputs: u64,
    pub time: Duration,
}

/// An input that broke the target, and the panic message.
#[derive(Debug)]
pub struct Finding {
    pub input: Vec<u8>,
    pub message: String,
}

/// Inputs tried in a run that found nothing.
#[derive(Debug)]
pub struct Stats {
    pub inputs: u64,
    pub elapsed: Duration,
}

pub fn target(name: &str) -> Option<&'static Target> {
    TARGETS.iter().find(|t| t.name == name)
}

/// Runs `target` on one input, turning a panic into a finding.
pub fn check_one(target: &Target, input: &[u8]) -> Result<(), Finding> {
    catch_unwind(AssertUnwindSafe(|| (target.check)(input))).map_err(|panic| Finding {
        input: input.to_vec(),
        message: panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "panic without a message".into()),
    })
}

/// The seeds, then mutations of them (each mutation starts from a seed or,
/// half the time, from the previous input, so changes can stack up).
pub fn run(target: &Target, seed: u64, budget: Budget) -> Result<Stats, Finding> {
    let started = Instant::now();
    let seeds = (target.seeds)();
    let mut tried = 0u64;
    for input in &seeds {
        check_one(target, input)?;
        tried += 1;
    }
    let mut rng = mutate::Rng::new(seed);
    let mut input = Vec::new();
    while tried < budget.inputs && started.elapsed() < budget.time {
        if input.is_empty() || rng.chance(2) {
            input = seeds[rng.below(seeds.len())].clone();
        }
        mutate::mutate(
            &mut rng,
            &mut input,
            target.dictionary,
            &seeds,
            target.max_len,
        );
        check_one(target, &input)?;
        tried += 1;
    }
    Ok(Stats {
        inputs: tried,
        elapsed: started.elapsed(),
    })
}

/// An input as text for a report: printable ASCII as is, the rest escaped.
pub fn escape(input: &[u8]) -> String {
    input.escape_ascii().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every target, briefly, from a fixed seed: a finding here is a bug
    /// (or a broken invariant) that `scripts/fuzz NAME FILE` can replay
    /// once the input is saved.
    #[test]
    fn every_target_survives_a_short_run() {
        let budget = Budget {
            inputs: 3_000,
            time: Duration::from_secs(10),
        };
        for t in TARGETS {
            if let Err(f) = run(t, 0x5eed, budget) {
                panic!(
                    "fuzz target {} failed: {}\ninput: \"{}\"",
                    t.name,
                    f.message,
                    escape(&f.input)
                );
            }
        }
    }

    #[test]
    fn a_panicking_target_is_reported_with_its_input() {
        let broken = Target {
            name: "broken",
            about: "panics on a NUL byte",
            seeds: || vec![b"abc".to_vec()],
            dictionary: &[],
            check: |input| assert!(!input.contains(&0), "NUL seen"),
            max_len: 16,
        };
        let result = run(
            &broken,
            1,
            Budget {
                inputs: 100_000,
                time: Duration::from_secs(10),
            },
        );
        let finding = result.expect_err("mutations reach a NUL byte");
        assert!(finding.input.contains(&0));
        assert!(finding.message.contains("NUL seen"));
    }
}
