//! Work buffers of the fused op, kept between calls.
//!
//! A training step asks for the same large buffers every time: the forward's workspace (gates,
//! cell states, the packed recurrent weight) and the backward's scratch (the gate gradients, the
//! packed weight again): for case L of the benchmarks (LSTM, `H = 1024`, `T·B = 3200`) about
//! 95 MB and 68 MB. Allocations that large come fresh from the operating system (`mmap`), so
//! every step page-faulted them in again. A dropped [`Buffer`] goes back to a pool, and the next
//! request it can serve takes it instead.
//!
//! A buffer from the pool holds whatever its last user left. The kernels write every workspace
//! and scratch value before they read it (their tests run them on NaN-filled buffers); callers
//! that add into a buffer ask for [`Buffer::zeroed`].

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Buffers smaller than this many bytes are not kept: the allocator serves them from its own free
/// lists without page faults.
const MIN_BYTES: usize = 1 << 18;

/// Most buffers the pool keeps per element type.
const MAX_BUFFERS: usize = 32;

/// An element type with a pool of its own.
pub(crate) trait Pooled: Copy + Default + Send + 'static {
    /// Most bytes the pool keeps; the oldest buffers go first beyond it.
    const MAX_BYTES: usize = 1 << 29;

    /// The pool of this type's buffers, oldest first; each is fully initialised.
    fn pool() -> &'static Mutex<Vec<Vec<Self>>>;
}

macro_rules! pooled {
    ($t:ty) => {
        impl Pooled for $t {
            fn pool() -> &'static Mutex<Vec<Vec<Self>>> {
                static POOL: Mutex<Vec<Vec<$t>>> = Mutex::new(Vec::new());
                &POOL
            }
        }
    };
}

pooled!(f32);
pooled!(f64);

/// A buffer of `len` values that returns to the pool when dropped. It dereferences to its `len`
/// values; the vector behind it may be longer (up to twice `len`).
pub(crate) struct Buffer<T: Pooled> {
    data: Vec<T>,
    len: usize,
}

impl<T: Pooled> Buffer<T> {
    /// `len` values with unspecified contents (any bit pattern the type allows, NaN included).
    pub(crate) fn any(len: usize) -> Self {
        let bytes = len * std::mem::size_of::<T>();
        let reused = if bytes >= MIN_BYTES { take(len) } else { None };
        Self { data: reused.unwrap_or_else(|| vec![T::default(); len]), len }
    }

    /// `len` zeros.
    pub(crate) fn zeroed(len: usize) -> Self {
        let mut buffer = Self::any(len);
        buffer.fill(T::default());
        buffer
    }
}

/// Takes from the pool the smallest buffer of `len` to `2·len` values, if there is one.
fn take<T: Pooled>(len: usize) -> Option<Vec<T>> {
    let mut pool = T::pool().lock().ok()?;
    let fits = |v: &Vec<T>| v.len() >= len && v.len() / 2 <= len;
    let (at, _) = pool.iter().enumerate().filter(|(_, v)| fits(v)).min_by_key(|(_, v)| v.len())?;
    Some(pool.remove(at))
}

impl<T: Pooled> Drop for Buffer<T> {
    fn drop(&mut self) {
        let size = |v: &Vec<T>| v.len() * std::mem::size_of::<T>();
        let data = std::mem::take(&mut self.data);
        let bytes = size(&data);
        if !(MIN_BYTES..=T::MAX_BYTES).contains(&bytes) {
            return;
        }
        // A poisoned pool only means a panic elsewhere held it; the buffer is then freed.
        let Ok(mut pool) = T::pool().lock() else { return };
        let mut kept: usize = pool.iter().map(size).sum();
        while !pool.is_empty() && (kept + bytes > T::MAX_BYTES || pool.len() >= MAX_BUFFERS) {
            kept -= size(&pool.remove(0));
        }
        pool.push(data);
    }
}

impl<T: Pooled> Deref for Buffer<T> {
    type Target = [T];

    fn deref(&self) -> &[T] {
        &self.data[..self.len]
    }
}

impl<T: Pooled> DerefMut for Buffer<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        &mut self.data[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An element type of the tests' own, so that no other test's op touches its pool.
    #[derive(Clone, Copy, Debug, Default, PartialEq)]
    struct Probe(f64);

    impl Pooled for Probe {
        /// 32 MiB: room for the count bound's 32 test buffers (25 MB), and reached by two halves
        /// without allocating hundreds of megabytes.
        const MAX_BYTES: usize = 128 * MIN_BYTES;

        fn pool() -> &'static Mutex<Vec<Vec<Self>>> {
            static POOL: Mutex<Vec<Vec<Probe>>> = Mutex::new(Vec::new());
            &POOL
        }
    }

    /// Values per buffer in these tests: above the pooling threshold.
    const BIG: usize = MIN_BYTES / 8 * 3;

    /// The tests share the pool, so they run one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn pooled_lens() -> Vec<usize> {
        Probe::pool().lock().unwrap().iter().map(Vec::len).collect()
    }

    #[test]
    fn dropped_buffers_serve_later_requests_and_small_ones_are_not_kept() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        Probe::pool().lock().unwrap().clear();
        let mut a = Buffer::<Probe>::any(BIG);
        a.fill(Probe(7.0));
        let address = a.as_ptr();
        drop(a);
        assert_eq!(pooled_lens(), [BIG]);
        // A request of at least half the size takes it back, contents and all.
        let b = Buffer::<Probe>::any(BIG - 5);
        assert_eq!((b.as_ptr(), b.len()), (address, BIG - 5));
        assert!(b.iter().all(|&v| v == Probe(7.0)));
        assert!(pooled_lens().is_empty());
        drop(b);
        // `zeroed` clears what it takes; a request of under half the size allocates afresh.
        let c = Buffer::<Probe>::zeroed(BIG);
        assert_eq!(c.as_ptr(), address);
        assert!(c.iter().all(|&v| v == Probe(0.0)));
        let d = Buffer::<Probe>::any(BIG / 2 - 1);
        assert_ne!(d.as_ptr(), c.as_ptr());
        drop((c, d));
        assert_eq!(pooled_lens(), [BIG, BIG / 2 - 1]);
        drop(Buffer::<Probe>::any(10));
        assert_eq!(pooled_lens().len(), 2, "small buffers go back to the allocator");
    }

    #[test]
    fn the_pool_is_bounded_and_drops_its_oldest_first() {
        let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        Probe::pool().lock().unwrap().clear();
        let buffers: Vec<Buffer<Probe>> = (0..MAX_BUFFERS + 3).map(|i| Buffer::any(BIG + i)).collect();
        drop(buffers);
        assert_eq!(pooled_lens(), (3..MAX_BUFFERS + 3).map(|i| BIG + i).collect::<Vec<_>>());
        let huge = Probe::MAX_BYTES / 8 / 2 + 1;
        drop((Buffer::<Probe>::any(huge), Buffer::<Probe>::any(huge)));
        assert_eq!(pooled_lens(), [huge], "two of these exceed the byte budget");
        Probe::pool().lock().unwrap().clear();
    }
}
