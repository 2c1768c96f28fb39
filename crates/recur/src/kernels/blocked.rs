//! The blocked matrix product under [`super::packed`]: right-hand matrices packed into column
//! panels of [`NR`] values ([`pack_rhs`]), products against a packed matrix ([`matmul_packed`]),
//! BLIS-style general products that pack both operands block by block ([`matmul_blocked`]), and
//! the register-blocked microkernels they share (AVX-512 in `blocked/avx512.rs`, AVX2 + FMA in
//! `blocked/avx2.rs`, a portable loop here). It sits below both [`super::gemm`] (which sends it
//! the large `f32` products) and [`super::packed`] (the per-step policy), and uses neither.

use std::ops::Range;

use super::cpu::{self, CpuPath};
use super::matrix::MatRef;
use super::threads::{num_threads, serial_active};
use super::Float;

/// Columns per packed panel: two 8-lane AVX2 vectors of `f32`, one 16-lane AVX-512 vector (whose
/// microkernel takes two panels at a time).
pub const NR: usize = 16;

/// Products with at least this many multiply-adds split their panels between threads.
const PARALLEL_MIN_FMAS: usize = 1 << 20;

/// Length of the buffer [`pack_rhs`] fills for a `(k × n)` matrix: `k · ⌈n / NR⌉ · NR`.
pub fn packed_len(k: usize, n: usize) -> usize {
    k * n.div_ceil(NR) * NR
}

/// Packs `rhs (k × n)`, any strides, into `out[..packed_len(k, n)]` for [`matmul_packed`]: panel
/// `j` holds columns `[j·NR, (j+1)·NR)` (zero past `n`) at `out[j·k·NR..]`, row `p` of it at
/// `p·NR`. Panics if `out` is too short or the view reaches past its slice.
pub fn pack_rhs<T: Float>(rhs: MatRef<'_, T>, out: &mut [T]) {
    let (k, n) = (rhs.rows, rhs.cols);
    let len = packed_len(k, n);
    assert!(out.len() >= len, "packed buffer shorter than packed_len");
    if len == 0 {
        return;
    }
    rhs.check();
    let (data, rs, cs) = (rhs.data, rhs.rs, rhs.cs);
    for (j, panel) in out[..len].chunks_exact_mut(k * NR).enumerate() {
        let col0 = j * NR;
        let width = (n - col0).min(NR);
        if cs == 1 {
            // Row-major: each row of the panel is a contiguous run.
            for (p, dst) in panel.chunks_exact_mut(NR).enumerate() {
                dst[..width].copy_from_slice(&data[p * rs + col0..p * rs + col0 + width]);
                dst[width..].fill(T::ZERO);
            }
        } else {
            // Walk memory in order: down the columns when they are the contiguous direction (a
            // transposed row-major matrix), along the rows otherwise.
            if rs < cs {
                for c in 0..width {
                    for p in 0..k {
                        panel[p * NR + c] = data[p * rs + (col0 + c) * cs];
                    }
                }
            } else {
                for p in 0..k {
                    for c in 0..width {
                        panel[p * NR + c] = data[p * rs + (col0 + c) * cs];
                    }
                }
            }
            for dst in panel.chunks_exact_mut(NR) {
                dst[width..].fill(T::ZERO);
            }
        }
    }
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)`, with `rhs` given as [`pack_rhs`] packed it into
/// `packed`; `dst` is row-major with row stride `dst_rs ≥ n`. With `accumulate` the product is
/// added to what `dst` holds, otherwise `dst` is overwritten. Panics (an internal invariant) if a
/// view reaches past its slice or `packed` is shorter than [`packed_len`]`(k, n)`.
pub fn matmul_packed<T: Float>(
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<'_, T>,
    packed: &[T],
    n: usize,
) {
    let (m, k) = (lhs.rows, lhs.cols);
    let threads = if serial_active() { 1 } else { num_threads() };
    let threads = if threads > 1 && m * n * k >= PARALLEL_MIN_FMAS { threads } else { 1 };
    product(dst, dst_rs, accumulate, lhs, packed, n, threads, cpu::path());
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)` for `f32`, any strides, as [`super::gemm::matmul`], blocked
/// the way BLIS blocks a product: `rhs` is packed [`KC`] rows at a time into the panels of
/// [`pack_rhs`], `lhs` [`MC`] rows by [`KC`] values at a time into strips of the microkernel's
/// rows (12 with AVX-512, 6 with AVX2), and the microkernel of [`matmul_packed`] for the CPU path
/// ([`cpu::path`]) runs over them. Columns are split between up to `threads` threads (each packing
/// its own operands). The packing buffers are kept per thread and grow to the largest product seen
/// (at most `MC·KC` and `KC·n` values).
///
/// Returns `false`, touching nothing, on the portable path (no AVX2 and FMA, or `RECUR_CPU`
/// asked for it). Panics (an internal invariant) if a view reaches past its slice or the inner
/// dimensions disagree.
pub fn matmul_blocked(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<'_, f32>,
    rhs: MatRef<'_, f32>,
    threads: usize,
) -> bool {
    blocked_on(dst, dst_rs, accumulate, lhs, rhs, threads, cpu::path())
}

/// [`matmul_blocked`] on the CPU path `path`, which the CPU must support.
fn blocked_on(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<'_, f32>,
    rhs: MatRef<'_, f32>,
    threads: usize,
    path: CpuPath,
) -> bool {
    if path == CpuPath::Portable {
        return false;
    }
    #[cfg(target_arch = "x86_64")]
    {
        let (m, k, n) = (lhs.rows, lhs.cols, rhs.cols);
        assert_eq!(k, rhs.rows, "inner dimensions of a matrix product disagree");
        if m == 0 || n == 0 {
            return true;
        }
        assert!((m - 1) * dst_rs + n <= dst.len(), "destination view out of bounds");
        assert!(m == 1 || dst_rs >= n, "destination rows overlap");
        if k == 0 {
            if !accumulate {
                for r in 0..m {
                    dst[r * dst_rs..r * dst_rs + n].fill(0.0);
                }
            }
            return true;
        }
        lhs.check();
        rhs.check();
        let job = Blocked { dst: dst.as_mut_ptr(), dst_rs, accumulate, lhs, rhs };
        // The AVX-512 microkernel takes panels two at a time: split the columns in pairs.
        let unit = if path == CpuPath::Avx512 { 2 * NR } else { NR };
        let units = n.div_ceil(unit);
        let parts = threads.min(units).max(1);
        let run = |c0: usize, c1: usize| {
            // SAFETY: the operands' bounds were checked above, `dst` is borrowed mutably for the
            // call, the parts' column ranges are disjoint and rows do not overlap (`dst_rs ≥ n`),
            // so the tasks write disjoint elements of `dst`; the CPU supports `path` (the
            // caller's contract, `cpu::path` only answers supported paths).
            unsafe {
                match path {
                    CpuPath::Avx512 => avx512::blocked(job, c0, c1),
                    _ => avx2::blocked(job, c0, c1),
                }
            }
        };
        if parts == 1 {
            run(0, n);
        } else {
            use rayon::prelude::*;
            (0..parts).into_par_iter().for_each(|part| {
                let c0 = units * part / parts * unit;
                let c1 = (units * (part + 1) / parts * unit).min(n);
                run(c0, c1);
            });
        }
        true
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (dst, dst_rs, accumulate, lhs, rhs, threads);
        false
    }
}

/// Values of `k` per packed block of [`matmul_blocked`]: a `KC × NR` panel slice (16 KiB of
/// `f32`) stays in L1 while the microkernel runs down a block of rows.
pub const KC: usize = 256;

/// Rows of `lhs` per packed block of [`matmul_blocked`] (`MC × KC`, 144 KiB of `f32`, stays in
/// L2); a multiple of the microkernel's 6 rows.
pub const MC: usize = 144;

/// [`matmul_packed`] with the thread count and the CPU path chosen by the caller (tests pick them
/// directly); the CPU must support `path`.
#[allow(clippy::too_many_arguments)]
fn product<T: Float>(
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<'_, T>,
    packed: &[T],
    n: usize,
    threads: usize,
    path: CpuPath,
) {
    let (m, k) = (lhs.rows, lhs.cols);
    if m == 0 || n == 0 {
        return;
    }
    assert!((m - 1) * dst_rs + n <= dst.len(), "destination view out of bounds");
    assert!(m == 1 || dst_rs >= n, "destination rows overlap");
    assert!(packed.len() >= packed_len(k, n), "packed buffer shorter than packed_len");
    if k == 0 {
        if !accumulate {
            for r in 0..m {
                dst[r * dst_rs..r * dst_rs + n].fill(T::ZERO);
            }
        }
        return;
    }
    lhs.check();
    let job = Product {
        dst: dst.as_mut_ptr(),
        dst_rs,
        accumulate,
        lhs: lhs.data.as_ptr(),
        lhs_rs: lhs.rs,
        lhs_cs: lhs.cs,
        m,
        k,
        packed: packed.as_ptr(),
        n,
    };
    let panels = n.div_ceil(NR);
    // The AVX-512 microkernel takes panels two at a time: split them in pairs.
    let unit = if path == CpuPath::Avx512 { 2 } else { 1 };
    let units = panels.div_ceil(unit);
    let parts = threads.min(units).max(1);
    if parts == 1 {
        // SAFETY: the bounds of every operand were checked above, and `dst` is borrowed mutably
        // for the whole call, so nothing else reads or writes it; the CPU supports `path` (our
        // caller's contract).
        unsafe { job.run(0..panels, path) };
    } else {
        use rayon::prelude::*;
        (0..parts).into_par_iter().for_each(|part| {
            let range = (units * part / parts * unit).min(panels)..(units * (part + 1) / parts * unit).min(panels);
            // SAFETY: as above; the parts' panel ranges are disjoint, so (rows not overlapping,
            // `dst_rs ≥ n`) the tasks write disjoint elements of `dst`, and only read the operands.
            unsafe { job.run(range, path) };
        });
    }
}

/// One product's operands as raw parts, shared with the threads that each take some panels.
struct Product<T> {
    dst: *mut T,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const T,
    lhs_rs: usize,
    lhs_cs: usize,
    m: usize,
    k: usize,
    packed: *const T,
    n: usize,
}

impl<T> Clone for Product<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Product<T> {}

// SAFETY: a `Product` only carries the pointers of one `product` call to the rayon tasks it
// spawns and waits for; each task writes a disjoint set of `dst` elements (see `product`) and
// only reads `lhs` and `packed`, so sharing it is sound for `T` that may be sent and shared.
unsafe impl<T: Send + Sync> Send for Product<T> {}
// SAFETY: as above.
unsafe impl<T: Send + Sync> Sync for Product<T> {}

impl<T: Float> Product<T> {
    /// Computes the columns of panels `panels` of `dst`.
    ///
    /// # Safety
    /// Every element the product reads or writes lies inside its buffer (`dst` covers
    /// `(m − 1)·dst_rs + n` elements with `dst_rs ≥ n` when `m > 1`, `lhs` covers its strided
    /// `(m × k)` view, `packed` covers [`packed_len`]`(k, n)`), nobody else accesses the columns
    /// of these panels of `dst` meanwhile, and the CPU supports `path`.
    unsafe fn run(self, panels: Range<usize>, path: CpuPath) {
        #[cfg(target_arch = "x86_64")]
        if std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
            // SAFETY: `T` is `f32` (checked just above), so the casts only rename the type; the
            // CPU supports `path`; the rest is our contract.
            match path {
                CpuPath::Avx512 => return unsafe { avx512::run(self.cast::<f32>(), panels) },
                CpuPath::Avx2 => return unsafe { avx2::run(self.cast::<f32>(), panels) },
                CpuPath::Portable => {}
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = path;
        // SAFETY: our contract.
        unsafe { portable_run(self, panels) }
    }

    /// The same product with its element type renamed; only called once `U` is known to be `T`.
    #[cfg(target_arch = "x86_64")]
    fn cast<U>(self) -> Product<U> {
        Product {
            dst: self.dst.cast(),
            dst_rs: self.dst_rs,
            accumulate: self.accumulate,
            lhs: self.lhs.cast(),
            lhs_rs: self.lhs_rs,
            lhs_cs: self.lhs_cs,
            m: self.m,
            k: self.k,
            packed: self.packed.cast(),
            n: self.n,
        }
    }
}

/// Rows per block of the portable loop: with 16 vector registers (x86_64 without AVX2), 2 rows of
/// 16 accumulators is what fits without spilling; aarch64 has 32.
const PORTABLE_MR: usize = if cfg!(target_arch = "aarch64") { 4 } else { 2 };
const _: () = assert!(PORTABLE_MR >= 1 && PORTABLE_MR <= 4);

/// The portable product over `panels`: for each panel, blocks of up to [`PORTABLE_MR`] rows
/// accumulated in a `MR × NR` array (which LLVM keeps in vector registers) in plain `k` order.
///
/// # Safety
/// That of [`Product::run`].
unsafe fn portable_run<T: Float>(job: Product<T>, panels: Range<usize>) {
    for panel in panels {
        let mut row = 0;
        while row < job.m {
            let rows = (job.m - row).min(PORTABLE_MR);
            // SAFETY: rows `row..row + rows` and this panel lie inside the product (our contract).
            unsafe {
                match rows {
                    1 => portable_block::<T, 1>(job, row, panel),
                    2 => portable_block::<T, 2>(job, row, panel),
                    3 => portable_block::<T, 3>(job, row, panel),
                    _ => portable_block::<T, 4>(job, row, panel),
                }
            }
            row += rows;
        }
    }
}

/// Rows `row..row + MR` times panel `panel`, written to `dst`.
///
/// # Safety
/// That of [`Product::run`], with `row + MR ≤ m` and `panel` one of the product's panels.
#[inline(always)]
unsafe fn portable_block<T: Float, const MR: usize>(job: Product<T>, row: usize, panel: usize) {
    let k = job.k;
    // SAFETY: the panel lies inside `packed` (our contract: it holds packed_len(k, n) elements).
    let b = unsafe { std::slice::from_raw_parts(job.packed.add(panel * k * NR), k * NR) };
    let mut acc = [[T::ZERO; NR]; MR];
    for (p, b_row) in b.chunks_exact(NR).enumerate() {
        for (i, acc_row) in acc.iter_mut().enumerate() {
            // SAFETY: `(row + i, p)` is inside the `(m × k)` view of `lhs` (our contract).
            let a = unsafe { *job.lhs.add((row + i) * job.lhs_rs + p * job.lhs_cs) };
            for (c, v) in acc_row.iter_mut().enumerate() {
                *v += a * b_row[c];
            }
        }
    }
    let col0 = panel * NR;
    let width = (job.n - col0).min(NR);
    for (i, acc_row) in acc.iter().enumerate() {
        for (c, &v) in acc_row[..width].iter().enumerate() {
            // SAFETY: `(row + i, col0 + c)` is inside `dst`, and ours alone (our contract).
            unsafe {
                let d = job.dst.add((row + i) * job.dst_rs + col0 + c);
                *d = if job.accumulate { *d + v } else { v };
            }
        }
    }
}

/// The operands of one [`matmul_blocked`] call, shared with the threads that each take some
/// columns.
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy)]
struct Blocked<'a> {
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<'a, f32>,
    rhs: MatRef<'a, f32>,
}

// SAFETY: `Blocked` carries the pointers of one `matmul_blocked` call to the rayon tasks it
// waits for; each task writes its own columns of `dst` and only reads `lhs` and `rhs`.
#[cfg(target_arch = "x86_64")]
unsafe impl Send for Blocked<'_> {}
// SAFETY: as above.
#[cfg(target_arch = "x86_64")]
unsafe impl Sync for Blocked<'_> {}

#[cfg(target_arch = "x86_64")]
thread_local! {
    /// Per-thread packing buffers of `matmul_blocked` (whichever path runs it): the `lhs` block
    /// and the `rhs` panels.
    static BUFFERS: std::cell::RefCell<(Vec<f32>, Vec<f32>)> =
        const { std::cell::RefCell::new((Vec::new(), Vec::new())) };
}

/// Packs rows `r0..r0 + mr` and columns `p0..p0 + kc` of `lhs` into `buf` as strips of
/// `MR` rows: strip `s` at `s·MR·kc`, element `(i, p)` of it at `p·MR + i` (a last strip
/// of fewer rows leaves its unused slots as they were).
#[cfg(target_arch = "x86_64")]
fn pack_lhs<const MR: usize>(lhs: MatRef<'_, f32>, r0: usize, mr: usize, p0: usize, kc: usize, buf: &mut Vec<f32>) {
    let len = mr.div_ceil(MR) * MR * kc;
    if buf.len() < len {
        buf.resize(len, 0.0);
    }
    let (data, rs, cs) = (lhs.data, lhs.rs, lhs.cs);
    for (s, strip) in buf[..len].chunks_exact_mut(MR * kc).enumerate() {
        let first = r0 + s * MR;
        let rows = (r0 + mr - first).min(MR);
        if cs == 1 {
            for i in 0..rows {
                let src = &data[(first + i) * rs + p0..(first + i) * rs + p0 + kc];
                for (p, &v) in src.iter().enumerate() {
                    strip[p * MR + i] = v;
                }
            }
        } else if rs == 1 && rows == MR {
            // A transposed row-major matrix (`dgatesᵀ`): each column of the strip is a run of
            // `MR` values (a fixed-length copy, which compiles to a few moves, not a call).
            for (p, dst) in strip.chunks_exact_mut(MR).enumerate() {
                let base = first + (p0 + p) * cs;
                dst.copy_from_slice(&data[base..base + MR]);
            }
        } else {
            for (p, dst) in strip.chunks_exact_mut(MR).enumerate() {
                let base = first * rs + (p0 + p) * cs;
                for (i, d) in dst[..rows].iter_mut().enumerate() {
                    *d = data[base + i * rs];
                }
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;

#[cfg(test)]
mod tests {
    use super::super::gemm::matmul_naive;
    use super::super::testing::{assert_close, cast, Rng};
    use super::super::threads::serial;
    use super::*;

    /// How an operand is laid out in memory.
    #[derive(Clone, Copy, Debug)]
    enum Layout {
        /// Row-major, contiguous.
        RowMajor,
        /// Row-major with 3 unused values after each row.
        Padded,
        /// Column-major: the transpose of a row-major matrix.
        Transposed,
    }

    const LAYOUTS: [Layout; 3] = [Layout::RowMajor, Layout::Padded, Layout::Transposed];

    /// A `(rows × cols)` view of `data` (which [`operand_len`] sized) in `layout`.
    fn view<T>(data: &[T], rows: usize, cols: usize, layout: Layout) -> MatRef<'_, T> {
        match layout {
            Layout::RowMajor => MatRef::new(data, rows, cols),
            Layout::Padded => MatRef::strided(data, rows, cols, cols + 3),
            Layout::Transposed => MatRef::new(data, cols, rows).t(),
        }
    }

    fn operand_len(rows: usize, cols: usize, layout: Layout) -> usize {
        match layout {
            Layout::Padded => rows * (cols + 3),
            _ => rows * cols,
        }
    }

    /// The CPU paths this machine can run: always the portable loop, AVX2 and AVX-512 where
    /// present.
    fn paths() -> Vec<CpuPath> {
        cpu::supported_paths()
    }

    /// Checks one product of `T` against [`matmul_naive`] in f64 (within `tol`, relative to
    /// `max(1, |want|)`), and that the padding columns of `dst` are left alone.
    #[allow(clippy::too_many_arguments)]
    fn check<T: Float>(
        rng: &mut Rng,
        (m, k, n): (usize, usize, usize),
        lhs_layout: Layout,
        rhs_layout: Layout,
        accumulate: bool,
        threads: usize,
        path: CpuPath,
        tol: f64,
    ) {
        let what = format!(
            "{} m={m} k={k} n={n} lhs={lhs_layout:?} rhs={rhs_layout:?} acc={accumulate} threads={threads} path={path}",
            std::any::type_name::<T>()
        );
        // Scaled so that every sum is O(1) and f32 rounding stays near 1e-6 even for a long `k`.
        let lhs = rng.vec(operand_len(m, k, lhs_layout), 1.0 / (k.max(1) as f64).sqrt());
        let rhs = rng.vec(operand_len(k, n, rhs_layout), 1.0);
        let dst_rs = n + 2;
        let dst = rng.vec(m * dst_rs, 1.0);
        let mut want = dst.clone();
        matmul_naive(&mut want, dst_rs, accumulate, view(&lhs, m, k, lhs_layout), view(&rhs, k, n, rhs_layout));

        let (lhs_t, rhs_t) = (cast::<T>(&lhs), cast::<T>(&rhs));
        let mut packed = vec![T::from_f64(f64::NAN); packed_len(k, n)];
        pack_rhs(view(&rhs_t, k, n, rhs_layout), &mut packed);
        let mut got = cast::<T>(&dst);
        product(&mut got, dst_rs, accumulate, view(&lhs_t, m, k, lhs_layout), &packed, n, threads, path);
        assert_close(&what, &got, &cast::<T>(&want), tol);
    }

    /// The blocked product against the naive one: shapes that cross the `MC` and `KC` block
    /// edges and leave partial strips and panels, every layout of both operands, overwriting and
    /// accumulating, on 1 and 3 threads; and `dst`'s padding columns stay untouched.
    #[test]
    fn blocked_matches_naive() {
        for path in paths() {
            blocked_matches_naive_on(path);
        }
    }

    fn blocked_matches_naive_on(path: CpuPath) {
        let ran = blocked_on(&mut [0.0], 1, false, MatRef::new(&[1.0], 1, 1), MatRef::new(&[1.0], 1, 1), 1, path);
        assert_eq!(ran, path != CpuPath::Portable, "{path}: runs unless portable");
        if !ran {
            return;
        }
        let mut rng = Rng::new(7);
        let shapes = [
            (1, 1, 1),
            (5, 3, 17),
            (7, 255, 16),
            (MC + 7, KC + 1, 2 * NR + 3),
            (25, 40, 2 * NR),
            (12, 9, 3 * NR + 1),
            (2 * MC + 1, 2 * KC + 5, NR - 1),
            (13, 600, 40),
        ];
        for &(m, k, n) in &shapes {
            for lhs_layout in LAYOUTS {
                for rhs_layout in LAYOUTS {
                    for accumulate in [false, true] {
                        for threads in [1, 3] {
                            let what = format!("{path} m={m} k={k} n={n} lhs={lhs_layout:?} rhs={rhs_layout:?} acc={accumulate} threads={threads}");
                            let lhs = rng.vec(operand_len(m, k, lhs_layout), 1.0 / (k as f64).sqrt());
                            let rhs = rng.vec(operand_len(k, n, rhs_layout), 1.0);
                            let dst_rs = n + 2;
                            let dst = rng.vec(m * dst_rs, 1.0);
                            let mut want = dst.clone();
                            matmul_naive(
                                &mut want,
                                dst_rs,
                                accumulate,
                                view(&lhs, m, k, lhs_layout),
                                view(&rhs, k, n, rhs_layout),
                            );
                            let (lhs32, rhs32) = (cast::<f32>(&lhs), cast::<f32>(&rhs));
                            let mut got = cast::<f32>(&dst);
                            let ran = blocked_on(
                                &mut got,
                                dst_rs,
                                accumulate,
                                view(&lhs32, m, k, lhs_layout),
                                view(&rhs32, k, n, rhs_layout),
                                threads,
                                path,
                            );
                            assert!(ran, "{what}: the path has a blocked product");
                            assert_close(&what, &got, &cast::<f32>(&want), 2e-5);
                        }
                    }
                }
            }
        }
        // A left operand with neither stride 1 (every other value of a column-major matrix).
        let (m, k, n) = (MC + 5, KC + 3, NR + 1);
        let lhs = rng.vec(2 * m * k, 1.0 / (k as f64).sqrt());
        let rhs = rng.vec(k * n, 1.0);
        let mut want = vec![0.0; m * n];
        let lhs64 = MatRef { data: &lhs[..], rows: m, cols: k, rs: 2, cs: 2 * m };
        matmul_naive(&mut want, n, false, lhs64, MatRef::new(&rhs, k, n));
        let (lhs32, rhs32) = (cast::<f32>(&lhs), cast::<f32>(&rhs));
        let mut got = vec![0.0f32; m * n];
        let lhs32 = MatRef { data: &lhs32[..], rows: m, cols: k, rs: 2, cs: 2 * m };
        assert!(blocked_on(&mut got, n, false, lhs32, MatRef::new(&rhs32, k, n), 1, path));
        assert_close(&format!("{path}: strided lhs"), &got, &cast::<f32>(&want), 2e-5);
    }

    #[test]
    fn packed_len_rounds_columns_up_to_panels() {
        assert_eq!(packed_len(0, 5), 0);
        assert_eq!(packed_len(3, 0), 0);
        assert_eq!(packed_len(3, 1), 3 * NR);
        assert_eq!(packed_len(3, NR), 3 * NR);
        assert_eq!(packed_len(3, NR + 1), 6 * NR);
    }

    #[test]
    fn pack_rhs_lays_out_zero_padded_panels() {
        let (k, n) = (3, NR + 2);
        let rhs: Vec<f64> = (0..k * n).map(|v| v as f64 + 1.0).collect();
        for layout in [Layout::RowMajor, Layout::Transposed] {
            let data = match layout {
                Layout::Transposed => (0..n * k).map(|e| rhs[(e % k) * n + e / k]).collect(),
                _ => rhs.clone(),
            };
            let mut packed = vec![f64::NAN; packed_len(k, n)];
            pack_rhs(view(&data, k, n, layout), &mut packed);
            for panel in 0..2 {
                for p in 0..k {
                    for c in 0..NR {
                        let col = panel * NR + c;
                        let want = if col < n { rhs[p * n + col] } else { 0.0 };
                        assert_eq!(packed[(panel * k + p) * NR + c], want, "{layout:?} panel {panel} ({p}, {c})");
                    }
                }
            }
        }
    }

    #[test]
    fn matches_naive_small_shapes() {
        let mut rng = Rng::new(1);
        for path in paths() {
            for m in 0..=13 {
                for k in [0, 1, 2, 7] {
                    for n in [1, 5, NR, NR + 1, 2 * NR, 2 * NR + 7] {
                        for accumulate in [false, true] {
                            let shape = (m, k, n);
                            check::<f32>(
                                &mut rng,
                                shape,
                                Layout::RowMajor,
                                Layout::RowMajor,
                                accumulate,
                                1,
                                path,
                                1e-5,
                            );
                            check::<f64>(
                                &mut rng,
                                shape,
                                Layout::RowMajor,
                                Layout::RowMajor,
                                accumulate,
                                1,
                                path,
                                1e-12,
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matches_naive_any_strides() {
        let mut rng = Rng::new(2);
        for path in paths() {
            for (m, k, n) in [(1, 3, 17), (6, 9, 40), (13, 33, 21), (7, 1, 16)] {
                for lhs_layout in LAYOUTS {
                    for rhs_layout in LAYOUTS {
                        for accumulate in [false, true] {
                            let shape = (m, k, n);
                            check::<f32>(&mut rng, shape, lhs_layout, rhs_layout, accumulate, 1, path, 1e-5);
                            check::<f64>(&mut rng, shape, lhs_layout, rhs_layout, accumulate, 1, path, 1e-12);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matches_naive_at_recurrent_shapes_and_threaded() {
        let mut rng = Rng::new(3);
        for path in paths() {
            // The per-step shapes of an LSTM (B = 32, H = 64) forward and backward, an odd batch,
            // a long `k` (cut into slices by the microkernel), and more threads than panels.
            for (m, k, n) in [(32, 64, 256), (32, 256, 64), (13, 100, 50), (5, 2100, 20), (3, 8, 30), (25, 1500, 80)] {
                for threads in [1, 2, 3] {
                    for accumulate in [false, true] {
                        let shape = (m, k, n);
                        let (l, r) = (Layout::RowMajor, Layout::Transposed);
                        check::<f32>(&mut rng, shape, l, r, accumulate, threads, path, 1e-5);
                        check::<f64>(&mut rng, shape, l, r, accumulate, threads, path, 1e-12);
                    }
                }
            }
        }
    }

    #[test]
    fn public_entry_point_matches_naive_in_and_out_of_serial() {
        let mut rng = Rng::new(4);
        // Big enough (2^20 multiply-adds) to split between threads when the pool has several.
        let (m, k, n) = (32, 256, 128);
        let lhs = rng.vec(m * k, 1.0);
        let rhs = rng.vec(n * k, 1.0);
        let mut want = vec![0.0; m * n];
        let rhs_view = MatRef::new(&rhs, n, k).t();
        matmul_naive(&mut want, n, false, MatRef::new(&lhs, m, k), rhs_view);
        let (lhs32, rhs32) = (cast::<f32>(&lhs), cast::<f32>(&rhs));
        let mut packed = vec![0.0f32; packed_len(k, n)];
        pack_rhs(MatRef::new(&rhs32, n, k).t(), &mut packed);
        for in_serial in [false, true] {
            let mut got = vec![f32::NAN; m * n];
            let mut run = || matmul_packed(&mut got, n, false, MatRef::new(&lhs32, m, k), &packed, n);
            if in_serial {
                serial(run);
            } else {
                run();
            }
            assert_close(&format!("serial={in_serial}"), &got, &cast::<f32>(&want), 1e-5);
        }
    }
}
