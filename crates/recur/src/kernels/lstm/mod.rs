//! LSTM: one direction of one layer over a whole sequence, as a fused forward / backward pair plus
//! the naive reference they are tested against.
//!
//! Exactly ATen's cell, gate chunks in the order `i, f, g, o`:
//! ```text
//! gates = x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh
//! i = σ(gates_i)   f = σ(gates_f)   g = tanh(gates_g)   o = σ(gates_o)
//! c' = f⊙c + i⊙g
//! h' = o⊙tanh(c')              (then h' = h'·W_hrᵀ when the layer projects, P < H)
//! ```
//!
//! Workspace (`ws`, filled by the forward, read by the backward), all `t` in time order:
//! `gates (T, B, 4H)` the activated gates `[i, f, g, o]`, `c (T, B, H)` the cell state after each
//! step, `tanh_c (T, B, H)`, and with a projection `h_raw (T, B, H)` = `o⊙tanh(c)` before `W_hr`;
//! then, over sequences long enough for it to pay, `W_hhᵀ` (and `W_hrᵀ`) packed for the forward's
//! per-step products, which the backward does not read.
//!
//! Scratch (backward only): `dgates (T, B, 4H)` the pre-activation gate gradients; with a
//! projection also `dh (T, B, P)`, the gradient reaching each step's output, and `dh_raw (B, H)`;
//! then, likewise, `W_hh` (and `W_hr`) packed for the backward's per-step products.

mod naive;

pub use self::naive::{lstm_backward_naive, lstm_forward_naive};
use super::gemm::{matmul, MatRef};
use super::packed::{step_rhs_len, StepRhs};
use super::shared::{
    add_column_sums, block, block_mut, check_layout, gather_len, hidden_weight_grad, input_grads, pointwise,
    prev_state, project_inputs, span_pair, stage_len, take_final,
};
use super::{Dims, Float, Grads, Input, Weights};

/// Gates per hidden unit.
const GATES: usize = 4;

/// Whether `d` describes an LSTM with a projection (`P < H`).
fn projects(d: Dims) -> bool {
    d.proj_size != d.hidden_size
}

/// Length of the workspace [`lstm_forward`] fills and [`lstm_backward`] reads:
/// `N·6H` (`N = T·B` rows, or fewer when packed), plus `N·H` with a projection, plus `B·(P + H)`
/// of staging when packed sequences differ in length, plus the packed `W_hhᵀ` (and `W_hrᵀ`) when
/// packing pays ([`packing_pays`](super::packed::packing_pays)).
pub fn lstm_workspace_len(d: Dims) -> usize {
    let rows = d.rows();
    let h_raw = if projects(d) { rows * d.hidden_size } else { 0 };
    let stages = stage_len(d, d.proj_size) + stage_len(d, d.hidden_size);
    rows * (GATES + 2) * d.hidden_size + h_raw + stages + packed_weights_len(d, false)
}

/// Length of the scratch memory [`lstm_backward`] needs: `N·4H`, plus `N·P + B·H` with a
/// projection, plus `N·P + B·H` when packed sequences differ in length, plus the packed `W_hh`
/// (and `W_hr`) when packing pays.
pub fn lstm_scratch_len(d: Dims) -> usize {
    let rows = d.rows();
    let dh = if projects(d) { rows * d.proj_size + d.batch * d.hidden_size } else { 0 };
    rows * GATES * d.hidden_size + dh + gather_len(d) + stage_len(d, d.hidden_size) + packed_weights_len(d, true)
}

/// Length of `W_hh` and, with a projection, `W_hr` packed as the right-hand side of the per-step
/// products: transposed for the forward (`h·W_hhᵀ`, `h_raw·W_hrᵀ`), as is for the backward; 0
/// when packing does not pay.
fn packed_weights_len(d: Dims, backward: bool) -> usize {
    let (gate_width, h, p) = (GATES * d.hidden_size, d.hidden_size, d.proj_size);
    let (w_hh, w_hr) = if backward {
        (step_rhs_len(d, gate_width, p), step_rhs_len(d, p, h))
    } else {
        (step_rhs_len(d, p, gate_width), step_rhs_len(d, h, p))
    };
    w_hh + if projects(d) { w_hr } else { 0 }
}

/// Panics (an internal invariant: the ops layer validates user input) unless every buffer has the
/// length its documented shape implies.
#[allow(clippy::too_many_arguments)]
fn check_shapes<T>(d: Dims, h0: &[T], c0: &[T], w: &Weights<'_, T>, y: usize, h_n: usize, c_n: usize) {
    let (n, b, i, h, p) = (d.rows(), d.batch, d.input_size, d.hidden_size, d.proj_size);
    check_layout(d);
    assert!(h > 0 && p > 0 && p <= h, "LSTM needs 0 < proj_size <= hidden_size, got {d:?}");
    assert_eq!(w.w_hr.is_some(), projects(d), "w_hr must be given exactly when proj_size < hidden_size");
    assert_eq!(w.b_ih.is_some(), w.b_hh.is_some(), "b_ih and b_hh come together");
    assert_eq!(h0.len(), b * p, "h0 must be (B, P)");
    assert_eq!(c0.len(), b * h, "c0 must be (B, H)");
    assert_eq!(w.w_ih.len(), GATES * h * i, "w_ih must be (4H, I)");
    assert_eq!(w.w_hh.len(), GATES * h * p, "w_hh must be (4H, P)");
    for bias in [w.b_ih, w.b_hh].into_iter().flatten() {
        assert_eq!(bias.len(), GATES * h, "biases must be (4H)");
    }
    if let Some(w_hr) = w.w_hr {
        assert_eq!(w_hr.len(), p * h, "w_hr must be (P, H)");
    }
    assert_eq!(y, n * p, "y must be (T, B, P)");
    assert_eq!(h_n, b * p, "h_n must be (B, P)");
    assert_eq!(c_n, b * h, "c_n must be (B, H)");
}

/// Panics unless the gradient buffers match the weights.
fn check_grads<T>(d: Dims, w: &Weights<'_, T>, g: &Grads<'_, T>) {
    let (i, h, p) = (d.input_size, d.hidden_size, d.proj_size);
    assert_eq!(g.dw_ih.len(), GATES * h * i, "dw_ih must be (4H, I)");
    assert_eq!(g.dw_hh.len(), GATES * h * p, "dw_hh must be (4H, P)");
    assert_eq!(g.db_ih.is_some(), w.b_ih.is_some(), "db_ih must be given exactly when b_ih is");
    assert_eq!(g.db_hh.is_some(), w.b_hh.is_some(), "db_hh must be given exactly when b_hh is");
    assert_eq!(g.dw_hr.is_some(), w.w_hr.is_some(), "dw_hr must be given exactly when w_hr is");
    for db in [&g.db_ih, &g.db_hh].into_iter().flatten() {
        assert_eq!(db.len(), GATES * h, "bias gradients must be (4H)");
    }
    if let Some(dw_hr) = &g.dw_hr {
        assert_eq!(dw_hr.len(), p * h, "dw_hr must be (P, H)");
    }
}

/// Runs the LSTM over `x (T, B, I)` from `h0 (B, P)`, `c0 (B, H)`, writing every step's output to
/// `y (T, B, P)` and the final state to `h_n (B, P)`, `c_n (B, H)`; `ws` (length
/// [`lstm_workspace_len`]) receives what [`lstm_backward`] needs. With `reverse` the steps run
/// `t = T−1 … 0`, and `y[t]` is still the state after step `t`.
///
/// One product projects the inputs of all steps; each step then adds `h_prev·W_hhᵀ` (one product),
/// runs one fused pointwise pass and, with a projection, one product with `W_hrᵀ`. Over long enough
/// sequences the per-step products read `W_hhᵀ` and `W_hrᵀ` packed once, at the end of `ws`.
#[allow(clippy::too_many_arguments)]
pub fn lstm_forward<T: Float>(
    d: Dims,
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
    x.check(d, GATES * d.hidden_size);
    check_shapes(d, h0, c0, &w, y.len(), h_n.len(), c_n.len());
    assert!(ws.len() >= lstm_workspace_len(d), "workspace shorter than lstm_workspace_len");
    let (h, p) = (d.hidden_size, d.proj_size);
    let gate_width = GATES * h;
    let rows = d.rows();

    let (gates_all, rest) = ws.split_at_mut(rows * gate_width);
    let (c_all, rest) = rest.split_at_mut(rows * h);
    let (tanh_c_all, rest) = rest.split_at_mut(rows * h);
    let (h_raw_all, rest) = rest.split_at_mut(if projects(d) { rows * h } else { 0 });
    let (stage_h, rest) = rest.split_at_mut(stage_len(d, p));
    let (stage_c, rest) = rest.split_at_mut(stage_len(d, h));
    let (w_hh_buf, w_hr_buf) = rest.split_at_mut(step_rhs_len(d, p, gate_width));

    project_inputs(d, gate_width, x, w.w_ih, w.b_ih, gates_all);
    let w_hh_t = StepRhs::new(d, MatRef::new(w.w_hh, gate_width, p).t(), w_hh_buf);
    let w_hr_t = w.w_hr.map(|w_hr| StepRhs::new(d, MatRef::new(w_hr, p, h).t(), w_hr_buf));
    h_n.copy_from_slice(h0);
    c_n.copy_from_slice(c0);
    for cur in d.walk(reverse) {
        let n = cur.rows;
        let ((y_read, y_t), (c_read, c)) = match d.before(cur, reverse) {
            None => ((None, &mut y[cur.range(p)]), (None, &mut c_all[cur.range(h)])),
            Some(prev) => {
                let (y_read, y_t) = span_pair(y, p, prev, cur);
                let (c_read, c) = span_pair(c_all, h, prev, cur);
                ((Some(y_read), y_t), (Some(c_read), c))
            }
        };
        let h_prev = prev_state(y_read, h0, p, n, stage_h);
        let c_prev = prev_state(c_read, c0, h, n, stage_c);
        let gates = &mut gates_all[cur.range(gate_width)];
        let tanh_c = &mut tanh_c_all[cur.range(h)];
        w_hh_t.matmul(gates, gate_width, true, MatRef::new(h_prev, n, p));
        match &w_hr_t {
            Some(w_hr_t) => {
                let h_raw = &mut h_raw_all[cur.range(h)];
                forward_step(h, w.b_hh, gates, c_prev, c, tanh_c, h_raw);
                w_hr_t.matmul(y_t, p, false, MatRef::new(h_raw, n, h));
            }
            None => forward_step(h, w.b_hh, gates, c_prev, c, tanh_c, y_t),
        }
        take_final(d, reverse, cur, y_t, p, h_n);
        take_final(d, reverse, cur, c, h, c_n);
    }
}

/// Backpropagates through [`lstm_forward`]: given the gradients `dy (T, B, P)`, `dh_n (B, P)` and
/// `dc_n (B, H)` of a loss w.r.t. its outputs, *adds* the gradients w.r.t. `x` into `dx (T, B, I)`
/// and w.r.t. the weights into `g`, and *writes* those w.r.t. the initial state into `dh0 (B, P)`,
/// `dc0 (B, H)`. `x`, `h0`, `c0`, `w`, `y` and `ws` must be those of the forward; `ws` is only
/// read, so the backward can run any number of times. `scratch` has length [`lstm_scratch_len`].
///
/// Per step one fused pointwise pass (plus, with a projection, one product with `W_hr`) and one
/// product with `W_hh` (both weights packed once into `scratch` when that pays); `dx`, `dw_ih`,
/// `dw_hh`, `dw_hr` and the biases are then one product (or column sum) over all steps.
#[allow(clippy::too_many_arguments)]
pub fn lstm_backward<T: Float>(
    d: Dims,
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
    dx: &mut [T],
    dh0: &mut [T],
    dc0: &mut [T],
    g: Grads<'_, T>,
    scratch: &mut [T],
) {
    let dx_len = x.check(d, GATES * d.hidden_size);
    check_shapes(d, h0, c0, &w, y.len(), dh_n.len(), dc_n.len());
    check_grads(d, &w, &g);
    assert_eq!(dy.len(), y.len(), "dy must be (T, B, P)");
    assert_eq!(dx.len(), dx_len, "dx must be (T, B, I), or (V, G·H) for a projected input");
    assert_eq!(dh0.len(), h0.len(), "dh0 must be (B, P)");
    assert_eq!(dc0.len(), c0.len(), "dc0 must be (B, H)");
    assert!(ws.len() >= lstm_workspace_len(d), "workspace shorter than lstm_workspace_len");
    assert!(scratch.len() >= lstm_scratch_len(d), "scratch shorter than lstm_scratch_len");
    let (b, h, p) = (d.batch, d.hidden_size, d.proj_size);
    let gate_width = GATES * h;
    let rows = d.rows();
    let proj = projects(d);

    let (gates_all, rest) = ws.split_at(rows * gate_width);
    let (c_all, rest) = rest.split_at(rows * h);
    let (tanh_c_all, rest) = rest.split_at(rows * h);
    let h_raw_all = &rest[..if proj { rows * h } else { 0 }];
    let (dgates_all, rest) = scratch.split_at_mut(rows * gate_width);
    let (dh_all, rest) = rest.split_at_mut(if proj { rows * p } else { 0 });
    let (dh_raw_buf, rest) = rest.split_at_mut(if proj { b * h } else { 0 });
    let (gather, rest) = rest.split_at_mut(gather_len(d));
    let (stage_c, rest) = rest.split_at_mut(stage_len(d, h));
    let (w_hh_buf, w_hr_buf) = rest.split_at_mut(step_rhs_len(d, gate_width, p));
    let w_hh = StepRhs::new(d, MatRef::new(w.w_hh, gate_width, p), w_hh_buf);
    let w_hr = w.w_hr.map(|w_hr| StepRhs::new(d, MatRef::new(w_hr, p, h), w_hr_buf));

    // dh0 / dc0 carry the gradient w.r.t. the state between steps: a sequence's rows start with
    // dh_n / dc_n at its last step, and after its first step they are its own.
    dh0.copy_from_slice(dh_n);
    dc0.copy_from_slice(dc_n);
    for cur in d.walk(reverse).rev() {
        let n = cur.rows;
        let c_read = d.before(cur, reverse).map(|prev| &c_all[prev.range(h)]);
        let c_prev = prev_state(c_read, c0, h, n, stage_c);
        let gates = &gates_all[cur.range(gate_width)];
        let tanh_c = &tanh_c_all[cur.range(h)];
        let dgates = &mut dgates_all[cur.range(gate_width)];
        let dy_t = &dy[cur.range(p)];
        let (dh_carry, dc_carry) = (&mut dh0[..n * p], &mut dc0[..n * h]);
        match &w_hr {
            Some(w_hr) => {
                let dh = &mut dh_all[cur.range(p)];
                for ((dh, &dy), &carried) in dh.iter_mut().zip(dy_t).zip(dh_carry.iter()) {
                    *dh = dy + carried;
                }
                let dh_raw = &mut dh_raw_buf[..n * h];
                w_hr.matmul(dh_raw, h, false, MatRef::new(dh, n, p));
                backward_step(h, gates, c_prev, tanh_c, dh_raw, None, dc_carry, dgates);
            }
            None => backward_step(h, gates, c_prev, tanh_c, dh_carry, Some(dy_t), dc_carry, dgates),
        }
        w_hh.matmul(dh_carry, p, false, MatRef::new(dgates, n, gate_width));
    }

    input_grads(d, gate_width, dgates_all, x, w.w_ih, dx, g.dw_ih, g.db_ih);
    hidden_weight_grad(d, gate_width, reverse, dgates_all, y, h0, g.dw_hh, gather);
    add_column_sums(dgates_all, gate_width, g.db_hh);
    if let Some(dw_hr) = g.dw_hr {
        matmul(dw_hr, h, true, MatRef::new(dh_all, rows, p).t(), MatRef::new(h_raw_all, rows, h));
    }
}

/// One step's pointwise forward over `B` rows: `gates (B, 4H)` holds `x·W_ihᵀ + b_ih + h·W_hhᵀ`
/// and is overwritten with the activated `[i, f, g, o]`; writes `c`, `tanh_c` and
/// `h_out = o⊙tanh(c)`, all `(B, H)`.
#[allow(clippy::too_many_arguments)]
fn forward_step<T: Float>(
    h: usize,
    b_hh: Option<&[T]>,
    gates: &mut [T],
    c_prev: &[T],
    c: &mut [T],
    tanh_c: &mut [T],
    h_out: &mut [T],
) {
    for row in 0..c.len() / h {
        let gates = block_mut(gates, GATES * h, row);
        let (c_prev, c) = (block(c_prev, h, row), block_mut(c, h, row));
        let (tanh_c, h_out) = (block_mut(tanh_c, h, row), block_mut(h_out, h, row));
        match b_hh {
            Some(bias) => forward_row::<T, true>(h, bias, gates, c_prev, c, tanh_c, h_out),
            None => forward_row::<T, false>(h, &[], gates, c_prev, c, tanh_c, h_out),
        }
    }
}

pointwise! {
    /// One batch row of [`forward_step`]; `b_hh (4H)` is read only when `BIAS`.
    fn forward_row<T: Float, const BIAS: bool>(
        h: usize,
        b_hh: &[T],
        gates: &mut [T],
        c_prev: &[T],
        c: &mut [T],
        tanh_c: &mut [T],
        h_out: &mut [T],
    ) {
        // Exact-length views let LLVM drop the bounds checks and vectorize the loop.
        let (gi, rest) = gates.split_at_mut(h);
        let (gf, rest) = rest.split_at_mut(h);
        let (gg, go) = rest.split_at_mut(h);
        let (gi, gf, gg, go) = (&mut gi[..h], &mut gf[..h], &mut gg[..h], &mut go[..h]);
        let (bi, bf, bg, bo) = if BIAS {
            (&b_hh[..h], &b_hh[h..2 * h], &b_hh[2 * h..3 * h], &b_hh[3 * h..4 * h])
        } else {
            (b_hh, b_hh, b_hh, b_hh)
        };
        let (c_prev, c, tanh_c, h_out) = (&c_prev[..h], &mut c[..h], &mut tanh_c[..h], &mut h_out[..h]);
        // One activation per loop: each iteration is then short and independent of the others,
        // so the out-of-order core overlaps more of them than in one loop doing all five
        // activations per element (measured on Zen 3: this pass 13.6 → 11.2 ms of a 1-thread M
        // inference); the values computed are the same either way.
        activate::<T, BIAS>(gi, bi, T::sigmoid);
        activate::<T, BIAS>(gf, bf, T::sigmoid);
        activate::<T, BIAS>(gg, bg, T::tanh);
        activate::<T, BIAS>(go, bo, T::sigmoid);
        for j in 0..h {
            let c_new = gf[j] * c_prev[j] + gi[j] * gg[j];
            let tanh_c_new = c_new.tanh();
            c[j] = c_new;
            tanh_c[j] = tanh_c_new;
            h_out[j] = go[j] * tanh_c_new;
        }
    }
}

/// `gate[j] = f(gate[j] + bias[j])` (the bias added only when `BIAS`), inlined into the
/// vectorized pointwise passes.
#[inline(always)]
fn activate<T: Float, const BIAS: bool>(gate: &mut [T], bias: &[T], f: impl Fn(T) -> T) {
    if BIAS {
        let bias = &bias[..gate.len()];
        for (g, &b) in gate.iter_mut().zip(bias) {
            *g = f(*g + b);
        }
    } else {
        for g in gate.iter_mut() {
            *g = f(*g);
        }
    }
}

/// One step's pointwise backward over `B` rows. Reads the activated `gates (B, 4H)`, `c_prev`,
/// `tanh_c` and the gradient `dh (B, H)` w.r.t. `o⊙tanh(c)` (plus `dy` when given); `dc (B, H)`
/// comes in as the gradient w.r.t. this step's `c` from later steps and leaves as the one w.r.t.
/// `c_prev`; writes the pre-activation gate gradients `dgates (B, 4H)`.
#[allow(clippy::too_many_arguments)]
fn backward_step<T: Float>(
    h: usize,
    gates: &[T],
    c_prev: &[T],
    tanh_c: &[T],
    dh: &[T],
    dy: Option<&[T]>,
    dc: &mut [T],
    dgates: &mut [T],
) {
    for row in 0..dc.len() / h {
        let gates = block(gates, GATES * h, row);
        let (c_prev, tanh_c, dh) = (block(c_prev, h, row), block(tanh_c, h, row), block(dh, h, row));
        let (dc, dgates) = (block_mut(dc, h, row), block_mut(dgates, GATES * h, row));
        match dy {
            Some(dy) => {
                let dy = block(dy, h, row);
                backward_row::<T, true>(h, gates, c_prev, tanh_c, dh, dy, dc, dgates);
            }
            None => backward_row::<T, false>(h, gates, c_prev, tanh_c, dh, &[], dc, dgates),
        }
    }
}

pointwise! {
    /// One batch row of [`backward_step`]; `dy (H)` is added to `dh` only when `ADD_DY`.
    fn backward_row<T: Float, const ADD_DY: bool>(
        h: usize,
        gates: &[T],
        c_prev: &[T],
        tanh_c: &[T],
        dh: &[T],
        dy: &[T],
        dc: &mut [T],
        dgates: &mut [T],
    ) {
        let (gi, rest) = gates.split_at(h);
        let (gf, rest) = rest.split_at(h);
        let (gg, go) = rest.split_at(h);
        let (gi, gf, gg, go) = (&gi[..h], &gf[..h], &gg[..h], &go[..h]);
        let (dgi, rest) = dgates.split_at_mut(h);
        let (dgf, rest) = rest.split_at_mut(h);
        let (dgg, dgo) = rest.split_at_mut(h);
        let (dgi, dgf, dgg, dgo) = (&mut dgi[..h], &mut dgf[..h], &mut dgg[..h], &mut dgo[..h]);
        let dy = &dy[..if ADD_DY { h } else { 0 }];
        let (c_prev, tanh_c, dh, dc) = (&c_prev[..h], &tanh_c[..h], &dh[..h], &mut dc[..h]);
        let one = T::ONE;
        for j in 0..h {
            let dh_j = if ADD_DY { dh[j] + dy[j] } else { dh[j] };
            let (i, f, g, o) = (gi[j], gf[j], gg[j], go[j]);
            let tc = tanh_c[j];
            let dc_j = dc[j] + dh_j * o * (one - tc * tc);
            dgi[j] = dc_j * g * (i * (one - i));
            dgf[j] = dc_j * c_prev[j] * (f * (one - f));
            dgg[j] = dc_j * i * (one - g * g);
            dgo[j] = dh_j * tc * (o * (one - o));
            dc[j] = dc_j * f;
        }
    }
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
        c0: Vec<f64>,
        w_ih: Vec<f64>,
        w_hh: Vec<f64>,
        b_ih: Option<Vec<f64>>,
        b_hh: Option<Vec<f64>>,
        w_hr: Option<Vec<f64>>,
        dy: Vec<f64>,
        dh_n: Vec<f64>,
        dc_n: Vec<f64>,
    }

    fn dims(seq_len: usize, batch: usize, input_size: usize, hidden_size: usize, proj_size: usize) -> Dims<'static> {
        Dims { seq_len, batch, input_size, hidden_size, proj_size, batch_sizes: None }
    }

    impl<'a> Setup<'a> {
        fn new(d: Dims<'a>, reverse: bool, bias: bool, seed: u64) -> Self {
            let mut rng = Rng::new(seed);
            let (n, b, i, h, p) = (d.rows(), d.batch, d.input_size, d.hidden_size, d.proj_size);
            let scale = 1.0 / (h as f64).sqrt();
            let mut opt = |on: bool, n: usize, scale: f64| if on { Some(rng.vec(n, scale)) } else { None };
            let b_ih = opt(bias, GATES * h, scale);
            let b_hh = opt(bias, GATES * h, scale);
            let w_hr = opt(p != h, p * h, scale);
            Self {
                d,
                reverse,
                x: rng.vec(n * i, 1.0),
                h0: rng.vec(b * p, 0.5),
                c0: rng.vec(b * h, 0.5),
                w_ih: rng.vec(GATES * h * i, scale),
                w_hh: rng.vec(GATES * h * p, scale),
                b_ih,
                b_hh,
                w_hr,
                dy: rng.vec(n * p, 1.0),
                dh_n: rng.vec(b * p, 1.0),
                dc_n: rng.vec(b * h, 1.0),
            }
        }

        /// The differentiable inputs, in the order of [`Setup::with_params`].
        fn params(&self) -> Vec<Vec<f64>> {
            let mut out = vec![self.x.clone(), self.h0.clone(), self.c0.clone(), self.w_ih.clone(), self.w_hh.clone()];
            out.extend([&self.b_ih, &self.b_hh, &self.w_hr].into_iter().flatten().cloned());
            out
        }

        fn with_params(&self, params: &[Vec<f64>]) -> Self {
            let mut s = self.clone();
            let mut it = params.iter().cloned();
            s.x = it.next().unwrap();
            s.h0 = it.next().unwrap();
            s.c0 = it.next().unwrap();
            s.w_ih = it.next().unwrap();
            s.w_hh = it.next().unwrap();
            for slot in [&mut s.b_ih, &mut s.b_hh, &mut s.w_hr] {
                if slot.is_some() {
                    *slot = it.next();
                }
            }
            s
        }
    }

    /// Every output of one forward + backward, in `T`.
    #[derive(Debug)]
    struct Outputs<T> {
        y: Vec<T>,
        h_n: Vec<T>,
        c_n: Vec<T>,
        dx: Vec<T>,
        dh0: Vec<T>,
        dc0: Vec<T>,
        dw_ih: Vec<T>,
        dw_hh: Vec<T>,
        db_ih: Option<Vec<T>>,
        db_hh: Option<Vec<T>>,
        dw_hr: Option<Vec<T>>,
        /// The gradients after each backward pass.
        per_pass: Vec<Vec<Vec<f64>>>,
    }

    impl<T: Float> Outputs<T> {
        /// Sets every accumulated gradient to `v` and the overwritten ones to garbage.
        fn fill_grads(&mut self, v: T) {
            for buf in [&mut self.dx, &mut self.dw_ih, &mut self.dw_hh] {
                buf.fill(v);
            }
            for buf in [&mut self.db_ih, &mut self.db_hh, &mut self.dw_hr].into_iter().flatten() {
                buf.fill(v);
            }
            for buf in [&mut self.dh0, &mut self.dc0] {
                buf.fill(T::from_f64(1e3));
            }
        }

        /// The gradients, in the order of [`Setup::params`].
        fn grads(&self) -> Vec<Vec<f64>> {
            let f = |v: &Vec<T>| v.iter().map(|x| x.to_f64()).collect::<Vec<f64>>();
            let mut out = vec![f(&self.dx), f(&self.dh0), f(&self.dc0), f(&self.dw_ih), f(&self.dw_hh)];
            out.extend([&self.db_ih, &self.db_hh, &self.dw_hr].into_iter().flatten().map(f));
            out
        }

        fn assert_close(&self, other: &Self, tol: f64, what: &str) {
            let pairs = [
                ("y", &self.y, &other.y),
                ("h_n", &self.h_n, &other.h_n),
                ("c_n", &self.c_n, &other.c_n),
                ("dx", &self.dx, &other.dx),
                ("dh0", &self.dh0, &other.dh0),
                ("dc0", &self.dc0, &other.dc0),
                ("dw_ih", &self.dw_ih, &other.dw_ih),
                ("dw_hh", &self.dw_hh, &other.dw_hh),
            ];
            for (name, a, b) in pairs {
                assert_close(&format!("{what} {name}"), a, b, tol);
            }
            let optional = [
                ("db_ih", &self.db_ih, &other.db_ih),
                ("db_hh", &self.db_hh, &other.db_hh),
                ("dw_hr", &self.dw_hr, &other.dw_hr),
            ];
            for (name, a, b) in optional {
                assert_eq!(a.is_some(), b.is_some(), "{what} {name}");
                if let (Some(a), Some(b)) = (a, b) {
                    assert_close(&format!("{what} {name}"), a, b, tol);
                }
            }
        }
    }

    /// Forward, then `passes` backwards over its workspace into gradient buffers that start at
    /// `grad_init` and, with `reset`, are set back to it before every pass; `per_pass` keeps the
    /// gradients after each pass
    /// (`dh0`, `dc0` start at garbage, since the backward overwrites them).
    fn run<T: Float>(s: &Setup, fused: bool, grad_init: f64, passes: usize, reset: bool) -> Outputs<T> {
        let d = s.d;
        let (x, h0, c0) = (cast::<T>(&s.x), cast::<T>(&s.h0), cast::<T>(&s.c0));
        let (w_ih, w_hh) = (cast::<T>(&s.w_ih), cast::<T>(&s.w_hh));
        let b_ih = s.b_ih.as_deref().map(cast::<T>);
        let b_hh = s.b_hh.as_deref().map(cast::<T>);
        let w_hr = s.w_hr.as_deref().map(cast::<T>);
        let w =
            Weights { w_ih: &w_ih, w_hh: &w_hh, b_ih: b_ih.as_deref(), b_hh: b_hh.as_deref(), w_hr: w_hr.as_deref() };
        let (dy, dh_n, dc_n) = (cast::<T>(&s.dy), cast::<T>(&s.dh_n), cast::<T>(&s.dc_n));
        let zeros = |n: usize| vec![T::from_f64(grad_init); n];
        let mut out = Outputs {
            y: zeros(d.rows() * d.proj_size),
            h_n: zeros(h0.len()),
            c_n: zeros(c0.len()),
            dx: zeros(x.len()),
            dh0: vec![T::from_f64(1e3); h0.len()],
            dc0: vec![T::from_f64(1e3); c0.len()],
            dw_ih: zeros(w_ih.len()),
            dw_hh: zeros(w_hh.len()),
            db_ih: b_ih.as_ref().map(|v| zeros(v.len())),
            db_hh: b_hh.as_ref().map(|v| zeros(v.len())),
            dw_hr: w_hr.as_ref().map(|v| zeros(v.len())),
            per_pass: Vec::new(),
        };
        let mut ws = vec![T::from_f64(f64::NAN); lstm_workspace_len(d)];
        let mut scratch = vec![T::from_f64(f64::NAN); lstm_scratch_len(d)];
        if fused {
            lstm_forward(d, s.reverse, Input::Rows(&x), &h0, &c0, w, &mut out.y, &mut out.h_n, &mut out.c_n, &mut ws);
        } else {
            lstm_forward_naive(d, s.reverse, &x, &h0, &c0, w, &mut out.y, &mut out.h_n, &mut out.c_n, &mut ws);
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
                dw_hr: out.dw_hr.as_deref_mut(),
            };
            if fused {
                #[rustfmt::skip]
                lstm_backward(d, s.reverse, Input::Rows(&x), &h0, &c0, w, &out.y, &ws, &dy, &dh_n, &dc_n,
                    &mut out.dx, &mut out.dh0, &mut out.dc0, g, &mut scratch);
            } else {
                #[rustfmt::skip]
                lstm_backward_naive(d, s.reverse, &x, &h0, &c0, w, &out.y, &ws, &dy, &dh_n, &dc_n,
                    &mut out.dx, &mut out.dh0, &mut out.dc0, g, &mut scratch);
            }
            out.per_pass.push(out.grads());
        }
        out
    }

    /// Every combination the fused kernels must match the naive ones on.
    fn cases() -> Vec<Setup<'static>> {
        let mut out = Vec::new();
        let mut seed = 0;
        for (i, h, p) in [(5, 7, 7), (5, 7, 3), (20, 19, 19), (20, 19, 11)] {
            for t in [0, 1, 5] {
                for b in [0, 1, 3] {
                    for reverse in [false, true] {
                        for bias in [false, true] {
                            seed += 1;
                            out.push(Setup::new(dims(t, b, i, h, p), reverse, bias, seed));
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
        for (p, reverse, bias) in
            [(4, false, true), (4, true, true), (2, false, true), (2, true, true), (4, false, false)]
        {
            let s = Setup::new(dims(3, 2, 3, 4, p), reverse, bias, 100 + p as u64);
            let loss = |params: &[Vec<f64>]| {
                let s = s.with_params(params);
                let out = run::<f64>(&s, true, 0.0, 0, false);
                dot(&s.dy, &out.y) + dot(&s.dh_n, &out.h_n) + dot(&s.dc_n, &out.c_n)
            };
            let analytic = run::<f64>(&s, true, 0.0, 1, false).grads();
            let mut names = vec!["x", "h0", "c0", "w_ih", "w_hh"];
            names.extend(bias.then_some(["b_ih", "b_hh"]).into_iter().flatten());
            names.extend((p != 4).then_some("w_hr"));
            let what = format!("lstm p={p} reverse={reverse} bias={bias}");
            check_gradients(&what, &names, &mut s.params(), &analytic, loss);
        }
    }

    #[test]
    fn backward_is_repeatable_and_accumulates() {
        for p in [6, 4] {
            let s = Setup::new(dims(5, 3, 4, 6, p), true, true, 7);
            let names = ["dx", "dh0", "dc0", "dw_ih", "dw_hh", "db_ih", "db_hh", "dw_hr"];
            let reset_passes = run::<f64>(&s, true, 0.0, 2, true).per_pass;
            let accumulated = run::<f64>(&s, true, 0.0, 2, false).grads();
            check_repeatable_and_accumulating(&names, &reset_passes, &accumulated, &["dh0", "dc0"]);
        }
    }

    #[test]
    fn long_sequence_stays_finite() {
        for p in [32, 16] {
            let s = Setup::new(dims(10_000, 2, 8, 32, p), false, true, 9);
            let out = run::<f32>(&s, true, 0.0, 1, false);
            for (k, g) in out.grads().iter().enumerate() {
                assert!(g.iter().all(|v| v.is_finite()), "gradient {k} not finite");
            }
            assert!(out.y.iter().chain(&out.h_n).chain(&out.c_n).all(|v| v.is_finite()));
        }
    }

    impl Outputs<f64> {
        fn flat(&self) -> Flat {
            Flat { y: self.y.clone(), finals: vec![self.h_n.clone(), self.c_n.clone()], grads: self.grads() }
        }
    }

    /// Packed sequences of different lengths give, per sequence, what running it alone gives, and
    /// the padding they leave out costs nothing (no row of it is in any buffer).
    #[test]
    fn packed_matches_each_sequence_alone() {
        let lengths = [9, 9, 6, 2, 2, 1, 1];
        let sizes = batch_sizes(&lengths);
        for_each_instruction_set(|isa| {
            for (p, reverse, bias) in
                [(6, false, true), (6, true, true), (4, false, true), (4, true, true), (6, true, false)]
            {
                let d = Dims { batch_sizes: Some(&sizes), ..dims(9, 7, 3, 6, p) };
                let s = Setup::new(d, reverse, bias, 21);
                let packed = run::<f64>(&s, true, 0.0, 1, false).flat();
                let alone = |b: usize| {
                    let rows = packed_rows(&lengths, b);
                    let one = Setup {
                        d: dims(lengths[b], 1, 3, 6, p),
                        x: gather_rows(&s.x, 3, &rows),
                        h0: s.h0[b * p..(b + 1) * p].to_vec(),
                        c0: s.c0[b * 6..(b + 1) * 6].to_vec(),
                        dy: gather_rows(&s.dy, p, &rows),
                        dh_n: s.dh_n[b * p..(b + 1) * p].to_vec(),
                        dc_n: s.dc_n[b * 6..(b + 1) * 6].to_vec(),
                        ..s.clone()
                    };
                    run::<f64>(&one, false, 0.0, 1, false).flat()
                };
                let what = format!("{isa}, P={p}, reverse={reverse}, bias={bias}");
                check_packed_against_alone(&what, &lengths, &packed, p, 3, &[p, 6], alone, 1e-12);
            }
        });
    }
}
