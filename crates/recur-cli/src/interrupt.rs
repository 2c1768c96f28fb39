//! Stop requests: SIGINT (Ctrl-C) and SIGTERM (what `kill`, `timeout`, systemd and job schedulers
//! send) both ask the run to stop after the current step; it saves `last.safetensors` and exits
//! with 130 (SIGINT) or 143 (SIGTERM). A second signal of either kind exits at once, with the
//! same code (checkpoints are written atomically, so none is torn).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};

struct Flags {
    stop: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

static FLAGS: OnceLock<Flags> = OnceLock::new();

/// Installs the handlers (once per process).
pub fn install() -> Result<()> {
    if FLAGS.get().is_some() {
        return Ok(());
    }
    let flags = Flags { stop: Arc::new(AtomicBool::new(false)), signal: Arc::new(AtomicUsize::new(0)) };
    for (signal, code) in [(SIGINT, 130), (SIGTERM, 143)] {
        // Registered first, so it sees the flag as the previous signal left it: the second
        // signal exits at once.
        signal_hook::flag::register_conditional_shutdown(signal, code, Arc::clone(&flags.stop))
            .context("cannot install the signal handlers")?;
        signal_hook::flag::register_usize(signal, Arc::clone(&flags.signal), signal as usize)
            .context("cannot install the signal handlers")?;
        signal_hook::flag::register(signal, Arc::clone(&flags.stop)).context("cannot install the signal handlers")?;
    }
    let _ = FLAGS.set(flags);
    Ok(())
}

/// A stop signal that arrived.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stop {
    /// SIGINT: Ctrl-C.
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl Stop {
    /// The exit code of a run stopped by this signal: 128 + the signal's number.
    pub fn exit_code(self) -> u8 {
        match self {
            Stop::Interrupt => 130,
            Stop::Terminate => 143,
        }
    }

    /// The signal's name.
    pub fn name(self) -> &'static str {
        match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        }
    }
}

/// The flag the handlers set, for the trainer's stop check (`None` before [`install`]).
pub fn flag() -> Option<&'static AtomicBool> {
    FLAGS.get().map(|f| f.stop.as_ref())
}

/// The stop that was asked for, if any.
pub fn requested() -> Option<Stop> {
    let flags = FLAGS.get()?;
    if !flags.stop.load(Ordering::SeqCst) {
        return None;
    }
    Some(if flags.signal.load(Ordering::SeqCst) == SIGTERM as usize { Stop::Terminate } else { Stop::Interrupt })
}
