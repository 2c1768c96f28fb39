//! `Crf`: a linear-chain conditional random field, pytorch-crf's `torchcrf.CRF`.
//!
//! The layer a BiLSTM-CRF tagger puts on top of its per-step emission scores. A tag sequence
//! `y` of length `n` over emissions `e` scores
//!
//! ```text
//! s(y) = start[y₀] + e₀[y₀] + Σ_{t=1}^{n−1} (trans[y_{t−1}, y_t] + e_t[y_t]) + end[y_{n−1}]
//! ```
//!
//! [`Crf::forward`] returns the log-likelihood `s(y) − log Z`, `log Z = log Σ_y' exp s(y')`, with
//! pytorch-crf's masks and reductions; [`Crf::decode`] returns the Viterbi path `argmax_y s(y)` of
//! each sequence. `s(y)` is composed of candle ops (gathers), so autograd differentiates it.
//! `log Z` and its gradient (the tag marginals) come from the forward-backward algorithm over
//! plain slices (`lattice.rs`, log space, every sum max-shifted as `torch.logsumexp`), and reach
//! autograd through a term that is zero with that derivative. Composing the forward algorithm of
//! candle ops instead (kept as the reference in this file's tests) ran 3.5–7× slower than
//! pytorch-crf for 45–200 tags; the lattice runs 3–7× faster than it.
//!
//! Results agree with pytorch-crf 0.7.2 to rounding (1e-15 relative on the f64 fixtures) and the
//! paths exactly: Viterbi makes pytorch-crf's additions in its order.

use std::fmt;
use std::str::FromStr;

use candle_core::{DType, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::{Error, Result};
use lattice::{Lattice, Real};

mod lattice;

const NAME: &str = "CRF";

/// How [`Crf::forward`] reduces the per-sequence log-likelihoods: pytorch-crf's `reduction`
/// argument (parse its strings with `"token_mean".parse()`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CrfReduction {
    /// `'none'`: one log-likelihood per sequence, shape `(B)`.
    None,
    /// `'sum'`: the sum over the batch, a scalar (the default, as in pytorch-crf).
    #[default]
    Sum,
    /// `'mean'`: the mean over the batch, a scalar.
    Mean,
    /// `'token_mean'`: the sum over the batch divided by the number of unmasked steps, a scalar.
    TokenMean,
}

impl FromStr for CrfReduction {
    type Err = Error;

    /// Parses pytorch-crf's names: `none`, `sum`, `mean`, `token_mean`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "none" => Ok(Self::None),
            "sum" => Ok(Self::Sum),
            "mean" => Ok(Self::Mean),
            "token_mean" => Ok(Self::TokenMean),
            other => {
                Err(Error::config(NAME, format!("invalid reduction: {other:?}"), "use none, sum, mean or token_mean"))
            }
        }
    }
}

impl fmt::Display for CrfReduction {
    /// pytorch-crf's name of the reduction, e.g. `token_mean`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::None => "none",
            Self::Sum => "sum",
            Self::Mean => "mean",
            Self::TokenMean => "token_mean",
        })
    }
}

/// A linear-chain conditional random field over `num_tags` tags, pytorch-crf's `CRF`.
///
/// Parameters (pytorch-crf's names, drawn from U(−0.1, 0.1) when `vb` creates them):
/// `start_transitions (K)`, `end_transitions (K)`, `transitions (K, K)` where
/// `transitions[i, j]` scores tag `i` followed by tag `j` and `K = num_tags`.
///
/// Shapes (`T` steps, `B` sequences; `(B, T, …)` instead when `batch_first`):
/// emissions `(T, B, K)` in the parameters' dtype (F32 or F64); tags `(T, B)` in U8, U32 or I64;
/// mask `(T, B)` of 0/1 in any dtype (U8 like PyTorch's `ByteTensor`). The mask must be on at the
/// first step of every sequence (as pytorch-crf checks) and, as right padding, stay off once it
/// goes off; sequences may have different lengths. Tags at masked steps are ignored (they may
/// hold any value, e.g. −100).
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use recur::nn::{Crf, CrfReduction};
///
/// let varmap = candle_nn::VarMap::new();
/// let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
/// let crf = Crf::new(5, true, vb.pp("crf"))?;
/// assert_eq!(crf.to_string(), "CRF(num_tags=5)");
///
/// let emissions = Tensor::arange(0f32, 40.0, &Device::Cpu)?.sin()?.reshape((2, 4, 5))?; // (B, T, K)
/// let tags = Tensor::new(&[[0u32, 1, 2, 3], [4, 3, 0, 0]], &Device::Cpu)?;
/// let mask = Tensor::new(&[[1u8, 1, 1, 1], [1, 1, 0, 0]], &Device::Cpu)?; // lengths 4 and 2
/// let llh = crf.forward(&emissions, &tags, Some(&mask), CrfReduction::Mean)?;
/// let grads = llh.neg()?.backward()?; // minimise the negative log-likelihood
/// assert!(grads.get(crf.transitions()).is_some());
///
/// let paths = crf.decode(&emissions, Some(&mask))?;
/// assert_eq!((paths[0].len(), paths[1].len()), (4, 2));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Crf {
    num_tags: usize,
    batch_first: bool,
    start_transitions: Tensor,
    end_transitions: Tensor,
    transitions: Tensor,
}

impl Crf {
    /// Builds the layer (pytorch-crf's `CRF(num_tags, batch_first)`); parameters come from `vb`
    /// under their pytorch-crf names, in F32 or F64 (`vb`'s dtype).
    pub fn new(num_tags: usize, batch_first: bool, vb: VarBuilder) -> Result<Self> {
        if num_tags == 0 {
            return Err(Error::config(NAME, "invalid number of tags: 0", "give the CRF at least one tag"));
        }
        if num_tags.checked_mul(num_tags).is_none_or(|n| n > u32::MAX as usize) {
            return Err(Error::config(
                NAME,
                format!("num_tags={num_tags} needs a transition table of num_tags² entries, more than 2³²"),
                "use fewer tags",
            ));
        }
        if !matches!(vb.dtype(), DType::F32 | DType::F64) {
            return Err(Error::UnsupportedDType { layer: NAME, got: vb.dtype() });
        }
        let init = Init::Uniform { lo: -0.1, up: 0.1 };
        let start_transitions = vb.get_with_hints(num_tags, "start_transitions", init)?;
        let end_transitions = vb.get_with_hints(num_tags, "end_transitions", init)?;
        let transitions = vb.get_with_hints((num_tags, num_tags), "transitions", init)?;
        Ok(Self { num_tags, batch_first, start_transitions, end_transitions, transitions })
    }

    /// The number of tags `K`.
    pub fn num_tags(&self) -> usize {
        self.num_tags
    }

    /// Whether inputs are `(B, T, …)` rather than `(T, B, …)`.
    pub fn batch_first(&self) -> bool {
        self.batch_first
    }

    /// `start_transitions (K)`: the score of each tag at the first step.
    pub fn start_transitions(&self) -> &Tensor {
        &self.start_transitions
    }

    /// `end_transitions (K)`: the score of each tag at the last step.
    pub fn end_transitions(&self) -> &Tensor {
        &self.end_transitions
    }

    /// `transitions (K, K)`: `transitions[i, j]` scores tag `i` followed by tag `j`.
    pub fn transitions(&self) -> &Tensor {
        &self.transitions
    }

    /// The parameters under their pytorch-crf names, in its registration order.
    pub fn weights(&self) -> Vec<(String, Tensor)> {
        vec![
            ("start_transitions".to_string(), self.start_transitions.clone()),
            ("end_transitions".to_string(), self.end_transitions.clone()),
            ("transitions".to_string(), self.transitions.clone()),
        ]
    }

    /// The log-likelihood of `tags` given `emissions`: pytorch-crf's `forward`.
    ///
    /// Shapes as on [`Crf`]; `mask: None` means every step is on. Result: `(B)` for
    /// [`CrfReduction::None`], else a scalar; differentiable w.r.t. the emissions and the
    /// parameters (the normaliser's gradient, the tag marginals, comes from the backward
    /// algorithm, computed alongside). Train by minimising its negation.
    pub fn forward(
        &self,
        emissions: &Tensor,
        tags: &Tensor,
        mask: Option<&Tensor>,
        reduction: CrfReduction,
    ) -> Result<Tensor> {
        self.log_likelihood(emissions, tags, mask, reduction)
    }

    /// [`forward`](Crf::forward) without autograd (PyTorch's `torch.no_grad()`): no graph and
    /// no marginals, for evaluation losses.
    pub fn forward_no_grad(
        &self,
        emissions: &Tensor,
        tags: &Tensor,
        mask: Option<&Tensor>,
        reduction: CrfReduction,
    ) -> Result<Tensor> {
        let detached = Crf {
            start_transitions: self.start_transitions.detach(),
            end_transitions: self.end_transitions.detach(),
            transitions: self.transitions.detach(),
            ..self.clone()
        };
        detached.log_likelihood(&emissions.detach(), tags, mask, reduction)
    }

    fn log_likelihood(
        &self,
        emissions: &Tensor,
        tags: &Tensor,
        mask: Option<&Tensor>,
        reduction: CrfReduction,
    ) -> Result<Tensor> {
        let (seq_len, batch) = self.check_emissions(emissions)?;
        let lengths = self.lengths(mask, seq_len, batch)?;
        let tags = self.tag_values(tags, seq_len, batch, &lengths)?;
        if batch == 0 {
            // As pytorch-crf: no values, their sum 0, their means 0/0.
            let (dtype, device) = (emissions.dtype(), emissions.device());
            return Ok(match reduction {
                CrfReduction::None => Tensor::zeros(0, dtype, device)?,
                CrfReduction::Sum => Tensor::zeros((), dtype, device)?,
                CrfReduction::Mean | CrfReduction::TokenMean => Tensor::full(f64::NAN, (), device)?.to_dtype(dtype)?,
            });
        }
        let emissions = self.time_major(emissions)?;
        let numerator = self.score(&emissions, &tags, &lengths)?;
        let denominator = match emissions.dtype() {
            DType::F32 => self.normalizer::<f32>(&emissions, &lengths)?,
            _ => self.normalizer::<f64>(&emissions, &lengths)?,
        };
        let llh = (numerator - denominator)?; // (B)
        Ok(match reduction {
            CrfReduction::None => llh,
            CrfReduction::Sum => llh.sum_all()?,
            CrfReduction::Mean => llh.mean_all()?,
            CrfReduction::TokenMean => {
                let tokens: usize = lengths.iter().sum();
                (llh.sum_all()? / tokens as f64)?
            }
        })
    }

    /// The most likely tag sequence of each sequence by the Viterbi algorithm: pytorch-crf's
    /// `decode`. Shapes as on [`Crf`]; each path has its sequence's own length (the number of
    /// steps its mask has on). Ties go to the lowest tag index.
    pub fn decode(&self, emissions: &Tensor, mask: Option<&Tensor>) -> Result<Vec<Vec<u32>>> {
        let (seq_len, batch) = self.check_emissions(emissions)?;
        let lengths = self.lengths(mask, seq_len, batch)?;
        let emissions = self.time_major(emissions)?;
        match emissions.dtype() {
            DType::F32 => self.viterbi::<f32>(&emissions, &lengths),
            _ => self.viterbi::<f64>(&emissions, &lengths),
        }
    }

    /// Checks the emissions; returns `(T, B)`.
    fn check_emissions(&self, emissions: &Tensor) -> Result<(usize, usize)> {
        let layout = if self.batch_first { "(batch, seq_len, num_tags)" } else { "(seq_len, batch, num_tags)" };
        let &[d0, d1, tags] = emissions.dims() else {
            return Err(Error::shape(
                NAME,
                format!("emissions must have dimension of 3, got {} (shape {:?})", emissions.rank(), emissions.dims()),
                format!("pass emissions of shape {layout}"),
            ));
        };
        if tags != self.num_tags {
            return Err(Error::shape(
                NAME,
                format!("expected last dimension of emissions is {}, got {tags}", self.num_tags),
                format!("pass one score per tag along the last dimension, {layout}"),
            ));
        }
        let dtype = self.transitions.dtype();
        if emissions.dtype() != dtype {
            return Err(Error::DType { layer: NAME, what: "emissions", expected: dtype, got: emissions.dtype() });
        }
        if !emissions.device().same_device(self.transitions.device()) {
            return Err(Error::Device {
                layer: NAME,
                message: format!(
                    "emissions are on {:?}, the parameters on {:?}",
                    emissions.device().location(),
                    self.transitions.device().location()
                ),
                fix: "move the emissions to the CRF's device".to_string(),
            });
        }
        let (seq_len, batch) = if self.batch_first { (d1, d0) } else { (d0, d1) };
        if seq_len == 0 {
            return Err(Error::shape(
                NAME,
                format!("emissions have no steps (shape {:?})", emissions.dims()),
                "pass at least one step per sequence",
            ));
        }
        Ok((seq_len, batch))
    }

    /// The emissions as a contiguous `(T, B, K)` tensor.
    fn time_major(&self, emissions: &Tensor) -> Result<Tensor> {
        let emissions = if self.batch_first { emissions.transpose(0, 1)? } else { emissions.clone() };
        Ok(emissions.contiguous()?)
    }

    /// The expected shape of tags and mask: `(T, B)` or `(B, T)`.
    fn steps_shape(&self, seq_len: usize, batch: usize) -> [usize; 2] {
        if self.batch_first {
            [batch, seq_len]
        } else {
            [seq_len, batch]
        }
    }

    /// Position of step `t` of sequence `b` in a flattened `(T, B)` or `(B, T)` tensor.
    fn flat_index(&self, t: usize, b: usize, seq_len: usize, batch: usize) -> usize {
        if self.batch_first {
            b * seq_len + t
        } else {
            t * batch + b
        }
    }

    /// The length of each sequence from the mask (all `T` without one), checking its shape, its
    /// values (0 or 1), its first step (on) and that it is right padding.
    fn lengths(&self, mask: Option<&Tensor>, seq_len: usize, batch: usize) -> Result<Vec<usize>> {
        let Some(mask) = mask else { return Ok(vec![seq_len; batch]) };
        let expected = self.steps_shape(seq_len, batch);
        if mask.dims() != expected {
            return Err(Error::shape(
                NAME,
                format!(
                    "the first two dimensions of emissions and mask must match, got {expected:?} and {:?}",
                    mask.dims()
                ),
                "pass one mask value per step and sequence, in the emissions' layout",
            ));
        }
        let values: Vec<f64> = mask.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
        if let Some(v) = values.iter().find(|v| **v != 0.0 && **v != 1.0) {
            return Err(Error::shape(
                NAME,
                format!("mask values must be 0 or 1, got {v}"),
                "pass 1 for the steps of a sequence and 0 for its padding",
            ));
        }
        let mut lengths = Vec::with_capacity(batch);
        for b in 0..batch {
            let on = |t: usize| values[self.flat_index(t, b, seq_len, batch)] != 0.0;
            if !on(0) {
                return Err(Error::shape(
                    NAME,
                    format!("mask of the first timestep must all be on, but sequence {b} starts off"),
                    "every sequence needs at least one step; drop empty sequences from the batch",
                ));
            }
            let len = (0..seq_len).take_while(|&t| on(t)).count();
            if let Some(t) = (len..seq_len).find(|&t| on(t)) {
                return Err(Error::shape(
                    NAME,
                    format!("mask of sequence {b} is on at step {t} after being off at step {len}"),
                    "pad at the end: a sequence of length n has its mask on for steps 0..n and off after",
                ));
            }
            lengths.push(len);
        }
        Ok(lengths)
    }

    /// The tags as a time-major `(T · B)` vector, checked in range where the mask is on; masked
    /// steps read as tag 0 (their scores are multiplied by 0).
    fn tag_values(&self, tags: &Tensor, seq_len: usize, batch: usize, lengths: &[usize]) -> Result<Vec<u32>> {
        let expected = self.steps_shape(seq_len, batch);
        if tags.dims() != expected {
            return Err(Error::shape(
                NAME,
                format!(
                    "the first two dimensions of emissions and tags must match, got {expected:?} and {:?}",
                    tags.dims()
                ),
                "pass one tag per step and sequence, in the emissions' layout",
            ));
        }
        let values: Vec<i64> = match tags.dtype() {
            DType::I64 => tags.flatten_all()?.to_vec1()?,
            DType::U8 | DType::U32 => tags.flatten_all()?.to_dtype(DType::I64)?.to_vec1()?,
            other => {
                return Err(Error::shape(
                    NAME,
                    format!("tags must hold tag indices in U8, U32 or I64, got {other:?}"),
                    "convert the tags with `.to_dtype(DType::U32)`",
                ))
            }
        };
        let mut out = vec![0u32; seq_len * batch];
        for (b, &len) in lengths.iter().enumerate() {
            for t in 0..len {
                let tag = values[self.flat_index(t, b, seq_len, batch)];
                if tag < 0 || tag >= self.num_tags as i64 {
                    return Err(Error::shape(
                        NAME,
                        format!("tag {tag} at step {t} of sequence {b} is out of range for num_tags={}", self.num_tags),
                        format!("pass tags in 0..{} (steps where the mask is off may hold any value)", self.num_tags),
                    ));
                }
                out[t * batch + b] = tag as u32;
            }
        }
        Ok(out)
    }

    /// The score `s(y)` of the given tags, `(B)`; `emissions (T, B, K)`, `tags (T · B)`.
    fn score(&self, emissions: &Tensor, tags: &[u32], lengths: &[usize]) -> Result<Tensor> {
        let (seq_len, batch, num_tags) = emissions.dims3()?;
        let device = emissions.device();
        let on: Vec<f64> = (0..seq_len * batch).map(|i| f64::from(u8::from(i / batch < lengths[i % batch]))).collect();
        let on = Tensor::from_vec(on, (seq_len, batch), device)?.to_dtype(emissions.dtype())?; // (T, B)
        let tag_index = Tensor::from_slice(tags, (seq_len, batch, 1), device)?;
        let emitted = emissions.gather(&tag_index, 2)?.squeeze(2)?; // (T, B): e_t[y_t]
        let first = Tensor::from_slice(&tags[..batch], batch, device)?;
        let mut score = (self.start_transitions.index_select(&first, 0)? + emitted.mul(&on)?.sum(0)?)?;
        if seq_len > 1 {
            // trans[y_{t−1}, y_t] for t ≥ 1, read from the flattened (K · K) table.
            let pairs: Vec<i64> =
                (batch..seq_len * batch).map(|i| tags[i - batch] as i64 * num_tags as i64 + tags[i] as i64).collect();
            let pairs = Tensor::from_vec(pairs, (seq_len - 1) * batch, device)?;
            let moved = self.transitions.flatten_all()?.index_select(&pairs, 0)?.reshape((seq_len - 1, batch))?;
            score = (score + moved.mul(&on.narrow(0, 1, seq_len - 1)?)?.sum(0)?)?;
        }
        let last: Vec<u32> = lengths.iter().enumerate().map(|(b, &len)| tags[(len - 1) * batch + b]).collect();
        let last = Tensor::from_vec(last, batch, device)?;
        Ok((score + self.end_transitions.index_select(&last, 0)?)?)
    }

    /// `log Z = log Σ_y exp s(y)` by the forward algorithm, `(B)`; `emissions (T, B, K)`.
    ///
    /// The value and its gradient (the marginals) come from [`Lattice::log_partition`]; the
    /// gradient reaches autograd as `log Z + Σ G · (x − x̄)` over the emissions and the three
    /// parameters, `x̄` being `x` detached: a term that is zero but has derivative `G`.
    fn normalizer<R: Real>(&self, emissions: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let (seq_len, batch, k) = emissions.dims3()?;
        let device = emissions.device();
        let values = |t: &Tensor| -> Result<Vec<R>> { Ok(t.flatten_all()?.to_vec1()?) };
        let (e, start, end, trans) = (
            values(emissions)?,
            values(&self.start_transitions)?,
            values(&self.end_transitions)?,
            values(&self.transitions)?,
        );
        let lattice =
            Lattice { num_tags: k, batch, lengths, emissions: &e, start: &start, end: &end, transitions: &trans };
        let params = [&self.start_transitions, &self.end_transitions, &self.transitions];
        let wants_grad = emissions.track_op() || params.iter().any(|p| p.track_op());
        let (log_z, marginals) = lattice.log_partition(wants_grad);
        let log_z = Tensor::from_vec(log_z, batch, device)?;
        let Some(g) = marginals else { return Ok(log_z) };
        // Emissions: Σ_{t,j} G[t, b, j] · (x − x̄)[t, b, j], elementwise (no broadcast to undo).
        let de = Tensor::from_vec(g.emissions, (seq_len, batch, k), device)?;
        let de = de.mul(&zero_with_gradient(emissions, &e)?)?.sum((0, 2))?;
        // Parameters, shared by the batch: (B, n) · (n, 1), one small matrix product each way.
        let carry = |x: &Tensor, x_values: &[R], g: Vec<R>| -> Result<Tensor> {
            let n = x_values.len();
            let g = Tensor::from_vec(g, (batch, n), device)?;
            Ok(g.matmul(&zero_with_gradient(x, x_values)?.reshape((n, 1))?)?.squeeze(1)?)
        };
        let dstart = carry(&self.start_transitions, &start, g.start)?;
        let dend = carry(&self.end_transitions, &end, g.end)?;
        let dtrans = carry(&self.transitions, &trans, g.transitions)?;
        Ok((((log_z + de)? + dstart)? + dend)?.add(&dtrans)?)
    }

    /// Viterbi per sequence in the emissions' own precision; see [`Lattice::viterbi`].
    fn viterbi<R: Real>(&self, emissions: &Tensor, lengths: &[usize]) -> Result<Vec<Vec<u32>>> {
        let (_, batch, k) = emissions.dims3()?;
        let values = |t: &Tensor| -> Result<Vec<R>> { Ok(t.flatten_all()?.to_vec1()?) };
        let (e, start, end, trans) = (
            values(emissions)?,
            values(&self.start_transitions)?,
            values(&self.end_transitions)?,
            values(&self.transitions)?,
        );
        let lattice =
            Lattice { num_tags: k, batch, lengths, emissions: &e, start: &start, end: &end, transitions: &trans };
        Ok(lattice.viterbi())
    }
}

/// `x − x̄` (`x̄` = `x` detached): zero, with derivative 1 w.r.t. `x`; zero with derivative 0
/// where `x` is infinite or NaN (where `∞ − ∞` would poison the sum, and the marginals are 0).
fn zero_with_gradient<R: Real>(x: &Tensor, values: &[R]) -> Result<Tensor> {
    let diff = (x - x.detach())?;
    if values.iter().all(|v| v.is_finite()) {
        return Ok(diff);
    }
    let finite: Vec<u8> = values.iter().map(|v| u8::from(v.is_finite())).collect();
    let finite = Tensor::from_vec(finite, x.shape(), x.device())?;
    Ok(finite.where_cond(&diff, &diff.detach().zeros_like()?)?)
}

impl fmt::Display for Crf {
    /// pytorch-crf's repr, e.g. `CRF(num_tags=5)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CRF(num_tags={})", self.num_tags)
    }
}

impl fmt::Debug for Crf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use candle_nn::VarMap;

    fn crf(num_tags: usize, batch_first: bool, dtype: DType) -> Crf {
        let varmap = VarMap::new();
        let vb = crate::seeded_var_builder(&varmap, 3, dtype, &Device::Cpu);
        Crf::new(num_tags, batch_first, vb).expect("valid CRF")
    }

    #[test]
    fn repr_and_parameters() {
        let crf = crf(5, false, DType::F64);
        assert_eq!(crf.to_string(), "CRF(num_tags=5)");
        assert_eq!(format!("{crf:?}"), "CRF(num_tags=5)");
        let names: Vec<String> = crf.weights().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["start_transitions", "end_transitions", "transitions"]);
        assert_eq!(crf.transitions().dims(), &[5, 5]);
        for (_, w) in crf.weights() {
            let v: Vec<f64> = w.flatten_all().unwrap().to_vec1().unwrap();
            assert!(v.iter().all(|x| (-0.1..0.1).contains(x)), "U(-0.1, 0.1) init: {v:?}");
        }
    }

    #[test]
    fn reduction_names_round_trip() {
        for r in [CrfReduction::None, CrfReduction::Sum, CrfReduction::Mean, CrfReduction::TokenMean] {
            assert_eq!(r.to_string().parse::<CrfReduction>().unwrap(), r);
        }
        assert!(matches!("avg".parse::<CrfReduction>(), Err(Error::InvalidConfig { .. })));
        assert_eq!(CrfReduction::default(), CrfReduction::Sum);
    }

    /// The reference normaliser: pytorch-crf's `_compute_normalizer` composed of candle ops, its
    /// gradient by candle's autograd.
    fn composed_normalizer(crf: &Crf, emissions: &Tensor, lengths: &[usize]) -> Tensor {
        let (_, batch, k) = emissions.dims3().unwrap();
        let lse = |x: &Tensor, dim: usize| -> Tensor {
            let max = x.max_keepdim(dim).unwrap().detach();
            let max =
                max.abs().unwrap().eq(f64::INFINITY).unwrap().where_cond(&max.zeros_like().unwrap(), &max).unwrap();
            let sum = x.broadcast_sub(&max).unwrap().exp().unwrap().sum_keepdim(dim).unwrap();
            (sum.log().unwrap() + max).unwrap().squeeze(dim).unwrap()
        };
        let trans = crf.transitions().unsqueeze(0).unwrap();
        let mut alpha =
            crf.start_transitions().unsqueeze(0).unwrap().broadcast_add(&emissions.get(0).unwrap()).unwrap();
        for t in 1..lengths.iter().copied().max().unwrap() {
            let e_t = emissions.get(t).unwrap().unsqueeze(1).unwrap();
            let next = lse(&alpha.unsqueeze(2).unwrap().broadcast_add(&trans).unwrap().broadcast_add(&e_t).unwrap(), 1);
            let on: Vec<u8> = lengths.iter().map(|&len| u8::from(len > t)).collect();
            let on = Tensor::from_vec(on, (batch, 1), &Device::Cpu).unwrap().broadcast_as((batch, k)).unwrap();
            alpha = on.where_cond(&next, &alpha).unwrap();
        }
        lse(&alpha.broadcast_add(&crf.end_transitions().unsqueeze(0).unwrap()).unwrap(), 1)
    }

    /// Deterministic values in [−1, 1).
    fn fill(n: usize, seed: u64) -> Vec<f64> {
        let mut state = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        (0..n)
            .map(|_| {
                state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                (state >> 11) as f64 / (1u64 << 52) as f64 - 1.0
            })
            .collect()
    }

    /// The lattice (fast sums with exact fallbacks) against the composed reference: values and
    /// gradients w.r.t. emissions and parameters, with a forbidden transition and huge scores so
    /// the fallbacks run.
    #[test]
    fn lattice_equals_composed_reference() {
        let dev = &Device::Cpu;
        let (t, lengths, k) = (6, [6usize, 3, 1, 5], 5);
        let b = lengths.len();
        for (case, (dtype, emission_scale, forbidden, tol)) in [
            (DType::F64, 1.0, None, 1e-13),
            (DType::F64, 300.0, None, 1e-10),
            (DType::F64, 3.0, Some(-1e4), 1e-12),
            (DType::F64, 400.0, Some(-1e4), 1e-10),
            (DType::F64, 400.0, Some(f64::NEG_INFINITY), 1e-10),
            (DType::F32, 1.0, None, 2e-5),
            (DType::F32, 80.0, Some(-1e4), 5e-3),
        ]
        .into_iter()
        .enumerate()
        {
            let varmap = VarMap::new();
            let crf = Crf::new(k, false, crate::seeded_var_builder(&varmap, case as u64, dtype, dev)).unwrap();
            let mut trans = fill(k * k, 40 + case as u64).iter().map(|v| 3.0 * v).collect::<Vec<_>>();
            if let Some(f) = forbidden {
                // Tag 1 may follow only tag 1: every other way into it is forbidden.
                for i in (0..k).filter(|&i| i != 1) {
                    trans[i * k + 1] = f;
                }
            }
            let set = |name: &str, v: Tensor| {
                let vars = varmap.data().lock().unwrap();
                vars[name].set(&v.to_dtype(dtype).unwrap()).unwrap();
            };
            set("transitions", Tensor::from_vec(trans, (k, k), dev).unwrap());
            let mut e = fill(t * b * k, case as u64).iter().map(|v| emission_scale * v).collect::<Vec<_>>();
            if forbidden.is_some() {
                // Make tag 1 by far the best emission at some steps, after other tags.
                for s in [2, 4] {
                    for bb in 0..b {
                        e[(s * b + bb) * k + 1] = emission_scale * 5.0;
                    }
                }
            }
            let e =
                candle_core::Var::from_tensor(&Tensor::from_vec(e, (t, b, k), dev).unwrap().to_dtype(dtype).unwrap())
                    .unwrap();
            let weights = Tensor::from_vec(fill(b, 99), b, dev).unwrap().to_dtype(dtype).unwrap();
            let fast = match dtype {
                DType::F32 => crf.normalizer::<f32>(e.as_tensor(), &lengths).unwrap(),
                _ => crf.normalizer::<f64>(e.as_tensor(), &lengths).unwrap(),
            };
            let slow = composed_normalizer(&crf, e.as_tensor(), &lengths);
            let close = |what: &str, x: &Tensor, y: &Tensor| {
                let x: Vec<f64> = x.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap();
                let y: Vec<f64> = y.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap();
                for (i, (a, r)) in x.iter().zip(&y).enumerate() {
                    assert!(
                        (a - r).abs() <= tol * (1.0 + r.abs()) || (a == r),
                        "case {case} {what}[{i}]: lattice {a}, composed {r}"
                    );
                }
            };
            close("log Z", &fast, &slow);
            let g_fast = fast.mul(&weights).unwrap().sum_all().unwrap().backward().unwrap();
            let g_slow = slow.mul(&weights).unwrap().sum_all().unwrap().backward().unwrap();
            close("d emissions", g_fast.get(e.as_tensor()).unwrap(), g_slow.get(e.as_tensor()).unwrap());
            for (name, p) in crf.weights() {
                close(&format!("d {name}"), g_fast.get(&p).unwrap(), g_slow.get(&p).unwrap());
            }
        }
    }

    /// A lattice where the exact fallbacks carry half the probability: tag 0 dominates step 1,
    /// tag 1 step 2, and 0 → 1 is forbidden, so the two ways around the ban (0 then not 1, or
    /// not 0 then 1) share the mass while every fast sum for them underflows.
    #[test]
    fn fallbacks_carry_the_mass_when_the_best_transition_is_forbidden() {
        let dev = &Device::Cpu;
        let (t, lengths, k) = (4, [4usize, 3], 4);
        let b = lengths.len();
        for (dtype, big, tol) in [(DType::F64, 400.0, 1e-10), (DType::F32, 40.0, 1e-4)] {
            let varmap = VarMap::new();
            let crf = Crf::new(k, false, crate::seeded_var_builder(&varmap, 5, dtype, dev)).unwrap();
            let mut trans = fill(k * k, 8).iter().map(|v| 0.5 * v).collect::<Vec<_>>();
            trans[1] = -1e4; // 0 -> 1
            varmap.data().lock().unwrap()["transitions"]
                .set(&Tensor::from_vec(trans, (k, k), dev).unwrap().to_dtype(dtype).unwrap())
                .unwrap();
            let mut e = fill(t * b * k, 9).iter().map(|v| 0.5 * v).collect::<Vec<_>>();
            for bb in 0..b {
                for j in 0..k {
                    e[(b + bb) * k + j] = if j == 0 { big } else { -big };
                    e[(2 * b + bb) * k + j] = if j == 1 { big } else { -big };
                }
            }
            let e =
                candle_core::Var::from_tensor(&Tensor::from_vec(e, (t, b, k), dev).unwrap().to_dtype(dtype).unwrap())
                    .unwrap();
            let fast = match dtype {
                DType::F32 => crf.normalizer::<f32>(e.as_tensor(), &lengths).unwrap(),
                _ => crf.normalizer::<f64>(e.as_tensor(), &lengths).unwrap(),
            };
            let slow = composed_normalizer(&crf, e.as_tensor(), &lengths);
            let g_fast = fast.sum_all().unwrap().backward().unwrap();
            let g_slow = slow.sum_all().unwrap().backward().unwrap();
            let as_f64 =
                |x: &Tensor| -> Vec<f64> { x.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap() };
            let mut pairs = vec![("log Z".to_string(), as_f64(&fast), as_f64(&slow))];
            pairs.push((
                "d emissions".into(),
                as_f64(g_fast.get(e.as_tensor()).unwrap()),
                as_f64(g_slow.get(e.as_tensor()).unwrap()),
            ));
            for (name, p) in crf.weights() {
                pairs.push((format!("d {name}"), as_f64(g_fast.get(&p).unwrap()), as_f64(g_slow.get(&p).unwrap())));
            }
            for (what, x, y) in pairs {
                for (i, (a, r)) in x.iter().zip(&y).enumerate() {
                    assert!((a - r).abs() <= tol * (1.0 + r.abs()), "{dtype:?} {what}[{i}]: lattice {a}, composed {r}");
                }
            }
            // The marginal of tag 0 at step 1 is about one half: the fallback rows matter.
            let p0 = as_f64(g_fast.get(e.as_tensor()).unwrap())[b * k];
            assert!((0.2..0.8).contains(&p0), "{dtype:?}: p(y_1 = 0) = {p0}");
        }
    }

    #[test]
    fn one_tag_has_likelihood_one() {
        // With a single tag there is one path: log p = 0 whatever the scores.
        let crf = crf(1, true, DType::F64);
        let emissions = Tensor::new(&[[[0.3f64], [-2.0], [5.0]]], &Device::Cpu).unwrap();
        let tags = Tensor::zeros((1, 3), DType::U32, &Device::Cpu).unwrap();
        let llh: f64 = crf.forward(&emissions, &tags, None, CrfReduction::Sum).unwrap().to_scalar().unwrap();
        assert!(llh.abs() < 1e-12, "{llh}");
        assert_eq!(crf.decode(&emissions, None).unwrap(), vec![vec![0, 0, 0]]);
    }
}
