//! Losses with PyTorch's definitions: cross-entropy over logits (with `ignore_index`, class
//! weights and label smoothing), NLL, MSE, L1, Huber and BCE-with-logits, each with a
//! [`Reduction`] and an optional mask for padded steps.
//!
//! Every loss is built from candle ops, so `loss.backward()` reaches the input. The class losses
//! take the classes along the **last** dimension (`(…, C)` logits with `(…)` targets, as a
//! recurrent layer's `(T, B, C)` output comes), where PyTorch wants them in dimension 1; the
//! values are the same as PyTorch's on the flattened `(N, C)` view.
//!
//! A mask has the shape of the targets, 1 keeps an element and 0 drops it: a dropped element
//! counts as an ignored target (class losses) or contributes zero (element losses), and "mean"
//! divides by what is kept (the summed class weight of the kept targets for a weighted class
//! loss, as PyTorch does for `ignore_index`). With nothing kept, "mean" is NaN, as in PyTorch.
//!
//! ```
//! use candle_core::{Device, Tensor};
//! use recur::train::{CrossEntropy, Reduction};
//!
//! let logits = Tensor::new(&[[2.0f32, 0.5, -1.0], [0.0, 1.0, 0.0]], &Device::Cpu)?; // (N, C)
//! let targets = Tensor::new(&[0u32, 2], &Device::Cpu)?;
//! let loss = CrossEntropy { label_smoothing: 0.1, ..CrossEntropy::default() }.forward(&logits, &targets, None)?;
//! assert_eq!(loss.dims(), &[] as &[usize]);
//! let _grads = loss.backward()?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use candle_core::{DType, Tensor, D};

use crate::kernels::Float;
use crate::{Error, Result};

/// How a loss reduces its per-element values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Reduction {
    /// The (weighted) mean over the kept elements (the default, as in PyTorch).
    #[default]
    Mean,
    /// The sum over the kept elements.
    Sum,
    /// No reduction: one value per target (class losses) or per element, dropped ones zero.
    None,
}

/// Cross-entropy over logits: `log_softmax` (max-subtracted, so stable for any logit size)
/// followed by the negative log-likelihood, as `torch.nn.CrossEntropyLoss` with class-index
/// targets.
///
/// Shapes: logits `(…, C)` in F32 or F64; targets `(…)` of class indices in U8, U32, I64 (or a
/// float dtype holding whole numbers); mask `(…)`. Result: a scalar, or `(…)` for
/// [`Reduction::None`].
#[derive(Clone, Debug)]
pub struct CrossEntropy {
    /// How to reduce. Default: [`Reduction::Mean`].
    pub reduction: Reduction,
    /// Targets equal to this are ignored (contribute nothing, not counted in the mean).
    /// Default: `Some(-100)`, PyTorch's.
    pub ignore_index: Option<i64>,
    /// A weight per class, shape `(C)`. Default: `None` (all 1).
    pub weight: Option<Tensor>,
    /// Label smoothing ε in [0, 1]: the target becomes `(1 − ε)·one_hot + ε/C`. Default: 0.
    pub label_smoothing: f64,
}

impl Default for CrossEntropy {
    fn default() -> Self {
        Self { reduction: Reduction::Mean, ignore_index: Some(-100), weight: None, label_smoothing: 0.0 }
    }
}

impl CrossEntropy {
    /// The loss of `logits` `(…, C)` against class indices `targets` `(…)`, `mask` `(…)` optional.
    pub fn forward(&self, logits: &Tensor, targets: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        const NAME: &str = "cross_entropy";
        if !(0.0..=1.0).contains(&self.label_smoothing) {
            return Err(Error::config(
                NAME,
                format!("label_smoothing must be in [0, 1], got {}", self.label_smoothing),
                "pass a smoothing between 0.0 and 1.0",
            ));
        }
        let log_probs = log_softmax(logits, NAME)?;
        class_loss(
            NAME,
            &log_probs,
            targets,
            mask,
            self.weight.as_ref(),
            self.ignore_index,
            self.label_smoothing,
            self.reduction,
        )
    }
}

/// Negative log-likelihood over log-probabilities, as `torch.nn.NLLLoss`: `−w[y]·input[…, y]`.
///
/// Shapes as [`CrossEntropy`], with `(…, C)` log-probabilities instead of logits.
#[derive(Clone, Debug)]
pub struct Nll {
    /// How to reduce. Default: [`Reduction::Mean`].
    pub reduction: Reduction,
    /// Targets equal to this are ignored. Default: `Some(-100)`.
    pub ignore_index: Option<i64>,
    /// A weight per class, shape `(C)`. Default: `None`.
    pub weight: Option<Tensor>,
}

impl Default for Nll {
    fn default() -> Self {
        Self { reduction: Reduction::Mean, ignore_index: Some(-100), weight: None }
    }
}

impl Nll {
    /// The loss of `log_probs` `(…, C)` against `targets` `(…)`, `mask` `(…)` optional.
    pub fn forward(&self, log_probs: &Tensor, targets: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        check_float("nll_loss", log_probs)?;
        class_loss("nll_loss", log_probs, targets, mask, self.weight.as_ref(), self.ignore_index, 0.0, self.reduction)
    }
}

/// Cross-entropy with PyTorch's defaults (mean, `ignore_index = -100`, no weights, no smoothing).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    CrossEntropy::default().forward(logits, targets, None)
}

/// `log_softmax` over the last dimension, computed as `x − max − log Σ exp(x − max)`.
pub fn log_softmax(logits: &Tensor, name: &'static str) -> Result<Tensor> {
    check_float(name, logits)?;
    if logits.rank() == 0 || logits.dim(D::Minus1)? == 0 {
        return Err(Error::shape(
            name,
            format!("expected logits of shape (…, C) with C >= 1, got {:?}", logits.dims()),
            "pass the class scores along the last dimension",
        ));
    }
    if !logits.device().is_cpu() {
        let max = logits.max_keepdim(D::Minus1)?.detach();
        let shifted = logits.broadcast_sub(&max)?;
        let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
        return Ok(shifted.broadcast_sub(&lse)?);
    }
    // On the CPU one op: one pass per row forward and one backward, instead of six graph nodes
    // (each of which costs candle a zero-filled gradient and an addition in the backward).
    Ok(logits.contiguous()?.apply_op1(LogSoftmax)?)
}

/// `log_softmax` over the last dimension as one op: per row `x − m − log Σ exp(x − m)`, `m` the
/// row's maximum (the same arithmetic as the composed version); backward
/// `dx = g − exp(y) · Σ g` per row.
struct LogSoftmax;

/// Rows per rayon task.
const SOFTMAX_ROWS: usize = 64;

fn log_softmax_rows<T: Float>(x: &[T], classes: usize) -> Vec<T> {
    use rayon::prelude::*;
    let mut out = vec![T::ZERO; x.len()];
    out.par_chunks_mut(classes * SOFTMAX_ROWS).zip(x.par_chunks(classes * SOFTMAX_ROWS)).for_each(|(out, x)| {
        for (out, x) in out.chunks_exact_mut(classes).zip(x.chunks_exact(classes)) {
            let max = x.iter().copied().fold(T::NEG_INFINITY, |m, v| if v > m { v } else { m });
            let mut sum = T::ZERO;
            for (o, &v) in out.iter_mut().zip(x) {
                *o = v - max;
                sum += o.std_exp();
            }
            let lse = sum.ln();
            for o in out.iter_mut() {
                *o -= lse;
            }
        }
    });
    out
}

fn log_softmax_grad<T: Float>(y: &[T], g: &[T], classes: usize) -> Vec<T> {
    use rayon::prelude::*;
    let mut dx = vec![T::ZERO; y.len()];
    let chunk = classes * SOFTMAX_ROWS;
    dx.par_chunks_mut(chunk).zip(y.par_chunks(chunk).zip(g.par_chunks(chunk))).for_each(|(dx, (y, g))| {
        for ((dx, y), g) in dx.chunks_exact_mut(classes).zip(y.chunks_exact(classes)).zip(g.chunks_exact(classes)) {
            let total = g.iter().fold(T::ZERO, |s, &v| s + v);
            for ((d, &y), &g) in dx.iter_mut().zip(y).zip(g) {
                *d = g - y.std_exp() * total;
            }
        }
    });
    dx
}

impl candle_core::CustomOp1 for LogSoftmax {
    fn name(&self) -> &'static str {
        "recur-log-softmax"
    }

    fn cpu_fwd(
        &self,
        storage: &candle_core::CpuStorage,
        layout: &candle_core::Layout,
    ) -> candle_core::Result<(candle_core::CpuStorage, candle_core::Shape)> {
        use candle_core::CpuStorage;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("internal error: log_softmax got a non-contiguous tensor");
        };
        let classes = layout.dims().last().copied().unwrap_or(1).max(1);
        let out = match storage {
            CpuStorage::F32(v) => CpuStorage::F32(log_softmax_rows(&v[start..end], classes)),
            CpuStorage::F64(v) => CpuStorage::F64(log_softmax_rows(&v[start..end], classes)),
            other => candle_core::bail!(
                "log_softmax supports F32 and F64, got {:?}",
                candle_core::backend::BackendStorage::dtype(other)
            ),
        };
        Ok((out, layout.shape().clone()))
    }

    fn bwd(&self, arg: &Tensor, res: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let classes = arg.dims().last().copied().unwrap_or(1).max(1);
        let grad = grad.contiguous()?;
        let dx = match arg.dtype() {
            DType::F32 => {
                let y = res.flatten_all()?.to_vec1::<f32>()?;
                let g = grad.flatten_all()?.to_vec1::<f32>()?;
                Tensor::from_vec(log_softmax_grad(&y, &g, classes), arg.shape(), arg.device())?
            }
            DType::F64 => {
                let y = res.flatten_all()?.to_vec1::<f64>()?;
                let g = grad.flatten_all()?.to_vec1::<f64>()?;
                Tensor::from_vec(log_softmax_grad(&y, &g, classes), arg.shape(), arg.device())?
            }
            other => candle_core::bail!("log_softmax supports F32 and F64, got {other:?}"),
        };
        Ok(Some(dx))
    }
}

#[allow(clippy::too_many_arguments)]
fn class_loss(
    name: &'static str,
    log_probs: &Tensor,
    targets: &Tensor,
    mask: Option<&Tensor>,
    weight: Option<&Tensor>,
    ignore_index: Option<i64>,
    smoothing: f64,
    reduction: Reduction,
) -> Result<Tensor> {
    let dims = log_probs.dims();
    let classes = dims.last().copied().unwrap_or(0);
    if log_probs.rank() == 0 || targets.dims() != &dims[..dims.len() - 1] {
        return Err(Error::shape(
            name,
            format!(
                "expected targets of shape {:?} for input {:?}, got {:?}",
                &dims[..dims.len().saturating_sub(1)],
                dims,
                targets.dims()
            ),
            "pass one class index per row of the input, classes along the input's last dimension",
        ));
    }
    if classes == 0 {
        return Err(Error::shape(
            name,
            format!("expected at least one class, got input {dims:?}"),
            "pass the class scores along the last dimension",
        ));
    }
    let n = targets.elem_count();
    let dtype = log_probs.dtype();
    let device = log_probs.device();
    let target_values = class_indices(name, targets)?;
    let keep = mask_values(name, mask, targets.dims())?;
    let weights: Option<Vec<f64>> = match weight {
        None => None,
        Some(w) => {
            if w.dims() != [classes] {
                return Err(Error::shape(
                    name,
                    format!("expected a weight tensor of shape [{classes}] (one per class), got {:?}", w.dims()),
                    "pass one weight per class",
                ));
            }
            Some(w.to_dtype(DType::F64)?.to_vec1()?)
        }
    };
    let mut index = Vec::with_capacity(n);
    let mut coef = Vec::with_capacity(n);
    let mut kept = Vec::with_capacity(n);
    for (i, &t) in target_values.iter().enumerate() {
        let unmasked = match &keep {
            Some(k) => k[i] != 0.0,
            None => true,
        };
        let keep_i = unmasked && Some(t) != ignore_index;
        if keep_i && (t < 0 || t >= classes as i64) {
            return Err(Error::shape(
                name,
                format!("Target {t} is out of bounds (the input has {classes} classes)"),
                "pass class indices in 0..C, or mark padding with ignore_index or the mask",
            ));
        }
        index.push(if keep_i { t as u32 } else { 0 });
        coef.push(if keep_i { weights.as_ref().map_or(1.0, |w| w[t as usize]) } else { 0.0 });
        kept.push(if keep_i { 1.0 } else { 0.0 });
    }
    let denominator: f64 = coef.iter().sum();
    let flat = log_probs.reshape((n, classes))?;
    let index = Tensor::from_vec(index, (n, 1), device)?;
    let picked = flat.gather(&index, 1)?.squeeze(1)?;
    let coef_t = Tensor::from_vec(coef, n, device)?.to_dtype(dtype)?;
    let nll = picked.mul(&coef_t)?.neg()?;
    let nll = reduce(&nll, reduction, denominator, targets.dims())?;
    if smoothing == 0.0 {
        return Ok(nll);
    }
    let per_class = match &weights {
        Some(w) => flat.broadcast_mul(&Tensor::from_vec(w.clone(), (1, classes), device)?.to_dtype(dtype)?)?,
        None => flat,
    };
    let kept_t = Tensor::from_vec(kept, n, device)?.to_dtype(dtype)?;
    let smooth = per_class.sum(1)?.neg()?.mul(&kept_t)?;
    let smooth = reduce(&smooth, reduction, denominator, targets.dims())?;
    Ok(((nll * (1.0 - smoothing))? + (smooth * (smoothing / classes as f64))?)?)
}

fn reduce(per_element: &Tensor, reduction: Reduction, denominator: f64, shape: &[usize]) -> Result<Tensor> {
    Ok(match reduction {
        Reduction::None => per_element.reshape(shape)?,
        Reduction::Sum => per_element.sum_all()?,
        Reduction::Mean => {
            let d = Tensor::new(denominator, per_element.device())?.to_dtype(per_element.dtype())?;
            per_element.sum_all()?.div(&d)?
        }
    })
}

/// Mean squared error `(x − y)²`, as `torch.nn.MSELoss`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Mse {
    /// How to reduce. Default: [`Reduction::Mean`].
    pub reduction: Reduction,
}

impl Mse {
    /// The loss of `input` against `target` (same shape), `mask` (same shape) optional.
    pub fn forward(&self, input: &Tensor, target: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let d = check_pair("mse_loss", input, target)?;
        element_loss("mse_loss", &d.sqr()?, mask, self.reduction)
    }
}

/// Mean absolute error `|x − y|`, as `torch.nn.L1Loss`.
#[derive(Clone, Copy, Debug, Default)]
pub struct L1 {
    /// How to reduce. Default: [`Reduction::Mean`].
    pub reduction: Reduction,
}

impl L1 {
    /// The loss of `input` against `target` (same shape), `mask` (same shape) optional.
    pub fn forward(&self, input: &Tensor, target: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let d = check_pair("l1_loss", input, target)?;
        element_loss("l1_loss", &d.abs()?, mask, self.reduction)
    }
}

/// Huber loss, as `torch.nn.HuberLoss`: `½d²` where `|d| < δ`, else `δ(|d| − ½δ)`, `d = x − y`.
#[derive(Clone, Copy, Debug)]
pub struct Huber {
    /// How to reduce. Default: [`Reduction::Mean`].
    pub reduction: Reduction,
    /// The threshold δ > 0 between the quadratic and the linear part. Default: 1.
    pub delta: f64,
}

impl Default for Huber {
    fn default() -> Self {
        Self { reduction: Reduction::Mean, delta: 1.0 }
    }
}

impl Huber {
    /// The loss of `input` against `target` (same shape), `mask` (same shape) optional.
    pub fn forward(&self, input: &Tensor, target: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        if !(self.delta > 0.0 && self.delta.is_finite()) {
            return Err(Error::config(
                "huber_loss",
                format!("delta must be > 0, got {}", self.delta),
                "pass a positive delta",
            ));
        }
        let a = check_pair("huber_loss", input, target)?.abs()?;
        // With q = min(|d|, δ): ½q² + δ(|d| − q) is ½d² below δ and δ(|d| − ½δ) above it.
        let q = a.minimum(self.delta)?;
        let loss = ((q.sqr()? * 0.5)? + ((a - &q)? * self.delta)?)?;
        element_loss("huber_loss", &loss, mask, self.reduction)
    }
}

/// Binary cross-entropy on logits, as `torch.nn.BCEWithLogitsLoss`, in the stable form
/// `(1 − y)·x + (1 + (p − 1)·y)·(max(−x, 0) + log(1 + exp(−|x|)))` (`p` = `pos_weight`, 1 if
/// absent).
#[derive(Clone, Debug, Default)]
pub struct BceWithLogits {
    /// How to reduce. Default: [`Reduction::Mean`].
    pub reduction: Reduction,
    /// A weight for the positive examples of each class, broadcast along the last dimension
    /// (shape `(C)` for `(…, C)` input). Default: `None`.
    pub pos_weight: Option<Tensor>,
}

impl BceWithLogits {
    /// The loss of logits `input` against targets in [0, 1] (same shape), `mask` optional.
    pub fn forward(&self, input: &Tensor, target: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        const NAME: &str = "binary_cross_entropy_with_logits";
        check_pair(NAME, input, target)?;
        let target = target.to_dtype(input.dtype())?;
        // −log σ(x) = max(−x, 0) + log(1 + exp(−|x|)), finite for any x.
        let neg_log_sigmoid = (input.neg()?.relu()? + (input.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
        let linear = target.affine(-1.0, 1.0)?.mul(input)?;
        let loss = match &self.pos_weight {
            None => (linear + neg_log_sigmoid)?,
            Some(p) => {
                let p = p.to_dtype(input.dtype())?;
                let log_weight = target.broadcast_mul(&(p - 1.0)?).map_err(|e| {
                    Error::shape(
                        NAME,
                        format!(
                            "pos_weight of shape {:?} does not broadcast to the input {:?} ({e})",
                            self.pos_weight.as_ref().map(|t| t.dims().to_vec()),
                            input.dims()
                        ),
                        "pass one pos_weight per class (the input's last dimension)",
                    )
                })?;
                (linear + (log_weight + 1.0)?.mul(&neg_log_sigmoid)?)?
            }
        };
        element_loss(NAME, &loss, mask, self.reduction)
    }
}

/// MSE with mean reduction.
pub fn mse(input: &Tensor, target: &Tensor) -> Result<Tensor> {
    Mse::default().forward(input, target, None)
}

pub(super) fn check_float(name: &'static str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        got => Err(Error::UnsupportedDType { layer: name, got }),
    }
}

/// Checks an (input, target) pair of element losses and returns `input − target`.
fn check_pair(name: &'static str, input: &Tensor, target: &Tensor) -> Result<Tensor> {
    check_float(name, input)?;
    if input.dims() != target.dims() {
        return Err(Error::shape(
            name,
            format!("target size {:?} is different from input size {:?}", target.dims(), input.dims()),
            "pass a target of the input's shape",
        ));
    }
    Ok(input.sub(&target.to_dtype(input.dtype())?)?)
}

fn element_loss(name: &'static str, loss: &Tensor, mask: Option<&Tensor>, reduction: Reduction) -> Result<Tensor> {
    let Some(mask) = mask else {
        return Ok(match reduction {
            Reduction::None => loss.clone(),
            Reduction::Sum => loss.sum_all()?,
            Reduction::Mean => loss.mean_all()?,
        });
    };
    let kept: f64 = mask_values(name, Some(mask), loss.dims())?.map_or(0.0, |m| m.iter().sum());
    let masked = loss.mul(&mask.to_dtype(loss.dtype())?)?;
    reduce(&masked, reduction, kept, loss.dims())
}

/// The mask as 0/1 values, checked against the expected shape.
fn mask_values(name: &'static str, mask: Option<&Tensor>, dims: &[usize]) -> Result<Option<Vec<f64>>> {
    let Some(mask) = mask else { return Ok(None) };
    if mask.dims() != dims {
        return Err(Error::shape(
            name,
            format!("expected a mask of shape {dims:?}, got {:?}", mask.dims()),
            "pass a mask with the targets' shape (1 = keep, 0 = padding)",
        ));
    }
    let values: Vec<f64> = mask.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
    if let Some(v) = values.iter().find(|v| **v != 0.0 && **v != 1.0) {
        return Err(Error::shape(
            name,
            format!("mask values must be 0 or 1, got {v}"),
            "pass 1 to keep an element and 0 to drop it",
        ));
    }
    Ok(Some(values))
}

/// Targets as whole numbers (integer dtypes, or floats holding whole numbers).
pub(super) fn class_indices(name: &'static str, targets: &Tensor) -> Result<Vec<i64>> {
    let flat = targets.flatten_all()?;
    match targets.dtype() {
        DType::I64 => Ok(flat.to_vec1()?),
        DType::U32 | DType::U8 => Ok(flat.to_dtype(DType::I64)?.to_vec1()?),
        DType::F32 | DType::F64 => {
            let values: Vec<f64> = flat.to_dtype(DType::F64)?.to_vec1()?;
            values
                .iter()
                .map(|&v| {
                    if v.fract() == 0.0 && v.abs() < 9.0e15 {
                        Ok(v as i64)
                    } else {
                        Err(Error::shape(
                            name,
                            format!("class targets must be whole numbers, got {v}"),
                            "pass class indices (U32 or I64)",
                        ))
                    }
                })
                .collect()
        }
        got => Err(Error::UnsupportedDType { layer: name, got }),
    }
}
