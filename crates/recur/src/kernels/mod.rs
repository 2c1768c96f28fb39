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
//! - `x` is `(T, B, I)` (or, as [`Input::Projected`], rows of an already projected table); `y`
//!   (the direction's output) is `(T, B, P)`; `y[t]` is the state after step `t`, also when the
//!   direction runs in reverse (`reverse = true` processes `t = T-1 … 0`);
//! - `h0`, `h_n` are `(B, P)`; `c0`, `c_n` are `(B, H)` (LSTM only);
//! - with [`Dims::batch_sizes`] the sequences are *packed* (PyTorch's `PackedSequence` layout):
//!   sorted by decreasing length, step `t` holds only the `batch_sizes[t]` sequences still running,
//!   and every `(T, B, ·)` buffer above is instead `(N, ·)`, `N = Σ batch_sizes`, the steps'
//!   rows one after another. No work is done for the missing (padding) rows: each step's products
//!   and pointwise pass cover its own rows only. Sequence `b` ends at its own last step, where
//!   `h_n[b]` (and `c_n[b]`) are taken; in reverse it starts there from `h0[b]`;
//! - weights use PyTorch's layout and gate order: `w_ih (G·H, I)`, `w_hh (G·H, P)`, `b_ih`, `b_hh`
//!   `(G·H)`, `w_hr (P, H)`;
//! - backward *accumulates* (`+=`) into `dx` and every weight gradient (zero them once, llm.c
//!   style), and *overwrites* `dh0` / `dc0`;
//! - `ws` is the workspace a forward fills with what the backward needs (and, at its end, the
//!   packed weights of its own per-step products); `scratch` is temporary memory for the backward.
//!   Their lengths come from the `*_workspace_len` / `*_scratch_len` functions; the caller
//!   allocates them.

mod blocked;
pub mod cpu;
pub mod gemm;
pub mod gru;
pub mod lstm;
pub mod math;
mod matrix;
pub(crate) mod optim;
pub mod packed;
pub mod rnn;
mod shared;
#[cfg(test)]
mod testing;
mod threads;

use std::fmt::Debug;
use std::ops::{Add, AddAssign, Div, Mul, Neg, Sub, SubAssign};

/// The element types the kernels run on: `f32` for speed, `f64` for gradient checks. The crate's
/// one float trait: the ops, the losses and the optimizers' update rules compute with it too.
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
    /// −∞.
    const NEG_INFINITY: Self;
    /// Conversion from f64 (rounding for f32).
    fn from_f64(v: f64) -> Self;
    /// Conversion to f64.
    fn to_f64(self) -> f64;
    /// e^self: for `f32` the kernels' fast [`math::exp`] (≤ 1 ulp), for `f64` the standard
    /// library's.
    fn exp(self) -> Self;
    /// e^self by the standard library, for both types: what the losses use, to match PyTorch.
    fn std_exp(self) -> Self;
    /// Natural logarithm (the standard library's).
    fn ln(self) -> Self;
    /// Square root, correctly rounded (the standard library's).
    fn sqrt(self) -> Self;
    /// Absolute value.
    fn abs(self) -> Self;
    /// `self·a + b` with one rounding (the standard library's `mul_add`), as ATen's vectorised
    /// CPU kernels compute `add(alpha=)`, `addcmul` and `lerp`.
    fn mul_add(self, a: Self, b: Self) -> Self;
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
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    #[inline(always)]
    fn std_exp(self) -> Self {
        f32::exp(self)
    }
    #[inline(always)]
    fn ln(self) -> Self {
        f32::ln(self)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f32::abs(self)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f32::mul_add(self, a, b)
    }
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
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    #[inline(always)]
    fn std_exp(self) -> Self {
        f64::exp(self)
    }
    #[inline(always)]
    fn ln(self) -> Self {
        f64::ln(self)
    }
    #[inline(always)]
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    #[inline(always)]
    fn abs(self) -> Self {
        f64::abs(self)
    }
    #[inline(always)]
    fn mul_add(self, a: Self, b: Self) -> Self {
        f64::mul_add(self, a, b)
    }
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
pub struct Dims<'a> {
    /// `T`, number of time steps.
    pub seq_len: usize,
    /// `B`, batch size (may be 0); with `batch_sizes`, the number of sequences (`batch_sizes[0]`).
    pub batch: usize,
    /// `None` for a full `(T, B)` batch; for packed sequences, how many run at each step:
    /// `T` values, the first equal to `B`, none zero, never increasing.
    pub batch_sizes: Option<&'a [usize]>,
    /// `I`, features per input step.
    pub input_size: usize,
    /// `H`, hidden (cell) size.
    pub hidden_size: usize,
    /// `P`, size of the carried and returned `h`: equal to `hidden_size` unless an LSTM projects.
    pub proj_size: usize,
}

impl Dims<'_> {
    /// `N`, the rows of a sequence buffer: `T·B`, or `Σ batch_sizes` when packed.
    pub fn rows(&self) -> usize {
        match self.batch_sizes {
            Some(sizes) => sizes.iter().sum(),
            None => self.seq_len * self.batch,
        }
    }

    /// Whether the batch shrinks along the sequence (packed sequences of different lengths).
    pub fn varying(&self) -> bool {
        self.batch_sizes.is_some_and(|s| s.last().is_some_and(|&last| last != self.batch))
    }

    /// The rows of step `t`.
    #[inline]
    fn step_rows(&self, t: usize) -> usize {
        match self.batch_sizes {
            Some(sizes) => sizes[t],
            None => self.batch,
        }
    }

    /// The steps' row spans in processing order (`t = T−1 … 0` when `reverse`); `.rev()` walks
    /// them in the order a backward visits them.
    pub(crate) fn walk(&self, reverse: bool) -> Walk<'_> {
        Walk { d: *self, reverse, front: (0, 0), back: (self.seq_len, self.rows()) }
    }

    /// The span processed just before `span`: step `t − 1`, or `t + 1` in reverse.
    #[inline]
    pub(crate) fn before(&self, span: Span, reverse: bool) -> Option<Span> {
        self.neighbour(span, !reverse)
    }

    /// The span processed just after `span`: step `t + 1`, or `t − 1` in reverse.
    #[inline]
    pub(crate) fn after(&self, span: Span, reverse: bool) -> Option<Span> {
        self.neighbour(span, reverse)
    }

    /// Step `t − 1` when `earlier`, else step `t + 1`.
    fn neighbour(&self, span: Span, earlier: bool) -> Option<Span> {
        if earlier {
            let t = span.t.checked_sub(1)?;
            let rows = self.step_rows(t);
            Some(Span { t, start: span.start - rows, rows })
        } else {
            let t = span.t + 1;
            (t < self.seq_len).then(|| Span { t, start: span.start + span.rows, rows: self.step_rows(t) })
        }
    }
}

/// The rows step `t` occupies in a sequence buffer: `start .. start + rows`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Span {
    /// The time step.
    pub(crate) t: usize,
    /// Its first row.
    pub(crate) start: usize,
    /// Its number of rows (the batch running at `t`).
    pub(crate) rows: usize,
}

impl Span {
    /// The span's elements in a buffer of `width` columns.
    #[inline(always)]
    pub(crate) fn range(&self, width: usize) -> std::ops::Range<usize> {
        self.start * width..(self.start + self.rows) * width
    }
}

/// Iterator over the steps' spans in processing order ([`Dims::walk`]).
#[derive(Clone, Debug)]
pub(crate) struct Walk<'a> {
    d: Dims<'a>,
    reverse: bool,
    /// `(t, start)` of the next span in time order from the front…
    front: (usize, usize),
    /// …and the end `(t, start)` (exclusive) from the back.
    back: (usize, usize),
}

impl Walk<'_> {
    fn next_in_time(&mut self) -> Option<Span> {
        let (t, start) = self.front;
        (t < self.back.0).then(|| {
            let rows = self.d.step_rows(t);
            self.front = (t + 1, start + rows);
            Span { t, start, rows }
        })
    }

    fn next_back_in_time(&mut self) -> Option<Span> {
        (self.front.0 < self.back.0).then(|| {
            let t = self.back.0 - 1;
            let rows = self.d.step_rows(t);
            let start = self.back.1 - rows;
            self.back = (t, start);
            Span { t, start, rows }
        })
    }
}

impl Iterator for Walk<'_> {
    type Item = Span;

    fn next(&mut self) -> Option<Span> {
        if self.reverse {
            self.next_back_in_time()
        } else {
            self.next_in_time()
        }
    }
}

impl DoubleEndedIterator for Walk<'_> {
    fn next_back(&mut self) -> Option<Span> {
        if self.reverse {
            self.next_in_time()
        } else {
            self.next_back_in_time()
        }
    }
}

/// A layer's input, as the kernels read it.
#[derive(Clone, Copy, Debug)]
pub enum Input<'a, T> {
    /// `x (T, B, I)` (`(N, I)` when packed). The forward projects every row with one product,
    /// `x·w_ihᵀ + b_ih`; the backward adds the input's gradient `dx (T, B, I)` and those of `w_ih`
    /// and `b_ih`.
    Rows(&'a [T]),
    /// The input projection done beforehand, once per distinct input: row `r`'s
    /// `x·w_ihᵀ + b_ih` is row `ids[r]` of `table (V, G·H)` (`G·H` the width of the input side's
    /// gates: `4H` LSTM, `3H` GRU, `H` RNN). An embedding table projected once is the use: `V`
    /// products instead of `N`. The forward gathers rows instead of multiplying and ignores
    /// `w_ih` and `b_ih`; the backward adds the table's gradient `dtable (V, G·H)` into `dx` (row
    /// `v` gets the gate gradients of every row that read it) and leaves the gradients of `w_ih`
    /// and `b_ih` untouched: the caller derives them, and the embedding's, from `dtable`.
    Projected {
        /// `(V, G·H)`.
        table: &'a [T],
        /// `(N)`, each below `V`.
        ids: &'a [u32],
    },
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
