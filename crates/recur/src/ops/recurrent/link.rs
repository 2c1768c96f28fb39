//! How a layer's parameter tensors reach its op in candle's graph: [`ParamLink`].

use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor};

/// How a layer's parameter tensors reach its op in candle's graph without being copied into one
/// tensor (a custom op takes at most three inputs, and a concatenation would cost a copy of every
/// weight in the forward and a zero-filled gradient plus an addition of that copy's size in the
/// backward).
///
/// [`ParamLink::tie`] chains one small op per parameter tensor into a one-value token, which is
/// the layer op's third input; the layer op reads the tensors themselves. In the backward candle
/// runs the layer op first (it consumes the token), which leaves every parameter's gradient here,
/// and then the chain, last link first, whose op `k` hands parameter `k` its gradient. The first
/// link, run last, clears what it read, so a later backward over the same graph starts afresh.
#[derive(Default)]
pub(crate) struct ParamLink {
    grads: Mutex<Option<Vec<Tensor>>>,
}

impl ParamLink {
    /// The token standing for `params` (all of them tracked by candle through it).
    pub(super) fn tie(params: &[Tensor], link: &Arc<ParamLink>) -> candle_core::Result<Tensor> {
        let mut token: Option<Tensor> = None;
        for (index, param) in params.iter().enumerate() {
            let op = ParamChain { link: link.clone(), index };
            token = Some(match token {
                None => param.apply_op1(op)?,
                Some(previous) => previous.apply_op2(param, op)?,
            });
        }
        token.ok_or_else(|| candle_core::Error::Msg("internal error: a recurrent layer without parameters".into()))
    }

    pub(super) fn set(&self, grads: Vec<Tensor>) -> candle_core::Result<()> {
        *self.grads.lock().map_err(|_| candle_core::Error::Msg("poisoned parameter link".into()))? = Some(grads);
        Ok(())
    }

    /// Parameter `index`'s gradient; the first link also clears them.
    fn take(&self, index: usize) -> candle_core::Result<Tensor> {
        let mut grads = self.grads.lock().map_err(|_| candle_core::Error::Msg("poisoned parameter link".into()))?;
        let Some(grad) = grads.as_ref().and_then(|g| g.get(index)).cloned() else {
            candle_core::bail!("internal error: a parameter link ran its backward before the layer's");
        };
        if index == 0 {
            *grads = None;
        }
        Ok(grad)
    }
}

/// Link `index` of a [`ParamLink`] chain: parameter `index` (and the previous link's token) in,
/// a one-value token out.
struct ParamChain {
    link: Arc<ParamLink>,
    index: usize,
}

/// A one-value zero of `storage`'s dtype.
fn token_of(storage: &CpuStorage) -> candle_core::Result<(CpuStorage, Shape)> {
    let zero = match storage.dtype() {
        DType::F32 => CpuStorage::F32(vec![0.0]),
        DType::F64 => CpuStorage::F64(vec![0.0]),
        other => candle_core::bail!("the fused recurrent kernels support F32 and F64, got {other:?}"),
    };
    Ok((zero, Shape::from(1)))
}

impl CustomOp1 for ParamChain {
    fn name(&self) -> &'static str {
        "recur-parameter-link"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, _layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        token_of(storage)
    }

    fn bwd(&self, _param: &Tensor, _res: &Tensor, _grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(self.link.take(self.index)?))
    }
}

impl CustomOp2 for ParamChain {
    fn name(&self) -> &'static str {
        "recur-parameter-link"
    }

    fn cpu_fwd(
        &self,
        token: &CpuStorage,
        _token_layout: &Layout,
        _param: &CpuStorage,
        _param_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        token_of(token)
    }

    fn bwd(
        &self,
        _token: &Tensor,
        _param: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        // The token's gradient only carries the chain on to the previous link.
        Ok((Some(grad.clone()), Some(self.link.take(self.index)?)))
    }
}
