//! Files the commands write: atomically, with the library's writer. (Checkpoints are the
//! library's: `recur::models::load_char_lm` reads them, `recur::train::Trainer` writes them.)

use std::path::Path;

use anyhow::{Context, Result};

/// Writes `bytes` to `path` atomically (see `recur::train::write_file_atomic`).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    recur::train::write_file_atomic(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}
