//! `recur compare`: LSTM, GRU and RNN character models of one parameter budget, trained for the
//! same time on the same text (exercise 3 of the tutorials).

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use recur::diagnostics::{compare_cells, compare_plot, CompareConfig, CompareProgress};

use crate::args::parse_duration;
use crate::checkpoint::write_atomic;
use crate::corpus::DEFAULT_TEXT;

/// Flags of `recur compare`.
#[derive(Debug, Args)]
pub struct CompareArgs {
    /// UTF-8 text (default: the embedded Shakespeare corpus).
    #[arg(long, value_name = "FILE")]
    pub text: Option<PathBuf>,
    /// Parameters of each model.
    #[arg(long, default_value_t = 200_000)]
    pub budget: usize,
    /// Training time per cell: seconds, or with a unit (90s, 3m).
    #[arg(long, value_parser = parse_duration, default_value = "30s")]
    pub time_per_cell: Duration,
    /// Seed of the parameters.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the plot of training loss against time.
    #[arg(long, default_value = "compare.svg")]
    pub plot: PathBuf,
}

/// Runs `recur compare`.
pub fn run(args: CompareArgs) -> Result<()> {
    let bytes = match &args.text {
        Some(path) => std::fs::read(path).with_context(|| format!("cannot read the text file {}", path.display()))?,
        None => DEFAULT_TEXT.to_vec(),
    };
    let text = recur::data::decode_utf8(&bytes)?;
    if args.budget < 1000 {
        bail!("--budget must be at least 1000 parameters, got {}", args.budget);
    }
    let config = CompareConfig { seed: args.seed, ..CompareConfig::new(args.budget, args.time_per_cell.as_secs_f64()) };
    let mut err = std::io::stderr();
    let report = compare_cells(text, &config, |event| {
        if let CompareProgress::Start { cell, hidden_size, parameters } = event {
            let _ = writeln!(err, "training {cell} (hidden size {hidden_size}, {parameters} parameters)...");
        }
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{} training / {} validation characters, vocabulary {}, unigram {:.3} bits/char; {} per cell",
        report.train_chars,
        report.valid_chars,
        report.vocab_size,
        report.unigram_bpc,
        crate::progress::duration(args.time_per_cell)
    )?;
    writeln!(
        out,
        "{:<5} {:>7} {:>11} {:>7} {:>12} {:>15}",
        "cell", "hidden", "parameters", "steps", "tokens/s", "valid bits/char"
    )?;
    for r in &report.rows {
        writeln!(
            out,
            "{:<5} {:>7} {:>11} {:>7} {:>12.0} {:>15.4}",
            r.cell.name(),
            r.hidden_size,
            r.parameters,
            r.steps,
            r.tokens_per_second,
            r.valid_bpc
        )?;
    }
    write_atomic(&args.plot, compare_plot(&report).to_svg().as_bytes())?;
    writeln!(out, "plot: {}", args.plot.display())?;
    Ok(())
}
