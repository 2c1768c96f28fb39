//! The update side of a training run, as configuration: which optimizer with which rate, the
//! learning-rate schedule, gradient clipping; and [`Optimization`], which applies them.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::train::{
    clip_grad_norm, Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, LrSchedule, NormType, Optimizer,
    OptimizerState, RmsProp, RmsPropConfig, Scheduler, Sgd, SgdConfig,
};
use crate::{Error, Result};

/// An optimizer and its hyper-parameters (PyTorch's defaults for the rest).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// `torch.optim.Adam(lr)`.
    Adam {
        /// Learning rate.
        lr: f64,
    },
    /// `torch.optim.AdamW(lr, weight_decay)`.
    AdamW {
        /// Learning rate.
        lr: f64,
        /// Decoupled weight decay.
        weight_decay: f64,
    },
    /// `torch.optim.SGD(lr, momentum)`.
    Sgd {
        /// Learning rate.
        lr: f64,
        /// Momentum factor.
        momentum: f64,
    },
    /// `torch.optim.RMSprop(lr)`.
    RmsProp {
        /// Learning rate.
        lr: f64,
    },
    /// `torch.optim.Adagrad(lr)`.
    Adagrad {
        /// Learning rate.
        lr: f64,
    },
}

impl OptimizerConfig {
    /// The names [`OptimizerConfig::by_name`] accepts.
    pub const NAMES: [&'static str; 5] = ["adam", "adamw", "sgd", "rmsprop", "adagrad"];

    /// `adam`, `adamw` (weight decay 0.01), `sgd` (momentum 0.9), `rmsprop`, `adagrad` at `lr`.
    pub fn by_name(name: &str, lr: f64) -> Result<Self> {
        if !(lr.is_finite() && lr > 0.0) {
            return Err(Error::config(
                "optimizer",
                format!("the learning rate must be positive, got {lr}"),
                "pass a rate such as 2e-3",
            ));
        }
        Ok(match name {
            "adam" => Self::Adam { lr },
            "adamw" => Self::AdamW { lr, weight_decay: 0.01 },
            "sgd" => Self::Sgd { lr, momentum: 0.9 },
            "rmsprop" => Self::RmsProp { lr },
            "adagrad" => Self::Adagrad { lr },
            other => {
                return Err(Error::config(
                    "optimizer",
                    format!("unknown optimizer {other:?}"),
                    format!("use one of {}", Self::NAMES.join(", ")),
                ))
            }
        })
    }

    /// The short name (`adam`, …).
    pub fn name(&self) -> &'static str {
        match self {
            Self::Adam { .. } => "adam",
            Self::AdamW { .. } => "adamw",
            Self::Sgd { .. } => "sgd",
            Self::RmsProp { .. } => "rmsprop",
            Self::Adagrad { .. } => "adagrad",
        }
    }

    /// The base learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            Self::Adam { lr }
            | Self::AdamW { lr, .. }
            | Self::Sgd { lr, .. }
            | Self::RmsProp { lr }
            | Self::Adagrad { lr } => lr,
        }
    }

    /// The optimizer over `vars`.
    pub fn build(&self, vars: Vec<(String, Var)>) -> Result<Box<dyn Optimizer>> {
        Ok(match *self {
            Self::Adam { lr } => Box::new(Adam::new(vars, AdamConfig { lr, ..AdamConfig::default() })?),
            Self::AdamW { lr, weight_decay } => {
                Box::new(AdamW::new(vars, AdamWConfig(AdamConfig { lr, weight_decay, ..AdamConfig::default() }))?)
            }
            Self::Sgd { lr, momentum } => Box::new(Sgd::new(vars, SgdConfig { lr, momentum, ..SgdConfig::default() })?),
            Self::RmsProp { lr } => Box::new(RmsProp::new(vars, RmsPropConfig { lr, ..RmsPropConfig::default() })?),
            Self::Adagrad { lr } => Box::new(Adagrad::new(vars, AdagradConfig { lr, ..AdagradConfig::default() })?),
        })
    }
}

impl LrSchedule {
    /// The names [`LrSchedule::by_name`] accepts.
    pub const NAMES: [&'static str; 5] = ["constant", "cosine", "step", "exponential", "plateau"];

    /// A schedule over a horizon of `steps` for base rate `lr`: `constant`; `cosine` down to
    /// `lr / 20` with a warm-up of `steps / 50` (at most 100) steps; `step`, ×0.3 every third of
    /// the horizon; `exponential`, a tenth of the rate by the horizon; `plateau`
    /// ([`LrSchedule::plateau`]).
    pub fn by_name(name: &str, steps: u64, lr: f64) -> Result<Self> {
        Ok(match name {
            "constant" => LrSchedule::Constant,
            "cosine" => LrSchedule::Cosine { t_max: steps.max(1), eta_min: lr / 20.0, warmup: (steps / 50).min(100) },
            "step" => LrSchedule::Step { step_size: (steps / 3).max(1), gamma: 0.3 },
            "exponential" => LrSchedule::Exponential { gamma: 0.1f64.powf(1.0 / steps.max(1) as f64) },
            "plateau" => LrSchedule::plateau(),
            other => {
                return Err(Error::config(
                    "lr schedule",
                    format!("unknown schedule {other:?}"),
                    format!("use one of {}", Self::NAMES.join(", ")),
                ))
            }
        })
    }

    /// The short name (`cosine`, …).
    pub fn name(&self) -> &'static str {
        match self {
            LrSchedule::Constant => "constant",
            LrSchedule::Cosine { .. } => "cosine",
            LrSchedule::Step { .. } => "step",
            LrSchedule::Exponential { .. } => "exponential",
            LrSchedule::ReduceOnPlateau { .. } => "plateau",
        }
    }

    /// The steps the schedule is laid out over (cosine's `t_max` plus warm-up), if it has such a
    /// horizon.
    pub fn horizon(&self) -> Option<u64> {
        match *self {
            LrSchedule::Cosine { t_max, warmup, .. } => Some(t_max + warmup),
            _ => None,
        }
    }
}

/// Optimizer, schedule and clipping of one run, applied together.
pub struct Optimization {
    vars: Vec<Var>,
    optimizer: Box<dyn Optimizer>,
    scheduler: Scheduler,
    plateau: bool,
    grad_clip: f64,
}

impl Optimization {
    /// The optimizer of `optimizer` over `vars`, following `schedule`, clipping the gradients'
    /// global L2 norm to `grad_clip` (0: no clipping).
    pub fn new(
        vars: Vec<(String, Var)>,
        optimizer: &OptimizerConfig,
        schedule: &LrSchedule,
        grad_clip: f64,
    ) -> Result<Self> {
        if !(grad_clip.is_finite() && grad_clip >= 0.0) {
            return Err(Error::config(
                "grad_clip",
                format!("must be 0 (off) or positive, got {grad_clip}"),
                "pass e.g. 5",
            ));
        }
        let plain: Vec<Var> = vars.iter().map(|(_, v)| v.clone()).collect();
        let mut optimizer = optimizer.build(vars)?;
        let scheduler = Scheduler::new(schedule.clone(), optimizer.learning_rate())?;
        scheduler.apply(optimizer.as_mut());
        let plateau = matches!(schedule, LrSchedule::ReduceOnPlateau { .. });
        Ok(Self { vars: plain, optimizer, scheduler, plateau, grad_clip })
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

    /// After an evaluation: a plateau schedule reacts to the monitored metric.
    pub fn evaluated(&mut self, metric: Option<f64>) -> Result<()> {
        if let (true, Some(v)) = (self.plateau, metric) {
            self.scheduler.step(Some(v))?;
            self.scheduler.apply(self.optimizer.as_mut());
        }
        Ok(())
    }

    /// The rate the schedule gives after `steps` steps (for a plateau schedule, the base rate).
    pub fn lr_after(&self, steps: u64) -> f64 {
        self.scheduler.rate_after(steps)
    }

    /// Optimizer and schedule state, for a checkpoint.
    pub fn state(&self) -> Result<(OptimizerState, Value)> {
        Ok((self.optimizer.state_dict()?, self.scheduler.state_json()))
    }

    /// Restores the state saved by [`Optimization::state`].
    pub fn restore(&mut self, optimizer: &OptimizerState, schedule: &Value) -> Result<()> {
        self.optimizer.load_state_dict(optimizer)?;
        self.scheduler.load_state_json(schedule)?;
        self.scheduler.apply(self.optimizer.as_mut());
        Ok(())
    }
}
