//! Fused CPU kernels: plain functions over slices, no allocation, no tensors.
//!
//! Each cell type has a `*_forward` / `*_backward` pair that runs one direction of one layer over a
//! whole sequence, cuDNN-style: one matrix product projects the inputs of all time steps, each step
//! does one product on the hidden state and one fused pointwise pass, and the backward does the
//! pointwise part per step and the weight gradients as one product over all steps. Over sequences
//! long enough for it to pay, the per-step products read their weight packed once per call
//! ([`packed`]) rather than repacked by the `gemm` crate at every step. Every fused kernel keeps a
//! naive reference (`*_forward_naive`, `*_backward_naive`) that the tests hold it to.
//!
//! Conventions shared by all kernels (shapes use `T` steps, `B` batch, `I` input size, `H` hidden
//! size, `P` the size of the carried `h`: `P = H` except for an LSTM with a projection, `G` gates):
//! - all buffers are row-major and contiguous;
//! - `x` is `(T, B, I)`; `y` (the direction's output) is `(T, B, P)`; `y[t]` is the state after
//!   step `t`, also when the direction runs in reverse (`reverse = true` processes `t = T-1 … 0`);
//! - `h0`, `h_n` are `(B, P)`; `c0`, `c_n` are `(B, H)` (LSTM only);
//! - weights use PyTorch's layout and gate order: `w_ih (G·H, I)`, `w_hh (G·H, P)`, `b_ih`, `b_hh`
//!   `(G·H)`, `w_hr (P, H)`;
//! - backward *accumulates* (`+=`) into `dx` and every weight gradient (zero them once, llm.c
//!   style), and *overwrites* `dh0` / `dc0`;
//! - `ws` is the workspace a forward fills with what the backward needs (and, at its end, the
//!   packed weights of its own per-step products); `scratch` is temporary memory for the backward.
//!   Their lengths come from the `*_workspace_len` / `*_scratch_len` functions; the caller
//!   allocates them.

pub mod gemm;
pub mod gru;
pub mod lstm;
pub mod math;
pub mod packed;
pub mod rnn;
mod shared;
#[cfg(test)]
mod testing;

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};

/// The element types the kernels run on: `f32` for speed, `f64` for gradient checks.
pub trait Float:
    Copy
    + Debug
    + Default
    + PartialOrd
    + Send
    + Sync
    + 'static
    + Add<Output = Self>
    + Sub<Output = Self>
    + Mul<Output = Self>
    + Div<Output = Self>
    + Neg<Output = Self>
    + AddAssign
    + SubAssign
{
    /// 0.
    const ZERO: Self;
    /// 1.
    const ONE: Self;
    /// Conversion from f64 (rounding for f32).
    fn from_f64(v: f64) -> Self;
    /// Conversion to f64.
    fn to_f64(self) -> f64;
    /// e^self.
    fn exp(self) -> Self;
    /// Hyperbolic tangent.
    fn tanh(self) -> Self;
    /// Logistic sigmoid `1 / (1 + e^-x)`.
    #[inline(always)]
    fn sigmoid(self) -> Self {
        Self::ONE / (Self::ONE + (-self).exp())
    }
}

impl Float for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v as f32
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self as f64
    }
    #[inline(always)]
    fn exp(self) -> Self {
        math::exp(self)
    }
    #[inline(always)]
    fn tanh(self) -> Self {
        math::tanh(self)
    }
    #[inline(always)]
    fn sigmoid(self) -> Self {
        math::sigmoid(self)
    }
}

impl Float for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    #[inline(always)]
    fn from_f64(v: f64) -> Self {
        v
    }
    #[inline(always)]
    fn to_f64(self) -> f64 {
        self
    }
    #[inline(always)]
    fn exp(self) -> Self {
        f64::exp(self)
    }
    #[inline(always)]
    fn tanh(self) -> Self {
        f64::tanh(self)
    }
}

/// The sizes of one direction of one layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Dims {
    /// `T`, number of time steps.
    pub seq_len: usize,
    /// `B`, batch size (may be 0).
    pub batch: usize,
    /// `I`, features per input step.
    pub input_size: usize,
    /// `H`, hidden (cell) size.
    pub hidden_size: usize,
    /// `P`, size of the carried and returned `h`: equal to `hidden_size` unless an LSTM projects.
    pub proj_size: usize,
}

/// The parameters of one direction of one layer (PyTorch layout and gate order).
#[derive(Clone, Copy, Debug)]
pub struct Weights<'a, T> {
    /// `(G·H, I)`.
    pub w_ih: &'a [T],
    /// `(G·H, P)`.
    pub w_hh: &'a [T],
    /// `(G·H)`, absent when the layer has no bias.
    pub b_ih: Option<&'a [T]>,
    /// `(G·H)`, absent when the layer has no bias.
    pub b_hh: Option<&'a [T]>,
    /// `(P, H)`, LSTM with projection only.
    pub w_hr: Option<&'a [T]>,
}

/// Gradient buffers matching [`Weights`]; the backward adds into them.
#[derive(Debug)]
pub struct Grads<'a, T> {
    /// `(G·H, I)`.
    pub dw_ih: &'a mut [T],
    /// `(G·H, P)`.
    pub dw_hh: &'a mut [T],
    /// `(G·H)`.
    pub db_ih: Option<&'a mut [T]>,
    /// `(G·H)`.
    pub db_hh: Option<&'a mut [T]>,
    /// `(P, H)`.
    pub dw_hr: Option<&'a mut [T]>,
}

/// The time index processed at position `step` of the loop.
#[inline(always)]
pub(crate) fn time_index(step: usize, seq_len: usize, reverse: bool) -> usize {
    if reverse {
        seq_len - 1 - step
    } else {
        step
    }
}
