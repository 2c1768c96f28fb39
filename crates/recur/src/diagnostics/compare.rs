//! LSTM vs GRU vs RNN at an equal parameter budget (exercise 3 of the tutorials' BPTT chapter):
//! the same character language model ([`CharLm`]) with each cell, its hidden size chosen so the
//! whole model has about the same number of parameters, trained on the same text for the same
//! wall time with truncated BPTT, then scored in bits per character on held-out text.

use std::time::Instant;

use crate::train::{clip_grad_norm, named_vars, Adam, AdamConfig, NormType, Optimizer};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;

use crate::data::Vocab;
use crate::models::{CellType, CharLm, CharLmConfig};
use crate::nn::State;
use crate::plot::{LinePlot, Series};
use crate::{Error, Result};

/// Settings of [`compare_cells`]; `new(budget_params, seconds_per_cell)` gives the defaults.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareConfig {
    /// Parameters each model should have (embedding + recurrent stack + output layer).
    pub budget_params: usize,
    /// Wall-clock seconds of training per cell.
    pub seconds_per_cell: f64,
    /// Optional cap on training steps per cell (reproducible runs, tests); default `None`.
    pub max_steps: Option<usize>,
    /// The cells to compare, in this order (default LSTM, GRU, RNN).
    pub cells: Vec<CellType>,
    /// Truncated-BPTT window, characters (default 64).
    pub seq_len: usize,
    /// Contiguous streams trained side by side (default 16).
    pub batch_size: usize,
    /// `E`, character embedding size (default 32).
    pub embedding_size: usize,
    /// Recurrent layers (default 1).
    pub num_layers: usize,
    /// Adam's learning rate (default 0.003).
    pub learning_rate: f64,
    /// Gradient-norm clipping (default 5.0).
    pub grad_clip: f64,
    /// Fraction of the text (its end) held out for validation (default 0.1).
    pub valid_fraction: f64,
    /// Seed of every model's parameters (default 0).
    pub seed: u64,
}

impl CompareConfig {
    /// Defaults for a budget of `budget_params` parameters and `seconds_per_cell` of training.
    pub fn new(budget_params: usize, seconds_per_cell: f64) -> Self {
        Self {
            budget_params,
            seconds_per_cell,
            max_steps: None,
            cells: CellType::ALL.to_vec(),
            seq_len: 64,
            batch_size: 16,
            embedding_size: 32,
            num_layers: 1,
            learning_rate: 0.003,
            grad_clip: 5.0,
            valid_fraction: 0.1,
            seed: 0,
        }
    }
}

/// One cell's result.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareRow {
    /// The cell.
    pub cell: CellType,
    /// The hidden size chosen for the budget.
    pub hidden_size: usize,
    /// Parameters of the whole model.
    pub parameters: usize,
    /// Training steps done.
    pub steps: usize,
    /// Characters trained on (steps × streams × window).
    pub tokens: usize,
    /// Wall-clock seconds of training (excluding validation).
    pub seconds: f64,
    /// `tokens / seconds`.
    pub tokens_per_second: f64,
    /// Training loss in bits per character after each step, against elapsed seconds.
    pub train_curve: Vec<(f64, f64)>,
    /// Validation bits per character after training.
    pub valid_bpc: f64,
}

/// The comparison: one row per cell and the data it ran on.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareReport {
    /// One row per cell, in [`CompareConfig::cells`]'s order.
    pub rows: Vec<CompareRow>,
    /// Entropy of the training text's character frequencies, bits per character: what a model
    /// that ignores context would score.
    pub unigram_bpc: f64,
    /// Characters in the vocabulary.
    pub vocab_size: usize,
    /// Characters of training text.
    pub train_chars: usize,
    /// Characters of validation text.
    pub valid_chars: usize,
}

/// Progress of [`compare_cells`], passed to its callback.
#[derive(Clone, Debug, PartialEq)]
pub enum CompareProgress {
    /// A cell starts training.
    Start {
        /// The cell.
        cell: CellType,
        /// Its hidden size.
        hidden_size: usize,
        /// Its parameter count.
        parameters: usize,
    },
    /// A training step finished.
    Step {
        /// The cell.
        cell: CellType,
        /// Steps done so far.
        step: usize,
        /// Seconds elapsed for this cell.
        seconds: f64,
        /// This step's training loss, bits per character.
        bpc: f64,
    },
    /// A cell is done.
    Done(CompareRow),
}

/// The hidden size `H` whose [`CharLmConfig::parameter_count`] is closest to `budget`.
pub fn hidden_size_for_budget(
    cell: CellType,
    vocab_size: usize,
    embedding_size: usize,
    num_layers: usize,
    budget: usize,
) -> usize {
    let count = |h: usize| {
        CharLmConfig { cell, embedding_size, hidden_size: h, num_layers, ..CharLmConfig::new(vocab_size) }
            .parameter_count()
    };
    let (mut best, mut best_gap) = (1, usize::MAX);
    let mut h = 1;
    loop {
        let n = count(h);
        let gap = n.abs_diff(budget);
        if gap < best_gap {
            (best, best_gap) = (h, gap);
        }
        if n >= budget {
            return best;
        }
        h += 1;
    }
}

/// Entropy of the character frequencies of `ids`, in bits.
pub fn unigram_bpc(ids: &[u32]) -> f64 {
    let mut counts = std::collections::HashMap::new();
    for &id in ids {
        *counts.entry(id).or_insert(0usize) += 1;
    }
    let n = ids.len() as f64;
    counts.values().map(|&c| c as f64 / n).map(|p| -p * p.log2()).sum()
}

/// Trains a [`CharLm`] with each cell of `config.cells` on `text` and scores it; `progress`
/// receives an event at the start of each cell, after every step and at the end of each cell.
///
/// The last `valid_fraction` of the text is held out. The rest is cut into `batch_size`
/// contiguous streams read `seq_len` characters at a time, the state carried (detached) from one
/// window to the next (truncated BPTT); Adam, gradient-norm clipping. Every model starts from the
/// same seed and sees the same windows in the same order; training stops after
/// `seconds_per_cell` (or `max_steps`, whichever comes first, and never before one step).
pub fn compare_cells(
    text: &str,
    config: &CompareConfig,
    mut progress: impl FnMut(&CompareProgress),
) -> Result<CompareReport> {
    let c = config;
    if c.seq_len == 0 || c.batch_size == 0 || c.num_layers == 0 || c.cells.is_empty() {
        return Err(Error::config(
            "compare_cells",
            "seq_len, batch_size, num_layers and the list of cells must be non-zero",
            "use CompareConfig::new's defaults",
        ));
    }
    if !(0.0..1.0).contains(&c.valid_fraction) || !c.seconds_per_cell.is_finite() {
        return Err(Error::config(
            "compare_cells",
            format!("valid_fraction {} must be in [0, 1) and seconds_per_cell finite", c.valid_fraction),
            "hold out e.g. 0.1 of the text",
        ));
    }
    let vocab = Vocab::from_text(text)?;
    let ids = vocab.encode("text", text)?;
    let valid_len = ((ids.len() as f64 * c.valid_fraction) as usize).max(2);
    let train_len = ids.len().saturating_sub(valid_len);
    let stream_len = train_len.saturating_sub(1) / c.batch_size;
    if stream_len < 2 {
        return Err(Error::data(
            "text",
            format!("{} characters leave too little for {} training streams and validation", ids.len(), c.batch_size),
            "give a longer text or a smaller batch_size",
        ));
    }
    let (train, valid) = ids.split_at(train_len);
    let device = Device::Cpu;
    let mut rows = Vec::with_capacity(c.cells.len());
    for &cell in &c.cells {
        let hidden_size = hidden_size_for_budget(cell, vocab.len(), c.embedding_size, c.num_layers, c.budget_params);
        let model_config = CharLmConfig {
            cell,
            embedding_size: c.embedding_size,
            hidden_size,
            num_layers: c.num_layers,
            ..CharLmConfig::new(vocab.len())
        };
        let varmap = VarMap::new();
        let model = CharLm::new(model_config, crate::seeded_var_builder(&varmap, c.seed, DType::F32, &device))?;
        let parameters = model.parameter_count();
        progress(&CompareProgress::Start { cell, hidden_size, parameters });

        let vars = varmap.all_vars();
        let mut optimizer =
            Adam::new(named_vars(&varmap), AdamConfig { lr: c.learning_rate, ..AdamConfig::default() })?;
        let (mut state, mut pos, mut steps, mut tokens): (Option<State>, usize, usize, usize) = (None, 0, 0, 0);
        let mut train_curve = Vec::new();
        let start = Instant::now();
        loop {
            let window = c.seq_len.min(stream_len - pos);
            let mut x = Vec::with_capacity(c.batch_size * window);
            let mut y = Vec::with_capacity(c.batch_size * window);
            for b in 0..c.batch_size {
                let at = b * stream_len + pos;
                x.extend_from_slice(&train[at..at + window]);
                y.extend_from_slice(&train[at + 1..at + 1 + window]);
            }
            let x = Tensor::from_vec(x, (c.batch_size, window), &device)?;
            let y = Tensor::from_vec(y, c.batch_size * window, &device)?;
            let (logits, next) = model.forward(&x, state.as_ref())?;
            let logits = logits.reshape((c.batch_size * window, vocab.len()))?;
            let loss = crate::train::cross_entropy(&logits, &y)?;
            let mut grads = loss.backward()?;
            clip_grad_norm(&vars, &mut grads, c.grad_clip, NormType::L2, false)?;
            optimizer.step(&grads)?;
            steps += 1;
            tokens += c.batch_size * window;
            pos += window;
            // Carry the state across windows, cut from the graph; restart at the stream's end.
            state = if pos + 1 >= stream_len {
                pos = 0;
                None
            } else {
                Some(next.detach())
            };
            let seconds = start.elapsed().as_secs_f64();
            let bpc = f64::from(loss.to_scalar::<f32>()?) / std::f64::consts::LN_2;
            train_curve.push((seconds, bpc));
            progress(&CompareProgress::Step { cell, step: steps, seconds, bpc });
            if seconds >= c.seconds_per_cell || c.max_steps.is_some_and(|max| steps >= max) {
                break;
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        let valid_bpc = evaluate_bpc(&model, valid, c.seq_len, &device)?;
        let row = CompareRow {
            cell,
            hidden_size,
            parameters,
            steps,
            tokens,
            seconds,
            tokens_per_second: tokens as f64 / seconds.max(f64::MIN_POSITIVE),
            train_curve,
            valid_bpc,
        };
        progress(&CompareProgress::Done(row.clone()));
        rows.push(row);
    }
    Ok(CompareReport {
        rows,
        unigram_bpc: unigram_bpc(train),
        vocab_size: vocab.len(),
        train_chars: train.len(),
        valid_chars: valid.len(),
    })
}

/// Bits per character of `model` predicting `ids[1..]` from `ids[..n-1]`, one stream read in
/// windows of `seq_len` with the state carried, no autograd.
fn evaluate_bpc(model: &CharLm, ids: &[u32], seq_len: usize, device: &Device) -> Result<f64> {
    let (mut state, mut total, mut count): (Option<State>, f64, usize) = (None, 0.0, 0);
    let mut pos = 0;
    while pos + 1 < ids.len() {
        let window = seq_len.min(ids.len() - 1 - pos);
        let x = Tensor::new(&ids[pos..pos + window], device)?.unsqueeze(0)?;
        let y = Tensor::new(&ids[pos + 1..pos + 1 + window], device)?;
        let (logits, next) = model.forward_no_grad(&x, state.as_ref())?;
        let loss = crate::train::cross_entropy(&logits.squeeze(0)?, &y)?;
        total += f64::from(loss.to_scalar::<f32>()?) * window as f64;
        count += window;
        state = Some(next);
        pos += window;
    }
    Ok(total / count.max(1) as f64 / std::f64::consts::LN_2)
}

/// Training bits per character against seconds, one line per cell.
pub fn compare_plot(report: &CompareReport) -> LinePlot {
    let mut plot = LinePlot::new("Training loss at an equal parameter budget", "seconds", "bits per character");
    plot.series = report
        .rows
        .iter()
        .map(|row| Series::new(format!("{} (H = {})", row.cell, row.hidden_size), row.train_curve.clone()))
        .collect();
    plot
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_picks_the_closest_hidden_size() {
        for cell in CellType::ALL {
            let h = hidden_size_for_budget(cell, 50, 16, 1, 20_000);
            let count = |h| {
                CharLmConfig { cell, embedding_size: 16, hidden_size: h, num_layers: 1, ..CharLmConfig::new(50) }
                    .parameter_count()
            };
            assert!(count(h).abs_diff(20_000) <= count(h + 1).abs_diff(20_000), "{cell}");
            assert!(count(h).abs_diff(20_000) <= count(h - 1).abs_diff(20_000), "{cell}");
        }
        assert!((unigram_bpc(&[0, 1, 0, 1]) - 1.0).abs() < 1e-12);
    }
}
