//! Fault injection on the real binary: `recur train` killed with SIGKILL at 30 moments, most of
//! them inside checkpoint writes (the test hook `RECUR_TEST_WRITE_DELAY_MS` stretches each save
//! over tens of milliseconds), and stopped with SIGTERM at 10 moments. After every kill each
//! checkpoint in the folder loads; the next start removes every temporary file a killed save
//! left; a resume continues with each step's metrics row once; SIGTERM saves the step reached.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::*;

fn start(text: &Path, out: &Path, resume: bool, max_steps: &str) -> Child {
    let mut args = vec!["train", "--text", p(text), "--out", p(out), "--quiet"];
    args.extend_from_slice(&SMALL);
    args.extend_from_slice(&["--eval-every", "1", "--lr-schedule", "constant", "--time-budget", "60s"]);
    args.extend_from_slice(&["--max-steps", max_steps]);
    let last = out.join("last.safetensors");
    if resume {
        args.extend_from_slice(&["--resume", p(&last)]);
    }
    Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(&args)
        .env("RECUR_TEST_WRITE_DELAY_MS", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn recur train")
}

fn kill(child: &Child, signal: &str) {
    let status = Command::new("kill").args([signal, &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
}

fn steps(dir: &Path) -> Vec<u64> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let row: serde_json::Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("bad row {l:?}: {e}"));
            row["step"].as_u64().expect("step")
        })
        .collect()
}

/// Every checkpoint in `dir` loads, through the library and as the CLI reads it.
fn all_checkpoints_load(dir: &Path, when: &str) {
    for name in ["last.safetensors", "best.safetensors"] {
        let path = dir.join(name);
        if path.exists() {
            if let Err(e) = recur::train::Checkpoint::load(&path) {
                panic!("{when}: {name} does not load: {e}");
            }
        }
    }
}

#[test]
fn sigkill_at_thirty_moments_leaves_loadable_checkpoints_and_a_clean_resume() {
    let dir = scratch("sigkill");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    let mut debris_seen = 0;
    for i in 0..30u64 {
        let resume = out.join("last.safetensors").exists();
        let child = start(&text, &out, resume, "100000");
        // Spread over start-up, the first saves and later steps.
        std::thread::sleep(Duration::from_millis(40 + (i * 53) % 400));
        kill(&child, "-KILL");
        let _ = child.wait_with_output().expect("wait");
        if !temp_files(&out).is_empty() {
            debris_seen += 1;
        }
        all_checkpoints_load(&out, &format!("kill {i}"));
    }
    eprintln!("{debris_seen} of 30 kills landed inside a save");
    assert!(debris_seen >= 5, "the kills reach the checkpoint writes: {debris_seen} of 30 left a temporary file");
    // A last run to the end: it removes every stale temporary at start and logs each step once.
    let reached = recur::train::Checkpoint::load(&out.join("last.safetensors")).map_or(0, |c| c.step);
    let target = (reached + 3).to_string();
    let output = start(&text, &out, out.join("last.safetensors").exists(), &target).wait_with_output().expect("wait");
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(temp_files(&out).is_empty(), "stale temporaries removed: {:?}", temp_files(&out));
    let logged = steps(&out);
    let want: Vec<u64> = (0..=reached + 3).collect();
    assert_eq!(logged, want, "each step's metrics row once, in order");
    all_checkpoints_load(&out, "the end");
    let inspect = recur(&["inspect", p(&out.join("last.safetensors"))]);
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sigterm_at_ten_moments_saves_the_step_reached_and_exits_143() {
    let dir = scratch("sigterm");
    let text = write(&dir, "text.txt", tiny_text().as_bytes());
    let out = dir.join("run");
    for i in 0..10u64 {
        let resume = out.join("last.safetensors").exists();
        let child = start(&text, &out, resume, "100000");
        std::thread::sleep(Duration::from_millis(60 + (i * 71) % 400));
        kill(&child, "-TERM");
        let output = child.wait_with_output().expect("wait");
        assert_eq!(output.status.code(), Some(143), "stop {i}: {}", stderr(&output));
        let ckpt = recur::train::Checkpoint::load(&out.join("last.safetensors")).expect("last.safetensors loads");
        let said = format!("stopped by SIGTERM at step {}", ckpt.step);
        assert!(stdout(&output).contains(&said), "stop {i}: {}", stdout(&output));
        assert!(temp_files(&out).is_empty(), "{:?}", temp_files(&out));
    }
    let logged = steps(&out);
    assert!(logged.windows(2).all(|w| w[0] < w[1]), "each step once: {logged:?}");
    let _ = std::fs::remove_dir_all(&dir);
}
