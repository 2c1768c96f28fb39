//! Pieces the LSTM, GRU and RNN kernels share: step-block views, the input projection, the
//! weight gradients taken as one product over all steps, and the AVX2 dispatch of the pointwise
//! passes.

use super::gemm::{matmul, MatRef};
use super::{time_index, Dims, Float};

/// Block `read` (shared) and block `write` (mutable) of `buf`, cut into blocks of `len`.
///
/// Used to read the previous step's state while writing this step's, from one buffer.
#[inline]
pub(super) fn block_pair<T>(buf: &mut [T], len: usize, read: usize, write: usize) -> (&[T], &mut [T]) {
    assert_ne!(read, write, "a step cannot read the block it writes");
    if read < write {
        let (before, from_write) = buf.split_at_mut(write * len);
        (&before[read * len..(read + 1) * len], &mut from_write[..len])
    } else {
        let (before, from_read) = buf.split_at_mut(read * len);
        (&from_read[..len], &mut before[write * len..(write + 1) * len])
    }
}

/// Block `index` of `buf` cut into blocks of `len`.
#[inline(always)]
pub(super) fn block<T>(buf: &[T], len: usize, index: usize) -> &[T] {
    &buf[index * len..(index + 1) * len]
}

/// Mutable block `index` of `buf` cut into blocks of `len`.
#[inline(always)]
pub(super) fn block_mut<T>(buf: &mut [T], len: usize, index: usize) -> &mut [T] {
    &mut buf[index * len..(index + 1) * len]
}

/// The time index of the step processed before the one at loop position `step > 0`.
#[inline(always)]
pub(super) fn prev_time_index(step: usize, seq_len: usize, reverse: bool) -> usize {
    time_index(step - 1, seq_len, reverse)
}

/// `gates (T·B, G·H) = x (T·B, I) · w_ihᵀ + b_ih`: the input projection of every step at once.
pub(super) fn project_inputs<T: Float>(
    d: Dims,
    gate_width: usize,
    x: &[T],
    w_ih: &[T],
    b_ih: Option<&[T]>,
    gates: &mut [T],
) {
    let rows = d.seq_len * d.batch;
    let gates = &mut gates[..rows * gate_width];
    if let Some(bias) = b_ih {
        for row in gates.chunks_exact_mut(gate_width) {
            row.copy_from_slice(bias);
        }
    }
    matmul(
        gates,
        gate_width,
        b_ih.is_some(),
        MatRef::new(x, rows, d.input_size),
        MatRef::new(w_ih, gate_width, d.input_size).t(),
    );
}

/// After the time loop, the input side of the backward over all `T·B` rows at once:
/// `dx (T·B, I) += dgates · w_ih` and `dw_ih (G·H, I) += dgatesᵀ · x`.
pub(super) fn input_grads<T: Float>(
    d: Dims,
    gate_width: usize,
    dgates: &[T],
    x: &[T],
    w_ih: &[T],
    dx: &mut [T],
    dw_ih: &mut [T],
) {
    let rows = d.seq_len * d.batch;
    let dgates = MatRef::new(&dgates[..rows * gate_width], rows, gate_width);
    matmul(dx, d.input_size, true, dgates, MatRef::new(w_ih, gate_width, d.input_size));
    matmul(dw_ih, d.input_size, true, dgates.t(), MatRef::new(x, rows, d.input_size));
}

/// `dw_hh (G·H, P) += Σ_t dgates[t]ᵀ · h_prev(t)`, where `h_prev(t)` is `y` of the step processed
/// before `t`, or `h0` for the first. The `T − 1` steps that read `y` are contiguous in `y` (shifted
/// by one block), so they take one product, and the step that read `h0` a second, small one.
pub(super) fn hidden_weight_grad<T: Float>(
    d: Dims,
    gate_width: usize,
    reverse: bool,
    dgates: &[T],
    y: &[T],
    h0: &[T],
    dw_hh: &mut [T],
) {
    if d.seq_len == 0 {
        return;
    }
    let (b, p) = (d.batch, d.proj_size);
    let step_gates = b * gate_width;
    let shifted_rows = (d.seq_len - 1) * b;
    // Forward: step t ≥ 1 read y[t − 1]. Reverse: step t ≤ T − 2 read y[t + 1].
    let (dgates_from_y, y_read, dgates_from_h0) = if reverse {
        (&dgates[..shifted_rows * gate_width], &y[b * p..d.seq_len * b * p], block(dgates, step_gates, d.seq_len - 1))
    } else {
        (&dgates[step_gates..d.seq_len * step_gates], &y[..shifted_rows * p], &dgates[..step_gates])
    };
    let dw_hh = &mut dw_hh[..gate_width * p];
    matmul(
        dw_hh,
        p,
        true,
        MatRef::new(dgates_from_y, shifted_rows, gate_width).t(),
        MatRef::new(y_read, shifted_rows, p),
    );
    matmul(dw_hh, p, true, MatRef::new(dgates_from_h0, b, gate_width).t(), MatRef::new(h0, b, p));
}

/// `bias (cols) += Σ_rows values (rows, cols)`, when the bias gradient exists.
pub(super) fn add_column_sums<T: Float>(values: &[T], cols: usize, bias: Option<&mut [T]>) {
    let Some(bias) = bias else { return };
    let bias = &mut bias[..cols];
    for row in values.chunks_exact(cols) {
        for (db, &v) in bias.iter_mut().zip(row) {
            *db += v;
        }
    }
}

#[cfg(test)]
thread_local! {
    /// Set by tests (on their own thread) to run the portable pointwise copies on any CPU.
    pub(super) static PORTABLE_ONLY: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the running CPU has AVX2, so the AVX2 copies of the pointwise passes may run.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn has_avx2() -> bool {
    #[cfg(test)]
    if PORTABLE_ONLY.with(|p| p.get()) {
        return false;
    }
    std::is_x86_feature_detected!("avx2")
}

/// Defines a pointwise function (one batch row of a cell's pass) twice, portable and compiled
/// for AVX2, and picks the AVX2 copy at run time when the CPU has it (8 lanes instead of SSE2's 4).
///
/// Each copy is a separate, never-inlined function: its slice arguments are then known not to
/// alias, which LLVM needs to vectorize a loop over a dozen slices (inlined into a loop over the
/// rows, it gives up and leaves the loop scalar, ~4× slower).
macro_rules! pointwise {
    (
        $(#[$attr:meta])*
        fn $name:ident<$t:ident: $bound:path $(, const $c:ident: bool)*>($($arg:ident: $ty:ty),* $(,)?)
        $body:block
    ) => {
        $(#[$attr])*
        #[allow(clippy::too_many_arguments)]
        fn $name<$t: $bound $(, const $c: bool)*>($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body<$t: $bound $(, const $c: bool)*>($($arg: $ty),*) $body

            #[inline(never)]
            #[allow(clippy::too_many_arguments)]
            fn portable<$t: $bound $(, const $c: bool)*>($($arg: $ty),*) {
                body::<$t $(, $c)*>($($arg),*)
            }

            /// Safety: the CPU must support AVX2.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2<$t: $bound $(, const $c: bool)*>($($arg: $ty),*) {
                body::<$t $(, $c)*>($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            if super::shared::has_avx2() {
                // SAFETY: the CPU supports AVX2 (checked just above), the only requirement of
                // `avx2` beyond those of its safe body.
                return unsafe { avx2::<$t $(, $c)*>($($arg),*) };
            }
            portable::<$t $(, $c)*>($($arg),*)
        }
    };
}
pub(super) use pointwise;
