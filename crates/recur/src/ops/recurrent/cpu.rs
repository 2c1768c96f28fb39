//! The layer's forward on the host: each direction over the whole batch (the two directions on
//! two threads when the layer is big enough), or each direction's batch cut into chunks that run
//! on threads of their own ([`super::split`]).

use super::spec::{CellKind, LayerSpec, Params};
use super::split::{self, Chunk};
use crate::kernels::gemm::MatRef;
use crate::kernels::{gemm, gru, lstm, rnn, Dims, Float, Input, Weights};
use crate::ops::pool::Buffer;
use crate::ops::Element;

/// The forward: the flat output and the workspaces the backward reads (one per direction, or
/// with `chunks > 1` one per direction and chunk, direction-major), followed with a lookup by
/// each direction's projected table (see [`LayerSpec::saved_tables`]).
pub(super) fn forward<T: Element>(
    spec: &LayerSpec,
    x: &[T],
    state: &[T],
    params: &Params<'_, T>,
    chunks: usize,
) -> (Vec<T>, Vec<Buffer<T>>) {
    if chunks > 1 {
        return forward_split(spec, x, state, params, chunks);
    }
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

/// [`forward`] with each direction's batch cut into `chunks` (see [`split`]): each
/// (direction, chunk) pair runs the kernels single-threaded over its own rows, all at once.
pub(super) fn forward_split<T: Element>(
    spec: &LayerSpec,
    x: &[T],
    state: &[T],
    params: &Params<'_, T>,
    chunks: usize,
) -> (Vec<T>, Vec<Buffer<T>>) {
    use rayon::prelude::*;
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

/// One direction's share of the forward's outputs.
struct DirectionOut<'a, T> {
    dir: usize,
    y: &'a mut [T],
    h_n: &'a mut [T],
    c_n: &'a mut [T],
    ws: &'a mut [T],
}

impl LayerSpec {
    /// With `lookup`, each direction's projected table `x (V, I) · w_ihᵀ + b_ih`, `(V, G·H)`;
    /// without, nothing.
    pub(super) fn project_tables<T: Element>(&self, x: &[T], params: &Params<'_, T>) -> Vec<Buffer<T>> {
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

    /// A chunk's input: its rows of `x` gathered, or with `lookup` its ids (and no rows).
    pub(super) fn chunk_input<T: Element>(&self, x: &[T], chunk: &Chunk) -> (Buffer<T>, Vec<u32>) {
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

    /// Whether the layer is big enough for its work to be shared between threads.
    pub(super) fn worth_threads(&self) -> bool {
        gemm::num_threads() > 1 && self.rows() * self.sizes.hidden_size * self.kind.gates() >= 1 << 14
    }

    /// Whether the two directions should run on two threads.
    pub(super) fn concurrent(&self) -> bool {
        self.directions == 2 && self.worth_threads()
    }

    /// Into how many chunks of batch rows each direction is cut, one thread each (see
    /// [`split`]): the threads the directions leave, as far as the batch gives every chunk
    /// [`split::MIN_CHUNK_ROWS`] rows; 1 runs the layer unsplit.
    pub(super) fn chunk_count(&self) -> usize {
        if !self.worth_threads() {
            return 1;
        }
        let spare = gemm::num_threads() / self.directions;
        spare.min(self.sizes.batch / split::MIN_CHUNK_ROWS).max(1)
    }
}

/// The forward kernel of `kind` (`c0`, `c_n` are ignored without a cell state).
#[allow(clippy::too_many_arguments)]
pub(super) fn run_forward<T: Float>(
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
