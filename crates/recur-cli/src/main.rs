//! `recur`: the command-line front end of the Recur library.
//!
//! A thin binary: flags are parsed once here, turned into library calls, and the exit code is
//! decided in one place, [`main`]. Typed errors live in the library; this binary only adds
//! context with `anyhow` and prints.

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
    /// Print the library version and the number of threads the kernels use.
    Info,
}

fn main() -> ExitCode {
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
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Info => info(),
    }
}

fn info() -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(out, "recur {}", recur::VERSION)?;
    writeln!(out, "threads: {}", recur::num_threads())?;
    Ok(())
}
