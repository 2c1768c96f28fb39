//! Runs a library trainer with the command line's progress display and stop handling, the same
//! for every task: a bar (or plain lines) from the trainer's events, each evaluation's line with
//! its metrics, a divergence turned into advice, and a signal stop into its exit code.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use recur::train::{DataSource, HistoryRow, Limits, Model, Outcome, StopReason, TrainEvent, Trainer};

use crate::console::say;
use crate::interrupt;
use crate::progress::{Progress, Snapshot, Style};
use crate::Stopped;

/// How a session shows and bounds itself.
pub struct Session<'a> {
    /// Bar, lines or quiet.
    pub style: Style,
    /// `--time-budget`.
    pub budget: Duration,
    /// `--max-epochs`, where the command has one.
    pub max_epochs: Option<usize>,
    /// What the throughput counts (`chars`, `examples`, `sentences`).
    pub unit: &'static str,
    /// Appended to a divergence error: which flags to change.
    pub advice: &'a str,
}

/// Trains until the trainer stops; returns its outcome and the session's wall time. `after_eval`
/// may return text to print after an evaluation's line (a sample of a language model). A stop
/// by SIGINT or SIGTERM prints where the run was saved and returns [`Stopped`].
pub fn train<M: Model, D: DataSource<Batch = M::Batch>>(
    trainer: &mut Trainer<M, D>,
    session: &Session<'_>,
    after_eval: &mut dyn FnMut(&HistoryRow, &M) -> recur::Result<Option<String>>,
) -> Result<(Outcome, Duration)> {
    let started = Instant::now();
    let mut progress = Progress::new(session.style, trainer.config().max_steps);
    let budget = session.budget;
    let snapshot = |p: &recur::train::Progress, loss: f64, val: Option<f64>| Snapshot {
        step: p.step,
        max_steps: Some(p.max_steps),
        epoch: p.epoch,
        loss,
        val_loss: val,
        tokens_per_s: p.items_per_s,
        unit: session.unit,
        eta: p.eta.map(|eta| eta.min(budget.saturating_sub(started.elapsed()))),
    };
    let limits = Limits { max_epochs: session.max_epochs, time_budget: Some(budget), stop: interrupt::flag() };
    let outcome = trainer.run(&limits, &mut |event, model| {
        match event {
            TrainEvent::Step(p) => progress.tick(&snapshot(p, p.loss, p.best)),
            TrainEvent::Evaluated { progress: p, row, .. } => {
                let s = snapshot(p, row.train_loss.unwrap_or(f64::NAN), row.metrics.get("loss").copied());
                let mut line = Progress::line_of(&s);
                for (name, v) in row.metrics.iter().filter(|(n, _)| n.as_str() != "loss") {
                    line.push_str(&format!(" | val {} {v:.4}", name.replace('_', " ")));
                }
                progress.tick(&s);
                progress.print(&line);
                if let Some(text) = after_eval(row, model)? {
                    progress.print(&text);
                }
            }
            TrainEvent::Saved { .. } => {}
        }
        Ok(())
    });
    progress.clear();
    let outcome = match outcome {
        Ok(outcome) => outcome,
        Err(e @ recur::Error::Diverged { .. }) => bail!("{e}. {}", session.advice),
        Err(e) => return Err(e.into()),
    };
    if outcome.reason == StopReason::Requested {
        let signal = interrupt::requested().unwrap_or(interrupt::Stop::Interrupt);
        say!("stopped by {} at step {}: saved {}", signal.name(), trainer.state().step, trainer.last_path().display());
        return Err(Stopped { code: signal.exit_code() }.into());
    }
    Ok((outcome, started.elapsed()))
}

/// Refuses flags a resumed run takes from its checkpoint: those of `fixed` (clap ids, e.g.
/// `batch_size`) given on this command line (`explicit`).
pub fn refuse_fixed_on_resume(fixed: &[&str], explicit: &[String]) -> Result<()> {
    let given: Vec<String> = fixed
        .iter()
        .filter(|f| explicit.iter().any(|e| e == *f))
        .map(|f| format!("--{}", f.replace('_', "-")))
        .collect();
    if !given.is_empty() {
        let one = given.len() == 1;
        bail!(
            "{} come{} from the checkpoint a resumed run continues; drop {} to resume, or start a new run",
            given.join(", "),
            if one { "s" } else { "" },
            if one { "it" } else { "them" }
        );
    }
    Ok(())
}

/// The run folder of a task's training session: `--out`, else the folder of the checkpoint a
/// resumed run continues, else the first free `runs/<task>`, `runs/<task>-2`, …; a new run
/// refuses a folder holding another run's checkpoints unless `overwrite`.
pub fn claim_run_dir(
    out: Option<&std::path::Path>,
    resume: Option<&std::path::Path>,
    task: &str,
    overwrite: bool,
) -> Result<recur::train::RunDir> {
    use recur::train::RunDir;
    let dir = match (out, resume) {
        (Some(out), _) => RunDir::claim_exact(out)?,
        (None, Some(r)) => {
            RunDir::claim_exact(r.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(std::path::Path::new(".")))?
        }
        (None, None) => RunDir::claim_next_free(std::path::Path::new("runs"), task)?,
    };
    if resume.is_none() && recur::train::holds_run(dir.path()) && !overwrite {
        bail!(
            "{} already holds a run's checkpoints; continue it with --resume, pick another --out, or pass --overwrite",
            dir.path().display()
        );
    }
    Ok(dir)
}
