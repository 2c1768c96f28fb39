//! Seeded parameter initialisation through candle's `VarBuilder`.
//!
//! candle's `VarMap` draws initial values from the device's global generator. Recur wants every
//! random number to come from one seed passed in explicitly, so [`seeded_var_builder`] returns a
//! `VarBuilder` that creates its variables in a `VarMap` (so any candle optimizer can train them)
//! but draws them from a `StdRng` seeded by the caller, honouring every `candle_nn::Init`.

use std::sync::Mutex;

use candle_core::{DType, Device, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Returns a `VarBuilder` whose new variables live in `varmap` and are initialised from `seed`.
///
/// Variables that already exist in `varmap` under the requested name are returned as they are
/// (after a shape check), exactly like `VarBuilder::from_varmap`. Two builders with the same seed
/// that create the same variables in the same order produce bitwise-identical values.
///
/// ```
/// use candle_core::{DType, Device};
/// use candle_nn::VarMap;
/// let varmap = VarMap::new();
/// let vb = recur::seeded_var_builder(&varmap, 7, DType::F32, &Device::Cpu);
/// let lstm = recur::Lstm::new(recur::LstmConfig::new(4, 8), vb.pp("lstm"))?;
/// assert_eq!(varmap.all_vars().len(), 4);
/// # Ok::<(), recur::Error>(())
/// ```
pub fn seeded_var_builder(varmap: &VarMap, seed: u64, dtype: DType, device: &Device) -> VarBuilder<'static> {
    let backend = SeededBackend { varmap: varmap.clone(), rng: Mutex::new(StdRng::seed_from_u64(seed)) };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

struct SeededBackend {
    varmap: VarMap,
    rng: Mutex<StdRng>,
}

impl SimpleBackend for SeededBackend {
    fn get(&self, shape: Shape, name: &str, init: Init, dtype: DType, device: &Device) -> candle_core::Result<Tensor> {
        let mut vars = self.varmap.data().lock().map_err(|_| poisoned())?;
        if let Some(var) = vars.get(name) {
            let existing = var.as_tensor();
            if existing.shape() != &shape {
                candle_core::bail!(
                    "shape mismatch for {name}: the VarMap holds {:?}, the layer asks for {:?}",
                    existing.shape(),
                    shape
                );
            }
            return Ok(existing.clone());
        }
        // Refuse, rather than abort on, a variable too large to allocate.
        let mut probe: Vec<f64> = Vec::new();
        if probe.try_reserve_exact(shape.elem_count()).is_err() {
            candle_core::bail!("cannot allocate {} values for {name} (shape {shape:?})", shape.elem_count());
        }
        drop(probe);
        let values = {
            let mut rng = self.rng.lock().map_err(|_| poisoned())?;
            draw(&mut rng, &shape, init)
        };
        let tensor = Tensor::from_vec(values, shape, device)?.to_dtype(dtype)?;
        let var = Var::from_tensor(&tensor)?;
        let tensor = var.as_tensor().clone();
        vars.insert(name.to_string(), var);
        Ok(tensor)
    }

    fn get_unchecked(&self, name: &str, _dtype: DType, _dev: &Device) -> candle_core::Result<Tensor> {
        let vars = self.varmap.data().lock().map_err(|_| poisoned())?;
        match vars.get(name) {
            Some(var) => Ok(var.as_tensor().clone()),
            None => candle_core::bail!("no variable named {name}; create it with a shape first"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.data().lock().map(|vars| vars.contains_key(name)).unwrap_or(false)
    }
}

/// A `candle_nn::Linear` initialised like PyTorch's `nn.Linear(in_features, out_features)`:
/// `weight (out, in)` and `bias (out)` from U(−1/√in, 1/√in) (PyTorch's `kaiming_uniform_` with
/// `a = √5`, which is that bound). candle's own `candle_nn::linear` draws another distribution.
pub fn linear(in_features: usize, out_features: usize, vb: VarBuilder) -> crate::Result<candle_nn::Linear> {
    if in_features == 0 || out_features == 0 {
        return Err(crate::Error::config(
            "Linear",
            format!("in_features and out_features must be positive, got {in_features} and {out_features}"),
            "give the layer at least one input and one output",
        ));
    }
    let bound = 1.0 / (in_features as f64).sqrt();
    let init = Init::Uniform { lo: -bound, up: bound };
    let weight = vb.get_with_hints((out_features, in_features), "weight", init)?;
    let bias = vb.get_with_hints(out_features, "bias", init)?;
    Ok(candle_nn::Linear::new(weight, Some(bias)))
}

/// A `candle_nn::Embedding` initialised like PyTorch's `nn.Embedding(num_embeddings,
/// embedding_dim)`: `weight (num, dim)` from N(0, 1).
pub fn embedding(num_embeddings: usize, embedding_dim: usize, vb: VarBuilder) -> crate::Result<candle_nn::Embedding> {
    if num_embeddings == 0 || embedding_dim == 0 {
        return Err(crate::Error::config(
            "Embedding",
            format!("num_embeddings and embedding_dim must be positive, got {num_embeddings} and {embedding_dim}"),
            "give the table at least one row and one column",
        ));
    }
    let weight = vb.get_with_hints((num_embeddings, embedding_dim), "weight", Init::Randn { mean: 0.0, stdev: 1.0 })?;
    Ok(candle_nn::Embedding::new(weight, embedding_dim))
}

fn poisoned() -> candle_core::Error {
    candle_core::Error::Msg("a thread panicked while holding the VarMap lock".into())
}

/// Draws `shape.elem_count()` values in f64 following `init`.
fn draw(rng: &mut StdRng, shape: &Shape, init: Init) -> Vec<f64> {
    let n = shape.elem_count();
    let uniform = |rng: &mut StdRng, lo: f64, up: f64| -> Vec<f64> {
        (0..n).map(|_| lo + (up - lo) * rng.gen::<f64>()).collect()
    };
    let normal = |rng: &mut StdRng, mean: f64, std: f64| -> Vec<f64> {
        // Box–Muller; `1 - u` keeps the logarithm's argument in (0, 1].
        (0..n)
            .map(|_| {
                let u1: f64 = 1.0 - rng.gen::<f64>();
                let u2: f64 = rng.gen::<f64>();
                mean + std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
            })
            .collect()
    };
    match init {
        Init::Const(v) => vec![v; n],
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Kaiming { dist, fan, non_linearity } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(rng, 0.0, std),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_values_and_different_seed_differs() {
        let make = |seed| {
            let vm = VarMap::new();
            let vb = seeded_var_builder(&vm, seed, DType::F64, &Device::Cpu);
            vb.get_with_hints((3, 4), "w", Init::Uniform { lo: -0.5, up: 0.5 })
                .and_then(|t| t.flatten_all()?.to_vec1::<f64>())
                .expect("variable")
        };
        let (a, b, c) = (make(1), make(1), make(2));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
    }

    #[test]
    fn linear_and_embedding_draw_pytorchs_distributions() {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 3, DType::F64, &Device::Cpu);
        let lin = linear(16, 200, vb.pp("linear")).expect("linear");
        let w = lin.weight().flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("weight");
        assert!(w.iter().all(|v| v.abs() < 0.25) && w.iter().any(|v| v.abs() > 0.24), "U(-1/4, 1/4)");
        let emb = embedding(100, 50, vb.pp("embedding")).expect("embedding");
        let e = emb.embeddings().flatten_all().and_then(|t| t.to_vec1::<f64>()).expect("table");
        let mean = e.iter().sum::<f64>() / e.len() as f64;
        let var = e.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / e.len() as f64;
        assert!(mean.abs() < 0.05 && (var - 1.0).abs() < 0.05, "N(0, 1): mean {mean}, var {var}");
        let names: Vec<String> = {
            let mut n: Vec<String> = vm.data().lock().unwrap().keys().cloned().collect();
            n.sort();
            n
        };
        assert_eq!(names, ["embedding.weight", "linear.bias", "linear.weight"]);
        assert!(linear(0, 3, vb.pp("bad")).is_err());
    }

    #[test]
    fn existing_variable_is_reused_and_shape_checked() {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu);
        let first = vb.get_with_hints(5, "b", Init::Const(2.0)).expect("create");
        let again = vb.get_with_hints(5, "b", Init::Const(9.0)).expect("reuse");
        assert_eq!(first.to_vec1::<f32>().unwrap(), again.to_vec1::<f32>().unwrap());
        assert!(vb.get_with_hints(6, "b", Init::Const(0.0)).is_err());
        assert_eq!(vm.all_vars().len(), 1);
    }
}
