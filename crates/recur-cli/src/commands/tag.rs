//! `recur tag train|eval|predict`: sequence tagging (default: part-of-speech tags of the Brown
//! corpus's news section, embedded) with word embeddings and character features → BiLSTM, on
//! the library trainer.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use recur::data::{Tagged, TokenVocab, Tokenize};
use recur::metrics::EntityScores;
use recur::models::{
    evaluate_tagger, load_tagger, CellType, EncodedSentences, TagBatches, TaggerConfig, TaggerData, TaggerTraining,
    TAG_TASK,
};
use recur::train::{LrSchedule, OptimizerConfig, TaskInfo, Trainer, TrainerConfig};

use super::train::{limit_threads, thread_count, thread_counts};
use crate::args::{self, parse_cell, parse_duration, OptimizerName, ScheduleName};
use crate::console::{self, say};
use crate::interrupt;
use crate::progress::{self, plural, Style};
use crate::report;

/// The default data, embedded: the Brown corpus's news section (see
/// `data/brown_news/SOURCE.txt`), one sentence a line as `word/tag`.
const BROWN_NEWS: &str = include_str!("../../data/brown_news/brown_news.txt");
const DEFAULT_NAME: &str = "Brown corpus, news (embedded)";

/// `recur tag`.
#[derive(Debug, Args)]
pub struct TagArgs {
    #[command(subcommand)]
    pub command: TagCommand,
}

/// What `recur tag` does.
#[derive(Debug, Subcommand)]
pub enum TagCommand {
    /// Train a tagger (default: Brown news part of speech; the NLTK book's 90/10 in-order split).
    Train(Box<TrainArgs>),
    /// Score a trained tagger on tagged sentences: token accuracy, accuracy on unknown words.
    Eval(EvalArgs),
    /// Tag sentences, one per line (words separated by spaces), from a file or standard input.
    Predict(PredictArgs),
}

/// Flags of `recur tag train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    /// Tagged sentences: `word/tag` tokens one sentence a line (`.txt`), or CoNLL columns
    /// (`.conll`, `.tsv`: word first, tag last, a blank line between sentences).
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    pub data: Option<PathBuf>,
    /// Test sentences in the same format (default: the last --test-fraction of --data, in order).
    #[arg(long, value_name = "FILE", help_heading = "Data")]
    pub test_data: Option<PathBuf>,
    /// The share of the sentences, from the end, that tests (the NLTK book's 10%).
    #[arg(long, default_value_t = 0.1, help_heading = "Data")]
    pub test_fraction: f64,
    /// The share of the training sentences, from their end, that validates (chooses best.safetensors).
    #[arg(long, default_value_t = 0.05, help_heading = "Data")]
    pub val_fraction: f64,
    /// Check the tags follow BIO/BIOES (for named entities).
    #[arg(long, help_heading = "Data")]
    pub bio: bool,

    /// Recurrent cell.
    #[arg(long, default_value = "lstm", value_parser = parse_cell, help_heading = "Model")]
    pub cell: CellType,
    /// Size of a word's embedding.
    #[arg(long, default_value_t = 64, help_heading = "Model")]
    pub word_embedding_size: usize,
    /// Size of a character's embedding (0: no character features).
    #[arg(long, default_value_t = 24, help_heading = "Model")]
    pub char_embedding_size: usize,
    /// The char BiLSTM's hidden size per direction.
    #[arg(long, default_value_t = 32, help_heading = "Model")]
    pub char_hidden_size: usize,
    /// The word-level BiLSTM's hidden size per direction.
    #[arg(long, default_value_t = 128, help_heading = "Model")]
    pub hidden_size: usize,
    /// Word-level layers.
    #[arg(long, default_value_t = 1, help_heading = "Model")]
    pub num_layers: usize,
    /// Word dropout: a training word seen c times becomes `<unk>` with probability α/(α+c), so
    /// unknown words are tagged from their characters (0: off).
    #[arg(long, default_value_t = 0.25, help_heading = "Model")]
    pub word_dropout: f64,
    /// A CRF layer over the tag scores (BiLSTM-CRF): sequence log-likelihood, Viterbi decoding.
    #[arg(long, help_heading = "Model")]
    pub crf: bool,

    /// Sentences per batch.
    #[arg(long, default_value_t = 32, help_heading = "Optimization")]
    pub batch_size: usize,
    /// Learning rate.
    #[arg(long, default_value_t = 3e-3, help_heading = "Optimization")]
    pub lr: f64,
    /// Optimizer.
    #[arg(long, value_enum, default_value_t = OptimizerName::Adam, help_heading = "Optimization")]
    pub optimizer: OptimizerName,
    /// Learning-rate schedule.
    #[arg(long, value_enum, default_value_t = ScheduleName::Cosine, help_heading = "Optimization")]
    pub lr_schedule: ScheduleName,
    /// Clip the gradients' global norm to this (0: no clipping).
    #[arg(long, default_value_t = 5.0, help_heading = "Optimization")]
    pub grad_clip: f64,

    /// Passes over the training sentences.
    #[arg(long, default_value_t = 15, help_heading = "Run")]
    pub epochs: usize,
    /// Stop after this much time: seconds, or with a unit (90s, 3m, 1h).
    #[arg(long, value_parser = parse_duration, default_value = "20m", help_heading = "Run")]
    pub time_budget: Duration,
    /// Seed of initialisation, dropout and batch order.
    #[arg(long, default_value_t = 1234, help_heading = "Run")]
    pub seed: u64,
    /// Threads of the kernels (default: all cores).
    #[arg(long, help_heading = "Run")]
    pub threads: Option<usize>,
    /// Continue the run saved in this checkpoint (the data must be the same; --epochs counts
    /// the whole run's passes).
    #[arg(long, value_name = "CHECKPOINT", help_heading = "Run")]
    pub resume: Option<PathBuf>,
    /// Folder for the checkpoints, metrics.jsonl and loss.svg [default: runs/tag, runs/tag-2, …;
    /// with --resume, the checkpoint's folder].
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Let a new run replace the checkpoints already in --out.
    #[arg(long, help_heading = "Output")]
    pub overwrite: bool,
    /// Only the essentials: no progress.
    #[arg(long, short, help_heading = "Output")]
    pub quiet: bool,
}

/// Flags of `recur tag eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The checkpoint to evaluate.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Tagged sentences (format as for `train --data`).
    #[arg(long, value_name = "FILE")]
    pub data: PathBuf,
}

/// Flags of `recur tag predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The checkpoint to tag with.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Sentences, one per line, words separated by spaces (default or `-`: standard input).
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
}

/// Runs `recur tag`.
pub fn run(args: TagArgs, explicit: &[String]) -> Result<()> {
    match args.command {
        TagCommand::Train(a) => {
            interrupt::install()?;
            train(*a, explicit)
        }
        TagCommand::Eval(a) => eval(a),
        TagCommand::Predict(a) => predict(a),
    }
}

fn read(path: Option<&Path>) -> Result<(String, Tagged)> {
    let Some(path) = path else {
        return Ok((DEFAULT_NAME.to_string(), Tagged::from_word_slash_tag(BROWN_NEWS, DEFAULT_NAME)?));
    };
    let name = path.display().to_string();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {name}"))?;
    let text = recur::data::decode_utf8(&bytes).with_context(|| format!("cannot use {name}"))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase();
    let tagged = match ext.as_str() {
        "conll" | "tsv" | "bio" | "iob" => Tagged::from_conll(text, &name)?,
        _ => Tagged::from_word_slash_tag(text, &name)?,
    };
    Ok((name, tagged))
}

fn train(args: TrainArgs, explicit: &[String]) -> Result<()> {
    if let Some(threads) = args.threads {
        limit_threads(thread_count(threads)?);
    }
    let style = Style::pick(args.quiet);
    let resumed = match &args.resume {
        Some(p) => Some(load_tagger(p).with_context(|| format!("cannot resume from {}", p.display()))?),
        None => None,
    };
    if resumed.is_some() {
        let fixed = [
            "test_fraction",
            "val_fraction",
            "cell",
            "word_embedding_size",
            "char_embedding_size",
            "char_hidden_size",
            "hidden_size",
            "num_layers",
            "word_dropout",
            "crf",
            "batch_size",
            "lr",
            "optimizer",
            "lr_schedule",
            "grad_clip",
            "seed",
        ];
        report::refuse_fixed_on_resume(&fixed, explicit)?;
    }
    let (name, all) = read(args.data.as_deref())?;
    if let Some(r) = &resumed {
        if r.data.tags != all.tags {
            bail!(
                "the checkpoint's tags {:?} differ from {name}'s {:?}; resume on the same data",
                r.data.tags,
                all.tags
            );
        }
    }
    if args.bio {
        all.check_bio().with_context(|| format!("cannot use {name}"))?;
    }
    let (rest, test) = match &args.test_data {
        Some(p) => {
            (all.clone(), read(Some(p))?.1.with_tags(&all.tags).with_context(|| format!("cannot use {}", p.display()))?)
        }
        None => {
            if !(0.0..0.5).contains(&args.test_fraction) {
                bail!("--test-fraction must be in [0, 0.5), got {}", args.test_fraction);
            }
            let cut = all.sentences.len() - (all.sentences.len() as f64 * args.test_fraction).round() as usize;
            (all.slice(0..cut), all.slice(cut..all.sentences.len()))
        }
    };
    if !(0.0..0.5).contains(&args.val_fraction) {
        bail!("--val-fraction must be in [0, 0.5), got {}", args.val_fraction);
    }
    let cut = rest.sentences.len() - (rest.sentences.len() as f64 * args.val_fraction).round() as usize;
    let (train_set, val_set) = (rest.slice(0..cut), rest.slice(cut..rest.sentences.len()));
    if train_set.sentences.is_empty() {
        bail!("{name} leaves no training sentence after the test and validation parts");
    }
    let words: Vec<String> = train_set.sentences.iter().flatten().cloned().collect();
    if !(args.word_dropout.is_finite() && args.word_dropout >= 0.0) {
        bail!("--word-dropout must be at least 0 (0: off), got {}", args.word_dropout);
    }
    let data = match &resumed {
        Some(r) => r.data.clone(),
        None => TaggerData {
            words: TokenVocab::build(&words, Tokenize::Words, 1, None),
            chars: TokenVocab::build(&words, Tokenize::Chars, 1, None),
            tags: all.tags.clone(),
            batch_size: args.batch_size.max(1),
            seed: args.seed,
            word_dropout: Some(args.word_dropout),
        },
    };
    let word_dropout = data.word_dropout.unwrap_or(args.word_dropout);
    let (train_enc, val_enc, test_enc) = (
        EncodedSentences::new(&train_set, &data),
        EncodedSentences::new(&val_set, &data),
        EncodedSentences::new(&test, &data),
    );
    let config = match &resumed {
        Some(r) => r.config.clone(),
        None => TaggerConfig {
            cell: args.cell,
            word_embedding_size: args.word_embedding_size.max(1),
            char_embedding_size: args.char_embedding_size,
            char_hidden_size: args.char_hidden_size.max(1),
            hidden_size: args.hidden_size.max(1),
            num_layers: args.num_layers.max(1),
            crf: args.crf,
            ..TaggerConfig::new(data.words.len(), data.chars.len(), data.tags.len())
        },
    };
    let per_epoch = train_enc.len().div_ceil(data.batch_size);
    let max_steps = (args.epochs.max(1) * per_epoch).max(1);
    let trainer_config = match &resumed {
        Some(r) => TrainerConfig { max_steps, ..r.checkpoint.trainer.clone() },
        None => TrainerConfig {
            grad_clip: args.grad_clip,
            monitor: if val_enc.is_empty() { "loss".into() } else { "accuracy".into() },
            maximize: !val_enc.is_empty(),
            divergence_loss: Some(10.0 * (data.tags.len() as f64).ln().max(1.0)),
            ..TrainerConfig::new(
                max_steps,
                per_epoch,
                OptimizerConfig::by_name(&args::name(&args.optimizer), args.lr)?,
                LrSchedule::by_name(&args::name(&args.lr_schedule), max_steps as u64, args.lr)?,
            )
        },
    };
    let dir = report::claim_run_dir(args.out.as_deref(), args.resume.as_deref(), "tag", args.overwrite)?;
    let model = TaggerTraining::build(config.clone(), data.seed, val_enc, data.batch_size)?;
    say!("{}", model.tagger());
    say!(
        "{} parameters | {name} | {} training sentences ({} tokens), {} validation, {} test ({} tokens) | {} words, {} \
         characters, {} tags",
        model.tagger().parameter_count(),
        train_set.sentences.len(),
        train_set.tokens(),
        val_set.sentences.len(),
        test.sentences.len(),
        test.tokens(),
        data.words.len(),
        data.chars.len(),
        data.tags.len()
    );
    let task =
        TaskInfo { name: TAG_TASK.into(), model: serde_json::to_value(&config)?, data: serde_json::to_value(&data)? };
    let batches = TagBatches::new(train_enc, data.batch_size, data.seed, word_dropout);
    let mut trainer = match &resumed {
        Some(r) => Trainer::resume(trainer_config, &r.checkpoint, model, batches, dir)?,
        None => Trainer::new(trainer_config, task, model, batches, dir)?,
    };
    say!(
        "training {max_steps} steps ({per_epoch} per epoch), {}, writing to {}",
        thread_counts(),
        trainer.dir().path().display()
    );
    let session = report::Session {
        style,
        budget: args.time_budget,
        max_epochs: None,
        unit: "sentences",
        advice: "Start again with a lower --lr or --grad-clip",
    };
    let (_, elapsed) = report::train(&mut trainer, &session, &mut |_, _| Ok(None))?;
    let run = trainer.state();
    say!("done at step {} ({}) in {}", run.step, plural(run.epoch, "epoch"), progress::duration(elapsed));
    if let (Some(best), Some(step)) = (run.best, run.best_step) {
        say!("best validation {} {best:.4} at step {step} (best.safetensors)", trainer.config().monitor);
    }
    if !test_enc.is_empty() {
        let best = load_tagger(&trainer.best_path())?;
        let (m, predictions) = evaluate_tagger(&best.model, &test_enc, data.batch_size)?;
        let unk = m.get("unknown_accuracy").map_or(String::new(), |a| format!(", on words unseen in training {a:.4}"));
        say!("test ({} sentences) with best.safetensors: token accuracy {:.4}{unk}", test_enc.len(), m["accuracy"]);
        if let Some(scores) = entity_scores(&data.tags, &test_enc.labels, &predictions) {
            say!("test {}", scores.report().trim_end());
        }
    }
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let loaded = load_tagger(&args.checkpoint)?;
    let (name, tagged) = read(Some(&args.data))?;
    let tagged = tagged.with_tags(&loaded.data.tags).with_context(|| format!("cannot evaluate on {name}"))?;
    let encoded = EncodedSentences::new(&tagged, &loaded.data);
    let (m, predictions) = evaluate_tagger(&loaded.model, &encoded, loaded.data.batch_size)?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{name}: {} sentences, {} tokens", tagged.sentences.len(), tagged.tokens())?;
    writeln!(out, "token accuracy {:.4}", m["accuracy"])?;
    if let Some(a) = m.get("unknown_accuracy") {
        writeln!(out, "accuracy on words the model never saw {a:.4}")?;
    }
    writeln!(out, "loss {:.4}", m["loss"])?;
    if let Some(scores) = entity_scores(&loaded.data.tags, &encoded.labels, &predictions) {
        write!(out, "{}", scores.report())?;
    }
    Ok(())
}

/// conlleval's entity-level scores, where the tags are chunk tags (BIO/BIOES).
fn entity_scores(tags: &[String], gold: &[Vec<usize>], predicted: &[Vec<usize>]) -> Option<EntityScores> {
    if !EntityScores::applies_to(tags) {
        return None;
    }
    let mut scores = EntityScores::default();
    let names = |ids: &[usize]| ids.iter().map(|&t| tags[t].as_str()).collect::<Vec<_>>();
    for (g, p) in gold.iter().zip(predicted) {
        scores.add(&names(g), &names(p));
    }
    Some(scores)
}

fn predict(args: PredictArgs) -> Result<()> {
    let loaded = load_tagger(&args.checkpoint)?;
    let lines: Vec<String> = match args.input.as_deref() {
        Some(p) if p != Path::new("-") => {
            let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
            recur::data::decode_utf8(&bytes)
                .with_context(|| format!("cannot use {}", p.display()))?
                .lines()
                .map(str::to_string)
                .collect()
        }
        _ => std::io::stdin().lock().lines().collect::<std::io::Result<_>>().context("cannot read standard input")?,
    };
    let sentences: Vec<Vec<String>> = lines
        .iter()
        .map(|l| l.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .filter(|s: &Vec<String>| !s.is_empty())
        .collect();
    if sentences.is_empty() {
        console::warn("no sentence to tag (the input is empty)");
        return Ok(());
    }
    let tagged = Tagged {
        labels: sentences.iter().map(|s| vec![0; s.len()]).collect(),
        sentences,
        tags: loaded.data.tags.clone(),
    };
    let encoded = EncodedSentences::new(&tagged, &loaded.data);
    let (_, predictions) = evaluate_tagger(&loaded.model, &encoded, loaded.data.batch_size)?;
    let mut out = std::io::stdout().lock();
    for (words, tags) in tagged.sentences.iter().zip(&predictions) {
        let line: Vec<String> = words.iter().zip(tags).map(|(w, &t)| format!("{w}/{}", loaded.data.tags[t])).collect();
        writeln!(out, "{}", line.join(" "))?;
    }
    Ok(())
}
