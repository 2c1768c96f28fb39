//! `recur sample`: stream text from a trained character model.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use rand::SeedableRng;
use recur::models::Sampling;

/// Flags of `recur sample`.
#[derive(Debug, Args)]
pub struct SampleArgs {
    /// The checkpoint to sample from.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Text to start from (default: a newline, or the first character of the vocabulary).
    #[arg(long)]
    pub prime: Option<String>,
    /// Characters to generate.
    #[arg(long, default_value_t = 500)]
    pub length: usize,
    /// Below 1: safer, more repetitive; above 1: more surprising.
    #[arg(long, default_value_t = 0.8)]
    pub temperature: f64,
    /// Sample only among the K most likely characters.
    #[arg(long)]
    pub top_k: Option<usize>,
    /// Sample only among the most likely characters that together reach probability P.
    #[arg(long)]
    pub top_p: Option<f64>,
    /// Always take the most likely character (so no --temperature, --top-k or --top-p).
    #[arg(long, conflicts_with_all = ["temperature", "top_k", "top_p"])]
    pub argmax: bool,
    /// Seed of the sampling.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Runs `recur sample`.
pub fn run(args: SampleArgs) -> Result<()> {
    let sampling =
        Sampling { temperature: args.temperature, top_k: args.top_k, top_p: args.top_p, argmax: args.argmax };
    sampling.validate()?;
    let ckpt = recur::models::load_char_lm(&args.checkpoint)?;
    let model = &ckpt.model;
    let vocab = &ckpt.vocab;
    let prime_text = match &args.prime {
        Some(p) if p.is_empty() => anyhow::bail!("--prime is empty; pass some text or leave the flag out"),
        Some(p) => p.clone(),
        None => vocab.id('\n').map_or_else(|| vocab.chars()[0].to_string(), |_| "\n".to_string()),
    };
    let prime = vocab.encode("prime text", &prime_text).context("cannot use --prime")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(args.seed);
    let mut out = std::io::stdout().lock();
    if args.prime.is_some() {
        write!(out, "{prime_text}")?;
    }
    model.generate(&prime, args.length, &sampling, &mut rng, |id| {
        if let Some(c) = vocab.char(id) {
            // A closed pipe (`| head`) ends the stream quietly.
            if write!(out, "{c}").and_then(|_| out.flush()).is_err() {
                return Err(recur::Error::Data {
                    what: "output",
                    message: "standard output closed".into(),
                    fix: "none needed".into(),
                });
            }
        }
        Ok(())
    })?;
    writeln!(out)?;
    Ok(())
}
