//! `recur::train::Trainer` on the character model: the run folder's files, resumption bit for
//! bit, early stopping, the stop flag, divergence, and typed errors for bad task checkpoints.
//! Real files in unique folders under the system temp dir.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use recur::models::{load_char_lm, CellType, CharLmConfig, CharLmData, CharLmTraining, CharWindows, CHAR_LM_TASK};
use recur::train::{
    Checkpoint, Limits, LrSchedule, OptimizerConfig, RunDir, StopReason, TaskCheckpoint, TaskInfo, TrainEvent, Trainer,
    TrainerConfig,
};
use recur::Error;

fn scratch(tag: &str) -> PathBuf {
    static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("recur-trainer-{tag}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// 1,600 ids over 8 symbols with some structure to learn.
fn ids() -> Vec<u32> {
    (0..1600u32).map(|i| [0, 1, 2, 3, 1, 4, 5, 6, 2][(i % 9) as usize] ^ ((i / 97) % 2)).collect()
}

const VOCAB: usize = 8;

fn model_config() -> CharLmConfig {
    CharLmConfig {
        vocab_size: VOCAB,
        cell: CellType::Lstm,
        embedding_size: 6,
        hidden_size: 12,
        num_layers: 2,
        dropout: 0.25,
    }
}

fn trainer_config(max_steps: usize) -> TrainerConfig {
    TrainerConfig {
        divergence_loss: Some(30.0),
        ..TrainerConfig::new(
            max_steps,
            4,
            OptimizerConfig::Adam { lr: 5e-3 },
            LrSchedule::by_name("cosine", 20, 5e-3).unwrap(),
        )
    }
}

fn data() -> CharLmData {
    CharLmData { vocab: "abcdefgh".into(), seq_len: 8, batch_size: 4, val_fraction: 0.1, seed: 3, text: None }
}

fn parts() -> (Vec<u32>, Vec<u32>) {
    let all = ids();
    let (train, val) = all.split_at(1440);
    (train.to_vec(), val.to_vec())
}

fn fresh(dir: &Path, max_steps: usize) -> Trainer<CharLmTraining, CharWindows> {
    let (train, val) = parts();
    let d = data();
    let model = CharLmTraining::build(model_config(), d.seed, val, d.batch_size, d.seq_len).expect("model");
    let task = TaskInfo {
        name: CHAR_LM_TASK.into(),
        model: serde_json::to_value(model_config()).unwrap(),
        data: serde_json::to_value(&d).unwrap(),
    };
    let windows = CharWindows::new(&train, d.batch_size, d.seq_len);
    Trainer::new(trainer_config(max_steps), task, model, windows, RunDir::claim_exact(dir).expect("dir"))
        .expect("trainer")
}

fn resumed(dir: &Path, from: &Path, max_steps: usize) -> Trainer<CharLmTraining, CharWindows> {
    let loaded = load_char_lm(from).expect("load");
    let (train, val) = parts();
    let d = &loaded.data;
    let model = CharLmTraining::build(loaded.config.clone(), d.seed, val, d.batch_size, d.seq_len).expect("model");
    let windows = CharWindows::new(&train, d.batch_size, d.seq_len);
    let config = TrainerConfig { max_steps, ..loaded.checkpoint.trainer.clone() };
    Trainer::resume(config, &loaded.checkpoint, model, windows, RunDir::claim_exact(dir).expect("dir")).expect("resume")
}

fn quiet(_: &TrainEvent<'_>, _: &CharLmTraining) -> recur::Result<()> {
    Ok(())
}

fn bits(ckpt: &TaskCheckpoint) -> Vec<(String, Vec<u32>)> {
    ckpt.params
        .iter()
        .map(|(n, t)| {
            (n.clone(), t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect())
        })
        .collect()
}

#[test]
fn a_run_writes_its_files_and_evaluates_from_step_zero() {
    let dir = scratch("files");
    let mut t = fresh(&dir, 10);
    let mut evaluated = Vec::new();
    let outcome = t
        .run(&Limits::default(), &mut |e, _| {
            if let TrainEvent::Evaluated { row, .. } = e {
                evaluated.push(row.step);
            }
            Ok(())
        })
        .expect("run");
    assert_eq!(outcome.reason, StopReason::MaxSteps);
    assert_eq!(outcome.steps, 10);
    assert_eq!(evaluated, [0, 4, 8, 10]);
    for f in recur::train::RUN_FILES {
        assert!(dir.join(f).exists(), "{f}");
    }
    let lines = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    assert_eq!(lines.lines().count(), 4);
    assert!(lines.lines().all(|l| l.starts_with("{\"step\":") && l.contains("\"val_loss\":")), "{lines}");
    let last = TaskCheckpoint::load(&dir.join("last.safetensors"), CHAR_LM_TASK).expect("typed checkpoint");
    assert_eq!(last.run.step, 10);
    assert_eq!(last.trainer, trainer_config(10));
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stop at 6, resume to 13 in a second trainer (through `load_char_lm`): parameters, optimizer
/// state and the logged losses equal an uninterrupted run's bit for bit, dropout included.
#[test]
fn resume_continues_bit_for_bit() {
    let (a, b) = (scratch("straight"), scratch("split"));
    fresh(&a, 13).run(&Limits::default(), &mut quiet).unwrap();
    fresh(&b, 6).run(&Limits::default(), &mut quiet).unwrap();
    let mut second = resumed(&b, &b.join("last.safetensors"), 13);
    second.run(&Limits::default(), &mut quiet).unwrap();
    drop(second);
    let x = TaskCheckpoint::load(&a.join("last.safetensors"), CHAR_LM_TASK).unwrap();
    let y = TaskCheckpoint::load(&b.join("last.safetensors"), CHAR_LM_TASK).unwrap();
    assert_eq!(x.run.step, 13);
    assert_eq!(bits(&x), bits(&y), "parameters");
    let (ox, oy) = (x.optimizer.unwrap(), y.optimizer.unwrap());
    for (name, t) in &ox.tensors {
        assert_eq!(
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            oy.tensors[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            "{name}"
        );
    }
    assert_eq!(x.generator, y.generator, "dropout generator");
    let (hx, hy) = (&x.run.history, &y.run.history);
    assert_eq!(hx.last(), hy.last(), "the last evaluation");
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn early_stopping_stops_after_patience_evaluations_without_improvement() {
    let dir = scratch("patience");
    let (train, val) = parts();
    let d = data();
    let model = CharLmTraining::build(model_config(), d.seed, val, d.batch_size, d.seq_len).unwrap();
    // A rate too small to move the validation loss by much, and "improvement" must beat it.
    let config = TrainerConfig {
        eval_every: 1,
        patience: Some(2),
        maximize: true, // a rising loss is "better": the falling one never improves after step 0
        ..TrainerConfig::new(1000, 1, OptimizerConfig::Adam { lr: 1e-2 }, LrSchedule::Constant)
    };
    let task = TaskInfo {
        name: CHAR_LM_TASK.into(),
        model: serde_json::to_value(model_config()).unwrap(),
        data: serde_json::to_value(&d).unwrap(),
    };
    let mut t =
        Trainer::new(config, task, model, CharWindows::new(&train, 4, 8), RunDir::claim_exact(&dir).unwrap()).unwrap();
    let outcome = t.run(&Limits::default(), &mut quiet).unwrap();
    assert_eq!(outcome.reason, StopReason::EarlyStopping);
    let s = t.state();
    assert_eq!(s.evals_since_best, 2);
    assert!(s.step <= 6, "stopped early: {}", s.step);
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_stop_flag_saves_the_step_reached() {
    let dir = scratch("stop");
    let stop = AtomicBool::new(false);
    let mut t = fresh(&dir, 1000);
    let limits = Limits { stop: Some(&stop), ..Limits::default() };
    let outcome = t
        .run(&limits, &mut |e, _| {
            if let TrainEvent::Step(p) = e {
                if p.step == 7 {
                    stop.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
            Ok(())
        })
        .unwrap();
    assert_eq!(outcome.reason, StopReason::Requested);
    let last = TaskCheckpoint::load(&dir.join("last.safetensors"), CHAR_LM_TASK).unwrap();
    assert_eq!(last.run.step, 7);
    assert_eq!(last.run.window_count, 3, "steps 5-7 since the evaluation at 4, kept for the resumed mean");
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_diverging_run_stops_before_saving_the_diverged_model() {
    let dir = scratch("diverge");
    let (train, val) = parts();
    let d = data();
    let model = CharLmTraining::build(model_config(), d.seed, val, d.batch_size, d.seq_len).unwrap();
    let config = TrainerConfig {
        divergence_loss: Some(3.0 * (VOCAB as f64).ln()),
        ..TrainerConfig::new(200, 1, OptimizerConfig::Sgd { lr: 1e4, momentum: 0.9 }, LrSchedule::Constant)
    };
    let config = TrainerConfig { grad_clip: 0.0, ..config };
    let task = TaskInfo {
        name: CHAR_LM_TASK.into(),
        model: serde_json::to_value(model_config()).unwrap(),
        data: serde_json::to_value(&d).unwrap(),
    };
    let mut t =
        Trainer::new(config, task, model, CharWindows::new(&train, 4, 8), RunDir::claim_exact(&dir).unwrap()).unwrap();
    let err = t.run(&Limits::default(), &mut quiet).unwrap_err();
    let Error::Diverged { step, kept, .. } = &err else { panic!("expected Diverged, got {err}") };
    assert!(kept.contains("last good checkpoint"), "{err}");
    let last = TaskCheckpoint::load(&dir.join("last.safetensors"), CHAR_LM_TASK).expect("last good checkpoint loads");
    assert!(last.run.step < *step);
    for (name, p) in &last.params {
        let v = p.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{name} finite");
    }
    drop(t);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Bad task checkpoints: one typed error each, and the file is never modified by a read.
#[test]
fn bad_task_checkpoints_give_typed_errors_and_stay_untouched() {
    let dir = scratch("bad");
    let mut t = fresh(&dir, 4);
    t.run(&Limits::default(), &mut quiet).unwrap();
    drop(t);
    let good = std::fs::read(dir.join("last.safetensors")).unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        p
    };
    let reencode = |edit: &dyn Fn(&mut Checkpoint)| {
        let mut c = Checkpoint::from_bytes(&good, "good").unwrap();
        edit(&mut c);
        c.to_bytes().unwrap()
    };
    let mut flipped = good.clone();
    let at = good.len() - 50;
    flipped[at] ^= 1;
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("truncated", good[..good.len() / 2].to_vec(), "safetensors"),
        ("flipped", flipped, "checksum"),
        ("other task", reencode(&|c| c.task["task"] = "tagger".into()), "task \"tagger\""),
        ("newer layout", reencode(&|c| c.task["task_version"] = 99.into()), "newer"),
        ("config off", reencode(&|c| c.config["model"]["hidden_size"] = 13.into()), "do not fit"),
        ("trainer off", reencode(&|c| c.config["trainer"]["optimizer"] = "adam".into()), "trainer configuration"),
    ];
    for (name, bytes, want) in cases {
        let path = write(&format!("{}.safetensors", name.replace(' ', "-")), &bytes);
        let before = std::fs::read(&path).unwrap();
        let err = match load_char_lm(&path) {
            Ok(_) => panic!("{name}: loaded"),
            Err(e) => e,
        };
        assert!(matches!(err, Error::Checkpoint { .. }), "{name}: {err:?}");
        assert!(err.to_string().contains(want), "{name}: {err}");
        assert_eq!(std::fs::read(&path).unwrap(), before, "{name}: the read left the file as it was");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// `recur::models::load` builds the model of whatever task wrote the checkpoint, and names the
/// tasks it knows for one it does not.
#[test]
fn load_dispatches_on_the_task() {
    let dir = scratch("load");
    let mut t = fresh(&dir, 2);
    t.run(&Limits::default(), &mut quiet).unwrap();
    drop(t);
    let path = dir.join("last.safetensors");
    assert!(matches!(recur::models::load(&path), Ok(recur::models::LoadedModel::CharLm(_))));
    let mut c = Checkpoint::load(&path).unwrap();
    c.task["task"] = "forecast".into();
    let other = dir.join("other.safetensors");
    recur::train::save_checkpoint(&other, &c).unwrap();
    let err = recur::models::load(&other).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("\"forecast\"") && err.contains("char-lm") && err.contains("classify"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}
