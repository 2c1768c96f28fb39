//! Gradient clipping with PyTorch's rules: by global norm (`clip_grad_norm_`) and by value
//! (`clip_grad_value_`).

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};

use crate::{Error, Result};

/// Which norm [`clip_grad_norm`] measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum NormType {
    /// The Euclidean norm (PyTorch's default, `norm_type=2.0`).
    L2,
    /// The largest absolute value (`norm_type=inf`).
    Inf,
}

/// Scales every gradient of `vars` found in `grads` so that their global norm is at most
/// `max_norm`, and returns the global norm before clipping, as `torch.nn.utils.clip_grad_norm_`:
///
/// `total = ‖[‖g₁‖, …, ‖gₙ‖]‖` (the norm of the per-tensor norms, which for L2 is the norm of all
/// gradients together); `coef = min(max_norm / (total + 1e-6), 1)`; every gradient is multiplied by
/// `coef`. When `coef` is 1 the gradients are left as they are, which is what PyTorch's
/// multiplication by 1 gives, value for value.
///
/// Norms are accumulated in f64 whatever the gradients' dtype; the coefficient is rounded to the
/// gradients' dtype for the multiplication. With `error_if_nonfinite`, a NaN or infinite total
/// returns [`Error::NonFinite`] and leaves every gradient untouched (so a following optimizer
/// step can be skipped); without it, the gradients are scaled (to NaN) as PyTorch does.
/// Variables without a gradient are left out. With no gradient at all the total is 0.
pub fn clip_grad_norm(
    vars: &[Var],
    grads: &mut GradStore,
    max_norm: f64,
    norm_type: NormType,
    error_if_nonfinite: bool,
) -> Result<f64> {
    let mut norms = Vec::with_capacity(vars.len());
    for var in vars {
        let Some(grad) = grads.get(var.as_tensor()) else { continue };
        norms.push(tensor_norm(grad, norm_type)?);
    }
    let total = match norm_type {
        NormType::L2 => norms.iter().map(|n| n * n).sum::<f64>().sqrt(),
        NormType::Inf => norms.iter().fold(0.0f64, |m, n| if *n > m || n.is_nan() { *n } else { m }),
    };
    if error_if_nonfinite && !total.is_finite() {
        return Err(Error::NonFinite {
            what: "clip_grad_norm",
            message: format!("the total norm of order {norm_type:?} of the gradients is non-finite ({total}), so it cannot be clipped"),
            fix: "lower the learning rate, check the input for NaN/Inf, or skip this step (the gradients are unchanged)".into(),
        });
    }
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    let coef = if coef.is_nan() { f64::NAN } else { coef };
    if coef == 1.0 {
        // PyTorch multiplies by the clamped coefficient even then; a product with 1 changes no
        // value (NaN and infinities included), so the gradients are left as they are.
        return Ok(total);
    }
    for var in vars {
        let Some(grad) = grads.get(var.as_tensor()) else { continue };
        let scaled = match grad.dtype() {
            DType::F32 => grad.broadcast_mul(&candle_core::Tensor::new(coef as f32, grad.device())?)?,
            _ => grad.broadcast_mul(&candle_core::Tensor::new(coef, grad.device())?.to_dtype(grad.dtype())?)?,
        };
        grads.insert(var.as_tensor(), scaled);
    }
    Ok(total)
}

/// The norm of one tensor's values, accumulated in f64: read in place from a contiguous CPU
/// tensor of f32 or f64, through a copy otherwise.
fn tensor_norm(t: &candle_core::Tensor, norm_type: NormType) -> Result<f64> {
    use candle_core::{CpuStorage, Storage};
    {
        let (storage, layout) = t.storage_and_layout();
        if let (Storage::Cpu(cpu), Some((start, end))) = (&*storage, layout.contiguous_offsets()) {
            match cpu {
                CpuStorage::F32(v) => return Ok(norm_of(&v[start..end], norm_type)),
                CpuStorage::F64(v) => return Ok(norm_of(&v[start..end], norm_type)),
                _ => {}
            }
        }
    }
    let values: Vec<f64> = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
    Ok(norm_of(&values, norm_type))
}

/// [`tensor_norm`] of a slice. The L2 sum runs in 8 interleaved partial sums (always in the same
/// order, so the result does not depend on threads), which the compiler can vectorise.
fn norm_of<T: Copy + Into<f64>>(values: &[T], norm_type: NormType) -> f64 {
    match norm_type {
        NormType::L2 => {
            let mut sums = [0.0f64; 8];
            let chunks = values.chunks_exact(8);
            let tail = chunks.remainder();
            for chunk in chunks {
                for (s, &v) in sums.iter_mut().zip(chunk) {
                    let v: f64 = v.into();
                    *s += v * v;
                }
            }
            for (s, &v) in sums.iter_mut().zip(tail) {
                let v: f64 = v.into();
                *s += v * v;
            }
            sums.iter().sum::<f64>().sqrt()
        }
        NormType::Inf => values.iter().fold(0.0f64, |m, &v| {
            let a = v.into().abs();
            if a > m || a.is_nan() {
                a
            } else {
                m
            }
        }),
    }
}

/// Clamps every gradient of `vars` found in `grads` to `[−clip_value, clip_value]`, as
/// `torch.nn.utils.clip_grad_value_`.
pub fn clip_grad_value(vars: &[Var], grads: &mut GradStore, clip_value: f64) -> Result<()> {
    if clip_value.is_nan() || clip_value < 0.0 {
        return Err(Error::config(
            "clip_grad_value",
            format!("clip_value must be >= 0, got {clip_value}"),
            "pass a non-negative clip value",
        ));
    }
    for var in vars {
        let Some(grad) = grads.get(var.as_tensor()) else { continue };
        let clamped = grad.clamp(-clip_value, clip_value)?;
        grads.insert(var.as_tensor(), clamped);
    }
    Ok(())
}
