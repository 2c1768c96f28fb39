//! Criterion benchmarks of the cases S, M, M-GRU, M-RNN and M-Bi of `shared/bench/cases.md`
//! (training step and inference), and of candle-nn's own step-by-step LSTM and GRU on the same
//! training step, for scale.
//!
//! ```text
//! cargo bench -p recur --bench layers                 # everything, about three minutes
//! cargo bench -p recur --bench layers -- 'M/'         # one case
//! RAYON_NUM_THREADS=1 cargo bench -p recur --bench layers
//! ```
//!
//! Sample sizes are small (these are 1–1000 ms iterations); for the side-by-side numbers against
//! PyTorch use `bench/compare.py`, which follows the protocol of `cases.md`.

mod common;

use std::time::Duration;

use anyhow::Result;
use candle_core::{DType, Device, Tensor};
use candle_nn::rnn::{GRUConfig, GRUState, LSTMConfig, LSTMState, RNN};
use candle_nn::VarMap;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, SamplingMode};
use rand::rngs::StdRng;
use rand::SeedableRng;

use common::{Case, Cell, Mode, Workload};

/// The cases benchmarked here (L is left to `compare.py`: one iteration takes seconds).
const CASES: [&str; 6] = ["S", "M", "M-GRU", "M-RNN", "M-Bi", "M-packed"];
/// The cases candle-nn's own layers are timed on.
const CANDLE_CASES: [&str; 3] = ["S", "M", "M-GRU"];

fn configure(group: &mut BenchmarkGroup<'_, criterion::measurement::WallTime>) {
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));
}

fn case(name: &str) -> Case {
    common::case(name).unwrap_or_else(|err| panic!("{err}"))
}

/// Recur's layers: `<case>/train` and `<case>/infer`.
fn recur_layers(c: &mut Criterion) {
    // As the `recur` command and `bench_layers` do (the first group runs first).
    recur::keep_freed_memory();
    for name in CASES {
        let case = case(name);
        let mut group = c.benchmark_group(name);
        configure(&mut group);
        for mode in Mode::ALL {
            let mut workload =
                Workload::new(&case, mode).unwrap_or_else(|err| panic!("building {name}/{}: {err:#}", mode.name()));
            group.bench_function(mode.name(), |b| {
                b.iter(|| workload.run().unwrap_or_else(|err| panic!("{name}/{}: {err:#}", mode.name())))
            });
        }
        group.finish();
    }
}

/// candle-nn's `rnn::lstm` / `rnn::gru`, stacked by hand for two layers and run step by step
/// (`seq_init`), on the same training step: batch-first input, MSE against a random target,
/// backward to the input, the initial states and every parameter.
struct CandleNn {
    cell: Cell,
    lstms: Vec<candle_nn::rnn::LSTM>,
    grus: Vec<candle_nn::rnn::GRU>,
    /// `(B, T, I)`.
    x: Tensor,
    /// Per layer `(B, H)`.
    h0: Vec<Tensor>,
    c0: Vec<Tensor>,
    /// `(B, T, H)`.
    target: Tensor,
}

impl CandleNn {
    fn new(case: &Case) -> Result<CandleNn> {
        let device = Device::Cpu;
        let varmap = VarMap::new();
        let vb = recur::seeded_var_builder(&varmap, 2024, DType::F32, &device);
        let (mut lstms, mut grus) = (Vec::new(), Vec::new());
        for layer_idx in 0..case.num_layers {
            let input_size = if layer_idx == 0 { case.input_size } else { case.hidden_size };
            // candle-nn's GRU only knows layer 0's names, so each layer gets its own prefix.
            let vb = vb.pp(format!("layer{layer_idx}"));
            match case.cell {
                Cell::Lstm => {
                    lstms.push(candle_nn::rnn::lstm(input_size, case.hidden_size, LSTMConfig::default(), vb)?)
                }
                Cell::Gru => grus.push(candle_nn::rnn::gru(input_size, case.hidden_size, GRUConfig::default(), vb)?),
                Cell::RnnTanh => anyhow::bail!("candle-nn has no Elman RNN"),
            }
        }
        let mut rng = StdRng::seed_from_u64(2025);
        let (batch, seq_len, hidden_size) = (case.batch, case.seq_len, case.hidden_size);
        let x = common::random(&mut rng, (batch, seq_len, case.input_size), true)?;
        let (mut h0, mut c0) = (Vec::new(), Vec::new());
        for _ in 0..case.num_layers {
            h0.push(common::random(&mut rng, (1, batch, hidden_size), true)?.squeeze(0)?);
            if case.cell == Cell::Lstm {
                c0.push(common::random(&mut rng, (1, batch, hidden_size), true)?.squeeze(0)?);
            }
        }
        let target = common::random(&mut rng, (batch, seq_len, hidden_size), false)?;
        Ok(CandleNn { cell: case.cell, lstms, grus, x, h0, c0, target })
    }

    fn train_step(&self) -> Result<()> {
        let mut y = self.x.clone();
        match self.cell {
            Cell::Lstm => {
                for (layer, lstm) in self.lstms.iter().enumerate() {
                    let init = LSTMState::new(self.h0[layer].clone(), self.c0[layer].clone());
                    y = lstm.states_to_tensor(&lstm.seq_init(&y, &init)?)?;
                }
            }
            _ => {
                for (layer, gru) in self.grus.iter().enumerate() {
                    let init = GRUState { h: self.h0[layer].clone() };
                    // Not `states_to_tensor`: candle-nn's GRU concatenates to (B, T·H) where its
                    // LSTM stacks to (B, T, H).
                    let hs = gru.seq_init(&y, &init)?.into_iter().map(|state| state.h).collect::<Vec<_>>();
                    y = Tensor::stack(&hs, 1)?;
                }
            }
        }
        let loss = candle_nn::loss::mse(&y, &self.target)?;
        std::hint::black_box(loss.backward()?);
        Ok(())
    }
}

fn candle_nn_layers(c: &mut Criterion) {
    let mut group = c.benchmark_group("candle-nn");
    configure(&mut group);
    for name in CANDLE_CASES {
        let baseline = CandleNn::new(&case(name)).unwrap_or_else(|err| panic!("building {name}: {err:#}"));
        group.bench_function(format!("{name}/train"), |b| {
            b.iter(|| baseline.train_step().unwrap_or_else(|err| panic!("{name}: {err:#}")))
        });
    }
    group.finish();
}

criterion_group!(benches, recur_layers, candle_nn_layers);
criterion_main!(benches);
