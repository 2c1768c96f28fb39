//! Evaluation metrics of the tasks: classification (accuracy, precision, recall, F1, confusion)
//! and forecasting (MAE, RMSE, MASE, sMAPE, interval coverage).

pub mod classification;
pub mod forecast;

pub use classification::{ClassScores, Confusion};
pub use forecast::{mase_scale, ForecastScores, ForecastSummary};
