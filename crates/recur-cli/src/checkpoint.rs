//! Checkpoints of the character model: the parameters under PyTorch's names plus what a run needs
//! to continue or to be used (configuration, vocabulary, position, history), in one safetensors
//! file written atomically.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use recur::data::Vocab;
use recur::models::{CellType, CharLm, CharLmConfig};
use serde_json::{json, Value};

use crate::toolkit::Trainer;
use crate::train::RunConfig;

/// The format tag of a char-LM checkpoint.
pub const TASK: &str = "char-lm";
/// The layout version this binary writes and reads.
pub const FORMAT_VERSION: u64 = 1;

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
    /// Training time so far, over all sessions.
    pub elapsed_s: f64,
    /// `(step, train loss, validation loss)` at every evaluation.
    pub history: Vec<(usize, f64, Option<f64>)>,
}

/// A checkpoint read back.
pub struct TaskCheckpoint {
    pub config: RunConfig,
    pub vocab: Vocab,
    pub run: RunState,
    pub recur_version: String,
    pub tensors: HashMap<String, Tensor>,
}

impl TaskCheckpoint {
    /// The model, with the checkpoint's parameters.
    pub fn model(&self) -> Result<CharLm> {
        let vb = VarBuilder::from_tensors(self.tensors.clone(), DType::F32, &Device::Cpu);
        CharLm::new(self.config.model.clone(), vb).context("the checkpoint's parameters do not fit its model")
    }
}

/// Writes `bytes` to `path` so that `path` holds either its old content or all of the new: a
/// temporary file in the same folder, flushed to disk, renamed over `path`, then the folder synced.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = (|| -> std::io::Result<()> {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)?;
        if let Ok(d) = std::fs::File::open(dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e).with_context(|| format!("cannot write {}", path.display()));
    }
    Ok(())
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
        "max_steps": config.max_steps, "val_fraction": config.val_fraction, "seed": config.seed,
        "eval_every": config.eval_every,
    })
}

fn run_json(run: &RunState) -> Value {
    json!({
        "step": run.step, "epoch": run.epoch, "position": run.position, "tokens": run.tokens,
        "best_val": run.best_val, "elapsed_s": run.elapsed_s,
        "history": run.history.iter().map(|(s, t, v)| json!([s, t, v])).collect::<Vec<_>>(),
    })
}

/// Saves the model, vocabulary, configuration and run state to `path`, atomically.
pub fn save(
    path: &Path,
    model: &CharLm,
    vocab: &Vocab,
    config: &RunConfig,
    run: &RunState,
    _trainer: &Trainer,
    _varmap: &VarMap,
) -> Result<()> {
    let weights = model.weights();
    let mut metadata = HashMap::new();
    metadata.insert("format".to_string(), "recur-checkpoint".to_string());
    metadata.insert("format_version".to_string(), FORMAT_VERSION.to_string());
    metadata.insert("task".to_string(), TASK.to_string());
    metadata.insert("recur_version".to_string(), recur::VERSION.to_string());
    metadata.insert("config".to_string(), config_json(config).to_string());
    metadata.insert("vocab".to_string(), serde_json::to_string(&vocab.as_string())?);
    metadata.insert("run".to_string(), run_json(run).to_string());
    let data: Vec<(String, Vec<u8>, Vec<usize>)> = weights
        .iter()
        .map(|(name, t)| {
            let values = t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?;
            let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            Ok((name.clone(), bytes, t.dims().to_vec()))
        })
        .collect::<Result<_>>()?;
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(name, bytes, shape)| {
            Ok((name.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), bytes)?))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, Some(metadata)).context("cannot serialise the checkpoint")?;
    write_atomic(path, &bytes)
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
    let bytes = std::fs::read(path).with_context(|| format!("cannot read the checkpoint {}", path.display()))?;
    let (_, header) = safetensors::SafeTensors::read_metadata(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a safetensors file ({e})", path.display()))?;
    let meta = header.metadata().clone().unwrap_or_default();
    let get = |k: &str| meta.get(k).map(String::as_str);
    if get("format") != Some("recur-checkpoint") {
        bail!("{} is not a Recur checkpoint (no recur-checkpoint format tag)", path.display());
    }
    if get("task") != Some(TASK) {
        bail!(
            "{} is a checkpoint of task {:?}, not of the character model",
            path.display(),
            get("task").unwrap_or("?")
        );
    }
    let version: u64 = get("format_version").and_then(|v| v.parse().ok()).unwrap_or(0);
    if version != FORMAT_VERSION {
        bail!(
            "{} has checkpoint format version {version}; this recur {} reads version {FORMAT_VERSION}",
            path.display(),
            recur::VERSION
        );
    }
    let config: Value = serde_json::from_str(get("config").unwrap_or("")).context("the config metadata is not JSON")?;
    let model = field(&config, "model")?;
    let cell: CellType = as_str(model, "cell")?.parse()?;
    let config = RunConfig {
        model: CharLmConfig {
            vocab_size: as_usize(model, "vocab_size")?,
            cell,
            embedding_size: as_usize(model, "embedding_size")?,
            hidden_size: as_usize(model, "hidden_size")?,
            num_layers: as_usize(model, "num_layers")?,
            dropout: as_f64(model, "dropout")?,
        },
        seq_len: as_usize(&config, "seq_len")?,
        batch_size: as_usize(&config, "batch_size")?,
        lr: as_f64(&config, "lr")?,
        optimizer: as_str(&config, "optimizer")?.to_string(),
        lr_schedule: as_str(&config, "lr_schedule")?.to_string(),
        grad_clip: as_f64(&config, "grad_clip")?,
        max_steps: as_usize(&config, "max_steps")?,
        val_fraction: as_f64(&config, "val_fraction")?,
        seed: field(&config, "seed")?.as_u64().context("`seed` is not a whole number")?,
        eval_every: as_usize(&config, "eval_every")?,
    };
    let vocab: String = serde_json::from_str(get("vocab").unwrap_or("")).context("the vocab metadata is not JSON")?;
    let vocab = Vocab::from_chars(vocab.chars().collect())?;
    if vocab.len() != config.model.vocab_size {
        bail!("the checkpoint's vocabulary has {} characters, its model {}", vocab.len(), config.model.vocab_size);
    }
    let run: Value = serde_json::from_str(get("run").unwrap_or("")).context("the run metadata is not JSON")?;
    let history = field(&run, "history")?
        .as_array()
        .context("`history` is not a list")?
        .iter()
        .map(|row| {
            let s = row.get(0).and_then(Value::as_u64).context("bad history row")? as usize;
            let t = row.get(1).and_then(Value::as_f64).unwrap_or(f64::NAN);
            Ok((s, t, row.get(2).and_then(Value::as_f64)))
        })
        .collect::<Result<Vec<_>>>()?;
    let step = as_usize(&run, "step")?;
    let run = RunState {
        step,
        start_step: step,
        epoch: as_usize(&run, "epoch")?,
        position: as_usize(&run, "position")?,
        tokens: field(&run, "tokens")?.as_u64().context("`tokens` is not a whole number")?,
        best_val: field(&run, "best_val")?.as_f64(),
        elapsed_s: as_f64(&run, "elapsed_s")?,
        history,
    };
    let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu)
        .with_context(|| format!("cannot read the tensors of {}", path.display()))?;
    Ok(TaskCheckpoint { config, vocab, run, recur_version: get("recur_version").unwrap_or("?").to_string(), tensors })
}

/// Puts the checkpoint's parameters into the run's variables, reporting every missing,
/// unexpected or mis-shaped one at once.
pub fn restore(ckpt: &TaskCheckpoint, varmap: &VarMap, _trainer: &mut Trainer) -> Result<()> {
    let vars = varmap.data().lock().map_err(|_| anyhow::anyhow!("the parameter map is poisoned"))?;
    let mut problems = Vec::new();
    for (name, var) in vars.iter() {
        match ckpt.tensors.get(name) {
            None => problems.push(format!("missing {name}")),
            Some(t) if t.dims() != var.as_tensor().dims() => {
                problems.push(format!("{name} has shape {:?}, the model needs {:?}", t.dims(), var.as_tensor().dims()))
            }
            Some(t) => var.set(&t.to_dtype(DType::F32)?)?,
        }
    }
    for name in ckpt.tensors.keys() {
        if !vars.contains_key(name) {
            problems.push(format!("unexpected {name}"));
        }
    }
    if !problems.is_empty() {
        problems.sort();
        bail!("the checkpoint does not fit the model: {}", problems.join("; "));
    }
    Ok(())
}
