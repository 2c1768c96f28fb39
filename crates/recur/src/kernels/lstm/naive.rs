//! The naive LSTM reference the fused kernels are tested against: one gate at a time, one
//! matrix product per gate and step, every intermediate kept in its own vector.

use super::super::gemm::{matmul_naive, MatRef};
use super::super::{time_index, Dims, Float, Grads, Input, Weights};
use super::{check_grads, check_shapes, GATES};

/// What the naive forward keeps of one step, each `(B, H)` except `h_prev (B, P)`.
struct NaiveStep<T> {
    t: usize,
    h_prev: Vec<T>,
    c_prev: Vec<T>,
    i: Vec<T>,
    f: Vec<T>,
    g: Vec<T>,
    o: Vec<T>,
    tanh_c: Vec<T>,
    h_raw: Vec<T>,
}

/// Rows `[k·H, (k+1)·H)` of a `(G·H, cols)` weight: gate `k`'s block.
fn gate_block<T>(weight: &[T], k: usize, h: usize, cols: usize) -> &[T] {
    &weight[k * h * cols..(k + 1) * h * cols]
}

/// The naive forward over the whole sequence: the steps in processing order, `y`, `h_n`, `c_n`.
#[allow(clippy::type_complexity)]
fn naive_run<T: Float>(
    d: Dims,
    reverse: bool,
    x: &[T],
    h0: &[T],
    c0: &[T],
    w: &Weights<'_, T>,
) -> (Vec<NaiveStep<T>>, Vec<T>, Vec<T>, Vec<T>) {
    let (seq_len, b, n_in, h, p) = (d.seq_len, d.batch, d.input_size, d.hidden_size, d.proj_size);
    let mut y = vec![T::ZERO; seq_len * b * p];
    let (mut h_state, mut c_state) = (h0.to_vec(), c0.to_vec());
    let mut steps = Vec::new();
    for step in 0..seq_len {
        let t = time_index(step, seq_len, reverse);
        let x_t = &x[t * b * n_in..(t + 1) * b * n_in];
        // Pre-activation of gate k: x·W_ih,kᵀ + b_ih,k + h·W_hh,kᵀ + b_hh,k.
        let pre = |k: usize| {
            let mut out = vec![T::ZERO; b * h];
            let w_ih = MatRef::new(gate_block(w.w_ih, k, h, n_in), h, n_in).t();
            let w_hh = MatRef::new(gate_block(w.w_hh, k, h, p), h, p).t();
            matmul_naive(&mut out, h, false, MatRef::new(x_t, b, n_in), w_ih);
            let mut hidden = vec![T::ZERO; b * h];
            matmul_naive(&mut hidden, h, false, MatRef::new(&h_state, b, p), w_hh);
            for (idx, v) in out.iter_mut().enumerate() {
                let j = k * h + idx % h;
                let bias = match (w.b_ih, w.b_hh) {
                    (Some(bi), Some(bh)) => bi[j] + bh[j],
                    _ => T::ZERO,
                };
                *v = *v + hidden[idx] + bias;
            }
            out
        };
        let i: Vec<T> = pre(0).into_iter().map(T::sigmoid).collect();
        let f: Vec<T> = pre(1).into_iter().map(T::sigmoid).collect();
        let g: Vec<T> = pre(2).into_iter().map(T::tanh).collect();
        let o: Vec<T> = pre(3).into_iter().map(T::sigmoid).collect();
        let c_new: Vec<T> = (0..b * h).map(|e| f[e] * c_state[e] + i[e] * g[e]).collect();
        let tanh_c: Vec<T> = c_new.iter().map(|&v| v.tanh()).collect();
        let h_raw: Vec<T> = (0..b * h).map(|e| o[e] * tanh_c[e]).collect();
        let h_new = match w.w_hr {
            Some(w_hr) => {
                let mut out = vec![T::ZERO; b * p];
                matmul_naive(&mut out, p, false, MatRef::new(&h_raw, b, h), MatRef::new(w_hr, p, h).t());
                out
            }
            None => h_raw.clone(),
        };
        y[t * b * p..(t + 1) * b * p].copy_from_slice(&h_new);
        let h_prev = std::mem::replace(&mut h_state, h_new);
        let c_prev = std::mem::replace(&mut c_state, c_new);
        steps.push(NaiveStep { t, h_prev, c_prev, i, f, g, o, tanh_c, h_raw });
    }
    (steps, y, h_state, c_state)
}

/// Naive reference for [`lstm_forward`](super::lstm_forward): per step and per gate, plain loops and
/// [`matmul_naive`]; allocates; ignores `ws`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_forward_naive<T: Float>(
    d: Dims,
    reverse: bool,
    x: &[T],
    h0: &[T],
    c0: &[T],
    w: Weights<'_, T>,
    y: &mut [T],
    h_n: &mut [T],
    c_n: &mut [T],
    _ws: &mut [T],
) {
    Input::Rows(x).check(d, GATES * d.hidden_size);
    check_shapes(d, h0, c0, &w, y.len(), h_n.len(), c_n.len());
    let (_, y_run, h_last, c_last) = naive_run(d, reverse, x, h0, c0, &w);
    y.copy_from_slice(&y_run);
    h_n.copy_from_slice(&h_last);
    c_n.copy_from_slice(&c_last);
}

/// Naive reference for [`lstm_backward`](super::lstm_backward): reruns [`lstm_forward_naive`]'s steps, then
/// backpropagates per step and per gate with plain loops and [`matmul_naive`]; allocates;
/// ignores `y`, `ws` and `scratch`. Same accumulate / overwrite contract.
#[allow(clippy::too_many_arguments)]
pub fn lstm_backward_naive<T: Float>(
    d: Dims,
    reverse: bool,
    x: &[T],
    h0: &[T],
    c0: &[T],
    w: Weights<'_, T>,
    y: &[T],
    _ws: &[T],
    dy: &[T],
    dh_n: &[T],
    dc_n: &[T],
    dx: &mut [T],
    dh0: &mut [T],
    dc0: &mut [T],
    g: Grads<'_, T>,
    _scratch: &mut [T],
) {
    Input::Rows(x).check(d, GATES * d.hidden_size);
    check_shapes(d, h0, c0, &w, y.len(), dh_n.len(), dc_n.len());
    check_grads(d, &w, &g);
    let (b, n_in, h, p) = (d.batch, d.input_size, d.hidden_size, d.proj_size);
    let (steps, ..) = naive_run(d, reverse, x, h0, c0, &w);
    let Grads { dw_ih, dw_hh, mut db_ih, mut db_hh, mut dw_hr } = g;
    let mut dh = dh_n.to_vec();
    let mut dc = dc_n.to_vec();
    let one = T::ONE;
    for s in steps.iter().rev() {
        let t = s.t;
        let dh_t: Vec<T> = (0..b * p).map(|e| dy[t * b * p + e] + dh[e]).collect();
        let dh_raw = match (w.w_hr, dw_hr.as_deref_mut()) {
            (Some(w_hr), Some(dw_hr)) => {
                matmul_naive(dw_hr, h, true, MatRef::new(&dh_t, b, p).t(), MatRef::new(&s.h_raw, b, h));
                let mut out = vec![T::ZERO; b * h];
                matmul_naive(&mut out, h, false, MatRef::new(&dh_t, b, p), MatRef::new(w_hr, p, h));
                out
            }
            _ => dh_t,
        };
        let mut dpre = vec![vec![T::ZERO; b * h]; GATES];
        let mut dc_prev = vec![T::ZERO; b * h];
        for e in 0..b * h {
            let (i, f, gg, o, tc) = (s.i[e], s.f[e], s.g[e], s.o[e], s.tanh_c[e]);
            let d_o = dh_raw[e] * tc;
            let dc_total = dc[e] + dh_raw[e] * o * (one - tc * tc);
            let d_i = dc_total * gg;
            let d_g = dc_total * i;
            let d_f = dc_total * s.c_prev[e];
            dc_prev[e] = dc_total * f;
            dpre[0][e] = d_i * i * (one - i);
            dpre[1][e] = d_f * f * (one - f);
            dpre[2][e] = d_g * (one - gg * gg);
            dpre[3][e] = d_o * o * (one - o);
        }
        let mut dh_prev = vec![T::ZERO; b * p];
        let x_t = &x[t * b * n_in..(t + 1) * b * n_in];
        let dx_t = &mut dx[t * b * n_in..(t + 1) * b * n_in];
        for (k, dpre_k) in dpre.iter().enumerate() {
            let dpre_k_mat = MatRef::new(dpre_k, b, h);
            let w_ih_k = MatRef::new(gate_block(w.w_ih, k, h, n_in), h, n_in);
            let w_hh_k = MatRef::new(gate_block(w.w_hh, k, h, p), h, p);
            matmul_naive(dx_t, n_in, true, dpre_k_mat, w_ih_k);
            matmul_naive(&mut dh_prev, p, true, dpre_k_mat, w_hh_k);
            let dw_ih_k = &mut dw_ih[k * h * n_in..(k + 1) * h * n_in];
            matmul_naive(dw_ih_k, n_in, true, dpre_k_mat.t(), MatRef::new(x_t, b, n_in));
            let dw_hh_k = &mut dw_hh[k * h * p..(k + 1) * h * p];
            matmul_naive(dw_hh_k, p, true, dpre_k_mat.t(), MatRef::new(&s.h_prev, b, p));
            for db in [db_ih.as_deref_mut(), db_hh.as_deref_mut()].into_iter().flatten() {
                for e in 0..b * h {
                    db[k * h + e % h] += dpre_k[e];
                }
            }
        }
        dh = dh_prev;
        dc = dc_prev;
    }
    dh0.copy_from_slice(&dh);
    dc0.copy_from_slice(&dc);
}
