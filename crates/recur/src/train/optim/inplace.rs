//! A rule's update over one parameter's values: cut into chunks on the kernels' threads, and run as
//! a candle in-place op on the parameter's own storage.

use candle_core::{CpuStorage, Layout};

use super::Rule;
use crate::kernels::Float;
use crate::ops::Element;

/// Elements per task of [`update_parallel`]: 128 KiB of `f32` per array.
pub(super) const UPDATE_CHUNK: usize = 1 << 15;

/// `rule.update` over `p`, `g` and the state buffers `bufs` (all of `p`'s length), cut into
/// chunks of [`UPDATE_CHUNK`] elements that run on rayon's pool when `threads` (the kernels'
/// count, [`crate::set_num_threads`]) is above 1. The rules are elementwise, so the result is the
/// same for any cut.
pub(super) fn update_parallel<R: Rule, T: Float>(
    rule: &R,
    step: u64,
    p: &mut [T],
    g: &[T],
    bufs: &mut [Vec<T>],
    threads: usize,
) {
    use rayon::prelude::*;
    if threads <= 1 || p.len() < 2 * UPDATE_CHUNK {
        let mut views: Vec<&mut [T]> = bufs.iter_mut().map(Vec::as_mut_slice).collect();
        rule.update(step, p, g, &mut views);
        return;
    }
    let mut buf_chunks: Vec<_> = bufs.iter_mut().map(|b| b.chunks_mut(UPDATE_CHUNK)).collect();
    let jobs: Vec<_> = p
        .chunks_mut(UPDATE_CHUNK)
        .zip(g.chunks(UPDATE_CHUNK))
        .map(|(p, g)| (p, g, buf_chunks.iter_mut().map(|it| it.next().unwrap_or_default()).collect::<Vec<_>>()))
        .collect();
    jobs.into_par_iter().for_each(|(p, g, mut views)| rule.update(step, p, g, &mut views));
}

/// One parameter's update as a candle in-place op on its storage, with the (contiguous)
/// gradient as the source.
pub(super) struct InPlaceUpdate<'a, R, T> {
    pub(super) rule: &'a R,
    pub(super) step: u64,
    pub(super) threads: usize,
    pub(super) bufs: std::sync::Mutex<&'a mut Vec<Vec<T>>>,
}

impl<R: Rule, T: Element> candle_core::InplaceOp2 for InPlaceUpdate<'_, R, T> {
    fn name(&self) -> &'static str {
        R::KIND
    }

    fn cpu_fwd(
        &self,
        dst: &mut CpuStorage,
        dst_l: &Layout,
        src: &CpuStorage,
        src_l: &Layout,
    ) -> candle_core::Result<()> {
        let (Some((p0, p1)), Some((g0, g1))) = (dst_l.contiguous_offsets(), src_l.contiguous_offsets()) else {
            candle_core::bail!("{}: parameter and gradient must be contiguous", R::KIND)
        };
        let g = &src.as_slice::<T>()?[g0..g1];
        let Some(p) = T::values_mut(dst) else {
            candle_core::bail!("{}: parameter dtype differs from the gradient's", R::KIND)
        };
        let p = &mut p[p0..p1];
        let mut bufs = self.bufs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if g.len() != p.len() || bufs.iter().any(|b| b.len() != p.len()) {
            candle_core::bail!("{}: gradient or state of another size than the parameter", R::KIND)
        }
        update_parallel(self.rule, self.step, p, g, &mut bufs, self.threads);
        Ok(())
    }
}
