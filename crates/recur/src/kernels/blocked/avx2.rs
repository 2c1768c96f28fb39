//! The AVX2 + FMA product for `f32`: a 6-row × 16-column microkernel in 15 of the 16 ymm registers.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{pack_lhs, pack_rhs, packed_len, Blocked, MatRef, Product, KC, MC, NR};

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

/// Computes columns `c0..c1` of the blocked product `job` ([`super::matmul_blocked`]).
///
/// # Safety
/// The views lie inside their slices, `dst` covers `(m − 1)·dst_rs + n` elements with
/// `dst_rs ≥ n` when `m > 1`, nobody else accesses columns `c0..c1` of `dst` meanwhile,
/// `c0 < c1 ≤ n`, and the CPU has AVX2 and FMA.
pub(super) unsafe fn blocked(job: Blocked<'_>, c0: usize, c1: usize) {
    super::BUFFERS.with(|buffers| {
        let mut buffers = buffers.borrow_mut();
        let (a_buf, b_buf) = &mut *buffers;
        // SAFETY: our contract.
        unsafe { blocked_with(job, c0, c1, a_buf, b_buf) }
    });
}

/// [`blocked`] with the packing buffers given.
///
/// # Safety
/// That of [`blocked`].
#[target_feature(enable = "avx2,fma")]
unsafe fn blocked_with(job: Blocked<'_>, c0: usize, c1: usize, a_buf: &mut Vec<f32>, b_buf: &mut Vec<f32>) {
    let (lhs, rhs) = (job.lhs, job.rhs);
    let (m, k) = (lhs.rows, lhs.cols);
    let width = c1 - c0;
    let panels = width.div_ceil(NR);
    let mut pc = 0;
    while pc < k {
        let kc = KC.min(k - pc);
        let sub =
            MatRef { data: &rhs.data[pc * rhs.rs + c0 * rhs.cs..], rows: kc, cols: width, rs: rhs.rs, cs: rhs.cs };
        let b_len = packed_len(kc, width);
        if b_buf.len() < b_len {
            b_buf.resize(b_len, 0.0);
        }
        pack_rhs(sub, b_buf);
        let load = job.accumulate || pc > 0;
        let mut ic = 0;
        while ic < m {
            let mc = MC.min(m - ic);
            pack_lhs::<MR>(lhs, ic, mc, pc, kc, a_buf);
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
                        let c = job.dst.add((ic + row) * job.dst_rs + col);
                        let prefetch = Prefetch::NONE;
                        Tile { a, a_rs: 1, a_cs: MR, b, depth: kc, load, prefetch }.write_rows(rows, c, job.dst_rs, w);
                    }
                    row += rows;
                }
            }
            ic += mc;
        }
        pc += kc;
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
