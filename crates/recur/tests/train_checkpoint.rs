//! Checkpoints (test bars R38–R47): bitwise round trip, schema errors reported at once, malformed,
//! truncated and bit-flipped files rejected with typed errors, atomic saves under injected write
//! failures and SIGKILL, a read-only folder named in the error, and stop-and-resume (the second
//! half in a new process) equal to an uninterrupted run bit for bit. Real files in unique folders
//! under the system temp dir.

mod common;

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{Linear, Module, VarMap};
use recur::train::{
    clip_grad_norm, derive_seed, load_params, named_vars, remove_stale_temp_files, save_checkpoint,
    save_checkpoint_with_hook, Adam, AdamConfig, Checkpoint, CrossEntropy, LrSchedule, NormType, Optimizer, Scheduler,
    Tbptt, TrainRng,
};
use recur::{Error, Lstm, LstmConfig};
use serde_json::json;

/// A fresh, unique folder under the system temp dir (removed by `Drop`).
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> Self {
        static COUNT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        let dir = std::env::temp_dir().join(format!("recur-{tag}-{}-{nanos}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create temp dir");
        Self(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const INPUT: usize = 6;
const HIDDEN: usize = 24;
const CLASSES: usize = 5;

struct Model {
    varmap: VarMap,
    lstm: Lstm,
    head: Linear,
}

fn model(seed: u64) -> Model {
    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, derive_seed(seed, "init"), DType::F32, &Device::Cpu);
    let lstm = Lstm::new(LstmConfig { num_layers: 2, ..LstmConfig::new(INPUT, HIDDEN) }, vb.pp("lstm")).expect("lstm");
    let head = candle_nn::linear(HIDDEN, CLASSES, vb.pp("head")).expect("head");
    Model { varmap, lstm, head }
}

fn config() -> serde_json::Value {
    json!({"input_size": INPUT, "hidden_size": HIDDEN, "num_layers": 2, "classes": CLASSES})
}

/// A checkpoint with everything set: a model after 3 Adam steps, schedule, carried state, RNG.
fn full_checkpoint() -> (Checkpoint, Model) {
    let m = model(1);
    let mut opt = Adam::new(named_vars(&m.varmap), AdamConfig { lr: 0.01, amsgrad: true, ..AdamConfig::default() })
        .expect("adam");
    let mut sched = Scheduler::new(LrSchedule::Cosine { t_max: 10, eta_min: 1e-4, warmup: 2 }, 0.01).expect("sched");
    let x = Tensor::randn(0f32, 1.0, (7, 2, INPUT), &Device::Cpu).expect("x");
    let mut tbptt = Tbptt::new(7, false).expect("tbptt");
    for _ in 0..3 {
        let y = tbptt.forward(&x, None, |x, s| m.lstm.forward(x, s)).expect("forward");
        let loss = m.head.forward(&y).and_then(|t| t.sqr()).and_then(|t| t.mean_all()).expect("loss");
        opt.step(&loss.backward().expect("backward")).expect("step");
        sched.step(None).expect("sched");
        sched.apply(&mut opt);
    }
    let mut rng = TrainRng::new(derive_seed(1, "data"));
    rng.below(100);
    let params = named_vars(&m.varmap).into_iter().map(|(n, v)| (n, v.as_tensor().clone())).collect();
    let ckpt = Checkpoint {
        params,
        optimizer: Some(opt.state_dict().expect("state")),
        schedule: Some(sched.state_json()),
        carried: tbptt.state().cloned(),
        config: config(),
        task: json!({"vocab": ["a", "b", "\u{e9}"]}),
        step: 3,
        epoch: 1,
        position: 21,
        rng: Some(rng.state()),
        ..Checkpoint::default()
    };
    (ckpt, m)
}

fn small_checkpoint(step: u64) -> Checkpoint {
    let mut params = BTreeMap::new();
    params.insert("w".to_string(), Tensor::new(&[1.0f32, 2.0, 3.0], &Device::Cpu).expect("w"));
    Checkpoint { params, step, config: json!({"k": 1}), ..Checkpoint::default() }
}

fn assert_checkpoint_error(result: recur::Result<Checkpoint>, what: &str) {
    match result {
        Err(Error::Checkpoint { message, fix, .. }) => {
            assert!(!message.is_empty() && !fix.is_empty(), "{what}: empty message");
        }
        Err(other) => panic!("{what}: expected Error::Checkpoint, got {other}"),
        Ok(_) => panic!("{what}: loaded without error"),
    }
}

#[test]
fn round_trip_is_bitwise_and_reproduces_outputs() {
    let dir = TempDir::new("roundtrip");
    let path = dir.0.join("ckpt.safetensors");
    let (ckpt, m) = full_checkpoint();
    save_checkpoint(&path, &ckpt).expect("save");
    let back = Checkpoint::load(&path).expect("load");
    assert_eq!(back.params.len(), 10);
    assert!(back.params.contains_key("lstm.weight_ih_l0") && back.params.contains_key("lstm.bias_hh_l1"));
    for (name, t) in &ckpt.params {
        common::assert_bitwise(name, &back.params[name], t);
    }
    let (a, b) = (ckpt.optimizer.as_ref().expect("opt"), back.optimizer.as_ref().expect("opt"));
    assert_eq!(a.meta, b.meta);
    assert_eq!(a.tensors.keys().collect::<Vec<_>>(), b.tensors.keys().collect::<Vec<_>>());
    assert!(a.tensors.contains_key("lstm.weight_hh_l1.max_exp_avg_sq"));
    for (name, t) in &a.tensors {
        common::assert_bitwise(name, &b.tensors[name], t);
    }
    let (ca, cb) = (ckpt.carried.as_ref().expect("carried"), back.carried.as_ref().expect("carried"));
    common::assert_bitwise("tbptt.h", &cb.h, &ca.h);
    common::assert_bitwise("tbptt.c", cb.c.as_ref().expect("c"), ca.c.as_ref().expect("c"));
    assert_eq!((back.step, back.epoch, back.position), (3, 1, 21));
    assert_eq!(back.config, ckpt.config);
    assert_eq!(back.task, ckpt.task);
    assert_eq!(back.schedule, ckpt.schedule);
    assert_eq!(back.rng, ckpt.rng);
    assert_eq!(back.recur_version, recur::VERSION);
    back.require_resume_state().expect("resume state present");
    // Re-saving the loaded checkpoint gives the same bytes.
    assert_eq!(back.to_bytes().expect("bytes"), std::fs::read(&path).expect("read"));

    // R38: a fresh model loaded from the file gives bitwise-identical outputs.
    let fresh = model(99);
    load_params(&back.params, &named_vars(&fresh.varmap), false).expect("load params");
    let x = Tensor::randn(0f32, 1.0, (5, 3, INPUT), &Device::Cpu).expect("x");
    let (y1, _) = m.lstm.forward(&x, None).expect("y1");
    let (y2, _) = fresh.lstm.forward(&x, None).expect("y2");
    common::assert_bitwise("output", &y2, &y1);
    common::assert_bitwise("head", &fresh.head.forward(&y2).expect("h2"), &m.head.forward(&y1).expect("h1"));
}

#[test]
fn schema_problems_are_reported_together_and_nothing_is_loaded() {
    let (ckpt, _) = full_checkpoint();
    let fresh = model(5);
    let vars = named_vars(&fresh.varmap);
    let before: Vec<Vec<f64>> = vars.iter().map(|(_, v)| common::values(v.as_tensor())).collect();
    let mut params = ckpt.params.clone();
    params.remove("lstm.weight_hh_l0");
    params.insert("lstm.weight_extra".into(), Tensor::zeros(3, DType::F32, &Device::Cpu).expect("x"));
    params.insert("head.bias".into(), Tensor::zeros(CLASSES + 1, DType::F32, &Device::Cpu).expect("x"));
    params.insert("head.weight".into(), Tensor::zeros((CLASSES, HIDDEN), DType::F64, &Device::Cpu).expect("x"));
    let err = load_params(&params, &vars, false).expect_err("schema");
    let text = err.to_string();
    for needle in [
        "Missing key(s): lstm.weight_hh_l0",
        "Unexpected key(s): lstm.weight_extra",
        "size mismatch for head.bias: checkpoint [6], model [5]",
        "dtype mismatch for head.weight",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in {text}");
    }
    assert!(matches!(err, Error::Schema { .. }));
    let after: Vec<Vec<f64>> = vars.iter().map(|(_, v)| common::values(v.as_tensor())).collect();
    assert_eq!(before, after, "nothing may be loaded on error");

    // R42: non-finite weights are refused unless allowed.
    let mut params = ckpt.params.clone();
    params.insert("head.bias".into(), Tensor::new(&[0.0f32, f32::NAN, 0.0, 0.0, 0.0], &Device::Cpu).expect("nan"));
    let err = load_params(&params, &vars, false).expect_err("NaN");
    assert!(err.to_string().contains("non-finite value NaN in head.bias"), "{err}");
    load_params(&params, &vars, true).expect("allowed");

    // Optimizer state of another model / kind.
    let mut opt = Adam::new(vars.clone(), AdamConfig::default()).expect("adam");
    let mut state = ckpt.optimizer.clone().expect("state");
    state.tensors.remove("head.bias.exp_avg");
    let err = opt.load_state_dict(&state).expect_err("optimizer schema");
    assert!(err.to_string().contains("Missing key(s): head.bias.exp_avg"), "{err}");
    let mut sgd = recur::train::Sgd::new(vars, recur::train::SgdConfig::default()).expect("sgd");
    assert!(sgd.load_state_dict(ckpt.optimizer.as_ref().expect("state")).is_err());

    // R47: resume needs RNG and optimizer state; config mismatches name the field.
    let no_rng = Checkpoint { rng: None, ..ckpt.clone() };
    let err = no_rng.require_resume_state().expect_err("no rng");
    assert!(err.to_string().contains("rng state"), "{err}");
    let err = ckpt.check_config(&json!({"hidden_size": 64, "num_layers": 2})).expect_err("config");
    assert!(err.to_string().contains("hidden_size is 24 in the checkpoint, 64 here"), "{err}");
    ckpt.check_config(&config()).expect("same config");
}

/// A hand-written safetensors file: `header` JSON (padded), then `data`.
fn raw(header: &str, data: &[u8]) -> Vec<u8> {
    let mut out = (header.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(data);
    out
}

#[test]
fn malformed_files_are_typed_errors() {
    let meta = r#""__metadata__":{"format":"recur-checkpoint","format_version":"1"}"#;
    let mut huge = raw(r#"{"w":{"dtype":"F32","shape":[26843545600],"data_offsets":[0,107374182400]}}"#, &[]);
    huge.resize(1024, b' ');
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("7 bytes", vec![1, 2, 3, 4, 5, 6, 7]),
        ("header larger than the cap", u64::MAX.to_le_bytes().to_vec()),
        ("header length past EOF", [200u64.to_le_bytes().as_slice(), b"{}"].concat()),
        ("non-UTF-8 header", [4u64.to_le_bytes().as_slice(), b"{\xff\xfe}"].concat()),
        ("non-JSON header", raw("{not json}", &[])),
        (
            "overlapping tensors",
            raw(
                &format!(
                    r#"{{{meta},"a":{{"dtype":"F32","shape":[4],"data_offsets":[0,16]}},"b":{{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}}}"#
                ),
                &[0; 16],
            ),
        ),
        (
            "gap between tensors",
            raw(
                &format!(
                    r#"{{{meta},"a":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}},"b":{{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}}}"#
                ),
                &[0; 12],
            ),
        ),
        (
            "trailing bytes",
            raw(&format!(r#"{{{meta},"a":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#), &[0; 8]),
        ),
        (
            "shape overflow",
            raw(
                &format!(r#"{{{meta},"a":{{"dtype":"F32","shape":[2,18446744073709551614],"data_offsets":[0,4]}}}}"#),
                &[0; 4],
            ),
        ),
        (
            "offsets disagree with shape",
            raw(&format!(r#"{{{meta},"a":{{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}}}"#), &[0; 8]),
        ),
        ("1 KiB declaring 100 GiB", huge),
        ("not a Recur checkpoint", raw(r#"{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}"#, &[0; 4])),
        ("newer format", raw(r#"{"__metadata__":{"format":"recur-checkpoint","format_version":"99"}}"#, &[])),
        ("no checksum", raw(&format!(r#"{{{meta},"a":{{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}}}"#), &[0; 4])),
        ("pickle", vec![0x80, 0x02, b'c', b'_', 0, 0, 0, 0, 0, 0]),
        ("zip (torch.save)", b"PK\x03\x04rest-of-a-zip".to_vec()),
    ];
    for (what, bytes) in cases {
        assert_checkpoint_error(Checkpoint::from_bytes(&bytes, what), what);
    }
    let err = Checkpoint::from_bytes(b"PK\x03\x04....", "model.pt").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("pickle") && err.contains("save_file"), "{err}");
    let err = Checkpoint::from_bytes(
        &raw(r#"{"__metadata__":{"format":"recur-checkpoint","format_version":"99"}}"#, &[]),
        "x",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(err.contains("newer"), "{err}");
}

#[test]
fn every_truncation_and_every_single_bit_flip_is_rejected() {
    let bytes = full_checkpoint().0.to_bytes().expect("bytes");
    let header_end = 8 + u64::from_le_bytes(bytes[..8].try_into().expect("8 bytes")) as usize;
    eprintln!("checkpoint: {} bytes, header {} bytes", bytes.len(), header_end);
    // R41: every length, which includes 0, 1, 7, 8, header_end − 1, header_end, mid-data, len − 1.
    for len in 0..bytes.len() {
        assert_checkpoint_error(Checkpoint::from_bytes(&bytes[..len], "truncated"), &format!("truncated to {len}"));
    }
    // R42: one flipped bit at every byte of the header and at 4,096 positions of the data.
    let mut rng = TrainRng::new(7);
    let data_len = (bytes.len() - header_end) as u64;
    let positions: Vec<usize> =
        (0..header_end).chain((0..4096).map(|_| header_end + rng.below(data_len) as usize)).collect();
    let mut corrupted = bytes.clone();
    for (i, &pos) in positions.iter().enumerate() {
        let bit = 1u8 << (i % 8);
        corrupted[pos] ^= bit;
        assert_checkpoint_error(Checkpoint::from_bytes(&corrupted, "flipped"), &format!("bit {} of byte {pos}", i % 8));
        corrupted[pos] ^= bit;
    }
    let text = Checkpoint::from_bytes(
        &{
            let mut c = bytes.clone();
            c[header_end + 10] ^= 4;
            c
        },
        "x",
    )
    .err()
    .map(|e| e.to_string())
    .unwrap_or_default();
    assert!(text.contains("checksum mismatch"), "{text}");
}

fn stray_temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .expect("list")
        .flatten()
        .filter_map(|e| e.file_name().to_str().map(String::from))
        .filter(|n| n.contains(".tmp-"))
        .collect()
}

#[test]
fn an_injected_write_failure_at_any_point_leaves_the_old_checkpoint() {
    let dir = TempDir::new("inject");
    let path = dir.0.join("ckpt.safetensors");
    let (mut ckpt, _) = full_checkpoint();
    save_checkpoint(&path, &ckpt).expect("first save");
    ckpt.step = 4;
    let size = ckpt.to_bytes().expect("bytes").len() as u64;
    let mut points = 0;
    for fail_at in (0..=size).step_by(4096) {
        let mut hook = |written: u64| -> io::Result<()> {
            if written >= fail_at {
                Err(io::Error::new(io::ErrorKind::StorageFull, "injected: no space left on device"))
            } else {
                Ok(())
            }
        };
        let err = save_checkpoint_with_hook(&path, &ckpt, &mut hook).expect_err("injected failure");
        let text = err.to_string();
        assert!(text.contains("ckpt.safetensors") && text.contains("no space left"), "{text}");
        assert_eq!(Checkpoint::load(&path).expect("old checkpoint loads").step, 3, "after a failure at {fail_at}");
        assert!(stray_temp_files(&dir.0).is_empty(), "temp file left after failure at {fail_at}");
        points += 1;
    }
    assert!(points >= 20, "only {points} injection points");
    save_checkpoint(&path, &ckpt).expect("save");
    assert_eq!(Checkpoint::load(&path).expect("new").step, 4);
}

#[test]
fn a_read_only_folder_or_missing_folder_names_the_path_and_the_os_error() {
    let dir = TempDir::new("readonly");
    let path = dir.0.join("ckpt.safetensors");
    save_checkpoint(&path, &small_checkpoint(1)).expect("first save");
    // A parent that is a file: ENOTDIR, whoever runs the test.
    let bad = path.join("inside-a-file.safetensors");
    let text = save_checkpoint(&bad, &small_checkpoint(2)).expect_err("not a dir").to_string();
    assert!(text.contains("inside-a-file.safetensors") && text.contains("os error"), "{text}");

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o555)).expect("chmod");
        let probe = dir.0.join("probe");
        let privileged = std::fs::write(&probe, b"x").is_ok();
        let _ = std::fs::remove_file(&probe);
        if privileged {
            eprintln!("running with privileges that ignore folder permissions (root): read-only case not observable");
        } else {
            let err = save_checkpoint(&path, &small_checkpoint(2)).expect_err("read-only");
            let text = err.to_string();
            assert!(text.contains(&path.display().to_string()) && text.contains("os error 13"), "{text}");
            assert!(matches!(err, Error::Io { .. }));
        }
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).expect("chmod back");
    }
    assert_eq!(Checkpoint::load(&path).expect("previous intact").step, 1);
}

/// The child of `sigkill_mid_save_always_leaves_a_loadable_checkpoint`: saves forever.
#[test]
fn sigkill_child() {
    let Ok(path) = std::env::var("RECUR_SIGKILL_CHILD_PATH") else { return };
    let path = PathBuf::from(path);
    let (mut ckpt, _) = full_checkpoint();
    for step in 100.. {
        ckpt.step = step;
        save_checkpoint(&path, &ckpt).expect("child save");
    }
}

#[test]
fn sigkill_mid_save_always_leaves_a_loadable_checkpoint() {
    let dir = TempDir::new("sigkill");
    let path = dir.0.join("ckpt.safetensors");
    save_checkpoint(&path, &full_checkpoint().0).expect("initial save");
    let exe = std::env::current_exe().expect("test exe");
    let mut rng = TrainRng::new(11);
    let mut last_step = 3;
    let mut mid_save = 0; // kills that left a temporary file: the save was cut off mid-way
    for round in 0..25 {
        let mut child = Command::new(&exe)
            .args(["--exact", "sigkill_child", "--nocapture", "--test-threads=1"])
            .env("RECUR_SIGKILL_CHILD_PATH", &path)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn child");
        std::thread::sleep(Duration::from_millis(20 + rng.below(200)));
        child.kill().expect("SIGKILL"); // Child::kill sends SIGKILL on Unix
        child.wait().expect("wait");
        let ckpt = Checkpoint::load(&path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert!(ckpt.step == 3 || ckpt.step >= 100, "round {round}: unexpected step {}", ckpt.step);
        last_step = last_step.max(ckpt.step);
        mid_save += usize::from(!stray_temp_files(&dir.0).is_empty());
        remove_stale_temp_files(&path).expect("cleanup");
        assert!(stray_temp_files(&dir.0).is_empty());
    }
    eprintln!("sigkill: 25 kills, {mid_save} of them mid-save (temporary file left), last loaded step {last_step}");
    assert!(last_step >= 100, "the child never completed a save; the test did not exercise anything");
}

/// One training run: LSTM → Linear, Adam, cosine schedule with warm-up, global-norm clipping,
/// data shuffled and input dropout drawn from one seeded `TrainRng`. Runs `steps` steps from
/// `start` (a checkpoint or nothing) and returns the per-step losses and the final checkpoint.
fn run(seed: u64, start: Option<&Checkpoint>, steps: u64) -> (Vec<u32>, Checkpoint) {
    const BATCHES: usize = 4;
    let m = model(seed);
    let vars = named_vars(&m.varmap);
    let mut opt =
        Adam::new(vars.clone(), AdamConfig { lr: 0.02, weight_decay: 1e-3, ..AdamConfig::default() }).expect("adam");
    let mut sched = Scheduler::new(LrSchedule::Cosine { t_max: 8, eta_min: 1e-3, warmup: 3 }, 0.02).expect("sched");
    let mut rng = TrainRng::new(derive_seed(seed, "data"));
    let (mut step, mut epoch, mut position) = (0u64, 0u64, 0u64);
    let mut order: Vec<usize> = (0..BATCHES).collect();
    if let Some(c) = start {
        c.require_resume_state().expect("resume state");
        c.check_config(&config()).expect("config");
        load_params(&c.params, &vars, false).expect("params");
        opt.load_state_dict(c.optimizer.as_ref().expect("optimizer")).expect("optimizer state");
        sched.load_state_json(c.schedule.as_ref().expect("schedule")).expect("schedule");
        sched.apply(&mut opt);
        rng = TrainRng::from_state(c.rng.as_ref().expect("rng")).expect("rng");
        (step, epoch, position) = (c.step, c.epoch, c.position);
        order = c.task["order"].as_array().expect("order").iter().map(|v| v.as_u64().expect("u64") as usize).collect();
    } else {
        rng.shuffle(&mut order);
    }
    // Fixed data: BATCHES batches of (T = 6, B = 3) inputs and class targets.
    let mut data_rng = TrainRng::new(1234);
    let data: Vec<(Tensor, Tensor)> = (0..BATCHES)
        .map(|_| {
            let x: Vec<f32> = (0..6 * 3 * INPUT).map(|_| data_rng.uniform() as f32 * 2.0 - 1.0).collect();
            let y: Vec<u32> = (0..6 * 3).map(|_| data_rng.below(CLASSES as u64) as u32).collect();
            (
                Tensor::from_vec(x, (6, 3, INPUT), &Device::Cpu).expect("x"),
                Tensor::from_vec(y, (6, 3), &Device::Cpu).expect("y"),
            )
        })
        .collect();
    let mut losses = Vec::new();
    let all: Vec<Var> = vars.iter().map(|(_, v)| v.clone()).collect();
    for _ in 0..steps {
        if position as usize == BATCHES {
            position = 0;
            epoch += 1;
            rng.shuffle(&mut order);
        }
        let (x, y) = &data[order[position as usize]];
        // Input dropout (p = 0.2) from the run's generator: the RNG state must resume exactly.
        let keep: Vec<f32> = (0..x.elem_count()).map(|_| if rng.uniform() < 0.2 { 0.0 } else { 1.25 }).collect();
        let x = (x * Tensor::from_vec(keep, x.shape(), &Device::Cpu).expect("mask")).expect("dropout");
        let (h, _) = m.lstm.forward(&x, None).expect("forward");
        let logits = m.head.forward(&h).expect("head");
        let loss = CrossEntropy::default().forward(&logits, y, None).expect("loss");
        losses.push(loss.to_scalar::<f32>().expect("scalar").to_bits());
        let mut grads = loss.backward().expect("backward");
        clip_grad_norm(&all, &mut grads, 0.5, NormType::L2, true).expect("clip");
        opt.step(&grads).expect("step");
        sched.step(None).expect("schedule");
        sched.apply(&mut opt);
        step += 1;
        position += 1;
    }
    let ckpt = Checkpoint {
        params: vars.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect(),
        optimizer: Some(opt.state_dict().expect("state")),
        schedule: Some(sched.state_json()),
        config: config(),
        task: json!({ "order": order }),
        step,
        epoch,
        position,
        rng: Some(rng.state()),
        ..Checkpoint::default()
    };
    (losses, ckpt)
}

/// The second half of `stop_and_resume_equals_an_uninterrupted_run_bit_for_bit`, in a new
/// process: loads the checkpoint, runs 7 steps, saves the result and the losses.
#[test]
fn resume_child() {
    let Ok(path) = std::env::var("RECUR_RESUME_CHILD_PATH") else { return };
    let loaded = Checkpoint::load(Path::new(&path)).expect("child load");
    let (losses, mut resumed) = run(42, Some(&loaded), 7);
    resumed.task["losses"] = json!(losses);
    save_checkpoint(&Path::new(&path).with_extension("resumed"), &resumed).expect("child save");
}

#[test]
fn stop_and_resume_equals_an_uninterrupted_run_bit_for_bit() {
    let dir = TempDir::new("resume");
    let path = dir.0.join("run.safetensors");
    let (all_losses, uninterrupted) = run(42, None, 14);
    let (first_losses, halfway) = run(42, None, 7);
    save_checkpoint(&path, &halfway).expect("save");
    // Resume in a new process (this test binary, running only `resume_child`).
    let status = Command::new(std::env::current_exe().expect("exe"))
        .args(["--exact", "resume_child", "--test-threads=1"])
        .env("RECUR_RESUME_CHILD_PATH", &path)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("run child");
    assert!(status.success(), "resume child failed: {status}");
    let mut resumed = Checkpoint::load(&path.with_extension("resumed")).expect("load resumed");
    let second_losses: Vec<u32> =
        resumed.task["losses"].as_array().expect("losses").iter().map(|v| v.as_u64().expect("u32") as u32).collect();
    if let Some(task) = resumed.task.as_object_mut() {
        task.remove("losses");
    }
    let losses: Vec<u32> = first_losses.into_iter().chain(second_losses).collect();
    assert_eq!(losses, all_losses, "per-step losses must be bitwise identical");
    assert_eq!(
        (resumed.step, resumed.epoch, resumed.position),
        (uninterrupted.step, uninterrupted.epoch, uninterrupted.position)
    );
    assert_eq!(resumed.rng, uninterrupted.rng);
    assert_eq!(resumed.schedule, uninterrupted.schedule);
    assert_eq!(resumed.task, uninterrupted.task);
    for (name, t) in &uninterrupted.params {
        common::assert_bitwise(name, &resumed.params[name], t);
    }
    let (a, b) = (uninterrupted.optimizer.expect("opt"), resumed.optimizer.expect("opt"));
    assert_eq!(a.meta, b.meta);
    for (name, t) in &a.tensors {
        common::assert_bitwise(name, &b.tensors[name], t);
    }
    // Same seed → identical parameters; another seed → different ones.
    let (_, again) = run(42, None, 14);
    for (name, t) in &uninterrupted.params {
        common::assert_bitwise(name, &again.params[name], t);
    }
    let (_, other) = run(43, None, 14);
    assert!(common::check_bitwise("seed", &other.params["head.weight"], &uninterrupted.params["head.weight"]).is_err());
}

/// A safetensors file starts with its header length (8 bytes, little-endian), so its first byte
/// can be anything a padded header length ends in, `0x80` included, and its first two bytes can
/// read like a pickle's `0x80 0x02..0x05` (header lengths 0x280, 0x380, …). Every such checkpoint
/// must load: the reader goes by the file's structure, never by its first byte.
#[test]
fn checkpoints_load_whatever_their_header_length_starts_with() {
    let mut params = BTreeMap::new();
    params.insert("w".to_string(), Tensor::new(&[1f32, -2.0, 3.5], &Device::Cpu).expect("tensor"));
    let mut low_bytes = std::collections::BTreeSet::new();
    let mut pickle_like = 0;
    for pad in 0..2300 {
        let ckpt = Checkpoint {
            params: params.clone(),
            step: pad as u64,
            config: json!({ "pad": "x".repeat(pad) }),
            ..Checkpoint::default()
        };
        let bytes = ckpt.to_bytes().expect("bytes");
        low_bytes.insert(bytes[0]);
        if bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
            pickle_like += 1;
        }
        assert_eq!(recur::train::FileKind::sniff(&bytes), recur::train::FileKind::Safetensors, "pad {pad}");
        let back = Checkpoint::from_bytes(&bytes, "ckpt")
            .unwrap_or_else(|e| panic!("pad {pad}, header byte {:#04x}: {e}", bytes[0]));
        assert_eq!(back.step, pad as u64);
        assert_eq!(back.params["w"].to_vec1::<f32>().expect("values"), [1.0, -2.0, 3.5]);
    }
    // Headers are padded to 8 bytes, so the low byte takes every multiple of 8.
    assert_eq!(low_bytes.len(), 32, "{low_bytes:?}");
    assert!(low_bytes.contains(&0x80));
    assert!(pickle_like >= 4, "header lengths 0x280..0x580 covered: {pickle_like}");
}

/// Real files written by `torch.save` (zip, its default, and the legacy pickle) and by `pickle`
/// (protocols 2 to 5), generated by `fixtures/torch_save/generate.py`: each is recognised and
/// refused with an error that says how to convert it, and none is taken for safetensors.
#[test]
fn real_torch_save_files_are_recognised_and_refused() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/torch_save");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).expect("fixture folder") {
        let path = entry.expect("entry").path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_string();
        let want = if name.ends_with(".zip.pt") {
            recur::train::FileKind::TorchZip
        } else if name.ends_with(".pkl") || name.ends_with(".legacy.pt") {
            recur::train::FileKind::Pickle
        } else {
            continue;
        };
        seen += 1;
        let bytes = std::fs::read(&path).expect("read fixture");
        assert_eq!(recur::train::FileKind::sniff(&bytes), want, "{name}");
        let err = Checkpoint::load(&path).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains("pickle") && err.contains("save_file"), "{name}: {err}");
    }
    assert!(seen >= 6, "zip, legacy and four pickle protocols: {seen} fixtures");
}
