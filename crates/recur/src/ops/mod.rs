//! Glue that turns the slice kernels into candle tensor ops with a backward (custom ops): the
//! recurrent layers' op and what it shares. The training toolkit's own ops (`log_softmax`,
//! `linear_cross_entropy`, the optimizers' in-place update) sit beside their functions in
//! `train`.

use candle_core::{CpuStorage, Layout};

pub(crate) mod pool;
pub(crate) mod recurrent;

/// The values of a contiguous CPU tensor; `op` names the caller in the error a non-contiguous one
/// gets (an internal error: the ops make their inputs contiguous before they run).
pub(crate) fn contiguous_values<'a, T: candle_core::WithDType>(
    storage: &'a CpuStorage,
    layout: &Layout,
    op: &str,
) -> candle_core::Result<&'a [T]> {
    match layout.contiguous_offsets() {
        Some((start, end)) => Ok(&storage.as_slice::<T>()?[start..end]),
        None => candle_core::bail!("internal error: {op} got a non-contiguous tensor"),
    }
}
