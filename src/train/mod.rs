//! Contrastive prompt tuning (DreamArtist): the loss, the optimiser, the data,
//! and the training loop with its runs folder. Reports through return values and
//! callbacks; never prints.

pub mod adapters;
pub mod data;
pub mod eta;
pub mod init;
pub mod loss;
pub mod optim;
pub mod run;
pub mod schedule;
pub mod template;

use std::path::PathBuf;

pub use crate::concept::rundir::{self, MetricsTail, RunDir, RunLookupError, StepMetrics};
pub use crate::concept::TrainConfig;
pub use init::InitMode;
pub use loss::{cpt_loss, CfgSpec, ConceptPrompts, CptBatch, CptLoss};
pub use optim::{clip_grad_norm, clip_grad_norm_blocks, AdamW, AdamWConfig};
pub use run::{train, TrainControl, TrainEvent, TrainOutcome, TrainRequest};
/// The options of a run (they live with the concept, which stores them).
pub mod config {
    pub use crate::concept::train_config::*;
}

/// Why a run could not start or had to stop.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error("{path}: {message}")]
    Reference { path: PathBuf, message: String },
    #[error("{0}")]
    Config(String),
    #[error(
        "step {step}: training diverged (loss, gradient or vectors reached {value}); the run stopped and keeps \
         its last good checkpoint ({checkpoint}). Lower the learning rate or the train cfg, then resume"
    )]
    NonFinite {
        step: u64,
        value: f64,
        checkpoint: String,
    },
    #[error("{path}: bad checkpoint: {message}")]
    Checkpoint { path: PathBuf, message: String },
    #[error(transparent)]
    Run(#[from] RunLookupError),
    /// Another live process trains the run.
    #[error(transparent)]
    Locked(#[from] crate::concept::RunLockError),
    #[error(transparent)]
    PairLocked(#[from] crate::concept::pairlock::PairLockError),
    #[error("run `{run}` has no checkpoint to resume from")]
    NoCheckpoint { run: String },
    #[error("step {step}: the preview sample failed: {message}")]
    Preview { step: u64, message: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}
