//! `Rnn`, `Lstm` and `Gru`: PyTorch's `nn.RNN`, `nn.LSTM` and `nn.GRU`.
//!
//! The three are thin names over one recurrent core, so they share every method name, argument
//! order and return shape; the [`Recurrent`] trait lets code hold any of them.

use std::fmt;

use candle_core::Tensor;
use candle_nn::VarBuilder;

use crate::kernels::rnn::Activation;
use crate::nn::core::Core;
use crate::nn::{GruConfig, LstmConfig, Nonlinearity, PackedSequence, Padding, RnnConfig, State};
use crate::ops::recurrent::CellKind;
use crate::Result;

/// What every recurrent layer offers; object safe, so a `Box<dyn Recurrent>` can hold an RNN, an
/// LSTM or a GRU chosen at run time.
pub trait Recurrent: fmt::Display + Send + Sync {
    /// Runs the layer over a sequence; see the layer's own `forward` for shapes.
    fn forward(&self, input: &Tensor, state: Option<&State>) -> Result<(Tensor, State)>;
    /// The same without autograd (PyTorch's `torch.no_grad()`): no graph, no saved workspaces.
    fn forward_no_grad(&self, input: &Tensor, state: Option<&State>) -> Result<(Tensor, State)>;
    /// Runs the layer over the rows of an embedding table picked by token ids; see the layer's
    /// own `forward_embedded`.
    fn forward_embedded(&self, table: &Tensor, tokens: &Tensor, state: Option<&State>) -> Result<(Tensor, State)>;
    /// `forward_embedded` without autograd.
    fn forward_embedded_no_grad(
        &self,
        table: &Tensor,
        tokens: &Tensor,
        state: Option<&State>,
    ) -> Result<(Tensor, State)>;
    /// Runs the layer over a packed batch; see the layer's own `forward_packed`.
    fn forward_packed(&self, input: &PackedSequence, state: Option<&State>) -> Result<(PackedSequence, State)>;
    /// Runs the layer over a padded batch of sequences of given lengths; see the layer's own
    /// `forward_padded`.
    fn forward_padded(&self, input: &Tensor, padding: &Padding<'_>, state: Option<&State>) -> Result<(Tensor, State)>;
    /// `forward_packed` without autograd.
    fn forward_packed_no_grad(&self, input: &PackedSequence, state: Option<&State>) -> Result<(PackedSequence, State)>;
    /// `forward_padded` without autograd.
    fn forward_padded_no_grad(
        &self,
        input: &Tensor,
        padding: &Padding<'_>,
        state: Option<&State>,
    ) -> Result<(Tensor, State)>;
    /// [`forward_padded`](Recurrent::forward_padded) with right padding and zeros at the padded
    /// output positions.
    fn forward_with_lengths(
        &self,
        input: &Tensor,
        lengths: &[usize],
        state: Option<&State>,
    ) -> Result<(Tensor, State)> {
        self.forward_padded(input, &Padding::right(lengths), state)
    }
    /// Switches between training mode (inter-layer dropout on) and evaluation mode.
    fn set_training(&self, training: bool);
    /// The position of the dropout generator, to save with a checkpoint so a resumed run draws
    /// the same masks as an uninterrupted one.
    fn dropout_state(&self) -> u128;
    /// Restores a position returned by [`Recurrent::dropout_state`].
    fn set_dropout_state(&self, position: u128);
    /// Whether the layer is in training mode.
    fn is_training(&self) -> bool;
    /// The parameters under their PyTorch names (no prefix), in PyTorch's registration order.
    fn weights(&self) -> Vec<(String, Tensor)>;
    /// Warnings PyTorch would have printed at construction (the library never prints).
    fn warnings(&self) -> &[String];
    /// Size of the last dimension of the output: `D · H_out`.
    fn output_size(&self) -> usize;
}

macro_rules! recurrent_layer {
    ($(#[$doc:meta])* $name:ident, $config:ident) => {
        $(#[$doc])*
        pub struct $name {
            config: $config,
            core: Core,
        }

        impl $name {
            /// The configuration the layer was built from.
            pub fn config(&self) -> &$config {
                &self.config
            }

            /// Runs the layer over a sequence.
            ///
            /// Shapes (`D` = 2 if bidirectional else 1, `H_out` = `proj_size` if set else
            /// `hidden_size`):
            /// - `input`: `(T, B, I)`, `(B, T, I)` with `batch_first`, or unbatched `(T, I)`;
            /// - `state`: `None` for zeros, or `h` `(L·D, B, H_out)` (`(L·D, H_out)` unbatched)
            ///   plus, for an LSTM, `c` `(L·D, B, H)`;
            /// - returns the output `(T, B, D·H_out)` (`(B, T, D·H_out)` with `batch_first`,
            ///   `(T, D·H_out)` unbatched) and the final state, same shapes as `state`, indexed
            ///   `layer·D + direction`.
            ///
            /// Errors name the offending tensor, what was expected and what came.
            pub fn forward(&self, input: &Tensor, state: Option<&State>) -> Result<(Tensor, State)> {
                self.core.forward(input, state, true)
            }

            /// [`forward`](Self::forward) without autograd, like PyTorch under `torch.no_grad()`:
            /// nothing joins candle's graph (the outputs track no gradient) and nothing is kept
            /// for a backward, so inference runs lighter.
            pub fn forward_no_grad(&self, input: &Tensor, state: Option<&State>) -> Result<(Tensor, State)> {
                self.core.forward(input, state, false)
            }

            /// Embedding and layer in one: the same result, output and gradients, as
            /// [`forward`](Self::forward) over `table[tokens]`, the rows of the embedding table
            /// `table (V, I)` that the token ids pick (`embedding.forward(tokens)` in candle,
            /// `embedding(tokens)` in PyTorch), but cheaper for the small vocabularies of
            /// character and word models.
            ///
            /// `tokens` are U32 ids below `V`: `(T, B)`, `(B, T)` with `batch_first`, or `(T)`
            /// unbatched; the output and state are shaped as `forward`'s. When `V` is at most the
            /// number of tokens, the first layer projects the table once per direction (`V` rows
            /// through `W_ih` instead of `T·B`) and gathers each token's projected row, and its
            /// backward adds each token's gate gradients into its row of the table's gradient
            /// instead of two products over all tokens; the gradients of the table, `W_ih` and
            /// `b_ih` follow from that one `(V, G·H)` gradient. The sums run in another order than
            /// `forward`'s, so results agree to rounding, not bitwise. With a larger table the
            /// rows are looked up and `forward` runs on them.
            ///
            /// Errors: a table that is not `(V, input_size)` or has another dtype or device than
            /// the layer, ids that are not U32 of 1 or 2 dimensions, and any id `≥ V`.
            pub fn forward_embedded(
                &self,
                table: &Tensor,
                tokens: &Tensor,
                state: Option<&State>,
            ) -> Result<(Tensor, State)> {
                self.core.forward_lookup(table, tokens, state, true)
            }

            /// [`forward_embedded`](Self::forward_embedded) without autograd (no graph, no saved
            /// workspaces).
            pub fn forward_embedded_no_grad(
                &self,
                table: &Tensor,
                tokens: &Tensor,
                state: Option<&State>,
            ) -> Result<(Tensor, State)> {
                self.core.forward_lookup(table, tokens, state, false)
            }

            /// Runs the layer over a packed batch of variable-length sequences (PyTorch's
            /// `forward(PackedSequence)`), doing no work on padding.
            ///
            /// `input.data()` is `(N, I)`; the output is packed the same way, `(N, D·H_out)`.
            /// `state` and the returned state are `(L·D, B, ·)` in the caller's batch order (not
            /// the sorted order), and each sequence's final state is taken at its own last step —
            /// for the reverse direction, at step 0, after starting from the sequence's own end.
            pub fn forward_packed(
                &self,
                input: &PackedSequence,
                state: Option<&State>,
            ) -> Result<(PackedSequence, State)> {
                self.core.forward_packed(input, state, true)
            }

            /// Runs the layer over a padded batch `(T, B, I)` (`(B, T, I)` with `batch_first`)
            /// whose sequences have the lengths in `padding`, in any order: no sorting, packing
            /// or unpacking is asked of the caller, and no work is done on padding.
            ///
            /// Returns the padded output, same layout, with `padding`'s value (zeros unless set)
            /// at the padded positions, and the state of each sequence at its own last step, in
            /// the batch's order. Padding may be on the right ([`Padding::right`]) or the left
            /// ([`Padding::left`]). Padding values in the input are never read (NaN is harmless)
            /// and get exactly zero gradient.
            pub fn forward_padded(
                &self,
                input: &Tensor,
                padding: &Padding<'_>,
                state: Option<&State>,
            ) -> Result<(Tensor, State)> {
                self.core.forward_padded(input, padding, state, true)
            }

            /// [`forward_packed`](Self::forward_packed) without autograd (no graph, no saved
            /// workspaces).
            pub fn forward_packed_no_grad(
                &self,
                input: &PackedSequence,
                state: Option<&State>,
            ) -> Result<(PackedSequence, State)> {
                self.core.forward_packed(input, state, false)
            }

            /// [`forward_padded`](Self::forward_padded) without autograd (no graph, no saved
            /// workspaces).
            pub fn forward_padded_no_grad(
                &self,
                input: &Tensor,
                padding: &Padding<'_>,
                state: Option<&State>,
            ) -> Result<(Tensor, State)> {
                self.core.forward_padded(input, padding, state, false)
            }

            /// [`forward_padded`](Self::forward_padded) with right padding and zeros at the padded
            /// output positions.
            pub fn forward_with_lengths(
                &self,
                input: &Tensor,
                lengths: &[usize],
                state: Option<&State>,
            ) -> Result<(Tensor, State)> {
                self.core.forward_padded(input, &Padding::right(lengths), state, true)
            }

            /// Switches between training mode (inter-layer dropout on; the default) and evaluation
            /// mode. Backward works the same in both.
            pub fn set_training(&self, training: bool) {
                self.core.set_training(training)
            }

            /// Whether the layer is in training mode.
            pub fn is_training(&self) -> bool {
                self.core.is_training()
            }

            /// The position of the dropout generator (seeded by the config's `seed`): save it
            /// with a checkpoint and restore it with
            /// [`set_dropout_state`](Self::set_dropout_state) so a resumed run draws the same
            /// dropout masks as an uninterrupted one.
            pub fn dropout_state(&self) -> u128 {
                self.core.dropout_state()
            }

            /// Moves the dropout generator to a position from [`dropout_state`](Self::dropout_state).
            pub fn set_dropout_state(&self, position: u128) {
                self.core.set_dropout_state(position)
            }

            /// The parameters under their PyTorch names (no prefix), in registration order:
            /// `weight_ih_l0`, `weight_hh_l0`, `bias_ih_l0`, `bias_hh_l0`, (`weight_hr_l0`),
            /// then `…_reverse`, then layer 1…
            pub fn weights(&self) -> Vec<(String, Tensor)> {
                self.core.weights()
            }

            /// Warnings PyTorch would have printed at construction (e.g. dropout with one layer).
            pub fn warnings(&self) -> &[String] {
                self.core.warnings()
            }

            /// Size of the last dimension of the output: `D · H_out`.
            pub fn output_size(&self) -> usize {
                let dirs = if self.core.cfg.bidirectional { 2 } else { 1 };
                dirs * self.core.cfg.output_hidden()
            }
        }

        impl Recurrent for $name {
            fn forward(&self, input: &Tensor, state: Option<&State>) -> Result<(Tensor, State)> {
                $name::forward(self, input, state)
            }
            fn forward_no_grad(&self, input: &Tensor, state: Option<&State>) -> Result<(Tensor, State)> {
                $name::forward_no_grad(self, input, state)
            }
            fn forward_embedded(
                &self,
                table: &Tensor,
                tokens: &Tensor,
                state: Option<&State>,
            ) -> Result<(Tensor, State)> {
                $name::forward_embedded(self, table, tokens, state)
            }
            fn forward_embedded_no_grad(
                &self,
                table: &Tensor,
                tokens: &Tensor,
                state: Option<&State>,
            ) -> Result<(Tensor, State)> {
                $name::forward_embedded_no_grad(self, table, tokens, state)
            }
            fn forward_packed(
                &self,
                input: &PackedSequence,
                state: Option<&State>,
            ) -> Result<(PackedSequence, State)> {
                $name::forward_packed(self, input, state)
            }
            fn forward_padded(
                &self,
                input: &Tensor,
                padding: &Padding<'_>,
                state: Option<&State>,
            ) -> Result<(Tensor, State)> {
                $name::forward_padded(self, input, padding, state)
            }
            fn forward_packed_no_grad(
                &self,
                input: &PackedSequence,
                state: Option<&State>,
            ) -> Result<(PackedSequence, State)> {
                $name::forward_packed_no_grad(self, input, state)
            }
            fn forward_padded_no_grad(
                &self,
                input: &Tensor,
                padding: &Padding<'_>,
                state: Option<&State>,
            ) -> Result<(Tensor, State)> {
                $name::forward_padded_no_grad(self, input, padding, state)
            }
            fn set_training(&self, training: bool) {
                $name::set_training(self, training)
            }
            fn is_training(&self) -> bool {
                $name::is_training(self)
            }
            fn dropout_state(&self) -> u128 {
                $name::dropout_state(self)
            }
            fn set_dropout_state(&self, position: u128) {
                $name::set_dropout_state(self, position)
            }
            fn weights(&self) -> Vec<(String, Tensor)> {
                $name::weights(self)
            }
            fn warnings(&self) -> &[String] {
                $name::warnings(self)
            }
            fn output_size(&self) -> usize {
                $name::output_size(self)
            }
        }

        impl candle_core::Module for $name {
            /// The output sequence for a zero initial state (the final state is dropped).
            fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
                Ok($name::forward(self, xs, None)?.0)
            }
        }

        impl fmt::Display for $name {
            /// PyTorch's repr, e.g. `LSTM(10, 20, num_layers=2, batch_first=True)`.
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.core.cfg.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.core.cfg.fmt(f)
            }
        }
    };
}

recurrent_layer! {
    /// A multi-layer Elman RNN, PyTorch's `nn.RNN`: `h' = act(x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh)`.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use recur::{Rnn, RnnConfig};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
    /// let rnn = Rnn::new(RnnConfig { num_layers: 2, ..RnnConfig::new(10, 20) }, vb)?;
    /// let x = Tensor::zeros((5, 3, 10), DType::F32, &Device::Cpu)?;
    /// let (out, state) = rnn.forward(&x, None)?;
    /// assert_eq!(out.dims(), &[5, 3, 20]);
    /// assert_eq!(state.h.dims(), &[2, 3, 20]);
    /// assert_eq!(rnn.to_string(), "RNN(10, 20, num_layers=2)");
    /// # Ok::<(), recur::Error>(())
    /// ```
    Rnn, RnnConfig
}

recurrent_layer! {
    /// A multi-layer LSTM, PyTorch's `nn.LSTM`, gates `i, f, g, o`, optional projection of `h`.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use recur::{Lstm, LstmConfig};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
    /// let cfg = LstmConfig { num_layers: 2, batch_first: true, bidirectional: true, ..LstmConfig::new(10, 20) };
    /// let lstm = Lstm::new(cfg, vb)?;
    /// let x = Tensor::zeros((3, 5, 10), DType::F32, &Device::Cpu)?; // (B, T, I)
    /// let (out, state) = lstm.forward(&x, None)?;
    /// assert_eq!(out.dims(), &[3, 5, 40]);
    /// assert_eq!(state.h.dims(), &[4, 3, 20]);
    /// assert_eq!(state.c.unwrap().dims(), &[4, 3, 20]);
    /// assert_eq!(lstm.to_string(), "LSTM(10, 20, num_layers=2, batch_first=True, bidirectional=True)");
    /// # Ok::<(), recur::Error>(())
    /// ```
    Lstm, LstmConfig
}

recurrent_layer! {
    /// A multi-layer GRU, PyTorch's `nn.GRU`, gates `r, z, n` with `b_hn` inside `r ⊙ (W_hn h + b_hn)`.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use recur::{Gru, GruConfig};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
    /// let gru = Gru::new(GruConfig::new(10, 20), vb)?;
    /// let x = Tensor::zeros((5, 10), DType::F32, &Device::Cpu)?; // unbatched (T, I)
    /// let (out, state) = gru.forward(&x, None)?;
    /// assert_eq!(out.dims(), &[5, 20]);
    /// assert_eq!(state.h.dims(), &[1, 20]);
    /// # Ok::<(), recur::Error>(())
    /// ```
    Gru, GruConfig
}

impl Rnn {
    /// Builds the layer; parameters come from `vb` under PyTorch's names, default-initialised
    /// U(−1/√H, 1/√H) when `vb` creates them.
    pub fn new(config: RnnConfig, vb: VarBuilder) -> Result<Self> {
        let act = match config.nonlinearity {
            Nonlinearity::Tanh => Activation::Tanh,
            Nonlinearity::Relu => Activation::Relu,
        };
        let core = Core::new(config.core("RNN", CellKind::Rnn(act), 0), vb)?;
        Ok(Self { config, core })
    }
}

impl Lstm {
    /// Builds the layer; parameters come from `vb` under PyTorch's names, default-initialised
    /// U(−1/√H, 1/√H) when `vb` creates them.
    pub fn new(config: LstmConfig, vb: VarBuilder) -> Result<Self> {
        let core = Core::new(config.core("LSTM", CellKind::Lstm, config.proj_size), vb)?;
        Ok(Self { config, core })
    }
}

impl Gru {
    /// Builds the layer; parameters come from `vb` under PyTorch's names, default-initialised
    /// U(−1/√H, 1/√H) when `vb` creates them.
    pub fn new(config: GruConfig, vb: VarBuilder) -> Result<Self> {
        let core = Core::new(config.core("GRU", CellKind::Gru, 0), vb)?;
        Ok(Self { config, core })
    }
}
