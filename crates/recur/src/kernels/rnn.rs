//! Elman RNN: one direction of one layer over a whole sequence, as a fused forward / backward pair
//! plus the naive reference they are tested against.
//!
//! Exactly ATen's cell: `h' = act(x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh)`, `act` = tanh or ReLU.
//!
//! Workspace: only `W_hhᵀ` packed for the forward's per-step products, over sequences long enough
//! for that to pay (else nothing); the backward reads none of it. The forward projects the inputs
//! straight into `y` and activates each step in place; the backward takes the activation's
//! derivative from the output itself (`1 − y²` for tanh, `y > 0` for ReLU), as PyTorch does.
//!
//! Scratch (backward only): `dgates (T, B, H)`, the pre-activation gradients, then, likewise,
//! `W_hh` packed for the per-step products.

use super::gemm::{matmul_naive, MatRef};
use super::packed::{step_rhs_len, StepRhs};
use super::shared::{
    add_column_sums, block, block_mut, check_layout, gather_len, hidden_weight_grad, input_grads, pointwise,
    prev_state, project_inputs, span_pair, stage_len, take_final,
};
use super::{time_index, Dims, Float, Grads, Input, Weights};

/// The nonlinearity of an [`rnn_forward`] cell (PyTorch's `nonlinearity`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `tanh`, PyTorch's default.
    Tanh,
    /// `max(x, 0)` (NaN stays NaN, as in PyTorch).
    Relu,
}

/// ReLU that lets NaN through, like PyTorch's `relu` (unlike [`Float::relu`]).
#[inline(always)]
fn relu<T: Float>(v: T) -> T {
    if v < T::ZERO {
        T::ZERO
    } else {
        v
    }
}

/// Length of the workspace [`rnn_forward`] uses: `B·H` of staging when packed sequences differ
/// in length, plus the packed `W_hhᵀ` when packing pays
/// ([`packing_pays`](super::packed::packing_pays)); [`rnn_backward`] reads none of it.
pub fn rnn_workspace_len(d: Dims) -> usize {
    stage_len(d, d.hidden_size) + step_rhs_len(d, d.hidden_size, d.hidden_size)
}

/// Length of the scratch memory [`rnn_backward`] needs: `N·H` (`N = T·B` rows, or fewer when
/// packed), plus `N·H` when packed sequences differ in length, plus the packed `W_hh` when
/// packing pays.
pub fn rnn_scratch_len(d: Dims) -> usize {
    d.rows() * d.hidden_size + gather_len(d) + step_rhs_len(d, d.hidden_size, d.hidden_size)
}

/// Panics (an internal invariant: the ops layer validates user input) unless every buffer has the
/// length its documented shape implies.
fn check_shapes<T>(d: Dims, h0: &[T], w: &Weights<'_, T>, y: usize, h_n: usize) {
    let (n, b, i, h) = (d.rows(), d.batch, d.input_size, d.hidden_size);
    check_layout(d);
    assert!(h > 0 && d.proj_size == h, "RNN needs proj_size == hidden_size > 0, got {d:?}");
    assert!(w.w_hr.is_none(), "an RNN has no projection");
    assert_eq!(w.b_ih.is_some(), w.b_hh.is_some(), "b_ih and b_hh come together");
    assert_eq!(h0.len(), b * h, "h0 must be (B, H)");
    assert_eq!(w.w_ih.len(), h * i, "w_ih must be (H, I)");
    assert_eq!(w.w_hh.len(), h * h, "w_hh must be (H, H)");
    for bias in [w.b_ih, w.b_hh].into_iter().flatten() {
        assert_eq!(bias.len(), h, "biases must be (H)");
    }
    assert_eq!(y, n * h, "y must be (T, B, H)");
    assert_eq!(h_n, b * h, "h_n must be (B, H)");
}

/// Panics unless the gradient buffers match the weights.
fn check_grads<T>(d: Dims, w: &Weights<'_, T>, g: &Grads<'_, T>) {
    let (i, h) = (d.input_size, d.hidden_size);
    assert_eq!(g.dw_ih.len(), h * i, "dw_ih must be (H, I)");
    assert_eq!(g.dw_hh.len(), h * h, "dw_hh must be (H, H)");
    assert_eq!(g.db_ih.is_some(), w.b_ih.is_some(), "db_ih must be given exactly when b_ih is");
    assert_eq!(g.db_hh.is_some(), w.b_hh.is_some(), "db_hh must be given exactly when b_hh is");
    assert!(g.dw_hr.is_none(), "an RNN has no projection");
    for db in [&g.db_ih, &g.db_hh].into_iter().flatten() {
        assert_eq!(db.len(), h, "bias gradients must be (H)");
    }
}

/// Runs the RNN over `x (T, B, I)` from `h0 (B, H)`, writing every step's output to `y (T, B, H)`
/// and the final state to `h_n (B, H)`. `ws` (length [`rnn_workspace_len`]) only holds the packed
/// `W_hhᵀ` of the per-step products, if any: the backward needs only `y`. With `reverse` the steps
/// run `t = T−1 … 0`, and `y[t]` is still the state after step `t`.
///
/// One product projects the inputs of all steps into `y`; each step then adds `h_prev·W_hhᵀ`
/// (one product, `W_hhᵀ` packed once into `ws` when that pays) and runs one fused pointwise pass
/// that adds `b_hh` and activates in place.
#[allow(clippy::too_many_arguments)]
pub fn rnn_forward<T: Float>(
    d: Dims,
    reverse: bool,
    act: Activation,
    x: Input<'_, T>,
    h0: &[T],
    w: Weights<'_, T>,
    y: &mut [T],
    h_n: &mut [T],
    ws: &mut [T],
) {
    x.check(d, d.hidden_size);
    check_shapes(d, h0, &w, y.len(), h_n.len());
    assert!(ws.len() >= rnn_workspace_len(d), "workspace shorter than rnn_workspace_len");
    let h = d.hidden_size;
    let (stage_h, w_hh_buf) = ws.split_at_mut(stage_len(d, h));

    project_inputs(d, h, x, w.w_ih, w.b_ih, y);
    let w_hh_t = StepRhs::new(d, MatRef::new(w.w_hh, h, h).t(), w_hh_buf);
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
        w_hh_t.matmul(y_t, h, true, MatRef::new(h_prev, n, h));
        for row in 0..n {
            let y_row = block_mut(y_t, h, row);
            match (act, w.b_hh) {
                (Activation::Tanh, Some(bias)) => forward_row::<T, true, false>(h, bias, y_row),
                (Activation::Tanh, None) => forward_row::<T, false, false>(h, &[], y_row),
                (Activation::Relu, Some(bias)) => forward_row::<T, true, true>(h, bias, y_row),
                (Activation::Relu, None) => forward_row::<T, false, true>(h, &[], y_row),
            }
        }
        take_final(d, reverse, cur, y_t, h, h_n);
    }
}

/// Backpropagates through [`rnn_forward`]: given the gradients `dy (T, B, H)` and `dh_n (B, H)`
/// of a loss w.r.t. its outputs, *adds* the gradients w.r.t. `x` into `dx (T, B, I)` and w.r.t.
/// the weights into `g`, and *writes* the one w.r.t. the initial state into `dh0 (B, H)`. `x`,
/// `h0`, `w`, `act` and `y` must be those of the forward; `ws` is unused. `scratch` has length
/// [`rnn_scratch_len`].
///
/// Per step one fused pointwise pass and one product with `W_hh` (packed once into `scratch` when
/// that pays);
/// `dx`, `dw_ih`, `dw_hh` and the biases are then one product (or column sum) over all steps.
#[allow(clippy::too_many_arguments)]
pub fn rnn_backward<T: Float>(
    d: Dims,
    reverse: bool,
    act: Activation,
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
    let dx_len = x.check(d, d.hidden_size);
    check_shapes(d, h0, &w, y.len(), dh_n.len());
    check_grads(d, &w, &g);
    assert_eq!(dy.len(), y.len(), "dy must be (T, B, H)");
    assert_eq!(dx.len(), dx_len, "dx must be (T, B, I), or (V, G·H) for a projected input");
    assert_eq!(dh0.len(), h0.len(), "dh0 must be (B, H)");
    assert!(ws.len() >= rnn_workspace_len(d), "workspace shorter than rnn_workspace_len");
    assert!(scratch.len() >= rnn_scratch_len(d), "scratch shorter than rnn_scratch_len");
    let h = d.hidden_size;
    let (dgates_all, rest) = scratch.split_at_mut(d.rows() * h);
    let (gather, w_hh_buf) = rest.split_at_mut(gather_len(d));
    let w_hh = StepRhs::new(d, MatRef::new(w.w_hh, h, h), w_hh_buf);

    // dh0 carries the gradient w.r.t. the state between steps: a sequence's rows start with dh_n
    // at its last step, and after its first step they are its own.
    dh0.copy_from_slice(dh_n);
    for cur in d.walk(reverse).rev() {
        let n = cur.rows;
        let (y_t, dy_t) = (&y[cur.range(h)], &dy[cur.range(h)]);
        let dgates = &mut dgates_all[cur.range(h)];
        let dh_carry = &mut dh0[..n * h];
        for row in 0..n {
            let (y_row, dy_row, dh_row) = (block(y_t, h, row), block(dy_t, h, row), block(dh_carry, h, row));
            let dgates_row = block_mut(dgates, h, row);
            match act {
                Activation::Tanh => backward_row::<T, false>(h, y_row, dy_row, dh_row, dgates_row),
                Activation::Relu => backward_row::<T, true>(h, y_row, dy_row, dh_row, dgates_row),
            }
        }
        w_hh.matmul(dh_carry, h, false, MatRef::new(dgates, n, h));
    }

    input_grads(d, h, dgates_all, x, w.w_ih, dx, g.dw_ih, g.db_ih);
    hidden_weight_grad(d, h, reverse, dgates_all, y, h0, g.dw_hh, gather);
    add_column_sums(dgates_all, h, g.db_hh);
}

pointwise! {
    /// One batch row of one forward step, in place: `y (H) = act(y + b_hh)`, `b_hh (H)` read only
    /// when `BIAS`, ReLU when `RELU`, else tanh.
    fn forward_row<T: Float, const BIAS: bool, const RELU: bool>(h: usize, b_hh: &[T], y: &mut [T]) {
        let y = &mut y[..h];
        let b_hh = &b_hh[..if BIAS { h } else { 0 }];
        for j in 0..h {
            let pre = if BIAS { y[j] + b_hh[j] } else { y[j] };
            y[j] = if RELU { relu(pre) } else { pre.tanh() };
        }
    }
}

pointwise! {
    /// One batch row of one backward step: `dgates (H) = (dy + dh) ⊙ act'`, with the derivative
    /// taken from the output `y (H)`: `y > 0` for ReLU (when `RELU`), `1 − y²` for tanh.
    fn backward_row<T: Float, const RELU: bool>(h: usize, y: &[T], dy: &[T], dh: &[T], dgates: &mut [T]) {
        let (y, dy, dh, dgates) = (&y[..h], &dy[..h], &dh[..h], &mut dgates[..h]);
        for j in 0..h {
            let dh_j = dy[j] + dh[j];
            dgates[j] = if RELU {
                if y[j] > T::ZERO {
                    dh_j
                } else {
                    T::ZERO
                }
            } else {
                dh_j * (T::ONE - y[j] * y[j])
            };
        }
    }
}

/// The naive forward over the whole sequence: per step `(t, h_prev, h)`, then `y` and `h_n`.
#[allow(clippy::type_complexity)]
fn naive_run<T: Float>(
    d: Dims,
    reverse: bool,
    act: Activation,
    x: &[T],
    h0: &[T],
    w: &Weights<'_, T>,
) -> (Vec<(usize, Vec<T>, Vec<T>)>, Vec<T>, Vec<T>) {
    let (seq_len, b, n_in, h) = (d.seq_len, d.batch, d.input_size, d.hidden_size);
    let mut y = vec![T::ZERO; seq_len * b * h];
    let mut h_state = h0.to_vec();
    let mut steps = Vec::new();
    for step in 0..seq_len {
        let t = time_index(step, seq_len, reverse);
        let x_t = &x[t * b * n_in..(t + 1) * b * n_in];
        let mut input = vec![T::ZERO; b * h];
        matmul_naive(&mut input, h, false, MatRef::new(x_t, b, n_in), MatRef::new(w.w_ih, h, n_in).t());
        let mut hidden = vec![T::ZERO; b * h];
        matmul_naive(&mut hidden, h, false, MatRef::new(&h_state, b, h), MatRef::new(w.w_hh, h, h).t());
        let h_new: Vec<T> = (0..b * h)
            .map(|e| {
                let bias = match (w.b_ih, w.b_hh) {
                    (Some(bi), Some(bh)) => bi[e % h] + bh[e % h],
                    _ => T::ZERO,
                };
                let pre = input[e] + hidden[e] + bias;
                match act {
                    Activation::Tanh => pre.tanh(),
                    Activation::Relu => relu(pre),
                }
            })
            .collect();
        y[t * b * h..(t + 1) * b * h].copy_from_slice(&h_new);
        let h_prev = std::mem::replace(&mut h_state, h_new.clone());
        steps.push((t, h_prev, h_new));
    }
    (steps, y, h_state)
}

/// Naive reference for [`rnn_forward`]: per step, plain loops and [`matmul_naive`]; allocates;
/// ignores `ws`.
#[allow(clippy::too_many_arguments)]
pub fn rnn_forward_naive<T: Float>(
    d: Dims,
    reverse: bool,
    act: Activation,
    x: &[T],
    h0: &[T],
    w: Weights<'_, T>,
    y: &mut [T],
    h_n: &mut [T],
    _ws: &mut [T],
) {
    Input::Rows(x).check(d, d.hidden_size);
    check_shapes(d, h0, &w, y.len(), h_n.len());
    let (_, y_run, h_last) = naive_run(d, reverse, act, x, h0, &w);
    y.copy_from_slice(&y_run);
    h_n.copy_from_slice(&h_last);
}

/// Naive reference for [`rnn_backward`]: reruns [`rnn_forward_naive`]'s steps, then
/// backpropagates per step with plain loops and [`matmul_naive`]; allocates; ignores `y`, `ws`
/// and `scratch`. Same accumulate / overwrite contract.
#[allow(clippy::too_many_arguments)]
pub fn rnn_backward_naive<T: Float>(
    d: Dims,
    reverse: bool,
    act: Activation,
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
    Input::Rows(x).check(d, d.hidden_size);
    check_shapes(d, h0, &w, y.len(), dh_n.len());
    check_grads(d, &w, &g);
    let (b, n_in, h) = (d.batch, d.input_size, d.hidden_size);
    let (steps, ..) = naive_run(d, reverse, act, x, h0, &w);
    let Grads { dw_ih, dw_hh, mut db_ih, mut db_hh, .. } = g;
    let mut dh = dh_n.to_vec();
    for (t, h_prev, h_new) in steps.iter().rev() {
        let t = *t;
        let dpre: Vec<T> = (0..b * h)
            .map(|e| {
                let dh_t = dy[t * b * h + e] + dh[e];
                match act {
                    Activation::Tanh => dh_t * (T::ONE - h_new[e] * h_new[e]),
                    Activation::Relu if h_new[e] > T::ZERO => dh_t,
                    Activation::Relu => T::ZERO,
                }
            })
            .collect();
        let dpre_mat = MatRef::new(&dpre, b, h);
        let x_t = &x[t * b * n_in..(t + 1) * b * n_in];
        matmul_naive(&mut dx[t * b * n_in..(t + 1) * b * n_in], n_in, true, dpre_mat, MatRef::new(w.w_ih, h, n_in));
        matmul_naive(dw_ih, n_in, true, dpre_mat.t(), MatRef::new(x_t, b, n_in));
        matmul_naive(dw_hh, h, true, dpre_mat.t(), MatRef::new(h_prev, b, h));
        for db in [db_ih.as_deref_mut(), db_hh.as_deref_mut()].into_iter().flatten() {
            for (e, v) in dpre.iter().enumerate() {
                db[e % h] += *v;
            }
        }
        let mut dh_prev = vec![T::ZERO; b * h];
        matmul_naive(&mut dh_prev, h, false, dpre_mat, MatRef::new(w.w_hh, h, h));
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
        act: Activation,
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
        fn new(d: Dims<'a>, reverse: bool, act: Activation, bias: bool, seed: u64) -> Self {
            let mut rng = Rng::new(seed);
            let (n, b, i, h) = (d.rows(), d.batch, d.input_size, d.hidden_size);
            let scale = 1.0 / (h as f64).sqrt();
            let b_ih = bias.then(|| rng.vec(h, scale));
            let b_hh = bias.then(|| rng.vec(h, scale));
            Self {
                d,
                reverse,
                act,
                x: rng.vec(n * i, 1.0),
                h0: rng.vec(b * h, 0.5),
                w_ih: rng.vec(h * i, scale),
                w_hh: rng.vec(h * h, scale),
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

        /// The smallest |pre-activation| over all steps, recomputed from the forward's `y`.
        fn min_abs_pre_activation(&self, y: &[f64]) -> f64 {
            let (seq_len, b, n_in, h) = (self.d.seq_len, self.d.batch, self.d.input_size, self.d.hidden_size);
            let mut min = f64::INFINITY;
            for step in 0..seq_len {
                let t = time_index(step, seq_len, self.reverse);
                let h_prev = if step == 0 {
                    &self.h0[..]
                } else {
                    let p = time_index(step - 1, seq_len, self.reverse);
                    &y[p * b * h..(p + 1) * b * h]
                };
                for row in 0..b {
                    for j in 0..h {
                        let mut pre =
                            self.b_ih.as_ref().map_or(0.0, |v| v[j]) + self.b_hh.as_ref().map_or(0.0, |v| v[j]);
                        pre +=
                            (0..n_in).map(|k| self.x[(t * b + row) * n_in + k] * self.w_ih[j * n_in + k]).sum::<f64>();
                        pre += (0..h).map(|k| h_prev[row * h + k] * self.w_hh[j * h + k]).sum::<f64>();
                        min = min.min(pre.abs());
                    }
                }
            }
            min
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
        let mut ws = vec![T::from_f64(f64::NAN); rnn_workspace_len(d)];
        let mut scratch = vec![T::from_f64(f64::NAN); rnn_scratch_len(d)];
        if fused {
            rnn_forward(d, s.reverse, s.act, Input::Rows(&x), &h0, w, &mut out.y, &mut out.h_n, &mut ws);
        } else {
            rnn_forward_naive(d, s.reverse, s.act, &x, &h0, w, &mut out.y, &mut out.h_n, &mut ws);
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
                rnn_backward(d, s.reverse, s.act, Input::Rows(&x), &h0, w, &out.y, &ws, &dy, &dh_n,
                    &mut out.dx, &mut out.dh0, g, &mut scratch);
            } else {
                #[rustfmt::skip]
                rnn_backward_naive(d, s.reverse, s.act, &x, &h0, w, &out.y, &ws, &dy, &dh_n,
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
                            for act in [Activation::Tanh, Activation::Relu] {
                                seed += 1;
                                out.push(Setup::new(dims(t, b, i, h), reverse, act, bias, seed));
                            }
                        }
                    }
                }
            }
        }
        out
    }

    fn describe(s: &Setup) -> String {
        format!("{:?} {:?} reverse={} bias={}", s.d, s.act, s.reverse, s.b_ih.is_some())
    }

    #[test]
    fn fused_matches_naive_f64() {
        for_each_instruction_set(|isa| {
            for s in cases() {
                let what = format!("{isa} {}", describe(&s));
                run::<f64>(&s, true, 0.25, 1, false).assert_close(&run::<f64>(&s, false, 0.25, 1, false), 1e-12, &what);
            }
        });
    }

    #[test]
    fn fused_matches_naive_f32() {
        for_each_instruction_set(|isa| {
            for s in cases() {
                let what = format!("{isa} {}", describe(&s));
                run::<f32>(&s, true, 0.25, 1, false).assert_close(&run::<f32>(&s, false, 0.25, 1, false), 1e-5, &what);
            }
        });
    }

    #[test]
    fn gradients_match_finite_differences() {
        let mut seed = 300;
        for act in [Activation::Tanh, Activation::Relu] {
            for (reverse, bias) in [(false, true), (true, true), (false, false)] {
                // Keep every ReLU input away from its kink, where the derivative jumps.
                let s = loop {
                    seed += 1;
                    let s = Setup::new(dims(3, 2, 3, 4), reverse, act, bias, seed);
                    let y = run::<f64>(&s, true, 0.0, 0, false).y;
                    if act == Activation::Tanh || s.min_abs_pre_activation(&y) > 1e-3 {
                        break s;
                    }
                };
                let loss = |params: &[Vec<f64>]| {
                    let s = s.with_params(params);
                    let out = run::<f64>(&s, true, 0.0, 0, false);
                    dot(&s.dy, &out.y) + dot(&s.dh_n, &out.h_n)
                };
                let analytic = run::<f64>(&s, true, 0.0, 1, false).grads();
                let mut names = vec!["x", "h0", "w_ih", "w_hh"];
                names.extend(bias.then_some(["b_ih", "b_hh"]).into_iter().flatten());
                let what = describe(&s);
                check_gradients(&what, &names, &mut s.params(), &analytic, loss);
            }
        }
    }

    #[test]
    fn backward_is_repeatable_and_accumulates() {
        for act in [Activation::Tanh, Activation::Relu] {
            let s = Setup::new(dims(5, 3, 4, 6), true, act, true, 7);
            let names = ["dx", "dh0", "dw_ih", "dw_hh", "db_ih", "db_hh"];
            let reset_passes = run::<f64>(&s, true, 0.0, 2, true).per_pass;
            let accumulated = run::<f64>(&s, true, 0.0, 2, false).grads();
            check_repeatable_and_accumulating(&names, &reset_passes, &accumulated, &["dh0"]);
        }
    }

    #[test]
    fn long_sequence_stays_finite() {
        for act in [Activation::Tanh, Activation::Relu] {
            let s = Setup::new(dims(10_000, 2, 8, 32), false, act, true, 9);
            let out = run::<f32>(&s, true, 0.0, 1, false);
            for (k, g) in out.grads().iter().enumerate() {
                assert!(g.iter().all(|v| v.is_finite()), "{act:?}: gradient {k} not finite");
            }
            assert!(out.y.iter().chain(&out.h_n).all(|v| v.is_finite()));
        }
    }

    #[test]
    fn relu_keeps_nan() {
        assert!(relu(f64::NAN).is_nan());
        assert_eq!(relu(-1.0f32), 0.0);
        assert_eq!(relu(2.0f32), 2.0);
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
            for (reverse, bias, act) in [
                (false, true, Activation::Tanh),
                (true, true, Activation::Tanh),
                (true, false, Activation::Relu),
                (false, true, Activation::Relu),
            ] {
                let d = Dims { batch_sizes: Some(&sizes), ..dims(9, 7, 3, 5) };
                let s = Setup::new(d, reverse, act, bias, 23);
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
                    &format!("{isa}, reverse={reverse}, bias={bias}, {act:?}"),
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
