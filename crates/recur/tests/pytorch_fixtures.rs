//! Every layer and cell against PyTorch float64 fixtures (test bar R30, R31).
//!
//! The fixtures in `tests/fixtures/*.safetensors` were written by `tests/fixtures/generate.py`
//! (torch version in `tests/fixtures/README.md` and in each file's metadata). For a layer they
//! correspond to this PyTorch snippet (per file: mode, sizes and flags from `__metadata__`):
//!
//! ```python
//! torch.manual_seed(seed)
//! rnn = torch.nn.LSTM(4, 3, num_layers=L, bias=bias, batch_first=batch_first,
//!                     bidirectional=bidirectional, proj_size=proj_size).double()  # or RNN / GRU
//! with torch.no_grad():
//!     for p in rnn.parameters():
//!         p.uniform_(-0.6, 0.6)
//! x = torch.randn(T, B, I, dtype=torch.float64, requires_grad=True)   # (B, T, I) if batch_first
//! h0 = (0.5 * torch.randn(L * D, B, H_out, dtype=torch.float64)).requires_grad_()
//! c0 = (0.5 * torch.randn(L * D, B, H, dtype=torch.float64)).requires_grad_()
//! output, (h_n, c_n) = rnn(x, (h0, c0))                               # output, h_n = rnn(x, h0)
//! grad_output, grad_h_n, grad_c_n = map(torch.randn_like, (output, h_n, c_n))
//! loss = (output * grad_output).sum() + (h_n * grad_h_n).sum() + (c_n * grad_c_n).sum()
//! loss.backward()
//! # saved: rnn.<state_dict name>, input, h0, c0, output, h_n, c_n, grad_output, grad_h_n,
//! #        grad_c_n, grad.input (= x.grad), grad.h0, grad.c0, grad.<param name> (= p.grad)
//! ```
//!
//! Cells: `h1, c1 = torch.nn.LSTMCell(4, 3, bias=bias)(x, (h0, c0))` (RNNCell / GRUCell return
//! `h1`), loss `(h1 * grad_h1).sum() + (c1 * grad_c1).sum()`, parameters `cell.weight_ih` …
//!
//! Each fixture runs twice: in f64 (everything within 1e-10 absolute) and with every tensor cast
//! to f32 (within 1e-5 + 1e-4·|expected| of the f64 reference). All failures are collected and
//! reported together.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use common::{check_close, AnyCell, CellMode, Mode, Spec};
use recur::State;

/// Number of fixture files `generate.py` writes (80 layer, 5 unbatched layer, 12 cell cases).
const EXPECTED_FIXTURES: usize = 97;

const F64_ATOL: f64 = 1e-10;
const F32_ATOL: f64 = 1e-5;
const F32_RTOL: f64 = 1e-4;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures")
}

fn fixture_paths() -> Vec<PathBuf> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(fixture_dir())
        .expect("tests/fixtures exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    paths
}

/// A fixture's configuration, from its `__metadata__`.
struct Meta(HashMap<String, String>);

impl Meta {
    fn get(&self, key: &str) -> Result<&str, String> {
        self.0.get(key).map(String::as_str).ok_or_else(|| format!("metadata key `{key}` missing"))
    }
    fn usize(&self, key: &str) -> Result<usize, String> {
        self.get(key)?.parse().map_err(|e| format!("metadata `{key}`: {e}"))
    }
    fn bool(&self, key: &str) -> Result<bool, String> {
        match self.get(key)? {
            "true" => Ok(true),
            "false" => Ok(false),
            other => Err(format!("metadata `{key}` = {other:?}, expected true/false")),
        }
    }
}

/// The fixture's tensors, read once; `take` records which were used so that a missing tensor
/// is an error and an unexpected one is reported.
struct Fixture {
    name: String,
    meta: Meta,
    tensors: HashMap<String, Tensor>,
}

impl Fixture {
    fn load(path: &Path) -> Result<Self, String> {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
        let bytes = std::fs::read(path).map_err(|e| format!("{name}: {e}"))?;
        let (_, metadata) =
            safetensors::SafeTensors::read_metadata(&bytes).map_err(|e| format!("{name}: bad header: {e}"))?;
        let meta = Meta(metadata.metadata().clone().ok_or_else(|| format!("{name}: no __metadata__"))?);
        let tensors =
            candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).map_err(|e| format!("{name}: {e}"))?;
        Ok(Fixture { name, meta, tensors })
    }

    /// Fails unless the file holds exactly `expected` (so a generator/test mismatch is loud).
    fn check_keys(&self, expected: &[String]) -> Result<(), String> {
        let have: BTreeSet<&str> = self.tensors.keys().map(String::as_str).collect();
        let want: BTreeSet<&str> = expected.iter().map(String::as_str).collect();
        let missing: Vec<_> = want.difference(&have).collect();
        let extra: Vec<_> = have.difference(&want).collect();
        if missing.is_empty() && extra.is_empty() {
            Ok(())
        } else {
            Err(format!("{}: missing tensors {missing:?}, unexpected tensors {extra:?}", self.name))
        }
    }

    fn get(&self, key: &str, dtype: DType) -> Result<Tensor, String> {
        let t = self.tensors.get(key).ok_or_else(|| format!("{}: tensor `{key}` missing", self.name))?;
        if t.dtype() != DType::F64 {
            return Err(format!("{}: tensor `{key}` is {:?}, fixtures are F64", self.name, t.dtype()));
        }
        t.to_dtype(dtype).map_err(|e| e.to_string())
    }

    fn var(&self, key: &str, dtype: DType) -> Result<Var, String> {
        Var::from_tensor(&self.get(key, dtype)?).map_err(|e| e.to_string())
    }
}

/// Compares and records: `failures` collects every mismatch.
struct Checker<'a> {
    case: String,
    atol: f64,
    rtol: f64,
    failures: &'a mut Vec<String>,
}

impl Checker<'_> {
    fn close(&mut self, name: &str, actual: Option<&Tensor>, expected: &Tensor) {
        match actual {
            None => self.failures.push(format!("[{}] {name}: no gradient computed", self.case)),
            Some(actual) => {
                if let Err(msg) = check_close(name, actual, expected, self.atol, self.rtol) {
                    self.failures.push(format!("[{}] {msg}", self.case));
                }
            }
        }
    }
}

fn layer_spec(meta: &Meta) -> Result<Spec, String> {
    let mode = match (meta.get("mode")?, meta.get("nonlinearity")?, meta.usize("proj_size")?) {
        ("RNN_TANH", "tanh", 0) => Mode::RnnTanh,
        ("RNN_RELU", "relu", 0) => Mode::RnnRelu,
        ("LSTM", _, 0) => Mode::Lstm,
        ("LSTM", _, p) if p == common::PROJ => Mode::LstmProj,
        ("GRU", _, 0) => Mode::Gru,
        other => return Err(format!("unknown layer mode {other:?}")),
    };
    Ok(Spec {
        mode,
        input_size: meta.usize("input_size")?,
        hidden_size: meta.usize("hidden_size")?,
        num_layers: meta.usize("num_layers")?,
        bias: meta.bool("bias")?,
        batch_first: meta.bool("batch_first")?,
        bidirectional: meta.bool("bidirectional")?,
    })
}

fn layer_keys(spec: &Spec) -> Vec<String> {
    let mut keys: Vec<String> = ["input", "h0", "output", "h_n", "grad_output", "grad_h_n", "grad.input", "grad.h0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    if spec.mode.is_lstm() {
        keys.extend(["c0", "c_n", "grad_c_n", "grad.c0"].iter().map(|s| s.to_string()));
    }
    for (name, _) in spec.param_shapes() {
        keys.push(format!("rnn.{name}"));
        keys.push(format!("grad.{name}"));
    }
    keys
}

fn run_layer(fx: &Fixture, dtype: DType, failures: &mut Vec<String>) -> Result<(), String> {
    let spec = layer_spec(&fx.meta)?;
    let (atol, rtol) = if dtype == DType::F64 { (F64_ATOL, 0.0) } else { (F32_ATOL, F32_RTOL) };
    let mut ck = Checker { case: format!("{} {dtype:?}", fx.name), atol, rtol, failures };
    let names: Vec<String> = spec.param_shapes().into_iter().map(|(n, _)| n).collect();
    let mut vars = HashMap::new();
    let mut map = HashMap::new();
    for name in &names {
        let var = fx.var(&format!("rnn.{name}"), dtype)?;
        map.insert(format!("rnn.{name}"), var.as_tensor().clone());
        vars.insert(name.clone(), var);
    }
    let vb = VarBuilder::from_tensors(map, dtype, &Device::Cpu);
    let layer = spec.build(vb.pp("rnn")).map_err(|e| format!("{}: build failed: {e}", ck.case))?;
    let got_names: Vec<String> = layer.weights().into_iter().map(|(n, _)| n).collect();
    if got_names != names {
        ck.failures.push(format!("[{}] weights() names {got_names:?}, expected PyTorch order {names:?}", ck.case));
    }
    let x = fx.var("input", dtype)?;
    let h0 = fx.var("h0", dtype)?;
    let c0 = if spec.mode.is_lstm() { Some(fx.var("c0", dtype)?) } else { None };
    let state = State { h: h0.as_tensor().clone(), c: c0.as_ref().map(|c| c.as_tensor().clone()) };
    let (output, state_n) =
        layer.forward(x.as_tensor(), Some(&state)).map_err(|e| format!("{}: forward failed: {e}", ck.case))?;
    let g_out = fx.get("grad_output", dtype)?;
    let g_h = fx.get("grad_h_n", dtype)?;
    let g_c = if spec.mode.is_lstm() { Some(fx.get("grad_c_n", dtype)?) } else { None };
    ck.close("output", Some(&output), &fx.get("output", DType::F64)?);
    ck.close("h_n", Some(&state_n.h), &fx.get("h_n", DType::F64)?);
    match (&state_n.c, spec.mode.is_lstm()) {
        (Some(c_n), true) => ck.close("c_n", Some(c_n), &fx.get("c_n", DType::F64)?),
        (None, false) => {}
        (c, _) => ck.failures.push(format!("[{}] c_n present: {}", ck.case, c.is_some())),
    }
    let loss = common::weighted_loss(&output, &state_n, &g_out, &g_h, g_c.as_ref());
    let grads = loss.backward().map_err(|e| format!("{}: backward failed: {e}", ck.case))?;
    ck.close("grad.input", grads.get(x.as_tensor()), &fx.get("grad.input", DType::F64)?);
    ck.close("grad.h0", grads.get(h0.as_tensor()), &fx.get("grad.h0", DType::F64)?);
    if let Some(c0) = &c0 {
        ck.close("grad.c0", grads.get(c0.as_tensor()), &fx.get("grad.c0", DType::F64)?);
    }
    for name in &names {
        let key = format!("grad.{name}");
        ck.close(&key, grads.get(vars[name].as_tensor()), &fx.get(&key, DType::F64)?);
    }
    Ok(())
}

fn cell_keys(mode: CellMode, bias: bool) -> Vec<String> {
    let mut keys: Vec<String> =
        ["input", "h0", "h1", "grad_h1", "grad.input", "grad.h0"].iter().map(|s| s.to_string()).collect();
    if mode == CellMode::Lstm {
        keys.extend(["c0", "c1", "grad_c1", "grad.c0"].iter().map(|s| s.to_string()));
    }
    for name in cell_param_names(bias) {
        keys.push(format!("cell.{name}"));
        keys.push(format!("grad.{name}"));
    }
    keys
}

fn cell_param_names(bias: bool) -> Vec<&'static str> {
    if bias {
        vec!["weight_ih", "weight_hh", "bias_ih", "bias_hh"]
    } else {
        vec!["weight_ih", "weight_hh"]
    }
}

fn cell_mode(meta: &Meta) -> Result<CellMode, String> {
    Ok(match (meta.get("mode")?, meta.get("nonlinearity")?) {
        ("RNN_TANH", "tanh") => CellMode::RnnTanh,
        ("RNN_RELU", "relu") => CellMode::RnnRelu,
        ("LSTM", _) => CellMode::Lstm,
        ("GRU", _) => CellMode::Gru,
        other => return Err(format!("unknown cell mode {other:?}")),
    })
}

fn run_cell(fx: &Fixture, dtype: DType, failures: &mut Vec<String>) -> Result<(), String> {
    let mode = cell_mode(&fx.meta)?;
    let bias = fx.meta.bool("bias")?;
    let (atol, rtol) = if dtype == DType::F64 { (F64_ATOL, 0.0) } else { (F32_ATOL, F32_RTOL) };
    let mut ck = Checker { case: format!("{} {dtype:?}", fx.name), atol, rtol, failures };
    let mut vars = HashMap::new();
    let mut map = HashMap::new();
    for name in cell_param_names(bias) {
        let var = fx.var(&format!("cell.{name}"), dtype)?;
        map.insert(format!("cell.{name}"), var.as_tensor().clone());
        vars.insert(name, var);
    }
    let vb = VarBuilder::from_tensors(map, dtype, &Device::Cpu);
    let cell = AnyCell::new(mode, fx.meta.usize("input_size")?, fx.meta.usize("hidden_size")?, bias, vb.pp("cell"))
        .map_err(|e| format!("{}: build failed: {e}", ck.case))?;
    let x = fx.var("input", dtype)?;
    let h0 = fx.var("h0", dtype)?;
    let c0 = if mode == CellMode::Lstm { Some(fx.var("c0", dtype)?) } else { None };
    let state = State { h: h0.as_tensor().clone(), c: c0.as_ref().map(|c| c.as_tensor().clone()) };
    let next = cell.forward(x.as_tensor(), Some(&state)).map_err(|e| format!("{}: forward failed: {e}", ck.case))?;
    ck.close("h1", Some(&next.h), &fx.get("h1", DType::F64)?);
    let g_h = fx.get("grad_h1", dtype)?;
    let mut loss = (&next.h * &g_h).and_then(|t| t.sum_all()).map_err(|e| e.to_string())?;
    match (&next.c, mode == CellMode::Lstm) {
        (Some(c1), true) => {
            ck.close("c1", Some(c1), &fx.get("c1", DType::F64)?);
            let g_c = fx.get("grad_c1", dtype)?;
            loss = (loss + (c1 * &g_c).and_then(|t| t.sum_all()).map_err(|e| e.to_string())?)
                .map_err(|e| e.to_string())?;
        }
        (None, false) => {}
        (c, _) => ck.failures.push(format!("[{}] c1 present: {}", ck.case, c.is_some())),
    }
    let grads = loss.backward().map_err(|e| format!("{}: backward failed: {e}", ck.case))?;
    ck.close("grad.input", grads.get(x.as_tensor()), &fx.get("grad.input", DType::F64)?);
    ck.close("grad.h0", grads.get(h0.as_tensor()), &fx.get("grad.h0", DType::F64)?);
    if let Some(c0) = &c0 {
        ck.close("grad.c0", grads.get(c0.as_tensor()), &fx.get("grad.c0", DType::F64)?);
    }
    for name in cell_param_names(bias) {
        let key = format!("grad.{name}");
        ck.close(&key, grads.get(vars[name].as_tensor()), &fx.get(&key, DType::F64)?);
    }
    Ok(())
}

/// Loads, key-checks and runs one fixture in f64 and f32; mismatches go to `failures`.
fn run_fixture(path: &Path, failures: &mut Vec<String>) -> Result<(), String> {
    let fx = Fixture::load(path)?;
    match fx.meta.get("kind")? {
        "layer" => {
            let spec = layer_spec(&fx.meta)?;
            fx.check_keys(&layer_keys(&spec))?;
            for dtype in [DType::F64, DType::F32] {
                run_layer(&fx, dtype, failures)?;
            }
        }
        "cell" => {
            let mode = cell_mode(&fx.meta)?;
            fx.check_keys(&cell_keys(mode, fx.meta.bool("bias")?))?;
            for dtype in [DType::F64, DType::F32] {
                run_cell(&fx, dtype, failures)?;
            }
        }
        other => return Err(format!("{}: unknown kind {other:?}", fx.name)),
    }
    Ok(())
}

/// Layer fixtures are `layer_*` and `unbatched_*`; cells are `cell_*`.
fn is_layer(stem: &str) -> bool {
    stem.starts_with("layer_") || stem.starts_with("unbatched_")
}

fn run_all(filter: impl Fn(&str) -> bool) -> usize {
    let mut failures = Vec::new();
    let mut ran = 0;
    for path in fixture_paths() {
        let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("").to_string();
        if !filter(&stem) {
            continue;
        }
        ran += 1;
        if let Err(e) = run_fixture(&path, &mut failures) {
            failures.push(e);
        }
    }
    assert!(failures.is_empty(), "{} mismatches against PyTorch:\n{}", failures.len(), failures.join("\n"));
    ran
}

#[test]
fn fixture_set_is_complete() {
    let paths = fixture_paths();
    assert_eq!(
        paths.len(),
        EXPECTED_FIXTURES,
        "expected {EXPECTED_FIXTURES} fixtures in {:?} (re-run generate.py?), found {paths:?}",
        fixture_dir()
    );
}

#[test]
fn rnn_tanh_layers_match_pytorch() {
    assert_eq!(run_all(|s| is_layer(s) && s.contains("_rnn_tanh_")), 17);
}

#[test]
fn rnn_relu_layers_match_pytorch() {
    assert_eq!(run_all(|s| is_layer(s) && s.contains("_rnn_relu_")), 17);
}

#[test]
fn lstm_layers_match_pytorch() {
    assert_eq!(run_all(|s| is_layer(s) && s.contains("_lstm_l")), 17);
}

#[test]
fn lstm_proj_layers_match_pytorch() {
    assert_eq!(run_all(|s| is_layer(s) && s.contains("_lstm_proj_")), 17);
}

#[test]
fn gru_layers_match_pytorch() {
    assert_eq!(run_all(|s| is_layer(s) && s.contains("_gru_l")), 17);
}

#[test]
fn cells_match_pytorch() {
    assert_eq!(run_all(|s| s.starts_with("cell_")), 12);
}

#[test]
fn every_fixture_is_covered_by_one_test() {
    let covered = |s: &str| {
        s.starts_with("cell_")
            || (is_layer(s)
                && ["_rnn_tanh_", "_rnn_relu_", "_lstm_l", "_lstm_proj_", "_gru_l"].iter().any(|p| s.contains(p)))
    };
    let uncovered: Vec<_> = fixture_paths()
        .into_iter()
        .filter(|p| !covered(p.file_stem().and_then(|s| s.to_str()).unwrap_or("")))
        .collect();
    assert!(uncovered.is_empty(), "fixtures no test runs: {uncovered:?}");
}
