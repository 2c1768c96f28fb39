//! The one matrix product every kernel uses: a bounds-checked wrapper over the `gemm` crate, which
//! hands the big `f32` products with a transposed left operand (the weight gradients), and on the
//! AVX-512 path every big `f32` product, to Recur's own blocked product instead
//! ([`super::packed::matmul_blocked`], see `blocked_pays`).
//!
//! Matrices are described by a slice plus a row stride and a column stride (in elements), so a
//! transposed operand is just the same slice with its strides swapped. Nothing is allocated per
//! call; both the `gemm` crate and the blocked product keep per-thread packing buffers that grow
//! to the largest product a thread has run.

use super::blocked::matmul_blocked;
use super::cpu::CpuPath;
pub use super::matrix::MatRef;
use super::threads::serial_active;
pub use super::threads::{num_threads, serial, set_num_threads};
use super::Float;

/// Whether an `f32` product goes to [`super::packed::matmul_blocked`] rather than the `gemm`
/// crate: when every side is at least 128, so that packing `lhs` is paid back over enough
/// columns, and `lhs` is not row-major (the weight gradients `dgatesᵀ · x` of the backward) or the
/// CPU path is AVX-512 (the `gemm` crate, built without its `x86-v4` feature, runs AVX2 there).
///
/// Measured on a Xeon (Sapphire Rapids, 1 thread, `benches/products.rs`, medians): the input
/// projection `x · W_ihᵀ` of M (`3200 × 128 × 1024`) 104 GFLOP/s through the `gemm` crate, 187
/// blocked on AVX-512; L's (`3200 × 512 × 4096`) 99 against 139; M's `dgates · W_ih`
/// (`3200 × 1024 × 128`) 111 against 113. On the AVX2 path the crate stays faster there (M's
/// projection 108 against 104, L's 97 against 85).
///
/// Measured on Zen 3, 1 thread: side by side (best of 12 alternating runs) at weight-gradient
/// shapes (`m` 1024–4096, `k` 2048–3200, `n` 256–1024) blocking ran at 0.89–0.91 of the `gemm`
/// crate's time, with a row-major `lhs` at 0.90–1.15 of it (so those stay with the crate). With
/// `n` down to 16 case S's training step took 1.8× as long (4.1–4.4 ms against 2.3–2.4: the
/// scalar packing of a 256 × 800 `lhs` for 32 or 64 columns); with this rule S and M measure as
/// before (2.26 against 2.24 ms, 268 against 264 ms, medians of 3 alternating runs) and L 1758
/// against 1853 ms.
fn blocked_pays<T>(lhs: MatRef<'_, T>, m: usize, k: usize, n: usize, path: CpuPath) -> bool {
    (lhs.cs != 1 || path == CpuPath::Avx512) && m >= 128 && n >= 128 && k >= 128
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`; `dst` is row-major with row stride `dst_rs`.
///
/// With `accumulate` the product is added to what `dst` holds, otherwise `dst` is overwritten.
/// Panics (an internal invariant, never user input) if a view reaches past its slice or the
/// inner dimensions disagree.
pub fn matmul<T: Float>(dst: &mut [T], dst_rs: usize, accumulate: bool, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>) {
    let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
    assert_eq!(k, rhs.rows, "inner dimensions of a matrix product disagree");
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "destination view out of bounds");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(T::ZERO);
            }
        }
        return;
    }
    lhs.check();
    rhs.check();
    let threads = if serial_active() { 1 } else { num_threads() };
    if blocked_pays(lhs, m, k, n, super::cpu::path()) && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
        // SAFETY: `T` is `f32` (checked just above), so these are the same slices renamed.
        let (dst32, lhs32, rhs32) = unsafe {
            (
                std::slice::from_raw_parts_mut(dst.as_mut_ptr().cast::<f32>(), dst.len()),
                std::slice::from_raw_parts(lhs.data.as_ptr().cast::<f32>(), lhs.data.len()),
                std::slice::from_raw_parts(rhs.data.as_ptr().cast::<f32>(), rhs.data.len()),
            )
        };
        let lhs32 = MatRef { data: lhs32, ..lhs.retyped() };
        let rhs32 = MatRef { data: rhs32, ..rhs.retyped() };
        if matmul_blocked(dst32, dst_rs, accumulate, lhs32, rhs32, threads) {
            return;
        }
    }
    // Small products do not pay for the thread hand-off.
    let parallelism = if threads > 1 && m * n * k >= 48 * 48 * 48 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: every element the product touches lies inside the three slices (checked above by
    // `check` and the destination bound), `dst` is borrowed mutably so it aliases neither operand,
    // and `T` is f32 or f64, both supported by `gemm`.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            lhs.data.as_ptr(),
            lhs.cs as isize,
            lhs.rs as isize,
            rhs.data.as_ptr(),
            rhs.cs as isize,
            rhs.rs as isize,
            T::ONE,
            T::ONE,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Naive triple loop with the same contract as [`matmul`]; the reference the tests hold it to.
pub fn matmul_naive<T: Float>(dst: &mut [T], dst_rs: usize, accumulate: bool, lhs: MatRef<'_, T>, rhs: MatRef<'_, T>) {
    for i in 0..lhs.rows {
        for j in 0..rhs.cols {
            let mut acc = T::ZERO;
            for p in 0..lhs.cols {
                acc += lhs.data[i * lhs.rs + p * lhs.cs] * rhs.data[p * rhs.rs + j * rhs.cs];
            }
            let d = &mut dst[i * dst_rs + j];
            *d = if accumulate { *d + acc } else { acc };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
            })
            .collect()
    }

    /// Products big enough for `blocked_pays`, on every CPU path the machine has, with a row-major
    /// and a transposed left operand (the `gemm` crate or the blocked product, by path), in f32
    /// and f64, against the naive loop.
    #[test]
    fn big_products_match_naive_on_every_path() {
        let (m, k, n) = (130, 129, 131);
        let a = filled(m * k, 4);
        let b = filled(n * k, 5);
        for path in super::super::cpu::supported_paths() {
            for transposed in [false, true] {
                for accumulate in [false, true] {
                    fn view<T>(a: &[T], transposed: bool, m: usize, k: usize) -> MatRef<'_, T> {
                        if transposed {
                            MatRef::new(a, k, m).t()
                        } else {
                            MatRef::new(a, m, k)
                        }
                    }
                    let mut want = filled(m * n, 6);
                    matmul_naive(&mut want, n, accumulate, view(&a, transposed, m, k), MatRef::new(&b, n, k).t());
                    let what = format!("{path} transposed={transposed} accumulate={accumulate}");
                    assert_eq!(
                        blocked_pays(view(&a, transposed, m, k), m, k, n, path),
                        transposed || path == CpuPath::Avx512,
                        "{what}"
                    );
                    let (a32, b32): (Vec<f32>, Vec<f32>) =
                        (a.iter().map(|&v| v as f32).collect(), b.iter().map(|&v| v as f32).collect());
                    let mut got: Vec<f32> = filled(m * n, 6).iter().map(|&v| v as f32).collect();
                    super::super::cpu::with_path(path, || {
                        matmul(&mut got, n, accumulate, view(&a32, transposed, m, k), MatRef::new(&b32, n, k).t())
                    });
                    for (i, (&g, &w)) in got.iter().zip(&want).enumerate() {
                        assert!((g as f64 - w).abs() < 1e-4 * w.abs().max(1.0), "{what} [{i}]: {g} vs {w}");
                    }
                    let mut got64 = filled(m * n, 6);
                    super::super::cpu::with_path(path, || {
                        matmul(&mut got64, n, accumulate, view(&a, transposed, m, k), MatRef::new(&b, n, k).t())
                    });
                    for (i, (&g, &w)) in got64.iter().zip(&want).enumerate() {
                        assert!((g - w).abs() < 1e-10 * w.abs().max(1.0), "{what} f64 [{i}]: {g} vs {w}");
                    }
                }
            }
        }
    }

    #[test]
    fn matmul_matches_naive_with_transposes_and_accumulation() {
        let (m, k, n) = (7, 5, 9);
        let a = filled(m * k, 1);
        let b = filled(n * k, 2); // used as (n×k)ᵀ
        for accumulate in [false, true] {
            let mut fast = filled(m * 11, 3);
            let mut slow = fast.clone();
            let lhs = MatRef::new(&a, m, k);
            let rhs = MatRef::new(&b, n, k).t();
            matmul(&mut fast, 11, accumulate, lhs, rhs);
            matmul_naive(&mut slow, 11, accumulate, lhs, rhs);
            for (x, y) in fast.iter().zip(&slow) {
                assert!((x - y).abs() < 1e-12, "{x} vs {y}");
            }
        }
    }
}
