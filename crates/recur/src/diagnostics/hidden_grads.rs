//! `‖∂L/∂h_t‖` for every time step of a recurrent layer.
//!
//! The fused layers compute all steps in one op, so their per-step hidden states are not separate
//! nodes of candle's graph. [`hidden_gradients`] therefore unrolls the *same weights* one step at a
//! time with the matching cell (`RnnCell`, `LstmCell`, `GruCell` reading the layer's own
//! `weight_ih_l{k}`, … tensors) and adds to every top-layer `h_t` a zero-valued variable (candle
//! keeps gradients of variables only), whose gradient after `loss.backward()` is `∂L/∂h_t`. Gradients of the parameters land on the layer's own tensors, so the
//! returned [`GradStore`] is the one a training step would use.

use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{DType, Tensor, Var};
use candle_nn::VarBuilder;

use crate::nn::{
    Gru, GruCell, GruCellConfig, Lstm, LstmCell, LstmCellConfig, Nonlinearity, Rnn, RnnCell, RnnCellConfig, State,
};
use crate::{Error, Result};

/// A borrowed `Rnn`, `Lstm` or `Gru`, the layers [`hidden_gradients`] can unroll (`&rnn.into()`
/// or just `&rnn`, thanks to the `From` impls).
#[derive(Clone, Copy)]
pub enum LayerRef<'a> {
    /// An `nn.RNN`.
    Rnn(&'a Rnn),
    /// An `nn.LSTM`.
    Lstm(&'a Lstm),
    /// An `nn.GRU`.
    Gru(&'a Gru),
}

impl<'a> From<&'a Rnn> for LayerRef<'a> {
    fn from(layer: &'a Rnn) -> Self {
        LayerRef::Rnn(layer)
    }
}

impl<'a> From<&'a Lstm> for LayerRef<'a> {
    fn from(layer: &'a Lstm) -> Self {
        LayerRef::Lstm(layer)
    }
}

impl<'a> From<&'a Gru> for LayerRef<'a> {
    fn from(layer: &'a Gru) -> Self {
        LayerRef::Gru(layer)
    }
}

/// What [`hidden_gradients`] measured.
pub struct HiddenGradients {
    /// `‖∂L/∂h_t‖` (Frobenius norm over the batch and the hidden units) of the top layer's hidden
    /// state, for `t = 0..T`. The derivative is the *total* one: it includes every path from
    /// `h_t` to the loss, through the output at `t` and through all later steps. For an LSTM it is
    /// the derivative with respect to `h_t` alone (the cell state `c_t` is a separate input of
    /// step `t + 1`, as in PyTorch's `(h, c)`).
    pub norms: Vec<f64>,
    /// The loss's value.
    pub loss: f64,
    /// The unrolled output, same shape and values (up to rounding) as the layer's `forward`.
    pub output: Tensor,
    /// The unrolled final state, same shapes as the layer's.
    pub state: State,
    /// The top layer's hidden states `h_t`, each `(B, H)`.
    pub hidden: Vec<Tensor>,
    /// All gradients of the backward pass, keyed by tensor: the layer's parameters (from
    /// `layer.weights()`), the input and the initial state if they are variables, and every `h_t`.
    pub grads: GradStore,
}

/// One step of any of the three cells.
enum StepCell {
    Rnn(RnnCell),
    Lstm(LstmCell),
    Gru(GruCell),
}

impl StepCell {
    fn forward(&self, input: &Tensor, state: Option<&State>) -> Result<State> {
        match self {
            StepCell::Rnn(cell) => cell.forward(input, state),
            StepCell::Lstm(cell) => cell.forward(input, state),
            StepCell::Gru(cell) => cell.forward(input, state),
        }
    }
}

/// The layer's options that matter for unrolling.
struct Unrolled {
    cells: Vec<StepCell>,
    batch_first: bool,
    has_c: bool,
}

fn unroll(layer: LayerRef<'_>) -> Result<Unrolled> {
    let (name, input_size, hidden_size, num_layers, bias, batch_first, bidirectional, weights) = match layer {
        LayerRef::Rnn(l) => {
            let c = l.config();
            ("RNN", c.input_size, c.hidden_size, c.num_layers, c.bias, c.batch_first, c.bidirectional, l.weights())
        }
        LayerRef::Lstm(l) => {
            let c = l.config();
            if c.proj_size > 0 {
                return Err(Error::config(
                    "hidden_gradients",
                    format!("an LSTM with proj_size = {} cannot be unrolled with LstmCell", c.proj_size),
                    "measure a layer built with proj_size = 0",
                ));
            }
            ("LSTM", c.input_size, c.hidden_size, c.num_layers, c.bias, c.batch_first, c.bidirectional, l.weights())
        }
        LayerRef::Gru(l) => {
            let c = l.config();
            ("GRU", c.input_size, c.hidden_size, c.num_layers, c.bias, c.batch_first, c.bidirectional, l.weights())
        }
    };
    if bidirectional {
        return Err(Error::config(
            "hidden_gradients",
            format!("a bidirectional {name} has two hidden states per step"),
            "measure each direction as its own unidirectional layer",
        ));
    }
    let weights: HashMap<String, Tensor> = weights.into_iter().collect();
    let first = weights.get("weight_ih_l0").ok_or_else(|| {
        Error::config("hidden_gradients", format!("the {name} has no weight_ih_l0"), "pass a layer built by Recur")
    })?;
    let (dtype, device) = (first.dtype(), first.device().clone());
    let mut cells = Vec::with_capacity(num_layers);
    for layer_idx in 0..num_layers {
        let mut own: HashMap<String, Tensor> = HashMap::new();
        for param in ["weight_ih", "weight_hh", "bias_ih", "bias_hh"] {
            if let Some(t) = weights.get(&format!("{param}_l{layer_idx}")) {
                own.insert(param.to_string(), t.clone());
            }
        }
        // The cell reads the layer's own tensors (same ids), so gradients land on the layer.
        let vb = VarBuilder::from_tensors(own, dtype, &device);
        let input = if layer_idx == 0 { input_size } else { hidden_size };
        let cell = match layer {
            LayerRef::Rnn(l) => {
                let nonlinearity: Nonlinearity = l.config().nonlinearity;
                StepCell::Rnn(RnnCell::new(
                    RnnCellConfig { bias, nonlinearity, ..RnnCellConfig::new(input, hidden_size) },
                    vb,
                )?)
            }
            LayerRef::Lstm(_) => {
                StepCell::Lstm(LstmCell::new(LstmCellConfig { bias, ..LstmCellConfig::new(input, hidden_size) }, vb)?)
            }
            LayerRef::Gru(_) => {
                StepCell::Gru(GruCell::new(GruCellConfig { bias, ..GruCellConfig::new(input, hidden_size) }, vb)?)
            }
        };
        cells.push(cell);
    }
    Ok(Unrolled { cells, batch_first, has_c: matches!(layer, LayerRef::Lstm(_)) })
}

/// Runs `layer` step by step on `input`, computes `loss_fn(output, final_state)` and its
/// backward, and returns `‖∂L/∂h_t‖` for every step `t` of the top layer, with the rest of the
/// pass (see [`HiddenGradients`]).
///
/// - `input`: `(T, B, I)`, or `(B, T, I)` if the layer is `batch_first` (batched input only);
/// - `state`: `None` for zeros, or the layer's state `(L, B, H)` (plus `c` for an LSTM);
/// - `loss_fn` receives the output, shaped as the layer's `forward` returns it, and the final
///   state, and returns a scalar (one-element) loss.
///
/// The unrolling uses the layer's parameters through `RnnCell`/`LstmCell`/`GruCell`, so its
/// output equals the fused `forward` up to rounding, and the parameter gradients are the same
/// BPTT sums. Inter-layer dropout is not applied (evaluation-mode semantics). Bidirectional
/// layers and LSTMs with `proj_size` are refused.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use recur::{diagnostics, Rnn, RnnConfig};
/// let vb = recur::seeded_var_builder(&candle_nn::VarMap::new(), 0, DType::F64, &Device::Cpu);
/// let rnn = Rnn::new(RnnConfig::new(3, 8), vb)?;
/// let x = Tensor::ones((20, 2, 3), DType::F64, &Device::Cpu)?; // (T, B, I)
/// // Loss on the last step only: how much of it reaches each earlier step?
/// let norms = diagnostics::hidden_grad_norms(&rnn, &x, None, |out, _| Ok(out.get(19)?.sum_all()?))?;
/// assert_eq!(norms.len(), 20);
/// assert!(norms[0] < norms[19]); // vanishing
/// # Ok::<(), recur::Error>(())
/// ```
pub fn hidden_gradients<'a>(
    layer: impl Into<LayerRef<'a>>,
    input: &Tensor,
    state: Option<&State>,
    loss_fn: impl FnOnce(&Tensor, &State) -> Result<Tensor>,
) -> Result<HiddenGradients> {
    let unrolled = unroll(layer.into())?;
    if input.rank() != 3 {
        return Err(Error::shape(
            "hidden_gradients",
            format!("expected a batched input of rank 3, got shape {:?}", input.dims()),
            "pass (T, B, I), or (B, T, I) for a batch_first layer; unsqueeze an unbatched sequence",
        ));
    }
    let time_dim = if unrolled.batch_first { 1 } else { 0 };
    let seq_len = input.dim(time_dim)?;
    if seq_len == 0 {
        return Err(Error::shape("hidden_gradients", "the input has no time steps", "pass at least one step"));
    }
    let num_layers = unrolled.cells.len();
    let mut states: Vec<Option<State>> = match state {
        None => vec![None; num_layers],
        Some(state) => {
            if state.h.rank() != 3 || state.h.dim(0)? != num_layers || state.c.is_some() != unrolled.has_c {
                return Err(Error::shape(
                    "hidden_gradients",
                    format!("expected a state h of shape (L = {num_layers}, B, H), got {:?}", state.h.dims()),
                    "pass the state the layer's forward takes, or None for zeros",
                ));
            }
            (0..num_layers)
                .map(|l| {
                    Ok(Some(State {
                        h: state.h.get(l)?,
                        c: match &state.c {
                            Some(c) => Some(c.get(l)?),
                            None => None,
                        },
                    }))
                })
                .collect::<Result<_>>()?
        }
    };
    let mut hidden = Vec::with_capacity(seq_len);
    let mut probes = Vec::with_capacity(seq_len);
    for t in 0..seq_len {
        let mut x = input.narrow(time_dim, t, 1)?.squeeze(time_dim)?; // (B, I)
        let top = num_layers - 1;
        for (l, (cell, slot)) in unrolled.cells.iter().zip(states.iter_mut()).enumerate() {
            let mut next = cell.forward(&x, slot.as_ref())?;
            if l == top {
                // candle keeps gradients only for variables, so h_t gets a zero-valued variable
                // added to it: ∂L/∂probe_t = ∂L/∂h_t, and the values do not change.
                let probe = Var::zeros(next.h.shape(), next.h.dtype(), next.h.device())?;
                next.h = (&next.h + probe.as_tensor())?;
                probes.push(probe);
            }
            x = next.h.clone();
            *slot = Some(next);
        }
        hidden.push(x); // the top layer's h_t, (B, H)
    }
    let output = Tensor::stack(&hidden, time_dim)?;
    let finals: Vec<State> = states.into_iter().flatten().collect();
    let h_n = Tensor::stack(&finals.iter().map(|s| s.h.clone()).collect::<Vec<_>>(), 0)?;
    let c_n = if unrolled.has_c {
        let cs = finals.iter().filter_map(|s| s.c.clone()).collect::<Vec<_>>();
        Some(Tensor::stack(&cs, 0)?)
    } else {
        None
    };
    let final_state = State { h: h_n, c: c_n };
    let loss = loss_fn(&output, &final_state)?;
    if loss.elem_count() != 1 {
        return Err(Error::shape(
            "hidden_gradients",
            format!("the loss must be a scalar, got shape {:?}", loss.dims()),
            "reduce it with mean_all() or sum_all()",
        ));
    }
    let grads = loss.backward()?;
    let norms = probes
        .iter()
        .map(|probe| match grads.get(probe.as_tensor()) {
            Some(g) => Ok(g.to_dtype(DType::F64)?.sqr()?.sum_all()?.to_scalar::<f64>()?.sqrt()),
            None => Ok(0.0), // no path from h_t to the loss
        })
        .collect::<Result<Vec<f64>>>()?;
    let loss = loss.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?[0];
    Ok(HiddenGradients { norms, loss, output, state: final_state, hidden, grads })
}

/// Just the norms of [`hidden_gradients`]: `‖∂L/∂h_t‖` for `t = 0..T`.
pub fn hidden_grad_norms<'a>(
    layer: impl Into<LayerRef<'a>>,
    input: &Tensor,
    state: Option<&State>,
    loss_fn: impl FnOnce(&Tensor, &State) -> Result<Tensor>,
) -> Result<Vec<f64>> {
    Ok(hidden_gradients(layer, input, state, loss_fn)?.norms)
}

/// The per-step factor `ρ` of a log-linear least-squares fit `‖∂L/∂h_t‖ ≈ C·ρ^(T−1−t)`: going one
/// step further back in time multiplies the gradient by `ρ` (`ρ < 1` vanishes, `ρ > 1` explodes).
/// Zero or non-finite norms are left out; `None` if fewer than two remain.
pub fn fit_decay_rate(norms: &[f64]) -> Option<f64> {
    let points: Vec<(f64, f64)> =
        norms.iter().enumerate().filter(|(_, n)| n.is_finite() && **n > 0.0).map(|(t, n)| (t as f64, n.ln())).collect();
    if points.len() < 2 {
        return None;
    }
    let count = points.len() as f64;
    let mean_t = points.iter().map(|p| p.0).sum::<f64>() / count;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / count;
    let cov: f64 = points.iter().map(|(t, y)| (t - mean_t) * (y - mean_y)).sum();
    let var: f64 = points.iter().map(|(t, _)| (t - mean_t).powi(2)).sum();
    Some((-cov / var).exp())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_a_geometric_rate() {
        let norms: Vec<f64> = (0..10).map(|t| 3.0 * 0.5f64.powi(9 - t)).collect();
        assert!((fit_decay_rate(&norms).unwrap() - 0.5).abs() < 1e-12);
        assert_eq!(fit_decay_rate(&[1.0]), None);
        assert_eq!(fit_decay_rate(&[0.0, 0.0, 1.0]), None);
    }
}
