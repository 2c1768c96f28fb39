//! Evaluation metrics of the tasks: classification (accuracy, precision, recall, F1, confusion),
//! entity-level scores of chunk tags (conlleval) and forecasting (MAE, RMSE, MASE, sMAPE,
//! interval coverage).

pub mod classification;
pub mod entities;
pub mod forecast;

pub use classification::{ClassScores, Confusion};
pub use entities::EntityScores;
pub use forecast::{mase_scale, ForecastScores, ForecastSummary};
