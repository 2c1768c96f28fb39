//! Evaluation metrics of the tasks: classification (accuracy, precision, recall, F1, confusion).

pub mod classification;

pub use classification::{ClassScores, Confusion};
