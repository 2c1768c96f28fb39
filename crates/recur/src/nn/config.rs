//! Layer and cell configurations, with PyTorch's options and defaults.
//!
//! Sizes are required (`new(input_size, hidden_size)`); every other field has PyTorch's default
//! and is set with struct-update syntax:
//! ```
//! use recur::LstmConfig;
//! let cfg = LstmConfig { num_layers: 2, bidirectional: true, ..LstmConfig::new(10, 20) };
//! assert_eq!(cfg.dropout, 0.0);
//! ```

use std::fmt;

use crate::nn::core::CoreConfig;
use crate::ops::recurrent::CellKind;

/// The nonlinearity of a plain RNN.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Nonlinearity {
    /// `tanh` (PyTorch's default).
    #[default]
    Tanh,
    /// `relu`.
    Relu,
}

impl fmt::Display for Nonlinearity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Nonlinearity::Tanh => "tanh",
            Nonlinearity::Relu => "relu",
        })
    }
}

impl std::str::FromStr for Nonlinearity {
    type Err = crate::Error;
    fn from_str(s: &str) -> crate::Result<Self> {
        match s {
            "tanh" => Ok(Nonlinearity::Tanh),
            "relu" => Ok(Nonlinearity::Relu),
            other => Err(crate::Error::config(
                "RNN",
                format!("Unknown nonlinearity '{other}'. Select from 'tanh' or 'relu'"),
                "pass \"tanh\" or \"relu\"",
            )),
        }
    }
}

macro_rules! layer_config {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $default:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// `I`: features per input step. Required.
            pub input_size: usize,
            /// `H`: features of the hidden state. Required.
            pub hidden_size: usize,
            /// Number of stacked layers; layer `k > 0` reads layer `k − 1`'s output. Default 1.
            pub num_layers: usize,
            /// Whether the layers have `b_ih` and `b_hh`. Default `true`.
            pub bias: bool,
            /// Input and output are `(B, T, ·)` instead of `(T, B, ·)`; the state layout is
            /// unchanged. Default `false`.
            pub batch_first: bool,
            /// Probability of zeroing an element of each layer's output except the last, in
            /// training mode only (inverted dropout). Default 0.0.
            pub dropout: f64,
            /// Run a second, time-reversed direction and concatenate both outputs. Default `false`.
            pub bidirectional: bool,
            /// Seed of the generator behind the inter-layer dropout masks. Default 0.
            pub seed: u64,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl $name {
            /// A configuration with the given sizes and PyTorch's defaults for everything else.
            pub fn new(input_size: usize, hidden_size: usize) -> Self {
                Self {
                    input_size,
                    hidden_size,
                    num_layers: 1,
                    bias: true,
                    batch_first: false,
                    dropout: 0.0,
                    bidirectional: false,
                    seed: 0,
                    $($field: $default,)*
                }
            }

            /// The options every layer type shares, as the recurrent core takes them.
            pub(crate) fn core(&self, name: &'static str, kind: CellKind, proj_size: usize) -> CoreConfig {
                CoreConfig {
                    name,
                    kind,
                    input_size: self.input_size,
                    hidden_size: self.hidden_size,
                    num_layers: self.num_layers,
                    bias: self.bias,
                    batch_first: self.batch_first,
                    dropout: self.dropout,
                    bidirectional: self.bidirectional,
                    proj_size,
                    seed: self.seed,
                }
            }
        }
    };
}

layer_config! {
    /// Configuration of [`Rnn`](crate::Rnn), PyTorch's `nn.RNN`.
    RnnConfig {
        /// `tanh` or `relu`. Default `tanh`.
        nonlinearity: Nonlinearity = Nonlinearity::Tanh,
    }
}

layer_config! {
    /// Configuration of [`Lstm`](crate::Lstm), PyTorch's `nn.LSTM`.
    LstmConfig {
        /// When non-zero, `h` is projected to this size by `weight_hr` (`0 < proj_size <
        /// hidden_size`); `c` keeps `hidden_size`. Default 0 (no projection).
        proj_size: usize = 0,
    }
}

layer_config! {
    /// Configuration of [`Gru`](crate::Gru), PyTorch's `nn.GRU`.
    GruConfig {}
}

macro_rules! cell_config {
    ($(#[$doc:meta])* $name:ident { $($(#[$fdoc:meta])* $field:ident : $ty:ty = $default:expr),* $(,)? }) => {
        $(#[$doc])*
        #[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        pub struct $name {
            /// `I`: features of the input. Required.
            pub input_size: usize,
            /// `H`: features of the hidden state. Required.
            pub hidden_size: usize,
            /// Whether the cell has `bias_ih` and `bias_hh`. Default `true`.
            pub bias: bool,
            $($(#[$fdoc])* pub $field: $ty,)*
        }

        impl $name {
            /// A configuration with the given sizes and PyTorch's defaults for everything else.
            pub fn new(input_size: usize, hidden_size: usize) -> Self {
                Self { input_size, hidden_size, bias: true, $($field: $default,)* }
            }
        }
    };
}

cell_config! {
    /// Configuration of [`RnnCell`](crate::RnnCell), PyTorch's `nn.RNNCell`.
    RnnCellConfig {
        /// `tanh` or `relu`. Default `tanh`.
        nonlinearity: Nonlinearity = Nonlinearity::Tanh,
    }
}

cell_config! {
    /// Configuration of [`LstmCell`](crate::LstmCell), PyTorch's `nn.LSTMCell`.
    LstmCellConfig {}
}

cell_config! {
    /// Configuration of [`GruCell`](crate::GruCell), PyTorch's `nn.GRUCell`.
    GruCellConfig {}
}

#[cfg(test)]
mod serde_tests {
    use super::*;

    /// Layer configurations read back from their JSON form as they were, with PyTorch's option
    /// names as keys; an unknown key is refused.
    #[test]
    fn layer_configs_round_trip_through_json() {
        let lstm = LstmConfig { num_layers: 2, bidirectional: true, proj_size: 3, ..LstmConfig::new(5, 7) };
        let json = serde_json::to_value(&lstm).unwrap();
        assert_eq!(json["proj_size"], 3);
        assert_eq!(serde_json::from_value::<LstmConfig>(json).unwrap(), lstm);
        let rnn = RnnConfig { nonlinearity: Nonlinearity::Relu, ..RnnConfig::new(2, 3) };
        let json = serde_json::to_value(&rnn).unwrap();
        assert_eq!(json["nonlinearity"], "relu");
        assert_eq!(serde_json::from_value::<RnnConfig>(json).unwrap(), rnn);
        let mut bad = serde_json::to_value(GruConfig::new(2, 3)).unwrap();
        bad["hiden_size"] = 4.into();
        assert!(serde_json::from_value::<GruConfig>(bad).is_err());
    }
}
