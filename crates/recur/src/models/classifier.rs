//! Sequence classification, the tutorials' `TextClassifier(vocab, embed, hidden, num_classes,
//! num_layers=2, bidirectional=True)` called as `model(x, lengths)`: token ids → embedding (or
//! dense feature vectors per step, e.g. speech frames) → stacked (Bi)LSTM/GRU/RNN over each
//! sequence's own length (no sorting, no work on padding) → pooling (`last`, `mean`, `max`,
//! `attention`) → linear → class logits.

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
    /// Additive attention over the real steps (Yang et al. 2016, "Hierarchical attention
    /// networks"): `u_t = tanh(W o_t + b)`, `α = softmax_t(v·u_t)` over the real steps only,
    /// pooled `Σ_t α_t o_t`; parameters `attention.proj.weight`, `attention.proj.bias`,
    /// `attention.context` (`(1, D)`, PyTorch's `nn.Linear(D, 1, bias=False)` weight).
    Attention,
}

impl Pooling {
    /// `last`, `mean` or `max`.
    pub fn name(self) -> &'static str {
        match self {
            Pooling::Last => "last",
            Pooling::Mean => "mean",
            Pooling::Max => "max",
            Pooling::Attention => "attention",
        }
    }
}

/// The sizes of a [`SequenceClassifier`]; `new(vocab_size, num_classes)` gives the defaults.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Token ids, `<pad>` (0) and `<unk>` (1) included (unused with dense inputs).
    pub vocab_size: usize,
    /// Numbers per step of dense inputs (`(B, T, input_size)` floats, no embedding); `0` (the
    /// default) for token ids through the embedding.
    #[serde(default)]
    pub input_size: usize,
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
    /// Keep the embedding as it is (pretrained vectors, say): no gradient reaches it.
    #[serde(default)]
    pub freeze_embedding: bool,
}

impl ClassifierConfig {
    /// The default sizes.
    pub fn new(vocab_size: usize, num_classes: usize) -> Self {
        Self {
            vocab_size,
            input_size: 0,
            num_classes,
            cell: CellType::Lstm,
            embedding_size: 64,
            hidden_size: 128,
            num_layers: 1,
            bidirectional: true,
            dropout: 0.0,
            pooling: Pooling::Last,
            freeze_embedding: false,
        }
    }
}

/// `Embedding → recurrent stack → pooling → Linear` (no embedding for dense inputs). Parameters
/// under PyTorch's names: `embedding.weight`, `rnn.weight_ih_l0`, … (`_reverse` for the backward
/// direction), `attention.*` for attention pooling, `linear.weight`, `linear.bias`.
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
    embedding: Option<Embedding>,
    rnn: Box<dyn Recurrent>,
    attention: Option<(Linear, Tensor)>,
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
        let (embedding, i) = if config.input_size > 0 {
            (None, config.input_size)
        } else {
            (Some(embedding(config.vocab_size, config.embedding_size, vb.pp("embedding"))?), config.embedding_size)
        };
        let (h, layers, dropout, bidirectional) =
            (config.hidden_size, config.num_layers, config.dropout, config.bidirectional);
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
        let d = rnn.output_size();
        let attention = if config.pooling == Pooling::Attention {
            let avb = vb.pp("attention");
            let bound = 1.0 / (d as f64).sqrt();
            let context = avb.get_with_hints((1, d), "context", candle_nn::Init::Uniform { lo: -bound, up: bound })?;
            Some((linear(d, d, avb.pp("proj"))?, context))
        } else {
            None
        };
        let linear = linear(d, config.num_classes, vb.pp("linear"))?;
        Ok(Self { config, embedding, rnn, attention, linear })
    }

    /// The configuration.
    pub fn config(&self) -> &ClassifierConfig {
        &self.config
    }

    /// The recurrent stack.
    pub fn rnn(&self) -> &dyn Recurrent {
        self.rnn.as_ref()
    }

    /// Logits `(B, C)` for right-padded token ids `(B, T)` (u32) of the given lengths, or, for
    /// a model of dense inputs, right-padded features `(B, T, input_size)` (float).
    pub fn forward(&self, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        self.run(ids, lengths, true)
    }

    /// [`forward`](Self::forward) without autograd.
    pub fn forward_no_grad(&self, ids: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        Ok(self.run(ids, lengths, false)?.detach())
    }

    fn run(&self, ids: &Tensor, lengths: &[usize], grad: bool) -> Result<Tensor> {
        let (batch, steps) = self.check(ids, lengths)?;
        let x = match &self.embedding {
            Some(e) if self.config.freeze_embedding => {
                Embedding::new(e.embeddings().detach(), self.config.embedding_size).forward(ids)?
            }
            Some(e) => e.forward(ids)?,
            None => ids.to_dtype(self.linear.weight().dtype())?,
        };
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
            Pooling::Attention => {
                let (proj, context) = self.attention.as_ref().expect("attention pooling has its parameters");
                let d = output.dim(2)?;
                let u = proj.forward(&output.reshape((batch * steps, d))?)?.tanh()?;
                let scores = u.matmul(&context.t()?)?.reshape((batch, steps))?;
                let penalty = self.mask(lengths, batch, steps, output.dtype(), 0.0, -1e9)?.squeeze(2)?;
                let weights = candle_nn::ops::softmax_last_dim(&scores.broadcast_add(&penalty)?)?;
                weights.unsqueeze(1)?.matmul(&output)?.squeeze(1)?
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
        if self.config.input_size > 0 {
            let f = self.config.input_size;
            if !ids.dtype().is_float() || ids.rank() != 3 || ids.dim(2)? != f {
                return Err(Error::shape(
                    "SequenceClassifier",
                    format!(
                        "expected features (B, T, {f}) of a float dtype, got {:?} of shape {:?}",
                        ids.dtype(),
                        ids.dims()
                    ),
                    format!("pass a (batch, steps, {f}) float tensor of frames, right-padded"),
                ));
            }
            let (batch, steps, _) = ids.dims3()?;
            return self.check_lengths(lengths, batch, steps);
        }
        if ids.dtype() != DType::U32 || ids.rank() != 2 {
            return Err(Error::shape(
                "SequenceClassifier",
                format!("expected token ids (B, T) of dtype U32, got {:?} of shape {:?}", ids.dtype(), ids.dims()),
                "pass a (batch, steps) U32 tensor of token ids, right-padded",
            ));
        }
        let (batch, steps) = ids.dims2()?;
        self.check_lengths(lengths, batch, steps)?;
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

    fn check_lengths(&self, lengths: &[usize], batch: usize, steps: usize) -> Result<(usize, usize)> {
        if lengths.len() != batch || lengths.iter().any(|&l| l == 0 || l > steps) {
            return Err(Error::shape(
                "SequenceClassifier",
                format!("expected {batch} lengths in 1..={steps}, got {lengths:?}"),
                "pass each sequence's length (at least 1, at most the padded length)",
            ));
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
        let embedding = self.embedding.as_ref().map_or(0, |e| e.embeddings().elem_count());
        // proj: weight (D, D) and bias (D); context (1, D)
        let attention = self.attention.as_ref().map_or(0, |(p, c)| p.weight().elem_count() + 2 * c.elem_count());
        embedding + rnn + attention + self.linear.weight().elem_count() + self.config.num_classes
    }
}

impl fmt::Display for SequenceClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rnn = self.rnn.to_string();
        let mut repr = ModuleRepr::new("SequenceClassifier");
        if self.embedding.is_some() {
            repr = repr.child(
                "embedding",
                ModuleRepr::leaf(format!("Embedding({}, {})", self.config.vocab_size, self.config.embedding_size)),
            );
        }
        repr = repr
            .child("rnn", ModuleRepr::leaf(rnn))
            .child("pooling", ModuleRepr::leaf(format!("Pooling({})", self.config.pooling.name())));
        if self.attention.is_some() {
            let d = self.rnn.output_size();
            repr = repr.child(
                "attention",
                ModuleRepr::leaf(format!(
                    "AdditiveAttention(proj=Linear({d}, {d}), context=Linear({d}, 1, bias=False))"
                )),
            );
        }
        repr.child("linear", crate::repr::linear(self.rnn.output_size(), self.config.num_classes, true)).fmt(f)
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
        for pooling in [Pooling::Last, Pooling::Mean, Pooling::Max, Pooling::Attention] {
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

    /// Dense inputs skip the embedding; their padding changes nothing either, and ids are refused.
    #[test]
    fn dense_inputs_are_frames_of_features() {
        for pooling in [Pooling::Last, Pooling::Attention] {
            let varmap = candle_nn::VarMap::new();
            let vb = crate::seeded_var_builder(&varmap, 5, DType::F32, &Device::Cpu);
            let config = ClassifierConfig { input_size: 3, hidden_size: 5, pooling, ..ClassifierConfig::new(0, 4) };
            let m = SequenceClassifier::new(config, vb).unwrap();
            assert!(!varmap.data().lock().unwrap().contains_key("embedding.weight"));
            assert_eq!(
                m.parameter_count(),
                varmap.all_vars().iter().map(|v| v.elem_count()).sum::<usize>(),
                "{pooling:?}"
            );
            let frames: Vec<f32> = (0..6).map(|i| (i as f32 * 0.37).sin()).collect();
            let alone =
                m.forward_no_grad(&Tensor::from_vec(frames.clone(), (1, 2, 3), &Device::Cpu).unwrap(), &[2]).unwrap();
            let mut padded = frames.clone();
            padded.extend([9.0f32; 3]);
            padded.extend((0..9).map(|i| i as f32));
            let both = m.forward_no_grad(&Tensor::from_vec(padded, (2, 3, 3), &Device::Cpu).unwrap(), &[2, 3]).unwrap();
            let (a, b) = (alone.to_vec2::<f32>().unwrap(), both.to_vec2::<f32>().unwrap());
            for (x, y) in a[0].iter().zip(&b[0]) {
                assert!((x - y).abs() < 1e-5, "{pooling:?}: {a:?} vs {b:?}");
            }
            let ids = Tensor::new(&[[1u32, 2]], &Device::Cpu).unwrap();
            assert!(m.forward(&ids, &[2]).is_err(), "ids given to a model of frames");
            let wrong = Tensor::zeros((1, 2, 4), DType::F32, &Device::Cpu).unwrap();
            assert!(m.forward(&wrong, &[2]).is_err(), "frames of the wrong width");
        }
    }

    /// Attention pooling is the attention-weighted mean of the outputs, written out by hand.
    #[test]
    fn attention_pooling_is_the_weighted_mean_of_the_outputs() {
        let m = model(Pooling::Attention, CellType::Gru, true);
        let ids = Tensor::new(&[[3u32, 4, 5, 0]], &Device::Cpu).unwrap();
        let x = m.embedding.as_ref().unwrap().forward(&ids).unwrap();
        let (out, _) = m.rnn.forward_padded_no_grad(&x, &Padding::right(&[3]), None).unwrap();
        let out = out.get(0).unwrap().to_vec2::<f32>().unwrap();
        let (proj, context) = m.attention.as_ref().unwrap();
        let (w, b) = (proj.weight().to_vec2::<f32>().unwrap(), proj.bias().unwrap().to_vec1::<f32>().unwrap());
        let v = context.get(0).unwrap().to_vec1::<f32>().unwrap();
        let scores: Vec<f64> = out[..3]
            .iter()
            .map(|o| {
                (0..w.len())
                    .map(|i| {
                        let u =
                            (b[i] as f64 + w[i].iter().zip(o).map(|(a, b)| *a as f64 * *b as f64).sum::<f64>()).tanh();
                        v[i] as f64 * u
                    })
                    .sum()
            })
            .collect();
        let top = scores.iter().cloned().fold(f64::MIN, f64::max);
        let z: f64 = scores.iter().map(|s| (s - top).exp()).sum();
        let pooled: Vec<f64> =
            (0..out[0].len()).map(|j| (0..3).map(|t| (scores[t] - top).exp() / z * out[t][j] as f64).sum()).collect();
        let lw = m.linear.weight().to_vec2::<f32>().unwrap();
        let lb = m.linear.bias().unwrap().to_vec1::<f32>().unwrap();
        let expected: Vec<f64> = lw
            .iter()
            .zip(&lb)
            .map(|(r, b)| *b as f64 + r.iter().zip(&pooled).map(|(a, p)| *a as f64 * p).sum::<f64>())
            .collect();
        let got = m.forward_no_grad(&ids, &[3]).unwrap().to_vec2::<f32>().unwrap();
        for (g, e) in got[0].iter().zip(&expected) {
            assert!((*g as f64 - e).abs() < 1e-5, "{got:?} vs {expected:?}");
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
