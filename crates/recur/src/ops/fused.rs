//! One recurrent layer (all its directions) as a candle custom op with a hand-derived backward.
//!
//! The op takes three tensors and returns one, so that it fits candle's `CustomOp3`:
//! - `x`: the layer input, `(T, B, I)` (or `(N, I)` for packed sequences), contiguous; or, when
//!   the spec carries `lookup` ids, an embedding table `(V, I)` whose row `ids[r]` is row `r`'s
//!   input (the table is projected once per direction, `V` products instead of `N`);
//! - `state`: the flat initial state, `[h0 (D, B, P) | c0 (D, B, H)]` (`c0` for LSTM only);
//! - a token standing for the parameters: the op reads the parameter tensors themselves (per
//!   direction in PyTorch's registration order `[w_ih, w_hh, (b_ih, b_hh), (w_hr)]`), held in
//!   the op, and the token ties them into candle's graph (see [`ParamLink`]);
//!
//! It returns `[y (T·B, D·P) | h_n (D, B, P) | c_n (D, B, H) | padding]` as one 2-D tensor of rows of
//! `D·P` values: `y`'s rows (`N` when packed; `h_n` and `c_n` are then taken at each sequence's own
//! last step), then the final state, flat, padded with zeros to whole rows. The caller narrows it
//! into its parts (candle's narrow is differentiable, so gradients of any part arrive here); `y`
//! is the first `N` rows, a view that needs no reshape. With `batch_major` (full batches only)
//! `y`'s rows come batch-major, `(B, T)`, the layout of a `batch_first` output.
//!
//! The forward keeps what the backward needs (the kernels' workspaces) inside the op, which lives in
//! the autograd graph as long as the output does; the backward reads it without changing it, so
//! backward can run any number of times over one forward and give the same gradients.

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, CustomOp3, DType, Layout, Shape, Storage, StorageRef, Tensor};

use super::contiguous_values;
use super::pool::{Buffer, Pooled};
use super::split::{self, Chunk};
use crate::kernels::gemm::MatRef;
use crate::kernels::rnn::Activation;
use crate::kernels::{gemm, gru, lstm, rnn, Dims, Float, Grads, Input, Weights};

/// How errors name the op.
const OP: &str = "the fused recurrent op";

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
struct ParamOffsets {
    w_ih: (usize, usize),
    w_hh: (usize, usize),
    b_ih: Option<(usize, usize)>,
    b_hh: Option<(usize, usize)>,
    w_hr: Option<(usize, usize)>,
    len: usize,
}

impl LayerSpec {
    /// The kernels' description of one direction.
    pub(crate) fn dims(&self) -> Dims<'_> {
        Dims { batch_sizes: self.batch_sizes.as_deref(), ..self.sizes }
    }

    fn projects(&self) -> bool {
        self.kind == CellKind::Lstm && self.sizes.proj_size != self.sizes.hidden_size
    }

    fn offsets(&self) -> ParamOffsets {
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

    fn h_len(&self) -> usize {
        self.sizes.batch * self.sizes.proj_size
    }

    fn c_len(&self) -> usize {
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

    fn y_len(&self) -> usize {
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
    fn out_row(&self, r: usize) -> usize {
        if self.batch_major {
            let (t, b) = (r / self.sizes.batch, r % self.sizes.batch);
            b * self.sizes.seq_len + t
        } else {
            r
        }
    }

    /// The output rows of the layer's rows `rows`.
    fn out_rows_of(&self, rows: &[usize]) -> Vec<usize> {
        rows.iter().map(|&r| self.out_row(r)).collect()
    }

    fn workspace_len(&self, d: Dims<'_>) -> usize {
        match self.kind {
            CellKind::Rnn(_) => rnn::rnn_workspace_len(d),
            CellKind::Lstm => lstm::lstm_workspace_len(d),
            CellKind::Gru => gru::gru_workspace_len(d),
        }
    }

    fn scratch_len(&self, d: Dims<'_>) -> usize {
        match self.kind {
            CellKind::Rnn(_) => rnn::rnn_scratch_len(d),
            CellKind::Lstm => lstm::lstm_scratch_len(d),
            CellKind::Gru => gru::gru_scratch_len(d),
        }
    }

    /// Length of each parameter tensor, all directions, in the order [`Params`] holds them.
    fn param_lens(&self) -> Vec<usize> {
        let o = self.offsets();
        let one = [Some(o.w_ih), Some(o.w_hh), o.b_ih, o.b_hh, o.w_hr];
        let one: Vec<usize> = one.iter().flatten().map(|&(_, n)| n).collect();
        (0..self.directions).flat_map(|_| one.iter().copied()).collect()
    }

    fn weights<'a, T>(&self, params: &Params<'a, T>, dir: usize) -> Weights<'a, T> {
        let per = params.0.len() / self.directions;
        let p = &params.0[dir * per..(dir + 1) * per];
        let (b_ih, b_hh) = if self.bias { (Some(p[2]), Some(p[3])) } else { (None, None) };
        Weights { w_ih: p[0], w_hh: p[1], b_ih, b_hh, w_hr: self.projects().then(|| p[per - 1]) }
    }

    /// Width of the input side's gates, `G·H`.
    fn gate_width(&self) -> usize {
        self.kind.gates() * self.sizes.hidden_size
    }

    /// The kernels' view of the input: the rows of `x`, or with `lookup` the rows `ids` of the
    /// projected table `table`.
    fn input<'a, T>(&self, x: &'a [T], table: Option<&'a [T]>, ids: &'a [u32]) -> Input<'a, T> {
        match table {
            Some(table) => Input::Projected { table, ids },
            None => Input::Rows(x),
        }
    }

    /// With `lookup`, each direction's projected table `x (V, I) · w_ihᵀ + b_ih`, `(V, G·H)`;
    /// without, nothing.
    fn project_tables<T: Element>(&self, x: &[T], params: &Params<'_, T>) -> Vec<Buffer<T>> {
        if self.lookup.is_none() {
            return Vec::new();
        }
        let (i, gw) = (self.sizes.input_size, self.gate_width());
        let vocab = x.len() / i.max(1);
        (0..self.directions)
            .map(|dir| {
                let w = self.weights(params, dir);
                let mut table = Buffer::any(vocab * gw);
                match w.b_ih {
                    Some(bias) => table.chunks_exact_mut(gw).for_each(|row| row.copy_from_slice(bias)),
                    None => table.fill(T::ZERO),
                }
                gemm::matmul(&mut table, gw, true, MatRef::new(x, vocab, i), MatRef::new(w.w_ih, gw, i).t());
                table
            })
            .collect()
    }

    /// The forward's saved buffers split into the workspaces and (with `lookup`, the last
    /// `directions` of them) the projected tables the backward hands the kernels.
    fn saved_tables<'a, T: Element>(&self, saved: &'a [Buffer<T>]) -> (&'a [Buffer<T>], &'a [Buffer<T>]) {
        let tables = if self.lookup.is_some() { self.directions } else { 0 };
        saved.split_at(saved.len() - tables)
    }

    /// With `lookup`, turns direction `dir`'s table gradient `dtable (V, G·H)` into the gradients
    /// it stands for: `dx (V, I) += dtable · w_ih`, and into that direction's parameter gradient
    /// block `dp`, `dw_ih += dtableᵀ · x` and `db_ih += Σ_v dtable[v]`.
    fn table_grads<T: Element>(
        &self,
        x: &[T],
        params: &Params<'_, T>,
        dir: usize,
        dtable: &[T],
        dx: &mut [T],
        dp: &mut [T],
    ) {
        let (i, gw) = (self.sizes.input_size, self.gate_width());
        let vocab = x.len() / i.max(1);
        let w = self.weights(params, dir);
        let g = split_grads(dp, self.offsets());
        let dtable_m = MatRef::new(dtable, vocab, gw);
        gemm::matmul(dx, i, true, dtable_m, MatRef::new(w.w_ih, gw, i));
        gemm::matmul(g.dw_ih, i, true, dtable_m.t(), MatRef::new(x, vocab, i));
        if let Some(db_ih) = g.db_ih {
            for row in dtable.chunks_exact(gw) {
                for (d, &v) in db_ih.iter_mut().zip(row) {
                    *d += v;
                }
            }
        }
    }

    /// Whether the layer is big enough for its work to be shared between threads.
    fn worth_threads(&self) -> bool {
        gemm::num_threads() > 1 && self.rows() * self.sizes.hidden_size * self.kind.gates() >= 1 << 14
    }

    /// Whether the two directions should run on two threads.
    fn concurrent(&self) -> bool {
        self.directions == 2 && self.worth_threads()
    }

    /// Into how many chunks of batch rows each direction is cut, one thread each (see
    /// [`split`]): the threads the directions leave, as far as the batch gives every chunk
    /// [`split::MIN_CHUNK_ROWS`] rows; 1 runs the layer unsplit.
    fn chunk_count(&self) -> usize {
        if !self.worth_threads() {
            return 1;
        }
        let spare = gemm::num_threads() / self.directions;
        spare.min(self.sizes.batch / split::MIN_CHUNK_ROWS).max(1)
    }
}

/// What the forward leaves for the backward: each direction's workspace.
enum Saved {
    F32(Vec<Buffer<f32>>),
    F64(Vec<Buffer<f64>>),
}

/// The element types the op runs on.
trait Element: Float + candle_core::WithDType + Pooled {
    fn wrap(ws: Vec<Buffer<Self>>) -> Saved;
    fn unwrap(saved: &Saved) -> Option<&Vec<Buffer<Self>>>;
    fn storage(data: Vec<Self>) -> CpuStorage;
}

macro_rules! element {
    ($t:ty, $variant:ident, $other:ident) => {
        impl Element for $t {
            fn wrap(ws: Vec<Buffer<Self>>) -> Saved {
                Saved::$variant(ws)
            }
            fn unwrap(saved: &Saved) -> Option<&Vec<Buffer<Self>>> {
                match saved {
                    Saved::$variant(ws) => Some(ws),
                    Saved::$other(_) => None,
                }
            }
            fn storage(data: Vec<Self>) -> CpuStorage {
                CpuStorage::$variant(data)
            }
        }
    };
}

element!(f32, F32, F64);
element!(f64, F64, F32);

/// One direction's share of the forward's outputs.
struct DirectionOut<'a, T> {
    dir: usize,
    y: &'a mut [T],
    h_n: &'a mut [T],
    c_n: &'a mut [T],
    ws: &'a mut [T],
}

/// The custom op: one layer, forward and hand-derived backward.
pub(crate) struct FusedLayer {
    spec: LayerSpec,
    /// The parameter tensors, per direction in PyTorch's registration order, contiguous.
    params: Vec<Tensor>,
    /// Where the backward leaves the parameters' gradients, when they are tracked.
    link: Option<Arc<ParamLink>>,
    /// Whether the forward keeps its workspaces for a backward.
    save: bool,
    /// The forward's workspaces (one per direction and chunk) and its chunk count.
    saved: Mutex<Option<(usize, Saved)>>,
}

/// The layer's parameter tensors as the kernels read them: one slice per tensor, per direction
/// in PyTorch's registration order `[w_ih, w_hh, (b_ih, b_hh), (w_hr)]`.
struct Params<'a, T>(Vec<&'a [T]>);

impl FusedLayer {
    /// Runs the layer. `x` `(T, B, I)` and `state` flat as described in the module docs, `params`
    /// the layer's parameter tensors in PyTorch's registration order (gradients reach them when
    /// `grad` and they are tracked); returns the flat output. The op joins candle's autograd graph
    /// only when one of its inputs is tracked, and only then keeps its workspaces.
    pub(crate) fn apply(
        spec: LayerSpec,
        x: &Tensor,
        state: &Tensor,
        params: &[Tensor],
        grad: bool,
    ) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        let state = state.contiguous()?;
        let params = params.iter().map(Tensor::contiguous).collect::<candle_core::Result<Vec<_>>>()?;
        let (token, link) = if grad && params.iter().any(Tensor::track_op) {
            let link = Arc::new(ParamLink::default());
            (ParamLink::tie(&params, &link)?, Some(link))
        } else {
            (Tensor::zeros(1, x.dtype(), x.device())?, None)
        };
        let track = x.track_op() || state.track_op() || token.track_op();
        let op = FusedLayer { spec, params, link, save: track, saved: Mutex::new(None) };
        if track {
            x.apply_op3(&state, &token, op)
        } else {
            x.apply_op3_no_bwd(&state, &token, &op)
        }
    }

    /// Borrows the parameter tensors' storage.
    fn param_views(&self) -> candle_core::Result<Vec<View<'_>>> {
        self.params.iter().map(View::of).collect()
    }

    /// The forward: the flat output and the workspaces the backward reads (one per direction, or
    /// with `chunks > 1` one per direction and chunk, direction-major), followed with a lookup by
    /// each direction's projected table (see [`LayerSpec::saved_tables`]).
    fn forward<T: Element>(
        &self,
        x: &[T],
        state: &[T],
        params: &Params<'_, T>,
        chunks: usize,
    ) -> (Vec<T>, Vec<Buffer<T>>) {
        if chunks > 1 {
            return self.forward_split(x, state, params, chunks);
        }
        let spec = &self.spec;
        let d = spec.dims();
        let (dirs, p) = (spec.directions, d.proj_size);
        let tables = spec.project_tables(x, params);
        let ids = spec.lookup.as_deref().unwrap_or_default();
        let mut out = vec![T::ZERO; spec.out_len()];
        let mut workspaces: Vec<Buffer<T>> = (0..dirs).map(|_| Buffer::any(spec.workspace_len(d))).collect();
        let (y_all, rest) = out.split_at_mut(spec.y_len());
        let (h_n_all, c_n_all) = rest.split_at_mut(dirs * spec.h_len());
        // With one direction and time-major rows the kernel writes straight into the output;
        // otherwise each direction writes its own contiguous (T, B, P) block and the blocks are
        // interleaved (and reordered) afterwards.
        let direct = dirs == 1 && !spec.batch_major;
        let mut y_dirs: Vec<Buffer<T>> =
            if direct { Vec::new() } else { (0..dirs).map(|_| Buffer::any(spec.y_len() / dirs)).collect() };
        {
            let mut h_chunks = h_n_all.chunks_mut(spec.h_len().max(1));
            let mut c_chunks = c_n_all.chunks_mut(spec.c_len().max(1));
            let mut y_slots: Vec<&mut [T]> =
                if direct { vec![&mut *y_all] } else { y_dirs.iter_mut().map(|v| &mut **v).collect() };
            let mut jobs: Vec<DirectionOut<'_, T>> = Vec::with_capacity(dirs);
            for (dir, ws) in workspaces.iter_mut().enumerate() {
                jobs.push(DirectionOut {
                    dir,
                    y: std::mem::take(&mut y_slots[dir]),
                    h_n: h_chunks.next().unwrap_or_default(),
                    c_n: c_chunks.next().unwrap_or_default(),
                    ws,
                });
            }
            let run = |DirectionOut { dir, y, h_n, c_n, ws }: DirectionOut<'_, T>| {
                let h0 = &state[dir * spec.h_len()..(dir + 1) * spec.h_len()];
                let c_at = dirs * spec.h_len() + dir * spec.c_len();
                let c0 = &state[c_at..c_at + spec.c_len()];
                let x = spec.input(x, tables.get(dir).map(|t| &**t), ids);
                run_forward(spec.kind, d, dir == 1, x, h0, c0, spec.weights(params, dir), y, h_n, c_n, ws);
            };
            if spec.concurrent() {
                let second = jobs.pop();
                let first = jobs.pop();
                if let (Some(a), Some(b)) = (first, second) {
                    rayon::join(|| gemm::serial(|| run(a)), || gemm::serial(|| run(b)));
                }
            } else {
                jobs.into_iter().for_each(run);
            }
        }
        if !direct {
            let width = dirs * p;
            for r in 0..d.rows() {
                let at = spec.out_row(r) * width;
                for (dir, y) in y_dirs.iter().enumerate() {
                    y_all[at + dir * p..at + (dir + 1) * p].copy_from_slice(&y[r * p..(r + 1) * p]);
                }
            }
        }
        workspaces.extend(tables);
        (out, workspaces)
    }

    /// The gradients of `x` (`x_len` values: `x`'s, then zeros for what [`LayerSpec::x_is_output`]
    /// leaves unread), of the initial state and of the parameters.
    #[allow(clippy::too_many_arguments)]
    fn backward<T: Element>(
        &self,
        x: &[T],
        x_len: usize,
        state: &[T],
        params: &Params<'_, T>,
        out: &[T],
        grad: &[T],
        workspaces: &[Buffer<T>],
        chunks: usize,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        if chunks > 1 {
            return self.backward_split(x, x_len, state, params, out, grad, workspaces, chunks);
        }
        let spec = &self.spec;
        let d = spec.dims();
        let (dirs, p) = (spec.directions, d.proj_size);
        let rows = d.rows();
        let lookup = spec.lookup.is_some();
        // Per direction with a lookup (each direction's table gradient is its own); otherwise
        // one per thread.
        let (dx_bufs, dx_len) = if lookup {
            (dirs, x.len() / d.input_size.max(1) * spec.gate_width())
        } else {
            (if spec.concurrent() { dirs } else { 1 }, rows * d.input_size)
        };
        let (workspaces, tables) = spec.saved_tables(workspaces);
        let ids = spec.lookup.as_deref().unwrap_or_default();
        let mut dstate = vec![T::ZERO; spec.state_len()];
        let mut dparams = vec![T::ZERO; spec.params_len()];
        let deinterleave = |src: &[T], dir: usize| -> Buffer<T> {
            let mut dst = Buffer::any(rows * p);
            for r in 0..rows {
                let at = spec.out_row(r) * dirs * p + dir * p;
                dst[r * p..(r + 1) * p].copy_from_slice(&src[at..at + p]);
            }
            dst
        };
        let (y_all, dy_all) = (&out[..spec.y_len()], &grad[..spec.y_len()]);
        let dh_n_all = &grad[spec.y_len()..spec.y_len() + dirs * spec.h_len()];
        let dc_n_all = &grad[spec.y_len() + dirs * spec.h_len()..];
        let direct = dirs == 1 && !spec.batch_major;
        let (ys, dys): (Vec<Buffer<T>>, Vec<Buffer<T>>) = if direct {
            (Vec::new(), Vec::new())
        } else {
            ((0..dirs).map(|k| deinterleave(y_all, k)).collect(), (0..dirs).map(|k| deinterleave(dy_all, k)).collect())
        };
        let concurrent = spec.concurrent();
        // The first buffer becomes `dx`: without a lookup it is allocated at its full length.
        let mut dxs: Vec<Vec<T>> =
            (0..dx_bufs).map(|k| vec![T::ZERO; if k == 0 && !lookup { x_len } else { dx_len }]).collect();
        let o = spec.offsets();
        {
            let (dh0_all, dc0_all) = dstate.split_at_mut(dirs * spec.h_len());
            let mut dh0s = dh0_all.chunks_mut(spec.h_len().max(1));
            let mut dc0s = dc0_all.chunks_mut(spec.c_len().max(1));
            let mut dps = dparams.chunks_mut(o.len.max(1));
            type Job<'a, T> = (usize, &'a mut [T], &'a mut [T], &'a mut [T]);
            let mut jobs: Vec<Job<'_, T>> = Vec::with_capacity(dirs);
            for dir in 0..dirs {
                jobs.push((
                    dir,
                    dh0s.next().unwrap_or_default(),
                    dc0s.next().unwrap_or_default(),
                    dps.next().unwrap_or_default(),
                ));
            }
            let run = |(dir, dh0, dc0, dp): Job<'_, T>, dx: &mut [T]| {
                let h0 = &state[dir * spec.h_len()..(dir + 1) * spec.h_len()];
                let c_at = dirs * spec.h_len() + dir * spec.c_len();
                let c0 = &state[c_at..c_at + spec.c_len()];
                let dh_n = &dh_n_all[dir * spec.h_len()..(dir + 1) * spec.h_len()];
                let dc_n = &dc_n_all[dir * spec.c_len()..(dir + 1) * spec.c_len()];
                let (y, dy) = if direct { (y_all, dy_all) } else { (&*ys[dir], &*dys[dir]) };
                let w = spec.weights(params, dir);
                let g = split_grads(dp, o);
                let mut scratch = Buffer::any(spec.scratch_len(d));
                let ws = &workspaces[dir];
                let out = StateGrads { dx, dh0, dc0 };
                let x = spec.input(x, tables.get(dir).map(|t| &**t), ids);
                run_backward(spec.kind, d, dir == 1, x, h0, c0, w, y, ws, dy, dh_n, dc_n, out, g, &mut scratch);
            };
            if concurrent {
                let (dx0, dx1) = dxs.split_at_mut(1);
                let second = jobs.pop();
                let first = jobs.pop();
                if let (Some(a), Some(b)) = (first, second) {
                    rayon::join(
                        || gemm::serial(|| run(a, &mut dx0[0][..dx_len])),
                        || gemm::serial(|| run(b, &mut dx1[0][..dx_len])),
                    );
                }
            } else {
                for job in jobs {
                    let k = if lookup { job.0 } else { 0 };
                    run(job, &mut dxs[k][..dx_len]);
                }
            }
        }
        if lookup {
            let mut dx = vec![T::ZERO; x.len()];
            for (dir, (dtable, dp)) in dxs.iter().zip(dparams.chunks_mut(o.len.max(1))).enumerate() {
                spec.table_grads(x, params, dir, dtable, &mut dx, dp);
            }
            return (dx, dstate, dparams);
        }
        let mut dx = dxs.swap_remove(0);
        for other in &dxs {
            for (a, b) in dx.iter_mut().zip(other) {
                *a += *b;
            }
        }
        (dx, dstate, dparams)
    }
}

impl FusedLayer {
    /// [`FusedLayer::forward`] with each direction's batch cut into `chunks` (see [`split`]): each
    /// (direction, chunk) pair runs the kernels single-threaded over its own rows, all at once.
    fn forward_split<T: Element>(
        &self,
        x: &[T],
        state: &[T],
        params: &Params<'_, T>,
        chunks: usize,
    ) -> (Vec<T>, Vec<Buffer<T>>) {
        use rayon::prelude::*;
        let spec = &self.spec;
        let d = spec.dims();
        let (dirs, p) = (spec.directions, d.proj_size);
        let plan = split::plan(d, chunks);
        let jobs: Vec<(usize, &Chunk)> = (0..dirs).flat_map(|dir| plan.iter().map(move |c| (dir, c))).collect();
        let tables = spec.project_tables(x, params);
        let results: Vec<[Buffer<T>; 4]> = jobs
            .par_iter()
            .map(|&(dir, chunk)| {
                gemm::serial(|| {
                    let dc = chunk.dims(d);
                    let (x_c, ids) = spec.chunk_input(x, chunk);
                    let x = spec.input(&x_c, tables.get(dir).map(|t| &**t), &ids);
                    let (h0, c0) = spec.chunk_state(state, dir, chunk);
                    let mut y = Buffer::any(chunk.rows.len() * p);
                    let mut h_n = Buffer::any(h0.len());
                    let mut c_n = Buffer::any(c0.len());
                    let mut ws = Buffer::any(spec.workspace_len(dc));
                    let w = spec.weights(params, dir);
                    run_forward(spec.kind, dc, dir == 1, x, h0, c0, w, &mut y, &mut h_n, &mut c_n, &mut ws);
                    [y, h_n, c_n, ws]
                })
            })
            .collect();
        let mut out = vec![T::ZERO; spec.out_len()];
        let (y_all, states) = out.split_at_mut(spec.y_len());
        let mut workspaces = Vec::with_capacity(jobs.len());
        for (&(dir, chunk), [y, h_n, c_n, ws]) in jobs.iter().zip(results) {
            if spec.batch_major {
                split::scatter(y_all, dirs * p, dir * p, p, &spec.out_rows_of(&chunk.rows), &y);
            } else {
                split::scatter(y_all, dirs * p, dir * p, p, &chunk.rows, &y);
            }
            let (h_at, c_at) = spec.chunk_state_offsets(dir, chunk);
            states[h_at..h_at + h_n.len()].copy_from_slice(&h_n);
            states[c_at..c_at + c_n.len()].copy_from_slice(&c_n);
            workspaces.push(ws);
        }
        workspaces.extend(tables);
        (out, workspaces)
    }

    /// [`FusedLayer::backward`] of [`FusedLayer::forward_split`]: each (direction, chunk) pair
    /// backpropagates through its own rows into its own gradient buffers, which are then summed
    /// (the parameters' and, over the directions, the input's) in a fixed order.
    #[allow(clippy::too_many_arguments)]
    fn backward_split<T: Element>(
        &self,
        x: &[T],
        x_len: usize,
        state: &[T],
        params: &Params<'_, T>,
        out: &[T],
        grad: &[T],
        workspaces: &[Buffer<T>],
        chunks: usize,
    ) -> (Vec<T>, Vec<T>, Vec<T>) {
        use rayon::prelude::*;
        let spec = &self.spec;
        let d = spec.dims();
        let (dirs, i, p) = (spec.directions, d.input_size, d.proj_size);
        let plan = split::plan(d, chunks);
        let jobs: Vec<(usize, &Chunk)> = (0..dirs).flat_map(|dir| plan.iter().map(move |c| (dir, c))).collect();
        let o = spec.offsets();
        let (y_all, dy_all) = (&out[..spec.y_len()], &grad[..spec.y_len()]);
        // The gradient of the final state has the layout of the initial state.
        let dstate_n = &grad[spec.y_len()..];
        let (workspaces, tables) = spec.saved_tables(workspaces);
        let lookup = spec.lookup.is_some();
        let results: Vec<[Buffer<T>; 4]> = jobs
            .par_iter()
            .zip(workspaces)
            .map(|(&(dir, chunk), ws)| {
                gemm::serial(|| {
                    let dc = chunk.dims(d);
                    let rows = &chunk.rows;
                    let (x_c, ids) = spec.chunk_input(x, chunk);
                    let out_rows = if spec.batch_major { spec.out_rows_of(rows) } else { Vec::new() };
                    let gather = |src: &[T]| {
                        let mut part = Buffer::any(rows.len() * p);
                        let rows = if spec.batch_major { &out_rows } else { rows };
                        split::gather(&mut part, src, dirs * p, dir * p, p, rows);
                        part
                    };
                    let y = gather(y_all);
                    let dy = gather(dy_all);
                    let (h0, c0) = spec.chunk_state(state, dir, chunk);
                    let (dh_n, dc_n) = spec.chunk_state(dstate_n, dir, chunk);
                    // The kernels add into the input and parameter gradients, and write the
                    // initial state's.
                    let dx_len = if lookup { x.len() / i.max(1) * spec.gate_width() } else { x_c.len() };
                    let mut dx = Buffer::zeroed(dx_len);
                    let x = spec.input(&x_c, tables.get(dir).map(|t| &**t), &ids);
                    let mut dh0 = Buffer::any(h0.len());
                    let mut dc0 = Buffer::any(c0.len());
                    let mut dp = Buffer::zeroed(o.len);
                    let mut scratch = Buffer::any(spec.scratch_len(dc));
                    let w = spec.weights(params, dir);
                    let state_grads = StateGrads { dx: &mut dx, dh0: &mut dh0, dc0: &mut dc0 };
                    let g = split_grads(&mut dp, o);
                    run_backward(
                        spec.kind,
                        dc,
                        dir == 1,
                        x,
                        h0,
                        c0,
                        w,
                        &y,
                        ws,
                        &dy,
                        dh_n,
                        dc_n,
                        state_grads,
                        g,
                        &mut scratch,
                    );
                    [dx, dh0, dc0, dp]
                })
            })
            .collect();
        let mut dx = vec![T::ZERO; x_len];
        let mut dstate = vec![T::ZERO; spec.state_len()];
        let mut dparams = vec![T::ZERO; spec.params_len()];
        let mut dps = Vec::with_capacity(jobs.len());
        let mut dtables = Vec::with_capacity(jobs.len());
        for (&(dir, chunk), [dx_c, dh0, dc0, dp]) in jobs.iter().zip(results) {
            if lookup {
                dtables.push((dir, dx_c));
            } else {
                split::scatter_add(&mut dx, i, 0, i, &chunk.rows, &dx_c);
            }
            let (h_at, c_at) = spec.chunk_state_offsets(dir, chunk);
            dstate[h_at..h_at + dh0.len()].copy_from_slice(&dh0);
            dstate[c_at..c_at + dc0.len()].copy_from_slice(&dc0);
            dps.push((dir, dp));
        }
        // Each direction's parameter gradient (and table gradient) is the sum of its chunks',
        // added in chunk order.
        for (dir, total) in dparams.chunks_mut(o.len.max(1)).enumerate() {
            sum_parts(total, &dps, dir);
            if lookup {
                let mut dtable = Buffer::zeroed(x.len() / i.max(1) * spec.gate_width());
                sum_parts(&mut dtable, &dtables, dir);
                spec.table_grads(x, params, dir, &dtable, &mut dx, total);
            }
        }
        (dx, dstate, dparams)
    }
}

/// Elements per task when [`FusedLayer::backward_split`] sums the chunks' parameter gradients.
const SUM_CHUNK: usize = 1 << 14;

/// `total += ` the parts of direction `dir`, added in their order element by element (so the result
/// does not depend on how the elements are shared out), on the layer's threads.
fn sum_parts<T: Element>(total: &mut [T], parts: &[(usize, Buffer<T>)], dir: usize) {
    use rayon::prelude::*;
    let parts: Vec<&[T]> = parts.iter().filter(|(d, _)| *d == dir).map(|(_, part)| &**part).collect();
    total.par_chunks_mut(SUM_CHUNK).enumerate().for_each(|(c, total)| {
        for part in &parts {
            for (t, p) in total.iter_mut().zip(&part[c * SUM_CHUNK..]) {
                *t += *p;
            }
        }
    });
}

impl LayerSpec {
    /// Where a chunk's rows of direction `dir` start in a flat state `[h (D, B, P) | c (D, B, H)]`:
    /// `(h offset, c offset)`.
    fn chunk_state_offsets(&self, dir: usize, chunk: &Chunk) -> (usize, usize) {
        let (h, p) = (self.sizes.hidden_size, self.sizes.proj_size);
        let c_rows = if self.kind.has_cell_state() { h } else { 0 };
        (
            dir * self.h_len() + chunk.first * p,
            self.directions * self.h_len() + dir * self.c_len() + chunk.first * c_rows,
        )
    }

    /// A chunk's input: its rows of `x` gathered, or with `lookup` its ids (and no rows).
    /// What the layer reads of its `x` input: all of it, or with [`LayerSpec::x_is_output`] the
    /// first `rows · I` values.
    fn layer_input<'a, T>(&self, x: &'a [T]) -> &'a [T] {
        if self.x_is_output {
            &x[..self.rows() * self.sizes.input_size]
        } else {
            x
        }
    }

    fn chunk_input<T: Element>(&self, x: &[T], chunk: &Chunk) -> (Buffer<T>, Vec<u32>) {
        let i = self.sizes.input_size;
        match &self.lookup {
            Some(ids) => (Buffer::any(0), chunk.rows.iter().map(|&r| ids[r]).collect()),
            None => {
                let mut x_c = Buffer::any(chunk.rows.len() * i);
                split::gather(&mut x_c, x, i, 0, i, &chunk.rows);
                (x_c, Vec::new())
            }
        }
    }

    /// A chunk's rows of direction `dir` of a flat state: `(h (B_c, P), c (B_c, H))`, `c` empty
    /// without a cell state.
    fn chunk_state<'a, T>(&self, state: &'a [T], dir: usize, chunk: &Chunk) -> (&'a [T], &'a [T]) {
        let (h_at, c_at) = self.chunk_state_offsets(dir, chunk);
        let h_len = chunk.batch * self.sizes.proj_size;
        let c_len = if self.kind.has_cell_state() { chunk.batch * self.sizes.hidden_size } else { 0 };
        (&state[h_at..h_at + h_len], &state[c_at..c_at + c_len])
    }
}

/// The gradients the kernels' backward gives w.r.t. the input (added) and the initial state
/// (written).
struct StateGrads<'a, T> {
    dx: &'a mut [T],
    dh0: &'a mut [T],
    dc0: &'a mut [T],
}

/// The forward kernel of `kind` (`c0`, `c_n` are ignored without a cell state).
#[allow(clippy::too_many_arguments)]
fn run_forward<T: Float>(
    kind: CellKind,
    d: Dims<'_>,
    reverse: bool,
    x: Input<'_, T>,
    h0: &[T],
    c0: &[T],
    w: Weights<'_, T>,
    y: &mut [T],
    h_n: &mut [T],
    c_n: &mut [T],
    ws: &mut [T],
) {
    match kind {
        CellKind::Rnn(act) => rnn::rnn_forward(d, reverse, act, x, h0, w, y, h_n, ws),
        CellKind::Lstm => lstm::lstm_forward(d, reverse, x, h0, c0, w, y, h_n, c_n, ws),
        CellKind::Gru => gru::gru_forward(d, reverse, x, h0, w, y, h_n, ws),
    }
}

/// The backward kernel of `kind` (`c0`, `dc_n` and `dc0` are ignored without a cell state).
#[allow(clippy::too_many_arguments)]
fn run_backward<T: Float>(
    kind: CellKind,
    d: Dims<'_>,
    reverse: bool,
    x: Input<'_, T>,
    h0: &[T],
    c0: &[T],
    w: Weights<'_, T>,
    y: &[T],
    ws: &[T],
    dy: &[T],
    dh_n: &[T],
    dc_n: &[T],
    out: StateGrads<'_, T>,
    g: Grads<'_, T>,
    scratch: &mut [T],
) {
    let StateGrads { dx, dh0, dc0 } = out;
    match kind {
        CellKind::Rnn(act) => rnn::rnn_backward(d, reverse, act, x, h0, w, y, ws, dy, dh_n, dx, dh0, g, scratch),
        CellKind::Lstm => {
            lstm::lstm_backward(d, reverse, x, h0, c0, w, y, ws, dy, dh_n, dc_n, dx, dh0, dc0, g, scratch)
        }
        CellKind::Gru => gru::gru_backward(d, reverse, x, h0, w, y, ws, dy, dh_n, dx, dh0, g, scratch),
    }
}

fn split_grads<T>(block: &mut [T], o: ParamOffsets) -> Grads<'_, T> {
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

/// A contiguous tensor's CPU storage, held borrowed.
struct View<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> View<'a> {
    /// Borrows `t`, which must be contiguous.
    fn of(t: &'a Tensor) -> candle_core::Result<Self> {
        let (storage, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("internal error: {OP} got a non-contiguous tensor");
        };
        Ok(Self { storage, start, end })
    }

    fn slice<T: candle_core::WithDType>(&self) -> candle_core::Result<&[T]> {
        let Storage::Cpu(cpu) = &*self.storage else {
            candle_core::bail!("the fused recurrent kernels run on the CPU only");
        };
        Ok(&cpu.as_slice::<T>()?[self.start..self.end])
    }
}

impl FusedLayer {
    fn check_lengths(&self, x: usize, state: usize, params: &[usize]) -> candle_core::Result<()> {
        let i = self.spec.sizes.input_size;
        // With a lookup, `x` is a table of any number of rows of `I` values.
        let rows = self.spec.rows() * i;
        let x_want =
            if (self.spec.lookup.is_some() && i > 0 && x.is_multiple_of(i)) || (self.spec.x_is_output && x >= rows) {
                x
            } else {
                rows
            };
        let want = (x_want, self.spec.state_len(), self.spec.param_lens());
        if (x, state, params) != (want.0, want.1, &want.2[..]) {
            candle_core::bail!(
                "internal error: fused recurrent op sizes (x, state, params) = {:?}, expected {:?}",
                (x, state, params),
                want
            );
        }
        Ok(())
    }

    fn cpu_fwd_typed<T: Element>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, state) = (contiguous_values::<T>(s1, l1, OP)?, contiguous_values::<T>(s2, l2, OP)?);
        let views = self.param_views()?;
        let params = Params(views.iter().map(View::slice::<T>).collect::<candle_core::Result<_>>()?);
        self.check_lengths(x.len(), state.len(), &params.0.iter().map(|p| p.len()).collect::<Vec<_>>())?;
        let chunks = self.spec.chunk_count();
        let (out, workspaces) = self.forward(self.spec.layer_input(x), state, &params, chunks);
        if self.save {
            let mut saved = self.saved.lock().map_err(|_| candle_core::Error::Msg("poisoned op state".into()))?;
            *saved = Some((chunks, T::wrap(workspaces)));
        }
        let shape = Shape::from((self.spec.out_rows(), self.spec.out_width()));
        Ok((T::storage(out), shape))
    }

    fn bwd_typed<T: Element>(
        &self,
        x: &Tensor,
        state: &Tensor,
        token: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().map_err(|_| candle_core::Error::Msg("poisoned op state".into()))?;
        let grad = grad.contiguous()?;
        let views = [View::of(x)?, View::of(state)?, View::of(res)?, View::of(&grad)?];
        let [x_s, state_s, res_s, grad_s] = [0, 1, 2, 3].map(|i| views[i].slice::<T>());
        let (x_s, state_s, res_s, grad_s) = (x_s?, state_s?, res_s?, grad_s?);
        let param_views = self.param_views()?;
        let params_s = &Params(param_views.iter().map(View::slice::<T>).collect::<candle_core::Result<_>>()?);
        let kept = saved.as_ref().and_then(|(chunks, saved)| Some((*chunks, T::unwrap(saved)?)));
        let (x_len, x_s) = (x_s.len(), self.spec.layer_input(x_s));
        let (dx, dstate, dparams) = match kept {
            Some((chunks, ws)) => self.backward(x_s, x_len, state_s, params_s, res_s, grad_s, ws, chunks),
            None => {
                // The forward ran without keeping its workspaces: run it again.
                let chunks = self.spec.chunk_count();
                let (_, ws) = self.forward(x_s, state_s, params_s, chunks);
                self.backward(x_s, x_len, state_s, params_s, res_s, grad_s, &ws, chunks)
            }
        };
        drop(views);
        drop(param_views);
        let dev = x.device();
        let dx = x.track_op().then(|| Tensor::from_vec(dx, x.shape(), dev)).transpose()?;
        let dstate = state.track_op().then(|| Tensor::from_vec(dstate, state.shape(), dev)).transpose()?;
        let dtoken = match &self.link {
            Some(link) => {
                // One tensor, viewed as each parameter's gradient (the views share its storage).
                let all = Tensor::from_vec(dparams, self.spec.params_len(), dev)?;
                let mut at = 0;
                let mut grads = Vec::with_capacity(self.params.len());
                for p in &self.params {
                    grads.push(all.narrow(0, at, p.elem_count())?.reshape(p.shape())?);
                    at += p.elem_count();
                }
                link.set(grads)?;
                Some(token.zeros_like()?)
            }
            None => None,
        };
        Ok((dx, dstate, dtoken))
    }
}

impl CustomOp3 for FusedLayer {
    fn name(&self) -> &'static str {
        match self.spec.kind {
            CellKind::Rnn(_) => "recur-fused-rnn",
            CellKind::Lstm => "recur-fused-lstm",
            CellKind::Gru => "recur-fused-gru",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        _token: &CpuStorage,
        _token_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match s1.dtype() {
            DType::F32 => self.cpu_fwd_typed::<f32>(s1, l1, s2, l2),
            DType::F64 => self.cpu_fwd_typed::<f64>(s1, l1, s2, l2),
            other => candle_core::bail!("the fused recurrent kernels support F32 and F64, got {other:?}"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        state: &Tensor,
        token: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match x.dtype() {
            DType::F32 => self.bwd_typed::<f32>(x, state, token, res, grad),
            DType::F64 => self.bwd_typed::<f64>(x, state, token, res, grad),
            other => candle_core::bail!("the fused recurrent kernels support F32 and F64, got {other:?}"),
        }
    }
}

/// How a layer's parameter tensors reach its op in candle's graph without being copied into one
/// tensor (a custom op takes at most three inputs, and a concatenation would cost a copy of every
/// weight in the forward and a zero-filled gradient plus an addition of that copy's size in the
/// backward).
///
/// [`ParamLink::tie`] chains one small op per parameter tensor into a one-value token, which is
/// the layer op's third input; the layer op reads the tensors themselves. In the backward candle
/// runs the layer op first (it consumes the token), which leaves every parameter's gradient here,
/// and then the chain, last link first, whose op `k` hands parameter `k` its gradient. The first
/// link, run last, clears what it read, so a later backward over the same graph starts afresh.
#[derive(Default)]
pub(crate) struct ParamLink {
    grads: Mutex<Option<Vec<Tensor>>>,
}

impl ParamLink {
    /// The token standing for `params` (all of them tracked by candle through it).
    fn tie(params: &[Tensor], link: &Arc<ParamLink>) -> candle_core::Result<Tensor> {
        let mut token: Option<Tensor> = None;
        for (index, param) in params.iter().enumerate() {
            let op = ParamChain { link: link.clone(), index };
            token = Some(match token {
                None => param.apply_op1(op)?,
                Some(previous) => previous.apply_op2(param, op)?,
            });
        }
        token.ok_or_else(|| candle_core::Error::Msg("internal error: a recurrent layer without parameters".into()))
    }

    fn set(&self, grads: Vec<Tensor>) -> candle_core::Result<()> {
        *self.grads.lock().map_err(|_| candle_core::Error::Msg("poisoned parameter link".into()))? = Some(grads);
        Ok(())
    }

    /// Parameter `index`'s gradient; the first link also clears them.
    fn take(&self, index: usize) -> candle_core::Result<Tensor> {
        let mut grads = self.grads.lock().map_err(|_| candle_core::Error::Msg("poisoned parameter link".into()))?;
        let Some(grad) = grads.as_ref().and_then(|g| g.get(index)).cloned() else {
            candle_core::bail!("internal error: a parameter link ran its backward before the layer's");
        };
        if index == 0 {
            *grads = None;
        }
        Ok(grad)
    }
}

/// Link `index` of a [`ParamLink`] chain: parameter `index` (and the previous link's token) in,
/// a one-value token out.
struct ParamChain {
    link: Arc<ParamLink>,
    index: usize,
}

/// A one-value zero of `storage`'s dtype.
fn token_of(storage: &CpuStorage) -> candle_core::Result<(CpuStorage, Shape)> {
    let zero = match storage.dtype() {
        DType::F32 => CpuStorage::F32(vec![0.0]),
        DType::F64 => CpuStorage::F64(vec![0.0]),
        other => candle_core::bail!("the fused recurrent kernels support F32 and F64, got {other:?}"),
    };
    Ok((zero, Shape::from(1)))
}

impl CustomOp1 for ParamChain {
    fn name(&self) -> &'static str {
        "recur-parameter-link"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, _layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        token_of(storage)
    }

    fn bwd(&self, _param: &Tensor, _res: &Tensor, _grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.link.take(self.index)?))
    }
}

impl CustomOp2 for ParamChain {
    fn name(&self) -> &'static str {
        "recur-parameter-link"
    }

    fn cpu_fwd(
        &self,
        token: &CpuStorage,
        _token_layout: &Layout,
        _param: &CpuStorage,
        _param_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        token_of(token)
    }

    fn bwd(
        &self,
        _token: &Tensor,
        _param: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // The token's gradient only carries the chain on to the previous link.
        Ok((Some(grad.clone()), Some(self.link.take(self.index)?)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::VarMap;

    use super::super::pool::Pooled;
    use crate::{seeded_var_builder, Gru, GruConfig, Lstm, LstmConfig, State};

    /// Output, final state and the gradients of the input, the initial state and every
    /// parameter, flattened, for a loss that weights every output value differently.
    fn run(lstm: bool, bidirectional: bool) -> Vec<Vec<f64>> {
        // 16 rows make two chunks of the batch when there are threads to run them (the split
        // path); a direction's parameter gradient (over 2^15 values) is big enough to be pooled.
        let (t, b, i, h) = (20, 16, 30, 100);
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 3, DType::F64, &dev);
        let lead = if bidirectional { 2 } else { 1 };
        let values = |n: usize, seed: f64| -> Vec<f64> { (0..n).map(|k| ((k as f64 + seed) * 0.37).sin()).collect() };
        let x = Var::from_vec(values(t * b * i, 1.0), (t, b, i), &dev).unwrap();
        let h0 = Var::from_vec(values(lead * b * h, 2.0), (lead, b, h), &dev).unwrap();
        let c0 = Var::from_vec(values(lead * b * h, 3.0), (lead, b, h), &dev).unwrap();
        let (out, state) = if lstm {
            let layer = Lstm::new(LstmConfig { bidirectional, ..LstmConfig::new(i, h) }, vb).unwrap();
            let state = State { h: h0.as_tensor().clone(), c: Some(c0.as_tensor().clone()) };
            layer.forward(x.as_tensor(), Some(&state)).unwrap()
        } else {
            let layer = Gru::new(GruConfig { bidirectional, ..GruConfig::new(i, h) }, vb).unwrap();
            layer.forward(x.as_tensor(), Some(&State { h: h0.as_tensor().clone(), c: None })).unwrap()
        };
        let weights = Tensor::from_vec(values(out.elem_count(), 4.0), out.shape(), &dev).unwrap();
        let mut loss = (&out * &weights).unwrap().sum_all().unwrap();
        loss = (loss + state.h.sum_all().unwrap()).unwrap();
        if let Some(c) = &state.c {
            loss = (loss + (c * 0.5).unwrap().sum_all().unwrap()).unwrap();
        }
        let grads = loss.backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let mut all = vec![flat(&out), flat(&state.h)];
        let mut vars = vec![x, h0];
        if lstm {
            vars.push(c0);
        }
        let mut params: Vec<(String, Var)> =
            varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        vars.extend(params.into_iter().map(|(_, v)| v));
        all.extend(vars.iter().map(|v| flat(grads.get(v.as_tensor()).unwrap())));
        all
    }

    /// Work buffers come back from the pool holding what their last user left: poisoning every
    /// pooled buffer with NaN changes no output and no gradient (bitwise), through the
    /// workspaces the forward keeps, the backward's scratch, the per-direction and (with more than
    /// one thread) the per-chunk buffers.
    #[test]
    fn stale_pooled_buffers_change_nothing() {
        for (lstm, bidirectional) in [(true, false), (true, true), (false, false), (false, true)] {
            let fresh = run(lstm, bidirectional);
            let poisoned = {
                let mut pool = f64::pool().lock().unwrap();
                assert!(!pool.is_empty(), "the first run left its work buffers in the pool");
                pool.iter_mut().for_each(|v| v.fill(f64::NAN));
                drop(pool);
                run(lstm, bidirectional)
            };
            for (k, (a, b)) in fresh.iter().zip(&poisoned).enumerate() {
                let same = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "lstm={lstm} bidirectional={bidirectional}: result {k} changed");
            }
        }
    }

    /// A small two-layer LSTM in f64 (the second layer reads the first's whole output) and a
    /// `(T, B, I)` input.
    fn two_layers(varmap: &VarMap) -> (Lstm, Var) {
        let dev = Device::Cpu;
        let vb = seeded_var_builder(varmap, 11, DType::F64, &dev);
        let layer = Lstm::new(LstmConfig { num_layers: 2, bidirectional: true, ..LstmConfig::new(3, 4) }, vb).unwrap();
        let values: Vec<f64> = (0..5 * 2 * 3).map(|k| (k as f64 * 0.41).cos()).collect();
        (layer, Var::from_vec(values, (5, 2, 3), &dev).unwrap())
    }

    /// The gradient of every parameter, by name.
    fn param_grads(varmap: &VarMap, grads: &candle_core::backprop::GradStore) -> Vec<(String, Vec<f64>)> {
        let mut out: Vec<(String, Vec<f64>)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Two runs of one layer in one graph: each op's parameter link hands its own gradients over,
    /// and the parameters get their sum.
    #[test]
    fn a_layer_run_twice_in_one_graph_gets_the_sum_of_both_gradients() {
        let varmap = VarMap::new();
        let (layer, x) = two_layers(&varmap);
        let twice = (x.as_tensor() * 0.5).unwrap();
        let loss_of = |input: &Tensor, scale: f64| {
            let (out, state) = layer.forward(input, None).unwrap();
            ((out.sqr().unwrap().sum_all().unwrap() * scale).unwrap() + state.h.sum_all().unwrap()).unwrap()
        };
        let first = param_grads(&varmap, &loss_of(x.as_tensor(), 1.0).backward().unwrap());
        let second = param_grads(&varmap, &loss_of(&twice, 3.0).backward().unwrap());
        let both = (loss_of(x.as_tensor(), 1.0) + loss_of(&twice, 3.0)).unwrap();
        let together = param_grads(&varmap, &both.backward().unwrap());
        assert_eq!(together.len(), 16, "every parameter of both layers and directions");
        for ((name, got), ((_, a), (_, b))) in together.iter().zip(first.iter().zip(&second)) {
            for (k, (g, (a, b))) in got.iter().zip(a.iter().zip(b)).enumerate() {
                assert!((g - (a + b)).abs() < 1e-12, "{name}[{k}]: {g} against {a} + {b}");
            }
        }
    }

    /// The links clear what they handed over, and a second backward over the same graph gives the
    /// same gradients again.
    #[test]
    fn backward_twice_over_one_graph_gives_the_same_gradients() {
        let varmap = VarMap::new();
        let (layer, x) = two_layers(&varmap);
        let (out, _) = layer.forward(x.as_tensor(), None).unwrap();
        let loss = out.sqr().unwrap().sum_all().unwrap();
        let first = param_grads(&varmap, &loss.backward().unwrap());
        let second = param_grads(&varmap, &loss.backward().unwrap());
        assert_eq!(first, second);
    }

    /// Parameters that are plain tensors (loaded, not variables) need no link: the input still
    /// gets its gradient, the same as with variables holding the same values.
    #[test]
    fn untracked_parameters_still_give_the_input_gradient() {
        let varmap = VarMap::new();
        let (layer, x) = two_layers(&varmap);
        let plain: std::collections::HashMap<String, Tensor> =
            varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
        let vb = candle_nn::VarBuilder::from_tensors(plain, DType::F64, &Device::Cpu);
        let frozen = Lstm::new(LstmConfig { num_layers: 2, bidirectional: true, ..LstmConfig::new(3, 4) }, vb).unwrap();
        let dx = |l: &Lstm| -> Vec<f64> {
            let (out, _) = l.forward(x.as_tensor(), None).unwrap();
            let grads = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_eq!(dx(&frozen), dx(&layer));
    }
}
