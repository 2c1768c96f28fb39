//! Splitting a layer's batch between threads.
//!
//! The sequences of a batch are independent: each thread can run the whole time loop, forward and
//! backward, on its own rows, with no synchronisation at all between steps. That is what makes the
//! recurrence scale with threads: splitting each step's small product between threads instead
//! costs two hand-offs per step, and the pointwise passes in between run on one thread.
//!
//! A [`Chunk`] is a contiguous range of batch rows (in the sorted order of packed sequences) with
//! its own sizes and the map from its rows to the layer's rows; the layer gathers each chunk's
//! input into a buffer of the kernels' layout, runs the serial kernels on it, and scatters the
//! results back.

use crate::kernels::Dims;

/// Fewest batch rows a chunk gets, so that each chunk's per-step products keep at least one full
/// 6-row microkernel block and more; chosen, not tuned (B = 16 and 32 were measured, not smaller).
pub(crate) const MIN_CHUNK_ROWS: usize = 8;

/// One thread's share of a layer's batch.
#[derive(Clone, Debug)]
pub(crate) struct Chunk {
    /// First batch row (in the layer's order).
    pub(crate) first: usize,
    /// Number of batch rows.
    pub(crate) batch: usize,
    /// Steps the chunk runs: `T`, or when packed the length of its longest (first) sequence.
    pub(crate) seq_len: usize,
    /// When packed, how many of its sequences run at each of its steps.
    pub(crate) batch_sizes: Option<Vec<usize>>,
    /// For each row of the chunk's `(N_c, ·)` buffers, the layer's row it is.
    pub(crate) rows: Vec<usize>,
}

impl Chunk {
    /// The kernels' sizes for this chunk, the layer's feature sizes kept.
    pub(crate) fn dims(&self, layer: Dims<'_>) -> Dims<'_> {
        Dims { seq_len: self.seq_len, batch: self.batch, batch_sizes: self.batch_sizes.as_deref(), ..layer }
    }
}

/// Cuts the batch of `d` into `parts` chunks of contiguous rows, each at least one row; packed
/// sequences (longest first) are cut so that the chunks hold about the same number of steps.
/// Deterministic in `d` and `parts`.
pub(crate) fn plan(d: Dims<'_>, parts: usize) -> Vec<Chunk> {
    let batch = d.batch;
    let parts = parts.clamp(1, batch.max(1));
    // Steps of each batch row: its length.
    let lengths: Vec<usize> = match d.batch_sizes {
        Some(sizes) => (0..batch).map(|r| sizes.iter().take_while(|&&s| s > r).count()).collect(),
        None => vec![d.seq_len; batch],
    };
    let total: usize = lengths.iter().sum();
    let mut bounds = Vec::with_capacity(parts + 1);
    bounds.push(0);
    let (mut row, mut done) = (0, 0);
    for k in 1..parts {
        let target = total * k / parts;
        while row < batch && done + lengths[row] / 2 < target {
            done += lengths[row];
            row += 1;
        }
        // Every chunk keeps at least one row.
        let lo = bounds[k - 1] + 1;
        let hi = batch - (parts - k);
        let cut = row.clamp(lo, hi);
        while row < cut {
            done += lengths[row];
            row += 1;
        }
        bounds.push(cut);
    }
    bounds.push(batch);
    bounds
        .windows(2)
        .map(|w| {
            let (first, end) = (w[0], w[1]);
            match d.batch_sizes {
                None => Chunk {
                    first,
                    batch: end - first,
                    seq_len: d.seq_len,
                    batch_sizes: None,
                    rows: (0..d.seq_len).flat_map(|t| (first..end).map(move |r| t * batch + r)).collect(),
                },
                Some(sizes) => {
                    let steps = lengths.get(first).copied().unwrap_or(0);
                    let own: Vec<usize> = sizes[..steps].iter().map(|&s| s.min(end) - first).collect();
                    let mut rows = Vec::with_capacity(own.iter().sum());
                    let mut offset = 0;
                    for (t, &s) in sizes.iter().enumerate() {
                        if t < steps {
                            rows.extend((first..s.min(end)).map(|r| offset + r));
                        }
                        offset += s;
                    }
                    Chunk { first, batch: end - first, seq_len: steps, batch_sizes: Some(own), rows }
                }
            }
        })
        .collect()
}

/// Columns `[col, col + width)` of the rows `rows` of `src` (row stride `stride`), packed into
/// `dst`, `(rows.len(), width)`.
pub(crate) fn gather<T: Copy>(dst: &mut [T], src: &[T], stride: usize, col: usize, width: usize, rows: &[usize]) {
    for (&r, part) in rows.iter().zip(dst.chunks_exact_mut(width.max(1))) {
        part.copy_from_slice(&src[r * stride + col..r * stride + col + width]);
    }
}

/// The inverse of [`gather`]: writes the `(rows.len(), width)` buffer `src` into those columns of
/// the rows `rows` of `dst`.
pub(crate) fn scatter<T: Copy>(dst: &mut [T], stride: usize, col: usize, width: usize, rows: &[usize], src: &[T]) {
    for (&r, part) in rows.iter().zip(src.chunks_exact(width.max(1))) {
        dst[r * stride + col..r * stride + col + width].copy_from_slice(part);
    }
}

/// As [`scatter`], adding to what `dst` holds.
pub(crate) fn scatter_add<T: Copy + std::ops::AddAssign>(
    dst: &mut [T],
    stride: usize,
    col: usize,
    width: usize,
    rows: &[usize],
    src: &[T],
) {
    for (&r, part) in rows.iter().zip(src.chunks_exact(width.max(1))) {
        for (d, &s) in dst[r * stride + col..r * stride + col + width].iter_mut().zip(part) {
            *d += s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dims(seq_len: usize, batch: usize, batch_sizes: Option<&[usize]>) -> Dims<'_> {
        Dims { seq_len, batch, batch_sizes, input_size: 1, hidden_size: 1, proj_size: 1 }
    }

    #[test]
    fn full_batches_split_evenly_and_cover_every_row_once() {
        let chunks = plan(dims(3, 5, None), 2);
        assert_eq!(chunks.iter().map(|c| (c.first, c.batch)).collect::<Vec<_>>(), [(0, 2), (2, 3)]);
        let mut all: Vec<usize> = chunks.iter().flat_map(|c| c.rows.clone()).collect();
        assert_eq!(chunks[0].rows, [0, 1, 5, 6, 10, 11]);
        all.sort_unstable();
        assert_eq!(all, (0..15).collect::<Vec<_>>());
    }

    #[test]
    fn packed_batches_split_by_steps() {
        // Lengths 6, 5, 2, 1, 1, 1: 16 steps; the first two rows hold 11 of them.
        let sizes = [6, 3, 2, 2, 2, 1];
        let chunks = plan(dims(6, 6, Some(&sizes)), 2);
        assert_eq!(chunks.iter().map(|c| (c.first, c.batch)).collect::<Vec<_>>(), [(0, 1), (1, 5)]);
        assert_eq!(chunks[0].batch_sizes.as_deref(), Some(&[1, 1, 1, 1, 1, 1][..]));
        assert_eq!(chunks[1].batch_sizes.as_deref(), Some(&[5, 2, 1, 1, 1][..]));
        assert_eq!(chunks[0].rows, [0, 6, 9, 11, 13, 15]);
        assert_eq!(chunks[1].rows, [1, 2, 3, 4, 5, 7, 8, 10, 12, 14]);
        let mut all: Vec<usize> = chunks.iter().flat_map(|c| c.rows.clone()).collect();
        all.sort_unstable();
        assert_eq!(all, (0..16).collect::<Vec<_>>());
    }

    #[test]
    fn every_chunk_gets_a_row() {
        for batch in 1..10 {
            for parts in 1..12 {
                let chunks = plan(dims(4, batch, None), parts);
                assert_eq!(chunks.len(), parts.min(batch));
                assert!(chunks.iter().all(|c| c.batch >= 1));
                assert_eq!(chunks.iter().map(|c| c.batch).sum::<usize>(), batch);
            }
        }
    }

    #[test]
    fn gather_and_scatter_are_inverse() {
        let src: Vec<i32> = (0..24).collect(); // (6, 4)
        let rows = [4, 1, 5];
        let mut g = [0; 6];
        gather(&mut g, &src, 4, 1, 2, &rows);
        assert_eq!(g, [17, 18, 5, 6, 21, 22]);
        let mut dst = vec![0; 24];
        scatter(&mut dst, 4, 1, 2, &rows, &g);
        scatter_add(&mut dst, 4, 1, 2, &rows, &g);
        assert_eq!(&dst[16..20], &[0, 34, 36, 0]);
    }
}
