//! The toy world: a tiny SD-architecture model that really draws (captioned
//! shapes on flat backgrounds, `assets/toyworld/`), and the one-shot benchmark
//! that compares DreamArtist with Textual Inversion on it — the world's
//! renderer, the rule-based detector, the evaluation protocol and the
//! reference's training setting. Used by `examples/toyworld_eval.rs` and the
//! tests; nothing here prints.

pub mod detect;
pub mod grid;
pub mod oneshot;
pub mod protocol;
pub mod report;
pub mod world;

pub use detect::{detect, Detection};
pub use oneshot::{Method, INIT_TEXT};
pub use protocol::{
    evaluate, sample_batch, ConceptSpec, Evaluation, Phrasing, SampleSettings, Scores, Subject,
};
pub use world::{render, Attrs, Colour, Jitter, Position, Shape, Size};

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum ToyError {
    #[error(transparent)]
    Prompt(#[from] crate::generate::PromptError),
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
    #[error("{0}")]
    Invalid(String),
}
