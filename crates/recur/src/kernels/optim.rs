//! Optimizer update loops over slices that run per CPU path: Adam / AdamW's, compiled for AVX2 +
//! FMA and for AVX-512 as well as portably (the rules themselves live with their configurations in
//! `train::optim`), and the elementwise helpers the rules share.

// The update loop spells each step out as `x = x + …` to mirror PyTorch's operation order.
#![allow(clippy::assign_op_pattern)]

use super::cpu::{self, CpuPath};
use super::Float;

/// ATen's vectorised `lerp(self, end, weight)`: `fma(w, end − self, self)` for |w| < 0.5, else
/// `fma(w − 1, end − self, end)`.
#[inline(always)]
pub(crate) fn lerp<T: Float>(start: T, end: T, weight: T) -> T {
    let diff = end - start;
    if weight.abs() < T::from_f64(0.5) {
        weight.mul_add(diff, start)
    } else {
        (weight - T::from_f64(1.0)).mul_add(diff, end)
    }
}

#[inline(always)]
pub(crate) fn is_nan<T: Float>(x: T) -> bool {
    x.partial_cmp(&x).is_none()
}

/// One Adam or AdamW step's hyper-parameters, PyTorch's names: `torch.optim.Adam` / `AdamW`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct AdamStep {
    /// Learning rate.
    pub(crate) lr: f64,
    /// Decay rates (β1, β2) of the moment estimates.
    pub(crate) betas: (f64, f64),
    /// Added to the denominator.
    pub(crate) eps: f64,
    /// L2 penalty added to the gradient, or with `decoupled` the decay `p *= 1 − lr·wd`.
    pub(crate) weight_decay: f64,
    /// Divide by the running maximum of the second moment.
    pub(crate) amsgrad: bool,
    /// AdamW's decoupled weight decay.
    pub(crate) decoupled: bool,
    /// The step count after this step (1 for the first).
    pub(crate) step: u64,
}

/// One Adam / AdamW update of one parameter `p` with gradient `g` and state `bufs`
/// (`[exp_avg, exp_avg_sq, (max_exp_avg_sq)]`, all of `p`'s length), on the kernels' CPU path.
pub(crate) fn adam_update<T: Float>(a: &AdamStep, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
    adam_update_on(cpu::path(), a, p, g, bufs)
}

/// [`adam_update`] on CPU path `path` (which the CPU must support: `cpu::path` only answers such
/// paths). On AVX2 + FMA and AVX-512 the loop runs compiled for them: its `mul_add`s then become
/// vector FMA instructions instead of one call to the math library's `fma` per element (the same
/// values on every path: an FMA is exact, and the loop sums nothing across elements).
fn adam_update_on<T: Float>(path: CpuPath, a: &AdamStep, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
    assert!(path.supported(), "{path} is not supported by this CPU");
    #[cfg(target_arch = "x86_64")]
    match path {
        // SAFETY: the CPU supports AVX-512 (`path` is supported, asserted above), the only
        // requirement of `adam_avx512` beyond those of its safe body.
        CpuPath::Avx512 => return unsafe { adam_avx512(a, p, g, bufs) },
        // SAFETY: as above, for AVX2 and FMA.
        CpuPath::Avx2 => return unsafe { adam_fma(a, p, g, bufs) },
        CpuPath::Portable => {}
    }
    adam_body(a, p, g, bufs)
}

/// [`adam_update`] compiled for AVX2 + FMA.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn adam_fma<T: Float>(a: &AdamStep, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
    adam_body(a, p, g, bufs)
}

/// [`adam_update`] compiled for AVX-512 (16 `f32` or 8 `f64` lanes).
///
/// # Safety
/// The CPU must support AVX-512 F, BW, DQ and VL (and AVX2 and FMA).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl")]
unsafe fn adam_avx512<T: Float>(a: &AdamStep, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
    adam_body(a, p, g, bufs)
}

/// The Adam / AdamW loop, in the order of PyTorch's `_single_tensor_adam`.
#[inline(always)]
fn adam_body<T: Float>(a: &AdamStep, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
    let (beta1, beta2) = a.betas;
    let step_f = a.step as f64;
    let bias_correction1 = 1.0 - beta1.powf(step_f);
    let bias_correction2 = 1.0 - beta2.powf(step_f);
    let step_size = T::from_f64(-(a.lr / bias_correction1));
    let bc2_sqrt = T::from_f64(bias_correction2.powf(0.5));
    let (w1, b2, w2, eps) =
        (T::from_f64(1.0 - beta1), T::from_f64(beta2), T::from_f64(1.0 - beta2), T::from_f64(a.eps));
    let decay = T::from_f64(1.0 - a.lr * a.weight_decay);
    let wd = T::from_f64(a.weight_decay);
    let (moments, rest) = bufs.split_at_mut(1);
    let (second, max_second) = rest.split_at_mut(1);
    let (m, v) = (&mut moments[0], &mut second[0]);
    for i in 0..p.len() {
        let mut d = g[i];
        if a.weight_decay != 0.0 {
            if a.decoupled {
                p[i] = p[i] * decay;
            } else {
                d = wd.mul_add(p[i], d);
            }
        }
        m[i] = lerp(m[i], d, w1);
        v[i] = (w2 * d).mul_add(d, v[i] * b2); // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        let denom = if a.amsgrad {
            let mx = &mut max_second[0][i];
            // torch.maximum: a NaN on either side wins.
            if !is_nan(*mx) && (v[i] > *mx || is_nan(v[i])) {
                *mx = v[i];
            }
            mx.sqrt() / bc2_sqrt + eps
        } else {
            v[i].sqrt() / bc2_sqrt + eps
        };
        p[i] = p[i] + step_size * m[i] / denom; // param.addcdiv_(exp_avg, denom, value=-step_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Adam / AdamW loop on every CPU path the machine has (compiled for AVX-512, for AVX2 +
    /// FMA, portable) and the portable build of the same body give bitwise equal results.
    #[test]
    fn adam_builds_of_every_path_agree() {
        for path in CpuPath::ALL.into_iter().filter(|p| p.supported()) {
            adam_build_agrees_with_portable(path);
        }
    }

    fn adam_build_agrees_with_portable(path: CpuPath) {
        let n = 1000;
        let p0: Vec<f32> = (0..n).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
        let grads: Vec<Vec<f32>> =
            (0..4).map(|s| (0..n).map(|i| ((i * 13 + s * 7) % 29) as f32 / 9.0 - 1.5).collect()).collect();
        for (decoupled, amsgrad) in [(false, false), (false, true), (true, false), (true, true)] {
            // `AdamConfig { amsgrad, weight_decay: 0.05, lr: 0.01, ..AdamConfig::default() }`.
            let hyper =
                AdamStep { lr: 0.01, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.05, amsgrad, decoupled, step: 0 };
            let (mut pa, mut pb) = (p0.clone(), p0.clone());
            let (mut ba, mut bb) = (vec![vec![0.0f32; n]; 3], vec![vec![0.0f32; n]; 3]);
            for (step, g) in (1..).zip(&grads) {
                let a = AdamStep { step, ..hyper };
                let mut va: Vec<&mut [f32]> = ba.iter_mut().map(Vec::as_mut_slice).collect();
                adam_update_on(path, &a, &mut pa, g, &mut va);
                let mut vb: Vec<&mut [f32]> = bb.iter_mut().map(Vec::as_mut_slice).collect();
                adam_body(&a, &mut pb, g, &mut vb);
            }
            assert_ne!(pa, p0);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&pa), bits(&pb), "{path} decoupled={decoupled} amsgrad={amsgrad}: parameter");
            for (a, b) in ba.iter().zip(&bb) {
                assert_eq!(bits(a), bits(b), "{path} decoupled={decoupled} amsgrad={amsgrad}: state");
            }
        }
    }

    #[test]
    fn lerp_matches_aten_branches() {
        assert_eq!(lerp(1.0f64, 3.0, 0.25), 1.5);
        assert_eq!(lerp(1.0f32, 3.0, 0.75), 2.5);
        assert_eq!(lerp(1.0f64, 3.0, 0.75), 2.5);
    }
}
