//! Typed task checkpoints: what [`crate::train::Trainer`] saves and resumes from, on top of the
//! safetensors [`Checkpoint`] format.
//!
//! In the file's metadata, `config` holds `{"model": …, "trainer": …}` (the model's configuration
//! as its serde form, the [`TrainerConfig`]) and `task` holds `{"task": name, "task_version": 2,
//! "data": …, "run": …, "generator": …}`: the task's name (`char-lm`, …), the data schema the
//! model needs to be used (a vocabulary, label names…), the [`RunState`] and the model's dropout
//! generator position. Python reads it with `safetensors.safe_open(path, "pt").metadata()`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Tensor;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use crate::train::{Checkpoint, OptimizerState, RunState, TrainerConfig};
use crate::{Error, Result, State};

/// The layout version of the `task` metadata this library writes (1: the `recur train` layout
/// before the library trainer, read by [`crate::models::load_char_lm`]).
pub const TASK_FORMAT_VERSION: u64 = 2;

/// A task's checkpoint, read back.
#[derive(Clone, Debug)]
pub struct TaskCheckpoint {
    /// The task's name, e.g. `char-lm`.
    pub task: String,
    /// The model's configuration (its serde form); [`TaskCheckpoint::model_config`] types it.
    pub model: Value,
    /// What the task needs beside the parameters to use the model (vocabulary, labels…).
    pub data: Value,
    /// The loop's configuration.
    pub trainer: TrainerConfig,
    /// Where the run stands.
    pub run: RunState,
    /// The parameters under their (PyTorch) names.
    pub params: BTreeMap<String, Tensor>,
    /// The optimizer's state.
    pub optimizer: Option<OptimizerState>,
    /// The schedule's state.
    pub schedule: Option<Value>,
    /// The state carried between batches (truncated BPTT).
    pub carried: Option<State>,
    /// The model's dropout generator position.
    pub generator: Option<u128>,
    /// The Recur version that wrote the file.
    pub recur_version: String,
}

fn bad(origin: &str, message: impl Into<String>) -> Error {
    Error::checkpoint(origin, message, "pass a checkpoint written by this task's training")
}

impl TaskCheckpoint {
    /// The model configuration, typed; an error names what does not fit.
    pub fn model_config<C: DeserializeOwned>(&self) -> Result<C> {
        serde_json::from_value(self.model.clone())
            .map_err(|e| bad(&self.task, format!("its model configuration does not fit ({e})")))
    }

    /// The task data, typed.
    pub fn data<C: DeserializeOwned>(&self) -> Result<C> {
        serde_json::from_value(self.data.clone())
            .map_err(|e| bad(&self.task, format!("its task data does not fit ({e})")))
    }

    /// As the safetensors checkpoint it is saved as.
    pub fn to_checkpoint(&self) -> Result<Checkpoint> {
        let trainer = serde_json::to_value(&self.trainer).map_err(|e| bad(&self.task, e.to_string()))?;
        let run = serde_json::to_value(&self.run).map_err(|e| bad(&self.task, e.to_string()))?;
        Ok(Checkpoint {
            params: self.params.clone(),
            optimizer: self.optimizer.clone(),
            schedule: self.schedule.clone(),
            carried: self.carried.clone(),
            config: json!({ "model": self.model, "trainer": trainer }),
            task: json!({
                "task": self.task,
                "task_version": TASK_FORMAT_VERSION,
                "data": self.data,
                "run": run,
                // u128 as a string: JSON numbers lose precision past 2^53.
                "generator": self.generator.map(|g| g.to_string()),
            }),
            step: self.run.step as u64,
            epoch: self.run.epoch as u64,
            position: self.run.position as u64,
            rng: None,
            recur_version: crate::VERSION.to_string(),
        })
    }

    /// Reads the task checkpoint at `path`, which must be of task `task`.
    pub fn load(path: &Path, task: &str) -> Result<Self> {
        let ckpt = Checkpoint::load(path)?;
        Self::from_checkpoint(ckpt, &path.display().to_string(), task)
    }

    /// The task checkpoint in `ckpt` (read from `origin`), which must be of task `task`.
    pub fn from_checkpoint(ckpt: Checkpoint, origin: &str, task: &str) -> Result<Self> {
        let found = ckpt.task.get("task").and_then(Value::as_str).unwrap_or("none");
        if found != task {
            return Err(Error::checkpoint(
                origin,
                format!("this is a checkpoint of task {found:?}, not of {task:?}"),
                format!("pass a checkpoint of the {task} task"),
            ));
        }
        match ckpt.task.get("task_version").and_then(Value::as_u64) {
            Some(TASK_FORMAT_VERSION) => {}
            Some(v) if v > TASK_FORMAT_VERSION => {
                return Err(Error::checkpoint(
                    origin,
                    format!(
                        "task layout version {v} is newer than this Recur ({}) reads ({TASK_FORMAT_VERSION})",
                        crate::VERSION
                    ),
                    "upgrade Recur",
                ))
            }
            other => return Err(bad(origin, format!("unsupported task layout version {other:?}"))),
        }
        let field = |v: &Value, key: &str| -> Result<Value> {
            v.get(key).cloned().ok_or_else(|| bad(origin, format!("its metadata lacks `{key}`")))
        };
        let trainer: TrainerConfig = serde_json::from_value(field(&ckpt.config, "trainer")?)
            .map_err(|e| bad(origin, format!("its trainer configuration does not fit ({e})")))?;
        let run: RunState = serde_json::from_value(field(&ckpt.task, "run")?)
            .map_err(|e| bad(origin, format!("its run state does not fit ({e})")))?;
        if run.step as u64 != ckpt.step {
            return Err(bad(origin, format!("its run state is at step {}, its header at {}", run.step, ckpt.step)));
        }
        let generator = match ckpt.task.get("generator") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => {
                Some(s.parse().map_err(|_| bad(origin, format!("generator state {s:?} is not a number")))?)
            }
            Some(other) => return Err(bad(origin, format!("generator state {other} is not a string"))),
        };
        Ok(Self {
            task: found.to_string(),
            model: field(&ckpt.config, "model")?,
            data: ckpt.task.get("data").cloned().unwrap_or(Value::Null),
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
}
