//! The recurrent state passed into and returned by every layer and cell.

use candle_core::Tensor;

/// The hidden state of a recurrent layer or cell: `h`, plus the cell state `c` for an LSTM.
///
/// Shapes (layers): `h` is `(L·D, B, H_out)` (`(L·D, H_out)` for unbatched input), `c` is
/// `(L·D, B, H)`; index `layer·D + direction` along the first dimension, forward direction first.
/// `batch_first` never changes the state layout. Cells: `h` `(B, H)` or `(H)`, `c` likewise.
#[derive(Clone, Debug)]
pub struct State {
    /// The hidden state `h`.
    pub h: Tensor,
    /// The LSTM cell state `c`; `None` for RNN and GRU.
    pub c: Option<Tensor>,
}

impl State {
    /// The state of an RNN or GRU: just `h`.
    pub fn h(h: Tensor) -> Self {
        Self { h, c: None }
    }

    /// The state of an LSTM: `(h, c)`.
    pub fn lstm(h: Tensor, c: Tensor) -> Self {
        Self { h, c: Some(c) }
    }

    /// The same values cut off from the autograd graph, as truncated BPTT needs between windows.
    pub fn detach(&self) -> Self {
        Self { h: self.h.detach(), c: self.c.as_ref().map(Tensor::detach) }
    }
}
