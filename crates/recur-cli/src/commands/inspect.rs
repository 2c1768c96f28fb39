//! `recur inspect`: what a checkpoint holds.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Result;
use clap::Args;

/// Flags of `recur inspect`.
#[derive(Debug, Args)]
pub struct InspectArgs {
    /// The checkpoint to describe.
    #[arg(value_name = "FILE")]
    pub checkpoint: PathBuf,
}

/// Runs `recur inspect`.
pub fn run(args: InspectArgs) -> Result<()> {
    let ckpt = recur::models::load_char_lm(&args.checkpoint)?;
    let (d, t, r) = (&ckpt.data, &ckpt.checkpoint.trainer, &ckpt.checkpoint.run);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", ckpt.model)?;
    writeln!(out, "parameters: {}", ckpt.model.parameter_count())?;
    let shown: String = ckpt.vocab.chars().iter().map(|c| c.escape_debug().to_string()).collect();
    writeln!(out, "vocabulary: {} characters: {shown}", ckpt.vocab.len())?;
    writeln!(
        out,
        "training: step {} of {}, epoch {}, {} characters seen, {:.1} s; seq_len {}, batch {}, {} lr {} ({}), \
         grad clip {}, seed {}",
        r.step,
        t.max_steps,
        r.epoch,
        r.items,
        r.elapsed_s,
        d.seq_len,
        d.batch_size,
        t.optimizer.name(),
        t.optimizer.lr(),
        t.schedule.name(),
        t.grad_clip,
        d.seed
    )?;
    if let Some(last) = r.history.last() {
        let train = last.train_loss.map_or("none".to_string(), |t| format!("{t:.4}"));
        let val = last
            .metrics
            .get("loss")
            .map_or(String::new(), |v| format!(", validation {v:.4} ({:.3} bits/char)", v / std::f64::consts::LN_2));
        writeln!(out, "last evaluation: step {}, train loss {train}{val}", last.step)?;
    }
    if let Some(best) = r.best {
        let at = r.best_step.map_or(String::new(), |s| format!(" at step {s}"));
        writeln!(out, "best validation loss: {best:.4}{at}")?;
    }
    if let Some(text) = &d.text {
        writeln!(out, "trained on: {} ({} characters, crc32 {})", text.name, text.chars, text.crc32)?;
    }
    writeln!(out, "written by recur {}", ckpt.checkpoint.recur_version)?;
    Ok(())
}
