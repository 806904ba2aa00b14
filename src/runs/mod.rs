//! A concept's runs side by side: one [`RunSummary`] per run folder (status,
//! progress, losses, options, CLIP scores, the user's note and tags), sorted
//! by any [`RunColumn`] and rendered as a table; and what to do with a run's
//! vectors — make them the concept's active pair ([`promote`]) or write them
//! for another tool ([`export_run`]), from the finished pair or any
//! checkpoint step.
//!
//! Read-only over the run folders except for those two actions; everything
//! comes from the folders themselves ([`crate::concept::runstate`]), so the
//! CLI (`dreamartist runs`), sweeps and the workbench see the same thing.

pub mod pair;
pub mod summary;
pub mod table;

use std::path::PathBuf;

pub use pair::{export_run, promote, Promoted};
pub use summary::{list_runs, sort_runs, EvalScores, OptionChange, RunColumn, RunSummary};
pub use table::table_lines;

/// Why a run's vectors could not be promoted or exported.
#[derive(Debug, thiserror::Error)]
pub enum RunsError {
    #[error(transparent)]
    Lookup(#[from] crate::concept::RunLookupError),
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    #[error(transparent)]
    Interop(#[from] crate::interop::InteropError),
    #[error("{path}: {message}")]
    Write { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}
