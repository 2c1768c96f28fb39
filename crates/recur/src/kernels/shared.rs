//! Pieces the LSTM, GRU and RNN kernels share: step-block views, the input projection, the
//! weight gradients taken as one product over all steps, and the AVX2 dispatch of the pointwise
//! passes.

use super::gemm::{matmul, MatRef};
use super::{Dims, Float, Input, Span};

/// The rows of span `read` (shared) and of span `write` (mutable) of `buf`, `width` columns.
///
/// Used to read the previous step's state while writing this step's, from one buffer.
#[inline]
pub(super) fn span_pair<T>(buf: &mut [T], width: usize, read: Span, write: Span) -> (&[T], &mut [T]) {
    let (r, w) = (read.range(width), write.range(width));
    if r.end <= w.start {
        let (before, from_write) = buf.split_at_mut(w.start);
        (&before[r], &mut from_write[..w.len()])
    } else {
        assert!(w.end <= r.start, "a step cannot read the rows it writes");
        let (before, from_read) = buf.split_at_mut(r.start);
        (&from_read[..r.len()], &mut before[w])
    }
}

/// The state a step of `rows` rows starts from: the first rows of the previous step's output
/// `read`, or `init` (`h0`, `c0`) for the first step. When the previous step ran fewer rows
/// (packed sequences in reverse, where sequences join as the walk goes back in time), the joining
/// rows start from `init` and both parts are gathered into `stage`.
#[inline]
pub(super) fn prev_state<'a, T: Copy>(
    read: Option<&'a [T]>,
    init: &'a [T],
    width: usize,
    rows: usize,
    stage: &'a mut [T],
) -> &'a [T] {
    let len = rows * width;
    match read {
        None => &init[..len],
        Some(read) if read.len() >= len => &read[..len],
        Some(read) => {
            let stage = &mut stage[..len];
            stage[..read.len()].copy_from_slice(read);
            stage[read.len()..].copy_from_slice(&init[read.len()..len]);
            stage
        }
    }
}

/// Panics (an internal invariant: the ops layer validates user input) unless `batch_sizes`, when
/// given, describes packed sequences: `T` values, the first `B`, none zero, never increasing.
pub(super) fn check_layout(d: Dims) {
    if let Some(sizes) = d.batch_sizes {
        assert_eq!(sizes.len(), d.seq_len, "batch_sizes must have T entries");
        assert!(sizes.first().is_none_or(|&first| first == d.batch), "batch_sizes[0] must be B");
        assert!(sizes.iter().all(|&s| s > 0), "batch_sizes must not hold 0");
        assert!(sizes.windows(2).all(|w| w[0] >= w[1]), "batch_sizes must not increase");
    }
}

/// After step `cur`, copies into `fin (B, width)` the rows of its output `out (cur.rows, width)`
/// whose sequences end at this step: all of them at the last step; with packed sequences running
/// forward, also those absent from the next step.
#[inline]
pub(super) fn take_final<T: Copy>(d: Dims, reverse: bool, cur: Span, out: &[T], width: usize, fin: &mut [T]) {
    let next_rows = d.after(cur, reverse).map_or(0, |next| next.rows.min(cur.rows));
    fin[next_rows * width..cur.rows * width].copy_from_slice(&out[next_rows * width..cur.rows * width]);
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

impl<T> Input<'_, T> {
    /// Panics (an internal invariant) unless the input fits `d` and a layer whose input side has
    /// `gate_width` gates; returns the length of its gradient buffer `dx`: `N·I` for rows, `V·G·H`
    /// for a projected table.
    pub(super) fn check(&self, d: Dims, gate_width: usize) -> usize {
        match *self {
            Input::Rows(x) => {
                assert_eq!(x.len(), d.rows() * d.input_size, "x must be (T, B, I)");
                x.len()
            }
            Input::Projected { table, ids } => {
                assert_eq!(ids.len(), d.rows(), "a projected input needs one id per row");
                assert!(gate_width > 0 && table.len() % gate_width == 0, "the projected table must be (V, G·H)");
                let vocab = table.len() / gate_width;
                assert!(ids.iter().all(|&id| (id as usize) < vocab), "every id must be below the table's V rows");
                table.len()
            }
        }
    }
}

/// `gates (N, G·H) = x (N, I) · w_ihᵀ + b_ih`: the input projection of every step at once (for a
/// projected input, each row's table row).
pub(super) fn project_inputs<T: Float>(
    d: Dims,
    gate_width: usize,
    x: Input<'_, T>,
    w_ih: &[T],
    b_ih: Option<&[T]>,
    gates: &mut [T],
) {
    let rows = d.rows();
    let gates = &mut gates[..rows * gate_width];
    let x = match x {
        Input::Rows(x) => x,
        Input::Projected { table, ids } => {
            for (row, &id) in gates.chunks_exact_mut(gate_width).zip(ids) {
                row.copy_from_slice(&table[id as usize * gate_width..(id as usize + 1) * gate_width]);
            }
            return;
        }
    };
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

/// After the time loop, the input side of the backward over all `N` rows at once:
/// `dx (N, I) += dgates · w_ih`, `dw_ih (G·H, I) += dgatesᵀ · x` and `db_ih += Σ_rows dgates`;
/// for a projected input, `dtable (V, G·H) += ` each row's `dgates` at its id, in `dx`.
#[allow(clippy::too_many_arguments)]
pub(super) fn input_grads<T: Float>(
    d: Dims,
    gate_width: usize,
    dgates: &[T],
    x: Input<'_, T>,
    w_ih: &[T],
    dx: &mut [T],
    dw_ih: &mut [T],
    db_ih: Option<&mut [T]>,
) {
    let rows = d.rows();
    let dgates = &dgates[..rows * gate_width];
    match x {
        Input::Rows(x) => {
            let dgates_mat = MatRef::new(dgates, rows, gate_width);
            matmul(dx, d.input_size, true, dgates_mat, MatRef::new(w_ih, gate_width, d.input_size));
            matmul(dw_ih, d.input_size, true, dgates_mat.t(), MatRef::new(x, rows, d.input_size));
            add_column_sums(dgates, gate_width, db_ih);
        }
        Input::Projected { ids, .. } => {
            for (row, &id) in dgates.chunks_exact(gate_width).zip(ids) {
                let dst = &mut dx[id as usize * gate_width..(id as usize + 1) * gate_width];
                for (d, &g) in dst.iter_mut().zip(row) {
                    *d += g;
                }
            }
        }
    }
}

/// Length of the `gather` buffer [`hidden_weight_grad`] needs: `N·P` when the batch shrinks
/// along the sequence, else 0.
pub(super) fn gather_len(d: Dims) -> usize {
    if d.varying() {
        d.rows() * d.proj_size
    } else {
        0
    }
}

/// Length of one step's staging buffer for a state of `width` columns ([`prev_state`]): `B·width`
/// when the batch shrinks along the sequence, else 0.
pub(super) fn stage_len(d: Dims, width: usize) -> usize {
    if d.varying() {
        d.batch * width
    } else {
        0
    }
}

/// `dw_hh (G·H, P) += Σ_t dgates[t]ᵀ · h_prev(t)`, where `h_prev(t)` is `y` of the step processed
/// before `t`, or `h0` for the first.
///
/// With a full batch, the `T − 1` steps that read `y` are contiguous in `y` (shifted by one
/// block), so they take one product, and the step that read `h0` a second, small one. When the
/// batch shrinks, every step's `h_prev` is first gathered into `gather` (length [`gather_len`]),
/// then one product covers all steps.
#[allow(clippy::too_many_arguments)]
pub(super) fn hidden_weight_grad<T: Float>(
    d: Dims,
    gate_width: usize,
    reverse: bool,
    dgates: &[T],
    y: &[T],
    h0: &[T],
    dw_hh: &mut [T],
    gather: &mut [T],
) {
    if d.seq_len == 0 {
        return;
    }
    let (b, p) = (d.batch, d.proj_size);
    let dw_hh = &mut dw_hh[..gate_width * p];
    if d.varying() {
        let rows = d.rows();
        let gather = &mut gather[..rows * p];
        for cur in d.walk(reverse) {
            let dst = &mut gather[cur.range(p)];
            let read = d.before(cur, reverse).map(|prev| &y[prev.range(p)]);
            let copied = read.map_or(0, |r| r.len().min(dst.len()));
            if let Some(read) = read {
                dst[..copied].copy_from_slice(&read[..copied]);
            }
            dst[copied..].copy_from_slice(&h0[copied..cur.rows * p]);
        }
        let dgates = MatRef::new(&dgates[..rows * gate_width], rows, gate_width);
        matmul(dw_hh, p, true, dgates.t(), MatRef::new(gather, rows, p));
        return;
    }
    let step_gates = b * gate_width;
    let shifted_rows = (d.seq_len - 1) * b;
    // Forward: step t ≥ 1 read y[t − 1]. Reverse: step t ≤ T − 2 read y[t + 1].
    let (dgates_from_y, y_read, dgates_from_h0) = if reverse {
        (&dgates[..shifted_rows * gate_width], &y[b * p..d.seq_len * b * p], block(dgates, step_gates, d.seq_len - 1))
    } else {
        (&dgates[step_gates..d.seq_len * step_gates], &y[..shifted_rows * p], &dgates[..step_gates])
    };
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

/// Defines a pointwise function (one batch row of a cell's pass) three times, portable, compiled
/// for AVX2 and compiled for AVX-512, and runs the copy of the CPU path ([`super::cpu::path`]):
/// 8 or 16 lanes instead of SSE2's 4. The copies compute the same values (no sum is regrouped:
/// the passes are elementwise), only wider.
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

            /// Safety: the CPU must support AVX-512 F, BW, DQ and VL.
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512dq,avx512vl")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx512<$t: $bound $(, const $c: bool)*>($($arg: $ty),*) {
                body::<$t $(, $c)*>($($arg),*)
            }

            #[cfg(target_arch = "x86_64")]
            match super::cpu::path() {
                // SAFETY: `cpu::path` only answers a path the CPU supports, the only requirement
                // of `avx512` beyond those of its safe body.
                super::cpu::CpuPath::Avx512 => return unsafe { avx512::<$t $(, $c)*>($($arg),*) },
                // SAFETY: as above, for AVX2.
                super::cpu::CpuPath::Avx2 => return unsafe { avx2::<$t $(, $c)*>($($arg),*) },
                super::cpu::CpuPath::Portable => {}
            }
            portable::<$t $(, $c)*>($($arg),*)
        }
    };
}
pub(super) use pointwise;

#[cfg(test)]
mod tests {
    use super::super::gemm::matmul_naive;
    use super::super::testing::{assert_close, Rng};
    use super::*;

    /// A projected input (`Input::Projected`, the table `e · w_ihᵀ + b_ih` computed naively) gives
    /// the gates of the rows it stands for, and its table gradient gives back the gradients of
    /// the rows' path: the embedding's (`dtable · w_ih`, the rows' `dx` summed by id), `w_ih`'s
    /// (`dtableᵀ · e`) and `b_ih`'s (column sums), while it leaves `dw_ih` and `db_ih` alone. For a
    /// full batch and a packed one.
    #[test]
    fn a_projected_input_gives_what_its_rows_give() {
        let (i, gw, v) = (5, 6, 7);
        let packed = [4, 3, 3, 1];
        for batch_sizes in [None, Some(&packed[..])] {
            let d = Dims { seq_len: 4, batch: 4, batch_sizes, input_size: i, hidden_size: gw, proj_size: gw };
            let rows = d.rows();
            let mut rng = Rng::new(7);
            let (e, w_ih, b_ih) = (rng.vec(v * i, 1.0), rng.vec(gw * i, 1.0), rng.vec(gw, 1.0));
            // Every id used, some more than once.
            let ids: Vec<u32> = (0..rows).map(|r| ((r * 3 + 1) % v) as u32).collect();
            let x: Vec<f64> = ids.iter().flat_map(|&id| e[id as usize * i..(id as usize + 1) * i].to_vec()).collect();
            let mut table = vec![0.0; v * gw];
            for (row, e_row) in table.chunks_exact_mut(gw).zip(e.chunks_exact(i)) {
                for (g, t) in row.iter_mut().enumerate() {
                    *t = b_ih[g] + (0..i).map(|k| e_row[k] * w_ih[g * i + k]).sum::<f64>();
                }
            }
            let projected = Input::Projected { table: &table, ids: &ids };
            assert_eq!(Input::Rows(&x).check(d, gw), rows * i);
            assert_eq!(projected.check(d, gw), v * gw);

            let mut want = vec![0.0; rows * gw];
            project_inputs(d, gw, Input::Rows(&x), &w_ih, Some(&b_ih), &mut want);
            let mut got = vec![f64::NAN; rows * gw];
            project_inputs(d, gw, projected, &w_ih, Some(&b_ih), &mut got);
            assert_close("gates", &got, &want, 1e-12);

            let dgates = rng.vec(rows * gw, 1.0);
            let (mut dx, mut dw, mut db) = (vec![0.0; rows * i], vec![0.0; gw * i], vec![0.0; gw]);
            input_grads(d, gw, &dgates, Input::Rows(&x), &w_ih, &mut dx, &mut dw, Some(&mut db));
            let mut dtable = vec![0.0; v * gw];
            let (mut dw_untouched, mut db_untouched) = (vec![0.0; gw * i], vec![0.0; gw]);
            input_grads(d, gw, &dgates, projected, &w_ih, &mut dtable, &mut dw_untouched, Some(&mut db_untouched));
            assert!(dw_untouched.iter().chain(&db_untouched).all(|&g| g == 0.0), "w_ih and b_ih are the caller's");

            let mut de_want = vec![0.0; v * i];
            for (r, &id) in ids.iter().enumerate() {
                for k in 0..i {
                    de_want[id as usize * i + k] += dx[r * i + k];
                }
            }
            let mut de = vec![0.0; v * i];
            matmul_naive(&mut de, i, false, MatRef::new(&dtable, v, gw), MatRef::new(&w_ih, gw, i));
            assert_close("embedding gradient", &de, &de_want, 1e-12);
            let mut dw_from_table = vec![0.0; gw * i];
            matmul_naive(&mut dw_from_table, i, false, MatRef::new(&dtable, v, gw).t(), MatRef::new(&e, v, i));
            assert_close("w_ih gradient", &dw_from_table, &dw, 1e-12);
            let db_from_table: Vec<f64> = (0..gw).map(|g| (0..v).map(|row| dtable[row * gw + g]).sum()).collect();
            assert_close("b_ih gradient", &db_from_table, &db, 1e-12);
        }
    }

    #[test]
    #[should_panic(expected = "every id must be below the table's V rows")]
    fn a_projected_input_with_an_id_past_the_table_is_refused() {
        let d = Dims { seq_len: 2, batch: 1, batch_sizes: None, input_size: 3, hidden_size: 2, proj_size: 2 };
        Input::Projected { table: &[0.0f64; 4], ids: &[0, 2] }.check(d, 2);
    }
}
