//! Typed errors of evaluation. Every error about a file names it, so a user
//! pointing `--clip` at a broken folder knows which file to fix.

use std::path::PathBuf;

use crate::concept::ConceptError;
use crate::generate::GenerateError;

/// Why a CLIP model could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum ClipError {
    #[error(
        "{path}: missing file. A CLIP model folder needs {what} (a Hugging Face CLIP folder: \
         config.json, model.safetensors, preprocessor_config.json, vocab.json, merges.txt)"
    )]
    MissingFile { path: PathBuf, what: String },
    #[error("{path}: invalid {what}: {message}")]
    BadFile {
        path: PathBuf,
        what: String,
        message: String,
    },
    #[error("{path}: unsupported CLIP model: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error(
        "`{spec}` is not in the Hugging Face cache at {cache}; download it there first \
         (for example `huggingface-cli download {download}`) or pass --clip <FOLDER>"
    )]
    NotInHfCache {
        spec: String,
        /// The arguments of `huggingface-cli download` that fetch it.
        download: String,
        cache: PathBuf,
    },
    #[error("{path}: {message}")]
    Image { path: PathBuf, message: String },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

/// Why an evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Clip(#[from] ClipError),
    #[error(transparent)]
    Concept(#[from] ConceptError),
    #[error("concept `{concept}` has no training runs yet; train it first (`dreamartist train {concept}`)")]
    NoRuns { concept: String },
    #[error("run `{run}` not found for concept `{concept}` (runs: {known})")]
    UnknownRun {
        concept: String,
        run: String,
        known: String,
    },
    #[error("run `{run}` has no checkpoint at step {step} (checkpoints: {known})")]
    UnknownCheckpoint {
        run: String,
        step: u64,
        known: String,
    },
    #[error(
        "run `{run}` has no finished pair ({path} is missing); evaluate one of its checkpoints \
         with --checkpoint STEP (checkpoints: {known})"
    )]
    NoPair {
        run: String,
        path: PathBuf,
        known: String,
    },
    #[error("{path}: {message}")]
    BadFile { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error("evaluation cancelled")]
    Cancelled,
    #[error(transparent)]
    Generate(#[from] GenerateError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Candle(#[from] candle_core::Error),
}

impl EvalError {
    pub(crate) fn io(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| EvalError::Io { path, source }
    }

    pub(crate) fn bad_file(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        EvalError::BadFile {
            path: path.into(),
            message: message.into(),
        }
    }
}
