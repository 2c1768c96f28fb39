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
