//! Gradient clipping (test bar R33, features.md §3.7): `clip_grad_norm` is PyTorch's
//! `clip_grad_norm_` (norm of per-tensor norms, `coef = min(max_norm / (total + 1e-6), 1)`,
//! always multiplied), errors on a non-finite norm when asked and leaves the gradients alone.

mod common;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use recur::train::{clip_grad_norm, clip_grad_value, named_vars, NormType, Optimizer, Sgd, SgdConfig};
use recur::{Nonlinearity, Rnn, RnnConfig, State};

const H: usize = 4;

/// ReLU RNN(2 → 4) without bias, `W_hh = 1.5·I`, zero input, `h0 = 0.5`: `h_T = 1.5ᵀ·h0`, so for
/// `loss = Σ h_T` the gradient w.r.t. `h0` is `1.5ᵀ` everywhere, of norm `1.5ᵀ·√H`.
fn exploding(steps: usize) -> (VarMap, Var, GradStore) {
    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, 3, DType::F64, &Device::Cpu);
    let config = RnnConfig { nonlinearity: Nonlinearity::Relu, bias: false, ..RnnConfig::new(2, H) };
    let rnn = Rnn::new(config, vb.pp("rnn")).expect("rnn");
    let eye = Tensor::eye(H, DType::F64, &Device::Cpu).and_then(|t| t * 1.5).expect("eye");
    for (name, var) in named_vars(&varmap) {
        if name.ends_with("weight_hh_l0") {
            var.set(&eye).expect("set");
        }
    }
    let h0 = Var::from_tensor(&Tensor::full(0.5f64, (1, 1, H), &Device::Cpu).expect("h0")).expect("var");
    let x = Tensor::zeros((steps, 1, 2), DType::F64, &Device::Cpu).expect("x");
    let (_, State { h, .. }) = rnn.forward(&x, Some(&State::h(h0.as_tensor().clone()))).expect("forward");
    let grads = h.sum_all().and_then(|l| l.backward()).expect("backward");
    (varmap, h0, grads)
}

fn norm(t: &Tensor) -> f64 {
    common::values(t).iter().map(|v| v * v).sum::<f64>().sqrt()
}

#[test]
fn exploding_gradient_matches_the_analytic_norm_and_is_clipped_to_max_norm() {
    let (varmap, h0, mut grads) = exploding(50);
    let dh0 = grads.get(h0.as_tensor()).expect("dh0").clone();
    let analytic = 1.5f64.powi(50) * (H as f64).sqrt();
    let rel = (norm(&dh0) - analytic).abs() / analytic;
    assert!(rel < 1e-9, "‖dh0‖ = {}, analytic {analytic}, rel {rel:e}", norm(&dh0));

    let mut vars: Vec<Var> = named_vars(&varmap).into_iter().map(|(_, v)| v).collect();
    vars.push(h0.clone());
    let before: Vec<Tensor> = vars.iter().map(|v| grads.get(v.as_tensor()).expect("grad").clone()).collect();
    let expected_total = before.iter().map(|g| norm(g).powi(2)).sum::<f64>().sqrt();
    let total = clip_grad_norm(&vars, &mut grads, 1.0, NormType::L2, true).expect("clip");
    assert!((total - expected_total).abs() <= 1e-12 * expected_total, "total {total}, expected {expected_total}");
    let after = vars.iter().map(|v| norm(grads.get(v.as_tensor()).expect("grad")).powi(2)).sum::<f64>().sqrt();
    assert!(after <= 1.0 * (1.0 + 1e-6), "clipped norm {after}");
    // Exactly PyTorch's rule: every gradient times max_norm / (total + 1e-6).
    let coef = 1.0 / (total + 1e-6);
    for (v, g) in vars.iter().zip(&before) {
        let want = (g * coef).expect("scale");
        common::assert_bitwise("clipped", grads.get(v.as_tensor()).expect("grad"), &want);
    }
}

#[test]
fn non_finite_norm_is_an_error_and_changes_nothing() {
    let (varmap, h0, mut grads) = exploding(2000); // 1.5^2000 overflows: the gradients are inf/NaN
    let mut vars: Vec<Var> = named_vars(&varmap).into_iter().map(|(_, v)| v).collect();
    vars.push(h0);
    let before: Vec<Vec<u64>> = vars
        .iter()
        .map(|v| common::values(grads.get(v.as_tensor()).expect("grad")).iter().map(|x| x.to_bits()).collect())
        .collect();
    let params_before: Vec<Vec<f64>> = vars.iter().map(|v| common::values(v.as_tensor())).collect();
    let err = clip_grad_norm(&vars, &mut grads, 1.0, NormType::L2, true).expect_err("non-finite norm must be an error");
    assert!(err.to_string().contains("non-finite"), "{err}");
    for (v, b) in vars.iter().zip(&before) {
        let now: Vec<u64> =
            common::values(grads.get(v.as_tensor()).expect("grad")).iter().map(|x| x.to_bits()).collect();
        assert_eq!(&now, b, "gradients must be untouched on error");
    }
    let now: Vec<Vec<f64>> = vars.iter().map(|v| common::values(v.as_tensor())).collect();
    assert_eq!(now.len(), params_before.len());
    for (a, b) in now.iter().zip(&params_before) {
        assert!(a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits()), "parameters must be unchanged");
    }
    // Without the check the total is returned (inf/NaN) as PyTorch does.
    let total = clip_grad_norm(&vars, &mut grads, 1.0, NormType::L2, false).expect("no check");
    assert!(!total.is_finite());
}

#[test]
fn small_norms_are_multiplied_by_one_and_inf_norm_is_the_largest_element() {
    let a = Var::new(&[3.0f32, -4.0], &Device::Cpu).expect("a");
    let b = Var::new(&[[1.0f32, -12.0]], &Device::Cpu).expect("b");
    let loss = (a.as_tensor().sum_all().expect("sa") + b.as_tensor().sqr().and_then(|t| t.sum_all()).expect("sb"))
        .expect("loss");
    let mut grads = loss.backward().expect("backward"); // da = [1, 1], db = [2, -24]
    let vars = [a.clone(), b.clone()];
    let total = clip_grad_norm(&vars, &mut grads, 100.0, NormType::Inf, false).expect("clip");
    assert_eq!(total, 24.0);
    assert_eq!(grads.get(b.as_tensor()).expect("db").to_vec2::<f32>().expect("v"), vec![vec![2.0, -24.0]]);
    let total = clip_grad_norm(&vars, &mut grads, 12.0, NormType::Inf, false).expect("clip");
    assert_eq!(total, 24.0);
    let db = grads.get(b.as_tensor()).expect("db").to_vec2::<f32>().expect("v");
    assert_eq!(db, vec![vec![2.0 * (12.0 / (24.0 + 1e-6)) as f32, -24.0 * (12.0 / (24.0 + 1e-6)) as f32]]);

    clip_grad_value(&vars, &mut grads, 0.25).expect("value");
    assert_eq!(grads.get(a.as_tensor()).expect("da").to_vec1::<f32>().expect("v"), vec![0.25, 0.25]);
    assert_eq!(grads.get(b.as_tensor()).expect("db").to_vec2::<f32>().expect("v"), vec![vec![0.25, -0.25]]);
    assert!(clip_grad_value(&vars, &mut grads, -1.0).is_err());
}

#[test]
fn a_skipped_step_after_a_non_finite_norm_leaves_parameters_unchanged() {
    let w = Var::new(&[1.0f64, 2.0], &Device::Cpu).expect("w");
    let mut opt = Sgd::new(vec![("w".into(), w.clone())], SgdConfig { lr: 0.1, ..SgdConfig::default() }).expect("sgd");
    let loss = (w.as_tensor() * f64::INFINITY).and_then(|t| t.sum_all()).expect("loss");
    let mut grads = loss.backward().expect("backward");
    if clip_grad_norm(std::slice::from_ref(&w), &mut grads, 1.0, NormType::L2, true).is_ok() {
        opt.step(&grads).expect("step");
    }
    assert_eq!(w.as_tensor().to_vec1::<f64>().expect("w"), vec![1.0, 2.0]);
}
