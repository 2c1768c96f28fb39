//! The recurrent core shared by `Rnn`, `Lstm` and `Gru`: parameters, validation, stacking,
//! directions, inter-layer dropout, `batch_first` and unbatched input.
//!
//! - this file: [`Core`] (the parameters, mode and dropout generator), its entry points (full,
//!   looked-up, packed and padded input) and the stack over the fused layer op;
//! - `config.rs`: [`CoreConfig`], its validation and PyTorch's `extra_repr`;
//! - `check.rs`: the checks of inputs, states and parameters against the layer.

mod check;
mod config;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub(crate) use self::check::{check_backend, check_input_tensor, check_param};
pub(crate) use self::config::{checked, checked_bytes, py_bool, CoreConfig};
use crate::kernels::Dims;
use crate::nn::packed::{Layout, PackedSequence, Padding};
use crate::nn::State;
use crate::ops::recurrent::{FusedLayer, LayerSpec};
use crate::{Error, Result};

/// What the first layer of a stack reads.
pub(crate) enum StackInput {
    /// `x (N, I)`.
    Rows(Tensor),
    /// The rows `ids` (`N`, each below `V`) of `table (V, I)`.
    Lookup { table: Tensor, ids: Arc<[u32]> },
}

/// The parameters, mode and dropout generator of a layer stack.
pub(crate) struct Core {
    pub(crate) cfg: CoreConfig,
    /// Per layer: every direction's parameters in the fused op's flat order.
    layers: Vec<Vec<Tensor>>,
    named: Vec<(String, Tensor)>,
    training: AtomicBool,
    /// The dropout generator: ChaCha8, so its position can be saved and restored.
    rng: Mutex<ChaCha8Rng>,
    warnings: Vec<String>,
    dtype: DType,
    device: Device,
}

impl Core {
    pub(crate) fn new(cfg: CoreConfig, vb: VarBuilder) -> Result<Self> {
        let warnings = cfg.validate()?;
        let (dtype, device) = (vb.dtype(), vb.device().clone());
        check_backend(cfg.name, dtype, &device)?;
        let h = cfg.hidden_size;
        let p = cfg.output_hidden();
        let g = cfg.kind.gates();
        let k = 1.0 / (h as f64).sqrt();
        let init = Init::Uniform { lo: -k, up: k };
        let mut layers = Vec::with_capacity(cfg.num_layers);
        let mut named = Vec::new();
        for layer in 0..cfg.num_layers {
            let layer_input = if layer == 0 { cfg.input_size } else { cfg.directions() * p };
            let mut params = Vec::new();
            for dir in 0..cfg.directions() {
                let sfx = if dir == 1 { "_reverse" } else { "" };
                let mut shapes: Vec<(String, Vec<usize>)> = vec![
                    (format!("weight_ih_l{layer}{sfx}"), vec![g * h, layer_input]),
                    (format!("weight_hh_l{layer}{sfx}"), vec![g * h, p]),
                ];
                if cfg.bias {
                    shapes.push((format!("bias_ih_l{layer}{sfx}"), vec![g * h]));
                    shapes.push((format!("bias_hh_l{layer}{sfx}"), vec![g * h]));
                }
                if cfg.proj_size > 0 {
                    shapes.push((format!("weight_hr_l{layer}{sfx}"), vec![p, h]));
                }
                for (name, shape) in shapes {
                    let t = vb.get_with_hints(shape, &name, init)?;
                    check_param(cfg.name, &name, &t, dtype)?;
                    params.push(t.clone());
                    named.push((name, t));
                }
            }
            layers.push(params);
        }
        let rng = Mutex::new(ChaCha8Rng::seed_from_u64(cfg.seed));
        Ok(Self { cfg, layers, named, training: AtomicBool::new(true), rng, warnings, dtype, device })
    }

    pub(crate) fn weights(&self) -> Vec<(String, Tensor)> {
        self.named.clone()
    }

    pub(crate) fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// The dropout generator's position (how many 32-bit words it has produced).
    pub(crate) fn dropout_state(&self) -> u128 {
        self.rng.lock().map(|rng| rng.get_word_pos()).unwrap_or(0)
    }

    /// Moves the dropout generator to a position returned by [`Core::dropout_state`].
    pub(crate) fn set_dropout_state(&self, position: u128) {
        if let Ok(mut rng) = self.rng.lock() {
            rng.set_word_pos(position);
        }
    }

    pub(crate) fn set_training(&self, training: bool) {
        self.training.store(training, Ordering::Relaxed);
    }

    pub(crate) fn is_training(&self) -> bool {
        self.training.load(Ordering::Relaxed)
    }

    /// Runs the stack; with `grad = false` nothing joins candle's autograd graph (inputs and
    /// parameters are detached), so no workspace is kept for a backward.
    pub(crate) fn forward(&self, input: &Tensor, state: Option<&State>, grad: bool) -> Result<(Tensor, State)> {
        let cfg = &self.cfg;
        let name = cfg.name;
        let rank = input.rank();
        if rank != 2 && rank != 3 {
            return Err(Error::shape(
                name,
                format!("Expected input to be 2D or 3D, got {rank}D instead (shape {:?})", input.dims()),
                "pass (T, B, I), (B, T, I) with batch_first, or (T, I) for one unbatched sequence",
            ));
        }
        let unbatched = rank == 2;
        self.check_inputs(input, state, unbatched)?;
        let input = if grad { input.clone() } else { input.detach() };
        let x = if unbatched {
            input.unsqueeze(1)?
        } else if cfg.batch_first {
            input.transpose(0, 1)?
        } else {
            input.clone()
        };
        let (seq_len, batch, features) = x.dims3()?;
        self.check_features(features)?;
        let (h0, c0) = self.initial_state(state, unbatched, batch, grad)?;
        if seq_len == 0 {
            return Err(Error::shape(
                name,
                "Expected sequence length to be larger than 0 in RNN",
                "drop empty sequences before calling the layer",
            ));
        }
        let rows = x.contiguous()?.reshape((seq_len * batch, features))?;
        let out = self.run(
            StackInput::Rows(rows),
            seq_len,
            batch,
            None,
            &h0,
            c0.as_ref(),
            grad,
            self.batch_major(unbatched),
        )?;
        self.shape_output(out, seq_len, batch, unbatched)
    }

    /// Whether the last layer writes its rows batch-major: for a batched `batch_first` call.
    fn batch_major(&self, unbatched: bool) -> bool {
        self.cfg.batch_first && !unbatched
    }

    /// `y (T·B, D·P)` (batch-major when [`Core::batch_major`]), `h_n`, `c_n` in the caller's layout: `(T, B, ·)`, `(B, T, ·)` with
    /// `batch_first`, or `(T, ·)` and states without their batch dimension when unbatched.
    fn shape_output(
        &self,
        (y, mut h_n, mut c_n): (Tensor, Tensor, Option<Tensor>),
        seq_len: usize,
        batch: usize,
        unbatched: bool,
    ) -> Result<(Tensor, State)> {
        // With `batch_first` the rows came batch-major (see `batch_major`).
        let output = if unbatched {
            h_n = h_n.squeeze(1)?;
            c_n = c_n.map(|c| c.squeeze(1)).transpose()?;
            y
        } else if self.batch_major(unbatched) {
            y.reshape((batch, seq_len, self.output_size()))?
        } else {
            y.reshape((seq_len, batch, self.output_size()))?
        };
        Ok((output, State { h: h_n, c: c_n }))
    }

    /// The stack over the rows of an embedding table `table (V, I)` picked by `tokens`: the same
    /// result as [`Core::forward`] over `table[tokens]` (shape `tokens.dims() + (I,)`), for token
    /// ids `(T, B)`, `(B, T)` with `batch_first`, or `(T)` unbatched. When the table has at most
    /// as many rows as there are tokens, the first layer projects the table once (`V` products)
    /// instead of every token's row (`T·B`), and its backward adds each token's gate gradients
    /// into the table's rows instead of two products over all tokens; otherwise this is
    /// `forward` over the looked-up rows.
    pub(crate) fn forward_lookup(
        &self,
        table: &Tensor,
        tokens: &Tensor,
        state: Option<&State>,
        grad: bool,
    ) -> Result<(Tensor, State)> {
        let cfg = &self.cfg;
        let name = cfg.name;
        let (vocab, features) = match table.dims() {
            &[v, i] => (v, i),
            dims => {
                return Err(Error::shape(
                    name,
                    format!("an embedding table must be 2-D (num_embeddings, input_size), got shape {dims:?}"),
                    "pass the embedding's weight, e.g. `embedding.embeddings()`",
                ))
            }
        };
        self.check_tensor(table, "embedding table")?;
        self.check_features(features)?;
        let rank = tokens.rank();
        if tokens.dtype() != DType::U32 || (rank != 1 && rank != 2) {
            return Err(Error::shape(
                name,
                format!(
                    "expected token ids of dtype U32 and 1 or 2 dimensions, got {:?} of shape {:?}",
                    tokens.dtype(),
                    tokens.dims()
                ),
                "pass (T, B) ids, (B, T) with batch_first, or (T) for one unbatched sequence, as U32",
            ));
        }
        if !tokens.device().same_device(&self.device) {
            return Err(Error::Device {
                layer: name,
                message: format!("token ids are on {:?} but the parameters are on {:?}", tokens.device(), self.device),
                fix: "move the ids with `.to_device(&Device::Cpu)`".into(),
            });
        }
        let unbatched = rank == 1;
        // Time-major ids, (T, B).
        let ids_tb = if unbatched {
            tokens.unsqueeze(1)?
        } else if cfg.batch_first {
            tokens.t()?
        } else {
            tokens.clone()
        };
        let (seq_len, batch) = ids_tb.dims2()?;
        let ids: Vec<u32> = ids_tb.flatten_all()?.to_vec1()?;
        if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
            return Err(Error::shape(
                name,
                format!("token id {bad} is outside the embedding table of {vocab} rows"),
                "encode the input with the vocabulary the table was built for",
            ));
        }
        if vocab > ids.len() || ids.is_empty() {
            // Projecting the table would cost more than projecting the tokens' rows (and `forward`
            // refuses empty sequences).
            let rows = table.index_select(&Tensor::from_vec(ids, seq_len * batch, &self.device)?, 0)?;
            let x = rows.reshape((seq_len, batch, features))?;
            let x = if unbatched {
                x.squeeze(1)?
            } else if cfg.batch_first {
                x.transpose(0, 1)?
            } else {
                x
            };
            return self.forward(&x, state, grad);
        }
        self.check_inputs(table, state, unbatched)?;
        let (h0, c0) = self.initial_state(state, unbatched, batch, grad)?;
        let table = if grad { table.contiguous()? } else { table.detach().contiguous()? };
        let input = StackInput::Lookup { table, ids: ids.into() };
        let out = self.run(input, seq_len, batch, None, &h0, c0.as_ref(), grad, self.batch_major(unbatched))?;
        self.shape_output(out, seq_len, batch, unbatched)
    }

    /// Runs the stack over a packed batch; the state comes and goes in the caller's order.
    pub(crate) fn forward_packed(
        &self,
        packed: &PackedSequence,
        state: Option<&State>,
        grad: bool,
    ) -> Result<(PackedSequence, State)> {
        let data = packed.data();
        if data.rank() != 2 {
            return Err(Error::shape(
                self.cfg.name,
                format!("packed input data must be 2-D (N, input_size), got shape {:?}", data.dims()),
                "pack a padded batch of shape (T, B, input_size)",
            ));
        }
        self.check_inputs(data, state, false)?;
        self.check_features(data.dim(1)?)?;
        let batch = packed.batch();
        let (h0, c0) = self.initial_state(state, false, batch, grad)?;
        let data = if grad { data.clone() } else { data.detach() };
        let order: Vec<u32> = packed.order().into_iter().map(|b| b as u32).collect();
        let order = Tensor::new(order, &self.device)?;
        let (h0, c0) = (h0.index_select(&order, 1)?, c0.map(|c| c.index_select(&order, 1)).transpose()?);
        let sizes: Arc<[usize]> = packed.batch_sizes().into();
        let (y, h_n, c_n) = self.run(
            StackInput::Rows(data.contiguous()?),
            packed.max_len(),
            batch,
            Some(sizes),
            &h0,
            c0.as_ref(),
            grad,
            false,
        )?;
        let state = match packed.unsorted_indices() {
            Some(unsorted) => {
                let unorder = Tensor::new(unsorted.iter().map(|&j| j as u32).collect::<Vec<_>>(), &self.device)?;
                State { h: h_n.index_select(&unorder, 1)?, c: c_n.map(|c| c.index_select(&unorder, 1)).transpose()? }
            }
            None => State { h: h_n, c: c_n },
        };
        Ok((packed.with_data(y)?, state))
    }

    /// Runs the stack over a padded batch of sequences of given lengths, packed internally (no
    /// work on padding); padded output positions hold `padding.value`; states in the caller's
    /// order, each sequence's final state taken at its own last step.
    pub(crate) fn forward_padded(
        &self,
        input: &Tensor,
        padding: &Padding<'_>,
        state: Option<&State>,
        grad: bool,
    ) -> Result<(Tensor, State)> {
        let cfg = &self.cfg;
        if input.rank() != 3 {
            return Err(Error::shape(
                cfg.name,
                format!("a padded batch must be 3-D, got {}D (shape {:?})", input.rank(), input.dims()),
                if cfg.batch_first {
                    "pass (B, T, input_size); for one sequence use forward, or unsqueeze(0)"
                } else {
                    "pass (T, B, input_size); for one sequence use forward, or unsqueeze(1)"
                },
            ));
        }
        self.check_inputs(input, state, false)?;
        let (a, b, features) = input.dims3()?;
        self.check_features(features)?;
        let (steps, batch) = if cfg.batch_first { (b, a) } else { (a, b) };
        let layout = Layout::new(cfg.name, steps, batch, cfg.batch_first, padding.side, padding.lengths)?;
        let (h0, c0) = self.initial_state(state, false, batch, grad)?;
        let input = if grad { input.clone() } else { input.detach() };
        let data = layout.pack(&input)?;
        let order = layout.order_index(&self.device)?;
        let (h0, c0) = (h0.index_select(&order, 1)?, c0.map(|c| c.index_select(&order, 1)).transpose()?);
        let sizes: Arc<[usize]> = layout.batch_sizes.as_slice().into();
        let (y, h_n, c_n) = self.run(
            StackInput::Rows(data),
            layout.batch_sizes.len(),
            batch,
            Some(sizes),
            &h0,
            c0.as_ref(),
            grad,
            false,
        )?;
        let output = layout.pad(&y, padding.value)?;
        let unorder = layout.unorder_index(&self.device)?;
        let state =
            State { h: h_n.index_select(&unorder, 1)?, c: c_n.map(|c| c.index_select(&unorder, 1)).transpose()? };
        Ok((output, state))
    }

    /// `D · H_out`, the width of the output.
    pub(crate) fn output_size(&self) -> usize {
        self.cfg.directions() * self.cfg.output_hidden()
    }

    /// The stack over input rows `x (N, I)` (or a table's rows, [`StackInput::Lookup`]): `T·B`
    /// rows time-major, or packed with `batch_sizes`; with `batch_major` (full batches only) the
    /// returned `y`'s rows run `(B, T)`;
    /// `h0`, `c0` `(L·D, B, ·)` in the rows' batch order. Returns `y (N, D·P)`, `h_n`, `c_n`.
    /// Without `grad` the parameters are detached (the caller detached the inputs), so nothing
    /// joins the graph.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &self,
        input: StackInput,
        seq_len: usize,
        batch: usize,
        batch_sizes: Option<Arc<[usize]>>,
        h0: &Tensor,
        c0: Option<&Tensor>,
        grad: bool,
        batch_major: bool,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let cfg = &self.cfg;
        let name = cfg.name;
        let dirs = cfg.directions();
        let (p, h) = (cfg.output_hidden(), cfg.hidden_size);
        checked(name, &[seq_len, batch, cfg.kind.gates(), h.max(p) + 2, dirs])?;
        let (mut layer_input, mut lookup, rows) = match input {
            StackInput::Rows(x) => {
                let rows = x.dim(0)?;
                (x, None, rows)
            }
            StackInput::Lookup { table, ids } => {
                let rows = ids.len();
                (table, Some(ids), rows)
            }
        };
        let dropout = self.is_training() && cfg.dropout > 0.0;
        let mut x_is_output = false;
        let mut h_n = Vec::with_capacity(cfg.num_layers);
        let mut c_n = Vec::with_capacity(cfg.num_layers);
        for (layer, params) in self.layers.iter().enumerate() {
            let sizes = Dims {
                seq_len,
                batch,
                input_size: layer_input.dim(1)?,
                hidden_size: h,
                proj_size: p,
                batch_sizes: None,
            };
            let spec = LayerSpec {
                kind: cfg.kind,
                sizes,
                batch_sizes: batch_sizes.clone(),
                directions: dirs,
                bias: cfg.bias,
                lookup: lookup.take(),
                // The last layer's rows in the caller's order; the layers between stay time-major.
                batch_major: batch_major && batch_sizes.is_none() && layer + 1 == cfg.num_layers,
                x_is_output,
            };
            let mut state_parts = vec![h0.narrow(0, layer * dirs, dirs)?.flatten_all()?];
            if let Some(c0) = c0 {
                state_parts.push(c0.narrow(0, layer * dirs, dirs)?.flatten_all()?);
            }
            let flat_state = Tensor::cat(&state_parts, 0)?;
            let out = FusedLayer::apply(spec, &layer_input, &flat_state, params, grad)?;
            // `y` is the output's first rows, as they are; the final state follows, flat.
            let y = out.narrow(0, 0, rows)?;
            let state = out.narrow(0, rows, out.dim(0)? - rows)?.flatten_all()?;
            h_n.push(state.narrow(0, 0, dirs * batch * p)?.reshape((dirs, batch, p))?);
            if cfg.kind.has_cell_state() {
                c_n.push(state.narrow(0, dirs * batch * p, dirs * batch * h)?.reshape((dirs, batch, h))?);
            }
            // The next layer reads `y` out of the whole output (no narrow node), unless dropout
            // comes between.
            let last = layer + 1 == cfg.num_layers;
            x_is_output = !last && !dropout;
            layer_input = if last {
                y
            } else if dropout {
                self.dropout(&y)?
            } else {
                out
            };
        }
        let h_n = Tensor::cat(&h_n, 0)?;
        let c_n = if cfg.kind.has_cell_state() { Some(Tensor::cat(&c_n, 0)?) } else { None };
        Ok((layer_input, h_n, c_n))
    }

    /// Inverted dropout with a fresh Bernoulli(1 − p) mask per element.
    fn dropout(&self, y: &Tensor) -> Result<Tensor> {
        let p = self.cfg.dropout;
        let n = y.elem_count();
        let mask: Vec<f64> = {
            let mut rng = self.rng.lock().map_err(|_| candle_core::Error::Msg("poisoned dropout generator".into()))?;
            if p >= 1.0 {
                vec![0.0; n]
            } else {
                let scale = 1.0 / (1.0 - p);
                (0..n).map(|_| if rng.gen::<f64>() < p { 0.0 } else { scale }).collect()
            }
        };
        let mask = Tensor::from_vec(mask, y.shape(), &self.device)?.to_dtype(self.dtype)?;
        Ok(y.mul(&mask)?)
    }
}
