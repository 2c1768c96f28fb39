//! Sequence tagging (part of speech, named entities), the tutorials' BiLSTM tagger with
//! character-level word features so that words never seen in training are tagged well: each
//! word's characters through a char BiLSTM (its final states), beside the word's embedding, then
//! a word-level BiLSTM over each sentence's own length, then a linear layer to one score per tag.
//! Trained with cross-entropy over the real tokens (softmax tagging), or with a CRF layer over
//! the tag scores (BiLSTM-CRF: the tag sequence's log-likelihood, Viterbi decoding).

use std::fmt;

use candle_core::{Device, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder};
use serde::{Deserialize, Serialize};

use super::CellType;
use crate::nn::{
    embedding, linear, Crf, CrfReduction, Gru, GruConfig, Lstm, LstmConfig, Padding, Recurrent, Rnn, RnnConfig,
};
use crate::repr::ModuleRepr;
use crate::{Error, Result};

/// The sizes of a [`Tagger`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaggerConfig {
    /// Word ids, `<pad>` and `<unk>` included.
    pub word_vocab_size: usize,
    /// Character ids, `<pad>` and `<unk>` included.
    pub char_vocab_size: usize,
    /// Tags.
    pub num_tags: usize,
    /// The recurrent cell of both stacks (default LSTM).
    pub cell: CellType,
    /// A word's embedding (default 64).
    pub word_embedding_size: usize,
    /// A character's embedding (default 24); 0 turns the character features off.
    pub char_embedding_size: usize,
    /// The char BiLSTM's hidden size per direction (default 32).
    pub char_hidden_size: usize,
    /// The word-level stack's hidden size per direction (default 128).
    pub hidden_size: usize,
    /// Word-level layers (default 1).
    pub num_layers: usize,
    /// Dropout between word-level layers (default 0).
    pub dropout: f64,
    /// A CRF layer over the tag scores ([`crate::nn::Crf`]): trained by its log-likelihood,
    /// decoded by Viterbi; off (default): softmax tagging, each token on its own.
    #[serde(default)]
    pub crf: bool,
}

impl TaggerConfig {
    /// The default sizes.
    pub fn new(word_vocab_size: usize, char_vocab_size: usize, num_tags: usize) -> Self {
        Self {
            word_vocab_size,
            char_vocab_size,
            num_tags,
            cell: CellType::Lstm,
            word_embedding_size: 64,
            char_embedding_size: 24,
            char_hidden_size: 32,
            hidden_size: 128,
            num_layers: 1,
            dropout: 0.0,
            crf: false,
        }
    }
}

fn stack(
    cell: CellType,
    input: usize,
    hidden: usize,
    layers: usize,
    dropout: f64,
    vb: VarBuilder,
) -> Result<Box<dyn Recurrent>> {
    Ok(match cell {
        CellType::Lstm => Box::new(Lstm::new(
            LstmConfig {
                num_layers: layers,
                dropout,
                bidirectional: true,
                batch_first: true,
                ..LstmConfig::new(input, hidden)
            },
            vb,
        )?),
        CellType::Gru => Box::new(Gru::new(
            GruConfig {
                num_layers: layers,
                dropout,
                bidirectional: true,
                batch_first: true,
                ..GruConfig::new(input, hidden)
            },
            vb,
        )?),
        CellType::Rnn => Box::new(Rnn::new(
            RnnConfig {
                num_layers: layers,
                dropout,
                bidirectional: true,
                batch_first: true,
                ..RnnConfig::new(input, hidden)
            },
            vb,
        )?),
    })
}

/// A batch of sentences as the tagger reads them.
#[derive(Clone, Debug)]
pub struct TagInput {
    /// Word ids `(B, T)`, right-padded with 0.
    pub words: Tensor,
    /// Each sentence's length.
    pub lengths: Vec<usize>,
    /// Every real word's character ids, `(N, C)` right-padded, in sentence order (N = Σ lengths).
    pub chars: Tensor,
    /// Each word's length in characters.
    pub char_lengths: Vec<usize>,
}

/// Word embeddings and char-BiLSTM features → BiLSTM → linear: tag scores `(B, T, K)`.
/// Parameters: `word_embedding.weight`, `char_embedding.weight`, `char_rnn.*`, `rnn.*`,
/// `linear.weight`, `linear.bias`.
pub struct Tagger {
    config: TaggerConfig,
    words: Embedding,
    chars: Option<(Embedding, Box<dyn Recurrent>)>,
    rnn: Box<dyn Recurrent>,
    linear: Linear,
    crf: Option<Crf>,
}

impl Tagger {
    /// Builds the model; parameters come from (or are created in) `vb`.
    pub fn new(config: TaggerConfig, vb: VarBuilder) -> Result<Self> {
        if config.num_tags < 2 {
            return Err(Error::config("Tagger", "num_tags must be at least 2", "tag with two tags or more"));
        }
        let words = embedding(config.word_vocab_size, config.word_embedding_size, vb.pp("word_embedding"))?;
        let chars = if config.char_embedding_size > 0 {
            let e = embedding(config.char_vocab_size, config.char_embedding_size, vb.pp("char_embedding"))?;
            let r = stack(config.cell, config.char_embedding_size, config.char_hidden_size, 1, 0.0, vb.pp("char_rnn"))?;
            Some((e, r))
        } else {
            None
        };
        let input = config.word_embedding_size + if chars.is_some() { 2 * config.char_hidden_size } else { 0 };
        let rnn = stack(config.cell, input, config.hidden_size, config.num_layers, config.dropout, vb.pp("rnn"))?;
        let linear = linear(rnn.output_size(), config.num_tags, vb.pp("linear"))?;
        let crf = if config.crf { Some(Crf::new(config.num_tags, true, vb.pp("crf"))?) } else { None };
        Ok(Self { config, words, chars, rnn, linear, crf })
    }

    /// The configuration.
    pub fn config(&self) -> &TaggerConfig {
        &self.config
    }

    /// The word-level stack.
    pub fn rnn(&self) -> &dyn Recurrent {
        self.rnn.as_ref()
    }

    /// Tag scores `(B, T, K)` (zero rows' scores past each length are the bias alone; ignore them).
    pub fn forward(&self, input: &TagInput) -> Result<Tensor> {
        self.run(input, true)
    }

    /// [`forward`](Self::forward) without autograd.
    pub fn forward_no_grad(&self, input: &TagInput) -> Result<Tensor> {
        Ok(self.run(input, false)?.detach())
    }

    fn run(&self, input: &TagInput, grad: bool) -> Result<Tensor> {
        let (batch, steps) = input.words.dims2()?;
        let total: usize = input.lengths.iter().sum();
        if input.lengths.len() != batch || input.lengths.iter().any(|&l| l == 0 || l > steps) {
            return Err(Error::shape(
                "Tagger",
                format!("expected {batch} lengths in 1..={steps}, got {:?}", input.lengths),
                "pass each sentence's length",
            ));
        }
        let mut x = self.words.forward(&input.words)?; // (B, T, E)
        if let Some((emb, rnn)) = &self.chars {
            if input.char_lengths.len() != total {
                return Err(Error::shape(
                    "Tagger",
                    format!("expected the characters of {total} words, got {}", input.char_lengths.len()),
                    "give every real word its characters, in sentence order",
                ));
            }
            let c = emb.forward(&input.chars)?; // (N, C, Ec)
            let padding = Padding::right(&input.char_lengths);
            let (_, state) = if grad {
                rnn.forward_padded(&c, &padding, None)?
            } else {
                rnn.forward_padded_no_grad(&c, &padding, None)?
            };
            let features = Tensor::cat(&[state.h.get(0)?, state.h.get(1)?], 1)?; // (N, 2Hc)
                                                                                 // Back to (B, T, 2Hc): row 0 of the table is zeros, for the padding.
            let table = Tensor::cat(&[features.zeros_like()?.narrow(0, 0, 1)?, features], 0)?;
            let mut index = Vec::with_capacity(batch * steps);
            let mut next = 1u32;
            for &len in &input.lengths {
                for t in 0..steps {
                    if t < len {
                        index.push(next);
                        next += 1;
                    } else {
                        index.push(0);
                    }
                }
            }
            let index = Tensor::from_vec(index, batch * steps, x.device())?;
            let spread = table.index_select(&index, 0)?.reshape((batch, steps, 2 * self.config.char_hidden_size))?;
            x = Tensor::cat(&[x, spread], 2)?;
        }
        let padding = Padding::right(&input.lengths);
        let (output, _) = if grad {
            self.rnn.forward_padded(&x, &padding, None)?
        } else {
            self.rnn.forward_padded_no_grad(&x, &padding, None)?
        };
        Ok(self.linear.forward(&output)?)
    }

    /// The training loss of `input` against `targets` `(B, T)` over the real tokens (`mask`
    /// `(B, T)`, 1 = real): the mean cross-entropy per token, or with a CRF the negative
    /// log-likelihood of the tag sequences per token (pytorch-crf's `token_mean`).
    pub fn loss(&self, input: &TagInput, targets: &Tensor, mask: &Tensor) -> Result<Tensor> {
        let scores = self.forward(input)?;
        match &self.crf {
            Some(crf) => crf.forward(&scores, targets, Some(mask), CrfReduction::TokenMean)?.neg().map_err(Into::into),
            None => crate::train::CrossEntropy::default().forward(&scores, targets, Some(mask)),
        }
    }

    /// The summed loss over the real tokens without autograd (for evaluation), and each
    /// sentence's best tags: Viterbi with a CRF, each token's highest score without.
    pub fn evaluate_batch(&self, input: &TagInput, targets: &Tensor, mask: &Tensor) -> Result<(f64, Vec<Vec<usize>>)> {
        let scores = self.forward_no_grad(input)?;
        let (loss, paths) = match &self.crf {
            Some(crf) => {
                let llh = crf.forward_no_grad(&scores, targets, Some(mask), CrfReduction::Sum)?;
                let paths = crf.decode(&scores, Some(mask))?;
                (
                    -llh.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?,
                    paths.into_iter().map(|p| p.into_iter().map(|t| t as usize).collect()).collect(),
                )
            }
            None => {
                let ce = crate::train::CrossEntropy { reduction: crate::train::Reduction::Sum, ..Default::default() };
                let loss =
                    ce.forward(&scores, targets, Some(mask))?.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?;
                let best = scores.argmax(2)?.to_vec2::<u32>()?;
                let paths = best
                    .iter()
                    .zip(&input.lengths)
                    .map(|(row, &l)| row[..l].iter().map(|&t| t as usize).collect())
                    .collect();
                (loss, paths)
            }
        };
        Ok((loss, paths))
    }

    /// Dropout between layers on (training) or off (evaluation).
    pub fn set_training(&self, training: bool) {
        self.rnn.set_training(training);
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        let mut n = self.words.embeddings().elem_count();
        if let Some((e, r)) = &self.chars {
            n += e.embeddings().elem_count() + r.weights().iter().map(|(_, t)| t.elem_count()).sum::<usize>();
        }
        let crf = if self.crf.is_some() { self.config.num_tags * (self.config.num_tags + 2) } else { 0 };
        n + self.rnn.weights().iter().map(|(_, t)| t.elem_count()).sum::<usize>()
            + self.linear.weight().elem_count()
            + self.config.num_tags
            + crf
    }

    /// An input of `sentences` given as word ids and per-word character ids (all on the CPU).
    pub fn input(words: &[Vec<u32>], chars: &[Vec<Vec<u32>>]) -> Result<TagInput> {
        let device = Device::Cpu;
        let steps = words.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let mut w = Vec::with_capacity(words.len() * steps);
        for s in words {
            w.extend_from_slice(s);
            w.extend(std::iter::repeat_n(0u32, steps - s.len()));
        }
        let word_chars: Vec<&Vec<u32>> = chars.iter().flatten().collect();
        let width = word_chars.iter().map(|c| c.len()).max().unwrap_or(1).max(1);
        let mut c = Vec::with_capacity(word_chars.len() * width);
        for chars in &word_chars {
            c.extend_from_slice(chars);
            c.extend(std::iter::repeat_n(0u32, width - chars.len()));
        }
        Ok(TagInput {
            words: Tensor::from_vec(w, (words.len(), steps), &device)?,
            lengths: words.iter().map(Vec::len).collect(),
            chars: Tensor::from_vec(c, (word_chars.len(), width), &device)?,
            char_lengths: word_chars.iter().map(|c| c.len().max(1)).collect(),
        })
    }
}

impl fmt::Display for Tagger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        let mut tree = ModuleRepr::new("Tagger").child(
            "word_embedding",
            ModuleRepr::leaf(format!("Embedding({}, {})", c.word_vocab_size, c.word_embedding_size)),
        );
        if let Some((_, r)) = &self.chars {
            tree = tree
                .child(
                    "char_embedding",
                    ModuleRepr::leaf(format!("Embedding({}, {})", c.char_vocab_size, c.char_embedding_size)),
                )
                .child("char_rnn", ModuleRepr::leaf(r.to_string()));
        }
        tree = tree
            .child("rnn", ModuleRepr::leaf(self.rnn.to_string()))
            .child("linear", crate::repr::linear(self.rnn.output_size(), c.num_tags, true));
        if let Some(crf) = &self.crf {
            tree = tree.child("crf", ModuleRepr::leaf(crf.to_string()));
        }
        tree.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The count is the variables' sizes, with and without the CRF.
    #[test]
    fn parameter_count_is_the_variables_sizes() {
        for crf in [false, true] {
            let varmap = candle_nn::VarMap::new();
            let vb = crate::seeded_var_builder(&varmap, 1, candle_core::DType::F32, &Device::Cpu);
            let tagger = Tagger::new(TaggerConfig { crf, hidden_size: 8, ..TaggerConfig::new(20, 9, 5) }, vb).unwrap();
            let counted: usize = crate::train::named_vars(&varmap).iter().map(|(_, v)| v.elem_count()).sum();
            assert_eq!(tagger.parameter_count(), counted, "crf {crf}");
        }
    }
}
