//! `recur tag` end to end on the real binary: train on part of the Brown news section, eval,
//! predict, and clear errors for bad input.

mod common;

use std::path::PathBuf;

use common::*;

fn brown(lines: usize) -> String {
    let all = include_str!("../data/brown_news/brown_news.txt");
    all.lines().take(lines).collect::<Vec<_>>().join("\n")
}

fn small_args(data: &std::path::Path, out: &std::path::Path) -> Vec<String> {
    [
        "tag",
        "train",
        "--data",
        p(data),
        "--out",
        p(out),
        "--epochs",
        "6",
        "--lr",
        "0.01",
        "--hidden-size",
        "32",
        "--char-hidden-size",
        "16",
        "--word-embedding-size",
        "32",
        "--char-embedding-size",
        "12",
        "--batch-size",
        "16",
        "--quiet",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[test]
fn tag_train_eval_predict() {
    let dir = scratch("tag");
    let data = write(&dir, "brown.txt", brown(600).as_bytes());
    let out = dir.join("run");
    let args = small_args(&data, &out);
    let o = recur(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let line = text.lines().find(|l| l.starts_with("test (")).unwrap_or_else(|| panic!("a test line in {text}"));
    let acc: f64 = line
        .split("token accuracy ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap();
    assert!(acc > 0.6, "six small epochs on 540 sentences tag most tokens: {line}");
    assert!(line.contains("unseen in training"), "{line}");
    let best = out.join("best.safetensors");
    let test = write(&dir, "test.conll", b"The\tat\njury\tnn\nsaid\tvbd\n.\t.\n\nIt\tpps\nis\tbez\n.\t.\n");
    let o = recur(&["tag", "eval", "--checkpoint", p(&best), "--data", p(&test)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 sentences, 7 tokens") && stdout(&o).contains("token accuracy"), "{}", stdout(&o));
    let input = write(&dir, "in.txt", b"The jury said it .\n\nA Zyxwv said .\n");
    let o = recur(&["tag", "predict", "--checkpoint", p(&best), p(&input)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out_text = stdout(&o);
    let lines: Vec<&str> = out_text.lines().collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0].split(' ').count(), 5);
    assert!(lines[1].starts_with("A/") && lines[1].contains(" Zyxwv/"), "{lines:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// BiLSTM-CRF: the same run with a CRF layer trains, and its predictions are Viterbi paths of the
/// sentences' lengths.
#[test]
fn tag_with_a_crf_layer() {
    let dir = scratch("tag-crf");
    let data = write(&dir, "brown.txt", brown(300).as_bytes());
    let out = dir.join("run");
    let mut args = small_args(&data, &out);
    args.push("--crf".into());
    let o = recur(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("(crf): CRF(num_tags="), "{}", stdout(&o));
    let test_line = stdout(&o).lines().find(|l| l.starts_with("test (")).map(str::to_string).unwrap();
    let acc: f64 = test_line
        .split("token accuracy ")
        .nth(1)
        .and_then(|s| s.split(',').next())
        .and_then(|s| s.trim().parse().ok())
        .unwrap();
    assert!(acc > 0.5, "{test_line}");
    let input = write(&dir, "in.txt", b"The jury said it .\n");
    let o = recur(&["tag", "predict", "--checkpoint", p(&out.join("best.safetensors")), p(&input)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o).trim().split(' ').count(), 5, "{}", stdout(&o));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn tag_bad_input_gives_one_clear_error() {
    let dir = scratch("tag-bad");
    let out: PathBuf = dir.join("run");
    for (name, bytes, want) in [
        ("slash.txt", &b"The/at dog\n"[..], "line 1"),
        ("cols.conll", &b"a\tb\tc\nd\te\n"[..], "line 2"),
        ("empty.txt", &b""[..], "empty"),
    ] {
        let path = write(&dir, name, bytes);
        let args = small_args(&path, &out);
        assert_clean_error(&recur(&args.iter().map(String::as_str).collect::<Vec<_>>()), want);
        assert!(!out.exists(), "{name}: no folder left behind");
    }
    let bio = write(&dir, "ner.conll", b"John\tB-PER\nlives\tO\nin\tI-LOC\n\nAnn\tB-PER\n");
    let mut args = small_args(&bio, &out);
    args.push("--bio".into());
    assert_clean_error(&recur(&args.iter().map(String::as_str).collect::<Vec<_>>()), "I-LOC follows O");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Resuming a tagging run: 3 epochs, then `--resume --epochs 6`, ends with the parameters of 6
/// epochs straight, bit for bit (constant schedule, word dropout on); a model flag with
/// `--resume` is refused.
#[test]
fn tag_resume_continues_bit_for_bit() {
    let dir = scratch("tag-resume");
    let data = write(&dir, "brown.txt", brown(200).as_bytes());
    let run = |out: &std::path::Path, epochs: &str| {
        let mut args = small_args(&data, out);
        let at = args.iter().position(|a| a == "--epochs").unwrap();
        args[at + 1] = epochs.to_string();
        args.extend(["--lr-schedule".to_string(), "constant".to_string()]);
        recur(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let (straight, split) = (dir.join("straight"), dir.join("split"));
    assert!(run(&straight, "6").status.success());
    assert!(run(&split, "3").status.success());
    let last = split.join("last.safetensors");
    let o = recur(&["tag", "train", "--data", p(&data), "--resume", p(&last), "--epochs", "6", "--quiet"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let params = |d: &std::path::Path| {
        let bytes = std::fs::read(d.join("last.safetensors")).unwrap();
        let t = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let mut names: Vec<String> = t.names().into_iter().map(|s| s.to_string()).collect();
        names.sort();
        names.into_iter().map(|n| (n.clone(), t.tensor(&n).unwrap().data().to_vec())).collect::<Vec<_>>()
    };
    assert!(params(&straight) == params(&split), "resumed parameters differ from the straight run's");
    let o = recur(&["tag", "train", "--data", p(&data), "--resume", p(&last), "--hidden-size", "8", "--quiet"]);
    assert_clean_error(&o, "--hidden-size comes from the checkpoint");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Named entities (BIO, CoNLL columns): `--bio` checks the tags, and test and `eval` report
/// conlleval's entity-level precision, recall and F1.
#[test]
fn tag_entities_report_conlleval_scores() {
    let dir = scratch("tag-ner");
    let (names, cities, words) = (
        ["Anna", "Peter", "Maria", "John", "Olga", "Hans"],
        ["Paris", "Berlin", "Oslo", "Rome"],
        ["saw", "the", "met", "in", "and", "visited", "from", "a", "friend"],
    );
    let mut text = String::new();
    let mut state = 11u64;
    let mut next = |n: usize| {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as usize % n
    };
    for _ in 0..400 {
        for _ in 0..(3 + next(5)) {
            match next(4) {
                0 => {
                    text.push_str(&format!("{} B-PER\n", names[next(names.len())]));
                    if next(2) == 0 {
                        text.push_str(&format!("{}son I-PER\n", names[next(names.len())]));
                    }
                }
                1 => text.push_str(&format!("{} B-LOC\n", cities[next(cities.len())])),
                _ => text.push_str(&format!("{} O\n", words[next(words.len())])),
            }
        }
        text.push('\n');
    }
    let data = write(&dir, "ner.conll", text.replace(' ', "\t").as_bytes());
    let out = dir.join("run");
    let mut args = small_args(&data, &out);
    args.push("--bio".into());
    let o = recur(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o).lines().find(|l| l.starts_with("test entities:")).map(str::to_string);
    let line = line.unwrap_or_else(|| panic!("an entity line in {}", stdout(&o)));
    let f1: f64 = line.rsplit("F1 ").next().and_then(|s| s.trim().parse().ok()).unwrap();
    assert!(f1 > 90.0, "the entities are plain to see: {line}");
    let o = recur(&["tag", "eval", "--checkpoint", p(&out.join("best.safetensors")), "--data", p(&data)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("entities:") && stdout(&o).contains("PER: precision"), "{}", stdout(&o));
    let _ = std::fs::remove_dir_all(&dir);
}
