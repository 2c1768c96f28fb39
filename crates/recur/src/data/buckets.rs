//! Batch order for variable-length examples: each epoch a seeded shuffle, examples of similar
//! length grouped (sorted within pools of 50 batches, so little is padded), then the batches
//! shuffled. Deterministic in `(seed, epoch)`, so a resumed run reads the batches an
//! uninterrupted one would; one epoch's order is computed once and kept.

use std::sync::Mutex;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use crate::train::derive_seed;
use crate::{Error, Result};

/// The batches of one epoch, as example indices.
#[derive(Debug)]
pub struct Buckets {
    lengths: Vec<usize>,
    batch_size: usize,
    seed: u64,
    cached: Mutex<Option<(usize, Vec<Vec<usize>>)>>,
}

impl Buckets {
    /// Batches of `batch_size` over examples of these `lengths`, ordered by `seed`.
    pub fn new(lengths: Vec<usize>, batch_size: usize, seed: u64) -> Self {
        Self { lengths, batch_size: batch_size.max(1), seed, cached: Mutex::new(None) }
    }

    /// Batches in one epoch.
    pub fn len(&self) -> usize {
        self.lengths.len().div_ceil(self.batch_size)
    }

    /// Whether there is no example.
    pub fn is_empty(&self) -> bool {
        self.lengths.is_empty()
    }

    /// Examples per batch (the last one of an epoch may have fewer).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn order(&self, epoch: usize) -> Vec<Vec<usize>> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(derive_seed(self.seed, &format!("batches-{epoch}")));
        let mut items: Vec<usize> = (0..self.lengths.len()).collect();
        items.shuffle(&mut rng);
        for pool in items.chunks_mut(self.batch_size * 50) {
            pool.sort_by_key(|&i| self.lengths[i]);
        }
        let mut batches: Vec<Vec<usize>> = items.chunks(self.batch_size).map(<[usize]>::to_vec).collect();
        batches.shuffle(&mut rng);
        batches
    }

    /// The example indices of batch `index` of `epoch`.
    pub fn batch(&self, epoch: usize, index: usize) -> Result<Vec<usize>> {
        let mut cached = self.cached.lock().unwrap_or_else(|e| e.into_inner());
        if cached.as_ref().is_none_or(|(e, _)| *e != epoch) {
            *cached = Some((epoch, self.order(epoch)));
        }
        let batches = &cached.as_ref().expect("just set").1;
        batches.get(index).cloned().ok_or_else(|| {
            Error::data(
                "batches",
                format!("batch {index} of an epoch of {}", batches.len()),
                "ask for an earlier batch",
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every example once per epoch, batches of similar lengths, the same order for the same
    /// epoch (cached or not) and another for the next.
    #[test]
    fn each_epoch_is_a_seeded_partition() {
        let lengths: Vec<usize> = (0..1000).map(|i| (i * 37) % 50 + 1).collect();
        let b = Buckets::new(lengths.clone(), 10, 3);
        let epoch = |e: usize| (0..b.len()).map(|i| b.batch(e, i).unwrap()).collect::<Vec<_>>();
        let first = epoch(0);
        let mut all: Vec<usize> = first.iter().flatten().copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..1000).collect::<Vec<_>>());
        let spread: usize = first
            .iter()
            .map(|r| r.iter().map(|&i| lengths[i]).max().unwrap() - r.iter().map(|&i| lengths[i]).min().unwrap())
            .sum();
        assert!(spread < first.len() * 5, "bucketed: mean spread {}", spread / first.len());
        assert_eq!(epoch(1).len(), first.len());
        assert_ne!(epoch(1), first);
        assert_eq!(epoch(0), first, "recomputed after another epoch");
        assert_eq!(Buckets::new(lengths, 10, 3).batch(0, 5).unwrap(), first[5], "uncached");
        assert!(b.batch(0, b.len()).is_err());
    }
}
