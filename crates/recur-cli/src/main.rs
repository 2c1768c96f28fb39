//! `recur`: the command-line front end of the Recur library.
//!
//! A thin binary: flags are parsed once here, turned into library calls, and the exit code is
//! decided in one place, [`main`]: 0 on success, 1 on an error (one line on stderr), 2 on a usage
//! error, 130 or 143 when a run was stopped by SIGINT (Ctrl-C) or SIGTERM (after saving a
//! checkpoint). A closed standard output (`| head`) ends a command quietly, and never a training
//! run. Typed errors live in the library; this binary only adds context with `anyhow` and prints.

mod args;
mod checkpoint;
mod commands;
mod console;
mod corpus;
mod interrupt;
mod progress;
mod report;

use std::io::Write;
use std::process::ExitCode;

use anyhow::Result;
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use commands::{classify, compare, eval, forecast, gradflow, inspect, sample, tag, train};

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
    /// Classify texts: train, evaluate and predict (default data: first names → gender).
    Classify(classify::ClassifyArgs),
    /// Tag words in sentences: train, evaluate and predict (default data: Brown news, part of speech).
    Tag(tag::TagArgs),
    /// Forecast time series: train, predict, backtest against baselines (default: airline passengers).
    Forecast(forecast::ForecastArgs),
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

/// A run that stopped on a signal after saving its checkpoint: exit code 128 + the signal.
#[derive(Debug)]
struct Stopped {
    code: u8,
}

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by a signal (exit code {})", self.code)
    }
}

impl std::error::Error for Stopped {}

/// Whether `err` comes from writing to a closed pipe.
fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|e| e.downcast_ref::<std::io::Error>().is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe))
}

fn main() -> ExitCode {
    recur::keep_freed_memory();
    let parsed = Cli::command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(err) => {
            // `--help` and `--version` arrive here too, with exit code 0.
            let _ = err.print();
            return ExitCode::from(u8::try_from(err.exit_code()).unwrap_or(2));
        }
    };
    match run(cli, &matches) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => match err.downcast_ref::<Stopped>() {
            Some(stopped) => ExitCode::from(stopped.code),
            None if is_broken_pipe(&err) => ExitCode::SUCCESS,
            None => {
                console::err(format_args!("error: {}", one_line(&err)));
                ExitCode::FAILURE
            }
        },
    }
}

/// The error and its causes on one line, each cause once: the library's errors already name
/// the operating system's error that they also return as their source.
fn one_line(err: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in err.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}

/// The ids of the flags given on the command line (not defaults) of the innermost subcommand.
fn explicit_flags(matches: &ArgMatches) -> Vec<String> {
    let Some((_, mut sub)) = matches.subcommand() else { return Vec::new() };
    while let Some((_, inner)) = sub.subcommand() {
        sub = inner;
    }
    sub.ids()
        .filter(|id| sub.value_source(id.as_str()) == Some(ValueSource::CommandLine))
        .map(|id| id.as_str().to_string())
        .collect()
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<()> {
    match cli.command {
        Command::Train(args) => {
            interrupt::install()?;
            train::run(args, &explicit_flags(matches))
        }
        Command::Classify(args) => classify::run(args, &explicit_flags(matches)),
        Command::Tag(args) => tag::run(args, &explicit_flags(matches)),
        Command::Forecast(args) => forecast::run(args, &explicit_flags(matches)),
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
    let cpu = recur::kernels::cpu::selection();
    let why = match &cpu.requested {
        Some(r) if cpu.request_ignored() => format!(" (RECUR_CPU={r:?} is no path's name: ignored)"),
        Some(r) => format!(" (RECUR_CPU={r})"),
        None => String::new(),
    };
    writeln!(out, "cpu path: {} (this CPU's widest: {}){why}", cpu.chosen, cpu.detected)?;
    Ok(())
}
