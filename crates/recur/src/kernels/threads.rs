//! How many threads the kernels' products and layers use, and [`serial`] sections that run them
//! on the calling thread alone.

use std::cell::Cell;
use std::sync::atomic::{AtomicUsize, Ordering};

static THREADS: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static SERIAL: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with every matrix product on the calling thread single-threaded; used when the caller
/// already runs independent work (the two directions of a layer) on separate threads.
pub fn serial<R>(f: impl FnOnce() -> R) -> R {
    let before = SERIAL.with(|s| s.replace(true));
    let out = f();
    SERIAL.with(|s| s.set(before));
    out
}

/// Whether the calling thread is inside [`serial`].
pub(crate) fn serial_active() -> bool {
    SERIAL.with(Cell::get)
}

/// Sets how many threads the layers may use: for their matrix products, the two directions of a
/// bidirectional layer, and chunks of the batch that run their time loops side by side (a layer
/// with at least 16 sequences and enough work cuts its batch between the threads it has left).
/// `0` means "as many as rayon's global pool has" (the default). Results are deterministic for a
/// given thread count; between thread counts they differ by rounding (sums taken in another order).
///
/// The threads come from rayon's global pool, and candle's own CPU ops (the loss, a linear head…)
/// size themselves from `RAYON_NUM_THREADS`: to pin a whole program to `n` threads, set that
/// variable (or build the global pool with `rayon::ThreadPoolBuilder::num_threads(n)`) and call
/// this with `n`.
pub fn set_num_threads(threads: usize) {
    THREADS.store(threads, Ordering::Relaxed);
}

/// The number of threads the kernels use: the value given to [`set_num_threads`], or the size of
/// rayon's global pool when none was given.
pub fn num_threads() -> usize {
    match THREADS.load(Ordering::Relaxed) {
        0 => rayon::current_num_threads().max(1),
        n => n,
    }
}
