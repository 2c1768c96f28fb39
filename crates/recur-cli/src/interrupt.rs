//! Ctrl-C: the first one asks the run to stop after the current step (it saves a checkpoint and
//! exits with 130); a second one exits at once.

use std::sync::atomic::{AtomicUsize, Ordering};

use anyhow::{Context, Result};

static PRESSES: AtomicUsize = AtomicUsize::new(0);

/// Installs the handler (once per process).
pub fn install() -> Result<()> {
    ctrlc::set_handler(|| {
        if PRESSES.fetch_add(1, Ordering::SeqCst) >= 1 {
            // Second Ctrl-C: leave now. Checkpoints are written atomically, so none is torn.
            eprintln!("\ninterrupted again: exiting without saving");
            std::process::exit(130);
        }
        eprintln!("\ninterrupt: finishing this step and saving a checkpoint (Ctrl-C again to quit at once)");
    })
    .context("cannot install the Ctrl-C handler")
}

/// Whether a stop was asked for.
pub fn requested() -> bool {
    PRESSES.load(Ordering::SeqCst) > 0
}
