//! `recur inspect`: what a checkpoint holds.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

use crate::checkpoint;

/// Flags of `recur inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The checkpoint to describe.
    #[arg(value_name = "FILE")]
    pub checkpoint: PathBuf,
}

/// Runs `recur inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    let ckpt = checkpoint::load(&args.checkpoint)?;
    let model = ckpt.model()?;
    let c = &ckpt.config;
    let r = &ckpt.run;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{model}")?;
    writeln!(out, "parameters: {}", model.parameter_count())?;
    let shown: String = ckpt.vocab.chars().iter().map(|c| c.escape_debug().to_string()).collect();
    writeln!(out, "vocabulary: {} characters: {shown}", ckpt.vocab.len())?;
    writeln!(
        out,
        "training: step {} of {}, epoch {}, {} characters seen, {:.1} s; seq_len {}, batch {}, {} lr {} ({}), \
         grad clip {}, seed {}",
        r.step,
        c.max_steps,
        r.epoch,
        r.tokens,
        r.elapsed_s,
        c.seq_len,
        c.batch_size,
        c.optimizer,
        c.lr,
        c.lr_schedule,
        c.grad_clip,
        c.seed
    )?;
    if let Some((step, train, val)) = r.history.last() {
        let val =
            val.map_or(String::new(), |v| format!(", validation {v:.4} ({:.3} bits/char)", v / std::f64::consts::LN_2));
        writeln!(out, "last evaluation: step {step}, train loss {train:.4}{val}")?;
    }
    if let Some(best) = r.best_val {
        writeln!(out, "best validation loss: {best:.4}")?;
    }
    if let Some(text) = &ckpt.text {
        writeln!(out, "trained on: {} ({} characters, crc32 {})", text.name, text.chars, text.crc32)?;
    }
    writeln!(out, "written by recur {}", ckpt.recur_version)?;
    Ok(())
}
