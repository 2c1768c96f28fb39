//! Sequence classification, the tutorials' `TextClassifier(vocab, embed, hidden, num_classes,
//! num_layers=2, bidirectional=True)` called as `model(x, lengths)`: token ids → embedding →
//! stacked (Bi)LSTM/GRU/RNN over each sequence's own length (no sorting, no work on padding) →
//! pooling (`last`, `mean`, `max`) → linear → class logits.

use std::fmt;

use candle_core::{DType, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use super::CellType;
use crate::nn::{embedding, linear, Gru, GruConfig, Lstm, LstmConfig, Padding, Recurrent, Rnn, RnnConfig};
use crate::repr::ModuleRepr;
use crate::{Error, Result};

/// How a sequence's outputs become one vector.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// The last layer's final state (both directions' for a bidirectional stack, each at its own
    /// end: the forward direction's last real step, the backward direction's first).
    #[default]
    Last,
    /// The mean of the outputs over the real steps.
    Mean,
    /// The maximum of each output feature over the real steps.
    Max,
}

impl Pooling {
    /// `last`, `mean` or `max`.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Last => "last",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
        }
    }
}

/// The sizes of a [`SequenceClassifier`]; `new(vocab_size, num_classes)` gives the defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Token ids, `<pad>` (0) and `<unk>` (1) included.
    pub vocab_size: usize,
    /// Classes.
    pub num_classes: usize,
    /// The recurrent cell (default LSTM).
    pub cell: CellType,
    /// The size of a token's embedding (default 64).
    pub embedding_size: usize,
    /// `H` (default 128).
    pub hidden_size: usize,
    /// `L` (default 1).
    pub num_layers: usize,
    /// Both directions (default true).
    pub bidirectional: bool,
    /// Dropout between recurrent layers, in training mode (default 0).
    pub dropout: f64,
    /// The pooling (default `last`).
    pub pooling: Pooling,
}

impl ClassifierConfig {
    /// The default sizes.
    pub fn new(vocab_size: usize, num_classes: usize) -> Self {
        Self {
            vocab_size,
            num_classes,
            cell: CellType::Lstm,
            embedding_size: 64,
            hidden_size: 128,
            num_layers: 1,
            bidirectional: true,
            dropout: 0.0,
            pooling: Pooling::Last,
        }
    }
}

/// `Embedding → recurrent stack → pooling → Linear`. Parameters under PyTorch's names:
/// `embedding.weight`, `rnn.weight_ih_l0`, … (`_reverse` for the backward direction),
/// `linear.weight`, `linear.bias`.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use recur::models::{ClassifierConfig, SequenceClassifier};
/// let varmap = candle_nn::VarMap::new();
/// let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
/// let model = SequenceClassifier::new(ClassifierConfig { hidden_size: 8, ..ClassifierConfig::new(12, 3) }, vb)?;
/// // Two sequences, right-padded with 0, of lengths 3 and 1.
/// let ids = Tensor::new(&[[4u32, 5, 6], [7, 0, 0]], &Device::Cpu)?;
/// let logits = model.forward(&ids, &[3, 1])?;
/// assert_eq!(logits.dims(), &[2, 3]);
/// # Ok::<(), recur::Error>(())
/// ```
pub struct SequenceClassifier {
    config: ClassifierConfig,
    embedding: Embedding,
    rnn: Box<dyn Recurrent>,
    linear: Linear,
}

impl SequenceClassifier {
    /// Builds the model; parameters come from (or are created in) `vb`.
    pub fn new(config: ClassifierConfig, vb: VarBuilder) -> Result<Self> {
        if config.num_classes < 2 {
            return Err(Error::config(
                "SequenceClassifier",
                "num_classes must be at least 2",
                "give two classes or more",
            ));
        }
        let embedding = embedding(config.vocab_size, config.embedding_size, vb.pp("embedding"))?;
        let (i, h, layers, dropout, bidirectional) =
            (config.embedding_size, config.hidden_size, config.num_layers, config.dropout, config.bidirectional);
        let rvb = vb.pp("rnn");
        let rnn: Box<dyn Recurrent> = match config.cell {
            CellType::Lstm => Box::new(Lstm::new(
                LstmConfig { num_layers: layers, dropout, bidirectional, batch_first: true, ..LstmConfig::new(i, h) },
                rvb,
            )?),
            CellType::Gru => Box::new(Gru::new(
                GruConfig { num_layers: layers, dropout, bidirectional, batch_first: true, ..GruConfig::new(i, h) },
                rvb,
            )?),
            CellType::Rnn => Box::new(Rnn::new(
                RnnConfig { num_layers: layers, dropout, bidirectional, batch_first: true, ..RnnConfig::new(i, h) },
                rvb,
            )?),
        };
        let linear = linear(rnn.output_size(), config.num_classes, vb.pp("linear"))?;
        Ok(Self { config, embedding, rnn, linear })
    }

    /// The configuration.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// The recurrent stack.
    pub fn rnn(&self) -> &dyn Recurrent {
        self.rnn.as_ref()
    }

    /// Logits `(B, C)` for right-padded token ids `(B, T)` (u32) of the given lengths.
    pub fn forward(&self, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        self.run(ids, lengths, true)
    }

    /// [`forward`](Self::forward) without autograd.
    pub fn forward_no_grad(&self, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        Ok(self.run(ids, lengths, false)?.detach())
    }

    fn run(&self, ids: &Tensor, lengths: &[usize], grad: bool) -> Result<Tensor> {
        let (batch, steps) = self.check(ids, lengths)?;
        let x = self.embedding.forward(ids)?;
        let padding = Padding::right(lengths);
        let (output, state) = if grad {
            self.rnn.forward_padded(&x, &padding, None)?
        } else {
            self.rnn.forward_padded_no_grad(&x, &padding, None)?
        };
        let pooled = match self.config.pooling {
            Pooling::Last => {
                let d = if self.config.bidirectional { 2 } else { 1 };
                let layers = state.h.dim(0)?;
                let last: Vec<Tensor> =
                    (layers - d..layers).map(|l| state.h.get(l)).collect::<candle_core::Result<_>>()?;
                Tensor::cat(&last, 1)?
            }
            Pooling::Mean => {
                let mask = self.mask(lengths, batch, steps, output.dtype(), 1.0, 0.0)?;
                let lens: Vec<f32> = lengths.iter().map(|&l| l as f32).collect();
                let lens = Tensor::from_vec(lens, (batch, 1), output.device())?.to_dtype(output.dtype())?;
                output.broadcast_mul(&mask)?.sum(1)?.broadcast_div(&lens)?
            }
            Pooling::Max => {
                let penalty = self.mask(lengths, batch, steps, output.dtype(), 0.0, -1e9)?;
                output.broadcast_add(&penalty)?.max(1)?
            }
        };
        Ok(self.linear.forward(&pooled)?)
    }

    /// `(B, T, 1)`: `real` at the real steps, `pad` past each end.
    fn mask(&self, lengths: &[usize], batch: usize, steps: usize, dtype: DType, real: f32, pad: f32) -> Result<Tensor> {
        let values: Vec<f32> =
            lengths.iter().flat_map(|&l| (0..steps).map(move |t| if t < l { real } else { pad })).collect();
        Ok(Tensor::from_vec(values, (batch, steps, 1), self.linear.weight().device())?.to_dtype(dtype)?)
    }

    fn check(&self, ids: &Tensor, lengths: &[usize]) -> Result<(usize, usize)> {
        if ids.dtype() != DType::U32 || ids.rank() != 2 {
            return Err(Error::shape(
                "SequenceClassifier",
                format!("expected token ids (B, T) of dtype U32, got {:?} of shape {:?}", ids.dtype(), ids.dims()),
                "pass a (batch, steps) U32 tensor of token ids, right-padded",
            ));
        }
        let (batch, steps) = ids.dims2()?;
        if lengths.len() != batch || lengths.iter().any(|&l| l == 0 || l > steps) {
            return Err(Error::shape(
                "SequenceClassifier",
                format!("expected {batch} lengths in 1..={steps}, got {lengths:?}"),
                "pass each sequence's length (at least 1, at most the padded length)",
            ));
        }
        if batch * steps > 0 {
            let max = ids.flatten_all()?.max(0)?.to_scalar::<u32>()?;
            if max as usize >= self.config.vocab_size {
                return Err(Error::shape(
                    "SequenceClassifier",
                    format!("token id {max} is outside the vocabulary of {} ids", self.config.vocab_size),
                    "encode the texts with the model's own vocabulary",
                ));
            }
        }
        Ok((batch, steps))
    }

    /// Dropout between recurrent layers on (training) or off (evaluation).
    pub fn set_training(&self, training: bool) {
        self.rnn.set_training(training);
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        let rnn: usize = self.rnn.weights().iter().map(|(_, t)| t.elem_count()).sum();
        self.embedding.embeddings().elem_count() + rnn + self.linear.weight().elem_count() + self.config.num_classes
    }
}

impl fmt::Display for SequenceClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rnn = self.rnn.to_string();
        ModuleRepr::new("SequenceClassifier")
            .child(
                "embedding",
                ModuleRepr::leaf(format!("Embedding({}, {})", self.config.vocab_size, self.config.embedding_size)),
            )
            .child("rnn", ModuleRepr::leaf(rnn))
            .child("pooling", ModuleRepr::leaf(format!("Pooling({})", self.config.pooling.name())))
            .child("linear", crate::repr::linear(self.rnn.output_size(), self.config.num_classes, true))
            .fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn model(pooling: Pooling, cell: CellType, bidirectional: bool) -> SequenceClassifier {
        let varmap = candle_nn::VarMap::new();
        let vb = crate::seeded_var_builder(&varmap, 5, DType::F32, &Device::Cpu);
        let config = ClassifierConfig {
            hidden_size: 6,
            embedding_size: 4,
            num_layers: 2,
            bidirectional,
            cell,
            pooling,
            ..ClassifierConfig::new(9, 3)
        };
        SequenceClassifier::new(config, vb).unwrap()
    }

    /// A sequence's logits do not depend on the padding or on the other rows of its batch, for
    /// every pooling, cell and direction count.
    #[test]
    fn padding_and_batch_mates_change_nothing() {
        for pooling in [Pooling::Last, Pooling::Mean, Pooling::Max] {
            for cell in CellType::ALL {
                for bi in [false, true] {
                    let m = model(pooling, cell, bi);
                    let alone = m.forward_no_grad(&Tensor::new(&[[3u32, 4, 5]], &Device::Cpu).unwrap(), &[3]).unwrap();
                    let batch = Tensor::new(&[[3u32, 4, 5, 0, 0], [6, 7, 8, 2, 1]], &Device::Cpu).unwrap();
                    let both = m.forward_no_grad(&batch, &[3, 5]).unwrap();
                    let (a, b) = (alone.to_vec2::<f32>().unwrap(), both.to_vec2::<f32>().unwrap());
                    for (x, y) in a[0].iter().zip(&b[0]) {
                        assert!((x - y).abs() < 1e-5, "{pooling:?} {cell} bi={bi}: {a:?} vs {b:?}");
                    }
                }
            }
        }
    }

    #[test]
    fn bad_inputs_are_typed_errors() {
        let m = model(Pooling::Last, CellType::Lstm, true);
        let ids = Tensor::new(&[[3u32, 4]], &Device::Cpu).unwrap();
        assert!(m.forward(&ids, &[3]).is_err(), "a length past the padded length");
        assert!(m.forward(&ids, &[0]).is_err(), "an empty sequence");
        assert!(
            m.forward(&Tensor::new(&[[3u32, 40]], &Device::Cpu).unwrap(), &[2]).is_err(),
            "an id past the vocabulary"
        );
        assert!(m.to_string().starts_with("SequenceClassifier("), "{m}");
    }
}
