//! Tutorial 001 ("递归神经网络(RNN)"), section 5: the text-generation models
//! `Embedding(1000, 128) → RNN / LSTM / GRU (256) → Linear(256, 1000)`, each called with an
//! explicit initial state (`h0`, or `(h0, c0)` for the LSTM) and returning the logits of the
//! last step and the final state; then a few greedy generation steps that feed the state back.
//!
//! The tutorial builds its layers without `batch_first` yet feeds `x (32, 20)` as (batch, seq)
//! with `h0 (1, 32, 256)`; PyTorch rejects that, and so does Recur, with the same message. The
//! models below say `batch_first: true`, which is what the code means.
//!
//! ```text
//! cargo run --release -p recur --example tutorial_001_text_generation
//! RECUR_EXAMPLE_SMALL=1 cargo run --release -p recur --example tutorial_001_text_generation
//! ```

use std::fmt;

use anyhow::{bail, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{Embedding, Linear, Module, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::models::CellType;
use recur::repr::ModuleRepr;
use recur::{Recurrent, Rnn, RnnConfig, State};

/// The tutorial's `VanillaRNN`, `LSTM` and `GRU` classes: one struct, the cell chosen at build.
struct TextGenerator {
    class: &'static str,
    embedding: Embedding,
    rnn: Box<dyn Recurrent>,
    fc: Linear,
}

impl TextGenerator {
    fn new(cell: CellType, vocab_size: usize, embedding_dim: usize, hidden_dim: usize, vb: VarBuilder) -> Result<Self> {
        let class = match cell {
            CellType::Rnn => "VanillaRNN",
            CellType::Lstm => "LSTM",
            CellType::Gru => "GRU",
        };
        let embedding = recur::nn::embedding(vocab_size, embedding_dim, vb.pp("embedding"))?;
        // One layer, no dropout, batch_first (B, T, ·); parameters under "rnn." / "lstm." / "gru.".
        let rnn = cell.build(embedding_dim, hidden_dim, 1, 0.0, vb.pp(cell.name()))?;
        let fc = recur::nn::linear(hidden_dim, vocab_size, vb.pp("fc"))?;
        Ok(Self { class, embedding, rnn, fc })
    }

    /// `x (B, T)` token ids and the initial state → logits of the last step `(B, V)` and the final
    /// state (`hn`, plus `cn` for the LSTM).
    fn forward(&self, x: &Tensor, state: &State) -> Result<(Tensor, State)> {
        let embed = self.embedding.forward(x)?; // (B, T, E)
        let (output, state) = self.rnn.forward(&embed, Some(state))?; // (B, T, H)
        let logits = self.fc.forward(&output.i((.., output.dim(1)? - 1, ..))?)?; // output[:, -1, :]
        Ok((logits, state))
    }
}

impl fmt::Display for TextGenerator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = match self.class {
            "VanillaRNN" => "rnn",
            "LSTM" => "lstm",
            _ => "gru",
        };
        ModuleRepr::new(self.class)
            .child("embedding", &self.embedding)
            .child(key, self.rnn.as_ref())
            .child("fc", &self.fc)
            .fmt(f)
    }
}

fn main() -> Result<()> {
    let small = std::env::var("RECUR_EXAMPLE_SMALL").is_ok_and(|v| v == "1");
    let device = Device::Cpu;
    let (vocab_size, embedding_dim, hidden_dim, batch, seq_len) =
        if small { (100, 16, 32, 4, 6) } else { (1000, 128, 256, 32, 20) };
    let mut rng = StdRng::seed_from_u64(0);
    // x = torch.randint(0, 1000, (32, 20))
    let ids: Vec<u32> = (0..batch * seq_len).map(|_| rng.gen_range(0..vocab_size as u32)).collect();
    let x = Tensor::from_vec(ids, (batch, seq_len), &device)?;

    // The tutorial's layer as written (sequence-first): x's 32 rows are read as 32 time steps of
    // a batch of 20, and h0's batch of 32 does not fit.
    let vb = recur::seeded_var_builder(&VarMap::new(), 0, DType::F32, &device);
    let seq_first = Rnn::new(RnnConfig::new(embedding_dim, hidden_dim), vb.pp("rnn"))?;
    let embed = recur::nn::embedding(vocab_size, embedding_dim, vb.pp("embedding"))?.forward(&x)?;
    let h0 = Tensor::zeros((1, batch, hidden_dim), DType::F32, &device)?;
    match seq_first.forward(&embed, Some(&State::h(h0))) {
        Ok(_) => bail!("a sequence-first RNN accepted a batch-first input"),
        Err(err) => println!("{seq_first} on x {:?}: {err}\n", x.dims()),
    }

    for cell in [CellType::Rnn, CellType::Lstm, CellType::Gru] {
        let vb = recur::seeded_var_builder(&VarMap::new(), 1, DType::F32, &device);
        let model = TextGenerator::new(cell, vocab_size, embedding_dim, hidden_dim, vb)?;
        println!("{model}");
        let h0 = Tensor::zeros((1, batch, hidden_dim), DType::F32, &device)?; // (layers, B, H)
        let state = match cell {
            CellType::Lstm => State::lstm(h0.clone(), h0.zeros_like()?), // (h0, c0)
            _ => State::h(h0),
        };
        let (logits, state) = model.forward(&x, &state)?;
        match &state.c {
            Some(cn) => println!("logits: {:?}, hn: {:?}, cn: {:?}", logits.dims(), state.h.dims(), cn.dims()),
            None => println!("logits: {:?}, hn: {:?}", logits.dims(), state.h.dims()),
        }
        // Generation: feed the most likely token back with the state, one step at a time.
        let (mut next, mut state, mut generated) = (logits.argmax(1)?, state, Vec::new());
        for _ in 0..5 {
            let row0 = next.to_vec1::<u32>()?[0];
            generated.push(row0);
            let (logits, new_state) = model.forward(&next.unsqueeze(1)?, &state)?; // (B, 1)
            (next, state) = (logits.argmax(1)?, new_state);
        }
        println!("greedy continuation of sequence 0 (untrained weights): {generated:?}\n");
    }
    Ok(())
}
