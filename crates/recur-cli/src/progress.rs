//! What a training run shows while it goes: one updating line on a terminal, or a plain line per
//! report when the output is a file or a pipe (or with `--quiet`, nothing but the essentials).

use std::io::{IsTerminal, Write};
use std::time::Duration;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Style {
    /// An updating line on a terminal (stderr).
    Live,
    /// One line per evaluation.
    Lines,
    /// Only the start, the end and errors.
    Quiet,
}

impl Style {
    /// `Live` on a terminal, `Lines` otherwise, `Quiet` when asked.
    pub fn pick(quiet: bool) -> Self {
        if quiet {
            Style::Quiet
        } else if std::io::stderr().is_terminal() {
            Style::Live
        } else {
            Style::Lines
        }
    }
}

/// One snapshot of a run.
pub struct Snapshot {
    pub step: usize,
    pub max_steps: Option<usize>,
    pub epoch: usize,
    pub loss: f64,
    pub val_loss: Option<f64>,
    pub tokens_per_s: f64,
    pub eta: Option<Duration>,
}

/// Prints snapshots in the chosen style.
pub struct Progress {
    style: Style,
    live_shown: bool,
}

impl Progress {
    pub fn new(style: Style) -> Self {
        Self { style, live_shown: false }
    }

    fn line(s: &Snapshot) -> String {
        let steps = match s.max_steps {
            Some(max) => format!("step {:>6}/{max}", s.step),
            None => format!("step {:>6}", s.step),
        };
        let val = s.val_loss.map_or(String::new(), |v| format!(" | val {v:.4}"));
        let eta = s.eta.map_or(String::new(), |d| format!(" | ETA {}", duration(d)));
        format!("{steps} | epoch {} | loss {:.4}{val} | {} tok/s{eta}", s.epoch, s.loss, thousands(s.tokens_per_s))
    }

    /// A quick update (every step); shown only on a terminal.
    pub fn tick(&mut self, s: &Snapshot) {
        if self.style == Style::Live {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K{}", Self::line(s));
            let _ = err.flush();
            self.live_shown = true;
        }
    }

    /// A report worth keeping (after an evaluation).
    pub fn report(&mut self, s: &Snapshot) {
        match self.style {
            Style::Live => {
                self.clear();
                eprintln!("{}", Self::line(s));
            }
            Style::Lines => eprintln!("{}", Self::line(s)),
            Style::Quiet => {}
        }
    }

    /// Clears the live line so other output starts on a clean line.
    pub fn clear(&mut self) {
        if self.live_shown {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
            self.live_shown = false;
        }
    }
}

/// `1h02m`, `3m05s`, `42s`.
pub fn duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{}s", s)
    }
}

/// `12.3k`, `1.2M`, `950`.
pub fn thousands(v: f64) -> String {
    if v >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if v >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else {
        format!("{v:.0}")
    }
}
