//! The checks of a layer's inputs, states and parameters: dtype, device, rank and shape, with
//! PyTorch's messages.

use candle_core::{DType, Device, Tensor};

use super::Core;
use crate::nn::State;
use crate::{Error, Result};

impl Core {
    /// Checks the input's and the state's dtype and device and the state's rank.
    pub(super) fn check_inputs(&self, input: &Tensor, state: Option<&State>, unbatched: bool) -> Result<()> {
        if let Some(state) = state {
            self.check_state_ranks(state, unbatched)?;
        }
        self.check_tensor(input, "input")?;
        if let Some(state) = state {
            self.check_tensor(&state.h, "h0")?;
            if let Some(c) = &state.c {
                self.check_tensor(c, "c0")?;
            }
        }
        Ok(())
    }

    pub(super) fn check_features(&self, features: usize) -> Result<()> {
        let want = self.cfg.input_size;
        if features != want {
            return Err(Error::shape(
                self.cfg.name,
                format!("input.size(-1) must be equal to input_size. Expected {want}, got {features}"),
                format!("feed {want} features per step, or build the layer with input_size = {features}"),
            ));
        }
        Ok(())
    }

    /// The initial state `(L·D, B, ·)`, checked, contiguous, detached without `grad`; zeros when
    /// not given.
    pub(super) fn initial_state(
        &self,
        state: Option<&State>,
        unbatched: bool,
        batch: usize,
        grad: bool,
    ) -> Result<(Tensor, Option<Tensor>)> {
        let cfg = &self.cfg;
        let (p, h) = (cfg.output_hidden(), cfg.hidden_size);
        let lead = cfg.num_layers * cfg.directions();
        Ok(match state {
            Some(state) => {
                let h0 = self.check_state_shape(&state.h, unbatched, [lead, batch, p], 0)?;
                let c0 = match &state.c {
                    Some(c) => Some(self.check_state_shape(c, unbatched, [lead, batch, h], 1)?),
                    None => None,
                };
                if grad {
                    (h0, c0)
                } else {
                    (h0.detach(), c0.map(|c| c.detach()))
                }
            }
            None => {
                let zeros = |size| Tensor::zeros((lead, batch, size), self.dtype, &self.device);
                let c0 = if cfg.kind.has_cell_state() { Some(zeros(h)?) } else { None };
                (zeros(p)?, c0)
            }
        })
    }

    pub(super) fn check_tensor(&self, t: &Tensor, what: &'static str) -> Result<()> {
        check_input_tensor(self.cfg.name, t, what, self.dtype, &self.device)
    }

    fn check_state_ranks(&self, state: &State, unbatched: bool) -> Result<()> {
        let name = self.cfg.name;
        let want = if unbatched { 2 } else { 3 };
        let input_desc = if unbatched { "unbatched 2-D" } else { "batched 3-D" };
        match (&state.c, self.cfg.kind.has_cell_state()) {
            (None, true) => {
                return Err(Error::shape(
                    name,
                    "LSTM expects the state (h0, c0) but got h0 only",
                    "pass State::lstm(h0, c0), or None for zero states",
                ))
            }
            (Some(_), false) => {
                return Err(Error::shape(
                    name,
                    format!("{name} has no cell state but the state carries c0"),
                    "pass State::h(h0), or None for a zero state",
                ))
            }
            _ => {}
        }
        let h_rank = state.h.rank();
        if let Some(c) = &state.c {
            let c_rank = c.rank();
            if h_rank != want || c_rank != want {
                return Err(Error::shape(
                    name,
                    format!(
                        "For {input_desc} input, hx and cx should also be {want}-D but got ({h_rank}-D, {c_rank}-D) tensors"
                    ),
                    "give h0 and c0 the same rank as the input: 3-D (L·D, B, H) for batched input, 2-D (L·D, H) \
                     for unbatched input",
                ));
            }
        } else if h_rank != want {
            return Err(Error::shape(
                name,
                format!("For {input_desc} input, hx should also be {want}-D but got {h_rank}-D tensor"),
                "give h0 the same rank as the input: 3-D (L·D, B, H) for batched input, 2-D (L·D, H) for unbatched \
                 input",
            ));
        }
        Ok(())
    }

    /// Checks a state tensor against `(L·D, B, size)` and returns it as 3-D and contiguous.
    fn check_state_shape(&self, t: &Tensor, unbatched: bool, expected: [usize; 3], index: usize) -> Result<Tensor> {
        let name = self.cfg.name;
        let t3 = if unbatched { t.unsqueeze(1)? } else { t.clone() };
        if t3.dims() != expected {
            let which = if self.cfg.kind.has_cell_state() { format!("hidden[{index}]") } else { "hidden".to_string() };
            let shown = if unbatched {
                format!("({}, {})", expected[0], expected[2])
            } else {
                format!("{expected:?}").replace('[', "(").replace(']', ")")
            };
            let state_name = if index == 0 { "h0" } else { "c0" };
            return Err(Error::shape(
                name,
                format!("Expected {which} size {shown}, got {:?}", t.dims()),
                format!(
                    "{state_name} must be (num_layers·num_directions, batch, {}){}; batch_first does not change the \
                     state layout",
                    if index == 0 && self.cfg.proj_size > 0 { "proj_size" } else { "hidden_size" },
                    if unbatched { " without the batch dimension for unbatched input" } else { "" }
                ),
            ));
        }
        Ok(t3.contiguous()?)
    }
}

/// Checks that the parameters' dtype and device can run on the fused kernels.
pub(crate) fn check_backend(name: &'static str, dtype: DType, device: &Device) -> Result<()> {
    if !matches!(dtype, DType::F32 | DType::F64) {
        return Err(Error::UnsupportedDType { layer: name, got: dtype });
    }
    if !device.is_cpu() {
        return Err(Error::Device {
            layer: name,
            message: format!("the fused recurrent kernels run on the CPU, the VarBuilder is on {device:?}"),
            fix: "build the layer with Device::Cpu".into(),
        });
    }
    Ok(())
}

/// Checks a parameter that came from a `VarBuilder` (loaded weights may carry another dtype).
pub(crate) fn check_param(name: &'static str, param: &str, t: &Tensor, dtype: DType) -> Result<()> {
    if t.dtype() != dtype {
        return Err(Error::config(
            name,
            format!("parameter {param} has dtype {:?}, the VarBuilder asks for {dtype:?}", t.dtype()),
            "load the weights with the VarBuilder's dtype",
        ));
    }
    Ok(())
}

/// Checks an input or state tensor's dtype and device against the parameters'.
pub(crate) fn check_input_tensor(
    name: &'static str,
    t: &Tensor,
    what: &'static str,
    dtype: DType,
    device: &Device,
) -> Result<()> {
    if t.dtype() != dtype {
        return Err(Error::DType { layer: name, what, expected: dtype, got: t.dtype() });
    }
    if !t.device().same_device(device) {
        return Err(Error::Device {
            layer: name,
            message: format!("{what} is on {:?} but the parameters are on {device:?}", t.device()),
            fix: format!("move the {what} with `.to_device(&Device::Cpu)`"),
        });
    }
    Ok(())
}
