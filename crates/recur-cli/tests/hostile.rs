//! Regressions of issue 15, found by using `recur` as a hostile new user would: each test runs
//! the real binary on real files and is named after the behaviour it guards.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

fn metrics(dir: &Path) -> Vec<Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad metrics line {l:?}: {e}")))
        .collect()
}

fn steps(dir: &Path) -> Vec<u64> {
    metrics(dir).iter().map(|row| row["step"].as_u64().expect("step")).collect()
}

fn spawn(args: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn recur")
}

fn train_args<'a>(text: &'a Path, out: &'a Path, extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["train", "--text", p(text), "--out", p(out), "--quiet"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(extra);
    args
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < Duration::from_secs(60), "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill").args([&format!("-{name}"), &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

fn load(path: &Path) -> recur::train::Checkpoint {
    recur::train::Checkpoint::load(path).unwrap_or_else(|e| panic!("{} loads: {e}", path.display()))
}

// ------------------------------------------------------------------ 2. a run owns its folder

#[test]
fn a_second_run_into_a_busy_folder_is_refused() {
    let dir = scratch("busy");
    let text = write(&dir, "text.txt", tiny_text().repeat(4).as_bytes());
    let out = dir.join("run");
    let first =
        spawn(&train_args(&text, &out, &["--max-steps", "100000", "--eval-every", "5", "--time-budget", "20s"]));
    wait_for("the first run's lock", || {
        std::fs::read_to_string(out.join(".recur-run.lock")).is_ok_and(|s| !s.is_empty())
    });
    let second = recur(&train_args(&text, &out, &["--max-steps", "3", "--overwrite"]));
    assert_clean_error(&second, "another recur run");
    assert!(stderr(&second).contains(&first.id().to_string()), "names the owner's pid: {}", stderr(&second));
    wait_for("the first run's first checkpoint", || load_ok(&out.join("last.safetensors")));
    let resume = recur(&train_args(&text, &out, &["--resume", p(&out.join("last.safetensors"))]));
    assert_clean_error(&resume, "another recur run");
    signal(&first, "TERM");
    let output = first.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(143), "{}", stderr(&output));
    let s = steps(&out);
    assert!(s.windows(2).all(|w| w[0] < w[1]), "one run's metrics, in order: {s:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn runs_started_together_without_out_take_separate_folders() {
    let dir = scratch("default-out");
    let text = write(&dir, "text.txt", tiny_text().repeat(4).as_bytes());
    let mut args = vec!["train", "--text", p(&text), "--quiet", "--max-steps", "12", "--eval-every", "3"];
    args.extend_from_slice(&SMALL);
    let start = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_recur"))
            .args(args)
            .current_dir(&dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn")
    };
    let a = start(&args);
    wait_for("the first run's folder", || dir.join("runs/char-lm/.recur-run.lock").exists());
    let b = start(&args);
    for child in [a, b] {
        let output = child.wait_with_output().expect("wait");
        assert!(output.status.success(), "{}", stderr(&output));
    }
    for folder in ["runs/char-lm", "runs/char-lm-2"] {
        assert_eq!(steps(&dir.join(folder)), [0, 3, 6, 9, 12], "{folder} holds one run's log");
        assert_eq!(load(&dir.join(folder).join("last.safetensors")).step, 12);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_that_fails_before_saving_leaves_no_folder() {
    let dir = scratch("no-debris");
    let short = write(&dir, "short.txt", b"far too short a text");
    let out = dir.join("nested/run");
    assert_clean_error(&train(&short, &out, &["--max-steps", "1"]), "too short");
    assert!(!out.exists() && !dir.join("nested").exists(), "no folder left behind");
    let good = write(&dir, "good.txt", tiny_text().as_bytes());
    assert_clean_error(&train(&good, &out, &["--lr", "0"]), "--lr");
    let usage = train(&good, &out, &["--optimizer", "sgdd"]);
    assert_eq!(usage.status.code(), Some(2), "an unknown name is a usage error: {}", stderr(&usage));
    assert!(!dir.join("nested").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ 3. short texts

#[test]
fn eval_scores_every_character_of_short_and_long_texts() {
    let dir = scratch("short-eval");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    assert!(train(&text, &out, &["--max-steps", "3"]).status.success());
    let last = out.join("last.safetensors");
    let body = tiny_text().repeat(3);
    for n in [2usize, 30, 64, 65, 100, 129, 3000] {
        let sample: String = body.chars().take(n).collect();
        let file = write(&dir, &format!("len{n}.txt"), sample.as_bytes());
        let o = recur(&["eval", "--checkpoint", p(&last), "--text", p(&file)]);
        assert!(o.status.success(), "length {n}: {}", stderr(&o));
        let report = stdout(&o);
        assert!(report.contains(&format!(": {} characters scored", n - 1)), "length {n}: {report}");
        assert!(!report.contains("NaN"), "{report}");
    }
    let one = write(&dir, "one.txt", b"T");
    let o = recur(&["eval", "--checkpoint", p(&last), "--text", p(&one)]);
    assert_clean_error(&o, "nothing to score");
    assert!(!stderr(&o).contains("--seq-len"), "eval takes no --seq-len: {}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_short_validation_part_is_scored_not_nan() {
    let dir = scratch("short-val");
    // 33 validation characters: two streams of 16, each one short of a window of --seq-len 16
    // plus its target, so a reader that needs whole windows scores nothing.
    let text = write(&dir, "text.txt", tiny_text().chars().take(660).collect::<String>().as_bytes());
    let out = dir.join("run");
    let o = train(&text, &out, &["--max-steps", "6"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for row in metrics(&out) {
        assert!(row["val_loss"].as_f64().is_some_and(f64::is_finite), "validation scored: {row}");
    }
    assert!(!stdout(&o).contains("NaN"), "{}", stdout(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ 4. the summary

#[test]
fn a_run_stopped_by_max_epochs_reports_and_saves_the_final_model() {
    let dir = scratch("epochs");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    let o = train(&text, &out, &["--max-epochs", "1", "--eval-every", "1000", "--max-steps", "100000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows = metrics(&out);
    let final_row = rows.last().expect("rows");
    let step = final_row["step"].as_u64().unwrap();
    assert!(step > 0 && rows.len() == 2, "step 0 and the final step: {rows:?}");
    let last = load(&out.join("last.safetensors"));
    assert_eq!(last.step, step, "last.safetensors is the final model");
    assert_eq!(load(&out.join("best.safetensors")).step, step, "the final model was the best");
    let val = final_row["val_loss"].as_f64().unwrap();
    let summary = stdout(&o);
    assert!(summary.contains("reached --max-epochs"), "{summary}");
    assert!(summary.contains(&format!("validation {val:.4}")), "summary shows the final model's loss: {summary}");
    assert!(summary.contains("(1 epoch,"), "{summary}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_run_stopped_before_its_first_step_says_so_and_claims_only_real_files() {
    let dir = scratch("no-step");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    // --max-epochs 0 stops where a spent --time-budget would, deterministically.
    let o = train(&text, &out, &["--max-epochs", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = stdout(&o);
    assert!(summary.contains("no training step was taken") && !summary.contains("NaN"), "{summary}");
    let wrote = summary.lines().find(|l| l.starts_with("wrote ")).expect("a wrote line");
    for file in wrote.trim_start_matches("wrote ").split(", ") {
        assert!(Path::new(file).exists(), "{file} claimed but missing");
    }
    assert_eq!(load(&out.join("last.safetensors")).step, 0);
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ 5. and 6. metrics

#[test]
fn resume_drops_metrics_logged_after_the_checkpoint_and_stale_temporaries() {
    let dir = scratch("resume-metrics");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    assert!(train(&text, &out, &["--max-steps", "6"]).status.success());
    // What a kill between the metrics row and the checkpoint leaves: a row past the checkpoint,
    // and the temporary file of a save that never finished.
    let mut log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    log.push_str("{\"step\":9,\"train_loss\":1.0}\n{\"step\":1");
    std::fs::write(out.join("metrics.jsonl"), log).unwrap();
    std::fs::write(out.join(".last.safetensors.tmp-4000000-0"), vec![7u8; 4096]).unwrap();
    let o = train(&text, &out, &["--resume", p(&out.join("last.safetensors")), "--max-steps", "9"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(steps(&out), [0, 3, 6, 9], "each step once");
    assert!(temp_files(&out).is_empty(), "{:?}", temp_files(&out));
    assert!(stdout(&o).contains("removed 1 temporary file"), "{}", stdout(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn overwrite_starts_a_fresh_run() {
    let dir = scratch("overwrite");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    assert!(train(&text, &out, &["--max-steps", "6"]).status.success());
    let o = train(&text, &out, &["--max-steps", "3", "--overwrite"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(steps(&out), [0, 3], "the old log is gone");
    assert_eq!(load(&out.join("best.safetensors")).step, 3, "the old best is gone");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ 7. resume

#[test]
fn resume_refuses_flags_that_contradict_the_checkpoint() {
    let dir = scratch("contradict");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    assert!(train(&text, &out, &["--max-steps", "3"]).status.success());
    let last = out.join("last.safetensors");
    // SMALL repeats the checkpoint's own values: agreeing flags are fine.
    let same = train(&text, &out, &["--resume", p(&last), "--max-steps", "4"]);
    assert!(same.status.success(), "{}", stderr(&same));
    let o =
        recur(&["train", "--resume", p(&last), "--text", p(&text), "--hidden-size", "32", "--lr", "0.1", "--quiet"]);
    assert_clean_error(&o, "--hidden-size 32 (the checkpoint has 16), --lr 0.1 (the checkpoint has 0.002)");
    assert_eq!(load(&last).step, 4, "nothing was written");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn resume_finds_its_text_and_warns_about_another_with_the_same_characters() {
    let dir = scratch("other-text");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    assert!(train(&text, &out, &["--max-steps", "3"]).status.success());
    let last = out.join("last.safetensors");
    // Without --text the checkpoint's own text is read (not the embedded Shakespeare).
    let o = recur(&["train", "--resume", p(&last), "--max-steps", "4", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(!stderr(&o).contains("warning"), "{}", stderr(&o));
    let mut lines: Vec<String> = tiny_text().lines().map(str::to_string).collect();
    lines.reverse();
    let shuffled = write(&dir, "shuffled.txt", lines.join("\n").as_bytes());
    let o = recur(&["train", "--resume", p(&last), "--text", p(&shuffled), "--max-steps", "5", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("warning") && err.contains("is not the text this run was trained on"), "{err}");
    assert!(err.contains(p(&text)), "names the original text: {err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn raising_max_steps_on_resume_keeps_the_schedule_continuous() {
    let dir = scratch("horizon");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    assert!(train(&text, &out, &["--max-steps", "12", "--eval-every", "1"]).status.success());
    let o =
        train(&text, &out, &["--resume", p(&out.join("last.safetensors")), "--max-steps", "24", "--eval-every", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("keeps its horizon of 12 steps"), "{}", stdout(&o));
    let lrs: Vec<f64> = metrics(&out).iter().map(|r| r["lr"].as_f64().unwrap()).collect();
    assert_eq!(lrs.len(), 25);
    assert!(lrs[12..].windows(2).all(|w| w[1] <= w[0] * (1.0 + 1e-12)), "no jump after the resume: {lrs:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_resumed_run_logs_the_train_loss_of_an_uninterrupted_one() {
    let dir = scratch("window");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let (split, straight) = (dir.join("split"), dir.join("straight"));
    let constant = ["--lr-schedule", "constant", "--eval-every", "1000"];
    let mut args = train_args(&text, &split, &constant);
    args.extend_from_slice(&["--max-steps", "100000", "--time-budget", "60s"]);
    let child = spawn(&args);
    wait_for("a few steps", || load_ok(&split.join("last.safetensors")));
    std::thread::sleep(Duration::from_millis(300));
    signal(&child, "TERM");
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(143), "{}", stderr(&output));
    let stopped = load(&split.join("last.safetensors")).step;
    assert!(stdout(&output).contains(&format!("stopped by SIGTERM at step {stopped}")), "{}", stdout(&output));
    let total = (stopped + 3).to_string();
    let split_last = split.join("last.safetensors");
    let mut resume = constant.to_vec();
    resume.extend_from_slice(&["--resume", p(&split_last), "--max-steps", &total]);
    let o = train(&text, &split, &resume);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut straight_args = constant.to_vec();
    straight_args.extend_from_slice(&["--max-steps", &total]);
    assert!(train(&text, &straight, &straight_args).status.success());
    let (a, b) = (metrics(&split), metrics(&straight));
    let (a, b) = (a.last().unwrap(), b.last().unwrap());
    assert_eq!(a["step"], b["step"]);
    assert_eq!(a["train_loss"], b["train_loss"], "mean over the same steps, bit for bit");
    assert_eq!(a["val_loss"], b["val_loss"]);
    let _ = std::fs::remove_dir_all(&dir);
}

fn load_ok(path: &Path) -> bool {
    recur::train::Checkpoint::load(path).is_ok()
}

// ------------------------------------------------------------------ 8. signals and pipes

#[test]
fn a_closed_stdout_does_not_stop_training() {
    let dir = scratch("pipe");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    let mut child = spawn(&train_args(&text, &out, &["--max-steps", "9"]));
    drop(child.stdout.take()); // `| head -0`: the reader is gone before the first line
    let output = child.wait_with_output().expect("wait");
    assert!(output.status.success(), "exit {:?}: {}", output.status.code(), stderr(&output));
    assert_eq!(load(&out.join("last.safetensors")).step, 9);
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ 9. guard rails

#[test]
fn a_diverging_run_stops_and_keeps_the_last_good_checkpoint() {
    let dir = scratch("diverge");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    let o = train(&text, &out, &["--lr", "1e9", "--max-steps", "50", "--eval-every", "1"]);
    assert_clean_error(&o, "diverged");
    assert!(stderr(&o).contains("the last good checkpoint is"), "{}", stderr(&o));
    let last = load(&out.join("last.safetensors"));
    for (name, t) in &last.params {
        let values = t.flatten_all().unwrap().to_dtype(candle_core::DType::F64).unwrap().to_vec1::<f64>().unwrap();
        assert!(values.iter().all(|v| v.is_finite()), "{name} is finite");
    }
    for row in metrics(&out) {
        let loss = row["train_loss"].as_f64().unwrap();
        assert!(loss < 50.0, "no diverged loss was logged: {row}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn silent_no_ops_are_warned_about_or_refused() {
    let dir = scratch("rails");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let o = train(&text, &dir.join("a"), &["--max-steps", "2", "--dropout", "0.5"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: dropout") && stderr(&o).contains("num_layers=1"), "{}", stderr(&o));
    let o = train(&text, &dir.join("b"), &["--max-steps", "2", "--threads", "10000"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("warning: --threads 10000 is more than"), "{}", stderr(&o));
    let last = dir.join("a/last.safetensors");
    let o = recur(&["sample", "--checkpoint", p(&last), "--argmax", "--temperature", "5"]);
    assert_eq!(o.status.code(), Some(2), "a usage error: {}", stderr(&o));
    assert!(stderr(&o).contains("--temperature"), "{}", stderr(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ 10. numbers

#[test]
fn eval_can_skip_characters_the_model_never_saw() {
    let dir = scratch("unknown");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    assert!(train(&text, &out, &["--max-steps", "3"]).status.success());
    let last = out.join("last.safetensors");
    let odd = write(&dir, "odd.txt", "The quick brown fox § jumps over the lazy dog €€.".as_bytes());
    assert_clean_error(&recur(&["eval", "--checkpoint", p(&last), "--text", p(&odd)]), "--skip-unknown");
    let o = recur(&["eval", "--checkpoint", p(&last), "--text", p(&odd), "--skip-unknown"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report = stdout(&o);
    let kept = "The quick brown fox § jumps over the lazy dog €€.".chars().count() - 3;
    assert!(report.contains(&format!("{} characters scored", kept - 1)), "{report}");
    assert!(report.contains("skipped 3 occurrences of 2 characters"), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_unigram_baseline_is_scored_on_the_validation_text() {
    let dir = scratch("unigram");
    // Training text mostly 'a', validation text mostly 'b': the validation baseline is far above
    // the training text's entropy.
    let mut body = "ab".repeat(10) + &"a".repeat(1500);
    body.push_str(&"b".repeat(80));
    let text = write(&dir, "text.txt", body.as_bytes());
    let o = train(&text, &dir.join("run"), &["--max-steps", "1"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o);
    let at = line.find("unigram baseline ").expect("baseline shown") + "unigram baseline ".len();
    let value: f64 = line[at..].split_whitespace().next().unwrap().parse().unwrap();
    // add-one fit on the training part (1510 a, 10 b): p(b) = (10 + 1) / (1520 + 2)
    let want = -(11.0f64 / 1522.0).ln();
    assert!((value - want).abs() < 1e-3, "{value} vs {want}: {line}");
    assert!(line.contains("on the validation text"), "{line}");
    let _ = std::fs::remove_dir_all(&dir);
}

// ------------------------------------------------------------------ 11. the loss plot

#[test]
fn the_log_and_the_plot_start_at_step_zero() {
    let dir = scratch("step0");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    assert!(train(&text, &out, &["--max-steps", "3"]).status.success());
    let rows = metrics(&out);
    assert_eq!(rows[0]["step"], 0);
    let first_loss = rows[0]["train_loss"].as_f64().unwrap();
    let uniform = (tiny_text().chars().collect::<std::collections::BTreeSet<_>>().len() as f64).ln();
    assert!((first_loss - uniform).abs() < 0.5, "an untrained model scores about ln V: {first_loss} vs {uniform}");
    let svg = std::fs::read_to_string(out.join("loss.svg")).unwrap();
    assert!(svg.contains("mean over the steps since the previous point"), "the train curve says what it is");
    let _ = std::fs::remove_dir_all(&dir);
}
