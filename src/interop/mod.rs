//! Interop with the files other tools write and read: embeddings from
//! AUTOMATIC1111 / the DreamArtist extension, diffusers, kohya/ComfyUI and
//! OneTrainer (import, export, convert, inspect), and the safe PyTorch pickle
//! reader they (and `.ckpt` checkpoints) need.

pub mod checkpoint;
pub mod embeddings;
pub mod export;
pub mod inspect;
pub mod pickle;
pub mod safetensors_header;
pub mod torch;
pub mod torch_write;
pub mod workspace;

use std::path::{Path, PathBuf};

pub use embeddings::{load_embedding_file, Embedding, EmbeddingFormat};
pub use export::{ExportFormat, ExportWord};

/// Errors about foreign files. Each names the file and says what was found.
#[derive(Debug, thiserror::Error)]
pub enum InteropError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Unrecognised { path: PathBuf, message: String },
    #[error("{path}: damaged file: {message}")]
    Corrupt { path: PathBuf, message: String },
    #[error("{path}: {message}")]
    Unsafe { path: PathBuf, message: String },
    #[error("{path}: not supported: {message}")]
    Unsupported { path: PathBuf, message: String },
    #[error("{path}: an SDXL embedding ({found}); SDXL is not supported yet (use an SD 1.x or 2.x embedding)")]
    Sdxl { path: PathBuf, found: String },
    #[error(
        "{path}: cannot tell which tensor is the embedding: found {found}, and none of the known keys \
         (`emb_params`, `emp_params`, `string_to_param`, or a single `<token>` tensor); \
         keep only the embedding's tensor in the file"
    )]
    Ambiguous { path: PathBuf, found: String },
    #[error("{path}: {message}")]
    BadShape { path: PathBuf, message: String },
    #[error(
        "{path}: the embedding is {found} wide{} but the model's text encoder is {expected} wide{}; \
         an embedding only works with the model family it was trained for",
        family_hint(*found),
        family_hint(*expected)
    )]
    Width {
        path: PathBuf,
        found: usize,
        expected: usize,
    },
    #[error("{path}: {source}")]
    Tensor {
        path: PathBuf,
        #[source]
        source: candle_core::Error,
    },
    #[error("{path}: cannot write: {message}")]
    Write { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Concept(#[from] crate::concept::ConceptError),
    #[error(transparent)]
    Workspace(#[from] crate::workspace::WorkspaceError),
    /// Boxed: loading errors are large and rare here.
    #[error(transparent)]
    Load(Box<crate::sd::LoadError>),
}

impl From<crate::sd::LoadError> for InteropError {
    fn from(e: crate::sd::LoadError) -> Self {
        InteropError::Load(Box::new(e))
    }
}

impl InteropError {
    pub fn io(path: &Path, source: std::io::Error) -> Self {
        InteropError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn tensor(path: &Path, source: candle_core::Error) -> Self {
        InteropError::Tensor {
            path: path.to_path_buf(),
            source,
        }
    }

    pub fn write(path: &Path, e: impl std::fmt::Display) -> Self {
        InteropError::Write {
            path: path.to_path_buf(),
            message: e.to_string(),
        }
    }
}

/// ` (SD 1.x)` for the text-encoder widths of the model families people meet.
pub fn family_hint(width: usize) -> &'static str {
    match width {
        768 => " (SD 1.x)",
        1024 => " (SD 2.x)",
        1280 => " (SDXL's second encoder)",
        _ => "",
    }
}
