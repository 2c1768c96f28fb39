//! `recur eval`: loss, perplexity and bits per character of a trained model on a text.

use std::io::Write;
use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;
use recur::data::decode_utf8;

use recur::data::evaluate_streams;

/// Flags of `recur eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The checkpoint to evaluate.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// UTF-8 text to score: every character after the first.
    #[arg(long, value_name = "FILE")]
    pub text: PathBuf,
    /// Leave out (and count) the characters the model never saw, instead of refusing the text.
    #[arg(long)]
    pub skip_unknown: bool,
}

/// Runs `recur eval`.
pub fn run(args: EvalArgs) -> Result<()> {
    let ckpt = recur::models::load_char_lm(&args.checkpoint)?;
    let model = &ckpt.model;
    let name = args.text.display().to_string();
    let bytes = std::fs::read(&args.text).with_context(|| format!("cannot read the text file {name}"))?;
    let text = decode_utf8(&bytes).with_context(|| format!("cannot use {name}"))?;
    let vocab = &ckpt.vocab;
    let (ids, skipped, unknown) = if args.skip_unknown {
        let mut unknown: Vec<char> = Vec::new();
        let mut skipped = 0usize;
        let ids: Vec<u32> = text
            .chars()
            .filter_map(|c| {
                let id = vocab.id(c);
                if id.is_none() {
                    skipped += 1;
                    if !unknown.contains(&c) {
                        unknown.push(c);
                    }
                }
                id
            })
            .collect();
        (ids, skipped, unknown)
    } else {
        let ids = vocab.encode("text", text).with_context(|| {
            format!("cannot evaluate on {name} (pass --skip-unknown to leave out the characters the model never saw)")
        })?;
        (ids, 0, Vec::new())
    };
    let (loss, count) = evaluate_streams(model, &ids, ckpt.data.batch_size, ckpt.data.seq_len)
        .with_context(|| format!("cannot score {name}"))?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{name}: {count} characters scored (every one after the first)")?;
    if skipped > 0 {
        let shown: String = unknown.iter().take(20).map(|c| c.escape_debug().to_string()).collect();
        writeln!(
            out,
            "skipped {skipped} occurrences of {} characters the model never saw: {shown}{}",
            unknown.len(),
            if unknown.len() > 20 { "…" } else { "" }
        )?;
    }
    writeln!(out, "loss        {loss:.4} nats/char")?;
    writeln!(out, "perplexity  {:.4}", loss.exp())?;
    writeln!(out, "bits/char   {:.4}", loss / std::f64::consts::LN_2)?;
    Ok(())
}
