//! [`AdamConfig`] and [`AdamWConfig`]: PyTorch's `torch.optim.Adam` and `AdamW` rules; the loop itself is
//! the kernels' (`kernels::optim`), compiled per CPU path.

use serde_json::{json, Value};

use super::{check, Rule};
use crate::kernels::optim::{self, AdamStep};
use crate::kernels::Float;
use crate::Result;

/// Hyper-parameters of [`Adam`](super::Adam) and [`AdamW`](super::AdamW), PyTorch's `torch.optim.Adam` / `AdamW`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate. Default: 1e-3.
    pub lr: f64,
    /// Decay rates (β1, β2) of the moment estimates. Default: (0.9, 0.999).
    pub betas: (f64, f64),
    /// Added to the denominator. Default: 1e-8.
    pub eps: f64,
    /// Adam: L2 penalty added to the gradient; AdamW: decoupled decay `p *= 1 − lr·wd`.
    /// Default: 0 (PyTorch's AdamW default is 1e-2: use [`AdamConfig::adamw`]).
    pub weight_decay: f64,
    /// AMSGrad: divide by the running maximum of the second moment. Default: false.
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false }
    }
}

impl AdamConfig {
    /// PyTorch's `AdamW` defaults (weight decay 1e-2).
    pub fn adamw() -> Self {
        Self { weight_decay: 1e-2, ..Self::default() }
    }

    /// One Adam / AdamW update of one parameter, on the kernels' CPU path.
    fn update_adam<T: Float>(&self, decoupled: bool, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        let AdamConfig { lr, betas, eps, weight_decay, amsgrad } = *self;
        optim::adam_update(&AdamStep { lr, betas, eps, weight_decay, amsgrad, decoupled, step }, p, g, bufs)
    }

    fn buffer_names(&self) -> Vec<&'static str> {
        if self.amsgrad {
            vec!["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
        } else {
            vec!["exp_avg", "exp_avg_sq"]
        }
    }

    fn json(&self) -> Value {
        json!({"lr": self.lr, "betas": [self.betas.0, self.betas.1], "eps": self.eps, "weight_decay": self.weight_decay, "amsgrad": self.amsgrad})
    }

    fn check(&self, kind: &'static str) -> Result<()> {
        check(kind, self.lr >= 0.0, "learning rate", self.lr)?;
        check(kind, self.eps >= 0.0, "epsilon", self.eps)?;
        check(kind, (0.0..1.0).contains(&self.betas.0), "beta parameter at index 0", self.betas.0)?;
        check(kind, (0.0..1.0).contains(&self.betas.1), "beta parameter at index 1", self.betas.1)?;
        check(kind, self.weight_decay >= 0.0, "weight_decay", self.weight_decay)
    }
}

/// [`AdamConfig`] for [`AdamW`](super::AdamW) (the same fields; decoupled weight decay).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig(pub AdamConfig);

impl Default for AdamWConfig {
    fn default() -> Self {
        Self(AdamConfig::adamw())
    }
}

impl Rule for AdamConfig {
    const KIND: &'static str = "Adam";
    fn buffers(&self) -> Vec<&'static str> {
        self.buffer_names()
    }
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        self.update_adam(false, step, p, g, bufs)
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn to_json(&self) -> Value {
        self.json()
    }
    fn validate(&self) -> Result<()> {
        self.check("Adam")
    }
}

impl Rule for AdamWConfig {
    const KIND: &'static str = "AdamW";
    fn buffers(&self) -> Vec<&'static str> {
        self.0.buffer_names()
    }
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        self.0.update_adam(true, step, p, g, bufs)
    }
    fn lr(&self) -> f64 {
        self.0.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.0.lr = lr;
    }
    fn to_json(&self) -> Value {
        self.0.json()
    }
    fn validate(&self) -> Result<()> {
        self.0.check("AdamW")
    }
}
