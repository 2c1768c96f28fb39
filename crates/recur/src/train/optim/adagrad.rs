//! [`AdagradConfig`]: PyTorch's `torch.optim.Adagrad` rule.

use serde_json::{json, Value};

use super::{check, Rule};
use crate::kernels::Float;
use crate::Result;

/// Hyper-parameters of [`Adagrad`](super::Adagrad), PyTorch's `torch.optim.Adagrad`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate. Default: 1e-2.
    pub lr: f64,
    /// Learning-rate decay: step `t` uses `lr / (1 + (t − 1)·lr_decay)`. Default: 0.
    pub lr_decay: f64,
    /// L2 penalty added to the gradient. Default: 0.
    pub weight_decay: f64,
    /// Starting value of the sum of squared gradients. Default: 0.
    pub initial_accumulator_value: f64,
    /// Added to the denominator. Default: 1e-10.
    pub eps: f64,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        Self { lr: 1e-2, lr_decay: 0.0, weight_decay: 0.0, initial_accumulator_value: 0.0, eps: 1e-10 }
    }
}

impl Rule for AdagradConfig {
    const KIND: &'static str = "Adagrad";
    fn buffers(&self) -> Vec<&'static str> {
        vec!["sum"]
    }
    fn initial(&self, _index: usize) -> f64 {
        self.initial_accumulator_value
    }
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        let clr = self.lr / (1.0 + (step as f64 - 1.0) * self.lr_decay);
        let (wd, eps, neg_clr) = (T::from_f64(self.weight_decay), T::from_f64(self.eps), T::from_f64(-clr));
        let sum = &mut bufs[0];
        for i in 0..p.len() {
            let mut d = g[i];
            if self.weight_decay != 0.0 {
                d = wd.mul_add(p[i], d);
            }
            sum[i] = (T::from_f64(1.0) * d).mul_add(d, sum[i]);
            let std = sum[i].sqrt() + eps;
            p[i] = p[i] + neg_clr * d / std;
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn to_json(&self) -> Value {
        json!({"lr": self.lr, "lr_decay": self.lr_decay, "weight_decay": self.weight_decay, "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps})
    }
    fn validate(&self) -> Result<()> {
        check("Adagrad", self.lr >= 0.0, "learning rate", self.lr)?;
        check("Adagrad", self.lr_decay >= 0.0, "lr_decay", self.lr_decay)?;
        check("Adagrad", self.weight_decay >= 0.0, "weight_decay", self.weight_decay)?;
        check(
            "Adagrad",
            self.initial_accumulator_value >= 0.0,
            "initial_accumulator_value",
            self.initial_accumulator_value,
        )?;
        check("Adagrad", self.eps >= 0.0, "epsilon", self.eps)
    }
}
