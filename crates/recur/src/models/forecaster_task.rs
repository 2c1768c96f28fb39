//! Forecasting as a training task: each series split into a training part and a test part (the
//! last 20% by default), scalers fitted on the training part only, windows of the training part
//! as seeded shuffled batches ([`ForecastWindows`]), the [`Model`] the trainer runs
//! ([`ForecasterTraining`]), forecasts in the data's own units, a rolling-origin [`backtest`] of
//! the model and every [`Baseline`] on the same origins and horizons, and [`load_forecaster`].
//!
//! The model's inputs at each step of the lookback window are, per target, the scaled value minus
//! the scaled value at the forecast origin (the window's last step) and the scaled value itself,
//! then the scaled covariates and the calendar features. It predicts each horizon step's scaled
//! value minus the origin's: a forecast is relative to the last value seen, so a trend past the
//! training range is no extrapolation of the scaled level.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use crate::data::timeseries::{
    calendar_features, detect_period, ColumnSpec, Frequency, ScaleKind, Scaler, Series, TimeSeriesFile,
};
use crate::metrics::{mase_scale, ForecastScores, ForecastSummary};
use crate::models::{Baseline, Forecaster, ForecasterConfig};
use crate::train::{derive_seed, named_vars, DataSource, Metrics, Model, TaskCheckpoint, TrainRng};
use crate::{Error, Result};

/// The task name of forecaster checkpoints.
pub const FORECAST_TASK: &str = "forecast";

/// How a series is cut into windows and scaled, before fitting.
#[derive(Clone, Debug, PartialEq)]
pub struct ForecastOptions {
    /// Steps of history the model reads (`None`: twice the period or twice the horizon,
    /// whichever is longer).
    pub lookback: Option<usize>,
    /// Steps ahead it forecasts (`None`: the period, or 5 without one).
    pub horizon: Option<usize>,
    /// The season length (`None`: the frequency's natural one, else detected).
    pub period: Option<usize>,
    /// The scaling.
    pub scaling: ScaleKind,
    /// Take logs before scaling.
    pub log: bool,
    /// Add cyclic calendar features of the date column.
    pub calendar: bool,
    /// The share of each series held out at its end for testing (default 0.2).
    pub test_fraction: f64,
    /// Or this many steps (overrides the fraction).
    pub test_size: Option<usize>,
    /// Windows per batch.
    pub batch_size: usize,
    /// The seed of initialisation and batch order.
    pub seed: u64,
}

/// What the task keeps of one series: where its training part ends and its scalers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesInfo {
    /// The series id.
    pub id: String,
    /// Steps in the training part (the test part starts there).
    pub train_len: usize,
    /// One scaler per target, fitted on the training part.
    pub targets: Vec<Scaler>,
    /// One scaler per covariate, fitted on the training part.
    pub covariates: Vec<Scaler>,
    /// MASE scale per target (the training part's in-sample seasonal naive MAE).
    pub mase_scale: Vec<f64>,
}

/// What a forecaster checkpoint keeps beside the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ForecastData {
    /// The columns.
    pub spec: ColumnSpec,
    /// The dates' spacing.
    pub frequency: Option<Frequency>,
    /// Steps of history the model reads.
    pub lookback: usize,
    /// Steps ahead.
    pub horizon: usize,
    /// The season length (seasonal naive, MASE).
    pub period: usize,
    /// The scaling.
    pub scaling: ScaleKind,
    /// Logs before scaling.
    pub log: bool,
    /// Calendar features on.
    pub calendar: bool,
    /// The series.
    pub series: Vec<SeriesInfo>,
    /// Windows per batch.
    pub batch_size: usize,
    /// The seed.
    pub seed: u64,
}

fn bad(message: String, fix: impl Into<String>) -> Error {
    Error::data("forecast", message, fix)
}

impl ForecastData {
    /// Splits every series of `file`, fits the scalers on the training parts and settles the
    /// period. Refuses a series too short for a window of `lookback + horizon` in its training
    /// part, or a test part shorter than the horizon.
    pub fn fit(file: &TimeSeriesFile, options: &ForecastOptions) -> Result<Self> {
        let test_of = |n: usize| match options.test_size {
            Some(t) => t,
            None => (n as f64 * options.test_fraction).ceil() as usize,
        };
        let period = match options.period {
            Some(p) => p.max(1),
            None => match file.frequency.map(Frequency::natural_period) {
                Some(p) if p > 1 => p,
                _ => {
                    let first = &file.series[0].targets[0];
                    let train_len = first.len().saturating_sub(test_of(first.len()));
                    detect_period(&first[..train_len], train_len / 3)
                }
            },
        };
        let h = options.horizon.unwrap_or(if period > 1 { period } else { 5 });
        let l = options.lookback.unwrap_or((2 * period).max(2 * h));
        if l == 0 || h == 0 {
            return Err(bad(
                "lookback and horizon must be at least 1".into(),
                "pass --lookback and --horizon of 1 or more",
            ));
        }
        let mut infos = Vec::with_capacity(file.series.len());
        for s in &file.series {
            let n = s.len();
            let test = test_of(n);
            let train_len = n.saturating_sub(test);
            let what =
                if file.series.len() > 1 { format!("{} series {:?}", file.origin, s.id) } else { file.origin.clone() };
            if train_len < l + h {
                return Err(bad(
                    format!(
                        "{what} has {n} steps: its training part ({train_len} steps, the test part being {test}) is shorter \
                         than lookback + horizon = {l} + {h}"
                    ),
                    "use a smaller --lookback or --horizon, a smaller test part, or a longer series",
                ));
            }
            if test < h {
                return Err(bad(
                    format!("{what}: its test part ({test} steps) is shorter than the horizon ({h})"),
                    "use a larger test part or a smaller --horizon",
                ));
            }
            let fit = |v: &Vec<f64>, name: &str| {
                Scaler::fit(&v[..train_len], options.scaling, options.log, &format!("{what} column {name:?}"))
            };
            let targets: Vec<Scaler> =
                s.targets.iter().zip(&file.spec.targets).map(|(v, n)| fit(v, n)).collect::<Result<_>>()?;
            let covariates: Vec<Scaler> = s
                .covariates
                .iter()
                .zip(&file.spec.covariates)
                .map(|(v, n)| Scaler::fit(&v[..train_len], options.scaling, false, &format!("{what} column {n:?}")))
                .collect::<Result<_>>()?;
            infos.push((s, SeriesInfo { id: s.id.clone(), train_len, targets, covariates, mase_scale: Vec::new() }));
        }
        let series = infos
            .into_iter()
            .map(|(s, mut info)| {
                info.mase_scale = s
                    .targets
                    .iter()
                    .map(|v| {
                        let train = &v[..info.train_len];
                        mase_scale(train, period).or_else(|| mase_scale(train, 1)).unwrap_or(1.0)
                    })
                    .collect();
                info
            })
            .collect();
        Ok(Self {
            spec: file.spec.clone(),
            frequency: file.frequency,
            lookback: l,
            horizon: h,
            period,
            scaling: options.scaling,
            log: options.log,
            calendar: options.calendar && file.frequency.is_some(),
            series,
            batch_size: options.batch_size.max(1),
            seed: options.seed,
        })
    }

    /// Input features per step: two per target, one per covariate, the calendar's.
    pub fn input_size(&self) -> usize {
        let calendar = if self.calendar { self.frequency.map_or(0, Frequency::calendar_size) } else { 0 };
        2 * self.spec.targets.len() + self.spec.covariates.len() + calendar
    }

    /// The series of `file` scaled by this data's scalers, matched to them by id; refuses a file
    /// whose columns or series differ, or whose series are shorter than their training part.
    pub fn prepare(&self, file: &TimeSeriesFile) -> Result<Vec<Prepared>> {
        if file.spec.targets != self.spec.targets || file.spec.covariates != self.spec.covariates {
            return Err(bad(
                format!(
                    "{} was read with targets {:?} and covariates {:?}, the model with {:?} and {:?}",
                    file.origin, file.spec.targets, file.spec.covariates, self.spec.targets, self.spec.covariates
                ),
                "use the model's columns",
            ));
        }
        let mut out = Vec::with_capacity(self.series.len());
        for info in &self.series {
            let s = file.series.iter().find(|s| s.id == info.id).ok_or_else(|| {
                bad(
                    format!("{} has no series {:?}, which the model was trained on", file.origin, info.id),
                    "use the model's data",
                )
            })?;
            if s.len() < info.train_len {
                return Err(bad(
                    format!(
                        "{} series {:?} has {} steps, fewer than the model's training part ({})",
                        file.origin,
                        info.id,
                        s.len(),
                        info.train_len
                    ),
                    "use the data the model was trained on",
                ));
            }
            out.push(Prepared::new(s, info, self)?);
        }
        Ok(out)
    }
}

/// One series ready for windows: its raw target values, and its scaled input features per step.
#[derive(Clone, Debug)]
pub struct Prepared {
    /// The series id.
    pub id: String,
    /// Raw target values `[target][t]`.
    pub raw: Vec<Vec<f64>>,
    /// Scaled targets `[target][t]`.
    pub scaled: Vec<Vec<f64>>,
    /// Scaled covariates and calendar features per step.
    pub extra: Vec<Vec<f64>>,
    /// The dates, if any.
    pub dates: Option<Vec<NaiveDate>>,
    /// The series' scalers and split.
    pub info: SeriesInfo,
}

impl Prepared {
    fn new(s: &Series, info: &SeriesInfo, data: &ForecastData) -> Result<Self> {
        let scaled =
            s.targets.iter().zip(&info.targets).map(|(v, sc)| v.iter().map(|&x| sc.transform(x)).collect()).collect();
        let extra = (0..s.len())
            .map(|t| {
                let mut f: Vec<f64> =
                    s.covariates.iter().zip(&info.covariates).map(|(v, sc)| sc.transform(v[t])).collect();
                if data.calendar {
                    if let (Some(dates), Some(freq)) = (&s.dates, data.frequency) {
                        f.extend(calendar_features(dates[t], freq));
                    }
                }
                f
            })
            .collect();
        Ok(Self { id: s.id.clone(), raw: s.targets.clone(), scaled, extra, dates: s.dates.clone(), info: info.clone() })
    }

    /// Steps.
    pub fn len(&self) -> usize {
        self.raw.first().map_or(0, Vec::len)
    }

    /// Whether there is no step.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The model inputs of the window ending just before `origin` (`lookback` steps), row-major
    /// `(lookback, I)`.
    fn window(&self, origin: usize, lookback: usize, out: &mut Vec<f32>) {
        for t in origin - lookback..origin {
            for z in &self.scaled {
                out.push((z[t] - z[origin - 1]) as f32);
                out.push(z[t] as f32);
            }
            out.extend(self.extra[t].iter().map(|&v| v as f32));
        }
    }

    /// The training targets of origin `origin`: `(horizon, N)` scaled values minus the origin's.
    fn targets(&self, origin: usize, horizon: usize, out: &mut Vec<f32>) {
        for t in origin..origin + horizon {
            for z in &self.scaled {
                out.push((z[t] - z[origin - 1]) as f32);
            }
        }
    }
}

/// A batch of windows: inputs `(B, lookback, I)` and targets `(B, horizon, N)`.
pub struct ForecastBatch {
    /// The inputs.
    pub x: Tensor,
    /// The targets.
    pub y: Tensor,
}

/// Every window of the training parts, shuffled by epoch.
pub struct ForecastWindows {
    series: Vec<Prepared>,
    /// `(series, origin)`.
    origins: Vec<(usize, usize)>,
    lookback: usize,
    horizon: usize,
    batch_size: usize,
    seed: u64,
}

impl ForecastWindows {
    /// The training windows of `series`: every origin with a full lookback before it and a full
    /// horizon after it inside the training part.
    pub fn new(series: Vec<Prepared>, data: &ForecastData) -> Result<Self> {
        let (l, h) = (data.lookback, data.horizon);
        let origins: Vec<(usize, usize)> = series
            .iter()
            .enumerate()
            .flat_map(|(i, s)| (l..=s.info.train_len.saturating_sub(h)).map(move |o| (i, o)))
            .collect();
        if origins.is_empty() {
            return Err(bad("no training window".into(), "use a smaller --lookback or --horizon"));
        }
        Ok(Self { series, origins, lookback: l, horizon: h, batch_size: data.batch_size.max(1), seed: data.seed })
    }

    /// Training windows.
    pub fn len(&self) -> usize {
        self.origins.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.origins.is_empty()
    }
}

impl DataSource for ForecastWindows {
    type Batch = ForecastBatch;

    fn batches_per_epoch(&self) -> usize {
        self.origins.len().div_ceil(self.batch_size)
    }

    fn batch(&self, epoch: usize, index: usize) -> Result<ForecastBatch> {
        let mut order: Vec<usize> = (0..self.origins.len()).collect();
        TrainRng::new(derive_seed(self.seed, &format!("forecast windows, epoch {epoch}"))).shuffle(&mut order);
        let rows: Vec<usize> = order.iter().skip(index * self.batch_size).take(self.batch_size).copied().collect();
        if rows.is_empty() {
            return Err(bad(format!("batch {index} is past the epoch's {}", self.batches_per_epoch()), "report this"));
        }
        let (mut x, mut y) = (Vec::new(), Vec::new());
        for &r in &rows {
            let (s, o) = self.origins[r];
            self.series[s].window(o, self.lookback, &mut x);
            self.series[s].targets(o, self.horizon, &mut y);
        }
        let b = rows.len();
        let features = x.len() / (b * self.lookback);
        let targets = y.len() / (b * self.horizon);
        Ok(ForecastBatch {
            x: Tensor::from_vec(x, (b, self.lookback, features), &Device::Cpu)?,
            y: Tensor::from_vec(y, (b, self.horizon, targets), &Device::Cpu)?,
        })
    }

    fn items_per_batch(&self) -> usize {
        self.batch_size
    }
}

/// A forecaster the trainer runs (no validation: the test part is for the backtest alone).
pub struct ForecasterTraining {
    model: Forecaster,
    varmap: VarMap,
}

impl ForecasterTraining {
    /// A fresh model of `config`, its parameters drawn from `seed`.
    pub fn build(config: ForecasterConfig, seed: u64) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = crate::seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let model = Forecaster::new(config, vb)?;
        Ok(Self { model, varmap })
    }

    /// The model.
    pub fn forecaster(&self) -> &Forecaster {
        &self.model
    }
}

impl Model for ForecasterTraining {
    type Batch = ForecastBatch;

    fn vars(&self) -> Vec<(String, Var)> {
        named_vars(&self.varmap)
    }

    fn set_training(&self, training: bool) {
        self.model.set_training(training);
    }

    fn loss(&mut self, batch: &ForecastBatch) -> Result<Tensor> {
        self.model.loss(&batch.x, &batch.y)
    }

    fn evaluate(&mut self) -> Result<Option<Metrics>> {
        Ok(None)
    }

    fn generator_state(&self) -> Option<u128> {
        Some(self.model.rnn().dropout_state())
    }

    fn set_generator_state(&mut self, state: u128) {
        self.model.rnn().set_dropout_state(state);
    }
}

/// A forecast from one origin in the data's units: `[target][step]`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Forecast {
    /// The series id.
    pub series: String,
    /// The origin: the index of the first forecast step (the values before it are the history).
    pub origin: usize,
    /// The point forecast.
    pub point: Vec<Vec<f64>>,
    /// The 80% interval's lower ends, for a probabilistic model.
    pub lower: Option<Vec<Vec<f64>>>,
    /// Its upper ends.
    pub upper: Option<Vec<Vec<f64>>>,
}

/// The model's forecasts of `series` from each of `origins` (each needing `lookback` steps
/// before it); each the same bits whatever the other origins.
pub fn forecast(
    model: &Forecaster,
    data: &ForecastData,
    series: &Prepared,
    origins: &[usize],
) -> Result<Vec<Forecast>> {
    let l = data.lookback;
    if let Some(&o) = origins.iter().find(|&&o| o < l || o > series.len()) {
        return Err(bad(
            format!(
                "origin {o} of series {:?} needs {l} steps before it and at most {} steps",
                series.id,
                series.len()
            ),
            "forecast from later in the series, or use a smaller --lookback",
        ));
    }
    let input = data.input_size();
    let mut out = Vec::with_capacity(origins.len());
    // One window at a time: a batched matrix product may round differently by batch size, and a
    // forecast must not depend on which other origins were asked for with it.
    for chunk in origins.chunks(1) {
        let mut x = Vec::with_capacity(chunk.len() * l * input);
        for &o in chunk {
            series.window(o, l, &mut x);
        }
        let x = Tensor::from_vec(x, (chunk.len(), l, input), &Device::Cpu)?;
        for (&o, f) in chunk.iter().zip(model.predict(&x)?) {
            let unscale = |grid: &Vec<Vec<f64>>| -> Vec<Vec<f64>> {
                grid.iter()
                    .enumerate()
                    .map(|(k, row)| {
                        let base = series.scaled[k][o - 1];
                        row.iter().map(|&v| series.info.targets[k].inverse(v + base)).collect()
                    })
                    .collect()
            };
            let (lower, upper) = match &f.interval {
                Some((lo, hi)) => (Some(unscale(lo)), Some(unscale(hi))),
                None => (None, None),
            };
            out.push(Forecast { series: series.id.clone(), origin: o, point: unscale(&f.point), lower, upper });
        }
    }
    Ok(out)
}

/// One method's scores in a backtest.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MethodScore {
    /// `model` or a baseline's name.
    pub method: String,
    /// Its metrics over every origin, step, target and series.
    pub scores: ForecastSummary,
}

/// A rolling-origin backtest's results.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BacktestReport {
    /// Steps ahead.
    pub horizon: usize,
    /// The season length (seasonal naive, MASE).
    pub period: usize,
    /// Forecast origins, over every series.
    pub origins: usize,
    /// The model first, then each baseline.
    pub methods: Vec<MethodScore>,
    /// The model's forecast from every origin.
    pub forecasts: Vec<Forecast>,
}

/// Scores `model` and every baseline from every origin of the test parts: origins from the end of
/// each training part to the last one with a full horizon, one step apart. The baselines see the
/// whole history up to each origin (an expanding window); the model its lookback window; none is
/// refitted. Each value's MASE is scaled by its series' training part.
pub fn backtest(model: &Forecaster, data: &ForecastData, series: &[Prepared]) -> Result<BacktestReport> {
    let h = data.horizon;
    let baselines = Baseline::all(data.period);
    let mut scores: Vec<ForecastScores> = vec![ForecastScores::default(); baselines.len() + 1];
    let mut forecasts = Vec::new();
    for s in series {
        let start = s.info.train_len.max(data.lookback);
        if s.len() < start + h {
            continue;
        }
        let origins: Vec<usize> = (start..=s.len() - h).collect();
        let model_forecasts = forecast(model, data, s, &origins)?;
        for f in &model_forecasts {
            for (k, raw) in s.raw.iter().enumerate() {
                let scale = s.info.mase_scale[k];
                for step in 0..h {
                    let interval = f.lower.as_ref().zip(f.upper.as_ref()).map(|(lo, hi)| (lo[k][step], hi[k][step]));
                    scores[0].add(raw[f.origin + step], f.point[k][step], scale, interval);
                }
                for (b, baseline) in baselines.iter().enumerate() {
                    let fc = baseline.forecast(&raw[..f.origin], h)?;
                    for step in 0..h {
                        scores[b + 1].add(raw[f.origin + step], fc[step], scale, None);
                    }
                }
            }
        }
        forecasts.extend(model_forecasts);
    }
    let names = std::iter::once("model").chain(baselines.iter().map(|b| b.name()));
    let methods: Vec<MethodScore> = names
        .zip(&scores)
        .filter_map(|(name, s)| s.summary().map(|scores| MethodScore { method: name.to_string(), scores }))
        .collect();
    if methods.is_empty() {
        return Err(bad(
            "no series has a test part of a full horizon".into(),
            "use a larger test part or a smaller --horizon",
        ));
    }
    Ok(BacktestReport { horizon: h, period: data.period, origins: forecasts.len(), methods, forecasts })
}

/// A forecaster read back from a checkpoint.
pub struct LoadedForecaster {
    /// The model, with the checkpoint's parameters.
    pub model: Forecaster,
    /// Its configuration.
    pub config: ForecasterConfig,
    /// Its columns, scalers, windows.
    pub data: ForecastData,
    /// The whole checkpoint, to resume from.
    pub checkpoint: TaskCheckpoint,
}

/// Reads a `recur forecast` checkpoint and builds its model; every problem is one typed error.
pub fn load_forecaster(path: &Path) -> Result<LoadedForecaster> {
    let checkpoint = TaskCheckpoint::load(path, FORECAST_TASK)?;
    let config: ForecasterConfig = checkpoint.model_config()?;
    let data: ForecastData = checkpoint.data()?;
    let origin = path.display().to_string();
    if data.input_size() != config.input_size
        || data.spec.targets.len() != config.num_targets
        || data.horizon != config.horizon
    {
        return Err(Error::checkpoint(
            origin,
            "its data settings disagree with its model's sizes",
            "pass a checkpoint written by recur forecast",
        ));
    }
    let tensors: HashMap<String, Tensor> = checkpoint.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let model =
        Forecaster::new(config.clone(), VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).map_err(|e| {
            Error::checkpoint(
                &origin,
                format!("its parameters do not fit its model ({e})"),
                "pass a checkpoint written by recur forecast",
            )
        })?;
    Ok(LoadedForecaster { model, config, data, checkpoint })
}
