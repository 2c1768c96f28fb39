//! Parameter-owning layers and cells.

mod cell;
mod config;
mod core;
mod crf;
mod init;
mod layers;
pub mod packed;
mod state;

pub use cell::{GruCell, LstmCell, RnnCell};
pub use config::{GruCellConfig, GruConfig, LstmCellConfig, LstmConfig, Nonlinearity, RnnCellConfig, RnnConfig};
pub use crf::{Crf, CrfReduction};
pub use init::{embedding, linear, seeded_var_builder};
pub use layers::{Gru, Lstm, Recurrent, Rnn};
pub use packed::{
    lengths_from_mask, pack_padded_sequence, pack_sequence, pad_packed_sequence, pad_sequence, unpack_sequence,
    unpad_sequence, PackedSequence, Padding, PaddingSide,
};
pub use state::State;
