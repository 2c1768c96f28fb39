//! Criterion benchmarks of the `f32` matrix products the layers run, at the shapes of cases M and
//! L of `shared/bench/cases.md`, reported as throughput (1 element = 1 floating-point operation,
//! so criterion's `Gelem/s` reads as GFLOP/s):
//! - `step-fwd`, `step-bwd`: the per-step products `h · W_hhᵀ` and `dgates · W_hh` on the weight
//!   packed once ([`matmul_packed`]);
//! - `proj`, `dx`: the input projection `x · W_ihᵀ` and `dgates · W_ih` over all steps (a
//!   row-major left operand), through [`matmul`] (the `gemm` crate) and [`matmul_blocked`];
//! - `dw`: a weight gradient `dgatesᵀ · x` (a transposed left operand), through [`matmul`] (which
//!   sends it to [`matmul_blocked`]).
//!
//! ```text
//! RAYON_NUM_THREADS=1 RECUR_CPU=avx2 cargo bench -p recur --bench products
//! RAYON_NUM_THREADS=1 cargo bench -p recur --bench products -- 'M/'
//! ```
//!
//! `RECUR_CPU` (`avx512`, `avx2`, `portable`) picks the kernels' path; the `gemm` crate chooses
//! its own.

use std::hint::black_box;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use recur::kernels::gemm::{matmul, num_threads, MatRef};
use recur::kernels::packed::{matmul_blocked, matmul_packed, pack_rhs, packed_len};

/// `(case, name, m, k, n, lhs transposed)`.
const SHAPES: [(&str, &str, usize, usize, usize, bool); 9] = [
    ("M", "step-fwd", 32, 256, 1024, false),
    ("M", "step-bwd", 32, 1024, 256, false),
    ("M", "proj", 3200, 128, 1024, false),
    ("M", "dx", 3200, 1024, 128, false),
    ("M", "dw", 1024, 3200, 256, true),
    ("L", "step-fwd", 64, 1024, 4096, false),
    ("L", "step-bwd", 64, 4096, 1024, false),
    ("L", "proj", 3200, 512, 4096, false),
    ("L", "dw", 4096, 3200, 1024, true),
];

fn values(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed;
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

fn products(c: &mut Criterion) {
    let path = recur::kernels::cpu::selection().chosen;
    let threads = num_threads();
    for (case, name, m, k, n, transposed) in SHAPES {
        let mut group = c.benchmark_group(format!("{case}/{name} {m}x{k}x{n} {path} {threads}t"));
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(2))
            .throughput(Throughput::Elements((2 * m * k * n) as u64));
        let lhs_data = values(m * k, 1);
        let rhs_data = values(k * n, 2);
        // A transposed lhs is the transpose of a row-major (k × m) matrix, as `dgatesᵀ` is.
        let lhs = if transposed { MatRef::new(&lhs_data, k, m).t() } else { MatRef::new(&lhs_data, m, k) };
        // The right-hand side is a weight read transposed (`W_ihᵀ`, `W_hhᵀ`) or as it is.
        let rhs = MatRef::new(&rhs_data, n, k).t();
        let mut dst = vec![0.0f32; m * n];
        if name.starts_with("step") {
            let mut packed = vec![0.0f32; packed_len(k, n)];
            pack_rhs(rhs, &mut packed);
            group
                .bench_function("packed", |b| b.iter(|| matmul_packed(black_box(&mut dst), n, false, lhs, &packed, n)));
        } else {
            group.bench_function("matmul", |b| b.iter(|| matmul(black_box(&mut dst), n, false, lhs, rhs)));
            if !transposed {
                group.bench_function("blocked", |b| {
                    b.iter(|| matmul_blocked(black_box(&mut dst), n, false, lhs, rhs, threads))
                });
            }
        }
        group.finish();
    }
}

criterion_group!(benches, products);
criterion_main!(benches);
