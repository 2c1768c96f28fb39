//! Sequence classification as a training task: texts encoded with a [`TokenVocab`] (or series
//! of frames standardised with a [`SeriesScaling`]), batches
//! shuffled by epoch and bucketed by length ([`ClassBatches`]), the [`Model`] the trainer runs
//! ([`ClassifierTraining`]: cross-entropy; validation loss, accuracy and macro F1), predictions,
//! and [`load_classifier`], which gives the model of a `recur classify` checkpoint back.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use serde::{Deserialize, Serialize};

use crate::data::labelled::{Labelled, TokenVocab, UNK};
use crate::data::series::{LabelledSeries, SeriesScaling};
use crate::data::Buckets;
use crate::data::WordVectors;
use crate::metrics::Confusion;
use crate::models::{ClassifierConfig, SequenceClassifier};
use crate::train::{cross_entropy, named_vars, DataSource, Metrics, Model, TaskCheckpoint};
use crate::{Error, Result};

/// The task name of classifier checkpoints.
pub const CLASSIFY_TASK: &str = "classify";

/// What a classifier checkpoint keeps beside the model: the vocabulary, the class names and how
/// batches are made.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierData {
    /// The token vocabulary.
    pub vocab: TokenVocab,
    /// The class names, in label order.
    pub classes: Vec<String>,
    /// Examples per batch.
    pub batch_size: usize,
    /// Longer texts are cut to this many tokens.
    pub max_len: usize,
    /// The seed of initialisation, dropout and batch order.
    pub seed: u64,
    /// For a model of series: the per-channel standardisation fitted on the training part (the
    /// vocabulary is then unused).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scaling: Option<SeriesScaling>,
}

/// The inputs of encoded examples.
#[derive(Clone, Debug, PartialEq)]
pub enum Inputs {
    /// Each example's token ids.
    Tokens(Vec<Vec<u32>>),
    /// Each example's standardised frames, step-major (`t * channels + c`).
    Frames {
        /// Numbers per frame.
        channels: usize,
        /// The frames of each example.
        series: Vec<Vec<f32>>,
    },
}

impl Default for Inputs {
    fn default() -> Self {
        Inputs::Tokens(Vec::new())
    }
}

/// Encoded examples: token ids or frames (at least one step each, at most `max_len`) and labels.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Encoded {
    /// Each example's input.
    pub inputs: Inputs,
    /// Each example's class.
    pub labels: Vec<usize>,
    /// Tokens the vocabulary did not know (mapped to `<unk>`).
    pub unknown: usize,
}

impl Encoded {
    /// Encodes `data` with `vocab`, cutting texts to `max_len` tokens (an empty one becomes one
    /// `<unk>`).
    pub fn new(data: &Labelled, vocab: &TokenVocab, max_len: usize) -> Self {
        let (mut all, mut unknown_total) = (Vec::with_capacity(data.texts.len()), 0);
        for text in &data.texts {
            let (mut ids, unknown) = vocab.encode(text);
            unknown_total += unknown;
            ids.truncate(max_len.max(1));
            if ids.is_empty() {
                ids.push(UNK);
            }
            all.push(ids);
        }
        Encoded { inputs: Inputs::Tokens(all), labels: data.labels.clone(), unknown: unknown_total }
    }

    /// Standardises `data`'s series with `scaling`, cutting each to `max_len` frames. Errors
    /// when the channel counts differ.
    pub fn from_series(data: &LabelledSeries, scaling: &SeriesScaling, max_len: usize) -> Result<Self> {
        if data.channels != scaling.channels() {
            return Err(Error::data(
                "labelled series",
                format!("{} channels per frame, but the model reads {}", data.channels, scaling.channels()),
                "give series with the channels the model was trained on",
            ));
        }
        let c = data.channels;
        let series = data
            .series
            .iter()
            .map(|s| {
                let mut frames = scaling.apply(s);
                frames.truncate(max_len.max(1) * c);
                frames
            })
            .collect();
        Ok(Encoded { inputs: Inputs::Frames { channels: c, series }, labels: data.labels.clone(), unknown: 0 })
    }

    /// Examples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there is none.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Each example's number of steps.
    pub fn lengths(&self) -> Vec<usize> {
        match &self.inputs {
            Inputs::Tokens(ids) => ids.iter().map(Vec::len).collect(),
            Inputs::Frames { channels, series } => series.iter().map(|s| s.len() / channels.max(&1)).collect(),
        }
    }
}

/// A batch: right-padded inputs (ids `(B, T)` or frames `(B, T, C)`), lengths, labels `(B)`.
pub struct ClassBatch {
    /// Token ids (u32), `<pad>` past each length; or frames (f32), zeros past each length.
    pub inputs: Tensor,
    /// Each row's length.
    pub lengths: Vec<usize>,
    /// Each row's class (u32).
    pub labels: Tensor,
}

fn make_batch(examples: &Encoded, rows: &[usize], device: &Device) -> Result<ClassBatch> {
    let (inputs, lengths) = match &examples.inputs {
        Inputs::Tokens(all) => {
            let steps = rows.iter().map(|&r| all[r].len()).max().unwrap_or(1);
            let mut ids = Vec::with_capacity(rows.len() * steps);
            for &r in rows {
                ids.extend_from_slice(&all[r]);
                ids.extend(std::iter::repeat_n(0u32, steps - all[r].len()));
            }
            (Tensor::from_vec(ids, (rows.len(), steps), device)?, rows.iter().map(|&r| all[r].len()).collect())
        }
        Inputs::Frames { channels, series } => {
            let c = *channels;
            let steps = rows.iter().map(|&r| series[r].len() / c).max().unwrap_or(1);
            let mut frames = Vec::with_capacity(rows.len() * steps * c);
            for &r in rows {
                frames.extend_from_slice(&series[r]);
                frames.extend(std::iter::repeat_n(0f32, steps * c - series[r].len()));
            }
            (
                Tensor::from_vec(frames, (rows.len(), steps, c), device)?,
                rows.iter().map(|&r| series[r].len() / c).collect(),
            )
        }
    };
    let labels: Vec<u32> = rows.iter().map(|&r| examples.labels[r] as u32).collect();
    Ok(ClassBatch { inputs, lengths, labels: Tensor::from_vec(labels, rows.len(), device)? })
}

/// Training batches, bucketed by length and shuffled by epoch ([`Buckets`]).
pub struct ClassBatches {
    examples: Encoded,
    buckets: Buckets,
    device: Device,
}

impl ClassBatches {
    /// Batches of `batch_size` of `examples`, ordered by `seed`.
    pub fn new(examples: Encoded, batch_size: usize, seed: u64) -> Self {
        let buckets = Buckets::new(examples.lengths(), batch_size, seed);
        Self { examples, buckets, device: Device::Cpu }
    }
}

impl DataSource for ClassBatches {
    type Batch = ClassBatch;

    fn batches_per_epoch(&self) -> usize {
        self.buckets.len()
    }

    fn batch(&self, epoch: usize, index: usize) -> Result<ClassBatch> {
        make_batch(&self.examples, &self.buckets.batch(epoch, index)?, &self.device)
    }

    fn items_per_batch(&self) -> usize {
        self.buckets.batch_size()
    }
}

/// A classifier that trains with cross-entropy and validates on held-out examples.
pub struct ClassifierTraining {
    model: SequenceClassifier,
    varmap: VarMap,
    val: Encoded,
    batch_size: usize,
}

impl ClassifierTraining {
    /// A fresh model of `config`, its parameters drawn from `seed` as PyTorch draws them,
    /// validated on `val` (empty: no validation).
    pub fn build(config: ClassifierConfig, seed: u64, val: Encoded, batch_size: usize) -> Result<Self> {
        let varmap = VarMap::new();
        let vb = crate::seeded_var_builder(&varmap, seed, DType::F32, &Device::Cpu);
        let model = SequenceClassifier::new(config, vb)?;
        Ok(Self { model, varmap, val, batch_size: batch_size.max(1) })
    }

    /// The model.
    pub fn classifier(&self) -> &SequenceClassifier {
        &self.model
    }

    /// Starts the embedding from pretrained `vectors`: the row of each token of `vocab` that has
    /// a vector takes it, the others keep their random start. Returns how many rows were set.
    /// Errors when the dimensions differ or the model reads dense inputs.
    pub fn load_embedding(&mut self, vectors: &WordVectors, vocab: &TokenVocab) -> Result<usize> {
        let config = self.model.config();
        if config.input_size > 0 || vocab.len() != config.vocab_size {
            return Err(Error::config(
                "SequenceClassifier",
                format!("a vocabulary of {} ids for a model of {} token ids", vocab.len(), config.vocab_size),
                "load vectors for the model's own vocabulary, into a model of token ids",
            ));
        }
        if vectors.dim != config.embedding_size {
            return Err(Error::config(
                "SequenceClassifier",
                format!("vectors of {} numbers for an embedding of size {}", vectors.dim, config.embedding_size),
                format!("set the embedding size to {}", vectors.dim),
            ));
        }
        let vars = self.varmap.data().lock().map_err(|_| Error::config("VarMap", "poisoned lock", "retry"))?;
        let var = vars.get("embedding.weight").ok_or_else(|| {
            Error::config("SequenceClassifier", "the model has no embedding.weight", "build a model of token ids")
        })?;
        let mut table: Vec<f32> = var.as_tensor().flatten_all()?.to_vec1()?;
        let rows = vectors.rows_for(vocab);
        let d = vectors.dim;
        for &(id, v) in &rows {
            table[id * d..(id + 1) * d].copy_from_slice(v);
        }
        var.set(&Tensor::from_vec(table, (config.vocab_size, d), &Device::Cpu)?)?;
        Ok(rows.len())
    }
}

/// Class probabilities `(N, C)` of `examples`, in batches of `batch_size`, and the mean
/// cross-entropy against their labels.
pub fn predict(model: &SequenceClassifier, examples: &Encoded, batch_size: usize) -> Result<(Vec<Vec<f32>>, f64)> {
    let device = Device::Cpu;
    let (mut probs, mut total) = (Vec::with_capacity(examples.len()), 0.0);
    let rows: Vec<usize> = (0..examples.len()).collect();
    for chunk in rows.chunks(batch_size.max(1)) {
        let batch = make_batch(examples, chunk, &device)?;
        let logits = model.forward_no_grad(&batch.inputs, &batch.lengths)?;
        let loss = cross_entropy(&logits, &batch.labels)?.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        total += loss * chunk.len() as f64;
        let p = candle_nn::ops::softmax_last_dim(&logits)?;
        probs.extend(p.to_vec2::<f32>()?);
    }
    Ok((probs, total / examples.len().max(1) as f64))
}

/// The index of the largest probability.
pub fn argmax(p: &[f32]) -> usize {
    p.iter().enumerate().fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| if v > bv { (i, v) } else { (bi, bv) }).0
}

/// Loss, accuracy and macro F1 of `model` on `examples`, and the confusion matrix.
pub fn evaluate_classifier(
    model: &SequenceClassifier,
    examples: &Encoded,
    classes: &[String],
    batch_size: usize,
) -> Result<(Metrics, Confusion)> {
    let (probs, loss) = predict(model, examples, batch_size)?;
    let mut confusion = Confusion::new(classes.to_vec());
    for (p, &label) in probs.iter().zip(&examples.labels) {
        confusion.add(label, argmax(p));
    }
    let metrics = Metrics::from([
        ("loss".to_string(), loss),
        ("accuracy".to_string(), confusion.accuracy()),
        ("macro_f1".to_string(), confusion.macro_f1()),
    ]);
    Ok((metrics, confusion))
}

impl Model for ClassifierTraining {
    type Batch = ClassBatch;

    fn vars(&self) -> Vec<(String, Var)> {
        named_vars(&self.varmap)
    }

    fn set_training(&self, training: bool) {
        self.model.set_training(training);
    }

    fn loss(&mut self, batch: &ClassBatch) -> Result<Tensor> {
        let logits = self.model.forward(&batch.inputs, &batch.lengths)?;
        cross_entropy(&logits, &batch.labels)
    }

    fn evaluate(&mut self) -> Result<Option<Metrics>> {
        if self.val.is_empty() {
            return Ok(None);
        }
        let classes: Vec<String> = (0..self.model.config().num_classes).map(|c| c.to_string()).collect();
        Ok(Some(evaluate_classifier(&self.model, &self.val, &classes, self.batch_size)?.0))
    }

    fn generator_state(&self) -> Option<u128> {
        Some(self.model.rnn().dropout_state())
    }

    fn set_generator_state(&mut self, state: u128) {
        self.model.rnn().set_dropout_state(state);
    }
}

/// A classifier read back from a checkpoint.
pub struct LoadedClassifier {
    /// The model, with the checkpoint's parameters.
    pub model: SequenceClassifier,
    /// Its configuration.
    pub config: ClassifierConfig,
    /// Its vocabulary, classes and batching.
    pub data: ClassifierData,
    /// The whole checkpoint, to resume from.
    pub checkpoint: TaskCheckpoint,
}

/// Reads a `recur classify` checkpoint and builds its model; every problem is one typed error.
pub fn load_classifier(path: &Path) -> Result<LoadedClassifier> {
    let checkpoint = TaskCheckpoint::load(path, CLASSIFY_TASK)?;
    let config: ClassifierConfig = checkpoint.model_config()?;
    let data: ClassifierData = checkpoint.data()?;
    let origin = path.display().to_string();
    let inputs_agree = match &data.scaling {
        Some(s) => config.input_size > 0 && s.channels() == config.input_size,
        None => config.input_size == 0 && data.vocab.len() == config.vocab_size,
    };
    if data.classes.len() != config.num_classes || !inputs_agree {
        return Err(Error::checkpoint(
            origin,
            format!(
                "its data ({} classes, {} token ids) disagrees with its model ({}, {})",
                data.classes.len(),
                data.vocab.len(),
                config.num_classes,
                config.vocab_size
            ),
            "pass a checkpoint written by recur classify",
        ));
    }
    let tensors: HashMap<String, Tensor> = checkpoint.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    let model = SequenceClassifier::new(config.clone(), VarBuilder::from_tensors(tensors, DType::F32, &Device::Cpu))
        .map_err(|e| {
            Error::checkpoint(
                &origin,
                format!("its parameters do not fit its model ({e})"),
                "pass a checkpoint written by recur classify",
            )
        })?;
    Ok(LoadedClassifier { model, config, data, checkpoint })
}
