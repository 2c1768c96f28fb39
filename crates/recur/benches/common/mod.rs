//! The benchmark cases of `shared/bench/cases.md`, built once and then run as one training step
//! or one inference per call.
//!
//! Shared by `benches/layers.rs` (criterion) and `examples/bench_layers.rs` (the binary that
//! `bench/compare.py` times against PyTorch), so both measure exactly the same work:
//! - training step: forward over the whole batch, a scalar loss (MSE of the full output sequence
//!   against a fixed random target; for `charrnn`, cross-entropy at every step), and backward to
//!   the input, the initial state and every parameter; `charrnn` also takes an Adam step;
//! - inference: forward only, with weights, input and state that autograd does not track
//!   (PyTorch's `torch.no_grad()`).
//!
//! All float32 on the CPU; all values from fixed seeds.

// Each target that includes this module uses a different part of it.
#![allow(dead_code)]

use std::collections::HashMap;
use std::hint::black_box;

use anyhow::{bail, Result};
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Embedding, Linear, Module, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::train::{named_vars, Adam, AdamConfig, Optimizer};
use recur::{Gru, GruConfig, Lstm, LstmConfig, Recurrent, Rnn, RnnConfig, State};

/// Seed of the parameters; the data use `SEED + 1`.
const SEED: u64 = 2024;

/// The recurrent cell of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cell {
    /// `nn.LSTM`.
    Lstm,
    /// `nn.GRU`.
    Gru,
    /// `nn.RNN` with tanh.
    RnnTanh,
}

/// One row of the table in `cases.md`.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    /// The case's name in `cases.md`.
    pub name: &'static str,
    /// The recurrent cell.
    pub cell: Cell,
    /// `L`.
    pub num_layers: usize,
    /// `I` (for `charrnn`, the embedding size).
    pub input_size: usize,
    /// `H`.
    pub hidden_size: usize,
    /// `B`.
    pub batch: usize,
    /// `T`.
    pub seq_len: usize,
    /// `D = 2` when set.
    pub bidirectional: bool,
    /// `Some(V)` for the character model: Embedding(V, I) -> LSTM -> Linear(H, V).
    pub vocab_size: Option<usize>,
    /// Variable lengths ([`packed_lengths`]): the padded batch runs through `forward_with_lengths`.
    pub packed: bool,
}

/// The lengths of the packed case: `B` values spread evenly over `[T/4, T]`, shuffled by a fixed
/// permutation (`b ↦ 7b mod B`); `bench/compare.py` computes the same.
pub fn packed_lengths(batch: usize, seq_len: usize) -> Vec<usize> {
    let low = seq_len / 4;
    let even: Vec<usize> = (0..batch).map(|b| low + b * (seq_len - low) / (batch - 1).max(1)).collect();
    (0..batch).map(|b| even[(7 * b) % batch]).collect()
}

const fn layer_case(name: &'static str, cell: Cell, num_layers: usize, sizes: [usize; 4], bidirectional: bool) -> Case {
    let [input_size, hidden_size, batch, seq_len] = sizes;
    Case {
        name,
        cell,
        num_layers,
        input_size,
        hidden_size,
        batch,
        seq_len,
        bidirectional,
        vocab_size: None,
        packed: false,
    }
}

/// Every case of `cases.md`, in its order, then `M-packed`: case M with lengths spread over
/// `[T/4, T]` (issue 3's benchmark).
pub const CASES: [Case; 8] = [
    layer_case("S", Cell::Lstm, 1, [32, 64, 16, 50], false),
    layer_case("M", Cell::Lstm, 2, [128, 256, 32, 100], false),
    layer_case("L", Cell::Lstm, 1, [512, 1024, 64, 50], false),
    layer_case("M-GRU", Cell::Gru, 2, [128, 256, 32, 100], false),
    layer_case("M-RNN", Cell::RnnTanh, 2, [128, 256, 32, 100], false),
    layer_case("M-Bi", Cell::Lstm, 2, [128, 256, 32, 100], true),
    Case {
        name: "charrnn",
        cell: Cell::Lstm,
        num_layers: 2,
        input_size: 128,
        hidden_size: 256,
        batch: 32,
        seq_len: 100,
        bidirectional: false,
        vocab_size: Some(65),
        packed: false,
    },
    Case { packed: true, ..layer_case("M-packed", Cell::Lstm, 2, [128, 256, 32, 100], false) },
];

/// Looks a case up by its name in `cases.md`.
pub fn case(name: &str) -> Result<Case> {
    match CASES.iter().find(|case| case.name == name) {
        Some(case) => Ok(*case),
        None => {
            let names = CASES.iter().map(|case| case.name).collect::<Vec<_>>();
            bail!("unknown case {name:?}; expected one of {}", names.join(", "))
        }
    }
}

impl Case {
    /// `D`.
    pub fn num_directions(&self) -> usize {
        if self.bidirectional {
            2
        } else {
            1
        }
    }
}

/// What one iteration runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Forward + loss + backward (+ Adam step for `charrnn`).
    Train,
    /// Forward only, nothing tracked by autograd.
    Infer,
}

impl Mode {
    /// Both modes.
    pub const ALL: [Mode; 2] = [Mode::Train, Mode::Infer];

    /// `"train"` or `"infer"`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Train => "train",
            Mode::Infer => "infer",
        }
    }

    /// Parses `"train"` or `"infer"`.
    pub fn parse(name: &str) -> Result<Mode> {
        match name {
            "train" => Ok(Mode::Train),
            "infer" => Ok(Mode::Infer),
            other => bail!("unknown mode {other:?}; expected train or infer"),
        }
    }
}

/// The network of a case.
enum Net {
    /// A bare recurrent layer, sequence first: `x (T, B, I)` -> `(T, B, D·H)`.
    Layer(Box<dyn Recurrent>),
    /// The character model.
    CharRnn(Box<CharRnn>),
}

/// Embedding -> LSTM (batch first) -> Linear: tokens `(B, T)` -> logits `(B·T, V)`.
struct CharRnn {
    embedding: Embedding,
    lstm: Lstm,
    linear: Linear,
}

impl Net {
    fn new(case: &Case, vb: VarBuilder) -> Result<Net> {
        let (input_size, hidden_size) = (case.input_size, case.hidden_size);
        if let Some(vocab_size) = case.vocab_size {
            let embedding = candle_nn::embedding(vocab_size, input_size, vb.pp("embedding"))?;
            let config = LstmConfig {
                num_layers: case.num_layers,
                batch_first: true,
                ..LstmConfig::new(input_size, hidden_size)
            };
            let lstm = Lstm::new(config, vb.pp("lstm"))?;
            let linear = candle_nn::linear(hidden_size, vocab_size, vb.pp("linear"))?;
            return Ok(Net::CharRnn(Box::new(CharRnn { embedding, lstm, linear })));
        }
        let (num_layers, bidirectional) = (case.num_layers, case.bidirectional);
        let layer: Box<dyn Recurrent> = match case.cell {
            Cell::Lstm => Box::new(Lstm::new(
                LstmConfig { num_layers, bidirectional, ..LstmConfig::new(input_size, hidden_size) },
                vb,
            )?),
            Cell::Gru => Box::new(Gru::new(
                GruConfig { num_layers, bidirectional, ..GruConfig::new(input_size, hidden_size) },
                vb,
            )?),
            Cell::RnnTanh => Box::new(Rnn::new(
                RnnConfig { num_layers, bidirectional, ..RnnConfig::new(input_size, hidden_size) },
                vb,
            )?),
        };
        Ok(Net::Layer(layer))
    }

    fn set_training(&self, training: bool) {
        match self {
            Net::Layer(layer) => layer.set_training(training),
            Net::CharRnn(model) => model.lstm.set_training(training),
        }
    }

    fn forward(&self, input: &Tensor, state: Option<&State>, lengths: Option<&[usize]>) -> Result<Tensor> {
        match self {
            Net::Layer(layer) => Ok(match lengths {
                Some(lengths) => layer.forward_with_lengths(input, lengths, state)?.0,
                None => layer.forward(input, state)?.0,
            }),
            Net::CharRnn(model) => {
                // Embedding and LSTM in one (the table projected once per step, V = 65 rows
                // against B·T = 3,200 tokens), as `recur::models::CharLm` runs them.
                let table = model.embedding.embeddings();
                let (output, _state) = model.lstm.forward_embedded(table, input, state)?; // (B, T, H)
                let (batch, seq_len, hidden_size) = output.dims3()?;
                // (B·T, V)
                Ok(model.linear.forward(&output.reshape((batch * seq_len, hidden_size))?)?)
            }
        }
    }
}

/// A case built for one mode: network, data and (for `charrnn` training) optimizer.
pub struct Workload {
    mode: Mode,
    net: Net,
    /// `x (T, B, I)` for a layer, tokens `(B, T)` for `charrnn`.
    input: Tensor,
    /// The initial state (a layer's only; `charrnn` starts from zeros).
    state: Option<State>,
    /// The MSE target `(T, B, D·H)`, or the next-token ids `(B·T)` for `charrnn`.
    target: Tensor,
    optimizer: Option<Adam>,
    /// The sequence lengths of a packed case.
    lengths: Option<Vec<usize>>,
}

impl Workload {
    /// Builds `case` for `mode`.
    pub fn new(case: &Case, mode: Mode) -> Result<Workload> {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let mut net = Net::new(case, recur::seeded_var_builder(&varmap, SEED, DType::F32, &device))?;
        if mode == Mode::Infer {
            // Rebuild from detached copies of the weights, so that nothing is tracked.
            let weights = varmap
                .data()
                .lock()
                .map_err(|_| anyhow::anyhow!("the VarMap lock is poisoned"))?
                .iter()
                .map(|(name, var)| (name.clone(), var.as_tensor().detach()))
                .collect::<HashMap<_, _>>();
            net = Net::new(case, VarBuilder::from_tensors(weights, DType::F32, &device))?;
            net.set_training(false);
        }
        let tracked = mode == Mode::Train;
        let mut rng = StdRng::seed_from_u64(SEED + 1);
        let (batch, seq_len) = (case.batch, case.seq_len);
        let (input, state, target) = match case.vocab_size {
            Some(vocab_size) => {
                let tokens = random_tokens(&mut rng, vocab_size, (batch, seq_len), &device)?;
                let next = random_tokens(&mut rng, vocab_size, batch * seq_len, &device)?;
                (tokens, None, next)
            }
            None => {
                let states = case.num_layers * case.num_directions();
                let x = random(&mut rng, (seq_len, batch, case.input_size), tracked)?;
                let h0 = random(&mut rng, (states, batch, case.hidden_size), tracked)?;
                let state = match case.cell {
                    Cell::Lstm => State::lstm(h0, random(&mut rng, (states, batch, case.hidden_size), tracked)?),
                    Cell::Gru | Cell::RnnTanh => State::h(h0),
                };
                let output_size = case.num_directions() * case.hidden_size;
                let target = random(&mut rng, (seq_len, batch, output_size), false)?;
                (x, Some(state), target)
            }
        };
        let optimizer = match (mode, case.vocab_size) {
            (Mode::Train, Some(_)) => {
                // Recur's own Adam (PyTorch's `torch.optim.Adam`, which the PyTorch side runs).
                Some(Adam::new(named_vars(&varmap), AdamConfig { lr: 2e-3, ..AdamConfig::default() })?)
            }
            _ => None,
        };
        let lengths = case.packed.then(|| packed_lengths(batch, seq_len));
        Ok(Workload { mode, net, input, state, target, optimizer, lengths })
    }

    /// Runs one training step or one inference.
    pub fn run(&mut self) -> Result<()> {
        let output = self.net.forward(&self.input, self.state.as_ref(), self.lengths.as_deref())?;
        if self.mode == Mode::Infer {
            black_box(output);
            return Ok(());
        }
        let loss = match self.net {
            Net::Layer(_) => candle_nn::loss::mse(&output, &self.target)?,
            Net::CharRnn(_) => candle_nn::loss::cross_entropy(&output, &self.target)?,
        };
        let grads = loss.backward()?;
        if let Some(optimizer) = &mut self.optimizer {
            optimizer.step(&grads)?;
        }
        black_box(grads);
        Ok(())
    }
}

/// Uniform values in `[-1, 1)`; an autograd leaf when `tracked`.
pub fn random(rng: &mut StdRng, shape: (usize, usize, usize), tracked: bool) -> Result<Tensor> {
    let count = shape.0 * shape.1 * shape.2;
    let values = (0..count).map(|_| rng.gen_range(-1f32..1f32)).collect::<Vec<_>>();
    let tensor = Tensor::from_vec(values, shape, &Device::Cpu)?;
    Ok(if tracked { Var::from_tensor(&tensor)?.into_inner() } else { tensor })
}

fn random_tokens<S: Into<candle_core::Shape>>(
    rng: &mut StdRng,
    vocab_size: usize,
    shape: S,
    device: &Device,
) -> Result<Tensor> {
    let shape = shape.into();
    let ids = (0..shape.elem_count()).map(|_| rng.gen_range(0..vocab_size as u32)).collect::<Vec<_>>();
    Ok(Tensor::from_vec(ids, shape, device)?)
}
