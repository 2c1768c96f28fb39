//! Tutorial 000 ("循环神经网络（RNN）"): the four ways to build an RNN model — `SimpleRNN`,
//! `MultiLayerRNN` (`nn.RNN` with `num_layers`), `RNNWithCell` and `MultiLayerRNNCell`
//! (`nn.RNNCell` in a hand-written time loop) — printed like `print(model)`, then the text
//! classification run: a 2-layer RNN over `(32, 50, 100)` random "word vectors", two classes,
//! cross-entropy, Adam (lr 0.001), 10 epochs.
//!
//! ```text
//! cargo run --release -p recur --example tutorial_000_basics
//! RECUR_EXAMPLE_SMALL=1 cargo run --release -p recur --example tutorial_000_basics   # smaller data
//! ```

use std::fmt;

use anyhow::Result;
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::repr::ModuleRepr;
use recur::train::{named_vars, Adam, AdamConfig, Optimizer};
use recur::{Rnn, RnnCell, RnnCellConfig, RnnConfig, State};

/// `nn.RNN(input_size, hidden_size, batch_first=True)` → `nn.Linear` on the last step.
struct SimpleRnn {
    rnn: Rnn,
    fc: Linear,
}

impl SimpleRnn {
    fn new(input_size: usize, hidden_size: usize, output_size: usize, vb: VarBuilder) -> Result<Self> {
        let rnn = Rnn::new(RnnConfig { batch_first: true, ..RnnConfig::new(input_size, hidden_size) }, vb.pp("rnn"))?;
        let fc = recur::nn::linear(hidden_size, output_size, vb.pp("fc"))?;
        Ok(Self { rnn, fc })
    }

    /// `x (B, T, I)` → `(B, O)`.
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (out, _hn) = self.rnn.forward(x, None)?; // h0 = None: zeros (1, B, H)
        let last = out.i((.., out.dim(1)? - 1, ..))?; // out[:, -1, :]
        Ok(self.fc.forward(&last)?)
    }
}

impl fmt::Display for SimpleRnn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ModuleRepr::new("SimpleRNN").child("rnn", &self.rnn).child("fc", &self.fc).fmt(f)
    }
}

/// `nn.RNN(input_size, hidden_size, num_layers, batch_first=True)` → `nn.Linear`.
struct MultiLayerRnn {
    rnn: Rnn,
    fc: Linear,
}

impl MultiLayerRnn {
    fn new(
        input_size: usize,
        hidden_size: usize,
        output_size: usize,
        num_layers: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let config = RnnConfig { num_layers, batch_first: true, ..RnnConfig::new(input_size, hidden_size) };
        let rnn = Rnn::new(config, vb.pp("rnn"))?;
        let fc = recur::nn::linear(hidden_size, output_size, vb.pp("fc"))?;
        Ok(Self { rnn, fc })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (out, _hn) = self.rnn.forward(x, None)?;
        let last = out.i((.., out.dim(1)? - 1, ..))?;
        Ok(self.fc.forward(&last)?)
    }
}

impl fmt::Display for MultiLayerRnn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ModuleRepr::new("MultiLayerRNN").child("rnn", &self.rnn).child("fc", &self.fc).fmt(f)
    }
}

/// `nn.RNNCell` stepped by hand over `x[:, t, :]`.
struct RnnWithCell {
    rnn_cell: RnnCell,
    fc: Linear,
}

impl RnnWithCell {
    fn new(input_size: usize, hidden_size: usize, output_size: usize, vb: VarBuilder) -> Result<Self> {
        let rnn_cell = RnnCell::new(RnnCellConfig::new(input_size, hidden_size), vb.pp("rnn_cell"))?;
        let fc = recur::nn::linear(hidden_size, output_size, vb.pp("fc"))?;
        Ok(Self { rnn_cell, fc })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let seq_len = x.dim(1)?;
        let mut h: Option<State> = None; // zeros (B, H)
        for t in 0..seq_len {
            h = Some(self.rnn_cell.forward(&x.i((.., t, ..))?, h.as_ref())?);
        }
        let h = h.map(|s| s.h).ok_or_else(|| anyhow::anyhow!("empty sequence"))?;
        Ok(self.fc.forward(&h)?)
    }
}

impl fmt::Display for RnnWithCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ModuleRepr::new("RNNWithCell").child("rnn_cell", &self.rnn_cell).child("fc", &self.fc).fmt(f)
    }
}

/// A stack of `nn.RNNCell`s (`nn.ModuleList`), layer `l` reading layer `l − 1`'s new state.
struct MultiLayerRnnCell {
    cells: Vec<RnnCell>,
    fc: Linear,
}

impl MultiLayerRnnCell {
    fn new(
        input_size: usize,
        hidden_size: usize,
        output_size: usize,
        num_layers: usize,
        vb: VarBuilder,
    ) -> Result<Self> {
        let cells = (0..num_layers)
            .map(|i| {
                let input = if i == 0 { input_size } else { hidden_size };
                RnnCell::new(RnnCellConfig::new(input, hidden_size), vb.pp(format!("cells.{i}")))
            })
            .collect::<recur::Result<Vec<_>>>()?;
        let fc = recur::nn::linear(hidden_size, output_size, vb.pp("fc"))?;
        Ok(Self { cells, fc })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let seq_len = x.dim(1)?;
        let mut h: Vec<Option<State>> = vec![None; self.cells.len()];
        for t in 0..seq_len {
            let mut input_t = x.i((.., t, ..))?;
            for (cell, h_layer) in self.cells.iter().zip(h.iter_mut()) {
                let next = cell.forward(&input_t, h_layer.as_ref())?;
                input_t = next.h.clone();
                *h_layer = Some(next);
            }
        }
        let top = h.last().cloned().flatten().map(|s| s.h).ok_or_else(|| anyhow::anyhow!("empty sequence"))?;
        Ok(self.fc.forward(&top)?)
    }
}

impl fmt::Display for MultiLayerRnnCell {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ModuleRepr::new("MultiLayerRNNCell").child("cells", ModuleRepr::list(&self.cells)).child("fc", &self.fc).fmt(f)
    }
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

fn main() -> Result<()> {
    let small = std::env::var("RECUR_EXAMPLE_SMALL").is_ok_and(|v| v == "1");
    let device = Device::Cpu;
    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &device);
    let mut rng = StdRng::seed_from_u64(0);

    // 1-4: the four model structures, as `print(model)` shows them.
    let (input_size, hidden_size, output_size, num_layers) = (10, 20, 1, 3);
    let x = randn(&mut rng, &[4, 7, input_size])?; // (batch, seq_len, input_size)
    let simple = SimpleRnn::new(input_size, hidden_size, output_size, vb.pp("simple"))?;
    println!("{simple}");
    println!("output: {:?}\n", simple.forward(&x)?.dims());
    let multi = MultiLayerRnn::new(input_size, hidden_size, output_size, num_layers, vb.pp("multi"))?;
    println!("{multi}");
    println!("output: {:?}\n", multi.forward(&x)?.dims());
    let with_cell = RnnWithCell::new(input_size, hidden_size, output_size, vb.pp("with_cell"))?;
    println!("{with_cell}");
    println!("output: {:?}\n", with_cell.forward(&x)?.dims());
    let multi_cell = MultiLayerRnnCell::new(input_size, hidden_size, output_size, num_layers, vb.pp("multi_cell"))?;
    println!("{multi_cell}");
    println!("output: {:?}\n", multi_cell.forward(&x)?.dims());

    // Text classification: fixed-length sequences of word vectors, two classes.
    let (batch_size, seq_len, input_size, hidden_size) = if small { (8, 12, 16, 32) } else { (32, 50, 100, 128) };
    let (output_size, num_layers, num_epochs) = (2, 2, 10);
    let inputs = randn(&mut rng, &[batch_size, seq_len, input_size])?;
    let labels: Vec<u32> = (0..batch_size).map(|_| rng.gen_range(0..output_size as u32)).collect();
    let labels = Tensor::from_vec(labels, batch_size, &device)?;

    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, 1, DType::F32, &device);
    let model = MultiLayerRnn::new(input_size, hidden_size, output_size, num_layers, vb)?;
    println!("text classification: inputs {:?}, labels {:?}", inputs.dims(), labels.dims());
    println!("{model}");
    // torch.optim.Adam(model.parameters(), lr=0.001)
    let mut optimizer = Adam::new(named_vars(&varmap), AdamConfig { lr: 0.001, ..AdamConfig::default() })?;
    model.rnn.set_training(true); // model.train()
    for epoch in 0..num_epochs {
        let outputs = model.forward(&inputs)?;
        let loss = recur::train::cross_entropy(&outputs, &labels)?; // nn.CrossEntropyLoss()
        optimizer.backward_step(&loss)?; // zero_grad(); backward(); step()
        println!("Epoch [{}/{num_epochs}], Loss: {:.4}", epoch + 1, loss.to_scalar::<f32>()?);
    }
    Ok(())
}
