//! Time-series forecasting: an encoder LSTM/GRU/RNN over a lookback window of input features,
//! then a direct multi-horizon head, a linear layer from the last layer's final hidden state to
//! every horizon step and target at once. Point forecasts train with MSE or MAE; probabilistic
//! ones with a Gaussian likelihood (a mean and a log standard deviation per value) or the quantile
//! (pinball) loss at 10%, 50% and 90%, which give 80% prediction intervals.

use std::fmt;

use candle_core::{Tensor, D};
use candle_nn::{Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use super::CellType;
use crate::nn::{linear, Recurrent};
use crate::repr::ModuleRepr;
use crate::{Error, Result};

/// The z value of a central 80% interval of a normal distribution.
pub const Z80: f64 = 1.281_551_565_545;

/// The quantiles the quantile loss fits: the ends of an 80% interval and the median.
pub const QUANTILES: [f64; 3] = [0.1, 0.5, 0.9];

/// What the forecaster is trained to predict.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ForecastLoss {
    /// Mean squared error of a point forecast.
    Mse,
    /// Mean absolute error of a point forecast.
    Mae,
    /// Gaussian negative log-likelihood of a mean and a standard deviation (80% interval:
    /// mean ± 1.2816 sd).
    Gaussian,
    /// Pinball loss of the 10%, 50% and 90% quantiles (the median is the point forecast) (the
    /// default).
    #[default]
    Quantile,
}

impl ForecastLoss {
    /// Outputs per forecast value: 1 (MSE, MAE), 2 (Gaussian), 3 (quantile).
    pub fn outputs(self) -> usize {
        match self {
            ForecastLoss::Mse | ForecastLoss::Mae => 1,
            ForecastLoss::Gaussian => 2,
            ForecastLoss::Quantile => 3,
        }
    }

    /// `mse`, `mae`, `gaussian` or `quantile`.
    pub fn name(self) -> &'static str {
        match self {
            ForecastLoss::Mse => "mse",
            ForecastLoss::Mae => "mae",
            ForecastLoss::Gaussian => "gaussian",
            ForecastLoss::Quantile => "quantile",
        }
    }

    /// Whether it gives prediction intervals.
    pub fn has_intervals(self) -> bool {
        matches!(self, ForecastLoss::Gaussian | ForecastLoss::Quantile)
    }
}

/// The sizes of a [`Forecaster`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecasterConfig {
    /// Input features per step `I`.
    pub input_size: usize,
    /// Target series forecast together `N`.
    pub num_targets: usize,
    /// Steps ahead `Hz`.
    pub horizon: usize,
    /// The recurrent cell (default LSTM).
    pub cell: CellType,
    /// `H` (default 64).
    pub hidden_size: usize,
    /// `L` (default 1).
    pub num_layers: usize,
    /// Dropout between recurrent layers (default 0).
    pub dropout: f64,
    /// The loss (default quantile).
    pub loss: ForecastLoss,
}

impl ForecasterConfig {
    /// The default sizes for `input_size` features, `num_targets` targets, `horizon` steps.
    pub fn new(input_size: usize, num_targets: usize, horizon: usize) -> Self {
        Self {
            input_size,
            num_targets,
            horizon,
            cell: CellType::Lstm,
            hidden_size: 64,
            num_layers: 1,
            dropout: 0.0,
            loss: ForecastLoss::Quantile,
        }
    }
}

/// Values by target and step: `[target][step]`.
pub type Grid = Vec<Vec<f64>>;

/// A forecast of one window in the model's (scaled) units: `[target][step]`.
#[derive(Clone, Debug, PartialEq)]
pub struct ScaledForecast {
    /// The point forecast (mean, median).
    pub point: Grid,
    /// The 80% interval's ends, for a probabilistic loss.
    pub interval: Option<(Grid, Grid)>,
}

/// `recurrent encoder → last hidden state → Linear → (Hz, N, outputs)`. Parameters under
/// `rnn.weight_ih_l0`, … and `head.weight`, `head.bias`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use recur::models::{Forecaster, ForecasterConfig};
/// let varmap = candle_nn::VarMap::new();
/// let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
/// let model = Forecaster::new(ForecasterConfig { hidden_size: 8, ..ForecasterConfig::new(3, 1, 4) }, vb)?;
/// let x = Tensor::zeros((2, 10, 3), DType::F32, &Device::Cpu)?; // (B, lookback, I)
/// assert_eq!(model.forward(&x)?.dims(), &[2, 4, 1, 3]); // (B, Hz, N, quantiles)
/// # Ok::<(), recur::Error>(())
/// ```
pub struct Forecaster {
    config: ForecasterConfig,
    rnn: Box<dyn Recurrent>,
    head: Linear,
}

impl Forecaster {
    /// Builds the model; parameters come from (or are created in) `vb`.
    pub fn new(config: ForecasterConfig, vb: VarBuilder) -> Result<Self> {
        for (name, v) in [
            ("input_size", config.input_size),
            ("num_targets", config.num_targets),
            ("horizon", config.horizon),
            ("hidden_size", config.hidden_size),
            ("num_layers", config.num_layers),
        ] {
            if v == 0 {
                return Err(Error::config(
                    "Forecaster",
                    format!("{name} must be at least 1"),
                    format!("give a positive {name}"),
                ));
            }
        }
        let rnn = config.cell.build(
            config.input_size,
            config.hidden_size,
            config.num_layers,
            config.dropout,
            vb.pp("rnn"),
        )?;
        let outputs = config.horizon * config.num_targets * config.loss.outputs();
        let head = linear(config.hidden_size, outputs, vb.pp("head"))?;
        Ok(Self { config, rnn, head })
    }

    /// The configuration.
    pub fn config(&self) -> &ForecasterConfig {
        &self.config
    }

    /// The recurrent encoder.
    pub fn rnn(&self) -> &dyn Recurrent {
        self.rnn.as_ref()
    }

    /// Raw outputs `(B, Hz, N, outputs)` for windows `(B, T, I)`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        self.run(x, true)
    }

    fn run(&self, x: &Tensor, grad: bool) -> Result<Tensor> {
        let dims = x.dims();
        if dims.len() != 3 || dims[2] != self.config.input_size || dims[1] == 0 {
            return Err(Error::shape(
                "Forecaster",
                format!("expected windows (B, T, {}), got {dims:?}", self.config.input_size),
                "pass (batch, lookback, features) windows made with the model's own data settings",
            ));
        }
        let (_, state) = if grad { self.rnn.forward(x, None)? } else { self.rnn.forward_no_grad(x, None)? };
        let last = state.h.get(state.h.dim(0)? - 1)?;
        let out = self.head.forward(&last)?;
        let c = &self.config;
        Ok(out.reshape((dims[0], c.horizon, c.num_targets, c.loss.outputs()))?)
    }

    /// The mean training loss of windows `x (B, T, I)` against targets `y (B, Hz, N)`.
    pub fn loss(&self, x: &Tensor, y: &Tensor) -> Result<Tensor> {
        let out = self.forward(x)?;
        let c = &self.config;
        let want = [x.dim(0)?, c.horizon, c.num_targets];
        if y.dims() != want {
            return Err(Error::shape(
                "Forecaster",
                format!("expected targets {want:?}, got {:?}", y.dims()),
                "pass (batch, horizon, targets) values",
            ));
        }
        let first = out.narrow(D::Minus1, 0, 1)?.squeeze(D::Minus1)?;
        Ok(match c.loss {
            ForecastLoss::Mse => (first - y)?.sqr()?.mean_all()?,
            ForecastLoss::Mae => (first - y)?.abs()?.mean_all()?,
            ForecastLoss::Gaussian => {
                let log_sd = out.narrow(D::Minus1, 1, 1)?.squeeze(D::Minus1)?.clamp(-7f32, 7f32)?;
                let z = ((y - first)? / log_sd.exp()?)?;
                (log_sd + (z.sqr()? * 0.5)?)?.mean_all()?
            }
            ForecastLoss::Quantile => {
                let mut total: Option<Tensor> = None;
                for (k, &q) in QUANTILES.iter().enumerate() {
                    let f = out.narrow(D::Minus1, k, 1)?.squeeze(D::Minus1)?;
                    let e = (y - f)?;
                    let pinball = ((&e * q)? + e.neg()?.relu()?)?.mean_all()?;
                    total = Some(match total {
                        Some(t) => (t + pinball)?,
                        None => pinball,
                    });
                }
                total.ok_or_else(|| Error::config("Forecaster", "no quantile", "report this"))?
            }
        })
    }

    /// Forecasts of windows `x (B, T, I)`, without autograd, in the scaled units.
    pub fn predict(&self, x: &Tensor) -> Result<Vec<ScaledForecast>> {
        let out = self.run(x, false)?.detach().to_dtype(candle_core::DType::F64)?;
        let c = &self.config;
        let values = out.flatten_all()?.to_vec1::<f64>()?;
        let k = c.loss.outputs();
        let at = |b: usize, h: usize, n: usize, o: usize| values[((b * c.horizon + h) * c.num_targets + n) * k + o];
        let batch = x.dim(0)?;
        let grid = |f: &dyn Fn(usize, usize) -> f64| -> Vec<Vec<f64>> {
            (0..c.num_targets).map(|n| (0..c.horizon).map(|h| f(h, n)).collect()).collect()
        };
        Ok((0..batch)
            .map(|b| match c.loss {
                ForecastLoss::Mse | ForecastLoss::Mae => {
                    ScaledForecast { point: grid(&|h, n| at(b, h, n, 0)), interval: None }
                }
                ForecastLoss::Gaussian => {
                    let sd = |h, n| at(b, h, n, 1).clamp(-7.0, 7.0).exp();
                    ScaledForecast {
                        point: grid(&|h, n| at(b, h, n, 0)),
                        interval: Some((
                            grid(&|h, n| at(b, h, n, 0) - Z80 * sd(h, n)),
                            grid(&|h, n| at(b, h, n, 0) + Z80 * sd(h, n)),
                        )),
                    }
                }
                ForecastLoss::Quantile => {
                    // Sorted, so that crossing quantiles still give lo ≤ median ≤ hi.
                    let sorted = |h, n| {
                        let mut q = [at(b, h, n, 0), at(b, h, n, 1), at(b, h, n, 2)];
                        q.sort_by(f64::total_cmp);
                        q
                    };
                    ScaledForecast {
                        point: grid(&|h, n| sorted(h, n)[1]),
                        interval: Some((grid(&|h, n| sorted(h, n)[0]), grid(&|h, n| sorted(h, n)[2]))),
                    }
                }
            })
            .collect())
    }

    /// Dropout between recurrent layers on (training) or off.
    pub fn set_training(&self, training: bool) {
        self.rnn.set_training(training);
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        let rnn: usize = self.rnn.weights().iter().map(|(_, t)| t.elem_count()).sum();
        rnn + self.head.weight().elem_count() + self.head.bias().map_or(0, |b| b.elem_count())
    }
}

impl fmt::Display for Forecaster {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let outputs = self.config.horizon * self.config.num_targets * self.config.loss.outputs();
        ModuleRepr::new("Forecaster")
            .child("rnn", ModuleRepr::leaf(self.rnn.to_string()))
            .child("head", crate::repr::linear(self.config.hidden_size, outputs, true))
            .fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};

    fn model(loss: ForecastLoss) -> Forecaster {
        let varmap = candle_nn::VarMap::new();
        let vb = crate::seeded_var_builder(&varmap, 3, DType::F32, &Device::Cpu);
        Forecaster::new(ForecasterConfig { hidden_size: 5, loss, ..ForecasterConfig::new(2, 2, 3) }, vb).unwrap()
    }

    /// The losses against values computed from the model's own outputs by hand.
    #[test]
    fn losses_match_their_definitions() {
        let x = Tensor::randn(0f32, 1.0, (4, 6, 2), &Device::Cpu).unwrap();
        let y = Tensor::randn(0f32, 1.0, (4, 3, 2), &Device::Cpu).unwrap();
        let yv: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        for loss in [ForecastLoss::Mse, ForecastLoss::Mae, ForecastLoss::Gaussian, ForecastLoss::Quantile] {
            let m = model(loss);
            let out: Vec<f32> = m.forward(&x).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let k = loss.outputs();
            let mut expect = 0.0f64;
            for (i, &t) in yv.iter().enumerate() {
                let o = |j: usize| out[i * k + j] as f64;
                let t = t as f64;
                expect += match loss {
                    ForecastLoss::Mse => (t - o(0)).powi(2),
                    ForecastLoss::Mae => (t - o(0)).abs(),
                    ForecastLoss::Gaussian => o(1) + 0.5 * ((t - o(0)) / o(1).exp()).powi(2),
                    ForecastLoss::Quantile => QUANTILES
                        .iter()
                        .enumerate()
                        .map(|(j, &q)| {
                            let e = t - o(j);
                            if e >= 0.0 {
                                q * e
                            } else {
                                (q - 1.0) * e
                            }
                        })
                        .sum(),
                };
            }
            expect /= yv.len() as f64;
            let got = m.loss(&x, &y).unwrap().to_scalar::<f32>().unwrap() as f64;
            assert!((got - expect).abs() < 1e-5 * expect.abs().max(1.0), "{loss:?}: {got} vs {expect}");
            let p = m.predict(&x).unwrap();
            assert_eq!((p.len(), p[0].point.len(), p[0].point[0].len()), (4, 2, 3));
            assert_eq!(p[0].interval.is_some(), loss.has_intervals());
            if let Some((lo, hi)) = &p[0].interval {
                assert!(lo[0][0] <= p[0].point[0][0] && p[0].point[0][0] <= hi[0][0]);
            }
        }
    }

    #[test]
    fn bad_shapes_are_typed_errors() {
        let m = model(ForecastLoss::Mse);
        assert!(m.forward(&Tensor::zeros((1, 4, 3), DType::F32, &Device::Cpu).unwrap()).is_err());
        let x = Tensor::zeros((1, 4, 2), DType::F32, &Device::Cpu).unwrap();
        assert!(m.loss(&x, &Tensor::zeros((1, 2, 2), DType::F32, &Device::Cpu).unwrap()).is_err());
        assert!(m.to_string().starts_with("Forecaster("), "{m}");
        assert_eq!(m.parameter_count(), CellType::Lstm.parameter_count(2, 5, 1) + 5 * 6 + 6);
    }
}
