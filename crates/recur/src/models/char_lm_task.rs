//! The character model as a training task: [`CharLmTraining`] (the [`Model`] the trainer runs:
//! truncated BPTT with the state carried between windows, validation over streams),
//! [`CharWindows`] (the [`DataSource`]: `B` contiguous streams read side by side), the task data a
//! checkpoint keeps ([`CharLmData`]), and [`load_char_lm`], which gives the model of a `recur
//! train` checkpoint back in one call.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::data::{evaluate_streams, Streams, Vocab};
use crate::models::{CharLm, CharLmConfig};
use crate::train::{
    named_vars, Checkpoint, DataSource, HistoryRow, LrSchedule, Metrics, Model, OptimizerConfig, RunState,
    TaskCheckpoint, TrainerConfig,
};
use crate::{Error, Result, State};

/// The task name of character-model checkpoints.
pub const CHAR_LM_TASK: &str = "char-lm";

/// The text a run trained on: its name (a path, or the embedded corpus's), a CRC-32 of its bytes
/// (eight hex digits) and its length in characters.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TextSource {
    /// A path, or the name of an embedded text.
    pub name: String,
    /// CRC-32 (IEEE) of the text's bytes, as eight hex digits.
    pub crc32: String,
    /// Its length in characters.
    pub chars: usize,
}

/// What a character-model checkpoint keeps beside the model: the vocabulary and how the text is
/// read.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharLmData {
    /// The vocabulary's characters, in id order.
    pub vocab: String,
    /// Characters per truncated-BPTT window.
    pub seq_len: usize,
    /// Streams read side by side.
    pub batch_size: usize,
    /// The fraction of the text, from its end, that validates.
    pub val_fraction: f64,
    /// The seed of initialisation and dropout.
    pub seed: u64,
    /// The training text (unknown for checkpoints of the first layout that lack it).
    #[serde(default)]
    pub text: Option<TextSource>,
}

impl CharLmData {
    /// The vocabulary.
    pub fn vocab(&self) -> Result<Vocab> {
        Vocab::from_chars(self.vocab.chars().collect())
    }
}

/// A character model that trains with truncated BPTT: each window starts from the state the
/// previous window of the same rows ended with (detached), and an epoch starts from zeros.
pub struct CharLmTraining {
    model: CharLm,
    varmap: VarMap,
    carried: Option<State>,
    val: Vec<u32>,
    batch_size: usize,
    seq_len: usize,
}

impl CharLmTraining {
    /// `model` (its variables in `varmap`), validated on `val` (empty: no validation) read as
    /// `batch_size` streams in windows of `seq_len`.
    pub fn new(model: CharLm, varmap: VarMap, val: Vec<u32>, batch_size: usize, seq_len: usize) -> Self {
        Self { model, varmap, carried: None, val, batch_size, seq_len }
    }

    /// A fresh model of `config`, its parameters drawn from `seed` as PyTorch draws them.
    pub fn build(config: CharLmConfig, seed: u64, val: Vec<u32>, batch_size: usize, seq_len: usize) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = crate::seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let model = CharLm::new(config, vb)?;
        Ok(Self::new(model, varmap, val, batch_size, seq_len))
    }

    /// The model.
    pub fn lm(&self) -> &CharLm {
        &self.model
    }
}

impl Model for CharLmTraining {
    type Batch = (Tensor, Tensor);

    fn vars(&self) -> Vec<(String, Var)> {
        named_vars(&self.varmap)
    }

    fn set_training(&self, training: bool) {
        self.model.set_training(training);
    }

    fn loss(&mut self, (x, y): &Self::Batch) -> Result<Tensor> {
        let (loss, next) = self.model.loss(x, y, self.carried.as_ref())?;
        self.carried = Some(next.detach());
        Ok(loss)
    }

    fn evaluate(&mut self) -> Result<Option<Metrics>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let (loss, _) = evaluate_streams(&self.model, &self.val, self.batch_size, self.seq_len)?;
        Ok(Some(Metrics::from([("loss".to_string(), loss)])))
    }

    fn carried(&self) -> Option<State> {
        self.carried.clone()
    }

    fn set_carried(&mut self, state: Option<State>) {
        self.carried = state;
    }

    fn generator_state(&self) -> Option<u128> {
        Some(self.model.rnn().dropout_state())
    }

    fn set_generator_state(&mut self, state: u128) {
        self.model.rnn().set_dropout_state(state);
    }
}

/// The training text as `batch_size` contiguous streams, one window of `seq_len` characters
/// (and the next character as target) per batch.
pub struct CharWindows {
    streams: Streams,
    seq_len: usize,
    device: Device,
}

impl CharWindows {
    /// Cuts `ids` into `batch_size` rows (the remainder is dropped).
    pub fn new(ids: &[u32], batch_size: usize, seq_len: usize) -> Self {
        Self { streams: Streams::new(ids, batch_size), seq_len, device: Device::Cpu }
    }
}

impl DataSource for CharWindows {
    type Batch = (Tensor, Tensor);

    fn batches_per_epoch(&self) -> usize {
        self.streams.windows(self.seq_len)
    }

    fn batch(&self, _epoch: usize, index: usize) -> Result<Self::Batch> {
        let (x, y) = self.streams.window(index, self.seq_len, &self.device)?;
        let y = y.reshape(x.shape())?;
        Ok((x, y))
    }

    fn items_per_batch(&self) -> usize {
        self.streams.batch() * self.seq_len
    }
}

/// A character model read back from a checkpoint.
pub struct LoadedCharLm {
    /// The model, with the checkpoint's parameters.
    pub model: CharLm,
    /// Its configuration.
    pub config: CharLmConfig,
    /// Its vocabulary.
    pub vocab: Vocab,
    /// The task data (how the text was read, which text).
    pub data: CharLmData,
    /// The whole checkpoint (run state, optimizer…), to resume from.
    pub checkpoint: TaskCheckpoint,
}

/// Reads a character-model checkpoint written by `recur train` (this layout or the first one)
/// and builds its model: one call from a file to a model that generates and scores text.
///
/// Every problem is one typed error that names it: not a safetensors file, a PyTorch pickle, a
/// truncated or bit-flipped file (checksum), another task, a newer layout, a configuration that
/// does not fit the tensors. Reading never modifies the file.
pub fn load_char_lm(path: &Path) -> Result<LoadedCharLm> {
    let origin = path.display().to_string();
    let raw = Checkpoint::load(path)?;
    let checkpoint = if raw.task.get("task_version").is_none()
        && raw.task.get("task").and_then(Value::as_str) == Some(CHAR_LM_TASK)
    {
        first_layout(raw, &origin)?
    } else {
        TaskCheckpoint::from_checkpoint(raw, &origin, CHAR_LM_TASK)?
    };
    let config: CharLmConfig = checkpoint.model_config()?;
    let data: CharLmData = checkpoint.data()?;
    let vocab = data.vocab()?;
    if vocab.len() != config.vocab_size {
        return Err(Error::checkpoint(
            origin,
            format!("its vocabulary has {} characters, its model {}", vocab.len(), config.vocab_size),
            "pass a checkpoint written by recur train",
        ));
    }
    let tensors: HashMap<String, Tensor> = checkpoint.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let model =
        CharLm::new(config.clone(), VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).map_err(|e| {
            Error::checkpoint(
                &origin,
                format!("its parameters do not fit its model ({e})"),
                "pass a checkpoint written by recur train",
            )
        })?;
    Ok(LoadedCharLm { model, config, vocab, data, checkpoint })
}

/// The `recur train` checkpoint layout before the library trainer (`task` without
/// `task_version`; `config` with the run's flags at its top level), as a [`TaskCheckpoint`].
fn first_layout(ckpt: Checkpoint, origin: &str) -> Result<TaskCheckpoint> {
    let bad = |message: String| Error::checkpoint(origin, message, "pass a checkpoint written by recur train");
    let get = |v: &Value, key: &str| v.get(key).cloned().ok_or_else(|| bad(format!("its metadata lacks `{key}`")));
    let num = |v: &Value, key: &str| get(v, key)?.as_f64().ok_or_else(|| bad(format!("`{key}` is not a number")));
    let whole =
        |v: &Value, key: &str| get(v, key)?.as_u64().ok_or_else(|| bad(format!("`{key}` is not a whole number")));
    let text = |v: &Value, key: &str| -> Result<String> {
        get(v, key)?.as_str().map(str::to_string).ok_or_else(|| bad(format!("`{key}` is not a string")))
    };
    let (config, task) = (&ckpt.config, &ckpt.task);
    let lr = num(config, "lr")?;
    let max_steps = whole(config, "max_steps")? as usize;
    let horizon = config.get("schedule_steps").and_then(Value::as_u64).unwrap_or(max_steps as u64);
    let trainer = TrainerConfig {
        grad_clip: num(config, "grad_clip")?,
        ..TrainerConfig::new(
            max_steps,
            whole(config, "eval_every")? as usize,
            OptimizerConfig::by_name(&text(config, "optimizer")?, lr)?,
            LrSchedule::by_name(&text(config, "lr_schedule")?, horizon, lr)?,
        )
    };
    let data = CharLmData {
        vocab: text(task, "vocab")?,
        seq_len: whole(config, "seq_len")? as usize,
        batch_size: whole(config, "batch_size")? as usize,
        val_fraction: num(config, "val_fraction")?,
        seed: whole(config, "seed")?,
        text: task.get("text").and_then(|t| serde_json::from_value(t.clone()).ok()),
    };
    let run = get(task, "run")?;
    let history = get(&run, "history")?
        .as_array()
        .ok_or_else(|| bad("`history` is not a list".into()))?
        .iter()
        .map(|row| {
            let step = row.get(0).and_then(Value::as_u64).ok_or_else(|| bad("a history row has no step".into()))?;
            let metrics = row.get(2).and_then(Value::as_f64).map(|v| Metrics::from([("loss".to_string(), v)]));
            Ok(HistoryRow {
                step: step as usize,
                train_loss: row.get(1).and_then(Value::as_f64),
                metrics: metrics.unwrap_or_default(),
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let run = RunState {
        step: ckpt.step as usize,
        epoch: ckpt.epoch as usize,
        position: ckpt.position as usize,
        items: whole(&run, "tokens")?,
        best: run.get("best_val").and_then(Value::as_f64),
        best_step: run.get("best_step").and_then(Value::as_u64).map(|s| s as usize),
        evals_since_best: 0,
        elapsed_s: num(&run, "elapsed_s")?,
        history,
        window_sum: run.get("window_sum").and_then(Value::as_f64).unwrap_or(0.0),
        window_count: run.get("window_count").and_then(Value::as_u64).unwrap_or(0) as usize,
    };
    let generator = task.get("dropout_state").and_then(Value::as_str).and_then(|s| s.parse().ok());
    Ok(TaskCheckpoint {
        task: CHAR_LM_TASK.to_string(),
        model: get(config, "model")?,
        data: serde_json::to_value(&data).map_err(|e| bad(e.to_string()))?,
        trainer,
        run,
        params: ckpt.params,
        optimizer: ckpt.optimizer,
        schedule: ckpt.schedule,
        carried: ckpt.carried,
        generator,
        recur_version: ckpt.recur_version,
    })
}

/// A model read back from any task's checkpoint.
pub enum LoadedModel {
    /// A character language model (`recur train`).
    CharLm(Box<LoadedCharLm>),
    /// A sequence classifier (`recur classify`).
    Classifier(Box<crate::models::LoadedClassifier>),
}

/// Reads the checkpoint at `path`, whatever its task, and builds its model.
pub fn load(path: &Path) -> Result<LoadedModel> {
    let raw = Checkpoint::load(path)?;
    match raw.task.get("task").and_then(Value::as_str) {
        Some(CHAR_LM_TASK) => Ok(LoadedModel::CharLm(Box::new(load_char_lm(path)?))),
        Some(crate::models::CLASSIFY_TASK) => {
            Ok(LoadedModel::Classifier(Box::new(crate::models::load_classifier(path)?)))
        }
        other => Err(Error::checkpoint(
            path.display().to_string(),
            format!("its task {other:?} is none this Recur ({}) builds", crate::VERSION),
            format!("tasks known: {CHAR_LM_TASK}, {}", crate::models::CLASSIFY_TASK),
        )),
    }
}
