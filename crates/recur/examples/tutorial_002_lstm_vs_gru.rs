//! Tutorial 002, exercise 3 ("LSTM vs GRU"): the same character language model with an LSTM, a
//! GRU and a plain RNN, each given the same parameter budget (the hidden size is chosen per cell)
//! and the same training time on the same text, then compared on held-out text: parameters,
//! training speed (characters per second) and validation bits per character.
//!
//! ```text
//! cargo run --release -p recur --example tutorial_002_lstm_vs_gru [-- --text FILE --seconds S --plot FILE.svg]
//! RECUR_EXAMPLE_SMALL=1 cargo run --release -p recur --example tutorial_002_lstm_vs_gru
//! ```
//!
//! Without `--text` it trains on this repository's README.

use anyhow::{bail, Context, Result};
use recur::diagnostics::{compare_cells, compare_plot, CompareConfig, CompareProgress};

fn main() -> Result<()> {
    let small = std::env::var("RECUR_EXAMPLE_SMALL").is_ok_and(|v| v == "1");
    let mut text = include_str!("../../../README.md").to_string();
    let mut seconds = if small { 30.0 } else { 20.0 }; // small: capped at 40 steps below
    let mut plot_path = std::env::temp_dir().join("recur_lstm_vs_gru.svg");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--text" => {
                let path = args.next().context("--text needs a file")?;
                text = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
            }
            "--seconds" => seconds = args.next().context("--seconds needs a number")?.parse()?,
            "--plot" => plot_path = args.next().context("--plot needs a file name")?.into(),
            other => bail!("unknown argument {other:?}; usage: [--text FILE] [--seconds S] [--plot FILE.svg]"),
        }
    }
    let config = CompareConfig {
        max_steps: if small { Some(40) } else { None },
        ..CompareConfig::new(if small { 8_000 } else { 60_000 }, seconds)
    };
    println!(
        "budget {} parameters, {seconds} s per cell, windows of {} characters × {} streams",
        config.budget_params, config.seq_len, config.batch_size
    );
    let report = compare_cells(&text, &config, |event| {
        if let CompareProgress::Start { cell, hidden_size, parameters } = event {
            println!("training {cell}: hidden_size {hidden_size}, {parameters} parameters");
        }
    })?;
    println!(
        "\n{} characters of training text, {} of validation, vocabulary {}; unigram entropy {:.3} bpc\n",
        report.train_chars, report.valid_chars, report.vocab_size, report.unigram_bpc
    );
    println!("{:<5} {:>7} {:>11} {:>7} {:>12} {:>10}", "cell", "hidden", "parameters", "steps", "chars/s", "valid bpc");
    for row in &report.rows {
        println!(
            "{:<5} {:>7} {:>11} {:>7} {:>12.0} {:>10.3}",
            row.cell.name(),
            row.hidden_size,
            row.parameters,
            row.steps,
            row.tokens_per_second,
            row.valid_bpc
        );
    }
    std::fs::write(&plot_path, compare_plot(&report).to_svg())
        .with_context(|| format!("writing {}", plot_path.display()))?;
    println!("\nplot: {}", plot_path.display());
    Ok(())
}
