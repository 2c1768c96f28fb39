//! The library's one error type.
//!
//! Every variant says what was expected, what came, and how to fix it; its `Display` is one
//! sentence (or two) a user can act on. Wording follows PyTorch's messages where PyTorch has one,
//! so a search for the PyTorch text finds the same advice.

use candle_core::DType;

/// The result type of every fallible function in Recur.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in Recur.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is out of range (zero sizes, dropout outside [0, 1], sizes whose
    /// products overflow, a projection on a cell type that has none…).
    #[error("{layer}: {message}; to fix: {fix}")]
    InvalidConfig {
        /// The layer being configured, e.g. `LSTM`.
        layer: &'static str,
        /// What is wrong, with the offending value.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// A tensor has the wrong rank or size.
    #[error("{layer}: {message}; to fix: {fix}")]
    Shape {
        /// The layer or function that received the tensor.
        layer: &'static str,
        /// What was expected and what came.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// The input's dtype differs from the parameters' dtype (never silently cast).
    #[error(
        "{layer} {what} dtype ({got:?}) does not match weight dtype ({expected:?}); to fix: convert \
         the {what} with `.to_dtype(DType::{expected:?})`, or build the model in {got:?}"
    )]
    DType {
        /// The layer that received the tensor.
        layer: &'static str,
        /// Which tensor: `input`, `h0`, `c0`.
        what: &'static str,
        /// The parameters' dtype.
        expected: DType,
        /// The tensor's dtype.
        got: DType,
    },
    /// A dtype the fused kernels do not implement.
    #[error(
        "{layer}: dtype {got:?} is not supported; to fix: use F32 (training, inference) or F64 \
         (gradient checks)"
    )]
    UnsupportedDType {
        /// The layer that received the tensor.
        layer: &'static str,
        /// The dtype that came.
        got: DType,
    },
    /// A tensor lives on a device the fused kernels do not run on, or on another device than the
    /// parameters.
    #[error("{layer}: {message}; to fix: {fix}")]
    Device {
        /// The layer that received the tensor.
        layer: &'static str,
        /// What was expected and what came.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// Data a task cannot use: text that is empty or not UTF-8, characters outside a vocabulary,
    /// a sampling setting out of range…
    #[error("{what}: {message}; to fix: {fix}")]
    Data {
        /// What was being read or used, e.g. `text`, `prime text`, `sampling`.
        what: &'static str,
        /// What is wrong, with the offending value or position.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// A value that must be finite is not (a gradient norm, a loss, a loaded weight).
    #[error("{what}: {message}; to fix: {fix}")]
    NonFinite {
        /// What was being computed or checked, e.g. `clip_grad_norm`.
        what: &'static str,
        /// The value that came (its text contains "non-finite").
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// A file operation failed; names the path and the operating system's error.
    #[error("{action} {}: {source}; to fix: {fix}", path.display())]
    Io {
        /// What was being done, e.g. `cannot create the temporary checkpoint file`.
        action: &'static str,
        /// The file or folder.
        path: std::path::PathBuf,
        /// The operating system's error.
        source: std::io::Error,
        /// How to fix it.
        fix: String,
    },
    /// A checkpoint file is malformed, corrupt, truncated or of another format or version.
    #[error("checkpoint {path}: {message}; to fix: {fix}")]
    Checkpoint {
        /// The file (or `<memory>` for bytes).
        path: String,
        /// What is wrong.
        message: String,
        /// How to fix it.
        fix: String,
    },
    /// Named tensors do not match what the model or optimizer expects. Every problem is listed at
    /// once, in PyTorch's words (`Missing key(s)`, `Unexpected key(s)`, `size mismatch for`);
    /// nothing has been loaded.
    #[error("{what}: error(s) in loading state_dict: {}; to fix: {fix}", problems.join("; "))]
    Schema {
        /// What was being loaded, e.g. `model parameters`, `Adam state`.
        what: &'static str,
        /// One line per problem.
        problems: Vec<String>,
        /// How to fix it.
        fix: String,
    },
    /// A training run diverged: a loss or gradient norm went non-finite or past the divergence
    /// threshold. The run stopped before saving the diverged parameters.
    #[error("training diverged at step {step}: {what} {value} (the divergence threshold is {threshold}); {kept}")]
    Diverged {
        /// The step that diverged (1-based: the step being taken).
        step: usize,
        /// What went wrong, e.g. `the training loss was`.
        what: &'static str,
        /// The offending value.
        value: f64,
        /// The loss above which a run counts as diverged.
        threshold: f64,
        /// Which checkpoint is left, e.g. `the last good checkpoint is run/last.safetensors at step 40`.
        kept: String,
    },
    /// Another process owns a run folder (holds its lock).
    #[error("another recur run{} is writing to {} now; to fix: wait for it to finish, or pick another folder", owner.as_ref().map(|p| format!(" (pid {p})")).unwrap_or_default(), path.display())]
    FolderBusy {
        /// The folder.
        path: std::path::PathBuf,
        /// The owner's pid, as it wrote it in the lock file.
        owner: Option<String>,
    },
    /// An error raised by candle (tensor allocation, a variable lookup, I/O of weights…).
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn config(layer: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::InvalidConfig { layer, message: message.into(), fix: fix.into() }
    }

    pub(crate) fn data(what: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Data { what, message: message.into(), fix: fix.into() }
    }

    pub(crate) fn checkpoint(path: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Checkpoint { path: path.into(), message: message.into(), fix: fix.into() }
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<std::path::PathBuf>,
        source: std::io::Error,
        fix: impl Into<String>,
    ) -> Self {
        Self::Io { action, path: path.into(), source, fix: fix.into() }
    }

    pub(crate) fn shape(layer: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self::Shape { layer, message: message.into(), fix: fix.into() }
    }
}

impl From<Error> for candle_core::Error {
    fn from(e: Error) -> Self {
        match e {
            Error::Candle(e) => e,
            other => candle_core::Error::wrap(other),
        }
    }
}
