//! Matrix products against a right-hand matrix packed once and reused: the per-step recurrent
//! products (`h_prev · W_hhᵀ` forward, `dgates · W_hh` backward), whose weight is the same at every
//! step while the `gemm` crate would repack it on every call.
//!
//! [`pack_rhs`] lays a `(k × n)` matrix out as column panels of [`NR`] columns (the last one
//! zero-padded), panel after panel, each panel `k` rows of `NR` contiguous values.
//! [`matmul_packed`] then multiplies any strided left-hand matrix with it. For `f32` a
//! register-blocked microkernel runs on the CPU path [`super::cpu::path`] chose: with AVX-512
//! (`blocked/avx512.rs`) up to 12 rows × 2 panels (32 columns) at a time in 24 of the 32 zmm registers,
//! with AVX2 and FMA (`blocked/avx2.rs`) up to 6 rows × 1 panel in 12 of the 16 ymm registers, each
//! broadcasting one left-hand element per row and FMA-ing it with the panel rows; everything else
//! (`f64`, the portable path) runs a portable blocked loop over the same panels. The packed layout
//! is the same on every path, so a weight packed once serves any of them. Big products split their
//! panels between threads; `matmul_packed` never allocates.
//!
//! [`matmul_blocked`] reuses the path's microkernel for a general product (both operands packed
//! block by block, BLIS-style, into per-thread buffers that grow to the largest product a thread
//! has run); [`super::gemm::matmul`] sends it the weight-gradient products.
//!
//! Packing costs about one pass over the weight, so it only pays over enough steps: the kernels
//! hold their per-step weights as a [`StepRhs`], packed when [`packing_pays`] for the layer's
//! sizes and read in place by the `gemm` crate otherwise. That policy is this module's own; the
//! products are the private `blocked` module's, re-exported here, which sits below both this
//! module and [`super::gemm`] so that neither imports the other in a circle.

pub use super::blocked::{matmul_blocked, matmul_packed, pack_rhs, packed_len, KC, MC, NR};
use super::gemm::{matmul, MatRef};
use super::Dims;
use super::Float;

/// Whether the per-step products of a layer of sizes `d` read their weight packed.
///
/// Measured on an AMD EPYC (Zen 3, 1 thread, `H = 256`, the per-step products alone, packing
/// included): from 8 steps on, packing won at every batch of 2 or more (1.03–3.4×, typically
/// 1.2–1.6×); over fewer steps packing the weight can cost more than it saves, and with a batch of
/// 1 (matrix-vector products) the `gemm` crate is as fast.
pub fn packing_pays(d: Dims) -> bool {
    #[cfg(test)]
    if let Some(forced) = FORCE_PACKING.with(|f| f.get()) {
        return forced;
    }
    d.batch >= 2 && d.seq_len >= 8
}

#[cfg(test)]
thread_local! {
    /// Set by tests (on their own thread) to make [`packing_pays`] answer this, whatever the sizes.
    pub(super) static FORCE_PACKING: std::cell::Cell<Option<bool>> = const { std::cell::Cell::new(None) };
}

/// Length of the buffer [`StepRhs::new`] needs for a `(k × n)` weight in a layer of sizes `d`:
/// [`packed_len`]`(k, n)` when [`packing_pays`], else 0.
pub fn step_rhs_len(d: Dims, k: usize, n: usize) -> usize {
    if packing_pays(d) {
        packed_len(k, n)
    } else {
        0
    }
}

/// The right-hand side of a layer's per-step products: packed once, or read in place.
#[derive(Clone, Copy, Debug)]
pub enum StepRhs<'a, T> {
    /// Packed by [`pack_rhs`]; `n` columns.
    Packed {
        /// The packed panels.
        data: &'a [T],
        /// Columns of the matrix.
        n: usize,
    },
    /// The matrix itself, for [`matmul`].
    Plain(MatRef<'a, T>),
}

impl<'a, T: Float> StepRhs<'a, T> {
    /// `rhs (k × n)` for the per-step products of a layer of sizes `d`: packed into `buf`
    /// (at least [`step_rhs_len`]`(d, k, n)` long) when [`packing_pays`], else kept as a view.
    pub fn new(d: Dims, rhs: MatRef<'a, T>, buf: &'a mut [T]) -> Self {
        if packing_pays(d) {
            pack_rhs(rhs, buf);
            Self::Packed { data: buf, n: rhs.cols }
        } else {
            Self::Plain(rhs)
        }
    }

    /// `dst (m×n) = [dst +] lhs (m×k) · rhs`, as [`matmul`] / [`matmul_packed`].
    pub fn matmul(&self, dst: &mut [T], dst_rs: usize, accumulate: bool, lhs: MatRef<'_, T>) {
        match *self {
            Self::Packed { data, n } => matmul_packed(dst, dst_rs, accumulate, lhs, data, n),
            Self::Plain(rhs) => matmul(dst, dst_rs, accumulate, lhs, rhs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_only_pays_over_enough_steps_and_rows() {
        let d =
            |seq_len, batch| Dims { seq_len, batch, input_size: 3, hidden_size: 64, proj_size: 64, batch_sizes: None };
        for (seq_len, batch, pays) in [(100, 32, true), (8, 2, true), (7, 32, false), (1000, 1, false), (0, 0, false)] {
            assert_eq!(packing_pays(d(seq_len, batch)), pays, "T={seq_len} B={batch}");
            let want = if pays { packed_len(64, 256) } else { 0 };
            assert_eq!(step_rhs_len(d(seq_len, batch), 64, 256), want, "T={seq_len} B={batch}");
        }
        let w = [1.0f64; 6];
        let mut buf = [0.0; 0];
        let rhs = MatRef::new(&w, 2, 3);
        assert!(matches!(StepRhs::new(d(7, 32), rhs, &mut buf), StepRhs::Plain(_)));
    }
}
