//! Helpers shared by the CLI test files: they run the real `recur` binary on real files.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Runs `recur` with `args` and waits for it.
pub fn recur(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_recur")).args(args).output().expect("the recur binary runs")
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A fresh folder under the system's temp dir, unique to this test.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("recur-cli-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// About 4 KB of English.
pub fn tiny_text() -> String {
    let lines = [
        "The quick brown fox jumps over the lazy dog.",
        "Recurrent networks read one character at a time.",
        "A small model learns the shape of the words first.",
        "Then it learns which letters follow which.",
    ];
    (0..24).map(|i| lines[i % lines.len()]).collect::<Vec<_>>().join("\n")
}

pub fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

pub const SMALL: [&str; 10] =
    ["--batch-size", "4", "--seq-len", "16", "--hidden-size", "16", "--num-layers", "1", "--embedding-size", "8"];

pub fn train(text: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec!["train", "--text", p(text), "--out", p(out)];
    let two_layers = extra.contains(&"--num-layers");
    args.extend_from_slice(if two_layers { &SMALL[..6] } else { &SMALL });
    if two_layers {
        args.extend_from_slice(&SMALL[8..]);
    }
    if !extra.contains(&"--eval-every") {
        args.extend_from_slice(&["--eval-every", "3"]);
    }
    args.push("--quiet");
    args.extend_from_slice(extra);
    recur(&args)
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A failed command: exit code 1, one `error:` line, no panic.
pub fn assert_clean_error(output: &Output, want: &str) {
    let err = stderr(output);
    assert_eq!(output.status.code(), Some(1), "stderr: {err}");
    assert!(err.starts_with("error: ") && err.contains(want), "expected {want:?} in: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// The temporary files (`.NAME.tmp-…`) of interrupted saves in `dir`.
pub fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| e.file_name().to_str().map(str::to_string))
                .filter(|n| n.contains(".tmp-"))
                .collect()
        })
        .unwrap_or_default()
}
