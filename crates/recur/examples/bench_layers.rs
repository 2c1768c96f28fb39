//! Times one case of `shared/bench/cases.md` the way `cases.md` asks: 3 warm-up iterations, then
//! iterations until at least `--min-seconds` have passed, and prints the median.
//!
//! This is the Recur side of `bench/compare.py`, which runs it once per case, mode and thread count
//! and times PyTorch on the same work in the same run.
//!
//! Like the `recur` command, it first calls [`recur::keep_freed_memory`] (glibc keeps freed blocks
//! for reuse instead of unmapping them); `--malloc-defaults` leaves glibc's settings alone.
//!
//! ```text
//! cargo run --release -p recur --example bench_layers -- --case M --mode train --threads 1 --json
//! {"case":"M","mode":"train","threads":1,"median_ms":123.4,"iterations":17}
//! ```

#[path = "../benches/common/mod.rs"]
mod common;

use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};

use common::{Mode, Workload};

const USAGE: &str =
    "usage: bench_layers --case NAME --mode train|infer [--threads N] [--min-seconds S] [--json] [--malloc-defaults]";
const WARM_UPS: usize = 3;

struct Args {
    case: String,
    mode: Mode,
    threads: usize,
    min_seconds: f64,
    json: bool,
    malloc_defaults: bool,
}

fn parse_args() -> Result<Args> {
    let (mut case, mut mode, mut threads, mut min_seconds, mut json) = (None, None, 1, 2.0, false);
    let mut malloc_defaults = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |flag: &str| args.next().with_context(|| format!("{flag} needs a value; {USAGE}"));
        match arg.as_str() {
            "--case" => case = Some(value("--case")?),
            "--mode" => mode = Some(Mode::parse(&value("--mode")?)?),
            "--threads" => threads = value("--threads")?.parse().context("--threads wants a whole number ≥ 1")?,
            "--min-seconds" => min_seconds = value("--min-seconds")?.parse().context("--min-seconds wants a number")?,
            "--json" => json = true,
            "--malloc-defaults" => malloc_defaults = true,
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; {USAGE}"),
        }
    }
    if threads == 0 {
        bail!("--threads wants a whole number ≥ 1");
    }
    Ok(Args {
        case: case.with_context(|| format!("--case is required; {USAGE}"))?,
        mode: mode.with_context(|| format!("--mode is required; {USAGE}"))?,
        threads,
        min_seconds,
        json,
        malloc_defaults,
    })
}

/// Every thread pool involved gets `threads` threads: Recur's kernels, rayon's global pool, and
/// candle's own CPU ops (matmul, softmax...), which read `RAYON_NUM_THREADS` on every call.
fn set_threads(threads: usize) -> Result<()> {
    // Before any other thread exists: nothing else reads the environment concurrently.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    rayon::ThreadPoolBuilder::new().num_threads(threads).build_global().context("building rayon's global pool")?;
    recur::set_num_threads(threads);
    Ok(())
}

/// The middle value, or the mean of the two middle values (Python's `statistics.median`).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 1 {
        values[mid]
    } else {
        (values[mid - 1] + values[mid]) / 2.0
    }
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = parse_args()?;
    if !args.malloc_defaults {
        recur::keep_freed_memory();
    }
    set_threads(args.threads)?;
    let case = common::case(&args.case)?;
    let mut workload = Workload::new(&case, args.mode)?;

    for _ in 0..WARM_UPS {
        workload.run()?;
    }
    let mut times_ms = Vec::new();
    let start = Instant::now();
    while times_ms.is_empty() || start.elapsed().as_secs_f64() < args.min_seconds {
        let iteration = Instant::now();
        workload.run()?;
        times_ms.push(iteration.elapsed().as_secs_f64() * 1e3);
    }
    let median_ms = median(&mut times_ms);

    let (name, mode, threads, iterations) = (case.name, args.mode.name(), args.threads, times_ms.len());
    if args.json {
        println!(
            "{{\"case\":\"{name}\",\"mode\":\"{mode}\",\"threads\":{threads},\"median_ms\":{median_ms:.4},\"iterations\":{iterations}}}"
        );
    } else {
        println!("{name} {mode} threads={threads}: median {median_ms:.3} ms over {iterations} iterations");
    }
    Ok(())
}
