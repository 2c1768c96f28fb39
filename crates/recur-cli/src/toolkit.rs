//! The optimizer side of a run: loss, gradient clipping, optimizer and learning-rate schedule.
//!
//! Interim: candle-nn's AdamW and cross-entropy, until `recur::train` (issue 4) lands.

use anyhow::{bail, Result};
use candle_core::Tensor;
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};

use crate::train::RunConfig;

/// Mean cross-entropy of logits `(N, V)` against targets `(N)`.
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    Ok(candle_nn::loss::cross_entropy(logits, targets)?)
}

/// Optimizer, schedule and clipping of one run.
pub struct Trainer {
    vars: Vec<candle_core::Var>,
    optimizer: AdamW,
    base_lr: f64,
    max_steps: usize,
    schedule: String,
    grad_clip: f64,
}

impl Trainer {
    pub fn new(varmap: &VarMap, config: &RunConfig) -> Result<Self> {
        let weight_decay = match config.optimizer.as_str() {
            "adam" => 0.0,
            "adamw" => 0.01,
            other => bail!("--optimizer {other} is not available yet; use adam or adamw"),
        };
        if !matches!(config.lr_schedule.as_str(), "constant" | "cosine") {
            bail!("--lr-schedule {} is not available yet; use constant or cosine", config.lr_schedule);
        }
        let vars = varmap.all_vars();
        let params = ParamsAdamW { lr: config.lr, weight_decay, ..ParamsAdamW::default() };
        Ok(Self {
            optimizer: AdamW::new(vars.clone(), params)?,
            vars,
            base_lr: config.lr,
            max_steps: config.max_steps,
            schedule: config.lr_schedule.clone(),
            grad_clip: config.grad_clip,
        })
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.optimizer.learning_rate()
    }

    /// Backward, clip, step; returns the gradients' global norm before clipping.
    pub fn step(&mut self, loss: &Tensor, step: usize) -> Result<f64> {
        let lr = match self.schedule.as_str() {
            "cosine" => {
                let progress = (step as f64 / self.max_steps.max(1) as f64).min(1.0);
                self.base_lr * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
            }
            _ => self.base_lr,
        };
        self.optimizer.set_learning_rate(lr);
        let mut grads = loss.backward()?;
        let mut total = 0.0f64;
        for var in &self.vars {
            if let Some(g) = grads.get(var.as_tensor()) {
                total += g.sqr()?.sum_all()?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
            }
        }
        let norm = total.sqrt();
        if self.grad_clip > 0.0 && norm > self.grad_clip {
            let scale = self.grad_clip / (norm + 1e-6);
            for var in &self.vars {
                if let Some(g) = grads.remove(var.as_tensor()) {
                    grads.insert(var.as_tensor(), (g * scale)?);
                }
            }
        }
        self.optimizer.step(&grads)?;
        Ok(norm)
    }
}
