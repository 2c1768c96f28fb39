//! One recurrent layer (all its directions) as a candle custom op with a hand-derived backward.
//!
//! The op takes three tensors and returns one, so that it fits candle's `CustomOp3`:
//! - `x`: the layer input, `(T, B, I)` (or `(N, I)` for packed sequences), contiguous; or, when
//!   the spec carries `lookup` ids, an embedding table `(V, I)` whose row `ids[r]` is row `r`'s
//!   input (the table is projected once per direction, `V` products instead of `N`);
//! - `state`: the flat initial state, `[h0 (D, B, P) | c0 (D, B, H)]` (`c0` for LSTM only);
//! - a token standing for the parameters: the op reads the parameter tensors themselves (per
//!   direction in PyTorch's registration order `[w_ih, w_hh, (b_ih, b_hh), (w_hr)]`), held in
//!   the op, and the token ties them into candle's graph (see [`ParamLink`]);
//!
//! It returns `[y (T·B, D·P) | h_n (D, B, P) | c_n (D, B, H) | padding]` as one 2-D tensor of rows of
//! `D·P` values: `y`'s rows (`N` when packed; `h_n` and `c_n` are then taken at each sequence's own
//! last step), then the final state, flat, padded with zeros to whole rows. The caller narrows it
//! into its parts (candle's narrow is differentiable, so gradients of any part arrive here); `y`
//! is the first `N` rows, a view that needs no reshape. With `batch_major` (full batches only)
//! `y`'s rows come batch-major, `(B, T)`, the layout of a `batch_first` output.
//!
//! The forward keeps what the backward needs (the kernels' workspaces, in the device's own type:
//! pooled host buffers on the CPU) inside the op, which lives in the autograd graph as long as
//! the output does; the backward reads it without changing it, so backward can run any number of
//! times over one forward and give the same gradients.
//!
//! The backward is a custom op of its own, [`FusedLayerBackward`], over `(x, state, grad)`, which
//! candle dispatches by device: it returns `dx`, `dstate` and the parameters' gradients together
//! as one tensor, which the forward op's `bwd` hands out as views (the parameters' through
//! [`ParamLink`]). A device implementation slots in as that op's `cuda_fwd` (today it returns a
//! [`crate::Error::Device`]) beside the forward's, without touching the layers.

mod backward;
mod cpu;
mod link;
mod spec;
mod split;

use std::any::Any;
use std::sync::{Arc, Mutex};

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Storage, StorageRef, Tensor};

use self::link::ParamLink;
use self::spec::Params;
pub(crate) use self::spec::{CellKind, LayerSpec};
use super::pool::Buffer;
use super::{contiguous_values, Element};

/// How errors name the op.
const OP: &str = "the fused recurrent op";

/// What the forward leaves for the backward: its chunk count and the workspaces, a
/// `Vec<Buffer<T>>` of the forward's element type (one per direction and chunk, then the
/// projected tables).
type Saved = (usize, Box<dyn Any + Send + Sync>);

/// The custom op: one layer, forward and hand-derived backward.
pub(crate) struct FusedLayer {
    spec: LayerSpec,
    /// The parameter tensors, per direction in PyTorch's registration order, contiguous.
    params: Vec<Tensor>,
    /// Where the backward leaves the parameters' gradients, when they are tracked.
    link: Option<Arc<ParamLink>>,
    /// Whether the forward keeps its workspaces for a backward.
    save: bool,
    /// The forward's workspaces (one per direction and chunk) and its chunk count.
    saved: Mutex<Option<Saved>>,
}

impl FusedLayer {
    /// Runs the layer. `x` `(T, B, I)` and `state` flat as described in the module docs, `params`
    /// the layer's parameter tensors in PyTorch's registration order (gradients reach them when
    /// `grad` and they are tracked); returns the flat output. The op joins candle's autograd graph
    /// only when one of its inputs is tracked, and only then keeps its workspaces.
    pub(crate) fn apply(
        spec: LayerSpec,
        x: &Tensor,
        state: &Tensor,
        params: &[Tensor],
        grad: bool,
    ) -> candle_core::Result<Tensor> {
        let x = x.contiguous()?;
        let state = state.contiguous()?;
        let params = params.iter().map(Tensor::contiguous).collect::<candle_core::Result<Vec<_>>>()?;
        let (token, link) = if grad && params.iter().any(Tensor::track_op) {
            let link = Arc::new(ParamLink::default());
            (ParamLink::tie(&params, &link)?, Some(link))
        } else {
            (Tensor::zeros(1, x.dtype(), x.device())?, None)
        };
        let track = x.track_op() || state.track_op() || token.track_op();
        let op = FusedLayer { spec, params, link, save: track, saved: Mutex::new(None) };
        if track {
            x.apply_op3(&state, &token, op)
        } else {
            x.apply_op3_no_bwd(&state, &token, &op)
        }
    }

    /// Borrows the parameter tensors' storage.
    fn param_views(&self) -> candle_core::Result<Vec<View<'_>>> {
        self.params.iter().map(View::of).collect()
    }
}

/// A contiguous tensor's CPU storage, held borrowed.
struct View<'a> {
    storage: StorageRef<'a>,
    start: usize,
    end: usize,
}

impl<'a> View<'a> {
    /// Borrows `t`, which must be contiguous.
    fn of(t: &'a Tensor) -> candle_core::Result<Self> {
        let (storage, layout) = t.storage_and_layout();
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("internal error: {OP} got a non-contiguous tensor");
        };
        Ok(Self { storage, start, end })
    }

    fn slice<T: candle_core::WithDType>(&self) -> candle_core::Result<&[T]> {
        let Storage::Cpu(cpu) = &*self.storage else {
            candle_core::bail!("the fused recurrent kernels run on the CPU only");
        };
        Ok(&cpu.as_slice::<T>()?[self.start..self.end])
    }
}

impl FusedLayer {
    fn check_lengths(&self, x: usize, state: usize, params: &[usize]) -> candle_core::Result<()> {
        let i = self.spec.sizes.input_size;
        // With a lookup, `x` is a table of any number of rows of `I` values.
        let rows = self.spec.rows() * i;
        let x_want =
            if (self.spec.lookup.is_some() && i > 0 && x.is_multiple_of(i)) || (self.spec.x_is_output && x >= rows) {
                x
            } else {
                rows
            };
        let want = (x_want, self.spec.state_len(), self.spec.param_lens());
        if (x, state, params) != (want.0, want.1, &want.2[..]) {
            candle_core::bail!(
                "internal error: fused recurrent op sizes (x, state, params) = {:?}, expected {:?}",
                (x, state, params),
                want
            );
        }
        Ok(())
    }

    fn cpu_fwd_typed<T: Element>(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, state) = (contiguous_values::<T>(s1, l1, OP)?, contiguous_values::<T>(s2, l2, OP)?);
        let views = self.param_views()?;
        let params = Params(views.iter().map(View::slice::<T>).collect::<candle_core::Result<_>>()?);
        self.check_lengths(x.len(), state.len(), &params.0.iter().map(|p| p.len()).collect::<Vec<_>>())?;
        let chunks = self.spec.chunk_count();
        let (out, workspaces) = cpu::forward(&self.spec, self.spec.layer_input(x), state, &params, chunks);
        if self.save {
            let mut saved = self.saved.lock().map_err(|_| candle_core::Error::Msg("poisoned op state".into()))?;
            *saved = Some((chunks, Box::new(workspaces)));
        }
        let shape = Shape::from((self.spec.out_rows(), self.spec.out_width()));
        Ok((T::to_cpu_storage_owned(out), shape))
    }

    /// The backward: runs [`FusedLayerBackward`] (which candle dispatches by device) and hands its
    /// result out as views: the input's and the initial state's gradients, and the parameters'
    /// through the [`ParamLink`].
    fn bwd_op(
        &self,
        x: &Tensor,
        state: &Tensor,
        token: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let saved = self.saved.lock().map_err(|_| candle_core::Error::Msg("poisoned op state".into()))?;
        let grad = grad.contiguous()?;
        let op = FusedLayerBackward { forward: self, out: res, saved: saved.as_ref() };
        let all = x.apply_op3_no_bwd(state, &grad, &op)?;
        drop(saved);
        let (x_len, state_len) = (x.elem_count(), state.elem_count());
        let dx = x.track_op().then(|| all.narrow(0, 0, x_len)?.reshape(x.shape())).transpose()?;
        let dstate = state.track_op().then(|| all.narrow(0, x_len, state_len)?.reshape(state.shape())).transpose()?;
        let dtoken = match &self.link {
            Some(link) => {
                // Views of the one result tensor, one per parameter (they share its storage).
                let mut at = x_len + state_len;
                let mut grads = Vec::with_capacity(self.params.len());
                for p in &self.params {
                    grads.push(all.narrow(0, at, p.elem_count())?.reshape(p.shape())?);
                    at += p.elem_count();
                }
                link.set(grads)?;
                Some(token.zeros_like()?)
            }
            None => None,
        };
        Ok((dx, dstate, dtoken))
    }
}

/// The backward of one [`FusedLayer`] as a custom op of its own, so that candle dispatches it by
/// device (its `cpu_fwd` runs the host backward, [`backward::backward`]; a `cuda_fwd` beside it
/// would run the device one) and no layer code branches on the device.
///
/// It takes `(x, state, grad)`: the forward's input and initial state, and the gradient of its
/// output, all contiguous. It reads what it holds: the forward op (its spec, its parameter
/// tensors and the workspaces it kept, whose type is the device's own), and the forward's output.
/// It returns `[dx | dstate | dparams]` as one 1-D tensor of `x`'s, `state`'s and the parameters'
/// (in registration order) lengths together; [`FusedLayer::bwd_op`] narrows it into its parts.
struct FusedLayerBackward<'a> {
    forward: &'a FusedLayer,
    /// The forward's output, `[y | h_n | c_n | padding]`.
    out: &'a Tensor,
    /// The forward's chunk count and workspaces, when it kept them.
    saved: Option<&'a Saved>,
}

impl FusedLayerBackward<'_> {
    fn cpu_fwd_typed<T: Element>(
        &self,
        (s1, l1): (&CpuStorage, &Layout),
        (s2, l2): (&CpuStorage, &Layout),
        (s3, l3): (&CpuStorage, &Layout),
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let spec = &self.forward.spec;
        let x_s = contiguous_values::<T>(s1, l1, OP)?;
        let state_s = contiguous_values::<T>(s2, l2, OP)?;
        let grad_s = contiguous_values::<T>(s3, l3, OP)?;
        let out_view = View::of(self.out)?;
        let res_s = out_view.slice::<T>()?;
        let param_views = self.forward.param_views()?;
        let params_s = &Params(param_views.iter().map(View::slice::<T>).collect::<candle_core::Result<_>>()?);
        let kept = self.saved.and_then(|(chunks, saved)| Some((*chunks, saved.downcast_ref::<Vec<Buffer<T>>>()?)));
        let (x_len, x_s) = (x_s.len(), spec.layer_input(x_s));
        let all = match kept {
            Some((chunks, ws)) => backward::backward(spec, x_s, x_len, state_s, params_s, res_s, grad_s, ws, chunks),
            None => {
                // The forward ran without keeping its workspaces: run it again.
                let chunks = spec.chunk_count();
                let (_, ws) = cpu::forward(spec, x_s, state_s, params_s, chunks);
                backward::backward(spec, x_s, x_len, state_s, params_s, res_s, grad_s, &ws, chunks)
            }
        };
        let shape = Shape::from(all.len());
        Ok((T::to_cpu_storage_owned(all), shape))
    }
}

impl CustomOp3 for FusedLayerBackward<'_> {
    fn name(&self) -> &'static str {
        match self.forward.spec.kind {
            CellKind::Rnn(_) => "recur-fused-rnn-backward",
            CellKind::Lstm => "recur-fused-lstm-backward",
            CellKind::Gru => "recur-fused-gru-backward",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match s1.dtype() {
            DType::F32 => self.cpu_fwd_typed::<f32>((s1, l1), (s2, l2), (s3, l3)),
            DType::F64 => self.cpu_fwd_typed::<f64>((s1, l1), (s2, l2), (s3, l3)),
            other => candle_core::bail!("the fused recurrent kernels support F32 and F64, got {other:?}"),
        }
    }

    fn cuda_fwd(
        &self,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
        _: &candle_core::CudaStorage,
        _: &Layout,
    ) -> candle_core::Result<(candle_core::CudaStorage, Shape)> {
        Err(candle_core::Error::wrap(crate::Error::Device {
            layer: self.name(),
            message: "the fused recurrent backward has no CUDA implementation yet".into(),
            fix: "run the layer on Device::Cpu".into(),
        }))
    }
}

impl CustomOp3 for FusedLayer {
    fn name(&self) -> &'static str {
        match self.spec.kind {
            CellKind::Rnn(_) => "recur-fused-rnn",
            CellKind::Lstm => "recur-fused-lstm",
            CellKind::Gru => "recur-fused-gru",
        }
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        _token: &CpuStorage,
        _token_layout: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        match s1.dtype() {
            DType::F32 => self.cpu_fwd_typed::<f32>(s1, l1, s2, l2),
            DType::F64 => self.cpu_fwd_typed::<f64>(s1, l1, s2, l2),
            other => candle_core::bail!("the fused recurrent kernels support F32 and F64, got {other:?}"),
        }
    }

    fn bwd(
        &self,
        x: &Tensor,
        state: &Tensor,
        token: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        match x.dtype() {
            DType::F32 | DType::F64 => self.bwd_op(x, state, token, res, grad),
            other => candle_core::bail!("the fused recurrent kernels support F32 and F64, got {other:?}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use candle_core::{DType, Device, Tensor, Var};
    use candle_nn::VarMap;

    use crate::ops::pool::Pooled;
    use crate::{seeded_var_builder, Gru, GruConfig, Lstm, LstmConfig, State};

    /// Output, final state and the gradients of the input, the initial state and every
    /// parameter, flattened, for a loss that weights every output value differently.
    fn run(lstm: bool, bidirectional: bool) -> Vec<Vec<f64>> {
        // 16 rows make two chunks of the batch when there are threads to run them (the split
        // path); a direction's parameter gradient (over 2^15 values) is big enough to be pooled.
        let (t, b, i, h) = (20, 16, 30, 100);
        let dev = Device::Cpu;
        let varmap = VarMap::new();
        let vb = seeded_var_builder(&varmap, 3, DType::F64, &dev);
        let lead = if bidirectional { 2 } else { 1 };
        let values = |n: usize, seed: f64| -> Vec<f64> { (0..n).map(|k| ((k as f64 + seed) * 0.37).sin()).collect() };
        let x = Var::from_vec(values(t * b * i, 1.0), (t, b, i), &dev).unwrap();
        let h0 = Var::from_vec(values(lead * b * h, 2.0), (lead, b, h), &dev).unwrap();
        let c0 = Var::from_vec(values(lead * b * h, 3.0), (lead, b, h), &dev).unwrap();
        let (out, state) = if lstm {
            let layer = Lstm::new(LstmConfig { bidirectional, ..LstmConfig::new(i, h) }, vb).unwrap();
            let state = State { h: h0.as_tensor().clone(), c: Some(c0.as_tensor().clone()) };
            layer.forward(x.as_tensor(), Some(&state)).unwrap()
        } else {
            let layer = Gru::new(GruConfig { bidirectional, ..GruConfig::new(i, h) }, vb).unwrap();
            layer.forward(x.as_tensor(), Some(&State { h: h0.as_tensor().clone(), c: None })).unwrap()
        };
        let weights = Tensor::from_vec(values(out.elem_count(), 4.0), out.shape(), &dev).unwrap();
        let mut loss = (&out * &weights).unwrap().sum_all().unwrap();
        loss = (loss + state.h.sum_all().unwrap()).unwrap();
        if let Some(c) = &state.c {
            loss = (loss + (c * 0.5).unwrap().sum_all().unwrap()).unwrap();
        }
        let grads = loss.backward().unwrap();
        let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f64>().unwrap();
        let mut all = vec![flat(&out), flat(&state.h)];
        let mut vars = vec![x, h0];
        if lstm {
            vars.push(c0);
        }
        let mut params: Vec<(String, Var)> =
            varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        params.sort_by(|a, b| a.0.cmp(&b.0));
        vars.extend(params.into_iter().map(|(_, v)| v));
        all.extend(vars.iter().map(|v| flat(grads.get(v.as_tensor()).unwrap())));
        all
    }

    /// Work buffers come back from the pool holding what their last user left: poisoning every
    /// pooled buffer with NaN changes no output and no gradient (bitwise), through the
    /// workspaces the forward keeps, the backward's scratch, the per-direction and (with more than
    /// one thread) the per-chunk buffers.
    #[test]
    fn stale_pooled_buffers_change_nothing() {
        for (lstm, bidirectional) in [(true, false), (true, true), (false, false), (false, true)] {
            let fresh = run(lstm, bidirectional);
            let poisoned = {
                let mut pool = f64::pool().lock().unwrap();
                assert!(!pool.is_empty(), "the first run left its work buffers in the pool");
                pool.iter_mut().for_each(|v| v.fill(f64::NAN));
                drop(pool);
                run(lstm, bidirectional)
            };
            for (k, (a, b)) in fresh.iter().zip(&poisoned).enumerate() {
                let same = a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                assert!(same, "lstm={lstm} bidirectional={bidirectional}: result {k} changed");
            }
        }
    }

    /// A small two-layer LSTM in f64 (the second layer reads the first's whole output) and a
    /// `(T, B, I)` input.
    fn two_layers(varmap: &VarMap) -> (Lstm, Var) {
        let dev = Device::Cpu;
        let vb = seeded_var_builder(varmap, 11, DType::F64, &dev);
        let layer = Lstm::new(LstmConfig { num_layers: 2, bidirectional: true, ..LstmConfig::new(3, 4) }, vb).unwrap();
        let values: Vec<f64> = (0..5 * 2 * 3).map(|k| (k as f64 * 0.41).cos()).collect();
        (layer, Var::from_vec(values, (5, 2, 3), &dev).unwrap())
    }

    /// The gradient of every parameter, by name.
    fn param_grads(varmap: &VarMap, grads: &candle_core::backprop::GradStore) -> Vec<(String, Vec<f64>)> {
        let mut out: Vec<(String, Vec<f64>)> = varmap
            .data()
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), grads.get(v.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap()))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    /// Two runs of one layer in one graph: each op's parameter link hands its own gradients over,
    /// and the parameters get their sum.
    #[test]
    fn a_layer_run_twice_in_one_graph_gets_the_sum_of_both_gradients() {
        let varmap = VarMap::new();
        let (layer, x) = two_layers(&varmap);
        let twice = (x.as_tensor() * 0.5).unwrap();
        let loss_of = |input: &Tensor, scale: f64| {
            let (out, state) = layer.forward(input, None).unwrap();
            ((out.sqr().unwrap().sum_all().unwrap() * scale).unwrap() + state.h.sum_all().unwrap()).unwrap()
        };
        let first = param_grads(&varmap, &loss_of(x.as_tensor(), 1.0).backward().unwrap());
        let second = param_grads(&varmap, &loss_of(&twice, 3.0).backward().unwrap());
        let both = (loss_of(x.as_tensor(), 1.0) + loss_of(&twice, 3.0)).unwrap();
        let together = param_grads(&varmap, &both.backward().unwrap());
        assert_eq!(together.len(), 16, "every parameter of both layers and directions");
        for ((name, got), ((_, a), (_, b))) in together.iter().zip(first.iter().zip(&second)) {
            for (k, (g, (a, b))) in got.iter().zip(a.iter().zip(b)).enumerate() {
                assert!((g - (a + b)).abs() < 1e-12, "{name}[{k}]: {g} against {a} + {b}");
            }
        }
    }

    /// The links clear what they handed over, and a second backward over the same graph gives the
    /// same gradients again.
    #[test]
    fn backward_twice_over_one_graph_gives_the_same_gradients() {
        let varmap = VarMap::new();
        let (layer, x) = two_layers(&varmap);
        let (out, _) = layer.forward(x.as_tensor(), None).unwrap();
        let loss = out.sqr().unwrap().sum_all().unwrap();
        let first = param_grads(&varmap, &loss.backward().unwrap());
        let second = param_grads(&varmap, &loss.backward().unwrap());
        assert_eq!(first, second);
    }

    /// Parameters that are plain tensors (loaded, not variables) need no link: the input still
    /// gets its gradient, the same as with variables holding the same values.
    #[test]
    fn untracked_parameters_still_give_the_input_gradient() {
        let varmap = VarMap::new();
        let (layer, x) = two_layers(&varmap);
        let plain: std::collections::HashMap<String, Tensor> =
            varmap.data().lock().unwrap().iter().map(|(k, v)| (k.clone(), v.as_tensor().detach())).collect();
        let vb = candle_nn::VarBuilder::from_tensors(plain, DType::F64, &Device::Cpu);
        let frozen = Lstm::new(LstmConfig { num_layers: 2, bidirectional: true, ..LstmConfig::new(3, 4) }, vb).unwrap();
        let dx = |l: &Lstm| -> Vec<f64> {
            let (out, _) = l.forward(x.as_tensor(), None).unwrap();
            let grads = out.sqr().unwrap().sum_all().unwrap().backward().unwrap();
            grads.get(x.as_tensor()).unwrap().flatten_all().unwrap().to_vec1().unwrap()
        };
        assert_eq!(dx(&frozen), dx(&layer));
    }
}
