//! Checkpoints of the character model, in `recur::train`'s format: the parameters under
//! PyTorch's names, the optimizer and schedule state, the recurrent state carried between windows,
//! and, as JSON, the run's configuration and the task's data (vocabulary, history), written
//! atomically with a checksum.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use recur::data::Vocab;
use recur::models::{CellType, CharLm, CharLmConfig};
use recur::train::{load_params, named_vars, save_checkpoint, save_checkpoint_with_hook, Checkpoint, OptimizerState};
use recur::State;
use serde_json::{json, Value};

use crate::toolkit::Trainer;
use crate::train::RunConfig;

/// Test hook: milliseconds to sleep before each 4 KiB written by a checkpoint save.
pub const WRITE_DELAY_ENV: &str = "RECUR_TEST_WRITE_DELAY_MS";

/// The task tag of a char-LM checkpoint.
pub const TASK: &str = "char-lm";

/// Where a run stands.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RunState {
    /// Optimizer steps taken.
    pub step: usize,
    /// The step this process started at (not saved: equal to `step` after loading).
    pub start_step: usize,
    /// Completed passes over the training text.
    pub epoch: usize,
    /// The next window of the current pass.
    pub position: usize,
    /// Characters trained on.
    pub tokens: u64,
    /// The best validation loss so far.
    pub best_val: Option<f64>,
    /// The step of `best_val`.
    pub best_step: Option<usize>,
    /// Training time so far, over all sessions.
    pub elapsed_s: f64,
    /// `(step, train loss, validation loss)` at every evaluation.
    pub history: Vec<(usize, f64, Option<f64>)>,
    /// Sum and count of the training losses since the last evaluation (the next row's mean).
    pub window_sum: f64,
    /// See `window_sum`.
    pub window_count: usize,
}

/// The text a run trained on: its name (a path, or the embedded corpus's), a CRC-32 of its bytes
/// and its length in characters.
#[derive(Clone, Debug, PartialEq)]
pub struct TextInfo {
    pub name: String,
    pub crc32: String,
    pub chars: usize,
}

/// A checkpoint read back.
pub struct TaskCheckpoint {
    pub config: RunConfig,
    pub vocab: Vocab,
    pub run: RunState,
    pub recur_version: String,
    pub params: BTreeMap<String, Tensor>,
    pub optimizer: Option<OptimizerState>,
    pub schedule: Option<Value>,
    pub carried: Option<State>,
    /// The layers' dropout generator position.
    pub dropout_state: Option<u128>,
    /// The training text (checkpoints before this field was written: unknown).
    pub text: Option<TextInfo>,
}

impl TaskCheckpoint {
    /// The model, with the checkpoint's parameters.
    pub fn model(&self) -> Result<CharLm> {
        let tensors: HashMap<String, Tensor> = self.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu);
        CharLm::new(self.config.model.clone(), vb).context("the checkpoint's parameters do not fit its model")
    }
}

/// Writes `bytes` to `path` atomically, with the library's writer (see
/// `recur::train::write_file_atomic`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    recur::train::write_file_atomic(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

fn config_json(config: &RunConfig) -> Value {
    let m = &config.model;
    json!({
        "model": {
            "vocab_size": m.vocab_size, "cell": m.cell.name(), "embedding_size": m.embedding_size,
            "hidden_size": m.hidden_size, "num_layers": m.num_layers, "dropout": m.dropout,
        },
        "seq_len": config.seq_len, "batch_size": config.batch_size, "lr": config.lr,
        "optimizer": config.optimizer, "lr_schedule": config.lr_schedule, "grad_clip": config.grad_clip,
        "max_steps": config.max_steps, "schedule_steps": config.schedule_steps, "val_fraction": config.val_fraction, "seed": config.seed,
        "eval_every": config.eval_every,
    })
}

fn run_json(run: &RunState) -> Value {
    json!({
        "step": run.step, "epoch": run.epoch, "position": run.position, "tokens": run.tokens,
        "best_val": run.best_val, "best_step": run.best_step, "elapsed_s": run.elapsed_s,
        "window_sum": run.window_sum, "window_count": run.window_count,
        "history": run.history.iter().map(|(s, t, v)| json!([s, t, v])).collect::<Vec<_>>(),
    })
}

/// Saves the model, vocabulary, configuration, run state, optimizer and schedule state and the
/// carried recurrent state to `path`, atomically.
#[allow(clippy::too_many_arguments)]
pub fn save(
    path: &Path,
    model: &CharLm,
    vocab: &Vocab,
    config: &RunConfig,
    run: &RunState,
    trainer: &Trainer,
    carried: Option<&State>,
    text: &TextInfo,
) -> Result<()> {
    let (optimizer, schedule) = trainer.state()?;
    let ckpt = Checkpoint {
        params: model.weights().into_iter().collect(),
        optimizer: Some(optimizer),
        schedule: Some(schedule),
        carried: carried.cloned(),
        config: config_json(config),
        task: json!({
            "task": TASK,
            "vocab": vocab.as_string(),
            "run": run_json(run),
            "text": { "name": text.name, "crc32": text.crc32, "chars": text.chars },
            // u128 as a string: JSON numbers lose precision past 2^53.
            "dropout_state": model.rnn().dropout_state().to_string(),
        }),
        step: run.step as u64,
        epoch: run.epoch as u64,
        position: run.position as u64,
        rng: None,
        recur_version: recur::VERSION.to_string(),
    };
    // Fault-injection tests stretch every save over many milliseconds, so that a kill at a
    // random moment lands inside one (tests/faults.rs); unset, the plain save.
    let delay = std::env::var(WRITE_DELAY_ENV).ok().and_then(|v| v.parse::<u64>().ok()).filter(|&ms| ms > 0);
    match delay {
        Some(ms) => save_checkpoint_with_hook(path, &ckpt, &mut |_| {
            std::thread::sleep(std::time::Duration::from_millis(ms));
            Ok(())
        }),
        None => save_checkpoint(path, &ckpt),
    }
    .with_context(|| format!("cannot save the checkpoint {}", path.display()))
}

fn field<'a>(v: &'a Value, key: &str) -> Result<&'a Value> {
    v.get(key).with_context(|| format!("the checkpoint's metadata lacks `{key}`"))
}

fn as_usize(v: &Value, key: &str) -> Result<usize> {
    field(v, key)?.as_u64().map(|n| n as usize).with_context(|| format!("`{key}` is not a whole number"))
}

fn as_f64(v: &Value, key: &str) -> Result<f64> {
    field(v, key)?.as_f64().with_context(|| format!("`{key}` is not a number"))
}

fn as_str<'a>(v: &'a Value, key: &str) -> Result<&'a str> {
    field(v, key)?.as_str().with_context(|| format!("`{key}` is not a string"))
}

/// Reads and checks a checkpoint written by [`save`].
pub fn load(path: &Path) -> Result<TaskCheckpoint> {
    let ckpt = Checkpoint::load(path)?;
    let task = as_str(&ckpt.task, "task").unwrap_or("none");
    if task != TASK {
        bail!("{} is a checkpoint of task {task:?}, not of the character model", path.display());
    }
    let config = &ckpt.config;
    let model = field(config, "model")?;
    let cell: CellType = as_str(model, "cell")?.parse()?;
    let run_config = RunConfig {
        model: CharLmConfig {
            vocab_size: as_usize(model, "vocab_size")?,
            cell,
            embedding_size: as_usize(model, "embedding_size")?,
            hidden_size: as_usize(model, "hidden_size")?,
            num_layers: as_usize(model, "num_layers")?,
            dropout: as_f64(model, "dropout")?,
        },
        seq_len: as_usize(config, "seq_len")?,
        batch_size: as_usize(config, "batch_size")?,
        lr: as_f64(config, "lr")?,
        optimizer: as_str(config, "optimizer")?.to_string(),
        lr_schedule: as_str(config, "lr_schedule")?.to_string(),
        grad_clip: as_f64(config, "grad_clip")?,
        max_steps: as_usize(config, "max_steps")?,
        // Written since the schedule's horizon stopped following --max-steps on resume.
        schedule_steps: match config.get("schedule_steps") {
            Some(_) => as_usize(config, "schedule_steps")?,
            None => as_usize(config, "max_steps")?,
        },
        val_fraction: as_f64(config, "val_fraction")?,
        seed: field(config, "seed")?.as_u64().context("`seed` is not a whole number")?,
        eval_every: as_usize(config, "eval_every")?,
    };
    let vocab = Vocab::from_chars(as_str(&ckpt.task, "vocab")?.chars().collect())?;
    if vocab.len() != run_config.model.vocab_size {
        bail!("the checkpoint's vocabulary has {} characters, its model {}", vocab.len(), run_config.model.vocab_size);
    }
    let run = field(&ckpt.task, "run")?;
    let history = field(run, "history")?
        .as_array()
        .context("`history` is not a list")?
        .iter()
        .map(|row| {
            let s = row.get(0).and_then(Value::as_u64).context("bad history row")? as usize;
            let t = row.get(1).and_then(Value::as_f64).unwrap_or(f64::NAN);
            Ok((s, t, row.get(2).and_then(Value::as_f64)))
        })
        .collect::<Result<Vec<_>>>()?;
    let step = ckpt.step as usize;
    let run = RunState {
        step,
        start_step: step,
        epoch: ckpt.epoch as usize,
        position: ckpt.position as usize,
        tokens: field(run, "tokens")?.as_u64().context("`tokens` is not a whole number")?,
        best_val: field(run, "best_val")?.as_f64(),
        best_step: run.get("best_step").and_then(Value::as_u64).map(|s| s as usize),
        elapsed_s: as_f64(run, "elapsed_s")?,
        history,
        window_sum: run.get("window_sum").and_then(Value::as_f64).unwrap_or(0.0),
        window_count: run.get("window_count").and_then(Value::as_u64).unwrap_or(0) as usize,
    };
    let text = ckpt.task.get("text").and_then(|t| {
        Some(TextInfo {
            name: t.get("name")?.as_str()?.to_string(),
            crc32: t.get("crc32")?.as_str()?.to_string(),
            chars: t.get("chars")?.as_u64()? as usize,
        })
    });
    Ok(TaskCheckpoint {
        config: run_config,
        vocab,
        run,
        recur_version: ckpt.recur_version.clone(),
        params: ckpt.params,
        optimizer: ckpt.optimizer,
        schedule: ckpt.schedule,
        carried: ckpt.carried,
        dropout_state: ckpt.task.get("dropout_state").and_then(Value::as_str).and_then(|s| s.parse().ok()),
        text,
    })
}

/// Puts the checkpoint's parameters into the run's variables (every missing, unexpected or
/// mis-shaped one reported at once) and restores the optimizer and schedule.
pub fn restore(ckpt: &TaskCheckpoint, varmap: &VarMap, trainer: &mut Trainer) -> Result<()> {
    load_params(&ckpt.params, &named_vars(varmap), false).context("the checkpoint does not fit the model")?;
    match (&ckpt.optimizer, &ckpt.schedule) {
        (Some(optimizer), Some(schedule)) => trainer.restore(optimizer, schedule),
        _ => bail!("the checkpoint holds no optimizer or schedule state, so the run cannot continue exactly"),
    }
}
