//! The static description of one recurrent layer ([`LayerSpec`]): its cell, sizes and options,
//! and the layout arithmetic every execution of the op shares: the lengths and offsets of the flat
//! state, output and parameter gradient, the output's row order, each direction's weights and the
//! chunks' slices of the state.

use std::sync::Arc;

use super::split::Chunk;
use crate::kernels::rnn::Activation;
use crate::kernels::{gru, lstm, rnn, Dims, Grads, Input, Weights};

/// The cell a layer is made of.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CellKind {
    /// Elman RNN with the given nonlinearity.
    Rnn(Activation),
    /// LSTM, gates i, f, g, o.
    Lstm,
    /// GRU, gates r, z, n.
    Gru,
}

impl CellKind {
    /// Number of gates `G`.
    pub(crate) fn gates(self) -> usize {
        match self {
            CellKind::Rnn(_) => 1,
            CellKind::Lstm => 4,
            CellKind::Gru => 3,
        }
    }

    /// Whether the cell carries a cell state `c`.
    pub(crate) fn has_cell_state(self) -> bool {
        self == CellKind::Lstm
    }
}

/// The static description of one layer.
#[derive(Clone, Debug)]
pub(crate) struct LayerSpec {
    pub(crate) kind: CellKind,
    /// The sizes, with `batch_sizes: None`; see [`LayerSpec::dims`].
    pub(crate) sizes: Dims<'static>,
    /// For packed sequences, how many run at each step (see [`Dims::batch_sizes`]).
    pub(crate) batch_sizes: Option<Arc<[usize]>>,
    pub(crate) directions: usize,
    pub(crate) bias: bool,
    /// When set, `x` is a table `(V, I)` and row `r`'s input is its row `lookup[r]` (each below
    /// `V`; the caller checks), `N` ids in the layer's row order.
    pub(crate) lookup: Option<Arc<[u32]>>,
    /// Whether `y`'s rows in the output run batch-major, `(B, T)`, instead of time-major; for
    /// full batches only (`batch_sizes` is `None`).
    pub(crate) batch_major: bool,
    /// Whether `x` is the previous layer's whole output (its `y` rows, then its state rows): the
    /// layer reads the first `rows · I` values and gives the rest a zero gradient. This spares
    /// the caller a `narrow` between layers, which candle's backward pays for with a
    /// zero-filled copy of the whole output, a zero-filled gradient and an addition.
    pub(crate) x_is_output: bool,
}

/// Offsets of one direction's parameters inside its block of the flat parameter gradient (every
/// parameter's values in registration order, one direction after the other; the kernels add into
/// it, and the backward hands out views of it).
#[derive(Clone, Copy, Debug)]
pub(super) struct ParamOffsets {
    pub(super) w_ih: (usize, usize),
    pub(super) w_hh: (usize, usize),
    pub(super) b_ih: Option<(usize, usize)>,
    pub(super) b_hh: Option<(usize, usize)>,
    pub(super) w_hr: Option<(usize, usize)>,
    pub(super) len: usize,
}

impl LayerSpec {
    /// The kernels' description of one direction.
    pub(crate) fn dims(&self) -> Dims<'_> {
        Dims { batch_sizes: self.batch_sizes.as_deref(), ..self.sizes }
    }

    pub(super) fn projects(&self) -> bool {
        self.kind == CellKind::Lstm && self.sizes.proj_size != self.sizes.hidden_size
    }

    pub(super) fn offsets(&self) -> ParamOffsets {
        let d = self.sizes;
        let gh = self.kind.gates() * d.hidden_size;
        let mut at = 0;
        let mut take = |n: usize| {
            let r = (at, n);
            at += n;
            r
        };
        let w_ih = take(gh * d.input_size);
        let w_hh = take(gh * d.proj_size);
        let (b_ih, b_hh) = if self.bias { (Some(take(gh)), Some(take(gh))) } else { (None, None) };
        let w_hr = if self.projects() { Some(take(d.proj_size * d.hidden_size)) } else { None };
        ParamOffsets { w_ih, w_hh, b_ih, b_hh, w_hr, len: at }
    }

    /// Length of the flat parameter gradient (all directions).
    pub(crate) fn params_len(&self) -> usize {
        self.offsets().len * self.directions
    }

    pub(super) fn h_len(&self) -> usize {
        self.sizes.batch * self.sizes.proj_size
    }

    pub(super) fn c_len(&self) -> usize {
        if self.kind.has_cell_state() {
            self.sizes.batch * self.sizes.hidden_size
        } else {
            0
        }
    }

    /// Length of the flat state vector.
    pub(crate) fn state_len(&self) -> usize {
        self.directions * (self.h_len() + self.c_len())
    }

    /// Rows of the input and output: `T·B`, or `N` when packed.
    pub(crate) fn rows(&self) -> usize {
        self.dims().rows()
    }

    pub(super) fn y_len(&self) -> usize {
        self.rows() * self.directions * self.sizes.proj_size
    }

    /// Width of the output's rows, `D·P`.
    pub(crate) fn out_width(&self) -> usize {
        self.directions * self.sizes.proj_size
    }

    /// Rows of the output: `y`'s, then the state's (padded to whole rows).
    pub(crate) fn out_rows(&self) -> usize {
        self.rows() + self.state_len().div_ceil(self.out_width().max(1))
    }

    /// Length of the output, `out_rows · D·P`.
    pub(crate) fn out_len(&self) -> usize {
        self.out_rows() * self.out_width()
    }

    /// The output row of the layer's (time-major) row `r`.
    #[inline]
    pub(super) fn out_row(&self, r: usize) -> usize {
        if self.batch_major {
            let (t, b) = (r / self.sizes.batch, r % self.sizes.batch);
            b * self.sizes.seq_len + t
        } else {
            r
        }
    }

    /// The output rows of the layer's rows `rows`.
    pub(super) fn out_rows_of(&self, rows: &[usize]) -> Vec<usize> {
        rows.iter().map(|&r| self.out_row(r)).collect()
    }

    pub(super) fn workspace_len(&self, d: Dims<'_>) -> usize {
        match self.kind {
            CellKind::Rnn(_) => rnn::rnn_workspace_len(d),
            CellKind::Lstm => lstm::lstm_workspace_len(d),
            CellKind::Gru => gru::gru_workspace_len(d),
        }
    }

    pub(super) fn scratch_len(&self, d: Dims<'_>) -> usize {
        match self.kind {
            CellKind::Rnn(_) => rnn::rnn_scratch_len(d),
            CellKind::Lstm => lstm::lstm_scratch_len(d),
            CellKind::Gru => gru::gru_scratch_len(d),
        }
    }

    /// Length of each parameter tensor, all directions, in the order [`Params`] holds them.
    pub(super) fn param_lens(&self) -> Vec<usize> {
        let o = self.offsets();
        let one = [Some(o.w_ih), Some(o.w_hh), o.b_ih, o.b_hh, o.w_hr];
        let one: Vec<usize> = one.iter().flatten().map(|&(_, n)| n).collect();
        (0..self.directions).flat_map(|_| one.iter().copied()).collect()
    }

    pub(super) fn weights<'a, T>(&self, params: &Params<'a, T>, dir: usize) -> Weights<'a, T> {
        let per = params.0.len() / self.directions;
        let p = &params.0[dir * per..(dir + 1) * per];
        let (b_ih, b_hh) = if self.bias { (Some(p[2]), Some(p[3])) } else { (None, None) };
        Weights { w_ih: p[0], w_hh: p[1], b_ih, b_hh, w_hr: self.projects().then(|| p[per - 1]) }
    }

    /// Width of the input side's gates, `G·H`.
    pub(super) fn gate_width(&self) -> usize {
        self.kind.gates() * self.sizes.hidden_size
    }

    /// The kernels' view of the input: the rows of `x`, or with `lookup` the rows `ids` of the
    /// projected table `table`.
    pub(super) fn input<'a, T>(&self, x: &'a [T], table: Option<&'a [T]>, ids: &'a [u32]) -> Input<'a, T> {
        match table {
            Some(table) => Input::Projected { table, ids },
            None => Input::Rows(x),
        }
    }
}

impl LayerSpec {
    /// Where a chunk's rows of direction `dir` start in a flat state `[h (D, B, P) | c (D, B, H)]`:
    /// `(h offset, c offset)`.
    pub(super) fn chunk_state_offsets(&self, dir: usize, chunk: &Chunk) -> (usize, usize) {
        let (h, p) = (self.sizes.hidden_size, self.sizes.proj_size);
        let c_rows = if self.kind.has_cell_state() { h } else { 0 };
        (
            dir * self.h_len() + chunk.first * p,
            self.directions * self.h_len() + dir * self.c_len() + chunk.first * c_rows,
        )
    }

    /// What the layer reads of its `x` input: all of it, or with [`LayerSpec::x_is_output`] the
    /// first `rows · I` values.
    pub(super) fn layer_input<'a, T>(&self, x: &'a [T]) -> &'a [T] {
        if self.x_is_output {
            &x[..self.rows() * self.sizes.input_size]
        } else {
            x
        }
    }

    /// A chunk's rows of direction `dir` of a flat state: `(h (B_c, P), c (B_c, H))`, `c` empty
    /// without a cell state.
    pub(super) fn chunk_state<'a, T>(&self, state: &'a [T], dir: usize, chunk: &Chunk) -> (&'a [T], &'a [T]) {
        let (h_at, c_at) = self.chunk_state_offsets(dir, chunk);
        let h_len = chunk.batch * self.sizes.proj_size;
        let c_len = if self.kind.has_cell_state() { chunk.batch * self.sizes.hidden_size } else { 0 };
        (&state[h_at..h_at + h_len], &state[c_at..c_at + c_len])
    }
}

/// The layer's parameter tensors as the kernels read them: one slice per tensor, per direction
/// in PyTorch's registration order `[w_ih, w_hh, (b_ih, b_hh), (w_hr)]`.
pub(super) struct Params<'a, T>(pub(super) Vec<&'a [T]>);

/// Direction views of one direction's block of the flat parameter gradient.
pub(super) fn split_grads<T>(block: &mut [T], o: ParamOffsets) -> Grads<'_, T> {
    let (dw_ih, rest) = block.split_at_mut(o.w_ih.1);
    let (dw_hh, mut rest) = rest.split_at_mut(o.w_hh.1);
    let mut take = |n: Option<(usize, usize)>| -> Option<&mut [T]> {
        let (_, len) = n?;
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(len);
        rest = tail;
        Some(head)
    };
    let db_ih = take(o.b_ih);
    let db_hh = take(o.b_hh);
    let dw_hr = take(o.w_hr);
    Grads { dw_ih, dw_hh, db_ih, db_hh, dw_hr }
}
