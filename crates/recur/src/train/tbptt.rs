//! Truncated backpropagation through time: walk a long stream in windows of `k` steps, carry the
//! recurrent state from one window to the next, cut off from the graph, and reset the state of
//! single batch rows where a stream ends and a new one starts.
//!
//! Each window's loss backpropagates through that window only; the carried state is detached
//! (`State::detach`), so the autograd graph, and the memory it holds, never grows with the number
//! of windows. A reset mask `(T_window, B)` marks, per step and batch row, where a new stream
//! begins: that row's state is set to zero (exactly, whatever it held, NaN included) before the
//! step, while the other rows keep theirs and their gradients flow as usual.
//!
//! ```
//! use candle_core::{DType, Device, Tensor};
//! use recur::train::Tbptt;
//! use recur::{Lstm, LstmConfig};
//!
//! let varmap = candle_nn::VarMap::new();
//! let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
//! let lstm = Lstm::new(LstmConfig::new(2, 4), vb.pp("lstm"))?;
//! let stream = Tensor::randn(0f32, 1.0, (100, 3, 2), &Device::Cpu)?; // (T, B, I)
//! let mut tbptt = Tbptt::new(10, false)?;
//! for window in tbptt.windows(100) {
//!     let x = stream.narrow(0, window.start, window.len())?;
//!     let y = tbptt.forward(&x, None, |x, state| lstm.forward(x, state))?;
//!     let _grads = y.sqr()?.mean_all()?.backward()?; // one optimizer step per window
//! }
//! assert_eq!(tbptt.windows_done(), 10);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::ops::Range;

use candle_core::{DType, Tensor};

use crate::{Error, Result, State};

/// The truncated-BPTT driver: window length, layout and the carried state.
#[derive(Clone, Debug)]
pub struct Tbptt {
    window: usize,
    batch_first: bool,
    state: Option<State>,
    windows_done: u64,
}

impl Tbptt {
    /// A driver for windows of `window` steps over `(T, B, …)` input, or `(B, T, …)` with
    /// `batch_first` (set it as the model's layer is set).
    pub fn new(window: usize, batch_first: bool) -> Result<Self> {
        if window == 0 {
            return Err(Error::config(
                "Tbptt",
                "window must be >= 1 step, got 0",
                "pass the truncation length k (e.g. 35)",
            ));
        }
        Ok(Self { window, batch_first, state: None, windows_done: 0 })
    }

    /// The window length `k`.
    pub fn window(&self) -> usize {
        self.window
    }

    /// The step ranges of a stream of `seq_len` steps: `0..k, k..2k, …`, the last possibly shorter.
    pub fn windows(&self, seq_len: usize) -> Vec<Range<usize>> {
        (0..seq_len).step_by(self.window).map(|s| s..(s + self.window).min(seq_len)).collect()
    }

    /// The carried (detached) state, `None` before the first window or after [`Tbptt::reset`].
    pub fn state(&self) -> Option<&State> {
        self.state.as_ref()
    }

    /// Replaces the carried state (detached), e.g. from a checkpoint.
    pub fn set_state(&mut self, state: Option<State>) {
        self.state = state.map(|s| s.detach());
    }

    /// Forgets the carried state: the next window starts from zeros.
    pub fn reset(&mut self) {
        self.state = None;
    }

    /// How many windows [`Tbptt::forward`] has run.
    pub fn windows_done(&self) -> u64 {
        self.windows_done
    }

    /// Zeroes the carried state of the rows where `rows[b]` is true (a new stream starts there
    /// in the next window).
    pub fn reset_rows(&mut self, rows: &[bool]) -> Result<()> {
        if let Some(state) = &self.state {
            self.state = Some(zero_rows(state, rows)?);
        }
        Ok(())
    }

    /// Runs one window: `step(segment, state)` is the model's forward (a layer's `forward`, or a
    /// whole model returning its output and its recurrent state); it is called once, or once per
    /// segment between reset steps. Returns the window's output (the segments' outputs joined
    /// along time), still attached to the graph for the loss; keeps the final state, detached,
    /// for the next window.
    ///
    /// `resets`: optional `(T_window, B)` tensor (`(B, T_window)` with `batch_first`), 1 where a
    /// new stream starts at that step in that row. The state of those rows is zeroed before that
    /// step.
    pub fn forward<F>(&mut self, input: &Tensor, resets: Option<&Tensor>, mut step: F) -> Result<Tensor>
    where
        F: FnMut(&Tensor, Option<&State>) -> Result<(Tensor, State)>,
    {
        let (time_dim, batch_dim) = if self.batch_first { (1, 0) } else { (0, 1) };
        if input.rank() < 2 {
            return Err(Error::shape(
                "Tbptt",
                format!("expected batched input (T, B, …), got {:?}", input.dims()),
                "add a batch dimension",
            ));
        }
        let (steps, batch) = (input.dim(time_dim)?, input.dim(batch_dim)?);
        if steps == 0 {
            return Err(Error::shape(
                "Tbptt",
                format!("expected a window of at least one step, got input {:?}", input.dims()),
                "skip empty windows",
            ));
        }
        let reset_rows: Option<Vec<Vec<bool>>> = match resets {
            None => None,
            Some(r) => {
                let expected = if self.batch_first { [batch, steps] } else { [steps, batch] };
                if r.dims() != expected {
                    return Err(Error::shape(
                        "Tbptt",
                        format!(
                            "expected a reset mask of shape {expected:?} for input {:?}, got {:?}",
                            input.dims(),
                            r.dims()
                        ),
                        "pass one 0/1 value per step and batch row",
                    ));
                }
                let r = if self.batch_first { r.t()? } else { r.clone() };
                let values: Vec<Vec<f64>> = r.to_dtype(DType::F64)?.to_vec2()?;
                Some(values.into_iter().map(|row| row.into_iter().map(|v| v != 0.0).collect()).collect())
            }
        };
        // Segment starts: 0 and every later step where some row resets.
        let mut starts = vec![0];
        if let Some(rows) = &reset_rows {
            starts.extend((1..steps).filter(|&t| rows[t].iter().any(|&r| r)));
        }
        let mut state = self.state.clone();
        let mut outputs = Vec::with_capacity(starts.len());
        for (i, &start) in starts.iter().enumerate() {
            let end = starts.get(i + 1).copied().unwrap_or(steps);
            if let (Some(rows), Some(s)) = (&reset_rows, &state) {
                if rows[start].iter().any(|&r| r) {
                    state = Some(zero_rows(s, &rows[start])?);
                }
            }
            let segment = input.narrow(time_dim, start, end - start)?;
            let (output, next) = step(&segment, state.as_ref())?;
            outputs.push(output);
            state = Some(next);
        }
        self.state = state.map(|s| s.detach());
        self.windows_done += 1;
        if outputs.len() == 1 {
            return Ok(outputs.remove(0));
        }
        Ok(Tensor::cat(&outputs, time_dim)?)
    }
}

/// The state with the batch rows marked in `rows` set to exactly zero (dimension 1 of `h` and
/// `c`, the layers' `(L·D, B, H)` layout).
pub fn zero_rows(state: &State, rows: &[bool]) -> Result<State> {
    let apply = |t: &Tensor| -> Result<Tensor> {
        if t.rank() != 3 || t.dim(1)? != rows.len() {
            return Err(Error::shape(
                "Tbptt",
                format!(
                    "expected a state of shape (L·D, {}, H) for a reset mask of {} rows, got {:?}",
                    rows.len(),
                    rows.len(),
                    t.dims()
                ),
                "pass one reset flag per batch row",
            ));
        }
        let keep: Vec<u8> = rows.iter().map(|&r| u8::from(!r)).collect();
        let keep = Tensor::from_vec(keep, (1, rows.len(), 1), t.device())?.broadcast_as(t.shape())?;
        Ok(keep.where_cond(t, &t.zeros_like()?)?)
    };
    Ok(State { h: apply(&state.h)?, c: state.c.as_ref().map(apply).transpose()? })
}
