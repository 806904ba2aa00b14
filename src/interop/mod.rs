//! Interop with the files other tools write and read: embeddings from
//! AUTOMATIC1111 / the DreamArtist extension, diffusers, kohya/ComfyUI and
//! OneTrainer (import, export, convert, inspect). PyTorch files are read by
//! the leaf module [`crate::torchfile`] (shared with `.ckpt` model loading);
//! its errors convert into [`InteropError`] variant by variant.

pub mod embeddings;
pub mod export;
pub mod inspect;
pub mod lora;
pub mod safetensors_header;
pub mod torch_write;
pub mod workspace;

use std::path::{Path, PathBuf};

pub use embeddings::{load_embedding_file, load_embedding_file_with, Embedding, EmbeddingFormat};
pub use export::{ExportFormat, ExportWord};

use crate::torchfile::TorchFileError;

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
    /// Past a safety limit (a pickle bomb, an absurd tensor or header).
    #[error("{path}: refused: {message}")]
    LimitExceeded { path: PathBuf, message: String },
    /// A file in the SDXL layout (`clip_l` + `clip_g`) that cannot be read as one word.
    #[error("{path}: not a usable SDXL embedding: {message}")]
    Sdxl { path: PathBuf, message: String },
    #[error(
        "{path}: a OneTrainer output embedding ({found}): its trained vectors replace the text \
         encoders' outputs, which this tool cannot apply, and its input vectors, if any, are \
         placeholders (OneTrainer saves zeros there); to use the word here, train it in OneTrainer \
         with the output-embedding option off"
    )]
    OutputEmbedding { path: PathBuf, found: String },
    #[error(
        "{path}: cannot tell which tensor is the embedding: found {found}, and none of the known keys \
         (`emb_params`, `emp_params`, `string_to_param`, or a single `<token>` tensor); \
         keep only the embedding's tensor in the file"
    )]
    Ambiguous { path: PathBuf, found: String },
    #[error("{path}: {message}")]
    BadShape { path: PathBuf, message: String },
    /// Widths are per text encoder (`[768]`, `[1024]`, `[768, 1280]`).
    #[error(
        "{path}: {} cannot be used with this workspace's {}; \
         an embedding only works with the model family it was trained for",
        describe_embedding_widths(found),
        describe_model_widths(expected)
    )]
    Width {
        path: PathBuf,
        found: Vec<usize>,
        expected: Vec<usize>,
    },
    #[error(
        "{path}: {count} of its {total} values are NaN or infinite (a diverged training?); \
         such a word turns every image it is used in into noise — retrain it or use an earlier file"
    )]
    NonFinite {
        path: PathBuf,
        count: usize,
        total: usize,
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

impl From<TorchFileError> for InteropError {
    /// Variant by variant; the messages read the same.
    fn from(e: TorchFileError) -> Self {
        match e {
            TorchFileError::Io { path, source } => InteropError::Io { path, source },
            TorchFileError::Unrecognised { path, message } => {
                InteropError::Unrecognised { path, message }
            }
            TorchFileError::Corrupt { path, message } => InteropError::Corrupt { path, message },
            TorchFileError::Unsafe { path, message } => InteropError::Unsafe { path, message },
            TorchFileError::Unsupported { path, message } => {
                InteropError::Unsupported { path, message }
            }
            TorchFileError::LimitExceeded { path, message } => {
                InteropError::LimitExceeded { path, message }
            }
            TorchFileError::Tensor { path, source } => InteropError::Tensor { path, source },
        }
    }
}

impl From<crate::sd::LoadError> for InteropError {
    fn from(e: crate::sd::LoadError) -> Self {
        match e {
            // The torch reader's refusal reads (and matches) the same either way.
            crate::sd::LoadError::TorchFile(e) => e.into(),
            e => InteropError::Load(Box::new(e)),
        }
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

/// The model family that per-encoder widths belong to, where the widths say:
/// people meet SD 1.x (768), SD 2.x (1024) and SDXL (two encoders, `clip_l` +
/// `clip_g`); any two-block word has SDXL's layout, whatever its widths.
pub fn family(widths: &[usize]) -> Option<&'static str> {
    match widths {
        [768] => Some("SD 1.x"),
        [1024] => Some("SD 2.x"),
        [_, _] => Some("SDXL"),
        _ => None,
    }
}

/// ` (SD 1.x)` after a width, or nothing when the widths name no family.
pub fn family_hint(widths: &[usize]) -> String {
    family(widths)
        .map(|f| format!(" ({f})"))
        .unwrap_or_default()
}

/// `clip_l 768 + clip_g 1280` or `768`.
fn blocks(widths: &[usize]) -> String {
    match widths {
        [d] => d.to_string(),
        [l, g] => format!("clip_l {l} + clip_g {g}"),
        many => format!("{many:?}"),
    }
}

/// `an SD 1.x embedding (768-wide vectors)`, `an SDXL embedding (clip_l 768 + clip_g 1280)`.
pub fn describe_embedding_widths(widths: &[usize]) -> String {
    match (family(widths), widths) {
        (Some(f), [d]) => format!("an {f} embedding ({d}-wide vectors)"),
        (None, [d]) => format!("an embedding of {d}-wide vectors"),
        (Some(f), _) => format!("an {f} embedding ({})", blocks(widths)),
        (None, _) => format!("an embedding of {} wide blocks", blocks(widths)),
    }
}

/// `SDXL model (clip_l 768 + clip_g 1280)`, `SD 1.x model (768-wide text encoder)`.
pub fn describe_model_widths(widths: &[usize]) -> String {
    let family = family(widths).map(|f| format!("{f} ")).unwrap_or_default();
    match widths {
        [d] => format!("{family}model ({d}-wide text encoder)"),
        _ => format!("{family}model ({})", blocks(widths)),
    }
}
