//! Cross-entropy over a linear layer's logits as one op: `cross_entropy(x · Wᵀ + b, targets)`
//! without the logits' graph.
//!
//! A language model's head is `Linear(H, V)` followed by cross-entropy; composed from candle ops
//! that is a matrix product, a transpose, a bias broadcast, the reshapes between `(…, V)` and
//! `(N, V)`, `log_softmax`, a gather and a mean, and in the backward every one of those nodes costs
//! candle a zero-filled gradient of its input and an addition. [`linear_cross_entropy`] computes
//! the same loss in one pass: one product for the logits, one pass per row for the log-sum-exp and
//! the picked logit, and it keeps the softmax for the backward, which is `dlogits = (softmax −
//! one_hot) · g / n` followed by the three products for `x`, `W` and `b`.

use std::sync::{Arc, OnceLock};

use candle_core::{backend::BackendStorage, CpuStorage, DType, Layout, Shape, Tensor};

use super::loss::{check_float, class_indices, cross_entropy};
use crate::kernels::gemm::{matmul, MatRef};
use crate::kernels::Float;
use crate::ops::contiguous_values as values;
use crate::{Error, Result};

const NAME: &str = "linear_cross_entropy";

/// Rows per rayon task of the row passes.
const ROWS_PER_TASK: usize = 64;

/// Target of an ignored row (`ignore_index`) in the op's target list.
const IGNORED: u32 = u32::MAX;

/// `cross_entropy(x · weightᵀ + bias, targets)` with [`cross_entropy`]'s defaults (mean over the
/// targets that are not `-100`), as one op on the CPU.
///
/// Shapes: `x` `(…, H)` in F32 or F64; `weight` `(V, H)` and `bias` `(V)` of `x`'s dtype and
/// device (a `candle_nn::Linear`'s `weight()` and `bias()`); `targets` `(…)`, `x`'s leading
/// dimensions, class indices as [`cross_entropy`] takes them. Returns the scalar loss; its
/// backward reaches `x`, `weight` and `bias`.
///
/// The value and the gradients are those of the composition to rounding (the products sum in
/// another order). The saving is in the graph: one node instead of about ten, which matters when
/// the logits are small next to the model (a character model's `V = 74` against `H = 256`). On
/// other devices, and when no target is kept, it is the composition.
///
/// ```
/// use candle_core::{Device, Tensor};
/// use recur::train::{cross_entropy, linear_cross_entropy};
///
/// let dev = Device::Cpu;
/// let x = Tensor::new(&[[0.5f32, -1.0], [2.0, 0.25], [0.0, 1.0]], &dev)?; // (N, H)
/// let weight = Tensor::new(&[[1.0f32, 0.0], [0.5, -0.5], [0.0, 2.0]], &dev)?; // (V, H)
/// let bias = Tensor::new(&[0.1f32, 0.0, -0.1], &dev)?;
/// let targets = Tensor::new(&[2u32, 0, 1], &dev)?;
/// let fused = linear_cross_entropy(&x, &weight, Some(&bias), &targets)?;
/// let logits = x.matmul(&weight.t()?)?.broadcast_add(&bias)?;
/// let composed = cross_entropy(&logits, &targets)?;
/// let (a, b) = (fused.to_scalar::<f32>()?, composed.to_scalar::<f32>()?);
/// assert!((a - b).abs() < 1e-6);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn linear_cross_entropy(x: &Tensor, weight: &Tensor, bias: Option<&Tensor>, targets: &Tensor) -> Result<Tensor> {
    check_float(NAME, x)?;
    let dims = x.dims();
    let Some((&features, leading)) = dims.split_last() else {
        return Err(Error::shape(
            NAME,
            format!("expected an input of shape (…, H), got a scalar of shape {dims:?}"),
            "pass the features along the last dimension",
        ));
    };
    let classes = match weight.dims() {
        &[v, h] if h == features && v > 0 => v,
        got => {
            return Err(Error::shape(
                NAME,
                format!("expected a weight of shape (V, {features}) with V >= 1 for input {dims:?}, got {got:?}"),
                "pass the linear layer's weight, (out_features, in_features)",
            ))
        }
    };
    for (what, t) in std::iter::once(("weight", weight)).chain(bias.map(|b| ("bias", b))) {
        if t.dtype() != x.dtype() || !t.device().same_device(x.device()) {
            return Err(Error::shape(
                NAME,
                format!(
                    "the {what} is {:?} on {:?}, the input {:?} on {:?}",
                    t.dtype(),
                    t.device(),
                    x.dtype(),
                    x.device()
                ),
                "convert the input or the layer to one dtype and device",
            ));
        }
    }
    if let Some(b) = bias {
        if b.dims() != [classes] {
            return Err(Error::shape(
                NAME,
                format!("expected a bias of shape [{classes}] (one per class), got {:?}", b.dims()),
                "pass the linear layer's bias, (out_features)",
            ));
        }
    }
    if targets.dims() != leading {
        return Err(Error::shape(
            NAME,
            format!("expected targets of shape {leading:?} for input {dims:?}, got {:?}", targets.dims()),
            "pass one class index per row of the input",
        ));
    }
    let mut kept = 0usize;
    let mut picked = Vec::with_capacity(targets.elem_count());
    for t in class_indices(NAME, targets)? {
        if t == -100 {
            picked.push(IGNORED);
            continue;
        }
        if t < 0 || t >= classes as i64 {
            return Err(Error::shape(
                NAME,
                format!("Target {t} is out of bounds (the layer has {classes} classes)"),
                "pass class indices in 0..V, or mark padding with -100",
            ));
        }
        picked.push(t as u32);
        kept += 1;
    }
    if kept == 0 || !x.device().is_cpu() {
        // Nothing kept: the mean is 0/0, NaN, with the composition's gradients.
        let logits = x.broadcast_matmul(&weight.t()?)?;
        let logits = match bias {
            Some(b) => logits.broadcast_add(b)?,
            None => logits,
        };
        return cross_entropy(&logits, targets);
    }
    let op = LinearCe { targets: picked.into(), kept, saved: OnceLock::new() };
    let x = x.contiguous()?;
    let weight = weight.contiguous()?;
    Ok(match bias {
        Some(b) => x.apply_op3_arc(&weight, &b.contiguous()?, Arc::new(Box::new(op)))?,
        None => x.apply_op2_arc(&weight, Arc::new(Box::new(op)))?,
    })
}

/// The op: targets (with [`IGNORED`] rows), how many are kept, and the softmax the forward
/// leaves for the backward.
struct LinearCe {
    targets: Arc<[u32]>,
    kept: usize,
    saved: OnceLock<Saved>,
}

/// The softmax of every row, `(N, V)`.
enum Saved {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// Logits `x (n × h) · wᵀ (+ b)`, then per row the softmax (left in `probs`) and the summed loss
/// of the kept rows, `Σ m + log Σ exp(l − m) − l[t]` (`m` the row's maximum, as `log_softmax`).
fn forward<T: Float>(x: &[T], w: &[T], b: Option<&[T]>, targets: &[u32], classes: usize) -> (f64, Vec<T>) {
    use rayon::prelude::*;
    let n = targets.len();
    let h = x.len().checked_div(n).unwrap_or(0);
    let mut probs = vec![T::ZERO; n * classes];
    matmul(&mut probs, classes, false, MatRef::new(x, n, h), MatRef::new(w, classes, h).t());
    let chunk = ROWS_PER_TASK * classes;
    let total: f64 = probs
        .par_chunks_mut(chunk)
        .zip(targets.par_chunks(ROWS_PER_TASK))
        .map(|(rows, targets)| {
            let mut sum = 0.0;
            for (row, &t) in rows.chunks_exact_mut(classes).zip(targets) {
                if let Some(b) = b {
                    for (l, &b) in row.iter_mut().zip(b) {
                        *l += b;
                    }
                }
                let max = row.iter().copied().fold(T::NEG_INFINITY, |m, v| if v > m { v } else { m });
                let mut exps = T::ZERO;
                for &l in row.iter() {
                    exps += (l - max).std_exp();
                }
                let lse = exps.ln();
                if t != IGNORED {
                    // −log_softmax[t] = −((l[t] − m) − lse), as `log_softmax` rounds it.
                    sum -= ((row[t as usize] - max) - lse).to_f64();
                }
                for l in row.iter_mut() {
                    *l = ((*l - max) - lse).std_exp();
                }
            }
            sum
        })
        .sum();
    (total, probs)
}

/// Gradients for the loss's gradient `g`: `dlogits = (softmax − one_hot) · g / kept` on the kept
/// rows (0 on the ignored ones), then `dx = dlogits · w`, `dw = dlogitsᵀ · x`, `db = Σ_rows
/// dlogits`.
fn backward<T: Float>(
    probs: &[T],
    x: &[T],
    w: &[T],
    targets: &[u32],
    classes: usize,
    scale: T,
) -> (Vec<T>, Vec<T>, Vec<T>) {
    use rayon::prelude::*;
    let n = targets.len();
    let h = x.len() / n;
    let mut dl = probs.to_vec();
    dl.par_chunks_mut(ROWS_PER_TASK * classes).zip(targets.par_chunks(ROWS_PER_TASK)).for_each(|(rows, targets)| {
        for (row, &t) in rows.chunks_exact_mut(classes).zip(targets) {
            if t == IGNORED {
                row.fill(T::ZERO);
                continue;
            }
            for d in row.iter_mut() {
                *d = *d * scale;
            }
            row[t as usize] -= scale;
        }
    });
    let lhs = MatRef::new(&dl, n, classes);
    let mut dx = vec![T::ZERO; n * h];
    matmul(&mut dx, h, false, lhs, MatRef::new(w, classes, h));
    let mut dw = vec![T::ZERO; classes * h];
    matmul(&mut dw, h, false, lhs.t(), MatRef::new(x, n, h));
    let mut db = vec![T::ZERO; classes];
    for row in dl.chunks_exact(classes) {
        for (s, &d) in db.iter_mut().zip(row) {
            *s += d;
        }
    }
    (dx, dw, db)
}

impl LinearCe {
    fn classes(&self, weight: &Layout) -> usize {
        weight.dims()[0]
    }

    fn cpu_fwd(
        &self,
        x: (&CpuStorage, &Layout),
        w: (&CpuStorage, &Layout),
        b: Option<(&CpuStorage, &Layout)>,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let classes = self.classes(w.1);
        let (loss, saved) = match x.0 {
            CpuStorage::F32(_) => {
                let b = b.map(|(s, l)| values::<f32>(s, l, NAME)).transpose()?;
                let (total, probs) =
                    forward(values(x.0, x.1, NAME)?, values(w.0, w.1, NAME)?, b, &self.targets, classes);
                (CpuStorage::F32(vec![(total / self.kept as f64) as f32]), Saved::F32(probs))
            }
            CpuStorage::F64(_) => {
                let b = b.map(|(s, l)| values::<f64>(s, l, NAME)).transpose()?;
                let (total, probs) =
                    forward(values(x.0, x.1, NAME)?, values(w.0, w.1, NAME)?, b, &self.targets, classes);
                (CpuStorage::F64(vec![total / self.kept as f64]), Saved::F64(probs))
            }
            other => candle_core::bail!("{NAME} supports F32 and F64, got {:?}", other.dtype()),
        };
        if self.saved.set(saved).is_err() {
            candle_core::bail!("internal error: {NAME} ran its forward twice");
        }
        Ok((loss, Shape::from(())))
    }

    fn bwd(&self, x: &Tensor, w: &Tensor, grad: &Tensor) -> candle_core::Result<(Tensor, Tensor, Tensor)> {
        let Some(saved) = self.saved.get() else {
            candle_core::bail!("internal error: {NAME}'s backward ran before its forward");
        };
        let scale = grad.to_dtype(DType::F64)?.to_scalar::<f64>()? / self.kept as f64;
        let classes = w.dim(0)?;
        let (xs, xl) = x.storage_and_layout();
        let (ws, wl) = w.storage_and_layout();
        let (candle_core::Storage::Cpu(xs), candle_core::Storage::Cpu(ws)) = (&*xs, &*ws) else {
            candle_core::bail!("{NAME} runs on the CPU only");
        };
        let dev = x.device();
        Ok(match saved {
            Saved::F32(probs) => {
                let (dx, dw, db) =
                    backward(probs, values(xs, xl, NAME)?, values(ws, wl, NAME)?, &self.targets, classes, scale as f32);
                (Tensor::from_vec(dx, x.shape(), dev)?, Tensor::from_vec(dw, w.shape(), dev)?, Tensor::new(db, dev)?)
            }
            Saved::F64(probs) => {
                let (dx, dw, db) =
                    backward(probs, values(xs, xl, NAME)?, values(ws, wl, NAME)?, &self.targets, classes, scale);
                (Tensor::from_vec(dx, x.shape(), dev)?, Tensor::from_vec(dw, w.shape(), dev)?, Tensor::new(db, dev)?)
            }
        })
    }
}

impl candle_core::CustomOp2 for LinearCe {
    fn name(&self) -> &'static str {
        "recur-linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        LinearCe::cpu_fwd(self, (s1, l1), (s2, l2), None)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, _) = LinearCe::bwd(self, x, w, grad)?;
        Ok((Some(dx), Some(dw)))
    }
}

impl candle_core::CustomOp3 for LinearCe {
    fn name(&self) -> &'static str {
        "recur-linear-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        LinearCe::cpu_fwd(self, (s1, l1), (s2, l2), Some((s3, l3)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (dx, dw, db) = LinearCe::bwd(self, x, w, grad)?;
        Ok((Some(dx), Some(dw), Some(db)))
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    /// Deterministic values in about [−1.5, 1.5).
    fn values_f64(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                (s >> 11) as f64 / (1u64 << 53) as f64 * 3.0 - 1.5
            })
            .collect()
    }

    /// `x (lead…, h)`, `w (v, h)`, `b (v)` as variables of `dtype`.
    fn operands(lead: &[usize], h: usize, v: usize, dtype: DType) -> (Var, Var, Var) {
        let dev = Device::Cpu;
        let n: usize = lead.iter().product();
        let mut dims = lead.to_vec();
        dims.push(h);
        let var = |data: Vec<f64>, dims: &[usize]| {
            Var::from_tensor(&Tensor::from_vec(data, dims, &dev).unwrap().to_dtype(dtype).unwrap()).unwrap()
        };
        (var(values_f64(n * h, 1), &dims), var(values_f64(v * h, 2), &[v, h]), var(values_f64(v, 3), &[v]))
    }

    /// The loss as candle ops: linear, then `cross_entropy`.
    fn composed(x: &Tensor, w: &Tensor, b: Option<&Tensor>, targets: &Tensor) -> Tensor {
        let logits = x.broadcast_matmul(&w.t().unwrap()).unwrap();
        let logits = match b {
            Some(b) => logits.broadcast_add(b).unwrap(),
            None => logits,
        };
        cross_entropy(&logits, targets).unwrap()
    }

    /// The loss (times `scale`, so the upstream gradient is not 1) and the gradients of `x`, `w`
    /// and (if used) `b`, flattened to f64.
    fn loss_and_grads(loss: Tensor, scale: f64, vars: &[&Var]) -> (f64, Vec<Vec<f64>>) {
        let value = loss.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap();
        let grads = (loss * scale).unwrap().backward().unwrap();
        let grads = vars
            .iter()
            .map(|v| match grads.get(v.as_tensor()) {
                Some(g) => g.flatten_all().unwrap().to_dtype(DType::F64).unwrap().to_vec1().unwrap(),
                None => panic!("no gradient for a {:?} operand", v.dims()),
            })
            .collect();
        (value, grads)
    }

    fn assert_close(got: &[f64], want: &[f64], tol: f64, what: &str) {
        assert_eq!(got.len(), want.len(), "{what}: lengths");
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!((g - w).abs() <= tol * (1.0 + w.abs()), "{what}[{i}]: got {g}, want {w}");
        }
    }

    /// Targets for `lead` rows of `v` classes: every class hit, some rows ignored (-100) when
    /// `ignore` (i64 targets then, u32 otherwise).
    fn targets(lead: &[usize], v: usize, ignore: bool) -> Tensor {
        let n: usize = lead.iter().product();
        let dev = Device::Cpu;
        if ignore {
            let t: Vec<i64> = (0..n).map(|i| if i % 4 == 1 { -100 } else { ((i * 5 + 2) % v) as i64 }).collect();
            Tensor::from_vec(t, lead, &dev).unwrap()
        } else {
            let t: Vec<u32> = (0..n).map(|i| ((i * 5 + 2) % v) as u32).collect();
            Tensor::from_vec(t, lead, &dev).unwrap()
        }
    }

    #[test]
    fn loss_and_gradients_match_the_composition() {
        // (leading dims, H, V, bias, ignored rows, dtype, tolerance)
        type Case = (&'static [usize], usize, usize, bool, bool, DType, f64);
        let cases: [Case; 7] = [
            (&[7], 5, 4, true, false, DType::F64, 1e-12),
            (&[7], 5, 4, false, false, DType::F64, 1e-12),
            (&[3, 9], 6, 11, true, true, DType::F64, 1e-12),
            // More rows than a rayon task takes, so the row passes split.
            (&[5, 40], 16, 9, true, true, DType::F64, 1e-12),
            (&[1], 3, 1, true, false, DType::F64, 1e-12),
            (&[4, 33], 12, 7, true, true, DType::F32, 2e-5),
            (&[130], 8, 74, false, false, DType::F32, 2e-5),
        ];
        for (lead, h, v, with_bias, ignore, dtype, tol) in cases {
            let what = format!("{lead:?} h {h} v {v} bias {with_bias} ignore {ignore} {dtype:?}");
            let (x, w, b) = operands(lead, h, v, dtype);
            let t = targets(lead, v, ignore);
            let bias = with_bias.then_some(b.as_tensor());
            let vars: Vec<&Var> = if with_bias { vec![&x, &w, &b] } else { vec![&x, &w] };
            let fused = linear_cross_entropy(&x, &w, bias, &t).unwrap();
            assert_eq!(fused.dims(), &[] as &[usize], "{what}: a scalar");
            let (got, got_grads) = loss_and_grads(fused, 2.5, &vars);
            let (want, want_grads) = loss_and_grads(composed(&x, &w, bias, &t), 2.5, &vars);
            assert_close(&[got], &[want], tol, &format!("{what}: loss"));
            for (name, (g, w)) in ["x", "weight", "bias"].iter().zip(got_grads.iter().zip(&want_grads)) {
                assert_close(g, w, tol, &format!("{what}: d{name}"));
            }
        }
    }

    #[test]
    fn gradients_match_central_differences() {
        let lead = [3, 4];
        let (h, v) = (5, 6);
        let (x, w, b) = operands(&lead, h, v, DType::F64);
        let t = targets(&lead, v, true);
        let loss = |x: &Tensor, w: &Tensor, b: &Tensor| {
            linear_cross_entropy(x, w, Some(b), &t).unwrap().to_scalar::<f64>().unwrap()
        };
        let (_, grads) = loss_and_grads(linear_cross_entropy(&x, &w, Some(&b), &t).unwrap(), 1.0, &[&x, &w, &b]);
        let eps = 1e-6;
        for (k, var) in [&x, &w, &b].into_iter().enumerate() {
            let base: Vec<f64> = var.flatten_all().unwrap().to_vec1().unwrap();
            for i in 0..base.len() {
                let at = |delta: f64| {
                    let mut moved = base.clone();
                    moved[i] += delta;
                    let moved = Tensor::from_vec(moved, var.shape(), &Device::Cpu).unwrap();
                    let mut args = [x.as_tensor().clone(), w.as_tensor().clone(), b.as_tensor().clone()];
                    args[k] = moved;
                    loss(&args[0], &args[1], &args[2])
                };
                let numeric = (at(eps) - at(-eps)) / (2.0 * eps);
                let analytic = grads[k][i];
                assert!((numeric - analytic).abs() < 1e-8, "operand {k}[{i}]: numeric {numeric}, analytic {analytic}");
            }
        }
    }

    #[test]
    fn no_target_kept_gives_nan_like_the_composition() {
        let (x, w, b) = operands(&[3], 4, 5, DType::F64);
        let t = Tensor::new(&[-100i64, -100, -100], &Device::Cpu).unwrap();
        let fused = linear_cross_entropy(&x, &w, Some(&b), &t).unwrap().to_scalar::<f64>().unwrap();
        let want = composed(&x, &w, Some(&b), &t).to_scalar::<f64>().unwrap();
        assert!(fused.is_nan() && want.is_nan(), "fused {fused}, composed {want}");
    }

    #[test]
    fn backward_can_run_twice() {
        let (x, w, b) = operands(&[6], 4, 5, DType::F64);
        let t = targets(&[6], 5, false);
        let loss = linear_cross_entropy(&x, &w, Some(&b), &t).unwrap();
        let first = loss.backward().unwrap();
        let second = loss.backward().unwrap();
        for var in [&x, &w, &b] {
            let a: Vec<f64> = first.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f64> = second.get(var.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a, b);
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let dev = Device::Cpu;
        let (x, w, b) = operands(&[2, 3], 4, 5, DType::F32);
        let t = targets(&[2, 3], 5, false);
        let message = |r: Result<Tensor>| match r {
            Ok(_) => panic!("accepted"),
            Err(e) => e.to_string(),
        };
        let int_x = Tensor::zeros((2, 3, 4), DType::U32, &dev).unwrap();
        assert!(message(linear_cross_entropy(&int_x, &w, Some(&b), &t)).contains("U32"));
        let scalar = Tensor::new(1.0f32, &dev).unwrap();
        assert!(message(linear_cross_entropy(&scalar, &w, Some(&b), &t)).contains("(…, H)"));
        let narrow_w = Tensor::zeros((5, 3), DType::F32, &dev).unwrap();
        assert!(message(linear_cross_entropy(&x, &narrow_w, Some(&b), &t)).contains("(V, 4)"));
        let no_classes = Tensor::zeros((0, 4), DType::F32, &dev).unwrap();
        assert!(message(linear_cross_entropy(&x, &no_classes, None, &t)).contains("V >= 1"));
        let short_b = Tensor::zeros(4, DType::F32, &dev).unwrap();
        assert!(message(linear_cross_entropy(&x, &w, Some(&short_b), &t)).contains("bias of shape [5]"));
        let f64_w = w.to_dtype(DType::F64).unwrap();
        assert!(message(linear_cross_entropy(&x, &f64_w, Some(&b), &t)).contains("the weight is F64"));
        let flat_t = t.flatten_all().unwrap();
        assert!(message(linear_cross_entropy(&x, &w, Some(&b), &flat_t)).contains("targets of shape [2, 3]"));
        for bad in [5i64, -1] {
            let t = Tensor::new(&[[0i64, bad, 1], [2, 3, 4]], &dev).unwrap();
            let m = message(linear_cross_entropy(&x, &w, Some(&b), &t));
            assert!(m.contains(&format!("Target {bad} is out of bounds")), "{m}");
        }
        let fractional = Tensor::new(&[[0.5f32, 1.0, 2.0], [0.0, 1.0, 2.0]], &dev).unwrap();
        assert!(message(linear_cross_entropy(&x, &w, Some(&b), &fractional)).contains("whole numbers"));
    }
}
