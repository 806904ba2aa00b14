//! Local sweeps: one sweep file (`[grid]` of a concept's `[train]` options ×
//! `seeds`, plus explicit `[[run]]` option sets) expanded into runs of one
//! concept, trained one after another through the trainer's library API
//! ([`crate::train::train`]), resumed where an interrupted sweep stopped, and
//! gathered into a results table.
//!
//! Built so that a cluster scheduler needs nothing else: the runs have fixed
//! indices ([`SweepPlan`]; `sweep FILE --list`), any one of them can run
//! alone (`--only INDEX`, an array job's task), each writes only its own
//! record ([`SweepDir`]), and the results are gathered from the run folders
//! whenever asked (`--report`).
//!
//! - [`spec`]: the file and its expansion, every value checked against
//!   `TrainConfig` before anything trains;
//! - [`state`]: the sweep's folder — which run folder each planned run uses —
//!   and what to do next with each (start, resume, leave);
//! - [`exec`]: one planned run, in this process (train, then CLIP eval);
//! - [`report`]: `results.md` and `results.json`.

pub mod exec;
pub mod report;
pub mod spec;
pub mod state;

use std::path::PathBuf;

pub use exec::{eval_pending, run_planned, LazyClip, RunOutcome, SweepEvent};
pub use report::{gather, SweepResults};
pub use spec::{EvalSpec, PlannedRun, SweepPlan};
pub use state::{Next, SweepDir};

#[derive(Debug, thiserror::Error)]
pub enum SweepError {
    /// The sweep file is malformed or names an unknown option or value.
    #[error("{path}: {message}")]
    Invalid { path: PathBuf, message: String },
    #[error(
        "{file}: run {index} is now `{now}`, but it was started as `{was}` in {dir}; the file \
         changed since. Give the changed sweep another `name = \"...\"`, or delete that folder \
         to start this one over"
    )]
    Changed {
        file: PathBuf,
        dir: PathBuf,
        index: usize,
        was: String,
        now: String,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Eval(#[from] crate::eval::EvalError),
    #[error(transparent)]
    Clip(#[from] crate::eval::ClipError),
}
