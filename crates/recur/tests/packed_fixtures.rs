//! Packed bidirectional layers against PyTorch float64 fixtures with unsorted lengths.
//!
//! The fixtures in `tests/fixtures/packed/` were written by `tests/fixtures/packed/generate.py`
//! (see its docstring): a 2-layer bidirectional LSTM / GRU / RNN run by PyTorch on
//! `pack_padded_sequence(x, lengths, batch_first, enforce_sorted=False)`, padded back with
//! `pad_packed_sequence(..., total_length=T)`, and the gradients of
//! `sum(output·G_out) + sum(h_n·G_h) [+ sum(c_n·G_c)]`.
//!
//! Each file runs through `pack_padded_sequence` + `forward_packed` + `pad_packed_sequence` and
//! through `forward_with_lengths`, in f64 (within 1e-12) and in f32 (within 1e-5 + 1e-4·|x|); the
//! packed layout itself (data, batch sizes, index maps) must equal PyTorch's exactly.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarBuilder;
use common::{check_close, values, weighted_loss, Mode, Spec};
use recur::{pack_padded_sequence, pad_packed_sequence, Recurrent, State};

fn fixture_paths() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join("packed");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/fixtures/packed exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    paths
}

struct Fixture {
    name: String,
    meta: HashMap<String, String>,
    tensors: HashMap<String, Tensor>,
}

impl Fixture {
    fn load(path: &Path) -> Self {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
        let bytes = std::fs::read(path).expect("read fixture");
        let (_, metadata) = safetensors::SafeTensors::read_metadata(&bytes).expect("header");
        let meta = metadata.metadata().clone().expect("__metadata__");
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).expect("tensors");
        Fixture { name, meta, tensors }
    }

    fn get(&self, key: &str, dtype: DType) -> Tensor {
        self.tensors.get(key).unwrap_or_else(|| panic!("{}: no {key}", self.name)).to_dtype(dtype).unwrap()
    }

    fn opt(&self, key: &str, dtype: DType) -> Option<Tensor> {
        self.tensors.contains_key(key).then(|| self.get(key, dtype))
    }

    fn usizes(&self, key: &str) -> Vec<usize> {
        values(&self.get(key, DType::F64)).into_iter().map(|v| v as usize).collect()
    }

    fn spec(&self) -> Spec {
        let mode = match self.meta["mode"].as_str() {
            "LSTM" => Mode::Lstm,
            "GRU" => Mode::Gru,
            "RNN_TANH" => Mode::RnnTanh,
            other => panic!("{}: unknown mode {other}", self.name),
        };
        let num = |k: &str| self.meta[k].parse::<usize>().unwrap();
        Spec {
            num_layers: num("num_layers"),
            bidirectional: self.meta["bidirectional"] == "true",
            batch_first: self.meta["batch_first"] == "true",
            ..Spec::new(mode, num("input_size"), num("hidden_size"))
        }
    }
}

/// Runs one fixture in `dtype`; returns every mismatch.
fn check(fx: &Fixture, dtype: DType, atol: f64, rtol: f64) -> Vec<String> {
    let spec = fx.spec();
    let params: HashMap<String, Tensor> =
        fx.tensors.keys().filter_map(|k| k.strip_prefix("rnn.").map(|n| (n.to_string(), fx.get(k, dtype)))).collect();
    let vars: HashMap<String, Var> = params.iter().map(|(k, t)| (k.clone(), Var::from_tensor(t).unwrap())).collect();
    let vb = VarBuilder::from_tensors(
        vars.iter().map(|(k, v)| (k.clone(), v.as_tensor().clone())).collect(),
        dtype,
        &Device::Cpu,
    );
    let layer: Box<dyn Recurrent> = spec.build(vb).expect("build");
    let lengths = fx.usizes("lengths");
    let x = Var::from_tensor(&fx.get("input", dtype)).unwrap();
    let h0 = Var::from_tensor(&fx.get("h0", dtype)).unwrap();
    let c0 = fx.opt("c0", dtype).map(|c| Var::from_tensor(&c).unwrap());
    let state = State { h: h0.as_tensor().clone(), c: c0.as_ref().map(|c| c.as_tensor().clone()) };
    let (g_out, g_h, g_c) = (fx.get("grad_output", dtype), fx.get("grad_h_n", dtype), fx.opt("grad_c_n", dtype));
    let mut failures = Vec::new();
    let compare =
        |what: String, got: &Tensor, key: &str| check_close(&what, got, &fx.get(key, dtype), atol, rtol).err();

    // The packed layout is PyTorch's.
    let packed = pack_padded_sequence(x.as_tensor(), &lengths, spec.batch_first, false).expect("pack");
    failures.extend(compare(format!("{} {dtype:?}: packed.data", fx.name), packed.data(), "packed.data"));
    let layout_ok = packed.batch_sizes() == fx.usizes("packed.batch_sizes").as_slice()
        && packed.sorted_indices() == Some(fx.usizes("packed.sorted_indices").as_slice())
        && packed.unsorted_indices() == Some(fx.usizes("packed.unsorted_indices").as_slice());
    if !layout_ok {
        failures.push(format!("{}: batch_sizes / index maps differ from PyTorch's", fx.name));
    }

    let packed_path = || {
        let (out, st) = layer.forward_packed(&packed, Some(&state)).expect("forward_packed");
        let (out, _) = pad_packed_sequence(
            &out,
            spec.batch_first,
            0.0,
            Some(x.dim(if spec.batch_first { 1 } else { 0 }).unwrap()),
        )
        .expect("pad");
        (out, st)
    };
    let lengths_path =
        || layer.forward_with_lengths(x.as_tensor(), &lengths, Some(&state)).expect("forward_with_lengths");
    for (entry, (out, st)) in [("forward_packed", packed_path()), ("forward_with_lengths", lengths_path())] {
        let what = |k: &str| format!("{} {dtype:?} {entry}: {k}", fx.name);
        failures.extend(compare(what("output"), &out, "output"));
        failures.extend(compare(what("h_n"), &st.h, "h_n"));
        if let Some(c) = &st.c {
            failures.extend(compare(what("c_n"), c, "c_n"));
        }
        let grads = weighted_loss(&out, &st, &g_out, &g_h, g_c.as_ref()).backward().expect("backward");
        failures.extend(compare(what("grad.input"), grads.get(x.as_tensor()).expect("input grad"), "grad.input"));
        failures.extend(compare(what("grad.h0"), grads.get(h0.as_tensor()).expect("h0 grad"), "grad.h0"));
        if let Some(c0) = &c0 {
            failures.extend(compare(what("grad.c0"), grads.get(c0.as_tensor()).expect("c0 grad"), "grad.c0"));
        }
        for (name, var) in &vars {
            let g = grads.get(var.as_tensor()).unwrap_or_else(|| panic!("no gradient for {name}"));
            failures.extend(compare(what(&format!("grad.{name}")), g, &format!("grad.{name}")));
        }
    }
    failures
}

#[test]
fn packed_layers_match_pytorch() {
    let paths = fixture_paths();
    assert_eq!(paths.len(), 5, "generate.py writes 5 packed fixtures");
    let mut failures = Vec::new();
    for path in &paths {
        let fx = Fixture::load(path);
        failures.extend(check(&fx, DType::F64, 1e-12, 0.0));
        failures.extend(check(&fx, DType::F32, 1e-5, 1e-4));
    }
    assert!(failures.is_empty(), "{} mismatches:\n{}", failures.len(), failures.join("\n"));
}
