//! Variable-length sequences (test bar R17–R28): the packed layout and its utilities, their
//! errors, and packed / length-aware layers against running every sequence alone.

mod common;

use std::collections::HashMap;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{assert_bitwise, assert_close, filled, filled_var, values, weighted_loss, Mode, Spec};
use recur::{
    lengths_from_mask, pack_padded_sequence, pack_sequence, pad_packed_sequence, pad_sequence, seeded_var_builder,
    unpack_sequence, unpad_sequence, Error, PackedSequence, Padding, PaddingSide, Recurrent, State,
};

const I: usize = 3;
const H: usize = 4;

fn cpu() -> Device {
    Device::Cpu
}

fn t1(v: &[f32]) -> Tensor {
    Tensor::new(v, &cpu()).unwrap()
}

/// The three sequences `a = [1, 2, 3]`, `b = [4, 5]`, `c = [6]` as `(L, 1)` tensors.
fn abc() -> (Tensor, Tensor, Tensor) {
    let col = |v: &[f32]| t1(v).unsqueeze(1).unwrap();
    (col(&[1., 2., 3.]), col(&[4., 5.]), col(&[6.]))
}

fn flat(t: &Tensor) -> Vec<f64> {
    values(t)
}

fn shape_message(r: recur::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(e @ Error::Shape { .. }) => e.to_string(),
        other => panic!("expected a shape error, got {other:?}"),
    }
}

// ---------------------------------------------------------------- layout and utilities (R23)

#[test]
fn packed_layout_of_sorted_sequences_is_pytorchs() {
    let (a, b, c) = abc();
    let packed = pack_sequence(&[a.clone(), b.clone(), c.clone()], true).unwrap();
    assert_eq!(flat(packed.data()), [1., 4., 6., 2., 5., 3.]);
    assert_eq!(packed.data().dims(), [6, 1]);
    assert_eq!(packed.batch_sizes(), [3, 2, 1]);
    assert_eq!(packed.sorted_indices(), None);
    assert_eq!(packed.unsorted_indices(), None);
    assert_eq!(packed.lengths(), [3, 2, 1]);
    let back = unpack_sequence(&packed).unwrap();
    for (got, want) in back.iter().zip([&a, &b, &c]) {
        assert_bitwise("unpacked", got, want);
    }
}

#[test]
fn packed_layout_of_unsorted_sequences_keeps_the_index_maps() {
    let (a, b, c) = abc();
    // [b, c, a]: sorted order is a (2), b (0), c (1).
    let packed = pack_sequence(&[b.clone(), c.clone(), a.clone()], false).unwrap();
    assert_eq!(flat(packed.data()), [1., 4., 6., 2., 5., 3.]);
    assert_eq!(packed.batch_sizes(), [3, 2, 1]);
    assert_eq!(packed.sorted_indices(), Some(&[2, 0, 1][..]));
    assert_eq!(packed.unsorted_indices(), Some(&[1, 2, 0][..]));
    assert_eq!(packed.lengths(), [2, 1, 3]);
    let back = unpack_sequence(&packed).unwrap();
    for (got, want) in back.iter().zip([&b, &c, &a]) {
        assert_bitwise("unpacked, caller's order", got, want);
    }
    // pad → pack → pad round trip, both layouts.
    for batch_first in [false, true] {
        let padded = pad_sequence(&[b.clone(), c.clone(), a.clone()], batch_first, 0.0, PaddingSide::Right).unwrap();
        let (again, lengths) = pad_packed_sequence(&packed, batch_first, 0.0, None).unwrap();
        assert_bitwise("pad_packed_sequence", &again, &padded);
        assert_eq!(lengths, [2, 1, 3]);
        let repacked = pack_padded_sequence(&padded, &lengths, batch_first, false).unwrap();
        assert_bitwise("repacked", repacked.data(), packed.data());
        let unpadded = unpad_sequence(&padded, &lengths, batch_first).unwrap();
        for (got, want) in unpadded.iter().zip([&b, &c, &a]) {
            assert_bitwise("unpad_sequence", got, want);
        }
    }
}

#[test]
fn padding_values_sides_and_total_length() {
    let (a, b, c) = abc();
    let seqs = [a, b, c];
    let right = pad_sequence(&seqs, true, -1.0, PaddingSide::Right).unwrap();
    assert_eq!(right.dims(), [3, 3, 1]);
    assert_eq!(flat(&right), [1., 2., 3., 4., 5., -1., 6., -1., -1.]);
    let left = pad_sequence(&seqs, true, 9.0, PaddingSide::Left).unwrap();
    assert_eq!(flat(&left), [1., 2., 3., 9., 4., 5., 9., 9., 6.]);
    let packed = pack_sequence(&seqs, true).unwrap();
    let (long, lengths) = pad_packed_sequence(&packed, false, f64::NAN, Some(5)).unwrap();
    assert_eq!(long.dims(), [5, 3, 1]);
    assert_eq!(lengths, [3, 2, 1]);
    let v = flat(&long);
    assert_eq!([v[0], v[1], v[2], v[3], v[4], v[6]], [1., 4., 6., 2., 5., 3.]);
    assert!(v[5].is_nan() && v[7..].iter().all(|x| x.is_nan()), "padding is the padding value: {v:?}");
    let msg = shape_message(pad_packed_sequence(&packed, false, 0.0, Some(2)));
    assert!(msg.contains("total_length=2") && msg.contains("max sequence length being 3"), "{msg}");
}

#[test]
fn masks_give_lengths_and_side() {
    let mask = Tensor::new(&[[1u8, 1, 1], [1, 1, 0], [1, 0, 0]], &cpu()).unwrap();
    assert_eq!(lengths_from_mask(&mask, true).unwrap(), (vec![3, 2, 1], PaddingSide::Right));
    let left = Tensor::new(&[[1u8, 1, 1], [0, 1, 1], [0, 0, 1]], &cpu()).unwrap();
    assert_eq!(lengths_from_mask(&left, true).unwrap(), (vec![3, 2, 1], PaddingSide::Left));
    assert_eq!(lengths_from_mask(&left.t().unwrap(), false).unwrap(), (vec![3, 2, 1], PaddingSide::Left));
    let holes = Tensor::new(&[[1u8, 0, 1], [1, 1, 0]], &cpu()).unwrap();
    assert!(shape_message(lengths_from_mask(&holes, true)).contains("neither"));
}

#[test]
fn gradients_flow_through_pack_and_pad() {
    let x = filled_var(&[4, 3, 2], 1, DType::F64);
    let lengths = [2, 4, 1];
    let packed = pack_padded_sequence(x.as_tensor(), &lengths, false, false).unwrap();
    let w = filled(&[packed.data().dim(0).unwrap(), 2], 2, DType::F64);
    let (padded, _) =
        pad_packed_sequence(&packed.with_data((packed.data() * &w).unwrap()).unwrap(), false, 0.0, None).unwrap();
    let grads = padded.sum_all().unwrap().backward().unwrap();
    let g = values(grads.get(x.as_tensor()).unwrap());
    // d/dx is w at each real position, 0 at padding.
    let index = packed.data().dim(0).unwrap();
    assert_eq!(index, 7);
    let wv = values(&w);
    let mut row = 0;
    let mut want = vec![0.0; 4 * 3 * 2];
    for (t, size) in packed.batch_sizes().iter().enumerate() {
        for &b in &packed.sorted_indices().unwrap()[..*size] {
            want[(t * 3 + b) * 2..(t * 3 + b + 1) * 2].copy_from_slice(&wv[row * 2..row * 2 + 2]);
            row += 1;
        }
    }
    assert_eq!(g, want);
}

// ---------------------------------------------------------------- errors (R17–R22)

#[test]
fn zero_lengths_are_refused() {
    let x = Tensor::zeros((3, 2, 1), DType::F32, &cpu()).unwrap();
    let msg = shape_message(pack_padded_sequence(&x, &[3, 0], false, true));
    assert!(msg.contains("greater than 0") && msg.contains("lengths[1]"), "{msg}");
}

#[test]
fn lengths_must_match_the_batch() {
    let x = Tensor::zeros((3, 2, 1), DType::F32, &cpu()).unwrap();
    let msg = shape_message(pack_padded_sequence(&x, &[3, 2, 1], false, true));
    assert!(msg.contains("Expected `len(lengths)` to be equal to batch_size, but got 3 (batch_size=2)"), "{msg}");
}

#[test]
fn lengths_longer_than_the_input_are_refused_not_truncated() {
    let x = Tensor::zeros((3, 2, 1), DType::F32, &cpu()).unwrap();
    let msg = shape_message(pack_padded_sequence(&x, &[4, 2], false, true));
    assert!(msg.contains("lengths[0] = 4") && msg.contains("3 steps"), "{msg}");
    assert!(msg.contains("to fix:"), "{msg}");
}

#[test]
fn enforce_sorted_refuses_unsorted_lengths_with_a_hint() {
    let x = Tensor::zeros((3, 2, 1), DType::F32, &cpu()).unwrap();
    let msg = shape_message(pack_padded_sequence(&x, &[2, 3], false, true));
    assert!(msg.contains("must be sorted in decreasing order") && msg.contains("enforce_sorted = false"), "{msg}");
    assert!(pack_padded_sequence(&x, &[2, 3], false, false).is_ok());
}

#[test]
fn empty_inputs_are_refused() {
    let x = Tensor::zeros((0, 2, 1), DType::F32, &cpu()).unwrap();
    assert!(shape_message(pack_padded_sequence(&x, &[1, 1], false, true)).contains("Cannot pack empty tensors"));
    let x = Tensor::zeros((3, 0, 1), DType::F32, &cpu()).unwrap();
    assert!(shape_message(pack_padded_sequence(&x, &[], false, true)).contains("Cannot pack empty tensors"));
    assert!(shape_message(pad_sequence(&[], false, 0.0, PaddingSide::Right)).contains("empty list"));
    assert!(shape_message(pack_sequence(&[], false)).contains("empty list"));
    let scalar = Tensor::new(1f32, &cpu()).unwrap();
    assert!(shape_message(pack_padded_sequence(&scalar, &[1], false, true)).contains("padded batch"));
}

#[test]
fn hand_built_packed_sequences_are_validated() {
    let data = |n: usize| Tensor::zeros((n, 2), DType::F32, &cpu()).unwrap();
    type Parts = (Vec<usize>, usize, Option<Vec<usize>>, &'static str);
    let cases: [Parts; 6] = [
        (vec![], 0, None, "empty"),
        (vec![2, 3], 5, None, "must not increase"),
        (vec![2, 0], 2, None, "batch_sizes[1] is 0"),
        (vec![2, 1], 4, None, "N = sum(batch_sizes) = 3"),
        (vec![2, 1], 3, Some(vec![0]), "2 entries"),
        (vec![2, 1], 3, Some(vec![1, 1]), "permutation"),
    ];
    for (sizes, rows, sorted, want) in cases {
        let msg = shape_message(PackedSequence::new(data(rows), sizes.clone(), sorted));
        assert!(msg.contains(want), "{sizes:?}: {msg}");
    }
    let ok = PackedSequence::new(data(3), vec![2, 1], Some(vec![1, 0])).unwrap();
    assert_eq!(ok.unsorted_indices(), Some(&[1, 0][..]));
    assert_eq!(ok.lengths(), [1, 2]);
    assert!(shape_message(ok.with_data(data(4))).contains("3 rows"));
}

#[test]
fn layers_refuse_bad_packed_and_padded_input() {
    let varmap = VarMap::new();
    let layer = Spec::new(Mode::Lstm, I, H).build(seeded_var_builder(&varmap, 1, DType::F32, &cpu())).unwrap();
    let x = Tensor::zeros((4, 2, I), DType::F32, &cpu()).unwrap();
    assert!(shape_message(layer.forward_padded(&x, &Padding::right(&[5, 1]), None)).contains("lengths[0] = 5"));
    assert!(shape_message(layer.forward_padded(&x, &Padding::right(&[0, 1]), None)).contains("greater than 0"));
    assert!(shape_message(layer.forward_padded(&x, &Padding::right(&[1]), None)).contains("batch_size=2"));
    let two_d = Tensor::zeros((4, I), DType::F32, &cpu()).unwrap();
    assert!(shape_message(layer.forward_padded(&two_d, &Padding::right(&[4]), None)).contains("3-D"));
    let wide = Tensor::zeros((4, 2, I + 1), DType::F32, &cpu()).unwrap();
    assert!(shape_message(layer.forward_padded(&wide, &Padding::right(&[4, 1]), None)).contains("input_size"));
    let packed = pack_padded_sequence(&wide, &[4, 1], false, true).unwrap();
    assert!(shape_message(layer.forward_packed(&packed, None)).contains("input_size"));
    let h_wrong = State::lstm(
        Tensor::zeros((1, 3, H), DType::F32, &cpu()).unwrap(),
        Tensor::zeros((1, 3, H), DType::F32, &cpu()).unwrap(),
    );
    let packed = pack_padded_sequence(&x, &[4, 1], false, true).unwrap();
    assert!(shape_message(layer.forward_packed(&packed, Some(&h_wrong))).contains("Expected hidden[0] size (1, 2, 4)"));
    let f64_x = x.to_dtype(DType::F64).unwrap();
    assert!(matches!(layer.forward_with_lengths(&f64_x, &[4, 1], None), Err(Error::DType { .. })));
}

// ---------------------------------------------------------------- layers vs each sequence alone (R24–R26)

/// A layer with its variables, plus a problem over a padded batch.
struct Case {
    varmap: VarMap,
    layer: Box<dyn Recurrent>,
    lengths: Vec<usize>,
    x: Var,
    h0: Var,
    c0: Option<Var>,
    g_out: Tensor,
    g_h: Tensor,
    g_c: Option<Tensor>,
}

impl Case {
    fn new(mode: Mode, dtype: DType, lengths: &[usize], seed: u64) -> Self {
        let spec = Spec { num_layers: 2, bidirectional: true, ..Spec::new(mode, I, H) };
        let varmap = VarMap::new();
        let layer = spec.build(seeded_var_builder(&varmap, seed, dtype, &cpu()).pp("rnn")).unwrap();
        let (t, b) = (*lengths.iter().max().unwrap(), lengths.len());
        let lead = spec.num_layers * spec.dirs();
        let lstm = mode.is_lstm();
        Case {
            layer,
            lengths: lengths.to_vec(),
            x: filled_var(&[t, b, I], seed + 1, dtype),
            h0: filled_var(&[lead, b, spec.h_out()], seed + 2, dtype),
            c0: lstm.then(|| filled_var(&[lead, b, H], seed + 3, dtype)),
            g_out: filled(&[t, b, spec.dirs() * spec.h_out()], seed + 4, dtype),
            g_h: filled(&[lead, b, spec.h_out()], seed + 5, dtype),
            g_c: lstm.then(|| filled(&[lead, b, H], seed + 6, dtype)),
            varmap,
        }
    }

    fn state(&self) -> State {
        State { h: self.h0.as_tensor().clone(), c: self.c0.as_ref().map(|c| c.as_tensor().clone()) }
    }

    /// Every variable whose gradient the tests compare: input, initial state, parameters.
    fn vars(&self) -> Vec<(String, Var)> {
        let mut out = vec![("input".to_string(), self.x.clone()), ("h0".to_string(), self.h0.clone())];
        if let Some(c0) = &self.c0 {
            out.push(("c0".into(), c0.clone()));
        }
        let data = self.varmap.data().lock().unwrap();
        let mut params: Vec<(String, Var)> = data.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        out.extend(params);
        out
    }

    /// The padded output, final state and gradients of the packed path.
    fn packed_run(&self, x: &Tensor) -> (Tensor, State, candle_core::backprop::GradStore) {
        let packed = pack_padded_sequence(x, &self.lengths, false, false).unwrap();
        let (out, state) = self.layer.forward_packed(&packed, Some(&self.state())).unwrap();
        let (out, lengths) = pad_packed_sequence(&out, false, 0.0, None).unwrap();
        assert_eq!(lengths, self.lengths);
        let loss = weighted_loss(&out, &state, &self.g_out, &self.g_h, self.g_c.as_ref());
        (out, state, loss.backward().unwrap())
    }

    /// The same from `forward_with_lengths` (no packing by the caller).
    fn lengths_run(&self, x: &Tensor, padding: &Padding<'_>) -> (Tensor, State, candle_core::backprop::GradStore) {
        let (out, state) = self.layer.forward_padded(x, padding, Some(&self.state())).unwrap();
        let loss = weighted_loss(&out, &state, &self.g_out, &self.g_h, self.g_c.as_ref());
        (out, state, loss.backward().unwrap())
    }

    /// Every sequence run alone: its outputs and final states, and the gradients of the summed loss.
    fn alone_run(&self) -> (Vec<Tensor>, Vec<State>, candle_core::backprop::GradStore) {
        let (mut outs, mut states) = (Vec::new(), Vec::new());
        let mut total: Option<Tensor> = None;
        for (i, &len) in self.lengths.iter().enumerate() {
            let x = self.x.as_tensor().narrow(1, i, 1).unwrap().narrow(0, 0, len).unwrap();
            let state = State {
                h: self.h0.as_tensor().narrow(1, i, 1).unwrap(),
                c: self.c0.as_ref().map(|c| c.as_tensor().narrow(1, i, 1).unwrap()),
            };
            let (out, st) = self.layer.forward(&x, Some(&state)).unwrap();
            let g_out = self.g_out.narrow(1, i, 1).unwrap().narrow(0, 0, len).unwrap();
            let g_h = self.g_h.narrow(1, i, 1).unwrap();
            let g_c = self.g_c.as_ref().map(|g| g.narrow(1, i, 1).unwrap());
            let loss = weighted_loss(&out, &st, &g_out, &g_h, g_c.as_ref());
            total = Some(match total {
                None => loss,
                Some(t) => (t + loss).unwrap(),
            });
            outs.push(out);
            states.push(st);
        }
        (outs, states, total.unwrap().backward().unwrap())
    }
}

/// R24 + R26: packed (through `forward_packed` and through `forward_with_lengths`) equals running
/// every sequence alone — outputs, final states (in the caller's order, each from its own h0) and
/// the gradients of the input, the initial state and every parameter — within `atol + rtol·|x|`.
fn packed_matches_alone(mode: Mode, dtype: DType, lengths: &[usize], tol: f64) {
    // f32 bias gradients are sums over all rows in another order: allow a few ulps of their size.
    let rtol = if dtype == DType::F32 { 1e-6 } else { 0.0 };
    let case = Case::new(mode, dtype, lengths, 40);
    let what = format!("{mode:?} {dtype:?} {lengths:?}");
    let (out, state, grads) = case.packed_run(case.x.as_tensor());
    let (outs, states, alone_grads) = case.alone_run();
    for (i, &len) in lengths.iter().enumerate() {
        let got = out.narrow(1, i, 1).unwrap();
        assert_close(&format!("{what}: output of sequence {i}"), &got.narrow(0, 0, len).unwrap(), &outs[i], tol, 0.0);
        let padded: Vec<f64> = values(&got).into_iter().skip(len * got.dim(2).unwrap()).collect();
        assert!(padded.iter().all(|&v| v == 0.0), "{what}: padded output of sequence {i} is not zero");
        assert_close(&format!("{what}: h_n of {i}"), &state.h.narrow(1, i, 1).unwrap(), &states[i].h, tol, 0.0);
        if let (Some(c), Some(c_alone)) = (&state.c, &states[i].c) {
            assert_close(&format!("{what}: c_n of {i}"), &c.narrow(1, i, 1).unwrap(), c_alone, tol, 0.0);
        }
    }
    for (name, var) in case.vars() {
        let (g, g_alone) = (grads.get(var.as_tensor()), alone_grads.get(var.as_tensor()));
        let (g, g_alone) = (g.unwrap_or_else(|| panic!("{what}: no gradient for {name}")), g_alone.unwrap());
        assert_close(&format!("{what}: gradient of {name}"), g, g_alone, tol, rtol);
    }
    // forward_with_lengths runs the same kernels on the same rows: bitwise the packed path.
    let (out_l, state_l, grads_l) = case.lengths_run(case.x.as_tensor(), &Padding::right(lengths));
    assert_bitwise(&format!("{what}: forward_with_lengths output"), &out_l, &out);
    assert_bitwise(&format!("{what}: forward_with_lengths h_n"), &state_l.h, &state.h);
    for (name, var) in case.vars() {
        let (a, b) = (grads_l.get(var.as_tensor()).unwrap(), grads.get(var.as_tensor()).unwrap());
        assert_bitwise(&format!("{what}: forward_with_lengths gradient of {name}"), a, b);
    }
}

const SORTED: [usize; 7] = [10, 10, 6, 2, 2, 1, 1];
const SHUFFLED: [usize; 7] = [2, 10, 1, 6, 10, 1, 2];

#[test]
fn packed_lstm_matches_each_sequence_alone() {
    for lengths in [SORTED, SHUFFLED] {
        packed_matches_alone(Mode::Lstm, DType::F64, &lengths, 1e-12);
        packed_matches_alone(Mode::Lstm, DType::F32, &lengths, 1e-6);
        packed_matches_alone(Mode::LstmProj, DType::F64, &lengths, 1e-12);
    }
}

#[test]
fn packed_gru_matches_each_sequence_alone() {
    for lengths in [SORTED, SHUFFLED] {
        packed_matches_alone(Mode::Gru, DType::F64, &lengths, 1e-12);
        packed_matches_alone(Mode::Gru, DType::F32, &lengths, 1e-6);
    }
}

#[test]
fn packed_rnn_matches_each_sequence_alone() {
    for lengths in [SORTED, SHUFFLED] {
        packed_matches_alone(Mode::RnnTanh, DType::F64, &lengths, 1e-12);
        packed_matches_alone(Mode::RnnTanh, DType::F32, &lengths, 1e-6);
        packed_matches_alone(Mode::RnnRelu, DType::F64, &lengths, 1e-12);
    }
}

/// R25: whatever fills the padding (NaN, 1e30) changes nothing at the real positions, bitwise,
/// and the padding gets exactly zero gradient — through both entry points.
#[test]
fn padding_content_changes_nothing_and_gets_zero_gradient() {
    for mode in [Mode::Lstm, Mode::Gru, Mode::RnnTanh] {
        let case = Case::new(mode, DType::F32, &SHUFFLED, 50);
        let x = case.x.as_tensor();
        let (t, b) = (x.dim(0).unwrap(), x.dim(1).unwrap());
        let real: Vec<u8> = (0..t * b).map(|r| u8::from(r / b < SHUFFLED[r % b])).collect();
        let real = Tensor::from_vec(real, (t, b, 1), &cpu()).unwrap().broadcast_as(x.shape()).unwrap();
        let (clean_out, clean_state, clean_grads) = case.packed_run(x);
        for fill in [f32::NAN, 1e30] {
            let junk = Tensor::full(fill, x.shape(), &cpu()).unwrap();
            let dirty = Var::from_tensor(&real.where_cond(x, &junk).unwrap()).unwrap();
            for (entry, (out, state, grads)) in [
                ("forward_packed", case.packed_run(dirty.as_tensor())),
                ("forward_with_lengths", case.lengths_run(dirty.as_tensor(), &Padding::right(&SHUFFLED))),
            ] {
                let what = format!("{mode:?}, padding {fill:e}, {entry}");
                assert_bitwise(&format!("{what}: output"), &out, &clean_out);
                assert_bitwise(&format!("{what}: h_n"), &state.h, &clean_state.h);
                let gx = grads.get(dirty.as_tensor()).unwrap();
                let clean_gx = clean_grads.get(x).unwrap();
                let want = real.where_cond(clean_gx, &clean_gx.zeros_like().unwrap()).unwrap();
                assert_bitwise(&format!("{what}: input gradient (zero at padding)"), gx, &want);
                for (name, var) in case.vars().into_iter().skip(1) {
                    let (a, c) = (grads.get(var.as_tensor()).unwrap(), clean_grads.get(var.as_tensor()).unwrap());
                    assert_bitwise(&format!("{what}: gradient of {name}"), a, c);
                }
            }
        }
    }
}

/// Left padding is right padding shifted: the same per-sequence results, padding in front.
#[test]
fn left_padding_matches_right_padding() {
    let case = Case::new(Mode::Lstm, DType::F64, &SHUFFLED, 60);
    let x = case.x.as_tensor();
    let seqs: Vec<Tensor> = SHUFFLED
        .iter()
        .enumerate()
        .map(|(i, &len)| x.narrow(1, i, 1).unwrap().squeeze(1).unwrap().narrow(0, 0, len).unwrap())
        .collect();
    let left = pad_sequence(&seqs, false, f64::NAN, PaddingSide::Left).unwrap();
    let state = case.state();
    let (out_r, st_r) = case.layer.forward_with_lengths(x, &SHUFFLED, Some(&state)).unwrap();
    let (out_l, st_l) =
        case.layer.forward_padded(&left, &Padding::left(&SHUFFLED).with_value(-7.0), Some(&state)).unwrap();
    assert_bitwise("left-padded h_n", &st_l.h, &st_r.h);
    assert_bitwise("left-padded c_n", st_l.c.as_ref().unwrap(), st_r.c.as_ref().unwrap());
    let t = x.dim(0).unwrap();
    for (i, &len) in SHUFFLED.iter().enumerate() {
        let l = out_l.narrow(1, i, 1).unwrap();
        assert_bitwise(
            "left-padded output",
            &l.narrow(0, t - len, len).unwrap(),
            &out_r.narrow(1, i, 1).unwrap().narrow(0, 0, len).unwrap(),
        );
        let front: Vec<f64> = values(&l).into_iter().take((t - len) * l.dim(2).unwrap()).collect();
        assert!(front.iter().all(|&v| v == -7.0), "padding value");
    }
}

// ---------------------------------------------------------------- bidirectional semantics (R27, R28)

/// A one-layer, one-direction layer of `mode` holding `weights` renamed by `rename`.
fn layer_from(mode: Mode, bidirectional: bool, weights: HashMap<String, Tensor>) -> Box<dyn Recurrent> {
    let spec = Spec { bidirectional, ..Spec::new(mode, I, H) };
    spec.build(VarBuilder::from_tensors(weights, DType::F64, &cpu())).unwrap()
}

/// R27: `h_n[2l]` is the forward direction's output at each sequence's own last step and
/// `h_n[2l + 1]` the reverse direction's output at step 0, for every layer.
#[test]
fn bidirectional_final_states_mean_what_pytorch_says() {
    for mode in [Mode::Lstm, Mode::Gru, Mode::RnnTanh] {
        let case = Case::new(mode, DType::F64, &SHUFFLED, 70);
        let x = case.x.as_tensor();
        let (out, state) = case.layer.forward_with_lengths(x, &SHUFFLED, None).unwrap();
        // Layer 0 alone (same weights) gives layer 0's output.
        let l0: HashMap<String, Tensor> = case.layer.weights().into_iter().filter(|(n, _)| n.contains("_l0")).collect();
        let (out0, state0) = layer_from(mode, true, l0).forward_with_lengths(x, &SHUFFLED, None).unwrap();
        assert_bitwise("layer 0 alone: h_n", &state0.h, &state.h.narrow(0, 0, 2).unwrap());
        for (layer, out_l) in [(0, &out0), (1, &out)] {
            for (i, &len) in SHUFFLED.iter().enumerate() {
                let h_fwd = state.h.get(2 * layer).unwrap().get(i).unwrap();
                let h_rev = state.h.get(2 * layer + 1).unwrap().get(i).unwrap();
                let at = |t: usize| out_l.get(t).unwrap().get(i).unwrap();
                assert_bitwise("forward h_n = output at the last step", &h_fwd, &at(len - 1).narrow(0, 0, H).unwrap());
                assert_bitwise("reverse h_n = output at step 0", &h_rev, &at(0).narrow(0, H, H).unwrap());
            }
        }
    }
}

/// R28: the reverse half of a bidirectional layer's output is a forward layer holding the
/// `_reverse` weights run over each sequence reversed within its own length, reversed back.
#[test]
fn reverse_direction_is_each_sequence_reversed_within_its_length() {
    for mode in [Mode::Lstm, Mode::Gru, Mode::RnnTanh] {
        let spec = Spec { bidirectional: true, ..Spec::new(mode, I, H) };
        let varmap = VarMap::new();
        let bi = spec.build(seeded_var_builder(&varmap, 80, DType::F64, &cpu())).unwrap();
        let reverse: HashMap<String, Tensor> = bi
            .weights()
            .into_iter()
            .filter_map(|(n, t)| n.strip_suffix("_reverse").map(|base| (base.to_string(), t)))
            .collect();
        let fwd = layer_from(mode, false, reverse);
        let x = filled(&[10, 7, I], 81, DType::F64);
        let (out, _) = bi.forward_with_lengths(&x, &SHUFFLED, None).unwrap();
        for (i, &len) in SHUFFLED.iter().enumerate() {
            let seq = x.narrow(1, i, 1).unwrap().narrow(0, 0, len).unwrap().contiguous().unwrap();
            let rev_index = Tensor::new((0..len as u32).rev().collect::<Vec<_>>(), &cpu()).unwrap();
            let (y, _) = fwd.forward(&seq.index_select(&rev_index, 0).unwrap(), None).unwrap();
            let y = y.index_select(&rev_index, 0).unwrap();
            let half = out.narrow(1, i, 1).unwrap().narrow(0, 0, len).unwrap().narrow(2, H, H).unwrap();
            // Not bitwise: the per-step products run on other row counts (another GEMM blocking).
            assert_close(&format!("{mode:?} sequence {i}: reverse half"), &half, &y, 1e-15, 0.0);
        }
    }
}

/// The no-grad entry points give the same values and record nothing.
#[test]
fn packed_and_padded_no_grad_equal_their_tracked_forms() {
    for mode in [Mode::Lstm, Mode::Gru, Mode::RnnTanh] {
        let case = Case::new(mode, DType::F64, &SHUFFLED, 90);
        let x = case.x.as_tensor();
        let state = case.state();
        let (out, st) = case.layer.forward_with_lengths(x, &SHUFFLED, Some(&state)).unwrap();
        let padding = Padding::right(&SHUFFLED);
        let (out_ng, st_ng) = case.layer.forward_padded_no_grad(x, &padding, Some(&state)).unwrap();
        assert!(out.track_op() && !out_ng.track_op() && !st_ng.h.track_op(), "{mode:?}: padded no_grad");
        assert_bitwise("padded no_grad output", &out_ng, &out);
        assert_bitwise("padded no_grad h_n", &st_ng.h, &st.h);
        let packed = pack_padded_sequence(x, &SHUFFLED, false, false).unwrap();
        let (p_out, p_st) = case.layer.forward_packed(&packed, Some(&state)).unwrap();
        let (p_out_ng, p_st_ng) = case.layer.forward_packed_no_grad(&packed, Some(&state)).unwrap();
        assert!(p_out.data().track_op() && !p_out_ng.data().track_op(), "{mode:?}: packed no_grad");
        assert_bitwise("packed no_grad output", p_out_ng.data(), p_out.data());
        assert_bitwise("packed no_grad h_n", &p_st_ng.h, &p_st.h);
    }
}
