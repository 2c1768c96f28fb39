//! `recur eval`: loss, perplexity and bits per character of a trained model on a text.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Args;

use crate::checkpoint;
use crate::corpus::Corpus;
use crate::streams::evaluate;

/// Flags of `recur eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The checkpoint to evaluate.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// UTF-8 text to score (only characters the model knows).
    #[arg(long, value_name = "FILE")]
    pub text: PathBuf,
}

/// Runs `recur eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let ckpt = checkpoint::load(&args.checkpoint)?;
    let model = ckpt.model()?;
    let (name, ids) = Corpus::with_vocab(&args.text, &ckpt.vocab)?;
    let seq_len = ckpt.config.seq_len;
    if ids.len() < seq_len + 1 {
        bail!("{name} has {} characters; scoring needs at least --seq-len + 1 = {}", ids.len(), seq_len + 1);
    }
    let (loss, count) = evaluate(&model, &ids, ckpt.config.batch_size, seq_len)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{name}: {count} characters scored")?;
    writeln!(out, "loss        {loss:.4} nats/char")?;
    writeln!(out, "perplexity  {:.4}", loss.exp())?;
    writeln!(out, "bits/char   {:.4}", loss / std::f64::consts::LN_2)?;
    Ok(())
}
