//! Sequence tagging as a training task: sentences encoded with word and character vocabularies,
//! batches bucketed by length and shuffled by epoch ([`TagBatches`]), the [`Model`] the trainer
//! runs ([`TaggerTraining`]: cross-entropy over the real tokens; validation loss, token accuracy
//! and the accuracy on words the model never saw), and [`load_tagger`].

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};

use crate::data::labelled::{TokenVocab, UNK};
use crate::data::{Buckets, Tagged};
use crate::models::{TagInput, Tagger, TaggerConfig};
use crate::train::{derive_seed, named_vars, DataSource, Metrics, Model, TaskCheckpoint};
use crate::{Error, Result};

/// The task name of tagger checkpoints.
pub const TAG_TASK: &str = "tag";

/// What a tagger checkpoint keeps beside the model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaggerData {
    /// Words (lower-cased).
    pub words: TokenVocab,
    /// Characters.
    pub chars: TokenVocab,
    /// The tag names, in label order.
    pub tags: Vec<String>,
    /// Sentences per batch.
    pub batch_size: usize,
    /// The seed of initialisation, dropout and batch order.
    pub seed: u64,
    /// The word-dropout α of training (`None` in checkpoints written before it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub word_dropout: Option<f64>,
}

/// Encoded sentences.
#[derive(Clone, Debug, Default)]
pub struct EncodedSentences {
    /// Each sentence's word ids.
    pub words: Vec<Vec<u32>>,
    /// Each word's character ids.
    pub chars: Vec<Vec<Vec<u32>>>,
    /// Each word's tag.
    pub labels: Vec<Vec<usize>>,
}

impl EncodedSentences {
    /// Encodes `data` with the vocabularies of `meta`.
    pub fn new(data: &Tagged, meta: &TaggerData) -> Self {
        let mut out = EncodedSentences::default();
        for (sentence, labels) in data.sentences.iter().zip(&data.labels) {
            out.words.push(sentence.iter().map(|w| meta.words.encode(w).0.first().copied().unwrap_or(UNK)).collect());
            out.chars.push(sentence.iter().map(|w| meta.chars.encode(w).0).collect());
            out.labels.push(labels.clone());
        }
        out
    }

    /// Sentences.
    pub fn len(&self) -> usize {
        self.words.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.words.is_empty()
    }

    fn batch(&self, rows: &[usize]) -> Result<(TagInput, Tensor, Tensor)> {
        self.batch_with(rows, |w| w)
    }

    /// A batch whose word ids pass through `word` (word dropout) on the way in.
    fn batch_with(&self, rows: &[usize], mut word: impl FnMut(u32) -> u32) -> Result<(TagInput, Tensor, Tensor)> {
        let words: Vec<Vec<u32>> = rows.iter().map(|&r| self.words[r].iter().map(|&w| word(w)).collect()).collect();
        let chars: Vec<Vec<Vec<u32>>> = rows.iter().map(|&r| self.chars[r].clone()).collect();
        let input = Tagger::input(&words, &chars)?;
        let steps = input.words.dim(1)?;
        let (mut targets, mut mask) = (Vec::with_capacity(rows.len() * steps), Vec::with_capacity(rows.len() * steps));
        for &r in rows {
            let labels = &self.labels[r];
            for t in 0..steps {
                targets.push(labels.get(t).map_or(0, |&l| l as u32));
                mask.push(if t < labels.len() { 1f32 } else { 0.0 });
            }
        }
        let device = Device::Cpu;
        Ok((
            input,
            Tensor::from_vec(targets, (rows.len(), steps), &device)?,
            Tensor::from_vec(mask, (rows.len(), steps), &device)?,
        ))
    }
}

/// A training batch: the input, the targets `(B, T)` and the mask of real tokens `(B, T)`.
pub type TagBatch = (TagInput, Tensor, Tensor);

/// Training batches, bucketed by length and shuffled by epoch ([`Buckets`]). Rare words are replaced by `<unk>`
/// with probability `α / (α + count)` (Kiperwasser & Goldberg 2016's word dropout, seeded by
/// epoch and batch), so the model learns to tag unknown words from their characters.
pub struct TagBatches {
    sentences: EncodedSentences,
    buckets: Buckets,
    seed: u64,
    counts: HashMap<u32, usize>,
    alpha: f64,
}

impl TagBatches {
    /// Batches of `batch_size` sentences, ordered by `seed`, with word dropout `alpha` (0: none).
    pub fn new(sentences: EncodedSentences, batch_size: usize, seed: u64, alpha: f64) -> Self {
        let mut counts = HashMap::new();
        for w in sentences.words.iter().flatten() {
            *counts.entry(*w).or_insert(0) += 1;
        }
        let buckets = Buckets::new(sentences.words.iter().map(Vec::len).collect(), batch_size, seed);
        Self { sentences, buckets, seed, counts, alpha: alpha.max(0.0) }
    }
}

impl DataSource for TagBatches {
    type Batch = TagBatch;

    fn batches_per_epoch(&self) -> usize {
        self.buckets.len()
    }

    fn batch(&self, epoch: usize, index: usize) -> Result<TagBatch> {
        let rows = self.buckets.batch(epoch, index)?;
        if self.alpha == 0.0 {
            return self.sentences.batch(&rows);
        }
        use rand::Rng;
        let mut rng = rand::rngs::StdRng::seed_from_u64(derive_seed(self.seed, &format!("unk-{epoch}-{index}")));
        self.sentences.batch_with(&rows, |w| {
            let count = self.counts.get(&w).copied().unwrap_or(1) as f64;
            if rng.gen::<f64>() < self.alpha / (self.alpha + count) {
                UNK
            } else {
                w
            }
        })
    }

    fn items_per_batch(&self) -> usize {
        self.buckets.batch_size()
    }
}

/// Token accuracy, accuracy on unknown words (mapped to `<unk>`) and the mean loss of `model` on
/// `sentences`, and every sentence's predicted tags.
pub fn evaluate_tagger(
    model: &Tagger,
    sentences: &EncodedSentences,
    batch_size: usize,
) -> Result<(Metrics, Vec<Vec<usize>>)> {
    let (mut right, mut total, mut unk_right, mut unk_total, mut loss_sum) = (0usize, 0usize, 0usize, 0usize, 0.0f64);
    let mut predictions = Vec::with_capacity(sentences.len());
    let rows: Vec<usize> = (0..sentences.len()).collect();
    for chunk in rows.chunks(batch_size.max(1)) {
        let (input, targets, mask) = sentences.batch(chunk)?;
        let (loss, paths) = model.evaluate_batch(&input, &targets, &mask)?;
        loss_sum += loss;
        for (&r, predicted) in chunk.iter().zip(paths) {
            let labels = &sentences.labels[r];
            for (t, (&p, &l)) in predicted.iter().zip(labels).enumerate() {
                let hit = usize::from(p == l);
                right += hit;
                total += 1;
                if sentences.words[r][t] == UNK {
                    unk_right += hit;
                    unk_total += 1;
                }
            }
            predictions.push(predicted);
        }
    }
    let mut metrics = Metrics::from([
        ("loss".to_string(), loss_sum / total.max(1) as f64),
        ("accuracy".to_string(), right as f64 / total.max(1) as f64),
    ]);
    if unk_total > 0 {
        metrics.insert("unknown_accuracy".into(), unk_right as f64 / unk_total as f64);
    }
    Ok((metrics, predictions))
}

/// A tagger that trains with cross-entropy and validates on held-out sentences.
pub struct TaggerTraining {
    model: Tagger,
    varmap: VarMap,
    val: EncodedSentences,
    batch_size: usize,
}

impl TaggerTraining {
    /// A fresh model of `config`, its parameters drawn from `seed`, validated on `val`.
    pub fn build(config: TaggerConfig, seed: u64, val: EncodedSentences, batch_size: usize) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = crate::seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let model = Tagger::new(config, vb)?;
        Ok(Self { model, varmap, val, batch_size: batch_size.max(1) })
    }

    /// The model.
    pub fn tagger(&self) -> &Tagger {
        &self.model
    }
}

impl Model for TaggerTraining {
    type Batch = TagBatch;

    fn vars(&self) -> Vec<(String, Var)> {
        named_vars(&self.varmap)
    }

    fn set_training(&self, training: bool) {
        self.model.set_training(training);
    }

    fn loss(&mut self, (input, targets, mask): &TagBatch) -> Result<Tensor> {
        self.model.loss(input, targets, mask)
    }

    fn evaluate(&mut self) -> Result<Option<Metrics>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        Ok(Some(evaluate_tagger(&self.model, &self.val, self.batch_size)?.0))
    }

    fn generator_state(&self) -> Option<u128> {
        Some(self.model.rnn().dropout_state())
    }

    fn set_generator_state(&mut self, state: u128) {
        self.model.rnn().set_dropout_state(state);
    }
}

/// A tagger read back from a checkpoint.
pub struct LoadedTagger {
    /// The model, with the checkpoint's parameters.
    pub model: Tagger,
    /// Its configuration.
    pub config: TaggerConfig,
    /// Its vocabularies, tags and batching.
    pub data: TaggerData,
    /// The whole checkpoint, to resume from.
    pub checkpoint: TaskCheckpoint,
}

/// Reads a `recur tag` checkpoint and builds its model; every problem is one typed error.
pub fn load_tagger(path: &Path) -> Result<LoadedTagger> {
    let checkpoint = TaskCheckpoint::load(path, TAG_TASK)?;
    let config: TaggerConfig = checkpoint.model_config()?;
    let data: TaggerData = checkpoint.data()?;
    let origin = path.display().to_string();
    if data.tags.len() != config.num_tags
        || data.words.len() != config.word_vocab_size
        || data.chars.len() != config.char_vocab_size
    {
        return Err(Error::checkpoint(
            origin,
            "its data disagrees with its model's sizes",
            "pass a checkpoint written by recur tag",
        ));
    }
    let tensors: HashMap<String, Tensor> = checkpoint.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let model =
        Tagger::new(config.clone(), VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu)).map_err(|e| {
            Error::checkpoint(
                &origin,
                format!("its parameters do not fit its model ({e})"),
                "pass a checkpoint written by recur tag",
            )
        })?;
    Ok(LoadedTagger { model, config, data, checkpoint })
}
