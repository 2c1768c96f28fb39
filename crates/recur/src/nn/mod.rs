//! Parameter-owning layers and cells.

mod cell;
mod config;
mod core;
mod init;
mod layers;
mod state;

pub use cell::{GruCell, LstmCell, RnnCell};
pub use config::{GruCellConfig, GruConfig, LstmCellConfig, LstmConfig, Nonlinearity, RnnCellConfig, RnnConfig};
pub use init::seeded_var_builder;
pub use layers::{Gru, Lstm, Recurrent, Rnn};
pub use state::State;
