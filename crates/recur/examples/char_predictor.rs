//! Next-character prediction with a small tanh RNN, the classic first RNN tutorial.
//!
//! Every window of 10 characters of one sentence is a training example whose label is the
//! character that follows it. The model is Embedding -> RNN (tanh) -> Linear on the last step,
//! trained full-batch with Adam and cross-entropy, as in this PyTorch original:
//!
//! ```python
//! class Model(torch.nn.Module):
//!     def __init__(self, vocab_size, hidden_size):
//!         super().__init__()
//!         self.embedding = torch.nn.Embedding(vocab_size, hidden_size)
//!         self.rnn = torch.nn.RNN(hidden_size, hidden_size, num_layers=1, batch_first=True)
//!         self.linear = torch.nn.Linear(hidden_size, vocab_size)
//!
//!     def forward(self, x):
//!         outputs, hidden = self.rnn(self.embedding(x))
//!         return self.linear(outputs[:, -1, :])
//!
//! optimizer = torch.optim.Adam(model.parameters(), lr=0.01)   # 500 epochs
//! ```
//!
//! After training it predicts the character after three prompts, prints ✓ or ✗ for each, and
//! exits with status 1 if any is wrong. All parameters come from one seeded generator, so every
//! run prints the same losses.
//!
//! ```text
//! cargo run --release -p recur --example char_predictor [-- --epochs N]
//! ```

use std::collections::BTreeSet;
use std::fmt;
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor, D};
use candle_nn::{Embedding, Linear, Module, VarBuilder, VarMap};
use recur::train::{named_vars, Adam, AdamConfig, Optimizer};
use recur::{seeded_var_builder, Rnn, RnnConfig};

/// The training text of the tutorial.
const TEXT: &str = "Hello, RNN! Recurrent Neural Networks are powerful for sequence tasks. \
                    Let's build a simple RNN model.";
/// Characters the model reads before predicting the next one.
const WINDOW: usize = 10;
/// Embedding size and RNN hidden size.
const HIDDEN_SIZE: usize = 64;
/// Adam's learning rate.
const LEARNING_RATE: f64 = 0.01;
/// Full-batch epochs unless `--epochs` says otherwise.
const DEFAULT_EPOCHS: usize = 500;
/// Seed of the generator that initialises every parameter.
const SEED: u64 = 42;
/// Prompts of `WINDOW` characters and the character that follows each in `TEXT`.
const CHECKS: [(&str, char); 3] = [("Hello, RNN", '!'), ("Recurrent ", 'N'), ("Let's buil", 'd')];

/// The characters of the text, sorted, and the index of each.
struct Vocab {
    chars: Vec<char>,
}

impl Vocab {
    fn new(text: &str) -> Self {
        let chars = text.chars().collect::<BTreeSet<_>>().into_iter().collect();
        Self { chars }
    }

    fn len(&self) -> usize {
        self.chars.len()
    }

    fn index(&self, ch: char) -> Result<u32> {
        let index =
            self.chars.binary_search(&ch).ok().with_context(|| format!("character {ch:?} is not in the vocabulary"))?;
        Ok(index as u32)
    }

    fn encode(&self, text: &str) -> Result<Vec<u32>> {
        text.chars().map(|ch| self.index(ch)).collect()
    }

    fn char(&self, index: u32) -> char {
        self.chars[index as usize]
    }
}

/// Embedding -> RNN (tanh, batch first) -> Linear on the last time step.
struct CharPredictor {
    embedding: Embedding,
    rnn: Rnn,
    linear: Linear,
    vocab_size: usize,
}

impl CharPredictor {
    fn new(vocab_size: usize, hidden_size: usize, vb: VarBuilder) -> Result<Self> {
        let embedding = candle_nn::embedding(vocab_size, hidden_size, vb.pp("embedding"))?;
        let rnn_config = RnnConfig { batch_first: true, ..RnnConfig::new(hidden_size, hidden_size) };
        let rnn = Rnn::new(rnn_config, vb.pp("rnn"))?;
        let linear = candle_nn::linear(hidden_size, vocab_size, vb.pp("linear"))?;
        Ok(Self { embedding, rnn, linear, vocab_size })
    }

    /// `tokens (B, T)` u32 -> next-character logits `(B, V)`.
    fn forward(&self, tokens: &Tensor) -> Result<Tensor> {
        let seq_len = tokens.dim(1)?;
        let embedded = self.embedding.forward(tokens)?; // (B, T, H)
        let (output, _state) = self.rnn.forward(&embedded, None)?; // (B, T, H)
        let last = output.i((.., seq_len - 1, ..))?; // (B, H)
        Ok(self.linear.forward(&last)?) // (B, V)
    }
}

impl fmt::Display for CharPredictor {
    /// PyTorch's `print(model)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hidden_size = self.embedding.hidden_size();
        writeln!(f, "CharPredictor(")?;
        writeln!(f, "  (embedding): Embedding({}, {hidden_size})", self.vocab_size)?;
        writeln!(f, "  (rnn): {}", self.rnn)?;
        writeln!(f, "  (linear): Linear(in_features={hidden_size}, out_features={}, bias=True)", self.vocab_size)?;
        write!(f, ")")
    }
}

/// Every window of `WINDOW` characters -> the character after it: `(N, WINDOW)` and `(N,)`.
fn windows(vocab: &Vocab, text: &str, device: &Device) -> Result<(Tensor, Tensor)> {
    let ids = vocab.encode(text)?;
    let count = ids.len() - WINDOW;
    let inputs = ids.windows(WINDOW).take(count).flatten().copied().collect::<Vec<_>>();
    let targets = ids[WINDOW..].to_vec();
    let inputs = Tensor::from_vec(inputs, (count, WINDOW), device)?;
    let targets = Tensor::from_vec(targets, count, device)?;
    Ok((inputs, targets))
}

fn parse_epochs() -> Result<usize> {
    let mut epochs = DEFAULT_EPOCHS;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--epochs" => {
                let value = args.next().context("--epochs needs a value, e.g. --epochs 500")?;
                epochs = value.parse().with_context(|| format!("--epochs wants a whole number, got {value:?}"))?;
            }
            "-h" | "--help" => {
                println!("usage: char_predictor [--epochs N]   (default {DEFAULT_EPOCHS})");
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?}; usage: char_predictor [--epochs N]"),
        }
    }
    Ok(epochs)
}

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}

/// Trains, predicts, and says whether every prediction was right.
fn run() -> Result<bool> {
    let epochs = parse_epochs()?;
    let device = Device::Cpu;
    let vocab = Vocab::new(TEXT);
    let (inputs, targets) = windows(&vocab, TEXT, &device)?;

    let varmap = VarMap::new();
    let vb = seeded_var_builder(&varmap, SEED, DType::F32, &device);
    let model = CharPredictor::new(vocab.len(), HIDDEN_SIZE, vb)?;
    let num_params: usize = varmap.all_vars().iter().map(|var| var.elem_count()).sum();
    println!("{model}");
    println!(
        "{num_params} parameters; {} windows of {WINDOW} characters; vocabulary of {}",
        inputs.dim(0)?,
        vocab.len()
    );
    println!();

    let mut optimizer = Adam::new(named_vars(&varmap), AdamConfig { lr: LEARNING_RATE, ..AdamConfig::default() })?;
    let report_every = (epochs / 10).max(1);
    let start = Instant::now();
    for epoch in 1..=epochs {
        let logits = model.forward(&inputs)?;
        let loss = recur::train::cross_entropy(&logits, &targets)?;
        optimizer.backward_step(&loss)?;
        if epoch == 1 || epoch % report_every == 0 || epoch == epochs {
            println!("epoch {epoch:>4}  loss {:.4}", loss.to_scalar::<f32>()?);
        }
    }
    println!("trained {epochs} epochs in {:.2?}", start.elapsed());
    println!();

    model.rnn.set_training(false);
    let prompt_ids = CHECKS.iter().map(|(prompt, _)| vocab.encode(prompt)).collect::<Result<Vec<_>>>()?;
    let prompts = Tensor::from_vec(prompt_ids.concat(), (CHECKS.len(), WINDOW), &device)?;
    let predicted = model.forward(&prompts)?.argmax(D::Minus1)?.to_vec1::<u32>()?;
    let mut wrong = 0;
    for ((prompt, expected), index) in CHECKS.iter().zip(predicted) {
        let got = vocab.char(index);
        let mark = if got == *expected { "✓" } else { "✗" };
        println!("{prompt:?} -> {got:?}  (expected {expected:?}) {mark}");
        wrong += usize::from(got != *expected);
    }
    if wrong > 0 {
        println!("{wrong} of {} predictions wrong", CHECKS.len());
    }
    Ok(wrong == 0)
}
