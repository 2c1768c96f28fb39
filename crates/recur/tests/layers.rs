//! The contract every recurrent layer keeps (one test over RNN, LSTM and GRU through the
//! `Recurrent` trait), training/evaluation mode and inter-layer dropout (port of PyTorch's
//! `test_RNN_dropout`), default initialisation, and PyTorch's repr.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_bitwise, filled, values, Mode, Spec};
use recur::{
    seeded_var_builder, GruCell, GruCellConfig, Lstm, LstmCell, LstmCellConfig, LstmConfig, Nonlinearity, Recurrent,
    Rnn, RnnCell, RnnCellConfig, RnnConfig, State,
};

fn build(spec: Spec, seed: u64, dtype: DType) -> (Box<dyn Recurrent>, VarMap) {
    let varmap = VarMap::new();
    let layer = spec.build(seeded_var_builder(&varmap, seed, dtype, &Device::Cpu)).expect("layer");
    (layer, varmap)
}

/// One contract for all three layer types: shapes, state layout, names, continuation.
#[test]
fn every_layer_keeps_the_same_contract() {
    let (t, b, i, h) = (6, 3, 4, 5);
    for mode in Mode::ALL {
        for bidirectional in [false, true] {
            for batch_first in [false, true] {
                let spec = Spec { num_layers: 2, bidirectional, batch_first, ..Spec::new(mode, i, h) };
                let case = format!("{spec:?}");
                let (layer, varmap) = build(spec, 3, DType::F64);
                let d = spec.dirs();
                assert_eq!(layer.output_size(), d * spec.h_out(), "{case}");
                let x = if batch_first { filled(&[b, t, i], 1, DType::F64) } else { filled(&[t, b, i], 1, DType::F64) };
                let (out, state) = layer.forward(&x, None).expect("forward");
                let want_out = if batch_first { [b, t, d * spec.h_out()] } else { [t, b, d * spec.h_out()] };
                assert_eq!(out.dims(), want_out, "{case}: output shape");
                assert_eq!(state.h.dims(), [2 * d, b, spec.h_out()], "{case}: h_n shape");
                match (&state.c, spec.mode.is_lstm()) {
                    (Some(c), true) => assert_eq!(c.dims(), [2 * d, b, h], "{case}: c_n shape"),
                    (None, false) => {}
                    _ => panic!("{case}: c_n present iff LSTM"),
                }
                // Parameters: PyTorch's names and order, all of them in the VarMap.
                let names: Vec<String> = layer.weights().into_iter().map(|(n, _)| n).collect();
                let expected: Vec<String> = spec.param_shapes().into_iter().map(|(n, _)| n).collect();
                assert_eq!(names, expected, "{case}: parameter names");
                assert_eq!(varmap.all_vars().len(), expected.len(), "{case}: every parameter is a variable");
                // h_n is indexed layer·D + direction: the last layer's forward state is the output's
                // last step (first half), its reverse state the output's first step (second half).
                let seq_out = if batch_first { out.transpose(0, 1).unwrap() } else { out.clone() };
                let p = spec.h_out();
                let last_fwd = state.h.get(2 * d - d).unwrap();
                assert_bitwise(
                    &format!("{case}: h_n fwd"),
                    &last_fwd,
                    &seq_out.get(t - 1).unwrap().narrow(1, 0, p).unwrap(),
                );
                if bidirectional {
                    let last_rev = state.h.get(2 * d - 1).unwrap();
                    assert_bitwise(
                        &format!("{case}: h_n rev"),
                        &last_rev,
                        &seq_out.get(0).unwrap().narrow(1, p, p).unwrap(),
                    );
                }
                // Unidirectional: running two halves with the state carried equals one run.
                if !bidirectional {
                    let time_dim = if batch_first { 1 } else { 0 };
                    let (first, second) = (x.narrow(time_dim, 0, 2).unwrap(), x.narrow(time_dim, 2, t - 2).unwrap());
                    let (_, mid) = layer.forward(&first, None).unwrap();
                    let (out2, end) = layer.forward(&second, Some(&mid)).unwrap();
                    let tail = out.narrow(time_dim, 2, t - 2).unwrap();
                    common::assert_close(&format!("{case}: carried state"), &out2, &tail, 1e-13, 0.0);
                    common::assert_close(&format!("{case}: carried h_n"), &end.h, &state.h, 1e-13, 0.0);
                }
            }
        }
    }
}

/// PyTorch's `test_RNN_dropout`: all weights 1, no bias, ReLU RNN(10 → 1000, 2 layers).
fn dropout_rnn(p: f64, seed: u64) -> Rnn {
    let mut map = HashMap::new();
    map.insert("weight_ih_l0".to_string(), Tensor::ones((1000, 10), DType::F64, &Device::Cpu).unwrap());
    map.insert("weight_hh_l0".to_string(), Tensor::ones((1000, 1000), DType::F64, &Device::Cpu).unwrap());
    map.insert("weight_ih_l1".to_string(), Tensor::ones((1000, 1000), DType::F64, &Device::Cpu).unwrap());
    map.insert("weight_hh_l1".to_string(), Tensor::ones((1000, 1000), DType::F64, &Device::Cpu).unwrap());
    let vb = VarBuilder::from_tensors(map, DType::F64, &Device::Cpu);
    let cfg = RnnConfig {
        num_layers: 2,
        bias: false,
        dropout: p,
        nonlinearity: Nonlinearity::Relu,
        seed,
        ..RnnConfig::new(10, 1000)
    };
    Rnn::new(cfg, vb).unwrap()
}

fn run_dropout(rnn: &Rnn) -> (Vec<f64>, Vec<f64>) {
    let x = Tensor::ones((1, 1, 10), DType::F64, &Device::Cpu).unwrap();
    let h0 = Tensor::zeros((2, 1, 1000), DType::F64, &Device::Cpu).unwrap();
    let (out, state) = rnn.forward(&x, Some(&State::h(h0))).unwrap();
    (values(&out), values(&state.h.get(0).unwrap()))
}

#[test]
fn dropout_between_layers_follows_pytorch() {
    for p in [0.0, 0.276, 0.731, 1.0] {
        for training in [true, false] {
            let rnn = dropout_rnn(p, 5);
            rnn.set_training(training);
            let (out, h_n_layer0) = run_dropout(&rnn);
            let first = out[0];
            assert!(out.iter().all(|&v| v == first), "p={p}: every output value is equal");
            assert!(h_n_layer0.iter().all(|&v| v == 10.0), "p={p}: layer-0 h_n is never dropped");
            if p == 0.0 || !training {
                assert_eq!(first, 10000.0, "p={p} training={training}");
            } else if p == 1.0 {
                assert_eq!(first, 0.0);
            } else {
                assert!(first > 8000.0 && first < 12000.0, "p={p}: {first}");
                let kept = first * (1.0 - p) / 10.0;
                assert!(
                    (kept - kept.round()).abs() < 1e-6,
                    "p={p}: value·(1−p) = {} not a multiple of 10",
                    kept * 10.0
                );
            }
        }
    }
}

#[test]
fn dropout_is_reproducible_under_a_seed_and_fresh_per_call() {
    let (a, b) = (dropout_rnn(0.5, 11), dropout_rnn(0.5, 11));
    let (a1, a2) = (run_dropout(&a).0, run_dropout(&a).0);
    let (b1, b2) = (run_dropout(&b).0, run_dropout(&b).0);
    assert_eq!((a1.clone(), a2.clone()), (b1, b2), "same seed, same masks");
    // Each call draws a new mask; equal counts are possible but unlikely across three calls.
    let a3 = run_dropout(&a).0;
    assert!(a1[0] != a2[0] || a2[0] != a3[0], "masks are redrawn on every call");
    let c1 = run_dropout(&dropout_rnn(0.5, 12)).0;
    let d1 = run_dropout(&dropout_rnn(0.5, 13)).0;
    assert!(c1[0] != a1[0] || d1[0] != a1[0], "another seed gives other masks");
}

/// Backward after a training-mode forward does not depend on the mode flag at backward time.
#[test]
fn backward_does_not_depend_on_the_mode_flag() {
    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, 9, DType::F64, &Device::Cpu);
    let cfg = LstmConfig { num_layers: 3, dropout: 0.4, seed: 4, ..LstmConfig::new(4, 6) };
    let lstm = Lstm::new(cfg, vb).unwrap();
    let x = Var::from_tensor(&filled(&[5, 2, 4], 2, DType::F64)).unwrap();
    let (out, _) = lstm.forward(x.as_tensor(), None).unwrap();
    let loss = out.sqr().unwrap().sum_all().unwrap();
    let before = loss.backward().unwrap();
    lstm.set_training(false);
    let after = loss.backward().unwrap();
    for var in varmap.all_vars().iter().map(|v| v.as_tensor()).chain([x.as_tensor()]) {
        assert_bitwise("grad", after.get(var).unwrap(), before.get(var).unwrap());
    }
    // Evaluation mode is deterministic.
    let (e1, _) = lstm.forward(x.as_tensor(), None).unwrap();
    let (e2, _) = lstm.forward(x.as_tensor(), None).unwrap();
    assert_bitwise("eval", &e1, &e2);
}

#[test]
fn default_init_is_uniform_within_one_over_sqrt_hidden() {
    for (mode, h) in [(Mode::RnnTanh, 16), (Mode::Lstm, 25), (Mode::LstmProj, 9), (Mode::Gru, 36)] {
        let spec = Spec { num_layers: 2, bidirectional: true, ..Spec::new(mode, 7, h) };
        let (layer, _) = build(spec, 1, DType::F32);
        let k = 1.0 / (h as f64).sqrt();
        let mut all = Vec::new();
        for (name, t) in layer.weights() {
            let v = values(&t);
            assert!(v.iter().all(|x| x.abs() <= k), "{mode:?} {name}: outside ±{k}");
            all.extend(v);
        }
        let (min, max) = all.iter().fold((f64::MAX, f64::MIN), |(lo, hi), &x| (lo.min(x), hi.max(x)));
        assert!(min < -0.9 * k && max > 0.9 * k, "{mode:?}: values span the range ({min}, {max})");
        let mean = all.iter().sum::<f64>() / all.len() as f64;
        assert!(mean.abs() < 0.05 * k, "{mode:?}: mean {mean} far from 0");
    }
    // Same seed → same parameters; another seed → others.
    let spec = Spec::new(Mode::Gru, 3, 4);
    let a: Vec<f64> = build(spec, 8, DType::F64).0.weights().iter().flat_map(|(_, t)| values(t)).collect();
    let b: Vec<f64> = build(spec, 8, DType::F64).0.weights().iter().flat_map(|(_, t)| values(t)).collect();
    let c: Vec<f64> = build(spec, 9, DType::F64).0.weights().iter().flat_map(|(_, t)| values(t)).collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn display_matches_pytorch_repr() {
    // Checked against torch 2.15: print(nn.LSTM(10, 20, num_layers=2, batch_first=True, bidirectional=True)) etc.
    let vm = VarMap::new();
    let vb = || seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu);
    let lstm = Lstm::new(
        LstmConfig { num_layers: 2, batch_first: true, bidirectional: true, ..LstmConfig::new(10, 20) },
        vb().pp("a"),
    )
    .unwrap();
    assert_eq!(lstm.to_string(), "LSTM(10, 20, num_layers=2, batch_first=True, bidirectional=True)");
    let proj = Lstm::new(LstmConfig { proj_size: 2, bias: false, ..LstmConfig::new(4, 3) }, vb().pp("b")).unwrap();
    assert_eq!(proj.to_string(), "LSTM(4, 3, proj_size=2, bias=False)");
    let rnn = Rnn::new(RnnConfig { num_layers: 2, dropout: 1.0, ..RnnConfig::new(4, 3) }, vb().pp("c")).unwrap();
    assert_eq!(rnn.to_string(), "RNN(4, 3, num_layers=2, dropout=1.0)");
    let relu = Rnn::new(RnnConfig { nonlinearity: Nonlinearity::Relu, ..RnnConfig::new(4, 3) }, vb().pp("d")).unwrap();
    assert_eq!(relu.to_string(), "RNN(4, 3)");
    let cell =
        RnnCell::new(RnnCellConfig { nonlinearity: Nonlinearity::Relu, ..RnnCellConfig::new(4, 3) }, vb().pp("e"))
            .unwrap();
    assert_eq!(cell.to_string(), "RNNCell(4, 3, nonlinearity=relu)");
    let gru_cell = GruCell::new(GruCellConfig { bias: false, ..GruCellConfig::new(4, 3) }, vb().pp("f")).unwrap();
    assert_eq!(gru_cell.to_string(), "GRUCell(4, 3, bias=False)");
    let lstm_cell = LstmCell::new(LstmCellConfig::new(4, 3), vb().pp("g")).unwrap();
    assert_eq!(lstm_cell.to_string(), "LSTMCell(4, 3)");
}

#[test]
fn inference_without_tracked_inputs_builds_no_graph() {
    // Weights loaded as plain tensors and an untracked input: nothing to differentiate, and the
    // output is a leaf (no workspace kept alive by a graph).
    let mut map = HashMap::new();
    for (name, shape) in Spec::new(Mode::Lstm, 3, 4).param_shapes() {
        map.insert(name, filled(&shape, 1, DType::F32));
    }
    let lstm = Lstm::new(LstmConfig::new(3, 4), VarBuilder::from_tensors(map, DType::F32, &Device::Cpu)).unwrap();
    let x = filled(&[5, 2, 3], 2, DType::F32);
    let (out, _) = lstm.forward(&x, None).unwrap();
    assert!(!out.track_op());
    assert_eq!(out.dims(), [5, 2, 4]);
}

#[test]
fn forward_no_grad_equals_forward_and_records_nothing() {
    for mode in Mode::ALL {
        let spec = Spec { num_layers: 2, bidirectional: true, ..Spec::new(mode, 3, 4) };
        let (layer, _) = build(spec, 6, DType::F64);
        let x = Var::from_tensor(&filled(&[5, 2, 3], 2, DType::F64)).unwrap();
        let (out, state) = layer.forward(x.as_tensor(), None).unwrap();
        let (out_ng, state_ng) = layer.forward_no_grad(x.as_tensor(), None).unwrap();
        assert!(out.track_op(), "{mode:?}: forward joins the graph");
        assert!(!out_ng.track_op() && !state_ng.h.track_op(), "{mode:?}: forward_no_grad records nothing");
        assert_bitwise(&format!("{mode:?} output"), &out_ng, &out);
        assert_bitwise(&format!("{mode:?} h_n"), &state_ng.h, &state.h);
    }
    let vm = VarMap::new();
    let cell = LstmCell::new(LstmCellConfig::new(3, 4), seeded_var_builder(&vm, 1, DType::F64, &Device::Cpu)).unwrap();
    let x = filled(&[2, 3], 3, DType::F64);
    let (a, b) = (cell.forward(&x, None).unwrap(), cell.forward_no_grad(&x, None).unwrap());
    assert!(a.h.track_op() && !b.h.track_op());
    assert_bitwise("cell h", &b.h, &a.h);
    assert_bitwise("cell c", b.c.as_ref().unwrap(), a.c.as_ref().unwrap());
}

/// The dropout generator's position can be saved and restored: the same masks follow.
#[test]
fn dropout_state_round_trips() {
    let vb = |vm: &VarMap| seeded_var_builder(vm, 1, DType::F64, &Device::Cpu);
    let (vm1, vm2, vm3) = (VarMap::new(), VarMap::new(), VarMap::new());
    let layers: Vec<Box<dyn Recurrent>> = vec![
        Box::new(
            recur::Lstm::new(
                recur::LstmConfig { num_layers: 3, dropout: 0.5, ..recur::LstmConfig::new(3, 4) },
                vb(&vm1),
            )
            .unwrap(),
        ),
        Box::new(
            recur::Gru::new(recur::GruConfig { num_layers: 3, dropout: 0.5, ..recur::GruConfig::new(3, 4) }, vb(&vm2))
                .unwrap(),
        ),
        Box::new(
            recur::Rnn::new(recur::RnnConfig { num_layers: 3, dropout: 0.5, ..recur::RnnConfig::new(3, 4) }, vb(&vm3))
                .unwrap(),
        ),
    ];
    let x = filled(&[5, 2, 3], 4, DType::F64);
    for layer in layers {
        let _ = layer.forward(&x, None).unwrap();
        let position = layer.dropout_state();
        assert!(position > 0, "{layer}: dropout drew numbers");
        let (a, _) = layer.forward(&x, None).unwrap();
        let (b, _) = layer.forward(&x, None).unwrap();
        assert!(values(&a) != values(&b), "{layer}: fresh masks differ");
        layer.set_dropout_state(position);
        let (c, _) = layer.forward(&x, None).unwrap();
        assert_bitwise(&format!("{layer} output after restoring the dropout state"), &c, &a);
    }
}
