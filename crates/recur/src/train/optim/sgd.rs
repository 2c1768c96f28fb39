//! [`SgdConfig`]: PyTorch's `torch.optim.SGD` rule (momentum, dampening, Nesterov, weight decay).

use serde_json::{json, Value};

use super::{check, Rule};
use crate::kernels::Float;
use crate::{Error, Result};

/// Hyper-parameters of [`Sgd`](super::Sgd), PyTorch's `torch.optim.SGD`.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate. Default: 1e-3.
    pub lr: f64,
    /// Momentum factor. Default: 0.
    pub momentum: f64,
    /// Dampening of the momentum. Default: 0.
    pub dampening: f64,
    /// L2 penalty added to the gradient. Default: 0.
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening 0). Default: false.
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { lr: 1e-3, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

impl Rule for SgdConfig {
    const KIND: &'static str = "SGD";
    fn buffers(&self) -> Vec<&'static str> {
        if self.momentum != 0.0 {
            vec!["momentum_buffer"]
        } else {
            vec![]
        }
    }
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        let (wd, momentum, damp, lr) = (
            T::from_f64(self.weight_decay),
            T::from_f64(self.momentum),
            T::from_f64(1.0 - self.dampening),
            T::from_f64(-self.lr),
        );
        for i in 0..p.len() {
            let mut d = g[i];
            if self.weight_decay != 0.0 {
                d = wd.mul_add(p[i], d); // grad.add(param, alpha=wd)
            }
            if self.momentum != 0.0 {
                let buf = &mut bufs[0][i];
                // buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                *buf = if step == 1 { d } else { damp.mul_add(d, *buf * momentum) };
                d = if self.nesterov { momentum.mul_add(*buf, d) } else { *buf };
            }
            p[i] = lr.mul_add(d, p[i]); // param.add_(grad, alpha=-lr)
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn to_json(&self) -> Value {
        json!({"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening, "weight_decay": self.weight_decay, "nesterov": self.nesterov})
    }
    fn validate(&self) -> Result<()> {
        check("SGD", self.lr >= 0.0, "learning rate", self.lr)?;
        check("SGD", self.momentum >= 0.0, "momentum", self.momentum)?;
        check("SGD", self.weight_decay >= 0.0, "weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::config(
                "SGD",
                "Nesterov momentum requires a momentum and zero dampening",
                "set momentum > 0 and dampening = 0, or nesterov = false",
            ));
        }
        Ok(())
    }
}
