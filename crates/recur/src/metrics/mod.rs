//! Evaluation metrics of the tasks: classification (accuracy, precision, recall, F1, confusion) and
//! entity-level scores of chunk tags (conlleval).

pub mod classification;
pub mod entities;

pub use classification::{ClassScores, Confusion};
pub use entities::EntityScores;
