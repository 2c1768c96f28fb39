//! `recur train`: a character-level language model on the embedded corpus or any UTF-8 text,
//! trained with truncated BPTT over contiguous streams.

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

use crate::checkpoint::{self, RunState};
use crate::corpus::Corpus;
use crate::progress::{self, Progress, Snapshot, Style};
use crate::streams::{evaluate, Streams};
use crate::toolkit::{self, Trainer};
use crate::{interrupt, Interrupted};

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
            val_fraction: args.val_fraction,
            seed: args.seed,
            eval_every: args.eval_every,
        })
    }
}

/// One row of `metrics.jsonl`.
struct Metrics {
    step: usize,
    epoch: usize,
    tokens: u64,
    train_loss: f64,
    val_loss: Option<f64>,
    lr: f64,
    grad_norm: f64,
    tokens_per_s: f64,
    elapsed_s: f64,
}

impl Metrics {
    fn json(&self) -> String {
        let val = self.val_loss.map_or("null".to_string(), |v| format!("{v:.6}"));
        format!(
            "{{\"step\":{},\"epoch\":{},\"tokens\":{},\"train_loss\":{:.6},\"val_loss\":{val},\"lr\":{:e},\"grad_norm\":{:.6},\"tokens_per_s\":{:.1},\"elapsed_s\":{:.3}}}",
            self.step, self.epoch, self.tokens, self.train_loss, self.lr, self.grad_norm, self.tokens_per_s, self.elapsed_s
        )
    }
}

/// Makes `--threads` bound every pool of threads the run uses: Recur's kernels, rayon's global
/// pool (the optimizers' chunks) and candle's CPU ops (its matrix products and its element-wise
/// thread pool). Rayon and candle read `RAYON_NUM_THREADS` when they first start their threads,
/// which no tensor op has done yet. Without it `--threads 1` still left candle's pool at the
/// machine's core count (a second, spinning thread on a 2-core machine; by candle's code, one per
/// core on a bigger one).
fn limit_threads(threads: usize) {
    // Only the Ctrl-C watcher runs besides this thread now, and it reads no environment.
    std::env::set_var("RAYON_NUM_THREADS", threads.to_string());
    recur::set_num_threads(threads);
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

/// Runs `recur train`.
pub fn run(args: TrainArgs) -> Result<()> {
    if let Some(threads) = args.threads {
        if threads == 0 {
            bail!("--threads must be at least 1");
        }
        limit_threads(threads);
    }
    let out_dir = output_folder(&args)?;
    std::fs::create_dir_all(&out_dir)
        .with_context(|| format!("cannot create the output folder {}", out_dir.display()))?;
    check_writable(&out_dir)?;
    let style = Style::pick(args.quiet);
    let device = Device::Cpu;

    // The corpus, the run's configuration and where it starts: fresh, or from a checkpoint.
    let corpus = Corpus::load(args.text.as_deref())?;
    let resumed = match &args.resume {
        Some(path) => Some(checkpoint::load(path).with_context(|| format!("cannot resume from {}", path.display()))?),
        None => None,
    };
    let config = match &resumed {
        Some(ckpt) => {
            if ckpt.vocab != corpus.vocab {
                bail!(
                    "the checkpoint's vocabulary ({} characters) differs from that of {} ({} characters); resume \
                     on the text it was trained on",
                    ckpt.vocab.len(),
                    corpus.name,
                    corpus.vocab.len()
                );
            }
            RunConfig { max_steps: args.max_steps.unwrap_or(ckpt.config.max_steps), ..ckpt.config.clone() }
        }
        None => RunConfig::from_args(&args, corpus.vocab.len())?,
    };
    let (train_ids, val_ids) = corpus.split(config.val_fraction, config.batch_size, config.seq_len)?;
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
    }
    model.set_training(true);

    let streams = Streams::new(train_ids, config.batch_size);
    let windows = streams.windows(config.seq_len);
    let unigram = Corpus::unigram_entropy(train_ids, corpus.vocab.len());
    let tokens_per_step = (config.batch_size * config.seq_len) as u64;
    let mut progress = Progress::new(style);
    let mut out = std::io::stdout().lock();
    writeln!(out, "{model}")?;
    writeln!(
        out,
        "{} parameters | {} | {} characters ({} train, {} validation), vocabulary {} | unigram loss {:.4} nats",
        model.parameter_count(),
        corpus.name,
        corpus.ids.len(),
        train_ids.len(),
        val_ids.len(),
        corpus.vocab.len(),
        unigram
    )?;
    match &args.resume {
        Some(path) => writeln!(out, "resuming {} at step {}", path.display(), run.step)?,
        None => writeln!(
            out,
            "training {} steps of {}×{} characters (at most {}), {}, writing to {}",
            config.max_steps,
            config.batch_size,
            config.seq_len,
            progress::duration(args.time_budget),
            thread_counts(),
            out_dir.display()
        )?,
    }
    out.flush()?;

    let metrics_path = out_dir.join("metrics.jsonl");
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("cannot open {}", metrics_path.display()))?;
    let last_path = out_dir.join("last.safetensors");
    let best_path = out_dir.join("best.safetensors");
    let mut history = run.history.clone();
    let start = Instant::now();
    let mut window_losses: Vec<f64> = Vec::new();
    let mut last_norm;
    let mut stop_reason = "reached --max-steps";

    while run.step < config.max_steps {
        if interrupt::requested() {
            stop_reason = "interrupted";
            break;
        }
        if args.max_epochs.is_some_and(|max| run.epoch >= max) {
            stop_reason = "reached --max-epochs";
            break;
        }
        if start.elapsed() >= args.time_budget {
            stop_reason = "reached --time-budget";
            break;
        }
        let (x, y) = streams.window(run.position, config.seq_len, &device)?;
        let (loss, next) = model.loss(&x, &y.reshape(x.shape())?, state.as_ref())?;
        let loss_value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        if !loss_value.is_finite() {
            let saved = if last_path.exists() {
                format!("the last good checkpoint is {}", last_path.display())
            } else {
                "no checkpoint was written yet".to_string()
            };
            bail!(
                "the loss became {loss_value} at step {}: training diverged; {saved} (not overwritten). Lower --lr or \
                 --grad-clip and resume from it",
                run.step + 1
            );
        }
        last_norm = trainer.step(&loss)?;
        state = Some(next.detach());
        run.step += 1;
        run.tokens += tokens_per_step;
        run.position += 1;
        if run.position >= windows {
            run.position = 0;
            run.epoch += 1;
            state = None;
        }
        window_losses.push(loss_value);

        let elapsed = start.elapsed().as_secs_f64();
        let tokens_per_s = (run.step - run.start_step) as f64 * tokens_per_step as f64 / elapsed.max(1e-9);
        let eta = eta(&config, &args, &run, start.elapsed());
        progress.tick(&Snapshot {
            step: run.step,
            max_steps: Some(config.max_steps),
            epoch: run.epoch,
            loss: loss_value,
            val_loss: run.best_val,
            tokens_per_s,
            eta,
        });

        if run.step % config.eval_every == 0 || run.step == config.max_steps {
            let train_loss = window_losses.iter().sum::<f64>() / window_losses.len() as f64;
            window_losses.clear();
            let val_loss = if val_ids.is_empty() {
                None
            } else {
                Some(evaluate(&model, val_ids, config.batch_size, config.seq_len)?.0)
            };
            trainer.evaluated(val_loss)?;
            history.push((run.step, train_loss, val_loss));
            run.history = history.clone();
            let row = Metrics {
                step: run.step,
                epoch: run.epoch,
                tokens: run.tokens,
                train_loss,
                val_loss,
                lr: trainer.lr(),
                grad_norm: last_norm,
                tokens_per_s,
                elapsed_s: run.elapsed_s + elapsed,
            };
            writeln!(metrics, "{}", row.json()).with_context(|| format!("cannot write {}", metrics_path.display()))?;
            write_plot(&out_dir, &history)?;
            let improved = val_loss.is_some_and(|v| run.best_val.map_or(true, |b| v < b));
            if improved {
                run.best_val = val_loss;
            }
            let snapshot = RunState { elapsed_s: run.elapsed_s + elapsed, ..run.clone() };
            checkpoint::save(&last_path, &model, &corpus.vocab, &config, &snapshot, &trainer, state.as_ref())?;
            if improved || val_loss.is_none() {
                checkpoint::save(&best_path, &model, &corpus.vocab, &config, &snapshot, &trainer, state.as_ref())?;
            }
            progress.report(&Snapshot {
                step: run.step,
                max_steps: Some(config.max_steps),
                epoch: run.epoch,
                loss: train_loss,
                val_loss,
                tokens_per_s,
                eta,
            });
            if style != Style::Quiet && args.sample_every > 0 && run.step % args.sample_every == 0 {
                progress.clear();
                let text = sample_text(&model, &corpus, config.seed + run.step as u64, 200)?;
                eprintln!("--- sample at step {} ---\n{}\n---", run.step, text);
            }
        }
    }
    progress.clear();
    let elapsed = start.elapsed();
    run.elapsed_s += elapsed.as_secs_f64();

    // Save where the run stopped (unless the last evaluation just did).
    if run.step % config.eval_every != 0 {
        checkpoint::save(&last_path, &model, &corpus.vocab, &config, &run, &trainer, state.as_ref())?;
    }
    if stop_reason == "interrupted" {
        writeln!(out, "interrupted at step {}: saved {}", run.step, last_path.display())?;
        return Err(Interrupted.into());
    }
    let val = match val_ids.is_empty() {
        true => None,
        false => Some(evaluate(&model, val_ids, config.batch_size, config.seq_len)?.0),
    };
    writeln!(
        out,
        "done ({stop_reason}) after {} steps, {} epochs, in {}: train loss {:.4} nats/char{} (unigram {:.4})",
        run.step,
        run.epoch,
        progress::duration(elapsed),
        history.last().map_or(f64::NAN, |h| h.1),
        val.map_or(String::new(), |v| format!(
            ", validation {v:.4} nats/char = {:.3} bits/char",
            v / std::f64::consts::LN_2
        )),
        unigram
    )?;
    writeln!(out, "checkpoints: {} and {}", best_path.display(), last_path.display())?;
    writeln!(out, "metrics: {}  plot: {}", metrics_path.display(), out_dir.join("loss.svg").display())?;
    writeln!(out, "--- sample (temperature 0.8) ---")?;
    let text = sample_text(&model, &corpus, config.seed, 400)?;
    writeln!(out, "{text}")?;
    Ok(())
}

/// Where the run writes: `--out`, the resumed checkpoint's folder, or the first free
/// `runs/char-lm[-N]`. A new run never silently replaces another run's checkpoints.
fn output_folder(args: &TrainArgs) -> Result<PathBuf> {
    let holds_run = |dir: &Path| dir.join("last.safetensors").exists() || dir.join("best.safetensors").exists();
    if let Some(out) = &args.out {
        if args.resume.is_none() && holds_run(out) && !args.overwrite {
            bail!(
                "{} already holds a run's checkpoints; continue it with --resume {}, pick another --out, or pass                  --overwrite to replace them",
                out.display(),
                out.join("last.safetensors").display()
            );
        }
        return Ok(out.clone());
    }
    if let Some(resume) = &args.resume {
        return Ok(resume.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).to_path_buf());
    }
    let base = Path::new("runs");
    (1..10_000)
        .map(|n| if n == 1 { base.join("char-lm") } else { base.join(format!("char-lm-{n}")) })
        .find(|dir| !holds_run(dir))
        .context("every runs/char-lm-N folder up to 9999 holds a run; pass --out")
}

/// Time left, from the steps left at the current speed, capped by the time budget.
fn eta(config: &RunConfig, args: &TrainArgs, run: &RunState, elapsed: Duration) -> Option<Duration> {
    let done = run.step - run.start_step;
    if done == 0 {
        return None;
    }
    let per_step = elapsed.as_secs_f64() / done as f64;
    let by_steps = per_step * (config.max_steps - run.step) as f64;
    let by_budget = (args.time_budget.as_secs_f64() - elapsed.as_secs_f64()).max(0.0);
    Some(Duration::from_secs_f64(by_steps.min(by_budget)))
}

/// `length` characters sampled at temperature 0.8 after a newline (or the text's first character).
fn sample_text(model: &CharLm, corpus: &Corpus, seed: u64, length: usize) -> Result<String> {
    let prime = corpus.vocab.id('\n').or_else(|| corpus.ids.first().copied()).unwrap_or(0);
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let sampling = Sampling { temperature: 0.8, ..Sampling::default() };
    let ids = model.generate(&[prime], length, &sampling, &mut rng, |_| Ok(()))?;
    Ok(corpus.vocab.decode(&ids))
}

/// Rewrites `loss.svg` (atomically) from the history.
fn write_plot(out: &Path, history: &[(usize, f64, Option<f64>)]) -> Result<()> {
    let mut plot = LinePlot::new("character model", "step", "loss (nats/char)");
    plot.series.push(Series::new("train", history.iter().map(|&(s, l, _)| (s as f64, l)).collect()));
    let val: Vec<(f64, f64)> = history.iter().filter_map(|&(s, _, v)| v.map(|v| (s as f64, v))).collect();
    if !val.is_empty() {
        plot.series.push(Series::new("validation", val));
    }
    checkpoint::write_atomic(&out.join("loss.svg"), plot.to_svg().as_bytes())
}

/// Fails early, with the OS's reason, when `dir` cannot take new files.
fn check_writable(dir: &Path) -> Result<()> {
    let probe = dir.join(format!(".recur-write-test-{}", std::process::id()));
    std::fs::write(&probe, b"").with_context(|| format!("the output folder {} is not writable", dir.display()))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
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
}
