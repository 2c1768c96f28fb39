//! `recur classify` end to end on the real binary: train on the embedded names, eval, predict
//! (file, stdin, JSON lines), resume bit for bit, and one clear error for each bad input.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

const TINY: [&str; 9] =
    ["--hidden-size", "16", "--embedding-size", "8", "--lr-schedule", "constant", "--quiet", "--batch-size", "128"];

fn classify_train(out: &std::path::Path, extra: &[&str]) -> std::process::Output {
    let mut args = vec!["classify", "train", "--out", p(out)];
    args.extend_from_slice(&TINY);
    args.extend_from_slice(extra);
    recur(&args)
}

#[test]
fn classify_train_eval_predict_resume() {
    let dir = scratch("classify");
    let out = dir.join("run");
    let o = classify_train(&out, &["--epochs", "2"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("first names → gender") && text.contains("validation of best.safetensors"), "{text}");
    for f in ["last.safetensors", "best.safetensors", "metrics.jsonl", "loss.svg", "confusion.svg"] {
        assert!(out.join(f).exists(), "{f}");
    }
    let acc: f64 = text
        .lines()
        .find(|l| l.starts_with("validation of best"))
        .and_then(|l| l.split("accuracy ").nth(1))
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .expect("an accuracy");
    assert!(acc > 0.7, "two small epochs already tell most names apart: {acc}");

    // eval on a TSV with named columns
    let tsv = write(&dir, "names.tsv", b"name\tsex\nAnna\tfemale\nJohn\tmale\nMaria\tfemale\nPeter\tmale\n");
    let best = out.join("best.safetensors");
    let o = recur(&[
        "classify",
        "eval",
        "--checkpoint",
        p(&best),
        "--data",
        p(&tsv),
        "--text-column",
        "name",
        "--label-column",
        "sex",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("4 examples") && stdout(&o).contains("macro F1"), "{}", stdout(&o));

    // predict from a file and from stdin
    let input = write(&dir, "in.txt", b"Anna\n\nJohn\n");
    let o = recur(&["classify", "predict", "--checkpoint", p(&best), p(&input)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<String> = stdout(&o).lines().map(str::to_string).collect();
    assert_eq!(lines.len(), 2, "one line per text: {lines:?}");
    assert!(lines[0].starts_with("female\t") && lines[0].ends_with("\tAnna"), "{lines:?}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["classify", "predict", "--checkpoint", p(&best), "--jsonl"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"Maria\n").unwrap();
    let o = child.wait_with_output().unwrap();
    let row: serde_json::Value = serde_json::from_str(stdout(&o).trim()).expect("JSON");
    assert_eq!(row["text"], "Maria");
    let sum: f64 = row["probs"].as_object().unwrap().values().map(|v| v.as_f64().unwrap()).sum();
    assert!((sum - 1.0).abs() < 1e-5, "{row}");

    // resume: one epoch then another equals two straight (constant schedule), bit for bit
    let split = dir.join("split");
    assert!(classify_train(&split, &["--epochs", "1"]).status.success());
    let o = recur(&["classify", "train", "--resume", p(&split.join("last.safetensors")), "--epochs", "2", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let a = recur::models::load_classifier(&out.join("last.safetensors")).unwrap();
    let b = recur::models::load_classifier(&split.join("last.safetensors")).unwrap();
    assert_eq!(a.checkpoint.run.step, b.checkpoint.run.step);
    for (name, t) in &a.checkpoint.params {
        let x = t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let y = b.checkpoint.params[name].flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert!(x.iter().zip(&y).all(|(u, v)| u.to_bits() == v.to_bits()), "{name} differs after resume");
    }
    let o = recur(&["classify", "train", "--resume", p(&split.join("last.safetensors")), "--hidden-size", "32"]);
    assert_clean_error(&o, "--hidden-size");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn classify_bad_input_gives_one_clear_error() {
    let dir = scratch("classify-bad");
    let out = dir.join("run");
    let cases: Vec<(&str, &[u8], &[&str], &str)> = vec![
        ("empty.tsv", b"", &[], "empty"),
        ("ragged.csv", b"text,label\nAnna,f\nJohn\n", &[], "line 3"),
        ("cols.tsv", b"name\tsex\nAnna\tf\nJohn\tm\n", &[], "no column \"text\""),
        ("latin1.csv", b"text,label\ncaf\xe9,f\nx,m\n", &[], "byte offset"),
        ("one.jsonl", b"{\"text\":\"a\",\"label\":\"x\"}\n{\"text\":\"b\",\"label\":\"x\"}\n", &[], "one class"),
        ("bad.jsonl", b"{\"text\":\"a\",\"label\":\"x\"}\n{oops\n", &[], "line 2"),
        ("data.xlsx", b"PK", &[], "extension"),
    ];
    for (name, bytes, extra, want) in cases {
        let path = write(&dir, name, bytes);
        let mut args = vec!["--data", p(&path)];
        args.extend_from_slice(extra);
        let o = classify_train(&out, &args);
        assert_clean_error(&o, want);
        assert!(!out.exists(), "{name}: no folder left behind");
    }
    // A validation class the training data lacks.
    let train = write(&dir, "train.tsv", b"text\tlabel\na\tx\nb\ty\nc\tx\nd\ty\n");
    let val = write(&dir, "val.tsv", b"text\tlabel\na\tz\n");
    assert_clean_error(&classify_train(&out, &["--data", p(&train), "--val-data", p(&val)]), "class \"z\"");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A `.ts` file of two-channel series of three classes that differ in the phase and the sign of
/// their channels, lengths 5..12, from a fixed LCG (no randomness at test time).
fn toy_series(cases: usize, seed: u64, labelled: bool) -> String {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut out = format!(
        "# toy\n@problemName toy\n@dimensions 2\n@equalLength false\n@classLabel {}\n@data\n",
        if labelled { "true a b c" } else { "false" }
    );
    for i in 0..cases {
        let class = i % 3;
        let len = 5 + (next() * 8.0) as usize;
        let channel = |c: usize, next: &mut dyn FnMut() -> f64| -> String {
            (0..len)
                .map(|t| {
                    let phase = class as f64 * 2.1 + c as f64;
                    let sign = if class == 2 && c == 1 { -1.0 } else { 1.0 };
                    format!("{:.5}", sign * (t as f64 * 0.7 + phase).sin() + 0.3 * (next() - 0.5))
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        let (a, b) = (channel(0, &mut next), channel(1, &mut next));
        out.push_str(&a);
        out.push(':');
        out.push_str(&b);
        if labelled {
            out.push_str([":a", ":b", ":c"][class]);
        }
        out.push('\n');
    }
    out
}

/// Series classification (`.ts`): train, eval on a second file, predict on an unlabelled one,
/// resume bit for bit, and the bad inputs of series.
#[test]
fn classify_series_from_ts_files() {
    let dir = scratch("classify-series");
    let train = write(&dir, "train.ts", toy_series(150, 7, true).as_bytes());
    let test = write(&dir, "test.ts", toy_series(60, 99, true).as_bytes());
    let out = dir.join("run");
    let run = |out: &std::path::Path, extra: &[&str]| {
        let mut args = vec![
            "classify",
            "train",
            "--data",
            p(&train),
            "--out",
            p(out),
            "--hidden-size",
            "16",
            "--batch-size",
            "16",
            "--lr-schedule",
            "constant",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        recur(&args)
    };
    let o = run(&out, &["--epochs", "8", "--pooling", "attention"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 channels per frame"), "{}", stdout(&o));
    let best = out.join("best.safetensors");
    let o = recur(&["classify", "eval", "--checkpoint", p(&best), "--data", p(&test)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let acc: f64 = stdout(&o)
        .split("accuracy ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .expect("an accuracy");
    assert!(acc > 0.9, "the classes differ plainly: {}", stdout(&o));

    let unlabelled = write(&dir, "cases.ts", toy_series(6, 99, false).as_bytes());
    let o = recur(&["classify", "predict", "--checkpoint", p(&best), p(&unlabelled)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let labels: Vec<String> = stdout(&o).lines().map(|l| l.split('\t').next().unwrap().to_string()).collect();
    assert_eq!(labels.len(), 6, "{}", stdout(&o));
    let right = labels.iter().enumerate().filter(|(i, l)| **l == ["a", "b", "c"][i % 3]).count();
    assert!(right >= 5, "the first six test cases, unlabelled: {labels:?}");

    // resume: 2 epochs then 2 more equals 4 straight, bit for bit
    let (straight, split) = (dir.join("straight"), dir.join("split"));
    assert!(run(&straight, &["--epochs", "4"]).status.success());
    assert!(run(&split, &["--epochs", "2"]).status.success());
    let o = recur(&[
        "classify",
        "train",
        "--data",
        p(&train),
        "--resume",
        p(&split.join("last.safetensors")),
        "--epochs",
        "4",
        "--quiet",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let read = |d: &std::path::Path| std::fs::read(d.join("last.safetensors")).unwrap();
    let (a, b) = (read(&straight), read(&split));
    let params = |bytes: &[u8]| {
        let t = safetensors::SafeTensors::deserialize(bytes).unwrap();
        let mut names: Vec<String> = t.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        names.into_iter().map(|n| t.tensor(&n).unwrap().data().to_vec()).collect::<Vec<_>>()
    };
    assert!(params(&a) == params(&b), "resumed parameters differ from the straight run's");

    // bad inputs: one clear error each
    let texts = write(&dir, "texts.tsv", b"text\tlabel\nhello\ta\nworld\tb\n");
    let o = recur(&["classify", "eval", "--checkpoint", p(&best), "--data", p(&texts)]);
    assert_clean_error(&o, "reads series");
    let three = write(&dir, "three.ts", b"@dimensions 3\n@classLabel true a b c\n@data\n1,2:3,4:5,6:a\n");
    let o = recur(&["classify", "eval", "--checkpoint", p(&best), "--data", p(&three)]);
    assert_clean_error(&o, "3 channels per frame, but the model reads 2");
    let ragged = write(&dir, "ragged.ts", b"@classLabel true a b\n@data\n1,2:3,4:a\n1,2,3:4:b\n");
    let o = recur(&["classify", "train", "--data", p(&ragged), "--out", p(&dir.join("r")), "--quiet"]);
    assert_clean_error(&o, "line 4");
    let o = recur(&["classify", "train", "--data", p(&train), "--out", p(&dir.join("t")), "--tokenize", "chars"]);
    assert_clean_error(&o, "--tokenize applies to texts");
    let o = recur(&["classify", "predict", "--checkpoint", p(&best), p(&texts)]);
    assert_clean_error(&o, ".ts file");
}

/// `--embeddings` starts the embedding from a GloVe-format file (here one 4-number vector per
/// letter, for the embedded names' character tokens); `--freeze-embedding` keeps those rows
/// bit for bit through training, and without it training moves them.
#[test]
fn classify_pretrained_embeddings_frozen_or_trained() {
    let dir = scratch("classify-vectors");
    let mut glove = String::new();
    let vector = |i: usize| -> Vec<f32> { (0..4).map(|j| ((i * 4 + j) as f32 * 0.37).sin()).collect() };
    for (i, c) in ('a'..='z').enumerate() {
        let v: Vec<String> = vector(i).iter().map(|x| format!("{x}")).collect();
        glove.push_str(&format!("{c} {}\n", v.join(" ")));
    }
    let vectors = write(&dir, "letters.txt", glove.as_bytes());
    let rows_found = |out: &std::path::Path| -> usize {
        let bytes = std::fs::read(out.join("last.safetensors")).unwrap();
        let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let table = t.tensor("embedding.weight").unwrap();
        assert_eq!(table.shape()[1], 4, "the file's dimension sets the embedding size");
        let values: Vec<f32> =
            table.data().chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect();
        (0..26).filter(|&i| values.chunks_exact(4).any(|row| row == vector(i).as_slice())).count()
    };
    let base = ["--hidden-size", "16", "--quiet", "--batch-size", "128", "--epochs", "1"];
    let frozen = dir.join("frozen");
    let mut args = vec!["classify", "train", "--out", p(&frozen), "--embeddings", p(&vectors), "--freeze-embedding"];
    args.extend_from_slice(&base);
    let o = recur(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(rows_found(&frozen), 26, "every letter keeps its vector");
    let trained = dir.join("trained");
    let mut args = vec!["classify", "train", "--out", p(&trained), "--embeddings", p(&vectors)];
    args.extend_from_slice(&base);
    let o = recur(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(rows_found(&trained) < 5, "training moves the letters' rows");

    let bad = write(&dir, "bad.txt", b"a 1 2 3 4\nb 1 2\n");
    let o = recur(&["classify", "train", "--out", p(&dir.join("x")), "--embeddings", p(&bad), "--quiet"]);
    assert_clean_error(&o, "line 2: 2 numbers, but the vectors have 4");
    let o = recur(&["classify", "train", "--out", p(&dir.join("y")), "--freeze-embedding", "--quiet"]);
    assert_clean_error(&o, "give --embeddings");
    let o = recur(&[
        "classify",
        "train",
        "--out",
        p(&dir.join("z")),
        "--embeddings",
        p(&vectors),
        "--embedding-size",
        "8",
        "--quiet",
    ]);
    assert_clean_error(&o, "disagrees with the 4-number vectors");
    let _ = std::fs::remove_dir_all(&dir);
}
