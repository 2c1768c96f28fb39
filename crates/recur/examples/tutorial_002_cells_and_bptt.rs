//! Tutorial 002 ("循环神经网络基础"), sections 2–7:
//!
//! 1. a hand-written RNN cell (`h_t = tanh(x_t W_ihᵀ + b_ih + h_{t-1} W_hhᵀ + b_hh)`) stepped over
//!    `(32, 20, 10)` with a classifier on the last state, checked against `Rnn` on the same weights;
//! 2. a hand-written 2-layer LSTM (`gates = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh`, chunked `i, f, g, o`)
//!    checked against `Lstm` on the same weights;
//! 3. truncated-BPTT training of a character model over one stream, windows of 35 characters,
//!    the state detached between windows, gradient-norm clipping at 5.0, loss per epoch;
//! 4. the built-in 2-layer LSTM (dropout 0.5), GRU and bidirectional LSTM with the shapes the
//!    tutorial prints, and a stacked LSTM with dropout between layers.
//!
//! ```text
//! cargo run --release -p recur --example tutorial_002_cells_and_bptt
//! RECUR_EXAMPLE_SMALL=1 cargo run --release -p recur --example tutorial_002_cells_and_bptt
//! ```

use std::collections::HashMap;
use std::fmt;

use anyhow::{ensure, Context, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{Dropout, Linear, Module, ModuleT, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::models::{CellType, CharLm, CharLmConfig};
use recur::repr::{self, ModuleRepr};
use recur::train::{clip_grad_norm, named_vars, Adam, AdamConfig, NormType, Optimizer};
use recur::{Gru, GruConfig, Lstm, LstmConfig, Rnn, RnnConfig, State};

/// The tutorial's `ManualRNNCell`, reading its parameters from an `Rnn` layer (PyTorch layout:
/// `weight_ih (H, I)`, `weight_hh (H, H)`).
struct ManualRnnCell {
    w_ih: Tensor,
    w_hh: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
}

impl ManualRnnCell {
    fn from_layer(weights: &HashMap<String, Tensor>, layer: usize) -> Result<Self> {
        let get = |name: &str| weights.get(&format!("{name}_l{layer}")).cloned().context(name.to_string());
        Ok(Self { w_ih: get("weight_ih")?, w_hh: get("weight_hh")?, b_ih: get("bias_ih")?, b_hh: get("bias_hh")? })
    }

    /// `x_t (B, I)`, `h_prev (B, H)` → `h_t (B, H)`.
    fn forward(&self, x_t: &Tensor, h_prev: &Tensor) -> Result<Tensor> {
        let pre = x_t.matmul(&self.w_ih.t()?)?.broadcast_add(&self.b_ih)?;
        let pre = (pre + h_prev.matmul(&self.w_hh.t()?)?.broadcast_add(&self.b_hh)?)?;
        Ok(pre.tanh()?)
    }
}

/// The tutorial's `ManualRNN`: the cell over every step, `fc` on the last state.
struct ManualRnn {
    cell: ManualRnnCell,
    fc: Linear,
    hidden_size: usize,
}

impl ManualRnn {
    /// `x (B, T, I)` → `(logits (B, C), all hidden states (B, T, H))`.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, Tensor)> {
        let (batch, seq_len, _) = x.dims3()?;
        let mut h_t = Tensor::zeros((batch, self.hidden_size), x.dtype(), x.device())?;
        let mut outputs = Vec::with_capacity(seq_len);
        for t in 0..seq_len {
            h_t = self.cell.forward(&x.i((.., t, ..))?, &h_t)?;
            outputs.push(h_t.clone());
        }
        let outputs = Tensor::stack(&outputs, 1)?; // (B, T, H)
        Ok((self.fc.forward(&h_t)?, outputs))
    }
}

/// The tutorial's `ManualLSTMCell` on an `Lstm` layer's parameters (gate blocks `i, f, g, o`).
struct ManualLstmCell {
    rnn: ManualRnnCell, // the same four tensors, 4H rows each
}

impl ManualLstmCell {
    /// `x_t (B, I)`, `(h_prev, c_prev)` each `(B, H)` → `(h_t, c_t)`.
    fn forward(&self, x_t: &Tensor, (h_prev, c_prev): (&Tensor, &Tensor)) -> Result<(Tensor, Tensor)> {
        let w = &self.rnn;
        let gates = x_t.matmul(&w.w_ih.t()?)?.broadcast_add(&w.b_ih)?;
        let gates = (gates + h_prev.matmul(&w.w_hh.t()?)?.broadcast_add(&w.b_hh)?)?;
        let chunks = gates.chunk(4, 1)?; // i, f, g, o
        let i_t = candle_nn::ops::sigmoid(&chunks[0])?; // input gate
        let f_t = candle_nn::ops::sigmoid(&chunks[1])?; // forget gate
        let g_t = chunks[2].tanh()?; // candidate cell
        let o_t = candle_nn::ops::sigmoid(&chunks[3])?; // output gate
        let c_t = ((f_t * c_prev)? + (i_t * g_t)?)?;
        let h_t = (o_t * c_t.tanh()?)?;
        Ok((h_t, c_t))
    }
}

/// The tutorial's `ManualLSTM`: a stack of manual cells, stepped time-major.
struct ManualLstm {
    cells: Vec<ManualLstmCell>,
    hidden_size: usize,
}

impl ManualLstm {
    /// `x (B, T, I)` → `(outputs (B, T, H), (h_n, c_n) each (L, B, H))`.
    fn forward(&self, x: &Tensor) -> Result<(Tensor, State)> {
        let (batch, seq_len, _) = x.dims3()?;
        let zeros = Tensor::zeros((batch, self.hidden_size), x.dtype(), x.device())?;
        let (mut h, mut c) = (vec![zeros.clone(); self.cells.len()], vec![zeros; self.cells.len()]);
        let mut outputs = Vec::with_capacity(seq_len);
        for t in 0..seq_len {
            let mut layer_input = x.i((.., t, ..))?;
            for (l, cell) in self.cells.iter().enumerate() {
                (h[l], c[l]) = cell.forward(&layer_input, (&h[l], &c[l]))?;
                layer_input = h[l].clone();
            }
            outputs.push(layer_input);
        }
        Ok((Tensor::stack(&outputs, 1)?, State::lstm(Tensor::stack(&h, 0)?, Tensor::stack(&c, 0)?)))
    }
}

/// `max |a − b|`.
fn max_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// `torch.randn(shape)` from a seeded generator.
fn randn(rng: &mut StdRng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2): (f32, f32) = (1.0 - rng.gen::<f32>(), rng.gen());
            (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// The tutorial's `StackedLSTM`: single-layer LSTMs with `nn.Dropout` between them.
struct StackedLstm {
    layers: Vec<Lstm>,
    dropouts: Vec<Dropout>,
    p: f32,
}

impl StackedLstm {
    fn new(
        input_size: usize,
        hidden_size: usize,
        num_layers: usize,
        p: f32,
        vb: candle_nn::VarBuilder,
    ) -> Result<Self> {
        let layers = (0..num_layers)
            .map(|i| {
                let input = if i == 0 { input_size } else { hidden_size };
                Lstm::new(
                    LstmConfig { batch_first: true, ..LstmConfig::new(input, hidden_size) },
                    vb.pp(format!("layers.{i}")),
                )
            })
            .collect::<recur::Result<Vec<_>>>()?;
        let dropouts = (1..num_layers).map(|_| Dropout::new(p)).collect();
        Ok(Self { layers, dropouts, p })
    }

    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let mut x = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.forward(&x, None)?.0;
            if let Some(dropout) = self.dropouts.get(i) {
                x = dropout.forward_t(&x, train)?;
            }
        }
        Ok(x)
    }
}

impl fmt::Display for StackedLstm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ModuleRepr::new("StackedLSTM")
            .child("layers", ModuleRepr::list(&self.layers))
            .child("dropouts", ModuleRepr::list(self.dropouts.iter().map(|_| repr::dropout(f64::from(self.p)))))
            .fmt(f)
    }
}

fn main() -> Result<()> {
    let small = std::env::var("RECUR_EXAMPLE_SMALL").is_ok_and(|v| v == "1");
    let device = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(0);

    // 2.2 The manual RNN, on the weights of a built-in RNN.
    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &device);
    let (input_size, hidden_size, num_classes) = (10, 64, 5);
    let rnn = Rnn::new(RnnConfig { batch_first: true, ..RnnConfig::new(input_size, hidden_size) }, vb.pp("rnn"))?;
    let weights: HashMap<String, Tensor> = rnn.weights().into_iter().collect();
    let model = ManualRnn {
        cell: ManualRnnCell::from_layer(&weights, 0)?,
        fc: recur::nn::linear(hidden_size, num_classes, vb.pp("fc"))?,
        hidden_size,
    };
    let x = randn(&mut rng, &[32, 20, 10])?; // batch=32, seq_len=20, input=10
    let (out, all_hidden) = model.forward(&x)?;
    println!("ManualRNN output: {:?}, all hidden states: {:?}", out.dims(), all_hidden.dims());
    let (builtin, _) = rnn.forward(&x, None)?;
    let diff = max_diff(&all_hidden, &builtin)?;
    println!("manual RNN vs {rnn}: max |diff| = {diff:.2e}");
    ensure!(diff < 1e-6, "manual RNN differs from Rnn by {diff}");

    // 5.4 The manual 2-layer LSTM, on the weights of a built-in 2-layer LSTM.
    let lstm_config = LstmConfig { num_layers: 2, batch_first: true, ..LstmConfig::new(input_size, 32) };
    let lstm = Lstm::new(lstm_config, vb.pp("lstm"))?;
    let weights: HashMap<String, Tensor> = lstm.weights().into_iter().collect();
    let manual = ManualLstm {
        cells: (0..2)
            .map(|l| Ok(ManualLstmCell { rnn: ManualRnnCell::from_layer(&weights, l)? }))
            .collect::<Result<_>>()?,
        hidden_size: 32,
    };
    let (manual_out, manual_state) = manual.forward(&x)?;
    let (out, state) = lstm.forward(&x, None)?;
    let c_n = state.c.as_ref().context("an LSTM returns c")?;
    let manual_c = manual_state.c.as_ref().context("c")?;
    let diff = max_diff(&manual_out, &out)?.max(max_diff(&manual_state.h, &state.h)?).max(max_diff(manual_c, c_n)?);
    println!(
        "ManualLSTM output: {:?}, h_n: {:?}, c_n: {:?}",
        manual_out.dims(),
        manual_state.h.dims(),
        manual_c.dims()
    );
    println!("manual LSTM vs {lstm}: max |diff| = {diff:.2e}");
    ensure!(diff < 1e-6, "manual LSTM differs from Lstm by {diff}");

    // 3.2 Truncated BPTT over one stream: windows of 35, state detached, clip_grad_norm 5.0.
    let text = include_str!("../../../README.md");
    let text: String = if small { text.chars().take(1500).collect() } else { text.to_string() };
    let vocab = recur::data::Vocab::from_text(&text)?;
    let stream = vocab.encode("text", &text)?;
    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, 1, DType::F32, &device);
    let config = CharLmConfig {
        cell: CellType::Lstm,
        embedding_size: 32,
        hidden_size: 64,
        num_layers: 1,
        ..CharLmConfig::new(vocab.len())
    };
    let model = CharLm::new(config, vb)?;
    println!("\ntruncated BPTT on {} characters, seq_length 35:\n{model}", stream.len());
    let vars = varmap.all_vars();
    let mut optimizer = Adam::new(named_vars(&varmap), AdamConfig { lr: 0.003, ..AdamConfig::default() })?;
    let (seq_length, epochs) = (35, if small { 3 } else { 5 });
    for epoch in 1..=epochs {
        let (mut h, mut total, mut windows, mut max_norm) = (None::<State>, 0.0, 0, 0f64);
        for i in (0..stream.len() - 1).step_by(seq_length) {
            let end = (i + seq_length).min(stream.len() - 1);
            let x = Tensor::new(&stream[i..end], &device)?.unsqueeze(0)?; // (1, T)
            let y = Tensor::new(&stream[i + 1..end + 1], &device)?; // (T,)
            let h_in = h.as_ref().map(State::detach); // cut the graph, keep the values
            let (output, next) = model.forward(&x, h_in.as_ref())?;
            let loss = recur::train::cross_entropy(&output.squeeze(0)?, &y)?;
            let mut grads = loss.backward()?;
            max_norm = max_norm.max(clip_grad_norm(&vars, &mut grads, 5.0, NormType::L2, false)?);
            optimizer.step(&grads)?;
            h = Some(next);
            total += f64::from(loss.to_scalar::<f32>()?);
            windows += 1;
        }
        println!(
            "epoch {epoch}: mean loss {:.4} over {windows} windows (largest grad norm {max_norm:.2})",
            total / windows as f64
        );
    }

    // 5.4, 6, 7.1 The built-in layers with the tutorial's sizes.
    let x = randn(&mut rng, &[32, 50, 100])?;
    let lstm = Lstm::new(
        LstmConfig { num_layers: 2, batch_first: true, dropout: 0.5, ..LstmConfig::new(100, 256) },
        vb_for("lstm", &device),
    )?;
    let (output, State { h: h_n, c }) = lstm.forward(&x, None)?;
    let c_n = c.context("c_n")?;
    println!("\n{lstm}\noutput: {:?}\nh_n: {:?}\nc_n: {:?}", output.dims(), h_n.dims(), c_n.dims());
    let gru = Gru::new(
        GruConfig { num_layers: 2, batch_first: true, dropout: 0.5, ..GruConfig::new(100, 256) },
        vb_for("gru", &device),
    )?;
    let (output, state) = gru.forward(&x, None)?;
    println!("\n{gru}\nGRU output: {:?}\nGRU h_n: {:?}", output.dims(), state.h.dims());
    let bilstm = Lstm::new(
        LstmConfig { num_layers: 2, batch_first: true, bidirectional: true, ..LstmConfig::new(100, 256) },
        vb_for("bilstm", &device),
    )?;
    let (output, state) = bilstm.forward(&x, None)?;
    println!("\n{bilstm}\nBiLSTM output: {:?}\nBiLSTM h_n: {:?}", output.dims(), state.h.dims());

    // 7.2 A stack of single-layer LSTMs with dropout between them.
    let stacked = StackedLstm::new(100, 64, 3, 0.5, vb_for("stacked", &device))?;
    let output = stacked.forward(&x, true)?;
    let eval = stacked.forward(&x, false)?;
    println!("\n{stacked}\nStackedLSTM output: {:?}", output.dims());
    let eval_again = stacked.forward(&x, false)?;
    println!(
        "eval mode (no dropout) is deterministic: max |diff| between two runs = {}",
        max_diff(&eval, &eval_again)?
    );
    Ok(())
}

/// A fresh, seeded parameter store for one demo layer.
fn vb_for(name: &'static str, device: &Device) -> candle_nn::VarBuilder<'static> {
    let seed = name.bytes().map(u64::from).sum();
    recur::seeded_var_builder(&VarMap::new(), seed, DType::F32, device).pp(name)
}
