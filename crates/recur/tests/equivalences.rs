//! Equivalences the layers must satisfy exactly (test bar R11, R12, R13, R15, R16, R32, R34).
//!
//! "Bitwise" means identical bit patterns, compared with `common::assert_bitwise`.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_bitwise, assert_close, filled, filled_var, values, AnyCell, CellMode, Mode, Spec};
use recur::{seeded_var_builder, Recurrent, State};

const T: usize = 5;
const B: usize = 3;
const I: usize = 4;
const H: usize = 3;

fn layer(spec: Spec, varmap: &VarMap, seed: u64, dtype: DType) -> Box<dyn Recurrent> {
    spec.build(seeded_var_builder(varmap, seed, dtype, &Device::Cpu).pp("rnn")).expect("build layer")
}

/// Every combination of mode × bias × batch_first × bidirectional, with the given layer count.
fn all_specs(num_layers: usize) -> Vec<Spec> {
    let mut specs = Vec::new();
    for mode in Mode::ALL {
        for bias in [true, false] {
            for batch_first in [false, true] {
                for bidirectional in [false, true] {
                    specs.push(Spec { num_layers, bias, batch_first, bidirectional, ..Spec::new(mode, I, H) });
                }
            }
        }
    }
    specs
}

fn state_of(spec: &Spec, h: Tensor, c: Option<Tensor>) -> State {
    assert_eq!(spec.mode.is_lstm(), c.is_some());
    State { h, c }
}

/// h0 (and c0) of shape `(L·D, [batch,] ·)`, filled from `seed`.
fn initial_state(spec: &Spec, batch: Option<usize>, seed: u64, dtype: DType) -> State {
    let lead = spec.num_layers * spec.dirs();
    let dims = |size: usize| match batch {
        Some(b) => vec![lead, b, size],
        None => vec![lead, size],
    };
    let h = filled(&dims(spec.h_out()), seed, dtype);
    let c = spec.mode.is_lstm().then(|| filled(&dims(spec.hidden_size), seed + 1, dtype));
    state_of(spec, h, c)
}

fn assert_states_bitwise(case: &str, actual: &State, expected: &State) {
    assert_bitwise(&format!("{case} h_n"), &actual.h, &expected.h);
    match (&actual.c, &expected.c) {
        (Some(a), Some(e)) => assert_bitwise(&format!("{case} c_n"), a, e),
        (None, None) => {}
        _ => panic!("{case}: c_n presence differs"),
    }
}

// ------------------------------------------------------------------------------------------------
// R12: unbatched (T, I) ≡ batched (T, 1, I) / (1, T, I) squeezed, bitwise.
// ------------------------------------------------------------------------------------------------
#[test]
fn unbatched_equals_batched_of_one_bitwise() {
    for dtype in [DType::F64, DType::F32] {
        for (k, spec) in all_specs(2).into_iter().enumerate() {
            let case = format!("{spec:?} {dtype:?}");
            let varmap = VarMap::new();
            let rnn = layer(spec, &varmap, 10 + k as u64, dtype);
            let x2 = filled(&[T, I], 1000 + k as u64, dtype);
            let batch_dim = if spec.batch_first { 0 } else { 1 };
            let x3 = x2.unsqueeze(batch_dim).expect("unsqueeze");
            let s2 = initial_state(&spec, None, 2000 + k as u64, dtype);
            let s3 = State {
                h: s2.h.unsqueeze(1).expect("unsqueeze"),
                c: s2.c.as_ref().map(|c| c.unsqueeze(1).expect("unsqueeze")),
            };
            for with_state in [true, false] {
                let (o2, n2) = rnn.forward(&x2, with_state.then_some(&s2)).expect("unbatched forward");
                let (o3, n3) = rnn.forward(&x3, with_state.then_some(&s3)).expect("batched forward");
                assert_eq!(o2.dims(), &[T, spec.dirs() * spec.h_out()], "{case}");
                assert_eq!(n2.h.dims(), &[spec.num_layers * spec.dirs(), spec.h_out()], "{case}");
                let case = format!("{case} with_state={with_state}");
                assert_bitwise(&format!("{case} output"), &o2, &o3.squeeze(batch_dim).expect("squeeze"));
                let n3 =
                    State { h: n3.h.squeeze(1).expect("squeeze"), c: n3.c.map(|c| c.squeeze(1).expect("squeeze")) };
                assert_states_bitwise(&case, &n2, &n3);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// R13: batch_first ≡ transposed sequence-first (outputs, states and gradients), bitwise.
// ------------------------------------------------------------------------------------------------
#[test]
fn batch_first_equals_transposed_bitwise() {
    for (k, spec) in all_specs(2).into_iter().filter(|s| !s.batch_first).enumerate() {
        let case = format!("{spec:?}");
        let dtype = DType::F64;
        let varmap = VarMap::new();
        let seq_first = layer(spec, &varmap, 20 + k as u64, dtype);
        // Same VarMap and names: the batch-first layer shares the very same parameters.
        let batch_first = layer(Spec { batch_first: true, ..spec }, &varmap, 20 + k as u64, dtype);
        let x_sf = filled_var(&[T, B, I], 3000 + k as u64, dtype);
        let x_bf =
            Var::from_tensor(&x_sf.as_tensor().transpose(0, 1).expect("t").contiguous().expect("c")).expect("var");
        let s0 = initial_state(&spec, Some(B), 4000 + k as u64, dtype);
        let (o_sf, n_sf) = seq_first.forward(x_sf.as_tensor(), Some(&s0)).expect("forward");
        let (o_bf, n_bf) = batch_first.forward(x_bf.as_tensor(), Some(&s0)).expect("forward");
        assert_eq!(o_bf.dims(), &[B, T, spec.dirs() * spec.h_out()], "{case}");
        assert_bitwise(&format!("{case} output"), &o_bf.transpose(0, 1).expect("t"), &o_sf);
        assert_states_bitwise(&case, &n_bf, &n_sf);

        let g = filled(&[T, B, spec.dirs() * spec.h_out()], 5000 + k as u64, dtype);
        let g_bf = g.transpose(0, 1).expect("t").contiguous().expect("c");
        let gs_sf = (&o_sf * &g).and_then(|t| t.sum_all()).and_then(|l| l.backward()).expect("backward");
        let gs_bf = (&o_bf * &g_bf).and_then(|t| t.sum_all()).and_then(|l| l.backward()).expect("backward");
        assert_bitwise(
            &format!("{case} grad input"),
            &gs_bf.get(x_bf.as_tensor()).expect("grad").transpose(0, 1).expect("t"),
            gs_sf.get(x_sf.as_tensor()).expect("grad"),
        );
        for (name, w) in seq_first.weights() {
            assert_bitwise(&format!("{case} grad {name}"), gs_bf.get(&w).expect("grad"), gs_sf.get(&w).expect("grad"));
        }
    }
}

// ------------------------------------------------------------------------------------------------
// R13: explicit zero state ≡ no state (PyTorch's test_rnn_initial_hidden_state), bitwise.
// ------------------------------------------------------------------------------------------------
#[test]
fn explicit_zero_state_equals_none_bitwise() {
    for dtype in [DType::F64, DType::F32] {
        for (k, spec) in all_specs(2).into_iter().enumerate() {
            let case = format!("{spec:?} {dtype:?}");
            let varmap = VarMap::new();
            let rnn = layer(spec, &varmap, 30 + k as u64, dtype);
            let lead = spec.num_layers * spec.dirs();
            for unbatched in [false, true] {
                let (x, batch) = if unbatched {
                    (filled(&[T, I], 6000 + k as u64, dtype), None)
                } else if spec.batch_first {
                    (filled(&[B, T, I], 6000 + k as u64, dtype), Some(B))
                } else {
                    (filled(&[T, B, I], 6000 + k as u64, dtype), Some(B))
                };
                let dims = |size: usize| match batch {
                    Some(b) => vec![lead, b, size],
                    None => vec![lead, size],
                };
                let zero = |size| Tensor::zeros(dims(size), dtype, &Device::Cpu).expect("zeros");
                let s0 = state_of(&spec, zero(spec.h_out()), spec.mode.is_lstm().then(|| zero(spec.hidden_size)));
                let (o_none, n_none) = rnn.forward(&x, None).expect("forward None");
                let (o_zero, n_zero) = rnn.forward(&x, Some(&s0)).expect("forward zeros");
                let case = format!("{case} unbatched={unbatched}");
                assert_bitwise(&format!("{case} output"), &o_none, &o_zero);
                assert_states_bitwise(&case, &n_none, &n_zero);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// R15: a cell unrolled over T ≡ the one-layer layer with the same weights (≤ 1e-12 in f64),
// outputs, final state and all gradients.
// ------------------------------------------------------------------------------------------------
#[test]
fn cell_unrolled_equals_one_layer() {
    let dtype = DType::F64;
    for (k, mode) in CellMode::ALL.into_iter().enumerate() {
        for bias in [true, false] {
            let spec = Spec { bias, ..Spec::new(mode.layer_mode(), I, H) };
            let case = format!("{mode:?} bias={bias}");
            let seed = 40 + 2 * k as u64 + u64::from(bias);
            let varmap = VarMap::new();
            let rnn = layer(spec, &varmap, seed, dtype);
            // The cell gets the layer's very tensors, so gradients land on the same variables.
            let map: HashMap<String, Tensor> =
                rnn.weights().into_iter().map(|(n, t)| (n.trim_end_matches("_l0").to_string(), t)).collect();
            assert_eq!(map.len(), if bias { 4 } else { 2 }, "{case}");
            let cell =
                AnyCell::new(mode, I, H, bias, VarBuilder::from_tensors(map, dtype, &Device::Cpu)).expect("cell");
            let x = filled_var(&[T, B, I], 7000 + seed, dtype);
            let h0 = filled_var(&[1, B, H], 7100 + seed, dtype);
            let c0 = (mode == CellMode::Lstm).then(|| filled_var(&[1, B, H], 7200 + seed, dtype));
            let s0 = State { h: h0.as_tensor().clone(), c: c0.as_ref().map(|c| c.as_tensor().clone()) };
            let (out, n) = rnn.forward(x.as_tensor(), Some(&s0)).expect("layer forward");

            let mut state = State {
                h: h0.as_tensor().squeeze(0).expect("sq"),
                c: c0.as_ref().map(|c| c.as_tensor().squeeze(0).expect("sq")),
            };
            let mut hs = Vec::new();
            for t in 0..T {
                state = cell.forward(&x.as_tensor().get(t).expect("x_t"), Some(&state)).expect("cell forward");
                hs.push(state.h.clone());
            }
            let out_cell = Tensor::stack(&hs, 0).expect("stack");
            let n_cell = State {
                h: state.h.unsqueeze(0).expect("unsq"),
                c: state.c.as_ref().map(|c| c.unsqueeze(0).expect("unsq")),
            };
            assert_close(&format!("{case} output"), &out_cell, &out, 1e-12, 0.0);
            assert_close(&format!("{case} h_n"), &n_cell.h, &n.h, 1e-12, 0.0);
            if let (Some(a), Some(e)) = (&n_cell.c, &n.c) {
                assert_close(&format!("{case} c_n"), a, e, 1e-12, 0.0);
            }

            let g_out = filled(&[T, B, H], 7300 + seed, dtype);
            let g_h = filled(&[1, B, H], 7400 + seed, dtype);
            let g_c = (mode == CellMode::Lstm).then(|| filled(&[1, B, H], 7500 + seed, dtype));
            let gl = common::weighted_loss(&out, &n, &g_out, &g_h, g_c.as_ref()).backward().expect("backward");
            let gc =
                common::weighted_loss(&out_cell, &n_cell, &g_out, &g_h, g_c.as_ref()).backward().expect("backward");
            let mut targets = vec![("input".to_string(), x.as_tensor().clone()), ("h0".into(), h0.as_tensor().clone())];
            if let Some(c0) = &c0 {
                targets.push(("c0".into(), c0.as_tensor().clone()));
            }
            targets.extend(rnn.weights());
            for (name, t) in targets {
                let (a, e) = (gc.get(&t), gl.get(&t));
                assert!(a.is_some() && e.is_some(), "{case} grad {name}: cell {} layer {}", a.is_some(), e.is_some());
                assert_close(&format!("{case} grad {name}"), a.expect("grad"), e.expect("grad"), 1e-12, 0.0);
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// R16: strided / non-contiguous views as input and state ≡ contiguous copies, bitwise, outputs
// and gradients.
// ------------------------------------------------------------------------------------------------
/// How a test tensor of logical shape `dims` is made non-contiguous.
#[derive(Clone, Copy, Debug)]
enum View {
    /// Stored with its first two dimensions swapped, then transposed back.
    Transposed,
    /// Narrowed out of a tensor with 3 more elements in the last dimension (offset 1).
    Narrowed,
}

/// A variable holding the storage and the non-contiguous view of logical shape `dims` into it.
fn strided(dims: &[usize], view: View, seed: u64, dtype: DType) -> (Var, Tensor) {
    match view {
        View::Transposed => {
            let mut stored = dims.to_vec();
            stored.swap(0, 1);
            let var = filled_var(&stored, seed, dtype);
            let t = var.as_tensor().transpose(0, 1).expect("t");
            (var, t)
        }
        View::Narrowed => {
            let mut stored = dims.to_vec();
            let last = stored.len() - 1;
            stored[last] += 3;
            let var = filled_var(&stored, seed, dtype);
            let t = var.as_tensor().narrow(last, 1, dims[last]).expect("narrow");
            (var, t)
        }
    }
}

/// The gradient of the view's elements, taken from the gradient of its storage.
fn view_grad(grad: &Tensor, dims: &[usize], view: View) -> Tensor {
    match view {
        View::Transposed => grad.transpose(0, 1).expect("t").contiguous().expect("c"),
        View::Narrowed => grad.narrow(dims.len() - 1, 1, dims[dims.len() - 1]).expect("n").contiguous().expect("c"),
    }
}

#[test]
fn non_contiguous_inputs_equal_contiguous_bitwise() {
    for dtype in [DType::F64, DType::F32] {
        for (k, spec) in all_specs(2).into_iter().filter(|s| s.bidirectional && s.bias).enumerate() {
            for view in [View::Transposed, View::Narrowed] {
                let case = format!("{spec:?} {dtype:?} {view:?}");
                let seed = 8000 + 10 * k as u64;
                let varmap = VarMap::new();
                let rnn = layer(spec, &varmap, seed, dtype);
                let x_dims = if spec.batch_first { [B, T, I] } else { [T, B, I] };
                let lead = spec.num_layers * spec.dirs();
                let h_dims = [lead, B, spec.h_out()];
                let c_dims = [lead, B, spec.hidden_size];

                let (xs, xv) = strided(&x_dims, view, seed + 1, dtype);
                let (hs, hv) = strided(&h_dims, view, seed + 2, dtype);
                let c_strided = spec.mode.is_lstm().then(|| strided(&c_dims, view, seed + 3, dtype));
                assert!(!xv.is_contiguous() && !hv.is_contiguous(), "{case}: views must be non-contiguous");

                let xc = Var::from_tensor(&xv.contiguous().expect("c")).expect("var");
                let hc = Var::from_tensor(&hv.contiguous().expect("c")).expect("var");
                let cc = c_strided.as_ref().map(|(_, cv)| Var::from_tensor(&cv.contiguous().expect("c")).expect("v"));

                let s_view = State { h: hv.clone(), c: c_strided.as_ref().map(|(_, cv)| cv.clone()) };
                let s_cont = State { h: hc.as_tensor().clone(), c: cc.as_ref().map(|c| c.as_tensor().clone()) };
                let (o_v, n_v) = rnn.forward(&xv, Some(&s_view)).expect("forward view");
                let (o_c, n_c) = rnn.forward(xc.as_tensor(), Some(&s_cont)).expect("forward contiguous");
                assert_bitwise(&format!("{case} output"), &o_v, &o_c);
                assert_states_bitwise(&case, &n_v, &n_c);

                let g_out = filled(o_c.dims(), seed + 4, dtype);
                let g_h = filled(n_c.h.dims(), seed + 5, dtype);
                let g_c = n_c.c.as_ref().map(|c| filled(c.dims(), seed + 6, dtype));
                let gv = common::weighted_loss(&o_v, &n_v, &g_out, &g_h, g_c.as_ref()).backward().expect("bw");
                let gc = common::weighted_loss(&o_c, &n_c, &g_out, &g_h, g_c.as_ref()).backward().expect("bw");
                assert_bitwise(
                    &format!("{case} grad input"),
                    &view_grad(gv.get(xs.as_tensor()).expect("grad"), &x_dims, view),
                    gc.get(xc.as_tensor()).expect("grad"),
                );
                assert_bitwise(
                    &format!("{case} grad h0"),
                    &view_grad(gv.get(hs.as_tensor()).expect("grad"), &h_dims, view),
                    gc.get(hc.as_tensor()).expect("grad"),
                );
                if let (Some((cs, _)), Some(cc)) = (&c_strided, &cc) {
                    assert_bitwise(
                        &format!("{case} grad c0"),
                        &view_grad(gv.get(cs.as_tensor()).expect("grad"), &c_dims, view),
                        gc.get(cc.as_tensor()).expect("grad"),
                    );
                }
                for (name, w) in rnn.weights() {
                    assert_bitwise(
                        &format!("{case} grad {name}"),
                        gv.get(&w).expect("grad"),
                        gc.get(&w).expect("grad"),
                    );
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// R32: repeated backward over one forward gives bitwise-identical gradients, 4 times.
// ------------------------------------------------------------------------------------------------
#[test]
fn repeated_backward_is_bitwise_identical() {
    let dtype = DType::F64;
    for (k, spec) in all_specs(2).into_iter().filter(|s| !s.batch_first).enumerate() {
        let case = format!("{spec:?}");
        let seed = 9000 + 10 * k as u64;
        let varmap = VarMap::new();
        let rnn = layer(spec, &varmap, seed, dtype);
        let x = filled_var(&[T, B, I], seed + 1, dtype);
        let s0 = initial_state(&spec, Some(B), seed + 2, dtype);
        let h0 = Var::from_tensor(&s0.h).expect("var");
        let c0 = s0.c.as_ref().map(|c| Var::from_tensor(c).expect("var"));
        let state = State { h: h0.as_tensor().clone(), c: c0.as_ref().map(|c| c.as_tensor().clone()) };
        let (out, n) = rnn.forward(x.as_tensor(), Some(&state)).expect("forward");
        let g_out = filled(out.dims(), seed + 3, dtype);
        let g_h = filled(n.h.dims(), seed + 4, dtype);
        let g_c = n.c.as_ref().map(|c| filled(c.dims(), seed + 5, dtype));
        let loss = common::weighted_loss(&out, &n, &g_out, &g_h, g_c.as_ref());
        let mut targets = vec![("input".to_string(), x.as_tensor().clone()), ("h0".into(), h0.as_tensor().clone())];
        if let Some(c0) = &c0 {
            targets.push(("c0".into(), c0.as_tensor().clone()));
        }
        targets.extend(rnn.weights());
        let first = loss.backward().expect("backward 1");
        for round in 2..=4 {
            let again = loss.backward().unwrap_or_else(|e| panic!("{case}: backward {round}: {e}"));
            for (name, t) in &targets {
                assert_bitwise(
                    &format!("{case} round {round} grad {name}"),
                    again.get(t).expect("grad"),
                    first.get(t).expect("grad"),
                );
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// R11: batch size 0 is allowed: output (T, 0, D·H_out), backward runs.
// ------------------------------------------------------------------------------------------------
#[test]
fn batch_of_zero_runs_forward_and_backward() {
    for dtype in [DType::F64, DType::F32] {
        for (k, spec) in all_specs(2).into_iter().enumerate() {
            let case = format!("{spec:?} {dtype:?}");
            let varmap = VarMap::new();
            let rnn = layer(spec, &varmap, 100 + k as u64, dtype);
            let x_dims = if spec.batch_first { [0, T, I] } else { [T, 0, I] };
            let x = Var::from_tensor(&Tensor::zeros(&x_dims, dtype, &Device::Cpu).expect("zeros")).expect("var");
            let lead = spec.num_layers * spec.dirs();
            let out_dims =
                if spec.batch_first { [0, T, spec.dirs() * spec.h_out()] } else { [T, 0, spec.dirs() * spec.h_out()] };
            for with_state in [false, true] {
                let s0 = initial_state(&spec, Some(0), 1, dtype);
                let (out, n) = rnn
                    .forward(x.as_tensor(), with_state.then_some(&s0))
                    .unwrap_or_else(|e| panic!("{case} with_state={with_state}: forward failed: {e}"));
                assert_eq!(out.dims(), &out_dims, "{case}");
                assert_eq!(n.h.dims(), &[lead, 0, spec.h_out()], "{case}");
                if let Some(c) = &n.c {
                    assert_eq!(c.dims(), &[lead, 0, spec.hidden_size], "{case}");
                }
                let mut loss = out.sum_all().and_then(|o| o + n.h.sum_all()?).expect("loss");
                if let Some(c) = &n.c {
                    loss = (loss + c.sum_all().expect("sum")).expect("add");
                }
                let grads =
                    loss.backward().unwrap_or_else(|e| panic!("{case} with_state={with_state}: backward failed: {e}"));
                if let Some(g) = grads.get(x.as_tensor()) {
                    assert_eq!(g.dims(), &x_dims, "{case}");
                }
            }
        }
    }
}

// ------------------------------------------------------------------------------------------------
// R34: T = 10,000 LSTM and GRU (B = 2, H = 32, f32), forward + BPTT on a 1 MiB stack, all finite.
// ------------------------------------------------------------------------------------------------
fn long_sequence(mode: Mode) {
    const LONG_T: usize = 10_000;
    const LONG_B: usize = 2;
    const LONG_I: usize = 8;
    const LONG_H: usize = 32;
    let dtype = DType::F32;
    let spec = Spec::new(mode, LONG_I, LONG_H);
    let varmap = VarMap::new();
    let rnn = layer(spec, &varmap, 77, dtype);
    let x = filled_var(&[LONG_T, LONG_B, LONG_I], 78, dtype);
    let (out, n) = rnn.forward(x.as_tensor(), None).expect("forward");
    assert_eq!(out.dims(), &[LONG_T, LONG_B, LONG_H]);
    let g_out = filled(out.dims(), 79, dtype);
    let g_h = filled(n.h.dims(), 80, dtype);
    let g_c = n.c.as_ref().map(|c| filled(c.dims(), 81, dtype));
    let grads = common::weighted_loss(&out, &n, &g_out, &g_h, g_c.as_ref()).backward().expect("backward");
    let finite = |name: &str, t: &Tensor| {
        let v = values(t);
        let bad = v.iter().filter(|x| !x.is_finite()).count();
        assert_eq!(bad, 0, "{mode:?}: {bad} non-finite values in {name}");
    };
    finite("output", &out);
    finite("h_n", &n.h);
    if let Some(c) = &n.c {
        finite("c_n", c);
    }
    finite("grad input", grads.get(x.as_tensor()).expect("grad input"));
    for (name, w) in rnn.weights() {
        finite(&name, grads.get(&w).unwrap_or_else(|| panic!("{mode:?}: no grad for {name}")));
    }
}

fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(1 << 20)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("the long-sequence run panicked or overflowed its 1 MiB stack");
}

#[test]
fn lstm_ten_thousand_steps_on_one_mib_stack() {
    on_small_stack(|| long_sequence(Mode::Lstm));
}

#[test]
fn gru_ten_thousand_steps_on_one_mib_stack() {
    on_small_stack(|| long_sequence(Mode::Gru));
}
