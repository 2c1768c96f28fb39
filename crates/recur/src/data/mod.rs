//! Readers that turn raw data into what the models eat.

pub mod streams;
pub mod text;

pub use streams::{evaluate_streams, Streams};
pub use text::{decode_utf8, Vocab};
