//! Finite-difference gradient checks through the public layer API (test bar R29).
//!
//! f64, central differences with eps = 1e-6; an element passes iff
//! `|analytic − numeric| ≤ 1e-5 + 1e-3·|numeric|`. The loss is `Σ output·G_out + Σ h_n·G_h
//! (+ Σ c_n·G_c)` with fixed random upstream weights, so every output element and the final state
//! contribute. Checked w.r.t. every element of the input, h0, c0 and every parameter (both biases,
//! `weight_hr` for the projection), for RNN tanh, RNN relu, LSTM, LSTM with projection and GRU ×
//! bias on/off × uni/bidirectional × num_layers {1, 3}; T = 5, B = 3, I = 4, H = 3. Parameters are
//! perturbed in place with `Var::set` on the variables of the layer's `VarMap`.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use common::{filled, values, AnyCell, CellMode, Mode, Spec};
use recur::{seeded_var_builder, Recurrent, State};

const EPS: f64 = 1e-6;
const ATOL: f64 = 1e-5;
const RTOL: f64 = 1e-3;
const T: usize = 5;
const B: usize = 3;
const I: usize = 4;
const H: usize = 3;

/// Compares `analytic` with central differences of `loss_at(perturbed values)` for each element of
/// `base`; returns a report of the worst offenders, if any.
fn compare(
    what: &str,
    base: &[f64],
    analytic: Option<&Tensor>,
    mut loss_at: impl FnMut(&[f64]) -> f64,
) -> Option<String> {
    let analytic = match analytic {
        Some(t) => values(t),
        None => return Some(format!("{what}: no analytic gradient")),
    };
    if analytic.len() != base.len() {
        return Some(format!("{what}: gradient has {} elements, tensor {}", analytic.len(), base.len()));
    }
    let mut bad = Vec::new();
    let mut v = base.to_vec();
    for i in 0..base.len() {
        v[i] = base[i] + EPS;
        let plus = loss_at(&v);
        v[i] = base[i] - EPS;
        let minus = loss_at(&v);
        v[i] = base[i];
        let numeric = (plus - minus) / (2.0 * EPS);
        let diff = (analytic[i] - numeric).abs();
        let pass = diff <= ATOL + RTOL * numeric.abs(); // false for NaN
        if !pass {
            bad.push((diff, i, analytic[i], numeric));
        }
    }
    if bad.is_empty() {
        return None;
    }
    bad.sort_by(|p, q| q.0.total_cmp(&p.0));
    let mut msg = format!("{what}: {} of {} elements fail; worst:", bad.len(), base.len());
    for (diff, i, a, n) in bad.iter().take(5) {
        msg.push_str(&format!("\n    [{i}] analytic {a:.12e}, numeric {n:.12e}, |diff| {diff:.3e}"));
    }
    Some(msg)
}

fn tensor(v: &[f64], dims: &[usize]) -> Tensor {
    Tensor::from_vec(v.to_vec(), dims, &Device::Cpu).expect("tensor")
}

struct Problem {
    /// Per-sequence lengths: run through `forward_with_lengths` (packed kernels) instead of `forward`.
    lengths: Option<Vec<usize>>,
    x: Tensor,
    h0: Tensor,
    c0: Option<Tensor>,
    g_out: Tensor,
    g_h: Tensor,
    g_c: Option<Tensor>,
}

fn run(layer: &dyn Recurrent, p: &Problem, x: &Tensor, state: &State) -> (Tensor, State) {
    match &p.lengths {
        Some(lengths) => layer.forward_with_lengths(x, lengths, Some(state)).expect("forward_with_lengths"),
        None => layer.forward(x, Some(state)).expect("forward"),
    }
}

fn loss_value(layer: &dyn Recurrent, p: &Problem, x: &Tensor, h0: &Tensor, c0: Option<&Tensor>) -> f64 {
    let state = State { h: h0.clone(), c: c0.cloned() };
    let (out, state_n) = run(layer, p, x, &state);
    common::weighted_loss(&out, &state_n, &p.g_out, &p.g_h, p.g_c.as_ref()).to_scalar::<f64>().expect("scalar")
}

/// Runs the full check for one configuration; returns the failures.
fn gradcheck_layer(spec: Spec, seed: u64, lengths: Option<&[usize]>) -> Vec<String> {
    let case = format!("{spec:?} lengths {lengths:?}");
    let dev = Device::Cpu;
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, seed, DType::F64, &dev);
    let layer = spec.build(vb.pp("rnn")).expect("build");
    let (lead, h_out, out_size) = (spec.num_layers * spec.dirs(), spec.h_out(), spec.dirs() * spec.h_out());
    let p = Problem {
        lengths: lengths.map(<[usize]>::to_vec),
        x: filled(&[T, B, I], seed + 1, DType::F64),
        h0: (filled(&[lead, B, h_out], seed + 2, DType::F64) * 0.5).expect("h0"),
        c0: spec.mode.is_lstm().then(|| (filled(&[lead, B, H], seed + 3, DType::F64) * 0.5).expect("c0")),
        g_out: filled(&[T, B, out_size], seed + 4, DType::F64),
        g_h: filled(&[lead, B, h_out], seed + 5, DType::F64),
        g_c: spec.mode.is_lstm().then(|| filled(&[lead, B, H], seed + 6, DType::F64)),
    };

    // Analytic gradients.
    let xv = Var::from_tensor(&p.x).expect("var");
    let h0v = Var::from_tensor(&p.h0).expect("var");
    let c0v = p.c0.as_ref().map(|c| Var::from_tensor(c).expect("var"));
    let state = State { h: h0v.as_tensor().clone(), c: c0v.as_ref().map(|c| c.as_tensor().clone()) };
    let (out, state_n) = run(layer.as_ref(), &p, xv.as_tensor(), &state);
    let loss = common::weighted_loss(&out, &state_n, &p.g_out, &p.g_h, p.g_c.as_ref());
    let grads = loss.backward().expect("backward");

    let mut failures = Vec::new();
    let l: &dyn Recurrent = layer.as_ref();
    let x_dims = p.x.dims().to_vec();
    if let Some(f) = compare("input", &values(&p.x), grads.get(xv.as_tensor()), |v| {
        loss_value(l, &p, &tensor(v, &x_dims), &p.h0, p.c0.as_ref())
    }) {
        failures.push(f);
    }
    let h_dims = p.h0.dims().to_vec();
    if let Some(f) = compare("h0", &values(&p.h0), grads.get(h0v.as_tensor()), |v| {
        loss_value(l, &p, &p.x, &tensor(v, &h_dims), p.c0.as_ref())
    }) {
        failures.push(f);
    }
    if let (Some(c0), Some(c0v)) = (&p.c0, &c0v) {
        let c_dims = c0.dims().to_vec();
        if let Some(f) = compare("c0", &values(c0), grads.get(c0v.as_tensor()), |v| {
            loss_value(l, &p, &p.x, &p.h0, Some(&tensor(v, &c_dims)))
        }) {
            failures.push(f);
        }
    }

    // Parameters: the names must be exactly PyTorch's, and each is perturbed in place.
    let names: Vec<String> = layer.weights().into_iter().map(|(n, _)| n).collect();
    let expected: Vec<String> = spec.param_shapes().into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, expected, "{case}: parameter names");
    for name in &names {
        let var: Var =
            varmap.data().lock().expect("varmap").get(&format!("rnn.{name}")).expect("var in varmap").clone();
        let base = values(var.as_tensor());
        let dims = var.as_tensor().dims().to_vec();
        let analytic = grads.get(var.as_tensor()).cloned();
        if let Some(f) = compare(name, &base, analytic.as_ref(), |v| {
            var.set(&tensor(v, &dims)).expect("set");
            loss_value(l, &p, &p.x, &p.h0, p.c0.as_ref())
        }) {
            failures.push(f);
        }
        var.set(&tensor(&base, &dims)).expect("restore");
    }
    failures.into_iter().map(|f| format!("[{case}] {f}")).collect()
}

fn sweep(mode: Mode, seed: u64) {
    let mut failures = Vec::new();
    let mut k = 0;
    for bias in [true, false] {
        for bidirectional in [false, true] {
            for num_layers in [1, 3] {
                let spec = Spec { num_layers, bias, bidirectional, ..Spec::new(mode, I, H) };
                failures.extend(gradcheck_layer(spec, seed + 100 * k, None));
                k += 1;
            }
        }
    }
    assert!(failures.is_empty(), "gradcheck failures:\n{}", failures.join("\n"));
}

#[test]
fn gradcheck_rnn_tanh() {
    sweep(Mode::RnnTanh, 1_000);
}

#[test]
fn gradcheck_rnn_relu() {
    sweep(Mode::RnnRelu, 2_000);
}

#[test]
fn gradcheck_lstm() {
    sweep(Mode::Lstm, 3_000);
}

#[test]
fn gradcheck_lstm_proj() {
    sweep(Mode::LstmProj, 4_000);
}

#[test]
fn gradcheck_gru() {
    sweep(Mode::Gru, 5_000);
}

/// Variable-length batches through the packed kernels (`forward_with_lengths`, lengths unsorted,
/// so the batch shrinks along time and the reverse direction starts sequences at their own ends):
/// every mode, uni- and bidirectional, 1 and 2 layers. The input gradient includes the padded
/// positions, which must come out as zero (their finite differences are zero).
#[test]
fn gradcheck_packed() {
    let mut failures = Vec::new();
    let mut k = 0;
    for mode in Mode::ALL {
        for bidirectional in [false, true] {
            for num_layers in [1, 2] {
                let spec = Spec { num_layers, bidirectional, ..Spec::new(mode, I, H) };
                failures.extend(gradcheck_layer(spec, 6_000 + 100 * k, Some(&[2, 5, 3])));
                k += 1;
            }
        }
    }
    assert!(failures.is_empty(), "gradcheck failures:\n{}", failures.join("\n"));
}

/// The cells, w.r.t. input, h (c) and all four parameters.
#[test]
fn gradcheck_cells() {
    let dev = Device::Cpu;
    let mut failures = Vec::new();
    for (k, mode) in CellMode::ALL.into_iter().enumerate() {
        for bias in [true, false] {
            let seed = 6_000 + 10 * k as u64 + u64::from(bias);
            let varmap = VarMap::new();
            let vb = seeded_var_builder(&varmap, seed, DType::F64, &dev);
            let cell = AnyCell::new(mode, I, H, bias, vb.pp("cell")).expect("cell");
            let is_lstm = mode == CellMode::Lstm;
            let x = filled(&[B, I], seed + 1, DType::F64);
            let h0 = filled(&[B, H], seed + 2, DType::F64);
            let c0 = is_lstm.then(|| filled(&[B, H], seed + 3, DType::F64));
            let g_h = filled(&[B, H], seed + 4, DType::F64);
            let g_c = is_lstm.then(|| filled(&[B, H], seed + 5, DType::F64));
            let loss_of = |x: &Tensor, h: &Tensor, c: Option<&Tensor>| -> Tensor {
                let next = cell.forward(x, Some(&State { h: h.clone(), c: c.cloned() })).expect("forward");
                let mut loss = (&next.h * &g_h).and_then(|t| t.sum_all()).expect("loss");
                if let (Some(c1), Some(g_c)) = (&next.c, &g_c) {
                    loss = (loss + (c1 * g_c).and_then(|t| t.sum_all()).expect("loss")).expect("loss");
                }
                loss
            };
            let value = |x: &Tensor, h: &Tensor, c: Option<&Tensor>| loss_of(x, h, c).to_scalar::<f64>().expect("f64");
            let xv = Var::from_tensor(&x).expect("var");
            let hv = Var::from_tensor(&h0).expect("var");
            let cv = c0.as_ref().map(|c| Var::from_tensor(c).expect("var"));
            let grads = loss_of(xv.as_tensor(), hv.as_tensor(), cv.as_ref().map(|c| c.as_tensor()))
                .backward()
                .expect("backward");
            let case = format!("{mode:?} bias={bias}");
            let mut push = |f: Option<String>| {
                if let Some(f) = f {
                    failures.push(format!("[{case}] {f}"));
                }
            };
            push(compare("input", &values(&x), grads.get(xv.as_tensor()), |v| {
                value(&tensor(v, &[B, I]), &h0, c0.as_ref())
            }));
            push(compare("h0", &values(&h0), grads.get(hv.as_tensor()), |v| {
                value(&x, &tensor(v, &[B, H]), c0.as_ref())
            }));
            if let (Some(c0), Some(cv)) = (&c0, &cv) {
                push(compare("c0", &values(c0), grads.get(cv.as_tensor()), |v| {
                    value(&x, &h0, Some(&tensor(v, &[B, H])))
                }));
            }
            for (name, _) in cell.weights() {
                let var: Var = varmap.data().lock().expect("varmap").get(&format!("cell.{name}")).expect("var").clone();
                let base = values(var.as_tensor());
                let dims = var.as_tensor().dims().to_vec();
                let analytic = grads.get(var.as_tensor()).cloned();
                push(compare(&name, &base, analytic.as_ref(), |v| {
                    var.set(&tensor(v, &dims)).expect("set");
                    value(&x, &h0, c0.as_ref())
                }));
                var.set(&tensor(&base, &dims)).expect("restore");
            }
        }
    }
    assert!(failures.is_empty(), "gradcheck failures:\n{}", failures.join("\n"));
}
