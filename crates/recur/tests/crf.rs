//! `recur::Crf` against pytorch-crf, a brute-force enumeration, finite differences and bad input.
//!
//! The fixtures in `tests/fixtures/crf/*.safetensors` were written by
//! `tests/fixtures/crf/generate.py` (torch and torchcrf versions in each file's metadata); per
//! file they correspond to this snippet:
//!
//! ```python
//! crf = torchcrf.CRF(K, batch_first=batch_first).double()          # params redrawn U(-1, 1)
//! emissions = (scale * torch.randn(T, B, K)).requires_grad_()     # (B, T, K) if batch_first
//! llh = crf(emissions, tags, mask if has_mask else None, reduction=reduction)
//! (llh * grad_output).sum().backward()
//! paths = crf.decode(emissions, mask if has_mask else None)
//! ```
//!
//! Each fixture runs in f64 (log-likelihood and gradients within 1e-12 + 1e-12·|expected|, paths
//! equal) and cast to f32 (within 1e-4 + 1e-4·|expected| of the f64 reference, 1e-3 absolute where
//! the scores are in the thousands; paths equal).

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};
use common::{check_close, values};
use recur::{Crf, CrfReduction, Error};

const EXPECTED_FIXTURES: usize = 8;

fn fixture_paths() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join("fixtures").join("crf");
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .expect("tests/fixtures/crf exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    paths.sort();
    paths
}

struct Fixture {
    name: String,
    meta: HashMap<String, String>,
    tensors: HashMap<String, Tensor>,
}

impl Fixture {
    fn load(path: &Path) -> Self {
        let name = path.file_stem().and_then(|s| s.to_str()).unwrap_or("?").to_string();
        let bytes = std::fs::read(path).expect("fixture readable");
        let (_, header) = safetensors::SafeTensors::read_metadata(&bytes).expect("safetensors header");
        let meta = header.metadata().clone().expect("__metadata__");
        let tensors = candle_core::safetensors::load_buffer(&bytes, &Device::Cpu).expect("fixture tensors");
        Fixture { name, meta, tensors }
    }
    fn meta(&self, key: &str) -> &str {
        self.meta.get(key).unwrap_or_else(|| panic!("{}: metadata `{key}` missing", self.name))
    }
    fn tensor(&self, key: &str) -> &Tensor {
        self.tensors.get(key).unwrap_or_else(|| panic!("{}: tensor `{key}` missing", self.name))
    }
}

/// A CRF whose three parameters are `Var`s holding the given tensors (cast to `dtype`).
fn crf_from(num_tags: usize, batch_first: bool, params: [&Tensor; 3], dtype: DType) -> (Crf, [Var; 3]) {
    let varmap = VarMap::new();
    let names = ["crf.start_transitions", "crf.end_transitions", "crf.transitions"];
    let vars = params.map(|p| Var::from_tensor(&p.to_dtype(dtype).unwrap()).unwrap());
    {
        let mut data = varmap.data().lock().unwrap();
        for (name, var) in names.iter().zip(&vars) {
            data.insert(name.to_string(), var.clone());
        }
    }
    let vb = VarBuilder::from_varmap(&varmap, dtype, &Device::Cpu);
    let crf = Crf::new(num_tags, batch_first, vb.pp("crf")).expect("CRF from fixture parameters");
    assert_eq!(varmap.all_vars().len(), 3, "the CRF must reuse the fixture's variables by name");
    (crf, vars)
}

/// Runs one fixture in `dtype`; returns every mismatch.
fn run_fixture(fx: &Fixture, dtype: DType, atol: f64, rtol: f64) -> Vec<String> {
    let mut errors = Vec::new();
    let num_tags: usize = fx.meta("num_tags").parse().unwrap();
    let batch_first = fx.meta("batch_first") == "true";
    let reduction: CrfReduction = fx.meta("reduction").parse().unwrap();
    let params = ["start_transitions", "end_transitions", "transitions"].map(|n| fx.tensor(&format!("crf.{n}")));
    let (crf, vars) = crf_from(num_tags, batch_first, params, dtype);
    let emissions = Var::from_tensor(&fx.tensor("emissions").to_dtype(dtype).unwrap()).unwrap();
    let mask = (fx.meta("has_mask") == "true").then(|| fx.tensor("mask"));
    let llh = crf.forward(emissions.as_tensor(), fx.tensor("tags"), mask, reduction).expect("forward");
    let expected_llh = fx.tensor("llh");
    let mut check = |what: &str, actual: &Tensor, expected: &Tensor| {
        if let Err(e) = check_close(&format!("{} {dtype:?} {what}", fx.name), actual, expected, atol, rtol) {
            errors.push(e);
        }
    };
    check("llh", &llh, expected_llh);
    let grad_output = fx.tensor("grad_output").to_dtype(dtype).unwrap();
    let loss = llh.mul(&grad_output).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    check("grad.emissions", grads.get(emissions.as_tensor()).expect("emissions grad"), fx.tensor("grad.emissions"));
    for (name, var) in ["start_transitions", "end_transitions", "transitions"].iter().zip(&vars) {
        match grads.get(var.as_tensor()) {
            Some(g) => check(&format!("grad.{name}"), g, fx.tensor(&format!("grad.{name}"))),
            // A single-step batch never reads `transitions`; pytorch-crf's gradient is zero there.
            None => check(&format!("grad.{name}"), &var.zeros_like().unwrap(), fx.tensor(&format!("grad.{name}"))),
        }
    }
    let paths = crf.decode(emissions.as_tensor(), mask).expect("decode");
    let expected: Vec<Vec<u32>> = fx
        .tensor("paths")
        .to_vec2::<i64>()
        .unwrap()
        .into_iter()
        .map(|row| row.into_iter().filter(|&t| t >= 0).map(|t| t as u32).collect())
        .collect();
    if paths != expected {
        errors.push(format!("{} {dtype:?} paths: {paths:?}, pytorch-crf {expected:?}", fx.name));
    }
    errors
}

#[test]
fn fixtures_match_pytorch_crf_f64() {
    let paths = fixture_paths();
    assert_eq!(paths.len(), EXPECTED_FIXTURES, "rerun tests/fixtures/crf/generate.py or update the count");
    let mut reductions = std::collections::BTreeSet::new();
    let mut errors = Vec::new();
    for path in &paths {
        let fx = Fixture::load(path);
        assert_eq!(fx.meta("torchcrf_version"), "0.7.2", "{}", fx.name);
        reductions.insert(fx.meta("reduction").to_string());
        errors.extend(run_fixture(&fx, DType::F64, 1e-12, 1e-12));
    }
    assert_eq!(reductions.len(), 4, "every reduction is covered: {reductions:?}");
    assert!(errors.is_empty(), "{} mismatches:\n{}", errors.len(), errors.join("\n"));
}

#[test]
fn fixtures_match_pytorch_crf_f32() {
    let mut errors = Vec::new();
    for path in fixture_paths() {
        let fx = Fixture::load(&path);
        // f32 holds a log-score of ~1500 (the `large_scores` case) to ~1e-4 only, and each
        // marginal inherits that absolute error.
        let scale: f64 = fx.meta("scale").parse().unwrap();
        let atol = if scale > 10.0 { 1e-3 } else { 1e-4 };
        errors.extend(run_fixture(&fx, DType::F32, atol, 1e-4));
    }
    assert!(errors.is_empty(), "{} mismatches:\n{}", errors.len(), errors.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Independent references: every path enumerated.
// ---------------------------------------------------------------------------------------------

/// Deterministic values in about [−1.5, 1.5).
fn fill(n: usize, seed: u64) -> Vec<f64> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((state >> 11) as f64 / (1u64 << 53) as f64) * 3.0 - 1.5
        })
        .collect()
}

/// A random problem in the `(B, T, …)` layout: emissions, tags, mask, parameters.
struct Problem {
    k: usize,
    t: usize,
    lengths: Vec<usize>,
    emissions: Vec<f64>, // (B, T, K)
    tags: Vec<u32>,      // (B, T)
    start: Vec<f64>,
    end: Vec<f64>,
    trans: Vec<f64>,
}

impl Problem {
    fn new(k: usize, t: usize, lengths: &[usize], seed: u64) -> Self {
        let b = lengths.len();
        let tags = fill(b * t, seed + 1).iter().map(|v| (((v + 1.5) / 3.0) * k as f64) as u32 % k as u32).collect();
        Problem {
            k,
            t,
            lengths: lengths.to_vec(),
            emissions: fill(b * t * k, seed),
            tags,
            start: fill(k, seed + 2),
            end: fill(k, seed + 3),
            trans: fill(k * k, seed + 4),
        }
    }
    fn batch(&self) -> usize {
        self.lengths.len()
    }
    fn crf(&self, batch_first: bool) -> (Crf, [Var; 3]) {
        let dev = &Device::Cpu;
        let start = Tensor::from_slice(&self.start, self.k, dev).unwrap();
        let end = Tensor::from_slice(&self.end, self.k, dev).unwrap();
        let trans = Tensor::from_slice(&self.trans, (self.k, self.k), dev).unwrap();
        crf_from(self.k, batch_first, [&start, &end, &trans], DType::F64)
    }
    /// Emissions, tags and mask in the layout of `batch_first`.
    fn inputs(&self, batch_first: bool) -> (Tensor, Tensor, Tensor) {
        let dev = &Device::Cpu;
        let (b, t, k) = (self.batch(), self.t, self.k);
        let mask: Vec<u8> = (0..b * t).map(|i| u8::from(i % t < self.lengths[i / t])).collect();
        let e = Tensor::from_slice(&self.emissions, (b, t, k), dev).unwrap();
        let y = Tensor::from_slice(&self.tags, (b, t), dev).unwrap();
        let m = Tensor::from_slice(&mask, (b, t), dev).unwrap();
        if batch_first {
            (e, y, m)
        } else {
            let tr = |x: Tensor| x.transpose(0, 1).unwrap().contiguous().unwrap();
            (tr(e), tr(y), tr(m))
        }
    }
    fn path_score(&self, b: usize, path: &[u32]) -> f64 {
        let (t, k) = (self.t, self.k);
        let e = |s: usize, tag: u32| self.emissions[(b * t + s) * k + tag as usize];
        let mut score = self.start[path[0] as usize] + e(0, path[0]);
        for s in 1..path.len() {
            score += self.trans[path[s - 1] as usize * k + path[s] as usize] + e(s, path[s]);
        }
        score + self.end[path[path.len() - 1] as usize]
    }
    /// Every tag sequence of sequence `b`'s length.
    fn all_paths(&self, b: usize) -> Vec<Vec<u32>> {
        let len = self.lengths[b];
        let count = self.k.pow(len as u32);
        (0..count)
            .map(|mut code| {
                let mut path = vec![0u32; len];
                for slot in path.iter_mut().rev() {
                    *slot = (code % self.k) as u32;
                    code /= self.k;
                }
                path
            })
            .collect()
    }
}

#[test]
fn log_likelihood_and_viterbi_equal_enumeration() {
    for (seed, batch_first) in [(1, false), (2, true)] {
        let p = Problem::new(3, 5, &[5, 2, 1, 4], seed);
        let (crf, _) = p.crf(batch_first);
        let (e, y, m) = p.inputs(batch_first);
        let llh = values(&crf.forward(&e, &y, Some(&m), CrfReduction::None).unwrap());
        let paths = crf.decode(&e, Some(&m)).unwrap();
        for b in 0..p.batch() {
            let scores: Vec<f64> = p.all_paths(b).iter().map(|path| p.path_score(b, path)).collect();
            let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_z = max + scores.iter().map(|s| (s - max).exp()).sum::<f64>().ln();
            let gold = p.path_score(b, &p.tags[b * p.t..b * p.t + p.lengths[b]]);
            assert!((llh[b] - (gold - log_z)).abs() < 1e-12, "sequence {b}: {} vs {}", llh[b], gold - log_z);
            let best = p.all_paths(b).into_iter().max_by(|x, y| p.path_score(b, x).total_cmp(&p.path_score(b, y)));
            assert_eq!(Some(&paths[b]), best.as_ref(), "sequence {b}: Viterbi path");
        }
    }
}

#[test]
fn reductions_relate_as_documented() {
    let p = Problem::new(4, 6, &[6, 3, 1], 7);
    let (crf, _) = p.crf(true);
    let (e, y, m) = p.inputs(true);
    let run = |r| crf.forward(&e, &y, Some(&m), r).unwrap();
    let none = values(&run(CrfReduction::None));
    let total: f64 = none.iter().sum();
    let scalar = |t: Tensor| t.to_scalar::<f64>().unwrap();
    assert_eq!(run(CrfReduction::Sum).dims(), &[] as &[usize]);
    assert!((scalar(run(CrfReduction::Sum)) - total).abs() < 1e-12);
    assert!((scalar(run(CrfReduction::Mean)) - total / 3.0).abs() < 1e-12);
    assert!((scalar(run(CrfReduction::TokenMean)) - total / 10.0).abs() < 1e-12);
    assert_eq!(crf.forward(&e, &y, Some(&m), CrfReduction::default()).unwrap().dims(), &[] as &[usize]);
    // Without autograd: the same values, no graph.
    for r in [CrfReduction::None, CrfReduction::TokenMean] {
        let plain = crf.forward_no_grad(&e, &y, Some(&m), r).unwrap();
        assert!(!plain.track_op());
        check_close("forward_no_grad", &plain, &run(r), 1e-15, 0.0).unwrap();
    }
}

#[test]
fn padding_is_never_read() {
    // Different values at the padded steps (emissions and tags) change nothing, and the padded
    // emissions get zero gradient.
    let p = Problem::new(4, 5, &[5, 2, 3], 11);
    let mut q = Problem::new(4, 5, &[5, 2, 3], 11);
    for b in 0..q.batch() {
        for s in q.lengths[b]..q.t {
            q.tags[b * q.t + s] = (q.tags[b * q.t + s] + 1) % 4;
            for j in 0..q.k {
                q.emissions[(b * q.t + s) * q.k + j] = 1e3 * (j as f64 + 1.0);
            }
        }
    }
    let (crf, _) = p.crf(false);
    let (e_p, y_p, m) = p.inputs(false);
    let (e_q, y_q, _) = q.inputs(false);
    let e_q = Var::from_tensor(&e_q).unwrap();
    let llh_p = crf.forward(&e_p, &y_p, Some(&m), CrfReduction::None).unwrap();
    let llh_q = crf.forward(e_q.as_tensor(), &y_q, Some(&m), CrfReduction::None).unwrap();
    check_close("llh with other padding", &llh_q, &llh_p, 0.0, 0.0).unwrap();
    assert_eq!(crf.decode(&e_p, Some(&m)).unwrap(), crf.decode(e_q.as_tensor(), Some(&m)).unwrap());
    let grads = llh_q.sum_all().unwrap().backward().unwrap();
    let g = grads.get(e_q.as_tensor()).unwrap().to_vec3::<f64>().unwrap(); // (T, B, K)
    for (b, &len) in q.lengths.iter().enumerate() {
        for (s, step) in g.iter().enumerate().skip(len) {
            assert!(step[b].iter().all(|&v| v == 0.0), "gradient at padded step {s} of sequence {b}: {:?}", step[b]);
        }
    }
    // Tags at padded steps may hold anything, even values out of range.
    let mut bad_tags: Vec<i64> = y_p.to_dtype(DType::I64).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    bad_tags[4 * 3 + 1] = -100; // step 4 of sequence 1 (length 2)
    let bad_tags = Tensor::from_vec(bad_tags, (5, 3), &Device::Cpu).unwrap();
    let llh_bad = crf.forward(&e_p, &bad_tags, Some(&m), CrfReduction::None).unwrap();
    check_close("llh with -100 padding tags", &llh_bad, &llh_p, 0.0, 0.0).unwrap();
}

#[test]
fn layouts_and_dtypes_agree() {
    let p = Problem::new(3, 4, &[4, 1, 3], 5);
    let (seq, _) = p.crf(false);
    let (bat, _) = p.crf(true);
    let (e_s, y_s, m_s) = p.inputs(false);
    let (e_b, y_b, m_b) = p.inputs(true);
    let llh_s = seq.forward(&e_s, &y_s, Some(&m_s), CrfReduction::None).unwrap();
    let llh_b = bat.forward(&e_b, &y_b, Some(&m_b), CrfReduction::None).unwrap();
    check_close("batch_first vs seq-first", &llh_b, &llh_s, 1e-14, 0.0).unwrap();
    assert_eq!(seq.decode(&e_s, Some(&m_s)).unwrap(), bat.decode(&e_b, Some(&m_b)).unwrap());
    // Tags in I64 and U8, masks in U32, I64, F64: the same result.
    for (tags, mask) in [
        (y_b.to_dtype(DType::I64).unwrap(), m_b.to_dtype(DType::U32).unwrap()),
        (y_b.to_dtype(DType::U8).unwrap(), m_b.to_dtype(DType::I64).unwrap()),
        (y_b.clone(), m_b.to_dtype(DType::F64).unwrap()),
    ] {
        let llh = bat.forward(&e_b, &tags, Some(&mask), CrfReduction::None).unwrap();
        check_close("other index dtypes", &llh, &llh_b, 0.0, 0.0).unwrap();
    }
    // No mask is an all-on mask; a non-contiguous emissions view reads the same.
    let full = Problem::new(3, 4, &[4, 4, 4], 5);
    let (crf, _) = full.crf(true);
    let (e, y, m) = full.inputs(true);
    let with = crf.forward(&e, &y, Some(&m), CrfReduction::Sum).unwrap();
    let without = crf.forward(&e, &y, None, CrfReduction::Sum).unwrap();
    check_close("mask None", &without, &with, 0.0, 0.0).unwrap();
    let strided = e.transpose(0, 1).unwrap().contiguous().unwrap().transpose(0, 1).unwrap();
    check_close("strided", &crf.forward(&strided, &y, None, CrfReduction::Sum).unwrap(), &with, 0.0, 0.0).unwrap();
    assert_eq!(crf.decode(&e, None).unwrap(), crf.decode(&e, Some(&m)).unwrap());
}

#[test]
fn stable_for_huge_scores() {
    // Scores of ±1e4 overflow a plain exp in f32 and f64; -inf marks forbidden transitions.
    let p = Problem::new(3, 4, &[4, 2], 9);
    let (crf, vars) = p.crf(true);
    let (e, y, m) = p.inputs(true);
    let e = (e * 1e4).unwrap();
    let llh = values(&crf.forward(&e, &y, Some(&m), CrfReduction::None).unwrap());
    assert!(llh.iter().all(|v| v.is_finite() && *v <= 1e-9), "{llh:?}");
    let (crf32, _) = crf_from(3, true, [vars[0].as_tensor(), vars[1].as_tensor(), vars[2].as_tensor()], DType::F32);
    let llh32 = values(&crf32.forward(&e.to_dtype(DType::F32).unwrap(), &y, Some(&m), CrfReduction::None).unwrap());
    assert!(llh32.iter().all(|v| v.is_finite()), "{llh32:?}");
    // Forbid 0 -> 1 with -inf: the likelihood stays finite for paths that avoid it and the
    // decoded paths never take it.
    let mut trans = p.trans.clone();
    trans[1] = f64::NEG_INFINITY;
    let trans = Tensor::from_vec(trans, (3, 3), &Device::Cpu).unwrap();
    let (crf, _) = crf_from(3, true, [vars[0].as_tensor(), vars[1].as_tensor(), &trans], DType::F64);
    let (e, _, m) = p.inputs(true);
    for path in crf.decode(&e, Some(&m)).unwrap() {
        assert!(path.windows(2).all(|w| w != [0, 1]), "{path:?}");
    }
    let zeros = Tensor::zeros((2, 4), DType::U32, &Device::Cpu).unwrap();
    let llh = values(&crf.forward(&e, &zeros, Some(&m), CrfReduction::None).unwrap());
    assert!(llh.iter().all(|v| v.is_finite()), "{llh:?}");
}

// ---------------------------------------------------------------------------------------------
// Finite differences in f64.
// ---------------------------------------------------------------------------------------------

const EPS: f64 = 1e-6;

fn gradcheck(batch_first: bool, reduction: CrfReduction, seed: u64) -> Vec<String> {
    let p = Problem::new(3, 5, &[5, 3, 1, 4], seed);
    let weights = fill(p.batch(), seed + 9);
    let loss_of = |p: &Problem| -> (Tensor, Var, [Var; 3]) {
        let (crf, vars) = p.crf(batch_first);
        let (e, y, m) = p.inputs(batch_first);
        let e = Var::from_tensor(&e).unwrap();
        let llh = crf.forward(e.as_tensor(), &y, Some(&m), reduction).unwrap();
        let loss = match reduction {
            CrfReduction::None => llh.mul(&Tensor::from_slice(&weights, p.batch(), &Device::Cpu).unwrap()).unwrap(),
            _ => (llh * weights[0]).unwrap(),
        };
        (loss.sum_all().unwrap(), e, vars)
    };
    let (loss, e, vars) = loss_of(&p);
    let grads = loss.backward().unwrap();
    let value = |p: &Problem| loss_of(p).0.to_scalar::<f64>().unwrap();
    let mut errors = Vec::new();
    // Analytic gradient of emissions is in the input layout; the Problem stores (B, T, K).
    let de = grads.get(e.as_tensor()).unwrap();
    let de = if batch_first { de.clone() } else { de.transpose(0, 1).unwrap().contiguous().unwrap() };
    let analytic: [Vec<f64>; 4] = [
        values(&de),
        values(grads.get(vars[0].as_tensor()).unwrap()),
        values(grads.get(vars[1].as_tensor()).unwrap()),
        values(grads.get(vars[2].as_tensor()).unwrap()),
    ];
    let names = ["emissions", "start_transitions", "end_transitions", "transitions"];
    for (which, (name, analytic)) in names.iter().zip(&analytic).enumerate() {
        fn field(q: &mut Problem, which: usize) -> &mut Vec<f64> {
            match which {
                0 => &mut q.emissions,
                1 => &mut q.start,
                2 => &mut q.end,
                _ => &mut q.trans,
            }
        }
        let mut q = Problem::new(3, 5, &[5, 3, 1, 4], seed);
        for (i, &a) in analytic.iter().enumerate() {
            let base = field(&mut q, which)[i];
            field(&mut q, which)[i] = base + EPS;
            let plus = value(&q);
            field(&mut q, which)[i] = base - EPS;
            let minus = value(&q);
            field(&mut q, which)[i] = base;
            let numeric = (plus - minus) / (2.0 * EPS);
            let pass = (a - numeric).abs() <= 1e-7 + 1e-6 * numeric.abs(); // false for NaN
            if !pass {
                errors.push(format!(
                    "bf={batch_first} {reduction} d{name}[{i}]: analytic {a:.12e}, numeric {numeric:.12e}"
                ));
            }
        }
    }
    errors
}

#[test]
fn gradients_match_finite_differences() {
    let mut errors = Vec::new();
    for (i, (batch_first, reduction)) in [
        (false, CrfReduction::None),
        (true, CrfReduction::None),
        (true, CrfReduction::Sum),
        (false, CrfReduction::Mean),
        (true, CrfReduction::TokenMean),
    ]
    .into_iter()
    .enumerate()
    {
        errors.extend(gradcheck(batch_first, reduction, 100 + i as u64));
    }
    assert!(errors.is_empty(), "{} failures:\n{}", errors.len(), errors.join("\n"));
}

#[test]
fn trains_towards_the_gold_tags() {
    // Gradient ascent on the log-likelihood makes Viterbi return the gold tags.
    let p = Problem::new(3, 4, &[4, 3], 21);
    let (crf, vars) = p.crf(true);
    let (e, y, m) = p.inputs(true);
    let e = Var::from_tensor(&e).unwrap();
    let before = crf.forward(e.as_tensor(), &y, Some(&m), CrfReduction::Sum).unwrap().to_scalar::<f64>().unwrap();
    for _ in 0..200 {
        let grads = crf.forward(e.as_tensor(), &y, Some(&m), CrfReduction::Sum).unwrap().backward().unwrap();
        for v in vars.iter().chain(std::iter::once(&e)) {
            let g = grads.get(v.as_tensor()).unwrap();
            v.set(&(v.as_tensor() + (g * 0.5).unwrap()).unwrap()).unwrap();
        }
    }
    let after = crf.forward(e.as_tensor(), &y, Some(&m), CrfReduction::Sum).unwrap().to_scalar::<f64>().unwrap();
    assert!(after > before && after > -0.05, "{before} -> {after}");
    let gold: Vec<Vec<u32>> = vec![p.tags[0..4].to_vec(), p.tags[4..7].to_vec()];
    assert_eq!(crf.decode(e.as_tensor(), Some(&m)).unwrap(), gold);
}

// ---------------------------------------------------------------------------------------------
// Bad input: typed errors, never a panic.
// ---------------------------------------------------------------------------------------------

fn shape_message(r: recur::Result<impl std::fmt::Debug>) -> String {
    match r {
        Err(e @ Error::Shape { .. }) => e.to_string(),
        other => panic!("expected Error::Shape, got {other:?}"),
    }
}

#[test]
fn bad_input_is_a_typed_error() {
    let dev = &Device::Cpu;
    let varmap = VarMap::new();
    let vb = recur::seeded_var_builder(&varmap, 0, DType::F64, dev);
    assert!(matches!(Crf::new(0, false, vb.pp("zero")), Err(Error::InvalidConfig { .. })));
    assert!(matches!(Crf::new(1 << 17, false, vb.pp("huge")), Err(Error::InvalidConfig { .. })));
    let f16 = recur::seeded_var_builder(&VarMap::new(), 0, DType::F16, dev);
    assert!(matches!(Crf::new(3, false, f16), Err(Error::UnsupportedDType { .. })));
    let crf = Crf::new(3, true, vb.pp("crf")).unwrap();
    assert_eq!(format!("{crf}"), "CRF(num_tags=3)");

    let e = Tensor::zeros((2, 4, 3), DType::F64, dev).unwrap(); // (B, T, K)
    let tags = Tensor::zeros((2, 4), DType::U32, dev).unwrap();
    let ones = Tensor::ones((2, 4), DType::U8, dev).unwrap();
    let sum = CrfReduction::Sum;
    let mask_of = |rows: [[u8; 4]; 2]| Tensor::new(&rows, dev).unwrap();

    // Emissions.
    let msg = shape_message(crf.forward(&e.flatten(1, 2).unwrap(), &tags, None, sum));
    assert!(msg.contains("emissions must have dimension of 3"), "{msg}");
    let msg = shape_message(crf.decode(&Tensor::zeros((2, 4, 5), DType::F64, dev).unwrap(), None));
    assert!(msg.contains("expected last dimension of emissions is 3, got 5"), "{msg}");
    let empty = Tensor::zeros((2, 0, 3), DType::F64, dev).unwrap();
    shape_message(crf.forward(&empty, &Tensor::zeros((2, 0), DType::U32, dev).unwrap(), None, sum));
    shape_message(crf.decode(&empty, None));
    let f32_e = e.to_dtype(DType::F32).unwrap();
    assert!(matches!(crf.forward(&f32_e, &tags, None, sum), Err(Error::DType { what: "emissions", .. })));
    assert!(matches!(crf.decode(&f32_e, None), Err(Error::DType { .. })));

    // Tags.
    let msg = shape_message(crf.forward(&e, &tags.t().unwrap(), None, sum));
    assert!(msg.contains("the first two dimensions of emissions and tags must match"), "{msg}");
    let out_of_range = Tensor::new(&[[0u32, 1, 2, 3], [0, 0, 0, 0]], dev).unwrap();
    let msg = shape_message(crf.forward(&e, &out_of_range, None, sum));
    assert!(msg.contains("tag 3 at step 3 of sequence 0 is out of range for num_tags=3"), "{msg}");
    let negative = Tensor::new(&[[0i64, 0, 0, 0], [0, -1, 0, 0]], dev).unwrap();
    assert!(shape_message(crf.forward(&e, &negative, None, sum)).contains("tag -1"));
    assert!(shape_message(crf.forward(&e, &tags.to_dtype(DType::F32).unwrap(), None, sum)).contains("U8, U32 or I64"));

    // Masks.
    let msg = shape_message(crf.forward(&e, &tags, Some(&ones.t().unwrap()), sum));
    assert!(msg.contains("the first two dimensions of emissions and mask must match"), "{msg}");
    for mask in [mask_of([[1, 1, 1, 1], [0, 1, 1, 1]]), mask_of([[1, 1, 1, 1], [0, 0, 0, 0]])] {
        let msg = shape_message(crf.forward(&e, &tags, Some(&mask), sum));
        assert!(msg.contains("mask of the first timestep must all be on"), "{msg}");
        assert!(shape_message(crf.decode(&e, Some(&mask))).contains("first timestep"));
    }
    let gap = mask_of([[1, 1, 0, 1], [1, 1, 1, 1]]);
    assert!(shape_message(crf.forward(&e, &tags, Some(&gap), sum)).contains("on at step 3 after being off at step 2"));
    assert!(shape_message(crf.decode(&e, Some(&gap))).contains("pad at the end"));
    let two = mask_of([[1, 1, 2, 1], [1, 1, 1, 1]]);
    assert!(shape_message(crf.forward(&e, &tags, Some(&two), sum)).contains("mask values must be 0 or 1, got 2"));

    // Reductions by name.
    assert!(matches!("batchmean".parse::<CrfReduction>(), Err(Error::InvalidConfig { .. })));

    // A seq-first CRF checks the seq-first layout: its first step is row 0.
    let seq_first = Crf::new(3, false, vb.pp("seq")).unwrap();
    let e_tb = Tensor::zeros((4, 2, 3), DType::F64, dev).unwrap();
    let first_off = Tensor::new(&[[1u8, 0], [1, 0], [0, 0], [0, 0]], dev).unwrap();
    assert!(shape_message(seq_first.forward(&e_tb, &tags.t().unwrap(), Some(&first_off), sum))
        .contains("sequence 1 starts off"));
}

#[test]
fn empty_batch_follows_pytorch_crf() {
    // pytorch-crf: 'none' -> an empty tensor, 'sum' -> 0, 'mean' and 'token_mean' -> nan; no paths.
    let dev = &Device::Cpu;
    let varmap = VarMap::new();
    let crf = Crf::new(3, false, recur::seeded_var_builder(&varmap, 0, DType::F64, dev)).unwrap();
    let e = Tensor::zeros((4, 0, 3), DType::F64, dev).unwrap();
    let tags = Tensor::zeros((4, 0), DType::U32, dev).unwrap();
    let run = |r| crf.forward(&e, &tags, None, r).unwrap();
    assert_eq!(run(CrfReduction::None).dims(), &[0]);
    assert_eq!(run(CrfReduction::Sum).to_scalar::<f64>().unwrap(), 0.0);
    assert!(run(CrfReduction::Mean).to_scalar::<f64>().unwrap().is_nan());
    assert!(run(CrfReduction::TokenMean).to_scalar::<f64>().unwrap().is_nan());
    assert_eq!(crf.decode(&e, None).unwrap(), Vec::<Vec<u32>>::new());
}
