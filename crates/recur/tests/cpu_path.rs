//! The CPU path the kernels run follows `RECUR_CPU` as `kernels::cpu` documents it: the lower of
//! the path asked for and the best one the CPU has. Run the suite once per value to check each:
//!
//! ```text
//! RECUR_CPU=portable cargo test --release -p recur --test cpu_path
//! ```

use recur::kernels::cpu::{self, CpuPath};

#[test]
fn the_chosen_path_follows_recur_cpu_and_the_cpu() {
    let selection = cpu::selection();
    let requested = std::env::var("RECUR_CPU").ok();
    assert_eq!(selection.requested, requested);
    assert_eq!(selection.detected, cpu::detected());
    let want = match requested.as_deref().and_then(CpuPath::from_name) {
        Some(asked) => asked.min(selection.detected),
        None => selection.detected,
    };
    assert_eq!(selection.chosen, want, "RECUR_CPU={requested:?} on a CPU with {}", selection.detected);
    assert_eq!(cpu::path(), selection.chosen);
    assert!(selection.chosen.supported());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("avx512bw") {
        assert!(CpuPath::Avx2.supported(), "an AVX-512 CPU of ours also has AVX2 and FMA");
    }
}
