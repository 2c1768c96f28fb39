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
        Ok(Self { name, vocab, ids })
    }

    /// Encodes another text with this corpus's vocabulary (e.g. for `eval`).
    pub fn with_vocab(path: &Path, vocab: &Vocab) -> Result<(String, Vec<u32>)> {
        let bytes = std::fs::read(path).with_context(|| format!("cannot read the text file {}", path.display()))?;
        let text = decode_utf8(&bytes).with_context(|| format!("cannot use {}", path.display()))?;
        let ids = vocab.encode("text", text).with_context(|| format!("cannot evaluate on {}", path.display()))?;
        Ok((path.display().to_string(), ids))
    }

    /// Splits the ids into training and validation parts: the last `val_fraction` of the text
    /// validates. Both must hold at least one window of `seq_len + 1` characters per stream.
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
        if val_fraction > 0.0 && val.len() < seq_len + 1 {
            bail!(
                "the validation part is too short: {} characters for --seq-len {seq_len}; raise --val-fraction, \
                 lower --seq-len, or pass --val-fraction 0 to train without validation",
                val.len()
            );
        }
        Ok((train, val))
    }

    /// Entropy of the character frequencies of `ids`, in nats: the loss of a unigram model.
    pub fn unigram_entropy(ids: &[u32], vocab_size: usize) -> f64 {
        let mut counts = vec![0usize; vocab_size];
        for &id in ids {
            counts[id as usize] += 1;
        }
        let n = ids.len() as f64;
        counts.iter().filter(|&&c| c > 0).map(|&c| c as f64 / n).map(|p| -p * p.ln()).sum()
    }
}
