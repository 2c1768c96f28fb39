//! With more than one thread, a layer cuts its batch into chunks that run the whole time loop on
//! their own threads (forward and backward) and sums their parameter gradients. This checks that
//! it computes what the single-threaded layer does: outputs, final states and the gradients of
//! the input, the initial state and every parameter, in f64, for every cell, one and two
//! directions, full batches (time-major and `batch_first`, whose last layer writes its rows
//! batch-major) and packed batches.
//!
//! One test function: the thread count is process-wide, and this file is its own process.

mod common;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use common::{assert_close, filled, filled_var, named_gradients, weighted_loss, Mode, Spec};
use recur::{seeded_var_builder, Padding, State};

const I: usize = 5;
/// Big enough that every cell's layer is worth splitting (rows · G · H ≥ 2^14 even when packed).
const H: usize = 64;
/// 20 rows: two chunks of at least 8 (three would need 24).
const B: usize = 20;
const T: usize = 30;

/// Outputs, final state and every gradient of one run, in a fixed order.
fn run(mode: Mode, bidirectional: bool, batch_first: bool, lengths: Option<&[usize]>) -> Vec<(String, Tensor)> {
    let spec = Spec { num_layers: 2, bidirectional, batch_first, ..Spec::new(mode, I, H) };
    let (a, b) = if batch_first { (B, T) } else { (T, B) };
    let varmap = VarMap::new();
    let layer = spec.build(seeded_var_builder(&varmap, 7, DType::F64, &Device::Cpu).pp("rnn")).unwrap();
    let lead = spec.num_layers * spec.dirs();
    let x = filled_var(&[a, b, I], 1, DType::F64);
    let h0 = filled_var(&[lead, B, spec.h_out()], 2, DType::F64);
    let c0: Option<Var> = mode.is_lstm().then(|| filled_var(&[lead, B, H], 3, DType::F64));
    let state = State { h: h0.as_tensor().clone(), c: c0.as_ref().map(|c| c.as_tensor().clone()) };
    let (out, state) = match lengths {
        None => layer.forward(x.as_tensor(), Some(&state)).unwrap(),
        Some(lengths) => layer.forward_padded(x.as_tensor(), &Padding::right(lengths), Some(&state)).unwrap(),
    };
    let g_out = filled(&[a, b, spec.dirs() * spec.h_out()], 4, DType::F64);
    let g_h = filled(&[lead, B, spec.h_out()], 5, DType::F64);
    let g_c = mode.is_lstm().then(|| filled(&[lead, B, H], 6, DType::F64));
    let grads = weighted_loss(&out, &state, &g_out, &g_h, g_c.as_ref()).backward().unwrap();
    let mut result = vec![("output".to_string(), out), ("h_n".to_string(), state.h)];
    if let Some(c) = state.c {
        result.push(("c_n".into(), c));
    }
    let mut vars = vec![("input".to_string(), x), ("h0".to_string(), h0)];
    vars.extend(c0.map(|c| ("c0".to_string(), c)));
    result.extend(named_gradients(&grads, vars, &varmap));
    result
}

#[test]
fn split_batches_compute_what_one_thread_does() {
    // Lengths 30 down to 1 in a shuffled order: the chunks of a packed batch differ in length.
    let lengths: Vec<usize> = (0..B).map(|i| T - (i * 7) % T).collect();
    assert_eq!(*lengths.iter().max().unwrap(), T);
    for mode in [Mode::RnnTanh, Mode::RnnRelu, Mode::Lstm, Mode::LstmProj, Mode::Gru] {
        for bidirectional in [false, true] {
            for (packed, batch_first) in [(None, false), (None, true), (Some(lengths.as_slice()), false)] {
                recur::set_num_threads(1);
                let alone = run(mode, bidirectional, batch_first, packed);
                // 4 threads: two chunks per direction even when bidirectional.
                recur::set_num_threads(4);
                let split = run(mode, bidirectional, batch_first, packed);
                recur::set_num_threads(0);
                let what = format!(
                    "{mode:?} bidirectional={bidirectional} batch_first={batch_first} packed={}",
                    packed.is_some()
                );
                for ((name, a), (_, b)) in split.iter().zip(&alone) {
                    // Sums over the batch (parameter gradients) are added in another order.
                    assert_close(&format!("{what}: {name}"), a, b, 1e-12, 1e-12);
                }
            }
        }
    }
}
