//! # Recur
//!
//! Recurrent neural networks (RNN, LSTM, GRU) for [candle], with PyTorch's API and PyTorch's exact
//! numerics: the same equations and gate order, the same parameter names and shapes, the same
//! defaults, so weights move between the two. The layers are fused cuDNN-style on the CPU (one
//! matrix product for the input projection of all steps, one per step on the hidden state, one
//! fused pointwise pass) and their backward (BPTT) is derived by hand.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use recur::{Lstm, LstmConfig, State};
//!
//! let varmap = candle_nn::VarMap::new();
//! let vb = recur::seeded_var_builder(&varmap, 42, DType::F32, &Device::Cpu);
//! let lstm = Lstm::new(LstmConfig { num_layers: 2, ..LstmConfig::new(8, 16) }, vb.pp("lstm"))?;
//! let x = Tensor::randn(0f32, 1.0, (5, 3, 8), &Device::Cpu)?; // (T, B, I)
//! let (out, State { h, c }) = lstm.forward(&x, None)?;
//! assert_eq!(out.dims(), &[5, 3, 16]);
//! assert_eq!(h.dims(), &[2, 3, 16]);
//! let grads = out.sqr()?.sum_all()?.backward()?; // BPTT reaches every parameter
//! assert!(grads.get(&lstm.weights()[0].1).is_some());
//! # let _ = c;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! [candle]: https://github.com/huggingface/candle

#![deny(missing_docs)]

pub mod data;
pub mod diagnostics;
mod error;
pub mod kernels;
mod memory;
pub mod metrics;
pub mod models;
pub mod nn;
mod ops;
pub mod plot;
pub mod repr;
pub mod train;

pub use error::{Error, Result};
pub use memory::keep_freed_memory;

/// The library's version (`CARGO_PKG_VERSION`), also written into checkpoints.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub use kernels::gemm::{num_threads, set_num_threads};
pub use nn::{
    lengths_from_mask, pack_padded_sequence, pack_sequence, pad_packed_sequence, pad_sequence, seeded_var_builder,
    unpack_sequence, unpad_sequence, Crf, CrfReduction, Gru, GruCell, GruCellConfig, GruConfig, Lstm, LstmCell,
    LstmCellConfig, LstmConfig, Nonlinearity, PackedSequence, Padding, PaddingSide, Recurrent, Rnn, RnnCell,
    RnnCellConfig, RnnConfig, State,
};

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeDoctests;
