//! The CRF's lattice algorithms over plain slices: the forward algorithm (the log-partition
//! `log Z`), the backward algorithm (the marginals, which are the gradient of `log Z`) and
//! Viterbi. No tensors, no allocation beyond the results and one sequence's workspace.
//!
//! Layout: emissions time-major, `e[(t · B + b) · K + j]` for step `t`, sequence `b`, tag `j`;
//! `trans[i · K + j]` scores tag `i` followed by tag `j`. Sequence `b` has `lengths[b] ≥ 1` steps.
//!
//! Every log-sum-exp is exact in the sense of `torch.logsumexp` (shifted by the maximum, an
//! infinite maximum left unshifted). The recurrences take a faster route to the same numbers: per
//! step and sequence, `log Σ_i exp(α_i + trans[i, j])` is `m + c_j + ln Σ_i exp(α_i − m) ·
//! exp(trans[i, j] − c_j)` with `m = max α`, `c_j = max_i trans[i, j]` and the exponentiated
//! transitions computed once per call, so a step costs K exponentials and a K × K multiply-add
//! instead of K² exponentials. Where that sum falls below [`Real::SAFE`] (its terms may have
//! underflowed, e.g. when the best predecessors are joined by a forbidden −1e4 transition), that
//! entry is recomputed by the exact log-sum-exp; the results agree with the exact ones to rounding.

use candle_core::WithDType;

/// The float types the lattice runs in, with what the algorithms need beyond candle's `WithDType`.
pub(super) trait Real: WithDType {
    /// A sum of at most K terms each ≤ 1 at or above this is accurate even if some terms
    /// underflowed (they are below the smallest normal number, ~1e−38 in f32, ~1e−308 in f64).
    const SAFE: Self;
    /// A scale `exp(x)` with `x` at most this cannot overflow, and terms that underflowed before
    /// scaling stay negligible after it.
    const LIMIT: Self;
    /// −∞.
    const NEG_INFINITY: Self;
    /// eˣ.
    fn exp(self) -> Self;
    /// ln x.
    fn ln(self) -> Self;
    /// Neither infinite nor NaN.
    fn is_finite(self) -> bool;
}

impl Real for f32 {
    const SAFE: Self = 1e-25;
    const LIMIT: Self = 60.0;
    const NEG_INFINITY: Self = f32::NEG_INFINITY;
    fn exp(self) -> Self {
        f32::exp(self)
    }
    fn ln(self) -> Self {
        f32::ln(self)
    }
    fn is_finite(self) -> bool {
        f32::is_finite(self)
    }
}

impl Real for f64 {
    const SAFE: Self = 1e-280;
    const LIMIT: Self = 600.0;
    const NEG_INFINITY: Self = f64::NEG_INFINITY;
    fn exp(self) -> Self {
        f64::exp(self)
    }
    fn ln(self) -> Self {
        f64::ln(self)
    }
    fn is_finite(self) -> bool {
        f64::is_finite(self)
    }
}

/// One batch of emissions and the CRF's parameters.
pub(super) struct Lattice<'a, R> {
    /// `K`.
    pub num_tags: usize,
    /// `B`.
    pub batch: usize,
    /// `(B)`: the steps of each sequence, each ≥ 1 and ≤ `T`.
    pub lengths: &'a [usize],
    /// `(T, B, K)`.
    pub emissions: &'a [R],
    /// `(K)`.
    pub start: &'a [R],
    /// `(K)`.
    pub end: &'a [R],
    /// `(K, K)`.
    pub transitions: &'a [R],
}

/// The gradient of each sequence's `log Z_b` w.r.t. the emissions and the parameters.
pub(super) struct Marginals<R> {
    /// `(T, B, K)`: `p(y_t = j)` for sequence `b`, zero at its padded steps.
    pub emissions: Vec<R>,
    /// `(B, K)`: `p(y_0 = j)`.
    pub start: Vec<R>,
    /// `(B, K)`: `p(y_{n−1} = j)`.
    pub end: Vec<R>,
    /// `(B, K, K)`: `Σ_t p(y_{t−1} = i, y_t = j)`.
    pub transitions: Vec<R>,
}

/// The shift of a log-sum-exp: the maximum, or 0 when it is infinite or NaN (as PyTorch).
fn shift<R: Real>(max: R) -> R {
    if max.is_finite() {
        max
    } else {
        R::zero()
    }
}

fn max<R: Real>(values: impl Iterator<Item = R>) -> R {
    values.fold(R::NEG_INFINITY, |m, v| if v > m { v } else { m })
}

/// `log Σ exp(values)`, exactly as `torch.logsumexp`.
fn log_sum_exp<R: Real>(values: impl Iterator<Item = R> + Clone) -> R {
    let m = shift(max(values.clone()));
    let mut sum = R::zero();
    for v in values {
        sum += (v - m).exp();
    }
    sum.ln() + m
}

/// `exp(table[i, j] − c_j)` of a K × K table with `c_j = max_i table[i, j]` (the column
/// maxima, shifted as by [`shift`]), and the `c_j`.
fn exp_by_column<R: Real>(table: &[R], k: usize) -> (Vec<R>, Vec<R>) {
    let shifts: Vec<R> = (0..k).map(|j| shift(max((0..k).map(|i| table[i * k + j])))).collect();
    let scaled = table.iter().enumerate().map(|(idx, &x)| (x - shifts[idx % k]).exp()).collect();
    (scaled, shifts)
}

impl<R: Real> Lattice<'_, R> {
    fn emission(&self, t: usize, b: usize) -> &[R] {
        let k = self.num_tags;
        &self.emissions[(t * self.batch + b) * k..(t * self.batch + b + 1) * k]
    }

    /// `log Z_b` of each sequence, `(B)`, and its gradient when `marginals` is set.
    pub fn log_partition(&self, marginals: bool) -> (Vec<R>, Option<Marginals<R>>) {
        let (k, batch) = (self.num_tags, self.batch);
        let seq_len = self.emissions.len() / (batch * k).max(1);
        let trans = self.transitions;
        // exp(trans[i, j] − max_i trans[i, j]) for the forward sums over predecessors i.
        let (by_column, column_max) = exp_by_column(trans, k);
        // exp(trans[i, j] − max_j trans[i, j]) for the backward sums over successors j, stored
        // transposed ([j · K + i]) so those sums run as the forward ones do.
        let (by_row, row_max) = if marginals {
            let transposed: Vec<R> = (0..k * k).map(|idx| trans[(idx % k) * k + idx / k]).collect();
            exp_by_column(&transposed, k)
        } else {
            (Vec::new(), Vec::new())
        };
        let global_max = shift(max(trans.iter().copied()));
        let by_global: Vec<R> =
            if marginals { trans.iter().map(|&x| (x - global_max).exp()).collect() } else { Vec::new() };
        let mut grads = marginals.then(|| Marginals {
            emissions: vec![R::zero(); seq_len * batch * k],
            start: vec![R::zero(); batch * k],
            end: vec![R::zero(); batch * k],
            transitions: vec![R::zero(); batch * k * k],
        });
        let mut log_z = Vec::with_capacity(batch);
        // alpha[t · K + j]: log of the summed exp-scores of the prefixes up to step t ending in j.
        let mut alpha = vec![R::zero(); seq_len * k];
        let mut scaled = vec![R::zero(); k];
        let mut sums = vec![R::zero(); k];
        for (b, &len) in self.lengths.iter().enumerate() {
            for (a, (&s, &e)) in alpha[..k].iter_mut().zip(self.start.iter().zip(self.emission(0, b))) {
                *a = s + e;
            }
            for t in 1..len {
                let (done, rest) = alpha.split_at_mut(t * k);
                let (prev, next) = (&done[(t - 1) * k..], &mut rest[..k]);
                let m = shift(max(prev.iter().copied()));
                for (u, &a) in scaled.iter_mut().zip(prev) {
                    *u = (a - m).exp();
                }
                sums.fill(R::zero());
                for (&u, row) in scaled.iter().zip(by_column.chunks_exact(k)) {
                    for (s, &w) in sums.iter_mut().zip(row) {
                        *s += u * w;
                    }
                }
                for (j, (out, &e)) in next.iter_mut().zip(self.emission(t, b)).enumerate() {
                    let s = sums[j];
                    let lse = if s >= R::SAFE && s.is_finite() {
                        s.ln() + (m + column_max[j])
                    } else {
                        log_sum_exp(prev.iter().enumerate().map(|(i, &a)| a + trans[i * k + j]))
                    };
                    *out = lse + e;
                }
            }
            let last = &alpha[(len - 1) * k..len * k];
            let z = log_sum_exp(last.iter().zip(self.end).map(|(&a, &e)| a + e));
            log_z.push(z);
            if let Some(g) = grads.as_mut() {
                self.backward(b, len, z, &alpha, (&by_row, &row_max), (&by_global, global_max), g);
            }
        }
        (log_z, grads)
    }

    /// The backward algorithm for sequence `b`: writes its marginals into `g`.
    #[allow(clippy::too_many_arguments)]
    fn backward(
        &self,
        b: usize,
        len: usize,
        log_z: R,
        alpha: &[R],
        (by_row, row_max): (&[R], &[R]),
        (by_global, global_max): (&[R], R),
        g: &mut Marginals<R>,
    ) {
        let (k, batch) = (self.num_tags, self.batch);
        let trans = self.transitions;
        let unary = |t: usize, beta: &[R], g: &mut Marginals<R>| {
            let out = &mut g.emissions[(t * batch + b) * k..(t * batch + b + 1) * k];
            for ((p, &a), &be) in out.iter_mut().zip(&alpha[t * k..(t + 1) * k]).zip(beta) {
                *p = (a + be - log_z).exp();
            }
        };
        // beta[j]: log of the summed exp-scores of the suffixes after step t given y_t = j.
        let mut beta: Vec<R> = self.end.to_vec();
        unary(len - 1, &beta, g);
        g.end[b * k..(b + 1) * k].copy_from_slice(&g.emissions[((len - 1) * batch + b) * k..][..k]);
        let mut w = vec![R::zero(); k];
        let mut v = vec![R::zero(); k];
        let mut u = vec![R::zero(); k];
        let mut sums = vec![R::zero(); k];
        for t in (1..len).rev() {
            let pairwise = &mut g.transitions[b * k * k..(b + 1) * k * k];
            for ((w, &e), &be) in w.iter_mut().zip(self.emission(t, b)).zip(&beta) {
                *w = e + be;
            }
            let mw = shift(max(w.iter().copied()));
            for (v, &x) in v.iter_mut().zip(&w) {
                *v = (x - mw).exp();
            }
            // p(y_{t−1} = i, y_t = j) = exp(alpha_{t−1}[i] + trans[i, j] + w[j] − log Z).
            let prev = &alpha[(t - 1) * k..t * k];
            let ma = shift(max(prev.iter().copied()));
            let scale_log = ma + mw + global_max - log_z;
            if scale_log <= R::LIMIT && scale_log.is_finite() {
                let scale = scale_log.exp();
                for (u, &a) in u.iter_mut().zip(prev) {
                    *u = (a - ma).exp() * scale;
                }
                for ((&ui, row), out) in u.iter().zip(by_global.chunks_exact(k)).zip(pairwise.chunks_exact_mut(k)) {
                    for ((o, &e), &vj) in out.iter_mut().zip(row).zip(&v) {
                        *o += ui * e * vj;
                    }
                }
            } else {
                for (i, &a) in prev.iter().enumerate() {
                    for j in 0..k {
                        pairwise[i * k + j] += (a + trans[i * k + j] + w[j] - log_z).exp();
                    }
                }
            }
            // beta_{t−1}[i] = log Σ_j exp(trans[i, j] + w[j]).
            sums.fill(R::zero());
            for (&vj, column) in v.iter().zip(by_row.chunks_exact(k)) {
                for (s, &e) in sums.iter_mut().zip(column) {
                    *s += e * vj;
                }
            }
            for (i, (be, &s)) in beta.iter_mut().zip(&sums).enumerate() {
                *be = if s >= R::SAFE && s.is_finite() {
                    s.ln() + (mw + row_max[i])
                } else {
                    log_sum_exp((0..k).map(|j| trans[i * k + j] + w[j]))
                };
            }
            unary(t - 1, &beta, g);
        }
        g.start[b * k..(b + 1) * k].copy_from_slice(&g.emissions[b * k..(b + 1) * k]);
    }

    /// The Viterbi path of each sequence, computed as pytorch-crf's `_viterbi_decode` does:
    /// `(score[i] + trans[i, j]) + e_t[j]`, the first maximum winning.
    pub fn viterbi(&self) -> Vec<Vec<u32>> {
        let k = self.num_tags;
        let trans = self.transitions;
        let mut paths = Vec::with_capacity(self.batch);
        for (b, &len) in self.lengths.iter().enumerate() {
            let mut score: Vec<R> = self.start.iter().zip(self.emission(0, b)).map(|(&s, &e)| s + e).collect();
            let mut next = score.clone();
            // history[(t − 1) · K + j]: the best tag before tag j at step t.
            let mut history = vec![0u32; (len - 1) * k];
            for t in 1..len {
                let emit = self.emission(t, b);
                let from = &mut history[(t - 1) * k..t * k];
                // Predecessor i = 0 first, then each later i where strictly better (vectorised over j).
                for ((n, &w), &e) in next.iter_mut().zip(&trans[..k]).zip(emit) {
                    *n = score[0] + w + e;
                }
                from.fill(0);
                for (i, row) in trans.chunks_exact(k).enumerate().skip(1) {
                    let s = score[i];
                    for (((n, f), &w), &e) in next.iter_mut().zip(from.iter_mut()).zip(row).zip(emit) {
                        let candidate = s + w + e;
                        if candidate > *n {
                            *n = candidate;
                            *f = i as u32;
                        }
                    }
                }
                std::mem::swap(&mut score, &mut next);
            }
            let (last, _) = argmax(score.iter().zip(self.end).map(|(&s, &e)| s + e));
            let mut path = vec![last as u32; len];
            for t in (1..len).rev() {
                path[t - 1] = history[(t - 1) * k + path[t] as usize];
            }
            paths.push(path);
        }
        paths
    }
}

/// The index and value of the first maximum (PyTorch's `max(dim)` on the CPU).
fn argmax<R: Real>(values: impl Iterator<Item = R>) -> (usize, R) {
    let mut best = (0, R::NEG_INFINITY);
    for (i, v) in values.enumerate() {
        if i == 0 || v > best.1 {
            best = (i, v);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_sum_exp_is_torch_logsumexp() {
        let lse = |v: &[f64]| log_sum_exp(v.iter().copied());
        assert!((lse(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
        assert!(lse(&[-1000.0, 0.0]).abs() < 1e-12);
        assert_eq!(lse(&[f64::NEG_INFINITY, f64::NEG_INFINITY]), f64::NEG_INFINITY);
        assert_eq!(lse(&[f64::INFINITY, 0.0]), f64::INFINITY);
        assert_eq!(argmax([1.0, 3.0, 3.0, 2.0].into_iter()), (1, 3.0));
    }
}
