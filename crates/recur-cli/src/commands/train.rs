//! `recur train`: a character-level language model on the embedded corpus or any UTF-8 text,
//! trained with truncated BPTT over contiguous streams.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::Args;
use rand::SeedableRng;
use recur::models::{
    CellType, CharLm, CharLmConfig, CharLmData, CharLmTraining, CharWindows, LoadedCharLm, Sampling, CHAR_LM_TASK,
};
use recur::train::{
    holds_run, LrSchedule, OptimizerConfig, RunDir, StopReason, TaskInfo, Trainer, TrainerConfig, RUN_FILES,
};

use crate::args::{self, parse_cell, parse_duration, OptimizerName, ScheduleName};
use crate::console::{self, say};
use crate::corpus::{self, Corpus};
use crate::progress::{self, plural, Style};
use crate::report;

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
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerName::Adam, help_heading = "Optimization")]
    pub optimizer: OptimizerName,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = ScheduleName::Cosine, help_heading = "Optimization")]
    pub lr_schedule: ScheduleName,
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

/// Steps of a run when `--max-steps` is not given.
const DEFAULT_MAX_STEPS: usize = 700;

/// The run a fresh `recur train` starts, from its flags.
struct Plan {
    model: CharLmConfig,
    data: CharLmData,
    trainer: TrainerConfig,
}

fn fresh_plan(args: &TrainArgs, corpus: &Corpus) -> Result<Plan> {
    let max_steps = args.max_steps.unwrap_or(DEFAULT_MAX_STEPS);
    for (flag, value) in [
        ("--hidden-size", args.hidden_size),
        ("--num-layers", args.num_layers),
        ("--embedding-size", args.embedding_size),
        ("--seq-len", args.seq_len),
        ("--batch-size", args.batch_size),
        ("--max-steps", max_steps),
        ("--eval-every", args.eval_every),
    ] {
        if value == 0 {
            bail!("{flag} must be at least 1");
        }
    }
    if !(0.0..1.0).contains(&args.dropout) {
        bail!("--dropout must be in [0, 1), got {}", args.dropout);
    }
    if !(args.grad_clip.is_finite() && args.grad_clip >= 0.0) {
        bail!("--grad-clip must be 0 (off) or positive, got {}", args.grad_clip);
    }
    if !(args.lr.is_finite() && args.lr > 0.0) {
        bail!("--lr must be a positive number, got {}", args.lr);
    }
    let optimizer = OptimizerConfig::by_name(&args::name(&args.optimizer), args.lr)?;
    let schedule = LrSchedule::by_name(&args::name(&args.lr_schedule), max_steps as u64, args.lr)?;
    let vocab_size = corpus.vocab.len();
    Ok(Plan {
        model: CharLmConfig {
            vocab_size,
            cell: args.cell,
            embedding_size: args.embedding_size,
            hidden_size: args.hidden_size,
            num_layers: args.num_layers,
            dropout: args.dropout,
        },
        data: CharLmData {
            vocab: corpus.vocab.as_string(),
            seq_len: args.seq_len,
            batch_size: args.batch_size,
            val_fraction: args.val_fraction,
            seed: args.seed,
            text: Some(corpus.source()),
        },
        trainer: TrainerConfig {
            grad_clip: args.grad_clip,
            divergence_loss: Some(divergence_threshold(vocab_size)),
            ..TrainerConfig::new(max_steps, args.eval_every, optimizer, schedule)
        },
    })
}

/// Makes `--threads` bound every pool of threads the run uses: Recur's kernels, rayon's global
/// pool (the optimizers' chunks) and candle's CPU ops (its matrix products and its element-wise
/// thread pool). Rayon and candle read `RAYON_NUM_THREADS` when they first start their threads,
/// which no tensor op has done yet, and candle offers no other way to bound its pool. Without it
/// `--threads 1` still left candle's pool at the machine's core count.
pub(crate) fn limit_threads(threads: usize) {
    // Only the signal watcher runs besides this thread now, and it reads no environment.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    recur::set_num_threads(threads);
}

/// `--threads`, checked and capped at the machine's cores (more threads than cores only wait on
/// each other: 10000 of them never finished three tiny steps).
pub(crate) fn thread_count(requested: usize) -> Result<usize> {
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
pub(crate) fn thread_counts() -> String {
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
fn contradictions(ckpt: &LoadedCharLm, args: &TrainArgs, explicit: &[String]) -> Vec<String> {
    let (m, d, t) = (&ckpt.config, &ckpt.data, &ckpt.checkpoint.trainer);
    let rows: [(&str, &str, String, String); 13] = [
        ("cell", "--cell", m.cell.name().to_string(), args.cell.name().to_string()),
        ("hidden_size", "--hidden-size", m.hidden_size.to_string(), args.hidden_size.to_string()),
        ("num_layers", "--num-layers", m.num_layers.to_string(), args.num_layers.to_string()),
        ("embedding_size", "--embedding-size", m.embedding_size.to_string(), args.embedding_size.to_string()),
        ("dropout", "--dropout", m.dropout.to_string(), args.dropout.to_string()),
        ("seq_len", "--seq-len", d.seq_len.to_string(), args.seq_len.to_string()),
        ("batch_size", "--batch-size", d.batch_size.to_string(), args.batch_size.to_string()),
        ("lr", "--lr", t.optimizer.lr().to_string(), args.lr.to_string()),
        ("optimizer", "--optimizer", t.optimizer.name().to_string(), args::name(&args.optimizer)),
        ("lr_schedule", "--lr-schedule", t.schedule.name().to_string(), args::name(&args.lr_schedule)),
        ("grad_clip", "--grad-clip", t.grad_clip.to_string(), args.grad_clip.to_string()),
        ("val_fraction", "--val-fraction", d.val_fraction.to_string(), args.val_fraction.to_string()),
        ("seed", "--seed", d.seed.to_string(), args.seed.to_string()),
    ];
    rows.into_iter()
        .filter(|(id, _, saved, given)| explicit.iter().any(|e| e == id) && saved != given)
        .map(|(_, flag, saved, given)| format!("{flag} {given} (the checkpoint has {saved})"))
        .collect()
}

/// Where a resumed run's text comes from: `--text`, else the file the checkpoint names.
fn resume_text(args: &TrainArgs, data: &CharLmData) -> Option<PathBuf> {
    if args.text.is_some() {
        return args.text.clone();
    }
    data.text.as_ref().filter(|t| t.name != corpus::DEFAULT_NAME).map(|t| PathBuf::from(&t.name))
}

/// The plan of a resumed run: the checkpoint's, with this session's `--max-steps` and
/// `--eval-every`; contradicting flags are refused, another text with the same characters warned
/// about.
fn resumed_plan(
    args: &TrainArgs,
    explicit: &[String],
    ckpt: &LoadedCharLm,
    notes: &mut Vec<String>,
) -> Result<(Corpus, Plan)> {
    let contradicting = contradictions(ckpt, args, explicit);
    if !contradicting.is_empty() {
        let one = contradicting.len() == 1;
        bail!(
            "{} contradict{} the checkpoint a resumed run continues with; drop {} to resume, or start a new run (a \
             new --out) to change {}",
            contradicting.join(", "),
            if one { "s" } else { "" },
            if one { "the flag" } else { "those flags" },
            if one { "it" } else { "them" },
        );
    }
    let text_path = resume_text(args, &ckpt.data);
    let corpus = Corpus::load(text_path.as_deref()).with_context(|| match (&args.text, &text_path) {
        (None, Some(_)) => "the checkpoint names this file as its training text; pass --text".to_string(),
        _ => "cannot read the training text".to_string(),
    })?;
    if ckpt.vocab != corpus.vocab {
        bail!(
            "the checkpoint's vocabulary ({} characters) differs from that of {} ({} characters); resume on the text \
             it was trained on{}",
            ckpt.vocab.len(),
            corpus.name,
            corpus.vocab.len(),
            ckpt.data.text.as_ref().map_or(String::new(), |t| format!(" ({})", t.name))
        );
    }
    let mut data = ckpt.data.clone();
    if let Some(saved) = &ckpt.data.text {
        let here = corpus.source();
        if saved.crc32 != here.crc32 {
            console::warn(format_args!(
                "{} ({} characters, crc32 {}) is not the text this run was trained on ({}, {} characters, crc32 {}); \
                 its characters are the same, so training goes on, on the new text",
                here.name, here.chars, here.crc32, saved.name, saved.chars, saved.crc32
            ));
            data.text = Some(here);
        }
    } else {
        data.text = Some(corpus.source());
    }
    let mut trainer = ckpt.checkpoint.trainer.clone();
    if let Some(max) = args.max_steps {
        if max == 0 {
            bail!("--max-steps must be at least 1");
        }
        trainer.max_steps = max;
    }
    if explicit.iter().any(|e| e == "eval_every") && args.eval_every != trainer.eval_every {
        if args.eval_every == 0 {
            bail!("--eval-every must be at least 1");
        }
        notes.push(format!(
            "evaluating every {} steps (the checkpoint's run: every {})",
            args.eval_every, trainer.eval_every
        ));
        trainer.eval_every = args.eval_every;
    }
    if let Some(horizon) = trainer.schedule.horizon().filter(|&h| (trainer.max_steps as u64) > h) {
        notes.push(format!(
            "the {} schedule keeps its horizon of {horizon} steps; past it the learning rate stays at its final value",
            trainer.schedule.name()
        ));
    } else if matches!(trainer.schedule, LrSchedule::Step { .. } | LrSchedule::Exponential { .. })
        && trainer.max_steps > ckpt.checkpoint.trainer.max_steps
    {
        notes.push(format!(
            "the {} schedule goes on decaying past the first run's {} steps",
            trainer.schedule.name(),
            ckpt.checkpoint.trainer.max_steps
        ));
    }
    Ok((corpus, Plan { model: ckpt.config.clone(), data, trainer }))
}

/// Runs `recur train`. `explicit` names the flags given on the command line (clap's ids).
pub fn run(args: TrainArgs, explicit: &[String]) -> Result<()> {
    if let Some(threads) = args.threads {
        limit_threads(thread_count(threads)?);
    }
    let style = Style::pick(args.quiet);

    // The checkpoint, the corpus and the plan: all checked before any folder exists.
    let resumed = match &args.resume {
        Some(path) => {
            Some(recur::models::load_char_lm(path).with_context(|| format!("cannot resume from {}", path.display()))?)
        }
        None => None,
    };
    let mut notes = Vec::new();
    let (corpus, plan) = match &resumed {
        Some(ckpt) => resumed_plan(&args, explicit, ckpt, &mut notes)?,
        None => {
            let corpus = Corpus::load(args.text.as_deref())?;
            let plan = fresh_plan(&args, &corpus)?;
            (corpus, plan)
        }
    };
    if plan.model.dropout > 0.0 && plan.model.num_layers == 1 {
        // PyTorch's own warning for nn.LSTM(..., dropout > 0, num_layers=1).
        console::warn(format_args!(
            "dropout adds dropout after all but the last recurrent layer, so non-zero dropout expects num_layers \
             greater than 1, but got dropout={} and num_layers=1: it has no effect",
            plan.model.dropout
        ));
    }
    let d = &plan.data;
    let (train_ids, val_ids) = corpus.split(d.val_fraction, d.batch_size, d.seq_len)?;

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
    if !continues_here && holds_run(dir.path()) && !args.overwrite {
        bail!(
            "{} already holds a run's checkpoints; continue it with --resume {}, pick another --out, or pass \
             --overwrite to replace them",
            dir.path().display(),
            dir.path().join("last.safetensors").display()
        );
    }
    let stale = dir.remove_stale_temp_files()?;
    if stale > 0 {
        notes.push(format!("removed {} left by a killed run", plural(stale, "temporary file")));
    }

    let model = CharLmTraining::build(plan.model.clone(), d.seed, val_ids.to_vec(), d.batch_size, d.seq_len)
        .context("cannot build the model")?;
    let windows = CharWindows::new(train_ids, d.batch_size, d.seq_len);
    let task = TaskInfo {
        name: CHAR_LM_TASK.to_string(),
        model: serde_json::to_value(&plan.model)?,
        data: serde_json::to_value(&plan.data)?,
    };
    let unigram =
        Corpus::unigram_loss(train_ids, if val_ids.is_empty() { train_ids } else { val_ids }, corpus.vocab.len());
    let banner_model = format!("{}", model.lm());
    let parameters = model.lm().parameter_count();
    let mut trainer = match &resumed {
        Some(ckpt) => {
            let mut checkpoint = ckpt.checkpoint.clone();
            checkpoint.data = task.data.clone();
            Trainer::resume(plan.trainer.clone(), &checkpoint, model, windows, dir)?
        }
        None => Trainer::new(plan.trainer.clone(), task, model, windows, dir)?,
    };

    say!("{banner_model}");
    say!(
        "{parameters} parameters | {} | {} characters ({} train, {} validation), vocabulary {} | unigram baseline \
         {unigram:.4} nats/char on the {} text",
        corpus.name,
        corpus.ids.len(),
        train_ids.len(),
        val_ids.len(),
        corpus.vocab.len(),
        if val_ids.is_empty() { "training" } else { "validation" }
    );
    let folder = trainer.dir().path().display().to_string();
    match &args.resume {
        Some(path) => say!("resuming {} at step {}, writing to {folder}", path.display(), trainer.state().step),
        None => say!(
            "training {} steps of {}×{} characters (at most {}), {}, writing to {folder}",
            plan.trainer.max_steps,
            d.batch_size,
            d.seq_len,
            progress::duration(args.time_budget),
            thread_counts(),
        ),
    }
    for note in &notes {
        say!("note: {note}");
    }

    // Train, rendering what the loop reports.
    let sample_every = if style == Style::Quiet { 0 } else { args.sample_every };
    let seed = d.seed;
    let vocab = corpus.vocab.clone();
    let prime = vocab.id('\n').or_else(|| corpus.ids.first().copied()).unwrap_or(0);
    let advice = format!(
        "Start again with a lower --lr (this run: {}) or --grad-clip (this run: {})",
        plan.trainer.optimizer.lr(),
        plan.trainer.grad_clip
    );
    let session = report::Session {
        style,
        budget: args.time_budget,
        max_epochs: args.max_epochs,
        unit: "chars",
        advice: &advice,
    };
    let (outcome, elapsed) = report::train(&mut trainer, &session, &mut |row, model: &CharLmTraining| {
        if sample_every == 0 || row.step == 0 || !row.step.is_multiple_of(sample_every) {
            return Ok(None);
        }
        let text = sample_text(model.lm(), &vocab, prime, seed + row.step as u64, 200)?;
        Ok(Some(format!("--- sample at step {} ---\n{text}\n---", row.step)))
    })?;
    summary(&trainer, outcome, elapsed, &vocab, prime, seed)
}

fn reason_text(reason: StopReason) -> &'static str {
    match reason {
        StopReason::MaxSteps => "reached --max-steps",
        StopReason::MaxEpochs => "reached --max-epochs",
        StopReason::TimeBudget => "reached --time-budget",
        other => other.describe(),
    }
}

fn summary(
    trainer: &Trainer<CharLmTraining, CharWindows>,
    outcome: recur::train::Outcome,
    elapsed: Duration,
    vocab: &recur::data::Vocab,
    prime: u32,
    seed: u64,
) -> Result<()> {
    let run = trainer.state();
    let took =
        if elapsed.as_secs() < 60 { format!("{:.1}s", elapsed.as_secs_f64()) } else { progress::duration(elapsed) };
    let resumed = run.step > outcome.steps;
    let mut line = format!(
        "done ({}) at step {} ({}, {}{}) in {took}",
        reason_text(outcome.reason),
        run.step,
        plural(run.epoch, "epoch"),
        plural(outcome.steps, "step"),
        if resumed { " in this session" } else { "" },
    );
    if let Some(last) = run.history.last() {
        match last.train_loss {
            Some(train) => {
                let n = run.history.len();
                let over = match (n >= 2 && last.step > 0).then(|| run.history[n - 2].step + 1) {
                    Some(first) if first == last.step => format!(" at step {first}"),
                    Some(first) => format!(" over steps {first}–{}", last.step),
                    None => " (the first window, before any update)".to_string(),
                };
                line.push_str(&format!(": train loss {train:.4} nats/char{over}"));
            }
            None => line.push_str(": no training step was taken"),
        }
        if let Some(v) = last.metrics.get("loss") {
            line.push_str(&format!(
                ", validation {v:.4} nats/char = {:.3} bits/char at step {}",
                v / std::f64::consts::LN_2,
                last.step
            ));
        }
    }
    say!("{line}");
    if let (Some(best), Some(step)) = (run.best, run.best_step) {
        say!("best validation loss {best:.4} nats/char at step {step}");
    }
    let existing: Vec<String> = RUN_FILES
        .iter()
        .map(|name| trainer.dir().path().join(name))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    say!("wrote {}", existing.join(", "));
    say!("--- sample (temperature 0.8) ---");
    say!("{}", sample_text(trainer.model().lm(), vocab, prime, seed, 400)?);
    Ok(())
}

/// `length` characters sampled at temperature 0.8 after `prime` (a newline, or the text's first
/// character).
fn sample_text(
    model: &CharLm,
    vocab: &recur::data::Vocab,
    prime: u32,
    seed: u64,
    length: usize,
) -> recur::Result<String> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sampling = Sampling { temperature: 0.8, ..Sampling::default() };
    let ids = model.generate(&[prime], length, &sampling, &mut rng, |_| Ok(()))?;
    Ok(vocab.decode(&ids))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn more_threads_than_cores_are_capped() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        assert_eq!(thread_count(10_000).unwrap(), cores);
        assert_eq!(thread_count(1).unwrap(), 1);
        assert!(thread_count(0).is_err());
    }
}
