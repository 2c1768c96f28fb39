//! The state every optimizer keeps per parameter (step count, buffers), its checkpoint form, and
//! one step of a rule over every parameter that has a gradient.

use std::collections::BTreeMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use serde_json::{json, Value};

use super::inplace::{update_parallel, InPlaceUpdate};
use super::{OptimizerState, Rule};
use crate::kernels::Float;
use crate::ops::Element;
use crate::{Error, Result};

enum Buffers {
    F32(Vec<Vec<f32>>),
    F64(Vec<Vec<f64>>),
}

struct Slot {
    step: u64,
    buffers: Option<Buffers>,
}

/// The parameters and per-parameter state shared by every optimizer.
pub(super) struct Core<R: Rule> {
    pub(super) rule: R,
    pub(super) params: Vec<(String, Var)>,
    slots: Vec<Slot>,
}

impl<R: Rule> Core<R> {
    pub(super) fn new(params: Vec<(String, Var)>, rule: R) -> Result<Self> {
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

    pub(super) fn step(&mut self, grads: &GradStore) -> Result<()> {
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

    pub(super) fn state_dict(&self) -> Result<OptimizerState> {
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

    pub(super) fn load_state_dict(&mut self, state: &OptimizerState) -> Result<()> {
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
