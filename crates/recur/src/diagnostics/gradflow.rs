//! Vanishing gradients, measured (exercise 2 of the tutorials' BPTT chapter): train a cell briefly
//! on a task that needs long memory, then measure `‖∂L/∂h_t‖` of a last-step loss at every step.
//!
//! The task ("recall the first symbol"): each sequence starts with one of `K` symbols (one-hot
//! over `K + 1` input features); every later step carries only a blank marker (feature `K`). The
//! model (recurrent layer → `Linear(H, K)` on every step) must output the first symbol at every
//! step — training gets signal at every time lag, so a cell that can hold information learns to.
//! The measurement uses one loss, cross-entropy at the last step `T − 1` only, so
//! `‖∂L/∂h_t‖` shows how much of it reaches step `t`. Everything runs in f64, so gradients far
//! below f32's range are still measured.

use crate::train::{clip_grad_norm, named_vars, Adam, AdamConfig, NormType, Optimizer};
use candle_core::{DType, Device, IndexOp, Tensor};
use candle_nn::{Linear, Module, VarMap};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::{fit_decay_rate, hidden_gradients, LayerRef};
use crate::models::CellType;
use crate::nn::{linear, Gru, GruConfig, Lstm, LstmConfig, Rnn, RnnConfig, State};
use crate::plot::{LinePlot, Series};
use crate::{Error, Result};

/// Settings of [`gradient_flow_with`]; `new(cell, seq_len)` gives the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct GradFlowConfig {
    /// The cell to train and measure.
    pub cell: CellType,
    /// `T`, steps per sequence.
    pub seq_len: usize,
    /// `H` (default 32).
    pub hidden_size: usize,
    /// Adam steps of training before measuring (default 300; 0 measures the initialisation).
    pub train_steps: usize,
    /// Sequences per training step (default 32).
    pub batch_size: usize,
    /// Sequences in the measurement batch (default 64).
    pub eval_batch_size: usize,
    /// `K`, the number of symbols to recall (default 4).
    pub num_symbols: usize,
    /// Adam's learning rate (default 0.01).
    pub learning_rate: f64,
    /// Gradient-norm clipping during training (default 1.0).
    pub grad_clip: f64,
    /// Seed of the parameters and of the data (default 0).
    pub seed: u64,
}

impl GradFlowConfig {
    /// The defaults for `cell` over `seq_len` steps.
    pub fn new(cell: CellType, seq_len: usize) -> Self {
        Self {
            cell,
            seq_len,
            hidden_size: 32,
            train_steps: 300,
            batch_size: 32,
            eval_batch_size: 64,
            num_symbols: 4,
            learning_rate: 0.01,
            grad_clip: 1.0,
            seed: 0,
        }
    }
}

/// What [`gradient_flow`] measured for one cell.
#[derive(Clone, Debug, PartialEq)]
pub struct GradFlowReport {
    /// The cell.
    pub cell: CellType,
    /// `‖∂L/∂h_t‖` for `t = 0..T`, `L` the cross-entropy at the last step (batch mean).
    pub norms: Vec<f64>,
    /// Fitted per-step factor `ρ` (see [`fit_decay_rate`]): `< 1` vanishing, `> 1` exploding.
    pub decay_rate: f64,
    /// `‖∂L/∂h_0‖ / ‖∂L/∂h_{T−1}‖`: the fraction of the last step's gradient that reaches step 0.
    pub first_to_last: f64,
    /// Training loss (mean cross-entropy over all steps, nats) after each training step.
    pub train_losses: Vec<f64>,
    /// Accuracy of the last-step recall on the measurement batch.
    pub last_step_accuracy: f64,
}

impl GradFlowReport {
    /// The curve `(t, ‖∂L/∂h_t‖)` as a plot series named after the cell and its decay rate.
    pub fn series(&self) -> Series {
        let points = self.norms.iter().enumerate().map(|(t, &n)| (t as f64, n)).collect();
        Series::new(format!("{} (ρ = {:.3}/step)", self.cell, self.decay_rate), points)
    }
}

/// A log-y plot of gradient norm against time step, one line per report.
pub fn gradient_flow_plot(reports: &[GradFlowReport]) -> LinePlot {
    let seq_len = reports.first().map_or(0, |r| r.norms.len());
    let mut plot = LinePlot::new(
        format!("‖∂L/∂h_t‖ of a last-step loss, T = {seq_len}"),
        "time step t",
        "gradient norm (log scale)",
    );
    plot.log_y = true;
    plot.series = reports.iter().map(GradFlowReport::series).collect();
    plot
}

/// Trains `cell` for `train_steps` on the recall task over `seq_len` steps and measures its
/// gradient flow; the other settings are [`GradFlowConfig::new`]'s defaults.
///
/// ```
/// use recur::diagnostics::gradient_flow;
/// use recur::models::CellType;
/// let report = gradient_flow(CellType::Rnn, 30, 16, 0, 1)?; // untrained
/// assert_eq!(report.norms.len(), 30);
/// assert!(report.decay_rate < 1.0); // a tanh RNN at PyTorch's init vanishes
/// # Ok::<(), recur::Error>(())
/// ```
pub fn gradient_flow(
    cell: CellType,
    seq_len: usize,
    hidden_size: usize,
    train_steps: usize,
    seed: u64,
) -> Result<GradFlowReport> {
    gradient_flow_with(&GradFlowConfig { hidden_size, train_steps, seed, ..GradFlowConfig::new(cell, seq_len) })
}

/// A layer of any of the three kinds, owned.
enum Layer {
    Rnn(Rnn),
    Lstm(Lstm),
    Gru(Gru),
}

impl Layer {
    fn as_ref(&self) -> LayerRef<'_> {
        match self {
            Layer::Rnn(l) => LayerRef::Rnn(l),
            Layer::Lstm(l) => LayerRef::Lstm(l),
            Layer::Gru(l) => LayerRef::Gru(l),
        }
    }

    fn forward(&self, input: &Tensor) -> Result<(Tensor, State)> {
        match self {
            Layer::Rnn(l) => l.forward(input, None),
            Layer::Lstm(l) => l.forward(input, None),
            Layer::Gru(l) => l.forward(input, None),
        }
    }
}

/// One batch of the recall task: inputs `(B, T, K + 1)` and the symbols `(B,)`.
fn recall_batch(rng: &mut StdRng, batch: usize, seq_len: usize, symbols: usize) -> Result<(Tensor, Vec<u32>)> {
    let features = symbols + 1;
    let mut x = vec![0f64; batch * seq_len * features];
    let mut labels = Vec::with_capacity(batch);
    for b in 0..batch {
        let k = rng.gen_range(0..symbols);
        labels.push(k as u32);
        x[b * seq_len * features + k] = 1.0;
        for t in 1..seq_len {
            x[(b * seq_len + t) * features + symbols] = 1.0;
        }
    }
    Ok((Tensor::from_vec(x, (batch, seq_len, features), &Device::Cpu)?, labels))
}

/// [`gradient_flow`] with every setting spelled out.
pub fn gradient_flow_with(config: &GradFlowConfig) -> Result<GradFlowReport> {
    let c = config;
    for (name, value) in [
        ("seq_len", c.seq_len),
        ("hidden_size", c.hidden_size),
        ("batch_size", c.batch_size),
        ("eval_batch_size", c.eval_batch_size),
    ] {
        if value == 0 {
            return Err(Error::config("gradient_flow", format!("{name} must be positive"), format!("set {name} ≥ 1")));
        }
    }
    if c.num_symbols < 2 {
        return Err(Error::config("gradient_flow", "num_symbols must be at least 2", "set num_symbols ≥ 2"));
    }
    let (device, features, h) = (Device::Cpu, c.num_symbols + 1, c.hidden_size);
    let varmap = VarMap::new();
    // f64: a vanishing gradient reaches 1e-30 within 50 steps and would underflow f32 (smallest
    // normal 1.2e-38) on longer sequences.
    let vb = crate::seeded_var_builder(&varmap, c.seed, DType::F64, &device);
    let layer = match c.cell {
        CellType::Rnn => {
            Layer::Rnn(Rnn::new(RnnConfig { batch_first: true, ..RnnConfig::new(features, h) }, vb.pp("rnn"))?)
        }
        CellType::Lstm => {
            Layer::Lstm(Lstm::new(LstmConfig { batch_first: true, ..LstmConfig::new(features, h) }, vb.pp("rnn"))?)
        }
        CellType::Gru => {
            Layer::Gru(Gru::new(GruConfig { batch_first: true, ..GruConfig::new(features, h) }, vb.pp("rnn"))?)
        }
    };
    let head: Linear = linear(h, c.num_symbols, vb.pp("linear"))?;
    let mut rng = StdRng::seed_from_u64(c.seed ^ 0x5EED_DA7A);

    let vars = varmap.all_vars();
    let mut optimizer = Adam::new(named_vars(&varmap), AdamConfig { lr: c.learning_rate, ..AdamConfig::default() })?;
    let mut train_losses = Vec::with_capacity(c.train_steps);
    for _ in 0..c.train_steps {
        let (x, labels) = recall_batch(&mut rng, c.batch_size, c.seq_len, c.num_symbols)?;
        let (output, _) = layer.forward(&x)?; // (B, T, H)
        let logits = head.forward(&output.reshape((c.batch_size * c.seq_len, h))?)?;
        let targets: Vec<u32> = labels.iter().flat_map(|&k| std::iter::repeat_n(k, c.seq_len)).collect();
        let targets = Tensor::from_vec(targets, c.batch_size * c.seq_len, &device)?;
        let loss = crate::train::cross_entropy(&logits, &targets)?;
        let mut grads = loss.backward()?;
        clip_grad_norm(&vars, &mut grads, c.grad_clip, NormType::L2, false)?;
        optimizer.step(&grads)?;
        train_losses.push(loss.to_scalar::<f64>()?);
    }

    let (x, labels) = recall_batch(&mut rng, c.eval_batch_size, c.seq_len, c.num_symbols)?;
    let targets = Tensor::new(labels.as_slice(), &device)?;
    let last = c.seq_len - 1;
    let mut correct = 0.0;
    let measured = hidden_gradients(layer.as_ref(), &x, None, |output, _| {
        let logits = head.forward(&output.i((.., last, ..))?)?; // (B, K)
        let predicted = logits.argmax(1)?.to_vec1::<u32>()?;
        correct = predicted.iter().zip(&labels).filter(|(p, l)| p == l).count() as f64;
        crate::train::cross_entropy(&logits, &targets)
    })?;
    let norms = measured.norms;
    let decay_rate = fit_decay_rate(&norms).unwrap_or(0.0);
    let first_to_last = if norms[last] > 0.0 { norms[0] / norms[last] } else { 0.0 };
    Ok(GradFlowReport {
        cell: c.cell,
        norms,
        decay_rate,
        first_to_last,
        train_losses,
        last_step_accuracy: correct / c.eval_batch_size as f64,
    })
}
