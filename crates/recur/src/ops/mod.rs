//! Glue that turns the slice kernels into candle tensor ops with a backward (custom ops).
//! Nothing else in Recur touches candle's storage.

pub(crate) mod fused;
pub(crate) mod pool;
pub(crate) mod split;
