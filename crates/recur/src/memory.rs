//! Keeping freed memory in the process for reuse instead of handing it back to the kernel: an
//! opt-in for applications (the `recur` command and the benchmarks call it first thing).
//!
//! A training step allocates and frees the same buffers of a few megabytes on every step: the
//! layers' workspaces, candle's gradient tensors (its backward pass starts every gradient as a
//! fresh zero tensor and adds into it). glibc's `malloc` serves blocks that big with a fresh
//! `mmap` and returns them with `munmap`, so each step page-faults all of them in again (the kernel
//! zeroing every page) and each unmap interrupts the other threads' cores to flush their TLBs,
//! costly under a hypervisor. Raising the two thresholds below keeps such blocks in `malloc`'s
//! heaps, where the next step finds them.
//!
//! Measured with `perf stat -e page-faults` on `recur train --text alice29.txt --max-steps 100
//! --threads 2` (Zen 3, 2 vCPUs): 635k page faults and 16.9–17.7 s with glibc's defaults,
//! 38.5k and 14.4–15.0 s with these settings (two runs each, set through `GLIBC_TUNABLES`).
//! `bench_layers --case M-RNN --mode train --threads 1`, alternating with and without, three
//! pairs: 84–120 ms per step with glibc's defaults, 66–75 ms with these settings.
//! The cost is that memory freed after a peak stays mapped until the process exits.
//!
//! The library itself never calls this: the allocator belongs to the application. (The fused
//! layers keep their own large work buffers for reuse, see `ops::pool`; the tensors candle
//! allocates for results and gradients go through `malloc`, and this is what helps those.)

/// Blocks up to this size come from `malloc`'s heaps rather than their own `mmap`: glibc's
/// largest accepted value (half its 64 MiB heap size on 64-bit targets).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const MMAP_THRESHOLD: libc::c_int = 32 << 20;

/// Free memory at the top of a heap is handed back only beyond this much.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIM_THRESHOLD: libc::c_int = 1 << 30;

/// Tells glibc's `malloc` to keep freed blocks of up to 32 MiB for reuse rather than unmapping
/// them, and to hand free heap memory back to the kernel only beyond 1 GiB, so that a training
/// loop's per-step tensors stop page-faulting in afresh on every step. Process-wide; call it
/// early in `main` (it applies to blocks allocated afterwards). Returns whether the settings were taken:
/// `false` with C libraries other than glibc (where it does nothing) or if glibc refused them.
///
/// ```
/// // First thing in `main`, then build and train models as usual.
/// let _kept = recur::keep_freed_memory();
/// ```
pub fn keep_freed_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: `mallopt` only sets the allocator's parameters (under its own lock); it touches
        // no memory of ours. A rejected value (`0` returned) leaves glibc's default in place.
        let taken = unsafe {
            [
                libc::mallopt(libc::M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                libc::mallopt(libc::M_TRIM_THRESHOLD, TRIM_THRESHOLD),
            ]
        };
        taken == [1, 1]
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}
