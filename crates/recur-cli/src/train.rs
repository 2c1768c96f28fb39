//! `recur train`: a character-level language model on the embedded corpus or any UTF-8 text,
//! trained with truncated BPTT over contiguous streams.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device};
use candle_nn::VarMap;
use clap::Args;
use rand::SeedableRng;
use recur::models::{CellType, CharLm, CharLmConfig, Sampling};
use recur::plot::{LinePlot, Series};
use recur::State;
use serde_json::Value;

use crate::checkpoint::{self, RunState, TaskCheckpoint, TextInfo};
use crate::console::{self, say};
use crate::corpus::{self, Corpus};
use crate::interrupt;
use crate::progress::{self, plural, Progress, Snapshot, Style};
use crate::rundir::{self, RunDir};
use crate::streams::{evaluate, Streams};
use crate::toolkit::{self, Trainer};
use crate::Stopped;

/// Flags of `recur train`, grouped like char-rnn's.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// UTF-8 text to train on (default: eight Shakespeare plays, embedded).
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    pub text: Option<PathBuf>,
    /// Fraction of the text, taken from its end, used for validation.
    #[arg(long, default_value_t = 0.05, help_heading = "Data")]
    pub val_fraction: f64,

    /// Recurrent cell.
    #[arg(long, default_value = "lstm", value_parser = parse_cell, help_heading = "Model")]
    pub cell: CellType,
    /// Size of the hidden state.
    #[arg(long, default_value_t = 256, help_heading = "Model")]
    pub hidden_size: usize,
    /// Recurrent layers.
    #[arg(long, default_value_t = 2, help_heading = "Model")]
    pub num_layers: usize,
    /// Size of a character's embedding.
    #[arg(long, default_value_t = 64, help_heading = "Model")]
    pub embedding_size: usize,
    /// Dropout between recurrent layers.
    #[arg(long, default_value_t = 0.0, help_heading = "Model")]
    pub dropout: f64,

    /// Characters per truncated-BPTT window.
    #[arg(long, default_value_t = 64, help_heading = "Optimization")]
    pub seq_len: usize,
    /// Streams read side by side.
    #[arg(long, default_value_t = 32, help_heading = "Optimization")]
    pub batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 2e-3, help_heading = "Optimization")]
    pub lr: f64,
    /// Optimizer: adam, adamw, sgd, rmsprop, adagrad.
    #[arg(long, default_value = "adam", help_heading = "Optimization")]
    pub optimizer: String,
    /// Learning-rate schedule: constant, cosine, step, exponential, plateau.
    #[arg(long, default_value = "cosine", help_heading = "Optimization")]
    pub lr_schedule: String,
    /// Clip the gradients' global norm to this (0: no clipping).
    #[arg(long, default_value_t = 5.0, help_heading = "Optimization")]
    pub grad_clip: f64,

    /// Stop after this many steps [default: 700; with --resume, the checkpoint's].
    #[arg(long, help_heading = "Run")]
    pub max_steps: Option<usize>,
    /// Stop after this many passes over the training text.
    #[arg(long, help_heading = "Run")]
    pub max_epochs: Option<usize>,
    /// Stop after this much time: seconds, or with a unit (90s, 3m, 1h).
    #[arg(long, value_parser = parse_duration, default_value = "170s", help_heading = "Run")]
    pub time_budget: Duration,
    /// Evaluate, log and checkpoint every this many steps.
    #[arg(long, default_value_t = 50, help_heading = "Run")]
    pub eval_every: usize,
    /// Print a sample every this many steps (0: only at the end).
    #[arg(long, default_value_t = 200, help_heading = "Run")]
    pub sample_every: usize,
    /// Seed of initialisation, dropout and sampling.
    #[arg(long, default_value_t = 1234, help_heading = "Run")]
    pub seed: u64,
    /// Threads of the kernels (default: all cores).
    #[arg(long, help_heading = "Run")]
    pub threads: Option<usize>,
    /// Continue the run saved in this checkpoint (model and run flags come from it).
    #[arg(long, value_name = "CHECKPOINT", help_heading = "Run")]
    pub resume: Option<PathBuf>,

    /// Folder for checkpoints (best.safetensors, last.safetensors), metrics.jsonl and loss.svg
    /// [default: the first of runs/char-lm, runs/char-lm-2, … that holds no run; with --resume,
    /// the checkpoint's folder].
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Let a new run replace the checkpoints already in --out.
    #[arg(long, help_heading = "Output")]
    pub overwrite: bool,
    /// Only the essentials: no progress line, no samples during training.
    #[arg(long, short, help_heading = "Output")]
    pub quiet: bool,
}

fn parse_cell(s: &str) -> Result<CellType, String> {
    s.parse().map_err(|e: recur::Error| e.to_string())
}

/// `90`, `90s`, `3m`, `1h`, `1.5m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let value: f64 = number.parse().map_err(|_| format!("{s:?} is not a duration like 90s, 3m or 1h"))?;
    let scale = match unit {
        "s" => 1.0,
        "m" | "min" => 60.0,
        "h" => 3600.0,
        other => return Err(format!("unknown unit {other:?} in {s:?}; use s, m or h")),
    };
    if !(value.is_finite() && value > 0.0) {
        return Err(format!("the duration must be positive, got {s:?}"));
    }
    Ok(Duration::from_secs_f64(value * scale))
}

/// Steps of a run when `--max-steps` is not given.
const DEFAULT_MAX_STEPS: usize = 700;

/// Everything about a run that a checkpoint must carry to resume it.
#[derive(Clone, Debug, PartialEq)]
pub struct RunConfig {
    pub model: CharLmConfig,
    pub seq_len: usize,
    pub batch_size: usize,
    pub lr: f64,
    pub optimizer: String,
    pub lr_schedule: String,
    pub grad_clip: f64,
    pub max_steps: usize,
    /// The horizon of the learning-rate schedule: the first run's `max_steps`, kept when a
    /// resumed run raises `--max-steps`, so the rate does not jump.
    pub schedule_steps: usize,
    pub val_fraction: f64,
    pub seed: u64,
    pub eval_every: usize,
}

impl RunConfig {
    fn from_args(args: &TrainArgs, vocab_size: usize) -> Result<Self> {
        for (flag, value) in [
            ("--hidden-size", args.hidden_size),
            ("--num-layers", args.num_layers),
            ("--embedding-size", args.embedding_size),
            ("--seq-len", args.seq_len),
            ("--batch-size", args.batch_size),
            ("--max-steps", args.max_steps.unwrap_or(DEFAULT_MAX_STEPS)),
            ("--eval-every", args.eval_every),
        ] {
            if value == 0 {
                bail!("{flag} must be at least 1");
            }
        }
        toolkit::check_names(&args.optimizer, &args.lr_schedule)?;
        if !(args.lr.is_finite() && args.lr > 0.0) {
            bail!("--lr must be a positive number, got {}", args.lr);
        }
        if !(0.0..1.0).contains(&args.dropout) {
            bail!("--dropout must be in [0, 1), got {}", args.dropout);
        }
        if !(args.grad_clip.is_finite() && args.grad_clip >= 0.0) {
            bail!("--grad-clip must be 0 (off) or positive, got {}", args.grad_clip);
        }
        Ok(Self {
            model: CharLmConfig {
                vocab_size,
                cell: args.cell,
                embedding_size: args.embedding_size,
                hidden_size: args.hidden_size,
                num_layers: args.num_layers,
                dropout: args.dropout,
            },
            seq_len: args.seq_len,
            batch_size: args.batch_size,
            lr: args.lr,
            optimizer: args.optimizer.clone(),
            lr_schedule: args.lr_schedule.clone(),
            grad_clip: args.grad_clip,
            max_steps: args.max_steps.unwrap_or(DEFAULT_MAX_STEPS),
            schedule_steps: args.max_steps.unwrap_or(DEFAULT_MAX_STEPS),
            val_fraction: args.val_fraction,
            seed: args.seed,
            eval_every: args.eval_every,
        })
    }
}

/// Makes `--threads` bound every pool of threads the run uses: Recur's kernels, rayon's global
/// pool (the optimizers' chunks) and candle's CPU ops (its matrix products and its element-wise
/// thread pool). Rayon and candle read `RAYON_NUM_THREADS` when they first start their threads,
/// which no tensor op has done yet. Without it `--threads 1` still left candle's pool at the
/// machine's core count (a second, spinning thread on a 2-core machine; by candle's code, one per
/// core on a bigger one).
fn limit_threads(threads: usize) {
    // Only the signal watcher runs besides this thread now, and it reads no environment.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    recur::set_num_threads(threads);
}

/// `--threads`, checked and capped at the machine's cores (more threads than cores only wait on
/// each other: 10000 of them never finished three tiny steps).
fn thread_count(requested: usize) -> Result<usize> {
    if requested == 0 {
        bail!("--threads must be at least 1");
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    if requested > cores {
        console::warn(format_args!("--threads {requested} is more than this machine's {cores} cores; using {cores}"));
        return Ok(cores);
    }
    Ok(requested)
}

/// "N threads" for the start-up line, naming candle's count too when it differs from the kernels'.
fn thread_counts() -> String {
    let (kernels, candle) = (recur::num_threads(), candle_core::utils::get_num_threads());
    if kernels == candle {
        format!("{kernels} threads")
    } else {
        format!("{kernels} threads (candle's ops: {candle})")
    }
}

/// A loss above this many nats per character means the run diverged: ten times what a uniform
/// guess over the vocabulary costs (`ln V`; at least 10 nats). A model that bad puts less than
/// `V^-10` on the right character; no learning run passes through it.
fn divergence_threshold(vocab_size: usize) -> f64 {
    10.0 * (vocab_size as f64).ln().max(1.0)
}

/// The flags a resumed run takes from its checkpoint, each with the value there and here; the
/// ones given on the command line must agree.
fn contradictions(ckpt: &RunConfig, args: &TrainArgs, explicit: &[String]) -> Vec<String> {
    let m = &ckpt.model;
    let rows: [(&str, &str, String, String); 13] = [
        ("cell", "--cell", m.cell.name().to_string(), args.cell.name().to_string()),
        ("hidden_size", "--hidden-size", m.hidden_size.to_string(), args.hidden_size.to_string()),
        ("num_layers", "--num-layers", m.num_layers.to_string(), args.num_layers.to_string()),
        ("embedding_size", "--embedding-size", m.embedding_size.to_string(), args.embedding_size.to_string()),
        ("dropout", "--dropout", m.dropout.to_string(), args.dropout.to_string()),
        ("seq_len", "--seq-len", ckpt.seq_len.to_string(), args.seq_len.to_string()),
        ("batch_size", "--batch-size", ckpt.batch_size.to_string(), args.batch_size.to_string()),
        ("lr", "--lr", ckpt.lr.to_string(), args.lr.to_string()),
        ("optimizer", "--optimizer", ckpt.optimizer.clone(), args.optimizer.clone()),
        ("lr_schedule", "--lr-schedule", ckpt.lr_schedule.clone(), args.lr_schedule.clone()),
        ("grad_clip", "--grad-clip", ckpt.grad_clip.to_string(), args.grad_clip.to_string()),
        ("val_fraction", "--val-fraction", ckpt.val_fraction.to_string(), args.val_fraction.to_string()),
        ("seed", "--seed", ckpt.seed.to_string(), args.seed.to_string()),
    ];
    rows.into_iter()
        .filter(|(id, _, saved, given)| explicit.iter().any(|e| e == id) && saved != given)
        .map(|(_, flag, saved, given)| format!("{flag} {given} (the checkpoint has {saved})"))
        .collect()
}

/// Where a resumed run's text comes from: `--text`, else the file the checkpoint names.
fn resume_text(args: &TrainArgs, ckpt: &TaskCheckpoint) -> Option<PathBuf> {
    if args.text.is_some() {
        return args.text.clone();
    }
    ckpt.text.as_ref().filter(|t| t.name != corpus::DEFAULT_NAME).map(|t| PathBuf::from(&t.name))
}

/// Runs `recur train`. `explicit` names the flags given on the command line (clap's ids).
pub fn run(args: TrainArgs, explicit: &[String]) -> Result<()> {
    if let Some(threads) = args.threads {
        limit_threads(thread_count(threads)?);
    }
    let style = Style::pick(args.quiet);
    let device = Device::Cpu;

    // The checkpoint, the corpus, the run's configuration: all checked before any folder exists.
    let resumed = match &args.resume {
        Some(path) => Some(checkpoint::load(path).with_context(|| format!("cannot resume from {}", path.display()))?),
        None => None,
    };
    let mut notes = Vec::new();
    let (corpus, config) = match &resumed {
        Some(ckpt) => {
            let contradicting = contradictions(&ckpt.config, &args, explicit);
            if !contradicting.is_empty() {
                bail!(
                    "{} contradict{} the checkpoint a resumed run continues with; drop {} to resume, or start a \
                     new run (a new --out) to change {}",
                    contradicting.join(", "),
                    if contradicting.len() == 1 { "s" } else { "" },
                    if contradicting.len() == 1 { "the flag" } else { "those flags" },
                    if contradicting.len() == 1 { "it" } else { "them" },
                );
            }
            let text_path = resume_text(&args, ckpt);
            let corpus = Corpus::load(text_path.as_deref()).with_context(|| match (&args.text, &text_path) {
                (None, Some(_)) => "the checkpoint names this file as its training text; pass --text".to_string(),
                _ => "cannot read the training text".to_string(),
            })?;
            if ckpt.vocab != corpus.vocab {
                bail!(
                    "the checkpoint's vocabulary ({} characters) differs from that of {} ({} characters); resume \
                     on the text it was trained on{}",
                    ckpt.vocab.len(),
                    corpus.name,
                    corpus.vocab.len(),
                    ckpt.text.as_ref().map_or(String::new(), |t| format!(" ({})", t.name))
                );
            }
            if let Some(saved) = &ckpt.text {
                if saved.crc32 != corpus.crc32_hex() {
                    console::warn(format_args!(
                        "{} ({} characters, crc32 {}) is not the text this run was trained on ({}, {} characters, \
                         crc32 {}); its characters are the same, so training goes on, on the new text",
                        corpus.name,
                        corpus.ids.len(),
                        corpus.crc32_hex(),
                        saved.name,
                        saved.chars,
                        saved.crc32
                    ));
                }
            }
            let mut config = ckpt.config.clone();
            if let Some(max) = args.max_steps {
                config.max_steps = max;
            }
            if explicit.iter().any(|e| e == "eval_every") && args.eval_every != config.eval_every {
                if args.eval_every == 0 {
                    bail!("--eval-every must be at least 1");
                }
                notes.push(format!(
                    "evaluating every {} steps (the checkpoint's run: every {})",
                    args.eval_every, config.eval_every
                ));
                config.eval_every = args.eval_every;
            }
            (corpus, config)
        }
        None => {
            let corpus = Corpus::load(args.text.as_deref())?;
            let config = RunConfig::from_args(&args, corpus.vocab.len())?;
            (corpus, config)
        }
    };
    if config.model.dropout > 0.0 && config.model.num_layers == 1 {
        // PyTorch's own warning for nn.LSTM(..., dropout > 0, num_layers=1).
        console::warn(format_args!(
            "dropout adds dropout after all but the last recurrent layer, so non-zero dropout expects num_layers \
             greater than 1, but got dropout={} and num_layers=1: it has no effect",
            config.model.dropout
        ));
    }
    let (train_ids, val_ids) = corpus.split(config.val_fraction, config.batch_size, config.seq_len)?;
    let text = TextInfo { name: corpus.name.clone(), crc32: corpus.crc32_hex(), chars: corpus.ids.len() };

    // The run's folder, owned for as long as this process runs.
    let dir = match (&args.out, &args.resume) {
        (Some(out), _) => RunDir::claim_exact(out)?,
        (None, Some(resume)) => {
            RunDir::claim_exact(resume.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?
        }
        (None, None) => RunDir::claim_next_free(Path::new("runs"), "char-lm")?,
    };
    let same_folder = |ckpt: &Path| {
        let parent = ckpt.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        matches!((parent.canonicalize(), dir.path().canonicalize()), (Ok(a), Ok(b)) if a == b)
    };
    let continues_here = args.resume.as_deref().is_some_and(same_folder);
    if !continues_here && rundir::holds_run(dir.path()) {
        if !args.overwrite {
            bail!(
                "{} already holds a run's checkpoints; continue it with --resume {}, pick another --out, or pass \
                 --overwrite to replace them",
                dir.path().display(),
                dir.path().join("last.safetensors").display()
            );
        }
        dir.clear_previous_run()?;
    }
    let stale = dir.remove_stale_temp_files()?;
    if stale > 0 {
        notes.push(format!("removed {} left by a killed run", plural(stale, "temporary file")));
    }

    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, config.seed, DType::F32, &device);
    let model = CharLm::new(config.model.clone(), vb.clone()).context("cannot build the model")?;
    let mut trainer = Trainer::new(&varmap, &config)?;
    let mut run = RunState::default();
    let mut state: Option<State> = None;
    if let Some(ckpt) = &resumed {
        checkpoint::restore(ckpt, &varmap, &mut trainer)?;
        run = ckpt.run.clone();
        state = ckpt.carried.clone();
        if let Some(position) = ckpt.dropout_state {
            model.rnn().set_dropout_state(position);
        }
        if config.max_steps > config.schedule_steps && trainer.has_horizon() {
            notes.push(format!(
                "the {} schedule keeps its horizon of {} steps; by step {} the learning rate will be {:e}",
                config.lr_schedule,
                config.schedule_steps,
                config.max_steps,
                trainer.final_lr(config.max_steps as u64)
            ));
        }
    }
    model.set_training(true);

    let metrics_path = dir.path().join("metrics.jsonl");
    let metrics = open_metrics(&metrics_path, resumed.is_some().then_some(run.step))?;
    let unigram =
        Corpus::unigram_loss(train_ids, if val_ids.is_empty() { train_ids } else { val_ids }, corpus.vocab.len());
    say!("{model}");
    say!(
        "{} parameters | {} | {} characters ({} train, {} validation), vocabulary {} | unigram baseline {:.4} \
         nats/char on the {} text",
        model.parameter_count(),
        corpus.name,
        corpus.ids.len(),
        train_ids.len(),
        val_ids.len(),
        corpus.vocab.len(),
        unigram,
        if val_ids.is_empty() { "training" } else { "validation" }
    );
    match &args.resume {
        Some(path) => say!("resuming {} at step {}, writing to {}", path.display(), run.step, dir.path().display()),
        None => say!(
            "training {} steps of {}×{} characters (at most {}), {}, writing to {}",
            config.max_steps,
            config.batch_size,
            config.seq_len,
            progress::duration(args.time_budget),
            thread_counts(),
            dir.path().display()
        ),
    }
    for note in &notes {
        say!("note: {note}");
    }

    let mut session = Session {
        streams: Streams::new(train_ids, config.batch_size),
        val_ids,
        threshold: divergence_threshold(corpus.vocab.len()),
        corpus: &corpus,
        text,
        dir: &dir,
        metrics,
        metrics_path,
        progress: Progress::new(style),
        style,
        args: &args,
        config,
        model,
        trainer,
        run,
        state,
        start: Instant::now(),
        last_norm: None,
    };
    session.train()
}

/// Opens `metrics.jsonl` for appending. A fresh run starts it empty (whatever a run that saved
/// no checkpoint left); a resumed run keeps exactly the rows up to its checkpoint's step (a killed
/// run may have logged steps after its last checkpoint, which the resumed run repeats).
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
    checkpoint::write_atomic(path, kept.as_bytes())?;
    std::fs::OpenOptions::new().append(true).open(path).with_context(|| format!("cannot open {}", path.display()))
}

/// One row of `metrics.jsonl`: an evaluation (`null` for what was not measured: step 0 has no
/// gradient norm yet, a run without validation no validation loss).
#[derive(serde::Serialize)]
struct MetricsRow {
    step: usize,
    epoch: usize,
    tokens: u64,
    train_loss: Option<f64>,
    val_loss: Option<f64>,
    lr: f64,
    grad_norm: Option<f64>,
    tokens_per_s: f64,
    elapsed_s: f64,
}

/// One process's part of a run.
struct Session<'a> {
    args: &'a TrainArgs,
    config: RunConfig,
    corpus: &'a Corpus,
    text: TextInfo,
    streams: Streams,
    val_ids: &'a [u32],
    dir: &'a RunDir,
    metrics: File,
    metrics_path: PathBuf,
    progress: Progress,
    style: Style,
    model: CharLm,
    trainer: Trainer,
    run: RunState,
    state: Option<State>,
    start: Instant,
    threshold: f64,
    last_norm: Option<f64>,
}

impl Session<'_> {
    fn last_path(&self) -> PathBuf {
        self.dir.path().join("last.safetensors")
    }

    fn best_path(&self) -> PathBuf {
        self.dir.path().join("best.safetensors")
    }

    fn elapsed_total(&self) -> f64 {
        self.run.elapsed_s + self.start.elapsed().as_secs_f64()
    }

    fn chars_per_s(&self) -> f64 {
        let steps = self.run.step - self.run.start_step;
        let chars = steps as f64 * (self.config.batch_size * self.config.seq_len) as f64;
        chars / self.start.elapsed().as_secs_f64().max(1e-9)
    }

    fn save(&self, path: &Path) -> Result<()> {
        let snapshot = RunState { elapsed_s: self.elapsed_total(), ..self.run.clone() };
        checkpoint::save(
            path,
            &self.model,
            &self.corpus.vocab,
            &self.config,
            &snapshot,
            &self.trainer,
            self.state.as_ref(),
            &self.text,
        )
    }

    fn validation_loss(&self) -> Result<Option<f64>> {
        if self.val_ids.is_empty() {
            return Ok(None);
        }
        Ok(Some(evaluate(&self.model, self.val_ids, self.config.batch_size, self.config.seq_len)?.0))
    }

    /// The error of a diverged run; the checkpoints on disk are the last good ones.
    fn diverged(&self, what: &str, value: f64) -> anyhow::Error {
        let last = self.last_path();
        let kept = match checkpoint::load(&last) {
            Ok(ckpt) => {
                format!("the last good checkpoint is {} at step {} (kept as it was)", last.display(), ckpt.run.step)
            }
            Err(_) => "no checkpoint was written".to_string(),
        };
        anyhow::anyhow!(
            "training diverged at step {}: {what} {value} (a run that learns stays far below {:.1} nats/char, ten times \
             a uniform guess over the vocabulary); {kept}. Start again with a lower --lr (this run: {}) or \
             --grad-clip (this run: {})",
            self.run.step + 1,
            self.threshold,
            self.config.lr,
            self.config.grad_clip
        )
    }

    /// Logs an evaluation of the current model at the current step: a metrics row, the plot, the
    /// checkpoints (`best` when validation improved, or when there is no validation).
    fn record(&mut self, train_loss: Option<f64>, val_loss: Option<f64>) -> Result<()> {
        if let Some(v) = val_loss.filter(|v| !(v.is_finite() && *v <= self.threshold)) {
            return Err(self.diverged("the validation loss was", v));
        }
        let step = self.run.step;
        if step > 0 {
            // Step 0 (the untrained model) is not a metric a plateau schedule reacts to.
            self.trainer.evaluated(val_loss)?;
        }
        self.run.history.push((step, train_loss.unwrap_or(f64::NAN), val_loss));
        let row = MetricsRow {
            step,
            epoch: self.run.epoch,
            tokens: self.run.tokens,
            train_loss,
            val_loss,
            lr: self.trainer.lr(),
            grad_norm: self.last_norm,
            tokens_per_s: self.chars_per_s(),
            elapsed_s: self.elapsed_total(),
        };
        let row = serde_json::to_string(&row)?;
        writeln!(self.metrics, "{row}").with_context(|| format!("cannot write {}", self.metrics_path.display()))?;
        write_plot(self.dir.path(), &self.run.history)?;
        let improved = val_loss.is_some_and(|v| self.run.best_val.is_none_or(|b| v < b));
        if improved {
            self.run.best_val = val_loss;
            self.run.best_step = Some(step);
        }
        self.save(&self.last_path())?;
        if improved || val_loss.is_none() {
            self.save(&self.best_path())?;
        }
        Ok(())
    }

    fn snapshot(&self, loss: f64, val_loss: Option<f64>) -> Snapshot {
        let done = self.run.step - self.run.start_step;
        let eta = (done > 0).then(|| {
            let elapsed = self.start.elapsed().as_secs_f64();
            let by_steps = elapsed / done as f64 * (self.config.max_steps.saturating_sub(self.run.step)) as f64;
            let by_budget = (self.args.time_budget.as_secs_f64() - elapsed).max(0.0);
            Duration::from_secs_f64(by_steps.min(by_budget))
        });
        Snapshot {
            step: self.run.step,
            max_steps: Some(self.config.max_steps),
            epoch: self.run.epoch,
            loss,
            val_loss,
            tokens_per_s: self.chars_per_s(),
            unit: "chars",
            eta,
        }
    }

    fn train(&mut self) -> Result<()> {
        let windows = self.streams.windows(self.config.seq_len);
        let tokens_per_step = (self.config.batch_size * self.config.seq_len) as u64;
        let device = Device::Cpu;
        // A fresh run evaluates the untrained model: the plot's and the log's step 0.
        let mut step0 =
            if self.run.step == 0 && self.run.history.is_empty() { Some(self.validation_loss()?) } else { None };
        let mut stop = None;
        let mut reason = "reached --max-steps";
        while self.run.step < self.config.max_steps {
            if let Some(signal) = interrupt::requested() {
                stop = Some(signal);
                break;
            }
            if self.args.max_epochs.is_some_and(|max| self.run.epoch >= max) {
                reason = "reached --max-epochs";
                break;
            }
            if self.start.elapsed() >= self.args.time_budget {
                reason = "reached --time-budget";
                break;
            }
            let (x, y) = self.streams.window(self.run.position, self.config.seq_len, &device)?;
            let (loss, next) = self.model.loss(&x, &y.reshape(x.shape())?, self.state.as_ref())?;
            let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
            if let Some(val) = step0.take() {
                // The first window's loss under the initial parameters: step 0's training loss.
                self.record(Some(loss_value), val)?;
            }
            if !(loss_value.is_finite() && loss_value <= self.threshold) {
                return Err(self.diverged("the training loss was", loss_value));
            }
            let Some(norm) = self.trainer.step(&loss)? else {
                return Err(self.diverged("the gradients' norm was", f64::INFINITY));
            };
            self.last_norm = Some(norm);
            self.state = Some(next.detach());
            self.run.step += 1;
            self.run.tokens += tokens_per_step;
            self.run.position += 1;
            if self.run.position >= windows {
                self.run.position = 0;
                self.run.epoch += 1;
                self.state = None;
            }
            self.run.window_sum += loss_value;
            self.run.window_count += 1;
            let tick = self.snapshot(loss_value, self.run.best_val);
            self.progress.tick(&tick);

            if self.run.step.is_multiple_of(self.config.eval_every) || self.run.step == self.config.max_steps {
                let (train_loss, val_loss) = self.evaluate_now()?;
                let report = self.snapshot(train_loss, val_loss);
                self.progress.report(&report);
                let every = self.args.sample_every;
                if self.style != Style::Quiet && every > 0 && self.run.step.is_multiple_of(every) {
                    self.progress.clear();
                    let text = sample_text(&self.model, self.corpus, self.config.seed + self.run.step as u64, 200)?;
                    console::err(format_args!("--- sample at step {} ---\n{text}\n---", self.run.step));
                }
            }
        }
        self.progress.clear();
        if let Some(signal) = stop {
            self.save(&self.last_path())?;
            say!("stopped by {} at step {}: saved {}", signal.name(), self.run.step, self.last_path().display());
            return Err(Stopped { code: signal.exit_code() }.into());
        }
        if let Some(val) = step0.take() {
            // Stopped before the first step: the untrained model is what there is.
            self.record(None, val)?;
        }
        if self.run.window_count > 0 {
            // The final model, evaluated once more unless the last step was just evaluated.
            self.evaluate_now()?;
        }
        self.summary(reason)
    }

    /// Evaluates now: the mean training loss since the last evaluation, the validation loss.
    fn evaluate_now(&mut self) -> Result<(f64, Option<f64>)> {
        let train_loss = self.run.window_sum / self.run.window_count.max(1) as f64;
        self.run.window_sum = 0.0;
        self.run.window_count = 0;
        let val_loss = self.validation_loss()?;
        self.record(Some(train_loss), val_loss)?;
        Ok((train_loss, val_loss))
    }

    fn summary(&self, reason: &str) -> Result<()> {
        let run = &self.run;
        let steps_here = run.step - run.start_step;
        let elapsed = self.start.elapsed();
        let took =
            if elapsed.as_secs() < 60 { format!("{:.1}s", elapsed.as_secs_f64()) } else { progress::duration(elapsed) };
        let mut line = format!(
            "done ({reason}) at step {} ({}, {}{}) in {took}",
            run.step,
            plural(run.epoch, "epoch"),
            plural(steps_here, "step"),
            if run.start_step > 0 { " in this session" } else { "" },
        );
        if let Some(&(step, train, val)) = run.history.last() {
            if train.is_finite() {
                let over = match run.history.len() {
                    n if n >= 2 && step > 0 => match run.history[n - 2].0 + 1 {
                        first if first == step => format!(" at step {step}"),
                        first => format!(" over steps {first}–{step}"),
                    },
                    _ => " (the first window, before any update)".to_string(),
                };
                line.push_str(&format!(": train loss {train:.4} nats/char{over}"));
            } else {
                line.push_str(": no training step was taken");
            }
            if let Some(v) = val {
                line.push_str(&format!(
                    ", validation {v:.4} nats/char = {:.3} bits/char at step {step}",
                    v / std::f64::consts::LN_2
                ));
            }
        }
        say!("{line}");
        if let (Some(best), Some(step)) = (run.best_val, run.best_step) {
            say!("best validation loss {best:.4} nats/char at step {step}");
        }
        let existing: Vec<String> = rundir::RUN_FILES
            .iter()
            .map(|name| self.dir.path().join(name))
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .collect();
        say!("wrote {}", existing.join(", "));
        say!("--- sample (temperature 0.8) ---");
        let text = sample_text(&self.model, self.corpus, self.config.seed, 400)?;
        say!("{text}");
        Ok(())
    }
}

/// `length` characters sampled at temperature 0.8 after a newline (or the text's first character).
fn sample_text(model: &CharLm, corpus: &Corpus, seed: u64, length: usize) -> Result<String> {
    let prime = corpus.vocab.id('\n').or_else(|| corpus.ids.first().copied()).unwrap_or(0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sampling = Sampling { temperature: 0.8, ..Sampling::default() };
    let ids = model.generate(&[prime], length, &sampling, &mut rng, |_| Ok(()))?;
    Ok(corpus.vocab.decode(&ids))
}

/// Rewrites `loss.svg` (atomically) from the history. Training points are the mean of the steps
/// since the previous point (step 0: the first window before any update), which the plot says.
fn write_plot(out: &Path, history: &[(usize, f64, Option<f64>)]) -> Result<()> {
    let mut plot = LinePlot::new("character model", "step", "loss (nats/char)");
    plot.x_integer = true;
    plot.note = Some("train: mean over the steps since the previous point (step 0: the first batch)".into());
    let train: Vec<(f64, f64)> = history.iter().map(|&(s, l, _)| (s as f64, l)).collect();
    plot.series.push(Series::new("train", train));
    let val: Vec<(f64, f64)> = history.iter().filter_map(|&(s, _, v)| v.map(|v| (s as f64, v))).collect();
    if !val.is_empty() {
        plot.series.push(Series::new("validation", val));
    }
    checkpoint::write_atomic(&out.join("loss.svg"), plot.to_svg().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse_with_and_without_units() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("3m").unwrap(), Duration::from_secs(180));
        assert_eq!(parse_duration("1.5h").unwrap(), Duration::from_secs(5400));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5y").is_err());
        assert!(parse_duration("soon").is_err());
    }

    #[test]
    fn more_threads_than_cores_are_capped() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(thread_count(10_000).unwrap(), cores);
        assert_eq!(thread_count(1).unwrap(), 1);
        assert!(thread_count(0).is_err());
    }
}
