//! The training toolkit: losses, optimizers, gradient clipping, learning-rate schedules,
//! truncated BPTT, checkpoints and the seeded generator, with PyTorch's numerics.

mod checkpoint;
mod clip;
mod linear_ce;
mod loss;
mod optim;
mod optimization;
mod rng;
mod run_dir;
mod schedule;
mod task;
mod tbptt;
mod trainer;

pub use checkpoint::{
    load_params, remove_stale_temp_files, save_checkpoint, save_checkpoint_with_hook, write_file_atomic, Checkpoint,
    FileKind, CHECKPOINT_FORMAT, CHECKPOINT_FORMAT_VERSION,
};
pub use clip::{clip_grad_norm, clip_grad_value, NormType};
pub use linear_ce::linear_cross_entropy;
pub use loss::{cross_entropy, log_softmax, mse, BceWithLogits, CrossEntropy, Huber, Mse, Nll, Reduction, L1};
pub use optim::{
    named_vars, Adagrad, AdagradConfig, Adam, AdamConfig, AdamW, AdamWConfig, Optimizer, OptimizerState, RmsProp,
    RmsPropConfig, Sgd, SgdConfig,
};
pub use optimization::{Optimization, OptimizerConfig};
pub use rng::{derive_seed, TrainRng};
pub use run_dir::{holds_run, RunDir, LOCK_FILE, RUN_FILES};
pub use schedule::{LrSchedule, PlateauMode, Scheduler};
pub use task::{TaskCheckpoint, TASK_FORMAT_VERSION};
pub use tbptt::{zero_rows, Tbptt};
pub use trainer::{
    DataSource, HistoryRow, Limits, Metrics, Model, Outcome, Progress, RunState, StopReason, TaskInfo, TrainEvent,
    Trainer, TrainerConfig,
};
