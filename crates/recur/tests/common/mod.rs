//! Helpers shared by the integration tests: tolerance and bitwise comparisons that print the worst
//! elements, a tiny deterministic tensor filler, and one enum over the layer kinds.
#![allow(dead_code)]

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use recur::{
    Gru, GruCell, GruCellConfig, GruConfig, Lstm, LstmCell, LstmCellConfig, LstmConfig, Nonlinearity, Recurrent, Rnn,
    RnnCell, RnnCellConfig, RnnConfig, State,
};

/// The values of `t` as f64, row-major, whatever its dtype and layout.
pub fn values(t: &Tensor) -> Vec<f64> {
    t.flatten_all().and_then(|t| t.to_dtype(DType::F64)).and_then(|t| t.to_vec1::<f64>()).expect("tensor values")
}

/// Row-major multi-index of flat position `i` in `dims`.
pub fn multi_index(dims: &[usize], mut i: usize) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for d in (0..dims.len()).rev() {
        let n = dims[d].max(1);
        idx[d] = i % n;
        i /= n;
    }
    idx
}

/// `Ok` iff `actual` and `expected` have the same shape and every element satisfies
/// `|a − e| ≤ atol + rtol·|e|` (NaN never does); otherwise a report naming `name` with the worst 5
/// elements (index, actual, expected, |diff|).
pub fn check_close(name: &str, actual: &Tensor, expected: &Tensor, atol: f64, rtol: f64) -> Result<(), String> {
    if actual.dims() != expected.dims() {
        return Err(format!("{name}: shape {:?}, expected {:?}", actual.dims(), expected.dims()));
    }
    let (a, e) = (values(actual), values(expected));
    let mut bad: Vec<(f64, usize)> = Vec::new();
    let mut max_diff = 0f64;
    for (i, (&x, &y)) in a.iter().zip(&e).enumerate() {
        let diff = (x - y).abs();
        let ok = diff <= atol + rtol * y.abs();
        if diff.is_finite() {
            max_diff = max_diff.max(diff);
        }
        if !ok {
            let excess = if diff.is_nan() { f64::INFINITY } else { diff - (atol + rtol * y.abs()) };
            bad.push((excess, i));
        }
    }
    if bad.is_empty() {
        return Ok(());
    }
    bad.sort_by(|p, q| q.0.total_cmp(&p.0));
    let mut msg = format!(
        "{name}: {} of {} elements outside atol {atol:e} + rtol {rtol:e}·|expected| (max |diff| {max_diff:e}); worst:",
        bad.len(),
        a.len()
    );
    for &(_, i) in bad.iter().take(5) {
        msg.push_str(&format!(
            "\n    {:?}: actual {:.17e}, expected {:.17e}, |diff| {:.3e}",
            multi_index(actual.dims(), i),
            a[i],
            e[i],
            (a[i] - e[i]).abs()
        ));
    }
    Err(msg)
}

/// Panics with [`check_close`]'s report.
pub fn assert_close(name: &str, actual: &Tensor, expected: &Tensor, atol: f64, rtol: f64) {
    if let Err(msg) = check_close(name, actual, expected, atol, rtol) {
        panic!("{msg}");
    }
}

/// Bit patterns of `t`'s elements in row-major order (f32 or f64).
fn bits(t: &Tensor) -> Vec<u64> {
    let t = t.flatten_all().expect("flatten");
    match t.dtype() {
        DType::F64 => t.to_vec1::<f64>().expect("f64").iter().map(|v| v.to_bits()).collect(),
        DType::F32 => t.to_vec1::<f32>().expect("f32").iter().map(|v| u64::from(v.to_bits())).collect(),
        other => panic!("bits: unsupported dtype {other:?}"),
    }
}

/// `Ok` iff same shape, same dtype and identical bit patterns; otherwise the first 5 differences.
pub fn check_bitwise(name: &str, actual: &Tensor, expected: &Tensor) -> Result<(), String> {
    if actual.dims() != expected.dims() || actual.dtype() != expected.dtype() {
        return Err(format!(
            "{name}: {:?} {:?}, expected {:?} {:?}",
            actual.dims(),
            actual.dtype(),
            expected.dims(),
            expected.dtype()
        ));
    }
    let (ab, eb) = (bits(actual), bits(expected));
    let diffs: Vec<usize> = (0..ab.len()).filter(|&i| ab[i] != eb[i]).collect();
    if diffs.is_empty() {
        return Ok(());
    }
    let (a, e) = (values(actual), values(expected));
    let mut msg = format!("{name}: {} of {} elements differ bitwise; first:", diffs.len(), ab.len());
    for &i in diffs.iter().take(5) {
        msg.push_str(&format!(
            "\n    {:?}: actual {:.17e}, expected {:.17e}, |diff| {:.3e}",
            multi_index(actual.dims(), i),
            a[i],
            e[i],
            (a[i] - e[i]).abs()
        ));
    }
    Err(msg)
}

/// Panics with [`check_bitwise`]'s report.
pub fn assert_bitwise(name: &str, actual: &Tensor, expected: &Tensor) {
    if let Err(msg) = check_bitwise(name, actual, expected) {
        panic!("{msg}");
    }
}

/// Deterministic values in [-1, 1) from `seed` (SplitMix64), independent of any global RNG.
pub fn fill_values(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(0x2545_F491_4F6C_DD1D);
    (0..n)
        .map(|_| {
            state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = state;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^= z >> 31;
            (z >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
        })
        .collect()
}

/// A contiguous CPU tensor of `dims` filled by [`fill_values`], in `dtype`.
pub fn filled(dims: &[usize], seed: u64, dtype: DType) -> Tensor {
    let n = dims.iter().product();
    Tensor::from_vec(fill_values(n, seed), dims, &Device::Cpu).and_then(|t| t.to_dtype(dtype)).expect("filled tensor")
}

/// A variable holding [`filled`] values.
pub fn filled_var(dims: &[usize], seed: u64, dtype: DType) -> Var {
    Var::from_tensor(&filled(dims, seed, dtype)).expect("var")
}

/// The five layer variants the tests sweep over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    RnnTanh,
    RnnRelu,
    Lstm,
    /// LSTM with `proj_size = PROJ`.
    LstmProj,
    Gru,
}

/// `proj_size` used by [`Mode::LstmProj`] (needs `hidden_size > PROJ`).
pub const PROJ: usize = 2;

impl Mode {
    pub const ALL: [Mode; 5] = [Mode::RnnTanh, Mode::RnnRelu, Mode::Lstm, Mode::LstmProj, Mode::Gru];

    pub fn is_lstm(self) -> bool {
        matches!(self, Mode::Lstm | Mode::LstmProj)
    }

    pub fn gates(self) -> usize {
        match self {
            Mode::RnnTanh | Mode::RnnRelu => 1,
            Mode::Lstm | Mode::LstmProj => 4,
            Mode::Gru => 3,
        }
    }

    pub fn proj_size(self) -> usize {
        if self == Mode::LstmProj {
            PROJ
        } else {
            0
        }
    }
}

/// Everything that describes a layer in the tests.
#[derive(Clone, Copy, Debug)]
pub struct Spec {
    pub mode: Mode,
    pub input_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub bias: bool,
    pub batch_first: bool,
    pub bidirectional: bool,
}

impl Spec {
    pub fn new(mode: Mode, input_size: usize, hidden_size: usize) -> Self {
        Spec { mode, input_size, hidden_size, num_layers: 1, bias: true, batch_first: false, bidirectional: false }
    }

    pub fn dirs(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }

    /// `H_out`.
    pub fn h_out(&self) -> usize {
        if self.mode.proj_size() > 0 {
            self.mode.proj_size()
        } else {
            self.hidden_size
        }
    }

    /// PyTorch's parameter names (no prefix) with shapes, in registration order.
    pub fn param_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let (g, h, p) = (self.mode.gates(), self.hidden_size, self.h_out());
        let mut out = Vec::new();
        for layer in 0..self.num_layers {
            let input = if layer == 0 { self.input_size } else { self.dirs() * p };
            for dir in 0..self.dirs() {
                let sfx = if dir == 1 { "_reverse" } else { "" };
                out.push((format!("weight_ih_l{layer}{sfx}"), vec![g * h, input]));
                out.push((format!("weight_hh_l{layer}{sfx}"), vec![g * h, p]));
                if self.bias {
                    out.push((format!("bias_ih_l{layer}{sfx}"), vec![g * h]));
                    out.push((format!("bias_hh_l{layer}{sfx}"), vec![g * h]));
                }
                if self.mode.proj_size() > 0 {
                    out.push((format!("weight_hr_l{layer}{sfx}"), vec![p, h]));
                }
            }
        }
        out
    }

    /// Builds the layer from `vb` (parameters directly under `vb`'s prefix).
    pub fn build(&self, vb: VarBuilder) -> recur::Result<Box<dyn Recurrent>> {
        let (i, h) = (self.input_size, self.hidden_size);
        Ok(match self.mode {
            Mode::RnnTanh | Mode::RnnRelu => {
                let nonlinearity = if self.mode == Mode::RnnRelu { Nonlinearity::Relu } else { Nonlinearity::Tanh };
                Box::new(Rnn::new(
                    RnnConfig {
                        num_layers: self.num_layers,
                        bias: self.bias,
                        batch_first: self.batch_first,
                        bidirectional: self.bidirectional,
                        nonlinearity,
                        ..RnnConfig::new(i, h)
                    },
                    vb,
                )?)
            }
            Mode::Lstm | Mode::LstmProj => Box::new(Lstm::new(
                LstmConfig {
                    num_layers: self.num_layers,
                    bias: self.bias,
                    batch_first: self.batch_first,
                    bidirectional: self.bidirectional,
                    proj_size: self.mode.proj_size(),
                    ..LstmConfig::new(i, h)
                },
                vb,
            )?),
            Mode::Gru => Box::new(Gru::new(
                GruConfig {
                    num_layers: self.num_layers,
                    bias: self.bias,
                    batch_first: self.batch_first,
                    bidirectional: self.bidirectional,
                    ..GruConfig::new(i, h)
                },
                vb,
            )?),
        })
    }
}

/// The four cell variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CellMode {
    RnnTanh,
    RnnRelu,
    Lstm,
    Gru,
}

impl CellMode {
    pub const ALL: [CellMode; 4] = [CellMode::RnnTanh, CellMode::RnnRelu, CellMode::Lstm, CellMode::Gru];

    /// The layer mode with the same recurrence.
    pub fn layer_mode(self) -> Mode {
        match self {
            CellMode::RnnTanh => Mode::RnnTanh,
            CellMode::RnnRelu => Mode::RnnRelu,
            CellMode::Lstm => Mode::Lstm,
            CellMode::Gru => Mode::Gru,
        }
    }
}

/// Any of the three cells.
pub enum AnyCell {
    Rnn(RnnCell),
    Lstm(LstmCell),
    Gru(GruCell),
}

impl AnyCell {
    pub fn new(
        mode: CellMode,
        input_size: usize,
        hidden_size: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> recur::Result<Self> {
        Ok(match mode {
            CellMode::RnnTanh | CellMode::RnnRelu => {
                let nonlinearity = if mode == CellMode::RnnRelu { Nonlinearity::Relu } else { Nonlinearity::Tanh };
                AnyCell::Rnn(RnnCell::new(
                    RnnCellConfig { bias, nonlinearity, ..RnnCellConfig::new(input_size, hidden_size) },
                    vb,
                )?)
            }
            CellMode::Lstm => AnyCell::Lstm(LstmCell::new(
                LstmCellConfig { bias, ..LstmCellConfig::new(input_size, hidden_size) },
                vb,
            )?),
            CellMode::Gru => {
                AnyCell::Gru(GruCell::new(GruCellConfig { bias, ..GruCellConfig::new(input_size, hidden_size) }, vb)?)
            }
        })
    }

    pub fn forward(&self, input: &Tensor, state: Option<&State>) -> recur::Result<State> {
        match self {
            AnyCell::Rnn(c) => c.forward(input, state),
            AnyCell::Lstm(c) => c.forward(input, state),
            AnyCell::Gru(c) => c.forward(input, state),
        }
    }

    pub fn weights(&self) -> Vec<(String, Tensor)> {
        match self {
            AnyCell::Rnn(c) => c.weights(),
            AnyCell::Lstm(c) => c.weights(),
            AnyCell::Gru(c) => c.weights(),
        }
    }
}

/// `Σ output·g_out + Σ h_n·g_h (+ Σ c_n·g_c)`: the scalar loss whose gradient the tests compare.
pub fn weighted_loss(output: &Tensor, state: &State, g_out: &Tensor, g_h: &Tensor, g_c: Option<&Tensor>) -> Tensor {
    let mut loss = (output * g_out).and_then(|t| t.sum_all()).expect("output term");
    loss = (loss + (&state.h * g_h).and_then(|t| t.sum_all()).expect("h term")).expect("add");
    if let (Some(c), Some(g_c)) = (&state.c, g_c) {
        loss = (loss + (c * g_c).and_then(|t| t.sum_all()).expect("c term")).expect("add");
    }
    loss
}

/// The gradients in `grads` of `vars` (in their order), then of every parameter in `varmap` (by
/// name), each named "gradient of …"; panics if one is missing.
pub fn named_gradients(grads: &GradStore, mut vars: Vec<(String, Var)>, varmap: &VarMap) -> Vec<(String, Tensor)> {
    let mut params: Vec<(String, Var)> =
        varmap.data().lock().expect("varmap").iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    vars.extend(params);
    vars.into_iter()
        .map(|(name, var)| {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}")).clone();
            (format!("gradient of {name}"), g)
        })
        .collect()
}
