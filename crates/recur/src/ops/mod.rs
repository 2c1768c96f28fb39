//! Glue that turns the slice kernels into candle tensor ops with a backward (custom ops): the
//! recurrent layers' op and what it shares. The training toolkit's own ops (`log_softmax`,
//! `linear_cross_entropy`, the optimizers' in-place update) sit beside their functions in
//! `train`.

use candle_core::{CpuStorage, Layout, WithDType};

pub(crate) mod pool;
pub(crate) mod recurrent;

use crate::kernels::Float;
use pool::Pooled;

/// A [`Float`] as candle stores it: the element types (`f32`, `f64`) of the ops that run the
/// kernels on a tensor's storage, each with a pool of work buffers ([`pool`]). It adds no
/// arithmetic: that is [`Float`]'s alone.
pub(crate) trait Element: Float + WithDType + Pooled {
    /// The values of a CPU storage of this dtype, writable; `None` for another dtype.
    fn values_mut(storage: &mut CpuStorage) -> Option<&mut [Self]>;
}

impl Element for f32 {
    fn values_mut(storage: &mut CpuStorage) -> Option<&mut [Self]> {
        match storage {
            CpuStorage::F32(v) => Some(v),
            _ => None,
        }
    }
}

impl Element for f64 {
    fn values_mut(storage: &mut CpuStorage) -> Option<&mut [Self]> {
        match storage {
            CpuStorage::F64(v) => Some(v),
            _ => None,
        }
    }
}

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
