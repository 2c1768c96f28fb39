//! `recur classify train|eval|predict`: sequence classification of texts (default: first names →
//! gender, embedded) with a (Bi)LSTM/GRU/RNN over each text's own length, on the library trainer.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand, ValueEnum};
use recur::data::{Labelled, LabelledSeries, SeriesScaling, TokenVocab, Tokenize};
use recur::models::{
    argmax, evaluate_classifier, load_classifier, predict, CellType, ClassBatches, ClassifierConfig, ClassifierData,
    ClassifierTraining, Encoded, Pooling, CLASSIFY_TASK,
};
use recur::train::{LrSchedule, OptimizerConfig, StopReason, TaskInfo, Trainer, TrainerConfig};

use super::train::{limit_threads, thread_count, thread_counts};
use crate::args::{self, parse_cell, parse_duration, OptimizerName, ScheduleName};
use crate::checkpoint::write_atomic;
use crate::console::{self, say};
use crate::interrupt;
use crate::progress::{self, plural, Style};
use crate::report;

/// The default data, embedded: first names by gender (see `data/first_names/SOURCE.txt`: Grady
/// Ward's Moby names, public domain). Names on both lists are dropped.
const FEMALE: &str = include_str!("../../data/first_names/female.txt");
const MALE: &str = include_str!("../../data/first_names/male.txt");
const DEFAULT_NAME: &str = "first names → gender (embedded)";

/// `recur classify`.
#[derive(Debug, Args)]
pub struct ClassifyArgs {
    #[command(subcommand)]
    pub command: ClassifyCommand,
}

/// What `recur classify` does.
#[derive(Debug, Subcommand)]
pub enum ClassifyCommand {
    /// Train a classifier (default: first names → gender, embedded).
    Train(Box<TrainArgs>),
    /// Score a trained classifier on labelled data: accuracy, per-class F1, confusion matrix.
    Eval(EvalArgs),
    /// Classify texts, one per line, from a file or standard input.
    Predict(PredictArgs),
}

/// Where labelled data comes from, and how its texts become tokens.
#[derive(Debug, Args)]
pub struct DataArgs {
    /// Labelled data: a folder of one file per class (`CLASS.txt`, one example a line), a TSV or
    /// CSV file with a header row, JSON lines (`.jsonl`); or multivariate series: a UEA/sktime
    /// `.ts` file, or a CSV file of one row per frame with --id-column.
    #[arg(long, value_name = "PATH", help_heading = "Data")]
    pub data: Option<PathBuf>,
    /// A CSV file of series, one row per frame: this column names the sequence a row belongs
    /// to (its rows consecutive), --label-column its class, every other column is a channel.
    #[arg(long, value_name = "COLUMN", help_heading = "Data")]
    pub id_column: Option<String>,
    /// The column (or JSON field) holding the text.
    #[arg(long, default_value = "text", help_heading = "Data")]
    pub text_column: String,
    /// The column (or JSON field) holding the class.
    #[arg(long, default_value = "label", help_heading = "Data")]
    pub label_column: String,
}

/// `--tokenize`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum TokenizeName {
    /// Characters.
    Chars,
    /// Whitespace-separated words, lower-cased.
    Words,
}

/// `--pooling`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PoolingName {
    /// The final state of the last layer (each direction's).
    Last,
    /// The mean of the outputs over the real steps.
    Mean,
    /// The maximum over the real steps.
    Max,
    /// Additive attention over the real steps (learned weights per step).
    Attention,
}

/// Flags of `recur classify train`.
#[derive(Debug, Args)]
pub struct TrainArgs {
    #[command(flatten)]
    pub data: DataArgs,
    /// Validation data in the same format (default: a seeded stratified split of --data).
    #[arg(long, value_name = "PATH", help_heading = "Data")]
    pub val_data: Option<PathBuf>,
    /// The share of each class held out for validation when there is no --val-data.
    #[arg(long, default_value_t = 0.1, help_heading = "Data")]
    pub val_fraction: f64,
    /// Tokens: characters or words [default: words; chars for the embedded names].
    #[arg(long, value_enum, help_heading = "Data")]
    pub tokenize: Option<TokenizeName>,
    /// Tokens seen fewer times in training become `<unk>`.
    #[arg(long, default_value_t = 1, help_heading = "Data")]
    pub min_count: usize,
    /// At most this many token ids (`<pad>` and `<unk>` included).
    #[arg(long, help_heading = "Data")]
    pub max_vocab: Option<usize>,
    /// Texts are cut to this many tokens.
    #[arg(long, default_value_t = 200, help_heading = "Data")]
    pub max_len: usize,

    /// Recurrent cell.
    #[arg(long, default_value = "lstm", value_parser = parse_cell, help_heading = "Model")]
    pub cell: CellType,
    /// Size of a token's embedding.
    #[arg(long, default_value_t = 64, help_heading = "Model")]
    pub embedding_size: usize,
    /// Size of the hidden state (per direction).
    #[arg(long, default_value_t = 128, help_heading = "Model")]
    pub hidden_size: usize,
    /// Recurrent layers.
    #[arg(long, default_value_t = 1, help_heading = "Model")]
    pub num_layers: usize,
    /// One direction only (default: both).
    #[arg(long, help_heading = "Model")]
    pub unidirectional: bool,
    /// Dropout between recurrent layers.
    #[arg(long, default_value_t = 0.0, help_heading = "Model")]
    pub dropout: f64,
    /// How the outputs become one vector.
    #[arg(long, value_enum, default_value_t = PoolingName::Last, help_heading = "Model")]
    pub pooling: PoolingName,
    /// Start the embedding from pretrained word vectors: a GloVe or word2vec text file (its
    /// dimension sets --embedding-size; tokens it lacks start at random).
    #[arg(long, value_name = "FILE", help_heading = "Model")]
    pub embeddings: Option<PathBuf>,
    /// Keep the embedding fixed during training (with --embeddings).
    #[arg(long, help_heading = "Model")]
    pub freeze_embedding: bool,

    /// Examples per batch.
    #[arg(long, default_value_t = 64, help_heading = "Optimization")]
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

    /// Passes over the training data [default: 12; with --resume, the checkpoint's steps].
    #[arg(long, help_heading = "Run")]
    pub epochs: Option<usize>,
    /// Stop after this many steps (instead of --epochs).
    #[arg(long, help_heading = "Run")]
    pub max_steps: Option<usize>,
    /// Evaluate and checkpoint every this many steps [default: once per epoch].
    #[arg(long, help_heading = "Run")]
    pub eval_every: Option<usize>,
    /// Stop after this many evaluations without a better validation accuracy.
    #[arg(long, help_heading = "Run")]
    pub patience: Option<usize>,
    /// Stop after this much time: seconds, or with a unit (90s, 3m, 1h).
    #[arg(long, value_parser = parse_duration, default_value = "10m", help_heading = "Run")]
    pub time_budget: Duration,
    /// Seed of the split, initialisation, dropout and batch order.
    #[arg(long, default_value_t = 1234, help_heading = "Run")]
    pub seed: u64,
    /// Threads of the kernels (default: all cores).
    #[arg(long, help_heading = "Run")]
    pub threads: Option<usize>,
    /// Continue the run saved in this checkpoint (the data must be the same).
    #[arg(long, value_name = "CHECKPOINT", help_heading = "Run")]
    pub resume: Option<PathBuf>,

    /// Folder for best.safetensors, last.safetensors, metrics.jsonl, loss.svg, confusion.svg
    /// [default: the first of runs/classify, runs/classify-2, … that holds no run].
    #[arg(long, value_name = "DIR", help_heading = "Output")]
    pub out: Option<PathBuf>,
    /// Let a new run replace the checkpoints already in --out.
    #[arg(long, help_heading = "Output")]
    pub overwrite: bool,
    /// Only the essentials: no progress.
    #[arg(long, short, help_heading = "Output")]
    pub quiet: bool,
}

/// Flags of `recur classify eval`.
#[derive(Debug, Args)]
pub struct EvalArgs {
    /// The checkpoint to evaluate.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    #[command(flatten)]
    pub data: DataArgs,
    /// Also write the confusion matrix as an SVG heatmap here.
    #[arg(long, value_name = "FILE")]
    pub confusion_svg: Option<PathBuf>,
}

/// Flags of `recur classify predict`.
#[derive(Debug, Args)]
pub struct PredictArgs {
    /// The checkpoint to predict with.
    #[arg(long, value_name = "FILE")]
    pub checkpoint: PathBuf,
    /// Texts, one per line (default or `-`: standard input); for a model of series, a `.ts` file
    /// of cases (labelled or not).
    #[arg(value_name = "FILE")]
    pub input: Option<PathBuf>,
    /// One JSON object a line (text, label, every class's probability) instead of
    /// `label<TAB>probability<TAB>text`.
    #[arg(long)]
    pub jsonl: bool,
}

/// Runs `recur classify`.
pub fn run(args: ClassifyArgs, explicit: &[String]) -> Result<()> {
    match args.command {
        ClassifyCommand::Train(a) => {
            interrupt::install()?;
            train(*a, explicit)
        }
        ClassifyCommand::Eval(a) => eval(a),
        ClassifyCommand::Predict(a) => predict_cmd(a),
    }
}

/// Labelled examples: texts, or series of frames.
#[derive(Clone)]
enum Examples {
    Texts(Labelled),
    Series(LabelledSeries),
}

impl Examples {
    fn classes(&self) -> &[String] {
        match self {
            Examples::Texts(d) => &d.classes,
            Examples::Series(d) => &d.classes,
        }
    }

    fn class_counts(&self) -> Vec<usize> {
        match self {
            Examples::Texts(d) => d.class_counts(),
            Examples::Series(d) => d.class_counts(),
        }
    }

    fn split(&self, fraction: f64, seed: u64) -> Result<(Examples, Examples)> {
        Ok(match self {
            Examples::Texts(d) => {
                let (a, b) = d.stratified_split(fraction, seed)?;
                (Examples::Texts(d.subset(&a)), Examples::Texts(d.subset(&b)))
            }
            Examples::Series(d) => {
                let (a, b) = d.stratified_split(fraction, seed)?;
                (Examples::Series(d.subset(&a)), Examples::Series(d.subset(&b)))
            }
        })
    }

    fn with_classes(&self, classes: &[String]) -> recur::Result<Examples> {
        Ok(match self {
            Examples::Texts(d) => Examples::Texts(d.with_classes(classes)?),
            Examples::Series(d) => Examples::Series(d.with_classes(classes)?),
        })
    }

    /// Encodes with a model's data: its vocabulary for texts, its scaling for series.
    fn encode(&self, data: &ClassifierData, name: &str) -> Result<Encoded> {
        match (self, &data.scaling) {
            (Examples::Texts(d), None) => Ok(Encoded::new(d, &data.vocab, data.max_len)),
            (Examples::Series(d), Some(scaling)) => {
                Encoded::from_series(d, scaling, data.max_len).with_context(|| format!("cannot use {name}"))
            }
            (Examples::Texts(_), Some(s)) => bail!(
                "{name} holds texts, but the model reads series of {} channels; give a .ts file (or a CSV of frames \
                 with --id-column)",
                s.channels()
            ),
            (Examples::Series(_), None) => {
                bail!("{name} holds series, but the model reads texts; give labelled texts")
            }
        }
    }
}

fn file_text(p: &Path) -> Result<String> {
    let bytes = std::fs::read(p).with_context(|| format!("cannot read {}", p.display()))?;
    Ok(recur::data::decode_utf8(&bytes).with_context(|| format!("cannot use {}", p.display()))?.to_string())
}

fn extension(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).unwrap_or_default().to_ascii_lowercase()
}

/// Reads labelled data from `path` (or the embedded names), by its form.
fn read(data: &DataArgs, path: Option<&Path>) -> Result<(String, Examples, usize)> {
    let Some(path) = path else {
        let files = [("female".to_string(), FEMALE.to_string()), ("male".to_string(), MALE.to_string())];
        let mut labelled = Labelled::from_class_files(&files)?;
        let ambiguous = labelled.drop_ambiguous();
        return Ok((DEFAULT_NAME.to_string(), Examples::Texts(labelled), ambiguous));
    };
    let name = path.display().to_string();
    let labelled = if path.is_dir() {
        let mut files = Vec::new();
        let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot list {name}"))?
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        entries.sort();
        for p in entries {
            let class = p.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_string();
            files.push((class, file_text(&p)?));
        }
        if files.is_empty() {
            bail!("{name} holds no CLASS.txt file; put one file of examples per class in the folder");
        }
        Labelled::from_class_files(&files).with_context(|| format!("cannot use {name}"))?
    } else {
        let content = file_text(path)?;
        let ext = extension(path);
        if ext == "ts" {
            return Ok((name.clone(), Examples::Series(LabelledSeries::from_ts(&content, &name)?), 0));
        }
        if let Some(id) = &data.id_column {
            if ext != "csv" {
                bail!("{name}: --id-column reads a CSV file of frames; give a .csv file, or drop --id-column");
            }
            let series = LabelledSeries::from_csv(&content, &name, id, &data.label_column)?;
            return Ok((name.clone(), Examples::Series(series), 0));
        }
        match ext.as_str() {
            "jsonl" | "ndjson" => Labelled::from_jsonl(&content, &name, &data.text_column, &data.label_column)?,
            "csv" => Labelled::from_delimited(&content, &name, b',', &data.text_column, &data.label_column)?,
            "tsv" | "tab" => Labelled::from_delimited(&content, &name, b'\t', &data.text_column, &data.label_column)?,
            other => bail!(
                "{name}: cannot tell the format from the extension {other:?}; use a folder of CLASS.txt files, a \
                 .tsv, .csv or .jsonl file of texts, or a .ts file of series"
            ),
        }
    };
    Ok((name, Examples::Texts(labelled), 0))
}

fn train(args: TrainArgs, explicit: &[String]) -> Result<()> {
    if let Some(threads) = args.threads {
        limit_threads(thread_count(threads)?);
    }
    let style = Style::pick(args.quiet);
    let resumed = match &args.resume {
        Some(p) => Some(load_classifier(p).with_context(|| format!("cannot resume from {}", p.display()))?),
        None => None,
    };
    if resumed.is_some() {
        let fixed = [
            "tokenize",
            "min_count",
            "max_vocab",
            "max_len",
            "cell",
            "embedding_size",
            "hidden_size",
            "num_layers",
            "unidirectional",
            "dropout",
            "pooling",
            "embeddings",
            "freeze_embedding",
            "batch_size",
            "lr",
            "optimizer",
            "lr_schedule",
            "grad_clip",
            "seed",
            "val_fraction",
        ];
        report::refuse_fixed_on_resume(&fixed, explicit)?;
    }
    let (name, labelled, ambiguous) = read(&args.data, args.data.data.as_deref())?;
    match &labelled {
        Examples::Texts(t) => t.require_two_classes(&name)?,
        Examples::Series(s) if s.classes.len() < 2 => {
            bail!("{name} has one class only ({:?}): nothing to tell apart; give examples of at least two", s.classes)
        }
        Examples::Series(_) => {
            let text_flags: Vec<String> = ["tokenize", "min_count", "max_vocab", "embedding_size"]
                .iter()
                .filter(|f| explicit.iter().any(|e| e == *f))
                .map(|f| format!("--{}", f.replace('_', "-")))
                .collect();
            if !text_flags.is_empty() {
                bail!(
                    "{} appl{} to texts; {name} holds series: drop {}",
                    text_flags.join(", "),
                    if text_flags.len() == 1 { "ies" } else { "y" },
                    if text_flags.len() == 1 { "it" } else { "them" }
                );
            }
        }
    }
    let classes = labelled.classes().to_vec();
    let seed = resumed.as_ref().map_or(args.seed, |r| r.data.seed);
    let (train_set, val_set) = match &args.val_data {
        Some(p) => {
            let (_, val, _) = read(&args.data, Some(p))?;
            let val = val.with_classes(&classes).with_context(|| format!("cannot use {}", p.display()))?;
            (labelled.clone(), val)
        }
        None => labelled.split(args.val_fraction, seed)?,
    };
    let counts = train_set.class_counts();
    if let Some(c) = counts.iter().position(|&n| n == 0) {
        bail!("class {:?} has no example in the training part; add examples of it or remove the class", classes[c]);
    }
    let data = match &resumed {
        Some(r) => {
            if r.data.classes != classes {
                bail!(
                    "the checkpoint's classes {:?} differ from {name}'s {:?}; resume on the same data",
                    r.data.classes,
                    classes
                );
            }
            r.data.clone()
        }
        None => {
            let tokenize = match args.tokenize {
                Some(TokenizeName::Chars) => Tokenize::Chars,
                Some(TokenizeName::Words) => Tokenize::Words,
                None if args.data.data.is_none() => Tokenize::Chars,
                None => Tokenize::Words,
            };
            let (vocab, scaling) = match &train_set {
                Examples::Texts(t) => (TokenVocab::build(&t.texts, tokenize, args.min_count, args.max_vocab), None),
                Examples::Series(s) => (TokenVocab::from_tokens(tokenize, Vec::new()), Some(SeriesScaling::fit(s))),
            };
            ClassifierData {
                vocab,
                classes: classes.clone(),
                batch_size: args.batch_size.max(1),
                max_len: args.max_len.max(1),
                seed,
                scaling,
            }
        }
    };
    let train_enc = train_set.encode(&data, &name)?;
    let val_enc = val_set.encode(&data, &name)?;
    let batches_per_epoch = train_enc.len().div_ceil(data.batch_size);
    let vectors = match (&args.embeddings, &data.scaling) {
        (Some(_), Some(_)) => bail!("--embeddings gives word vectors; {name} holds series: drop --embeddings"),
        (Some(p), None) => {
            let origin = p.display().to_string();
            let vectors = recur::data::WordVectors::from_text(&file_text(p)?, &origin)?;
            if explicit.iter().any(|e| e == "embedding_size") && args.embedding_size != vectors.dim {
                bail!(
                    "--embedding-size {} disagrees with the {}-number vectors of {origin}; drop --embedding-size",
                    args.embedding_size,
                    vectors.dim
                );
            }
            Some((origin, vectors))
        }
        (None, _) if args.freeze_embedding => bail!("--freeze-embedding keeps pretrained vectors: give --embeddings"),
        (None, _) => None,
    };
    let config = match &resumed {
        Some(r) => r.config.clone(),
        None => {
            for (flag, v) in [
                ("--embedding-size", args.embedding_size),
                ("--hidden-size", args.hidden_size),
                ("--num-layers", args.num_layers),
                ("--batch-size", args.batch_size),
            ] {
                if v == 0 {
                    bail!("{flag} must be at least 1");
                }
            }
            if !(0.0..1.0).contains(&args.dropout) {
                bail!("--dropout must be in [0, 1), got {}", args.dropout);
            }
            ClassifierConfig {
                vocab_size: data.vocab.len(),
                input_size: data.scaling.as_ref().map_or(0, SeriesScaling::channels),
                num_classes: data.classes.len(),
                cell: args.cell,
                embedding_size: vectors.as_ref().map_or(args.embedding_size, |(_, v)| v.dim),
                hidden_size: args.hidden_size,
                num_layers: args.num_layers,
                bidirectional: !args.unidirectional,
                dropout: args.dropout,
                pooling: match args.pooling {
                    PoolingName::Last => Pooling::Last,
                    PoolingName::Mean => Pooling::Mean,
                    PoolingName::Max => Pooling::Max,
                    PoolingName::Attention => Pooling::Attention,
                },
                freeze_embedding: args.freeze_embedding,
            }
        }
    };
    let trainer_config = match &resumed {
        Some(r) => {
            let mut t = r.checkpoint.trainer.clone();
            if let Some(max) = args.max_steps.or(args.epochs.map(|e| e * batches_per_epoch)) {
                t.max_steps = max.max(1);
            }
            if let Some(every) = args.eval_every {
                t.eval_every = every.max(1);
            }
            if args.patience.is_some() {
                t.patience = args.patience;
            }
            t
        }
        None => {
            let max_steps = args.max_steps.unwrap_or(args.epochs.unwrap_or(12) * batches_per_epoch).max(1);
            let optimizer = OptimizerConfig::by_name(&args::name(&args.optimizer), args.lr)?;
            let schedule = LrSchedule::by_name(&args::name(&args.lr_schedule), max_steps as u64, args.lr)?;
            TrainerConfig {
                grad_clip: args.grad_clip,
                monitor: if val_enc.is_empty() { "loss".into() } else { "accuracy".into() },
                maximize: !val_enc.is_empty(),
                patience: args.patience,
                divergence_loss: Some(10.0 * (data.classes.len() as f64).ln().max(1.0)),
                ..TrainerConfig::new(
                    max_steps,
                    args.eval_every.unwrap_or(batches_per_epoch).max(1),
                    optimizer,
                    schedule,
                )
            }
        }
    };

    let dir = report::claim_run_dir(args.out.as_deref(), args.resume.as_deref(), "classify", args.overwrite)?;
    let mut model = ClassifierTraining::build(config.clone(), data.seed, val_enc.clone(), data.batch_size)?;
    let pretrained = match &vectors {
        Some((origin, v)) => {
            let found = model.load_embedding(v, &data.vocab)?;
            format!(
                " | {found} of {} token ids start from {origin}{}",
                data.vocab.len(),
                if config.freeze_embedding { " (frozen)" } else { "" }
            )
        }
        None => String::new(),
    };
    let banner = format!("{}", model.classifier());
    let parameters = model.classifier().parameter_count();
    let batches = ClassBatches::new(train_enc.clone(), data.batch_size, data.seed);
    let task = TaskInfo {
        name: CLASSIFY_TASK.into(),
        model: serde_json::to_value(&config)?,
        data: serde_json::to_value(&data)?,
    };
    let mut trainer = match &resumed {
        Some(r) => Trainer::resume(trainer_config.clone(), &r.checkpoint, model, batches, dir)?,
        None => Trainer::new(trainer_config.clone(), task, model, batches, dir)?,
    };
    say!("{banner}");
    let shares: Vec<String> = data.classes.iter().zip(&counts).map(|(c, n)| format!("{c} {n}")).collect();
    say!(
        "{parameters} parameters | {name} | {} training examples ({}), {} validation{} | {}{}",
        train_enc.len(),
        shares.join(", "),
        val_enc.len(),
        if ambiguous > 0 { format!(" | {ambiguous} texts with two classes dropped") } else { String::new() },
        match &data.scaling {
            Some(s) => format!("{} channels per frame, standardised on the training part", s.channels()),
            None => format!("{} token ids ({:?})", data.vocab.len(), data.vocab.tokenize),
        },
        if val_enc.unknown > 0 { format!(" | {} validation tokens unknown", val_enc.unknown) } else { String::new() },
    );
    if !pretrained.is_empty() {
        say!("{}", pretrained.trim_start_matches(" | "));
    }
    say!(
        "training {} steps ({} per epoch) of {} examples, {}, writing to {}",
        trainer_config.max_steps,
        batches_per_epoch,
        data.batch_size,
        thread_counts(),
        trainer.dir().path().display()
    );
    let session = report::Session {
        style,
        budget: args.time_budget,
        max_epochs: None,
        unit: "examples",
        advice: "Start again with a lower --lr or --grad-clip",
    };
    let (outcome, elapsed) = report::train(&mut trainer, &session, &mut |_, _| Ok(None))?;
    let run = trainer.state();
    let took =
        if elapsed.as_secs() < 60 { format!("{:.1}s", elapsed.as_secs_f64()) } else { progress::duration(elapsed) };
    say!(
        "done ({}) at step {} ({}) in {took}",
        match outcome.reason {
            StopReason::MaxSteps => "reached the last step",
            StopReason::TimeBudget => "reached --time-budget",
            other => other.describe(),
        },
        run.step,
        plural(run.epoch, "epoch")
    );
    if let (Some(best), Some(step)) = (run.best, run.best_step) {
        say!("best validation {} {best:.4} at step {step} (best.safetensors)", trainer.config().monitor);
    }
    if !val_enc.is_empty() {
        let best = load_classifier(&trainer.best_path())?;
        let (metrics, confusion) = evaluate_classifier(&best.model, &val_enc, &data.classes, data.batch_size)?;
        say!(
            "validation of best.safetensors: loss {:.4}, accuracy {:.4}, macro F1 {:.4}",
            metrics["loss"],
            metrics["accuracy"],
            metrics["macro_f1"]
        );
        say!("{}", confusion.report().trim_end());
        let svg = trainer.dir().path().join("confusion.svg");
        write_atomic(&svg, confusion.to_svg("validation confusion (best.safetensors)").as_bytes())?;
    }
    let files: Vec<String> = ["last.safetensors", "best.safetensors", "metrics.jsonl", "loss.svg", "confusion.svg"]
        .iter()
        .map(|f| trainer.dir().path().join(f))
        .filter(|p| p.exists())
        .map(|p| p.display().to_string())
        .collect();
    say!("wrote {}", files.join(", "));
    Ok(())
}

fn eval(args: EvalArgs) -> Result<()> {
    let loaded = load_classifier(&args.checkpoint)?;
    let path = args.data.data.as_deref();
    let (name, labelled, _) = read(&args.data, path)?;
    let labelled = labelled.with_classes(&loaded.data.classes).with_context(|| format!("cannot evaluate on {name}"))?;
    let encoded = labelled.encode(&loaded.data, &name)?;
    let (metrics, confusion) =
        evaluate_classifier(&loaded.model, &encoded, &loaded.data.classes, loaded.data.batch_size)?;
    let mut out = std::io::stdout().lock();
    match labelled {
        Examples::Texts(_) => {
            writeln!(out, "{name}: {} examples ({} tokens unknown to the model)", encoded.len(), encoded.unknown)?
        }
        Examples::Series(_) => writeln!(out, "{name}: {} examples", encoded.len())?,
    }
    writeln!(
        out,
        "loss {:.4}, accuracy {:.4}, macro F1 {:.4}",
        metrics["loss"], metrics["accuracy"], metrics["macro_f1"]
    )?;
    writeln!(out, "{}", confusion.report().trim_end())?;
    if let Some(svg) = &args.confusion_svg {
        write_atomic(svg, confusion.to_svg(&format!("confusion on {name}")).as_bytes())?;
    }
    Ok(())
}

fn predict_cmd(args: PredictArgs) -> Result<()> {
    let loaded = load_classifier(&args.checkpoint)?;
    if let Some(scaling) = &loaded.data.scaling {
        return predict_series(&args, &loaded, scaling);
    }
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
    let texts: Vec<String> = lines.into_iter().filter(|l| !l.trim().is_empty()).collect();
    let labelled =
        Labelled { labels: vec![0; texts.len()], texts: texts.clone(), classes: loaded.data.classes.clone() };
    let encoded = Encoded::new(&labelled, &loaded.data.vocab, loaded.data.max_len);
    let (probs, _) = predict(&loaded.model, &encoded, loaded.data.batch_size)?;
    let mut out = std::io::stdout().lock();
    for (text, p) in texts.iter().zip(&probs) {
        let best = argmax(p);
        let class = &loaded.data.classes[best];
        if args.jsonl {
            let probs: serde_json::Map<String, serde_json::Value> =
                loaded.data.classes.iter().zip(p).map(|(c, &v)| (c.clone(), serde_json::json!(v))).collect();
            writeln!(out, "{}", serde_json::json!({"text": text, "label": class, "probs": probs}))?;
        } else {
            writeln!(out, "{class}\t{:.4}\t{text}", p[best])?;
        }
    }
    if texts.is_empty() {
        console::warn("no text to classify (the input is empty)");
    }
    Ok(())
}

/// `recur classify predict` for a model of series: the cases of a `.ts` file (labelled or not),
/// one prediction per case, in order.
fn predict_series(args: &PredictArgs, loaded: &recur::models::LoadedClassifier, scaling: &SeriesScaling) -> Result<()> {
    let path = match args.input.as_deref() {
        Some(p) if p != Path::new("-") => p,
        _ => bail!("this model reads series: give a .ts file of cases (labelled or with @classLabel false)"),
    };
    if extension(path) != "ts" {
        bail!("{}: this model reads series: give a .ts file of cases", path.display());
    }
    let name = path.display().to_string();
    let (channels, series) = LabelledSeries::cases_from_ts(&file_text(path)?, &name)?;
    let cases =
        LabelledSeries { labels: vec![0; series.len()], series, channels, classes: loaded.data.classes.clone() };
    let encoded =
        Encoded::from_series(&cases, scaling, loaded.data.max_len).with_context(|| format!("cannot use {name}"))?;
    let (probs, _) = predict(&loaded.model, &encoded, loaded.data.batch_size)?;
    let mut out = std::io::stdout().lock();
    for (i, p) in probs.iter().enumerate() {
        let best = argmax(p);
        let class = &loaded.data.classes[best];
        if args.jsonl {
            let probs: serde_json::Map<String, serde_json::Value> =
                loaded.data.classes.iter().zip(p).map(|(c, &v)| (c.clone(), serde_json::json!(v))).collect();
            writeln!(out, "{}", serde_json::json!({"case": i + 1, "label": class, "probs": probs}))?;
        } else {
            writeln!(out, "{class}\t{:.4}\tcase {}", p[best], i + 1)?;
        }
    }
    Ok(())
}
