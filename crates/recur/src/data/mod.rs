//! Readers that turn raw data into what the models eat.

pub mod buckets;
pub mod embeddings;
pub mod labelled;
pub mod pairs;
pub mod series;
pub mod streams;
pub mod tagged;
pub mod text;
pub mod timeseries;

pub use buckets::Buckets;
pub use embeddings::WordVectors;
pub use labelled::{Labelled, TokenVocab, Tokenize};
pub use pairs::{Pairs, SideTokens, SideVocab};
pub use series::{LabelledSeries, SeriesScaling};
pub use streams::{evaluate_streams, Streams};
pub use tagged::Tagged;
pub use text::{decode_utf8, Vocab};
