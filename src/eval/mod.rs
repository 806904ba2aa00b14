//! Built-in CLIP evaluation of learned concepts (`dreamartist eval`).
//!
//! A concept learned from one image should look like the reference (fidelity,
//! CLIP-I), still follow prompts that put it in new contexts (text alignment,
//! CLIP-T) and not collapse to one picture (diversity). This module samples a
//! fixed prompt set with a run's (or checkpoint's) vectors, scores the samples
//! with a Hugging Face CLIP model, and writes `eval.json` plus sample grids into
//! the run folder, so runs — DreamArtist against its Textual Inversion
//! baseline, or checkpoints of one run — compare on the same prompts and seeds.
//! Nothing here prints; the CLI and the workbench render [`EvalReport`]s.

pub mod clip;
pub mod clip_config;
pub mod error;
pub mod grid;
pub mod metrics;
pub mod preprocess;
pub mod prompts;
pub mod report;
pub mod resample;
pub mod run;
pub mod table;
pub mod target;

pub use clip::{resolve_clip, ClipModel, DEFAULT_CLIP};
pub use error::{ClipError, EvalError};
pub use preprocess::Preprocessor;
pub use prompts::{default_prompts, EvalPrompt, OBJECT_PROMPTS, STYLE_PROMPTS};
pub use report::{concept_evals, load_latest_eval, load_report, EvalReport, PromptReport};
pub use run::{evaluate, EvalControl, EvalEvent, EvalRequest, EvalSettings};
pub use table::table_lines;
pub use target::{load_target, resolve_targets, Target, TargetVectors, Which};
