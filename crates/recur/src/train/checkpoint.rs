//! Self-describing, atomically written, checksummed training checkpoints in safetensors.
//!
//! One file holds everything a run needs to continue bit for bit:
//!
//! - tensors: the model's parameters under their PyTorch names (`lstm.weight_ih_l0`, …, so
//!   `safetensors.torch.load_file` + `load_state_dict(strict=False)` reads them), the optimizer's
//!   buffers under `optim.state.{parameter}.{buffer}` (`exp_avg`, `momentum_buffer`, …) and the
//!   carried truncated-BPTT state under `tbptt.h` / `tbptt.c`;
//! - `__metadata__` (strings): `format` = `recur-checkpoint`, `format_version`, `recur_version`,
//!   `config` and `task` (JSON chosen by the caller: model configuration, vocabulary…), `step`,
//!   `epoch`, `position`, `rng` (a [`crate::train::TrainRng`] state), `optimizer` (kind,
//!   hyper-parameters and step counts as JSON), `schedule` (JSON) and `checksum`.
//!
//! The checksum is CRC-32 (IEEE) over every metadata entry but itself and every tensor's name,
//! dtype, shape and bytes, in sorted order: it catches every single-bit error and truncation
//! that the safetensors structure itself would let through. (A CRC guards against corruption,
//! not tampering; no cryptographic hash is needed for that.)
//!
//! Saving writes a temporary file in the destination folder, `fsync`s it, renames it over the
//! destination and `fsync`s the folder, so the path always holds the old or the new complete
//! checkpoint, whatever the moment of a crash. On error the temporary file is removed and the
//! old checkpoint stays. Loading reads the file once (never more than its size), lets the
//! safetensors parser validate the structure, checks format, version and checksum, and reports
//! every schema problem at once.
//!
//! ```
//! use std::collections::BTreeMap;
//! use candle_core::{Device, Tensor};
//! use recur::train::{save_checkpoint, Checkpoint};
//!
//! let dir = std::env::temp_dir().join(format!("recur-doc-ckpt-{}", std::process::id()));
//! std::fs::create_dir_all(&dir)?;
//! let path = dir.join("model.safetensors");
//! let mut params = BTreeMap::new();
//! params.insert("head.weight".to_string(), Tensor::new(&[[1.0f32, 2.0]], &Device::Cpu)?);
//! let ckpt = Checkpoint { params, step: 7, config: serde_json::json!({"hidden_size": 2}), ..Checkpoint::default() };
//! save_checkpoint(&path, &ckpt)?;
//! let back = Checkpoint::load(&path)?;
//! assert_eq!(back.step, 7);
//! assert_eq!(back.params["head.weight"].to_vec2::<f32>()?, vec![vec![1.0, 2.0]]);
//! # std::fs::remove_dir_all(&dir)?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor, Var};
use safetensors::tensor::TensorView;
use safetensors::SafeTensors;
use serde_json::Value;

use crate::train::OptimizerState;
use crate::{Error, Result, State};

/// The `format` metadata value of a Recur checkpoint.
pub const CHECKPOINT_FORMAT: &str = "recur-checkpoint";
/// The version of the layout this library writes and reads.
pub const CHECKPOINT_FORMAT_VERSION: u32 = 1;

const OPTIM_PREFIX: &str = "optim.state.";
const TBPTT_H: &str = "tbptt.h";
const TBPTT_C: &str = "tbptt.c";
/// Bytes per write call when saving (the granularity of the write hook).
const WRITE_CHUNK: usize = 4096;

/// Everything a training run saves and resumes from.
#[derive(Clone, Debug, Default)]
pub struct Checkpoint {
    /// Model parameters under their PyTorch names (must not start with `optim.` or `tbptt.`).
    pub params: BTreeMap<String, Tensor>,
    /// The optimizer's state ([`crate::train::Optimizer::state_dict`]).
    pub optimizer: Option<OptimizerState>,
    /// The schedule's state ([`crate::train::Scheduler::state_json`]).
    pub schedule: Option<Value>,
    /// The recurrent state carried between truncated-BPTT windows.
    pub carried: Option<State>,
    /// The model/run configuration as JSON (checked on resume with [`Checkpoint::check_config`]).
    pub config: Value,
    /// Task data as JSON: a vocabulary, label names, normalisation constants…
    pub task: Value,
    /// Optimizer steps done.
    pub step: u64,
    /// Epochs done.
    pub epoch: u64,
    /// Position within the epoch (e.g. batches or windows consumed).
    pub position: u64,
    /// The data-order / dropout generator's state ([`crate::train::TrainRng::state`]).
    pub rng: Option<String>,
    /// The Recur version that wrote the file (set on save to [`crate::VERSION`]).
    pub recur_version: String,
}

impl Checkpoint {
    /// The checkpoint as safetensors bytes, checksum included.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut tensors: BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)> = BTreeMap::new();
        for (name, t) in &self.params {
            if name.starts_with("optim.") || name.starts_with("tbptt.") {
                return Err(Error::config(
                    "Checkpoint",
                    format!("parameter name {name} uses a prefix reserved for optimizer and TBPTT state"),
                    "rename the model's parameters (optim.* and tbptt.* are reserved)",
                ));
            }
            tensors.insert(name.clone(), encode(name, t)?);
        }
        let mut meta: HashMap<String, String> = HashMap::new();
        meta.insert("format".into(), CHECKPOINT_FORMAT.into());
        meta.insert("format_version".into(), CHECKPOINT_FORMAT_VERSION.to_string());
        meta.insert("recur_version".into(), crate::VERSION.into());
        meta.insert("config".into(), self.config.to_string());
        meta.insert("task".into(), self.task.to_string());
        meta.insert("step".into(), self.step.to_string());
        meta.insert("epoch".into(), self.epoch.to_string());
        meta.insert("position".into(), self.position.to_string());
        if let Some(rng) = &self.rng {
            meta.insert("rng".into(), rng.clone());
        }
        if let Some(opt) = &self.optimizer {
            meta.insert("optimizer".into(), opt.meta.to_string());
            for (name, t) in &opt.tensors {
                let key = format!("{OPTIM_PREFIX}{name}");
                tensors.insert(key.clone(), encode(&key, t)?);
            }
        }
        if let Some(schedule) = &self.schedule {
            meta.insert("schedule".into(), schedule.to_string());
        }
        if let Some(state) = &self.carried {
            tensors.insert(TBPTT_H.into(), encode(TBPTT_H, &state.h)?);
            if let Some(c) = &state.c {
                tensors.insert(TBPTT_C.into(), encode(TBPTT_C, c)?);
            }
        }
        let checksum =
            checksum(&meta, tensors.iter().map(|(n, (d, s, b))| (n.as_str(), *d, s.as_slice(), b.as_slice())));
        meta.insert("checksum".into(), checksum);
        Ok(serialize_sorted(&meta, &tensors))
    }

    /// Reads and validates a checkpoint file (see the module documentation).
    pub fn load(path: &Path) -> Result<Self> {
        let bytes = fs::read(path)
            .map_err(|e| Error::io("cannot read the checkpoint", path, e, "check the path and its permissions"))?;
        Self::from_bytes(&bytes, &path.display().to_string())
    }

    /// Parses and validates checkpoint bytes; `origin` names them in errors.
    pub fn from_bytes(bytes: &[u8], origin: &str) -> Result<Self> {
        let bad = |message: String, fix: &str| Error::checkpoint(origin, message, fix);
        let convert = "convert it offline: `from safetensors.torch import save_file; save_file(model.state_dict(), \"model.safetensors\")`";
        match FileKind::sniff(bytes) {
            FileKind::Safetensors | FileKind::Unknown => {}
            FileKind::TorchZip => {
                return Err(bad(
                    "this is a zip archive (torch.save's default format, a .pt/.pth file), whose data.pkl \
                     Recur never unpickles"
                        .into(),
                    convert,
                ))
            }
            FileKind::Pickle => {
                return Err(bad(
                    "this is a Python pickle (a legacy torch.save / .pt file), which Recur never unpickles".into(),
                    convert,
                ))
            }
        }
        let st = SafeTensors::deserialize(bytes).map_err(|e| st_error(origin, e))?;
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| st_error(origin, e))?;
        let empty = HashMap::new();
        let meta = header.metadata().as_ref().unwrap_or(&empty);
        let not_ours = "pass a checkpoint written by recur::train::save_checkpoint";
        match meta.get("format") {
            Some(f) if f == CHECKPOINT_FORMAT => {}
            Some(f) => return Err(bad(format!("format is {f:?}, not {CHECKPOINT_FORMAT:?}"), not_ours)),
            None => {
                return Err(bad(
                    "no `format` metadata: this is not a Recur checkpoint (a plain state_dict?)".into(),
                    not_ours,
                ))
            }
        }
        let version = meta.get("format_version").and_then(|v| v.parse::<u32>().ok());
        match version {
            Some(CHECKPOINT_FORMAT_VERSION) => {}
            Some(v) if v > CHECKPOINT_FORMAT_VERSION => {
                return Err(bad(
                    format!(
                        "format version {v} is newer than this Recur ({}) reads ({CHECKPOINT_FORMAT_VERSION})",
                        crate::VERSION
                    ),
                    "upgrade Recur",
                ))
            }
            _ => return Err(bad(format!("unsupported format_version {:?}", meta.get("format_version")), not_ours)),
        }
        let mut tensors = st.tensors();
        tensors.sort_by(|a, b| a.0.cmp(&b.0));
        let stored = meta.get("checksum").cloned().unwrap_or_default();
        let computed = checksum(meta, tensors.iter().map(|(n, v)| (n.as_str(), v.dtype(), v.shape(), v.data())));
        if stored != computed {
            return Err(bad(
                format!(
                    "checksum mismatch (stored {stored:?}, computed {computed:?}): the file is corrupt or was modified"
                ),
                "restore the checkpoint from a backup or an earlier save",
            ));
        }
        let number = |key: &str| -> Result<u64> {
            meta.get(key)
                .and_then(|v| v.parse().ok())
                .ok_or_else(|| bad(format!("metadata `{key}` is missing or not a number"), not_ours))
        };
        let json = |key: &str| -> Result<Option<Value>> {
            match meta.get(key) {
                None => Ok(None),
                Some(s) => serde_json::from_str(s)
                    .map(Some)
                    .map_err(|e| bad(format!("metadata `{key}` is not valid JSON ({e})"), not_ours)),
            }
        };
        let mut ckpt = Checkpoint {
            config: json("config")?.unwrap_or(Value::Null),
            task: json("task")?.unwrap_or(Value::Null),
            step: number("step")?,
            epoch: number("epoch")?,
            position: number("position")?,
            rng: meta.get("rng").cloned(),
            schedule: json("schedule")?,
            recur_version: meta.get("recur_version").cloned().unwrap_or_default(),
            ..Checkpoint::default()
        };
        let optimizer_meta = json("optimizer")?;
        let mut optim_tensors = BTreeMap::new();
        let (mut h, mut c) = (None, None);
        for (name, view) in &tensors {
            let t = decode(origin, name, view)?;
            if let Some(rest) = name.strip_prefix(OPTIM_PREFIX) {
                optim_tensors.insert(rest.to_string(), t);
            } else if name == TBPTT_H {
                h = Some(t);
            } else if name == TBPTT_C {
                c = Some(t);
            } else {
                ckpt.params.insert(name.clone(), t);
            }
        }
        ckpt.optimizer = match optimizer_meta {
            Some(meta) => Some(OptimizerState { meta, tensors: optim_tensors }),
            None if optim_tensors.is_empty() => None,
            None => return Err(bad("optimizer tensors without `optimizer` metadata".into(), not_ours)),
        };
        ckpt.carried = match (h, c) {
            (Some(h), c) => Some(State { h, c }),
            (None, None) => None,
            (None, Some(_)) => return Err(bad("tbptt.c without tbptt.h".into(), not_ours)),
        };
        Ok(ckpt)
    }

    /// Errors unless the checkpoint holds what an exact resume needs: the optimizer state and
    /// the generator state (a resume without them would silently diverge).
    pub fn require_resume_state(&self) -> Result<()> {
        let mut missing = Vec::new();
        if self.optimizer.is_none() {
            missing.push("optimizer state");
        }
        if self.rng.is_none() {
            missing.push("rng state");
        }
        if missing.is_empty() {
            return Ok(());
        }
        Err(Error::checkpoint(
            "<checkpoint>",
            format!("cannot resume exactly: the checkpoint has no {}", missing.join(" and no ")),
            "resume from a checkpoint saved during training, or start a new run from these weights",
        ))
    }

    /// Errors if `expected` (this run's configuration) differs from the saved one in a field
    /// both have, naming every differing field.
    pub fn check_config(&self, expected: &Value) -> Result<()> {
        let (Some(saved), Some(wanted)) = (self.config.as_object(), expected.as_object()) else {
            if &self.config == expected {
                return Ok(());
            }
            return Err(Error::checkpoint(
                "<checkpoint>",
                format!("config mismatch: checkpoint {}, this run {expected}", self.config),
                "use the configuration the checkpoint was trained with",
            ));
        };
        let diffs: Vec<String> = wanted
            .iter()
            .filter_map(|(k, v)| {
                saved.get(k).filter(|s| *s != v).map(|s| format!("{k} is {s} in the checkpoint, {v} here"))
            })
            .collect();
        if diffs.is_empty() {
            return Ok(());
        }
        Err(Error::checkpoint(
            "<checkpoint>",
            format!("config mismatch: {}", diffs.join(", ")),
            "use the configuration the checkpoint was trained with",
        ))
    }
}

/// What a file is, judged by its structure rather than by any single byte.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileKind {
    /// safetensors: an 8-byte little-endian header length `n` with `8 + n` within the file,
    /// followed by a JSON header that opens with `{`. (The first byte is the header length's low
    /// byte, so it can be anything, `0x80` included.)
    Safetensors,
    /// A zip archive (`PK\x03\x04`): what `torch.save` writes since PyTorch 1.6.
    TorchZip,
    /// A Python pickle of protocol 2 to 5 (`0x80` then the protocol number): what
    /// `torch.save(..., _use_new_zipfile_serialization=False)` and `pickle.dump` write.
    Pickle,
    /// None of these (for example a truncated file).
    Unknown,
}

impl FileKind {
    /// Classifies `bytes`. A valid safetensors layout wins over every other reading.
    pub fn sniff(bytes: &[u8]) -> Self {
        if let Some(head) = bytes.get(..8) {
            let n = u64::from_le_bytes(head.try_into().expect("8 bytes"));
            let fits = n >= 2 && (bytes.len() as u64 - 8) >= n;
            if fits && bytes[8] == b'{' {
                return FileKind::Safetensors;
            }
        }
        if bytes.starts_with(b"PK\x03\x04") {
            return FileKind::TorchZip;
        }
        if bytes.len() >= 2 && bytes[0] == 0x80 && (2..=5).contains(&bytes[1]) {
            return FileKind::Pickle;
        }
        FileKind::Unknown
    }
}

/// Copies `params` into `vars` (name → variable), after checking everything first: missing
/// keys, unexpected keys, shape and dtype mismatches and (unless `allow_non_finite`) NaN/Inf
/// values are all reported in one [`Error::Schema`], and then nothing has been changed.
pub fn load_params(params: &BTreeMap<String, Tensor>, vars: &[(String, Var)], allow_non_finite: bool) -> Result<()> {
    let mut problems = Vec::new();
    let missing: Vec<&str> = vars.iter().filter(|(n, _)| !params.contains_key(n)).map(|(n, _)| n.as_str()).collect();
    if !missing.is_empty() {
        problems.push(format!("Missing key(s): {}", missing.join(", ")));
    }
    let known: std::collections::BTreeSet<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
    let unexpected: Vec<&str> = params.keys().map(String::as_str).filter(|n| !known.contains(n)).collect();
    if !unexpected.is_empty() {
        problems.push(format!("Unexpected key(s): {}", unexpected.join(", ")));
    }
    for (name, var) in vars {
        let Some(t) = params.get(name) else { continue };
        if t.dims() != var.dims() {
            problems.push(format!("size mismatch for {name}: checkpoint {:?}, model {:?}", t.dims(), var.dims()));
        } else if t.dtype() != var.dtype() {
            problems.push(format!("dtype mismatch for {name}: checkpoint {:?}, model {:?}", t.dtype(), var.dtype()));
        } else if !allow_non_finite && matches!(t.dtype(), DType::F32 | DType::F64) {
            let values: Vec<f64> = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1()?;
            if let Some(v) = values.iter().find(|v| !v.is_finite()) {
                problems.push(format!("non-finite value {v} in {name}"));
            }
        }
    }
    if !problems.is_empty() {
        return Err(Error::Schema {
            what: "model parameters",
            problems,
            fix: "load a checkpoint of this model with this configuration".into(),
        });
    }
    for (name, var) in vars {
        if let Some(t) = params.get(name) {
            var.set(&t.to_device(var.device())?)?;
        }
    }
    Ok(())
}

/// Saves atomically (see the module documentation).
pub fn save_checkpoint(path: &Path, checkpoint: &Checkpoint) -> Result<()> {
    save_checkpoint_with_hook(path, checkpoint, &mut |_| Ok(()))
}

/// [`save_checkpoint`] calling `before_write(bytes_written_so_far)` before every write of up to
/// 4 KiB; an error it returns aborts the save like a failed write (for fault-injection tests,
/// or to abort a save on a signal). The destination is left untouched on any error.
pub fn save_checkpoint_with_hook(
    path: &Path,
    checkpoint: &Checkpoint,
    before_write: &mut dyn FnMut(u64) -> io::Result<()>,
) -> Result<()> {
    let bytes = checkpoint.to_bytes()?;
    save_bytes_with_hook(path, &bytes, before_write)
}

fn save_bytes_with_hook(path: &Path, bytes: &[u8], before_write: &mut dyn FnMut(u64) -> io::Result<()>) -> Result<()> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else {
        return Err(Error::checkpoint(
            path.display().to_string(),
            "the path has no (UTF-8) file name",
            "pass a file path such as run/model.safetensors",
        ));
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let tmp = dir.join(format!(".{file_name}.tmp-{}-{}", std::process::id(), COUNTER.fetch_add(1, Ordering::Relaxed)));
    let fix = "check that the folder exists, is writable and has free space; the previous file is unchanged";
    let mut file =
        OpenOptions::new().write(true).create_new(true).open(&tmp).map_err(|e| {
            Error::io("cannot create a temporary file to save (atomically) in the folder of", path, e, fix)
        })?;
    let written = (|| -> io::Result<()> {
        let mut done = 0u64;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            before_write(done)?;
            file.write_all(chunk)?;
            done += chunk.len() as u64;
        }
        file.sync_all()
    })();
    drop(file);
    let renamed = written.and_then(|()| fs::rename(&tmp, path));
    if let Err(e) = renamed {
        let _ = fs::remove_file(&tmp);
        return Err(Error::io("cannot save", path, e, fix));
    }
    // Make the rename itself durable.
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io("saved but cannot sync the folder of", path, e, fix))
}

/// Writes `bytes` to `path` atomically, as [`save_checkpoint`] writes a checkpoint: a temporary
/// file `.{name}.tmp-{pid}-{n}` in the same folder, synced, renamed over `path`, then the folder
/// synced, so `path` holds either its old content or all of the new one. For the other files of a
/// run (metrics, plots); [`remove_stale_temp_files`] cleans what a killed process left.
pub fn write_file_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    save_bytes_with_hook(path, bytes, &mut |_| Ok(()))
}

/// Removes the temporary files an interrupted save of `path` left in its folder (they are never
/// read); returns how many were removed. Call it only while no other process saves into that
/// folder (for example while holding the run's folder lock).
pub fn remove_stale_temp_files(path: &Path) -> Result<usize> {
    let Some(file_name) = path.file_name().and_then(|n| n.to_str()) else { return Ok(0) };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => Path::new(".").to_path_buf(),
    };
    let prefix = format!(".{file_name}.tmp-");
    let entries = fs::read_dir(&dir)
        .map_err(|e| Error::io("cannot list the folder of", path, e, "check the folder's permissions"))?;
    let mut removed = 0;
    for entry in entries.flatten() {
        if entry.file_name().to_str().is_some_and(|n| n.starts_with(&prefix)) && fs::remove_file(entry.path()).is_ok() {
            removed += 1;
        }
    }
    Ok(removed)
}

/// The safetensors layout with every key sorted (header and data), so the same checkpoint always
/// gives the same bytes (`safetensors::serialize` writes the metadata in hash-map order).
fn serialize_sorted(
    meta: &HashMap<String, String>,
    tensors: &BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>,
) -> Vec<u8> {
    let sorted_meta: BTreeMap<&String, &String> = meta.iter().collect();
    let meta_json: serde_json::Map<String, Value> =
        sorted_meta.into_iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let mut header = serde_json::Map::new();
    header.insert("__metadata__".into(), Value::Object(meta_json));
    let mut offset = 0usize;
    for (name, (dtype, shape, bytes)) in tensors {
        let entry = serde_json::json!({
            "dtype": format!("{dtype:?}"), "shape": shape, "data_offsets": [offset, offset + bytes.len()]
        });
        header.insert(name.clone(), entry);
        offset += bytes.len();
    }
    let mut text = Value::Object(header).to_string().into_bytes();
    text.resize(text.len().div_ceil(8) * 8, b' ');
    let mut out = Vec::with_capacity(8 + text.len() + offset);
    out.extend_from_slice(&(text.len() as u64).to_le_bytes());
    out.extend_from_slice(&text);
    for (_, _, bytes) in tensors.values() {
        out.extend_from_slice(bytes);
    }
    out
}

fn st_error(origin: &str, e: safetensors::SafeTensorError) -> Error {
    Error::checkpoint(
        origin,
        format!("not a valid safetensors file ({e:?})"),
        "the file is truncated or corrupt: restore it from a backup or an earlier save",
    )
}

fn encode(name: &str, t: &Tensor) -> Result<(safetensors::Dtype, Vec<usize>, Vec<u8>)> {
    let flat = t.flatten_all()?;
    let (dtype, bytes) = match t.dtype() {
        DType::F32 => (safetensors::Dtype::F32, flat.to_vec1::<f32>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::F64 => (safetensors::Dtype::F64, flat.to_vec1::<f64>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::I64 => (safetensors::Dtype::I64, flat.to_vec1::<i64>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::U32 => (safetensors::Dtype::U32, flat.to_vec1::<u32>()?.iter().flat_map(|v| v.to_le_bytes()).collect()),
        DType::U8 => (safetensors::Dtype::U8, flat.to_vec1::<u8>()?),
        other => {
            return Err(Error::config(
                "Checkpoint",
                format!("tensor {name} has dtype {other:?}, which checkpoints do not store"),
                "convert it to F32 or F64",
            ))
        }
    };
    Ok((dtype, t.dims().to_vec(), bytes))
}

fn decode(origin: &str, name: &str, view: &TensorView<'_>) -> Result<Tensor> {
    let dtype = match view.dtype() {
        safetensors::Dtype::F32 => DType::F32,
        safetensors::Dtype::F64 => DType::F64,
        safetensors::Dtype::I64 => DType::I64,
        safetensors::Dtype::U32 => DType::U32,
        safetensors::Dtype::U8 => DType::U8,
        other => {
            return Err(Error::checkpoint(
                origin,
                format!("tensor {name} has dtype {other:?}, which Recur checkpoints never hold"),
                "pass a checkpoint written by Recur",
            ))
        }
    };
    Ok(Tensor::from_raw_buffer(view.data(), dtype, view.shape(), &Device::Cpu)?)
}

fn checksum<'a>(
    meta: &HashMap<String, String>,
    tensors: impl Iterator<Item = (&'a str, safetensors::Dtype, &'a [usize], &'a [u8])>,
) -> String {
    let mut hasher = crc32fast::Hasher::new();
    let mut keys: Vec<&String> = meta.keys().filter(|k| k.as_str() != "checksum").collect();
    keys.sort();
    for k in keys {
        hasher.update(k.as_bytes());
        hasher.update(&[0]);
        hasher.update(meta[k].as_bytes());
        hasher.update(&[0]);
    }
    for (name, dtype, shape, data) in tensors {
        hasher.update(name.as_bytes());
        hasher.update(&[0]);
        hasher.update(format!("{dtype:?}").as_bytes());
        for d in shape {
            hasher.update(&(*d as u64).to_le_bytes());
        }
        hasher.update(data);
    }
    format!("crc32:{:08x}", hasher.finalize())
}
