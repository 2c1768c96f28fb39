//! GRU: one direction of one layer over a whole sequence, as a fused forward / backward pair plus
//! the naive reference they are tested against.
//!
//! Exactly ATen's cell, gate chunks in the order `r, z, n`:
//! ```text
//! gi = x·W_ihᵀ + b_ih = [gi_r, gi_z, gi_n]      gh = h·W_hhᵀ + b_hh = [gh_r, gh_z, gh_n]
//! r = σ(gi_r + gh_r)   z = σ(gi_z + gh_z)   n = tanh(gi_n + r⊙gh_n)     (b_hn inside r⊙…)
//! h' = (h − n)⊙z + n
//! ```
//!
//! Workspace (`ws`, filled by the forward, read by the backward), all `t` in time order:
//! `gates (T, B, 3H)` the activated `[r, z, n]`, `gh_n (T, B, H)` = `h·W_hnᵀ + b_hn`, then
//! `gh (B, 3H)`, where each step's `h·W_hhᵀ` lands before the pointwise pass, and (over sequences
//! long enough for it to pay) `W_hhᵀ` packed for those products; `gh` and the packed weight are
//! the forward's own, the backward reads neither.
//!
//! Scratch (backward only): `dgates_i (T, B, 3H)` = `[dr, dz, dn]`, the gradients w.r.t. the input
//! side `gi`, and `dgates_h (T, B, 3H)` = `[dr, dz, dn⊙r]`, those w.r.t. the hidden side `gh`;
//! then, likewise, `W_hh` packed for the per-step products.

use super::gemm::{matmul_naive, MatRef};
use super::packed::{step_rhs_len, StepRhs};
use super::shared::{
    add_column_sums, block, block_mut, check_layout, gather_len, hidden_weight_grad, input_grads, pointwise,
    prev_state, project_inputs, span_pair, stage_len, take_final,
};
use super::{time_index, Dims, Float, Grads, Input, Weights};

/// Gates per hidden unit.
const GATES: usize = 3;

/// Length of the workspace [`gru_forward`] fills and [`gru_backward`] reads: `N·4H + B·3H`
/// (`N = T·B` rows, or fewer when packed), plus `B·H` of staging when packed sequences differ in
/// length, plus the packed `W_hhᵀ` when packing pays
/// ([`packing_pays`](super::packed::packing_pays)).
pub fn gru_workspace_len(d: Dims) -> usize {
    let (rows, h) = (d.rows(), d.hidden_size);
    rows * (GATES + 1) * h + d.batch * GATES * h + stage_len(d, h) + step_rhs_len(d, h, GATES * h)
}

/// Length of the scratch memory [`gru_backward`] needs: `N·6H`, plus `N·H + B·H` when packed
/// sequences differ in length, plus the packed `W_hh` when packing pays.
pub fn gru_scratch_len(d: Dims) -> usize {
    let h = d.hidden_size;
    2 * d.rows() * GATES * h + gather_len(d) + stage_len(d, h) + step_rhs_len(d, GATES * h, h)
}

/// Panics (an internal invariant: the ops layer validates user input) unless every buffer has the
/// length its documented shape implies.
fn check_shapes<T>(d: Dims, h0: &[T], w: &Weights<'_, T>, y: usize, h_n: usize) {
    let (n, b, i, h) = (d.rows(), d.batch, d.input_size, d.hidden_size);
    check_layout(d);
    assert!(h > 0 && d.proj_size == h, "GRU needs proj_size == hidden_size > 0, got {d:?}");
    assert!(w.w_hr.is_none(), "a GRU has no projection");
    assert_eq!(w.b_ih.is_some(), w.b_hh.is_some(), "b_ih and b_hh come together");
    assert_eq!(h0.len(), b * h, "h0 must be (B, H)");
    assert_eq!(w.w_ih.len(), GATES * h * i, "w_ih must be (3H, I)");
    assert_eq!(w.w_hh.len(), GATES * h * h, "w_hh must be (3H, H)");
    for bias in [w.b_ih, w.b_hh].into_iter().flatten() {
        assert_eq!(bias.len(), GATES * h, "biases must be (3H)");
    }
    assert_eq!(y, n * h, "y must be (T, B, H)");
    assert_eq!(h_n, b * h, "h_n must be (B, H)");
}

/// Panics unless the gradient buffers match the weights.
fn check_grads<T>(d: Dims, w: &Weights<'_, T>, g: &Grads<'_, T>) {
    let (i, h) = (d.input_size, d.hidden_size);
    assert_eq!(g.dw_ih.len(), GATES * h * i, "dw_ih must be (3H, I)");
    assert_eq!(g.dw_hh.len(), GATES * h * h, "dw_hh must be (3H, H)");
    assert_eq!(g.db_ih.is_some(), w.b_ih.is_some(), "db_ih must be given exactly when b_ih is");
    assert_eq!(g.db_hh.is_some(), w.b_hh.is_some(), "db_hh must be given exactly when b_hh is");
    assert!(g.dw_hr.is_none(), "a GRU has no projection");
    for db in [&g.db_ih, &g.db_hh].into_iter().flatten() {
        assert_eq!(db.len(), GATES * h, "bias gradients must be (3H)");
    }
}

/// Runs the GRU over `x (T, B, I)` from `h0 (B, H)`, writing every step's output to `y (T, B, H)`
/// and the final state to `h_n (B, H)`; `ws` (length [`gru_workspace_len`]) receives what
/// [`gru_backward`] needs. With `reverse` the steps run `t = T−1 … 0`, and `y[t]` is still the
/// state after step `t`.
///
/// One product projects the inputs of all steps; each step then computes `h_prev·W_hhᵀ` (one
/// product, `W_hhᵀ` packed once at the end of `ws` when that pays) and runs one fused pointwise
/// pass.
#[allow(clippy::too_many_arguments)]
pub fn gru_forward<T: Float>(
    d: Dims,
    reverse: bool,
    x: Input<'_, T>,
    h0: &[T],
    w: Weights<'_, T>,
    y: &mut [T],
    h_n: &mut [T],
    ws: &mut [T],
) {
    x.check(d, GATES * d.hidden_size);
    check_shapes(d, h0, &w, y.len(), h_n.len());
    assert!(ws.len() >= gru_workspace_len(d), "workspace shorter than gru_workspace_len");
    let (b, h) = (d.batch, d.hidden_size);
    let gate_width = GATES * h;
    let rows = d.rows();

    let (gates_all, rest) = ws.split_at_mut(rows * gate_width);
    let (gh_n_all, rest) = rest.split_at_mut(rows * h);
    let (gh_buf, rest) = rest.split_at_mut(b * gate_width);
    let (stage_h, w_hh_buf) = rest.split_at_mut(stage_len(d, h));

    project_inputs(d, gate_width, x, w.w_ih, w.b_ih, gates_all);
    let w_hh_t = StepRhs::new(d, MatRef::new(w.w_hh, gate_width, h).t(), w_hh_buf);
    h_n.copy_from_slice(h0);
    for cur in d.walk(reverse) {
        let n = cur.rows;
        let (y_read, y_t) = match d.before(cur, reverse) {
            None => (None, &mut y[cur.range(h)]),
            Some(prev) => {
                let (read, write) = span_pair(y, h, prev, cur);
                (Some(read), write)
            }
        };
        let h_prev = prev_state(y_read, h0, h, n, stage_h);
        let gh = &mut gh_buf[..n * gate_width];
        w_hh_t.matmul(gh, gate_width, false, MatRef::new(h_prev, n, h));
        let gates = &mut gates_all[cur.range(gate_width)];
        let gh_n = &mut gh_n_all[cur.range(h)];
        for row in 0..n {
            let gates = block_mut(gates, gate_width, row);
            let gh = block(gh, gate_width, row);
            let (h_prev, gh_n, h_out) = (block(h_prev, h, row), block_mut(gh_n, h, row), block_mut(y_t, h, row));
            match w.b_hh {
                Some(bias) => forward_row::<T, true>(h, bias, gates, gh, h_prev, gh_n, h_out),
                None => forward_row::<T, false>(h, &[], gates, gh, h_prev, gh_n, h_out),
            }
        }
        take_final(d, reverse, cur, y_t, h, h_n);
    }
}

/// Backpropagates through [`gru_forward`]: given the gradients `dy (T, B, H)` and `dh_n (B, H)`
/// of a loss w.r.t. its outputs, *adds* the gradients w.r.t. `x` into `dx (T, B, I)` and w.r.t.
/// the weights into `g`, and *writes* the one w.r.t. the initial state into `dh0 (B, H)`. `x`,
/// `h0`, `w`, `y` and `ws` must be those of the forward; `ws` is only read, so the backward can run
/// any number of times. `scratch` has length [`gru_scratch_len`].
///
/// Per step one fused pointwise pass and one product with `W_hh` (packed once into `scratch` when
/// that pays); `dx`, `dw_ih`, `dw_hh` and the biases are then one product (or column sum) over all
/// steps.
#[allow(clippy::too_many_arguments)]
pub fn gru_backward<T: Float>(
    d: Dims,
    reverse: bool,
    x: Input<'_, T>,
    h0: &[T],
    w: Weights<'_, T>,
    y: &[T],
    ws: &[T],
    dy: &[T],
    dh_n: &[T],
    dx: &mut [T],
    dh0: &mut [T],
    g: Grads<'_, T>,
    scratch: &mut [T],
) {
    let dx_len = x.check(d, GATES * d.hidden_size);
    check_shapes(d, h0, &w, y.len(), dh_n.len());
    check_grads(d, &w, &g);
    assert_eq!(dy.len(), y.len(), "dy must be (T, B, H)");
    assert_eq!(dx.len(), dx_len, "dx must be (T, B, I), or (V, G·H) for a projected input");
    assert_eq!(dh0.len(), h0.len(), "dh0 must be (B, H)");
    assert!(ws.len() >= gru_workspace_len(d), "workspace shorter than gru_workspace_len");
    assert!(scratch.len() >= gru_scratch_len(d), "scratch shorter than gru_scratch_len");
    let h = d.hidden_size;
    let gate_width = GATES * h;
    let rows = d.rows();

    let (gates_all, rest) = ws.split_at(rows * gate_width);
    let gh_n_all = &rest[..rows * h];
    let (dgates_i_all, rest) = scratch.split_at_mut(rows * gate_width);
    let (dgates_h_all, rest) = rest.split_at_mut(rows * gate_width);
    let (gather, rest) = rest.split_at_mut(gather_len(d));
    let (stage_h, w_hh_buf) = rest.split_at_mut(stage_len(d, h));
    let w_hh = StepRhs::new(d, MatRef::new(w.w_hh, gate_width, h), w_hh_buf);

    // dh0 carries the gradient w.r.t. the state between steps: a sequence's rows start with dh_n
    // at its last step, and after its first step they are its own.
    dh0.copy_from_slice(dh_n);
    for cur in d.walk(reverse).rev() {
        let n = cur.rows;
        let y_read = d.before(cur, reverse).map(|prev| &y[prev.range(h)]);
        let h_prev = prev_state(y_read, h0, h, n, stage_h);
        let gates = &gates_all[cur.range(gate_width)];
        let gh_n = &gh_n_all[cur.range(h)];
        let dy_t = &dy[cur.range(h)];
        let dgates_i = &mut dgates_i_all[cur.range(gate_width)];
        let dgates_h = &mut dgates_h_all[cur.range(gate_width)];
        let dh_carry = &mut dh0[..n * h];
        for row in 0..n {
            backward_row::<T>(
                h,
                block(gates, gate_width, row),
                block(gh_n, h, row),
                block(h_prev, h, row),
                block(dy_t, h, row),
                block_mut(dh_carry, h, row),
                block_mut(dgates_i, gate_width, row),
                block_mut(dgates_h, gate_width, row),
            );
        }
        // dh_carry holds the direct term dh'⊙z; add the path through the gates.
        w_hh.matmul(dh_carry, h, true, MatRef::new(dgates_h, n, gate_width));
    }

    input_grads(d, gate_width, dgates_i_all, x, w.w_ih, dx, g.dw_ih, g.db_ih);
    hidden_weight_grad(d, gate_width, reverse, dgates_h_all, y, h0, g.dw_hh, gather);
    add_column_sums(dgates_h_all, gate_width, g.db_hh);
}

pointwise! {
    /// One batch row of one forward step: `gates (3H)` holds `gi = x·W_ihᵀ + b_ih` and is
    /// overwritten with the activated `[r, z, n]`; `gh (3H)` holds `h·W_hhᵀ`, to which `b_hh (3H)`
    /// is added when `BIAS`; writes `gh_n (H)` (its `n` part, bias included) and `h_out (H)`.
    fn forward_row<T: Float, const BIAS: bool>(
        h: usize,
        b_hh: &[T],
        gates: &mut [T],
        gh: &[T],
        h_prev: &[T],
        gh_n: &mut [T],
        h_out: &mut [T],
    ) {
        let (gi_r, rest) = gates.split_at_mut(h);
        let (gi_z, gi_n) = rest.split_at_mut(h);
        let (gi_r, gi_z, gi_n) = (&mut gi_r[..h], &mut gi_z[..h], &mut gi_n[..h]);
        let (gh_r, gh_z, gh_n_raw) = (&gh[..h], &gh[h..2 * h], &gh[2 * h..3 * h]);
        let (b_r, b_z, b_n) = if BIAS {
            (&b_hh[..h], &b_hh[h..2 * h], &b_hh[2 * h..3 * h])
        } else {
            (b_hh, b_hh, b_hh)
        };
        let (h_prev, gh_n, h_out) = (&h_prev[..h], &mut gh_n[..h], &mut h_out[..h]);
        for j in 0..h {
            let (mut hr, mut hz, mut hn) = (gh_r[j], gh_z[j], gh_n_raw[j]);
            if BIAS {
                hr += b_r[j];
                hz += b_z[j];
                hn += b_n[j];
            }
            let r = (hr + gi_r[j]).sigmoid();
            let z = (hz + gi_z[j]).sigmoid();
            let n = (gi_n[j] + r * hn).tanh();
            gi_r[j] = r;
            gi_z[j] = z;
            gi_n[j] = n;
            gh_n[j] = hn;
            h_out[j] = (h_prev[j] - n) * z + n;
        }
    }
}

pointwise! {
    /// One batch row of one backward step. Reads the activated `gates (3H)`, `gh_n (H)`,
    /// `h_prev (H)` and `dy (H)`; `dh (H)` comes in as the gradient from later steps and leaves as
    /// the direct term `dh'⊙z` of the gradient w.r.t. `h_prev`; writes `dgates_i = [dr, dz, dn]`
    /// and `dgates_h = [dr, dz, dn⊙r]` (pre-activation, each `3H`).
    fn backward_row<T: Float>(
        h: usize,
        gates: &[T],
        gh_n: &[T],
        h_prev: &[T],
        dy: &[T],
        dh: &mut [T],
        dgates_i: &mut [T],
        dgates_h: &mut [T],
    ) {
        let (r, z, n) = (&gates[..h], &gates[h..2 * h], &gates[2 * h..3 * h]);
        let (di_r, rest) = dgates_i.split_at_mut(h);
        let (di_z, di_n) = rest.split_at_mut(h);
        let (di_r, di_z, di_n) = (&mut di_r[..h], &mut di_z[..h], &mut di_n[..h]);
        let (dh_r, rest) = dgates_h.split_at_mut(h);
        let (dh_z, dh_n) = rest.split_at_mut(h);
        let (dh_r, dh_z, dh_n) = (&mut dh_r[..h], &mut dh_z[..h], &mut dh_n[..h]);
        let (gh_n, h_prev, dy, dh) = (&gh_n[..h], &h_prev[..h], &dy[..h], &mut dh[..h]);
        let one = T::ONE;
        for j in 0..h {
            let dh_j = dh[j] + dy[j];
            let (r, z, n) = (r[j], z[j], n[j]);
            let dn = dh_j * (one - z) * (one - n * n);
            let dz = dh_j * (h_prev[j] - n) * (z * (one - z));
            let dr = dn * gh_n[j] * (r * (one - r));
            di_r[j] = dr;
            di_z[j] = dz;
            di_n[j] = dn;
            dh_r[j] = dr;
            dh_z[j] = dz;
            dh_n[j] = dn * r;
            dh[j] = dh_j * z;
        }
    }
}

/// What the naive forward keeps of one step, each `(B, H)`.
struct NaiveStep<T> {
    t: usize,
    h_prev: Vec<T>,
    r: Vec<T>,
    z: Vec<T>,
    n: Vec<T>,
    gh_n: Vec<T>,
}

/// Rows `[k·H, (k+1)·H)` of a `(3H, cols)` weight: gate `k`'s block.
fn gate_block<T>(weight: &[T], k: usize, h: usize, cols: usize) -> &[T] {
    &weight[k * h * cols..(k + 1) * h * cols]
}

/// `rows (B, cols) · W_kᵀ + b_k` for gate `k` of a `(3H, cols)` weight and optional `(3H)` bias.
fn naive_linear<T: Float>(
    rows: &[T],
    b: usize,
    cols: usize,
    weight: &[T],
    bias: Option<&[T]>,
    k: usize,
    h: usize,
) -> Vec<T> {
    let mut out = vec![T::ZERO; b * h];
    let w_k = MatRef::new(gate_block(weight, k, h, cols), h, cols).t();
    matmul_naive(&mut out, h, false, MatRef::new(rows, b, cols), w_k);
    if let Some(bias) = bias {
        for (e, v) in out.iter_mut().enumerate() {
            *v += bias[k * h + e % h];
        }
    }
    out
}

/// The naive forward over the whole sequence: the steps in processing order, `y`, `h_n`.
fn naive_run<T: Float>(
    d: Dims,
    reverse: bool,
    x: &[T],
    h0: &[T],
    w: &Weights<'_, T>,
) -> (Vec<NaiveStep<T>>, Vec<T>, Vec<T>) {
    let (seq_len, b, n_in, h) = (d.seq_len, d.batch, d.input_size, d.hidden_size);
    let mut y = vec![T::ZERO; seq_len * b * h];
    let mut h_state = h0.to_vec();
    let mut steps = Vec::new();
    for step in 0..seq_len {
        let t = time_index(step, seq_len, reverse);
        let x_t = &x[t * b * n_in..(t + 1) * b * n_in];
        let gi = |k| naive_linear(x_t, b, n_in, w.w_ih, w.b_ih, k, h);
        let gh = |k| naive_linear(&h_state, b, h, w.w_hh, w.b_hh, k, h);
        let (gi_r, gi_z, gi_n) = (gi(0), gi(1), gi(2));
        let (gh_r, gh_z, gh_n) = (gh(0), gh(1), gh(2));
        let r: Vec<T> = (0..b * h).map(|e| (gh_r[e] + gi_r[e]).sigmoid()).collect();
        let z: Vec<T> = (0..b * h).map(|e| (gh_z[e] + gi_z[e]).sigmoid()).collect();
        let n: Vec<T> = (0..b * h).map(|e| (gi_n[e] + r[e] * gh_n[e]).tanh()).collect();
        let h_new: Vec<T> = (0..b * h).map(|e| (h_state[e] - n[e]) * z[e] + n[e]).collect();
        y[t * b * h..(t + 1) * b * h].copy_from_slice(&h_new);
        let h_prev = std::mem::replace(&mut h_state, h_new);
        steps.push(NaiveStep { t, h_prev, r, z, n, gh_n });
    }
    (steps, y, h_state)
}

/// Naive reference for [`gru_forward`]: per step and per gate, plain loops and
/// [`matmul_naive`]; allocates; ignores `ws`.
#[allow(clippy::too_many_arguments)]
pub fn gru_forward_naive<T: Float>(
    d: Dims,
    reverse: bool,
    x: &[T],
    h0: &[T],
    w: Weights<'_, T>,
    y: &mut [T],
    h_n: &mut [T],
    _ws: &mut [T],
) {
    Input::Rows(x).check(d, GATES * d.hidden_size);
    check_shapes(d, h0, &w, y.len(), h_n.len());
    let (_, y_run, h_last) = naive_run(d, reverse, x, h0, &w);
    y.copy_from_slice(&y_run);
    h_n.copy_from_slice(&h_last);
}

/// Naive reference for [`gru_backward`]: reruns [`gru_forward_naive`]'s steps, then
/// backpropagates per step and per gate with plain loops and [`matmul_naive`]; allocates;
/// ignores `y`, `ws` and `scratch`. Same accumulate / overwrite contract.
#[allow(clippy::too_many_arguments)]
pub fn gru_backward_naive<T: Float>(
    d: Dims,
    reverse: bool,
    x: &[T],
    h0: &[T],
    w: Weights<'_, T>,
    y: &[T],
    _ws: &[T],
    dy: &[T],
    dh_n: &[T],
    dx: &mut [T],
    dh0: &mut [T],
    g: Grads<'_, T>,
    _scratch: &mut [T],
) {
    Input::Rows(x).check(d, GATES * d.hidden_size);
    check_shapes(d, h0, &w, y.len(), dh_n.len());
    check_grads(d, &w, &g);
    let (b, n_in, h) = (d.batch, d.input_size, d.hidden_size);
    let (steps, ..) = naive_run(d, reverse, x, h0, &w);
    let Grads { dw_ih, dw_hh, mut db_ih, mut db_hh, .. } = g;
    let mut dh = dh_n.to_vec();
    let one = T::ONE;
    for s in steps.iter().rev() {
        let t = s.t;
        let mut d_gi = vec![vec![T::ZERO; b * h]; GATES];
        let mut d_gh = vec![vec![T::ZERO; b * h]; GATES];
        let mut dh_prev = vec![T::ZERO; b * h];
        for e in 0..b * h {
            let dh_t = dy[t * b * h + e] + dh[e];
            let (r, z, n) = (s.r[e], s.z[e], s.n[e]);
            // h' = (h − n)⊙z + n
            let d_n = dh_t * (one - z);
            let d_z = dh_t * (s.h_prev[e] - n);
            dh_prev[e] = dh_t * z;
            // n = tanh(gi_n + r⊙gh_n)
            let d_n_pre = d_n * (one - n * n);
            let d_r = d_n_pre * s.gh_n[e];
            let d_r_pre = d_r * r * (one - r);
            let d_z_pre = d_z * z * (one - z);
            d_gi[0][e] = d_r_pre;
            d_gi[1][e] = d_z_pre;
            d_gi[2][e] = d_n_pre;
            d_gh[0][e] = d_r_pre;
            d_gh[1][e] = d_z_pre;
            d_gh[2][e] = d_n_pre * r;
        }
        let x_t = &x[t * b * n_in..(t + 1) * b * n_in];
        let dx_t = &mut dx[t * b * n_in..(t + 1) * b * n_in];
        for k in 0..GATES {
            let (gi_k, gh_k) = (MatRef::new(&d_gi[k], b, h), MatRef::new(&d_gh[k], b, h));
            matmul_naive(dx_t, n_in, true, gi_k, MatRef::new(gate_block(w.w_ih, k, h, n_in), h, n_in));
            matmul_naive(&mut dh_prev, h, true, gh_k, MatRef::new(gate_block(w.w_hh, k, h, h), h, h));
            let dw_ih_k = &mut dw_ih[k * h * n_in..(k + 1) * h * n_in];
            matmul_naive(dw_ih_k, n_in, true, gi_k.t(), MatRef::new(x_t, b, n_in));
            let dw_hh_k = &mut dw_hh[k * h * h..(k + 1) * h * h];
            matmul_naive(dw_hh_k, h, true, gh_k.t(), MatRef::new(&s.h_prev, b, h));
            for (db, src) in [(db_ih.as_deref_mut(), &d_gi[k]), (db_hh.as_deref_mut(), &d_gh[k])] {
                if let Some(db) = db {
                    for (e, v) in src.iter().enumerate() {
                        db[k * h + e % h] += *v;
                    }
                }
            }
        }
        dh = dh_prev;
    }
    dh0.copy_from_slice(&dh);
}

#[cfg(test)]
mod tests {
    use super::super::testing::{
        assert_close, batch_sizes, cast, check_gradients, check_packed_against_alone,
        check_repeatable_and_accumulating, dot, for_each_instruction_set, gather_rows, packed_rows, Flat, Rng,
    };
    use super::*;

    /// A random problem: inputs, weights and output gradients, all f64.
    #[derive(Clone)]
    struct Setup<'a> {
        d: Dims<'a>,
        reverse: bool,
        x: Vec<f64>,
        h0: Vec<f64>,
        w_ih: Vec<f64>,
        w_hh: Vec<f64>,
        b_ih: Option<Vec<f64>>,
        b_hh: Option<Vec<f64>>,
        dy: Vec<f64>,
        dh_n: Vec<f64>,
    }

    fn dims(seq_len: usize, batch: usize, input_size: usize, hidden_size: usize) -> Dims<'static> {
        Dims { seq_len, batch, input_size, hidden_size, proj_size: hidden_size, batch_sizes: None }
    }

    impl<'a> Setup<'a> {
        fn new(d: Dims<'a>, reverse: bool, bias: bool, seed: u64) -> Self {
            let mut rng = Rng::new(seed);
            let (n, b, i, h) = (d.rows(), d.batch, d.input_size, d.hidden_size);
            let scale = 1.0 / (h as f64).sqrt();
            let b_ih = bias.then(|| rng.vec(GATES * h, scale));
            let b_hh = bias.then(|| rng.vec(GATES * h, scale));
            Self {
                d,
                reverse,
                x: rng.vec(n * i, 1.0),
                h0: rng.vec(b * h, 0.5),
                w_ih: rng.vec(GATES * h * i, scale),
                w_hh: rng.vec(GATES * h * h, scale),
                b_ih,
                b_hh,
                dy: rng.vec(n * h, 1.0),
                dh_n: rng.vec(b * h, 1.0),
            }
        }

        /// The differentiable inputs, in the order of [`Setup::with_params`].
        fn params(&self) -> Vec<Vec<f64>> {
            let mut out = vec![self.x.clone(), self.h0.clone(), self.w_ih.clone(), self.w_hh.clone()];
            out.extend([&self.b_ih, &self.b_hh].into_iter().flatten().cloned());
            out
        }

        fn with_params(&self, params: &[Vec<f64>]) -> Self {
            let mut s = self.clone();
            let mut it = params.iter().cloned();
            s.x = it.next().unwrap();
            s.h0 = it.next().unwrap();
            s.w_ih = it.next().unwrap();
            s.w_hh = it.next().unwrap();
            for slot in [&mut s.b_ih, &mut s.b_hh] {
                if slot.is_some() {
                    *slot = it.next();
                }
            }
            s
        }
    }

    /// Every output of one forward + backward, in `T`.
    struct Outputs<T> {
        y: Vec<T>,
        h_n: Vec<T>,
        dx: Vec<T>,
        dh0: Vec<T>,
        dw_ih: Vec<T>,
        dw_hh: Vec<T>,
        db_ih: Option<Vec<T>>,
        db_hh: Option<Vec<T>>,
        /// The gradients after each backward pass.
        per_pass: Vec<Vec<Vec<f64>>>,
    }

    impl<T: Float> Outputs<T> {
        /// Sets every accumulated gradient to `v` and the overwritten ones to garbage.
        fn fill_grads(&mut self, v: T) {
            for buf in [&mut self.dx, &mut self.dw_ih, &mut self.dw_hh] {
                buf.fill(v);
            }
            for buf in [&mut self.db_ih, &mut self.db_hh].into_iter().flatten() {
                buf.fill(v);
            }
            self.dh0.fill(T::from_f64(1e3));
        }

        /// The gradients, in the order of [`Setup::params`].
        fn grads(&self) -> Vec<Vec<f64>> {
            let f = |v: &Vec<T>| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
            let mut out = vec![f(&self.dx), f(&self.dh0), f(&self.dw_ih), f(&self.dw_hh)];
            out.extend([&self.db_ih, &self.db_hh].into_iter().flatten().map(f));
            out
        }

        fn assert_close(&self, other: &Self, tol: f64, what: &str) {
            assert_close(&format!("{what} y"), &self.y, &other.y, tol);
            assert_close(&format!("{what} h_n"), &self.h_n, &other.h_n, tol);
            assert_eq!(self.db_ih.is_some(), other.db_ih.is_some());
            let names = ["dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"];
            for ((name, a), b) in names.iter().zip(self.grads()).zip(other.grads()) {
                assert_close(&format!("{what} {name}"), &a, &b, tol);
            }
        }
    }

    /// Forward, then `passes` backwards over its workspace into gradient buffers that start at
    /// `grad_init` and, with `reset`, are set back to it before every pass; `per_pass` keeps the
    /// gradients after each pass
    /// (`dh0` starts at garbage, since the backward overwrites it).
    fn run<T: Float>(s: &Setup, fused: bool, grad_init: f64, passes: usize, reset: bool) -> Outputs<T> {
        let d = s.d;
        let (x, h0) = (cast::<T>(&s.x), cast::<T>(&s.h0));
        let (w_ih, w_hh) = (cast::<T>(&s.w_ih), cast::<T>(&s.w_hh));
        let b_ih = s.b_ih.as_deref().map(cast::<T>);
        let b_hh = s.b_hh.as_deref().map(cast::<T>);
        let w = Weights { w_ih: &w_ih, w_hh: &w_hh, b_ih: b_ih.as_deref(), b_hh: b_hh.as_deref(), w_hr: None };
        let (dy, dh_n) = (cast::<T>(&s.dy), cast::<T>(&s.dh_n));
        let filled = |n: usize| vec![T::from_f64(grad_init); n];
        let mut out = Outputs {
            y: filled(s.dy.len()),
            h_n: filled(h0.len()),
            dx: filled(x.len()),
            dh0: vec![T::from_f64(1e3); h0.len()],
            dw_ih: filled(w_ih.len()),
            dw_hh: filled(w_hh.len()),
            db_ih: b_ih.as_ref().map(|v| filled(v.len())),
            db_hh: b_hh.as_ref().map(|v| filled(v.len())),
            per_pass: Vec::new(),
        };
        let mut ws = vec![T::from_f64(f64::NAN); gru_workspace_len(d)];
        let mut scratch = vec![T::from_f64(f64::NAN); gru_scratch_len(d)];
        if fused {
            gru_forward(d, s.reverse, Input::Rows(&x), &h0, w, &mut out.y, &mut out.h_n, &mut ws);
        } else {
            gru_forward_naive(d, s.reverse, &x, &h0, w, &mut out.y, &mut out.h_n, &mut ws);
        }
        for _ in 0..passes {
            if reset {
                out.fill_grads(T::from_f64(grad_init));
            }
            let g = Grads {
                dw_ih: &mut out.dw_ih,
                dw_hh: &mut out.dw_hh,
                db_ih: out.db_ih.as_deref_mut(),
                db_hh: out.db_hh.as_deref_mut(),
                dw_hr: None,
            };
            if fused {
                #[rustfmt::skip]
                gru_backward(d, s.reverse, Input::Rows(&x), &h0, w, &out.y, &ws, &dy, &dh_n,
                    &mut out.dx, &mut out.dh0, g, &mut scratch);
            } else {
                #[rustfmt::skip]
                gru_backward_naive(d, s.reverse, &x, &h0, w, &out.y, &ws, &dy, &dh_n,
                    &mut out.dx, &mut out.dh0, g, &mut scratch);
            }
            out.per_pass.push(out.grads());
        }
        out
    }

    /// Every combination the fused kernels must match the naive ones on.
    fn cases() -> Vec<Setup<'static>> {
        let mut out = Vec::new();
        let mut seed = 0;
        for (i, h) in [(5, 7), (20, 19)] {
            for t in [0, 1, 5] {
                for b in [0, 1, 3] {
                    for reverse in [false, true] {
                        for bias in [false, true] {
                            seed += 1;
                            out.push(Setup::new(dims(t, b, i, h), reverse, bias, seed));
                        }
                    }
                }
            }
        }
        out
    }

    #[test]
    fn fused_matches_naive_f64() {
        for_each_instruction_set(|isa| {
            for s in cases() {
                let what = format!("{isa} {:?} reverse={} bias={}", s.d, s.reverse, s.b_ih.is_some());
                run::<f64>(&s, true, 0.25, 1, false).assert_close(&run::<f64>(&s, false, 0.25, 1, false), 1e-12, &what);
            }
        });
    }

    #[test]
    fn fused_matches_naive_f32() {
        for_each_instruction_set(|isa| {
            for s in cases() {
                let what = format!("{isa} {:?} reverse={} bias={}", s.d, s.reverse, s.b_ih.is_some());
                run::<f32>(&s, true, 0.25, 1, false).assert_close(&run::<f32>(&s, false, 0.25, 1, false), 1e-5, &what);
            }
        });
    }

    #[test]
    fn gradients_match_finite_differences() {
        for (reverse, bias) in [(false, true), (true, true), (false, false)] {
            let s = Setup::new(dims(3, 2, 3, 4), reverse, bias, 200 + reverse as u64);
            let loss = |params: &[Vec<f64>]| {
                let s = s.with_params(params);
                let out = run::<f64>(&s, true, 0.0, 0, false);
                dot(&s.dy, &out.y) + dot(&s.dh_n, &out.h_n)
            };
            let analytic = run::<f64>(&s, true, 0.0, 1, false).grads();
            let mut names = vec!["x", "h0", "w_ih", "w_hh"];
            names.extend(bias.then_some(["b_ih", "b_hh"]).into_iter().flatten());
            let what = format!("gru reverse={reverse} bias={bias}");
            check_gradients(&what, &names, &mut s.params(), &analytic, loss);
        }
    }

    #[test]
    fn backward_is_repeatable_and_accumulates() {
        let s = Setup::new(dims(5, 3, 4, 6), true, true, 7);
        let names = ["dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"];
        let reset_passes = run::<f64>(&s, true, 0.0, 2, true).per_pass;
        let accumulated = run::<f64>(&s, true, 0.0, 2, false).grads();
        check_repeatable_and_accumulating(&names, &reset_passes, &accumulated, &["dh0"]);
    }

    #[test]
    fn long_sequence_stays_finite() {
        let s = Setup::new(dims(10_000, 2, 8, 32), false, true, 9);
        let out = run::<f32>(&s, true, 0.0, 1, false);
        for (k, g) in out.grads().iter().enumerate() {
            assert!(g.iter().all(|v| v.is_finite()), "gradient {k} not finite");
        }
        assert!(out.y.iter().chain(&out.h_n).all(|v| v.is_finite()));
    }

    impl Outputs<f64> {
        fn flat(&self) -> Flat {
            Flat { y: self.y.clone(), finals: vec![self.h_n.clone()], grads: self.grads() }
        }
    }

    /// Packed sequences of different lengths give, per sequence, what running it alone gives.
    #[test]
    fn packed_matches_each_sequence_alone() {
        let lengths = [9, 9, 6, 2, 2, 1, 1];
        let sizes = batch_sizes(&lengths);
        for_each_instruction_set(|isa| {
            for (reverse, bias) in [(false, true), (true, true), (true, false)] {
                let d = Dims { batch_sizes: Some(&sizes), ..dims(9, 7, 3, 5) };
                let s = Setup::new(d, reverse, bias, 23);
                let packed = run::<f64>(&s, true, 0.0, 1, false).flat();
                let alone = |b: usize| {
                    let rows = packed_rows(&lengths, b);
                    let one = Setup {
                        d: dims(lengths[b], 1, 3, 5),
                        x: gather_rows(&s.x, 3, &rows),
                        h0: s.h0[b * 5..(b + 1) * 5].to_vec(),
                        dy: gather_rows(&s.dy, 5, &rows),
                        dh_n: s.dh_n[b * 5..(b + 1) * 5].to_vec(),
                        ..s.clone()
                    };
                    run::<f64>(&one, false, 0.0, 1, false).flat()
                };
                check_packed_against_alone(
                    &format!("{isa}, reverse={reverse}, bias={bias}"),
                    &lengths,
                    &packed,
                    5,
                    3,
                    &[5],
                    alone,
                    1e-12,
                );
            }
        });
    }
}
