//! Optimizers over candle variables with PyTorch's update rules, operation for operation:
//! [`Sgd`] (momentum, dampening, Nesterov, weight decay), [`Adam`] (L2 weight decay, AMSGrad),
//! [`AdamW`], [`RmsProp`] (alpha, centered, momentum) and [`Adagrad`].
//!
//! Each update runs on the parameter's values on the host, in the parameter's own precision (F32
//! or F64), in the order of PyTorch's single-tensor implementation (`torch/optim/*.py`,
//! `_single_tensor_*`, the path PyTorch takes on the CPU by default): the same `lerp`, `addcmul`
//! and `addcdiv` groupings, with every scalar computed in f64 (as Python does) and rounded to the
//! parameter's precision where it meets the tensor (as ATen does), and a fused multiply-add
//! wherever ATen's CPU kernels use one (`add(alpha=)`, `addcmul`, `lerp`; not `addcdiv`). On
//! fixed gradients SGD equals PyTorch 2.15 bit for bit; Adam, AdamW, RMSprop and Adagrad do in
//! most elements and otherwise differ in the last bit or two, because PyTorch's CPU `sqrt` (MKL
//! VML) is not correctly rounded and Rust's is (`tests/train_fixtures.rs`). A parameter without a gradient
//! in the [`GradStore`] is skipped, state and step count untouched, as PyTorch skips
//! `p.grad is None`.
//!
//! There is nothing to zero between steps: candle's `backward` returns a fresh `GradStore`.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use recur::train::{named_vars, Adam, AdamConfig, Optimizer};
//!
//! let varmap = candle_nn::VarMap::new();
//! let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let lstm = recur::Lstm::new(recur::LstmConfig::new(2, 3), vb.pp("lstm"))?;
//! let mut opt = Adam::new(named_vars(&varmap), AdamConfig { lr: 0.01, ..AdamConfig::default() })?;
//! let x = Tensor::ones((4, 1, 2), DType::F32, &Device::Cpu)?;
//! let (y, _) = lstm.forward(&x, None)?;
//! opt.step(&y.sqr()?.mean_all()?.backward()?)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

// The update rules spell each step out as `x = x + …` to mirror PyTorch's operation order.
#![allow(clippy::assign_op_pattern)]

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, Layout, Tensor, Var};
use candle_nn::VarMap;
use serde_json::{json, Value};

use crate::kernels::cpu::{self, CpuPath};
use crate::kernels::Float;
use crate::ops::Element;
use crate::{Error, Result};

/// The variables of a `VarMap`, sorted by name: the order and names optimizers and checkpoints use.
pub fn named_vars(varmap: &VarMap) -> Vec<(String, Var)> {
    let data = varmap.data().lock();
    let mut vars: Vec<(String, Var)> = match data {
        Ok(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        Err(poisoned) => poisoned.into_inner().iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    };
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    vars
}

/// The saved state of an optimizer: its kind, hyper-parameters and step counts as JSON, and its
/// buffers as tensors named `{parameter}.{buffer}` (PyTorch's buffer names: `momentum_buffer`,
/// `exp_avg`, `exp_avg_sq`, `max_exp_avg_sq`, `square_avg`, `grad_avg`, `sum`).
#[derive(Clone, Debug)]
pub struct OptimizerState {
    /// `{"kind": "Adam", "config": {...}, "steps": {"param": n, ...}}`.
    pub meta: Value,
    /// Buffers, `{parameter}.{buffer}` → tensor.
    pub tensors: BTreeMap<String, Tensor>,
}

/// What every optimizer does.
pub trait Optimizer {
    /// One update of every parameter that has a gradient in `grads`.
    fn step(&mut self, grads: &GradStore) -> Result<()>;
    /// The current learning rate.
    fn learning_rate(&self) -> f64;
    /// Sets the learning rate (what a schedule does between steps).
    fn set_learning_rate(&mut self, lr: f64);
    /// The parameters, in update order, with their names.
    fn params(&self) -> &[(String, Var)];
    /// Buffers, step counts and hyper-parameters, to save.
    fn state_dict(&self) -> Result<OptimizerState>;
    /// Restores what [`Optimizer::state_dict`] saved; validates the kind, the parameter names
    /// and every buffer's shape and dtype, reporting all problems at once and changing nothing
    /// on error.
    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()>;
    /// `loss.backward()` then [`Optimizer::step`]: PyTorch's `zero_grad(); loss.backward();
    /// step()` in one call (candle's backward returns fresh gradients, so nothing needs zeroing).
    fn backward_step(&mut self, loss: &candle_core::Tensor) -> Result<()> {
        let grads = loss.backward()?;
        self.step(&grads)
    }
}

/// ATen's vectorised `lerp(self, end, weight)`: `fma(w, end − self, self)` for |w| < 0.5, else
/// `fma(w − 1, end − self, end)`.
#[inline(always)]
fn lerp<T: Float>(start: T, end: T, weight: T) -> T {
    let diff = end - start;
    if weight.abs() < T::from_f64(0.5) {
        weight.mul_add(diff, start)
    } else {
        (weight - T::from_f64(1.0)).mul_add(diff, end)
    }
}

#[inline(always)]
fn is_nan<T: Float>(x: T) -> bool {
    x.partial_cmp(&x).is_none()
}

/// One optimizer's rule: buffer names, how buffers start, and the update.
trait Rule: Sync {
    const KIND: &'static str;
    fn buffers(&self) -> Vec<&'static str>;
    /// The initial value of buffer `index` (before the first step).
    fn initial(&self, _index: usize) -> f64 {
        0.0
    }
    /// `step` is the step count after this step (1 for the first).
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]);
    fn lr(&self) -> f64;
    fn set_lr(&mut self, lr: f64);
    fn to_json(&self) -> Value;
    fn validate(&self) -> Result<()>;
}

enum Buffers {
    F32(Vec<Vec<f32>>),
    F64(Vec<Vec<f64>>),
}

struct Slot {
    step: u64,
    buffers: Option<Buffers>,
}

/// The parameters and per-parameter state shared by every optimizer.
struct Core<R: Rule> {
    rule: R,
    params: Vec<(String, Var)>,
    slots: Vec<Slot>,
}

impl<R: Rule> Core<R> {
    fn new(params: Vec<(String, Var)>, rule: R) -> Result<Self> {
        rule.validate()?;
        for (name, var) in &params {
            if !matches!(var.dtype(), DType::F32 | DType::F64) {
                return Err(Error::config(
                    R::KIND,
                    format!(
                        "parameter {name} has dtype {:?}; the optimizers update F32 and F64 parameters",
                        var.dtype()
                    ),
                    "build the model in F32 or F64",
                ));
            }
        }
        let mut names: Vec<&str> = params.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            return Err(Error::config(
                R::KIND,
                format!("parameter name {} appears twice", w[0]),
                "pass each parameter once, with a unique name",
            ));
        }
        let slots = params.iter().map(|_| Slot { step: 0, buffers: None }).collect();
        Ok(Self { rule, params, slots })
    }

    fn step(&mut self, grads: &GradStore) -> Result<()> {
        for ((name, var), slot) in self.params.iter().zip(self.slots.iter_mut()) {
            let Some(grad) = grads.get(var.as_tensor()) else { continue };
            if grad.dims() != var.dims() {
                return Err(Error::shape(
                    R::KIND,
                    format!("gradient of {name} has shape {:?}, the parameter {:?}", grad.dims(), var.dims()),
                    "pass the GradStore of a backward through this model",
                ));
            }
            match var.dtype() {
                DType::F32 => update_one::<R, f32>(
                    &self.rule,
                    var,
                    grad,
                    slot,
                    |b| match b {
                        Buffers::F32(v) => Some(v),
                        Buffers::F64(_) => None,
                    },
                    Buffers::F32,
                )?,
                _ => update_one::<R, f64>(
                    &self.rule,
                    var,
                    grad,
                    slot,
                    |b| match b {
                        Buffers::F64(v) => Some(v),
                        Buffers::F32(_) => None,
                    },
                    Buffers::F64,
                )?,
            }
        }
        Ok(())
    }

    fn state_dict(&self) -> Result<OptimizerState> {
        let names = self.rule.buffers();
        let mut tensors = BTreeMap::new();
        let mut steps = serde_json::Map::new();
        for ((name, var), slot) in self.params.iter().zip(&self.slots) {
            steps.insert(name.clone(), json!(slot.step));
            let Some(buffers) = &slot.buffers else { continue };
            for (i, buffer) in names.iter().enumerate() {
                let t = match buffers {
                    Buffers::F32(b) => Tensor::from_slice(&b[i], var.shape(), &candle_core::Device::Cpu)?,
                    Buffers::F64(b) => Tensor::from_slice(&b[i], var.shape(), &candle_core::Device::Cpu)?,
                };
                tensors.insert(format!("{name}.{buffer}"), t);
            }
        }
        let meta = json!({ "kind": R::KIND, "config": self.rule.to_json(), "steps": steps });
        Ok(OptimizerState { meta, tensors })
    }

    fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
        let what = R::KIND;
        let fix = "load the state saved by the same optimizer over the same model";
        let kind = state.meta.get("kind").and_then(Value::as_str).unwrap_or("<none>");
        if kind != R::KIND {
            return Err(Error::Schema {
                what,
                problems: vec![format!("the state is of optimizer {kind}, not {}", R::KIND)],
                fix: fix.into(),
            });
        }
        let steps = state.meta.get("steps").and_then(Value::as_object);
        let names = self.rule.buffers();
        let mut problems = Vec::new();
        let mut new_slots = Vec::with_capacity(self.params.len());
        let mut expected_keys = std::collections::BTreeSet::new();
        for (name, var) in &self.params {
            let step = match steps.and_then(|s| s.get(name)).and_then(Value::as_u64) {
                Some(s) => s,
                None => {
                    problems.push(format!("Missing key(s): steps.{name}"));
                    0
                }
            };
            let present: Vec<Option<&Tensor>> =
                names.iter().map(|b| state.tensors.get(&format!("{name}.{b}"))).collect();
            for b in &names {
                expected_keys.insert(format!("{name}.{b}"));
            }
            let buffers = if names.is_empty() {
                // No buffers (plain SGD): a step count is all there is.
                Some(read_buffers(var.dtype(), &[])?)
            } else if present.iter().all(Option::is_none) {
                if step > 0 {
                    problems.push(format!(
                        "Missing key(s): {}",
                        names.iter().map(|b| format!("{name}.{b}")).collect::<Vec<_>>().join(", ")
                    ));
                }
                None
            } else {
                let mut ok = true;
                for (b, t) in names.iter().zip(&present) {
                    match t {
                        None => {
                            problems.push(format!("Missing key(s): {name}.{b}"));
                            ok = false;
                        }
                        Some(t) if t.dims() != var.dims() || t.dtype() != var.dtype() => {
                            problems.push(format!(
                                "size mismatch for {name}.{b}: checkpoint {:?} {:?}, model {:?} {:?}",
                                t.dims(),
                                t.dtype(),
                                var.dims(),
                                var.dtype()
                            ));
                            ok = false;
                        }
                        Some(_) => {}
                    }
                }
                if ok {
                    Some(read_buffers(var.dtype(), &present)?)
                } else {
                    None
                }
            };
            new_slots.push(Slot { step, buffers });
        }
        let unexpected: Vec<&String> = state.tensors.keys().filter(|k| !expected_keys.contains(*k)).collect();
        if !unexpected.is_empty() {
            problems.push(format!(
                "Unexpected key(s): {}",
                unexpected.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
            ));
        }
        if !problems.is_empty() {
            return Err(Error::Schema { what, problems, fix: fix.into() });
        }
        if let Some(lr) = state.meta.get("config").and_then(|c| c.get("lr")).and_then(Value::as_f64) {
            self.rule.set_lr(lr);
        }
        self.slots = new_slots;
        Ok(())
    }
}

fn read_buffers(dtype: DType, present: &[Option<&Tensor>]) -> Result<Buffers> {
    let tensors: Vec<&Tensor> = present.iter().flatten().copied().collect();
    Ok(match dtype {
        DType::F32 => {
            Buffers::F32(tensors.iter().map(|t| t.flatten_all()?.to_vec1()).collect::<candle_core::Result<_>>()?)
        }
        _ => Buffers::F64(tensors.iter().map(|t| t.flatten_all()?.to_vec1()).collect::<candle_core::Result<_>>()?),
    })
}

fn update_one<R: Rule, T: Element>(
    rule: &R,
    var: &Var,
    grad: &Tensor,
    slot: &mut Slot,
    select: impl Fn(&mut Buffers) -> Option<&mut Vec<Vec<T>>>,
    wrap: impl Fn(Vec<Vec<T>>) -> Buffers,
) -> Result<()> {
    if slot.buffers.is_none() {
        let len = var.elem_count();
        let buffers = (0..rule.buffers().len()).map(|i| vec![<T as Float>::from_f64(rule.initial(i)); len]).collect();
        slot.buffers = Some(wrap(buffers));
    }
    let Some(bufs) = slot.buffers.as_mut().and_then(select) else {
        return Err(Error::config(
            R::KIND,
            "optimizer state dtype differs from the parameter's",
            "rebuild the optimizer after changing the model's dtype",
        ));
    };
    let g = grad.to_dtype(var.dtype())?.contiguous()?;
    // The step count moves only once the update went through (an error changes nothing).
    let step = slot.step + 1;
    let threads = crate::kernels::gemm::num_threads();
    if var.device().is_cpu() && var.is_contiguous() {
        // Update the parameter's own storage: no copies of the parameter or the gradient.
        let op = InPlaceUpdate { rule, step, threads, bufs: std::sync::Mutex::new(bufs) };
        var.as_tensor().inplace_op2(&g, &op)?;
    } else {
        let mut p: Vec<T> = var.as_tensor().flatten_all()?.to_vec1()?;
        let g: Vec<T> = g.flatten_all()?.to_vec1()?;
        update_parallel(rule, step, &mut p, &g, bufs, threads);
        var.set(&Tensor::from_vec(p, var.shape(), var.device())?)?;
    }
    slot.step = step;
    Ok(())
}

/// Elements per task of [`update_parallel`]: 128 KiB of `f32` per array.
const UPDATE_CHUNK: usize = 1 << 15;

/// `rule.update` over `p`, `g` and the state buffers `bufs` (all of `p`'s length), cut into
/// chunks of [`UPDATE_CHUNK`] elements that run on rayon's pool when `threads` (the kernels'
/// count, [`crate::set_num_threads`]) is above 1. The rules are elementwise, so the result is the
/// same for any cut.
fn update_parallel<R: Rule, T: Element>(
    rule: &R,
    step: u64,
    p: &mut [T],
    g: &[T],
    bufs: &mut [Vec<T>],
    threads: usize,
) {
    use rayon::prelude::*;
    if threads <= 1 || p.len() < 2 * UPDATE_CHUNK {
        let mut views: Vec<&mut [T]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
        rule.update(step, p, g, &mut views);
        return;
    }
    let mut buf_chunks: Vec<_> = bufs.iter_mut().map(|b| b.chunks_mut(UPDATE_CHUNK)).collect();
    let jobs: Vec<_> = p
        .chunks_mut(UPDATE_CHUNK)
        .zip(g.chunks(UPDATE_CHUNK))
        .map(|(p, g)| (p, g, buf_chunks.iter_mut().map(|it| it.next().unwrap_or_default()).collect::<Vec<_>>()))
        .collect();
    jobs.into_par_iter().for_each(|(p, g, mut views)| rule.update(step, p, g, &mut views));
}

/// One parameter's update as a candle in-place op on its storage, with the (contiguous)
/// gradient as the source.
struct InPlaceUpdate<'a, R, T> {
    rule: &'a R,
    step: u64,
    threads: usize,
    bufs: std::sync::Mutex<&'a mut Vec<Vec<T>>>,
}

impl<R: Rule, T: Element> candle_core::InplaceOp2 for InPlaceUpdate<'_, R, T> {
    fn name(&self) -> &'static str {
        R::KIND
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
    ) -> candle_core::Result<()> {
        let (Some((p0, p1)), Some((g0, g1))) = (dst_l.contiguous_offsets(), src_l.contiguous_offsets()) else {
            candle_core::bail!("{}: parameter and gradient must be contiguous", R::KIND)
        };
        let g = &src.as_slice::<T>()?[g0..g1];
        let Some(p) = T::values_mut(dst) else {
            candle_core::bail!("{}: parameter dtype differs from the gradient's", R::KIND)
        };
        let p = &mut p[p0..p1];
        let mut bufs = self.bufs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.len() != p.len() || bufs.iter().any(|b| b.len() != p.len()) {
            candle_core::bail!("{}: gradient or state of another size than the parameter", R::KIND)
        }
        update_parallel(self.rule, self.step, p, g, &mut bufs, self.threads);
        Ok(())
    }
}

macro_rules! optimizer {
    ($(#[$doc:meta])* $name:ident, $config:ident) => {
        $(#[$doc])*
        pub struct $name {
            core: Core<$config>,
        }

        impl $name {
            /// An optimizer over `params` (names are used by [`Optimizer::state_dict`]; see
            /// [`named_vars`]). Errors on invalid hyper-parameters, non-float parameters or
            /// repeated names.
            pub fn new(params: Vec<(String, Var)>, config: $config) -> Result<Self> {
                Ok(Self { core: Core::new(params, config)? })
            }

            /// The hyper-parameters (with the current learning rate).
            pub fn config(&self) -> &$config {
                &self.core.rule
            }
        }

        impl Optimizer for $name {
            fn step(&mut self, grads: &GradStore) -> Result<()> {
                self.core.step(grads)
            }
            fn learning_rate(&self) -> f64 {
                self.core.rule.lr()
            }
            fn set_learning_rate(&mut self, lr: f64) {
                self.core.rule.set_lr(lr)
            }
            fn params(&self) -> &[(String, Var)] {
                &self.core.params
            }
            fn state_dict(&self) -> Result<OptimizerState> {
                self.core.state_dict()
            }
            fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
                self.core.load_state_dict(state)
            }
        }
    };
}

fn check(kind: &'static str, ok: bool, what: &str, value: f64) -> Result<()> {
    if ok {
        Ok(())
    } else {
        Err(Error::config(
            kind,
            format!("Invalid {what} value: {value}"),
            format!("pass a valid {what} (see PyTorch's torch.optim.{kind})"),
        ))
    }
}

/// Hyper-parameters of [`Sgd`], PyTorch's `torch.optim.SGD`.
#[derive(Clone, Debug, PartialEq)]
pub struct SgdConfig {
    /// Learning rate. Default: 1e-3.
    pub lr: f64,
    /// Momentum factor. Default: 0.
    pub momentum: f64,
    /// Dampening of the momentum. Default: 0.
    pub dampening: f64,
    /// L2 penalty added to the gradient. Default: 0.
    pub weight_decay: f64,
    /// Nesterov momentum (needs momentum > 0 and dampening 0). Default: false.
    pub nesterov: bool,
}

impl Default for SgdConfig {
    fn default() -> Self {
        Self { lr: 1e-3, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

impl Rule for SgdConfig {
    const KIND: &'static str = "SGD";
    fn buffers(&self) -> Vec<&'static str> {
        if self.momentum != 0.0 {
            vec!["momentum_buffer"]
        } else {
            vec![]
        }
    }
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        let (wd, momentum, damp, lr) = (
            T::from_f64(self.weight_decay),
            T::from_f64(self.momentum),
            T::from_f64(1.0 - self.dampening),
            T::from_f64(-self.lr),
        );
        for i in 0..p.len() {
            let mut d = g[i];
            if self.weight_decay != 0.0 {
                d = wd.mul_add(p[i], d); // grad.add(param, alpha=wd)
            }
            if self.momentum != 0.0 {
                let buf = &mut bufs[0][i];
                // buf.mul_(momentum).add_(grad, alpha=1 - dampening)
                *buf = if step == 1 { d } else { damp.mul_add(d, *buf * momentum) };
                d = if self.nesterov { momentum.mul_add(*buf, d) } else { *buf };
            }
            p[i] = lr.mul_add(d, p[i]); // param.add_(grad, alpha=-lr)
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn to_json(&self) -> Value {
        json!({"lr": self.lr, "momentum": self.momentum, "dampening": self.dampening, "weight_decay": self.weight_decay, "nesterov": self.nesterov})
    }
    fn validate(&self) -> Result<()> {
        check("SGD", self.lr >= 0.0, "learning rate", self.lr)?;
        check("SGD", self.momentum >= 0.0, "momentum", self.momentum)?;
        check("SGD", self.weight_decay >= 0.0, "weight_decay", self.weight_decay)?;
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return Err(Error::config(
                "SGD",
                "Nesterov momentum requires a momentum and zero dampening",
                "set momentum > 0 and dampening = 0, or nesterov = false",
            ));
        }
        Ok(())
    }
}

/// Hyper-parameters of [`Adam`] and [`AdamW`], PyTorch's `torch.optim.Adam` / `AdamW`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamConfig {
    /// Learning rate. Default: 1e-3.
    pub lr: f64,
    /// Decay rates (β1, β2) of the moment estimates. Default: (0.9, 0.999).
    pub betas: (f64, f64),
    /// Added to the denominator. Default: 1e-8.
    pub eps: f64,
    /// Adam: L2 penalty added to the gradient; AdamW: decoupled decay `p *= 1 − lr·wd`.
    /// Default: 0 (PyTorch's AdamW default is 1e-2: use [`AdamConfig::adamw`]).
    pub weight_decay: f64,
    /// AMSGrad: divide by the running maximum of the second moment. Default: false.
    pub amsgrad: bool,
}

impl Default for AdamConfig {
    fn default() -> Self {
        Self { lr: 1e-3, betas: (0.9, 0.999), eps: 1e-8, weight_decay: 0.0, amsgrad: false }
    }
}

impl AdamConfig {
    /// PyTorch's `AdamW` defaults (weight decay 1e-2).
    pub fn adamw() -> Self {
        Self { weight_decay: 1e-2, ..Self::default() }
    }

    /// One Adam / AdamW update of one parameter, on the kernels' CPU path.
    fn update_adam<T: Float>(&self, decoupled: bool, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        self.update_adam_on(cpu::path(), decoupled, step, p, g, bufs)
    }

    /// [`AdamConfig::update_adam`] on CPU path `path` (which the CPU must support: `cpu::path`
    /// only answers such paths). On AVX2 + FMA and AVX-512 the loop runs compiled for them: its
    /// `mul_add`s then become vector FMA instructions instead of one call to the math library's
    /// `fma` per element (the same values on every path: an FMA is exact, and the loop sums
    /// nothing across elements).
    fn update_adam_on<T: Float>(
        &self,
        path: CpuPath,
        decoupled: bool,
        step: u64,
        p: &mut [T],
        g: &[T],
        bufs: &mut [&mut [T]],
    ) {
        assert!(path.supported(), "{path} is not supported by this CPU");
        #[cfg(target_arch = "x86_64")]
        match path {
            // SAFETY: the CPU supports AVX-512 (`path` is supported, asserted above), the only
            // requirement of `update_adam_avx512` beyond those of its safe body.
            CpuPath::Avx512 => return unsafe { self.update_adam_avx512(decoupled, step, p, g, bufs) },
            // SAFETY: as above, for AVX2 and FMA.
            CpuPath::Avx2 => return unsafe { self.update_adam_fma(decoupled, step, p, g, bufs) },
            CpuPath::Portable => {}
        }
        self.update_adam_body(decoupled, step, p, g, bufs)
    }

    /// [`AdamConfig::update_adam`] compiled for AVX2 + FMA.
    ///
    /// # Safety
    /// The CPU must support AVX2 and FMA.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn update_adam_fma<T: Float>(
        &self,
        decoupled: bool,
        step: u64,
        p: &mut [T],
        g: &[T],
        bufs: &mut [&mut [T]],
    ) {
        self.update_adam_body(decoupled, step, p, g, bufs)
    }

    /// [`AdamConfig::update_adam`] compiled for AVX-512 (16 `f32` or 8 `f64` lanes).
    ///
    /// # Safety
    /// The CPU must support AVX-512 F, BW, DQ and VL (and AVX2 and FMA).
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma,avx512f,avx512bw,avx512dq,avx512vl")]
    unsafe fn update_adam_avx512<T: Float>(
        &self,
        decoupled: bool,
        step: u64,
        p: &mut [T],
        g: &[T],
        bufs: &mut [&mut [T]],
    ) {
        self.update_adam_body(decoupled, step, p, g, bufs)
    }

    #[inline(always)]
    fn update_adam_body<T: Float>(&self, decoupled: bool, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        let (beta1, beta2) = self.betas;
        let step_f = step as f64;
        let bias_correction1 = 1.0 - beta1.powf(step_f);
        let bias_correction2 = 1.0 - beta2.powf(step_f);
        let step_size = T::from_f64(-(self.lr / bias_correction1));
        let bc2_sqrt = T::from_f64(bias_correction2.powf(0.5));
        let (w1, b2, w2, eps) =
            (T::from_f64(1.0 - beta1), T::from_f64(beta2), T::from_f64(1.0 - beta2), T::from_f64(self.eps));
        let decay = T::from_f64(1.0 - self.lr * self.weight_decay);
        let wd = T::from_f64(self.weight_decay);
        let (moments, rest) = bufs.split_at_mut(1);
        let (second, max_second) = rest.split_at_mut(1);
        let (m, v) = (&mut moments[0], &mut second[0]);
        for i in 0..p.len() {
            let mut d = g[i];
            if self.weight_decay != 0.0 {
                if decoupled {
                    p[i] = p[i] * decay;
                } else {
                    d = wd.mul_add(p[i], d);
                }
            }
            m[i] = lerp(m[i], d, w1);
            v[i] = (w2 * d).mul_add(d, v[i] * b2); // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            let denom = if self.amsgrad {
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

    fn buffer_names(&self) -> Vec<&'static str> {
        if self.amsgrad {
            vec!["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
        } else {
            vec!["exp_avg", "exp_avg_sq"]
        }
    }

    fn json(&self) -> Value {
        json!({"lr": self.lr, "betas": [self.betas.0, self.betas.1], "eps": self.eps, "weight_decay": self.weight_decay, "amsgrad": self.amsgrad})
    }

    fn check(&self, kind: &'static str) -> Result<()> {
        check(kind, self.lr >= 0.0, "learning rate", self.lr)?;
        check(kind, self.eps >= 0.0, "epsilon", self.eps)?;
        check(kind, (0.0..1.0).contains(&self.betas.0), "beta parameter at index 0", self.betas.0)?;
        check(kind, (0.0..1.0).contains(&self.betas.1), "beta parameter at index 1", self.betas.1)?;
        check(kind, self.weight_decay >= 0.0, "weight_decay", self.weight_decay)
    }
}

/// [`AdamConfig`] for [`AdamW`] (the same fields; decoupled weight decay).
#[derive(Clone, Debug, PartialEq)]
pub struct AdamWConfig(pub AdamConfig);

impl Default for AdamWConfig {
    fn default() -> Self {
        Self(AdamConfig::adamw())
    }
}

impl Rule for AdamConfig {
    const KIND: &'static str = "Adam";
    fn buffers(&self) -> Vec<&'static str> {
        self.buffer_names()
    }
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        self.update_adam(false, step, p, g, bufs)
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn to_json(&self) -> Value {
        self.json()
    }
    fn validate(&self) -> Result<()> {
        self.check("Adam")
    }
}

impl Rule for AdamWConfig {
    const KIND: &'static str = "AdamW";
    fn buffers(&self) -> Vec<&'static str> {
        self.0.buffer_names()
    }
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        self.0.update_adam(true, step, p, g, bufs)
    }
    fn lr(&self) -> f64 {
        self.0.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.0.lr = lr;
    }
    fn to_json(&self) -> Value {
        self.0.json()
    }
    fn validate(&self) -> Result<()> {
        self.0.check("AdamW")
    }
}

/// Hyper-parameters of [`RmsProp`], PyTorch's `torch.optim.RMSprop`.
#[derive(Clone, Debug, PartialEq)]
pub struct RmsPropConfig {
    /// Learning rate. Default: 1e-2.
    pub lr: f64,
    /// Smoothing constant of the squared-gradient average. Default: 0.99.
    pub alpha: f64,
    /// Added to the denominator. Default: 1e-8.
    pub eps: f64,
    /// L2 penalty added to the gradient. Default: 0.
    pub weight_decay: f64,
    /// Momentum factor. Default: 0.
    pub momentum: f64,
    /// Normalise by the estimated variance (subtract the squared mean gradient). Default: false.
    pub centered: bool,
}

impl Default for RmsPropConfig {
    fn default() -> Self {
        Self { lr: 1e-2, alpha: 0.99, eps: 1e-8, weight_decay: 0.0, momentum: 0.0, centered: false }
    }
}

impl Rule for RmsPropConfig {
    const KIND: &'static str = "RMSprop";
    fn buffers(&self) -> Vec<&'static str> {
        let mut b = vec!["square_avg"];
        if self.momentum > 0.0 {
            b.push("momentum_buffer");
        }
        if self.centered {
            b.push("grad_avg");
        }
        b
    }
    fn update<T: Float>(&self, _step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        let (alpha, w, wd, eps, momentum, lr) = (
            T::from_f64(self.alpha),
            T::from_f64(1.0 - self.alpha),
            T::from_f64(self.weight_decay),
            T::from_f64(self.eps),
            T::from_f64(self.momentum),
            T::from_f64(-self.lr),
        );
        let has_momentum = self.momentum > 0.0;
        let (square, rest) = bufs.split_at_mut(1);
        let (momentum_buf, grad_avg) = if has_momentum { rest.split_at_mut(1) } else { rest.split_at_mut(0) };
        for i in 0..p.len() {
            let mut d = g[i];
            if self.weight_decay != 0.0 {
                d = wd.mul_add(p[i], d);
            }
            let sa = &mut square[0][i];
            *sa = (w * d).mul_add(d, *sa * alpha);
            let avg = if self.centered {
                let ga = &mut grad_avg[0][i];
                *ga = lerp(*ga, d, w);
                (T::from_f64(-1.0) * *ga).mul_add(*ga, *sa).sqrt() // square_avg.addcmul(grad_avg, grad_avg, value=-1)
            } else {
                sa.sqrt()
            } + eps;
            if has_momentum {
                let buf = &mut momentum_buf[0][i];
                *buf = *buf * momentum + T::from_f64(1.0) * d / avg; // buf.mul_(momentum).addcdiv_(grad, avg)
                p[i] = lr.mul_add(*buf, p[i]);
            } else {
                p[i] = p[i] + lr * d / avg;
            }
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn to_json(&self) -> Value {
        json!({"lr": self.lr, "alpha": self.alpha, "eps": self.eps, "weight_decay": self.weight_decay, "momentum": self.momentum, "centered": self.centered})
    }
    fn validate(&self) -> Result<()> {
        check("RMSprop", self.lr >= 0.0, "learning rate", self.lr)?;
        check("RMSprop", self.eps >= 0.0, "epsilon", self.eps)?;
        check("RMSprop", self.momentum >= 0.0, "momentum value", self.momentum)?;
        check("RMSprop", self.weight_decay >= 0.0, "weight_decay", self.weight_decay)?;
        check("RMSprop", self.alpha >= 0.0, "alpha", self.alpha)
    }
}

/// Hyper-parameters of [`Adagrad`], PyTorch's `torch.optim.Adagrad`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdagradConfig {
    /// Learning rate. Default: 1e-2.
    pub lr: f64,
    /// Learning-rate decay: step `t` uses `lr / (1 + (t − 1)·lr_decay)`. Default: 0.
    pub lr_decay: f64,
    /// L2 penalty added to the gradient. Default: 0.
    pub weight_decay: f64,
    /// Starting value of the sum of squared gradients. Default: 0.
    pub initial_accumulator_value: f64,
    /// Added to the denominator. Default: 1e-10.
    pub eps: f64,
}

impl Default for AdagradConfig {
    fn default() -> Self {
        Self { lr: 1e-2, lr_decay: 0.0, weight_decay: 0.0, initial_accumulator_value: 0.0, eps: 1e-10 }
    }
}

impl Rule for AdagradConfig {
    const KIND: &'static str = "Adagrad";
    fn buffers(&self) -> Vec<&'static str> {
        vec!["sum"]
    }
    fn initial(&self, _index: usize) -> f64 {
        self.initial_accumulator_value
    }
    fn update<T: Float>(&self, step: u64, p: &mut [T], g: &[T], bufs: &mut [&mut [T]]) {
        let clr = self.lr / (1.0 + (step as f64 - 1.0) * self.lr_decay);
        let (wd, eps, neg_clr) = (T::from_f64(self.weight_decay), T::from_f64(self.eps), T::from_f64(-clr));
        let sum = &mut bufs[0];
        for i in 0..p.len() {
            let mut d = g[i];
            if self.weight_decay != 0.0 {
                d = wd.mul_add(p[i], d);
            }
            sum[i] = (T::from_f64(1.0) * d).mul_add(d, sum[i]);
            let std = sum[i].sqrt() + eps;
            p[i] = p[i] + neg_clr * d / std;
        }
    }
    fn lr(&self) -> f64 {
        self.lr
    }
    fn set_lr(&mut self, lr: f64) {
        self.lr = lr;
    }
    fn to_json(&self) -> Value {
        json!({"lr": self.lr, "lr_decay": self.lr_decay, "weight_decay": self.weight_decay, "initial_accumulator_value": self.initial_accumulator_value, "eps": self.eps})
    }
    fn validate(&self) -> Result<()> {
        check("Adagrad", self.lr >= 0.0, "learning rate", self.lr)?;
        check("Adagrad", self.lr_decay >= 0.0, "lr_decay", self.lr_decay)?;
        check("Adagrad", self.weight_decay >= 0.0, "weight_decay", self.weight_decay)?;
        check(
            "Adagrad",
            self.initial_accumulator_value >= 0.0,
            "initial_accumulator_value",
            self.initial_accumulator_value,
        )?;
        check("Adagrad", self.eps >= 0.0, "epsilon", self.eps)
    }
}

optimizer!(
    /// Stochastic gradient descent, as `torch.optim.SGD`:
    /// `d = g + wd·p`; `buf = d` (first step) or `momentum·buf + (1 − dampening)·d`;
    /// `d = d + momentum·buf` (Nesterov) or `buf`; `p = p − lr·d`.
    Sgd,
    SgdConfig
);
optimizer!(
    /// Adam with L2 weight decay (added to the gradient) and AMSGrad, as `torch.optim.Adam`:
    /// `m = lerp(m, g, 1 − β1)`; `v = β2·v + (1 − β2)·g²`;
    /// `p = p − (lr / (1 − β1ᵗ))·m / (sqrt(v) / sqrt(1 − β2ᵗ) + eps)`.
    Adam,
    AdamConfig
);
optimizer!(
    /// Adam with decoupled weight decay, as `torch.optim.AdamW`: `p *= 1 − lr·wd` first, then
    /// Adam's update without L2.
    AdamW,
    AdamWConfig
);
optimizer!(
    /// RMSprop, as `torch.optim.RMSprop`: `v = α·v + (1 − α)·g²`; centered:
    /// `avg = sqrt(v − ḡ²) + eps` with `ḡ = lerp(ḡ, g, 1 − α)`, else `sqrt(v) + eps`; with
    /// momentum `buf = momentum·buf + g/avg`, `p −= lr·buf`, else `p −= lr·g/avg`.
    RmsProp,
    RmsPropConfig
);
optimizer!(
    /// Adagrad, as `torch.optim.Adagrad`: `sum += g²`; `p −= clr·g / (sqrt(sum) + eps)` with
    /// `clr = lr / (1 + (t − 1)·lr_decay)`.
    Adagrad,
    AdagradConfig
);

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
            let cfg = AdamConfig { amsgrad, weight_decay: 0.05, lr: 0.01, ..AdamConfig::default() };
            let (mut pa, mut pb) = (p0.clone(), p0.clone());
            let (mut ba, mut bb) = (vec![vec![0.0f32; n]; 3], vec![vec![0.0f32; n]; 3]);
            for (step, g) in (1..).zip(&grads) {
                let mut va: Vec<&mut [f32]> = ba.iter_mut().map(Vec::as_mut_slice).collect();
                cfg.update_adam_on(path, decoupled, step, &mut pa, g, &mut va);
                let mut vb: Vec<&mut [f32]> = bb.iter_mut().map(Vec::as_mut_slice).collect();
                cfg.update_adam_body(decoupled, step, &mut pb, g, &mut vb);
            }
            assert_ne!(pa, p0);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&pa), bits(&pb), "{path} decoupled={decoupled} amsgrad={amsgrad}: parameter");
            for (a, b) in ba.iter().zip(&bb) {
                assert_eq!(bits(a), bits(b), "{path} decoupled={decoupled} amsgrad={amsgrad}: state");
            }
        }
    }

    /// Every rule, cut into chunks on several threads, updates exactly as in one piece.
    #[test]
    fn chunked_updates_equal_one_piece() {
        fn check<R: Rule>(rule: &R) {
            let n = 5 * UPDATE_CHUNK + 123;
            let mut seed = 0x9E37_79B9_7F4A_7C15u64;
            let mut next = move || {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                (seed >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
            };
            let p0: Vec<f32> = (0..n).map(|_| next()).collect();
            let grads: Vec<Vec<f32>> = (0..3).map(|_| (0..n).map(|_| next()).collect()).collect();
            let fresh =
                || -> Vec<Vec<f32>> { (0..rule.buffers().len()).map(|i| vec![rule.initial(i) as f32; n]).collect() };
            let (mut p1, mut b1, mut p4, mut b4) = (p0.clone(), fresh(), p0.clone(), fresh());
            for (step, g) in (1..).zip(&grads) {
                update_parallel(rule, step, &mut p1, g, &mut b1, 1);
                update_parallel(rule, step, &mut p4, g, &mut b4, 4);
            }
            assert_ne!(p1, p0, "{}: the parameter moved", R::KIND);
            assert_eq!(p1, p4, "{}: parameter", R::KIND);
            assert_eq!(b1, b4, "{}: state", R::KIND);
        }
        check(&SgdConfig { lr: 0.1, momentum: 0.9, dampening: 0.1, weight_decay: 0.01, nesterov: false });
        check(&AdamConfig { amsgrad: true, weight_decay: 0.01, ..AdamConfig::default() });
        check(&AdamWConfig::default());
        check(&RmsPropConfig { momentum: 0.9, centered: true, weight_decay: 0.01, ..RmsPropConfig::default() });
        check(&AdagradConfig { lr_decay: 0.01, weight_decay: 0.01, ..AdagradConfig::default() });
    }

    #[test]
    fn lerp_matches_aten_branches() {
        assert_eq!(lerp(1.0f64, 3.0, 0.25), 1.5);
        assert_eq!(lerp(1.0f32, 3.0, 0.75), 2.5);
        assert_eq!(lerp(1.0f64, 3.0, 0.75), 2.5);
    }

    #[test]
    fn plain_sgd_state_round_trips() -> Result<()> {
        let var = Var::new(&[1.0f32, 2.0], &candle_core::Device::Cpu)?;
        let mut opt = Sgd::new(vec![("w".into(), var.clone())], SgdConfig { lr: 0.5, ..SgdConfig::default() })?;
        let grads = var.as_tensor().sum_all()?.backward()?;
        opt.step(&grads)?;
        assert_eq!(var.as_tensor().to_vec1::<f32>()?, vec![0.5, 1.5]);
        let state = opt.state_dict()?;
        let mut other = Sgd::new(vec![("w".into(), var)], SgdConfig::default())?;
        other.load_state_dict(&state)?;
        assert_eq!(other.learning_rate(), 0.5);
        assert_eq!(other.state_dict()?.meta, state.meta);
        Ok(())
    }

    #[test]
    fn invalid_hyper_parameters_are_errors() {
        let e = Sgd::new(vec![], SgdConfig { nesterov: true, ..SgdConfig::default() }).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("Nesterov")));
        let e =
            Adam::new(vec![], AdamConfig { betas: (1.0, 0.9), ..AdamConfig::default() }).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("beta parameter at index 0")));
    }
}
