//! Matrix products against a right-hand matrix packed once and reused: the per-step recurrent
//! products (`h_prev · W_hhᵀ` forward, `dgates · W_hh` backward), whose weight is the same at every
//! step while the `gemm` crate would repack it on every call.
//!
//! [`pack_rhs`] lays a `(k × n)` matrix out as column panels of [`NR`] columns (the last one
//! zero-padded), panel after panel, each panel `k` rows of `NR` contiguous values.
//! [`matmul_packed`] then multiplies any strided left-hand matrix with it: on x86_64 with AVX2 and
//! FMA (checked at run time) for `f32`, a register-blocked microkernel computes up to 6 rows × 16
//! columns at a time, broadcasting one left-hand element per row and FMA-ing it with the two
//! 8-lane halves of a panel row; everything else (`f64`, other CPUs) runs a portable blocked loop
//! over the same panels. Big products split their panels between threads; `matmul_packed` never
//! allocates.
//!
//! [`matmul_blocked`] reuses that microkernel for a general product (both operands packed block by
//! block, BLIS-style, into per-thread buffers that grow to the largest product a thread has run);
//! [`super::gemm::matmul`] sends it the weight-gradient products.
//!
//! Packing costs about one pass over the weight, so it only pays over enough steps: the kernels
//! hold their per-step weights as a [`StepRhs`], packed when [`packing_pays`] for the layer's
//! sizes and read in place by the `gemm` crate otherwise.

use std::ops::Range;

use super::gemm::{matmul, num_threads, serial_active, MatRef};
use super::{Dims, Float};

/// Columns per packed panel: two 8-lane AVX2 vectors of `f32`.
pub const NR: usize = 16;

/// Products with at least this many multiply-adds split their panels between threads.
const PARALLEL_MIN_FMAS: usize = 1 << 20;

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
    product(dst, dst_rs, accumulate, lhs, packed, n, threads, simd_available());
}

/// `dst (m×n) = [dst +] lhs (m×k) · rhs (k×n)` for `f32`, any strides, as [`matmul`], blocked
/// the way BLIS blocks a product: `rhs` is packed [`KC`] rows at a time into the panels of
/// [`pack_rhs`], `lhs` [`MC`] rows by [`KC`] values at a time into strips of 6 rows, and the AVX2
/// microkernel of [`matmul_packed`] runs over them. Columns are split between up to `threads`
/// threads (each packing its own operands). The packing buffers are kept per thread and grow to
/// the largest product seen (at most `MC·KC` and `KC·n` values).
///
/// Returns `false`, touching nothing, when the CPU lacks AVX2 or FMA. Panics (an internal
/// invariant) if a view reaches past its slice or the inner dimensions disagree.
pub fn matmul_blocked(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<'_, f32>,
    rhs: MatRef<'_, f32>,
    threads: usize,
) -> bool {
    if !simd_available() {
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
        let job = avx2::Blocked { dst: dst.as_mut_ptr(), dst_rs, accumulate, lhs, rhs };
        let panels = n.div_ceil(NR);
        let parts = threads.min(panels).max(1);
        if parts == 1 {
            // SAFETY: the operands' bounds were checked above, `dst` is borrowed mutably for the
            // call, and the CPU has AVX2 and FMA (`simd_available`).
            unsafe { job.run(0, n) };
        } else {
            use rayon::prelude::*;
            (0..parts).into_par_iter().for_each(|part| {
                let c0 = panels * part / parts * NR;
                let c1 = (panels * (part + 1) / parts * NR).min(n);
                // SAFETY: as above; the parts' column ranges are disjoint and rows do not overlap
                // (`dst_rs ≥ n`), so the tasks write disjoint elements of `dst`.
                unsafe { job.run(c0, c1) };
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

/// [`matmul_packed`] with the thread count and the instruction set chosen by the caller (tests
/// pick them directly).
#[allow(clippy::too_many_arguments)]
fn product<T: Float>(
    dst: &mut [T],
    dst_rs: usize,
    accumulate: bool,
    lhs: MatRef<'_, T>,
    packed: &[T],
    n: usize,
    threads: usize,
    simd: bool,
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
    let parts = threads.min(panels).max(1);
    if parts == 1 {
        // SAFETY: the bounds of every operand were checked above, and `dst` is borrowed mutably
        // for the whole call, so nothing else reads or writes it.
        unsafe { job.run(0..panels, simd) };
    } else {
        use rayon::prelude::*;
        (0..parts).into_par_iter().for_each(|part| {
            let range = panels * part / parts..panels * (part + 1) / parts;
            // SAFETY: as above; the parts' panel ranges are disjoint, so (rows not overlapping,
            // `dst_rs ≥ n`) the tasks write disjoint elements of `dst`, and only read the operands.
            unsafe { job.run(range, simd) };
        });
    }
}

/// Whether the AVX2 + FMA microkernel may run (for `f32`): the CPU path ([`super::cpu::path`])
/// is not the portable one. It is read on the calling thread, once per product, so rayon's
/// workers follow the caller.
fn simd_available() -> bool {
    super::cpu::path() != super::cpu::CpuPath::Portable
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
    /// `(m × k)` view, `packed` covers [`packed_len`]`(k, n)`), and nobody else accesses the columns
    /// of these panels of `dst` meanwhile.
    unsafe fn run(self, panels: Range<usize>, simd: bool) {
        #[cfg(target_arch = "x86_64")]
        if simd && std::any::TypeId::of::<T>() == std::any::TypeId::of::<f32>() {
            // SAFETY: `T` is `f32` (checked just above), so the casts only rename the type; the
            // CPU has AVX2 and FMA (`simd` comes from `simd_available`); the rest is our contract.
            return unsafe { avx2::run(self.cast::<f32>(), panels) };
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = simd;
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

/// The AVX2 + FMA product for `f32`.
#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::cell::RefCell;
    use std::ops::Range;

    use super::{pack_rhs, packed_len, MatRef, Product, KC, MC, NR};

    /// Most rows per microkernel call: `6 × 2` accumulators, 2 panel vectors and a broadcast
    /// fill 15 of the 16 ymm registers.
    const MR: usize = 6;

    /// Most values of `k` one microkernel call runs over; a longer `k` is cut into equal slices.
    const KC_MAX: usize = 1024;

    /// Computes panels `panels` of the product.
    ///
    /// # Safety
    /// That of [`Product::run`], and the CPU supports AVX2 and FMA.
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn run(job: Product<f32>, panels: Range<usize>) {
        let (m, k) = (job.m, job.k);
        // Measured on Zen 3 at the recurrent shapes: running the whole of `k` per call beats cutting
        // it to fit L1 (the hardware prefetchers keep the panel and `lhs` rows streaming from L2),
        // so `k` is only cut when it is very long.
        let kc = k.div_ceil(k.div_ceil(KC_MAX));
        let blocks = m.div_ceil(MR);
        let mut k0 = 0;
        while k0 < k {
            let depth = kc.min(k - k0);
            let load = job.accumulate || k0 > 0;
            // While the blocks run down one panel slice (read from L2 after the first block), they
            // fetch the next panel's slice into L2, each block a share of its `depth` cache lines
            // (a panel row of `NR` f32 is one 64-byte line). Without this the first block of each
            // panel waits on memory whenever the weight outgrows L2. Measured on Zen 3, 1 thread,
            // best of 10 alternating runs: L's `64 × 1024 × 4096` (a 16 MiB weight) 75.7 → 89.8
            // GFLOP/s and `64 × 4096 × 1024` 82.2 → 92.8; M's shapes 0.93–0.99 of the time.
            let share = depth.div_ceil(blocks);
            for panel in panels.clone() {
                let col0 = panel * NR;
                let width = (job.n - col0).min(NR);
                // SAFETY: rows `k0..k0 + depth` of the panel lie inside `packed` (our contract).
                let b = unsafe { job.packed.add(panel * k * NR + k0 * NR) };
                let next = if panel + 1 < panels.end { depth } else { 0 };
                // Only ever prefetched (never read), and inside `packed` when `next > 0`.
                let next_b = b.wrapping_add(k * NR);
                // Spread the rows evenly over the blocks (32 = 6+6+5+5+5+5, not 6·5+2).
                let mut row = 0;
                for block in 0..blocks {
                    let rows = (m - row).div_ceil(blocks - block);
                    let first = (block * share).min(next);
                    let prefetch = Prefetch {
                        from: next_b.wrapping_add(first * NR),
                        lines: (first + share).min(next) - first,
                        every: depth / share.max(1),
                    };
                    // SAFETY: rows `row..row + rows ≤ m`, columns `k0..k0 + depth ≤ k` of `lhs` and
                    // the panel's columns of `dst` are inside their buffers (our contract).
                    unsafe {
                        let a = job.lhs.add(row * job.lhs_rs + k0 * job.lhs_cs);
                        let c = job.dst.add(row * job.dst_rs + col0);
                        Tile { a, a_rs: job.lhs_rs, a_cs: job.lhs_cs, b, depth, load, prefetch }
                            .write_rows(rows, c, job.dst_rs, width);
                    }
                    row += rows;
                }
            }
            k0 += depth;
        }
    }

    /// The operands of one [`super::matmul_blocked`] call, shared with the threads that each
    /// take some columns.
    #[derive(Clone, Copy)]
    pub(super) struct Blocked<'a> {
        pub(super) dst: *mut f32,
        pub(super) dst_rs: usize,
        pub(super) accumulate: bool,
        pub(super) lhs: MatRef<'a, f32>,
        pub(super) rhs: MatRef<'a, f32>,
    }

    // SAFETY: `Blocked` carries the pointers of one `matmul_blocked` call to the rayon tasks it
    // waits for; each task writes its own columns of `dst` and only reads `lhs` and `rhs`.
    unsafe impl Send for Blocked<'_> {}
    // SAFETY: as above.
    unsafe impl Sync for Blocked<'_> {}

    thread_local! {
        /// Per-thread packing buffers of `matmul_blocked`: the `lhs` block and the `rhs` panels.
        static BUFFERS: RefCell<(Vec<f32>, Vec<f32>)> = const { RefCell::new((Vec::new(), Vec::new())) };
    }

    impl Blocked<'_> {
        /// Computes columns `c0..c1` of the product.
        ///
        /// # Safety
        /// The views lie inside their slices, `dst` covers `(m − 1)·dst_rs + n` elements with
        /// `dst_rs ≥ n` when `m > 1`, nobody else accesses columns `c0..c1` of `dst` meanwhile,
        /// `c0 < c1 ≤ n`, and the CPU has AVX2 and FMA.
        pub(super) unsafe fn run(self, c0: usize, c1: usize) {
            BUFFERS.with(|buffers| {
                let mut buffers = buffers.borrow_mut();
                let (a_buf, b_buf) = &mut *buffers;
                // SAFETY: our contract.
                unsafe { self.run_with(c0, c1, a_buf, b_buf) }
            });
        }

        /// [`Blocked::run`] with the packing buffers given.
        ///
        /// # Safety
        /// That of [`Blocked::run`].
        #[target_feature(enable = "avx2,fma")]
        unsafe fn run_with(self, c0: usize, c1: usize, a_buf: &mut Vec<f32>, b_buf: &mut Vec<f32>) {
            let (lhs, rhs) = (self.lhs, self.rhs);
            let (m, k) = (lhs.rows, lhs.cols);
            let width = c1 - c0;
            let panels = width.div_ceil(NR);
            let mut pc = 0;
            while pc < k {
                let kc = KC.min(k - pc);
                let sub = MatRef {
                    data: &rhs.data[pc * rhs.rs + c0 * rhs.cs..],
                    rows: kc,
                    cols: width,
                    rs: rhs.rs,
                    cs: rhs.cs,
                };
                let b_len = packed_len(kc, width);
                if b_buf.len() < b_len {
                    b_buf.resize(b_len, 0.0);
                }
                pack_rhs(sub, b_buf);
                let load = self.accumulate || pc > 0;
                let mut ic = 0;
                while ic < m {
                    let mc = MC.min(m - ic);
                    pack_lhs(lhs, ic, mc, pc, kc, a_buf);
                    for panel in 0..panels {
                        let col = c0 + panel * NR;
                        let w = (c1 - col).min(NR);
                        // SAFETY: panel `panel` of the packed slice holds `kc × NR` values.
                        let b = unsafe { b_buf.as_ptr().add(panel * kc * NR) };
                        let mut row = 0;
                        while row < mc {
                            let rows = (mc - row).min(MR);
                            // SAFETY: the strip of rows `row..row + rows` holds `kc × MR` values
                            // (`pack_lhs`), and rows `ic + row..` of columns `col..col + w` are
                            // inside `dst` and ours (our contract).
                            unsafe {
                                let a = a_buf.as_ptr().add(row * kc);
                                let c = self.dst.add((ic + row) * self.dst_rs + col);
                                let prefetch = Prefetch::NONE;
                                Tile { a, a_rs: 1, a_cs: MR, b, depth: kc, load, prefetch }.write_rows(
                                    rows,
                                    c,
                                    self.dst_rs,
                                    w,
                                );
                            }
                            row += rows;
                        }
                    }
                    ic += mc;
                }
                pc += kc;
            }
        }
    }

    /// Packs rows `r0..r0 + mr` and columns `p0..p0 + kc` of `lhs` into `buf` as strips of
    /// [`MR`] rows: strip `s` at `s·MR·kc`, element `(i, p)` of it at `p·MR + i` (a last strip
    /// of fewer rows leaves its unused slots as they were).
    fn pack_lhs(lhs: MatRef<'_, f32>, r0: usize, mr: usize, p0: usize, kc: usize, buf: &mut Vec<f32>) {
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

    /// One microkernel call's inputs: `ROWS` rows of `lhs` from `a` (strides `a_rs`, `a_cs`) over
    /// `depth` values of `k`, one panel slice `b` (`depth × NR`, contiguous), and whether to add
    /// to what `dst` holds (`load`) or overwrite it.
    #[derive(Clone, Copy)]
    struct Tile {
        a: *const f32,
        a_rs: usize,
        a_cs: usize,
        b: *const f32,
        depth: usize,
        load: bool,
        prefetch: Prefetch,
    }

    /// Cache lines a microkernel call asks the CPU to fetch into L2 while it runs: `lines`
    /// consecutive 64-byte lines from `from`, one every `every` values of `k`. Prefetching never
    /// faults and changes no result, so `from` needs no validity beyond being computed without
    /// overflow.
    #[derive(Clone, Copy)]
    struct Prefetch {
        from: *const f32,
        lines: usize,
        every: usize,
    }

    impl Prefetch {
        /// Fetches nothing.
        const NONE: Prefetch = Prefetch { from: std::ptr::null(), lines: 0, every: 1 };
    }

    impl Tile {
        /// [`Tile::write`] for `rows` (1 to [`MR`]) rows. Fewer than 4 rows give fewer than 8
        /// accumulators, too few to hide the FMA latency (4 cycles, 2 per cycle): those also split
        /// `k` into `U` sums.
        ///
        /// # Safety
        /// That of [`Tile::write`] with `ROWS = rows`.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn write_rows(self, rows: usize, c: *mut f32, c_rs: usize, width: usize) {
            // SAFETY: our contract, with `ROWS` the number of rows given.
            unsafe {
                match rows {
                    1 => self.write::<1, 4>(c, c_rs, width),
                    2 => self.write::<2, 2>(c, c_rs, width),
                    3 => self.write::<3, 2>(c, c_rs, width),
                    4 => self.write::<4, 1>(c, c_rs, width),
                    5 => self.write::<5, 1>(c, c_rs, width),
                    _ => self.write::<MR, 1>(c, c_rs, width),
                }
            }
        }

        /// `dst (ROWS × width) [+]= a · b` for `dst` at `c` with row stride `c_rs`; a partial
        /// panel (`width < NR`) goes through a stack tile so no column past `width` is touched.
        ///
        /// # Safety
        /// `a` covers `ROWS × depth` elements at its strides, `b` covers `depth × NR`, `c` covers
        /// `ROWS` rows of `width ≤ NR` columns at stride `c_rs`, owned by the caller; AVX2 + FMA.
        #[target_feature(enable = "avx2,fma")]
        unsafe fn write<const ROWS: usize, const U: usize>(self, c: *mut f32, c_rs: usize, width: usize) {
            if width == NR {
                // SAFETY: our contract, with the full `NR` columns.
                unsafe { self.kernel::<ROWS, U>(c, c_rs) };
                return;
            }
            let mut tile = [0.0f32; MR * NR];
            if self.load {
                for i in 0..ROWS {
                    for j in 0..width {
                        // SAFETY: `(i, j)` with `j < width` is inside `c` (our contract).
                        tile[i * NR + j] = unsafe { *c.add(i * c_rs + j) };
                    }
                }
            }
            // SAFETY: the stack tile holds `MR ≥ ROWS` rows of `NR` columns at stride `NR`.
            unsafe { self.kernel::<ROWS, U>(tile.as_mut_ptr(), NR) };
            for i in 0..ROWS {
                for j in 0..width {
                    // SAFETY: as for the loads above.
                    unsafe { *c.add(i * c_rs + j) = tile[i * NR + j] };
                }
            }
        }

        /// The microkernel: `c (ROWS × NR) [+]= a · b` in `U × ROWS × 2` ymm accumulators, set `u`
        /// summing the values of `k` that are `u` modulo `U`.
        ///
        /// # Safety
        /// As [`Tile::write`] with `width = NR`.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn kernel<const ROWS: usize, const U: usize>(self, c: *mut f32, c_rs: usize) {
            // SAFETY: `__m256` is plain data, all-zero bits are eight 0.0 lanes.
            let mut sums: [[[__m256; 2]; ROWS]; U] = unsafe { std::mem::zeroed() };
            if self.load {
                // Start fetching what the sum is added to at the end, while the FMAs run.
                for i in 0..ROWS {
                    // SAFETY: row `i` of `c` has `NR` columns (our contract); prefetching reads
                    // nothing the program sees.
                    unsafe {
                        let row = c.add(i * c_rs);
                        _mm_prefetch::<_MM_HINT_T0>(row.cast());
                        _mm_prefetch::<_MM_HINT_T0>(row.add(NR - 1).cast());
                    }
                }
            }
            let mut rows = [self.a; ROWS];
            for (i, row) in rows.iter_mut().enumerate() {
                // SAFETY: row `i < ROWS` of `a` is inside `lhs` (our contract).
                *row = unsafe { self.a.add(i * self.a_rs) };
            }
            let full = self.depth - self.depth % U;
            let mut p = 0;
            let (mut line, mut countdown) = (0, 0);
            let every = self.prefetch.every.max(1).div_ceil(U);
            while p < full {
                if countdown == 0 {
                    if line < self.prefetch.lines {
                        // Prefetching reads nothing the program sees and never faults.
                        _mm_prefetch::<_MM_HINT_T1>(self.prefetch.from.wrapping_add(line * NR).cast());
                        line += 1;
                    }
                    countdown = every;
                }
                countdown -= 1;
                for (u, acc) in sums.iter_mut().enumerate() {
                    // SAFETY: `p + u < full ≤ depth`.
                    unsafe { self.step(acc, &rows, p + u) };
                }
                p += U;
            }
            for p in full..self.depth {
                // SAFETY: `p < depth`.
                unsafe { self.step(&mut sums[0], &rows, p) };
            }
            for i in 0..ROWS {
                // SAFETY: row `i` of `c` has `NR = 16` columns (our contract).
                unsafe {
                    let row = c.add(i * c_rs);
                    let mut acc = sums[0][i];
                    for more in &sums[1..] {
                        acc[0] = _mm256_add_ps(acc[0], more[i][0]);
                        acc[1] = _mm256_add_ps(acc[1], more[i][1]);
                    }
                    if self.load {
                        acc[0] = _mm256_add_ps(_mm256_loadu_ps(row), acc[0]);
                        acc[1] = _mm256_add_ps(_mm256_loadu_ps(row.add(8)), acc[1]);
                    }
                    _mm256_storeu_ps(row, acc[0]);
                    _mm256_storeu_ps(row.add(8), acc[1]);
                }
            }
        }

        /// One value `p` of `k`: row `p` of the panel slice times column `p` of `a` (whose rows
        /// start at `rows`), added into `acc`.
        ///
        /// # Safety
        /// As [`Tile::kernel`], and `p < depth`.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn step<const ROWS: usize>(self, acc: &mut [[__m256; 2]; ROWS], rows: &[*const f32; ROWS], p: usize) {
            // SAFETY: row `p < depth` of the panel slice has `NR` values, and element `(i, p)` of
            // `a` is inside `lhs` (our contract).
            unsafe {
                let b = self.b.add(p * NR);
                let b0 = _mm256_loadu_ps(b);
                let b1 = _mm256_loadu_ps(b.add(8));
                let off = p * self.a_cs;
                for (acc, row) in acc.iter_mut().zip(rows) {
                    let a = _mm256_broadcast_ss(&*row.add(off));
                    acc[0] = _mm256_fmadd_ps(a, b0, acc[0]);
                    acc[1] = _mm256_fmadd_ps(a, b1, acc[1]);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::gemm::{matmul_naive, serial};
    use super::super::testing::{assert_close, cast, Rng};
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

    /// The instruction sets this machine can run: always the portable loop, AVX2 where present.
    fn simd_paths() -> Vec<bool> {
        if simd_available() {
            vec![false, true]
        } else {
            vec![false]
        }
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
        simd: bool,
        tol: f64,
    ) {
        let what = format!(
            "{} m={m} k={k} n={n} lhs={lhs_layout:?} rhs={rhs_layout:?} acc={accumulate} threads={threads} simd={simd}",
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
        product(&mut got, dst_rs, accumulate, view(&lhs_t, m, k, lhs_layout), &packed, n, threads, simd);
        assert_close(&what, &got, &cast::<T>(&want), tol);
    }

    /// The blocked product against the naive one: shapes that cross the `MC` and `KC` block
    /// edges and leave partial strips and panels, every layout of both operands, overwriting and
    /// accumulating, on 1 and 3 threads; and `dst`'s padding columns stay untouched.
    #[test]
    fn blocked_matches_naive() {
        if !simd_available() {
            return;
        }
        let mut rng = Rng::new(7);
        let shapes = [
            (1, 1, 1),
            (5, 3, 17),
            (7, 255, 16),
            (MC + 7, KC + 1, 2 * NR + 3),
            (2 * MC + 1, 2 * KC + 5, NR - 1),
            (13, 600, 40),
        ];
        for &(m, k, n) in &shapes {
            for lhs_layout in LAYOUTS {
                for rhs_layout in LAYOUTS {
                    for accumulate in [false, true] {
                        for threads in [1, 3] {
                            let what = format!("m={m} k={k} n={n} lhs={lhs_layout:?} rhs={rhs_layout:?} acc={accumulate} threads={threads}");
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
                            let ran = matmul_blocked(
                                &mut got,
                                dst_rs,
                                accumulate,
                                view(&lhs32, m, k, lhs_layout),
                                view(&rhs32, k, n, rhs_layout),
                                threads,
                            );
                            assert!(ran, "{what}: AVX2 and FMA are available");
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
        assert!(matmul_blocked(&mut got, n, false, lhs32, MatRef::new(&rhs32, k, n), 1));
        assert_close("strided lhs", &got, &cast::<f32>(&want), 2e-5);
    }

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
        for simd in simd_paths() {
            for m in 0..=13 {
                for k in [0, 1, 2, 7] {
                    for n in [1, 5, NR, NR + 1, 2 * NR + 7] {
                        for accumulate in [false, true] {
                            let shape = (m, k, n);
                            check::<f32>(
                                &mut rng,
                                shape,
                                Layout::RowMajor,
                                Layout::RowMajor,
                                accumulate,
                                1,
                                simd,
                                1e-5,
                            );
                            check::<f64>(
                                &mut rng,
                                shape,
                                Layout::RowMajor,
                                Layout::RowMajor,
                                accumulate,
                                1,
                                simd,
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
        for simd in simd_paths() {
            for (m, k, n) in [(1, 3, 17), (6, 9, 40), (13, 33, 21), (7, 1, 16)] {
                for lhs_layout in LAYOUTS {
                    for rhs_layout in LAYOUTS {
                        for accumulate in [false, true] {
                            let shape = (m, k, n);
                            check::<f32>(&mut rng, shape, lhs_layout, rhs_layout, accumulate, 1, simd, 1e-5);
                            check::<f64>(&mut rng, shape, lhs_layout, rhs_layout, accumulate, 1, simd, 1e-12);
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn matches_naive_at_recurrent_shapes_and_threaded() {
        let mut rng = Rng::new(3);
        for simd in simd_paths() {
            // The per-step shapes of an LSTM (B = 32, H = 64) forward and backward, an odd batch,
            // a long `k` (cut into slices by the microkernel), and more threads than panels.
            for (m, k, n) in [(32, 64, 256), (32, 256, 64), (13, 100, 50), (5, 2100, 20), (3, 8, 30)] {
                for threads in [1, 2, 3] {
                    for accumulate in [false, true] {
                        let shape = (m, k, n);
                        let (l, r) = (Layout::RowMajor, Layout::Transposed);
                        check::<f32>(&mut rng, shape, l, r, accumulate, threads, simd, 1e-5);
                        check::<f64>(&mut rng, shape, l, r, accumulate, threads, simd, 1e-12);
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
