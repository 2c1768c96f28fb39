//! Tutorial 004 ("RNN 结构分类"): the RNN structures by input and output length, each a small
//! runnable model trained briefly on a toy task that needs that structure:
//!
//! - **N vs N** (one output per input step): `y_t = x_t + x_{t−1}`;
//! - **N vs 1** (one output for the sequence): is `Σ x_t > 0`?;
//! - **1 vs N** (one input, a sequence out): the line `y_t = a + b·t/T` from `(a, b)`, with the
//!   input given at the first step only, or at every step;
//! - **N vs M** (encoder–decoder): an encoder reads 8 steps into a context `c = h_N`; a decoder
//!   writes the first 4 inputs in reverse order, with `c` as its initial state, or with `c` as its
//!   input at every step.
//!
//! Each prints its structure, its shapes and its loss before and after training.
//!
//! ```text
//! cargo run --release -p recur --example tutorial_004_structures
//! RECUR_EXAMPLE_SMALL=1 cargo run --release -p recur --example tutorial_004_structures
//! ```

use anyhow::{ensure, Result};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{Linear, Module, VarBuilder, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use recur::repr::ModuleRepr;
use recur::train::{named_vars, Adam, AdamConfig, Optimizer};
use recur::{Rnn, RnnConfig, State};

const HIDDEN: usize = 32;

/// Uniform values in [-1, 1) from a seeded generator.
fn uniform(rng: &mut StdRng, shape: &[usize]) -> Result<Tensor> {
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
    Ok(Tensor::from_vec(values, shape, &Device::Cpu)?)
}

fn rnn(input_size: usize, vb: VarBuilder) -> Result<Rnn> {
    Ok(Rnn::new(RnnConfig { batch_first: true, ..RnnConfig::new(input_size, HIDDEN) }, vb)?)
}

/// Adam on every variable of `varmap` for `steps` full-batch steps; returns (first, last) loss.
fn fit(varmap: &VarMap, steps: usize, mut loss: impl FnMut() -> Result<Tensor>) -> Result<(f32, f32)> {
    let mut optimizer = Adam::new(named_vars(varmap), AdamConfig { lr: 0.01, ..AdamConfig::default() })?;
    let (mut first, mut last) = (f32::NAN, f32::NAN);
    for step in 0..steps {
        let value = loss()?;
        last = value.to_scalar::<f32>()?;
        if step == 0 {
            first = last;
        }
        optimizer.backward_step(&value)?;
    }
    println!("loss {first:.4} -> {last:.4} after {steps} Adam steps\n");
    ensure!(last < first, "the loss did not fall");
    Ok((first, last))
}

/// RNN → Linear on every step.
struct NVsN {
    rnn: Rnn,
    fc: Linear,
}

impl NVsN {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (out, _) = self.rnn.forward(x, None)?; // (B, T, H)
        Ok(self.fc.forward(&out)?) // (B, T, 1)
    }
}

/// RNN → Linear on the last step only.
struct NVs1 {
    rnn: Rnn,
    fc: Linear,
}

impl NVs1 {
    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (_, state) = self.rnn.forward(x, None)?;
        Ok(self.fc.forward(&state.h.get(0)?)?) // h_n of the one layer: (B, H) → (B, 2)
    }
}

/// One input vector, `steps` outputs: the input at step 0 only (zeros after), or at every step.
struct OneVsN {
    rnn: Rnn,
    fc: Linear,
    every_step: bool,
}

impl OneVsN {
    /// `x (B, F)` → `(B, steps, 1)`.
    fn forward(&self, x: &Tensor, steps: usize) -> Result<Tensor> {
        let (batch, features) = x.dims2()?;
        let first = x.unsqueeze(1)?; // (B, 1, F)
        let input = if self.every_step {
            first.broadcast_as((batch, steps, features))?.contiguous()?
        } else {
            Tensor::cat(&[first, Tensor::zeros((batch, steps - 1, features), x.dtype(), x.device())?], 1)?
        };
        let (out, _) = self.rnn.forward(&input, None)?;
        Ok(self.fc.forward(&out)?)
    }
}

/// Encoder RNN → context `c = h_N` → decoder RNN → Linear; `c` as the decoder's initial state or
/// as its input at every step.
struct Seq2Seq {
    encoder: Rnn,
    decoder: Rnn,
    fc: Linear,
    context_as_input: bool,
}

impl Seq2Seq {
    /// `x (B, N, 1)` → `(B, M, 1)`.
    fn forward(&self, x: &Tensor, out_steps: usize) -> Result<Tensor> {
        let (_, State { h: c, .. }) = self.encoder.forward(x, None)?; // c: (1, B, H)
        let batch = x.dim(0)?;
        let out = if self.context_as_input {
            // c at every decoder step: (B, M, H), zero initial state.
            let input = c.get(0)?.unsqueeze(1)?.broadcast_as((batch, out_steps, HIDDEN))?.contiguous()?;
            self.decoder.forward(&input, None)?.0
        } else {
            // c as the decoder's h0; the decoder's inputs are zeros.
            let input = Tensor::zeros((batch, out_steps, 1), x.dtype(), x.device())?;
            self.decoder.forward(&input, Some(&State::h(c)))?.0
        };
        Ok(self.fc.forward(&out)?)
    }
}

fn main() -> Result<()> {
    let small = std::env::var("RECUR_EXAMPLE_SMALL").is_ok_and(|v| v == "1");
    let steps = if small { 60 } else { 300 };
    let device = Device::Cpu;
    let mut rng = StdRng::seed_from_u64(0);
    let (batch, t_len) = (64, 10);

    // N vs N: y_t = x_t + x_{t-1}.
    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &device);
    let model = NVsN { rnn: rnn(1, vb.pp("rnn"))?, fc: recur::nn::linear(HIDDEN, 1, vb.pp("fc"))? };
    println!("N vs N\n{}", ModuleRepr::new("NVsN").child("rnn", &model.rnn).child("fc", &model.fc));
    let x = uniform(&mut rng, &[batch, t_len, 1])?;
    let previous = Tensor::cat(&[Tensor::zeros((batch, 1, 1), DType::F32, &device)?, x.i((.., ..t_len - 1, ..))?], 1)?;
    let y = (&x + previous)?;
    println!("x {:?} -> y {:?}", x.dims(), model.forward(&x)?.dims());
    fit(&varmap, steps, || Ok(recur::train::mse(&model.forward(&x)?, &y)?))?;

    // N vs 1: the sign of the sum, two classes.
    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, 1, DType::F32, &device);
    let model = NVs1 { rnn: rnn(1, vb.pp("rnn"))?, fc: recur::nn::linear(HIDDEN, 2, vb.pp("fc"))? };
    println!("N vs 1\n{}", ModuleRepr::new("NVs1").child("rnn", &model.rnn).child("fc", &model.fc));
    let x = uniform(&mut rng, &[batch, t_len, 1])?;
    let labels = x.sum((1, 2))?.gt(0f32)?.to_dtype(DType::U32)?;
    println!("x {:?} -> logits {:?}", x.dims(), model.forward(&x)?.dims());
    fit(&varmap, steps, || Ok(recur::train::cross_entropy(&model.forward(&x)?, &labels)?))?;

    // 1 vs N: the line a + b·t/T from (a, b).
    let ab = uniform(&mut rng, &[batch, 2])?;
    let ramp = Tensor::arange(0f32, t_len as f32, &device)?.affine(1.0 / t_len as f64, 0.0)?; // t/T
    let y = ab.i((.., 0..1))?.broadcast_add(&ab.i((.., 1..2))?.broadcast_mul(&ramp.unsqueeze(0)?)?)?.unsqueeze(2)?;
    for every_step in [false, true] {
        let varmap = VarMap::new();
        let vb = recur::seeded_var_builder(&varmap, 2, DType::F32, &device);
        let model = OneVsN { rnn: rnn(2, vb.pp("rnn"))?, fc: recur::nn::linear(HIDDEN, 1, vb.pp("fc"))?, every_step };
        let how = if every_step { "input at every step" } else { "input at the first step" };
        println!("1 vs N ({how})\n{}", ModuleRepr::new("OneVsN").child("rnn", &model.rnn).child("fc", &model.fc));
        println!("x {:?} -> y {:?}", ab.dims(), model.forward(&ab, t_len)?.dims());
        fit(&varmap, steps, || Ok(recur::train::mse(&model.forward(&ab, t_len)?, &y)?))?;
    }

    // N vs M: read 8 steps, write the first 4 in reverse.
    let (n_in, m_out) = (8, 4);
    let x = uniform(&mut rng, &[batch, n_in, 1])?;
    let reversed: Vec<Tensor> =
        (0..m_out).rev().map(|t| x.i((.., t..t + 1, ..))).collect::<candle_core::Result<_>>()?;
    let y = Tensor::cat(&reversed, 1)?; // (B, M, 1)
    for context_as_input in [false, true] {
        let varmap = VarMap::new();
        let vb = recur::seeded_var_builder(&varmap, 3, DType::F32, &device);
        let decoder_input = if context_as_input { HIDDEN } else { 1 };
        let model = Seq2Seq {
            encoder: rnn(1, vb.pp("encoder"))?,
            decoder: rnn(decoder_input, vb.pp("decoder"))?,
            fc: recur::nn::linear(HIDDEN, 1, vb.pp("fc"))?,
            context_as_input,
        };
        let how = if context_as_input { "context as the input of every step" } else { "context as initial state" };
        let tree = ModuleRepr::new("Seq2Seq")
            .child("encoder", &model.encoder)
            .child("decoder", &model.decoder)
            .child("fc", &model.fc);
        println!("N vs M, encoder-decoder ({how})\n{tree}");
        println!("x {:?} -> y {:?}", x.dims(), model.forward(&x, m_out)?.dims());
        fit(&varmap, steps, || Ok(recur::train::mse(&model.forward(&x, m_out)?, &y)?))?;
    }
    Ok(())
}
