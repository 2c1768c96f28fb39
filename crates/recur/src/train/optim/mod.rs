//! Optimizers over candle variables with PyTorch's update rules, operation for operation:
//! [`Sgd`] (momentum, dampening, Nesterov, weight decay), [`Adam`] (L2 weight decay, AMSGrad),
//! [`AdamW`], [`RmsProp`] (alpha, centered, momentum) and [`Adagrad`].
//!
//! Each update runs on the parameter's values on the host, in the parameter's own precision (F32
//! or F64), in the order of PyTorch's single-tensor implementation (`torch/optim/*.py`,
//! `_single_tensor_*`, the path PyTorch takes on the CPU by default): the same `lerp`, `addcmul`
//! and `addcdiv` groupings, with every scalar computed in f64 (as Python does) and rounded to the
//! parameter's precision where it meets the tensor (as ATen does), and a fused multiply-add
//! wherever ATen's CPU kernels use one (`add(alpha=)`, `addcmul`, `lerp`; not `addcdiv`). On
//! fixed gradients SGD equals PyTorch 2.15 bit for bit; Adam, AdamW, RMSprop and Adagrad do in
//! most elements and otherwise differ in the last bit or two, because PyTorch's CPU `sqrt` (MKL
//! VML) is not correctly rounded and Rust's is (`tests/train_fixtures.rs`). A parameter without a gradient
//! in the [`GradStore`] is skipped, state and step count untouched, as PyTorch skips
//! `p.grad is None`.
//!
//! There is nothing to zero between steps: candle's `backward` returns a fresh `GradStore`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use recur::train::{named_vars, Adam, AdamConfig, Optimizer};
//!
//! let varmap = candle_nn::VarMap::new();
//! let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let lstm = recur::Lstm::new(recur::LstmConfig::new(2, 3), vb.pp("lstm"))?;
//! let mut opt = Adam::new(named_vars(&varmap), AdamConfig { lr: 0.01, ..AdamConfig::default() })?;
//! let x = Tensor::ones((4, 1, 2), DType::F32, &Device::Cpu)?;
//! let (y, _) = lstm.forward(&x, None)?;
//! opt.step(&y.sqr()?.mean_all()?.backward()?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// The update rules spell each step out as `x = x + …` to mirror PyTorch's operation order.
#![allow(clippy::assign_op_pattern)]

mod adagrad;
mod adam;
mod driver;
mod inplace;
mod rmsprop;
mod sgd;

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use serde_json::Value;

pub use self::adagrad::AdagradConfig;
pub use self::adam::{AdamConfig, AdamWConfig};
use self::driver::Core;
pub use self::rmsprop::RmsPropConfig;
pub use self::sgd::SgdConfig;
use crate::kernels::Float;
use crate::{Error, Result};

/// The variables of a `VarMap`, sorted by name: the order and names optimizers and checkpoints use.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock();
    let mut vars: Vec<(String, Var)> = match data {
        Ok(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Err(poisoned) => poisoned.into_inner().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// The saved state of an optimizer: its kind, hyper-parameters and step counts as JSON, and its
/// buffers as tensors named `{parameter}.{buffer}` (PyTorch's buffer names: `momentum_buffer`,
/// `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`, `square_avg`, `grad_avg`, `sum`).
#[derive(Clone, Debug)]
pub struct OptimizerState {
    /// `{"kind": "Adam", "config": {...}, "steps": {"param": n, ...}}`.
    pub meta: Value,
    /// Buffers, `{parameter}.{buffer}` → tensor.
    pub tensors: BTreeMap<String, Tensor>,
}

/// What every optimizer does.
pub trait Optimizer {
    /// One update of every parameter that has a gradient in `grads`.
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// The current learning rate.
    fn learning_rate(&self) -> f64;
    /// Sets the learning rate (what a schedule does between steps).
    fn set_learning_rate(&mut self, lr: f64);
    /// The parameters, in update order, with their names.
    fn params(&self) -> &[(String, Var)];
    /// Buffers, step counts and hyper-parameters, to save.
    fn state_dict(&self) -> Result<OptimizerState>;
    /// Restores what [`Optimizer::state_dict`] saved; validates the kind, the parameter names
    /// and every buffer's shape and dtype, reporting all problems at once and changing nothing
    /// on error.
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()>;
    /// `loss.backward()` then [`Optimizer::step`]: PyTorch's `zero_grad(); loss.backward();
    /// step()` in one call (candle's backward returns fresh gradients, so nothing needs zeroing).
    fn backward_step(&mut self, loss: &candle_core::Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }
}

/// One optimizer's rule: buffer names, how buffers start, and the update.
trait Rule: Sync {
    const KIND: &'static str;
    fn buffers(&self) -> Vec<&'static str>;
    /// The initial value of buffer `index` (before the first step).
    fn initial(&self, _index: usize) -> f64 {
        0.0
    }
    /// `step` is the step count after this step (1 for the first).
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]);
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    fn to_json(&self) -> Value;
    fn validate(&self) -> Result<()>;
}

fn check(kind: &'static str, ok: bool, what: &str, value: f64) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            kind,
            format!("Invalid {what} value: {value}"),
            format!("pass a valid {what} (see PyTorch's torch.optim.{kind})"),
        ))
    }
}

macro_rules! optimizer {
    ($(#[$doc:meta])* $name:ident, $config:ident) => {
        $(#[$doc])*
        pub struct $name {
            core: Core<$config>,
        }

        impl $name {
            /// An optimizer over `params` (names are used by [`Optimizer::state_dict`]; see
            /// [`named_vars`]). Errors on invalid hyper-parameters, non-float parameters or
            /// repeated names.
            pub fn new(params: Vec<(String, Var)>, config: $config) -> Result<Self> {
                Ok(Self { core: Core::new(params, config)? })
            }

            /// The hyper-parameters (with the current learning rate).
            pub fn config(&self) -> &$config {
                &self.core.rule
            }
        }

        impl Optimizer for $name {
            fn step(&mut self, grads: &GradStore) -> Result<()> {
                self.core.step(grads)
            }
            fn learning_rate(&self) -> f64 {
                self.core.rule.lr()
            }
            fn set_learning_rate(&mut self, lr: f64) {
                self.core.rule.set_lr(lr)
            }
            fn params(&self) -> &[(String, Var)] {
                &self.core.params
            }
            fn state_dict(&self) -> Result<OptimizerState> {
                self.core.state_dict()
            }
            fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
                self.core.load_state_dict(state)
            }
        }
    };
}

optimizer!(
    /// Stochastic gradient descent, as `torch.optim.SGD`:
    /// `d = g + wd·p`; `buf = d` (first step) or `momentum·buf + (1 − dampening)·d`;
    /// `d = d + momentum·buf` (Nesterov) or `buf`; `p = p − lr·d`.
    Sgd,
    SgdConfig
);
optimizer!(
    /// Adam with L2 weight decay (added to the gradient) and AMSGrad, as `torch.optim.Adam`:
    /// `m = lerp(m, g, 1 − β1)`; `v = β2·v + (1 − β2)·g²`;
    /// `p = p − (lr / (1 − β1ᵗ))·m / (sqrt(v) / sqrt(1 − β2ᵗ) + eps)`.
    Adam,
    AdamConfig
);
optimizer!(
    /// Adam with decoupled weight decay, as `torch.optim.AdamW`: `p *= 1 − lr·wd` first, then
    /// Adam's update without L2.
    AdamW,
    AdamWConfig
);
optimizer!(
    /// RMSprop, as `torch.optim.RMSprop`: `v = α·v + (1 − α)·g²`; centered:
    /// `avg = sqrt(v − ḡ²) + eps` with `ḡ = lerp(ḡ, g, 1 − α)`, else `sqrt(v) + eps`; with
    /// momentum `buf = momentum·buf + g/avg`, `p −= lr·buf`, else `p −= lr·g/avg`.
    RmsProp,
    RmsPropConfig
);
optimizer!(
    /// Adagrad, as `torch.optim.Adagrad`: `sum += g²`; `p −= clr·g / (sqrt(sum) + eps)` with
    /// `clr = lr / (1 + (t − 1)·lr_decay)`.
    Adagrad,
    AdagradConfig
);

#[cfg(test)]
mod tests {
    use super::inplace::{update_parallel, UPDATE_CHUNK};
    use super::*;

    /// Every rule, cut into chunks on several threads, updates exactly as in one piece.
    #[test]
    fn chunked_updates_equal_one_piece() {
        fn check<R: Rule>(rule: &R) {
            let n = 5 * UPDATE_CHUNK + 123;
            let mut seed = 0x9E37_79B9_7F4A_7C15u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
            };
            let p0: Vec<f32> = (0..n).map(|_| next()).collect();
            let grads: Vec<Vec<f32>> = (0..3).map(|_| (0..n).map(|_| next()).collect()).collect();
            let fresh =
                || -> Vec<Vec<f32>> { (0..rule.buffers().len()).map(|i| vec![rule.initial(i) as f32; n]).collect() };
            let (mut p1, mut b1, mut p4, mut b4) = (p0.clone(), fresh(), p0.clone(), fresh());
            for (step, g) in (1..).zip(&grads) {
                update_parallel(rule, step, &mut p1, g, &mut b1, 1);
                update_parallel(rule, step, &mut p4, g, &mut b4, 4);
            }
            assert_ne!(p1, p0, "{}: the parameter moved", R::KIND);
            assert_eq!(p1, p4, "{}: parameter", R::KIND);
            assert_eq!(b1, b4, "{}: state", R::KIND);
        }
        check(&SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.1, weight_decay: 0.01, nesterov: false });
        check(&AdamConfig { amsgrad: true, weight_decay: 0.01, ..AdamConfig::default() });
        check(&AdamWConfig::default());
        check(&RmsPropConfig { momentum: 0.9, centered: true, weight_decay: 0.01, ..RmsPropConfig::default() });
        check(&AdagradConfig { lr_decay: 0.01, weight_decay: 0.01, ..AdagradConfig::default() });
    }

    #[test]
    fn plain_sgd_state_round_trips() -> Result<()> {
        let var = Var::new(&[1.0f32, 2.0], &candle_core::Device::Cpu)?;
        let mut opt = Sgd::new(vec![("w".into(), var.clone())], SgdConfig { lr: 0.5, ..SgdConfig::default() })?;
        let grads = var.as_tensor().sum_all()?.backward()?;
        opt.step(&grads)?;
        assert_eq!(var.as_tensor().to_vec1::<f32>()?, vec![0.5, 1.5]);
        let state = opt.state_dict()?;
        let mut other = Sgd::new(vec![("w".into(), var)], SgdConfig::default())?;
        other.load_state_dict(&state)?;
        assert_eq!(other.learning_rate(), 0.5);
        assert_eq!(other.state_dict()?.meta, state.meta);
        Ok(())
    }

    #[test]
    fn invalid_hyper_parameters_are_errors() {
        let e = Sgd::new(vec![], SgdConfig { nesterov: true, ..SgdConfig::default() }).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("Nesterov")));
        let e =
            Adam::new(vec![], AdamConfig { betas: (1.0, 0.9), ..AdamConfig::default() }).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("beta parameter at index 0")));
    }
}
