//! The forecasting task end to end through the library: CSV → scalers fitted on the training part
//! → the trainer → a checkpoint → the rolling-origin backtest, on a synthetic seasonal series with
//! a trend and noise, where the model must beat the naive forecast; the same seed gives the same
//! parameters bit for bit; the loaded checkpoint forecasts what the trained model backtested.

use std::path::PathBuf;

use recur::data::timeseries::{read_csv, ColumnSpec, Fill, ScaleKind};
use recur::models::{
    backtest, forecast, load_forecaster, ForecastData, ForecastLoss, ForecastOptions, ForecastWindows,
    ForecasterConfig, ForecasterTraining, FORECAST_TASK,
};
use recur::train::{Limits, LrSchedule, OptimizerConfig, RunDir, TaskInfo, Trainer, TrainerConfig};

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("recur-forecast-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// 10 years of monthly values: level 100, trend 0.5 a month, a yearly wave of 10, and a
/// deterministic wobble.
fn csv() -> String {
    let mut s = String::from("month,sales\n");
    for t in 0..120 {
        let (y, m) = (2000 + t / 12, t % 12 + 1);
        let v = 100.0
            + 0.5 * t as f64
            + 10.0 * (2.0 * std::f64::consts::PI * t as f64 / 12.0).sin()
            + ((t * 37 % 11) as f64 - 5.0) * 0.3;
        s.push_str(&format!("{y}-{m:02},{v:.3}\n"));
    }
    s
}

fn spec() -> ColumnSpec {
    ColumnSpec { targets: vec!["sales".into()], date: Some("month".into()), fill: Fill::Error, ..ColumnSpec::default() }
}

fn options() -> ForecastOptions {
    ForecastOptions {
        lookback: None,
        horizon: Some(6),
        period: None,
        scaling: ScaleKind::Standard,
        log: false,
        calendar: true,
        test_fraction: 0.2,
        test_size: None,
        batch_size: 16,
        seed: 7,
    }
}

/// Trains a small model in `dir` and returns its checkpoint's path.
fn train(dir: &std::path::Path, loss: ForecastLoss) -> PathBuf {
    let file = read_csv(&csv(), "synthetic.csv", &spec()).unwrap();
    let data = ForecastData::fit(&file, &options()).unwrap();
    assert_eq!((data.period, data.lookback, data.series[0].train_len), (12, 24, 96));
    let windows = ForecastWindows::new(data.prepare(&file).unwrap(), &data).unwrap();
    let config = ForecasterConfig { hidden_size: 12, loss, ..ForecasterConfig::new(data.input_size(), 1, 6) };
    let model = ForecasterTraining::build(config.clone(), data.seed).unwrap();
    let task = TaskInfo {
        name: FORECAST_TASK.into(),
        model: serde_json::to_value(&config).unwrap(),
        data: serde_json::to_value(&data).unwrap(),
    };
    let trainer_config =
        TrainerConfig::new(150, 50, OptimizerConfig::by_name("adam", 5e-3).unwrap(), LrSchedule::Constant);
    let mut trainer = Trainer::new(trainer_config, task, model, windows, RunDir::claim_exact(dir).unwrap()).unwrap();
    trainer.run(&Limits::default(), &mut |_, _| Ok(())).unwrap();
    trainer.last_path()
}

#[test]
fn the_model_beats_naive_and_its_checkpoint_forecasts_what_it_backtested() {
    let dir = scratch("beats");
    let path = train(&dir, ForecastLoss::Quantile);
    let loaded = load_forecaster(&path).unwrap();
    let file = read_csv(&csv(), "synthetic.csv", &spec()).unwrap();
    let prepared = loaded.data.prepare(&file).unwrap();
    let report = backtest(&loaded.model, &loaded.data, &prepared).unwrap();
    // Origins 96..=114 of a 120-step series, horizon 6.
    assert_eq!(report.origins, 19);
    let score = |name: &str| report.methods.iter().find(|m| m.method == name).unwrap().scores.clone();
    let (model, naive, seasonal) = (score("model"), score("naive"), score("seasonal_naive"));
    assert_eq!(model.count, 19 * 6);
    assert!(model.mase < naive.mase, "model {model:?} vs naive {naive:?}");
    assert!(model.mase < 1.5 * seasonal.mase, "model {model:?} vs seasonal naive {seasonal:?}");
    assert!(model.coverage.is_some() && naive.coverage.is_none());
    // A forecast from one origin is the backtest's, to the bit.
    let again = forecast(&loaded.model, &loaded.data, &prepared[0], &[100]).unwrap();
    let reported = report.forecasts.iter().find(|f| f.origin == 100).unwrap();
    assert_eq!(&again[0], reported);
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn the_same_seed_trains_the_same_parameters() {
    let (a, b) = (scratch("seed-a"), scratch("seed-b"));
    let (pa, pb) = (train(&a, ForecastLoss::Gaussian), train(&b, ForecastLoss::Gaussian));
    let (ca, cb) = (load_forecaster(&pa).unwrap().checkpoint, load_forecaster(&pb).unwrap().checkpoint);
    assert_eq!(ca.params.len(), cb.params.len());
    for (name, ta) in &ca.params {
        let va: Vec<f32> = ta.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = cb.params[name].flatten_all().unwrap().to_vec1().unwrap();
        assert!(va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()), "{name} differs");
    }
    std::fs::remove_dir_all(&a).ok();
    std::fs::remove_dir_all(&b).ok();
}

#[test]
fn too_short_series_and_foreign_files_are_typed_errors() {
    let file = read_csv(&csv(), "synthetic.csv", &spec()).unwrap();
    let long = ForecastOptions { lookback: Some(91), ..options() };
    let e = ForecastData::fit(&file, &long).unwrap_err().to_string();
    assert!(e.contains("synthetic.csv") && e.contains("lookback + horizon = 91 + 6"), "{e}");
    let data = ForecastData::fit(&file, &options()).unwrap();
    let short = read_csv("month,sales\n2000-01,1\n2000-02,2\n", "short.csv", &spec()).unwrap();
    let e = data.prepare(&short).unwrap_err().to_string();
    assert!(e.contains("short.csv") && e.contains("fewer than the model's training part"), "{e}");
}

/// Two series in one file (an id column), two targets and a covariate: one global model, scalers
/// per series, every series backtested on its own test part.
#[test]
fn several_series_and_targets_train_one_model() {
    let mut text = String::from("shop,day,sales,returns,price\n");
    for (shop, base) in [("north", 50.0), ("south", 500.0)] {
        for t in 0..60 {
            let date = chrono::NaiveDate::from_ymd_opt(2020, 1, 1).unwrap() + chrono::TimeDelta::days(t);
            let wave = (2.0 * std::f64::consts::PI * t as f64 / 7.0).sin();
            text.push_str(&format!(
                "{shop},{date},{},{},{}\n",
                base + 5.0 * wave,
                base / 10.0 - wave,
                1.0 + (t % 3) as f64
            ));
        }
    }
    let spec = ColumnSpec {
        targets: vec!["sales".into(), "returns".into()],
        date: Some("day".into()),
        id: Some("shop".into()),
        covariates: vec!["price".into()],
        fill: Fill::Error,
    };
    let file = read_csv(&text, "shops.csv", &spec).unwrap();
    assert_eq!(file.series.len(), 2);
    let data = ForecastData::fit(&file, &ForecastOptions { horizon: Some(3), ..options() }).unwrap();
    // Daily: period 7, lookback 14; 2 targets × 2 inputs, 1 covariate, 4 calendar features.
    assert_eq!((data.period, data.lookback, data.input_size()), (7, 14, 9));
    let means: Vec<f64> = data.series.iter().map(|s| s.targets[0].shift).collect();
    assert!((means[0] - 50.0).abs() < 1.0 && (means[1] - 500.0).abs() < 1.0, "{means:?}");
    let prepared = data.prepare(&file).unwrap();
    // Training parts of 48 steps: origins 14..=45 in each.
    let windows = ForecastWindows::new(prepared.clone(), &data).unwrap();
    assert_eq!(windows.len(), 2 * 32);
    let config = ForecasterConfig { hidden_size: 6, ..ForecasterConfig::new(9, 2, 3) };
    let model = ForecasterTraining::build(config, 1).unwrap();
    let report = backtest(model.forecaster(), &data, &prepared).unwrap();
    // Test parts of 12 steps: origins 48..=57 in each series.
    assert_eq!(report.origins, 20);
    assert_eq!(report.methods[0].scores.count, 20 * 3 * 2);
    assert!(report.forecasts.iter().all(|f| f.point.len() == 2 && f.point[0].iter().all(|v| v.is_finite())));
}
