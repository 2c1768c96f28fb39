//! Truncated BPTT (test bar R35): the carried state is detached (memory stays flat over 1,000
//! windows), the gradient of window n equals a fresh run from the detached state of window n−1,
//! and a reset mask zeroes exactly the marked rows' state, also in the middle of a window.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use recur::train::{named_vars, zero_rows, Mse, Optimizer, Sgd, SgdConfig, Tbptt};
use recur::{Lstm, LstmConfig, State};

fn lstm(varmap: &VarMap, input: usize, hidden: usize, dtype: DType) -> Lstm {
    let vb = recur::seeded_var_builder(varmap, 17, dtype, &Device::Cpu);
    Lstm::new(LstmConfig { num_layers: 2, ..LstmConfig::new(input, hidden) }, vb.pp("lstm")).expect("lstm")
}

/// The RSS measurement must not see the other tests' allocations: the tests of this file run
/// one at a time.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Resident set size in bytes, from /proc/self/statm (Linux); None elsewhere.
fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[test]
fn memory_stays_flat_over_1000_windows() {
    let _serial = serial();
    let varmap = VarMap::new();
    let model = lstm(&varmap, 8, 32, DType::F32);
    let mut opt =
        Sgd::new(named_vars(&varmap), SgdConfig { lr: 0.01, momentum: 0.9, ..SgdConfig::default() }).expect("sgd");
    let mut tbptt = Tbptt::new(35, false).expect("tbptt");
    let x = Tensor::randn(0f32, 1.0, (35, 4, 8), &Device::Cpu).expect("x");
    let target = Tensor::zeros((35, 4, 32), DType::F32, &Device::Cpu).expect("target");
    let mut rss_at_10 = None;
    for window in 1..=1000 {
        let y = tbptt.forward(&x, None, |x, s| model.forward(x, s)).expect("window");
        let loss = Mse::default().forward(&y, &target, None).expect("loss");
        opt.step(&loss.backward().expect("backward")).expect("step");
        let state = tbptt.state().expect("carried state");
        // Detached: no op links the carried state to the previous windows' graphs.
        assert!(!state.h.track_op() && !state.c.as_ref().is_some_and(|c| c.track_op()), "window {window}");
        if window == 10 {
            rss_at_10 = rss_bytes();
        }
    }
    assert_eq!(tbptt.windows_done(), 1000);
    if let (Some(at_10), Some(at_1000)) = (rss_at_10, rss_bytes()) {
        let grown = at_1000.saturating_sub(at_10);
        eprintln!("RSS after window 10: {at_10} B, after window 1000: {at_1000} B (+{grown} B)");
        assert!(grown <= 1 << 20, "resident memory grew by {grown} bytes between windows 10 and 1000");
    }
}

#[test]
fn window_gradient_equals_a_fresh_run_from_the_detached_state() {
    let _serial = serial();
    let varmap = VarMap::new();
    let model = lstm(&varmap, 3, 5, DType::F64);
    let stream = Tensor::randn(0f64, 1.0, (40, 2, 3), &Device::Cpu).expect("stream");
    let mut tbptt = Tbptt::new(8, false).expect("tbptt");
    assert_eq!(tbptt.windows(40).len(), 5);
    let vars = named_vars(&varmap);
    for (n, window) in tbptt.windows(40).into_iter().enumerate() {
        let x = stream.narrow(0, window.start, window.len()).expect("window");
        let previous: Option<State> = tbptt.state().cloned();
        let y = tbptt.forward(&x, None, |x, s| model.forward(x, s)).expect("forward");
        let grads = y.sqr().and_then(|t| t.sum_all()).and_then(|l| l.backward()).expect("backward");
        let (fresh_y, _) = model.forward(&x, previous.map(|s| s.detach()).as_ref()).expect("fresh");
        let fresh = fresh_y.sqr().and_then(|t| t.sum_all()).and_then(|l| l.backward()).expect("fresh backward");
        common::assert_bitwise(&format!("window {n} output"), &y, &fresh_y);
        for (name, var) in &vars {
            let a = grads.get(var.as_tensor()).expect("grad");
            let b = fresh.get(var.as_tensor()).expect("fresh grad");
            common::assert_bitwise(&format!("window {n} d{name}"), a, b);
        }
    }
}

#[test]
fn a_reset_mask_zeroes_exactly_the_marked_rows() {
    let _serial = serial();
    let varmap = VarMap::new();
    let model = lstm(&varmap, 3, 4, DType::F64);
    let dev = Device::Cpu;
    let (batch, k) = (3, 6);
    let first = Tensor::randn(0f64, 1.0, (k, batch, 3), &dev).expect("x1");
    let second = Tensor::randn(0f64, 1.0, (k, batch, 3), &dev).expect("x2");
    let mut tbptt = Tbptt::new(k, false).expect("tbptt");
    tbptt.forward(&first, None, |x, s| model.forward(x, s)).expect("first window");
    let carried = tbptt.state().cloned().expect("state");

    // Row 1 starts a new stream at step 0, row 2 at step 3; row 0 continues.
    let mut resets = vec![0f64; k * batch];
    resets[1] = 1.0; // (t = 0, b = 1)
    resets[3 * batch + 2] = 1.0; // (t = 3, b = 2)
    let resets = Tensor::from_vec(resets, (k, batch), &dev).expect("resets");
    let y = tbptt.forward(&second, Some(&resets), |x, s| model.forward(x, s)).expect("second window");

    let row = |t: &Tensor, b: usize| t.narrow(1, b, 1).expect("row");
    let state_row = |s: &State, b: usize| State { h: row(&s.h, b), c: s.c.as_ref().map(|c| row(c, b)) };
    // Row 0: as if no reset happened.
    let (y0, _) = model.forward(&row(&second, 0), Some(&state_row(&carried, 0))).expect("row 0");
    common::assert_close("row 0", &row(&y, 0), &y0, 1e-12, 0.0);
    // Row 1: a fresh stream from zeros.
    let (y1, _) = model.forward(&row(&second, 1), None).expect("row 1");
    common::assert_close("row 1", &row(&y, 1), &y1, 1e-12, 0.0);
    // Row 2: carried for steps 0..3, then zeros from step 3.
    let x2 = row(&second, 2);
    let (y2a, _) = model.forward(&x2.narrow(0, 0, 3).expect("a"), Some(&state_row(&carried, 2))).expect("row 2a");
    let (y2b, _) = model.forward(&x2.narrow(0, 3, k - 3).expect("b"), None).expect("row 2b");
    let y2 = Tensor::cat(&[y2a, y2b], 0).expect("cat");
    common::assert_close("row 2", &row(&y, 2), &y2, 1e-12, 0.0);

    // zero_rows: exactly zero in the marked rows (NaN included), bitwise untouched elsewhere.
    let h = carried.h.clone();
    let nan_row = Tensor::full(f64::NAN, (2, 1, 4), &dev).expect("nan");
    let h = Tensor::cat(&[row(&h, 0), nan_row, row(&h, 2)], 1).expect("h with NaN row");
    let state = State { h: h.clone(), c: carried.c.clone() };
    let zeroed = zero_rows(&state, &[false, true, false]).expect("zero rows");
    assert!(common::values(&row(&zeroed.h, 1)).iter().all(|v| v.to_bits() == 0), "h row 1 not +0");
    assert!(common::values(&row(zeroed.c.as_ref().expect("c"), 1)).iter().all(|v| v.to_bits() == 0), "c row 1");
    common::assert_bitwise("h row 0", &row(&zeroed.h, 0), &row(&h, 0));
    common::assert_bitwise("h row 2", &row(&zeroed.h, 2), &row(&h, 2));
    assert!(zero_rows(&state, &[true]).is_err(), "wrong number of rows must be an error");
    // Gradients flow through the rows that were not reset.
    let loss = y.sqr().and_then(|t| t.sum_all()).expect("loss");
    let grads = loss.backward().expect("backward");
    assert!(named_vars(&varmap).iter().all(|(_, v)| grads.get(v.as_tensor()).is_some()));
}

#[test]
fn reset_rows_between_windows_and_shape_errors() {
    let _serial = serial();
    let varmap = VarMap::new();
    let model = lstm(&varmap, 2, 3, DType::F32);
    let mut tbptt = Tbptt::new(4, true).expect("batch-first tbptt");
    assert!(Tbptt::new(0, false).is_err());
    let x = Tensor::ones((2, 4, 2), DType::F32, &Device::Cpu).expect("x"); // (B, T, I)
    let batch_first = |x: &Tensor, s: Option<&State>| -> recur::Result<(Tensor, State)> {
        // The layer is sequence-first: transpose around it.
        let (y, s) = model.forward(&x.transpose(0, 1)?.contiguous()?, s)?;
        Ok((y.transpose(0, 1)?.contiguous()?, s))
    };
    let y = tbptt.forward(&x, None, batch_first).expect("window");
    assert_eq!(y.dims(), &[2, 4, 3]);
    tbptt.reset_rows(&[true, false]).expect("reset");
    let s = tbptt.state().expect("state");
    assert!(common::values(&s.h.narrow(1, 0, 1).expect("row")).iter().all(|v| *v == 0.0));
    assert!(common::values(&s.h.narrow(1, 1, 1).expect("row")).iter().any(|v| *v != 0.0));
    let bad = Tensor::zeros((4, 2), DType::F32, &Device::Cpu).expect("bad mask"); // (T, B), not (B, T)
    let err = tbptt.forward(&x, Some(&bad), batch_first).expect_err("mask shape");
    assert!(err.to_string().contains("reset mask"), "{err}");
    let empty = Tensor::zeros((2, 0, 2), DType::F32, &Device::Cpu).expect("empty window");
    assert!(tbptt.forward(&empty, None, batch_first).is_err());
    tbptt.reset();
    assert!(tbptt.state().is_none());
}
