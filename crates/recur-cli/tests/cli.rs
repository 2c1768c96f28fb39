//! Runs the real `recur` binary.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

#[test]
fn version_prints_the_package_version() {
    let output = recur(&["--version"]);
    assert!(output.status.success());
    assert_eq!(stdout(&output).trim(), format!("recur {}", env!("CARGO_PKG_VERSION")));
}

#[test]
fn help_lists_the_info_command() {
    let output = recur(&["--help"]);
    assert!(output.status.success());
    assert!(stdout(&output).contains("info"), "{}", stdout(&output));
}

#[test]
fn info_prints_version_and_thread_count() {
    let output = Command::new(env!("CARGO_BIN_EXE_recur"))
        .arg("info")
        .env("RAYON_NUM_THREADS", "3")
        .output()
        .expect("the recur binary runs");
    assert!(output.status.success());
    let text = stdout(&output);
    assert!(text.contains(&format!("recur {}", env!("CARGO_PKG_VERSION"))), "{text}");
    assert!(text.contains("threads: 3"), "{text}");
    assert!(text.contains("cpu path: "), "{text}");
    let forced = Command::new(env!("CARGO_BIN_EXE_recur")).arg("info").env("RECUR_CPU", "portable").output().unwrap();
    assert!(stdout(&forced).contains("cpu path: portable"), "{}", stdout(&forced));
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [&[][..], &["no-such-command"][..]] {
        let output = recur(args);
        assert_eq!(output.status.code(), Some(2), "recur {args:?}");
        assert!(!output.stderr.is_empty(), "recur {args:?} explains itself on stderr");
    }
}

// ---------------------------------------------------------------- the character model commands

/// `--threads` bounds candle's own thread pools too, whatever `RAYON_NUM_THREADS` says (the
/// start-up line names candle's count when it differs from the kernels').
#[test]
fn threads_flag_bounds_candle_too() {
    let dir = scratch("threads");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    let mut args = vec!["train", "--text", p(&text), "--out", p(&out)];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(&["--max-steps", "2", "--eval-every", "2", "--quiet", "--threads", "1"]);
    let output = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(&args)
        .env("RAYON_NUM_THREADS", "3")
        .output()
        .expect("the recur binary runs");
    assert!(output.status.success(), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains(", 1 threads, writing to"), "{text}");
}

#[test]
fn train_resume_sample_eval_inspect() {
    let dir = scratch("cycle");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    let first = train(&text, &out, &["--max-steps", "6"]);
    assert!(first.status.success(), "train: {}", stderr(&first));
    for file in ["last.safetensors", "best.safetensors", "metrics.jsonl", "loss.svg"] {
        assert!(out.join(file).exists(), "{file} written");
    }
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 3, "evaluations at steps 0, 3 and 6: {metrics}");
    assert!(metrics.lines().all(|l| l.starts_with("{\"step\":") && l.contains("\"val_loss\":")), "{metrics}");
    assert!(std::fs::read_to_string(out.join("loss.svg")).unwrap().contains("<svg"));
    assert!(stdout(&first).contains("CharLm(") && stdout(&first).contains("done"), "{}", stdout(&first));

    // A second run into the same folder must not replace it.
    assert_clean_error(&train(&text, &out, &["--max-steps", "3"]), "already holds a run");

    // Resume continues the step count and appends to the metrics.
    let last = out.join("last.safetensors");
    let resumed = train(&text, &out, &["--resume", p(&last), "--max-steps", "9"]);
    assert!(resumed.status.success(), "resume: {}", stderr(&resumed));
    assert!(stdout(&resumed).contains("resuming"), "{}", stdout(&resumed));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert_eq!(metrics.lines().count(), 4, "{metrics}");
    let inspect = recur(&["inspect", p(&last)]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let shown = stdout(&inspect);
    assert!(shown.contains("CharLm(") && shown.contains("LSTM(8, 16, batch_first=True)"), "{shown}");
    assert!(shown.contains("step 9 of 9") && shown.contains("parameters:") && shown.contains("vocabulary:"), "{shown}");

    // Sampling is seeded and starts with the prime.
    let sample = |seed: &str| {
        let o = recur(&["sample", "--checkpoint", p(&last), "--prime", "The ", "--length", "40", "--seed", seed]);
        assert!(o.status.success(), "sample: {}", stderr(&o));
        stdout(&o)
    };
    let a = sample("3");
    assert!(a.starts_with("The ") && a.trim_end_matches('\n').chars().count() == 44, "{a:?}");
    assert_eq!(a, sample("3"));
    let argmax = recur(&["sample", "--checkpoint", p(&last), "--argmax", "--length", "10"]);
    assert!(argmax.status.success(), "{}", stderr(&argmax));

    // Eval reports consistent numbers.
    let eval = recur(&["eval", "--checkpoint", p(&last), "--text", p(&text)]);
    assert!(eval.status.success(), "eval: {}", stderr(&eval));
    let report = stdout(&eval);
    let number = |key: &str| -> f64 {
        let line = report.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key} in {report}"));
        line.split_whitespace().nth(1).unwrap().parse().unwrap()
    };
    let (loss, ppl, bpc) = (number("loss"), number("perplexity"), number("bits/char"));
    assert!(loss > 0.0 && loss < 5.0, "{report}");
    assert!((ppl - loss.exp()).abs() < 1e-3 * ppl && (bpc - loss / std::f64::consts::LN_2).abs() < 1e-3, "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_input_gives_one_clear_error_line() {
    let dir = scratch("bad");
    let good = write(&dir, "good.txt", tiny_text().as_bytes());
    let out = |name: &str| dir.join(name);
    assert_clean_error(&train(&write(&dir, "empty.txt", b""), &out("e"), &["--max-steps", "1"]), "empty");
    assert_clean_error(
        &train(&write(&dir, "latin1.txt", b"caf\xe9 au lait\n"), &out("l"), &["--max-steps", "1"]),
        "byte offset 3",
    );
    assert_clean_error(&train(&write(&dir, "short.txt", b"too short"), &out("s"), &["--max-steps", "1"]), "too short");
    assert_clean_error(&train(&dir.join("missing.txt"), &out("m"), &[]), "missing.txt");
    let blocker = write(&dir, "a-file", b"x");
    assert_clean_error(&train(&good, &blocker.join("run"), &["--max-steps", "1"]), "a-file/run");

    // A real checkpoint, then prime text it cannot encode.
    let run = out("run");
    let ok = train(&good, &run, &["--max-steps", "3"]);
    assert!(ok.status.success(), "{}", stderr(&ok));
    let last = run.join("last.safetensors");
    let bad_prime = recur(&["sample", "--checkpoint", p(&last), "--prime", "Zebra §"]);
    assert_clean_error(&bad_prime, "never saw");
    assert_clean_error(&recur(&["sample", "--checkpoint", p(&last), "--temperature", "0"]), "temperature");

    // Files that are not this task's checkpoints.
    assert_clean_error(&recur(&["inspect", p(&good)]), "checkpoint");
    let mut flipped = std::fs::read(&last).unwrap();
    let at = flipped.len() - 100;
    flipped[at] ^= 0x40;
    let corrupt = write(&dir, "corrupt.safetensors", &flipped);
    assert_clean_error(&recur(&["inspect", p(&corrupt)]), "checksum");
    let truncated = write(&dir, "truncated.safetensors", &std::fs::read(&last).unwrap()[..1000]);
    assert_clean_error(&recur(&["inspect", p(&truncated)]), "checkpoint");
    let other = dir.join("other.safetensors");
    let mut params = std::collections::BTreeMap::new();
    params.insert("w".to_string(), candle_core::Tensor::new(&[1f32, 2.], &candle_core::Device::Cpu).unwrap());
    let foreign = recur::train::Checkpoint {
        params,
        task: serde_json::json!({"task": "tagger"}),
        ..recur::train::Checkpoint::default()
    };
    recur::train::save_checkpoint(&other, &foreign).unwrap();
    assert_clean_error(&recur(&["eval", "--checkpoint", p(&other), "--text", p(&good)]), "task \"tagger\"");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Stopping and resuming gives exactly the parameters and optimizer state of one straight run.
#[test]
fn resume_continues_bit_for_bit() {
    let dir = scratch("exact");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let (straight, split) = (dir.join("straight"), dir.join("split"));
    // Two layers with dropout: the dropout generator's position travels in the checkpoint.
    let constant = ["--lr-schedule", "constant", "--dropout", "0.3", "--num-layers", "2"];
    let run = |out: &Path, steps: &str, extra: &[&str]| {
        let mut args = vec!["--max-steps", steps];
        args.extend_from_slice(&constant);
        args.extend_from_slice(extra);
        let o = train(&text, out, &args);
        assert!(o.status.success(), "{}", stderr(&o));
    };
    run(&straight, "7", &[]);
    run(&split, "4", &[]);
    let last = split.join("last.safetensors");
    run(&split, "7", &["--resume", p(&last)]);
    let a = recur::train::Checkpoint::load(&straight.join("last.safetensors")).unwrap();
    let b = recur::train::Checkpoint::load(&last).unwrap();
    assert_eq!((a.step, b.step), (7, 7));
    assert_eq!(a.params.keys().collect::<Vec<_>>(), b.params.keys().collect::<Vec<_>>());
    for (name, t) in &a.params {
        let (x, y) = (
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            b.params[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(x.iter().zip(&y).all(|(u, v)| u.to_bits() == v.to_bits()), "{name} differs after resume");
    }
    let (oa, ob) = (a.optimizer.unwrap(), b.optimizer.unwrap());
    for (name, t) in &oa.tensors {
        let (x, y) = (
            t.flatten_all().unwrap().to_vec1::<f32>().unwrap(),
            ob.tensors[name].flatten_all().unwrap().to_vec1::<f32>().unwrap(),
        );
        assert!(x == y, "optimizer state {name} differs after resume");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    let dir = scratch("sigint");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    let mut args = vec!["train".to_string(), "--text".into(), p(&text).into(), "--out".into(), p(&out).into()];
    args.extend(SMALL.iter().map(|s| s.to_string()));
    args.extend(["--eval-every", "1000000", "--max-steps", "100000000", "--time-budget", "10m"].map(String::from));
    let child = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(&args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn recur train");
    // Let it train a little (the banner is printed before the first step).
    std::thread::sleep(std::time::Duration::from_secs(3));
    let status = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(130), "stderr: {}", stderr(&output));
    assert!(stdout(&output).contains("stopped by SIGINT at step"), "{}", stdout(&output));
    let inspect = recur(&["inspect", p(&out.join("last.safetensors"))]);
    assert!(inspect.status.success(), "the saved checkpoint loads: {}", stderr(&inspect));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gradflow_reports_decay_rates_and_writes_a_plot() {
    let dir = scratch("gradflow");
    let plot = dir.join("g.svg");
    let o = recur(&["gradflow", "--seq-len", "12", "--train-steps", "5", "--hidden-size", "8", "--plot", p(&plot)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    for cell in ["rnn", "lstm", "gru"] {
        let row = text.lines().find(|l| l.starts_with(cell)).unwrap_or_else(|| panic!("{cell} row in {text}"));
        let rho: f64 = row.split_whitespace().nth(1).unwrap().parse().unwrap();
        assert!(rho > 0.0 && rho.is_finite(), "{row}");
    }
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert_eq!(svg.matches("<path").count(), 3, "one line per cell");
    assert_clean_error(&recur(&["gradflow", "--seq-len", "1"]), "--seq-len");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_trains_three_cells_of_one_budget() {
    let dir = scratch("compare");
    let text = write(&dir, "text.txt", tiny_text().repeat(4).as_bytes());
    let plot = dir.join("c.svg");
    let o = recur(&["compare", "--text", p(&text), "--budget", "6000", "--time-per-cell", "1s", "--plot", p(&plot)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = stdout(&o);
    let params: Vec<f64> = ["lstm", "gru", "rnn"]
        .iter()
        .map(|cell| {
            let row = report.lines().find(|l| l.starts_with(cell)).unwrap_or_else(|| panic!("{cell} in {report}"));
            row.split_whitespace().nth(2).unwrap().parse().unwrap()
        })
        .collect();
    assert!(params.iter().all(|&n| (n - 6000.0).abs() / 6000.0 < 0.1), "budgets {params:?}");
    assert!(std::fs::read_to_string(&plot).unwrap().contains("<svg"));
    let _ = std::fs::remove_dir_all(&dir);
}
