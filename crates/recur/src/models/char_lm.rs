//! The character-level language model of the tutorials and of char-rnn:
//! `Embedding(V, E) → LSTM / GRU / RNN (L layers, H) → Linear(H, V)`, batch-first.

use std::fmt;

use candle_core::{DType, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder};
use rand::Rng;

use super::{sample, CellType, Sampling};
use crate::nn::{embedding, linear, Recurrent, State};
use crate::train::linear_cross_entropy;
use crate::{Error, Result};

/// The sizes of a [`CharLm`]; `new(vocab_size)` gives the defaults.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CharLmConfig {
    /// `V`, the number of characters.
    pub vocab_size: usize,
    /// The recurrent cell (default LSTM).
    pub cell: CellType,
    /// `E`, the size of a character's embedding (default 64).
    pub embedding_size: usize,
    /// `H` (default 256).
    pub hidden_size: usize,
    /// `L` (default 2).
    pub num_layers: usize,
    /// Dropout between recurrent layers, in training mode (default 0.0).
    pub dropout: f64,
}

impl CharLmConfig {
    /// The default sizes for a vocabulary of `vocab_size` characters.
    pub fn new(vocab_size: usize) -> Self {
        Self { vocab_size, cell: CellType::Lstm, embedding_size: 64, hidden_size: 256, num_layers: 2, dropout: 0.0 }
    }

    /// Number of parameters of the model this config builds.
    pub fn parameter_count(&self) -> usize {
        let (v, e, h) = (self.vocab_size, self.embedding_size, self.hidden_size);
        v * e + self.cell.parameter_count(e, h, self.num_layers) + h * v + v
    }
}

/// `Embedding → recurrent stack → Linear`: token ids `(B, T)` to next-character logits
/// `(B, T, V)`. Parameters under PyTorch's names: `embedding.weight`, `rnn.weight_ih_l0`, …,
/// `linear.weight`, `linear.bias`, initialised like PyTorch's modules.
///
/// ```
/// use candle_core::{DType, Device, Tensor};
/// use recur::models::{CharLm, CharLmConfig};
/// let varmap = candle_nn::VarMap::new();
/// let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
/// let model = CharLm::new(CharLmConfig { hidden_size: 32, ..CharLmConfig::new(10) }, vb)?;
/// let tokens = Tensor::new(&[[1u32, 2, 3], [4, 5, 6]], &Device::Cpu)?;
/// let (logits, state) = model.forward(&tokens, None)?;
/// assert_eq!(logits.dims(), &[2, 3, 10]);
/// assert_eq!(state.h.dims(), &[2, 2, 32]);
/// # Ok::<(), recur::Error>(())
/// ```
pub struct CharLm {
    config: CharLmConfig,
    embedding: Embedding,
    rnn: Box<dyn Recurrent>,
    linear: Linear,
}

impl CharLm {
    /// Builds the model; parameters come from (or are created in) `vb`.
    pub fn new(config: CharLmConfig, vb: VarBuilder) -> Result<Self> {
        if config.vocab_size == 0 {
            return Err(Error::config("CharLm", "vocab_size must be positive", "build the vocabulary from some text"));
        }
        let embedding = embedding(config.vocab_size, config.embedding_size, vb.pp("embedding"))?;
        let rnn = config.cell.build(
            config.embedding_size,
            config.hidden_size,
            config.num_layers,
            config.dropout,
            vb.pp("rnn"),
        )?;
        let linear = linear(config.hidden_size, config.vocab_size, vb.pp("linear"))?;
        Ok(Self { config, embedding, rnn, linear })
    }

    /// The configuration the model was built from.
    pub fn config(&self) -> &CharLmConfig {
        &self.config
    }

    /// The recurrent stack.
    pub fn rnn(&self) -> &dyn Recurrent {
        self.rnn.as_ref()
    }

    /// Logits `(B, T, V)` for token ids `tokens (B, T)` (u32), and the final state.
    pub fn forward(&self, tokens: &Tensor, state: Option<&State>) -> Result<(Tensor, State)> {
        self.run(tokens, state, true)
    }

    /// [`forward`](Self::forward) without autograd.
    pub fn forward_no_grad(&self, tokens: &Tensor, state: Option<&State>) -> Result<(Tensor, State)> {
        self.run(tokens, state, false)
    }

    fn run(&self, tokens: &Tensor, state: Option<&State>, grad: bool) -> Result<(Tensor, State)> {
        let (batch, steps) = self.check_tokens(tokens)?;
        // Embedding and first layer in one: the table is projected once per step instead of
        // every token's row (see `Recurrent::forward_embedded`).
        let table = self.embedding.embeddings();
        let (output, state) = if grad {
            self.rnn.forward_embedded(table, tokens, state)?
        } else {
            self.rnn.forward_embedded_no_grad(table, tokens, state)?
        };
        let flat = output.reshape((batch * steps, self.config.hidden_size))?;
        let logits = self.linear.forward(&flat)?.reshape((batch, steps, self.config.vocab_size))?;
        Ok((if grad { logits } else { logits.detach() }, state))
    }

    /// Mean cross-entropy of the next-character predictions against `targets` `(B, T)` (class
    /// indices, `-100` ignored), and the final state: `cross_entropy(logits, targets)` over
    /// [`forward`](Self::forward)'s logits, with the head and the loss as one op
    /// ([`linear_cross_entropy`]), so the `(B, T, V)` logits are never a graph node. For training;
    /// the value and the gradients are `forward`'s to rounding.
    pub fn loss(&self, tokens: &Tensor, targets: &Tensor, state: Option<&State>) -> Result<(Tensor, State)> {
        let (batch, steps) = self.check_tokens(tokens)?;
        if targets.dims() != [batch, steps] {
            return Err(Error::shape(
                "CharLm",
                format!(
                    "expected targets of shape [{batch}, {steps}] for tokens {:?}, got {:?}",
                    tokens.dims(),
                    targets.dims()
                ),
                "pass one target character per token: the tokens shifted by one",
            ));
        }
        let (output, state) = self.rnn.forward_embedded(self.embedding.embeddings(), tokens, state)?;
        let loss = linear_cross_entropy(&output, self.linear.weight(), self.linear.bias(), targets)?;
        Ok((loss, state))
    }

    /// Checks `tokens` is `(B, T)` u32 with every id below `V`; returns `(B, T)`.
    fn check_tokens(&self, tokens: &Tensor) -> Result<(usize, usize)> {
        if tokens.dtype() != DType::U32 || tokens.rank() != 2 {
            return Err(Error::shape(
                "CharLm",
                format!(
                    "expected token ids (B, T) of dtype U32, got {:?} of shape {:?}",
                    tokens.dtype(),
                    tokens.dims()
                ),
                "pass a (batch, steps) U32 tensor of character ids",
            ));
        }
        let (batch, steps) = tokens.dims2()?;
        if batch * steps > 0 {
            let max = tokens.flatten_all()?.max(0)?.to_scalar::<u32>()?;
            if max as usize >= self.config.vocab_size {
                return Err(Error::shape(
                    "CharLm",
                    format!("token id {max} is outside the vocabulary of {} characters", self.config.vocab_size),
                    "encode the text with the model's own vocabulary",
                ));
            }
        }
        Ok((batch, steps))
    }

    /// Switches dropout between layers on (training) or off (evaluation).
    pub fn set_training(&self, training: bool) {
        self.rnn.set_training(training);
    }

    /// Every parameter under its PyTorch name, in `state_dict` order.
    pub fn weights(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("embedding.weight".to_string(), self.embedding.embeddings().clone())];
        out.extend(self.rnn.weights().into_iter().map(|(n, t)| (format!("rnn.{n}"), t)));
        out.push(("linear.weight".into(), self.linear.weight().clone()));
        if let Some(bias) = self.linear.bias() {
            out.push(("linear.bias".into(), bias.clone()));
        }
        out
    }

    /// Number of parameters.
    pub fn parameter_count(&self) -> usize {
        self.weights().iter().map(|(_, t)| t.elem_count()).sum()
    }

    /// Generates `length` characters after `prime` (at least one id): runs the prime through the
    /// model, then samples one id at a time with `sampling`, feeding each back. Each id goes to
    /// `emit` as soon as it is drawn (so a caller can stream it); all of them are returned.
    /// Runs in evaluation mode (no dropout) and restores the mode afterwards.
    pub fn generate<R: Rng + ?Sized>(
        &self,
        prime: &[u32],
        length: usize,
        sampling: &Sampling,
        rng: &mut R,
        mut emit: impl FnMut(u32) -> Result<()>,
    ) -> Result<Vec<u32>> {
        sampling.validate()?;
        if prime.is_empty() {
            return Err(Error::data("prime text", "the prime text is empty", "start from at least one character"));
        }
        let training = self.rnn.is_training();
        self.set_training(false);
        let result = (|| {
            let device = self.linear.weight().device();
            let (logits, mut state) = self.forward_no_grad(&Tensor::new(prime, device)?.unsqueeze(0)?, None)?;
            let mut last: Vec<f32> = logits.get(0)?.get(prime.len() - 1)?.to_dtype(DType::F32)?.to_vec1()?;
            let mut out = Vec::with_capacity(length);
            for _ in 0..length {
                let id = sample(&last, sampling, rng)? as u32;
                emit(id)?;
                out.push(id);
                let (logits, next) = self.forward_no_grad(&Tensor::new(&[[id]], device)?, Some(&state))?;
                state = next;
                last = logits.flatten_all()?.to_dtype(DType::F32)?.to_vec1()?;
            }
            Ok(out)
        })();
        self.set_training(training);
        result
    }
}

impl fmt::Display for CharLm {
    /// PyTorch's repr of the equivalent module.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = &self.config;
        writeln!(f, "CharLm(")?;
        writeln!(f, "  (embedding): Embedding({}, {})", c.vocab_size, c.embedding_size)?;
        writeln!(f, "  (rnn): {}", self.rnn)?;
        writeln!(f, "  (linear): Linear(in_features={}, out_features={}, bias=True)", c.hidden_size, c.vocab_size)?;
        write!(f, ")")
    }
}

impl fmt::Debug for CharLm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use rand::SeedableRng;

    fn model(cell: CellType) -> CharLm {
        let varmap = candle_nn::VarMap::new();
        let vb = crate::seeded_var_builder(&varmap, 5, DType::F32, &Device::Cpu);
        let config = CharLmConfig { cell, embedding_size: 8, hidden_size: 12, ..CharLmConfig::new(7) };
        CharLm::new(config, vb).expect("model")
    }

    #[test]
    fn names_counts_and_repr_follow_pytorch() {
        let m = model(CellType::Gru);
        let names: Vec<String> = m.weights().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.first().map(String::as_str), Some("embedding.weight"));
        assert!(names.contains(&"rnn.weight_hh_l1".to_string()));
        assert_eq!(&names[names.len() - 2..], ["linear.weight", "linear.bias"]);
        assert_eq!(m.parameter_count(), m.config().parameter_count());
        assert_eq!(
            m.to_string(),
            "CharLm(\n  (embedding): Embedding(7, 8)\n  (rnn): GRU(8, 12, num_layers=2, batch_first=True)\n  \
             (linear): Linear(in_features=12, out_features=7, bias=True)\n)"
        );
    }

    #[test]
    fn bad_tokens_are_refused() {
        let m = model(CellType::Lstm);
        let dev = Device::Cpu;
        let out_of_range = Tensor::new(&[[1u32, 7]], &dev).unwrap();
        assert!(m.forward(&out_of_range, None).unwrap_err().to_string().contains("token id 7"));
        let floats = Tensor::new(&[[1f32, 2.]], &dev).unwrap();
        assert!(m.forward(&floats, None).unwrap_err().to_string().contains("U32"));
    }

    #[test]
    fn loss_matches_cross_entropy_over_the_logits() {
        let dev = Device::Cpu;
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let a: Vec<f64> = a.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f64> = b.flatten_all().unwrap().to_vec1().unwrap();
            assert_eq!(a.len(), b.len(), "{what}");
            for (x, y) in a.iter().zip(&b) {
                assert!((x - y).abs() <= 1e-12 * (1.0 + y.abs()), "{what}: {x} against {y}");
            }
        };
        for cell in [CellType::Lstm, CellType::Gru, CellType::Rnn] {
            let varmap = candle_nn::VarMap::new();
            let vb = crate::seeded_var_builder(&varmap, 9, DType::F64, &dev);
            let config = CharLmConfig { cell, embedding_size: 5, hidden_size: 6, ..CharLmConfig::new(7) };
            let m = CharLm::new(config, vb).unwrap();
            let tokens = Tensor::new(&[[1u32, 2, 3, 4], [5, 6, 0, 1], [2, 2, 3, 6]], &dev).unwrap();
            let targets = Tensor::new(&[[2u32, 3, 4, 5], [6, 0, 1, 2], [2, 3, 6, 0]], &dev).unwrap();
            // A carried state, as truncated BPTT passes one.
            let (_, carried) = m.forward_no_grad(&tokens, None).unwrap();
            let (loss, state) = m.loss(&tokens, &targets, Some(&carried)).unwrap();
            let (logits, want_state) = m.forward(&tokens, Some(&carried)).unwrap();
            let want = crate::train::cross_entropy(&logits, &targets).unwrap();
            close(&loss, &want, &format!("{cell}: loss"));
            close(&state.h, &want_state.h, &format!("{cell}: h"));
            if let (Some(c), Some(want_c)) = (&state.c, &want_state.c) {
                close(c, want_c, &format!("{cell}: c"));
            }
            let (grads, want_grads) = (loss.backward().unwrap(), want.backward().unwrap());
            for (name, param) in m.weights() {
                let (Some(g), Some(w)) = (grads.get(&param), want_grads.get(&param)) else {
                    panic!("{cell}: no gradient for {name}");
                };
                close(g, w, &format!("{cell}: d{name}"));
            }
            let flat = targets.flatten_all().unwrap();
            let err = m.loss(&tokens, &flat, None).unwrap_err().to_string();
            assert!(err.contains("expected targets of shape [3, 4]"), "{err}");
        }
    }

    #[test]
    fn generation_is_seeded_streams_every_id_and_keeps_the_mode() {
        let m = model(CellType::Lstm);
        let run = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let mut streamed = Vec::new();
            let ids = m
                .generate(&[1, 2], 30, &Sampling::default(), &mut rng, |id| {
                    streamed.push(id);
                    Ok(())
                })
                .expect("generate");
            assert_eq!(ids, streamed);
            ids
        };
        assert_eq!(run(1), run(1));
        assert_ne!(run(1), run(2));
        assert!(run(3).iter().all(|&id| id < 7));
        let mut rng = rand::rngs::StdRng::seed_from_u64(0);
        assert!(m.generate(&[], 3, &Sampling::default(), &mut rng, |_| Ok(())).is_err());
        let argmax = Sampling { argmax: true, ..Sampling::default() };
        let greedy = |seed| {
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            m.generate(&[3], 10, &argmax, &mut rng, |_| Ok(())).expect("greedy")
        };
        assert_eq!(greedy(1), greedy(2), "argmax ignores the generator");
        assert!(m.rnn().is_training(), "mode restored");
    }
}
