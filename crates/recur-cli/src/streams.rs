//! Contiguous character streams for truncated BPTT: the text is cut into `B` equal parts that are
//! read side by side, `seq_len` characters at a time, so the state a window ends with is the right
//! start for the next window of the same row.

use anyhow::Result;
use candle_core::{Device, Tensor};
use recur::models::CharLm;
use recur::State;

/// `B` rows of `L` consecutive ids each.
pub struct Streams {
    ids: Vec<u32>,
    batch: usize,
    len: usize,
}

impl Streams {
    /// Cuts `ids` into `batch` rows of `⌊n / batch⌋` ids (the remainder is dropped).
    pub fn new(ids: &[u32], batch: usize) -> Self {
        let len = ids.len() / batch.max(1);
        Self { ids: ids[..len * batch].to_vec(), batch, len }
    }

    /// Windows of `seq_len` inputs (plus the next character as target) in one pass.
    pub fn windows(&self, seq_len: usize) -> usize {
        self.len.saturating_sub(1) / seq_len
    }

    /// Window `index`: inputs `(B, seq_len)` and the targets, the same shifted by one, `(B·seq_len)`.
    pub fn window(&self, index: usize, seq_len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let start = index * seq_len;
        let mut x = Vec::with_capacity(self.batch * seq_len);
        let mut y = Vec::with_capacity(self.batch * seq_len);
        for b in 0..self.batch {
            let row = &self.ids[b * self.len..(b + 1) * self.len];
            x.extend_from_slice(&row[start..start + seq_len]);
            y.extend_from_slice(&row[start + 1..start + seq_len + 1]);
        }
        Ok((Tensor::from_vec(x, (self.batch, seq_len), device)?, Tensor::from_vec(y, self.batch * seq_len, device)?))
    }
}

/// Mean cross-entropy (nats per character) of `model` on `ids`, read as up to `batch` streams in
/// windows of `seq_len` with the state carried across windows, in evaluation mode; the model's
/// mode is restored. Returns the loss and the number of characters scored.
pub fn evaluate(model: &CharLm, ids: &[u32], batch: usize, seq_len: usize) -> Result<(f64, usize)> {
    let rows = batch.min(ids.len().saturating_sub(1) / seq_len).max(1);
    let streams = Streams::new(ids, rows);
    let device = Device::Cpu;
    let training = model.rnn().is_training();
    model.set_training(false);
    let result = (|| {
        let mut state: Option<State> = None;
        let (mut total, mut count) = (0.0, 0usize);
        for w in 0..streams.windows(seq_len) {
            let (x, y) = streams.window(w, seq_len, &device)?;
            let (logits, next) = model.forward_no_grad(&x, state.as_ref())?;
            let logits = logits.flatten_to(1)?;
            let loss = recur::train::cross_entropy(&logits, &y)?.to_dtype(candle_core::DType::F64)?;
            total += loss.to_scalar::<f64>()? * y.elem_count() as f64;
            count += y.elem_count();
            state = Some(next);
        }
        Ok((if count > 0 { total / count as f64 } else { f64::NAN }, count))
    })();
    model.set_training(training);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_rows_side_by_side_with_targets_shifted_by_one() {
        let ids: Vec<u32> = (0..23).collect();
        let s = Streams::new(&ids, 2); // rows 0..11 and 11..22
        assert_eq!(s.windows(5), 2);
        let (x, y) = s.window(1, 5, &Device::Cpu).unwrap();
        assert_eq!(x.to_vec2::<u32>().unwrap(), [[5, 6, 7, 8, 9], [16, 17, 18, 19, 20]]);
        assert_eq!(y.to_vec1::<u32>().unwrap(), [6, 7, 8, 9, 10, 17, 18, 19, 20, 21]);
    }
}
