//! The AVX-512 product for `f32`: a microkernel of up to 12 rows × 32 columns (two panels of the
//! shared packed layout, one zmm register each) in 24 accumulators of the 32 zmm registers, plus
//! the two panel vectors; the broadcasts of the left-hand elements fold into the FMAs. Partial
//! panels are written through masked loads and stores instead of a stack tile.

use std::arch::x86_64::*;
use std::ops::Range;

use super::{pack_lhs, pack_rhs, packed_len, Blocked, MatRef, Product, NR};

/// Most rows per microkernel call: `12 × 2` accumulators and 2 panel vectors use 26 of the 32
/// zmm registers (the broadcasts are memory operands of the FMAs), leaving room for the sums of
/// the few-row kernels that split `k`.
const MR: usize = 12;

/// Most values of `k` one microkernel call runs over in the per-step product; a longer `k` is cut
/// into equal slices (as on the AVX2 path).
const KC_MAX: usize = 1024;

/// Values of `k` per packed block of the blocked product: a `KC × 2·NR` pair of panel slices
/// (32 KiB of `f32`) stays in L1 (48 KiB on Sapphire Rapids, 32 on Zen 4) while the microkernel
/// runs down a block of rows.
const KC: usize = 256;

/// Rows of `lhs` per packed block of the blocked product (`MC × KC`, 144 KiB of `f32`, stays in
/// L2); a multiple of [`MR`].
const MC: usize = 144;
const _: () = assert!(MC.is_multiple_of(MR));

/// Computes panels `panels` of the product, two panels at a time.
///
/// # Safety
/// That of [`Product::run`], and the CPU supports AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn run(job: Product<f32>, panels: Range<usize>) {
    let (m, k) = (job.m, job.k);
    let kc = k.div_ceil(k.div_ceil(KC_MAX));
    let blocks = m.div_ceil(MR);
    let mut k0 = 0;
    while k0 < k {
        let depth = kc.min(k - k0);
        let load = job.accumulate || k0 > 0;
        let mut panel = panels.start;
        while panel < panels.end {
            let pair = (panels.end - panel).min(2);
            let col0 = panel * NR;
            let width = (job.n - col0).min(pair * NR);
            // SAFETY: rows `k0..k0 + depth` of panels `panel..panel + pair` lie inside `packed`
            // (our contract); the second panel's slice is `k·NR` values after the first's.
            let b = unsafe { job.packed.add(panel * k * NR + k0 * NR) };
            // As on the AVX2 path: while the blocks run down this pair of panel slices, they fetch
            // the next pair's slices into L2, each block a share of their cache lines.
            let next = (panels.end - panel - pair).min(2) * depth;
            let share = next.div_ceil(blocks);
            let next_b = b.wrapping_add(pair * k * NR);
            // Spread the rows evenly over the blocks (32 = 11+11+10, not 12+12+8).
            let mut row = 0;
            for block in 0..blocks {
                let rows = (m - row).div_ceil(blocks - block);
                let first = (block * share).min(next);
                let prefetch = Prefetch {
                    from: next_b,
                    first,
                    last: (first + share).min(next),
                    depth,
                    panel_stride: k * NR,
                    every: depth / share.max(1),
                };
                // SAFETY: rows `row..row + rows ≤ m`, columns `k0..k0 + depth ≤ k` of `lhs` and
                // the pair's columns of `dst` are inside their buffers (our contract).
                unsafe {
                    let a = job.lhs.add(row * job.lhs_rs + k0 * job.lhs_cs);
                    let c = job.dst.add(row * job.dst_rs + col0);
                    let tile = Tile { a, a_rs: job.lhs_rs, a_cs: job.lhs_cs, b, b_next: k * NR, depth, load, prefetch };
                    tile.write_rows(rows, pair, c, job.dst_rs, width);
                }
                row += rows;
            }
            panel += pair;
        }
        k0 += depth;
    }
}

/// Computes columns `c0..c1` of the blocked product `job` ([`super::matmul_blocked`]).
///
/// # Safety
/// The views lie inside their slices, `dst` covers `(m − 1)·dst_rs + n` elements with
/// `dst_rs ≥ n` when `m > 1`, nobody else accesses columns `c0..c1` of `dst` meanwhile,
/// `c0 < c1 ≤ n`, and the CPU supports AVX-512F.
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
#[target_feature(enable = "avx512f")]
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
            let mut panel = 0;
            while panel < panels {
                let pair = (panels - panel).min(2);
                let col = c0 + panel * NR;
                let w = (c1 - col).min(pair * NR);
                // SAFETY: panels `panel..panel + pair` of the packed slice hold `kc × NR` values
                // each, one after the other.
                let b = unsafe { b_buf.as_ptr().add(panel * kc * NR) };
                let mut row = 0;
                while row < mc {
                    let rows = (mc - row).min(MR);
                    // SAFETY: the strip of rows `row..row + rows` holds `kc × MR` values
                    // (`pack_lhs`), and rows `ic + row..` of columns `col..col + w` are inside
                    // `dst` and ours (our contract).
                    unsafe {
                        let a = a_buf.as_ptr().add(row * kc);
                        let c = job.dst.add((ic + row) * job.dst_rs + col);
                        let prefetch = Prefetch::NONE;
                        let tile = Tile { a, a_rs: 1, a_cs: MR, b, b_next: kc * NR, depth: kc, load, prefetch };
                        tile.write_rows(rows, pair, c, job.dst_rs, w);
                    }
                    row += rows;
                }
                panel += pair;
            }
            ic += mc;
        }
        pc += kc;
    }
}

/// One microkernel call's inputs: `ROWS` rows of `lhs` from `a` (strides `a_rs`, `a_cs`) over
/// `depth` values of `k`, one or two panel slices from `b` (`depth × NR` each, contiguous, the
/// second `b_next` values after the first), and whether to add to what `dst` holds (`load`) or
/// overwrite it.
#[derive(Clone, Copy)]
struct Tile {
    a: *const f32,
    a_rs: usize,
    a_cs: usize,
    b: *const f32,
    b_next: usize,
    depth: usize,
    load: bool,
    prefetch: Prefetch,
}

/// Cache lines a microkernel call asks the CPU to fetch into L2 while it runs: lines
/// `first..last` of the panel slices at `from` (line `l` is row `l % depth` of the slice
/// `l / depth` panels on, `panel_stride` values apart), one every `every` values of `k`.
/// Prefetching never faults and changes no result, so `from` needs no validity beyond being
/// computed without overflow.
#[derive(Clone, Copy)]
struct Prefetch {
    from: *const f32,
    first: usize,
    last: usize,
    depth: usize,
    panel_stride: usize,
    every: usize,
}

impl Prefetch {
    /// Fetches nothing.
    const NONE: Prefetch = Prefetch { from: std::ptr::null(), first: 0, last: 0, depth: 1, panel_stride: 0, every: 1 };

    /// The address of line `line`.
    #[inline(always)]
    fn line(&self, line: usize) -> *const f32 {
        self.from.wrapping_add((line % self.depth) * NR + (line / self.depth) * self.panel_stride)
    }
}

/// The write masks of the two 16-lane halves of a tile `width` (1 to 32) columns wide.
#[inline(always)]
fn column_masks(width: usize) -> [__mmask16; 2] {
    let bits = |w: usize| if w >= NR { !0 } else { (1u16 << w) - 1 };
    [bits(width), bits(width.saturating_sub(NR))]
}

impl Tile {
    /// [`Tile::kernel`] for `rows` (1 to [`MR`]) rows and `pair` (1 or 2) panels. Fewer than 8
    /// accumulators are too few to hide the FMA latency (4 cycles, 2 per cycle): those kernels
    /// also split `k` into `U` sums.
    ///
    /// # Safety
    /// That of [`Tile::kernel`] with `ROWS = rows`, `V = pair`.
    #[target_feature(enable = "avx512f")]
    unsafe fn write_rows(self, rows: usize, pair: usize, c: *mut f32, c_rs: usize, width: usize) {
        let masks = column_masks(width);
        macro_rules! dispatch {
            ($($rows:literal => $u1:literal, $u2:literal;)*) => {
                match (rows, pair) {
                    $(
                        ($rows, 1) => self.kernel::<$rows, 1, $u1>(c, c_rs, masks),
                        ($rows, 2) => self.kernel::<$rows, 2, $u2>(c, c_rs, masks),
                    )*
                    (_, 1) => self.kernel::<MR, 1, 1>(c, c_rs, masks),
                    _ => self.kernel::<MR, 2, 1>(c, c_rs, masks),
                }
            };
        }
        // SAFETY: our contract, with `ROWS` the number of rows and `V` the panels given.
        unsafe {
            dispatch! {
                1 => 8, 4;
                2 => 4, 2;
                3 => 4, 2;
                4 => 2, 1;
                5 => 2, 1;
                6 => 2, 1;
                7 => 2, 1;
                8 => 1, 1;
                9 => 1, 1;
                10 => 1, 1;
                11 => 1, 1;
            }
        }
    }

    /// The microkernel: `c (ROWS × width) [+]= a · b` in `U × ROWS × V` zmm accumulators, set `u`
    /// summing the values of `k` that are `u` modulo `U`; only the columns `masks` select are
    /// read or written.
    ///
    /// # Safety
    /// `a` covers `ROWS × depth` elements at its strides, `b` covers `V` panel slices of
    /// `depth × NR`, `c` covers `ROWS` rows of the columns the masks select (of `V·NR`) at stride
    /// `c_rs`, owned by the caller, with `V = 2` only when the second half holds a column; the CPU
    /// supports AVX-512F.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn kernel<const ROWS: usize, const V: usize, const U: usize>(
        self,
        c: *mut f32,
        c_rs: usize,
        masks: [__mmask16; 2],
    ) {
        // SAFETY: `__m512` is plain data, all-zero bits are sixteen 0.0 lanes.
        let mut sums: [[[__m512; V]; ROWS]; U] = unsafe { std::mem::zeroed() };
        if self.load {
            // Start fetching what the sum is added to at the end, while the FMAs run.
            for i in 0..ROWS {
                for v in 0..V {
                    // Prefetching reads nothing the program sees and never faults.
                    _mm_prefetch::<_MM_HINT_T0>(c.wrapping_add(i * c_rs + v * NR).cast());
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
        let (mut line, mut countdown) = (self.prefetch.first, 0);
        let every = self.prefetch.every.max(1).div_ceil(U);
        while p < full {
            if countdown == 0 {
                if line < self.prefetch.last {
                    // Prefetching reads nothing the program sees and never faults.
                    _mm_prefetch::<_MM_HINT_T1>(self.prefetch.line(line).cast());
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
            for v in 0..V {
                let mut acc = sums[0][i][v];
                for more in &sums[1..] {
                    acc = _mm512_add_ps(acc, more[i][v]);
                }
                // SAFETY: the lanes `masks[v]` selects are columns of row `i` of `c` (our
                // contract); masked-off lanes are neither read nor written and never fault.
                unsafe {
                    let at = c.add(i * c_rs + v * NR);
                    if self.load {
                        acc = _mm512_add_ps(_mm512_maskz_loadu_ps(masks[v], at), acc);
                    }
                    _mm512_mask_storeu_ps(at, masks[v], acc);
                }
            }
        }
    }

    /// One value `p` of `k`: row `p` of the `V` panel slices times column `p` of `a` (whose rows
    /// start at `rows`), added into `acc`.
    ///
    /// # Safety
    /// As [`Tile::kernel`], and `p < depth`.
    #[target_feature(enable = "avx512f")]
    #[inline]
    unsafe fn step<const ROWS: usize, const V: usize>(
        self,
        acc: &mut [[__m512; V]; ROWS],
        rows: &[*const f32; ROWS],
        p: usize,
    ) {
        // SAFETY: row `p < depth` of each of the `V` panel slices has `NR` values, and element
        // `(i, p)` of `a` is inside `lhs` (our contract).
        unsafe {
            let b = self.b.add(p * NR);
            let mut panel = [_mm512_setzero_ps(); V];
            for (v, x) in panel.iter_mut().enumerate() {
                *x = _mm512_loadu_ps(b.add(v * self.b_next));
            }
            let off = p * self.a_cs;
            for (acc, row) in acc.iter_mut().zip(rows) {
                let a = _mm512_set1_ps(*row.add(off));
                for (x, &b) in acc.iter_mut().zip(&panel) {
                    *x = _mm512_fmadd_ps(a, b, *x);
                }
            }
        }
    }
}
