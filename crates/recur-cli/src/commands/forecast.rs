//! `recur forecast train|predict|backtest`: time-series forecasting (default: the monthly airline
//! passengers, embedded) with an LSTM/GRU encoder and a direct multi-horizon head on the library
//! trainer, always scored against the naive, seasonal naive, drift and mean baselines.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use recur::data::timeseries::{read_csv, ColumnSpec, Fill, ScaleKind, TimeSeriesFile};
use recur::models::{
    backtest, forecast, load_forecaster, BacktestReport, CellType, ForecastData, ForecastLoss, ForecastOptions,
    ForecastWindows, ForecasterConfig, ForecasterTraining, LoadedForecaster, FORECAST_TASK,
};
use recur::plot::{Band, LinePlot, Series};
use recur::train::{holds_run, LrSchedule, OptimizerConfig, RunDir, StopReason, TaskInfo, Trainer, TrainerConfig};

use super::train::{limit_threads, thread_count, thread_counts};
use crate::args::{self, parse_cell, parse_duration, OptimizerName, ScheduleName};
use crate::checkpoint::write_atomic;
use crate::console::say;
use crate::interrupt;
use crate::progress::{self, plural, Style};
use crate::report;

/// The default data, embedded: monthly international airline passengers 1949–1960 (see
/// `data/airline_passengers/SOURCE.txt`).
const AIRLINE: &str = include_str!("../../data/airline_passengers/airline.csv");
const AIRLINE_NAME: &str = "airline passengers (embedded)";

/// `recur forecast`.
#[derive(Debug, Args)]
pub struct ForecastArgs {
    #[command(subcommand)]
    pub command: ForecastCommand,
}

/// What `recur forecast` does.
#[derive(Debug, Subcommand)]
pub enum ForecastCommand {
    /// Train a forecaster on the training part of each series (default: airline passengers).
    Train(Box<TrainArgs>),
    /// Forecast the steps after the end of the series (or after --origin): CSV and SVG plot.
    Predict(PredictArgs),
    /// Score the model and every baseline from each origin of the test part (rolling origin);
    /// trains first when no --checkpoint is given.
    Backtest(Box<BacktestArgs>),
}

/// `--fill`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum FillName {
    /// A missing value or date is an error naming its line and column.
    Error,
    /// The previous value.
    Previous,
    /// Linear interpolation.
    Linear,
}

/// `--scale`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ScaleName {
    /// (x - mean) / std of the training part.
    Standard,
    /// (x - min) / (max - min) of the training part.
    Minmax,
    /// Unchanged.
    None,
}

/// `--loss`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LossName {
    /// Mean squared error (point forecast).
    Mse,
    /// Mean absolute error (point forecast).
    Mae,
    /// Gaussian likelihood (mean and 80% interval).
    Gaussian,
    /// Quantile loss at 10/50/90% (median and 80% interval).
    Quantile,
}

/// Where the series come from.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// A CSV file with a header row [default: the embedded airline passengers].
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    pub csv: Option<PathBuf>,
    /// The column(s) to forecast (repeat or comma-separate) [default for the embedded data:
    /// Passengers].
    #[arg(long, value_name = "COL", value_delimiter = ',', help_heading = "Data")]
    pub target: Vec<String>,
    /// The date column: YYYY-MM-DD, YYYYMMDD, YYYY-MM or a year [embedded data: Date].
    #[arg(long, value_name = "COL", help_heading = "Data")]
    pub date: Option<String>,
    /// A column naming the series of each row: several series, one global model.
    #[arg(long, value_name = "COL", help_heading = "Data")]
    pub id: Option<String>,
    /// Numeric input columns besides the targets (repeat or comma-separate).
    #[arg(long, value_name = "COL", value_delimiter = ',', help_heading = "Data")]
    pub covariate: Vec<String>,
    /// Missing values and dates: an error, the previous value, or linear interpolation.
    #[arg(long, value_enum, default_value_t = FillName::Error, help_heading = "Data")]
    pub fill: FillName,
}

/// Flags of `recur forecast train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Steps ahead to forecast [default: the period, or 5 without one].
    #[arg(long, help_heading = "Windows")]
    pub horizon: Option<usize>,
    /// Steps of history the model reads [default: twice the period or the horizon, the longer].
    #[arg(long, help_heading = "Windows")]
    pub lookback: Option<usize>,
    /// The season length [default: 12 monthly, 52 weekly, 7 daily, else detected by
    /// autocorrelation].
    #[arg(long, help_heading = "Windows")]
    pub period: Option<usize>,
    /// The share of each series held out at its end for the backtest.
    #[arg(long, default_value_t = 0.2, help_heading = "Windows")]
    pub test_fraction: f64,
    /// Hold out this many steps instead of --test-fraction.
    #[arg(long, help_heading = "Windows")]
    pub test_size: Option<usize>,
    /// Scaling, fitted on the training part.
    #[arg(long, value_enum, default_value_t = ScaleName::Standard, help_heading = "Windows")]
    pub scale: ScaleName,
    /// Take logs before scaling [default: on for the embedded airline data].
    #[arg(long, help_heading = "Windows")]
    pub log: bool,
    /// No log for the embedded data either.
    #[arg(long, conflicts_with = "log", help_heading = "Windows")]
    pub no_log: bool,
    /// No calendar features from the date column.
    #[arg(long, help_heading = "Windows")]
    pub no_calendar: bool,

    /// Recurrent cell.
    #[arg(long, default_value = "lstm", value_parser = parse_cell, help_heading = "Model")]
    pub cell: CellType,
    /// Size of the hidden state.
    #[arg(long, default_value_t = 32, help_heading = "Model")]
    pub hidden_size: usize,
    /// Recurrent layers.
    #[arg(long, default_value_t = 1, help_heading = "Model")]
    pub num_layers: usize,
    /// Dropout between recurrent layers.
    #[arg(long, default_value_t = 0.0, help_heading = "Model")]
    pub dropout: f64,
    /// The loss: a point forecast (mse, mae) or one with 80% intervals (gaussian, quantile).
    #[arg(long, value_enum, default_value_t = LossName::Quantile, help_heading = "Model")]
    pub loss: LossName,

    /// Windows per batch.
    #[arg(long, default_value_t = 32, help_heading = "Optimization")]
    pub batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 3e-3, help_heading = "Optimization")]
    pub lr: f64,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerName::Adam, help_heading = "Optimization")]
    pub optimizer: OptimizerName,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = ScheduleName::Cosine, help_heading = "Optimization")]
    pub lr_schedule: ScheduleName,
    /// Clip the gradients' global norm to this (0: no clipping).
    #[arg(long, default_value_t = 1.0, help_heading = "Optimization")]
    pub grad_clip: f64,

    /// Optimizer steps [default: 300; with --resume, the checkpoint's].
    #[arg(long, help_heading = "Run")]
    pub max_steps: Option<usize>,
    /// Checkpoint every this many steps [default: a tenth of the steps].
    #[arg(long, help_heading = "Run")]
    pub eval_every: Option<usize>,
    /// Stop after this much time: seconds, or with a unit (90s, 3m, 1h).
    #[arg(long, value_parser = parse_duration, default_value = "10m", help_heading = "Run")]
    pub time_budget: Duration,
    /// Seed of initialisation and batch order.
    #[arg(long, default_value_t = 1234, help_heading = "Run")]
    pub seed: u64,
    /// Threads of the kernels (default: all cores).
    #[arg(long, help_heading = "Run")]
    pub threads: Option<usize>,
    /// Continue the run saved in this checkpoint (the data must be the same).
    #[arg(long, value_name = "CHECKPOINT", help_heading = "Run")]
    pub resume: Option<PathBuf>,

    /// Folder for best.safetensors, last.safetensors, metrics.jsonl, loss.svg [default: the
    /// first of runs/forecast, runs/forecast-2, … that holds no run].
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Let a new run replace the checkpoints already in --out.
    #[arg(long, help_heading = "Output")]
    pub overwrite: bool,
    /// Only the essentials: no progress.
    #[arg(long, short, help_heading = "Output")]
    pub quiet: bool,
}

/// Flags of `recur forecast predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The checkpoint to forecast with.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// The data, with the checkpoint's columns [default: the embedded airline passengers].
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Missing values and dates in --csv.
    #[arg(long, value_enum, help_heading = "Data")]
    pub fill: Option<FillName>,
    /// Forecast from this step (0-based index of the first forecast step; the steps before it are
    /// the history) [default: the end of the series].
    #[arg(long)]
    pub origin: Option<usize>,
    /// Only this series (its id), for a file of several.
    #[arg(long)]
    pub series: Option<String>,
    /// The forecast as CSV [default: forecast.csv beside the checkpoint].
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// The plot of history, forecast and interval [default: forecast.svg beside the checkpoint].
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
}

/// Flags of `recur forecast backtest`.
#[derive(Debug, Args)]
pub struct BacktestArgs {
    /// The checkpoint to score [default: train one first, with the training flags].
    #[arg(long, value_name = "FILE")]
    pub checkpoint: Option<PathBuf>,
    /// The results as JSON [default: backtest.json beside the checkpoint].
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub train: TrainArgs,
}

/// Runs `recur forecast`.
pub fn run(args: ForecastArgs, explicit: &[String]) -> Result<()> {
    match args.command {
        ForecastCommand::Train(a) => {
            interrupt::install()?;
            train(*a, explicit).map(|_| ())
        }
        ForecastCommand::Predict(a) => predict_cmd(a),
        ForecastCommand::Backtest(a) => backtest_cmd(*a, explicit),
    }
}

fn fill(name: FillName) -> Fill {
    match name {
        FillName::Error => Fill::Error,
        FillName::Previous => Fill::Previous,
        FillName::Linear => Fill::Linear,
    }
}

/// Reads `path` (or the embedded airline data) by `spec`.
fn read(path: Option<&Path>, spec: &ColumnSpec) -> Result<TimeSeriesFile> {
    match path {
        None => Ok(read_csv(AIRLINE, AIRLINE_NAME, spec)?),
        Some(p) => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            let text = recur::data::decode_utf8(&bytes).with_context(|| format!("cannot use {}", p.display()))?;
            Ok(read_csv(text, &p.display().to_string(), spec)?)
        }
    }
}

/// The columns the flags name (the embedded data's when there is no --csv).
fn spec_of(data: &DataArgs) -> Result<ColumnSpec> {
    let (targets, date) = match (&data.csv, data.target.is_empty()) {
        (None, true) => (vec!["Passengers".to_string()], data.date.clone().or(Some("Date".into()))),
        (Some(p), true) => bail!("name the column(s) of {} to forecast with --target COL", p.display()),
        _ => (data.target.clone(), data.date.clone()),
    };
    Ok(ColumnSpec { targets, date, id: data.id.clone(), covariates: data.covariate.clone(), fill: fill(data.fill) })
}

/// Trains; returns the folder's best checkpoint.
fn train(args: TrainArgs, explicit: &[String]) -> Result<PathBuf> {
    if let Some(threads) = args.threads {
        limit_threads(thread_count(threads)?);
    }
    let style = Style::pick(args.quiet);
    let resumed = match &args.resume {
        Some(p) => Some(load_forecaster(p).with_context(|| format!("cannot resume from {}", p.display()))?),
        None => None,
    };
    if resumed.is_some() {
        let fixed = [
            "target",
            "date",
            "id",
            "covariate",
            "horizon",
            "lookback",
            "period",
            "test_fraction",
            "test_size",
            "scale",
            "log",
            "no_log",
            "no_calendar",
            "cell",
            "hidden_size",
            "num_layers",
            "dropout",
            "loss",
            "batch_size",
            "lr",
            "optimizer",
            "lr_schedule",
            "grad_clip",
            "seed",
        ];
        let given: Vec<String> = fixed
            .iter()
            .filter(|f| explicit.iter().any(|e| e == *f))
            .map(|f| format!("--{}", f.replace('_', "-")))
            .collect();
        if !given.is_empty() {
            bail!(
                "{} come{} from the checkpoint a resumed run continues; drop {} to resume, or start a new run",
                given.join(", "),
                if given.len() == 1 { "s" } else { "" },
                if given.len() == 1 { "it" } else { "them" }
            );
        }
    }
    let spec = match &resumed {
        Some(r) => ColumnSpec { fill: fill(args.data.fill), ..r.data.spec.clone() },
        None => spec_of(&args.data)?,
    };
    let file = read(args.data.csv.as_deref(), &spec)?;
    let data = match &resumed {
        Some(r) => r.data.clone(),
        None => {
            if !(0.0..1.0).contains(&args.test_fraction) {
                bail!("--test-fraction must be in [0, 1), got {}", args.test_fraction);
            }
            let options = ForecastOptions {
                lookback: args.lookback,
                horizon: args.horizon,
                period: args.period,
                scaling: match args.scale {
                    ScaleName::Standard => ScaleKind::Standard,
                    ScaleName::Minmax => ScaleKind::MinMax,
                    ScaleName::None => ScaleKind::None,
                },
                log: args.log || (args.data.csv.is_none() && !args.no_log),
                calendar: !args.no_calendar,
                test_fraction: args.test_fraction,
                test_size: args.test_size,
                batch_size: args.batch_size,
                seed: args.seed,
            };
            ForecastData::fit(&file, &options)?
        }
    };
    let prepared = data.prepare(&file)?;
    let windows = ForecastWindows::new(prepared, &data)?;
    let config = match &resumed {
        Some(r) => r.config.clone(),
        None => {
            for (flag, v) in [
                ("--hidden-size", args.hidden_size),
                ("--num-layers", args.num_layers),
                ("--batch-size", args.batch_size),
            ] {
                if v == 0 {
                    bail!("{flag} must be at least 1");
                }
            }
            if !(0.0..1.0).contains(&args.dropout) {
                bail!("--dropout must be in [0, 1), got {}", args.dropout);
            }
            ForecasterConfig {
                cell: args.cell,
                hidden_size: args.hidden_size,
                num_layers: args.num_layers,
                dropout: args.dropout,
                loss: match args.loss {
                    LossName::Mse => ForecastLoss::Mse,
                    LossName::Mae => ForecastLoss::Mae,
                    LossName::Gaussian => ForecastLoss::Gaussian,
                    LossName::Quantile => ForecastLoss::Quantile,
                },
                ..ForecasterConfig::new(data.input_size(), data.spec.targets.len(), data.horizon)
            }
        }
    };
    let trainer_config = match &resumed {
        Some(r) => {
            let mut t = r.checkpoint.trainer.clone();
            if let Some(max) = args.max_steps {
                t.max_steps = max.max(1);
            }
            if let Some(every) = args.eval_every {
                t.eval_every = every.max(1);
            }
            t
        }
        None => {
            let max_steps = args.max_steps.unwrap_or(300).max(1);
            let optimizer = OptimizerConfig::by_name(&args::name(&args.optimizer), args.lr)?;
            let schedule = LrSchedule::by_name(&args::name(&args.lr_schedule), max_steps as u64, args.lr)?;
            TrainerConfig {
                grad_clip: args.grad_clip,
                divergence_loss: Some(1e4),
                ..TrainerConfig::new(
                    max_steps,
                    args.eval_every.unwrap_or(max_steps.div_ceil(10)).max(1),
                    optimizer,
                    schedule,
                )
            }
        }
    };
    let dir = match (&args.out, &args.resume) {
        (Some(out), _) => RunDir::claim_exact(out)?,
        (None, Some(r)) => {
            RunDir::claim_exact(r.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")))?
        }
        (None, None) => RunDir::claim_next_free(Path::new("runs"), "forecast")?,
    };
    if args.resume.is_none() && holds_run(dir.path()) && !args.overwrite {
        bail!(
            "{} already holds a run's checkpoints; continue it with --resume, pick another --out, or pass --overwrite",
            dir.path().display()
        );
    }
    let model = ForecasterTraining::build(config.clone(), data.seed)?;
    let banner = format!("{}", model.forecaster());
    let parameters = model.forecaster().parameter_count();
    let task = TaskInfo {
        name: FORECAST_TASK.into(),
        model: serde_json::to_value(&config)?,
        data: serde_json::to_value(&data)?,
    };
    let batches_per_epoch = windows.len().div_ceil(data.batch_size);
    let window_count = windows.len();
    let mut trainer = match &resumed {
        Some(r) => Trainer::resume(trainer_config.clone(), &r.checkpoint, model, windows, dir)?,
        None => Trainer::new(trainer_config.clone(), task, model, windows, dir)?,
    };
    say!("{banner}");
    let lens: Vec<String> = data.series.iter().map(|s| s.train_len.to_string()).collect();
    say!(
        "{parameters} parameters | {} | {} series, training parts of {} steps | {} windows | lookback {}, horizon {}, period {}{} | loss {}",
        file.origin,
        data.series.len(),
        lens.join(", "),
        window_count,
        data.lookback,
        data.horizon,
        data.period,
        if data.log { ", log scale" } else { "" },
        config.loss.name()
    );
    let filled: usize = file.series.iter().map(|s| s.filled).sum();
    if filled > 0 {
        say!("filled {filled} missing values or dates ({})", spec.fill.name());
    }
    say!(
        "training {} steps ({} per epoch) of {} windows, {}, writing to {}",
        trainer_config.max_steps,
        batches_per_epoch,
        data.batch_size,
        thread_counts(),
        trainer.dir().path().display()
    );
    let session = report::Session {
        style,
        budget: args.time_budget,
        max_epochs: None,
        unit: "windows",
        advice: "Start again with a lower --lr or --grad-clip",
    };
    let (outcome, elapsed) = report::train(&mut trainer, &session, &mut |_, _| Ok(None))?;
    let run = trainer.state();
    let took =
        if elapsed.as_secs() < 60 { format!("{:.1}s", elapsed.as_secs_f64()) } else { progress::duration(elapsed) };
    say!(
        "done ({}) at step {} ({}) in {took}",
        match outcome.reason {
            StopReason::MaxSteps => "reached the last step",
            StopReason::TimeBudget => "reached --time-budget",
            other => other.describe(),
        },
        run.step,
        plural(run.epoch, "epoch")
    );
    say!(
        "wrote {}, {}, {}",
        trainer.last_path().display(),
        trainer.dir().path().join("metrics.jsonl").display(),
        trainer.dir().path().join("loss.svg").display()
    );
    Ok(trainer.last_path())
}

/// The data of a checkpoint's model: --csv (or the embedded data) read with its columns.
fn data_of(loaded: &LoadedForecaster, csv: Option<&Path>, fill_flag: Option<FillName>) -> Result<TimeSeriesFile> {
    let mut spec = loaded.data.spec.clone();
    if let Some(f) = fill_flag {
        spec.fill = fill(f);
    }
    read(csv, &spec)
}

fn beside(checkpoint: &Path, name: &str) -> PathBuf {
    checkpoint.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")).join(name)
}

/// A step's x coordinate on a plot: the year (with its fraction) when dated, else the index.
fn x_of(dates: Option<&Vec<chrono::NaiveDate>>, t: usize, data: &ForecastData) -> f64 {
    use chrono::Datelike;
    match dates {
        Some(d) => {
            let date = if t < d.len() {
                Some(d[t])
            } else {
                let mut last = d.last().copied();
                for _ in d.len()..=t {
                    last = last.and_then(|x| data.frequency.and_then(|f| f.next(x)));
                }
                last
            };
            date.map_or(t as f64, |x| x.year() as f64 + x.ordinal0() as f64 / 365.25)
        }
        None => t as f64,
    }
}

fn date_label(dates: Option<&Vec<chrono::NaiveDate>>, t: usize, data: &ForecastData) -> String {
    match dates {
        Some(d) => {
            let mut date = d.get(t).copied();
            if date.is_none() {
                let mut last = d.last().copied();
                for _ in d.len()..=t {
                    last = last.and_then(|x| data.frequency.and_then(|f| f.next(x)));
                }
                date = last;
            }
            date.map_or(t.to_string(), |x| x.to_string())
        }
        None => t.to_string(),
    }
}

fn predict_cmd(args: PredictArgs) -> Result<()> {
    let loaded = load_forecaster(&args.checkpoint)?;
    let file = data_of(&loaded, args.csv.as_deref(), args.fill)?;
    let data = &loaded.data;
    let prepared = data.prepare(&file)?;
    let chosen: Vec<_> = match &args.series {
        Some(id) => {
            let s: Vec<_> = prepared.iter().filter(|p| &p.id == id).collect();
            if s.is_empty() {
                let ids: Vec<&str> = prepared.iter().map(|p| p.id.as_str()).collect();
                bail!("there is no series {id:?}; the model knows {ids:?}");
            }
            s
        }
        None => prepared.iter().collect(),
    };
    let output = args.output.clone().unwrap_or_else(|| beside(&args.checkpoint, "forecast.csv"));
    let svg_path = args.svg.clone().unwrap_or_else(|| beside(&args.checkpoint, "forecast.svg"));
    let mut csv = String::from("series,step,date,target,forecast,lower_80,upper_80\n");
    let mut plot = LinePlot::new(
        format!("forecast of {} ({})", data.spec.targets.join(", "), file.origin),
        if file.frequency.is_some() { "year" } else { "step" },
        data.spec.targets.join(", "),
    );
    plot.note = Some(format!("lookback {}, horizon {}; band: 80% interval", data.lookback, data.horizon));
    for s in &chosen {
        let origin = args.origin.unwrap_or(s.len());
        if origin > s.len() || origin < data.lookback {
            bail!(
                "--origin {origin} is outside series {:?}: it needs {} steps before it and the series has {}",
                s.id,
                data.lookback,
                s.len()
            );
        }
        let f = forecast(&loaded.model, data, s, &[origin])?.remove(0);
        let dates = s.dates.as_ref();
        for (k, target) in data.spec.targets.iter().enumerate() {
            for step in 0..data.horizon {
                let t = origin + step;
                let lo = f.lower.as_ref().map_or(String::new(), |l| format!("{}", l[k][step]));
                let hi = f.upper.as_ref().map_or(String::new(), |u| format!("{}", u[k][step]));
                csv.push_str(&format!(
                    "{},{t},{},{target},{},{lo},{hi}\n",
                    csv_cell(&s.id),
                    date_label(dates, t, data),
                    f.point[k][step]
                ));
            }
            let prefix = if chosen.len() > 1 || data.spec.targets.len() > 1 {
                format!("{} {target} ", s.id)
            } else {
                String::new()
            };
            let history: Vec<(f64, f64)> = (0..s.len()).map(|t| (x_of(dates, t, data), s.raw[k][t])).collect();
            plot.series.push(Series::new(format!("{prefix}history"), history));
            let at = |step: usize| x_of(dates, origin + step, data);
            let mut line = vec![(x_of(dates, origin - 1, data), s.raw[k][origin - 1])];
            line.extend((0..data.horizon).map(|step| (at(step), f.point[k][step])));
            plot.series.push(Series::new(format!("{prefix}forecast"), line));
            if let (Some(lo), Some(hi)) = (&f.lower, &f.upper) {
                plot.bands.push(Band {
                    name: format!("{prefix}80% interval"),
                    series: plot.series.len() - 1,
                    points: (0..data.horizon).map(|i| (at(i), lo[k][i], hi[k][i])).collect(),
                });
            }
        }
    }
    write_atomic(&output, csv.as_bytes())?;
    write_atomic(&svg_path, plot.to_svg().as_bytes())?;
    let mut out = std::io::stdout().lock();
    write!(out, "{csv}")?;
    crate::console::err(format_args!("wrote {} and {}", output.display(), svg_path.display()));
    Ok(())
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn backtest_cmd(args: BacktestArgs, explicit: &[String]) -> Result<()> {
    let csv = args.train.data.csv.clone();
    if args.checkpoint.is_some() {
        let training: Vec<String> = explicit
            .iter()
            .filter(|f| !["checkpoint", "json", "csv", "quiet", "threads"].contains(&f.as_str()))
            .map(|f| format!("--{}", f.replace('_', "-")))
            .collect();
        if !training.is_empty() {
            bail!(
                "{} train{} a model, but --checkpoint gives one; drop {} to score the checkpoint, or drop --checkpoint \
                 to train and score a new model",
                training.join(", "),
                if training.len() == 1 { "s" } else { "" },
                if training.len() == 1 { "it" } else { "them" }
            );
        }
    }
    let checkpoint = match &args.checkpoint {
        Some(p) => p.clone(),
        None => {
            interrupt::install()?;
            train(args.train, explicit)?
        }
    };
    let loaded = load_forecaster(&checkpoint)?;
    let file = data_of(&loaded, csv.as_deref(), None)?;
    let prepared = loaded.data.prepare(&file)?;
    let report = backtest(&loaded.model, &loaded.data, &prepared)?;
    let json = args.json.clone().unwrap_or_else(|| beside(&checkpoint, "backtest.json"));
    let value = serde_json::json!({
        "data": file.origin,
        "checkpoint": checkpoint.display().to_string(),
        "loss": loaded.config.loss.name(),
        "lookback": loaded.data.lookback,
        "report": &report,
    });
    write_atomic(&json, serde_json::to_string_pretty(&value)?.as_bytes())?;
    print_table(&report, &file.origin)?;
    say!("wrote {}", json.display());
    Ok(())
}

/// The backtest as a table, and how the model compares with each baseline.
fn print_table(report: &BacktestReport, origin: &str) -> Result<()> {
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "rolling-origin backtest of {origin}: {}, horizon {}, period {}",
        plural(report.origins, "origin"),
        report.horizon,
        report.period
    )?;
    writeln!(out, "{:<16} {:>12} {:>12} {:>8} {:>8} {:>9}", "method", "MAE", "RMSE", "MASE", "sMAPE%", "cover80")?;
    for m in &report.methods {
        let s = &m.scores;
        let cover = s.coverage.map_or("-".to_string(), |c| format!("{:.3}", c));
        writeln!(
            out,
            "{:<16} {:>12.4} {:>12.4} {:>8.4} {:>8.3} {:>9}",
            m.method, s.mae, s.rmse, s.mase, s.smape, cover
        )?;
    }
    if let Some(model) = report.methods.iter().find(|m| m.method == "model") {
        let losses: Vec<&str> = report
            .methods
            .iter()
            .filter(|m| m.method != "model" && m.scores.mase <= model.scores.mase)
            .map(|m| m.method.as_str())
            .collect();
        if losses.is_empty() {
            writeln!(out, "the model's MASE is below every baseline's")?;
        } else {
            writeln!(out, "the model LOSES (MASE) to: {}", losses.join(", "))?;
        }
    }
    Ok(())
}
