//! What a training run shows while it goes: a progress bar on a terminal (indicatif), or a plain
//! line per report when the output is a file or a pipe (or with `--quiet`, nothing but the
//! essentials). The only place the training commands draw progress.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::console;

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
    /// What a token is, for the throughput: `chars` for the character model.
    pub unit: &'static str,
    pub eta: Option<Duration>,
}

/// Shows snapshots in the chosen style: on a terminal an `indicatif` bar (step, bar, loss,
/// validation loss, throughput, ETA) with the reports printed above it; otherwise one plain line
/// per report.
pub struct Progress {
    style: Style,
    bar: Option<ProgressBar>,
}

impl Progress {
    pub fn new(style: Style, max_steps: usize) -> Self {
        let bar = (style == Style::Live).then(|| {
            let bar = ProgressBar::with_draw_target(Some(max_steps as u64), ProgressDrawTarget::stderr());
            let template = "step {pos:>6}/{len} {bar:24.cyan/blue} {msg}";
            bar.set_style(
                ProgressStyle::with_template(template).expect("a valid template").progress_chars("█▉▊▋▌▍▎▏ "),
            );
            bar
        });
        Self { style, bar }
    }

    /// The line a report prints.
    pub fn line_of(s: &Snapshot) -> String {
        Self::line(s)
    }

    fn line(s: &Snapshot) -> String {
        let steps = match s.max_steps {
            Some(max) => format!("step {:>6}/{max}", s.step),
            None => format!("step {:>6}", s.step),
        };
        format!("{steps} | {}", Self::message(s))
    }

    fn message(s: &Snapshot) -> String {
        let val = s.val_loss.map_or(String::new(), |v| format!(" | val {v:.4}"));
        let eta = s.eta.map_or(String::new(), |d| format!(" | ETA {}", duration(d)));
        format!("epoch {} | loss {:.4}{val} | {} {}/s{eta}", s.epoch, s.loss, thousands(s.tokens_per_s), s.unit)
    }

    /// A quick update (every step); shown only on a terminal.
    pub fn tick(&mut self, s: &Snapshot) {
        if let Some(bar) = &self.bar {
            bar.set_position(s.step as u64);
            bar.set_message(Self::message(s));
        }
    }

    /// Prints `text` on standard error, above the bar when there is one.
    pub fn print(&self, text: &str) {
        match (&self.bar, self.style) {
            (Some(bar), _) => bar.suspend(|| console::err(format_args!("{text}"))),
            (None, Style::Lines) => console::err(format_args!("{text}")),
            (None, _) => {}
        }
    }

    /// Removes the bar, so other output starts on a clean line.
    pub fn clear(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
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

/// `1 epoch`, `2 epochs`.
pub fn plural(n: usize, word: &str) -> String {
    if n == 1 {
        format!("{n} {word}")
    } else {
        format!("{n} {word}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_agree_with_their_nouns() {
        assert_eq!(plural(1, "epoch"), "1 epoch");
        assert_eq!(plural(0, "epoch"), "0 epochs");
        assert_eq!(plural(2, "step"), "2 steps");
    }

    #[test]
    fn the_progress_line_names_the_unit_of_throughput() {
        let s = Snapshot {
            step: 3,
            max_steps: Some(10),
            epoch: 0,
            loss: 1.5,
            val_loss: None,
            tokens_per_s: 1500.0,
            unit: "chars",
            eta: None,
        };
        let line = Progress::line(&s);
        assert!(line.contains("1.5k chars/s") && !line.contains("tok/s"), "{line}");
    }
}
