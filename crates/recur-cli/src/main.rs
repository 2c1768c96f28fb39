//! `recur`: the command-line front end of the Recur library.
//!
//! A thin binary: flags are parsed once here, turned into library calls, and the exit code is
//! decided in one place, [`main`]: 0 on success, 1 on an error (one line on stderr), 2 on a usage
//! error, 130 when a run was interrupted with Ctrl-C (after saving a checkpoint). Typed errors live
//! in the library; this binary only adds context with `anyhow` and prints.

mod checkpoint;
mod compare;
mod corpus;
mod eval;
mod gradflow;
mod inspect;
mod interrupt;
mod progress;
mod sample;
mod streams;
mod toolkit;
mod train;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};

/// Recur: PyTorch-compatible recurrent networks (RNN, LSTM, GRU) on the CPU.
#[derive(Debug, Parser)]
#[command(name = "recur", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Train a character-level language model (default: on eight Shakespeare plays).
    Train(train::TrainArgs),
    /// Generate text from a trained character model.
    Sample(sample::SampleArgs),
    /// Score a text with a trained character model: loss, perplexity, bits per character.
    Eval(eval::EvalArgs),
    /// Describe a checkpoint: model, parameters, vocabulary, training state.
    Inspect(inspect::InspectArgs),
    /// Plot how far back a last-step gradient reaches in RNN, LSTM and GRU (vanishing gradients).
    Gradflow(gradflow::GradflowArgs),
    /// Train LSTM, GRU and RNN of one parameter budget for the same time and compare them.
    Compare(compare::CompareArgs),
    /// Print the library version and the number of threads the kernels use.
    Info,
}

/// A run that stopped on Ctrl-C after saving its checkpoint: exit code 130.
#[derive(Debug)]
struct Interrupted;

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("interrupted")
    }
}

impl std::error::Error for Interrupted {}

fn main() -> ExitCode {
    recur::keep_freed_memory();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // `--help` and `--version` arrive here too, with exit code 0.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if err.is::<Interrupted>() => ExitCode::from(130),
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Train(args) => {
            interrupt::install()?;
            train::run(args)
        }
        Command::Sample(args) => sample::run(args),
        Command::Eval(args) => eval::run(args),
        Command::Inspect(args) => inspect::run(args),
        Command::Gradflow(args) => gradflow::run(args),
        Command::Compare(args) => compare::run(args),
        Command::Info => info(),
    }
}

fn info() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "recur {}", recur::VERSION)?;
    writeln!(out, "threads: {}", recur::num_threads())?;
    Ok(())
}
