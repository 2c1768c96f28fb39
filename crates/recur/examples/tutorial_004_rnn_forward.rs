//! Tutorial 004 ("循环神经网络的基本网络结构"), section 3 (`model.py`, `train.py`):
//!
//! 1. `rnn_forward`, the RNN written by hand with batched matrix products on the parameters of a
//!    built-in `nn.RNN(5, 8, batch_first=True)`, checked against it on `(10, 30, 5)`;
//! 2. the `RNN` model (`nn.RNN` with `normal_(0, 0.001)` parameters → `nn.Linear` on every step)
//!    trained with `MSELoss` and Adam (lr 0.001) on `(2, 30, 3)`, the hidden state carried and
//!    detached between iterations; the loss every 100 iterations, the training time, and the loss
//!    curve written as an SVG (the tutorial's matplotlib plot).
//!
//! The tutorial draws a fresh random target every iteration, which no model can fit; here the
//! target is drawn once, so the loss has something to fall towards.
//!
//! ```text
//! cargo run --release -p recur --example tutorial_004_rnn_forward [-- --plot loss.svg]
//! RECUR_EXAMPLE_SMALL=1 cargo run --release -p recur --example tutorial_004_rnn_forward
//! ```

use std::fmt;
use std::time::Instant;

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::plot::{LinePlot, Series};
use recur::repr::ModuleRepr;
use recur::train::{named_vars, Adam, AdamConfig, Optimizer};
use recur::{Rnn, RnnConfig, State};

/// `torch.randn(shape) * std` from a seeded generator.
fn randn(rng: &mut StdRng, shape: &[usize], std: f32) -> Result<Tensor> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            let (u1, u2): (f32, f32) = (1.0 - rng.gen::<f32>(), rng.gen());
            std * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f32::consts::PI * u2).cos()
        })
        .collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

/// The tutorial's hand-written `rnn_forward`: `input (B, T, F)` batch-first, PyTorch-layout
/// weights, `h_prev (1, B, H)` → `(h_out (B, T, H), h_n (1, B, H))`.
fn rnn_forward(
    input: &Tensor,
    weight_ih: &Tensor,
    weight_hh: &Tensor,
    bias_ih: &Tensor,
    bias_hh: &Tensor,
    h_prev: &Tensor,
) -> Result<(Tensor, Tensor)> {
    let (batch_size, t_seq, feature_size) = input.dims3()?;
    let hidden_size = weight_ih.dim(0)?;
    // weight_ih.unsqueeze(0).tile(batch_size, 1, 1): (B, H, F), and (B, H, H) for weight_hh.
    let weight_ih_batch = weight_ih.unsqueeze(0)?.broadcast_as((batch_size, hidden_size, feature_size))?;
    let weight_hh_batch = weight_hh.unsqueeze(0)?.broadcast_as((batch_size, hidden_size, hidden_size))?;
    let mut h_prev = h_prev.squeeze(0)?; // (B, H)
    let mut h_out = Vec::with_capacity(t_seq);
    for t in 0..t_seq {
        let x = input.narrow(1, t, 1)?.squeeze(1)?.unsqueeze(2)?; // (B, F, 1)
        let w_times_x = weight_ih_batch.matmul(&x)?.squeeze(2)?; // bmm: (B, H)
        let w_times_h = weight_hh_batch.matmul(&h_prev.unsqueeze(2)?)?.squeeze(2)?; // (B, H)
        h_prev = (w_times_x.broadcast_add(bias_ih)? + w_times_h.broadcast_add(bias_hh)?)?.tanh()?;
        h_out.push(h_prev.clone());
    }
    Ok((Tensor::stack(&h_out, 1)?, h_prev.unsqueeze(0)?))
}

/// The tutorial's `RNN` model: `nn.RNN` → `nn.Linear` on every step.
struct RnnModel {
    rnn: Rnn,
    linear: Linear,
}

impl RnnModel {
    fn new(
        feature_size: usize,
        hidden_size: usize,
        num_layers: usize,
        output_size: usize,
        varmap: &VarMap,
        vb: VarBuilder,
        rng: &mut StdRng,
    ) -> Result<Self> {
        let config = RnnConfig { num_layers, batch_first: true, ..RnnConfig::new(feature_size, hidden_size) };
        let rnn = Rnn::new(config, vb.pp("rnn"))?;
        // for k in self.rnn.parameters(): nn.init.normal_(k, mean=0.0, std=0.001)
        for (name, var) in varmap.data().lock().map_err(|_| anyhow::anyhow!("VarMap lock poisoned"))?.iter() {
            if name.starts_with("rnn.") {
                var.set(&randn(rng, var.dims(), 0.001)?)?;
            }
        }
        let linear = recur::nn::linear(hidden_size, output_size, vb.pp("linear"))?;
        Ok(Self { rnn, linear })
    }

    /// `x (B, T, F)`, `hidden_prev (L, B, H)` → `(out (B, T, O), hidden (L, B, H))`.
    fn forward(&self, x: &Tensor, hidden_prev: &Tensor, verbose: bool) -> Result<(Tensor, Tensor)> {
        let (out, state) = self.rnn.forward(x, Some(&State::h(hidden_prev.clone())))?;
        let out2 = self.linear.forward(&out)?; // Linear acts on the last dimension
        if verbose {
            println!("out1&hidden_prev.shape {:?} {:?}", out.dims(), state.h.dims());
            println!("out3.shape {:?}", out2.dims());
        }
        Ok((out2, state.h))
    }
}

impl fmt::Display for RnnModel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        ModuleRepr::new("RNN").child("rnn", &self.rnn).child("linear", &self.linear).fmt(f)
    }
}

fn main() -> Result<()> {
    let small = std::env::var("RECUR_EXAMPLE_SMALL").is_ok_and(|v| v == "1");
    let mut plot_path = std::env::temp_dir().join("recur_tutorial_004_loss.svg");
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--plot" => plot_path = args.next().context("--plot needs a file name")?.into(),
            other => bail!("unknown argument {other:?}; usage: tutorial_004_rnn_forward [--plot FILE.svg]"),
        }
    }
    let device = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(0);

    // model.py: rnn_forward against nn.RNN on the same parameters.
    let (batch_size, t_seq, feature_size, hidden_size) = (10, 30, 5, 8);
    let input = randn(&mut rng, &[batch_size, t_seq, feature_size], 1.0)?;
    let h_prev = Tensor::zeros((1, batch_size, hidden_size), DType::F32, &device)?;
    let vb = recur::seeded_var_builder(&VarMap::new(), 0, DType::F32, &device);
    let rnn = Rnn::new(RnnConfig { batch_first: true, ..RnnConfig::new(feature_size, hidden_size) }, vb)?;
    for (name, w) in rnn.weights() {
        println!("{name} {:?}", w.dims());
    }
    let (rnn_output, state_final) = rnn.forward(&input, Some(&State::h(h_prev.clone())))?;
    let w = |name: &str| rnn.weights().into_iter().find(|(n, _)| n == name).map(|(_, t)| t).context(name.to_string());
    let (my_rnn_output, my_state_final) =
        rnn_forward(&input, &w("weight_ih_l0")?, &w("weight_hh_l0")?, &w("bias_ih_l0")?, &w("bias_hh_l0")?, &h_prev)?;
    println!("{:?}\n{:?}", my_rnn_output.dims(), my_state_final.dims());
    let max_diff = |a: &Tensor, b: &Tensor| -> Result<f32> { Ok((a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar()?) };
    let diff = max_diff(&my_rnn_output, &rnn_output)?.max(max_diff(&my_state_final, &state_final.h)?);
    println!("rnn_forward vs {rnn}: max |diff| = {diff:.2e}\n");
    ensure!(diff < 1e-6, "rnn_forward differs from Rnn by {diff}");

    // train.py
    let (batch_size, t_seq, feature_size, hidden_size, output_size, num_layers) = (2, 30, 3, 5, 4, 1);
    let (lr_rate, epoch) = (0.001, if small { 300 } else { 1000 });
    let input = randn(&mut rng, &[batch_size, t_seq, feature_size], 1.0)?;
    let y = randn(&mut rng, &[batch_size, t_seq, output_size], 1.0)?; // drawn once, see above
    let start_time = Instant::now();
    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, 1, DType::F32, &device);
    let model = RnnModel::new(feature_size, hidden_size, num_layers, output_size, &varmap, vb, &mut rng)?;
    println!("model:\n {model}");
    let mut optimizer = Adam::new(named_vars(&varmap), AdamConfig { lr: lr_rate, ..AdamConfig::default() })?;
    let mut hidden_prev = Tensor::zeros((num_layers, batch_size, hidden_size), DType::F32, &device)?;
    let mut loss_plt = Vec::new();
    for iter in 0..epoch {
        let x = &input;
        let (output, hidden) = model.forward(x, &hidden_prev, iter == 0)?;
        if iter == 0 {
            println!("x: {:?}\noutput_size: {:?}\ny: {:?}", x.dims(), output.dims(), y.dims());
        }
        hidden_prev = hidden.detach(); // carry the state, not its graph
        let loss = recur::train::mse(&output, &y)?; // nn.MSELoss()
        optimizer.backward_step(&loss)?;
        if iter % 100 == 0 || iter + 1 == epoch {
            let value = loss.to_scalar::<f32>()?;
            println!("iteration: {iter} loss {value}");
            loss_plt.push((iter as f64, f64::from(value)));
        }
    }
    println!("The training time: {:?}", start_time.elapsed());
    let mut plot = LinePlot::new("RNN-train-loss", "epoch", "loss");
    plot.x_integer = true;
    plot.series.push(Series::new("loss", loss_plt));
    std::fs::write(&plot_path, plot.to_svg()).with_context(|| format!("writing {}", plot_path.display()))?;
    println!("loss plot: {}", plot_path.display());
    Ok(())
}
