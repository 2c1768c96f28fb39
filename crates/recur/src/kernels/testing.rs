//! Test helpers shared by the kernel tests: a tiny seeded generator, closeness checks that print
//! the worst elements, and a central finite-difference gradient check.

use super::cpu::{self, CpuPath};
use super::packed::FORCE_PACKING;
use super::Float;

/// Runs `f` on every CPU path the machine supports (portable, AVX2, AVX-512: the pointwise passes,
/// the per-step and blocked products), each with the per-step weights packed whatever the sizes,
/// and once more on the widest path with them never packed, so every path gets tested, also on
/// small problems.
pub(super) fn for_each_instruction_set(mut f: impl FnMut(&str)) {
    let paths = cpu::supported_paths();
    let widest = *paths.last().unwrap_or(&CpuPath::Portable);
    let runs = paths.iter().map(|&p| (p, true)).chain([(widest, false)]);
    for (path, packing) in runs {
        FORCE_PACKING.with(|p| p.set(Some(packing)));
        let what = format!("{path}, {}", if packing { "packed" } else { "unpacked" });
        cpu::with_path(path, || f(&what));
    }
    FORCE_PACKING.with(|p| p.set(None));
}

/// A tiny deterministic generator (64-bit LCG, top 53 bits), so tests need no dependency.
pub(super) struct Rng(u64);

impl Rng {
    pub(super) fn new(seed: u64) -> Self {
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15).wrapping_add(1))
    }

    /// Uniform in `[-1, 1)`.
    pub(super) fn uniform(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
        ((self.0 >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0
    }

    /// `n` values uniform in `[-scale, scale)`.
    pub(super) fn vec(&mut self, n: usize, scale: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform() * scale).collect()
    }
}

/// `v` converted to `T`.
pub(super) fn cast<T: Float>(v: &[f64]) -> Vec<T> {
    v.iter().map(|&x| T::from_f64(x)).collect()
}

/// Asserts `|got − want| ≤ tol · max(1, |want|)` elementwise, printing the worst elements if not.
pub(super) fn assert_close<T: Float>(what: &str, got: &[T], want: &[T], tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    let mut bad: Vec<(f64, usize, f64, f64)> = got
        .iter()
        .zip(want)
        .enumerate()
        .map(|(i, (&g, &w))| {
            let (g, w) = (g.to_f64(), w.to_f64());
            let err = (g - w).abs() / w.abs().max(1.0);
            (if err.is_nan() { f64::INFINITY } else { err }, i, g, w)
        })
        .filter(|&(err, ..)| err > tol)
        .collect();
    if !bad.is_empty() {
        bad.sort_by(|a, b| b.0.total_cmp(&a.0));
        let worst: Vec<String> =
            bad.iter().take(5).map(|(err, i, g, w)| format!("[{i}] got {g:e} want {w:e} (err {err:e})")).collect();
        panic!("{what}: {} of {} elements off by more than {tol:e}: {}", bad.len(), got.len(), worst.join(", "));
    }
}

/// Asserts two buffers hold bitwise identical values.
pub(super) fn assert_bitwise_eq<T: Float>(what: &str, a: &[T], b: &[T]) {
    assert_eq!(a.len(), b.len(), "{what}: lengths differ");
    for (i, (x, y)) in a.iter().zip(b).enumerate() {
        assert!(x.to_f64().to_bits() == y.to_f64().to_bits(), "{what}[{i}]: {x:?} vs {y:?}");
    }
}

/// Central finite differences (`eps = 1e-6`) of `loss` w.r.t. every element of every buffer in
/// `params`, each compared with `analytic` (same layout): pass iff
/// `|analytic − numeric| ≤ 1e-5 + 1e-3·|numeric|`.
pub(super) fn check_gradients(
    what: &str,
    names: &[&str],
    params: &mut [Vec<f64>],
    analytic: &[Vec<f64>],
    loss: impl Fn(&[Vec<f64>]) -> f64,
) {
    const EPS: f64 = 1e-6;
    assert_eq!(names.len(), params.len());
    assert_eq!(analytic.len(), params.len());
    for p in 0..params.len() {
        assert_eq!(params[p].len(), analytic[p].len(), "{what}: {} gradient length", names[p]);
        for e in 0..params[p].len() {
            let saved = params[p][e];
            params[p][e] = saved + EPS;
            let up = loss(params);
            params[p][e] = saved - EPS;
            let down = loss(params);
            params[p][e] = saved;
            let numeric = (up - down) / (2.0 * EPS);
            let got = analytic[p][e];
            assert!(
                (got - numeric).abs() <= 1e-5 + 1e-3 * numeric.abs(),
                "{what}: d/d{}[{e}] analytic {got:e} vs numeric {numeric:e}",
                names[p]
            );
        }
    }
}

/// Checks the backward's contract from two runs of two passes over one forward each: with the
/// gradients reset between passes (`reset_passes`, the gradients after each pass) both passes give
/// bitwise the same result, so the backward reads its workspace without changing it; without the
/// reset (`accumulated`, after the second pass) every gradient doubled, except the `overwritten`
/// ones (`dh0`, `dc0`), which equal one pass's.
pub(super) fn check_repeatable_and_accumulating(
    names: &[&str],
    reset_passes: &[Vec<Vec<f64>>],
    accumulated: &[Vec<f64>],
    overwritten: &[&str],
) {
    let [first, second] = reset_passes else { panic!("expected two passes") };
    for ((name, a), b) in names.iter().zip(first).zip(second) {
        assert_bitwise_eq(&format!("{name}, second pass over the same workspace"), b, a);
    }
    for ((name, got), once) in names.iter().zip(accumulated).zip(first) {
        let factor = if overwritten.contains(name) { 1.0 } else { 2.0 };
        let want: Vec<f64> = once.iter().map(|v| factor * v).collect();
        assert_close(&format!("{name} after two accumulating passes"), got, &want, 1e-12);
    }
}

/// `Σ a ⊙ b`.
pub(super) fn dot(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// `batch_sizes` of packed sequences of `lengths` (sorted by decreasing length).
pub(super) fn batch_sizes(lengths: &[usize]) -> Vec<usize> {
    assert!(lengths.windows(2).all(|w| w[0] >= w[1]), "lengths must be sorted");
    let steps = lengths.first().copied().unwrap_or(0);
    (0..steps).map(|t| lengths.iter().filter(|&&len| len > t).count()).collect()
}

/// The packed rows of sequence `b`, in time order.
pub(super) fn packed_rows(lengths: &[usize], b: usize) -> Vec<usize> {
    let sizes = batch_sizes(lengths);
    let starts: Vec<usize> = sizes.iter().scan(0, |at, &n| Some(std::mem::replace(at, *at + n))).collect();
    (0..lengths[b]).map(|t| starts[t] + b).collect()
}

/// The rows `rows` of `buf` (`width` columns), one after another.
pub(super) fn gather_rows(buf: &[f64], width: usize, rows: &[usize]) -> Vec<f64> {
    rows.iter().flat_map(|&r| buf[r * width..(r + 1) * width].iter().copied()).collect()
}

/// The results of one run, as f64: the output `y`, the final states (`h_n`, then `c_n` for an
/// LSTM, each `(B, width)`), and the gradients in the order `[dx, d(initial states)…, d(weights)…]`.
pub(super) struct Flat {
    pub(super) y: Vec<f64>,
    pub(super) finals: Vec<Vec<f64>>,
    pub(super) grads: Vec<Vec<f64>>,
}

/// Holds a run over packed sequences of `lengths` to running every sequence alone (`alone(b)`,
/// batch 1, on its own rows): outputs, final states and input/state gradients per sequence, and
/// the weight gradients summed over the sequences, within `tol`. `y_width`, `x_width` and
/// `state_widths` are the columns of `y`, `x` and each state.
#[allow(clippy::too_many_arguments)]
pub(super) fn check_packed_against_alone(
    what: &str,
    lengths: &[usize],
    packed: &Flat,
    y_width: usize,
    x_width: usize,
    state_widths: &[usize],
    alone: impl Fn(usize) -> Flat,
    tol: f64,
) {
    let states = state_widths.len();
    let mut weight_sums: Vec<Vec<f64>> = packed.grads[1 + states..].iter().map(|g| vec![0.0; g.len()]).collect();
    for b in 0..lengths.len() {
        let one = alone(b);
        let rows = packed_rows(lengths, b);
        let at = format!("{what}, sequence {b} (length {})", lengths[b]);
        assert_close(&format!("{at}: y"), &gather_rows(&packed.y, y_width, &rows), &one.y, tol);
        assert_close(&format!("{at}: dx"), &gather_rows(&packed.grads[0], x_width, &rows), &one.grads[0], tol);
        for (k, &w) in state_widths.iter().enumerate() {
            let row = |v: &[f64]| v[b * w..(b + 1) * w].to_vec();
            assert_close(&format!("{at}: final state {k}"), &row(&packed.finals[k]), &one.finals[k], tol);
            assert_close(
                &format!("{at}: initial state gradient {k}"),
                &row(&packed.grads[1 + k]),
                &one.grads[1 + k],
                tol,
            );
        }
        for (sum, g) in weight_sums.iter_mut().zip(&one.grads[1 + states..]) {
            sum.iter_mut().zip(g).for_each(|(s, v)| *s += v);
        }
    }
    for (k, (sum, got)) in weight_sums.iter().zip(&packed.grads[1 + states..]).enumerate() {
        assert_close(&format!("{what}: weight gradient {k}, summed over sequences"), got, sum, tol);
    }
}
