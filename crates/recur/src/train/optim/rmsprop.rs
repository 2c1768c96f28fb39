//! [`RmsPropConfig`]: PyTorch's `torch.optim.RMSprop` rule (alpha, centered, momentum).

use serde_json::{json, Value};

use super::{check, Rule};
use crate::kernels::optim::lerp;
use crate::kernels::Float;
use crate::Result;

/// Hyper-parameters of [`RmsProp`](super::RmsProp), PyTorch's `torch.optim.RMSprop`.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate. Default: 1e-2.
    pub lr: f64,
    /// Smoothing constant of the squared-gradient average. Default: 0.99.
    pub alpha: f64,
    /// Added to the denominator. Default: 1e-8.
    pub eps: f64,
    /// L2 penalty added to the gradient. Default: 0.
    pub weight_decay: f64,
    /// Momentum factor. Default: 0.
    pub momentum: f64,
    /// Normalise by the estimated variance (subtract the squared mean gradient). Default: false.
    pub centered: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        Self { lr: 1e-2, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }
    }
}

impl Rule for RmsPropConfig {
    const KIND: &'static str = "RMSprop";
    fn buffers(&self) -> Vec<&'static str> {
        let mut b = vec!["square_avg"];
        if self.momentum > 0.0 {
            b.push("momentum_buffer");
        }
        if self.centered {
            b.push("grad_avg");
        }
        b
    }
    fn update<T: Float>(&self, _step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        let (alpha, w, wd, eps, momentum, lr) = (
            T::from_f64(self.alpha),
            T::from_f64(1.0 - self.alpha),
            T::from_f64(self.weight_decay),
            T::from_f64(self.eps),
            T::from_f64(self.momentum),
            T::from_f64(-self.lr),
        );
        let has_momentum = self.momentum > 0.0;
        let (square, rest) = bufs.split_at_mut(1);
        let (momentum_buf, grad_avg) = if has_momentum { rest.split_at_mut(1) } else { rest.split_at_mut(0) };
        for i in 0..p.len() {
            let mut d = g[i];
            if self.weight_decay != 0.0 {
                d = wd.mul_add(p[i], d);
            }
            let sa = &mut square[0][i];
            *sa = (w * d).mul_add(d, *sa * alpha);
            let avg = if self.centered {
                let ga = &mut grad_avg[0][i];
                *ga = lerp(*ga, d, w);
                (T::from_f64(-1.0) * *ga).mul_add(*ga, *sa).sqrt() // square_avg.addcmul(grad_avg, grad_avg, value=-1)
            } else {
                sa.sqrt()
            } + eps;
            if has_momentum {
                let buf = &mut momentum_buf[0][i];
                *buf = *buf * momentum + T::from_f64(1.0) * d / avg; // buf.mul_(momentum).addcdiv_(grad, avg)
                p[i] = lr.mul_add(*buf, p[i]);
            } else {
                p[i] = p[i] + lr * d / avg;
            }
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn to_json(&self) -> Value {
        json!({"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay, "momentum": self.momentum, "centered": self.centered})
    }
    fn validate(&self) -> Result<()> {
        check("RMSprop", self.lr >= 0.0, "learning rate", self.lr)?;
        check("RMSprop", self.eps >= 0.0, "epsilon", self.eps)?;
        check("RMSprop", self.momentum >= 0.0, "momentum value", self.momentum)?;
        check("RMSprop", self.weight_decay >= 0.0, "weight_decay", self.weight_decay)?;
        check("RMSprop", self.alpha >= 0.0, "alpha", self.alpha)
    }
}
