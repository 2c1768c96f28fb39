//! The layer's backward on the host (BPTT through the kernels' backward), mirroring the forward's
//! two ways of running: whole directions, or each direction's batch in chunks whose gradients are
//! then summed in a fixed order.

use super::spec::{split_grads, CellKind, LayerSpec, Params};
use super::split::{self, Chunk};
use crate::kernels::gemm::MatRef;
use crate::kernels::{gemm, gru, lstm, rnn, Dims, Float, Grads, Input, Weights};
use crate::ops::pool::Buffer;
use crate::ops::Element;

/// The gradients of `x` (`x_len` values: `x`'s, then zeros for what [`LayerSpec::x_is_output`]
/// leaves unread), of the initial state and of the parameters, in one buffer:
/// `[dx (x_len) | dstate (state_len) | dparams (params_len)]` (see [`split_layer_grads`]).
#[allow(clippy::too_many_arguments)]
pub(super) fn backward<T: Element>(
    spec: &LayerSpec,
    x: &[T],
    x_len: usize,
    state: &[T],
    params: &Params<'_, T>,
    out: &[T],
    grad: &[T],
    workspaces: &[Buffer<T>],
    chunks: usize,
) -> Vec<T> {
    if chunks > 1 {
        return backward_split(spec, x, x_len, state, params, out, grad, workspaces, chunks);
    }
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
    let mut grads = vec![T::ZERO; x_len + spec.state_len() + spec.params_len()];
    let (dx, dstate, dparams) = split_layer_grads(&mut grads, x_len, spec.state_len());
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
    // Without a lookup the first direction adds straight into `dx` and the others (with
    // concurrent directions) into buffers of their own; with one, each direction's table
    // gradient has a buffer of its own.
    let extra = if lookup { dx_bufs } else { dx_bufs - 1 };
    let mut dx_extra: Vec<Vec<T>> = (0..extra).map(|_| vec![T::ZERO; dx_len]).collect();
    let o = spec.offsets();
    {
        let mut dxs: Vec<&mut [T]> = if lookup {
            dx_extra.iter_mut().map(|v| &mut v[..]).collect()
        } else {
            std::iter::once(&mut dx[..dx_len]).chain(dx_extra.iter_mut().map(|v| &mut v[..])).collect()
        };
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
        for (dir, (dtable, dp)) in dx_extra.iter().zip(dparams.chunks_mut(o.len.max(1))).enumerate() {
            spec.table_grads(x, params, dir, dtable, &mut dx[..x.len()], dp);
        }
        return grads;
    }
    for other in &dx_extra {
        for (a, b) in dx.iter_mut().zip(other) {
            *a += *b;
        }
    }
    grads
}

/// `grads` `[dx | dstate | dparams]` (as [`backward`] returns it) cut into its three parts, of
/// `x_len`, `state_len` and the remaining values.
pub(super) fn split_layer_grads<T>(grads: &mut [T], x_len: usize, state_len: usize) -> (&mut [T], &mut [T], &mut [T]) {
    let (dx, rest) = grads.split_at_mut(x_len);
    let (dstate, dparams) = rest.split_at_mut(state_len);
    (dx, dstate, dparams)
}

/// [`backward`] of [`super::cpu::forward_split`]: each (direction, chunk) pair
/// backpropagates through its own rows into its own gradient buffers, which are then summed
/// (the parameters' and, over the directions, the input's) in a fixed order.
#[allow(clippy::too_many_arguments)]
pub(super) fn backward_split<T: Element>(
    spec: &LayerSpec,
    x: &[T],
    x_len: usize,
    state: &[T],
    params: &Params<'_, T>,
    out: &[T],
    grad: &[T],
    workspaces: &[Buffer<T>],
    chunks: usize,
) -> Vec<T> {
    use rayon::prelude::*;
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
    let mut grads = vec![T::ZERO; x_len + spec.state_len() + spec.params_len()];
    let (dx, dstate, dparams) = split_layer_grads(&mut grads, x_len, spec.state_len());
    let mut dps = Vec::with_capacity(jobs.len());
    let mut dtables = Vec::with_capacity(jobs.len());
    for (&(dir, chunk), [dx_c, dh0, dc0, dp]) in jobs.iter().zip(results) {
        if lookup {
            dtables.push((dir, dx_c));
        } else {
            split::scatter_add(dx, i, 0, i, &chunk.rows, &dx_c);
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
            spec.table_grads(x, params, dir, &dtable, dx, total);
        }
    }
    grads
}

/// Elements per task when [`backward_split`] sums the chunks' parameter gradients.
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
    /// The forward's saved buffers split into the workspaces and (with `lookup`, the last
    /// `directions` of them) the projected tables the backward hands the kernels.
    pub(super) fn saved_tables<'a, T: Element>(&self, saved: &'a [Buffer<T>]) -> (&'a [Buffer<T>], &'a [Buffer<T>]) {
        let tables = if self.lookup.is_some() { self.directions } else { 0 };
        saved.split_at(saved.len() - tables)
    }

    /// With `lookup`, turns direction `dir`'s table gradient `dtable (V, G·H)` into the gradients
    /// it stands for: `dx (V, I) += dtable · w_ih`, and into that direction's parameter gradient
    /// block `dp`, `dw_ih += dtableᵀ · x` and `db_ih += Σ_v dtable[v]`.
    pub(super) fn table_grads<T: Element>(
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
}

/// The gradients the kernels' backward gives w.r.t. the input (added) and the initial state
/// (written).
struct StateGrads<'a, T> {
    dx: &'a mut [T],
    dh0: &'a mut [T],
    dc0: &'a mut [T],
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
