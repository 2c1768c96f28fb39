//! `recur forecast` on the real binary: train → predict → backtest → resume on the embedded airline
//! series, predict reproducing the backtest's numbers, and each bad input as one clear error.

mod common;

use std::path::Path;

use common::{p, recur, scratch, stdout, write};

const SMALL: [&str; 6] = ["--hidden-size", "8", "--max-steps", "30", "--quiet", "--overwrite"];

fn ok(output: &std::process::Output) {
    assert!(
        output.status.success(),
        "exit {:?}\nstdout: {}\nstderr: {}",
        output.status.code(),
        stdout(output),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn fails_with(output: &std::process::Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "stdout: {}\nstderr: {err}", stdout(output));
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

/// The rows of a predict CSV: (step, forecast, lower, upper).
fn rows(csv: &str) -> Vec<(usize, f64, f64, f64)> {
    csv.lines()
        .skip(1)
        .map(|l| {
            let c: Vec<&str> = l.split(',').collect();
            (c[1].parse().unwrap(), c[4].parse().unwrap(), c[5].parse().unwrap(), c[6].parse().unwrap())
        })
        .collect()
}

#[test]
fn train_predict_backtest_resume_on_the_embedded_airline_series() {
    let dir = scratch("forecast-flow");
    let run = dir.join("run");
    let out = recur(&[&["forecast", "train", "--out", p(&run)][..], &SMALL].concat());
    ok(&out);
    let ckpt = run.join("last.safetensors");
    assert!(ckpt.exists() && run.join("metrics.jsonl").exists());
    assert!(stdout(&out).contains("lookback 24, horizon 12, period 12, log scale"), "{}", stdout(&out));

    // Predict from the end of the series: 12 finite steps after step 143, with an interval.
    let (csv, svg) = (dir.join("f.csv"), dir.join("f.svg"));
    ok(&recur(&["forecast", "predict", "--checkpoint", p(&ckpt), "--output", p(&csv), "--svg", p(&svg)]));
    let text = std::fs::read_to_string(&csv).unwrap();
    assert!(text.starts_with("series,step,date,target,forecast,lower_80,upper_80\n"), "{text}");
    let r = rows(&text);
    assert_eq!(r.len(), 12);
    assert_eq!((r[0].0, r[11].0), (144, 155));
    assert!(text.contains(",1961-01-01,Passengers,"), "{text}");
    for (_, f, lo, hi) in &r {
        assert!(f.is_finite() && lo <= f && f <= hi && *lo > 0.0, "{r:?}");
    }
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(plot.starts_with("<svg") && plot.contains("history") && plot.contains("class=\"band\""), "{plot}");

    // The backtest: the model and every baseline on the same 18 origins (115..=132).
    let json = dir.join("b.json");
    let out = recur(&["forecast", "backtest", "--checkpoint", p(&ckpt), "--json", p(&json)]);
    ok(&out);
    let table = stdout(&out);
    for name in ["model", "naive", "seasonal_naive", "drift", "mean", "MASE", "18 origins"] {
        assert!(table.contains(name), "{name} not in {table}");
    }
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let methods = report["report"]["methods"].as_array().unwrap();
    assert_eq!(methods.len(), 5);
    let naive = methods.iter().find(|m| m["method"] == "seasonal_naive").unwrap();
    let out = recur(&["forecast", "backtest", "--checkpoint", p(&ckpt), "--horizon", "6"]);
    fails_with(&out, &["--horizon trains a model, but --checkpoint gives one"]);
    assert!((naive["scores"]["rmse"].as_f64().unwrap() - 50.0508).abs() < 1e-3, "{naive}");
    // predict --origin 120 gives the backtest's forecast from origin 120, to the printed digit.
    let forecasts = report["report"]["forecasts"].as_array().unwrap();
    let at120 = forecasts.iter().find(|f| f["origin"] == 120).unwrap();
    let csv120 = dir.join("f120.csv");
    ok(&recur(&[
        "forecast",
        "predict",
        "--checkpoint",
        p(&ckpt),
        "--origin",
        "120",
        "--output",
        p(&csv120),
        "--svg",
        p(&dir.join("f120.svg")),
    ]));
    let r120 = rows(&std::fs::read_to_string(&csv120).unwrap());
    for (step, (_, f, lo, hi)) in r120.iter().enumerate() {
        assert_eq!(*f, at120["point"][0][step].as_f64().unwrap());
        assert_eq!(*lo, at120["lower"][0][step].as_f64().unwrap());
        assert_eq!(*hi, at120["upper"][0][step].as_f64().unwrap());
    }

    // 15 steps, then resumed to 30, is the 30-step run: the same forecast to the bit (a constant
    // rate, since a schedule spans the steps a run was started with).
    let predict_of = |ckpt: &Path, name: &str| -> String {
        let csv = dir.join(name);
        ok(&recur(&[
            "forecast",
            "predict",
            "--checkpoint",
            p(ckpt),
            "--output",
            p(&csv),
            "--svg",
            p(&dir.join("x.svg")),
        ]));
        std::fs::read_to_string(&csv).unwrap()
    };
    let (full, half) = (dir.join("full"), dir.join("half"));
    let constant = ["--lr-schedule", "constant"];
    ok(&recur(&[&["forecast", "train", "--out", p(&full)][..], &SMALL, &constant].concat()));
    let mut args = [&["forecast", "train", "--out", p(&half)][..], &SMALL, &constant].concat();
    let at = args.iter().position(|a| *a == "30").unwrap();
    args[at] = "15";
    ok(&recur(&args));
    let resumed = half.join("last.safetensors");
    ok(&recur(&["forecast", "train", "--resume", p(&resumed), "--max-steps", "30", "--quiet"]));
    let straight = predict_of(&full.join("last.safetensors"), "full.csv");
    assert_eq!(predict_of(&resumed, "resumed.csv"), straight);
    assert_ne!(straight, text, "a constant rate trains another model than the cosine default");
    // A resumed run keeps its model: a new size is refused.
    let out = recur(&["forecast", "train", "--resume", p(&resumed), "--hidden-size", "4", "--quiet"]);
    fails_with(&out, &["--hidden-size", "from the checkpoint"]);
    std::fs::remove_dir_all(&dir).ok();
}

fn train_on(dir: &Path, name: &str, csv: &str, extra: &[&str]) -> std::process::Output {
    let file = write(dir, name, csv.as_bytes());
    let run = dir.join(format!("run-{name}"));
    let mut args = vec!["forecast", "train", "--csv", p(&file), "--out", p(&run)];
    args.extend_from_slice(extra);
    args.extend_from_slice(&SMALL);
    recur(&args)
}

/// 60 monthly rows, with `edit` applied to the lines (0: the header).
fn monthly(edit: impl Fn(usize, String) -> Option<String>) -> String {
    let mut lines = vec!["month,y".to_string()];
    for t in 0..60 {
        lines.push(format!("{}-{:02},{}", 2000 + t / 12, t % 12 + 1, 100 + t % 12 * 3 + t));
    }
    lines.into_iter().enumerate().filter_map(|(i, l)| edit(i, l)).collect::<Vec<_>>().join("\n") + "\n"
}

#[test]
fn each_bad_input_is_one_clear_error() {
    let dir = scratch("forecast-bad");
    let flags = ["--target", "y", "--date", "month", "--horizon", "3", "--lookback", "6"];
    // A missing value: refused with its line and column, accepted with --fill.
    let missing = monthly(|i, l| Some(if i == 10 { l.split(',').next().unwrap().to_string() + "," } else { l }));
    fails_with(
        &train_on(&dir, "missing.csv", &missing, &flags),
        &["missing.csv line 11 column \"y\"", "missing", "--fill"],
    );
    let filled = [&flags[..], &["--fill", "linear"]].concat();
    let out = train_on(&dir, "missing.csv", &missing, &filled);
    ok(&out);
    assert!(stdout(&out).contains("filled 1 missing values or dates (linear)"), "{}", stdout(&out));
    // An unparsable number, and an unparsable date.
    let number = monthly(|i, l| Some(if i == 5 { l.replace(',', ",12x") } else { l }));
    fails_with(&train_on(&dir, "number.csv", &number, &flags), &["number.csv line 6 column \"y\"", "as a number"]);
    let date = monthly(|i, l| Some(if i == 7 { "2000-13,5".to_string() } else { l }));
    fails_with(&train_on(&dir, "date.csv", &date, &flags), &["date.csv line 8 column \"month\"", "as a date"]);
    // A gap in the monthly series: refused, or filled.
    let gap = monthly(|i, l| (i != 20).then_some(l));
    fails_with(&train_on(&dir, "gap.csv", &gap, &flags), &["gap.csv line 21 column \"month\"", "monthly", "--fill"]);
    ok(&train_on(&dir, "gap.csv", &gap, &filled));
    // A series too short for lookback + horizon in its training part.
    let short = monthly(|i, l| (i <= 8).then_some(l));
    fails_with(&train_on(&dir, "short.csv", &short, &flags), &["short.csv has 8 steps", "lookback + horizon = 6 + 3"]);
    // No --target for a file; a column the header lacks; log scaling of non-positive values.
    fails_with(&train_on(&dir, "ok.csv", &monthly(|_, l| Some(l)), &[]), &["--target"]);
    fails_with(&train_on(&dir, "ok.csv", &monthly(|_, l| Some(l)), &["--target", "sales"]), &["no column \"sales\""]);
    let zero = monthly(|i, l| Some(if i == 3 { "2000-03,0".to_string() } else { l }));
    fails_with(
        &train_on(&dir, "zero.csv", &zero, &[&flags[..], &["--log"]].concat()),
        &["log scaling needs positive values"],
    );
    // A checkpoint of another task, and a predict origin outside the series.
    let not_ckpt = write(&dir, "not.safetensors", b"not a checkpoint");
    fails_with(&recur(&["forecast", "predict", "--checkpoint", p(&not_ckpt)]), &["not.safetensors"]);
    let ckpt = dir.join("run-missing.csv").join("last.safetensors");
    let csv = dir.join("missing.csv");
    fails_with(
        &recur(&[
            "forecast",
            "predict",
            "--checkpoint",
            p(&ckpt),
            "--csv",
            p(&csv),
            "--fill",
            "linear",
            "--origin",
            "2",
        ]),
        &["--origin 2", "needs 6 steps before it"],
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// SIGTERM finishes the step, saves it and exits 143 through the shared runner; the run resumes.
#[test]
fn sigterm_saves_the_step_and_the_run_resumes() {
    let dir = scratch("forecast-term");
    let run = dir.join("run");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_recur"))
        .args(["forecast", "train", "--out", p(&run), "--hidden-size", "8", "--max-steps", "1000000"])
        .args(["--eval-every", "20", "--lr-schedule", "constant", "--time-budget", "60s", "--quiet"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn recur");
    let last = run.join("last.safetensors");
    let start = std::time::Instant::now();
    while recur::train::Checkpoint::load(&last).map_or(true, |c| c.step < 20) {
        assert!(start.elapsed() < std::time::Duration::from_secs(60), "no checkpoint came");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().expect("kill");
    assert!(status.success());
    let output = child.wait_with_output().expect("wait");
    assert_eq!(output.status.code(), Some(143), "{}", String::from_utf8_lossy(&output.stderr));
    let step = recur::train::Checkpoint::load(&last).unwrap().step;
    assert!(stdout(&output).contains(&format!("stopped by SIGTERM at step {step}")), "{}", stdout(&output));
    let more = (step + 5).to_string();
    let out = recur(&["forecast", "train", "--resume", p(&last), "--max-steps", &more, "--quiet"]);
    ok(&out);
    assert!(stdout(&out).contains(&format!("at step {more}")), "{}", stdout(&out));
    std::fs::remove_dir_all(&dir).ok();
}
