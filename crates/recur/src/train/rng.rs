//! One seed for everything random in training, and a generator whose state can be saved.
//!
//! [`derive_seed`] splits one user seed into independent seeds by purpose; the convention used by
//! the tasks and the CLI is `derive_seed(seed, "init")` for [`crate::seeded_var_builder`],
//! `derive_seed(seed, "dropout")` for the layers' `seed` field and `derive_seed(seed, "data")`
//! for the [`TrainRng`] that orders the data. With the same seed and thread count, training is
//! then bitwise reproducible.
//!
//! [`TrainRng`] is ChaCha8 (`rand_chacha`, the family of rand's `StdRng`) whose whole state is
//! the seed, the stream and the position in the stream, so [`TrainRng::state`] is a short string a
//! checkpoint stores and [`TrainRng::from_state`] resumes the exact sequence.
//!
//! ```
//! use recur::train::{derive_seed, TrainRng};
//! let mut rng = TrainRng::new(derive_seed(42, "data"));
//! let mut order: Vec<usize> = (0..10).collect();
//! rng.shuffle(&mut order);
//! let saved = rng.state();
//! let next = rng.below(1000);
//! assert_eq!(TrainRng::from_state(&saved)?.below(1000), next);
//! # Ok::<(), recur::Error>(())
//! ```

use rand::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::{Error, Result};

/// An independent seed for one purpose (`"init"`, `"dropout"`, `"data"`, …) derived from `seed`
/// (FNV-1a of the purpose mixed into the seed by SplitMix64).
pub fn derive_seed(seed: u64, purpose: &str) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for byte in purpose.bytes() {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    let mut z = (seed ^ hash).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A seeded ChaCha8 generator whose state can be saved ([`TrainRng::state`]) and restored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TrainRng {
    inner: ChaCha8Rng,
}

impl TrainRng {
    /// A generator seeded from `seed`.
    pub fn new(seed: u64) -> Self {
        Self { inner: ChaCha8Rng::seed_from_u64(seed) }
    }

    /// The whole state as text: `chacha8:<seed hex>:<stream>:<word position>`.
    pub fn state(&self) -> String {
        let seed: String = self.inner.get_seed().iter().map(|b| format!("{b:02x}")).collect();
        format!("chacha8:{seed}:{}:{}", self.inner.get_stream(), self.inner.get_word_pos())
    }

    /// The generator [`TrainRng::state`] described.
    pub fn from_state(state: &str) -> Result<Self> {
        let bad = || {
            Error::checkpoint(
                "<rng state>",
                format!("expected `chacha8:<64 hex digits>:<stream>:<word position>`, got {state:?}"),
                "pass the string TrainRng::state returned",
            )
        };
        let parts: Vec<&str> = state.split(':').collect();
        let [kind, seed_hex, stream, pos] = parts.as_slice() else { return Err(bad()) };
        if *kind != "chacha8" || seed_hex.len() != 64 || !seed_hex.is_ascii() {
            return Err(bad());
        }
        let mut seed = [0u8; 32];
        for (i, byte) in seed.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&seed_hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        let stream: u64 = stream.parse().map_err(|_| bad())?;
        let pos: u128 = pos.parse().map_err(|_| bad())?;
        let mut inner = ChaCha8Rng::from_seed(seed);
        inner.set_stream(stream);
        inner.set_word_pos(pos);
        Ok(Self { inner })
    }

    /// A uniform integer in `0..n` (unbiased, by rejection); 0 when `n` is 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = self.inner.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// A uniform float in [0, 1) with 53 random bits.
    pub fn uniform(&mut self) -> f64 {
        (self.inner.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Shuffles `items` in place (Fisher–Yates, from the last element down).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i as u64 + 1) as usize;
            items.swap(i, j);
        }
    }
}

impl RngCore for TrainRng {
    fn next_u32(&mut self) -> u32 {
        self.inner.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.inner.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.inner.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> std::result::Result<(), rand::Error> {
        self.inner.try_fill_bytes(dest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_round_trip_and_rejects_garbage() -> Result<()> {
        let mut rng = TrainRng::new(5);
        rng.below(10);
        let copy = TrainRng::from_state(&rng.state())?;
        assert_eq!(copy, rng);
        assert!(TrainRng::from_state("chacha8:zz").is_err());
        assert!(TrainRng::from_state("").is_err());
        assert_ne!(derive_seed(1, "init"), derive_seed(1, "data"));
        Ok(())
    }
}
