//! Runs every example binary (small sizes, `RECUR_EXAMPLE_SMALL=1`) and checks what it prints:
//! the model structures, the shapes the tutorials print, the manual/built-in equality and the
//! falling losses.
//!
//! The binaries live next to this test (`target/<profile>/examples/`). `cargo test` builds every
//! example already; each test still asks the same cargo to build its example with the same
//! profile and target directory (a no-op when it is fresh), so `cargo test --test examples` alone
//! never runs a missing or stale binary.

use std::path::PathBuf;
use std::process::Command;

/// `target/<profile>` of this test binary (`target/<profile>/deps/examples-…`).
fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(|deps| deps.parent()).expect("target/<profile>").to_path_buf()
}

/// Runs example `name` with `args` in small mode; returns its stdout, panicking with both streams
/// if it fails.
fn run_example(name: &str, args: &[&str]) -> String {
    let profile = profile_dir();
    let binary = profile.join("examples").join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    {
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-p", "recur", "--example", name]);
        if profile.file_name().is_some_and(|p| p == "release") {
            build.arg("--release");
        }
        if let Some(target) = profile.parent() {
            build.env("CARGO_TARGET_DIR", target);
        }
        let status = build.status().expect("run cargo build");
        assert!(status.success(), "cargo build --example {name} failed");
    }
    let output = Command::new(&binary)
        .args(args)
        .env("RECUR_EXAMPLE_SMALL", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", binary.display()));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{name} exited with {}\nstdout:\n{stdout}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// The numbers after `marker` on every line that contains it.
fn numbers_after(out: &str, marker: &str) -> Vec<f64> {
    out.lines()
        .filter_map(|line| line.split_once(marker))
        .filter_map(|(_, rest)| rest.split_whitespace().next())
        .filter_map(|word| word.trim_end_matches([',', '%']).parse().ok())
        .collect()
}

fn assert_falls(name: &str, losses: &[f64], min_len: usize) {
    assert!(losses.len() >= min_len, "{name}: expected ≥ {min_len} losses, got {losses:?}");
    let (first, last) = (losses[0], losses[losses.len() - 1]);
    assert!(losses.iter().all(|l| l.is_finite()), "{name}: {losses:?}");
    assert!(last < first, "{name}: loss did not fall: {losses:?}");
}

fn temp_svg(name: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("recur_test_{name}_{}.svg", std::process::id()));
    let _ = std::fs::remove_file(&path);
    path
}

fn assert_svg(path: &PathBuf) {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"), "not an SVG: {}", path.display());
    let _ = std::fs::remove_file(path);
}

#[test]
fn char_predictor_predicts_the_three_characters() {
    let out = run_example("char_predictor", &["--epochs", "500"]);
    assert!(out.contains("(rnn): RNN(64, 64, batch_first=True)"), "{out}");
    assert_eq!(out.matches('✓').count(), 3, "{out}");
}

#[test]
fn tutorial_000_prints_the_four_structures_and_a_falling_loss() {
    let out = run_example("tutorial_000_basics", &[]);
    for structure in [
        "SimpleRNN(\n  (rnn): RNN(10, 20, batch_first=True)\n  (fc): Linear(in_features=20, out_features=1, bias=True)\n)",
        "MultiLayerRNN(\n  (rnn): RNN(10, 20, num_layers=3, batch_first=True)\n  \
         (fc): Linear(in_features=20, out_features=1, bias=True)\n)",
        "RNNWithCell(\n  (rnn_cell): RNNCell(10, 20)\n  (fc): Linear(in_features=20, out_features=1, bias=True)\n)",
        "MultiLayerRNNCell(\n  (cells): ModuleList(\n    (0): RNNCell(10, 20)\n    (1): RNNCell(20, 20)\n    \
         (2): RNNCell(20, 20)\n  )\n  (fc): Linear(in_features=20, out_features=1, bias=True)\n)",
    ] {
        assert!(out.contains(structure), "missing\n{structure}\nin\n{out}");
    }
    assert_eq!(out.matches("output: [4, 1]").count(), 4, "{out}");
    assert!(out.contains("(rnn): RNN(16, 32, num_layers=2, batch_first=True)"), "{out}");
    let losses = numbers_after(&out, "Loss: ");
    assert_eq!(losses.len(), 10, "{out}");
    assert!(out.contains("Epoch [10/10], Loss: "));
    assert_falls("text classification", &losses, 10);
}

#[test]
fn tutorial_001_runs_the_three_generators_with_explicit_states() {
    let out = run_example("tutorial_001_text_generation", &[]);
    assert!(out.contains("Expected hidden size (1, 6, 32), got [1, 4, 32]"), "{out}");
    for (class, key, layer) in [("VanillaRNN", "rnn", "RNN"), ("LSTM", "lstm", "LSTM"), ("GRU", "gru", "GRU")] {
        let tree = format!(
            "{class}(\n  (embedding): Embedding(100, 16)\n  ({key}): {layer}(16, 32, batch_first=True)\n  \
             (fc): Linear(in_features=32, out_features=100, bias=True)\n)"
        );
        assert!(out.contains(&tree), "missing\n{tree}\nin\n{out}");
    }
    assert_eq!(out.matches("logits: [4, 100], hn: [1, 4, 32]\n").count(), 2, "{out}");
    assert!(out.contains("logits: [4, 100], hn: [1, 4, 32], cn: [1, 4, 32]"), "{out}");
    assert_eq!(out.matches("greedy continuation").count(), 3);
}

#[test]
fn tutorial_002_manual_cells_match_and_the_builtin_shapes_are_the_tutorials() {
    let out = run_example("tutorial_002_cells_and_bptt", &[]);
    assert!(out.contains("ManualRNN output: [32, 5], all hidden states: [32, 20, 64]"), "{out}");
    let diffs = numbers_after(&out, "max |diff| = ");
    assert!(diffs.len() >= 2 && diffs.iter().all(|d| *d < 1e-6), "manual vs built-in: {diffs:?}");
    assert_falls("truncated BPTT", &numbers_after(&out, "mean loss "), 3);
    for shapes in [
        "LSTM(100, 256, num_layers=2, batch_first=True, dropout=0.5)\noutput: [32, 50, 256]\nh_n: [2, 32, 256]\n\
         c_n: [2, 32, 256]",
        "GRU output: [32, 50, 256]\nGRU h_n: [2, 32, 256]",
        "BiLSTM output: [32, 50, 512]\nBiLSTM h_n: [4, 32, 256]",
        "(0): Dropout(p=0.5, inplace=False)",
        "StackedLSTM output: [32, 50, 64]",
    ] {
        assert!(out.contains(shapes), "missing\n{shapes}\nin\n{out}");
    }
}

#[test]
fn tutorial_002_bilstm_classifier_gives_32_by_2_and_learns_over_packed_batches() {
    let out = run_example("tutorial_002_bilstm_classifier", &[]);
    assert!(out.contains("(lstm): LSTM(300, 256, num_layers=2, batch_first=True, dropout=0.5, bidirectional=True)"));
    assert!(out.contains("(fc): Linear(in_features=512, out_features=2, bias=True)"), "{out}");
    assert!(out.contains("classifier output: [32, 2]"), "{out}");
    assert!(numbers_after(&out, "max |diff| = ")[0] < 1e-6);
    assert_falls("BiLSTM classifier", &numbers_after(&out, "loss "), 3);
    let accuracy = numbers_after(&out, "held-out accuracy: ");
    assert!(accuracy[0] >= 90.0, "{out}");
}

#[test]
fn tutorial_002_gradient_flow_shows_the_rnn_vanishing() {
    let svg = temp_svg("gradflow");
    let out = run_example("tutorial_002_gradient_flow", &["--plot", svg.to_str().expect("utf-8 path")]);
    let row = |cell: &str| -> Vec<f64> {
        let line = out.lines().find(|l| l.starts_with(cell) && !l.contains('‖')).unwrap_or_else(|| panic!("{out}"));
        line.split_whitespace().skip(1).filter_map(|w| w.trim_end_matches('%').parse().ok()).collect()
    };
    let (rnn, lstm, gru) = (row("rnn"), row("lstm"), row("gru"));
    // Columns: final loss, ρ per step, ‖g_0‖/‖g_T-1‖, accuracy.
    assert!(rnn[1] < 1.0, "rnn decay {rnn:?}");
    assert!(lstm[2] > 1e4 * rnn[2] && gru[2] > 1e4 * rnn[2], "{out}");
    assert_svg(&svg);
}

#[test]
fn tutorial_002_lstm_vs_gru_prints_a_table_of_three() {
    let svg = temp_svg("compare");
    let out = run_example("tutorial_002_lstm_vs_gru", &["--plot", svg.to_str().expect("utf-8 path")]);
    for cell in ["lstm", "gru", "rnn"] {
        let line = out.lines().find(|l| l.starts_with(cell) && !l.contains(':')).unwrap_or_else(|| panic!("{out}"));
        let bpc: f64 = line.split_whitespace().last().and_then(|w| w.parse().ok()).expect("bpc");
        assert!(bpc.is_finite() && bpc > 0.0, "{line}");
    }
    assert_svg(&svg);
}

#[test]
fn tutorial_004_rnn_forward_matches_and_the_mse_loss_falls() {
    let svg = temp_svg("mse");
    let out = run_example("tutorial_004_rnn_forward", &["--plot", svg.to_str().expect("utf-8 path")]);
    assert!(out.contains("[10, 30, 8]\n[1, 10, 8]\n"), "{out}");
    assert!(numbers_after(&out, "max |diff| = ")[0] < 1e-6);
    assert!(out.contains("out1&hidden_prev.shape [2, 30, 5] [1, 2, 5]"), "{out}");
    assert!(out.contains("out3.shape [2, 30, 4]"), "{out}");
    let losses: Vec<f64> = out
        .lines()
        .filter(|l| l.starts_with("iteration: "))
        .filter_map(|l| l.split_whitespace().last()?.parse().ok())
        .collect();
    assert_falls("MSE", &losses, 3);
    assert!(out.contains("The training time: "), "{out}");
    assert_svg(&svg);
}

#[test]
fn tutorial_004_every_structure_runs_and_learns() {
    let out = run_example("tutorial_004_structures", &[]);
    for header in [
        "N vs N\n",
        "N vs 1\n",
        "1 vs N (input at the first step)",
        "1 vs N (input at every step)",
        "encoder-decoder (context as initial state)",
        "encoder-decoder (context as the input of every step)",
    ] {
        assert!(out.contains(header), "missing {header:?} in\n{out}");
    }
    for shapes in [
        "x [64, 10, 1] -> y [64, 10, 1]",
        "x [64, 10, 1] -> logits [64, 2]",
        "x [64, 2] -> y [64, 10, 1]",
        "x [64, 8, 1] -> y [64, 4, 1]",
    ] {
        assert!(out.contains(shapes), "missing {shapes:?} in\n{out}");
    }
    let pairs: Vec<(f64, f64)> = out
        .lines()
        .filter_map(|l| l.strip_prefix("loss "))
        .filter_map(|rest| {
            let mut words = rest.split_whitespace();
            Some((words.next()?.parse().ok()?, words.nth(1)?.parse().ok()?))
        })
        .collect();
    assert_eq!(pairs.len(), 6, "{out}");
    for (first, last) in pairs {
        assert!(last < 0.5 * first, "loss {first} -> {last}");
    }
}
