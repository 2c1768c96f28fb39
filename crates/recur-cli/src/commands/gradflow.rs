//! `recur gradflow`: how much of a last-step loss's gradient reaches each earlier time step, for
//! a plain RNN, an LSTM and a GRU trained briefly on a task that needs long memory.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;
use recur::diagnostics::{gradient_flow_plot, gradient_flow_with, GradFlowConfig};
use recur::models::CellType;

use crate::args::parse_cell;
use crate::checkpoint::write_atomic;

/// Flags of `recur gradflow`.
#[derive(Debug, Args)]
pub struct GradflowArgs {
    /// Cells to measure (repeat or comma-separate; default: rnn, lstm and gru).
    #[arg(long, value_delimiter = ',', value_parser = parse_cell)]
    pub cell: Vec<CellType>,
    /// Steps per sequence: the first symbol must be recalled at the last step.
    #[arg(long, default_value_t = 50)]
    pub seq_len: usize,
    /// Hidden size.
    #[arg(long, default_value_t = 32)]
    pub hidden_size: usize,
    /// Training steps before measuring (0: measure the initialisation).
    #[arg(long, default_value_t = 300)]
    pub train_steps: usize,
    /// Seed of parameters and data.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Where to write the plot.
    #[arg(long, default_value = "gradflow.svg")]
    pub plot: PathBuf,
}

/// Runs `recur gradflow`.
pub fn run(args: GradflowArgs) -> Result<()> {
    if args.seq_len < 2 {
        bail!("--seq-len must be at least 2, got {}", args.seq_len);
    }
    let cells = if args.cell.is_empty() { vec![CellType::Rnn, CellType::Lstm, CellType::Gru] } else { args.cell };
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "recall the first of 4 symbols after {} steps; hidden size {}, {} training steps, seed {}",
        args.seq_len, args.hidden_size, args.train_steps, args.seed
    )?;
    writeln!(
        out,
        "{:<5} {:>14} {:>18} {:>12} {:>10}",
        "cell", "decay ρ/step", "‖g_0‖ / ‖g_T-1‖", "final loss", "accuracy"
    )?;
    let mut reports = Vec::new();
    for cell in cells {
        let config = GradFlowConfig {
            hidden_size: args.hidden_size,
            train_steps: args.train_steps,
            seed: args.seed,
            ..GradFlowConfig::new(cell, args.seq_len)
        };
        let report = gradient_flow_with(&config)?;
        writeln!(
            out,
            "{:<5} {:>14.4} {:>18.3e} {:>12.4} {:>9.1}%",
            cell.name(),
            report.decay_rate,
            report.first_to_last,
            report.train_losses.last().copied().unwrap_or(f64::NAN),
            100.0 * report.last_step_accuracy
        )?;
        out.flush()?;
        reports.push(report);
    }
    write_atomic(&args.plot, gradient_flow_plot(&reports).to_svg().as_bytes())?;
    writeln!(
        out,
        "ρ < 1: the gradient shrinks by that factor per step back in time (vanishing); plot: {}",
        args.plot.display()
    )?;
    Ok(())
}
