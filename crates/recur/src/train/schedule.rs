//! Learning-rate schedules: constant, step, exponential, cosine annealing with linear warm-up, and
//! reduce-on-plateau; their state saves to JSON for checkpoints.
//!
//! The schedule computes the rate after `t` calls of [`Scheduler::step`] in closed form (PyTorch's
//! `_get_closed_form_lr`), so a resumed run gets the same rates bit for bit. PyTorch's default
//! `get_lr` updates multiplicatively and can differ from the closed form in the last bits.
//!
//! ```
//! use recur::train::{LrSchedule, Scheduler};
//! let mut s = Scheduler::new(LrSchedule::Step { step_size: 2, gamma: 0.5 }, 0.1)?;
//! assert_eq!(s.lr(), 0.1);
//! s.step(None)?;
//! s.step(None)?;
//! assert_eq!(s.lr(), 0.05);
//! # Ok::<(), recur::Error>(())
//! ```

use serde_json::{json, Value};

use crate::train::Optimizer;
use crate::{Error, Result};

/// Whether a lower or a higher metric is better for [`LrSchedule::ReduceOnPlateau`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlateauMode {
    /// Lower is better (a loss).
    Min,
    /// Higher is better (an accuracy).
    Max,
}

/// A learning-rate schedule; `t` counts calls of [`Scheduler::step`] (usually once per epoch or
/// per optimizer step, the caller's choice), `base` is the initial rate.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LrSchedule {
    /// `base`.
    Constant,
    /// `base · gamma^⌊t / step_size⌋` (`torch.optim.lr_scheduler.StepLR`).
    Step {
        /// Steps between decays (>= 1).
        step_size: u64,
        /// Decay factor.
        gamma: f64,
    },
    /// `base · gammaᵗ` (`ExponentialLR`).
    Exponential {
        /// Decay factor.
        gamma: f64,
    },
    /// Linear warm-up `base · (t + 1) / (warmup + 1)` for `t < warmup`, then cosine annealing
    /// `eta_min + (base − eta_min)·(1 + cos(π·s / t_max)) / 2` with `s = t − warmup`, held at
    /// `eta_min` once `s >= t_max` (`CosineAnnealingLR` for `s <= t_max`).
    Cosine {
        /// Length of the cosine (>= 1).
        t_max: u64,
        /// The final rate.
        eta_min: f64,
        /// Warm-up steps before the cosine (0: none).
        warmup: u64,
    },
    /// `ReduceLROnPlateau` with a relative threshold: the rate is multiplied by `factor` (not
    /// below `min_lr`) after more than `patience` steps without an improvement of the metric
    /// (better than `best·(1 ∓ threshold)`), then waits `cooldown` steps.
    ReduceOnPlateau {
        /// Whether lower or higher is better.
        mode: PlateauMode,
        /// Multiplier of the rate (< 1).
        factor: f64,
        /// Steps without improvement tolerated.
        patience: u64,
        /// Relative improvement that counts (PyTorch default 1e-4).
        threshold: f64,
        /// Steps to wait after a reduction.
        cooldown: u64,
        /// The lowest rate.
        min_lr: f64,
    },
}

impl LrSchedule {
    /// PyTorch's `ReduceLROnPlateau` defaults: min mode, factor 0.1, patience 10, threshold 1e-4,
    /// no cooldown, min_lr 0.
    pub fn plateau() -> Self {
        Self::ReduceOnPlateau {
            mode: PlateauMode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            cooldown: 0,
            min_lr: 0.0,
        }
    }
}

/// A schedule in progress: the step count, the current rate and the plateau bookkeeping.
#[derive(Clone, Debug, PartialEq)]
pub struct Scheduler {
    schedule: LrSchedule,
    base_lr: f64,
    steps: u64,
    lr: f64,
    best: Option<f64>,
    bad_steps: u64,
    cooldown_left: u64,
}

impl Scheduler {
    /// A schedule starting at `base_lr`; errors on out-of-range parameters.
    pub fn new(schedule: LrSchedule, base_lr: f64) -> Result<Self> {
        let bad =
            |m: String| Err(Error::config("LrSchedule", m, "see the documentation of LrSchedule for the valid ranges"));
        if !(base_lr.is_finite() && base_lr >= 0.0) {
            return bad(format!("base learning rate must be finite and >= 0, got {base_lr}"));
        }
        match &schedule {
            LrSchedule::Step { step_size: 0, .. } => return bad("step_size must be >= 1, got 0".into()),
            LrSchedule::Cosine { t_max: 0, .. } => return bad("t_max must be >= 1, got 0".into()),
            LrSchedule::ReduceOnPlateau { factor, .. } if !(*factor >= 0.0 && *factor < 1.0) => {
                return bad(format!("Factor should be < 1.0, got {factor}"))
            }
            _ => {}
        }
        let mut s = Self { schedule, base_lr, steps: 0, lr: base_lr, best: None, bad_steps: 0, cooldown_left: 0 };
        s.lr = s.rate_at(0);
        Ok(s)
    }

    /// The closed-form rate after `t` steps (not for plateau, whose rate depends on the metrics).
    fn rate_at(&self, t: u64) -> f64 {
        let base = self.base_lr;
        match self.schedule {
            LrSchedule::Constant | LrSchedule::ReduceOnPlateau { .. } => base,
            LrSchedule::Step { step_size, gamma } => base * gamma.powf((t / step_size) as f64),
            LrSchedule::Exponential { gamma } => base * gamma.powf(t as f64),
            LrSchedule::Cosine { t_max, eta_min, warmup } => {
                if t < warmup {
                    base * (t + 1) as f64 / (warmup + 1) as f64
                } else {
                    let s = (t - warmup).min(t_max) as f64;
                    eta_min + (base - eta_min) * (1.0 + (std::f64::consts::PI * s / t_max as f64).cos()) / 2.0
                }
            }
        }
    }

    /// The current learning rate.
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// The schedule this scheduler follows.
    pub fn schedule(&self) -> &LrSchedule {
        &self.schedule
    }

    /// The rate after `t` steps by the schedule's closed form (for
    /// [`LrSchedule::ReduceOnPlateau`], whose rate depends on the metrics, the base rate).
    pub fn rate_after(&self, t: u64) -> f64 {
        self.rate_at(t)
    }

    /// How many times [`Scheduler::step`] was called.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Advances the schedule and returns the new rate. `metric` is required by
    /// [`LrSchedule::ReduceOnPlateau`] (an error without it) and ignored by the others.
    pub fn step(&mut self, metric: Option<f64>) -> Result<f64> {
        let t = self.steps + 1;
        self.lr = match self.schedule {
            LrSchedule::ReduceOnPlateau { mode, factor, patience, threshold, cooldown, min_lr } => {
                let Some(metric) = metric else {
                    return Err(Error::config(
                        "ReduceOnPlateau",
                        "step() needs the metric to watch",
                        "pass Some(validation_loss) to Scheduler::step",
                    ));
                };
                let better = match (self.best, mode) {
                    (None, _) => true,
                    (Some(best), PlateauMode::Min) => metric < best * (1.0 - threshold),
                    (Some(best), PlateauMode::Max) => metric > best * (1.0 + threshold),
                };
                if better {
                    self.best = Some(metric);
                    self.bad_steps = 0;
                } else {
                    self.bad_steps += 1;
                }
                if self.cooldown_left > 0 {
                    self.cooldown_left -= 1;
                    self.bad_steps = 0;
                }
                let mut lr = self.lr;
                if self.bad_steps > patience {
                    let reduced = (lr * factor).max(min_lr);
                    if lr - reduced > 1e-8 {
                        lr = reduced;
                    }
                    self.cooldown_left = cooldown;
                    self.bad_steps = 0;
                }
                lr
            }
            _ => self.rate_at(t),
        };
        self.steps = t;
        Ok(self.lr)
    }

    /// Sets the optimizer's learning rate to the schedule's.
    pub fn apply(&self, optimizer: &mut dyn Optimizer) {
        optimizer.set_learning_rate(self.lr);
    }

    /// The state to save: `{"base_lr", "steps", "lr", "best", "bad_steps", "cooldown_left"}`.
    pub fn state_json(&self) -> Value {
        json!({
            "base_lr": self.base_lr, "steps": self.steps, "lr": self.lr,
            "best": self.best, "bad_steps": self.bad_steps, "cooldown_left": self.cooldown_left,
        })
    }

    /// Restores [`Scheduler::state_json`] into this schedule (same kind and parameters as the
    /// saved one: those come from the configuration).
    pub fn load_state_json(&mut self, state: &Value) -> Result<()> {
        let f = |k: &str| state.get(k).and_then(Value::as_f64);
        let u = |k: &str| state.get(k).and_then(Value::as_u64);
        let (Some(base_lr), Some(steps), Some(lr), Some(bad_steps), Some(cooldown_left)) =
            (f("base_lr"), u("steps"), f("lr"), u("bad_steps"), u("cooldown_left"))
        else {
            return Err(Error::Schema {
                what: "schedule state",
                problems: vec![format!("expected base_lr, steps, lr, bad_steps, cooldown_left, got {state}")],
                fix: "load the schedule state a Scheduler saved".into(),
            });
        };
        self.base_lr = base_lr;
        self.steps = steps;
        self.lr = lr;
        self.best = f("best");
        self.bad_steps = bad_steps;
        self.cooldown_left = cooldown_left;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closed_forms() -> Result<()> {
        let mut s = Scheduler::new(LrSchedule::Exponential { gamma: 0.5 }, 1.0)?;
        s.step(None)?;
        assert_eq!(s.lr(), 0.5);
        let mut c = Scheduler::new(LrSchedule::Cosine { t_max: 4, eta_min: 0.0, warmup: 2 }, 1.0)?;
        let lrs: Vec<f64> = (0..8).map(|_| c.step(None)).collect::<Result<_>>()?;
        assert!((lrs[0] - 2.0 / 3.0).abs() < 1e-15, "{lrs:?}");
        assert_eq!(lrs[1], 1.0);
        assert!((lrs[3] - 0.5).abs() < 1e-15, "{lrs:?}");
        assert_eq!(lrs[7], 0.0);
        Ok(())
    }

    /// Rates after 0, 1, 2, … steps from PyTorch 2.15 (SGD(lr=0.1), then):
    ///
    /// ```python
    /// StepLR(o, 3, 0.5); ExponentialLR(o, 0.9); CosineAnnealingLR(o, 8, 1e-3)
    /// ReduceLROnPlateau(o, factor=0.5, patience=2, cooldown=1)  # step(metric) with METRICS
    /// ```
    #[test]
    fn rates_match_pytorch() -> Result<()> {
        const METRICS: [f64; 12] = [1.0, 0.9, 0.95, 0.95, 0.95, 0.95, 0.8, 0.85, 0.85, 0.85, 0.85, 0.85];
        let cases: [(LrSchedule, &[f64]); 4] = [
            (
                LrSchedule::Step { step_size: 3, gamma: 0.5 },
                &[0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025, 0.0125, 0.0125, 0.0125, 0.00625],
            ),
            (
                LrSchedule::Exponential { gamma: 0.9 },
                &[
                    0.1,
                    0.09000000000000001,
                    0.08100000000000002,
                    0.07290000000000002,
                    0.06561000000000002,
                    0.05904900000000002,
                    0.05314410000000002,
                    0.04782969000000002,
                    0.043046721000000024,
                    0.03874204890000002,
                    0.03486784401000002,
                    0.03138105960900001,
                    0.028242953648100012,
                ],
            ),
            (
                LrSchedule::Cosine { t_max: 8, eta_min: 1e-3, warmup: 0 },
                &[
                    0.1,
                    0.0962320368593087,
                    0.0855017856687341,
                    0.06944282990207196,
                    0.0505,
                    0.03155717009792806,
                    0.0154982143312659,
                    0.004767963140691306,
                    0.001,
                ],
            ),
            (
                LrSchedule::ReduceOnPlateau {
                    mode: PlateauMode::Min,
                    factor: 0.5,
                    patience: 2,
                    threshold: 1e-4,
                    cooldown: 1,
                    min_lr: 0.0,
                },
                &[0.1, 0.1, 0.1, 0.1, 0.1, 0.05, 0.05, 0.05, 0.05, 0.05, 0.025, 0.025, 0.025],
            ),
        ];
        for (schedule, expected) in cases {
            let mut s = Scheduler::new(schedule.clone(), 0.1)?;
            let mut got = vec![s.lr()];
            for metric in METRICS.iter().take(expected.len() - 1) {
                got.push(s.step(Some(*metric))?);
            }
            for (g, e) in got.iter().zip(expected) {
                assert!((g - e).abs() <= 1e-15 * e.abs(), "{schedule:?}: {got:?} vs {expected:?}");
            }
        }
        Ok(())
    }

    #[test]
    fn plateau_reduces_after_patience_and_round_trips() -> Result<()> {
        let schedule = LrSchedule::ReduceOnPlateau {
            mode: PlateauMode::Min,
            factor: 0.5,
            patience: 1,
            threshold: 0.0,
            cooldown: 0,
            min_lr: 0.0,
        };
        let mut s = Scheduler::new(schedule.clone(), 1.0)?;
        for (metric, lr) in [(1.0, 1.0), (1.0, 1.0), (1.0, 0.5), (0.5, 0.5), (0.6, 0.5), (0.7, 0.25)] {
            assert_eq!(s.step(Some(metric))?, lr);
        }
        let mut t = Scheduler::new(schedule, 1.0)?;
        t.load_state_json(&s.state_json())?;
        assert_eq!(s, t);
        assert!(s.step(None).is_err());
        Ok(())
    }
}
