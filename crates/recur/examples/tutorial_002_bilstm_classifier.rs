//! Tutorial 002, section 8 ("PyTorch完整实现"): the BiLSTM text classifier over packed
//! variable-length batches. Embedding (with dropout) → 2-layer bidirectional LSTM (dropout 0.5)
//! over `pack_padded_sequence(…, enforce_sorted=False)` → `cat(h_n[-2], h_n[-1])` → dropout →
//! Linear. The tutorial's sizes give `(32, 2)` logits; the same model, small, then learns a task
//! that only packing gets right: the label is decided by each sequence's *last real* token.
//!
//! ```text
//! cargo run --release -p recur --example tutorial_002_bilstm_classifier
//! RECUR_EXAMPLE_SMALL=1 cargo run --release -p recur --example tutorial_002_bilstm_classifier
//! ```

use std::fmt;

use anyhow::{ensure, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Dropout, Embedding, Linear, Module, ModuleT, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::repr::{self, ModuleRepr};
use recur::train::{named_vars, Adam, AdamConfig, Optimizer};
use recur::{pack_padded_sequence, pad_packed_sequence, Lstm, LstmConfig};

/// The tutorial's `TextClassifier`.
struct TextClassifier {
    embedding: Embedding,
    lstm: Lstm,
    dropout: Dropout,
    p: f64,
    fc: Linear,
}

impl TextClassifier {
    fn new(
        vocab_size: usize,
        embed_dim: usize,
        hidden_dim: usize,
        num_classes: usize,
        num_layers: usize,
        dropout: f64,
        vb: VarBuilder,
    ) -> Result<Self> {
        // PyTorch's padding_idx=0 keeps row 0 at zero; with packing the padding is never read.
        let embedding = recur::nn::embedding(vocab_size, embed_dim, vb.pp("embedding"))?;
        let config = LstmConfig {
            num_layers,
            batch_first: true,
            bidirectional: true,
            dropout,
            seed: 7,
            ..LstmConfig::new(embed_dim, hidden_dim)
        };
        let lstm = Lstm::new(config, vb.pp("lstm"))?;
        let fc = recur::nn::linear(hidden_dim * 2, num_classes, vb.pp("fc"))?;
        Ok(Self { embedding, lstm, dropout: Dropout::new(dropout as f32), p: dropout, fc })
    }

    /// `model.train()` / `model.eval()`.
    fn set_training(&self, training: bool) {
        self.lstm.set_training(training);
    }

    /// `x (B, T)` token ids, right-padded, with each row's length → logits `(B, C)`.
    fn forward(&self, x: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let train = self.lstm.is_training();
        let embedded = self.dropout.forward_t(&self.embedding.forward(x)?, train)?; // (B, T, E)
        let packed = pack_padded_sequence(&embedded, lengths, true, false)?; // enforce_sorted=False
        let (output, state) = self.lstm.forward_packed(&packed, None)?;
        let (_output, _lengths) = pad_packed_sequence(&output, true, 0.0, None)?; // (B, T, 2H)
                                                                                  // h_n is (L·2, B, H), caller's batch order: the last layer's forward and backward states.
        let layers = state.h.dim(0)?;
        let hidden = Tensor::cat(&[state.h.get(layers - 2)?, state.h.get(layers - 1)?], 1)?; // (B, 2H)
        Ok(self.fc.forward(&self.dropout.forward_t(&hidden, train)?)?)
    }

    /// The same through `forward_with_lengths`: no packing by the caller.
    fn forward_with_lengths(&self, x: &Tensor, lengths: &[usize]) -> Result<Tensor> {
        let train = self.lstm.is_training();
        let embedded = self.dropout.forward_t(&self.embedding.forward(x)?, train)?;
        let (_output, state) = self.lstm.forward_with_lengths(&embedded, lengths, None)?;
        let layers = state.h.dim(0)?;
        let hidden = Tensor::cat(&[state.h.get(layers - 2)?, state.h.get(layers - 1)?], 1)?;
        Ok(self.fc.forward(&self.dropout.forward_t(&hidden, train)?)?)
    }
}

impl fmt::Display for TextClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ModuleRepr::new("TextClassifier")
            .child("embedding", &self.embedding)
            .child("lstm", &self.lstm)
            .child("dropout", repr::dropout(self.p))
            .child("fc", &self.fc)
            .fmt(f)
    }
}

/// A right-padded batch `(B, T)` of random ids in `1..vocab` (0 is padding) and random lengths
/// in `min_len..T`.
fn batch(rng: &mut StdRng, b: usize, t: usize, vocab: u32, min_len: usize) -> Result<(Tensor, Vec<usize>, Vec<u32>)> {
    let lengths: Vec<usize> = (0..b).map(|_| rng.gen_range(min_len..t)).collect();
    let mut ids = vec![0u32; b * t];
    for (row, &len) in lengths.iter().enumerate() {
        for id in &mut ids[row * t..row * t + len] {
            *id = rng.gen_range(1..vocab);
        }
    }
    let tensor = Tensor::from_vec(ids.clone(), (b, t), &Device::Cpu)?;
    Ok((tensor, lengths, ids))
}

fn main() -> Result<()> {
    let small = std::env::var("RECUR_EXAMPLE_SMALL").is_ok_and(|v| v == "1");
    let device = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(0);

    // The tutorial's model and batch: x (32, 100), lengths in [10, 100).
    let vb = recur::seeded_var_builder(&VarMap::new(), 0, DType::F32, &device);
    let model = TextClassifier::new(10_000, 300, 256, 2, 2, 0.5, vb)?;
    println!("{model}");
    let (x, lengths, _) = batch(&mut rng, 32, 100, 10_000, 10)?;
    let output = model.forward(&x, &lengths)?;
    println!("x: {:?}, lengths: {:?}…", x.dims(), &lengths[..8]);
    println!("classifier output: {:?}", output.dims());
    model.set_training(false); // model.eval(): no dropout, so the two paths must agree
    let packed = model.forward(&x, &lengths)?;
    let direct = model.forward_with_lengths(&x, &lengths)?;
    let diff = (&packed - &direct)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
    println!("pack_padded_sequence path vs forward_with_lengths: max |diff| = {diff:.1e}");
    ensure!(diff < 1e-6, "the packed and the length-aware paths differ by {diff}");

    // Training, small: the label is 1 iff a sequence's last real token is in the upper half of
    // the vocabulary, so reading the padding instead would lose it.
    let (vocab, t_max, batch_size, epochs) = (20u32, 24, 32, if small { 30 } else { 60 });
    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, 1, DType::F32, &device);
    let model = TextClassifier::new(vocab as usize, 16, 32, 2, 2, 0.1, vb)?;
    println!("\n{model}");
    let mut optimizer = Adam::new(named_vars(&varmap), AdamConfig { lr: 0.01, ..AdamConfig::default() })?;
    let labels_of = |ids: &[u32], lengths: &[usize]| -> Result<Tensor> {
        let labels: Vec<u32> =
            lengths.iter().enumerate().map(|(row, &len)| u32::from(ids[row * t_max + len - 1] >= vocab / 2)).collect();
        Ok(Tensor::new(labels.as_slice(), &device)?)
    };
    for epoch in 1..=epochs {
        model.set_training(true);
        let (x, lengths, ids) = batch(&mut rng, batch_size, t_max, vocab, 3)?;
        let loss = recur::train::cross_entropy(&model.forward(&x, &lengths)?, &labels_of(&ids, &lengths)?)?;
        optimizer.backward_step(&loss)?;
        if epoch % 10 == 0 || epoch == 1 {
            println!("epoch {epoch:>3}  loss {:.4}", loss.to_scalar::<f32>()?);
        }
    }
    model.set_training(false);
    let (x, lengths, ids) = batch(&mut rng, 256, t_max, vocab, 3)?;
    let predicted = model.forward(&x, &lengths)?.argmax(1)?.to_vec1::<u32>()?;
    let labels = labels_of(&ids, &lengths)?.to_vec1::<u32>()?;
    let correct = predicted.iter().zip(&labels).filter(|(p, l)| p == l).count();
    println!("held-out accuracy: {:.1}% of {}", 100.0 * correct as f64 / labels.len() as f64, labels.len());
    Ok(())
}
