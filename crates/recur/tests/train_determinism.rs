//! Determinism (test bar R36) and the training toolkit's typed errors.
//!
//! One seed drives initialisation (`derive_seed(seed, "init")`), the layers' dropout
//! (`derive_seed(seed, "dropout")`) and the data order (`derive_seed(seed, "data")`): two runs with
//! the same seed and thread count end with bitwise-identical parameters.

mod common;

use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use recur::train::{
    derive_seed, named_vars, Adam, AdamConfig, BceWithLogits, CrossEntropy, Huber, LrSchedule, Mse, Nll, Optimizer,
    Scheduler, TrainRng,
};
use recur::{Error, Gru, GruConfig};

/// 30 steps of a 2-layer GRU with inter-layer dropout 0.3 on shuffled batches.
fn train(seed: u64) -> Vec<(String, Tensor)> {
    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, derive_seed(seed, "init"), DType::F32, &Device::Cpu);
    let config = GruConfig { num_layers: 2, dropout: 0.3, seed: derive_seed(seed, "dropout"), ..GruConfig::new(4, 8) };
    let gru = Gru::new(config, vb.pp("gru")).expect("gru");
    let mut opt = Adam::new(named_vars(&varmap), AdamConfig { lr: 0.01, ..AdamConfig::default() }).expect("adam");
    let mut rng = TrainRng::new(derive_seed(seed, "data"));
    let batches: Vec<Tensor> = (0..5).map(|i| common::filled(&[6, 2, 4], 100 + i, DType::F32)).collect();
    let mut order: Vec<usize> = (0..batches.len()).collect();
    for step in 0..30 {
        if step % batches.len() == 0 {
            rng.shuffle(&mut order);
        }
        let (y, _) = gru.forward(&batches[order[step % batches.len()]], None).expect("forward");
        let loss = y.sqr().and_then(|t| t.mean_all()).expect("loss");
        opt.step(&loss.backward().expect("backward")).expect("step");
    }
    named_vars(&varmap).into_iter().map(|(n, v)| (n, v.as_tensor().copy().expect("copy"))).collect()
}

#[test]
fn same_seed_same_parameters_other_seed_other_parameters() {
    let (a, b, c) = (train(7), train(7), train(8));
    for ((name, x), (_, y)) in a.iter().zip(&b) {
        common::assert_bitwise(name, x, y);
    }
    let differs = a.iter().zip(&c).any(|((name, x), (_, y))| common::check_bitwise(name, x, y).is_err());
    assert!(differs, "another seed must give other parameters");
}

#[test]
fn losses_reject_bad_input_with_typed_errors() {
    let dev = Device::Cpu;
    let logits = Tensor::zeros((4, 3), DType::F32, &dev).expect("logits");
    let text = |r: recur::Result<Tensor>| r.err().map(|e| e.to_string()).unwrap_or_default();

    let t = Tensor::new(&[0u32, 1, 5, 2], &dev).expect("targets");
    assert!(text(CrossEntropy::default().forward(&logits, &t, None)).contains("Target 5 is out of bounds"));
    let t = Tensor::new(&[0i64, -100, 1, 2], &dev).expect("targets");
    assert!(CrossEntropy::default().forward(&logits, &t, None).is_ok(), "-100 is ignored by default");
    let no_ignore = CrossEntropy { ignore_index: None, ..CrossEntropy::default() };
    assert!(text(no_ignore.forward(&logits, &t, None)).contains("Target -100 is out of bounds"));
    let t = Tensor::new(&[0u32, 1, 2], &dev).expect("targets");
    assert!(text(CrossEntropy::default().forward(&logits, &t, None)).contains("expected targets of shape [4]"));
    let t = Tensor::new(&[0u32, 1, 2, 0], &dev).expect("targets");
    let mask = Tensor::new(&[1f32, 0.5, 1.0, 1.0], &dev).expect("mask");
    assert!(text(CrossEntropy::default().forward(&logits, &t, Some(&mask))).contains("mask values must be 0 or 1"));
    let mask = Tensor::new(&[1f32, 0.0], &dev).expect("mask");
    assert!(text(CrossEntropy::default().forward(&logits, &t, Some(&mask))).contains("expected a mask of shape [4]"));
    let bad_weight =
        CrossEntropy { weight: Some(Tensor::ones(2, DType::F32, &dev).expect("w")), ..CrossEntropy::default() };
    assert!(text(bad_weight.forward(&logits, &t, None)).contains("one per class"));
    let smoothing = CrossEntropy { label_smoothing: 1.5, ..CrossEntropy::default() };
    assert!(matches!(smoothing.forward(&logits, &t, None), Err(Error::InvalidConfig { .. })));
    let float_targets = Tensor::new(&[0.5f32, 1.0, 2.0, 0.0], &dev).expect("targets");
    assert!(text(Nll::default().forward(&logits, &float_targets, None)).contains("whole numbers"));
    let ints = Tensor::zeros((4, 3), DType::U32, &dev).expect("ints");
    assert!(matches!(CrossEntropy::default().forward(&ints, &t, None), Err(Error::UnsupportedDType { .. })));
    // Everything masked: "mean" is NaN, as in PyTorch.
    let all_ignored = Tensor::new(&[-100i64; 4], &dev).expect("ignored");
    let loss = CrossEntropy::default().forward(&logits, &all_ignored, None).expect("loss");
    assert!(loss.to_scalar::<f32>().expect("scalar").is_nan());

    let no_classes = Tensor::zeros((4, 0), DType::F32, &dev).expect("empty");
    assert!(Nll::default().forward(&no_classes, &all_ignored, None).is_err());
    assert!(CrossEntropy::default().forward(&no_classes, &all_ignored, None).is_err());

    let y = Tensor::zeros((4, 2), DType::F32, &dev).expect("y");
    assert!(text(Mse::default().forward(&logits, &y, None))
        .contains("target size [4, 2] is different from input size [4, 3]"));
    assert!(matches!(
        Huber { delta: 0.0, ..Huber::default() }.forward(&logits, &logits, None),
        Err(Error::InvalidConfig { .. })
    ));
    let pos_weight =
        BceWithLogits { pos_weight: Some(Tensor::ones(2, DType::F32, &dev).expect("pw")), ..BceWithLogits::default() };
    assert!(text(pos_weight.forward(&logits, &logits, None)).contains("pos_weight"));
}

#[test]
fn schedules_and_optimizers_reject_bad_settings() {
    assert!(Scheduler::new(LrSchedule::Step { step_size: 0, gamma: 0.5 }, 0.1).is_err());
    assert!(Scheduler::new(LrSchedule::Constant, f64::NAN).is_err());
    let mut plateau = Scheduler::new(LrSchedule::plateau(), 0.1).expect("plateau");
    assert!(plateau.step(None).is_err(), "plateau needs the metric");
    let err = Adam::new(vec![], AdamConfig { lr: -1.0, ..AdamConfig::default() }).err().map(|e| e.to_string());
    assert!(err.is_some_and(|e| e.contains("Invalid learning rate value: -1")));
    let var = candle_core::Var::ones(2, DType::U32, &Device::Cpu).expect("var");
    assert!(Adam::new(vec![("ints".into(), var)], AdamConfig::default()).is_err());
    let var = candle_core::Var::ones(2, DType::F32, &Device::Cpu).expect("var");
    let twice = vec![("w".to_string(), var.clone()), ("w".to_string(), var)];
    assert!(Adam::new(twice, AdamConfig::default())
        .err()
        .map(|e| e.to_string())
        .is_some_and(|e| e.contains("appears twice")));
    let mut opt = Adam::new(vec![], AdamConfig::default()).expect("empty adam");
    opt.set_learning_rate(0.5);
    assert_eq!(opt.learning_rate(), 0.5);
}
