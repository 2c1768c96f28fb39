//! `forward_embedded`: an embedding lookup and the recurrent stack in one, the first layer
//! projecting the embedding table once instead of every token's row.
//!
//! Held to `forward` over the looked-up rows (itself held to PyTorch by the fixture tests): the
//! output, the final state and the gradients of the table, the initial state and every parameter,
//! in f64, for every cell × bias × one or two directions × one or two layers × `batch_first`,
//! with one thread and with the batch split between threads; to central differences for the
//! gradients the lookup derives itself (table, `weight_ih_l0`, `bias_ih_l0`); bitwise to `forward`
//! where the table is too large for the lookup to pay; and the bad inputs it refuses.
//!
//! One file, its own process: the split cases set the process-wide thread count.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use common::{assert_bitwise, assert_close, filled, filled_var, named_gradients, values, weighted_loss, Mode, Spec};
use recur::{seeded_var_builder, Recurrent, State};

/// Token ids `dims` below `vocab`, each id appearing several times (a deterministic scramble).
fn tokens(dims: &[usize], vocab: usize, seed: u64) -> Tensor {
    let n: usize = dims.iter().product();
    let ids: Vec<u32> =
        (0..n).map(|k| ((k as u64 * 7 + seed * 13 + (k as u64 * k as u64) % 5) % vocab as u64) as u32).collect();
    Tensor::from_vec(ids, dims, &Device::Cpu).expect("tokens")
}

/// A problem: the layer, its variables, a table, ids and the upstream weights of the loss.
struct Problem {
    spec: Spec,
    varmap: VarMap,
    layer: Box<dyn Recurrent>,
    table: Var,
    tokens: Tensor,
    h0: Var,
    c0: Option<Var>,
    g_out: Tensor,
    g_h: Tensor,
    g_c: Option<Tensor>,
}

impl Problem {
    /// `tokens (T, B)`, or `(B, T)` with `batch_first`.
    fn new(spec: Spec, steps: usize, batch: usize, vocab: usize, seed: u64) -> Self {
        let varmap = VarMap::new();
        let layer = spec.build(seeded_var_builder(&varmap, seed, DType::F64, &Device::Cpu).pp("rnn")).expect("build");
        let lead = spec.num_layers * spec.dirs();
        let token_dims = if spec.batch_first { [batch, steps] } else { [steps, batch] };
        let out_dims = [token_dims[0], token_dims[1], spec.dirs() * spec.h_out()];
        let is_lstm = spec.mode.is_lstm();
        Self {
            table: filled_var(&[vocab, spec.input_size], seed + 1, DType::F64),
            tokens: tokens(&token_dims, vocab, seed),
            h0: filled_var(&[lead, batch, spec.h_out()], seed + 2, DType::F64),
            c0: is_lstm.then(|| filled_var(&[lead, batch, spec.hidden_size], seed + 3, DType::F64)),
            g_out: filled(&out_dims, seed + 4, DType::F64),
            g_h: filled(&[lead, batch, spec.h_out()], seed + 5, DType::F64),
            g_c: is_lstm.then(|| filled(&[lead, batch, spec.hidden_size], seed + 6, DType::F64)),
            spec,
            varmap,
            layer,
        }
    }

    fn state(&self) -> State {
        State { h: self.h0.as_tensor().clone(), c: self.c0.as_ref().map(|c| c.as_tensor().clone()) }
    }

    /// The table's rows the ids pick, shaped `tokens.dims() + (I,)`.
    fn looked_up(&self) -> Tensor {
        let flat = self.tokens.flatten_all().expect("flat");
        let rows = self.table.as_tensor().index_select(&flat, 0).expect("index_select");
        let mut dims = self.tokens.dims().to_vec();
        dims.push(self.spec.input_size);
        rows.reshape(dims).expect("reshape")
    }

    /// Outputs, final state and every gradient, in a fixed order: through `forward_embedded`, or
    /// through `forward` over the looked-up rows.
    fn run(&self, embedded: bool) -> Vec<(String, Tensor)> {
        let state = self.state();
        let (out, state_n) = if embedded {
            self.layer.forward_embedded(self.table.as_tensor(), &self.tokens, Some(&state)).expect("forward_embedded")
        } else {
            self.layer.forward(&self.looked_up(), Some(&state)).expect("forward")
        };
        let grads = weighted_loss(&out, &state_n, &self.g_out, &self.g_h, self.g_c.as_ref()).backward().expect("bwd");
        let mut result = vec![("output".to_string(), out), ("h_n".to_string(), state_n.h)];
        result.extend(state_n.c.map(|c| ("c_n".to_string(), c)));
        let mut vars = vec![("table".to_string(), self.table.clone()), ("h0".to_string(), self.h0.clone())];
        vars.extend(self.c0.clone().map(|c| ("c0".to_string(), c)));
        result.extend(named_gradients(&grads, vars, &self.varmap));
        result
    }

    fn loss(&self) -> f64 {
        let state = self.state();
        let (out, state_n) =
            self.layer.forward_embedded(self.table.as_tensor(), &self.tokens, Some(&state)).expect("forward_embedded");
        weighted_loss(&out, &state_n, &self.g_out, &self.g_h, self.g_c.as_ref()).to_scalar::<f64>().expect("scalar")
    }
}

fn compare(what: &str, embedded: &[(String, Tensor)], rows: &[(String, Tensor)]) {
    assert_eq!(embedded.len(), rows.len(), "{what}: result count");
    for ((name, a), (_, b)) in embedded.iter().zip(rows) {
        // The same sums in another order (the table's projection, the per-token gradients added
        // into table rows): agreement to rounding.
        assert_close(&format!("{what}: {name}"), a, b, 1e-11, 1e-11);
    }
}

#[test]
fn matches_forward_over_the_looked_up_rows() {
    let mut seed = 0;
    for mode in Mode::ALL {
        for bias in [true, false] {
            for bidirectional in [false, true] {
                for num_layers in [1, 2] {
                    for batch_first in [false, true] {
                        seed += 10;
                        let spec = Spec { num_layers, bias, bidirectional, batch_first, ..Spec::new(mode, 4, 5) };
                        // 6 rows in the table, 21 tokens: the lookup path.
                        let p = Problem::new(spec, 7, 3, 6, seed);
                        compare(&format!("{spec:?}"), &p.run(true), &p.run(false));
                    }
                }
            }
        }
    }
    // With the batch split between threads (each chunk its own ids, table gradients summed):
    // sizes that make every cell's layer worth splitting into two chunks per direction.
    for mode in Mode::ALL {
        for (bidirectional, batch_first) in [(false, false), (true, false), (false, true), (true, true)] {
            let spec = Spec { num_layers: 2, bidirectional, batch_first, ..Spec::new(mode, 6, 48) };
            let p = Problem::new(spec, 24, 16, 11, 99);
            recur::set_num_threads(4);
            let split = p.run(true);
            recur::set_num_threads(1);
            let alone = p.run(true);
            let rows = p.run(false);
            recur::set_num_threads(0);
            compare(&format!("split {spec:?}"), &split, &rows);
            compare(&format!("one thread {spec:?}"), &alone, &rows);
        }
    }
}

/// Central differences (eps 1e-6) of the loss w.r.t. the values of `var`, against `analytic`.
fn finite_differences(what: &str, var: &Var, analytic: &Tensor, loss: impl Fn() -> f64) {
    const EPS: f64 = 1e-6;
    let base = values(var.as_tensor());
    let dims = var.as_tensor().dims().to_vec();
    let set =
        |v: &[f64]| var.set(&Tensor::from_vec(v.to_vec(), dims.as_slice(), &Device::Cpu).expect("t")).expect("set");
    let analytic = values(analytic);
    let mut v = base.clone();
    for k in 0..base.len() {
        v[k] = base[k] + EPS;
        set(&v);
        let plus = loss();
        v[k] = base[k] - EPS;
        set(&v);
        let minus = loss();
        v[k] = base[k];
        let numeric = (plus - minus) / (2.0 * EPS);
        assert!(
            (analytic[k] - numeric).abs() <= 1e-6 + 1e-4 * numeric.abs(),
            "{what} [{k}]: analytic {:e}, numeric {numeric:e}",
            analytic[k]
        );
    }
    set(&base);
}

#[test]
fn gradients_the_lookup_derives_match_finite_differences() {
    for (k, mode) in Mode::ALL.into_iter().enumerate() {
        let spec = Spec { num_layers: 2, bidirectional: true, ..Spec::new(mode, 3, 4) };
        let p = Problem::new(spec, 5, 2, 4, 300 + k as u64);
        let results = p.run(true);
        let grad =
            |name: &str| results.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1.clone();
        finite_differences(&format!("{spec:?} table"), &p.table, &grad("gradient of table"), || p.loss());
        for name in ["weight_ih_l0", "bias_ih_l0", "weight_ih_l0_reverse", "bias_ih_l0_reverse"] {
            let var = p.varmap.data().lock().expect("varmap").get(&format!("rnn.{name}")).expect("var").clone();
            let analytic = grad(&format!("gradient of rnn.{name}"));
            finite_differences(&format!("{spec:?} {name}"), &var, &analytic, || p.loss());
        }
    }
}

#[test]
fn a_table_larger_than_the_tokens_runs_forward_on_the_rows() {
    for mode in Mode::ALL {
        let spec = Spec { batch_first: true, ..Spec::new(mode, 4, 5) };
        // 40 rows for 6 tokens: projecting the table would cost more than the tokens' rows.
        let p = Problem::new(spec, 3, 2, 40, 7);
        for ((name, a), (_, b)) in p.run(true).iter().zip(&p.run(false)) {
            assert_bitwise(&format!("{spec:?}: {name}"), a, b);
        }
    }
}

/// A one-layer f64 layer of `mode` with input 4 and hidden size 5.
fn f64_layer(mode: Mode) -> Box<dyn Recurrent> {
    let varmap = VarMap::new();
    Spec::new(mode, 4, 5).build(seeded_var_builder(&varmap, 1, DType::F64, &Device::Cpu).pp("rnn")).expect("build")
}

#[test]
fn unbatched_and_no_grad_agree_with_forward() {
    let layer = f64_layer(Mode::Lstm);
    let table = filled(&[3, 4], 2, DType::F64);
    let ids = tokens(&[9], 3, 1);
    let rows = table.index_select(&ids, 0).expect("rows");
    let (out, state) = layer.forward_embedded(&table, &ids, None).expect("unbatched");
    let (want, want_state) = layer.forward(&rows, None).expect("forward");
    assert_eq!(out.dims(), &[9, 5]);
    assert_close("unbatched output", &out, &want, 1e-12, 1e-12);
    assert_close("unbatched h_n", &state.h, &want_state.h, 1e-12, 1e-12);
    let ids = tokens(&[9, 2], 3, 2);
    let rows =
        table.index_select(&ids.flatten_all().expect("flat"), 0).and_then(|r| r.reshape((9, 2, 4))).expect("rows");
    let (out, _) = layer.forward_embedded_no_grad(&table, &ids, None).expect("no grad");
    let (want, _) = layer.forward_no_grad(&rows, None).expect("forward_no_grad");
    assert_close("no-grad output", &out, &want, 1e-12, 1e-12);
    assert!(!out.track_op(), "the no-grad output joins no graph");
}

#[test]
fn bad_tables_and_ids_are_refused() {
    let layer = f64_layer(Mode::Gru);
    let table = filled(&[6, 4], 2, DType::F64);
    let ids = tokens(&[5, 2], 6, 3);
    let err = |table: &Tensor, ids: &Tensor| {
        layer.forward_embedded(table, ids, None).err().map(|e| e.to_string()).unwrap_or_default()
    };
    let bad_id = Tensor::new(&[[0u32, 1], [6, 2]], &Device::Cpu).expect("ids");
    assert!(
        err(&table, &bad_id).contains("token id 6 is outside the embedding table of 6 rows"),
        "{}",
        err(&table, &bad_id)
    );
    let float_ids = ids.to_dtype(DType::F32).expect("f32");
    assert!(err(&table, &float_ids).contains("U32"), "{}", err(&table, &float_ids));
    let rank3 = ids.unsqueeze(0).expect("rank 3");
    assert!(err(&table, &rank3).contains("1 or 2 dimensions"), "{}", err(&table, &rank3));
    let narrow = filled(&[6, 3], 2, DType::F64);
    assert!(err(&narrow, &ids).contains("Expected 4, got 3"), "{}", err(&narrow, &ids));
    let flat = filled(&[24], 2, DType::F64);
    assert!(err(&flat, &ids).contains("must be 2-D"), "{}", err(&flat, &ids));
    let empty = Tensor::zeros((0, 2), DType::U32, &Device::Cpu).expect("empty");
    assert!(err(&table, &empty).contains("sequence length"), "{}", err(&table, &empty));
    let state = State { h: filled(&[1, 3, 5], 4, DType::F64), c: None };
    let wrong_batch =
        layer.forward_embedded(&table, &ids, Some(&state)).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(wrong_batch.contains("h0"), "a state of the wrong batch is refused: {wrong_batch}");
    let single = table.to_dtype(DType::F32).expect("f32");
    assert!(!err(&single, &ids).is_empty(), "an f32 table on an f64 layer is refused");
}
