//! Every configuration and input error of test bar R1–R16: each is an `Err` of the stated variant
//! whose message carries PyTorch's text (`shared/research/reliability.md` §1.1, §1.2) and a fix
//! hint (`…; to fix: …`, the format of every `recur::Error`), never a panic.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use common::{AnyCell, CellMode, Mode, Spec};
use recur::{
    seeded_var_builder, Error, Gru, GruConfig, Lstm, LstmConfig, Nonlinearity, Recurrent, Rnn, RnnConfig, State,
};

fn vb(varmap: &VarMap, dtype: DType) -> candle_nn::VarBuilder<'static> {
    seeded_var_builder(varmap, 0, dtype, &Device::Cpu)
}

fn zeros(dims: &[usize]) -> Tensor {
    Tensor::zeros(dims, DType::F32, &Device::Cpu).expect("zeros")
}

fn expect_err<T>(result: recur::Result<T>, case: &str) -> Error {
    match result {
        Ok(_) => panic!("{case}: expected an error, got Ok"),
        Err(e) => e,
    }
}

/// The message contains every `needle` and a fix hint.
fn assert_message(err: &Error, case: &str, needles: &[&str]) {
    let msg = err.to_string();
    for needle in needles {
        assert!(msg.contains(needle), "{case}: message {msg:?} lacks {needle:?}");
    }
    let hint = msg.split("to fix: ").nth(1).unwrap_or("");
    assert!(hint.trim().len() >= 8, "{case}: message {msg:?} has no fix hint (`; to fix: …`)");
}

fn assert_config_error<T>(result: recur::Result<T>, case: &str, needles: &[&str]) {
    let err = expect_err(result, case);
    assert!(matches!(err, Error::InvalidConfig { .. }), "{case}: expected Error::InvalidConfig, got {err:?}");
    assert_message(&err, case, needles);
}

fn assert_shape_error<T>(result: recur::Result<T>, case: &str, needles: &[&str]) {
    let err = expect_err(result, case);
    assert!(matches!(err, Error::Shape { .. }), "{case}: expected Error::Shape, got {err:?}");
    assert_message(&err, case, needles);
}

/// RNN, LSTM and GRU built with the given sizes (F32).
fn build_each(
    input_size: usize,
    hidden_size: usize,
    num_layers: usize,
) -> Vec<(&'static str, recur::Result<Box<dyn Recurrent>>)> {
    [("RNN", Mode::RnnTanh), ("LSTM", Mode::Lstm), ("GRU", Mode::Gru)]
        .into_iter()
        .map(|(name, mode)| {
            let varmap = VarMap::new();
            let spec = Spec { num_layers, ..Spec::new(mode, input_size, hidden_size) };
            (name, spec.build(vb(&varmap, DType::F32)))
        })
        .collect()
}

fn ok_layer(mode: Mode, input_size: usize, hidden_size: usize, num_layers: usize) -> Box<dyn Recurrent> {
    let varmap = VarMap::new();
    Spec { num_layers, ..Spec::new(mode, input_size, hidden_size) }.build(vb(&varmap, DType::F32)).expect("valid layer")
}

// ---------------------------------------------------------------------------------------------
// R1: zero sizes.
// ---------------------------------------------------------------------------------------------
#[test]
fn r1_hidden_size_zero_is_rejected() {
    for (name, result) in build_each(4, 0, 1) {
        assert_config_error(result, name, &["hidden_size must be greater than zero"]);
    }
}

#[test]
fn r1_num_layers_zero_is_rejected() {
    for (name, result) in build_each(4, 3, 0) {
        assert_config_error(result, name, &["num_layers must be greater than zero"]);
    }
}

#[test]
fn r1_input_size_zero_is_rejected() {
    for (name, result) in build_each(0, 3, 1) {
        assert_config_error(result, name, &["input_size must be greater than zero"]);
    }
}

// ---------------------------------------------------------------------------------------------
// R2: dropout outside [0, 1] or NaN.
// ---------------------------------------------------------------------------------------------
#[test]
fn r2_dropout_outside_unit_interval_is_rejected() {
    for p in [-0.1, 1.5, f64::NAN, f64::INFINITY, -f64::INFINITY] {
        let varmap = VarMap::new();
        let v = vb(&varmap, DType::F32);
        let needle = "dropout should be a number in range [0, 1]";
        let rnn = Rnn::new(RnnConfig { dropout: p, num_layers: 2, ..RnnConfig::new(4, 3) }, v.pp("rnn"));
        assert_config_error(rnn, &format!("RNN dropout={p}"), &[needle]);
        let lstm = Lstm::new(LstmConfig { dropout: p, num_layers: 2, ..LstmConfig::new(4, 3) }, v.pp("lstm"));
        assert_config_error(lstm, &format!("LSTM dropout={p}"), &[needle]);
        let gru = Gru::new(GruConfig { dropout: p, num_layers: 2, ..GruConfig::new(4, 3) }, v.pp("gru"));
        assert_config_error(gru, &format!("GRU dropout={p}"), &[needle]);
    }
}

#[test]
fn r2_dropout_bounds_are_accepted() {
    for p in [0.0, 1.0] {
        let varmap = VarMap::new();
        let lstm =
            Lstm::new(LstmConfig { dropout: p, num_layers: 2, ..LstmConfig::new(4, 3) }, vb(&varmap, DType::F32));
        assert!(lstm.is_ok(), "dropout={p} must be accepted: {:?}", lstm.err());
    }
}

// ---------------------------------------------------------------------------------------------
// R3: dropout with one layer constructs and warns exactly once (the library never prints).
// ---------------------------------------------------------------------------------------------
#[test]
fn r3_dropout_with_one_layer_warns_once() {
    let varmap = VarMap::new();
    let v = vb(&varmap, DType::F32);
    let expected = "non-zero dropout expects num_layers greater than 1, but got dropout=0.5 and num_layers=1";
    let rnn = Rnn::new(RnnConfig { dropout: 0.5, ..RnnConfig::new(4, 3) }, v.pp("rnn")).expect("RNN constructs");
    let lstm = Lstm::new(LstmConfig { dropout: 0.5, ..LstmConfig::new(4, 3) }, v.pp("lstm")).expect("LSTM constructs");
    let gru = Gru::new(GruConfig { dropout: 0.5, ..GruConfig::new(4, 3) }, v.pp("gru")).expect("GRU constructs");
    for (name, warnings) in [("RNN", rnn.warnings()), ("LSTM", lstm.warnings()), ("GRU", gru.warnings())] {
        assert_eq!(warnings.len(), 1, "{name}: {warnings:?}");
        assert!(warnings[0].contains(expected), "{name}: {:?} lacks {expected:?}", warnings[0]);
    }
}

#[test]
fn r3_no_warning_without_the_condition() {
    let varmap = VarMap::new();
    let v = vb(&varmap, DType::F32);
    let two_layers =
        Lstm::new(LstmConfig { dropout: 0.5, num_layers: 2, ..LstmConfig::new(4, 3) }, v.pp("a")).expect("constructs");
    let no_dropout = Lstm::new(LstmConfig::new(4, 3), v.pp("b")).expect("constructs");
    assert!(two_layers.warnings().is_empty(), "{:?}", two_layers.warnings());
    assert!(no_dropout.warnings().is_empty(), "{:?}", no_dropout.warnings());
}

// ---------------------------------------------------------------------------------------------
// R4: projection size; nonlinearity names. (A projection on RNN/GRU cannot be expressed: their
// configs have no `proj_size` field, so that PyTorch error is a compile error here.)
// ---------------------------------------------------------------------------------------------
#[test]
fn r4_proj_size_not_below_hidden_size_is_rejected() {
    for proj_size in [3, 4, 100] {
        let varmap = VarMap::new();
        let lstm = Lstm::new(LstmConfig { proj_size, ..LstmConfig::new(4, 3) }, vb(&varmap, DType::F32));
        assert_config_error(
            lstm,
            &format!("proj_size={proj_size} hidden_size=3"),
            &["proj_size has to be smaller than hidden_size"],
        );
    }
}

#[test]
fn r4_unknown_nonlinearity_is_rejected() {
    let err = match "sigmoid".parse::<Nonlinearity>() {
        Ok(n) => panic!("`sigmoid` parsed as {n:?}"),
        Err(e) => e,
    };
    assert!(matches!(err, Error::InvalidConfig { .. }), "{err:?}");
    assert_message(&err, "nonlinearity", &["Unknown nonlinearity 'sigmoid'. Select from 'tanh' or 'relu'"]);
    assert_eq!("relu".parse::<Nonlinearity>().ok(), Some(Nonlinearity::Relu));
    assert_eq!("tanh".parse::<Nonlinearity>().ok(), Some(Nonlinearity::Tanh));
}

// ---------------------------------------------------------------------------------------------
// R5: size products that overflow usize are errors before any allocation.
// ---------------------------------------------------------------------------------------------
/// A named construction that must fail cleanly.
type BuildCase = (String, Box<dyn FnOnce() -> recur::Result<()>>);

/// Builds every case under `catch_unwind` so that one panic does not hide the others; fails
/// listing each case that panicked or did not return `Error::InvalidConfig`.
fn assert_overflow_rejected(cases: Vec<BuildCase>) {
    let mut failures = Vec::new();
    for (case, build) in cases {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(build)) {
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                failures.push(format!("{case}: panicked ({msg}) instead of returning an error"));
            }
            Ok(Ok(())) => failures.push(format!("{case}: constructed")),
            Ok(Err(e)) if !matches!(e, Error::InvalidConfig { .. }) => {
                failures.push(format!("{case}: expected Error::InvalidConfig, got {e:?}"))
            }
            Ok(Err(e)) => assert_message(&e, &case, &[]),
        }
    }
    assert!(failures.is_empty(), "R5 overflow not rejected cleanly:\n{}", failures.join("\n"));
}

fn layer_cases(input_size: usize, hidden_size: usize, num_layers: usize) -> Vec<BuildCase> {
    Mode::ALL
        .into_iter()
        .map(|mode| {
            let case = format!("{mode:?} input_size={input_size} hidden_size={hidden_size} num_layers={num_layers}");
            let build: Box<dyn FnOnce() -> recur::Result<()>> = Box::new(move || {
                let varmap = VarMap::new();
                let spec = Spec { num_layers, ..Spec::new(mode, input_size, hidden_size) };
                spec.build(vb(&varmap, DType::F32)).map(|_| ())
            });
            (case, build)
        })
        .collect()
}

#[test]
fn r5_overflowing_hidden_size_is_rejected() {
    assert_overflow_rejected(layer_cases(4, 1 << 62, 1));
}

#[test]
fn r5_overflowing_input_size_is_rejected() {
    assert_overflow_rejected(layer_cases(1 << 62, 3, 1));
}

#[test]
fn r5_overflowing_num_layers_is_rejected() {
    assert_overflow_rejected(layer_cases(4, 3, usize::MAX));
}

#[test]
fn r5_overflowing_cell_sizes_are_rejected() {
    let mut cases: Vec<BuildCase> = Vec::new();
    for mode in CellMode::ALL {
        for (input_size, hidden_size) in [(4, 1 << 62), (1 << 62, 3)] {
            let case = format!("{mode:?} cell input_size={input_size} hidden_size={hidden_size}");
            cases.push((
                case,
                Box::new(move || {
                    let varmap = VarMap::new();
                    AnyCell::new(mode, input_size, hidden_size, true, vb(&varmap, DType::F32)).map(|_| ())
                }),
            ));
        }
    }
    assert_overflow_rejected(cases);
}

// ---------------------------------------------------------------------------------------------
// R6: input rank.
// ---------------------------------------------------------------------------------------------
#[test]
fn r6_four_dimensional_input_is_rejected() {
    for mode in [Mode::RnnTanh, Mode::Lstm, Mode::Gru] {
        let rnn = ok_layer(mode, 4, 3, 1);
        assert_shape_error(
            rnn.forward(&zeros(&[5, 3, 4, 1]), None),
            &format!("{mode:?}"),
            &["Expected input to be 2D or 3D, got 4D"],
        );
    }
}

#[test]
fn r6_one_dimensional_input_is_rejected() {
    for mode in [Mode::RnnTanh, Mode::Lstm, Mode::Gru] {
        let rnn = ok_layer(mode, 4, 3, 1);
        assert_shape_error(
            rnn.forward(&zeros(&[4]), None),
            &format!("{mode:?}"),
            &["Expected input to be 2D or 3D, got 1D"],
        );
    }
}

// ---------------------------------------------------------------------------------------------
// R7: feature size.
// ---------------------------------------------------------------------------------------------
#[test]
fn r7_wrong_feature_size_is_rejected() {
    for mode in [Mode::RnnTanh, Mode::Lstm, Mode::Gru] {
        let rnn = ok_layer(mode, 4, 3, 1);
        for dims in [vec![5, 3, 5], vec![5, 5]] {
            assert_shape_error(
                rnn.forward(&zeros(&dims), None),
                &format!("{mode:?} {dims:?}"),
                &["input.size(-1) must be equal to input_size. Expected 4, got 5"],
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// R8: port of PyTorch's test_rnn_args_check (input_size 3, hidden 5, 2 layers, batch 4, T 6,
// bad_size 7), one test per mode × wrong dimension.
// ---------------------------------------------------------------------------------------------
mod r8_args_check {
    use super::*;

    const INPUT: usize = 3;
    const HIDDEN: usize = 5;
    const LAYERS: usize = 2;
    const BATCH: usize = 4;
    const SEQ: usize = 6;
    const BAD: usize = 7;

    fn updated(shape: [usize; 3], dim: usize, size: usize) -> [usize; 3] {
        let mut s = shape;
        s[dim] = size;
        s
    }

    /// Runs `mode` on `input_shape` with hidden `hidden_shape`; for an LSTM with a wrong hidden
    /// shape both (bad h, good c) and (good h, bad c) are tried. Each must fail with the needles.
    fn check(mode: Mode, input_shape: [usize; 3], hidden_shape: [usize; 3], needles: &[&[&str]]) {
        let rnn = ok_layer(mode, INPUT, HIDDEN, LAYERS);
        let correct_hidden = [LAYERS, BATCH, HIDDEN];
        let x = zeros(&input_shape);
        let h = zeros(&hidden_shape);
        let states: Vec<State> = if !mode.is_lstm() {
            vec![State::h(h)]
        } else if hidden_shape == correct_hidden {
            vec![State::lstm(h.clone(), h)]
        } else {
            let good = zeros(&correct_hidden);
            vec![State::lstm(h.clone(), good.clone()), State::lstm(good, h)]
        };
        assert_eq!(states.len(), needles.len());
        for (state, needles) in states.iter().zip(needles) {
            let case = format!(
                "{mode:?} input {input_shape:?} h {:?} c {:?}",
                state.h.dims(),
                state.c.as_ref().map(|c| c.dims().to_vec())
            );
            assert_shape_error(rnn.forward(&x, Some(state)), &case, needles);
        }
    }

    const INPUT_SHAPE: [usize; 3] = [SEQ, BATCH, INPUT];
    const HIDDEN_SHAPE: [usize; 3] = [LAYERS, BATCH, HIDDEN];

    macro_rules! args_check_tests {
        ($($test:ident: $mode:expr, $input:expr, $hidden:expr, $needles:expr;)*) => {
            $(
                #[test]
                fn $test() {
                    check($mode, $input, $hidden, $needles);
                }
            )*
        };
    }

    args_check_tests! {
        rnn_bad_input_batch: Mode::RnnTanh, updated(INPUT_SHAPE, 1, BAD), HIDDEN_SHAPE,
            &[&["Expected hidden size (2, 7, 5), got [2, 4, 5]"]];
        gru_bad_input_batch: Mode::Gru, updated(INPUT_SHAPE, 1, BAD), HIDDEN_SHAPE,
            &[&["Expected hidden size (2, 7, 5), got [2, 4, 5]"]];
        lstm_bad_input_batch: Mode::Lstm, updated(INPUT_SHAPE, 1, BAD), HIDDEN_SHAPE,
            &[&["Expected hidden[0] size (2, 7, 5), got [2, 4, 5]"]];

        rnn_bad_hidden_batch: Mode::RnnTanh, INPUT_SHAPE, updated(HIDDEN_SHAPE, 1, BAD),
            &[&["Expected hidden size (2, 4, 5), got [2, 7, 5]"]];
        gru_bad_hidden_batch: Mode::Gru, INPUT_SHAPE, updated(HIDDEN_SHAPE, 1, BAD),
            &[&["Expected hidden size (2, 4, 5), got [2, 7, 5]"]];
        lstm_bad_hidden_batch: Mode::Lstm, INPUT_SHAPE, updated(HIDDEN_SHAPE, 1, BAD),
            &[&["Expected hidden[0] size (2, 4, 5), got [2, 7, 5]"],
              &["Expected hidden[1] size (2, 4, 5), got [2, 7, 5]"]];

        rnn_bad_input_size: Mode::RnnTanh, updated(INPUT_SHAPE, 2, BAD), HIDDEN_SHAPE,
            &[&["input.size(-1) must be equal to input_size. Expected 3, got 7"]];
        gru_bad_input_size: Mode::Gru, updated(INPUT_SHAPE, 2, BAD), HIDDEN_SHAPE,
            &[&["input.size(-1) must be equal to input_size. Expected 3, got 7"]];
        lstm_bad_input_size: Mode::Lstm, updated(INPUT_SHAPE, 2, BAD), HIDDEN_SHAPE,
            &[&["input.size(-1) must be equal to input_size. Expected 3, got 7"]];

        rnn_bad_hidden_size: Mode::RnnTanh, INPUT_SHAPE, updated(HIDDEN_SHAPE, 2, BAD),
            &[&["Expected hidden size (2, 4, 5), got [2, 4, 7]"]];
        gru_bad_hidden_size: Mode::Gru, INPUT_SHAPE, updated(HIDDEN_SHAPE, 2, BAD),
            &[&["Expected hidden size (2, 4, 5), got [2, 4, 7]"]];
        lstm_bad_hidden_size: Mode::Lstm, INPUT_SHAPE, updated(HIDDEN_SHAPE, 2, BAD),
            &[&["Expected hidden[0] size (2, 4, 5), got [2, 4, 7]"],
              &["Expected hidden[1] size (2, 4, 5), got [2, 4, 7]"]];

        rnn_bad_hidden_first_dim: Mode::RnnTanh, INPUT_SHAPE, updated(HIDDEN_SHAPE, 0, BAD),
            &[&["Expected hidden size (2, 4, 5), got [7, 4, 5]"]];
        gru_bad_hidden_first_dim: Mode::Gru, INPUT_SHAPE, updated(HIDDEN_SHAPE, 0, BAD),
            &[&["Expected hidden size (2, 4, 5), got [7, 4, 5]"]];
        lstm_bad_hidden_first_dim: Mode::Lstm, INPUT_SHAPE, updated(HIDDEN_SHAPE, 0, BAD),
            &[&["Expected hidden[0] size (2, 4, 5), got [7, 4, 5]"],
              &["Expected hidden[1] size (2, 4, 5), got [7, 4, 5]"]];
    }
}

// ---------------------------------------------------------------------------------------------
// R9: state rank inconsistent with the input's.
// ---------------------------------------------------------------------------------------------
#[test]
fn r9_unbatched_input_with_batched_state_is_rejected() {
    for mode in [Mode::RnnTanh, Mode::Gru] {
        let rnn = ok_layer(mode, 4, 3, 1);
        assert_shape_error(
            rnn.forward(&zeros(&[5, 4]), Some(&State::h(zeros(&[1, 1, 3])))),
            &format!("{mode:?}"),
            &["For unbatched 2-D input, hx should also be 2-D but got 3-D tensor"],
        );
    }
    let lstm = ok_layer(Mode::Lstm, 4, 3, 1);
    assert_shape_error(
        lstm.forward(&zeros(&[5, 4]), Some(&State::lstm(zeros(&[1, 1, 3]), zeros(&[1, 3])))),
        "LSTM",
        &["For unbatched 2-D input, hx and cx should also be 2-D but got (3-D, 2-D) tensors"],
    );
}

#[test]
fn r9_batched_input_with_unbatched_state_is_rejected() {
    for mode in [Mode::RnnTanh, Mode::Gru] {
        let rnn = ok_layer(mode, 4, 3, 1);
        assert_shape_error(
            rnn.forward(&zeros(&[5, 2, 4]), Some(&State::h(zeros(&[1, 3])))),
            &format!("{mode:?}"),
            &["For batched 3-D input, hx should also be 3-D but got 2-D tensor"],
        );
    }
    let lstm = ok_layer(Mode::Lstm, 4, 3, 1);
    assert_shape_error(
        lstm.forward(&zeros(&[5, 2, 4]), Some(&State::lstm(zeros(&[1, 2, 3]), zeros(&[1, 3])))),
        "LSTM",
        &["For batched 3-D input, hx and cx should also be 3-D but got (3-D, 2-D) tensors"],
    );
}

// ---------------------------------------------------------------------------------------------
// R10: dtype mismatch is an error naming both dtypes and how to convert; never a silent cast.
// ---------------------------------------------------------------------------------------------
#[test]
fn r10_input_dtype_mismatch_is_rejected() {
    for mode in [Mode::RnnTanh, Mode::Lstm, Mode::Gru] {
        let rnn = ok_layer(mode, 4, 3, 1); // F32 parameters
        let x = Tensor::zeros((5, 2, 4), DType::F64, &Device::Cpu).expect("zeros");
        let err = expect_err(rnn.forward(&x, None), &format!("{mode:?}"));
        assert!(matches!(err, Error::DType { .. }), "{mode:?}: expected Error::DType, got {err:?}");
        assert_message(&err, &format!("{mode:?}"), &["F64", "F32", "does not match weight dtype", "to_dtype"]);
    }
}

#[test]
fn r10_state_dtype_mismatch_is_rejected() {
    for mode in [Mode::RnnTanh, Mode::Lstm, Mode::Gru] {
        let rnn = ok_layer(mode, 4, 3, 1);
        let h64 = Tensor::zeros((1, 2, 3), DType::F64, &Device::Cpu).expect("zeros");
        let state = if mode.is_lstm() { State::lstm(h64, zeros(&[1, 2, 3])) } else { State::h(h64) };
        let err = expect_err(rnn.forward(&zeros(&[5, 2, 4]), Some(&state)), &format!("{mode:?}"));
        assert!(matches!(err, Error::DType { .. }), "{mode:?}: expected Error::DType, got {err:?}");
        assert_message(&err, &format!("{mode:?}"), &["F64", "F32", "h0"]);
    }
    let lstm = ok_layer(Mode::Lstm, 4, 3, 1);
    let c64 = Tensor::zeros((1, 2, 3), DType::F64, &Device::Cpu).expect("zeros");
    let err = expect_err(lstm.forward(&zeros(&[5, 2, 4]), Some(&State::lstm(zeros(&[1, 2, 3]), c64))), "LSTM c0");
    assert!(matches!(err, Error::DType { .. }), "LSTM c0: expected Error::DType, got {err:?}");
    assert_message(&err, "LSTM c0", &["F64", "F32", "c0"]);
}

// ---------------------------------------------------------------------------------------------
// R11: an empty sequence is an error (batch 0 is allowed: see equivalences.rs).
// ---------------------------------------------------------------------------------------------
#[test]
fn r11_zero_length_sequence_is_rejected() {
    for mode in [Mode::RnnTanh, Mode::Lstm, Mode::Gru] {
        let rnn = ok_layer(mode, 4, 3, 1);
        for dims in [vec![0, 2, 4], vec![0, 4]] {
            assert_shape_error(
                rnn.forward(&zeros(&dims), None),
                &format!("{mode:?} {dims:?}"),
                &["Expected sequence length to be larger than 0"],
            );
        }
    }
    let varmap = VarMap::new();
    let bf = Spec { batch_first: true, ..Spec::new(Mode::Gru, 4, 3) }.build(vb(&varmap, DType::F32)).expect("layer");
    assert_shape_error(
        bf.forward(&zeros(&[2, 0, 4]), None),
        "GRU batch_first",
        &["Expected sequence length to be larger than 0"],
    );
}

// ---------------------------------------------------------------------------------------------
// R14: cells (input 10, hidden 20).
// ---------------------------------------------------------------------------------------------
fn cell(mode: CellMode) -> AnyCell {
    let varmap = VarMap::new();
    AnyCell::new(mode, 10, 20, true, vb(&varmap, DType::F32)).expect("cell")
}

fn cell_state(mode: CellMode, h: Tensor) -> State {
    if mode == CellMode::Lstm {
        let c = zeros(h.dims());
        State::lstm(h, c)
    } else {
        State::h(h)
    }
}

fn cell_name(mode: CellMode) -> &'static str {
    match mode {
        CellMode::RnnTanh | CellMode::RnnRelu => "RNNCell",
        CellMode::Lstm => "LSTMCell",
        CellMode::Gru => "GRUCell",
    }
}

#[test]
fn r14_cell_wrong_input_size_is_rejected() {
    for mode in CellMode::ALL {
        let c = cell(mode);
        assert_shape_error(
            c.forward(&zeros(&[3, 11]), Some(&cell_state(mode, zeros(&[3, 20])))),
            &format!("{mode:?}"),
            &["input has inconsistent input_size: got 11 expected 10"],
        );
        assert_shape_error(
            c.forward(&zeros(&[3, 11]), None),
            &format!("{mode:?} no state"),
            &["input has inconsistent input_size: got 11 expected 10"],
        );
    }
}

#[test]
fn r14_cell_wrong_hidden_size_is_rejected() {
    for mode in CellMode::ALL {
        let c = cell(mode);
        assert_shape_error(
            c.forward(&zeros(&[3, 10]), Some(&cell_state(mode, zeros(&[3, 21])))),
            &format!("{mode:?}"),
            &["hidden0 has inconsistent hidden_size: got 21, expected 20"],
        );
    }
    let c = cell(CellMode::Lstm);
    assert_shape_error(
        c.forward(&zeros(&[3, 10]), Some(&State::lstm(zeros(&[3, 20]), zeros(&[3, 21])))),
        "LSTMCell c",
        &["hidden1 has inconsistent hidden_size: got 21, expected 20"],
    );
}

#[test]
fn r14_cell_batch_mismatch_is_rejected() {
    for mode in CellMode::ALL {
        let c = cell(mode);
        assert_shape_error(
            c.forward(&zeros(&[3, 10]), Some(&cell_state(mode, zeros(&[5, 20])))),
            &format!("{mode:?}"),
            &["Input batch size 3 doesn't match hidden0 batch size 5"],
        );
    }
    let c = cell(CellMode::Lstm);
    assert_shape_error(
        c.forward(&zeros(&[3, 10]), Some(&State::lstm(zeros(&[3, 20]), zeros(&[5, 20])))),
        "LSTMCell c",
        &["Input batch size 3 doesn't match hidden1 batch size 5"],
    );
}

#[test]
fn r14_cell_batch_one_state_is_not_broadcast() {
    for mode in CellMode::ALL {
        let c = cell(mode);
        assert_shape_error(
            c.forward(&zeros(&[3, 10]), Some(&cell_state(mode, zeros(&[1, 20])))),
            &format!("{mode:?}"),
            &["Input batch size 3 doesn't match hidden0 batch size 1"],
        );
    }
}

#[test]
fn r14_cell_four_dimensional_state_is_rejected() {
    for mode in CellMode::ALL {
        let c = cell(mode);
        let name = cell_name(mode);
        let expected = if mode == CellMode::Lstm {
            format!("{name}: Expected hx[0] to be 1D or 2D, got 4D instead")
        } else {
            format!("{name}: Expected hidden to be 1D or 2D, got 4D instead")
        };
        assert_shape_error(
            c.forward(&zeros(&[3, 10]), Some(&cell_state(mode, zeros(&[1, 1, 3, 20])))),
            &format!("{mode:?}"),
            &[&expected],
        );
    }
}

#[test]
fn r14_cell_three_dimensional_input_is_rejected() {
    for mode in CellMode::ALL {
        let c = cell(mode);
        let expected = format!("{}: Expected input to be 1D or 2D, got 3D instead", cell_name(mode));
        assert_shape_error(c.forward(&zeros(&[1, 3, 10]), None), &format!("{mode:?}"), &[&expected]);
    }
}

#[test]
fn r14_cell_state_rank_must_match_input_rank() {
    for mode in CellMode::ALL {
        let c = cell(mode);
        // Unbatched input with a batched state, and the reverse: never silently broadcast.
        assert!(c.forward(&zeros(&[10]), Some(&cell_state(mode, zeros(&[1, 20])))).is_err(), "{mode:?} (I) + (1, H)");
        assert!(c.forward(&zeros(&[1, 10]), Some(&cell_state(mode, zeros(&[20])))).is_err(), "{mode:?} (1, I) + (H)");
    }
}
