//! The text a character model trains on: the embedded default corpus or a user's file, its
//! vocabulary, and the split into training and validation ids.

use std::path::Path;

use anyhow::{bail, Context, Result};
use recur::data::{decode_utf8, Vocab};

/// The default corpus, embedded in the binary: eight Shakespeare plays (see
/// `data/shakespeare/SOURCE.txt`: public domain text, Open Shakespeare edition).
pub const DEFAULT_TEXT: &[u8] = include_bytes!("../data/shakespeare/shakespeare_8plays.txt");

/// The name the default corpus goes by in messages and checkpoints.
pub const DEFAULT_NAME: &str = "shakespeare_8plays (embedded)";

/// A text, its vocabulary and its ids.
pub struct Corpus {
    /// Where it came from: a path, or the embedded corpus's name.
    pub name: String,
    /// Its characters.
    pub vocab: Vocab,
    /// The text as ids of `vocab`.
    pub ids: Vec<u32>,
    /// CRC-32 of the text's bytes: tells a resumed run whether it reads the same text.
    pub crc32: u32,
}

impl Corpus {
    /// Reads `path` (UTF-8) or, without one, the embedded default corpus.
    pub fn load(path: Option<&Path>) -> Result<Self> {
        let (name, bytes) = match path {
            Some(path) => {
                let bytes =
                    std::fs::read(path).with_context(|| format!("cannot read the text file {}", path.display()))?;
                (path.display().to_string(), bytes)
            }
            None => (DEFAULT_NAME.to_string(), DEFAULT_TEXT.to_vec()),
        };
        let text = decode_utf8(&bytes).with_context(|| format!("cannot use {name}"))?;
        let vocab = Vocab::from_text(text)?;
        let ids = vocab.encode("text", text)?;
        Ok(Self { name, vocab, ids, crc32: crc32fast::hash(&bytes) })
    }

    /// [`Corpus::crc32`] as eight hex digits.
    pub fn crc32_hex(&self) -> String {
        format!("{:08x}", self.crc32)
    }

    /// What a checkpoint records of the text.
    pub fn source(&self) -> recur::models::TextSource {
        recur::models::TextSource { name: self.name.clone(), crc32: self.crc32_hex(), chars: self.ids.len() }
    }

    /// Splits the ids into training and validation parts: the last `val_fraction` of the text
    /// validates. Training needs one window of `seq_len + 1` characters per stream; validation
    /// (scored character by character) needs two characters.
    pub fn split(&self, val_fraction: f64, batch: usize, seq_len: usize) -> Result<(&[u32], &[u32])> {
        if !(0.0..0.5).contains(&val_fraction) {
            bail!("--val-fraction must be in [0, 0.5), got {val_fraction}");
        }
        let n = self.ids.len();
        let val_len = (n as f64 * val_fraction).round() as usize;
        let (train, val) = self.ids.split_at(n - val_len);
        let need = batch * (seq_len + 1);
        if train.len() < need {
            bail!(
                "the text is too short: {} has {n} characters, {} for training, but --batch-size {batch} × \
                 (--seq-len {seq_len} + 1) needs at least {need}; use a longer text or smaller --batch-size / --seq-len",
                self.name,
                train.len()
            );
        }
        if val_fraction > 0.0 && val.len() < 2 {
            bail!(
                "the validation part is too short: {} character(s) of {}, and scoring needs 2; raise --val-fraction, \
                 or pass --val-fraction 0 to train without validation",
                val.len(),
                self.name
            );
        }
        Ok((train, val))
    }

    /// Cross-entropy, in nats per character, of a unigram model fitted to `fit` (character
    /// frequencies with add-one smoothing over the vocabulary, so no character has probability 0)
    /// on `score`: the baseline a model must beat on the same text it is scored on.
    pub fn unigram_loss(fit: &[u32], score: &[u32], vocab_size: usize) -> f64 {
        let mut counts = vec![1.0f64; vocab_size];
        for &id in fit {
            counts[id as usize] += 1.0;
        }
        let total: f64 = counts.iter().sum();
        if score.is_empty() {
            return f64::NAN;
        }
        let nll: f64 = score.iter().map(|&id| -(counts[id as usize] / total).ln()).sum();
        nll / score.len() as f64 + 0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The baseline is scored on the text it is compared with: a validation text whose
    /// frequencies differ from the training text's costs more than the training text's entropy.
    #[test]
    fn unigram_baseline_is_scored_on_the_scored_text() {
        let fit = [0u32, 0, 0, 1];
        let score = [1u32, 1];
        // add-one: p(0) = 4/6, p(1) = 2/6
        let want = -(2.0f64 / 6.0).ln();
        assert!((Corpus::unigram_loss(&fit, &score, 2) - want).abs() < 1e-12);
        // a character never seen in training still has a finite cost
        assert!(Corpus::unigram_loss(&fit, &[2], 3).is_finite());
        // one character, always right: 0, printed without a sign
        assert_eq!(format!("{:.4}", Corpus::unigram_loss(&[], &[0, 0], 1)), "0.0000");
    }
}
