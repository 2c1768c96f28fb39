//! `RnnCell`, `LstmCell` and `GruCell`: one time step, PyTorch's `nn.RNNCell`, `nn.LSTMCell` and
//! `nn.GRUCell`, built on the same fused kernels as the layers (a one-step, one-layer run).

use std::fmt;

use candle_core::{DType, Device, Tensor};
use candle_nn::{Init, VarBuilder};

use crate::kernels::rnn::Activation;
use crate::kernels::Dims;
use crate::nn::core::{check_backend, check_input_tensor, check_param, checked_bytes, py_bool};
use crate::nn::{GruCellConfig, LstmCellConfig, Nonlinearity, RnnCellConfig, State};
use crate::ops::recurrent::{CellKind, FusedLayer, LayerSpec};
use crate::{Error, Result};

/// What the three cells share.
struct CellCore {
    name: &'static str,
    kind: CellKind,
    input_size: usize,
    hidden_size: usize,
    bias: bool,
    params: Vec<Tensor>,
    named: Vec<(String, Tensor)>,
    dtype: DType,
    device: Device,
}

impl CellCore {
    fn new(
        name: &'static str,
        kind: CellKind,
        input_size: usize,
        hidden_size: usize,
        bias: bool,
        vb: VarBuilder,
    ) -> Result<Self> {
        for (field, value) in [("input_size", input_size), ("hidden_size", hidden_size)] {
            if value == 0 {
                return Err(Error::config(
                    name,
                    format!("{field} must be greater than zero"),
                    format!("set {field} to a positive number"),
                ));
            }
        }
        let g = kind.gates();
        checked_bytes(name, &[g, hidden_size, input_size.max(hidden_size) + 2])?;
        let (dtype, device) = (vb.dtype(), vb.device().clone());
        check_backend(name, dtype, &device)?;
        let k = 1.0 / (hidden_size as f64).sqrt();
        let init = Init::Uniform { lo: -k, up: k };
        let mut shapes =
            vec![("weight_ih", vec![g * hidden_size, input_size]), ("weight_hh", vec![g * hidden_size, hidden_size])];
        if bias {
            shapes.push(("bias_ih", vec![g * hidden_size]));
            shapes.push(("bias_hh", vec![g * hidden_size]));
        }
        let mut params = Vec::new();
        let mut named = Vec::new();
        for (param, shape) in shapes {
            let t = vb.get_with_hints(shape, param, init)?;
            check_param(name, param, &t, dtype)?;
            params.push(t.clone());
            named.push((param.to_string(), t));
        }
        Ok(Self { name, kind, input_size, hidden_size, bias, params, named, dtype, device })
    }

    fn forward(&self, input: &Tensor, state: Option<&State>, grad: bool) -> Result<State> {
        let name = self.name;
        let rank = input.rank();
        if rank != 1 && rank != 2 {
            return Err(Error::shape(
                name,
                format!("{name}: Expected input to be 1D or 2D, got {rank}D instead"),
                "pass (B, I) for a batch or (I) for one sample",
            ));
        }
        let batched = rank == 2;
        let has_c = self.kind.has_cell_state();
        if let Some(state) = state {
            match (&state.c, has_c) {
                (None, true) => {
                    return Err(Error::shape(
                        name,
                        "LSTMCell expects the state (h, c) but got h only",
                        "pass State::lstm(h, c), or None for zero states",
                    ))
                }
                (Some(_), false) => {
                    return Err(Error::shape(
                        name,
                        format!("{name} has no cell state but the state carries c"),
                        "pass State::h(h), or None for a zero state",
                    ))
                }
                _ => {}
            }
            let parts: Vec<&Tensor> = std::iter::once(&state.h).chain(state.c.as_ref()).collect();
            for (idx, t) in parts.iter().enumerate() {
                let r = t.rank();
                let label = if has_c { format!("hx[{idx}]") } else { "hidden".to_string() };
                if r != 1 && r != 2 {
                    return Err(Error::shape(
                        name,
                        format!("{name}: Expected {label} to be 1D or 2D, got {r}D instead"),
                        "pass the state as (B, H), or (H) for one unbatched sample",
                    ));
                }
                if r != rank {
                    return Err(Error::shape(
                        name,
                        format!("{name}: {label} is {r}-D but the input is {rank}-D"),
                        "give the state the same rank as the input: (B, H) with (B, I), (H) with (I)",
                    ));
                }
            }
        }
        check_input_tensor(name, input, "input", self.dtype, &self.device)?;
        if let Some(state) = state {
            check_input_tensor(name, &state.h, "h0", self.dtype, &self.device)?;
            if let Some(c) = &state.c {
                check_input_tensor(name, c, "c0", self.dtype, &self.device)?;
            }
        }
        let input = if grad { input.clone() } else { input.detach() };
        let x = if batched { input.clone() } else { input.unsqueeze(0)? };
        let (batch, features) = x.dims2()?;
        if features != self.input_size {
            return Err(Error::shape(
                name,
                format!("input has inconsistent input_size: got {features} expected {}", self.input_size),
                format!("feed {} features, or build the cell with input_size = {features}", self.input_size),
            ));
        }
        let h = self.hidden_size;
        let mut states = Vec::new();
        match state {
            Some(state) => {
                for (idx, t) in std::iter::once(&state.h).chain(state.c.as_ref()).enumerate() {
                    let t = if batched { t.clone() } else { t.unsqueeze(0)? };
                    let (b, size) = t.dims2()?;
                    if size != h {
                        return Err(Error::shape(
                            name,
                            format!("hidden{idx} has inconsistent hidden_size: got {size}, expected {h}"),
                            format!("the state must have hidden_size = {h} features"),
                        ));
                    }
                    if b != batch {
                        return Err(Error::shape(
                            name,
                            format!("Input batch size {batch} doesn't match hidden{idx} batch size {b}"),
                            "give the state one row per input row (a batch-1 state is not broadcast)",
                        ));
                    }
                    states.push(if grad { t.flatten_all()? } else { t.detach().flatten_all()? });
                }
            }
            None => {
                let n = if has_c { 2 } else { 1 };
                for _ in 0..n {
                    states.push(Tensor::zeros(batch * h, self.dtype, &self.device)?);
                }
            }
        }
        let dims =
            Dims { seq_len: 1, batch, input_size: self.input_size, hidden_size: h, proj_size: h, batch_sizes: None };
        let spec = LayerSpec {
            kind: self.kind,
            sizes: dims,
            batch_sizes: None,
            directions: 1,
            bias: self.bias,
            lookup: None,
            batch_major: false,
            x_is_output: false,
        };
        let flat_state = Tensor::cat(&states, 0)?;
        // Rows `[y (B) | h' (B) | c' (B)]`, each of `H` values.
        let out = FusedLayer::apply(spec, &x.unsqueeze(0)?, &flat_state, &self.params, grad)?;
        let shape: Vec<usize> = if batched { vec![batch, h] } else { vec![h] };
        let h_next = out.narrow(0, batch, batch)?.reshape(shape.as_slice())?;
        let c_next = if has_c { Some(out.narrow(0, 2 * batch, batch)?.reshape(shape.as_slice())?) } else { None };
        Ok(State { h: h_next, c: c_next })
    }

    fn repr(&self, f: &mut fmt::Formatter<'_>, extra: &str) -> fmt::Result {
        write!(f, "{}({}, {}", self.name, self.input_size, self.hidden_size)?;
        if !self.bias {
            write!(f, ", bias={}", py_bool(self.bias))?;
        }
        write!(f, "{extra})")
    }
}

macro_rules! recurrent_cell {
    ($(#[$doc:meta])* $name:ident, $config:ident) => {
        $(#[$doc])*
        pub struct $name {
            config: $config,
            core: CellCore,
        }

        impl $name {
            /// The configuration the cell was built from.
            pub fn config(&self) -> &$config {
                &self.config
            }

            /// One step: `input` `(B, I)` or `(I)`; `state` `None` for zeros, or `h` `(B, H)`
            /// (`(H)` unbatched) plus `c` for an LSTM cell. Returns the next state, same shapes.
            /// A batch-1 state is not broadcast over a larger batch.
            pub fn forward(&self, input: &Tensor, state: Option<&State>) -> Result<State> {
                self.core.forward(input, state, true)
            }

            /// [`forward`](Self::forward) without autograd (PyTorch's `torch.no_grad()`).
            pub fn forward_no_grad(&self, input: &Tensor, state: Option<&State>) -> Result<State> {
                self.core.forward(input, state, false)
            }

            /// The parameters under their PyTorch names: `weight_ih`, `weight_hh`, `bias_ih`,
            /// `bias_hh`.
            pub fn weights(&self) -> Vec<(String, Tensor)> {
                self.core.named.clone()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(self, f)
            }
        }
    };
}

recurrent_cell! {
    /// One step of an Elman RNN, PyTorch's `nn.RNNCell`.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use recur::{RnnCell, RnnCellConfig};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
    /// let cell = RnnCell::new(RnnCellConfig::new(10, 20), vb)?;
    /// let x = Tensor::ones((3, 10), DType::F32, &Device::Cpu)?;
    /// let state = cell.forward(&x, None)?;
    /// let state = cell.forward(&x, Some(&state))?;
    /// assert_eq!(state.h.dims(), &[3, 20]);
    /// # Ok::<(), recur::Error>(())
    /// ```
    RnnCell, RnnCellConfig
}

recurrent_cell! {
    /// One step of an LSTM, PyTorch's `nn.LSTMCell`; the state is `(h, c)`.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use recur::{LstmCell, LstmCellConfig};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
    /// let cell = LstmCell::new(LstmCellConfig::new(10, 20), vb)?;
    /// let state = cell.forward(&Tensor::ones(10, DType::F32, &Device::Cpu)?, None)?;
    /// assert_eq!(state.c.unwrap().dims(), &[20]);
    /// # Ok::<(), recur::Error>(())
    /// ```
    LstmCell, LstmCellConfig
}

recurrent_cell! {
    /// One step of a GRU, PyTorch's `nn.GRUCell`.
    ///
    /// ```
    /// use candle_core::{DType, Device, Tensor};
    /// use recur::{GruCell, GruCellConfig};
    /// let varmap = candle_nn::VarMap::new();
    /// let vb = recur::seeded_var_builder(&varmap, 0, DType::F32, &Device::Cpu);
    /// let cell = GruCell::new(GruCellConfig::new(10, 20), vb)?;
    /// let state = cell.forward(&Tensor::ones((2, 10), DType::F32, &Device::Cpu)?, None)?;
    /// assert_eq!(state.h.dims(), &[2, 20]);
    /// # Ok::<(), recur::Error>(())
    /// ```
    GruCell, GruCellConfig
}

impl RnnCell {
    /// Builds the cell; parameters `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` come from `vb`.
    pub fn new(config: RnnCellConfig, vb: VarBuilder) -> Result<Self> {
        let act = match config.nonlinearity {
            Nonlinearity::Tanh => Activation::Tanh,
            Nonlinearity::Relu => Activation::Relu,
        };
        let core =
            CellCore::new("RNNCell", CellKind::Rnn(act), config.input_size, config.hidden_size, config.bias, vb)?;
        Ok(Self { config, core })
    }
}

impl LstmCell {
    /// Builds the cell; parameters `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` come from `vb`.
    pub fn new(config: LstmCellConfig, vb: VarBuilder) -> Result<Self> {
        let core = CellCore::new("LSTMCell", CellKind::Lstm, config.input_size, config.hidden_size, config.bias, vb)?;
        Ok(Self { config, core })
    }
}

impl GruCell {
    /// Builds the cell; parameters `weight_ih`, `weight_hh`, `bias_ih`, `bias_hh` come from `vb`.
    pub fn new(config: GruCellConfig, vb: VarBuilder) -> Result<Self> {
        let core = CellCore::new("GRUCell", CellKind::Gru, config.input_size, config.hidden_size, config.bias, vb)?;
        Ok(Self { config, core })
    }
}

impl fmt::Display for RnnCell {
    /// PyTorch's repr, e.g. `RNNCell(10, 20, nonlinearity=relu)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extra = match self.config.nonlinearity {
            Nonlinearity::Tanh => String::new(),
            other => format!(", nonlinearity={other}"),
        };
        self.core.repr(f, &extra)
    }
}

impl fmt::Display for LstmCell {
    /// PyTorch's repr, e.g. `LSTMCell(10, 20)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.repr(f, "")
    }
}

impl fmt::Display for GruCell {
    /// PyTorch's repr, e.g. `GRUCell(10, 20, bias=False)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.core.repr(f, "")
    }
}
