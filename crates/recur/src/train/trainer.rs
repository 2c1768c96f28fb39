//! The training loop every task runs: batches from a [`DataSource`], the [`Model`]'s loss,
//! backward, clipping, the optimizer and schedule ([`Optimization`]), periodic evaluation, the
//! run folder's files (`last.safetensors`, `best.safetensors`, `metrics.jsonl`, `loss.svg`),
//! early stopping, limits on steps, epochs and time, a divergence guard that never saves a
//! diverged model, and resumption that continues bit for bit.
//!
//! It never prints: it reports [`TrainEvent`]s to a callback, and a stop is a flag the caller
//! sets (from a signal handler, say). A task is a model, a data source and a thin command.
//!
//! The loop, per step: the batch `position` of epoch `epoch` from the data source; the model's
//! loss in training mode; a diverged loss stops the run (the last good checkpoint stays); backward,
//! clip, optimizer step (a non-finite gradient norm stops the run too); the schedule. Every
//! `eval_every` steps, at `max_steps` and when the run stops on a limit, the model is evaluated:
//! a row in `metrics.jsonl`, the plot, `last.safetensors`, and `best.safetensors` when the
//! monitored metric improved (or when there is no validation). A fresh run first evaluates the
//! untrained model (step 0; its training loss is the first batch's, before any update).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use candle_core::{DType, Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::plot::{LinePlot, Series};
use crate::train::{load_params, write_file_atomic, LrSchedule, Optimization, OptimizerConfig, RunDir, TaskCheckpoint};
use crate::{Error, Result, State};

/// Named results of an evaluation, e.g. `{"loss": 1.70}`. Values must be finite.
pub type Metrics = BTreeMap<String, f64>;

/// What the trainer needs of a model: its parameters, a loss per batch, an evaluation, and the
/// state it carries between batches where it has one. As small as candle's `Module`.
pub trait Model {
    /// One training batch.
    type Batch;
    /// The trainable variables under their checkpoint (PyTorch) names.
    fn vars(&self) -> Vec<(String, Var)>;
    /// Training mode (dropout on) or evaluation mode.
    fn set_training(&self, training: bool);
    /// The mean loss of one batch in training mode: a scalar whose backward reaches the
    /// variables. A model that carries state (truncated BPTT) starts from it and keeps the new
    /// one, detached.
    fn loss(&mut self, batch: &Self::Batch) -> Result<Tensor>;
    /// Validation metrics of the current parameters (`None` without validation data). They must
    /// include the metric the trainer monitors (`loss` by default).
    fn evaluate(&mut self) -> Result<Option<Metrics>>;
    /// The state carried from one batch to the next, saved in checkpoints.
    fn carried(&self) -> Option<State> {
        None
    }
    /// Restores the carried state, or clears it (`None`) at the start of every epoch.
    fn set_carried(&mut self, _state: Option<State>) {}
    /// The position of the model's own dropout generator, saved in checkpoints.
    fn generator_state(&self) -> Option<u128> {
        None
    }
    /// Restores [`Model::generator_state`].
    fn set_generator_state(&mut self, _state: u128) {}
}

/// Training batches, addressed by epoch and position so that a resumed run reads exactly the
/// batches an uninterrupted one would (a shuffled source seeds its order by the epoch).
pub trait DataSource {
    /// One batch.
    type Batch;
    /// Batches in one pass over the training data (at least 1).
    fn batches_per_epoch(&self) -> usize;
    /// Batch `index` of pass `epoch`.
    fn batch(&self, epoch: usize, index: usize) -> Result<Self::Batch>;
    /// Items (tokens, characters, sequences) per batch, for throughput.
    fn items_per_batch(&self) -> usize;
}

fn default_monitor() -> String {
    "loss".to_string()
}

/// The loop's configuration, saved in every checkpoint.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainerConfig {
    /// Stop after this many optimizer steps.
    pub max_steps: usize,
    /// Evaluate, log and checkpoint every this many steps.
    pub eval_every: usize,
    /// Clip the gradients' global L2 norm to this (0: no clipping).
    pub grad_clip: f64,
    /// The optimizer.
    pub optimizer: OptimizerConfig,
    /// The learning-rate schedule.
    pub schedule: LrSchedule,
    /// The evaluation metric that decides `best.safetensors`, early stopping and a plateau
    /// schedule.
    #[serde(default = "default_monitor")]
    pub monitor: String,
    /// Whether a higher monitored metric is better (accuracy) rather than a lower one (loss).
    #[serde(default)]
    pub maximize: bool,
    /// Early stopping: stop after this many evaluations without an improvement.
    #[serde(default)]
    pub patience: Option<usize>,
    /// A training or validation loss above this means the run diverged.
    #[serde(default)]
    pub divergence_loss: Option<f64>,
}

impl TrainerConfig {
    /// `max_steps` steps of `optimizer` on `schedule`, evaluating every `eval_every`, clipping at
    /// 5, monitoring the validation loss, no early stopping, no divergence threshold.
    pub fn new(max_steps: usize, eval_every: usize, optimizer: OptimizerConfig, schedule: LrSchedule) -> Self {
        Self {
            max_steps,
            eval_every,
            grad_clip: 5.0,
            optimizer,
            schedule,
            monitor: default_monitor(),
            maximize: false,
            patience: None,
            divergence_loss: None,
        }
    }

    fn check(&self) -> Result<()> {
        for (name, value) in [("max_steps", self.max_steps), ("eval_every", self.eval_every)] {
            if value == 0 {
                return Err(Error::config(
                    "Trainer",
                    format!("{name} must be at least 1"),
                    format!("pass a positive {name}"),
                ));
            }
        }
        if self.patience == Some(0) {
            return Err(Error::config("Trainer", "patience must be at least 1", "pass a positive patience, or none"));
        }
        Ok(())
    }
}

/// One evaluation in a run's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryRow {
    /// The step evaluated.
    pub step: usize,
    /// The mean training loss over the steps since the previous row (step 0: the first batch's,
    /// before any update; `None` when no step was taken).
    pub train_loss: Option<f64>,
    /// The validation metrics.
    pub metrics: Metrics,
}

/// Where a run stands; saved in every checkpoint.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    /// Optimizer steps taken.
    pub step: usize,
    /// Completed passes over the training data.
    pub epoch: usize,
    /// The next batch of the current pass.
    pub position: usize,
    /// Items trained on.
    pub items: u64,
    /// The best value of the monitored metric so far, and its step.
    pub best: Option<f64>,
    /// The step of `best`.
    pub best_step: Option<usize>,
    /// Evaluations since `best` improved (early stopping).
    pub evals_since_best: usize,
    /// Training time over every session, in seconds.
    pub elapsed_s: f64,
    /// Every evaluation.
    pub history: Vec<HistoryRow>,
    /// Sum of the training losses since the last evaluation.
    pub window_sum: f64,
    /// Their count.
    pub window_count: usize,
}

/// Limits of one session (not saved: a resumed run sets its own).
#[derive(Clone, Copy, Debug, Default)]
pub struct Limits<'a> {
    /// Stop after this many passes over the training data.
    pub max_epochs: Option<usize>,
    /// Stop after this much time in this session.
    pub time_budget: Option<Duration>,
    /// Stop after the current step when this becomes true (saving `last.safetensors`).
    pub stop: Option<&'a AtomicBool>,
}

/// Why a run stopped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopReason {
    /// It reached `max_steps`.
    MaxSteps,
    /// It reached [`Limits::max_epochs`].
    MaxEpochs,
    /// It used up [`Limits::time_budget`].
    TimeBudget,
    /// The monitored metric did not improve for `patience` evaluations.
    EarlyStopping,
    /// The caller's stop flag.
    Requested,
}

impl StopReason {
    /// A short description, e.g. `reached max_steps`.
    pub fn describe(self) -> &'static str {
        match self {
            StopReason::MaxSteps => "reached max_steps",
            StopReason::MaxEpochs => "reached max_epochs",
            StopReason::TimeBudget => "reached the time budget",
            StopReason::EarlyStopping => "early stopping: no improvement for `patience` evaluations",
            StopReason::Requested => "stopped on request",
        }
    }
}

/// What the loop reports, as it happens.
#[derive(Clone, Debug)]
pub enum TrainEvent<'a> {
    /// An optimizer step was taken.
    Step(&'a Progress),
    /// The model was evaluated at `progress.step` (also a row of `metrics.jsonl`).
    Evaluated {
        /// Where the run is.
        progress: &'a Progress,
        /// The evaluation.
        row: &'a HistoryRow,
        /// Whether the monitored metric improved (so `best.safetensors` was written).
        improved: bool,
    },
    /// A checkpoint was written.
    Saved {
        /// The file.
        path: &'a Path,
        /// The step it holds.
        step: usize,
    },
}

/// Where a run is, with its speed.
#[derive(Clone, Debug, PartialEq)]
pub struct Progress {
    /// Steps taken.
    pub step: usize,
    /// `max_steps`.
    pub max_steps: usize,
    /// Completed epochs.
    pub epoch: usize,
    /// This step's training loss (for an evaluation: the mean since the previous one).
    pub loss: f64,
    /// The best monitored metric so far.
    pub best: Option<f64>,
    /// The learning rate now.
    pub lr: f64,
    /// The last step's gradient norm before clipping.
    pub grad_norm: Option<f64>,
    /// Items per second in this session.
    pub items_per_s: f64,
    /// Time left by the steps left at this speed, capped by the time budget.
    pub eta: Option<Duration>,
}

/// How a run ended (a diverged run ends with [`Error::Diverged`] instead).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outcome {
    /// Why it stopped.
    pub reason: StopReason,
    /// Steps taken in this session.
    pub steps: usize,
}

/// What identifies a task's checkpoints: its name, the model's configuration and its data schema.
#[derive(Clone, Debug, PartialEq)]
pub struct TaskInfo {
    /// The task's name, e.g. `char-lm`.
    pub name: String,
    /// The model's configuration (serde form).
    pub model: Value,
    /// The data the model needs to be used (vocabulary, labels…).
    pub data: Value,
}

/// The training loop over a model and a data source, writing into a run folder it owns.
pub struct Trainer<M: Model, D: DataSource<Batch = M::Batch>> {
    config: TrainerConfig,
    task: TaskInfo,
    model: M,
    data: D,
    optimization: Optimization,
    run: RunState,
    dir: RunDir,
    metrics: File,
    start_step: usize,
    last_norm: Option<f64>,
    started: Instant,
}

impl<M: Model, D: DataSource<Batch = M::Batch>> Trainer<M, D> {
    /// A fresh run in `dir` (whose previous run files, if any, are removed: the caller decides
    /// whether a folder may be reused).
    pub fn new(config: TrainerConfig, task: TaskInfo, model: M, data: D, dir: RunDir) -> Result<Self> {
        config.check()?;
        if data.batches_per_epoch() == 0 {
            return Err(Error::data("training data", "no batch in an epoch", "use more data or smaller batches"));
        }
        dir.remove_stale_temp_files()?;
        dir.clear_previous_run()?;
        let optimization = Optimization::new(model.vars(), &config.optimizer, &config.schedule, config.grad_clip)?;
        let metrics = open_metrics(&dir.path().join("metrics.jsonl"), None)?;
        Ok(Self {
            config,
            task,
            model,
            data,
            optimization,
            run: RunState::default(),
            dir,
            metrics,
            start_step: 0,
            last_norm: None,
            started: Instant::now(),
        })
    }

    /// Continues the run saved in `ckpt`, in `dir`: the parameters, optimizer, schedule, run
    /// state, carried state and generator come from the checkpoint; `config` may differ from the
    /// checkpoint's in `max_steps`, `eval_every`, `patience` (the caller checks the rest). Rows of
    /// `metrics.jsonl` past the checkpoint's step (logged by a run killed after them) are dropped.
    pub fn resume(config: TrainerConfig, ckpt: &TaskCheckpoint, model: M, data: D, dir: RunDir) -> Result<Self> {
        config.check()?;
        dir.remove_stale_temp_files()?;
        let mut model = model;
        let vars = model.vars();
        load_params(&ckpt.params, &vars, false)?;
        let mut optimization = Optimization::new(vars, &config.optimizer, &config.schedule, config.grad_clip)?;
        match (&ckpt.optimizer, &ckpt.schedule) {
            (Some(o), Some(s)) => optimization.restore(o, s)?,
            _ => {
                return Err(Error::checkpoint(
                    &ckpt.task,
                    "it holds no optimizer or schedule state, so the run cannot continue exactly",
                    "resume from a checkpoint written during training",
                ))
            }
        }
        model.set_carried(ckpt.carried.clone());
        if let Some(g) = ckpt.generator {
            model.set_generator_state(g);
        }
        let metrics = open_metrics(&dir.path().join("metrics.jsonl"), Some(ckpt.run.step))?;
        Ok(Self {
            config,
            task: TaskInfo { name: ckpt.task.clone(), model: ckpt.model.clone(), data: ckpt.data.clone() },
            model,
            data,
            optimization,
            run: ckpt.run.clone(),
            dir,
            metrics,
            start_step: ckpt.run.step,
            last_norm: None,
            started: Instant::now(),
        })
    }

    /// The model.
    pub fn model(&self) -> &M {
        &self.model
    }

    /// The run folder.
    pub fn dir(&self) -> &RunDir {
        &self.dir
    }

    /// Where the run stands.
    pub fn state(&self) -> &RunState {
        &self.run
    }

    /// The configuration.
    pub fn config(&self) -> &TrainerConfig {
        &self.config
    }

    /// The optimizer, schedule and clipping.
    pub fn optimization(&self) -> &Optimization {
        &self.optimization
    }

    /// `last.safetensors` of the run folder.
    pub fn last_path(&self) -> PathBuf {
        self.dir.path().join("last.safetensors")
    }

    /// `best.safetensors` of the run folder.
    pub fn best_path(&self) -> PathBuf {
        self.dir.path().join("best.safetensors")
    }

    fn progress(&self, loss: f64) -> Progress {
        let elapsed = self.started.elapsed().as_secs_f64();
        let done = self.run.step - self.start_step;
        let items = done as f64 * self.data.items_per_batch() as f64;
        let eta = (done > 0).then(|| {
            let left = self.config.max_steps.saturating_sub(self.run.step) as f64;
            Duration::from_secs_f64(elapsed / done as f64 * left)
        });
        Progress {
            step: self.run.step,
            max_steps: self.config.max_steps,
            epoch: self.run.epoch,
            loss,
            best: self.run.best,
            lr: self.optimization.lr(),
            grad_norm: self.last_norm,
            items_per_s: items / elapsed.max(1e-9),
            eta,
        }
    }

    /// The task checkpoint of the current state.
    pub fn checkpoint(&self) -> Result<TaskCheckpoint> {
        let (optimizer, schedule) = self.optimization.state()?;
        let run = RunState { elapsed_s: self.run.elapsed_s + self.started.elapsed().as_secs_f64(), ..self.run.clone() };
        Ok(TaskCheckpoint {
            task: self.task.name.clone(),
            model: self.task.model.clone(),
            data: self.task.data.clone(),
            trainer: self.config.clone(),
            run,
            params: self.model.vars().into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect(),
            optimizer: Some(optimizer),
            schedule: Some(schedule),
            carried: self.model.carried(),
            generator: self.model.generator_state(),
            recur_version: crate::VERSION.to_string(),
        })
    }

    fn save(&self, path: &Path, on_event: &mut dyn FnMut(&TrainEvent<'_>, &M) -> Result<()>) -> Result<()> {
        let ckpt = self.checkpoint()?.to_checkpoint()?;
        save_task_checkpoint(path, &ckpt)?;
        on_event(&TrainEvent::Saved { path, step: self.run.step }, &self.model)
    }

    fn diverged(&self, what: &'static str, value: f64) -> Error {
        let last = self.last_path();
        let kept = match crate::train::Checkpoint::load(&last) {
            Ok(ckpt) => format!("the last good checkpoint is {} at step {}, kept as it was", last.display(), ckpt.step),
            Err(_) => "no checkpoint was written".to_string(),
        };
        Error::Diverged {
            step: self.run.step + 1,
            what,
            value,
            threshold: self.config.divergence_loss.unwrap_or(f64::INFINITY),
            kept,
        }
    }

    fn is_diverged(&self, loss: f64) -> bool {
        !(loss.is_finite() && self.config.divergence_loss.is_none_or(|t| loss <= t))
    }

    /// Evaluates the model now and records it: a row in `metrics.jsonl`, the plot, the
    /// checkpoints. Returns whether the monitored metric improved.
    fn record(
        &mut self,
        train_loss: Option<f64>,
        on_event: &mut dyn FnMut(&TrainEvent<'_>, &M) -> Result<()>,
    ) -> Result<bool> {
        self.model.set_training(false);
        let metrics = self.model.evaluate();
        self.model.set_training(true);
        let metrics = metrics?;
        let monitored = match &metrics {
            Some(m) => Some(*m.get(&self.config.monitor).ok_or_else(|| {
                Error::config(
                    "Trainer",
                    format!(
                        "the evaluation has no metric {:?} (it has {:?})",
                        self.config.monitor,
                        m.keys().collect::<Vec<_>>()
                    ),
                    "monitor a metric the model's evaluate returns",
                )
            })?),
            None => None,
        };
        if let Some(m) = &metrics {
            if let Some((_, &v)) = m.iter().find(|(_, v)| !v.is_finite()) {
                return Err(self.diverged("a validation metric was", v));
            }
            if let Some(loss) = m.get("loss").copied().filter(|&l| self.is_diverged(l)) {
                return Err(self.diverged("the validation loss was", loss));
            }
        }
        let step = self.run.step;
        if step > 0 {
            // Step 0 (the untrained model) is not a metric a plateau schedule reacts to.
            self.optimization.evaluated(monitored)?;
        }
        let improved =
            monitored.is_some_and(|v| self.run.best.is_none_or(|b| if self.config.maximize { v > b } else { v < b }));
        if improved {
            self.run.best = monitored;
            self.run.best_step = Some(step);
            self.run.evals_since_best = 0;
        } else if step > 0 {
            self.run.evals_since_best += 1;
        }
        let row = HistoryRow { step, train_loss, metrics: metrics.unwrap_or_default() };
        self.run.history.push(row.clone());
        let progress = self.progress(train_loss.unwrap_or(f64::NAN));
        let line = metrics_line(&row, &self.run, &progress, self.run.elapsed_s + self.started.elapsed().as_secs_f64());
        writeln!(self.metrics, "{line}").map_err(|e| {
            Error::io("cannot write", self.dir.path().join("metrics.jsonl"), e, "check the disk's free space")
        })?;
        self.write_plot()?;
        self.save(&self.last_path(), on_event)?;
        if improved || monitored.is_none() {
            self.save(&self.best_path(), on_event)?;
        }
        on_event(&TrainEvent::Evaluated { progress: &progress, row: &row, improved }, &self.model)?;
        Ok(improved)
    }

    fn write_plot(&self) -> Result<()> {
        let mut plot = LinePlot::new(self.task.name.clone(), "step", "loss");
        plot.x_integer = true;
        plot.note = Some("train: mean over the steps since the previous point (step 0: the first batch)".into());
        let train: Vec<(f64, f64)> =
            self.run.history.iter().filter_map(|r| r.train_loss.map(|l| (r.step as f64, l))).collect();
        plot.series.push(Series::new("train", train));
        let val: Vec<(f64, f64)> =
            self.run.history.iter().filter_map(|r| r.metrics.get("loss").map(|&v| (r.step as f64, v))).collect();
        if !val.is_empty() {
            plot.series.push(Series::new("validation", val));
        }
        write_file_atomic(&self.dir.path().join("loss.svg"), plot.to_svg().as_bytes())
    }

    /// Evaluates at the current step with the mean training loss since the last evaluation.
    fn evaluate_now(&mut self, on_event: &mut dyn FnMut(&TrainEvent<'_>, &M) -> Result<()>) -> Result<bool> {
        let train = (self.run.window_count > 0).then(|| self.run.window_sum / self.run.window_count as f64);
        self.run.window_sum = 0.0;
        self.run.window_count = 0;
        self.record(train, on_event)
    }

    /// Trains until `max_steps`, a limit, early stopping or the stop flag. Errors stop it too;
    /// [`Error::Diverged`] when it diverged, with the last good checkpoint left on disk.
    pub fn run(
        &mut self,
        limits: &Limits<'_>,
        on_event: &mut dyn FnMut(&TrainEvent<'_>, &M) -> Result<()>,
    ) -> Result<Outcome> {
        self.started = Instant::now();
        self.start_step = self.run.step;
        self.model.set_training(true);
        let windows = self.data.batches_per_epoch();
        let items = self.data.items_per_batch() as u64;
        // A fresh run evaluates the untrained model once it knows the first batch's loss.
        let mut step0 = self.run.step == 0 && self.run.history.is_empty();
        let mut reason = StopReason::MaxSteps;
        let mut requested = false;
        while self.run.step < self.config.max_steps {
            if limits.stop.is_some_and(|s| s.load(Ordering::SeqCst)) {
                requested = true;
                break;
            }
            if limits.max_epochs.is_some_and(|max| self.run.epoch >= max) {
                reason = StopReason::MaxEpochs;
                break;
            }
            if limits.time_budget.is_some_and(|t| self.started.elapsed() >= t) {
                reason = StopReason::TimeBudget;
                break;
            }
            let batch = self.data.batch(self.run.epoch, self.run.position)?;
            let loss = self.model.loss(&batch)?;
            let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if step0 {
                step0 = false;
                // The first batch's loss under the initial parameters: step 0's training loss.
                self.record(Some(value), on_event)?;
            }
            if self.is_diverged(value) {
                return Err(self.diverged("the training loss was", value));
            }
            let Some(norm) = self.optimization.step(&loss)? else {
                return Err(self.diverged("the gradients' norm was", f64::INFINITY));
            };
            self.last_norm = Some(norm);
            self.run.step += 1;
            self.run.items += items;
            self.run.position += 1;
            if self.run.position >= windows {
                self.run.position = 0;
                self.run.epoch += 1;
                self.model.set_carried(None);
            }
            self.run.window_sum += value;
            self.run.window_count += 1;
            let progress = self.progress(value);
            on_event(&TrainEvent::Step(&progress), &self.model)?;
            if self.run.step.is_multiple_of(self.config.eval_every) || self.run.step == self.config.max_steps {
                self.evaluate_now(on_event)?;
                if self.config.patience.is_some_and(|p| self.run.evals_since_best >= p) {
                    reason = StopReason::EarlyStopping;
                    break;
                }
            }
        }
        let steps = self.run.step - self.start_step;
        if requested {
            self.save(&self.last_path(), on_event)?;
            return Ok(Outcome { reason: StopReason::Requested, steps });
        }
        if step0 {
            // Stopped before the first step: the untrained model is what there is.
            self.record(None, on_event)?;
        }
        if self.run.window_count > 0 {
            // The final model, evaluated once more unless its step was just evaluated.
            self.evaluate_now(on_event)?;
        }
        Ok(Outcome { reason, steps })
    }
}

/// Saves with the test hook `RECUR_TEST_WRITE_DELAY_MS`: milliseconds to sleep before each
/// 4 KiB written, so that fault-injection tests can kill a process inside a save. Unset (always,
/// outside such tests), a plain [`crate::train::save_checkpoint`].
fn save_task_checkpoint(path: &Path, ckpt: &crate::train::Checkpoint) -> Result<()> {
    let delay =
        std::env::var("RECUR_TEST_WRITE_DELAY_MS").ok().and_then(|v| v.parse::<u64>().ok()).filter(|&ms| ms > 0);
    match delay {
        Some(ms) => crate::train::save_checkpoint_with_hook(path, ckpt, &mut |_| {
            std::thread::sleep(Duration::from_millis(ms));
            Ok(())
        }),
        None => crate::train::save_checkpoint(path, ckpt),
    }
}

/// One row of `metrics.jsonl`: step, epoch, items (as `tokens`), the training loss, each
/// validation metric as `val_NAME`, the rate, the gradient norm, throughput and time, in this
/// order (`null` for what was not measured).
fn metrics_line(row: &HistoryRow, run: &RunState, p: &Progress, elapsed_s: f64) -> String {
    let num = |v: Option<f64>| v.filter(|v| v.is_finite()).map_or("null".to_string(), |v| format!("{v}"));
    let mut line = format!(
        "{{\"step\":{},\"epoch\":{},\"tokens\":{},\"train_loss\":{}",
        row.step,
        run.epoch,
        run.items,
        num(row.train_loss)
    );
    if row.metrics.is_empty() {
        line.push_str(",\"val_loss\":null");
    }
    for (name, v) in &row.metrics {
        line.push_str(&format!(",{}:{}", Value::String(format!("val_{name}")), num(Some(*v))));
    }
    line.push_str(&format!(
        ",\"lr\":{},\"grad_norm\":{},\"tokens_per_s\":{},\"elapsed_s\":{}}}",
        num(Some(p.lr)),
        num(p.grad_norm),
        num(Some(p.items_per_s)),
        num(Some(elapsed_s))
    ));
    line
}

/// Opens `metrics.jsonl` for appending: a fresh run (`resumed_at` none) starts it empty; a
/// resumed one keeps exactly the rows up to its checkpoint's step.
fn open_metrics(path: &Path, resumed_at: Option<usize>) -> Result<File> {
    let kept = match (resumed_at, std::fs::read_to_string(path)) {
        (Some(step), Ok(text)) => text
            .lines()
            .filter(|line| {
                serde_json::from_str::<Value>(line)
                    .ok()
                    .and_then(|row| row.get("step").and_then(Value::as_u64))
                    .is_some_and(|s| s as usize <= step)
            })
            .map(|line| format!("{line}\n"))
            .collect::<String>(),
        _ => String::new(),
    };
    write_file_atomic(path, kept.as_bytes())?;
    std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .map_err(|e| Error::io("cannot open", path, e, "check the folder's permissions"))
}
