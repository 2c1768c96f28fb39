//! Readers that turn raw data into what the models eat.

pub mod text;

pub use text::{decode_utf8, Vocab};
