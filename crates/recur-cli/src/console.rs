//! Output that never stops a run: `recur train ... | head -1` closes standard output after the
//! first line, and a training run must go on (and save its checkpoints) all the same. Lines to a
//! closed stream are dropped; the first failure turns that stream off for the rest of the process.

use std::fmt;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static STDOUT_CLOSED: AtomicBool = AtomicBool::new(false);
static STDERR_CLOSED: AtomicBool = AtomicBool::new(false);

fn emit(closed: &AtomicBool, mut stream: impl Write, args: fmt::Arguments<'_>) {
    if closed.load(Ordering::Relaxed) {
        return;
    }
    if stream.write_fmt(args).and_then(|()| stream.write_all(b"\n")).and_then(|()| stream.flush()).is_err() {
        closed.store(true, Ordering::Relaxed);
    }
}

/// One line on standard output.
pub fn out(args: fmt::Arguments<'_>) {
    emit(&STDOUT_CLOSED, std::io::stdout().lock(), args);
}

/// One line on standard error.
pub fn err(args: fmt::Arguments<'_>) {
    emit(&STDERR_CLOSED, std::io::stderr().lock(), args);
}

/// `warning: …` on standard error.
pub fn warn(message: impl fmt::Display) {
    err(format_args!("warning: {message}"));
}

/// `println!` that survives a closed standard output.
macro_rules! say {
    ($($arg:tt)*) => { $crate::console::out(format_args!($($arg)*)) };
}
pub(crate) use say;
