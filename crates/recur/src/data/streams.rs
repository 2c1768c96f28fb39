//! Contiguous character streams for truncated BPTT: the text is cut into `B` equal parts that are
//! read side by side, `seq_len` characters at a time, so the state a window ends with is the right
//! start for the next window of the same row.

use candle_core::{DType, Device, Tensor};

use crate::models::CharLm;
use crate::{Error, Result, State};

/// `B` rows of `L` consecutive ids each.
#[derive(Clone, Debug)]
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

    /// Rows read side by side.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// Windows of `seq_len` inputs (plus the next character as target) in one pass.
    pub fn windows(&self, seq_len: usize) -> usize {
        self.len.saturating_sub(1) / seq_len
    }

    /// Window `index`: inputs `(B, seq_len)` and the targets, the same shifted by one, `(B·seq_len)`.
    pub fn window(&self, index: usize, seq_len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        if (index + 1) * seq_len >= self.len.max(1) {
            return Err(Error::data(
                "streams",
                format!("window {index} of {seq_len} characters is past the rows' {} characters", self.len),
                "ask for one of the first `windows(seq_len)` windows",
            ));
        }
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

/// Mean cross-entropy (nats per character) of `model` on `ids`, in evaluation mode (the model's
/// mode is restored), scoring every character but the first (which has no context): the text is
/// cut into up to `batch` contiguous rows read side by side in windows of at most `seq_len`, the
/// last window of a row shorter, the state carried across windows; the few characters left over
/// when the text does not divide evenly continue the last row, from its state. Returns the loss
/// and the number of characters scored (`ids.len() - 1`); a text of fewer than two characters is
/// an error, never a NaN.
pub fn evaluate_streams(model: &CharLm, ids: &[u32], batch: usize, seq_len: usize) -> Result<(f64, usize)> {
    let predictions = ids.len().saturating_sub(1);
    if predictions == 0 {
        return Err(Error::data(
            "text to score",
            format!(
                "nothing to score: the text has {} character{}, and scoring needs at least 2 (each character is \
                 predicted from the ones before it)",
                ids.len(),
                if ids.len() == 1 { "" } else { "s" }
            ),
            "score a longer text",
        ));
    }
    let seq_len = seq_len.max(1);
    let rows = batch.min(predictions / seq_len).max(1);
    let row_len = predictions / rows;
    let device = Device::Cpu;
    let training = model.rnn().is_training();
    model.set_training(false);
    let result = (|| {
        let (mut total, mut count) = (0.0, 0usize);
        // Scores ids[start + 1 .. start + width + 1] of each row from ids[start .. start + width].
        let mut score = |row_starts: &[usize], width: usize, state: Option<&State>| -> Result<State> {
            let mut x = Vec::with_capacity(row_starts.len() * width);
            let mut y = Vec::with_capacity(row_starts.len() * width);
            for &start in row_starts {
                x.extend_from_slice(&ids[start..start + width]);
                y.extend_from_slice(&ids[start + 1..start + width + 1]);
            }
            let x = Tensor::from_vec(x, (row_starts.len(), width), &device)?;
            let y = Tensor::from_vec(y, row_starts.len() * width, &device)?;
            let (logits, next) = model.forward_no_grad(&x, state)?;
            let loss = crate::train::cross_entropy(&logits.flatten_to(1)?, &y)?.to_dtype(DType::F64)?;
            total += loss.to_scalar::<f64>()? * y.elem_count() as f64;
            count += y.elem_count();
            Ok(next)
        };
        let mut state: Option<State> = None;
        let mut done = 0;
        while done < row_len {
            let width = seq_len.min(row_len - done);
            let starts: Vec<usize> = (0..rows).map(|r| r * row_len + done).collect();
            state = Some(score(&starts, width, state.as_ref())?);
            done += width;
        }
        // The remainder (fewer than `rows` characters) follows the last row.
        let mut tail = rows * row_len;
        if tail < predictions {
            let last = |t: &Tensor| t.narrow(1, rows - 1, 1);
            let mut carried = match &state {
                Some(s) => Some(State { h: last(&s.h)?, c: s.c.as_ref().map(last).transpose()? }),
                None => None,
            };
            while tail < predictions {
                let width = seq_len.min(predictions - tail);
                carried = Some(score(&[tail], width, carried.as_ref())?);
                tail += width;
            }
        }
        Ok((total / count as f64, count))
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

#[cfg(test)]
mod evaluate_tests {
    use super::*;
    use candle_nn::VarMap;

    use crate::models::{CellType, CharLmConfig};

    fn model() -> CharLm {
        let varmap = VarMap::new();
        let vb = crate::seeded_var_builder(&varmap, 7, DType::F32, &Device::Cpu);
        let config = CharLmConfig {
            vocab_size: 5,
            cell: CellType::Lstm,
            embedding_size: 4,
            hidden_size: 6,
            num_layers: 1,
            dropout: 0.0,
        };
        CharLm::new(config, vb).unwrap()
    }

    fn text(n: usize) -> Vec<u32> {
        (0..n as u32).map(|i| (i * 7 + i / 3) % 5).collect()
    }

    /// Every character but the first is scored, whatever the length: none is dropped and a
    /// length that leaves no full window still scores.
    #[test]
    fn every_character_after_the_first_is_scored() {
        let model = model();
        for n in 2..90 {
            let (loss, count) = evaluate_streams(&model, &text(n), 4, 16).unwrap();
            assert_eq!(count, n - 1, "length {n}");
            assert!(loss.is_finite() && loss > 0.0, "length {n}: {loss}");
        }
        assert!(evaluate_streams(&model, &text(1), 4, 16).unwrap_err().to_string().contains("nothing to score"));
        assert!(evaluate_streams(&model, &[], 4, 16).is_err());
    }

    /// Windows carry the state: one row read in short windows scores as one long window does.
    #[test]
    fn short_windows_carry_the_state_of_one_row() {
        let model = model();
        let ids = text(61);
        let (whole, _) = evaluate_streams(&model, &ids, 1, 1000).unwrap();
        let (windows, _) = evaluate_streams(&model, &ids, 1, 7).unwrap();
        assert!((whole - windows).abs() < 1e-5, "{whole} vs {windows}");
    }

    /// Rows are independent streams, and the leftover characters continue the last row: the
    /// mean over rows equals scoring each row (the last one with the leftover) on its own.
    #[test]
    fn rows_and_the_leftover_score_as_their_own_texts() {
        let model = model();
        let ids = text(47); // 46 predictions: 3 rows of 15, one left over
        let (together, count) = evaluate_streams(&model, &ids, 3, 4).unwrap();
        assert_eq!(count, 46);
        let parts = [&ids[0..16], &ids[15..31], &ids[30..47]];
        let (mut total, mut n) = (0.0, 0);
        for part in parts {
            let (loss, c) = evaluate_streams(&model, part, 1, 1000).unwrap();
            total += loss * c as f64;
            n += c;
        }
        assert_eq!(n, 46);
        assert!((together - total / n as f64).abs() < 1e-5, "{together} vs {}", total / n as f64);
    }
}
