//! Diagnostics and small experiments from the tutorials' exercises: how far gradients reach back
//! in time ([`hidden_gradients`], [`gradient_flow`]) and LSTM vs GRU vs RNN at an equal parameter
//! budget ([`compare_cells`]). Everything returns data; printing and plotting files is the
//! caller's business.

mod compare;
mod gradflow;
mod hidden_grads;

pub use compare::{
    compare_cells, compare_plot, hidden_size_for_budget, unigram_bpc, CompareConfig, CompareProgress, CompareReport,
    CompareRow,
};
pub use gradflow::{gradient_flow, gradient_flow_plot, gradient_flow_with, GradFlowConfig, GradFlowReport};
pub use hidden_grads::{fit_decay_rate, hidden_grad_norms, hidden_gradients, HiddenGradients, LayerRef};

use candle_core::backprop::GradStore;
use candle_core::{DType, Var};

/// Scales every gradient of `vars` by `min(1, max_norm / (‖g‖ + 1e-6))`, `‖g‖` the norm over all
/// of them, as `torch.nn.utils.clip_grad_norm_` does; returns `‖g‖`.
// TODO(toolkit): recur::train::clip_grad_norm
fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: f64) -> crate::Result<f64> {
    let mut total = 0.0;
    for var in vars {
        if let Some(g) = grads.get(var.as_tensor()) {
            total += g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?;
        }
    }
    let total = total.sqrt();
    let coef = (max_norm / (total + 1e-6)).min(1.0);
    if coef < 1.0 {
        for var in vars {
            if let Some(g) = grads.remove(var.as_tensor()) {
                grads.insert(var.as_tensor(), g.affine(coef, 0.0)?);
            }
        }
    }
    Ok(total)
}
