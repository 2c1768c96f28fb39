//! A checkpoint written by the real `recur train` binary, continued through the library's
//! public API alone (`recur::models::load_char_lm`, `recur::train::Trainer`): the result equals
//! the binary's own uninterrupted run bit for bit.

mod common;

use common::*;
use recur::models::{load_char_lm, CharLmTraining, CharWindows};
use recur::train::{Limits, RunDir, TaskCheckpoint, Trainer, TrainerConfig};

#[test]
fn a_recur_train_checkpoint_continues_in_the_library_bit_for_bit() {
    let dir = scratch("library-api");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let (split, straight) = (dir.join("split"), dir.join("straight"));
    // A constant rate: a cosine schedule would take each run's own --max-steps as its horizon.
    let dropout = ["--num-layers", "2", "--dropout", "0.3", "--lr-schedule", "constant"];
    let mut args = vec!["--max-steps", "6"];
    args.extend_from_slice(&dropout);
    assert!(train(&text, &split, &args).status.success());
    let mut args = vec!["--max-steps", "9"];
    args.extend_from_slice(&dropout);
    assert!(train(&text, &straight, &args).status.success());

    // The library side: the model, its data and the run come from the checkpoint alone.
    let loaded = load_char_lm(&split.join("last.safetensors")).expect("load the binary's checkpoint");
    let d = &loaded.data;
    let ids = loaded.vocab.encode("text", &tiny_text()).expect("encode");
    let val_len = (ids.len() as f64 * d.val_fraction).round() as usize;
    let (train_ids, val_ids) = ids.split_at(ids.len() - val_len);
    let model =
        CharLmTraining::build(loaded.config.clone(), d.seed, val_ids.to_vec(), d.batch_size, d.seq_len).expect("model");
    let windows = CharWindows::new(train_ids, d.batch_size, d.seq_len);
    let config = TrainerConfig { max_steps: 9, ..loaded.checkpoint.trainer.clone() };
    let run = RunDir::claim_exact(&split).expect("the folder");
    let mut trainer = Trainer::resume(config, &loaded.checkpoint, model, windows, run).expect("resume");
    trainer.run(&Limits::default(), &mut |_, _| Ok(())).expect("train");
    drop(trainer);

    let a = TaskCheckpoint::load(&split.join("last.safetensors"), "char-lm").unwrap();
    let b = TaskCheckpoint::load(&straight.join("last.safetensors"), "char-lm").unwrap();
    assert_eq!((a.run.step, b.run.step), (9, 9));
    for (name, t) in &b.params {
        let x: Vec<u32> = t.flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
        let y: Vec<u32> =
            a.params[name].flatten_all().unwrap().to_vec1::<f32>().unwrap().iter().map(|v| v.to_bits()).collect();
        assert_eq!(x, y, "{name}");
    }
    assert_eq!(a.run.history.last(), b.run.history.last());
    let _ = std::fs::remove_dir_all(&dir);
}
