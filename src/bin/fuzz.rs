//! `portico-fuzz`: runs one fuzz target of `portico::fuzz` for a while, or
//! replays a saved input. Built with `--features fuzz`; `scripts/fuzz` is
//! the way in.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use portico::fuzz::{self, Budget, Target};

const USAGE: &str =
    "usage: portico-fuzz TARGET SECONDS [SEED] | portico-fuzz TARGET FILE | portico-fuzz --list";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.first().map(String::as_str) == Some("--list") {
        for t in fuzz::TARGETS {
            println!("{:<18} {}", t.name, t.about);
        }
        return ExitCode::SUCCESS;
    }
    let (Some(name), Some(what)) = (args.first(), args.get(1)) else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let Some(target) = fuzz::target(name) else {
        eprintln!("no fuzz target {name:?}; `portico-fuzz --list` shows them");
        return ExitCode::from(2);
    };
    match what.parse::<u64>() {
        Ok(seconds) => {
            let seed = args
                .get(2)
                .and_then(|s| s.parse().ok())
                .unwrap_or_else(time_seed);
            fuzz_for(target, seconds, seed)
        }
        Err(_) => replay(target, Path::new(what)),
    }
}

fn time_seed() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_nanos() as u64)
}

fn fuzz_for(target: &Target, seconds: u64, seed: u64) -> ExitCode {
    println!("fuzzing {} for {seconds}s (seed {seed})", target.name);
    let budget = Budget {
        inputs: u64::MAX,
        time: Duration::from_secs(seconds),
    };
    match fuzz::run(target, seed, budget) {
        Ok(stats) => {
            let rate = stats.inputs as f64 / stats.elapsed.as_secs_f64().max(1e-9);
            println!(
                "{}: {} inputs in {:.1}s ({rate:.0}/s), no failure",
                target.name,
                stats.inputs,
                stats.elapsed.as_secs_f64()
            );
            ExitCode::SUCCESS
        }
        Err(finding) => {
            let path = save(target, &finding.input);
            eprintln!(
                "{}: FAILED: {}\ninput: \"{}\"\nsaved as {} (replay: scripts/fuzz {} {})",
                target.name,
                finding.message,
                fuzz::escape(&finding.input),
                path.display(),
                target.name,
                path.display()
            );
            ExitCode::FAILURE
        }
    }
}

fn replay(target: &Target, file: &Path) -> ExitCode {
    let input = match std::fs::read(file) {
        Ok(input) => input,
        Err(e) => {
            eprintln!("cannot read {}: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    match fuzz::check_one(target, &input) {
        Ok(()) => {
            println!("{}: {} passes", target.name, file.display());
            ExitCode::SUCCESS
        }
        Err(finding) => {
            eprintln!("{}: FAILED: {}", target.name, finding.message);
            ExitCode::FAILURE
        }
    }
}

/// `fuzz/artifacts/TARGET/crash-HASH`, named by the input's FNV-1a hash.
fn save(target: &Target, input: &[u8]) -> PathBuf {
    let hash = input.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    });
    let dir = Path::new("fuzz/artifacts").join(target.name);
    let path = dir.join(format!("crash-{hash:016x}"));
    if let Err(e) = std::fs::create_dir_all(&dir).and_then(|()| std::fs::write(&path, input)) {
        eprintln!("cannot save the input to {}: {e}", path.display());
    }
    path
}
