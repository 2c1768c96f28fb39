//! The optimizer side of a run, from `recur::train`: gradient clipping, optimizer and learning-rate
//! schedule, chosen by name on the command line (the loss is the model's, `CharLm::loss`).

use anyhow::{bail, Result};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use recur::train::{
    clip_grad_norm, named_vars, Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, LrSchedule, NormType,
    Optimizer, OptimizerState, RmsProp, RmsPropConfig, Scheduler, Sgd, SgdConfig,
};
use serde_json::Value;

use crate::train::RunConfig;

/// The names `--optimizer` accepts.
pub const OPTIMIZERS: [&str; 5] = ["adam", "adamw", "sgd", "rmsprop", "adagrad"];
/// The names `--lr-schedule` accepts.
pub const SCHEDULES: [&str; 5] = ["constant", "cosine", "step", "exponential", "plateau"];

/// Checks the optimizer and schedule names before anything is built.
pub fn check_names(optimizer: &str, schedule: &str) -> Result<()> {
    if !OPTIMIZERS.contains(&optimizer) {
        bail!("unknown --optimizer {optimizer:?}; use one of {}", OPTIMIZERS.join(", "));
    }
    if !SCHEDULES.contains(&schedule) {
        bail!("unknown --lr-schedule {schedule:?}; use one of {}", SCHEDULES.join(", "));
    }
    Ok(())
}

/// Optimizer, schedule and clipping of one run.
pub struct Trainer {
    vars: Vec<Var>,
    optimizer: Box<dyn Optimizer>,
    scheduler: Scheduler,
    plateau: bool,
    grad_clip: f64,
}

impl Trainer {
    /// Builds the optimizer named in `config` over every variable of `varmap`.
    pub fn new(varmap: &VarMap, config: &RunConfig) -> Result<Self> {
        check_names(&config.optimizer, &config.lr_schedule)?;
        let named = named_vars(varmap);
        let vars = named.iter().map(|(_, v)| v.clone()).collect();
        let lr = config.lr;
        let optimizer: Box<dyn Optimizer> = match config.optimizer.as_str() {
            "adam" => Box::new(Adam::new(named, AdamConfig { lr, ..AdamConfig::default() })?),
            "adamw" => Box::new(AdamW::new(
                named,
                AdamWConfig(AdamConfig { lr, weight_decay: 0.01, ..AdamConfig::default() }),
            )?),
            "sgd" => Box::new(Sgd::new(named, SgdConfig { lr, momentum: 0.9, ..SgdConfig::default() })?),
            "rmsprop" => Box::new(RmsProp::new(named, RmsPropConfig { lr, ..RmsPropConfig::default() })?),
            _ => Box::new(Adagrad::new(named, AdagradConfig { lr, ..AdagradConfig::default() })?),
        };
        let steps = config.schedule_steps as u64;
        let schedule = match config.lr_schedule.as_str() {
            "constant" => LrSchedule::Constant,
            "cosine" => LrSchedule::Cosine { t_max: steps, eta_min: lr / 20.0, warmup: (steps / 50).min(100) },
            "step" => LrSchedule::Step { step_size: (steps / 3).max(1), gamma: 0.3 },
            // A tenth of the rate by the last step.
            "exponential" => LrSchedule::Exponential { gamma: 0.1f64.powf(1.0 / steps.max(1) as f64) },
            _ => LrSchedule::plateau(),
        };
        let plateau = matches!(schedule, LrSchedule::ReduceOnPlateau { .. });
        let scheduler = Scheduler::new(schedule, lr)?;
        let mut trainer = Self { vars, optimizer, scheduler, plateau, grad_clip: config.grad_clip };
        trainer.scheduler.apply(trainer.optimizer.as_mut());
        Ok(trainer)
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.optimizer.learning_rate()
    }

    /// Backward, clip, step, advance the schedule; returns the gradients' global norm before
    /// clipping. A non-finite norm (an overflow or a NaN anywhere in the gradients) returns
    /// `None` and changes nothing: the parameters stay as they were.
    pub fn step(&mut self, loss: &Tensor) -> Result<Option<f64>> {
        let mut grads = loss.backward()?;
        let max_norm = if self.grad_clip > 0.0 { self.grad_clip } else { f64::INFINITY };
        let norm = clip_grad_norm(&self.vars, &mut grads, max_norm, NormType::L2, false)?;
        if !norm.is_finite() {
            return Ok(None);
        }
        self.optimizer.step(&grads)?;
        if !self.plateau {
            self.scheduler.step(None)?;
            self.scheduler.apply(self.optimizer.as_mut());
        }
        Ok(Some(norm))
    }

    /// Whether the schedule depends on the number of steps (cosine, step, exponential).
    pub fn has_horizon(&self) -> bool {
        !self.plateau && !matches!(self.scheduler.schedule(), LrSchedule::Constant)
    }

    /// The rate the schedule ends at, after its horizon.
    pub fn final_lr(&self, steps: u64) -> f64 {
        self.scheduler.rate_after(steps)
    }

    /// After an evaluation: a plateau schedule reacts to the validation loss.
    pub fn evaluated(&mut self, val_loss: Option<f64>) -> Result<()> {
        if let (true, Some(v)) = (self.plateau, val_loss) {
            self.scheduler.step(Some(v))?;
            self.scheduler.apply(self.optimizer.as_mut());
        }
        Ok(())
    }

    /// Optimizer and schedule state, for a checkpoint.
    pub fn state(&self) -> Result<(OptimizerState, Value)> {
        Ok((self.optimizer.state_dict()?, self.scheduler.state_json()))
    }

    /// Restores the state saved by [`Trainer::state`].
    pub fn restore(&mut self, optimizer: &OptimizerState, schedule: &Value) -> Result<()> {
        self.optimizer.load_state_dict(optimizer)?;
        self.scheduler.load_state_json(schedule)?;
        self.scheduler.apply(self.optimizer.as_mut());
        Ok(())
    }
}
